"""Exact top-k Hamming search over millions of 64-bit codes: faiss in memory, the sharded
memory-mapped index (faiss and numpy blocks) and Milvus Lite, with build time and memory.

    python benchmarks/scale.py                        # 10M codes, 100 queries, top-100
    python benchmarks/scale.py --count 1000000 --engines faiss,sharded_faiss

Each engine runs in its own child process (so that its peak memory is its own), on the same
deterministic codes (uniformly random bits, generated in chunks of 2^20 codes, so the sharded
and Milvus builds never hold the whole database). The parent prints one table and checks that
every engine returned exactly the same (distance, id) lists as the first engine.

Memory columns (Linux ``/proc``): ``peak RSS`` is the child's high-water mark (VmHWM) minus its
resident size before building (Python, numpy, faiss); for Milvus Lite the engine is a separate
server process, whose own VmHWM is reported in ``server peak``. For the sharded index the
search's peak is measured after resetting the high-water mark (``/proc/self/clear_refs``),
and ``RssAnon`` (the process' own memory, excluding the page cache of the mapped shards) is
reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHUNK = 1 << 20
ENGINES = ("faiss", "sharded_faiss", "sharded_numpy", "milvus_lite")


def chunk_codes(seed: int, chunk: int, rows: int) -> np.ndarray:
    """Chunk ``chunk`` of the database: deterministic random packed 64-bit codes."""
    return np.random.default_rng([seed, chunk]).integers(0, 256, size=(rows, 8), dtype=np.uint8)


def database_chunks(seed: int, count: int):
    for chunk, start in enumerate(range(0, count, CHUNK)):
        yield chunk_codes(seed, chunk, min(CHUNK, count - start))


def query_codes(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng([seed, 1 << 30]).integers(0, 256, size=(count, 8), dtype=np.uint8)


def proc_status(pid: int | str = "self") -> dict:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                values[name] = int(rest.split()[0]) * 1024
    return values


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def child_pids() -> list[int]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as handle:
            pids.extend(int(pid) for pid in handle.read().split())
    return pids


def timed(function, repeats: int = 1):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, min(times)


def run_engine(args) -> dict:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    # Import every engine (TensorFlow comes with tf_bihalf) before the memory baseline.
    import tf_bihalf.search.milvus  # noqa: F401
    import tf_bihalf.search.sharded  # noqa: F401

    if args.child == "milvus_lite":
        import pymilvus  # noqa: F401
    queries = query_codes(args.seed, args.queries)
    baseline = proc_status()["VmRSS"]
    record = {"engine": args.child, "count": args.count}
    workdir = os.path.join(args.workdir, args.child)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)

    if args.child == "faiss":
        from tf_bihalf.search import HammingIndex

        codes = np.concatenate(list(database_chunks(args.seed, args.count)))
        index = HammingIndex(64, backend="faiss")
        _, record["build_s"] = timed(lambda: index.add(codes))
        del codes
        (distances, ids), record["search_s"] = timed(
            lambda: index.search(queries, args.k), args.repeats
        )
        record["peak_rss"] = proc_status()["VmHWM"] - baseline
    elif args.child.startswith("sharded"):
        from tf_bihalf.search.sharded import ShardedHammingIndex

        backend = args.child.split("_")[1]
        path = os.path.join(workdir, "index")

        def build():
            index = ShardedHammingIndex(path, bits=64, shard_size=args.shard_size)
            pending = []
            for codes in database_chunks(args.seed, args.count):
                pending.append(codes)
                if sum(part.shape[0] for part in pending) >= args.shard_size:
                    index.add(np.concatenate(pending))
                    pending = []
            if pending:
                index.add(np.concatenate(pending))
            return index

        built, record["build_s"] = timed(build)
        record["shards"] = built.num_shards
        record["disk_bytes"] = built.nbytes
        record["build_peak_rss"] = proc_status()["VmHWM"] - baseline
        del built
        index, record["open_verify_s"] = timed(
            lambda: ShardedHammingIndex(
                path, memory_budget_bytes=args.memory_budget_mb << 20, backend=backend
            )
        )
        record["peak_reset"] = reset_peak()
        before = proc_status()
        (distances, ids), record["search_s"] = timed(
            lambda: index.search(queries, args.k), args.repeats
        )
        after = proc_status()
        record["peak_rss"] = after["VmHWM"] - (before["VmRSS"] if record["peak_reset"] else 0)
        record["rss_anon"] = after.get("RssAnon", 0) - before.get("RssAnon", 0)
        record["blocks"] = index.last_search_blocks
        record["block_rows"] = index.last_block_rows
    elif args.child == "milvus_lite":
        from tf_bihalf.search.milvus import MilvusHammingIndex

        path = os.path.join(workdir, "codes.db")
        index = MilvusHammingIndex(path, bits=64)

        def build():
            for codes in database_chunks(args.seed, args.count):
                index.add(codes)

        _, record["build_s"] = timed(build)
        record["count_check"] = len(index)
        (distances, ids), record["search_s"] = timed(
            lambda: index.search(queries, args.k), args.repeats
        )
        record["peak_rss"] = proc_status()["VmHWM"] - baseline
        record["server_peak"] = sum(proc_status(pid).get("VmHWM", 0) for pid in child_pids())
        record["disk_bytes"] = sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(workdir)
            for name in names
        )
        index.close()
    else:
        raise ValueError(f"unknown engine {args.child}")
    np.savez(os.path.join(args.workdir, f"{args.child}.npz"), distances=distances, ids=ids)
    record["ms_per_query"] = 1000 * record["search_s"] / args.queries
    record["ns_per_code_query"] = 1e9 * record["search_s"] / args.queries / args.count
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", "--k", type=int, default=100)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument(
        "--milvus_count", type=int, help="a smaller database for Milvus Lite (default: --count)"
    )
    parser.add_argument("--shard_size", type=int, default=1 << 22)
    parser.add_argument("--memory_budget_mb", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads")
    parser.add_argument("--repeats", type=int, default=3, help="searches; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/tf_bihalf_scale")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_engine(args)))
        return 0

    os.makedirs(args.workdir, exist_ok=True)
    records = []
    for engine in args.engines.split(","):
        if engine not in ENGINES:
            parser.error(f"unknown engine {engine!r}; choose from {ENGINES}")
        count = args.milvus_count if engine == "milvus_lite" and args.milvus_count else args.count
        command = [sys.executable, os.path.abspath(__file__), "--child", engine]
        for name in ("queries", "k", "shard_size", "memory_budget_mb", "threads", "repeats"):
            command += [f"--{name}", str(getattr(args, name))]
        command += ["--count", str(count), "--seed", str(args.seed), "--workdir", args.workdir]
        if args.keep:
            command.append("--keep")
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        started = time.perf_counter()
        output = subprocess.run(command, capture_output=True, text=True, env=environment)
        if output.returncode:
            sys.stderr.write(output.stderr[-3000:])
            print(f"{engine}: failed (exit {output.returncode})")
            continue
        record = json.loads(output.stdout.strip().splitlines()[-1])
        record["wall_s"] = time.perf_counter() - started
        records.append(record)
        print(json.dumps(record), flush=True)

    reference = None
    print(
        f"\nexact top-{args.k}, {args.queries} queries, 64-bit codes, faiss threads {args.threads}"
    )
    print(
        "| engine | codes | build (s) | search best (s) | ms/query | ns per code·query | "
        "peak RSS (MiB) | server peak (MiB) | disk (MiB) | same results |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for record in records:
        result = np.load(os.path.join(args.workdir, f"{record['engine']}.npz"))
        same = "reference"
        if reference is None:
            reference = (record["count"], result)
        elif reference[0] != record["count"]:
            same = "n/a (other size)"
        else:
            same = str(
                np.array_equal(result["ids"], reference[1]["ids"])
                and np.array_equal(result["distances"], reference[1]["distances"])
            )
        mib = 1 << 20
        print(
            f"| {record['engine']} | {record['count']:,} | {record['build_s']:.2f} | "
            f"{record['search_s']:.3f} | {record['ms_per_query']:.2f} | "
            f"{record['ns_per_code_query']:.3f} | {record['peak_rss'] / mib:.0f} | "
            f"{record.get('server_peak', 0) / mib:.0f} | {record.get('disk_bytes', 0) / mib:.0f} | "
            f"{same} |"
        )
    for record in records:
        if "blocks" in record:
            print(
                f"{record['engine']}: {record['shards']} shards, {record['blocks']} blocks of "
                f"<= {record['block_rows']:,} rows, open+verify {record['open_verify_s']:.1f} s, "
                f"search RssAnon +{record['rss_anon'] / (1 << 20):.0f} MiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
