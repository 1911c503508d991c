"""Reliability of the Hamming index and its command line against damaged files and odd inputs.

An edited manifest, a truncated or corrupt code file, a FIFO where a file should be, an empty
query batch: each gives a one-line error naming the file, or an empty result, never a
traceback or a silently wrong distance.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import zipfile

import numpy as np
import pytest

from tf_bihalf.search import HammingIndex, faiss_available
from tf_bihalf.search.__main__ import main as search_main


def random_codes(count: int, bits: int, seed: int = 0) -> np.ndarray:
    return np.where(np.random.default_rng(seed).random((count, bits)) < 0.5, -1, 1).astype(np.int8)


@pytest.fixture
def saved_index(tmp_path):
    index = HammingIndex(32, backend="numpy")
    index.add(random_codes(50, 32))
    return index.save(str(tmp_path / "index"))


def _edit_manifest(path: str, **changes) -> None:
    manifest_path = os.path.join(path, "manifest.json")
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    manifest.update(changes)
    with open(manifest_path, "w") as handle:
        json.dump(manifest, handle)


@pytest.mark.parametrize("changes", [{"bits": 30}, {"bits": 25}, {"backend": "faiss"}])
def test_edited_manifest_is_refused(saved_index, changes, capsys):
    # bits=30 or 25 keeps ceil(bits/8) = 4 bytes: before the manifest checksum this loaded and
    # returned distances computed on the wrong number of bits.
    _edit_manifest(saved_index, **changes)
    with pytest.raises(ValueError, match="checksum mismatch for .*manifest.json"):
        HammingIndex.load(saved_index)
    assert search_main(["info", "--index", saved_index]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: checksum mismatch") and "\n" not in error


@pytest.mark.parametrize("content", ["[]", '"text"', "\xff\xfe"])
def test_malformed_manifest_is_a_clear_error(saved_index, content):
    with open(os.path.join(saved_index, "manifest.json"), "w", encoding="latin-1") as handle:
        handle.write(content)
    with pytest.raises(ValueError, match="manifest.json"):
        HammingIndex.load(saved_index)


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _corrupt_member(data: bytes) -> bytes:
    """The .npz with the last bytes of its stored ``codes`` member flipped (a CRC mismatch)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("codes.npy")
    name_length, extra_length = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    end = info.header_offset + 30 + name_length + extra_length + info.compress_size
    damaged = bytearray(data)
    for offset in range(end - 8, end):
        damaged[offset] ^= 0xFF
    return bytes(damaged)


CODES = random_codes(40, 24)
GOOD_NPZ = _npz_bytes(codes=CODES, ids=np.arange(40))


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("truncated.npz", GOOD_NPZ[: len(GOOD_NPZ) // 2], "truncated or not a .npy/.npz"),
        ("corrupt.npz", _corrupt_member(GOOD_NPZ), "truncated or corrupt"),
        ("zip_named.npy", GOOD_NPZ[:200], "truncated or not a .npy/.npz"),
        ("truncated.npy", _npy_bytes(CODES)[:150], "cannot read codes file"),
        ("empty.npz", b"", "cannot read codes file"),
        ("text.npy", b"hello, not an array\n" * 10, "cannot read codes file"),
        (
            "bits_array.npz",
            _npz_bytes(codes_packed=np.zeros((2, 3), np.uint8), bits=[1, 2]),
            "'bits' must be one integer",
        ),
        ("nan.npy", _npy_bytes(np.full((3, 8), np.nan)), "±1 codes or {0,1} codes"),
        ("three_d.npy", _npy_bytes(np.ones((2, 3, 4))), "2-D array"),
    ],
)
def test_build_on_damaged_code_files_is_one_line(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    status = search_main(["build", "--codes", str(path), "--out", str(tmp_path / "index")])
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "\n" not in error, error
    assert message in error, error
    assert str(path) in error or name in error
    assert not (tmp_path / "index").exists()


def test_fifo_and_directory_code_files_are_refused_without_reading(tmp_path, capsys):
    os.mkfifo(tmp_path / "codes.npy")
    (tmp_path / "dir.npz").mkdir()
    os.mkfifo(tmp_path / "ids.txt")
    good = tmp_path / "good.npy"
    good.write_bytes(_npy_bytes(CODES))
    for arguments in (
        ["--codes", str(tmp_path / "codes.npy")],
        ["--codes", str(tmp_path / "dir.npz")],
        ["--codes", str(good), "--ids", str(tmp_path / "ids.txt")],
    ):
        status = search_main(["build", *arguments, "--out", str(tmp_path / "index")])
        assert status == 2
        error = capsys.readouterr().err.strip()
        assert "is not a regular file" in error and "\n" not in error, error


def test_empty_query_batches_give_empty_results_on_every_backend():
    backends = ["numpy", "faiss", "faiss_multihash"] if faiss_available() else ["numpy"]
    for backend, queries in itertools.product(
        backends, (np.zeros((0, 24), np.int8), np.zeros((0, 3), np.uint8))
    ):
        index = HammingIndex(24, backend=backend)
        index.add(CODES, ids=[f"item{i}" for i in range(40)])
        distances, ids = index.search(queries, 5)
        assert distances.shape == (0, 5) and ids.shape == (0, 5)
        assert distances.dtype == np.int32 and ids.dtype.kind == "U"
        lims, distances, ids = index.range_search(queries, 3)
        np.testing.assert_array_equal(lims, [0])
        assert distances.shape == (0,) and ids.shape == (0,)
    # Bad query values stay clear errors.
    with pytest.raises(ValueError, match="±1 codes or"):
        index.search(np.full((1, 24), np.nan), 3)
    with pytest.raises(ValueError, match="24-bit codes"):
        index.search(np.ones((1, 23)), 3)


def test_query_cli_on_damaged_query_file_and_index(saved_index, tmp_path, capsys):
    queries = tmp_path / "queries.npz"
    queries.write_bytes(_corrupt_member(_npz_bytes(codes=random_codes(3, 32))))
    status = search_main(["query", "--index", saved_index, "--codes", str(queries), "-k", "3"])
    assert status == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    good = tmp_path / "good.npy"
    good.write_bytes(_npy_bytes(random_codes(2, 32)))
    _edit_manifest(saved_index, count=49)
    status = search_main(["query", "--index", saved_index, "--codes", str(good), "-k", "3"])
    assert status == 2
    assert "checksum mismatch" in capsys.readouterr().err
