"""The torch-free, memory-safe ``.pth`` reader: real layouts round-trip, crafted files fail
with a clear ``ValueError`` and never crash the process."""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch_writer as tw

from tf_bihalf.formats import torch_checkpoint

RNG = np.random.default_rng(0)
WRITERS = {"legacy": tw.write_legacy, "zip": tw.write_zip}


def _arrays():
    return collections.OrderedDict(
        [
            ("module.conv1.weight", RNG.normal(size=(4, 3, 3, 5, 5)).astype("float32")),
            ("module.fc.weight", RNG.normal(size=(5, 7)).astype("float32")),
            ("module.fc.bias", RNG.normal(size=(5,)).astype("float64")),
            ("module.bn1.num_batches_tracked", np.array(12, dtype="int64")),
            ("module.mask", RNG.normal(size=(3, 2)) > 0),
            ("module.half", RNG.normal(size=(2, 3)).astype("float16")),
        ]
    )


@pytest.mark.parametrize("layout", sorted(WRITERS))
@pytest.mark.parametrize("transposed", [False, True])
def test_checkpoint_round_trips(tmp_path, layout, transposed):
    arrays = _arrays()
    checkpoint = {
        "epoch": 200,
        "arch": "resnet-34",
        "state_dict": tw.state_dict(arrays, transposed=transposed),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [1, 2]}]},
    }
    path = str(tmp_path / "model.pth")
    WRITERS[layout](path, checkpoint)
    whole = torch_checkpoint.load(path)
    assert whole["epoch"] == 200 and whole["arch"] == "resnet-34"
    assert whole["optimizer"]["param_groups"][0]["lr"] == 0.1
    state = torch_checkpoint.load_state_dict(path)
    assert list(state) == [name[len("module.") :] for name in arrays]
    for name, array in arrays.items():
        loaded = state[name[len("module.") :]]
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)
    raw = torch_checkpoint.load_state_dict(path, strip_prefix=None)
    assert list(raw) == list(arrays)


def test_shared_storage_views_and_parameters(tmp_path):
    flat = np.arange(20, dtype="float32")
    storage = tw.Storage("0", flat)
    state = collections.OrderedDict(
        [
            ("a", tw.Tensor(storage, 0, (2, 5), (5, 1))),
            ("b", tw.Tensor(storage, 10, (5, 2), (1, 5), parameter=True)),  # a transposed view
            ("c", tw.Tensor(storage, 19, (), ())),
            ("empty", tw.Tensor(storage, 0, (0, 4), (4, 1))),
        ]
    )
    for layout, write in WRITERS.items():
        path = str(tmp_path / f"{layout}.pth")
        write(path, state)
        loaded = torch_checkpoint.load_torch_state_dict(path)
        np.testing.assert_array_equal(loaded["a"], flat[:10].reshape(2, 5))
        np.testing.assert_array_equal(loaded["b"], flat[10:].reshape(2, 5).T)
        assert loaded["c"].shape == () and loaded["c"] == 19
        assert loaded["empty"].shape == (0, 4)


def test_bfloat16_is_widened(tmp_path):
    values = np.array([1.0, -2.5, 3.0e-3], dtype="float32")
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    state = {"w": tw.Tensor(tw.Storage("0", bits, "BFloat16Storage"), 0, (3,), (1,))}
    path = str(tmp_path / "bf16.pth")
    tw.write_zip(path, state)
    loaded = torch_checkpoint.load_state_dict(path)["w"]
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, values, rtol=1e-2)


def _storage(size=16):
    return tw.Storage("0", np.arange(size, dtype="float32"))


# Each case: a crafted state dict (or whole object) and a fragment of the expected message.
CRAFTED = {
    "negative_stride": ({"w": tw.Tensor(_storage(), 15, (4,), (-1,))}, "non-negative"),
    "negative_offset": ({"w": tw.Tensor(_storage(), -4, (4,), (1,))}, "non-negative"),
    "offset_beyond_storage": ({"w": tw.Tensor(_storage(), 16, (1,), (1,))}, "reaches element"),
    "extent_beyond_storage": ({"w": tw.Tensor(_storage(), 0, (4, 5), (5, 1))}, "reaches"),
    "huge_shape": ({"w": tw.Tensor(_storage(), 0, (2**40, 2**40), (1, 1))}, "reaches"),
    "huge_stride": ({"w": tw.Tensor(_storage(), 0, (2,), (2**62,))}, "reaches"),
    "zero_stride_blowup": ({"w": tw.Tensor(_storage(), 0, (10**6, 10**6), (0, 0))}, "more"),
    "rank_mismatch": ({"w": tw.Tensor(_storage(), 0, (4, 4), (4,))}, "different lengths"),
    "float_shape": ({"w": tw.Tensor(_storage(), 0, (4.0,), (1,))}, "must be an int"),
    "bool_offset": ({"w": tw.Tensor(_storage(), True, (4,), (1,))}, "must be an int"),
    "string_stride": ({"w": tw.Tensor(_storage(), 0, (4,), "1")}, "must be a tuple"),
    "too_many_dims": ({"w": tw.Tensor(_storage(), 0, (1,) * 40, (1,) * 40)}, "dimensions"),
    "unknown_dtype": (
        {
            "w": tw.Tensor(
                tw.Storage("0", np.zeros(4, "float32"), "ComplexFloatStorage"), 0, (4,), (1,)
            )
        },
        "torch.ComplexFloatStorage",
    ),
    "os_system": ({"w": tw.Global("os", "system", ("true",))}, "os.system"),
    "builtins_eval": ({"w": tw.Global("builtins", "eval", ("1+1",))}, "builtins.eval"),
    "numpy_global": ({"w": tw.Global("numpy", "frombuffer", ("",))}, "numpy.frombuffer"),
}


@pytest.mark.parametrize("layout", sorted(WRITERS))
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_files_raise_value_error(tmp_path, layout, case):
    obj, message = CRAFTED[case]
    path = str(tmp_path / f"{case}.pth")
    WRITERS[layout](path, obj)
    with pytest.raises(ValueError, match=message) as raised:
        torch_checkpoint.load(path)
    assert str(path) in str(raised.value)
    assert isinstance(raised.value, pickle.UnpicklingError)  # the efficientnet tests rely on it


def test_storage_size_lies_are_caught(tmp_path):
    # The pickle declares more elements than the data record holds (legacy) / the member (zip).
    storage = tw.Storage("0", np.arange(4, dtype="float32"), declared_numel=1 << 40)
    state = {"w": tw.Tensor(storage, 0, (4,), (1,))}
    legacy = tmp_path / "legacy.pth"
    tw.write_legacy(legacy, state)
    with pytest.raises(ValueError, match="Truncated file|declares"):
        torch_checkpoint.load(str(legacy))
    archive = tmp_path / "zip.pth"
    tw.write_zip(archive, state)
    with pytest.raises(ValueError, match="declares"):
        torch_checkpoint.load(str(archive))


def test_inconsistent_storage_declarations(tmp_path):
    data = np.arange(8, dtype="float32")
    first = tw.Storage("0", data)
    second = tw.Storage("0", data.astype("float64"))
    state = {"a": tw.Tensor(first, 0, (8,), (1,)), "b": tw.Tensor(second, 0, (8,), (1,))}
    path = str(tmp_path / "twice.pth")
    tw.write_zip(path, state)
    with pytest.raises(ValueError, match="declared twice"):
        torch_checkpoint.load(path)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_files(tmp_path, cut):
    state = tw.state_dict({"w": np.arange(1000, dtype="float32"), "b": np.ones(3)})
    for layout, write in WRITERS.items():
        full = tmp_path / f"full_{layout}.pth"
        write(full, state)
        data = full.read_bytes()
        short = tmp_path / f"short_{layout}.pth"
        short.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(ValueError, match=str(short)):
            torch_checkpoint.load(str(short))


def test_zip_bomb_member_is_refused(tmp_path):
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "archive/data.pkl", tw.dumps({"w": tw.Tensor(_storage(1 << 22), 0, (4,), (1,))})
        )
        archive.writestr("archive/data/0", b"\0" * (4 << 22))
    with pytest.raises(ValueError, match="more than the whole file"):
        torch_checkpoint.load(str(path))


def test_not_a_regular_file_and_size_cap(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        torch_checkpoint.load(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="not a regular file"):
        torch_checkpoint.load(str(tmp_path))
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.pth"
        os.mkfifo(fifo)
        with pytest.raises(ValueError, match="not a regular file"):
            torch_checkpoint.load(str(fifo))  # must not block
    path = tmp_path / "w.pth"
    tw.write_zip(path, tw.state_dict({"w": np.zeros(100, "float32")}))
    with pytest.raises(ValueError, match="max_bytes"):
        torch_checkpoint.load(str(path), max_bytes=100)


def test_not_a_state_dict(tmp_path):
    path = str(tmp_path / "list.pth")
    tw.write_zip(path, [1, 2, 3])
    with pytest.raises(ValueError, match="does not hold a state dict"):
        torch_checkpoint.load_state_dict(path)


def test_random_garbage_and_bit_flips_never_crash(tmp_path):
    """Random bytes and random corruptions of a valid file, read in a child process: every
    read either succeeds or raises ValueError; the child must exit normally (no signal)."""
    good = tmp_path / "good.pth"
    tw.write_legacy(good, tw.state_dict({"w": RNG.normal(size=(3, 4)).astype("float32")}))
    good_zip = tmp_path / "good_zip.pth"
    tw.write_zip(good_zip, tw.state_dict({"w": RNG.normal(size=(3, 4)).astype("float32")}))
    script = textwrap.dedent(
        f"""
        import numpy as np, os
        from tf_bihalf.formats import torch_checkpoint
        rng = np.random.default_rng(1)
        sources = [open({str(good)!r}, "rb").read(), open({str(good_zip)!r}, "rb").read()]
        path = {str(tmp_path / "fuzz.pth")!r}
        outcomes = {{"ok": 0, "error": 0}}
        for trial in range(300):
            data = bytearray(sources[trial % 2])
            if trial % 3 == 0:
                data = bytearray(rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8))
            else:
                for _ in range(int(rng.integers(1, 6))):
                    data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
            with open(path, "wb") as handle:
                handle.write(bytes(data))
            try:
                torch_checkpoint.load(path)
                outcomes["ok"] += 1
            except ValueError:
                outcomes["error"] += 1
        print(outcomes)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "'error'" in result.stdout


def test_nastiest_cases_in_a_subprocess(tmp_path):
    """The cases that crashed the old reader (SIGSEGV or memory from outside the file) are
    read in a child process: it must exit 0 having seen a ValueError for each."""
    paths = []
    for case in ("negative_stride", "huge_shape", "huge_stride", "offset_beyond_storage"):
        for layout, write in WRITERS.items():
            path = str(tmp_path / f"{case}_{layout}.pth")
            write(path, CRAFTED[case][0])
            paths.append(path)
    script = textwrap.dedent(
        f"""
        from tf_bihalf.formats import torch_checkpoint
        for path in {paths!r}:
            try:
                torch_checkpoint.load(path)
            except ValueError:
                continue
            raise SystemExit("no error for " + path)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
