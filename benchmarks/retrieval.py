"""Benchmark: retrieval metrics by counting (tf_bihalf.metrics) against the sorting formulations.

Variants, timed in one run on the same data:

- ``naive``: the widely copied public evaluation code (``CalcTopMap`` style): per query, Hamming
  distances by a float product ``0.5 * (K - q . B^T)``, relevance by ``labels_q . labels_B^T > 0``,
  a full ``np.argsort``, then AP over the top k. Timed (default, unstable argsort as that code
  does) on a subset of the queries and extrapolated linearly; its value is checked with
  ``kind="stable"``, the definition ``ties="stable"`` implements.
- ``old stable``: the previous implementation of ``ties="stable"`` in this project (kept here as
  the reference): per query chunk, keys ``distance << s | index << 1 | relevant`` sorted with
  ``np.sort`` (``np.partition`` first when k < N), then AP from the relevant positions. (The
  library version also had a per-class table of the low key bits, saving two passes.)
- ``stable`` / ``average``: ``mean_average_precision(ties=...)`` with the compiled counting
  kernel (``numba``) and with the numpy fallback (``TF_BIHALF_NUMBA=0`` path).
- ``report`` vs ``separate``: ``retrieval_report`` against the five calls it replaces
  (stable and tie-averaged mAP, P@N, PR curve, precision within radius 2).

Memory: the peak resident set size (VmHWM) is reset before each measured call through
``/proc/self/clear_refs`` (Linux), so each row reports its own peak; "extra" subtracts the
resident size before the call (inputs, TensorFlow pulled in by ``import tf_bihalf``). Memory that
an earlier call freed and the allocator kept is reused without growing RSS, so a row's "extra"
can read lower than a fresh process would show.

Each mAP variant runs ``--repeats`` times (default 3), the variants interleaved, and the table
gives the best time: on a shared machine a burst of outside load then hits one repetition
rather than one variant.

Run (about six minutes on 2 cores):

    python benchmarks/retrieval.py            # the issue's sizes
    python benchmarks/retrieval.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tf_bihalf import metrics  # noqa: E402
from tf_bihalf.metrics import _counting, retrieval  # noqa: E402
from tf_bihalf.search import hamming  # noqa: E402


def _rss_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure(function, *args, **kwargs):
    """Runs function once: (result, seconds, peak extra MB over the resident size at start)."""
    _reset_peak()
    before = _rss_mb("VmRSS")
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    return result, seconds, _rss_mb("VmHWM") - before


@contextlib.contextmanager
def implementation(name: str):
    """Runs the library with the numba kernel or with its numpy fallback."""
    saved = _counting._KERNEL
    _counting._KERNEL = None if name == "numba" else False
    try:
        if _counting.backend() != name:
            raise SystemExit(f"the {name} implementation is not available (pip install numba)")
        yield
    finally:
        _counting._KERNEL = saved


def clustered_codes(rng, labels_onehot, prototypes, flip):
    """Codes near class prototypes: sign(sum of the item's class prototypes), then bit flips."""
    signal = labels_onehot.astype(np.float32) @ prototypes
    codes = np.where(signal >= 0, 1, -1).astype(np.int8)
    codes[rng.random(codes.shape) < flip] *= -1
    return codes


def naive_map(query_codes, database_codes, query_onehot, database_onehot, top_k, stable):
    """The common public implementation (per-query float products and a full argsort)."""
    bits = query_codes.shape[1]
    database_float = database_codes.astype(np.float32)
    database_labels = database_onehot.astype(np.float32)
    total = 0.0
    for i in range(query_codes.shape[0]):
        relevant = (query_onehot[i].astype(np.float32) @ database_labels.T > 0).astype(np.float32)
        distances = 0.5 * (bits - query_codes[i].astype(np.float32) @ database_float.T)
        order = np.argsort(distances, kind="stable" if stable else "quicksort")
        found = relevant[order][:top_k]
        count = int(found.sum())
        if count == 0:
            continue
        ranks = np.flatnonzero(found == 1) + 1.0
        total += np.mean(np.linspace(1, count, count) / ranks)
    return total / query_codes.shape[0]


def old_stable_map(query_codes, database_codes, query_labels, database_labels, top_k, threads):
    """The previous ``ties="stable"`` implementation: sort packed keys per query chunk."""
    problem = retrieval._Problem(
        query_codes, database_codes, query_labels, database_labels, None, threads
    )
    size = problem.num_database
    length = size if top_k is None else min(top_k, size)
    shift = 1 + max(1, int(size - 1).bit_length())
    key_dtype = np.dtype(np.uint32 if shift + problem.bits.bit_length() <= 32 else np.uint64)
    index_part = np.arange(size, dtype=key_dtype) << key_dtype.type(1)
    chunk_rows = max(1, min(problem.num_queries, retrieval._CHUNK_PAIRS // size))
    reciprocal_rank = 1.0 / np.arange(1, length + 1, dtype=np.float64)

    def chunk(start: int) -> np.ndarray:
        stop = min(start + chunk_rows, problem.num_queries)
        shape = (stop - start, size)
        buffers = {
            "scratch": np.empty(shape, np.uint64),
            "label_scratch": np.empty(shape, np.uint64),
            "relevant": np.empty(shape, np.bool_),
        }
        keys = np.empty(shape, key_dtype)
        hamming.hamming_into(
            problem.query_words[start:stop],
            problem.database_words,
            keys,
            buffers["scratch"],
            np.empty(shape, np.uint8),
        )
        np.left_shift(keys, key_dtype.type(shift), out=keys)
        np.bitwise_or(keys, index_part[None, :], out=keys)
        np.bitwise_or(
            keys, _counting.relevance_into(problem.labels, start, stop, buffers), out=keys
        )
        if length < size:
            keys.partition(length - 1, axis=1)
            keys = keys[:, :length]
        keys.sort(axis=1)
        relevant = (keys & 1).astype(np.bool_)
        result = np.zeros(stop - start)
        for row in range(stop - start):
            positions = np.flatnonzero(relevant[row])
            if positions.size:
                found = np.arange(1, positions.size + 1, dtype=np.float64)
                result[row] = np.dot(found, reciprocal_rank[positions]) / positions.size
        return result

    starts = range(0, problem.num_queries, chunk_rows)
    with concurrent.futures.ThreadPoolExecutor(problem.num_threads) as pool:
        return float(np.mean(np.concatenate(list(pool.map(chunk, starts)))))


def table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def compare_map(args, codes, labels, onehot, top_k, naive_queries):
    """Rows of the mAP table for one (problem, k): every variant, timed in this run."""
    (query_codes, database_codes), (query_labels, database_labels) = codes, labels
    num_queries, num_database = len(query_codes), len(database_codes)
    k = num_database if top_k is None else top_k
    subset = slice(0, naive_queries)
    naive_args = (query_codes[subset], database_codes, onehot[0][subset], onehot[1], k)
    naive_value = naive_map(*naive_args, True)
    naive_seconds = min(measure(naive_map, *naive_args, False)[1] for _ in range(2))
    naive_total = naive_seconds * num_queries / naive_queries
    with implementation("numba"):
        ours_subset = metrics.mean_average_precision(
            query_codes[subset], database_codes, query_labels[subset], database_labels, top_k=k
        )
    arguments = (query_codes, database_codes, query_labels, database_labels)
    results = {}

    def keep(key, measured):
        # Best time and largest peak over the repetitions (the value is the same every time).
        value, seconds, extra = measured
        if key in results:
            seconds = min(seconds, results[key][1])
            extra = max(extra, results[key][2])
        results[key] = (value, seconds, extra)

    for _ in range(args.repeats):  # interleaved, so that a burst of load hits every variant
        for name, backend, ties in (
            ("stable", "numba", "stable"),
            ("average", "numba", "average"),
            ("stable", "numpy", "stable"),
            ("average", "numpy", "average"),
        ):
            with implementation(backend):
                keep(
                    (name, backend),
                    measure(
                        metrics.mean_average_precision,
                        *arguments,
                        top_k=top_k,
                        ties=ties,
                        num_threads=args.threads,
                    ),
                )
        keep(("old stable", "key sort"), measure(old_stable_map, *arguments, top_k, args.threads))
    label = "All" if top_k is None else str(top_k)
    rows = [
        [
            f"mAP@{label}",
            "naive (float matmul + argsort)",
            f"{naive_value:.6f} ({naive_queries} q)",
            f"{naive_total:.1f} (extrapolated)",
            "",
            "1x",
            "",
        ]
    ]
    for (name, backend), (value, seconds, extra) in results.items():
        # The old stable mode is compared with the average mode it shipped with (numpy).
        average_seconds = results["average", "numba" if backend == "numba" else "numpy"][1]
        rows.append(
            [
                f"mAP@{label}",
                f"{name} ({backend})",
                f"{value:.6f}",
                f"{seconds:.2f}",
                f"{extra:.0f}",
                f"{naive_total / seconds:.0f}x",
                "" if name == "average" else f"{seconds / average_seconds:.2f}",
            ]
        )
    stable = results["stable", "numba"][0]
    differences = {
        "stable numpy": abs(results["stable", "numpy"][0] - stable),
        "old stable": abs(results["old stable", "key sort"][0] - stable),
        f"naive ({naive_queries} q)": abs(ours_subset - naive_value),
        "average numpy vs numba": abs(
            results["average", "numpy"][0] - results["average", "numba"][0]
        ),
    }
    return rows, differences


def compare_report(args, codes, labels):
    """retrieval_report against the five separate calls it replaces (numba)."""
    arguments = (*codes, *labels)
    ns = [n for n in retrieval.DEFAULT_PRECISION_NS if n <= len(codes[1])]
    with implementation("numba"):

        def separate():
            return {
                "map": metrics.mean_average_precision(*arguments, num_threads=args.threads),
                "map_average": metrics.mean_average_precision(
                    *arguments, ties="average", num_threads=args.threads
                ),
                "precision_at_n": metrics.precision_at_n(*arguments, ns, num_threads=args.threads),
                "pr": metrics.precision_recall_curve(*arguments, num_threads=args.threads),
                "radius": metrics.precision_within_radius(*arguments, num_threads=args.threads),
            }

        split, split_seconds, split_extra = measure(separate)
        report, report_seconds, report_extra = measure(
            metrics.retrieval_report,
            *arguments,
            top_ks=(None,),
            precision_ns=ns,
            num_threads=args.threads,
        )
    identical = (
        report["map_at_k"]["All"] == split["map"]
        and report["map_ties_average_at_k"]["All"] == split["map_average"]
        and report["precision_at_n"]["precision"] == split["precision_at_n"].tolist()
        and report["pr_curve"]["precision"] == split["pr"]["precision"].tolist()
        and report["pr_curve"]["recall"] == split["pr"]["recall"].tolist()
        and report["precision_within_radius"]["precision"] == split["radius"]
    )
    return [
        ["5 separate calls", f"{split_seconds:.2f}", f"{split_extra:.0f}", ""],
        [
            "retrieval_report (one pass)",
            f"{report_seconds:.2f}",
            f"{report_extra:.0f}",
            f"{split_seconds / report_seconds:.1f}x, identical values: {identical}",
        ],
    ]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument(
        "--naive_queries", type=int, default=300, help="queries timed for the naive formula"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="num_threads for tf_bihalf (default: CPUs)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of every mAP variant, interleaved; the table gives the best time",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scale = 20 if args.quick else 1
    num_queries, num_database, bits, classes = 10_000 // scale, 60_000 // scale, 64, 10
    naive_queries = min(args.naive_queries, num_queries) // (5 if args.quick else 1)

    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    # Compile (or load from numba's cache) before timing.
    with implementation("numba"):
        metrics.retrieval_report([[1, 1]], [[1, -1]], [0], [0], top_ks=(None,))
        metrics.retrieval_report([[1, 1]], [[1, -1]], [[1]], [[1]], top_ks=(None,))
    query_labels = rng.integers(0, classes, num_queries)
    database_labels = rng.integers(0, classes, num_database)
    eye = np.eye(classes, dtype=np.uint8)
    prototypes = rng.standard_normal((classes, bits)).astype(np.float32)
    codes = (
        clustered_codes(rng, eye[query_labels], prototypes, flip=0.3),
        clustered_codes(rng, eye[database_labels], prototypes, flip=0.3),
    )
    labels = (query_labels, database_labels)
    onehot = (eye[query_labels], eye[database_labels])
    header = [
        "metric",
        "variant",
        "value",
        "time (s)",
        "peak extra (MB)",
        "vs naive",
        "time / average's",
    ]
    rows, differences = [], {}
    for top_k in (None, 1000 // scale):
        new_rows, new_differences = compare_map(args, codes, labels, onehot, top_k, naive_queries)
        rows += new_rows
        differences.update({f"{key}, k={top_k}": value for key, value in new_differences.items()})
    print(
        f"\nSingle-label: {num_queries} queries x {num_database} database, {bits} bits, "
        f"{classes} classes"
    )
    print(table(rows, header))
    print("max |difference| to stable (numba): " + str(max(differences.values())))
    for key, value in differences.items():
        print(f"  {key}: {value:.1e}")

    print(
        f"\nOne pass vs separate calls (single-label, mAP@All, P@N for N in {ns_text(num_database)})"
    )
    print(
        table(
            compare_report(args, codes, labels),
            ["evaluation", "time (s)", "peak extra (MB)", "speed-up"],
        )
    )

    # Multi-label: NUS-WIDE-like sizes.
    num_queries, num_database, classes, top_k = 5_000 // scale, 200_000 // scale, 81, 5000 // scale
    label_rng = np.random.default_rng(1)
    popularity = 1.0 / np.arange(1, classes + 1) ** 0.8
    popularity = 2.5 * popularity / popularity.sum()

    def multi_hot(count):
        labels = (label_rng.random((count, classes)) < popularity).astype(np.uint8)
        labels[labels.sum(axis=1) == 0, label_rng.integers(0, classes)] = 1
        return labels

    query_multi, database_multi = multi_hot(num_queries), multi_hot(num_database)
    prototypes = label_rng.standard_normal((classes, bits)).astype(np.float32)
    codes = (
        clustered_codes(label_rng, query_multi, prototypes, flip=0.2),
        clustered_codes(label_rng, database_multi, prototypes, flip=0.2),
    )
    rows, differences = compare_map(
        args,
        codes,
        (query_multi, database_multi),
        (query_multi, database_multi),
        top_k,
        max(1, naive_queries // 3),
    )
    print(
        f"\nMulti-label: {num_queries} queries x {num_database} database x {classes} labels, "
        f"{bits} bits"
    )
    print(table(rows, header))
    for key, value in differences.items():
        print(f"  |difference| {key}: {value:.1e}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def ns_text(num_database: int) -> str:
    return ", ".join(str(n) for n in retrieval.DEFAULT_PRECISION_NS if n <= num_database)


if __name__ == "__main__":
    main()
