"""Training throughput of the image hash head on cached features (samples/s), by compile option.

Usage::

    python benchmarks/image_head_throughput.py [--dataset=fashion_mnist_rgb --weights=imagenet]
        [--variants spe1,spe12,spe12+xla --repeats 2 --epochs 20]

Every variant is ``python -m trainers.image`` with the same flags (the dataset's config, the
cached features of its frozen backbone, the same seed), changed only in the two compile options
of ``configs/_common.py``: ``speN`` (at most N steps per ``fit`` call, the largest divisor of the
epoch's steps) and ``+xla`` (``jit_compile="auto"``: XLA on one replica; otherwise off). Each
run is a fresh process; the variants are interleaved ``--repeats`` times so that load from
other jobs hits them alike. The table gives samples/s after the first epoch (best and median
over the repeats), the ratio of the medians to the first variant, and each variant's mAP@All and
final loss, which show whether the option changes the numbers (``speN`` runs the same steps in
one call: identical; XLA rounds differently). The features must be cached already (a first run
of the trainer extracts them); nothing here is timed inside a test.
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

WORKER = r"""
import json, sys
from absl import flags
from trainers import common, image

image.define_flags()
flags.FLAGS(sys.argv[:1] + sys.argv[3:])
config = common.resolve_for(image)
config["steps_per_execution"] = int(sys.argv[1])
config["jit_compile"] = "auto" if sys.argv[2] == "xla" else False
results = common.train(config, flags.FLAGS)
training = results["training"]
print(json.dumps({
    "rate": training["samples_per_second_after_first_epoch"],
    "map": results["metrics"]["map"],
    "loss": training["final_loss"],
    "steps_per_epoch": training["steps_per_epoch"],
}))
"""


def parse_variant(name: str) -> tuple[int, str]:
    head, _, tail = name.partition("+")
    if not head.startswith("spe") or not head[3:].isdigit() or tail not in ("", "xla"):
        raise SystemExit(f"unknown variant {name!r}: speN or speN+xla, e.g. spe12+xla")
    return int(head[3:]), tail or "off"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist_rgb")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--variants", default="spe1,spe12,spe12+xla")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    variants = args.variants.split(",")
    options = {name: parse_variant(name) for name in variants}
    runs = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for name in variants:
                spe, jit = options[name]
                command = [
                    sys.executable, "-c", WORKER, str(spe), jit,
                    f"--dataset={args.dataset}", f"--weights={args.weights}",
                    f"--bits={args.bits}", f"--epochs={args.epochs}", "--progress=false",
                    f"--workdir={os.path.join(scratch, f'{name}-{repeat}')}",
                ]  # fmt: skip
                result = subprocess.run(
                    command, cwd=ROOT, capture_output=True, text=True, check=False,
                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                )  # fmt: skip
                lines = result.stdout.strip().splitlines()
                if result.returncode != 0 or not lines:
                    raise SystemExit(f"{name} failed:\n{result.stderr[-2000:]}")
                runs[name].append(json.loads(lines[-1]))
    base = statistics.median(run["rate"] for run in runs[variants[0]])
    print(
        f"\nImage head on cached features: {args.dataset}, {args.bits} bits, {args.epochs} "
        f"epochs, {runs[variants[0]][0]['steps_per_epoch']} steps per epoch, "
        f"{args.repeats} interleaved repeats\n"
    )
    print(
        "| variant | best samples/s | median samples/s | ratio (medians) | mAP@All | final loss |"
    )
    print("|---|---|---|---|---|---|")
    for name in variants:
        rates = [run["rate"] for run in runs[name]]
        median = statistics.median(rates)
        maps = sorted({f"{run['map']:.10f}" for run in runs[name]})
        losses = sorted({f"{run['loss']:.8f}" for run in runs[name]})
        print(
            f"| {name} | {max(rates):.0f} | {median:.0f} | {median / base:.2f} | "
            f"{' / '.join(maps)} | {' / '.join(losses)} |"
        )


if __name__ == "__main__":
    main()
