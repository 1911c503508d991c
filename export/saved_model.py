"""Exports a trained encoder as a versioned TensorFlow SavedModel, ready for TF Serving.

Command:

    python -m export.saved_model --workdir RUN --model_name NAME --version N --out DIR

writes ``DIR/NAME/N/`` (``--overwrite`` replaces an existing version), built with Keras 3's
``keras.export.ExportArchive``. Signatures:

- ``serving_default``: ``inputs`` float32 ``(None,) + input_shape`` (the model's raw input:
  autoencoder pixels in [0, 1], image models RGB in [0, 255]) -> ``{"codes": int8 ±1 (N, K),
  "codes_packed": uint8 (N, ceil(K/8))}``;
- ``image_bytes`` (image models): ``image_bytes`` string ``(None,)`` of encoded
  JPEG/PNG/BMP/GIF/WebP files -> the same outputs; decoding, RGB conversion and the resize to
  ``image_size`` run in the graph (``export.preprocessing``).

Both signatures refuse what they cannot encode with an ``InvalidArgumentError`` that says what is
wrong, before any memory is spent on it: inputs of another shape, NaN or Inf values, an image
whose header declares more than ``--max_pixels`` pixels (default 50 million; read from the
header, before decoding), an image that does not decode. An empty batch gives empty outputs
(``(0, K)`` and ``(0, ceil(K/8))``).

Codes are ``sign(U)`` with ``sign(0) = +1``: the model runs with ``training=False``, so the
Bi-half batch ranking never enters the graph, and an example encodes the same alone or inside a
batch. ``codes_packed`` follows ``numpy.packbits`` (``tf_bihalf.codes.pack_tf``). The version is
written to a hidden temporary directory next to it, checked (codes equal the Keras model's on
random inputs, no sort/top-k op anywhere in the graph), then renamed into place, so a TF Serving
instance polling ``DIR/NAME`` never sees a half-written version. ``N/assets.extra/tf_bihalf.json``
describes the encoder (bits, input spec, signatures, source run).

Example (Python):

>>> path = export_run("runs/cifar10_bihalf_64", "exported", "bihalf64", 1)  # doctest: +SKIP
>>> encoder = SavedModelEncoder(path)                                       # doctest: +SKIP
>>> encoder.encode(images)["codes"].shape                                   # doctest: +SKIP
(8, 64)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from export import preprocessing
from export.run_directory import EncoderSpec, load_run
from export.validation import check_float_inputs, check_image_bytes, error_reason
from tf_bihalf.codes import pack_tf, packed_width

FLOAT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "image_bytes"
FLOAT_INPUT_KEY = "inputs"
BYTES_INPUT_KEY = "image_bytes"
OUTPUT_KEYS = ("codes", "codes_packed")
SIDECAR_PATH = os.path.join("assets.extra", "tf_bihalf.json")

# tf.sort / tf.argsort lower to TopKV2; the others are the remaining sorting kernels. None of them
# may appear in an exported encoder: they would mean the Bi-half training ranking leaked in.
SORT_OPS = frozenset(
    {"Sort", "TopK", "TopKV2", "XlaSort", "XlaVariadicSort", "ApproxTopK", "ArgSort"}
)

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def codes_outputs(codes: tf.Tensor) -> dict[str, tf.Tensor]:
    """Float codes (N, K) -> ``{"codes": int8 ±1, "codes_packed": uint8}``.

    The sign is taken again (``>= 0`` -> +1) rather than cast, so that values that are only
    approximately ±1 (float16 or quantised models) still give exact ±1 codes.
    """
    codes = tf.convert_to_tensor(codes)
    signed = tf.where(codes >= 0, tf.constant(1, tf.int8), tf.constant(-1, tf.int8))
    return {"codes": signed, "codes_packed": pack_tf(codes)}


def _finite(inputs: tf.Tensor) -> tf.Tensor:
    """``inputs`` after an in-graph check that every value is finite (``InvalidArgumentError``
    "inputs contain NaN or Inf values" otherwise): NaN has no sign, so it has no code."""
    return tf.debugging.assert_all_finite(
        inputs,
        f"{FLOAT_SIGNATURE}: inputs contain NaN or Inf values; every input value must be finite",
    )


def _codes_of_batch(model: keras.Model, inputs: tf.Tensor) -> tf.Tensor:
    """The model's inference output for a batch that may be empty, as ``(N, K)``.

    Some kernels (oneDNN convolutions) refuse a batch of zero examples, so an empty batch is
    padded with one zero example whose output is then sliced away. A non-empty batch is not
    padded; no control flow, so the graph still converts to TFLite builtins.
    """
    count = tf.shape(inputs)[0]
    padding = tf.maximum(1 - count, 0)
    filler = tf.zeros(tf.concat([[padding], tf.shape(inputs)[1:]], axis=0), inputs.dtype)
    outputs = model(tf.concat([inputs, filler], axis=0), training=False)
    return outputs[:count]


def build_export_archive(
    model: keras.Model, spec: EncoderSpec, max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS
) -> keras.export.ExportArchive:
    """The ExportArchive with the ``serving_default`` (and ``image_bytes``) endpoints.

    Both refuse what they cannot encode with an ``InvalidArgumentError`` that says why: inputs
    of the wrong shape, NaN/Inf inputs, images declaring more than ``max_pixels`` pixels (read
    from the header, before decoding) or that do not decode. An empty batch gives empty outputs.
    """
    archive = keras.export.ExportArchive()
    # Not archive.track(model): that also saves the Keras variable wrappers, a second copy of
    # every weight; the endpoints track the variables they use.

    def encode_floats(inputs):
        # A signature does not check the shape of what it is fed (neither does TF Serving), and
        # a pooled backbone would happily encode a wrongly sized image: check it in the graph.
        inputs = _finite(tf.ensure_shape(inputs, (None, *spec.input_shape)))
        return codes_outputs(_codes_of_batch(model, inputs))

    archive.add_endpoint(
        FLOAT_SIGNATURE,
        encode_floats,
        input_signature=[
            tf.TensorSpec((None, *spec.input_shape), tf.float32, name=FLOAT_INPUT_KEY)
        ],
    )
    if spec.model_type == "image":

        def encode_image_bytes(image_bytes):
            images = preprocessing.decode_images(
                image_bytes, spec.image_size, spec.resize, max_pixels
            )
            return codes_outputs(_codes_of_batch(model, images))

        archive.add_endpoint(
            BYTES_SIGNATURE,
            encode_image_bytes,
            input_signature=[tf.TensorSpec((None,), tf.string, name=BYTES_INPUT_KEY)],
        )
    return archive


def sidecar_contents(
    spec: EncoderSpec,
    source: str | None = None,
    max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS,
) -> dict:
    """The description written to ``assets.extra/tf_bihalf.json``."""
    outputs = {
        "codes": {"dtype": "int8", "shape": [None, spec.bits], "values": "±1, sign(U), +1 for 0"},
        "codes_packed": {
            "dtype": "uint8",
            "shape": [None, packed_width(spec.bits)],
            "bit_order": "numpy.packbits (first bit = most significant bit; +1 -> 1)",
        },
    }
    low, high = spec.input_range
    signatures = {
        FLOAT_SIGNATURE: {
            "inputs": {
                FLOAT_INPUT_KEY: {
                    "dtype": "float32",
                    "shape": [None, *spec.input_shape],
                    "range": [low, high],
                    "layout": {
                        "image": "RGB",
                        "video": "RGB clips (frames, height, width, 3)",
                    }.get(spec.model_type, "pixels, row-major"),
                }
            },
            "outputs": outputs,
        }
    }
    if spec.model_type == "image":
        signatures[BYTES_SIGNATURE] = {
            "inputs": {BYTES_INPUT_KEY: {"dtype": "string", "shape": [None]}},
            "outputs": outputs,
            "preprocessing": {
                "max_pixels": int(max_pixels),
                "decode": "tf.io.decode_image(channels=3, expand_animations=False)",
                "resize": {
                    "size": list(spec.image_size),
                    "mode": spec.resize,
                    "method": "bilinear",
                    "antialias": True,
                },
            },
        }
    return {
        "format_version": 1,
        "encoder": spec.to_dict(),
        "signatures": signatures,
        "source_workdir": None if source is None else os.path.abspath(source),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def saved_model_ops(path: str) -> dict[str, set[str]]:
    """Op types per graph in the SavedModel at ``path``.

    Keys are ``"<graph>"`` for each meta graph's top-level graph and the names of every function
    in its library (signatures, nested ``tf.function``s, ``map_fn`` bodies, gradients).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto_path = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(proto_path):
        raise FileNotFoundError(f"{proto_path!r} not found: {path!r} is not a SavedModel.")
    saved_model = saved_model_pb2.SavedModel()
    with open(proto_path, "rb") as file:
        saved_model.ParseFromString(file.read())
    ops: dict[str, set[str]] = {}
    for index, meta_graph in enumerate(saved_model.meta_graphs):
        ops[f"<graph {index}>"] = {node.op for node in meta_graph.graph_def.node}
        for function in meta_graph.graph_def.library.function:
            ops[function.signature.name] = {node.op for node in function.node_def}
    return ops


def find_sort_ops(path: str) -> dict[str, set[str]]:
    """The graphs of the SavedModel at ``path`` that contain a sort/top-k op, with those ops."""
    found = {}
    for name, op_types in saved_model_ops(path).items():
        bad = op_types & SORT_OPS
        if bad:
            found[name] = bad
    return found


class SavedModelEncoder:
    """Loads an exported encoder and encodes numpy inputs or encoded image bytes.

    Inputs are checked first (shape, dtype) with clear ``ValueError``s; large inputs are split
    into batches of ``batch_size``.

    Example:

    >>> encoder = SavedModelEncoder("exported/bihalf64/1")   # doctest: +SKIP
    >>> out = encoder.encode(np.zeros((2, 224, 224, 3), np.float32))  # doctest: +SKIP
    >>> out["codes"].dtype, out["codes_packed"].shape               # doctest: +SKIP
    (dtype('int8'), (2, 8))
    """

    def __init__(self, path: str):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"SavedModel directory {path!r} does not exist.")
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            hint = ""
            versions = [name for name in os.listdir(path) if name.isdigit()]
            if versions:
                hint = f" It holds versions {sorted(versions, key=int)}: pass {path}/<version>."
            raise FileNotFoundError(f"{path!r} has no saved_model.pb.{hint}")
        self.path = path
        self._loaded = tf.saved_model.load(path)
        self.signatures = dict(self._loaded.signatures)
        if FLOAT_SIGNATURE not in self.signatures:
            raise ValueError(f"{path!r} has no {FLOAT_SIGNATURE!r} signature.")
        float_fn = self.signatures[FLOAT_SIGNATURE]
        input_specs = float_fn.structured_input_signature[1]
        if FLOAT_INPUT_KEY not in input_specs:
            raise ValueError(
                f"{path!r}: signature {FLOAT_SIGNATURE!r} has inputs {sorted(input_specs)}, not "
                f"{FLOAT_INPUT_KEY!r}; was it exported by export.saved_model?"
            )
        self.input_shape = tuple(input_specs[FLOAT_INPUT_KEY].shape[1:])
        self.bits = int(float_fn.structured_outputs["codes"].shape[-1])
        self.metadata = read_sidecar(path)

    @property
    def has_image_bytes(self) -> bool:
        """Whether the model has the ``image_bytes`` signature (image models)."""
        return BYTES_SIGNATURE in self.signatures

    def encode(self, inputs, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Float inputs ``(N,) + input_shape`` -> ``{"codes": int8, "codes_packed": uint8}``."""
        inputs = check_float_inputs(inputs, self.input_shape)
        function = self.signatures[FLOAT_SIGNATURE]
        return _run_batched(
            lambda chunk: function(**{FLOAT_INPUT_KEY: tf.constant(chunk)}),
            inputs,
            batch_size,
            self.bits,
        )

    def encode_images(self, images, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Encoded images (a list of JPEG/PNG/... file contents) -> codes, via ``image_bytes``."""
        if not self.has_image_bytes:
            raise ValueError(
                f"{self.path!r} has no {BYTES_SIGNATURE!r} signature (only image models have "
                "one); pass float inputs to encode()."
            )
        images = np.array(check_image_bytes(images), dtype=object)
        function = self.signatures[BYTES_SIGNATURE]

        def run(chunk):
            try:
                return function(**{BYTES_INPUT_KEY: tf.constant(chunk, dtype=tf.string)})
            except tf.errors.OpError as error:  # InvalidArgument, ResourceExhausted, Unknown...
                raise ValueError(
                    f"Could not decode an image of this batch: {error_reason(error)}"
                ) from None

        return _run_batched(run, images, batch_size, self.bits)


def _run_batched(function, inputs, batch_size: int, bits: int) -> dict[str, np.ndarray]:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}.")
    codes = [np.zeros((0, bits), np.int8)]
    packed = [np.zeros((0, packed_width(bits)), np.uint8)]
    for start in range(0, len(inputs), int(batch_size)):
        outputs = function(inputs[start : start + int(batch_size)])
        codes.append(outputs["codes"].numpy())
        packed.append(outputs["codes_packed"].numpy())
    return {"codes": np.concatenate(codes), "codes_packed": np.concatenate(packed)}


def read_sidecar(path: str) -> dict | None:
    """The ``assets.extra/tf_bihalf.json`` of an exported version, or None if it has none."""
    sidecar = os.path.join(path, SIDECAR_PATH)
    if not os.path.isfile(sidecar):
        return None
    with open(sidecar, encoding="utf-8") as file:
        return json.load(file)


def _random_inputs(spec: EncoderSpec, count: int, seed: int = 0) -> np.ndarray:
    low, high = spec.input_range
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=(count, *spec.input_shape)).astype(np.float32)


def verify_export(path: str, model: keras.Model, spec: EncoderSpec, count: int = 6) -> None:
    """Checks the SavedModel at ``path`` against the Keras model; raises ``RuntimeError``.

    Checks: no sort/top-k op in any graph; codes of random inputs equal ``sign`` of the Keras
    model's output; a batch of one equals the same example inside the batch; for image models
    the ``image_bytes`` signature agrees with ``serving_default`` on a PNG of the inputs.
    """
    sort_ops = find_sort_ops(path)
    if sort_ops:
        raise RuntimeError(
            f"The exported graph contains sort/top-k ops {sort_ops}: the training-time Bi-half "
            "ranking leaked into the inference graph."
        )
    encoder = SavedModelEncoder(path)
    inputs = _random_inputs(spec, count)
    if spec.model_type == "image":
        inputs = np.round(inputs)  # Integer RGB values survive a PNG round trip exactly.
    expected = np.where(np.asarray(model(inputs, training=False)) >= 0, 1, -1).astype(np.int8)
    batch = encoder.encode(inputs)
    if not np.array_equal(batch["codes"], expected):
        raise RuntimeError("The exported codes differ from the Keras model's sign codes.")
    single = encoder.encode(inputs[:1])
    if not np.array_equal(single["codes"], batch["codes"][:1]):
        raise RuntimeError("A batch of one encodes differently from the same example in a batch.")
    if encoder.has_image_bytes:
        pngs = [tf.io.encode_png(image.astype(np.uint8)).numpy() for image in inputs]
        from_bytes = encoder.encode_images(pngs)
        if not np.array_equal(from_bytes["codes"], batch["codes"]):
            raise RuntimeError("The image_bytes signature disagrees with serving_default.")


def _check_name(model_name: str) -> None:
    if not isinstance(model_name, str) or not _NAME_PATTERN.match(model_name):
        raise ValueError(
            f"model_name must be letters, digits, '.', '_' or '-' (no path separators); "
            f"got {model_name!r}."
        )


def _check_version(version) -> int:
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = -1
    if number < 1 or str(version).strip() != str(number):
        raise ValueError(
            f"version must be a positive integer (TF Serving loads numeric version "
            f"directories, the highest by default); got {version!r}."
        )
    return number


def _check_max_pixels(max_pixels) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer; got {max_pixels!r}.")


def export_saved_model(
    model: keras.Model,
    spec: EncoderSpec,
    out: str,
    model_name: str,
    version: int,
    overwrite: bool = False,
    source: str | None = None,
    verify: bool = True,
    max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS,
) -> str:
    """Writes ``out/model_name/version/`` and returns that path.

    ``max_pixels`` caps the images the ``image_bytes`` signature decodes (read from the header).

    Raises:
        FileExistsError: the version directory exists and ``overwrite`` is false.
        ValueError: bad model name or version.
        RuntimeError: the written SavedModel failed verification (nothing is left in place).
    """
    _check_name(model_name)
    version = _check_version(version)
    _check_max_pixels(max_pixels)
    model_dir = os.path.join(out, model_name)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(
            f"{target!r} already exists; export as a new --version (TF Serving then switches to "
            "it) or pass --overwrite to replace it."
        )
    os.makedirs(model_dir, exist_ok=True)
    # A hidden, non-numeric name: TF Serving ignores it while it is being written.
    staging = tempfile.mkdtemp(prefix=f".{version}.partial-", dir=model_dir)
    try:
        archive = build_export_archive(model, spec, max_pixels)
        archive.write_out(staging, verbose=False)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, SIDECAR_PATH), "w", encoding="utf-8") as file:
            json.dump(sidecar_contents(spec, source, max_pixels), file, indent=2)
        if verify:
            verify_export(staging, model, spec)
        if os.path.exists(target):
            retired = tempfile.mkdtemp(prefix=f".{version}.replaced-", dir=model_dir)
            os.replace(target, os.path.join(retired, "old"))
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    logging.info("Exported %s (%d bits, %s) to %s", model_name, spec.bits, spec.model_type, target)
    return target


def export_run(
    workdir: str,
    out: str,
    model_name: str,
    version: int,
    overwrite: bool = False,
    max_pixels: int = preprocessing.DEFAULT_MAX_PIXELS,
) -> str:
    """Loads a training run (``workdir/config.json`` + ``encoder.keras``) and exports it."""
    _check_name(model_name)
    version = _check_version(version)
    target = os.path.join(out, model_name, str(version))
    if os.path.exists(target) and not overwrite:  # Fail before the (slow) model load.
        raise FileExistsError(
            f"{target!r} already exists; export as a new --version or pass --overwrite."
        )
    _check_max_pixels(max_pixels)
    model, spec = load_run(workdir)
    return export_saved_model(
        model, spec, out, model_name, version, overwrite, source=workdir, max_pixels=max_pixels
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.saved_model",
        description="Export a training run's encoder as a versioned SavedModel (TF Serving).",
    )
    parser.add_argument("--workdir", required=True, help="training run directory")
    parser.add_argument("--model_name", required=True, help="served model name")
    parser.add_argument("--version", required=True, help="version number (positive integer)")
    parser.add_argument("--out", required=True, help="model base directory's parent")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing version directory"
    )
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=preprocessing.DEFAULT_MAX_PIXELS,
        help="largest width x height the image_bytes signature decodes (read from the header)",
    )
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        path = export_run(
            args.workdir,
            args.out,
            args.model_name,
            args.version,
            args.overwrite,
            max_pixels=args.max_pixels,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    metadata = read_sidecar(path)
    signatures = ", ".join(metadata["signatures"]) if metadata else FLOAT_SIGNATURE
    print(f"{path}\tsignatures: {signatures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
