"""Whole reference-style trainings of the MNIST Bi-half autoencoder, scored both ways.

Usage::

    python benchmarks/reference_runs.py --torch_python /work/torchenv/bin/python --bits 32 \\
        --seeds 0,1,2,3,4 --project_root /root/tf_bihalf_sweeps/autoencoder
    python benchmarks/reference_runs.py --torch_python ... --bits 16 --seeds 0 --epochs 3

``benchmarks/reference_parity.py`` shows that one training step of the project equals the
reference's to float64 precision from identical weights and batches. This script asks the
question that remains when the mean mAP@All of whole runs differs: is the difference in the
runs or in how they are scored? It trains the reference autoencoder end to end in PyTorch
(``--torch_python``, its own environment; torch is never a dependency of the project) the way
the reference script runs it, and scores every run, its own and the project's, with both
evaluations:

- **the project's**: ``tf_bihalf.metrics.mean_average_precision`` over the 10k test queries and
  the 60k training images in their file order, ``ties="stable"`` (the trainer's reported
  number) and ``ties="average"`` (the exact expectation over random tie orders);
- **the reference's**, written here from its definition: the database in the order of a
  shuffled ``DataLoader`` pass, Hamming distances as ``(K - q . d) / 2`` in float,
  ``np.argsort`` (numpy's default, unstable quicksort), AP = mean over the relevant items of
  (relevant so far / rank), ``sign(H)`` codes with ``sign(0) = 0``.

What the PyTorch side reproduces of the reference script (docs/paper.md, "Settings"): the
784-256-K encoder, the Bi-half layer (the top ``floor(M/2)`` of each column of the batch -> +1;
backward ``dL/dU = dL/dB + (U - B) / (M K)``), the K-256-784 sigmoid decoder fed the binary
codes, ``nn.BCELoss``, Adam lr 1e-3 with ``weight_decay=1e-5`` on every parameter, the rate
multiplied by 0.1 at the start of epochs 60 and 80, batch 128 with the last batch of 96 kept,
PyTorch's default ``nn.Linear`` init, pixels 0/1 (the project's ``pixels="rounded"``, equal to the
reference's per-image min-max then round on MNIST), and its random-number stream
(``--rng reference``): the encoder drawn from the run's seed, then ``torch.manual_seed(1)``
before the decoder (the reference sets it in the model's constructor), so the decoder's init and
every later shuffle come from seed 1 in every run; each epoch draws the training order and then
the two evaluation passes' orders (the reference scores the model after every epoch, and its
loaders shuffle), each drawn as a ``DataLoader(shuffle=True)`` pass draws them (the worker
checks this against the installed torch's ``DataLoader`` before it trains). ``--rng
independent`` leaves out the ``manual_seed(1)``: decoder and shuffles then follow the run's
seed. ``--rng project`` starts PyTorch from the project trainer's initial
weights for the seed and feeds it the trainer's batch order (what ``trainers.autoencoder
--seed=S`` draws), so that its run and the project's differ only in the arithmetic of 100 epochs.
``--rng project_init`` takes only the trainer's initial weights (the batch order is
``independent``'s) and ``--rng project_order`` only its batch order (the init is
``independent``'s): one part of the start swapped at a time.

It prints, per run: the final model's mAP@All under each evaluation, the best epoch's by the
project's stable metric (the selection on the query set that the reference's per-epoch printout
invites and the project never makes), and the mean +- sample sd over runs; with
``--project_root``, the same for the project's finished runs of that code length
(``<root>/autoencoder_bihalf_<bits>bits_seed*``, codes from their ``encoder.keras``). Results
and their reading: docs/parity.md, "Whole runs".
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_WORKER = r"""
import json, sys, time
import numpy as np
import torch
from torch import nn
from torch.utils.data import RandomSampler

spec = np.load(sys.argv[1])
config = json.loads(str(spec["config"]))
torch.set_num_threads(config["threads"])
x_train = torch.from_numpy(spec["x_train"]).float()
x_test = torch.from_numpy(spec["x_test"]).float()
bits, batch_size = config["bits"], config["batch_size"]


class BiHalf(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u):
        _, order = u.sort(0, descending=True)
        codes = torch.full_like(u, -1.0)
        codes.scatter_(0, order[: u.shape[0] // 2], 1.0)
        ctx.save_for_backward(u, codes)
        return codes

    @staticmethod
    def backward(ctx, upstream):
        u, codes = ctx.saved_tensors
        return upstream + config["gamma"] * (u - codes) / codes.numel()


torch.manual_seed(config["seed"])
encoder = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, bits))
if config["rng"] == "reference":
    torch.manual_seed(1)
decoder = nn.Sequential(nn.Linear(bits, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid())
if config["rng"] in ("project", "project_init"):  # the project trainer's initial weights
    with torch.no_grad():
        for layer, name in zip(
            (encoder[0], encoder[2], decoder[0], decoder[2]),
            ("encoder_hidden", "encoder_projection", "decoder_hidden", "decoder_output"),
        ):
            layer.weight.copy_(torch.from_numpy(spec[f"init/{name}/kernel"].T.copy()))
            layer.bias.copy_(torch.from_numpy(spec[f"init/{name}/bias"]))
parameters = list(encoder.parameters()) + list(decoder.parameters())
optimizer = torch.optim.Adam(parameters, lr=config["learning_rate"], weight_decay=1e-5)
criterion = nn.BCELoss()


def shuffled(n):
    # What a DataLoader(shuffle=True, num_workers=0) pass draws from the global generator: the
    # iterator's base seed when it is created, then its RandomSampler's seed at the first batch.
    torch.empty((), dtype=torch.int64).random_()
    return torch.tensor(list(iter(RandomSampler(range(n)))))


# That is what this torch's DataLoader draws (checked here, the global generator left as it was).
state = torch.get_rng_state()
loader = torch.utils.data.DataLoader(torch.arange(300), batch_size=128, shuffle=True)
expected = [torch.cat(list(loader)) for _ in range(2)]
torch.set_rng_state(state)
if not all(torch.equal(shuffled(300), order) for order in expected):
    raise SystemExit(f"torch {torch.__version__}: DataLoader no longer draws as shuffled() does")
torch.set_rng_state(state)


def features(x):
    with torch.no_grad():
        return torch.cat([encoder(x[i : i + 10000]) for i in range(0, len(x), 10000)])


packed, zeros, losses, orders = [], [], [], {}
started = time.perf_counter()
for epoch in range(config["epochs"]):
    if epoch in config["milestones"]:
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * config["factor"]
    order = shuffled(len(x_train))
    if config["rng"] in ("project", "project_order"):  # the trainer's order (the draw kept)
        order = torch.from_numpy(spec["order"][epoch * len(x_train) : (epoch + 1) * len(x_train)])
    total = 0.0
    for start in range(0, len(order), batch_size):
        x = x_train[order[start : start + batch_size]]
        output = decoder(BiHalf.apply(encoder(x)))
        loss = criterion(output, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
    losses.append(total / len(order))
    database_order, query_order = shuffled(len(x_train)), shuffled(len(x_test))
    last = epoch == config["epochs"] - 1
    if last or (epoch + 1) % config["eval_every"] == 0:
        h_database, h_query = features(x_train), features(x_test)
        zeros.append(int((h_database == 0).sum() + (h_query == 0).sum()))
        codes = torch.cat([h_database, h_query]).numpy() >= 0
        packed.append((epoch + 1, np.packbits(codes, axis=1)))
    if last:
        orders = {
            "database_order": database_order.numpy(), "query_order": query_order.numpy(),
            "h_database": h_database.numpy(), "h_query": h_query.numpy(),
        }
np.savez(
    sys.argv[2], epochs=np.array([e for e, _ in packed]), packed=np.stack([p for _, p in packed]),
    zeros=np.array(zeros), losses=np.array(losses), seconds=time.perf_counter() - started,
    version=np.array(torch.__version__), **orders,
)
"""


def project_start(bits: int, seed: int, num_examples: int, epochs: int) -> dict:
    """The project trainer's start for ``seed``: its initial weights (``nn.Linear``-style
    uniform, drawn after ``keras.utils.set_random_seed(seed)`` as the trainer draws them) and its
    batch order (``epoch_batches``: a permutation per ``(seed, epoch)``), for ``--rng project``."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reference_parity import export_batches, initial_weights

    order, _, _ = export_batches(num_examples, 128, seed, epochs)
    return {"order": order, **initial_weights(bits, 256, 784, seed)}


def reference_map(
    query_codes: np.ndarray,
    database_codes: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
) -> float:
    """mAP@All as the reference scores it, over codes already in the order it sees them:
    float Hamming distances, numpy's default (unstable) argsort, AP = mean(k / rank_k) over
    the relevant items, queries without relevant items counted as 0."""
    bits = query_codes.shape[1]
    database = database_codes.astype(np.float32)
    total = 0.0
    for start in range(0, len(query_codes), 500):
        queries = query_codes[start : start + 500].astype(np.float32)
        distances = 0.5 * (bits - queries @ database.T)
        for row, query_label in enumerate(query_labels[start : start + 500]):
            relevant = (database_labels == query_label)[np.argsort(distances[row])]
            ranks = np.flatnonzero(relevant) + 1.0
            if len(ranks):
                total += float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return total / len(query_codes)


def project_maps(query_codes, database_codes, query_labels, database_labels) -> dict:
    from tf_bihalf.metrics import mean_average_precision

    return {
        ties: float(
            mean_average_precision(
                query_codes, database_codes, query_labels, database_labels, ties=ties
            )
        )
        for ties in ("stable", "average")
    }


def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    return np.where(np.unpackbits(packed, axis=1, count=bits), 1, -1).astype(np.int8)


def score_torch_run(result: dict, bits: int, labels: dict) -> dict:
    y_train, y_test = labels["train"], labels["test"]
    num_train = len(y_train)
    curve = []
    for epoch, packed in zip(result["epochs"], result["packed"], strict=True):
        codes = unpack(packed, bits)
        stable = project_maps(codes[num_train:], codes[:num_train], y_test, y_train)["stable"]
        curve.append((int(epoch), stable))
    codes = unpack(result["packed"][-1], bits)
    final = project_maps(codes[num_train:], codes[:num_train], y_test, y_train)
    # The reference's own codes: sign(H), 0 where H == 0, in its loaders' shuffled order.
    database_order, query_order = result["database_order"], result["query_order"]
    final["reference"] = reference_map(
        np.sign(result["h_query"][query_order]),
        np.sign(result["h_database"][database_order]),
        y_test[query_order],
        y_train[database_order],
    )
    best_epoch, best = max(curve, key=lambda item: item[1])
    return {
        **final,
        "best_epoch": best_epoch,
        "best_stable": best,
        "zeros": int(result["zeros"].sum()),
        "seconds": float(result["seconds"]),
        "final_loss": float(result["losses"][-1]),
        "losses": [float(loss) for loss in result["losses"]],
        "map_curve": curve,
    }


def score_project_run(directory: str, x: dict, labels: dict, seed: int) -> dict:
    from export.run_directory import load_run

    model, _ = load_run(directory)  # raw pixels -> ±1 codes, as the trainer exported it
    database_codes = np.asarray(model.predict(x["train"], batch_size=10000, verbose=0), np.int8)
    query_codes = np.asarray(model.predict(x["test"], batch_size=10000, verbose=0), np.int8)
    scores = project_maps(query_codes, database_codes, labels["test"], labels["train"])
    # The reference's evaluation over a shuffled database order (seeded for the record).
    rng = np.random.default_rng(seed)
    database_order = rng.permutation(len(database_codes))
    query_order = rng.permutation(len(query_codes))
    scores["reference"] = reference_map(
        query_codes[query_order],
        database_codes[database_order],
        labels["test"][query_order],
        labels["train"][database_order],
    )
    with open(os.path.join(directory, "results.json")) as handle:
        scores["reported"] = json.load(handle)["metrics"]["map"]
    return scores


def summary_line(name: str, rows: list[dict], key: str) -> str:
    values = np.array([row[key] for row in rows], np.float64)
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{name} {key}: {values.mean():.4f} ± {sd:.4f} (n = {len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch_python", required=True, help="a Python with torch installed")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--milestones", default="60,80")
    parser.add_argument(
        "--rng",
        choices=("reference", "independent", "project", "project_init", "project_order"),
        default="reference",
    )
    parser.add_argument("--eval_every", type=int, default=1, help="epochs between scorings")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--project_root", default=None, help="a sweep root with project runs")
    parser.add_argument("--json", default=None, help="also write every row here")
    args = parser.parse_args()

    sys.path.insert(0, ROOT)
    from tf_bihalf.data import mnist

    (x_train, y_train), (x_test, y_test) = mnist.load("mnist", pixels="rounded")
    x = {"train": x_train.astype(np.float32), "test": x_test.astype(np.float32)}
    labels = {"train": np.asarray(y_train), "test": np.asarray(y_test)}
    seeds = [int(s) for s in args.seeds.split(",") if s]
    torch_rows, project_rows = [], []
    header = (
        "| run | mAP@All stable | tie-averaged | reference eval | best epoch (stable) "
        "| zeros in H | train s |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as directory:
        script = os.path.join(directory, "worker.py")
        with open(script, "w") as handle:
            handle.write(TORCH_WORKER)
        for seed in seeds:
            config = {
                "bits": args.bits,
                "seed": seed,
                "epochs": args.epochs,
                "milestones": [int(m) for m in args.milestones.split(",") if m],
                "factor": 0.1,
                "learning_rate": 1e-3,
                "gamma": 1.0,
                "batch_size": 128,
                "rng": args.rng,
                "eval_every": args.eval_every,
                "threads": args.threads,
            }
            spec_path = os.path.join(directory, "spec.npz")
            extra = {}
            if args.rng.startswith("project"):
                extra = project_start(args.bits, seed, len(x_train), args.epochs)
            np.savez(
                spec_path,
                config=np.array(json.dumps(config)),
                x_train=x_train.astype(np.uint8),
                x_test=x_test.astype(np.uint8),
                **extra,
            )
            output = os.path.join(directory, f"run{seed}.npz")
            completed = subprocess.run(
                [args.torch_python, script, spec_path, output],
                capture_output=True,
                text=True,
                check=False,
            )
            if completed.returncode != 0:
                raise RuntimeError(f"The PyTorch worker failed:\n{completed.stderr[-3000:]}")
            row = score_torch_run(dict(np.load(output)), args.bits, labels)
            row.update(source="torch", seed=seed, rng=args.rng, bits=args.bits)
            torch_rows.append(row)
            print(
                f"| torch {args.rng} seed {seed} | {row['stable']:.4f} | {row['average']:.4f} | "
                f"{row['reference']:.4f} | {row['best_stable']:.4f} (epoch {row['best_epoch']}) "
                f"| {row['zeros']} | {row['seconds']:.0f} |",
                flush=True,
            )
    pattern = f"autoencoder_bihalf_{args.bits}bits_seed*"
    finished = (
        sorted(glob.glob(os.path.join(args.project_root, pattern, "results.json")))
        if args.project_root
        else []
    )
    for path in (os.path.dirname(results) for results in finished):
        seed = int(path.rsplit("seed", 1)[1])
        row = score_project_run(path, x, labels, seed)
        row.update(source="project", seed=seed, bits=args.bits)
        project_rows.append(row)
        print(
            f"| project seed {seed} | {row['stable']:.4f} (reported {row['reported']:.4f}) | "
            f"{row['average']:.4f} | {row['reference']:.4f} | - | - | - |",
            flush=True,
        )
    print()
    for key in ("stable", "average", "reference", "best_stable"):
        print(summary_line(f"torch ({args.rng})", torch_rows, key))
    for key in ("stable", "average", "reference"):
        if project_rows:
            print(summary_line("project", project_rows, key))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(torch_rows + project_rows, handle, indent=1)


if __name__ == "__main__":
    main()
