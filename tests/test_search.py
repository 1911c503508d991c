"""Tests for tf_bihalf.search: HammingIndex backends against a brute-force reference, save/load,
bad input and the command line."""

import json
import os

import numpy as np
import pytest

from tf_bihalf.search import HammingIndex, backends, pairwise_hamming
from tf_bihalf.search import __main__ as cli

BACKEND_NAMES = ["numpy"] + (["faiss", "faiss_multihash"] if backends.faiss_available() else [])


def reference_search(queries, database, ids, k):
    """Exact (distance, id)-ordered k nearest neighbours with plain numpy (full sort per query)."""
    distances = (queries[:, None, :] != database[None, :, :]).sum(axis=2)
    result_distances, result_ids = [], []
    for row in distances:
        order = sorted(range(len(database)), key=lambda j, row=row: (row[j], ids[j]))[:k]
        result_distances.append(row[order])
        result_ids.append(np.asarray(ids)[order])
    return np.array(result_distances), np.array(result_ids)


def reference_range(queries, database, ids, radius):
    distances = (queries[:, None, :] != database[None, :, :]).sum(axis=2)
    results = []
    for row in distances:
        found = sorted((row[j], ids[j]) for j in range(len(database)) if row[j] <= radius)
        results.append(found)
    return results


def tie_heavy_codes(rng, count, bits, distinct=12):
    """Codes drawn from few distinct patterns, so that many distances tie."""
    patterns = rng.choice([-1, 1], size=(distinct, bits)).astype(np.int8)
    return patterns[rng.integers(0, distinct, count)]


@pytest.fixture
def small_blocks(monkeypatch):
    """Several query chunks and database blocks in the numpy backend, so that the filtered
    merge path across blocks runs."""
    monkeypatch.setattr(backends.NumpyBackend, "_CHUNK_ROWS", 3)
    monkeypatch.setattr(backends.NumpyBackend, "_BLOCK_PAIRS", 3 * 16)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("bits", [6, 13, 64, 100])
def test_search_matches_reference_with_ties(backend, bits, small_blocks):
    rng = np.random.default_rng(bits)
    database = tie_heavy_codes(rng, 150, bits)
    queries = np.concatenate([database[:4], rng.choice([-1, 1], size=(5, bits))])
    ids = rng.permutation(1000)[:150] * 7  # non-contiguous, added in shuffled order
    index = HammingIndex(bits, backend=backend)
    index.add(database, ids=ids)
    assert index.backend == backend and len(index) == 150
    for k in (1, 5, 37, 150, 400):
        distances, found_ids = index.search(queries, k)
        expected_distances, expected_ids = reference_search(queries, database, ids, k)
        np.testing.assert_array_equal(distances, expected_distances)
        np.testing.assert_array_equal(found_ids, expected_ids)
        assert distances.dtype == np.int32 and found_ids.dtype == np.int64


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_range_search_matches_reference(backend, small_blocks):
    rng = np.random.default_rng(1)
    bits = 24
    database = tie_heavy_codes(rng, 120, bits, distinct=30)
    database[::3] *= np.where(rng.random((40, bits)) < 0.1, -1, 1).astype(np.int8)
    queries = database[:6]
    ids = [f"item-{i:03d}" for i in rng.permutation(120)]
    index = HammingIndex(bits, backend=backend)
    index.add(database, ids=ids)
    for radius in (0, 1, 2, 5, 12, 24, 40):
        lims, distances, found_ids = index.range_search(queries, radius)
        expected = reference_range(queries, database, ids, radius)
        assert lims.tolist() == np.cumsum([0] + [len(e) for e in expected]).tolist()
        for i, rows in enumerate(expected):
            got = list(
                zip(
                    distances[lims[i] : lims[i + 1]].tolist(),
                    found_ids[lims[i] : lims[i + 1]].tolist(),
                    strict=True,
                )
            )
            assert got == [(int(d), name) for d, name in rows]


def test_backends_identical_on_random_and_clustered_codes():
    if len(BACKEND_NAMES) == 1:
        pytest.skip("faiss is not installed: only the numpy backend exists")
    rng = np.random.default_rng(2)
    database = np.concatenate(
        [rng.choice([-1, 1], size=(3000, 32)), tie_heavy_codes(rng, 3000, 32, distinct=5)]
    )
    queries = database[rng.integers(0, 6000, 50)]
    results = {}
    for backend in BACKEND_NAMES:
        index = HammingIndex(32, backend=backend)
        index.add(database)
        results[backend] = index.search(queries, 64) + index.range_search(queries, 3)
    for backend in BACKEND_NAMES[1:]:
        for got, expected in zip(results[backend], results["numpy"], strict=True):
            np.testing.assert_array_equal(got, expected)


class ArbitraryTieOrder:
    """Wraps a faiss index so that search() breaks distance ties in a random order, as a faiss
    without id tie-breaking may; the results are still a valid "k smallest distances" answer."""

    def __init__(self, index, seed):
        self.index, self.rng = index, np.random.default_rng(seed)

    def search(self, queries, k):
        distances, positions = self.index.search(queries, self.index.ntotal)
        noise = self.rng.random(distances.shape)
        order = np.lexsort((noise, distances), axis=-1)[:, :k]
        return np.take_along_axis(distances, order, 1), np.take_along_axis(positions, order, 1)


@pytest.mark.skipif(not backends.faiss_available(), reason="needs faiss")
def test_faiss_over_fetching_fallback_is_exact(monkeypatch):
    assert backends.faiss_ties_by_position()  # the pinned faiss breaks ties by position
    monkeypatch.setattr(backends, "faiss_ties_by_position", lambda: False)
    rng = np.random.default_rng(3)
    database = tie_heavy_codes(rng, 500, 16, distinct=4)  # ties far beyond 2k + 16
    database[:40] = rng.choice([-1, 1], size=(40, 16))
    queries = rng.choice([-1, 1], size=(7, 16))
    index = HammingIndex(16, backend="faiss")
    index.add(database)
    faiss_index = index._backend._index
    monkeypatch.setattr(index._backend, "_flat", lambda: ArbitraryTieOrder(faiss_index, seed=0))
    for k in (1, 10, 200, 500):
        expected = reference_search(queries, database, np.arange(500), k)
        for got, want in zip(index.search(queries, k), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    # Without the fallback, the arbitrary tie order shows: the test data does exercise it.
    monkeypatch.setattr(backends, "faiss_ties_by_position", lambda: True)
    assert not np.array_equal(
        index.search(queries, 10)[1], reference_search(queries, database, np.arange(500), 10)[1]
    )


def test_add_in_several_calls_default_ids_and_forms():
    rng = np.random.default_rng(4)
    codes = rng.choice([-1, 1], size=(40, 12))
    index = HammingIndex(12, backend="numpy")
    index.add(codes[:10])  # ids 0..9
    index.add(np.packbits(codes[10:25] > 0, axis=1))  # packed, ids 10..24
    index.add((codes[25:] > 0).astype(np.float32), ids=np.arange(100, 115))  # {0,1}
    index.add(codes[:2], ids=[-5, 50])  # interleaved ids: the index re-sorts
    all_codes = np.concatenate([codes, codes[:2]])
    all_ids = np.concatenate([np.arange(25), np.arange(100, 115), [-5, 50]])
    np.testing.assert_array_equal(index.ids, np.sort(all_ids))
    distances, ids = index.search(codes[:3], 42)
    expected = reference_search(codes[:3], all_codes, all_ids, 42)
    np.testing.assert_array_equal(distances, expected[0])
    np.testing.assert_array_equal(ids, expected[1])
    one_distances, one_ids = index.search(codes[5], 2)  # a single 1-D query
    assert one_distances.shape == (1, 2) and one_ids[0, 0] == 5


def test_pairwise_hamming():
    a = np.array([[1, -1, 1, 1, -1, -1, -1, -1, 1]])
    b = np.array([[1, -1, 1, 1, -1, -1, -1, -1, 1], [-1, 1, -1, -1, 1, 1, 1, 1, -1], [1] * 9])
    np.testing.assert_array_equal(pairwise_hamming(a, b), [[0, 9, 5]])
    np.testing.assert_array_equal(
        pairwise_hamming(np.packbits(a > 0, axis=1), b, bits=9), [[0, 9, 5]]
    )


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_save_load_round_trip(tmp_path, backend):
    rng = np.random.default_rng(5)
    codes = tie_heavy_codes(rng, 80, 20)
    ids = np.array([f"doc{i}" for i in rng.permutation(80)])
    index = HammingIndex(20, backend=backend)
    index.add(codes, ids=ids)
    path = index.save(str(tmp_path / "index"))
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["bits"] == 20 and manifest["count"] == 80 and manifest["backend"] == backend
    assert manifest["format_version"] == 2 and len(manifest["files"]["codes.npy"]["sha256"]) == 64
    assert len(manifest["manifest_sha256"]) == 64
    loaded = HammingIndex.load(path)
    assert loaded.backend == backend and len(loaded) == 80 and loaded.bits == 20
    np.testing.assert_array_equal(loaded.ids, index.ids)
    np.testing.assert_array_equal(loaded.codes, index.codes)
    for got, expected in zip(loaded.search(codes[:5], 9), index.search(codes[:5], 9), strict=True):
        np.testing.assert_array_equal(got, expected)
    # The ids file is a plain unicode .npy: readable without pickle.
    assert np.load(tmp_path / "index" / "ids.npy", allow_pickle=False).dtype.kind == "U"
    other = HammingIndex.load(path, backend="numpy")
    np.testing.assert_array_equal(other.search(codes[:5], 9)[1], index.search(codes[:5], 9)[1])


def test_save_refuses_to_overwrite_and_load_checks_integrity(tmp_path):
    index = HammingIndex(8, backend="numpy")
    index.add(np.eye(8) * 2 - 1)
    path = str(tmp_path / "index")
    index.save(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        index.save(path)
    index.add(-np.ones((1, 8)))
    index.save(path, overwrite=True)
    assert len(HammingIndex.load(path)) == 9
    with pytest.raises(FileNotFoundError, match="not a saved HammingIndex"):
        HammingIndex.load(str(tmp_path / "missing"))
    codes_path = os.path.join(path, "codes.npy")
    data = bytearray(open(codes_path, "rb").read())
    data[-1] ^= 1
    open(codes_path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        HammingIndex.load(path)
    index.save(path, overwrite=True)
    manifest_path = os.path.join(path, "manifest.json")
    manifest = json.load(open(manifest_path))
    manifest["format_version"] = 99
    json.dump(manifest, open(manifest_path, "w"))
    with pytest.raises(ValueError, match="format_version 99"):
        HammingIndex.load(path)
    index.save(path, overwrite=True)
    os.remove(os.path.join(path, "ids.npy"))
    with pytest.raises(FileNotFoundError, match="ids.npy"):
        HammingIndex.load(path)


def test_bad_inputs_raise_clear_errors():
    index = HammingIndex(16, backend="numpy")
    with pytest.raises(ValueError, match="index is empty"):
        index.search(np.ones((1, 16)), 3)
    index.add(np.ones((4, 16)), ids=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="16-bit codes"):
        index.search(np.ones((2, 12)), 3)
    with pytest.raises(ValueError, match="must be uint8"):
        index.search(np.ones((2, 2), dtype=np.int32), 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.ones((2, 16)), 0)
    with pytest.raises(ValueError, match="radius must be a non-negative integer"):
        index.range_search(np.ones((2, 16)), -1)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(np.ones((1, 16)), ids=[3])
    with pytest.raises(ValueError, match="contain duplicates"):
        index.add(np.ones((2, 16)), ids=[7, 7])
    with pytest.raises(ValueError, match="all be integers or all strings"):
        index.add(np.ones((1, 16)), ids=["a"])
    with pytest.raises(ValueError, match="one id per code"):
        index.add(np.ones((2, 16)), ids=[8])
    with pytest.raises(ValueError, match="±1 codes or"):
        index.add(np.full((1, 16), 0.3))
    with pytest.raises(ValueError, match="backend must be"):
        HammingIndex(16, backend="annoy")
    with pytest.raises(ValueError, match="bits must be a positive integer"):
        HammingIndex(0)
    string_index = HammingIndex(16, backend="numpy")
    string_index.add(np.ones((1, 16)), ids=["a"])
    with pytest.raises(ValueError, match="needs ids"):
        string_index.add(np.ones((1, 16)))


def test_command_line_build_and_query(tmp_path, capsys):
    rng = np.random.default_rng(6)
    codes = tie_heavy_codes(rng, 60, 16)
    ids = np.array([f"img_{i}.jpg" for i in range(60)])
    # The layout export/encode.py writes: int8 ±1 codes, packed codes and ids.
    np.savez(
        tmp_path / "codes.npz", codes=codes, codes_packed=np.packbits(codes > 0, axis=1), ids=ids
    )
    np.save(tmp_path / "queries.npy", codes[:3])
    index_dir = str(tmp_path / "index")
    assert (
        cli.main(
            [
                "build",
                "--codes",
                str(tmp_path / "codes.npz"),
                "--out",
                index_dir,
                "--backend",
                "numpy",
            ]
        )
        == 0
    )
    assert "60 codes of 16 bits" in capsys.readouterr().out

    result = str(tmp_path / "result.npz")
    assert (
        cli.main(
            [
                "query",
                "--index",
                index_dir,
                "--codes",
                str(tmp_path / "queries.npy"),
                "-k",
                "5",
                "--out",
                result,
            ]
        )
        == 0
    )
    with np.load(result, allow_pickle=False) as saved:
        expected = reference_search(codes[:3], codes, ids, 5)
        np.testing.assert_array_equal(saved["distances"], expected[0])
        np.testing.assert_array_equal(saved["ids"], expected[1])
    capsys.readouterr()

    assert (
        cli.main(
            [
                "query",
                "--index",
                index_dir,
                "--codes",
                str(tmp_path / "queries.npy"),
                "--radius",
                "0",
                "--json",
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == [0, 1, 2]
    assert lines[0]["ids"] == sorted(ids[(codes == codes[0]).all(axis=1)].tolist())
    assert set(lines[0]["distances"]) == {0}

    # Packed-only files need the code length.
    np.savez(tmp_path / "packed.npz", codes_packed=np.packbits(codes > 0, axis=1))
    assert (
        cli.main(["build", "--codes", str(tmp_path / "packed.npz"), "--out", str(tmp_path / "i2")])
        == 2
    )
    assert "--bits" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "build",
                "--codes",
                str(tmp_path / "packed.npz"),
                "--bits",
                "16",
                "--out",
                str(tmp_path / "i2"),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            ["query", "--index", index_dir, "--codes", str(tmp_path / "missing.npy"), "-k", "1"]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err


def test_docstring_examples():
    import doctest

    from tf_bihalf.search import hamming, index

    for module in (hamming, backends, index):
        result = doctest.testmod(module, extraglobs={"np": np})
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_package_exports_every_index_kind_without_pymilvus(tmp_path):
    """The package exports the sharded and Milvus indexes and the store functions, and imports
    (and serves a sharded index) where pymilvus cannot be imported."""
    import subprocess
    import sys

    import tf_bihalf.search as search
    from tf_bihalf.search import milvus, sharded, stores

    assert search.ShardedHammingIndex is sharded.ShardedHammingIndex
    assert search.MilvusHammingIndex is milvus.MilvusHammingIndex
    assert search.merge_top_k is sharded.merge_top_k
    assert (search.open_index, search.write_index) == (stores.open_index, stores.write_index)
    assert {"sharded", "milvus", "numpy", "auto"} <= set(search.INDEX_BACKENDS)
    assert set(search.__all__) >= {
        "ShardedHammingIndex",
        "MilvusHammingIndex",
        "merge_top_k",
        "open_index",
        "write_index",
        "INDEX_BACKENDS",
    }
    script = (
        "import sys; sys.modules['pymilvus'] = None; sys.modules['milvus_lite'] = None\n"
        "import numpy as np\n"
        "from tf_bihalf.search import open_index, write_index\n"
        "path = write_index(sys.argv[1], np.eye(4) * 2 - 1, backend='sharded')\n"
        "print(open_index(path).search(np.eye(4)[:1] * 2 - 1, k=2)[1].tolist())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "shards")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[[0, 1]]"


def test_duplicate_id_message_shows_a_plain_number():
    index = HammingIndex(8)
    index.add(np.ones((1, 8), np.int8), ids=np.array([105]))
    with pytest.raises(ValueError, match=r"id 105 is already in the index") as error:
        index.add(np.ones((1, 8), np.int8), ids=np.array([105]))
    assert "np." not in str(error.value)


@pytest.mark.parametrize("backend", ["sharded"])
def test_command_line_builds_and_queries_every_store(backend, tmp_path, capsys):
    """build --backend sharded|milvus writes through stores.write_index, query opens the index
    with stores.open_index; the results equal the brute-force reference."""
    from tf_bihalf.search import open_index

    rng = np.random.default_rng(11)
    codes = tie_heavy_codes(rng, 50, 24)
    ids = np.arange(1000, 1050)
    np.savez(tmp_path / "codes.npz", codes=codes, ids=ids)
    np.save(tmp_path / "queries.npy", codes[:4])
    out = str(tmp_path / ("index.db" if backend == "milvus" else "shards"))
    build = ["build", "--codes", str(tmp_path / "codes.npz"), "--out", out, "--backend", backend]
    assert cli.main(build) == 0
    kind = "MilvusHammingIndex" if backend == "milvus" else "ShardedHammingIndex"
    assert f"50 codes of 24 bits, {kind}" in capsys.readouterr().out
    index = open_index(out)
    try:
        assert type(index).__name__ == (
            "MilvusHammingIndex" if backend == "milvus" else "ShardedHammingIndex"
        )
    finally:
        getattr(index, "close", lambda: None)()
    # The same ids again: a store is appended to, so the duplicates are refused...
    assert cli.main(build) == 2
    assert "already" in capsys.readouterr().err
    # ...and --overwrite starts it afresh.
    assert cli.main(build + ["--overwrite"]) == 0
    capsys.readouterr()

    query = ["query", "--index", out, "--codes", str(tmp_path / "queries.npy")]
    assert cli.main(query + ["-k", "7", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected_distances, expected_ids = reference_search(codes[:4], codes, ids, 7)
    assert [line["ids"] for line in lines] == expected_ids.tolist()
    assert [line["distances"] for line in lines] == expected_distances.tolist()
    assert cli.main(query + ["--radius", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for line, found in zip(lines, reference_range(codes[:4], codes, ids, 3), strict=True):
        assert list(zip(line["distances"], line["ids"], strict=True)) == [
            (int(d), int(i)) for d, i in found
        ]
    # A store of another kind than --backend asks for is refused with one line.
    assert (
        cli.main(query + ["-k", "1", "--backend", "numpy" if backend == "milvus" else "milvus"])
        == 2
    )
    assert "error:" in capsys.readouterr().err
