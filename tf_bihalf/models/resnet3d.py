"""3D ResNets (Hara et al., CVPR 2018) in Keras, and a converter for their PyTorch checkpoints.

The family of "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?"
(Hara, Kataoka, Satoh, CVPR 2018), channels-last, for 16 x 112 x 112 RGB clips:

====  ==============  ===================  =========  ========  =================
depth block           blocks per stage     features   shortcut  parameters (400)
====  ==============  ===================  =========  ========  =================
10    BasicBlock      1, 1, 1, 1           512        A         14,430,800
18    BasicBlock      2, 2, 2, 2           512        A         33,235,280
34    BasicBlock      3, 4, 6, 3           512        A         63,544,912
50    Bottleneck      3, 4, 6, 3           2048       B         47,018,576
101   Bottleneck      3, 4, 23, 3          2048       B         86,064,720
152   Bottleneck      3, 8, 36, 3          2048       B         118,223,440
200   Bottleneck      3, 24, 36, 3         2048       B         127,423,056
====  ==============  ===================  =========  ========  =================

Parameters are PyTorch's count (convolutions, batch-norm scale and shift, a 400-way ``fc``),
which is ``sum(w.size for w in model.trainable_weights)`` here; Keras' ``count_params()`` adds
the batch-norm moving statistics. The shortcut column is the reference's default (the 2018
Kinetics releases: A for ResNet-18/34, B for 50 and deeper); either type builds at any depth.
The paper's table (33.2M, 63.5M, 46.4M, 85.5M, 117.7M, 126.8M) agrees: its Bottleneck rows
count a 101-way head (e.g. 47,018,576 - 2049 * 299 = 46,405,925).

The graph, as in the reference implementation:

* stem: ``Conv3d(3, 64, 7x7x7, stride (1, 2, 2), padding 3)`` -> BN -> ReLU ->
  ``MaxPool3d(3x3x3, stride 2, padding 1)``;
* four stages of 64, 128, 256, 512 planes (Bottleneck: x4 output channels), the first block of
  stages 2-4 with stride 2 in time and space;
* BasicBlock: ``3x3x3 conv -> BN -> ReLU -> 3x3x3 conv -> BN``, plus the shortcut, ReLU;
  Bottleneck: ``1x1x1 -> 3x3x3 (stride) -> 1x1x1 (x4)``, each with BN, plus the shortcut, ReLU;
* shortcut where the shape changes: **A** = subsample by the stride (``avg_pool3d`` with a 1x1x1
  kernel) and append zero channels (no parameters); **B** = ``1x1x1 conv (stride) -> BN``;
* global average pooling (the reference's ``AvgPool3d`` over the whole last map, which is
  ``1 x 4 x 4`` for 16 x 112 x 112 clips) -> ``fc`` (400 Kinetics classes).

PyTorch pads symmetrically; Keras' ``"same"`` pads the extra element at the end for stride 2,
so every strided convolution and the max-pool use explicit ``ZeroPadding3D`` + ``"valid"``
(zero padding before the max-pool is exact: its input is a ReLU output, >= 0). Batch norm
epsilon is PyTorch's ``1e-5``.

Input: float32 ``(N, T, H, W, 3)`` RGB in ``[0, 255]``; the model subtracts the mean the
reference training used (``VideoPreprocessing("activitynet_mean")``: ``x - (114.7748,
107.7354, 99.4750)``, the 2018 code's default; ``"kinetics_mean_std"`` for the 2020 release).

Weights: the Kinetics checkpoints of the reference repository are ``torch.save`` files of
``{"epoch", "arch", "state_dict", "optimizer"}`` with keys such as ``module.conv1.weight``,
``module.layer1.0.bn1.running_mean``, ``module.layer2.0.downsample.0.weight`` and
``module.fc.weight``. No registry package ships them: they stay user-supplied files. They are
read without torch (``tf_bihalf.formats.torch_checkpoint``) and converted with
``convert_checkpoint`` or ``python -m tf_bihalf.models.resnet3d CHECKPOINT OUT.weights.h5``.

Example:

>>> model = resnet3d(18, input_shape=(16, 112, 112, 3), include_top=False)
>>> model.output.shape
(None, 512)
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

import keras
import numpy as np
from absl import logging

from tf_bihalf.formats import torch_checkpoint

BATCH_NORM_EPSILON = 1e-5
DEFAULT_INPUT_SHAPE = (16, 112, 112, 3)
STAGE_PLANES = (64, 128, 256, 512)
ACTIVITYNET_MEAN_RGB = (114.7748, 107.7354, 99.4750)
KINETICS_MEAN_RGB = (0.4345, 0.4051, 0.3775)
KINETICS_STD_RGB = (0.2768, 0.2713, 0.2737)

# depth -> (block, blocks per stage)
DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
VIDEO_PREPROCESSING_MODES = ("activitynet_mean", "kinetics_mean_std", "i3d", "none")


@keras.saving.register_keras_serializable(package="tf_bihalf")
class VideoPreprocessing(keras.layers.Layer):
    """Maps raw RGB clips in ``[0, 255]`` to a video backbone's expected input.

    Modes:
        ``activitynet_mean``: ``x - (114.7748, 107.7354, 99.4750)`` (3D ResNets, 2018 code).
        ``kinetics_mean_std``: ``(x / 255 - mean) / std`` with the Kinetics mean
            ``(0.4345, 0.4051, 0.3775)`` and std ``(0.2768, 0.2713, 0.2737)`` (2020 code).
        ``i3d``: ``x / 127.5 - 1``, i.e. RGB in ``[-1, 1]`` (I3D).
        ``none``: identity.

    Args:
        mode: one of the modes above.
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: float tensor ``(..., 3)``, RGB in ``[0, 255]``.

    Returns:
        A float tensor of the same shape.

    Example:

    >>> VideoPreprocessing("i3d")(np.full((1, 1, 1, 1, 3), 255.0, "float32")).numpy().ravel()
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode: str = "activitynet_mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in VIDEO_PREPROCESSING_MODES:
            raise ValueError(
                f"Unknown video preprocessing {mode!r}; expected one of "
                f"{', '.join(VIDEO_PREPROCESSING_MODES)}."
            )
        self.mode = mode

    def call(self, inputs):
        inputs = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "activitynet_mean":
            return inputs - keras.ops.convert_to_tensor(ACTIVITYNET_MEAN_RGB, self.compute_dtype)
        if self.mode == "kinetics_mean_std":
            mean = keras.ops.convert_to_tensor(KINETICS_MEAN_RGB, self.compute_dtype)
            std = keras.ops.convert_to_tensor(KINETICS_STD_RGB, self.compute_dtype)
            return (inputs / 255.0 - mean) / std
        if self.mode == "i3d":
            return inputs / 127.5 - 1.0
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="tf_bihalf")
class ZeroPadShortcut(keras.layers.Layer):
    """The parameter-free type-A shortcut: subsample by ``strides``, append zero channels.

    The reference computes ``avg_pool3d(x, kernel_size=1, stride=s)`` (every s-th element in
    time, height and width) and concatenates zeros up to ``filters`` channels.

    Args:
        filters: output channels (>= the input's).
        strides: int, the subsampling step in time, height and width.
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: ``(N, T, H, W, C)``.

    Returns:
        ``(N, ceil(T/s), ceil(H/s), ceil(W/s), filters)``.

    Example:

    >>> ZeroPadShortcut(8, 2)(np.ones((1, 4, 4, 4, 3), "float32")).shape
    TensorShape([1, 2, 2, 2, 8])
    """

    def __init__(self, filters: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def call(self, inputs):
        if self.strides != 1:
            step = self.strides
            inputs = inputs[:, ::step, ::step, ::step, :]
        extra = self.filters - inputs.shape[-1]
        if extra < 0:
            raise ValueError(
                f"ZeroPadShortcut cannot shrink {inputs.shape[-1]} channels to {self.filters}."
            )
        if extra == 0:
            return inputs
        return keras.ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, 0], [0, extra]])

    def compute_output_shape(self, input_shape):
        def reduce(size):
            return None if size is None else math.ceil(size / self.strides)

        n, t, h, w, _ = input_shape
        return (n, reduce(t), reduce(h), reduce(w), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


def _name(prefix: str) -> str:
    """Keras layer name of a PyTorch module path: ``layer1.0.conv1`` -> ``layer1_0_conv1``."""
    return prefix.replace(".", "_")


def _conv(x, filters: int, kernel: int, strides, prefix: str):
    strides = (strides,) * 3 if isinstance(strides, int) else tuple(strides)
    padding = kernel // 2
    if padding and any(s != 1 for s in strides):
        # PyTorch pads symmetrically; "same" would pad the extra element at the end only.
        x = keras.layers.ZeroPadding3D(padding, name=_name(prefix) + "_pad")(x)
        mode = "valid"
    else:
        mode = "same"
    return keras.layers.Conv3D(
        filters, kernel, strides=strides, padding=mode, use_bias=False, name=_name(prefix)
    )(x)


def _bn(x, prefix: str):
    return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=_name(prefix))(x)


def _relu(x, name: str):
    return keras.layers.ReLU(name=_name(name))(x)


def _shortcut(x, filters: int, strides: int, shortcut: str, prefix: str):
    if shortcut == "A":
        return ZeroPadShortcut(filters, strides, name=_name(prefix + ".downsample"))(x)
    x = keras.layers.Conv3D(
        filters, 1, strides=strides, use_bias=False, name=_name(prefix + ".downsample.0")
    )(x)
    return _bn(x, prefix + ".downsample.1")


def _basic_block(x, planes: int, strides: int, needs_shortcut: bool, shortcut: str, prefix: str):
    residual = x
    y = _conv(x, planes, 3, strides, prefix + ".conv1")
    y = _relu(_bn(y, prefix + ".bn1"), prefix + ".relu1")
    y = _conv(y, planes, 3, 1, prefix + ".conv2")
    y = _bn(y, prefix + ".bn2")
    if needs_shortcut:
        residual = _shortcut(x, planes, strides, shortcut, prefix)
    y = keras.layers.Add(name=_name(prefix + ".add"))([y, residual])
    return _relu(y, prefix + ".relu")


def _bottleneck_block(
    x, planes: int, strides: int, needs_shortcut: bool, shortcut: str, prefix: str
):
    residual = x
    y = _conv(x, planes, 1, 1, prefix + ".conv1")
    y = _relu(_bn(y, prefix + ".bn1"), prefix + ".relu1")
    y = _conv(y, planes, 3, strides, prefix + ".conv2")
    y = _relu(_bn(y, prefix + ".bn2"), prefix + ".relu2")
    y = _conv(y, planes * 4, 1, 1, prefix + ".conv3")
    y = _bn(y, prefix + ".bn3")
    if needs_shortcut:
        residual = _shortcut(x, planes * 4, strides, shortcut, prefix)
    y = keras.layers.Add(name=_name(prefix + ".add"))([y, residual])
    return _relu(y, prefix + ".relu")


def default_shortcut(depth: int) -> str:
    """The reference's shortcut type: A for BasicBlock depths, B for Bottleneck depths."""
    return "A" if DEPTHS[depth][0] == "basic" else "B"


def feature_dim(depth: int) -> int:
    """Pooled feature size: 512 (BasicBlock) or 2048 (Bottleneck)."""
    return STAGE_PLANES[-1] * EXPANSION[DEPTHS[depth][0]]


def resnet3d(
    depth: int = 18,
    shortcut: str | None = None,
    input_shape: tuple[int | None, int | None, int | None, int] = DEFAULT_INPUT_SHAPE,
    include_top: bool = True,
    classes: int = 400,
    weights: str | None = None,
    preprocessing: str = "activitynet_mean",
    name: str | None = None,
) -> keras.Model:
    """Builds a 3D ResNet of Hara et al. (raw RGB clips in ``[0, 255]`` in).

    Args:
        depth: 10, 18, 34, 50, 101, 152 or 200.
        shortcut: ``"A"`` (zero padding) or ``"B"`` (1x1x1 projection); None = the reference's
            choice for the depth (A for 10-34, B for 50+).
        input_shape: ``(frames, height, width, 3)``; 16 x 112 x 112 is the reference's;
            ``None`` dimensions are allowed (global pooling).
        include_top: add the ``fc`` classifier (logits); else the output is the pooled feature
            (512 or 2048).
        classes: classifier size (400 for Kinetics-400).
        weights: None (random init), a PyTorch checkpoint of the reference layout (``.pth``,
            converted on load) or a Keras ``.weights.h5`` of this exact model.
        preprocessing: a ``VideoPreprocessing`` mode, applied inside the model.
        name: model name (default ``resnet3d_<depth>``).

    Returns:
        A functional ``keras.Model``.

    Example:

    >>> resnet3d(34, input_shape=(16, 112, 112, 3)).output.shape
    (None, 400)
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}; got {depth!r}.")
    shortcut = default_shortcut(depth) if shortcut is None else shortcut
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B'; got {shortcut!r}.")
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (frames, height, width, 3); got {input_shape}.")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive integer; got {classes!r}.")
    block_kind, blocks = DEPTHS[depth]
    block = _basic_block if block_kind == "basic" else _bottleneck_block
    expansion = EXPANSION[block_kind]

    inputs = keras.Input(input_shape, name="clip")
    x = VideoPreprocessing(preprocessing, name="preprocessing")(inputs)
    x = _conv(x, 64, 7, (1, 2, 2), "conv1")
    x = _relu(_bn(x, "bn1"), "relu")
    x = keras.layers.ZeroPadding3D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling3D(3, strides=2, padding="valid", name="maxpool")(x)
    channels = 64
    for stage, (planes, count) in enumerate(zip(STAGE_PLANES, blocks, strict=True), start=1):
        for index in range(count):
            strides = 2 if stage > 1 and index == 0 else 1
            needs_shortcut = index == 0 and (strides != 1 or channels != planes * expansion)
            x = block(x, planes, strides, needs_shortcut, shortcut, f"layer{stage}.{index}")
            channels = planes * expansion
    x = keras.layers.GlobalAveragePooling3D(name="avgpool")(x)
    if include_top:
        x = keras.layers.Dense(classes, name="fc")(x)
    model = keras.Model(inputs, x, name=name or f"resnet3d_{depth}")
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: keras.Model, path: str) -> list[str]:
    """Loads a reference ``.pth`` checkpoint (converted) or a Keras ``.weights.h5`` into
    ``model``; returns the checkpoint entries left unused (none for ``.h5``)."""
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"3D-ResNet weights file {path!r} does not exist. The Kinetics checkpoints of Hara "
            "et al. are not in any package registry: download them from the authors' release "
            "and pass the .pth file (or its converted .weights.h5)."
        )
    if path.endswith(".h5") or path.endswith(".keras"):
        model.load_weights(path)
        return []
    return convert_state_dict(model, torch_checkpoint.load_state_dict(path))


def convert_state_dict(model: keras.Model, state_dict: dict[str, np.ndarray]) -> list[str]:
    """Copies a reference (PyTorch) 3D-ResNet state dict into ``model``.

    Layouts: ``Conv3d`` weight ``(out, in, t, h, w)`` -> ``(t, h, w, in, out)``; ``BatchNorm3d``
    weight, bias, running_mean, running_var -> gamma, beta, moving mean, moving variance;
    ``Linear`` ``(out, in)`` -> ``(in, out)``. A leading ``module.`` (``nn.DataParallel``) is
    ignored. Every weight of ``model`` must be found with the right shape, else ``ValueError``
    (naming the entry and, for a shape mismatch, both shapes: usually a wrong depth, shortcut
    type or class count). Returns the unused entries (``num_batches_tracked``; ``fc`` without
    a top).
    """
    state = {
        (key[len("module.") :] if key.startswith("module.") else key): value
        for key, value in state_dict.items()
    }
    used = set()

    def take(key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in state:
            raise ValueError(
                f"The checkpoint has no entry {key!r}: is it a 3D ResNet of this depth and "
                "shortcut type?"
            )
        value = np.asarray(state[key])
        if value.shape != shape:
            raise ValueError(f"Checkpoint entry {key!r} has shape {value.shape}; expected {shape}.")
        used.add(key)
        return value.astype(np.float32)

    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        if isinstance(layer, keras.layers.Conv3D):
            t, h, w, cin, cout = layer.kernel.shape
            kernel = take(f"{prefix}.weight", (cout, cin, t, h, w))
            layer.set_weights([kernel.transpose(2, 3, 4, 1, 0)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            (channels,) = layer.gamma.shape
            parts = ("weight", "bias", "running_mean", "running_var")
            layer.set_weights([take(f"{prefix}.{part}", (channels,)) for part in parts])
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            layer.set_weights(
                [take(f"{prefix}.weight", (cout, cin)).T, take(f"{prefix}.bias", (cout,))]
            )
        else:
            raise ValueError(f"Layer {layer.name!r} has weights the converter does not know.")
    unused = sorted(set(state) - used)
    significant = [key for key in unused if not key.endswith("num_batches_tracked")]
    if significant:
        logging.info("3D-ResNet checkpoint entries not used by this model: %s", significant[:10])
    return unused


def _torch_prefix(layer_name: str) -> str:
    """``layer1_0_downsample_0`` -> ``layer1.0.downsample.0`` (inverse of ``_name``)."""
    return re.sub(r"_(?=\d|conv|bn|downsample)", ".", layer_name)


def infer_architecture(state_dict: dict[str, np.ndarray], arch: str | None = None) -> dict:
    """Depth, shortcut type and class count of a reference state dict (and its ``arch``
    string such as ``"resnet-34"``, when the checkpoint has one)."""
    state = {
        k[len("module.") :] if k.startswith("module.") else k: v for k, v in state_dict.items()
    }
    counts = []
    for stage in range(1, 5):
        indices = {
            int(m.group(1))
            for key in state
            if (m := re.match(rf"layer{stage}\.(\d+)\.", key)) is not None
        }
        counts.append(len(indices))
    block = "bottleneck" if any(".conv3." in key for key in state) else "basic"
    matches = [
        d for d, (kind, blocks) in DEPTHS.items() if kind == block and blocks == tuple(counts)
    ]
    if arch is not None and (m := re.search(r"(\d+)", str(arch))) is not None:
        named = int(m.group(1))
        if matches and named not in matches:
            raise ValueError(
                f"The checkpoint says arch {arch!r} but its layers are depth {matches}."
            )
        matches = [named] if named in DEPTHS else matches
    if not matches:
        raise ValueError(
            f"The state dict's stages have {counts} blocks of type {block}: not a depth of "
            f"{sorted(DEPTHS)}."
        )
    if "fc.weight" not in state:
        raise ValueError("The state dict has no fc.weight: not a 3D-ResNet classifier.")
    shortcut = "B" if any(".downsample.0.weight" in key for key in state) else "A"
    return {"depth": matches[0], "shortcut": shortcut, "classes": int(state["fc.weight"].shape[0])}


def convert_checkpoint(
    checkpoint: str,
    output: str,
    input_shape: tuple = DEFAULT_INPUT_SHAPE,
    preprocessing: str = "activitynet_mean",
) -> dict:
    """Converts a reference ``.pth`` checkpoint to a Keras ``.weights.h5`` file.

    The architecture (depth, shortcut type, classes) is read from the checkpoint. Returns it,
    with ``"output"`` and the ``"unused"`` entries.
    """
    if not output.endswith(".weights.h5"):
        raise ValueError(f"The output must be a .weights.h5 file; got {output!r}.")
    whole = torch_checkpoint.load(checkpoint)
    arch = whole.get("arch") if isinstance(whole, dict) else None
    state = torch_checkpoint.load_state_dict(checkpoint)
    spec = infer_architecture(state, arch)
    model = resnet3d(
        spec["depth"],
        spec["shortcut"],
        input_shape=input_shape,
        classes=spec["classes"],
        preprocessing=preprocessing,
    )
    unused = convert_state_dict(model, state)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    model.save_weights(output)
    return {**spec, "output": output, "unused": unused}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tf_bihalf.models.resnet3d",
        description="Convert a 3D-ResNet (Hara et al.) PyTorch checkpoint to Keras weights.",
    )
    parser.add_argument("checkpoint", help="the .pth file (legacy or zip torch.save format)")
    parser.add_argument("output", help="the Keras weights file to write (*.weights.h5)")
    args = parser.parse_args(argv)
    try:
        spec = convert_checkpoint(args.checkpoint, args.output)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"resnet3d depth {spec['depth']} shortcut {spec['shortcut']} classes {spec['classes']}"
        f" -> {spec['output']} (unused entries: {len(spec['unused'])})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
