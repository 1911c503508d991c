"""The paper's Fig. 3(d) as a table: mAP@All of bihalf, sign and sign+reg at 16/32/64 bits.

Usage::

    python benchmarks/autoencoder_table.py                          # MNIST, the config's epochs
    python benchmarks/autoencoder_table.py --epochs 10 --datasets mnist,fashion_mnist

Each cell is one run of the training loop (the autoencoder task) with ``configs/autoencoder.py`` (Adam
1e-3, coupled L2 1e-5, batch 128, gamma 1 for Bi-half, 0.2 for sign and sign+reg, alpha 1),
``--epochs`` overriding the epochs with the multistep milestones stretched proportionally, and
evaluated once, on the final model: query = 10k test images, database = 60k training images,
mAP@All with ties broken by database order (the tie-averaged value in parentheses). Runs are
kept under ``--runs`` (default ``runs/autoencoder_table``), so an interrupted table resumes.
Prints a markdown table (mAP, and wall time per run) and the mean bit entropy of the database
codes, which shows how balanced each method's bits are.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--datasets", default="mnist")
    parser.add_argument("--layers", default="bihalf,sign,signreg")
    parser.add_argument("--bits", default="16,32,64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default=os.path.join("runs", "autoencoder_table"))
    args = parser.parse_args()

    sys.path.insert(0, ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    from tf_bihalf.tasks.autoencoder import AutoencoderTask
    from tf_bihalf.training import schedules
    from tf_bihalf.training.loop import train_and_evaluate
    from trainers import common

    logging.set_verbosity(logging.WARNING)
    layers = args.layers.split(",")
    bit_lengths = [int(b) for b in args.bits.split(",")]
    table = {}
    for dataset in args.datasets.split(","):
        for layer in layers:
            for bits in bit_lengths:
                config = common.load_config("autoencoder")
                configured_epochs = config["epochs"]
                config.update(dataset=dataset, hash_layer=layer, bits=bits, seed=args.seed)
                config["evaluation"]["every_n_epochs"] = 0  # no monitoring: only the final model
                if args.epochs:
                    config["epochs"] = args.epochs
                    config["schedule"]["milestones"] = schedules.scale_milestones(
                        config["schedule"]["milestones"], args.epochs, configured_epochs
                    )
                config = common.finalize_config(config)
                path = os.path.join(
                    args.runs, f"{dataset}_{layer}_{bits}bits_{config['epochs']}epochs"
                )
                start = time.perf_counter()
                results = train_and_evaluate(AutoencoderTask(config), config, path, progress=False)
                elapsed = time.perf_counter() - start
                metrics = results["metrics"]
                table[dataset, layer, bits] = (
                    metrics["map"],
                    metrics["map_ties_average"],
                    metrics["bits"]["mean_entropy"],
                    results["training"]["wall_time_s"],
                    elapsed,
                )
                print(
                    f"{dataset} {layer:8s} {bits:3d} bits: mAP@All {metrics['map']:.4f} "
                    f"(tie-avg {metrics['map_ties_average']:.4f}), entropy "
                    f"{metrics['bits']['mean_entropy']:.3f}, {elapsed:.0f} s",
                    flush=True,
                )

    print(
        f"\nepochs: {config['epochs']}, milestones {config['schedule']['milestones']}, "
        f"seed {args.seed}"
    )
    for dataset in args.datasets.split(","):
        print(f"\n{dataset}: mAP@All (ties by database order; tie-averaged in parentheses)\n")
        print("| method | " + " | ".join(f"{b} bits" for b in bit_lengths) + " |")
        print("|---|" + "---:|" * len(bit_lengths))
        for layer in layers:
            cells = [table[dataset, layer, b] for b in bit_lengths]
            print(f"| {layer} | " + " | ".join(f"{c[0]:.4f} ({c[1]:.4f})" for c in cells) + " |")
        print("\nmean bit entropy of the database codes / training wall time per run\n")
        print("| method | " + " | ".join(f"{b} bits" for b in bit_lengths) + " |")
        print("|---|" + "---:|" * len(bit_lengths))
        for layer in layers:
            cells = [table[dataset, layer, b] for b in bit_lengths]
            print(f"| {layer} | " + " | ".join(f"{c[2]:.3f} / {c[3]:.0f} s" for c in cells) + " |")


if __name__ == "__main__":
    main()
