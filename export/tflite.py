"""Converts an exported SavedModel encoder to TFLite (LiteRT), checked against the SavedModel.

Command:

    python -m export.tflite --saved_model DIR/NAME/N --out encoder.tflite \\
        [--quantize none|float16|int8|int8_selective] [--representative_data FILE.npy|IMAGE_DIR]
        [--float_layers N]

The converter reads the SavedModel's ``serving_default`` concrete function (``inputs`` float32
``(None,) + input_shape`` -> ``codes`` int8 ±1, ``codes_packed`` uint8) and emits TFLite builtin
ops only: ``TFLITE_BUILTINS`` for ``none``/``float16``, ``TFLITE_BUILTINS_INT8`` for ``int8``;
never ``SELECT_TF_OPS``. The sign is a ``GREATER_EQUAL`` + ``SELECT_V2`` and the packing a
``MUL`` + ``SUM`` (``tf_bihalf.codes.pack_tf``), so the codes stay int8/uint8 in every mode.

- ``none``: float32, the codes equal the SavedModel's (required: 100% bit agreement).
- ``float16``: float16 weights (half the size), float32 compute on CPU.
- ``int8``: full integer quantisation of the network, calibrated on ``--representative_data``
  (a float ``.npy`` of raw inputs, or a directory of images decoded like the ``image_bytes``
  signature); float32 input, int8/uint8 codes out. Required: >= 99% bit agreement.
- ``int8_selective``: int8 except the first layers, which stay float32: calibrated once, then
  quantised with 0, 1, 2, 4, ... leading weighted layers (convolutions, dense) in float until
  the codes keep ``--min_agreement`` (99%) of the bits (``--float_layers N`` fixes the number).
  In the EfficientNet-Lite0 image hasher the flipped bits come from the stem and the first
  blocks at full resolution, not from the hash head: full int8 keeps 97% of its bits, the first
  9 of 50 weighted layers in float 99.1% at about 2x the float32 speed (docs/BENCHMARKS.md,
  "Export").

The result is never trusted by its exit code: before the file is written its codes are compared
with the SavedModel's on the representative data (or, without it, on random inputs over the
input range), and the conversion fails when the agreement is below ``--min_agreement``. This
catches the known trap of a conversion that silently drops the weights (a tiny file that
outputs constants). ``OUT.json`` records the agreement, size and input spec.

Example (Python):

>>> report = export_tflite("exported/bihalf64/1", "encoder.tflite")  # doctest: +SKIP
>>> TFLiteEncoder("encoder.tflite").encode(images)["codes"].shape      # doctest: +SKIP
(8, 64)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf
from absl import logging

from export import preprocessing
from export.saved_model import (
    FLOAT_INPUT_KEY,
    FLOAT_SIGNATURE,
    SavedModelEncoder,
)
from export.validation import check_float_inputs, load_float_array
from tf_bihalf.codes import pack, packed_width

QUANTIZE_MODES = ("none", "float16", "int8", "int8_selective")
DEFAULT_MIN_AGREEMENT = {"none": 1.0, "float16": 0.99, "int8": 0.99, "int8_selective": 0.99}
DEFAULT_CALIBRATION_SIZE = 200
# Ops that carry weights; ``int8_selective`` counts the layers it keeps in float in these.
WEIGHTED_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
)
# Leading weighted layers kept in float, tried in this order by ``int8_selective``.
SELECTIVE_STEPS = (0, 1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)


class AgreementError(RuntimeError):
    """The converted model's codes disagree with the SavedModel's more than allowed."""


def bit_agreement(codes, reference) -> float:
    """Fraction of equal bits between two ±1 code arrays of the same shape."""
    codes, reference = np.asarray(codes), np.asarray(reference)
    if codes.shape != reference.shape:
        raise ValueError(f"Code shapes differ: {codes.shape} vs {reference.shape}.")
    return float(np.mean(codes == reference)) if codes.size else 1.0


def load_representative_data(
    source: str, encoder: SavedModelEncoder, limit: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0
) -> np.ndarray:
    """Raw float inputs for calibration and checking: a ``.npy`` file or an image directory.

    At most ``limit`` examples, a random subset (fixed ``seed``) when there are more.
    """
    if os.path.isdir(source):
        metadata = encoder.metadata or {}
        image_size = (metadata.get("encoder") or {}).get("image_size")
        resize = (metadata.get("encoder") or {}).get("resize", "stretch")
        if not encoder.has_image_bytes or image_size is None:
            raise ValueError(
                f"{source!r} is a directory of images, but this encoder is not an image model; "
                "pass a float .npy of inputs of shape "
                f"(N, {', '.join(map(str, encoder.input_shape))})."
            )
        paths = preprocessing.list_images(source)
        if not paths:
            raise ValueError(
                f"No images ({', '.join(preprocessing.IMAGE_EXTENSIONS)}) in {source!r}."
            )
        paths = _subset(paths, limit, seed)
        signature = (metadata.get("signatures") or {}).get("image_bytes") or {}
        max_pixels = (signature.get("preprocessing") or {}).get(
            "max_pixels", preprocessing.DEFAULT_MAX_PIXELS
        )
        images, _, failed = preprocessing.load_image_arrays(
            [os.path.join(source, path) for path in paths], image_size, resize, max_pixels
        )
        for path, reason in failed:
            logging.warning("Skipped unreadable calibration image %s: %s", path, reason)
        if not len(images):
            raise ValueError(f"None of the images in {source!r} could be decoded.")
        return images
    if not os.path.exists(source):
        raise FileNotFoundError(f"Representative data {source!r} does not exist.")
    if not source.endswith(".npy"):
        raise ValueError(
            f"Representative data must be a .npy file of raw float inputs or an image directory; "
            f"got {source!r}."
        )
    array = load_float_array(source, "Representative data")
    array = check_float_inputs(array, encoder.input_shape)
    if not len(array):
        raise ValueError(f"{source!r} holds no examples.")
    return array[_subset(np.arange(len(array)), limit, seed)]


def _subset(items, limit: int, seed: int):
    if limit is None or len(items) <= limit:
        return items
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[index] for index in chosen] if isinstance(items, list) else items[chosen]


def convert(
    saved_model_dir: str,
    quantize: str = "none",
    representative_data: np.ndarray | None = None,
    float_layers: int = 0,
) -> bytes:
    """The TFLite flatbuffer of the SavedModel's ``serving_default`` signature.

    Args:
        saved_model_dir: an exported version directory (``DIR/NAME/N``).
        quantize: ``"none"``, ``"float16"``, ``"int8"`` or ``"int8_selective"``.
        representative_data: raw float inputs for int8 calibration (required for int8 modes).
        float_layers: for ``int8_selective``, how many leading weighted layers stay in float
            (``quantize_selective``); ``export_tflite`` chooses it from the bit agreement.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}; got {quantize!r}.")
    if quantize == "int8_selective":
        calibrated = calibrate(saved_model_dir, representative_data)
        return quantize_selective(calibrated, float_layers)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[FLOAT_SIGNATURE]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        _check_representative(representative_data)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return _run_converter(converter, quantize)


def _check_representative(representative_data) -> None:
    if representative_data is None or not len(representative_data):
        raise ValueError(
            "int8 quantisation needs --representative_data (a .npy of raw float inputs or a "
            "directory of images) to calibrate the activation ranges."
        )


def _representative_dataset(representative_data):
    data = np.asarray(representative_data, np.float32)

    def representative_dataset():
        for example in data:
            yield {FLOAT_INPUT_KEY: example[None]}

    return representative_dataset


def _run_converter(converter, quantize: str) -> bytes:
    try:
        with warnings.catch_warnings():
            # The converter's own calibration uses the deprecated tf.lite.Interpreter.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return converter.convert()
    except Exception as error:  # The converter raises ConverterError and others, long messages.
        message = str(error).strip().splitlines()
        raise RuntimeError(
            f"TFLite conversion ({quantize}) failed with builtin ops only: "
            f"{' '.join(message[:3])[:600]}"
            + (" Try --quantize float16 or none." if quantize.startswith("int8") else "")
        ) from error


def calibrate(saved_model_dir: str, representative_data: np.ndarray) -> bytes:
    """A float TFLite model of ``serving_default`` carrying the activation ranges measured on
    ``representative_data``: the input of ``quantize_selective``, calibrated once and
    quantised as often as the search needs (``converter._experimental_calibrate_only``)."""
    _check_representative(representative_data)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[FLOAT_SIGNATURE]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative_dataset(representative_data)
    converter.experimental_mlir_quantizer = True
    converter._experimental_calibrate_only = True  # noqa: SLF001 (TFLite's documented route)
    return _run_converter(converter, "int8_selective")


def layer_outputs(model_content: bytes) -> list[tuple[str, str]]:
    """``(op name, output tensor name)`` of every op of a TFLite model, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    return [
        (op["op_name"], names[op["outputs"][0]])
        for op in interpreter._get_ops_details()  # noqa: SLF001 (no public op listing)
        if len(op["outputs"]) and op["outputs"][0] in names
    ]


def count_weighted_layers(model_content: bytes) -> int:
    """How many ops of ``WEIGHTED_OPS`` (convolutions, dense layers) a TFLite model runs."""
    return sum(op in WEIGHTED_OPS for op, _ in layer_outputs(model_content))


def quantize_selective(calibrated: bytes, float_layers: int) -> bytes:
    """int8 except the first ``float_layers`` weighted layers (and every op before the next
    one), which keep float32 weights and activations; float32 input, int8/uint8 codes out.

    Why the first layers: in the EfficientNet-Lite0 image hasher the bits that int8 flips come
    from the stem and the first blocks at full resolution, not from the last layers or the hash
    head (docs/BENCHMARKS.md, "Export"). Ops are named by their output tensors
    (``denylisted_nodes`` of TFLite's MLIR quantiser).
    """
    from tensorflow.lite.python import convert as lite_convert

    if isinstance(float_layers, bool) or int(float_layers) < 0:
        raise ValueError(f"float_layers must be >= 0; got {float_layers}.")
    denylisted, weighted = [], 0
    for op, name in layer_outputs(calibrated):
        if op in WEIGHTED_OPS:
            if weighted == int(float_layers):
                break
            weighted += 1
        denylisted.append(name)
    if not float_layers:
        denylisted = []
    try:
        return lite_convert.mlir_quantize(calibrated, denylisted_nodes=denylisted or None)
    except Exception as error:  # The quantiser raises its own errors, long messages.
        message = " ".join(str(error).strip().splitlines()[:3])[:600]
        raise RuntimeError(f"TFLite int8_selective quantisation failed: {message}") from error


class TFLiteEncoder:
    """Runs a converted encoder with ``ai_edge_litert``; same interface as ``SavedModelEncoder``.

    Example:

    >>> encoder = TFLiteEncoder("encoder.tflite")                # doctest: +SKIP
    >>> encoder.encode(np.zeros((2, 784), np.float32))["codes"]   # doctest: +SKIP
    """

    def __init__(
        self,
        model_path: str | None = None,
        model_content: bytes | None = None,
        num_threads: int | None = None,
    ):
        from ai_edge_litert.interpreter import Interpreter

        if model_content is None:
            if model_path is None or not os.path.isfile(model_path):
                raise FileNotFoundError(f"TFLite model {model_path!r} does not exist.")
            with open(model_path, "rb") as file:
                model_content = file.read()
        self.model_size = len(model_content)
        self.interpreter = Interpreter(model_content=model_content, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if FLOAT_SIGNATURE not in signatures:
            raise ValueError(
                f"The TFLite model has no {FLOAT_SIGNATURE!r} signature: {signatures}."
            )
        self.runner = self.interpreter.get_signature_runner(FLOAT_SIGNATURE)
        input_details = self.runner.get_input_details()[FLOAT_INPUT_KEY]
        self.input_shape = tuple(int(size) for size in input_details["shape_signature"][1:])
        output_details = self.runner.get_output_details()
        self.bits = int(output_details["codes"]["shape_signature"][-1])

    def op_names(self) -> set[str]:
        """Names of the TFLite ops in the model (e.g. ``FULLY_CONNECTED``, ``SELECT_V2``)."""
        return {detail["op_name"] for detail in self.interpreter._get_ops_details()}

    def encode(self, inputs, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Float inputs ``(N,) + input_shape`` -> ``{"codes": int8, "codes_packed": uint8}``."""
        inputs = check_float_inputs(inputs, self.input_shape)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}.")
        codes, packed = [], []
        for start in range(0, len(inputs), int(batch_size)):
            chunk = np.ascontiguousarray(inputs[start : start + int(batch_size)])
            outputs = self.runner(**{FLOAT_INPUT_KEY: chunk})
            codes.append(np.array(outputs["codes"]))
            packed.append(np.array(outputs["codes_packed"]))
        if not codes:
            width = packed_width(self.bits)
            return {
                "codes": np.zeros((0, self.bits), np.int8),
                "codes_packed": np.zeros((0, width), np.uint8),
            }
        return {"codes": np.concatenate(codes), "codes_packed": np.concatenate(packed)}


def _random_check_inputs(encoder: SavedModelEncoder, count: int = 64) -> np.ndarray:
    metadata = encoder.metadata or {}
    model_type = (metadata.get("encoder") or {}).get("model_type")
    high = 255.0 if model_type == "image" or len(encoder.input_shape) == 3 else 1.0
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, high, size=(count, *encoder.input_shape)).astype(np.float32)


def batch_one_latency(encoder, inputs: np.ndarray, repeats: int = 20) -> float:
    """Median seconds to encode one example (after one warm-up call)."""
    example = inputs[:1]
    encoder.encode(example)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode(example)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def select_float_layers(
    saved_model: str,
    data: np.ndarray,
    reference_codes: np.ndarray,
    min_agreement: float,
    float_layers: int | None = None,
) -> tuple[bytes, dict]:
    """The ``int8_selective`` model with the fewest leading float layers that keeps the bits.

    Calibrates once on ``data``, then quantises with 0, 1, 2, 4, ... (``SELECTIVE_STEPS``)
    leading weighted layers kept in float, and returns the first model whose codes on ``data``
    agree with ``reference_codes`` on at least ``min_agreement`` of the bits (or, if none does,
    the last one tried, for the caller to refuse). A given ``float_layers`` skips the search.

    Returns:
        ``(content, {"float_layers", "weighted_layers", "tried": [(n, agreement), ...]})``.
    """
    calibrated = calibrate(saved_model, data)
    weighted = count_weighted_layers(calibrated)
    if float_layers is not None:
        if isinstance(float_layers, bool) or int(float_layers) < 0:
            raise ValueError(f"float_layers must be >= 0; got {float_layers}.")
        steps = [min(int(float_layers), weighted)]
    else:
        # At least one try: a model without weighted layers is plain int8 (0 float layers).
        steps = sorted({step for step in SELECTIVE_STEPS if step < weighted}) or [0]
    tried, content = [], b""
    for step in steps:
        content = quantize_selective(calibrated, step)
        codes = TFLiteEncoder(model_content=content).encode(data)["codes"]
        tried.append((step, bit_agreement(codes, reference_codes)))
        logging.info(
            "int8_selective: %d of %d weighted layers in float -> bit agreement %.4f",
            step,
            weighted,
            tried[-1][1],
        )
        if tried[-1][1] >= min_agreement:
            break
    return content, {"float_layers": tried[-1][0], "weighted_layers": weighted, "tried": tried}


def export_tflite(
    saved_model: str,
    out: str,
    quantize: str = "none",
    representative_data: str | np.ndarray | None = None,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    min_agreement: float | None = None,
    overwrite: bool = True,
    float_layers: int | None = None,
) -> dict:
    """Converts, checks against the SavedModel, writes ``out`` and ``out + ".json"``.

    Returns the report written to ``out + ".json"``: quantize mode, size in bytes, the bit
    agreement with the SavedModel and on what it was measured, batch-1 latency, ops used; for
    ``int8_selective`` also ``float_layers`` (leading weighted layers kept in float, chosen by
    ``select_float_layers`` unless given), ``weighted_layers`` and the ``selection`` tried.

    Raises:
        AgreementError: the converted model's codes agree less than ``min_agreement``
            (default 1.0 for float32, 0.99 for float16 and int8); nothing is written.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}; got {quantize!r}.")
    if not out.endswith(".tflite"):
        raise ValueError(f"The output file must end with .tflite; got {out!r}.")
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out!r} exists.")
    threshold = DEFAULT_MIN_AGREEMENT[quantize] if min_agreement is None else float(min_agreement)
    reference = SavedModelEncoder(saved_model)
    if isinstance(representative_data, str):
        data = load_representative_data(representative_data, reference, calibration_size)
        checked_on = f"representative data {representative_data} ({len(data)} examples)"
    elif representative_data is not None:
        data = check_float_inputs(representative_data, reference.input_shape)
        checked_on = f"representative data ({len(data)} examples)"
    else:
        data = None
    selection = None
    if quantize == "int8_selective":
        _check_representative(data)
        content, selection = select_float_layers(
            saved_model, data, reference.encode(data)["codes"], threshold, float_layers
        )
    else:
        content = convert(saved_model, quantize, data)
    if data is None:
        data = _random_check_inputs(reference)
        checked_on = f"{len(data)} random inputs over the input range (no representative data)"
    encoder = TFLiteEncoder(model_content=content)
    expected = reference.encode(data)
    actual = encoder.encode(data)
    agreement = bit_agreement(actual["codes"], expected["codes"])
    packed_ok = np.array_equal(actual["codes_packed"], pack(actual["codes"]))
    distinct = len(np.unique(actual["codes_packed"], axis=0))
    ops = sorted(encoder.op_names())
    non_builtin = [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    if non_builtin:
        raise RuntimeError(f"The TFLite model uses non-builtin ops {non_builtin}.")
    if not packed_ok:
        raise AgreementError("codes_packed does not match packbits(codes) in the TFLite model.")
    expected_distinct = len(np.unique(expected["codes_packed"], axis=0))
    if agreement < threshold or (distinct == 1 and expected_distinct > 1):
        raise AgreementError(
            f"The {quantize} TFLite model agrees with the SavedModel on {agreement:.2%} of the "
            f"bits of {checked_on} ({distinct} distinct codes vs {expected_distinct}); required "
            f"{threshold:.2%}. Nothing was written."
            + (
                " Try --quantize int8_selective (int8 with the first layers in float, "
                "which keeps the bits of the EfficientNet-Lite0 hasher) or float16, or accept "
                "the loss knowingly with --min_agreement."
                if quantize == "int8" and distinct > 1
                else ""
            )
            + (
                " Leading float layers tried (of "
                f"{selection['weighted_layers']} weighted layers): "
                + ", ".join(f"{n} -> {a:.2%}" for n, a in selection["tried"])
                + "; give more --float_layers or use --quantize float16."
                if selection is not None
                else ""
            )
        )
    report = {
        "saved_model": os.path.abspath(saved_model),
        "quantize": quantize,
        "size_bytes": len(content),
        "bit_agreement": agreement,
        "checked_on": checked_on,
        "batch_one_latency_ms": 1000.0 * batch_one_latency(encoder, data),
        "input": {
            "name": FLOAT_INPUT_KEY,
            "dtype": "float32",
            "shape": [None, *reference.input_shape],
            "range": [0.0, 255.0] if len(reference.input_shape) == 3 else [0.0, 1.0],
        },
        "outputs": {
            "codes": ["int8", reference.bits],
            "codes_packed": ["uint8", packed_width(reference.bits)],
        },
        "ops": ops,
    }
    if selection is not None:
        report["float_layers"] = selection["float_layers"]
        report["weighted_layers"] = selection["weighted_layers"]
        report["selection"] = [list(item) for item in selection["tried"]]
    if reference.metadata:
        report["encoder"] = reference.metadata.get("encoder")
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".partial", delete=False) as file:
        file.write(content)
    os.replace(file.name, out)
    with open(out + ".json", "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    logging.info(
        "Wrote %s (%s, %.1f KiB), bit agreement %.4f on %s",
        out,
        quantize,
        len(content) / 1024,
        agreement,
        checked_on,
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.tflite",
        description="Convert an exported SavedModel encoder to TFLite (builtin ops only).",
    )
    parser.add_argument("--saved_model", required=True, help="exported version dir DIR/NAME/N")
    parser.add_argument("--out", required=True, help="output .tflite file")
    parser.add_argument("--quantize", default="none", choices=QUANTIZE_MODES)
    parser.add_argument(
        "--representative_data",
        default=None,
        help="float .npy of raw inputs or a directory of images (required for int8)",
    )
    parser.add_argument(
        "--calibration_size",
        type=int,
        default=DEFAULT_CALIBRATION_SIZE,
        help="examples drawn from the representative data",
    )
    parser.add_argument(
        "--min_agreement",
        type=float,
        default=None,
        help="required bit agreement with the SavedModel (default 1.0 float32, 0.99 otherwise)",
    )
    parser.add_argument(
        "--float_layers",
        type=int,
        default=None,
        help="int8_selective: leading weighted layers kept in float (default: the fewest that "
        "reach --min_agreement)",
    )
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    if args.float_layers is not None and args.quantize != "int8_selective":
        parser.error("--float_layers applies to --quantize int8_selective only")
    try:
        report = export_tflite(
            args.saved_model,
            args.out,
            args.quantize,
            args.representative_data,
            args.calibration_size,
            args.min_agreement,
            float_layers=args.float_layers,
        )
    except (FileNotFoundError, FileExistsError, ValueError, AgreementError) as error:
        parser.exit(2, f"error: {error}\n")
    selective = (
        f"\t{report['float_layers']} of {report['weighted_layers']} weighted layers in float"
        if "float_layers" in report
        else ""
    )
    print(
        f"{args.out}\t{args.quantize}\t{report['size_bytes'] / 1024:.1f} KiB\t"
        f"bit agreement {report['bit_agreement']:.4%}\t"
        f"batch-1 latency {report['batch_one_latency_ms']:.2f} ms{selective}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
