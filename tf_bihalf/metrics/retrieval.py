r"""Retrieval metrics for binary codes: mAP@k, precision@N, precision-recall by Hamming radius.

Definitions (``docs/retrieval.md`` has the long version):

- Distance: the Hamming distance ``d(q, x) = popcount(q XOR x)``; on ±1 codes ``(K - q . x) / 2``.
- Relevance: a database item is relevant to a query when they share at least one label (class ids:
  equal ids; multi-hot: ``q_labels . x_labels > 0``).
- Ranking: the database sorted by distance. Items at equal distance are ordered

  * ``ties="stable"``: by database index (a stable sort), so the result is deterministic;
  * ``ties="average"``: uniformly at random within each distance, and the metric is the exact
    expectation over those random orders (closed form, no sampling).

- AP@k of one query, with ``rel_i`` in {0, 1} the relevance of the item at rank i (1-based):

  .. math:: AP@k = \frac{1}{R_k} \sum_{i=1}^{k} rel_i \frac{\sum_{j \le i} rel_j}{i},
     \quad R_k = \sum_{i=1}^{k} rel_i

  and AP@k = 0 when ``R_k = 0``; such a query still counts in the mean. mAP@k is the mean over
  all queries; ``top_k=None`` means k = database size ("mAP@All").

All functions work on query chunks of about 2^19 (query, item) pairs (at least one query):
every chunk computes its distances by popcount on uint64 words and never materialises a float
query x database matrix, so the extra memory is about 20 bytes x max(2^19, N) per worker
thread, whatever the number of queries.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import numbers
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

from tf_bihalf.search import hamming

__all__ = [
    "average_precision",
    "mean_average_precision",
    "precision_at_n",
    "precision_recall_curve",
    "precision_within_radius",
]

# About half a million (query, database item) pairs per chunk: the work arrays stay within the
# CPU caches' reach (~10 MB per worker), and per-chunk Python overhead is negligible.
_CHUNK_PAIRS = 1 << 19
# Class-id labels: a table of per-class low key bits (index << 1 | relevant) saves two passes
# per chunk when it fits in this many bytes.
_CLASS_TABLE_BYTES = 64 << 20
_TIES = ("stable", "average")
_EMPTY = ("zero", "skip")


# ---------------------------------------------------------------------------------------------
# Input preparation


@dataclasses.dataclass
class _Labels:
    """Labels prepared for fast relevance tests."""

    multi_label: bool
    query: np.ndarray  # int64 (Q,) class ids, or uint64 (Q, W) multi-hot words
    database: np.ndarray  # int64 (N,) class ids, or uint64 (W, N) multi-hot words, word-major


def _class_ids(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64, copy=False)
    if (
        labels.dtype.kind == "f"
        and np.all(np.isfinite(labels))
        and np.all(labels == np.round(labels))
    ):
        return labels.astype(np.int64)
    raise ValueError(
        f"{name} is 1-D, so it is read as class ids, which must be integers; got dtype "
        f"{labels.dtype}. Pass multi-hot labels as a 2-D (N, C) array."
    )


def _multi_hot_words(labels: np.ndarray, name: str) -> np.ndarray:
    ones = labels == 1
    if labels.dtype != np.bool_ and not np.all(ones | (labels == 0)):
        raise ValueError(
            f"{name} is 2-D, so it is read as multi-hot labels (N, C), whose values must be 0 or "
            "1. Pass class ids as a 1-D (N,) array."
        )
    return hamming.to_words(np.packbits(ones, axis=1))


def _prepare_labels(query_labels, database_labels, num_queries: int, num_database: int) -> _Labels:
    query = np.asarray(query_labels)
    database = np.asarray(database_labels)
    if query.ndim not in (1, 2) or database.ndim not in (1, 2):
        raise ValueError(
            "labels must be class ids (N,) or multi-hot (N, C); got query_labels of shape "
            f"{query.shape} and database_labels of shape {database.shape}."
        )
    if query.ndim != database.ndim:
        raise ValueError(
            f"query_labels ({query.ndim}-D) and database_labels ({database.ndim}-D) must be of "
            "the same kind: both class ids (N,) or both multi-hot (N, C)."
        )
    if query.shape[0] != num_queries:
        raise ValueError(
            f"query_labels has {query.shape[0]} rows but there are {num_queries} queries."
        )
    if database.shape[0] != num_database:
        raise ValueError(
            f"database_labels has {database.shape[0]} rows but the database has {num_database} codes."
        )
    if query.ndim == 1:
        return _Labels(
            False, _class_ids(query, "query_labels"), _class_ids(database, "database_labels")
        )
    if query.shape[1] != database.shape[1]:
        raise ValueError(
            f"query_labels has {query.shape[1]} classes but database_labels has {database.shape[1]}."
        )
    return _Labels(
        True,
        _multi_hot_words(query, "query_labels"),
        np.ascontiguousarray(_multi_hot_words(database, "database_labels").T),
    )


class _Problem:
    """Validated query/database codes and labels, and the per-chunk kernels shared by metrics."""

    def __init__(
        self, query_codes, database_codes, query_labels, database_labels, bits, num_threads
    ):
        query_packed, query_bits = hamming.as_packed_codes(query_codes, bits, "query_codes")
        database_packed, database_bits = hamming.as_packed_codes(
            database_codes, bits, "database_codes"
        )
        if query_bits != database_bits:
            raise ValueError(
                f"query codes have {query_bits} bits but database codes have {database_bits} bits."
            )
        if query_packed.shape[0] == 0:
            raise ValueError("there are no query codes (query_codes has zero rows).")
        if database_packed.shape[0] == 0:
            raise ValueError("the database is empty (database_codes has zero rows).")
        self.bits = query_bits
        self.num_queries = query_packed.shape[0]
        self.num_database = database_packed.shape[0]
        self.query_words = hamming.to_words(query_packed)
        self.database_words = np.ascontiguousarray(hamming.to_words(database_packed).T)
        self.labels = _prepare_labels(
            query_labels, database_labels, self.num_queries, self.num_database
        )
        self.num_threads = _resolve_threads(num_threads)
        self.chunk_rows = max(1, min(self.num_queries, _CHUNK_PAIRS // self.num_database))
        # Sort keys pack (distance, database index, relevance) into one unsigned integer, so that
        # a plain sort orders by distance then index and carries the relevance bit along.
        self.distance_shift = 1 + max(1, int(self.num_database - 1).bit_length())
        key_bits = self.distance_shift + int(self.bits).bit_length()
        if key_bits > 64:
            raise ValueError("database too large for 64-bit sort keys.")
        self.key_dtype = np.dtype(np.uint32 if key_bits <= 32 else np.uint64)
        self.index_part = np.arange(self.num_database, dtype=self.key_dtype) << self.key_dtype.type(
            1
        )
        self.class_rows = self._class_key_table()
        self._local = threading.local()

    def _class_key_table(self) -> tuple[np.ndarray, np.ndarray] | None:
        """For class-id labels: per class, the low key bits ``index << 1 | relevant`` of every
        database item, and each query's row in that table (a class absent from the database
        gets an extra row with no relevant item). None when multi-label or too large."""
        labels = self.labels
        if labels.multi_label:
            return None
        classes, database_class = np.unique(labels.database, return_inverse=True)
        if (classes.size + 1) * self.num_database * self.key_dtype.itemsize > _CLASS_TABLE_BYTES:
            return None
        table = np.empty((classes.size + 1, self.num_database), dtype=self.key_dtype)
        table[:] = self.index_part
        for row in range(classes.size):
            table[row] |= (database_class == row).astype(self.key_dtype)
        query_row = np.searchsorted(classes, labels.query)
        present = query_row < classes.size
        present[present] = classes[query_row[present]] == labels.query[present]
        return table, np.where(present, query_row, classes.size)

    # Work arrays, one set per thread, allocated once.
    def _buffers(self, rows: int) -> dict[str, np.ndarray]:
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            shape = (self.chunk_rows, self.num_database)
            buffers = {
                "scratch": np.empty(shape, dtype=np.uint64),
                "label_scratch": np.empty(shape, dtype=np.uint64),
                "counts": np.empty(shape, dtype=np.uint8),
                "relevant": np.empty(shape, dtype=np.bool_),
                "keys": np.empty(shape, dtype=self.key_dtype),
                "distances": np.empty(shape, dtype=hamming.distance_dtype(2 * self.bits + 1)),
            }
            self._local.buffers = buffers
        return {name: array[:rows] for name, array in buffers.items()}

    def _relevance_into(self, start: int, stop: int, buffers: dict[str, np.ndarray]) -> np.ndarray:
        relevant = buffers["relevant"]
        labels = self.labels
        if not labels.multi_label:
            np.equal(labels.database[None, :], labels.query[start:stop, None], out=relevant)
            return relevant
        accumulated = buffers["label_scratch"]
        for word in range(labels.query.shape[1]):
            target = accumulated if word == 0 else buffers["scratch"]
            np.bitwise_and(
                labels.database[word][None, :], labels.query[start:stop, word, None], out=target
            )
            if word:
                np.bitwise_or(accumulated, target, out=accumulated)
        np.not_equal(accumulated, 0, out=relevant)
        return relevant

    def sorted_keys(self, start: int, stop: int, length: int) -> np.ndarray:
        """Sort keys of queries [start, stop), the first ``length`` of each row in rank order.

        Key = distance << distance_shift | index << 1 | relevant; sorting the keys sorts by
        (distance, database index), i.e. the stable ranking.
        """
        buffers = self._buffers(stop - start)
        keys = buffers["keys"]
        hamming.hamming_into(
            self.query_words[start:stop],
            self.database_words,
            keys,
            buffers["scratch"],
            buffers["counts"],
        )
        np.left_shift(keys, self.key_dtype.type(self.distance_shift), out=keys)
        if self.class_rows is not None:
            table, query_row = self.class_rows
            for row, table_row in enumerate(query_row[start:stop]):
                np.bitwise_or(keys[row], table[table_row], out=keys[row])
        else:
            np.bitwise_or(keys, self.index_part[None, :], out=keys)
            relevant = self._relevance_into(start, stop, buffers)
            np.bitwise_or(keys, relevant, out=keys)
        if length < self.num_database:
            keys.partition(length - 1, axis=1)
            head = keys[:, :length]
            head.sort(axis=1)
            return head
        keys.sort(axis=1)
        return keys

    def histograms(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-query counts of all and of relevant items at each distance 0..K: two (c, K+1)."""
        buffers = self._buffers(stop - start)
        distances = buffers["distances"]
        hamming.hamming_into(
            self.query_words[start:stop],
            self.database_words,
            distances,
            buffers["scratch"],
            buffers["counts"],
        )
        np.left_shift(distances, distances.dtype.type(1), out=distances)
        relevant = self._relevance_into(start, stop, buffers)
        np.bitwise_or(distances, relevant, out=distances)
        bins = 2 * (self.bits + 1)
        counts = np.stack([np.bincount(row, minlength=bins) for row in distances])
        counts = counts.reshape(stop - start, self.bits + 1, 2)
        return counts.sum(axis=2), counts[:, :, 1].copy()

    def map_chunks(self, function: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """Applies ``function(start, stop)`` to every query chunk; concatenates the results."""
        starts = range(0, self.num_queries, self.chunk_rows)

        def run(start: int) -> np.ndarray:
            return function(start, min(start + self.chunk_rows, self.num_queries))

        if self.num_threads == 1 or len(starts) == 1:
            results = [run(start) for start in starts]
        else:
            with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
                results = list(pool.map(run, starts))
        return np.concatenate(results, axis=0)


def _resolve_threads(num_threads) -> int:
    if num_threads is None:
        return max(1, min(os.cpu_count() or 1, 8))
    if (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, numbers.Integral)
        or num_threads < 1
    ):
        raise ValueError(f"num_threads must be a positive integer or None; got {num_threads!r}.")
    return int(num_threads)


def _check_ties(ties: str) -> str:
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}; got {ties!r}.")
    return ties


def _check_top_k(top_k, num_database: int) -> int:
    if top_k is None:
        return num_database
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None (= all); got {top_k!r}.")
    return min(int(top_k), num_database)


# ---------------------------------------------------------------------------------------------
# Closed forms for ties="average"


class _Tables:
    """Harmonic numbers H(n) and log(n!) for n = 0..size, summed in extended precision."""

    def __init__(self, size: int):
        steps = np.arange(1, size + 1, dtype=np.longdouble)
        self.harmonic = np.concatenate([[0.0], np.cumsum(1.0 / steps)]).astype(np.float64)
        # Rounded to float64 after the extended-precision sum: log-probabilities then carry an
        # absolute error of about 1e-16 * log(N!) (1e-9 for N = 10^6), harmless for the pmf.
        self.log_factorial = np.concatenate([[0.0], np.cumsum(np.log(steps))]).astype(np.float64)

    def log_choose(self, n: np.ndarray, k: np.ndarray) -> np.ndarray:
        return self.log_factorial[n] - self.log_factorial[k] - self.log_factorial[n - k]


def _bucket_sum(count, relevant, before, relevant_before, harmonic) -> np.ndarray:
    """Expected ``sum over the relevant items of a bucket of precision-at-their-rank``.

    A bucket of ``count`` items, ``relevant`` of them relevant, follows ``before`` items of which
    ``relevant_before`` are relevant. Under a uniformly random order within the bucket, position
    m (1..n) holds a relevant item with probability r/n, and then the number of relevant items
    before it in the bucket has mean (m-1)(r-1)/(n-1). Summing (P + 1 + (m-1)a) / (O + m) with
    a = (r-1)/(n-1) over m:

        E = (r/n) [ (P + 1 - a - a O) (H(O+n) - H(O)) + a n ],   H(x) = 1 + 1/2 + ... + 1/x.
    """
    count = np.asarray(count, dtype=np.int64)
    relevant = np.asarray(relevant, dtype=np.int64)
    before = np.asarray(before, dtype=np.int64)
    safe_count = np.maximum(count, 1)
    slope = np.where(count > 1, (relevant - 1) / np.maximum(count - 1, 1), 0.0)
    harmonic_gap = harmonic[before + count] - harmonic[before]
    value = (relevant / safe_count) * (
        (relevant_before + 1 - slope - slope * before) * harmonic_gap + slope * count
    )
    return np.where(relevant > 0, value, 0.0)


def _expected_average_precision(
    counts: np.ndarray, relevant: np.ndarray, top_k: int, tables: _Tables
):
    """E[AP@k] for each row of per-distance histograms (c, K+1), ties in random order.

    Buckets that end within the top k contribute ``_bucket_sum`` each. The bucket D that the
    cut at k splits (``O_D < k < O_D + n_D``) contributes its first k' = k - O_D positions: the
    number x of relevant items among them is hypergeometric (population n_D, r_D successes,
    k' draws) and, given x, they sit at a uniformly random subset of those positions. The
    denominator R_k = P_D + x depends on x, so

        E[AP@k] = sum_x Hyp(x) (S_full + bucket_sum(k', x, O_D, P_D)) / (P_D + x),

    with terms where P_D + x = 0 counted as 0.
    """
    rows = counts.shape[0]
    before = np.cumsum(counts, axis=1) - counts
    relevant_before = np.cumsum(relevant, axis=1) - relevant
    sums = _bucket_sum(counts, relevant, before, relevant_before, tables.harmonic)
    end = before + counts
    full = end <= top_k
    full_sum = np.where(full, sums, 0.0).sum(axis=1)
    full_relevant = np.where(full, relevant, 0).sum(axis=1)
    cut = (before < top_k) & (end > top_k)
    has_cut = cut.any(axis=1)
    result = np.divide(full_sum, full_relevant, out=np.zeros(rows), where=full_relevant > 0)
    if not has_cut.any():
        return result
    cut_rows = np.flatnonzero(has_cut)
    bucket = np.argmax(cut[cut_rows], axis=1)
    n_cut = counts[cut_rows, bucket]
    r_cut = relevant[cut_rows, bucket]
    o_cut = before[cut_rows, bucket]
    p_cut = relevant_before[cut_rows, bucket]
    draws = top_k - o_cut
    x_max = int(np.minimum(r_cut, draws).max())
    x = np.arange(x_max + 1)[None, :]
    valid = (
        (x <= r_cut[:, None])
        & (x <= draws[:, None])
        & (draws[:, None] - x <= (n_cut - r_cut)[:, None])
    )
    xs = np.where(valid, x, 0)
    n2, r2, k2 = n_cut[:, None], r_cut[:, None], draws[:, None]
    log_pmf = (
        tables.log_choose(np.broadcast_to(r2, xs.shape), xs)
        + tables.log_choose(np.broadcast_to(n2 - r2, xs.shape), np.where(valid, k2 - xs, 0))
        - tables.log_choose(n2, k2)
    )
    pmf = np.where(valid, np.exp(log_pmf), 0.0)
    partial = _bucket_sum(
        np.broadcast_to(k2, xs.shape), xs, o_cut[:, None], p_cut[:, None], tables.harmonic
    )
    denominator = p_cut[:, None] + xs
    numerator = full_sum[cut_rows, None] + partial
    ratio = np.divide(numerator, denominator, out=np.zeros(xs.shape), where=denominator > 0)
    result[cut_rows] = (pmf * ratio).sum(axis=1)
    return result


# ---------------------------------------------------------------------------------------------
# Public metrics


def average_precision(
    query_codes,
    database_codes,
    query_labels,
    database_labels,
    top_k: int | None = None,
    ties: str = "stable",
    bits: int | None = None,
    num_threads: int | None = None,
) -> np.ndarray:
    r"""AP@k of every query, float64 (Q,); ``mean_average_precision`` is its mean.

    Arguments are those of ``mean_average_precision``.
    """
    ties = _check_ties(ties)
    problem = _Problem(
        query_codes, database_codes, query_labels, database_labels, bits, num_threads
    )
    length = _check_top_k(top_k, problem.num_database)
    if ties == "average":
        tables = _Tables(problem.num_database)

        def expected(start: int, stop: int) -> np.ndarray:
            counts, relevant = problem.histograms(start, stop)
            return _expected_average_precision(counts, relevant, length, tables)

        return problem.map_chunks(expected)

    reciprocal_rank = 1.0 / np.arange(1, length + 1, dtype=np.float64)

    def stable(start: int, stop: int) -> np.ndarray:
        keys = problem.sorted_keys(start, stop, length)
        relevant = np.empty(keys.shape, dtype=np.bool_)
        np.bitwise_and(keys, 1, out=relevant, casting="unsafe")
        result = np.zeros(stop - start)
        for row in range(stop - start):
            positions = np.flatnonzero(relevant[row])
            if positions.size:
                found = np.arange(1, positions.size + 1, dtype=np.float64)
                result[row] = np.dot(found, reciprocal_rank[positions]) / positions.size
        return result

    return problem.map_chunks(stable)


def mean_average_precision(
    query_codes,
    database_codes,
    query_labels,
    database_labels,
    top_k: int | None = None,
    ties: str = "stable",
    bits: int | None = None,
    num_threads: int | None = None,
) -> float:
    r"""Mean average precision at k (mAP@k) of Hamming ranking.

    For each query the database is ranked by Hamming distance; with ``rel_i`` the relevance of
    the item at rank i (1-based, relevant = shares at least one label with the query),

    .. math:: AP@k = \frac{1}{R_k} \sum_{i=1}^{k} rel_i \frac{\sum_{j \le i} rel_j}{i},\qquad
        R_k = \sum_{i \le k} rel_i,

    AP@k = 0 when ``R_k = 0`` (the query still counts), and mAP@k is the mean over queries.

    Ties (items at equal distance):

    - ``"stable"``: ordered by database index. Computed exactly by sorting, per query, keys
      ``distance << s | index << 1 | relevant`` (a partial sort when k < N).
    - ``"average"``: the expectation of AP@k over a uniformly random order within each distance.
      With n_b items, r_b of them relevant, at distance b, O_b items and P_b relevant items at
      smaller distances, and H(x) = 1 + 1/2 + ... + 1/x, a bucket ranked entirely within the top
      k contributes (see ``_bucket_sum``)

      .. math:: S_b = \frac{r_b}{n_b}\Big[(P_b + 1 - a_b - a_b O_b)\,(H(O_b+n_b) - H(O_b))
                + a_b n_b\Big],\qquad a_b = \frac{r_b - 1}{n_b - 1}\ (0 \text{ if } n_b = 1),

      so mAP@All averages ``sum_b S_b / R``. At a finite k the bucket that the cut splits adds
      a hypergeometric average over how many of its relevant items fall inside the top k (the
      denominator R_k depends on it; see ``_expected_average_precision``).

    Worked example (one query, 4 database items at distances [1, 0, 1, 1], relevance
    [1, 0, 0, 1]): stable order is items 1, 0, 2, 3 with relevance 0, 1, 0, 1, so
    AP@All = (1/2)(1/2 + 2/4) = 0.5. With ties="average" the distance-1 bucket (n=3, r=2, O=1,
    P=0, a=1/2) gives S = (2/3)[(0 + 1 - 1/2 - 1/2)(1/2 + 1/3 + 1/4) + 3/2] = 1, so
    AP@All = 1/2 (here the tie order happens not to change the expectation); AP@1 = 0 in both
    modes (the only item in the top 1 is irrelevant).

    >>> database = [[1, -1], [1, 1], [-1, 1], [1, -1]]  # distances 1, 0, 1, 1 to the query
    >>> mean_average_precision([[1, 1]], database, [0], [0, 1, 1, 0])
    0.5
    >>> mean_average_precision([[1, 1]], database, [0], [0, 1, 1, 0], ties="average")
    0.5

    Args:
      query_codes: ±1 or {0,1} codes (Q, K), or packed uint8 (Q, ceil(K/8)) with ``bits=K``.
      database_codes: the same for the database (N, ...).
      query_labels: class ids (Q,) or multi-hot (Q, C).
      database_labels: class ids (N,) or multi-hot (N, C).
      top_k: k of mAP@k; None (default) ranks the whole database (mAP@All). Values above N
        mean All.
      ties: ``"stable"`` (default) or ``"average"``, see above.
      bits: the code length K; required for packed codes.
      num_threads: worker threads over query chunks (default: the number of CPUs, at most 8).

    Returns:
      mAP@k as a Python float in [0, 1].

    Raises:
      ValueError: for codes or labels of the wrong shape, dtype or values, mismatched bits or
        row counts, an empty database or query set, a bad ``top_k`` or ``ties``.
    """
    return float(
        np.mean(
            average_precision(
                query_codes,
                database_codes,
                query_labels,
                database_labels,
                top_k,
                ties,
                bits,
                num_threads,
            )
        )
    )


def precision_at_n(
    query_codes,
    database_codes,
    query_labels,
    database_labels,
    ns: int | Sequence[int],
    ties: str = "stable",
    bits: int | None = None,
    num_threads: int | None = None,
) -> np.ndarray:
    r"""Top-N precision curve: mean over queries of (relevant items among the first N) / N.

    .. math:: P@N = \frac{1}{Q} \sum_q \frac{1}{N} \sum_{i=1}^{N} rel_{q,i}

    With ``ties="stable"`` the ranking is by (distance, database index); with ``"average"`` the
    expectation over random orders within distances: if the cut at N leaves N' items of the
    bucket D (n_D items, r_D relevant, P_D relevant before it), ``E = (P_D + N' r_D / n_D) / N``.

    Example: one query; database distances [1, 0, 1, 1], relevance [1, 0, 0, 1]:
    stable ranking relevance 0, 1, 0, 1 gives P@1 = 0, P@2 = 1/2, P@4 = 1/2; with
    ties="average", P@2 = (0 + 1 * 2/3) / 2 = 1/3.

    Args:
      ns: one N or a sequence of N values, each in 1..database size.
      Other arguments: as ``mean_average_precision``.

    Returns:
      float64 array of the mean precision at each N (shape (len(ns),), or () for a scalar N).
    """
    ties = _check_ties(ties)
    problem = _Problem(
        query_codes, database_codes, query_labels, database_labels, bits, num_threads
    )
    scalar = np.ndim(ns) == 0
    values = np.atleast_1d(np.asarray(ns))
    if (
        values.size == 0
        or values.dtype.kind not in "iu"
        or values.min() < 1
        or values.max() > problem.num_database
    ):
        raise ValueError(
            f"ns must be integers between 1 and the database size ({problem.num_database}); got {ns!r}."
        )
    values = values.astype(np.int64)
    longest = int(values.max())
    if ties == "stable":

        def found(start: int, stop: int) -> np.ndarray:
            keys = problem.sorted_keys(start, stop, longest)
            relevant = np.empty(keys.shape, dtype=np.int32)
            np.bitwise_and(keys, 1, out=relevant, casting="unsafe")
            return np.cumsum(relevant, axis=1)[:, values - 1].astype(np.float64)

    else:

        def found(start: int, stop: int) -> np.ndarray:
            counts, relevant = problem.histograms(start, stop)
            cumulative_counts = np.cumsum(counts, axis=1)
            cumulative_relevant = np.cumsum(relevant, axis=1)
            result = np.empty((stop - start, values.size))
            for column, n in enumerate(values):
                bucket = np.argmax(cumulative_counts >= n, axis=1)
                rows = np.arange(stop - start)
                before = cumulative_counts[rows, bucket] - counts[rows, bucket]
                relevant_before = cumulative_relevant[rows, bucket] - relevant[rows, bucket]
                fraction = relevant[rows, bucket] / counts[rows, bucket]
                result[:, column] = relevant_before + (n - before) * fraction
            return result

    precision = problem.map_chunks(found).mean(axis=0) / values
    return precision[0] if scalar else precision


def _radius_counts(problem: _Problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query, cumulative retrieved and relevant-retrieved counts at radius 0..K, and R."""

    def counts(start: int, stop: int) -> np.ndarray:
        all_counts, relevant = problem.histograms(start, stop)
        return np.stack([np.cumsum(all_counts, axis=1), np.cumsum(relevant, axis=1)], axis=1)

    stacked = problem.map_chunks(counts)
    retrieved, relevant_retrieved = stacked[:, 0], stacked[:, 1]
    return retrieved, relevant_retrieved, relevant_retrieved[:, -1]


def _mean_precision(
    retrieved: np.ndarray, relevant_retrieved: np.ndarray, empty: str
) -> np.ndarray:
    precision = np.divide(
        relevant_retrieved, retrieved, out=np.zeros(retrieved.shape), where=retrieved > 0
    )
    if empty == "zero":
        return precision.mean(axis=0)
    answered = (retrieved > 0).sum(axis=0)
    return np.divide(
        precision.sum(axis=0), answered, out=np.full(answered.shape, np.nan), where=answered > 0
    )


def precision_recall_curve(
    query_codes,
    database_codes,
    query_labels,
    database_labels,
    bits: int | None = None,
    empty: str = "zero",
    num_threads: int | None = None,
) -> dict[str, np.ndarray]:
    r"""Precision and recall of Hamming-ball retrieval at every radius r = 0..K.

    Query q retrieves the items at distance <= r (ties play no role). With ``ret_q(r)`` items
    retrieved, ``hit_q(r)`` of them relevant and ``R_q`` relevant items in all:

    .. math:: precision(r) = \frac{1}{Q} \sum_q \frac{hit_q(r)}{ret_q(r)},\qquad
        recall(r) = \frac{1}{Q} \sum_q \frac{hit_q(r)}{R_q}

    Conventions: a query that retrieves nothing has precision 0 and still counts
    (``empty="zero"``, the convention of the common public evaluation code); ``empty="skip"``
    averages precision over the queries that retrieved at least one item instead (NaN when
    none did). A query with no relevant item has recall 0 and counts.

    Example: one query, distances [1, 0, 1, 1], relevance [1, 0, 0, 1] (K = 2): radius 0
    retrieves item 1 only (precision 0, recall 0); radius 1 and 2 retrieve everything
    (precision 1/2, recall 1).

    Returns:
      dict with ``"radius"`` (int, K+1), ``"precision"``, ``"recall"`` (float64, K+1) and
      ``"retrieved"`` (mean number of items retrieved per query at each radius).
    """
    if empty not in _EMPTY:
        raise ValueError(f"empty must be one of {_EMPTY}; got {empty!r}.")
    problem = _Problem(
        query_codes, database_codes, query_labels, database_labels, bits, num_threads
    )
    retrieved, relevant_retrieved, total_relevant = _radius_counts(problem)
    recall = np.divide(
        relevant_retrieved,
        total_relevant[:, None],
        out=np.zeros(retrieved.shape),
        where=total_relevant[:, None] > 0,
    )
    return {
        "radius": np.arange(problem.bits + 1),
        "precision": _mean_precision(retrieved, relevant_retrieved, empty),
        "recall": recall.mean(axis=0),
        "retrieved": retrieved.mean(axis=0),
    }


def precision_within_radius(
    query_codes,
    database_codes,
    query_labels,
    database_labels,
    radius: int = 2,
    bits: int | None = None,
    empty: str = "zero",
    num_threads: int | None = None,
) -> float:
    r"""Mean precision of the items within Hamming distance ``radius`` (inclusive) of each query.

    .. math:: P_{r} = \frac{1}{Q} \sum_q \frac{hit_q(r)}{ret_q(r)}

    A query with nothing within the radius scores 0 and counts (``empty="zero"``, as the common
    public code does for "precision within Hamming radius 2"); ``empty="skip"`` leaves such
    queries out (NaN if all are empty). This is ``precision_recall_curve(...)["precision"][r]``.

    Example: distances [1, 0, 1, 1], relevance [1, 0, 0, 1]: radius 0 -> 0.0, radius 2 -> 0.5.
    """
    if empty not in _EMPTY:
        raise ValueError(f"empty must be one of {_EMPTY}; got {empty!r}.")
    if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer; got {radius!r}.")
    problem = _Problem(
        query_codes, database_codes, query_labels, database_labels, bits, num_threads
    )
    radius = min(int(radius), problem.bits)
    retrieved, relevant_retrieved, _ = _radius_counts(problem)
    return float(_mean_precision(retrieved[:, radius], relevant_retrieved[:, radius], empty))
