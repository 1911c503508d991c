"""Benchmark: exact chunked mAP (tf_bihalf.metrics) against the common public implementation.

The "naive" formula is the style of the widely copied public evaluation code (``CalcTopMap``):
per query, Hamming distances by a float matrix product ``0.5 * (K - q . B^T)``, relevance by
``labels_q . labels_B^T > 0``, a full ``np.argsort`` of the distances, then AP over the top k.
Its timing uses the default (unstable) argsort as that code does; its value check uses
``kind="stable"``, which is the definition ``ties="stable"`` implements. It runs on a subset of
the queries and its time is extrapolated linearly to all of them.

Memory: the peak resident set size (VmHWM) is reset before each measured call through
``/proc/self/clear_refs`` (Linux), so each row reports its own peak; "extra" subtracts the
resident size before the call (inputs, the TensorFlow import pulled in by ``import tf_bihalf``).

Run (about two minutes on 2 cores):

    python benchmarks/retrieval.py            # the issue's sizes
    python benchmarks/retrieval.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tf_bihalf import metrics  # noqa: E402


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
    """Runs function once: (result, seconds, peak RSS MB, peak extra MB over the start)."""
    _reset_peak()
    before = _rss_mb("VmRSS")
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    peak = _rss_mb("VmHWM")
    return result, seconds, peak, peak - before


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


def distance_kernels(query_codes, database_codes, rows=16):
    """Distance matrix by chunks of ``rows`` queries into preallocated arrays: XOR + popcount on
    uint64 words vs a float32 matmul of ±1 codes (best of 3 each, seconds)."""
    from tf_bihalf.search import hamming

    query_words = hamming.to_words(np.packbits(query_codes > 0, axis=1))
    database_words = np.ascontiguousarray(
        hamming.to_words(np.packbits(database_codes > 0, axis=1)).T
    )
    shape = (rows, database_codes.shape[0])
    out, scratch, counts = (
        np.empty(shape, np.uint8),
        np.empty(shape, np.uint64),
        np.empty(shape, np.uint8),
    )
    query_float, database_float_t = (
        query_codes.astype(np.float32),
        np.ascontiguousarray(database_codes.T, np.float32),
    )
    product = np.empty(shape, np.float32)

    def popcount():
        for start in range(0, query_codes.shape[0], rows):
            words = query_words[start : start + rows]
            size = words.shape[0]
            hamming.hamming_into(words, database_words, out[:size], scratch[:size], counts[:size])

    def matmul():
        for start in range(0, query_codes.shape[0], rows):
            block = query_float[start : start + rows]
            np.matmul(block, database_float_t, out=product[: block.shape[0]])

    timings = []
    for function in (popcount, matmul):
        best = np.inf
        for _ in range(3):
            begin = time.perf_counter()
            function()
            best = min(best, time.perf_counter() - begin)
        timings.append(best)
    return timings


def table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


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
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scale = 20 if args.quick else 1
    num_queries, num_database, bits, classes = 10_000 // scale, 60_000 // scale, 64, 10
    naive_queries = min(args.naive_queries, num_queries) // (5 if args.quick else 1)

    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    query_labels = rng.integers(0, classes, num_queries)
    database_labels = rng.integers(0, classes, num_database)
    eye = np.eye(classes, dtype=np.uint8)
    prototypes = rng.standard_normal((classes, bits)).astype(np.float32)
    query_codes = clustered_codes(rng, eye[query_labels], prototypes, flip=0.3)
    database_codes = clustered_codes(rng, eye[database_labels], prototypes, flip=0.3)

    rows = []
    subset = slice(0, naive_queries)
    for top_k, label in ((None, "All"), (1000 // scale, str(1000 // scale))):
        k = num_database if top_k is None else top_k
        for ties in ("stable", "average"):
            value, seconds, peak, extra = measure(
                metrics.mean_average_precision,
                query_codes,
                database_codes,
                query_labels,
                database_labels,
                top_k=top_k,
                ties=ties,
                num_threads=args.threads,
            )
            row = [
                f"mAP@{label}",
                ties,
                f"{value:.6f}",
                f"{seconds:.2f}",
                f"{peak:.0f}",
                f"{extra:.0f}",
            ]
            if ties == "stable":
                subset_args = (
                    query_codes[subset],
                    database_codes,
                    query_labels[subset],
                    database_labels,
                )
                naive_args = (
                    query_codes[subset],
                    database_codes,
                    eye[query_labels[subset]],
                    eye[database_labels],
                    k,
                )
                ours_subset = metrics.mean_average_precision(*subset_args, top_k=top_k)
                naive_value = naive_map(*naive_args, True)
                # Back-to-back, best of 3 each: the same machine conditions for both.
                naive_seconds, ours_subset_seconds = np.inf, np.inf
                for _ in range(3):
                    naive_seconds = min(naive_seconds, measure(naive_map, *naive_args, False)[1])
                    ours_subset_seconds = min(
                        ours_subset_seconds,
                        measure(
                            metrics.mean_average_precision,
                            *subset_args,
                            top_k=top_k,
                            num_threads=args.threads,
                        )[1],
                    )
                extrapolated = naive_seconds * num_queries / naive_queries
                row += [
                    f"{abs(ours_subset - naive_value):.1e}",
                    f"{extrapolated:.1f}",
                    f"{extrapolated / seconds:.0f}x",
                    f"{naive_seconds / ours_subset_seconds:.0f}x",
                ]
            else:
                row += ["", "", "", ""]
            rows.append(row)
    header = [
        "metric",
        "ties",
        "value",
        "time (s)",
        "peak RSS (MB)",
        "peak extra (MB)",
        f"abs diff vs naive ({naive_queries} q)",
        "naive time, extrapolated (s)",
        "speed-up (full run)",
        f"speed-up on the {naive_queries} q, back-to-back",
    ]
    print(
        f"\nSingle-label: {num_queries} queries x {num_database} database, {bits} bits, {classes} classes"
    )
    print(table(rows, header))

    popcount, matmul = distance_kernels(query_codes[:1000], database_codes)
    print(
        f"\nDistance matrix 1000 x {num_database}, {bits} bits, chunks of 16 queries: "
        f"XOR+popcount {popcount:.3f} s, float32 matmul of ±1 codes {matmul:.3f} s "
        f"(popcount {matmul / popcount:.1f}x faster)"
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
    database_codes = clustered_codes(label_rng, database_multi, prototypes, flip=0.2)
    query_codes = clustered_codes(label_rng, query_multi, prototypes, flip=0.2)
    value, seconds, peak, extra = measure(
        metrics.mean_average_precision,
        query_codes,
        database_codes,
        query_multi,
        database_multi,
        top_k=top_k,
        num_threads=args.threads,
    )
    few = slice(0, max(1, naive_queries // 3))
    ours_few = metrics.mean_average_precision(
        query_codes[few], database_codes, query_multi[few], database_multi, top_k=top_k
    )
    naive_few = naive_map(
        query_codes[few], database_codes, query_multi[few], database_multi, top_k, True
    )
    print(
        f"\nMulti-label: {num_queries} queries x {num_database} database x {classes} labels, {bits} bits"
    )
    print(
        table(
            [
                [
                    f"mAP@{top_k}",
                    "stable",
                    f"{value:.6f}",
                    f"{seconds:.2f}",
                    f"{peak:.0f}",
                    f"{extra:.0f}",
                    f"{abs(ours_few - naive_few):.1e}",
                ]
            ],
            [
                "metric",
                "ties",
                "value",
                "time (s)",
                "peak RSS (MB)",
                "peak extra (MB)",
                f"abs diff vs naive ({few.stop} q)",
            ],
        )
    )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
