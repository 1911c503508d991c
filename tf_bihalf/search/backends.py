"""Search backends behind one small interface: brute-force popcount (numpy) and faiss.

A backend stores packed codes at positions 0, 1, 2, ... in the order they were added and
answers, exactly and identically across backends:

- ``search(queries, k)``: for each query the k smallest (distance, position) pairs, sorted;
- ``range_search(queries, radius)``: every position at distance <= radius, sorted by
  (distance, position), in the ``(lims, distances, positions)`` layout of faiss.

``HammingIndex`` (``tf_bihalf.search.index``) keeps its codes sorted by id, so "position order"
is "id order" and ties are broken by id.

Example:

>>> backend = NumpyBackend(bits=8)
>>> backend.add(np.array([[0b11110000], [0b11110001], [0b00000000]], dtype=np.uint8))
>>> backend.search(np.array([[0b11110000]], dtype=np.uint8), k=2)
(array([[0, 1]], dtype=int32), array([[0, 1]]))
"""

from __future__ import annotations

import abc
import concurrent.futures
import functools
import os
import threading

import numpy as np

from tf_bihalf.codes import check_bits, packed_width
from tf_bihalf.search import hamming

__all__ = [
    "BACKENDS",
    "FaissBackend",
    "FaissMultiHashBackend",
    "HammingBackend",
    "NumpyBackend",
    "faiss_available",
    "make_backend",
]

BACKENDS = ("numpy", "faiss", "faiss_multihash")


def faiss_available() -> bool:
    """True when ``import faiss`` works (the ``faiss-cpu`` package)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def faiss_ties_by_position() -> bool:
    """Whether faiss' ``IndexBinaryFlat.search`` returns the k smallest (distance, position).

    Checked once on a probe with heavy ties (16 distinct codes among 3000) against numpy.
    """
    import faiss

    generator = np.random.default_rng(0)
    codes = np.packbits(generator.integers(0, 2, size=(3000, 4)), axis=1)
    queries = codes[:40]
    index = faiss.IndexBinaryFlat(8)
    index.add(codes)
    distances, positions = index.search(queries, 100)
    exact = np.bitwise_count(queries[:, None, 0] ^ codes[None, :, 0]).astype(np.int64)
    order = np.lexsort((np.broadcast_to(np.arange(codes.shape[0]), exact.shape), exact), axis=-1)[
        :, :100
    ]
    return bool(
        np.array_equal(positions, order)
        and np.array_equal(distances, np.take_along_axis(exact, order, axis=1))
    )


class HammingBackend(abc.ABC):
    """Exact Hamming search over packed uint8 codes (already validated by the caller)."""

    name = ""

    def __init__(self, bits: int):
        self.bits = check_bits(bits)
        self.code_size = packed_width(self.bits)

    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Number of stored codes."""

    @abc.abstractmethod
    def add(self, packed: np.ndarray) -> None:
        """Appends packed codes (n, code_size) at positions ntotal .. ntotal + n - 1."""

    @abc.abstractmethod
    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k (<= ntotal) smallest (distance, position) pairs per query: int32, int64 (Q, k)."""

    @abc.abstractmethod
    def range_search(
        self, packed_queries: np.ndarray, radius: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions within distance <= radius: (lims (Q+1,), distances int32, positions int64)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Removes every code."""


def _sorted_range_results(query_index, distances, positions, num_queries):
    """Sorts flat range results by (query, distance, position) and builds ``lims``."""
    order = np.lexsort((positions, distances, query_index))
    counts = np.bincount(query_index, minlength=num_queries)
    lims = np.zeros(num_queries + 1, dtype=np.int64)
    np.cumsum(counts, out=lims[1:])
    return (
        lims,
        distances[order].astype(np.int32, copy=False),
        positions[order].astype(np.int64, copy=False),
    )


class NumpyBackend(HammingBackend):
    """Brute force: XOR + ``numpy.bitwise_count`` on uint64 words, no extra dependency.

    ``search`` walks the database in blocks per chunk of queries. Each query keeps its current
    best k keys ``distance << s | position``; once it has k, a later block can only contribute
    items strictly closer than its current k-th distance (an item at the same distance comes
    later in position order, so it loses the tie), which a cheap comparison filters before any
    sorting. Candidates are merged into the best k (``np.partition``) once they add up to about
    k per query. Chunks of queries run on ``num_threads`` threads (numpy releases the GIL).
    """

    name = "numpy"
    _CHUNK_ROWS = 32
    _BLOCK_PAIRS = 1 << 17

    def __init__(self, bits: int, num_threads: int | None = None):
        super().__init__(bits)
        self.num_threads = num_threads or max(1, min(os.cpu_count() or 1, 8))
        self._words = np.zeros(((self.code_size + 7) // 8, 0), dtype=np.uint64)
        self._local = threading.local()

    @property
    def ntotal(self) -> int:
        return self._words.shape[1]

    def add(self, packed: np.ndarray) -> None:
        words = np.ascontiguousarray(hamming.to_words(packed).T)
        self._words = np.ascontiguousarray(np.concatenate([self._words, words], axis=1))

    def reset(self) -> None:
        self._words = self._words[:, :0].copy()

    def _map_chunks(self, function, num_queries: int) -> list:
        starts = range(0, num_queries, self._CHUNK_ROWS)

        def run(start: int):
            return function(start, min(start + self._CHUNK_ROWS, num_queries))

        if self.num_threads == 1 or len(starts) == 1:
            return [run(start) for start in starts]
        with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
            return list(pool.map(run, starts))

    def _distances(self, query_words: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Distances (c, stop - start) of the queries to database block [start, stop)."""
        rows, width = query_words.shape[0], stop - start
        buffers = getattr(self._local, "buffers", None)
        if buffers is None or buffers[0].size < rows * width:
            size = max(rows * width, self._BLOCK_PAIRS)
            buffers = (
                np.empty(size, np.uint64),
                np.empty(size, np.uint8),
                np.empty(size, hamming.distance_dtype(self.bits + 1)),
            )
            self._local.buffers = buffers
        scratch, counts, distances = (
            buffer[: rows * width].reshape(rows, width) for buffer in buffers
        )
        return hamming.hamming_into(
            query_words, self._words[:, start:stop], distances, scratch, counts
        )

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        total = self.ntotal
        query_words = hamming.to_words(packed_queries)
        shift = max(1, int(total - 1).bit_length())
        key_dtype = np.dtype(
            np.uint32 if shift + int(self.bits + 1).bit_length() <= 32 else np.uint64
        )
        sentinel = np.iinfo(key_dtype).max
        unfilled = self.bits + 1  # "accept every distance" while a query has fewer than k items
        # Same dtype as the distances, so that the filter compares without casting.
        threshold_dtype = hamming.distance_dtype(self.bits + 1)
        block = max(4 * k, self._BLOCK_PAIRS // self._CHUNK_ROWS)

        def merge(best, pending, counts):
            """The k smallest keys per row among ``best`` and the pending candidates, given as
            (row, slot, key) pieces where slot numbers each row's candidates 0, 1, 2, ..."""
            rows = best.shape[0]
            merged = np.full((rows, k + int(counts.max())), sentinel, dtype=key_dtype)
            merged[:, :k] = best
            for row, slot, keys in pending:
                merged[row, k + slot] = keys
            merged.partition(k - 1, axis=1)
            best = np.ascontiguousarray(merged[:, :k])
            kth = best.max(axis=1)
            threshold = np.where(kth == sentinel, unfilled, kth >> key_dtype.type(shift))
            return best, threshold.astype(threshold_dtype)

        def chunk(begin: int, end: int):
            words = query_words[begin:end]
            rows = end - begin
            best = np.full((rows, k), sentinel, dtype=key_dtype)
            threshold = np.full(rows, unfilled, dtype=threshold_dtype)
            below = np.empty((rows, min(block, total)), dtype=np.bool_)
            pending, counts = [], np.zeros(rows, dtype=np.int64)
            for start in range(0, total, block):
                stop = min(total, start + block)
                distances = self._distances(words, start, stop)
                mask = below[:, : stop - start]
                # While a row has fewer than k items its threshold accepts every distance.
                # Later a stale (larger) threshold only lets more candidates through.
                np.less(distances, threshold[:, None], out=mask)
                flat = np.flatnonzero(mask)
                if flat.size:
                    row, column = np.divmod(flat, stop - start)
                    keys = distances.ravel()[flat].astype(key_dtype) << key_dtype.type(shift)
                    keys |= (column + start).astype(key_dtype)
                    # flatnonzero lists rows in order: number each row's candidates after
                    # those it already has pending.
                    piece_counts = np.bincount(row, minlength=rows)
                    first = np.cumsum(piece_counts) - piece_counts
                    slot = np.arange(flat.size) - np.repeat(first - counts, piece_counts)
                    pending.append((row, slot, keys))
                    counts += piece_counts
                # Merging costs a dozen numpy calls: do it once candidates amount to about k
                # per row (or at the end), not after every block.
                if pending and (counts.sum() >= rows * k or stop == total):
                    best, threshold = merge(best, pending, counts)
                    pending, counts = [], np.zeros(rows, dtype=np.int64)
            best.sort(axis=1)
            mask = key_dtype.type((1 << shift) - 1)
            return (best >> key_dtype.type(shift)).astype(np.int32), (best & mask).astype(np.int64)

        results = self._map_chunks(chunk, query_words.shape[0])
        return (
            np.concatenate([distances for distances, _ in results]),
            np.concatenate([positions for _, positions in results]),
        )

    def range_search(self, packed_queries: np.ndarray, radius: int):
        total = self.ntotal
        query_words = hamming.to_words(packed_queries)
        block = max(1, self._BLOCK_PAIRS // self._CHUNK_ROWS)

        def chunk(begin: int, end: int):
            words = query_words[begin:end]
            query_index, distances, positions = [], [], []
            for start in range(0, total, block):
                stop = min(total, start + block)
                block_distances = self._distances(words, start, stop)
                flat = np.flatnonzero(block_distances <= radius)
                row, column = np.divmod(flat, stop - start)
                query_index.append(row + begin)
                distances.append(block_distances.ravel()[flat].astype(np.int32))
                positions.append(column + start)
            return np.concatenate(query_index), np.concatenate(distances), np.concatenate(positions)

        results = self._map_chunks(chunk, query_words.shape[0])
        return _sorted_range_results(
            np.concatenate([r[0] for r in results]),
            np.concatenate([r[1] for r in results]),
            np.concatenate([r[2] for r in results]),
            query_words.shape[0],
        )


class FaissBackend(HammingBackend):
    """faiss ``IndexBinaryFlat`` (exhaustive popcount search in C++, OpenMP threads).

    Ties at the k-th distance: faiss' exhaustive binary search (``hammings_knn_hc``) scans the
    codes in position order, admits a code only if it is strictly closer than the heap's worst,
    and its heaps order equal distances by id (``faiss/utils/Heap.h``, ``cmp2``), so it already
    returns the k smallest (distance, position) pairs, sorted. ``faiss_ties_by_position()``
    checks this once per process on a tie-heavy probe. Should a faiss version ever behave
    otherwise, this backend switches to over-fetching: it asks for 2k + 16 neighbours, keeps
    the k smallest by (distance, position), which is exact when the last returned distance is
    larger than the k-th (every tied item was returned), and asks again with 4 times as many
    for the queries where it is not.
    """

    name = "faiss"

    def __init__(self, bits: int):
        super().__init__(bits)
        import faiss

        self._faiss = faiss
        self._index = faiss.IndexBinaryFlat(8 * self.code_size)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, packed: np.ndarray) -> None:
        if packed.shape[0]:
            self._index.add(np.ascontiguousarray(packed))

    def reset(self) -> None:
        self._index.reset()

    def _flat(self):
        return self._index

    def search(self, packed_queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(packed_queries)
        if not faiss_ties_by_position():
            return self._search_over_fetching(queries, k)
        distances, positions = self._flat().search(queries, k)
        distances = distances.astype(np.int32)
        # faiss returns rows sorted by (distance, position); re-sort any row that is not.
        unsorted = (np.diff(distances, axis=1) < 0) | (
            (np.diff(distances, axis=1) == 0) & (np.diff(positions, axis=1) <= 0)
        )
        rows = np.flatnonzero(unsorted.any(axis=1))
        if rows.size:
            order = np.lexsort((positions[rows], distances[rows]), axis=-1)
            distances[rows] = np.take_along_axis(distances[rows], order, axis=1)
            positions[rows] = np.take_along_axis(positions[rows], order, axis=1)
        return distances, positions

    def _search_over_fetching(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k smallest (distance, position) whatever order faiss breaks ties in."""
        total = self.ntotal
        result_distances = np.empty((queries.shape[0], k), dtype=np.int32)
        result_positions = np.empty((queries.shape[0], k), dtype=np.int64)
        pending = np.arange(queries.shape[0])
        asked = min(total, 2 * k + 16)
        while pending.size:
            distances, positions = self._flat().search(queries[pending], asked)
            # Resolved: every item at the k-th distance is among the returned ones, because the
            # last returned distance is larger (or every stored code was returned).
            resolved = (distances[:, -1] > distances[:, k - 1]) | (asked == total)
            distances, positions = distances[resolved].astype(np.int32), positions[resolved]
            order = np.lexsort((positions, distances), axis=-1)[:, :k]
            rows = pending[resolved]
            result_distances[rows] = np.take_along_axis(distances, order, axis=1)
            result_positions[rows] = np.take_along_axis(positions, order, axis=1)
            pending = pending[~resolved]
            asked = min(total, 4 * asked)
        return result_distances, result_positions

    def _range(self, queries: np.ndarray, radius: int):
        # faiss returns distances strictly below its radius argument.
        lims, distances, positions = self._flat().range_search(queries, radius + 1)
        query_index = np.repeat(np.arange(queries.shape[0]), np.diff(lims).astype(np.int64))
        return _sorted_range_results(query_index, distances, positions, queries.shape[0])

    def range_search(self, packed_queries: np.ndarray, radius: int):
        return self._range(np.ascontiguousarray(packed_queries), radius)


class FaissMultiHashBackend(FaissBackend):
    """faiss ``IndexBinaryMultiHash`` (multi-index hashing) for fast small-radius range search.

    The code is cut into ``nhash`` substrings of ``b`` bits (b = 16 when the padded length is a
    multiple of 16, else 8; nhash * b covers every bit). By the pigeonhole principle an item
    within distance r of the query is within r // nhash of it on at least one substring, so
    probing each table with up to ``nflip = r // nhash`` flipped bits finds every such item:
    the range search is exact. ``search(k)`` uses the exhaustive flat storage inside the index.
    """

    name = "faiss_multihash"

    def __init__(self, bits: int):
        HammingBackend.__init__(self, bits)
        import faiss

        self._faiss = faiss
        dimension = 8 * self.code_size
        self.substring_bits = 16 if dimension % 16 == 0 else 8
        self.nhash = dimension // self.substring_bits
        self._index = faiss.IndexBinaryMultiHash(dimension, self.nhash, self.substring_bits)

    def _flat(self):
        return self._index.storage

    def _range(self, queries: np.ndarray, radius: int):
        self._index.nflip = radius // self.nhash
        lims, distances, positions = self._index.range_search(queries, radius + 1)
        query_index = np.repeat(np.arange(queries.shape[0]), np.diff(lims).astype(np.int64))
        return _sorted_range_results(query_index, distances, positions, queries.shape[0])


def make_backend(name: str, bits: int) -> HammingBackend:
    """Builds a backend by name: "auto" (faiss if importable, else numpy) or one of BACKENDS."""
    if name == "auto":
        name = "faiss" if faiss_available() else "numpy"
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}; got {name!r}.")
    if name != "numpy" and not faiss_available():
        raise ValueError(
            f"backend {name!r} needs faiss, which is not installed (pip install faiss-cpu); "
            "use backend='numpy' or 'auto'."
        )
    return {"numpy": NumpyBackend, "faiss": FaissBackend, "faiss_multihash": FaissMultiHashBackend}[
        name
    ](bits)
