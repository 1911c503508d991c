"""Benchmark: HammingIndex backends against raw faiss ``IndexBinaryFlat``, in one run.

Top-k search (1,000 queries, k = 100, 1,000,000 random 64-bit codes by default; half of the
queries are random, half are stored codes with 0-3 bits flipped) with the numpy
brute-force backend, the faiss backend and faiss' ``IndexBinaryFlat`` called directly; then a
radius-2 range search with the numpy, faiss (flat) and faiss_multihash (multi-index hashing)
backends. Every backend's results are checked to be identical. Each timing is the best of
``--repeats`` runs (the machine may be shared), and the median is shown too. Top-k runs with 1
thread and with all CPUs, the same count for faiss (OpenMP) and the numpy backend: on a busy
machine faiss' OpenMP threads lose a lot when cores are oversubscribed, and one thread each is
the comparison that stays fair there.

Run:

    python benchmarks/index.py            # the issue's sizes (about a minute)
    python benchmarks/index.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tf_bihalf.search import HammingIndex, backends  # noqa: E402


def timed(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, min(times), statistics.median(times)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--bits", type=int, default=64)
    args = parser.parse_args()
    if args.quick:
        args.database, args.queries = 50_000, 100
    if not backends.faiss_available():
        raise SystemExit("this benchmark compares against faiss: pip install faiss-cpu")
    import faiss

    rng = np.random.default_rng(0)
    width = (args.bits + 7) // 8
    database = rng.integers(0, 256, size=(args.database, width), dtype=np.uint8)
    # Half random queries, half near-duplicates of stored codes (0-3 flipped bits), so that the
    # radius search finds something.
    queries = rng.integers(0, 256, size=(args.queries, width), dtype=np.uint8)
    near = queries[: args.queries // 2]
    near[:] = database[rng.integers(0, args.database, near.shape[0])]
    for _ in range(3):
        flips = rng.integers(0, args.bits, near.shape[0])
        keep = rng.random(near.shape[0]) < 0.7
        near[np.arange(near.shape[0])[keep], flips[keep] // 8] ^= (128 >> (flips[keep] % 8)).astype(
            np.uint8
        )
    print(
        f"cpus: {os.cpu_count()}, faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads, "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )

    raw = faiss.IndexBinaryFlat(8 * width)
    raw.add(database)
    indexes = {}
    for name in ("numpy", "faiss", "faiss_multihash"):
        index = HammingIndex(args.bits, backend=name)
        start = time.perf_counter()
        index.add(database)
        indexes[name] = (index, time.perf_counter() - start)

    rows, identical, raw_same = [], True, True
    thread_counts = sorted({1, os.cpu_count() or 1})
    for threads in thread_counts:
        # The same thread count for both: faiss' OpenMP pool and the numpy backend's workers.
        faiss.omp_set_num_threads(threads)
        indexes["numpy"][0]._backend.num_threads = threads
        (raw_distances, raw_ids), raw_best, raw_median = timed(
            lambda: raw.search(queries, args.k), args.repeats
        )
        results = {}
        for name in ("faiss", "numpy"):
            index, add_seconds = indexes[name]
            results[name], best, median = timed(
                lambda index=index: index.search(queries, args.k), args.repeats
            )
            rows.append(
                [
                    str(threads),
                    f"HammingIndex backend={name}",
                    f"{add_seconds:.2f}",
                    f"{best:.3f}",
                    f"{median:.3f}",
                    f"{best / raw_best:.2f}x",
                ]
            )
        rows.append(
            [
                str(threads),
                "faiss IndexBinaryFlat (direct)",
                "",
                f"{raw_best:.3f}",
                f"{raw_median:.3f}",
                "1.00x",
            ]
        )
        identical &= all(
            np.array_equal(a, b) for a, b in zip(results["numpy"], results["faiss"], strict=True)
        )
        raw_same &= np.array_equal(raw_ids, results["faiss"][1]) and np.array_equal(
            raw_distances, results["faiss"][0]
        )
    print(f"\nTop-{args.k}: {args.queries} queries over {args.database} codes of {args.bits} bits")
    print("| threads | variant | add (s) | search best (s) | search median (s) | vs faiss direct |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"numpy and faiss backends identical (distances and ids): {identical}; "
        f"faiss backend == direct faiss: {raw_same}"
    )

    range_rows, range_results = [], {}
    for name in ("faiss_multihash", "faiss", "numpy"):
        index = indexes[name][0]
        range_results[name], best, median = timed(
            lambda index=index: index.range_search(queries, 2), args.repeats
        )
        range_rows.append(
            [f"backend={name}", f"{best:.3f}", f"{median:.3f}", str(len(range_results[name][2]))]
        )
    same_range = all(
        all(
            np.array_equal(a, b)
            for a, b in zip(range_results[name], range_results["numpy"], strict=True)
        )
        for name in range_results
    )
    print(f"\nRange search, radius 2 (inclusive): {args.queries} queries")
    print("| variant | best (s) | median (s) | results |")
    print("|---|---|---|---|")
    for row in range_rows:
        print("| " + " | ".join(row) + " |")
    print(f"all backends identical: {same_range}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
