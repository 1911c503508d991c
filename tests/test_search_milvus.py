"""Tests for MilvusHammingIndex against the embedded engine (Milvus Lite): exact (distance, id)
results on random and heavily tied codes (ties in insertion order, pages forced small),
persistence, id checks and connection retries. Skipped when milvus-lite is not installed."""

import numpy as np
import pytest

from tf_bihalf.search import HammingIndex
from tf_bihalf.search import milvus as milvus_module
from tf_bihalf.search.milvus import MilvusHammingIndex

pytestmark = pytest.mark.skipif(
    not milvus_module.milvus_available(), reason="milvus-lite not installed (extra 'milvus')"
)


def assert_same(mine, theirs):
    for left, right in zip(mine, theirs, strict=True):
        np.testing.assert_array_equal(left, right)


@pytest.fixture(scope="module")
def tied_and_random(tmp_path_factory):
    """One Lite file with two collections: 600 random 64-bit codes and 600 codes drawn from 5
    patterns (hundreds of items per distance), inserted in an order unrelated to their ids."""
    rng = np.random.default_rng(5)
    path = str(tmp_path_factory.mktemp("milvus") / "codes.db")
    data = {}
    for name, distinct in (("random", None), ("tied", 5)):
        if distinct is None:
            codes = rng.choice([-1, 1], size=(600, 64)).astype(np.int8)
        else:
            patterns = rng.choice([-1, 1], size=(distinct, 64)).astype(np.int8)
            codes = patterns[rng.integers(0, distinct, 600)]
        ids = rng.permutation(5000)[:600].astype(np.int64) - 100  # sparse, some negative
        index = MilvusHammingIndex(path, bits=64, collection=name, insert_batch=250)
        index.add(codes, ids=ids)
        reference = HammingIndex(64, backend="numpy")
        reference.add(codes, ids=ids)
        queries = np.concatenate([codes[:4], rng.choice([-1, 1], size=(4, 64))])
        data[name] = (index, reference, queries)
    yield data
    for index, _, _ in data.values():
        index.close()


@pytest.mark.parametrize("name", ["random", "tied"])
@pytest.mark.parametrize("page_limit", [milvus_module.PAGE_LIMIT, 48])
def test_matches_brute_force(tied_and_random, monkeypatch, name, page_limit):
    index, reference, queries = tied_and_random[name]
    # A small page forces the tie narrowing (search) and the id-range splits (range_search).
    monkeypatch.setattr(MilvusHammingIndex, "page_limit", page_limit)
    narrowing = []
    original = MilvusHammingIndex._smallest_ids_at

    def counted(self, query, distance, count):
        narrowing.append(distance)
        return original(self, query, distance, count)

    monkeypatch.setattr(MilvusHammingIndex, "_smallest_ids_at", counted)
    assert len(index) == 600 and index.bits == 64 and index.backend == "milvus"
    for k in (1, 7, 20, 47):
        assert_same(index.search(queries, k), reference.search(queries, k))
    if page_limit == milvus_module.PAGE_LIMIT:
        assert_same(index.search(queries, 600), reference.search(queries, 600))
        assert_same(index.search(queries, 5000), reference.search(queries, 5000))
    for radius in (0, 2, 28, 64):
        assert_same(index.range_search(queries, radius), reference.range_search(queries, radius))
    if name == "tied":  # ties beyond the over-fetch went through the narrowing requests
        assert narrowing
    distances, ids = index.search(queries[:0], 3)
    assert distances.shape == (0, 3) and ids.shape == (0, 3)


def test_persistence_ids_and_errors(tmp_path):
    path = str(tmp_path / "store.db")
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2, size=(30, 13))
    with MilvusHammingIndex(path, bits=13, collection="c") as index:
        index.add(codes[:10])  # ids 0..9
        index.add(codes[10:20], ids=np.arange(100, 110))
        with pytest.raises(ValueError, match="id 105 is already in the index"):
            index.add(codes[:2], ids=[200, 105])
        with pytest.raises(ValueError, match="stores int ids"):
            index.add(codes[:1], ids=["a"])
        with pytest.raises(ValueError, match="13-bit"):
            index.add(np.zeros((1, 3), np.uint8))
        with pytest.raises(ValueError, match="at most"):
            index.search(codes[:1], milvus_module.PAGE_LIMIT)
    with MilvusHammingIndex(path, collection="c") as reopened:
        assert reopened.bits == 13 and len(reopened) == 20
        reopened.add(codes[20:])  # default ids continue after the largest: 110..119
        reference = HammingIndex(13, backend="numpy")
        reference.add(codes, ids=np.r_[np.arange(10), np.arange(100, 120)])
        assert_same(reopened.search(codes[:5], 12), reference.search(codes[:5], 12))
        with pytest.raises(ValueError, match="holds 13-bit codes"):
            MilvusHammingIndex(path, bits=16, collection="c")
        with pytest.raises(ValueError, match="pass bits=K"):
            MilvusHammingIndex(path, collection="missing")
        reopened.reset()
        assert len(reopened) == 0
        with pytest.raises(ValueError, match="empty"):
            reopened.search(codes[:1], 1)


def test_string_ids_with_ties(tmp_path, monkeypatch):
    """String ids (export.encode's image paths) order by code point, in Milvus as in numpy."""
    monkeypatch.setattr(MilvusHammingIndex, "page_limit", 24)
    rng = np.random.default_rng(9)
    patterns = rng.integers(0, 2, size=(4, 16))
    codes = patterns[rng.integers(0, 4, 200)]
    names = ["a", "A", "é", 'say "hi"', "back\\slash", "日本", "z z", "it's"]
    ids = np.array([f"{names[i % len(names)]}/{i:03d}" for i in rng.permutation(200)])
    with MilvusHammingIndex(str(tmp_path / "s.db"), bits=16, id_type="str") as index:
        index.add(codes, ids=ids)
        reference = HammingIndex(16, backend="numpy")
        reference.add(codes, ids=ids)
        for k in (1, 9, 23):
            assert_same(index.search(codes[:5], k), reference.search(codes[:5], k))
        for radius in (0, 3, 16):
            assert_same(
                index.range_search(codes[:5], radius), reference.range_search(codes[:5], radius)
            )
        with pytest.raises(ValueError, match="is already in the index"):
            index.add(codes[:1], ids=[ids[7]])
        with pytest.raises(ValueError, match="stores str ids"):
            index.add(codes[:1], ids=[5])
        with pytest.raises(ValueError, match="needs ids"):
            index.add(codes[:1])
        with pytest.raises(ValueError, match="at most 1024 UTF-8 bytes"):
            index.add(codes[:1], ids=["é" * 600])


def test_bad_locations(tmp_path):
    with pytest.raises(ValueError, match="ending in .db"):
        MilvusHammingIndex(str(tmp_path / "codes.sqlite"), bits=8)
    with pytest.raises(FileNotFoundError, match="missing"):
        MilvusHammingIndex(str(tmp_path / "missing" / "codes.db"), bits=8)
    with pytest.raises(ValueError, match="overfetch must be at least 1"):
        MilvusHammingIndex(str(tmp_path / "codes.db"), bits=8, overfetch=0.5)


def test_connect_retries_then_fails_with_the_uri(monkeypatch):
    import pymilvus
    from pymilvus.exceptions import MilvusException

    sleeps, calls = [], []

    def flaky_client(**kwargs):
        calls.append(kwargs["uri"])
        if len(calls) < 3:
            raise MilvusException(2, "Fail connecting to server")
        return "client"

    monkeypatch.setattr(milvus_module.time, "sleep", sleeps.append)
    monkeypatch.setattr(pymilvus, "MilvusClient", flaky_client)
    assert milvus_module.connect("http://milvus:19530", retry_delay=0.5) == "client"
    assert calls == ["http://milvus:19530"] * 3 and sleeps == [0.5, 1.0]
    monkeypatch.undo()
    monkeypatch.setattr(milvus_module.time, "sleep", lambda _: None)
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1 after 2 attempts"):
        MilvusHammingIndex("http://127.0.0.1:1", bits=8, connect_attempts=2)


def test_docstring_example(tmp_path):
    import doctest

    result = doctest.testmod(milvus_module, extraglobs={"np": np, "tmp_dir": str(tmp_path)})
    assert result.attempted > 0 and result.failed == 0


def test_write_and_open_through_stores(tmp_path):
    from tf_bihalf.search import stores

    rng = np.random.default_rng(12)
    codes = rng.integers(0, 2, size=(40, 24))
    ids = np.array([f"clip_{i}.mp4" for i in range(40)])
    location = str(tmp_path / "codes.db")
    stores.write_index(location, codes, ids=ids)  # a .db path means Milvus
    reference = HammingIndex(24, backend="numpy")
    reference.add(codes, ids=ids)
    with stores.open_index(location) as index:
        assert isinstance(index, MilvusHammingIndex) and index.id_type == "str"
        assert_same(index.search(codes[:3], 10), reference.search(codes[:3], 10))
    stores.write_index(location, codes[:5], ids=ids[:5], overwrite=True)
    with stores.open_index(location) as index:
        assert len(index) == 5
    # Overwrite replaces the collection whatever it held (here: string ids, 24 bits).
    stores.write_index(location, codes[:7, :16], bits=16, overwrite=True)
    with stores.open_index(location) as index:
        assert (len(index), index.bits, index.id_type) == (7, 16, "int")
    with pytest.raises(FileNotFoundError, match="other.db"):
        stores.open_index(str(tmp_path / "other.db"))


def test_export_encode_writes_into_milvus(tmp_path):
    from export.encode import EncodedCollection, build_index

    rng = np.random.default_rng(13)
    codes = rng.choice([-1, 1], size=(30, 16)).astype(np.int8)
    collection = EncodedCollection(
        codes=codes,
        codes_packed=np.packbits(codes > 0, axis=1),
        ids=[f"{i}.jpg" for i in range(30)],
    )
    location = str(tmp_path / "codes.db")
    assert build_index(collection, 16, location, backend="milvus") == location
    reference = HammingIndex(16, backend="numpy")
    reference.add(codes, ids=np.array(collection.ids))
    with MilvusHammingIndex(location) as index:
        assert_same(index.search(codes[:4], 6), reference.search(codes[:4], 6))
