"""Tests for ShardedHammingIndex: exact (distance, id) results against brute force on a database
larger than the memory budget, incremental adds, the manifest and shard checksums."""

import json
import os
import tracemalloc

import numpy as np
import pytest

from tf_bihalf.search import HammingIndex, backends
from tf_bihalf.search.sharded import ShardedHammingIndex, is_sharded_index

BACKEND_NAMES = ["numpy"] + (["faiss"] if backends.faiss_available() else [])


def brute_force(queries, database, ids, k):
    """k smallest (distance, id) pairs by a full lexsort of every distance (the contract)."""
    distances = np.bitwise_count(queries[:, None, :] ^ database[None, :, :]).sum(axis=2)
    order = np.lexsort((np.broadcast_to(ids, distances.shape), distances), axis=-1)[:, :k]
    return np.take_along_axis(distances, order, axis=1), ids[order]


def make_codes(rng, count, width, distinct=None):
    if distinct is None:
        return rng.integers(0, 256, size=(count, width), dtype=np.uint8)
    patterns = rng.integers(0, 256, size=(distinct, width), dtype=np.uint8)
    return patterns[rng.integers(0, distinct, count)]


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("distinct", [None, 6], ids=["random", "tied"])
def test_matches_brute_force_beyond_memory_budget(tmp_path, backend, distinct):
    rng = np.random.default_rng(7)
    bits, count = 64, 20_000
    database = make_codes(rng, count, 8, distinct)
    # Shuffled, sparse ids added in three batches: shard id ranges overlap.
    ids = rng.permutation(10 * count)[:count].astype(np.int64)
    index = ShardedHammingIndex(
        tmp_path / "index", bits=64, shard_size=3000, memory_budget_bytes=40_000, backend=backend
    )
    for part in np.array_split(np.arange(count), 3):
        index.add(database[part], ids=ids[part])
    assert len(index) == count and index.num_shards == 7
    assert index.nbytes > 5 * index.memory_budget_bytes
    queries = np.concatenate([database[:5], make_codes(rng, 6, 8)])
    for k in (1, 10, 257, count + 5):
        distances, found = index.search(queries, k)
        expected_distances, expected_ids = brute_force(queries, database, ids, min(k, count))
        np.testing.assert_array_equal(distances, expected_distances)
        np.testing.assert_array_equal(found, expected_ids)
        assert index.last_search_blocks > index.num_shards  # blocks smaller than a shard
        assert index.last_block_rows <= index.block_rows() < 3000
    in_memory = HammingIndex(bits, backend="numpy")
    in_memory.add(database, ids=ids)
    for radius in (0, 3, 30):
        for mine, theirs in zip(
            index.range_search(queries, radius),
            in_memory.range_search(queries, radius),
            strict=True,
        ):
            np.testing.assert_array_equal(mine, theirs)


def test_search_memory_stays_within_budget(tmp_path):
    """The numpy-backend search allocates the budget plus fixed scratch, not the database."""
    rng = np.random.default_rng(1)
    count, budget = 1_200_000, 1 << 20
    database = make_codes(rng, count, 8)
    index = ShardedHammingIndex(
        tmp_path / "index",
        bits=64,
        shard_size=500_000,
        memory_budget_bytes=budget,
        backend="numpy",
    )
    index.add(database)
    queries = database[:16]  # One query chunk: one thread of scratch buffers.
    tracemalloc.start()
    distances, found = index.search(queries, 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # In memory, the numpy backend alone would hold two 9.6 MB copies of the codes; the
    # backend's scratch (independent of the database size) is under 5 MiB.
    assert index.nbytes > 19_000_000
    assert peak < budget + (5 << 20), peak
    reference = HammingIndex(64, backend="numpy")
    reference.add(database)
    expected_distances, expected_ids = reference.search(queries, 20)
    np.testing.assert_array_equal(distances, expected_distances)
    np.testing.assert_array_equal(found, expected_ids)


def test_incremental_add_reopen_and_string_ids(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "index"
    database = make_codes(rng, 50, 2, distinct=4)
    index = ShardedHammingIndex(path, bits=13, shard_size=8, memory_budget_bytes=100)
    index.add(database[:5])  # default ids 0..4
    index.add(database[5:20])  # 5..19: tops up the 5-code shard, then new shards
    assert [shard.count for shard in index._shards] == [8, 8, 4]
    assert sorted(os.listdir(path)) == sorted(
        ["manifest.json"]
        + [f"{shard.name}.{kind}.npy" for shard in index._shards for kind in ("codes", "ids")]
    )
    assert is_sharded_index(path)
    reopened = ShardedHammingIndex(path)
    assert reopened.bits == 13 and len(reopened) == 20
    reopened.add(database[20:], ids=np.arange(100, 130))
    mask = np.array([0xFF, 0xF8], dtype=np.uint8)  # 13 bits: padding bits are ignored
    expected = brute_force(
        database[:3] & mask, database & mask, np.r_[np.arange(20), np.arange(100, 130)], 50
    )
    for mine, theirs in zip(reopened.search(database[:3], 50), expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(ValueError, match="already in the index"):
        reopened.add(database[:1], ids=[7])
    with pytest.raises(ValueError, match="all be integers or all strings"):
        reopened.add(database[:1], ids=["a"])
    with pytest.raises(ValueError, match="13-bit"):
        ShardedHammingIndex(path, bits=16)

    words = ShardedHammingIndex(tmp_path / "words", bits=13, shard_size=4)
    names = np.array([f"item-{i:03d}" for i in rng.permutation(30)])
    words.add(database[:30], ids=names)
    reference = HammingIndex(13, backend="numpy")
    reference.add(database[:30], ids=names)
    for mine, theirs in zip(
        words.search(database[:4], 9), reference.search(database[:4], 9), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)


def test_corrupt_or_missing_files_fail_with_the_file_name(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "index"
    index = ShardedHammingIndex(path, bits=16, shard_size=10)
    index.add(make_codes(rng, 25, 2))
    shard_file = path / f"{index._shards[1].name}.codes.npy"
    data = bytearray(shard_file.read_bytes())
    data[-1] ^= 1
    shard_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"checksum mismatch for .*{shard_file.name}"):
        ShardedHammingIndex(path)
    ShardedHammingIndex(path, verify=False)  # sizes still match: opens without hashing
    shard_file.write_bytes(bytes(data[:-3]))
    with pytest.raises(ValueError, match=f"{shard_file.name} has .* bytes"):
        ShardedHammingIndex(path, verify=False)
    shard_file.unlink()
    with pytest.raises(FileNotFoundError, match=shard_file.name):
        ShardedHammingIndex(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["bits"] = 8
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="checksum mismatch for .*manifest.json"):
        ShardedHammingIndex(path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="pass bits=K"):
        ShardedHammingIndex(tmp_path / "new")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="full"):
        ShardedHammingIndex(tmp_path / "full", bits=8)
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        ShardedHammingIndex(tmp_path / "a", bits=8, memory_budget_bytes=0)
    index = ShardedHammingIndex(tmp_path / "b", bits=8)
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((1, 1), np.uint8), 1)
    index.add(np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 1), np.uint8), 0)
    with pytest.raises(ValueError, match="8-bit"):
        index.search(np.zeros((1, 2), np.uint8), 1)
    distances, found = index.search(np.zeros((0, 1), np.uint8), 2)
    assert distances.shape == (0, 2) and found.shape == (0, 2)
    index.reset()
    assert len(index) == 0 and os.listdir(tmp_path / "b") == ["manifest.json"]


def test_docstring_example(tmp_path):
    import doctest

    from tf_bihalf.search import sharded, stores

    for module in (sharded, stores):
        result = doctest.testmod(
            module, extraglobs={"np": np, "os": os, "tmp_dir": str(tmp_path / module.__name__)}
        )
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_write_and_open_any_index(tmp_path):
    from tf_bihalf.search import stores

    rng = np.random.default_rng(11)
    codes = make_codes(rng, 300, 2, distinct=7)
    ids = np.array([f"img/{i}.jpg" for i in rng.permutation(300)])
    reference = HammingIndex(16, backend="numpy")
    reference.add(codes, ids=ids)
    expected = reference.search(codes[:6], 25)
    for backend in ("auto", "numpy", "sharded"):
        location = str(tmp_path / backend)
        assert stores.write_index(location, codes, bits=16, ids=ids, backend=backend) == location
        opened = stores.open_index(location)
        assert isinstance(opened, ShardedHammingIndex if backend == "sharded" else HammingIndex)
        for mine, theirs in zip(opened.search(codes[:6], 25), expected, strict=True):
            np.testing.assert_array_equal(mine, theirs)
    # The sharded store is appended to; overwrite starts it again.
    stores.write_index(tmp_path / "sharded", codes[:2], bits=16, ids=["x", "y"], backend="sharded")
    assert len(stores.open_index(tmp_path / "sharded")) == 302
    stores.write_index(
        tmp_path / "sharded", codes[:2], bits=16, ids=["x", "y"], backend="sharded", overwrite=True
    )
    assert len(stores.open_index(tmp_path / "sharded")) == 2
    with pytest.raises(FileExistsError):
        stores.write_index(tmp_path / "numpy", codes, bits=16, backend="numpy")
    with pytest.raises(ValueError, match="backend must be one of"):
        stores.write_index(tmp_path / "x", codes, bits=16, backend="annoy")
    with pytest.raises(FileNotFoundError, match="missing"):
        stores.open_index(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a sharded index"):
        stores.open_index(tmp_path / "numpy", backend="sharded")


def test_hamming_index_load_points_to_the_sharded_class(tmp_path):
    ShardedHammingIndex(tmp_path / "index", bits=8).add(np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match="open it with tf_bihalf.search.sharded"):
        HammingIndex.load(tmp_path / "index")


def test_export_encode_writes_into_the_sharded_index(tmp_path):
    from export.encode import EncodedCollection, build_index, main

    rng = np.random.default_rng(14)
    codes = rng.choice([-1, 1], size=(30, 16)).astype(np.int8)
    collection = EncodedCollection(
        codes=codes,
        codes_packed=np.packbits(codes > 0, axis=1),
        ids=[f"{i}.jpg" for i in range(30)],
    )
    location = str(tmp_path / "shards")
    assert build_index(collection, 16, location, backend="sharded") == location
    reference = HammingIndex(16, backend="numpy")
    reference.add(codes, ids=np.array(collection.ids))
    for mine, theirs in zip(
        ShardedHammingIndex(location).search(codes[:4], 6),
        reference.search(codes[:4], 6),
        strict=True,
    ):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(SystemExit):  # an unknown kind is refused by the parser
        main(["--saved_model", "x", "--inputs", "x.npy", "--out", "c.npz", "--backend", "annoy"])


def test_milvus_without_the_extra_is_a_one_line_error(tmp_path, monkeypatch):
    from tf_bihalf.search import milvus

    monkeypatch.setattr(milvus, "milvus_available", lambda lite=True: False)
    with pytest.raises(ValueError, match=r"pip install 'tf_bihalf\[milvus\]'"):
        milvus.MilvusHammingIndex(str(tmp_path / "codes.db"), bits=8)


def test_many_small_adds_merge_like_a_binary_counter(tmp_path):
    rng = np.random.default_rng(15)
    database = make_codes(rng, 52, 1, distinct=3)
    index = ShardedHammingIndex(tmp_path / "index", bits=8, shard_size=16)
    written = []
    original = index._write_shard

    def counting(codes, ids):
        written.append(ids.shape[0])
        return original(codes, ids)

    index._write_shard = counting
    for start in range(0, 52, 4):
        index.add(database[start : start + 4])
    # 13 adds of 4 codes: three full shards of 16 and the last 4, not 13 shards; every code
    # rewritten at most log2(16 / 4) = 2 times after its first write.
    assert [shard.count for shard in index._shards] == [16, 16, 16, 4]
    assert sum(written) <= 52 * 3
    assert len(os.listdir(tmp_path / "index")) == 1 + 2 * 4
    expected = brute_force(database[:5], database, np.arange(52), 20)
    for mine, theirs in zip(index.search(database[:5], 20), expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_merge_top_k_fans_out_over_separate_indexes(tmp_path):
    """Two independent indexes (as on two machines) merged equal one index of the union."""
    from tf_bihalf.search.sharded import merge_top_k

    rng = np.random.default_rng(16)
    database = make_codes(rng, 400, 2, distinct=5)
    ids = rng.permutation(400).astype(np.int64)
    left, right = HammingIndex(16, backend="numpy"), ShardedHammingIndex(tmp_path / "r", bits=16)
    left.add(database[::2], ids=ids[::2])
    right.add(database[1::2], ids=ids[1::2])
    queries = database[:7]
    merged = merge_top_k([left.search(queries, 30), right.search(queries, 30)], 30)
    for mine, theirs in zip(merged, brute_force(queries, database, ids, 30), strict=True):
        np.testing.assert_array_equal(mine, theirs)
