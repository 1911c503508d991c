"""Training throughput: 2 workers (``--strategy=multi_worker``) vs 1 process, same global batch.

Usage::

    python benchmarks/multi_worker.py                       # MNIST, 3 epochs, batch 128
    python benchmarks/multi_worker.py --dataset=digits --epochs=6

Every variant runs the real trainer (``python -m trainers.autoencoder``, the config's model:
784-256-32 Bi-half autoencoder, batch 128 global) in fresh processes, through the launcher for
the multi-worker variants (``python -m trainers.launch --workers=2``), with the periodic mAP off.
The loop's own timer gives each epoch's wall time; the first epoch (tracing, XLA compilation,
worker start-up) is excluded. Variants:

- ``1 process, one_device``: the single-process fast path (``model.fit``, XLA, up to 8 steps
  per call);
- ``1 process, mirrored``: the configs' default (``MirroredStrategy`` with one replica on a
  CPU machine, XLA);
- ``2 workers``: two processes on 127.0.0.1, RING collectives, the exact multi-worker step loop
  (no XLA: the collectives do not compile on CPU; one step per call); each process keeps
  TensorFlow's default thread pools;
- ``2 workers, 1 thread each``: the same with ``TF_NUM_INTRAOP_THREADS=1`` and
  ``TF_NUM_INTEROP_THREADS=1`` per worker (one core each on a 2-core machine).

The runs are interleaved ``--repeats`` times so that load from other jobs hits every variant
alike; the table gives each variant's median and best run (samples/s over the timed epochs), the
ratio of the medians to the first variant, and the final loss (equal up to float rounding for
the 1-process and 2-worker variants: same global batches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARIANTS = {
    "1 process, one_device": {"workers": 0, "strategy": "one_device", "threads": 0},
    "1 process, mirrored": {"workers": 0, "strategy": "mirrored", "threads": 0},
    "2 workers": {"workers": 2, "strategy": None, "threads": 0},
    "2 workers, 1 thread each": {"workers": 2, "strategy": None, "threads": 1},
}


def run_variant(settings: dict, arguments: argparse.Namespace, workdir: str) -> dict:
    trainer = [
        sys.executable,
        "-m",
        "trainers.autoencoder",
        f"--dataset={arguments.dataset}",
        f"--epochs={arguments.epochs}",
        f"--batch_size={arguments.batch_size}",
        "--eval_every=0",
        "--noprogress",
        f"--workdir={workdir}",
    ]
    if settings["workers"]:
        command = [
            sys.executable,
            "-m",
            "trainers.launch",
            f"--workers={settings['workers']}",
            "--",
            *trainer,
        ]
    else:
        command = [*trainer, f"--strategy={settings['strategy']}"]
    environment = dict(os.environ)
    if settings["threads"]:
        environment["TF_NUM_INTRAOP_THREADS"] = str(settings["threads"])
        environment["TF_NUM_INTEROP_THREADS"] = str(settings["threads"])
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(workdir, "results.json")) as file:
        results = json.load(file)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist", "digits"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    if arguments.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed).")

    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    losses = {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(arguments.repeats):
            for index, (name, settings) in enumerate(VARIANTS.items()):
                workdir = os.path.join(scratch, f"run-{repeat}-{index}")
                try:
                    training = run_variant(settings, arguments, workdir)["training"]
                except RuntimeError as error:  # reported, and the other variants still run
                    print(f"repeat {repeat + 1}, {name}: FAILED\n{error}", flush=True)
                    continue
                # The loop's steady rate: every epoch after the first, this run.
                rate = training["samples_per_second_after_first_epoch"]
                rates[name].append(rate)
                losses[name] = training["final_loss"]
                print(f"repeat {repeat + 1}, {name}: {rate:.0f} samples/s", flush=True)

    print()
    print(
        f"{arguments.dataset}, batch {arguments.batch_size} (global), {arguments.epochs} epochs "
        f"per run (first untimed), {arguments.repeats} repeats"
    )
    print("| variant | samples/s (median run) | best run | vs 1 process, one_device | final loss |")
    print("|---|---:|---:|---:|---:|")
    baseline = statistics.median(rates[next(iter(VARIANTS))] or [float("nan")])
    for name in VARIANTS:
        if not rates[name]:
            print(f"| {name} | failed | | | |")
            continue
        median = statistics.median(rates[name])
        print(
            f"| {name} | {median:.0f} | {max(rates[name]):.0f} | {median / baseline:.2f}x "
            f"| {losses[name]:.6f} |"
        )


if __name__ == "__main__":
    main()
