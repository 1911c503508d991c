"""3D ResNets: shapes, pinned parameter counts, and the PyTorch checkpoint converter checked
against an independent numpy forward pass on a checkpoint the test writes itself."""

from __future__ import annotations

import collections
import math

import keras
import numpy as np
import pytest
import torch_writer as tw

from tf_bihalf.models import resnet3d

RNG = np.random.default_rng(0)

# PyTorch-style counts (conv + BN scale/shift + fc) with a 400-way head.
PINNED = {
    (10, "A"): 14_430_800,
    (18, "A"): 33_235_280,
    (18, "B"): 33_409_104,
    (34, "A"): 63_544_912,
    (50, "B"): 47_018_576,
    (101, "B"): 86_064_720,
}


def count_by_formula(depth: int, shortcut: str, classes: int = 400) -> int:
    """An independent count: closed-form per stage, not a walk over built layers."""
    block, blocks = {
        10: ("basic", [1, 1, 1, 1]),
        18: ("basic", [2, 2, 2, 2]),
        34: ("basic", [3, 4, 6, 3]),
        50: ("bottleneck", [3, 4, 6, 3]),
        101: ("bottleneck", [3, 4, 23, 3]),
    }[depth]
    total = 3 * 64 * 7**3 + 2 * 64  # stem conv + BN
    inputs = 64
    for planes, count in zip([64, 128, 256, 512], blocks, strict=True):
        out = planes if block == "basic" else 4 * planes
        if block == "basic":
            first = inputs * planes * 27 + planes * planes * 27 + 4 * planes
            rest = 2 * planes * planes * 27 + 4 * planes
        else:
            body = planes * planes * 27 + planes * out + 2 * (2 * planes) + 2 * out
            first = inputs * planes + body
            rest = out * planes + body
        projection = (
            inputs * out + 2 * out if (shortcut == "B" and (inputs != out or planes > 64)) else 0
        )
        total += first + (count - 1) * rest + projection
        inputs = out
    return total + inputs * classes + classes


def trainable_count(model) -> int:
    return sum(math.prod(w.shape) for w in model.trainable_weights)


@pytest.mark.parametrize("depth, shortcut", sorted(PINNED))
def test_parameter_counts_are_pinned(depth, shortcut):
    assert count_by_formula(depth, shortcut) == PINNED[(depth, shortcut)]
    model = resnet3d.resnet3d(depth, shortcut, input_shape=(None, None, None, 3))
    assert trainable_count(model) == PINNED[(depth, shortcut)]
    if (depth, shortcut) == (18, "A"):
        assert round(PINNED[(18, "A")] / 1e6, 1) == 33.2  # the published figure


@pytest.mark.parametrize("depth", [18, 50])
def test_shapes_on_a_reference_clip(depth):
    model = resnet3d.resnet3d(depth, include_top=False)
    assert model.input.shape == (None, 16, 112, 112, 3)
    assert model.output.shape == (None, resnet3d.feature_dim(depth))
    layer4 = model.get_layer(f"layer4_{resnet3d.DEPTHS[depth][1][3] - 1}_relu")
    assert layer4.output.shape == (None, 1, 4, 4, resnet3d.feature_dim(depth))
    clip = RNG.uniform(0, 255, size=(2, 16, 112, 112, 3)).astype("float32")
    assert model(clip).shape == (2, resnet3d.feature_dim(depth))


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth must be one of"):
        resnet3d.resnet3d(19)
    with pytest.raises(ValueError, match="shortcut"):
        resnet3d.resnet3d(18, "C")
    with pytest.raises(ValueError, match="input_shape"):
        resnet3d.resnet3d(18, input_shape=(112, 112, 3))
    with pytest.raises(ValueError, match="preprocessing"):
        resnet3d.resnet3d(18, preprocessing="imagenet")


# --- an independent numpy forward pass in the PyTorch layout ---------------------------------


def np_conv3d(x, weight, stride, padding):
    """``torch.nn.functional.conv3d`` in float64: x (N, T, H, W, C), weight (O, C, t, h, w)."""
    stride = (stride,) * 3 if isinstance(stride, int) else stride
    x = np.pad(x, [(0, 0)] + [(padding, padding)] * 3 + [(0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(x, weight.shape[2:], axis=(1, 2, 3))
    windows = windows[:, :: stride[0], :: stride[1], :: stride[2]]
    return np.einsum("nthwcijk,ocijk->nthwo", windows, weight, optimize=True)


def np_bn(x, state, prefix):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-5)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def np_maxpool(x):
    x = np.pad(x, [(0, 0), (1, 1), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3, 3), axis=(1, 2, 3))
    return windows[:, ::2, ::2, ::2].max(axis=(-3, -2, -1))


def np_resnet(clip, state, depth, shortcut):
    """The reference ResNet's forward (mean subtraction included) in float64; the block
    counts come from ``resnet3d.DEPTHS`` (the only thing taken from the module)."""
    state = {k.removeprefix("module."): v.astype(np.float64) for k, v in state.items()}
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    x = clip.astype(np.float64) - np.array(resnet3d.ACTIVITYNET_MEAN_RGB)
    x = relu(np_bn(np_conv3d(x, state["conv1.weight"], (1, 2, 2), 3), state, "bn1"))
    x = np_maxpool(x)
    kind, blocks = resnet3d.DEPTHS[depth]
    for stage, count in enumerate(blocks, start=1):
        for index in range(count):
            p = f"layer{stage}.{index}"
            stride = 2 if stage > 1 and index == 0 else 1
            if kind == "basic":
                y = relu(
                    np_bn(np_conv3d(x, state[f"{p}.conv1.weight"], stride, 1), state, f"{p}.bn1")
                )
                y = np_bn(np_conv3d(y, state[f"{p}.conv2.weight"], 1, 1), state, f"{p}.bn2")
            else:
                y = relu(np_bn(np_conv3d(x, state[f"{p}.conv1.weight"], 1, 0), state, f"{p}.bn1"))
                y = relu(
                    np_bn(np_conv3d(y, state[f"{p}.conv2.weight"], stride, 1), state, f"{p}.bn2")
                )
                y = np_bn(np_conv3d(y, state[f"{p}.conv3.weight"], 1, 0), state, f"{p}.bn3")
            residual = x
            if y.shape != x.shape:
                if shortcut == "A":
                    residual = x[:, ::stride, ::stride, ::stride]
                    extra = y.shape[-1] - residual.shape[-1]
                    residual = np.pad(residual, [(0, 0)] * 4 + [(0, extra)])
                else:
                    residual = np_conv3d(x, state[f"{p}.downsample.0.weight"], stride, 0)
                    residual = np_bn(residual, state, f"{p}.downsample.1")
            x = relu(y + residual)
    pooled = x.mean(axis=(1, 2, 3))
    return pooled @ state["fc.weight"].T + state["fc.bias"]


def reference_state_dict(depth, shortcut, classes):
    """A random state dict in the reference's key layout (``module.`` prefix, BN stats)."""
    kind, stage_blocks = resnet3d.DEPTHS[depth]
    expansion = resnet3d.EXPANSION[kind]
    state = collections.OrderedDict()

    def conv(name, out, cin, k):
        fan_in = cin * k**3
        state[f"module.{name}.weight"] = (
            RNG.normal(size=(out, cin, k, k, k)) * np.sqrt(2 / fan_in)
        ).astype("float32")

    def bn(name, channels):
        state[f"module.{name}.weight"] = RNG.uniform(0.5, 1.5, channels).astype("float32")
        state[f"module.{name}.bias"] = RNG.normal(0, 0.1, channels).astype("float32")
        state[f"module.{name}.running_mean"] = RNG.normal(0, 0.1, channels).astype("float32")
        state[f"module.{name}.running_var"] = RNG.uniform(0.5, 1.5, channels).astype("float32")
        state[f"module.{name}.num_batches_tracked"] = np.array(1000, "int64")

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inputs = 64
    for stage, (planes, count) in enumerate(
        zip(resnet3d.STAGE_PLANES, stage_blocks, strict=True), 1
    ):
        for index in range(count):
            p = f"layer{stage}.{index}"
            if kind == "basic":
                conv(f"{p}.conv1", planes, inputs, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
            else:
                conv(f"{p}.conv1", planes, inputs, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1)
                bn(f"{p}.bn3", planes * 4)
            stride = 2 if stage > 1 and index == 0 else 1
            if shortcut == "B" and index == 0 and (stride != 1 or inputs != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, inputs, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inputs = planes * expansion
    state["module.fc.weight"] = (RNG.normal(size=(classes, inputs)) / np.sqrt(inputs)).astype(
        "float32"
    )
    state["module.fc.bias"] = RNG.normal(0, 0.1, classes).astype("float32")
    return state


def write_reference_checkpoint(path, state, arch, layout="legacy"):
    """As the reference's ``save_checkpoint``: {"epoch", "arch", "state_dict", "optimizer"}."""
    checkpoint = {
        "epoch": 200,
        "arch": arch,
        "state_dict": tw.state_dict(state),
        "optimizer": {
            "state": {},
            "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0.9, "params": [0]}],
        },
    }
    (tw.write_legacy if layout == "legacy" else tw.write_zip)(str(path), checkpoint)


def _check_exact_weights(model, state):
    plain = {k.removeprefix("module."): v for k, v in state.items()}
    checked = 0
    for layer in model.layers:
        prefix = resnet3d._torch_prefix(layer.name)
        if isinstance(layer, keras.layers.Conv3D):
            expected = plain[f"{prefix}.weight"].transpose(2, 3, 4, 1, 0)
            np.testing.assert_array_equal(layer.kernel.numpy(), expected)
            checked += 1
        elif isinstance(layer, keras.layers.BatchNormalization):
            for variable, part in zip(
                layer.weights, ("weight", "bias", "running_mean", "running_var"), strict=True
            ):
                np.testing.assert_array_equal(variable.numpy(), plain[f"{prefix}.{part}"])
            checked += 1
        elif isinstance(layer, keras.layers.Dense):
            np.testing.assert_array_equal(layer.kernel.numpy(), plain["fc.weight"].T)
            np.testing.assert_array_equal(layer.bias.numpy(), plain["fc.bias"])
            checked += 1
    return checked


def test_resnet18_checkpoint_converts_exactly_and_matches_numpy(tmp_path):
    state = reference_state_dict(18, "A", classes=400)
    path = tmp_path / "resnet-18-kinetics.pth"
    write_reference_checkpoint(path, state, "resnet-18", layout="legacy")
    output = str(tmp_path / "resnet18.weights.h5")
    spec = resnet3d.convert_checkpoint(str(path), output, input_shape=(8, 32, 32, 3))
    assert (spec["depth"], spec["shortcut"], spec["classes"]) == (18, "A", 400)
    assert all(key.endswith("num_batches_tracked") for key in spec["unused"])
    model = resnet3d.resnet3d(18, "A", input_shape=(8, 32, 32, 3), weights=output)
    # 1 stem conv + 1 BN + 8 blocks x (2 conv + 2 BN) + fc: every weight compared exactly.
    assert _check_exact_weights(model, state) == 2 + 8 * 4 + 1
    clip = RNG.uniform(0, 255, size=(2, 8, 32, 32, 3)).astype("float32")
    expected = np_resnet(clip, state, 18, "A")
    actual = model(clip).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    # The stem alone, against the numpy conv in float64, is tighter still.
    stem = keras.Model(model.input, model.get_layer("relu").output)
    plain = {k.removeprefix("module."): v.astype(np.float64) for k, v in state.items()}
    x = clip.astype(np.float64) - np.array(resnet3d.ACTIVITYNET_MEAN_RGB)
    reference_stem = np.maximum(
        np_bn(np_conv3d(x, plain["conv1.weight"], (1, 2, 2), 3), plain, "bn1"), 0
    )
    np.testing.assert_allclose(stem(clip).numpy(), reference_stem, rtol=1e-4, atol=1e-3)


def test_bottleneck_type_b_zip_checkpoint(tmp_path, monkeypatch):
    """Bottleneck blocks with projection shortcuts (as ResNet-50/101), one block per stage to
    stay small, written in the zip serialisation and loaded straight from the .pth."""
    monkeypatch.setitem(resnet3d.DEPTHS, 50, ("bottleneck", (1, 1, 1, 1)))
    state = reference_state_dict(50, "B", classes=11)
    path = tmp_path / "bottleneck.pth"
    write_reference_checkpoint(path, state, "resnet-50", layout="zip")
    model = resnet3d.resnet3d(50, "B", input_shape=(4, 32, 32, 3), classes=11, weights=str(path))
    # 4 blocks x (3 conv + 3 BN) + 4 projections x (conv + BN) + stem conv, BN + fc.
    assert _check_exact_weights(model, state) == 2 + 4 * 6 + 4 * 2 + 1
    clip = RNG.uniform(0, 255, size=(1, 4, 32, 32, 3)).astype("float32")
    expected = np_resnet(clip, state, 50, "B")
    actual = model(clip).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_converter_refuses_mismatches(tmp_path):
    state = reference_state_dict(10, "A", classes=5)
    path = tmp_path / "resnet-10.pth"
    write_reference_checkpoint(path, state, "resnet-10")
    with pytest.raises(ValueError, match=r"layer1\.1\.conv1\.weight"):
        resnet3d.resnet3d(18, "A", input_shape=(4, 32, 32, 3), classes=5, weights=str(path))
    with pytest.raises(ValueError, match="fc.weight.*shape"):
        resnet3d.resnet3d(10, "A", input_shape=(4, 32, 32, 3), classes=7, weights=str(path))
    with pytest.raises(ValueError, match="downsample"):
        resnet3d.resnet3d(10, "B", input_shape=(4, 32, 32, 3), classes=5, weights=str(path))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        resnet3d.resnet3d(10, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="arch"):
        write_reference_checkpoint(path, state, "resnet-34")
        resnet3d.convert_checkpoint(str(path), str(tmp_path / "x.weights.h5"))


def test_command_line_converter(tmp_path, capsys):
    state = reference_state_dict(10, "A", classes=3)
    path = tmp_path / "resnet-10.pth"
    write_reference_checkpoint(path, state, "resnet-10")
    output = tmp_path / "out.weights.h5"
    assert resnet3d.main([str(path), str(output)]) == 0
    assert "depth 10 shortcut A classes 3" in capsys.readouterr().out
    model = resnet3d.resnet3d(10, "A", classes=3, weights=str(output))
    assert _check_exact_weights(model, state) == 2 + 4 * 4 + 1
    assert resnet3d.main([str(tmp_path / "nope.pth"), str(output)]) == 1


def test_zero_pad_shortcut_layer():
    layer = resnet3d.ZeroPadShortcut(6, 2)
    x = RNG.normal(size=(1, 5, 4, 3, 2)).astype("float32")
    y = layer(x).numpy()
    assert y.shape == (1, 3, 2, 2, 6)
    np.testing.assert_array_equal(y[..., :2], x[:, ::2, ::2, ::2])
    assert not y[..., 2:].any()
    restored = resnet3d.ZeroPadShortcut.from_config(layer.get_config())
    assert (restored.filters, restored.strides) == (6, 2)


def test_model_saves_as_keras(tmp_path):
    from testing import run_model_saving_test

    model = resnet3d.resnet3d(10, input_shape=(4, 32, 32, 3), classes=3)
    run_model_saving_test(model, RNG.uniform(0, 255, size=(1, 4, 32, 32, 3)).astype("float32"))
