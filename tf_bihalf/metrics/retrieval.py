r"""Retrieval metrics for binary codes: mAP@k, precision@N, precision-recall by Hamming radius.

Definitions (``docs/retrieval.md`` has the long version; the paper's protocol is in
``docs/paper.md``, "The metric"):

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

How it is computed: no ranking is ever sorted. With K+1 possible distances, one pass per query
gives the histogram of distances (all and relevant items), which is all that ``ties="average"``,
the precision-recall curve and the radius precision need; a counting pass in database order
gives every relevant item's stable rank, ``(items at smaller distances) + (items at its
distance earlier in the database) + 1`` (see ``tf_bihalf.metrics._counting``). Both are
compiled loops when ``numba`` is installed, numpy operations otherwise, with the same results
(AP sums to the last bits). ``retrieval_report`` computes every metric from one such pass.

Queries are processed in chunks of about 2^19 (query, item) pairs (at least one query), on
``num_threads`` threads. Extra memory: with numba, about 17 bytes x N per thread (25 with
multi-hot labels) and the per-query histograms; with numpy, about 30 bytes x max(2^19, N) per
thread. There is never a float query x database matrix.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import numbers
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

from tf_bihalf.metrics import _counting
from tf_bihalf.search import hamming

__all__ = [
    "average_precision",
    "mean_average_precision",
    "precision_at_n",
    "precision_recall_curve",
    "precision_within_radius",
    "retrieval_report",
]

# About half a million (query, database item) pairs per chunk: the numpy work arrays stay
# within the CPU caches' reach (~10 MB per worker), and per-chunk Python overhead is negligible.
_CHUNK_PAIRS = 1 << 19
# The compiled kernel needs no (chunk x N) work arrays: larger chunks only cut per-chunk
# Python overhead (its outputs are (chunk, K+1) histograms).
_CHUNK_PAIRS_COMPILED = 1 << 23
_TIES = ("stable", "average")
_EMPTY = ("zero", "skip")
# The N of the top-N precision curve reported by default (those above the database size are
# dropped by ``retrieval_report``).
DEFAULT_PRECISION_NS = (1, 10, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


# ---------------------------------------------------------------------------------------------
# Input preparation


@dataclasses.dataclass
class _Labels:
    """Labels prepared for fast relevance tests."""

    multi_label: bool
    query: np.ndarray  # (Q,) dense class ids (-1: not in the database), or uint64 (Q, W) words
    database: np.ndarray  # (N,) dense class ids (int8/16/32), or uint64 (W, N) multi-hot words


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


def _dense_class_ids(query: np.ndarray, database: np.ndarray) -> _Labels:
    """Class ids renumbered 0..C-1 by the database's classes (-1: a query class absent from the
    database), in the smallest integer type: the relevance test then reads 1 byte per item
    instead of 8 (equality, and so every metric, is unchanged)."""
    classes, database_ids = np.unique(database, return_inverse=True)
    position = np.minimum(np.searchsorted(classes, query), classes.size - 1)
    query_ids = np.where(classes[position] == query, position, -1)
    dtype = np.min_scalar_type(-classes.size)
    return _Labels(False, query_ids.astype(dtype), database_ids.reshape(-1).astype(dtype))


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
        return _dense_class_ids(
            _class_ids(query, "query_labels"), _class_ids(database, "database_labels")
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
    """Validated query/database codes and labels; runs the counting kernel over query chunks."""

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
        self.use_numba = _counting.backend() == "numba" and _counting.kernel_fits(
            self.num_database, self.bits
        )
        pairs = _CHUNK_PAIRS_COMPILED if self.use_numba else _CHUNK_PAIRS
        self.chunk_rows = max(1, min(self.num_queries, pairs // self.num_database))
        self._local = threading.local()

    def _buffers(self) -> dict[str, np.ndarray]:
        """Work arrays, one set per thread, allocated once."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            values_dtype = hamming.distance_dtype(2 * self.bits + 1)
            if self.use_numba:
                buffers = {
                    # Rounded up to whole 8-byte words: the histogram reads them eight at a time.
                    "values": np.empty((1, -(-self.num_database // 8) * 8), dtype=values_dtype),
                    "records": np.empty((1, self.num_database), dtype=np.int64),
                    "ranks": np.empty((1, self.num_database), dtype=np.float64),
                }
            else:
                shape = (self.chunk_rows, self.num_database)
                buffers = {
                    "values": np.empty(shape, dtype=values_dtype),
                    "scratch": np.empty(shape, dtype=np.uint64),
                    "counts": np.empty(shape, dtype=np.uint8),
                    "relevant": np.empty(shape, dtype=np.bool_),
                }
                if self.labels.multi_label:
                    buffers["label_scratch"] = np.empty(shape, dtype=np.uint64)
            self._local.buffers = buffers
        return buffers

    def statistics(
        self, start: int, stop: int, ks: Sequence[int] = (), ns: Sequence[int] = ()
    ) -> _counting.ChunkStatistics:
        """Histograms of queries [start, stop), stable AP@k sums for each k in ``ks`` and hit
        counts for each n in ``ns``."""
        return _counting.chunk_statistics(
            self.query_words,
            self.database_words,
            self.labels,
            start,
            stop,
            self.bits,
            np.asarray(ks, dtype=np.int64).reshape(-1),
            np.asarray(ns, dtype=np.int64).reshape(-1),
            self._buffers(),
            use_numba=self.use_numba,
        )

    def map_chunks(self, function: Callable[[int, int], object]):
        """Applies ``function(start, stop)`` to every query chunk and concatenates the results
        along the query axis (per key when it returns dicts of arrays)."""
        starts = range(0, self.num_queries, self.chunk_rows)

        def run(start: int):
            return function(start, min(start + self.chunk_rows, self.num_queries))

        if self.num_threads == 1 or len(starts) == 1:
            results = [run(start) for start in starts]
        else:
            with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
                results = list(pool.map(run, starts))
        if isinstance(results[0], dict):
            return {
                key: np.concatenate([result[key] for result in results], axis=0)
                for key in results[0]
            }
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
# Per-chunk quantities shared by the single metrics and retrieval_report (so that both give
# bit-identical numbers).


def _stable_ap(statistics: _counting.ChunkStatistics, column: int) -> np.ndarray:
    """Per-query stable AP@k from the kernel's sums (0 where no relevant item is in the top k)."""
    found = statistics.ap_found[:, column]
    return np.divide(
        statistics.ap_sum[:, column], found, out=np.zeros(found.shape), where=found > 0
    )


def _average_found(statistics: _counting.ChunkStatistics, values: np.ndarray) -> np.ndarray:
    """Expected relevant items among the first n (random order within distances), (c, len)."""
    counts, relevant = statistics.histogram, statistics.relevant_histogram
    rows = np.arange(counts.shape[0])
    cumulative_counts = np.cumsum(counts, axis=1)
    cumulative_relevant = np.cumsum(relevant, axis=1)
    result = np.empty((counts.shape[0], values.size))
    for column, n in enumerate(values):
        bucket = np.argmax(cumulative_counts >= n, axis=1)
        before = cumulative_counts[rows, bucket] - counts[rows, bucket]
        relevant_before = cumulative_relevant[rows, bucket] - relevant[rows, bucket]
        fraction = relevant[rows, bucket] / counts[rows, bucket]
        result[:, column] = relevant_before + (n - before) * fraction
    return result


def _radius_arrays(statistics: _counting.ChunkStatistics) -> dict[str, np.ndarray]:
    """Per query, items and relevant items retrieved within radius 0..K (cumulative counts)."""
    return {
        "retrieved": np.cumsum(statistics.histogram, axis=1),
        "relevant_retrieved": np.cumsum(statistics.relevant_histogram, axis=1),
    }


def _check_ns(ns, num_database: int, drop_large: bool = False) -> np.ndarray:
    values = np.atleast_1d(np.asarray(ns))
    if values.size and values.dtype.kind in "iu" and drop_large:
        values = values[values <= num_database]
        if values.size == 0:
            return values.astype(np.int64)
    if (
        values.size == 0
        or values.dtype.kind not in "iu"
        or values.min() < 1
        or values.max() > num_database
    ):
        raise ValueError(
            f"ns must be integers between 1 and the database size ({num_database}); got {ns!r}."
        )
    return values.astype(np.int64)


def _check_empty(empty: str) -> str:
    if empty not in _EMPTY:
        raise ValueError(f"empty must be one of {_EMPTY}; got {empty!r}.")
    return empty


def _check_radius(radius, bits: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer; got {radius!r}.")
    return min(int(radius), bits)


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


def _mean_recall(retrieved: np.ndarray, relevant_retrieved: np.ndarray) -> np.ndarray:
    total_relevant = relevant_retrieved[:, -1:]
    recall = np.divide(
        relevant_retrieved,
        total_relevant,
        out=np.zeros(retrieved.shape),
        where=total_relevant > 0,
    )
    return recall.mean(axis=0)


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
            statistics = problem.statistics(start, stop)
            return _expected_average_precision(
                statistics.histogram, statistics.relevant_histogram, length, tables
            )

        return problem.map_chunks(expected)

    def stable(start: int, stop: int) -> np.ndarray:
        return _stable_ap(problem.statistics(start, stop, ks=[length]), 0)

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

    - ``"stable"``: ordered by database index. Computed exactly without sorting: a relevant
      item j at distance d_j has rank ``C_<(d_j) + #{i < j: d_i = d_j} + 1`` and is the
      ``P_<(d_j) + #{i < j: d_i = d_j, rel_i} + 1``-th relevant item, where C_< and P_< count
      all and relevant items at smaller distances; the counts come from a histogram pass and a
      second pass with one running counter per distance.
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
    values = _check_ns(ns, problem.num_database)
    if ties == "stable":

        def found(start: int, stop: int) -> np.ndarray:
            return problem.statistics(start, stop, ns=values).hits.astype(np.float64)

    else:

        def found(start: int, stop: int) -> np.ndarray:
            return _average_found(problem.statistics(start, stop), values)

    precision = problem.map_chunks(found).mean(axis=0) / values
    return precision[0] if scalar else precision


def _radius_counts(problem: _Problem) -> dict[str, np.ndarray]:
    return problem.map_chunks(lambda start, stop: _radius_arrays(problem.statistics(start, stop)))


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
    empty = _check_empty(empty)
    problem = _Problem(
        query_codes, database_codes, query_labels, database_labels, bits, num_threads
    )
    counts = _radius_counts(problem)
    return {
        "radius": np.arange(problem.bits + 1),
        "precision": _mean_precision(counts["retrieved"], counts["relevant_retrieved"], empty),
        "recall": _mean_recall(counts["retrieved"], counts["relevant_retrieved"]),
        "retrieved": counts["retrieved"].mean(axis=0),
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
    empty = _check_empty(empty)
    if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer; got {radius!r}.")
    problem = _Problem(
        query_codes, database_codes, query_labels, database_labels, bits, num_threads
    )
    radius = _check_radius(radius, problem.bits)
    counts = _radius_counts(problem)
    return float(
        _mean_precision(
            counts["retrieved"][:, radius], counts["relevant_retrieved"][:, radius], empty
        )
    )


def retrieval_report(
    query_codes,
    database_codes,
    query_labels,
    database_labels,
    *,
    top_ks: Sequence[int | None] = (None, 1000),
    precision_ns: Sequence[int] = DEFAULT_PRECISION_NS,
    radius: int = 2,
    ties: str = "stable",
    also_average_ties: bool = True,
    bits: int | None = None,
    empty: str = "zero",
    num_threads: int | None = None,
) -> dict:
    r"""Every Hamming-ranking metric from one pass over the query x database distances.

    Distances and relevance are computed once per query chunk; from them one counting pass
    yields the per-distance histograms (all and relevant items) and the stable ranks of the
    relevant items, and every metric is derived from those:

    - ``map_at_k``: mAP@k for each k of ``top_ks`` with the ``ties`` rule (as
      ``mean_average_precision``); ``map_ties_average_at_k``: the same with
      ``ties="average"`` (when ``also_average_ties``).
    - ``precision_at_n``: ``P@N = mean_q (relevant among the first N) / N`` with the ``ties``
      rule (as ``precision_at_n``), for the N of ``precision_ns`` not above the database size.
    - ``pr_curve``: for r = 0..K, ``precision(r) = mean_q hit_q(r) / ret_q(r)`` and
      ``recall(r) = mean_q hit_q(r) / R_q`` of the items within distance r (as
      ``precision_recall_curve``, with ``empty``), and the mean number ``retrieved``.
    - ``precision_within_radius``: ``precision(radius)`` (as ``precision_within_radius``).

    Each value equals the one of the separate function exactly (same arithmetic on the same
    counts); the report costs about one of them.

    Worked example (one query, database at distances [1, 0, 1, 1] with relevance [1, 0, 0, 1]):
    the stable ranking's relevance is 0, 1, 0, 1, so AP@All = (1/2 + 2/4)/2 = 0.5, AP@1 = 0,
    P@1 = 0, P@2 = P@4 = 1/2; radius 0 retrieves only the irrelevant item 1 (precision 0,
    recall 0), radius 1 and 2 retrieve everything (precision 1/2, recall 1).

    >>> database = [[1, -1], [1, 1], [-1, 1], [1, -1]]
    >>> report = retrieval_report(
    ...     [[1, 1]], database, [0], [0, 1, 1, 0], top_ks=(None, 1), precision_ns=(1, 2, 4, 10)
    ... )
    >>> report["map_at_k"], report["map_ties_average_at_k"]
    ({'All': 0.5, '1': 0.0}, {'All': 0.5, '1': 0.0})
    >>> report["precision_at_n"]
    {'n': [1, 2, 4], 'precision': [0.0, 0.5, 0.5]}
    >>> report["pr_curve"]["precision"], report["pr_curve"]["recall"]
    ([0.0, 0.5, 0.5], [0.0, 1.0, 1.0])
    >>> report["precision_within_radius"]
    {'radius': 2, 'precision': 0.5}

    Args:
      query_codes, database_codes, query_labels, database_labels, bits, num_threads: as
        ``mean_average_precision``.
      top_ks: the k of each mAP@k; None means All (k above the database size also ranks
        everything). Keys of the result: ``"All"`` for None, ``str(k)`` otherwise.
      precision_ns: the N of the top-N precision curve; those above the database size are
        dropped (the result's ``"n"`` lists the ones used); may be empty.
      radius: the Hamming radius of ``precision_within_radius`` (clipped to K).
      ties: ``"stable"`` or ``"average"``: the rule of ``map_at_k`` and ``precision_at_n``.
      also_average_ties: also report ``map_ties_average_at_k``.
      empty: precision convention for queries that retrieve nothing within a radius (see
        ``precision_recall_curve``).

    Returns:
      A JSON-ready dict: ``ties``, ``map_at_k``, ``map_ties_average_at_k`` (optional),
      ``precision_at_n`` ({``n``, ``precision``}), ``pr_curve`` ({``radius``, ``precision``,
      ``recall``, ``retrieved``}), ``precision_within_radius`` ({``radius``, ``precision``}).
    """
    ties = _check_ties(ties)
    empty = _check_empty(empty)
    if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer; got {radius!r}.")
    if isinstance(top_ks, (int, type(None))) or len(top_ks) == 0:
        raise ValueError(
            f"top_ks must be a non-empty sequence of k (or None = All); got {top_ks!r}."
        )
    problem = _Problem(
        query_codes, database_codes, query_labels, database_labels, bits, num_threads
    )
    lengths = [_check_top_k(top_k, problem.num_database) for top_k in top_ks]
    ns = (
        _check_ns(precision_ns, problem.num_database, drop_large=True)
        if np.size(precision_ns)
        else np.zeros(0, dtype=np.int64)
    )
    radius = _check_radius(radius, problem.bits)
    want_average = ties == "average" or also_average_ties
    tables = _Tables(problem.num_database) if want_average else None

    def chunk(start: int, stop: int) -> dict[str, np.ndarray]:
        statistics = problem.statistics(
            start, stop, ks=lengths if ties == "stable" else [], ns=ns if ties == "stable" else []
        )
        result = _radius_arrays(statistics)
        if want_average:
            result["ap_average"] = np.stack(
                [
                    _expected_average_precision(
                        statistics.histogram, statistics.relevant_histogram, length, tables
                    )
                    for length in lengths
                ],
                axis=1,
            )
        if ties == "stable":
            result["ap"] = np.stack(
                [_stable_ap(statistics, column) for column in range(len(lengths))], axis=1
            )
            result["found"] = statistics.hits.astype(np.float64)
        else:
            result["ap"] = result["ap_average"]
            result["found"] = _average_found(statistics, ns)
        return result

    arrays = problem.map_chunks(chunk)
    names = ["All" if top_k is None else str(int(top_k)) for top_k in top_ks]

    def maps(per_query: np.ndarray) -> dict[str, float]:
        return {
            name: float(np.mean(np.ascontiguousarray(per_query[:, column])))
            for column, name in enumerate(names)
        }

    retrieved, relevant_retrieved = arrays["retrieved"], arrays["relevant_retrieved"]
    report = {"ties": ties, "map_at_k": maps(arrays["ap"])}
    if also_average_ties:
        report["map_ties_average_at_k"] = maps(arrays["ap_average"])
    precision = arrays["found"].mean(axis=0) / ns if ns.size else np.zeros(0)
    report["precision_at_n"] = {"n": ns.tolist(), "precision": precision.tolist()}
    report["pr_curve"] = {
        "radius": list(range(problem.bits + 1)),
        "precision": _mean_precision(retrieved, relevant_retrieved, empty).tolist(),
        "recall": _mean_recall(retrieved, relevant_retrieved).tolist(),
        "retrieved": retrieved.mean(axis=0).tolist(),
    }
    report["precision_within_radius"] = {
        "radius": radius,
        "precision": float(
            _mean_precision(retrieved[:, radius], relevant_retrieved[:, radius], empty)
        ),
    }
    return report
