"""Training throughput of the MNIST hashing autoencoder (samples/s), Keras variants vs PyTorch.

Usage::

    python benchmarks/autoencoder_throughput.py                      # Keras variants only
    python benchmarks/autoencoder_throughput.py --torch_python /work/venv/torch/bin/python

Every variant trains the same model (784-256-K Bi-half autoencoder, decoder fed the codes,
BCE, Adam 1e-3 with coupled L2 1e-5, batch 128, the last smaller batch kept) on the real MNIST
training set for ``--epochs`` epochs; the first epoch (tracing, warm-up) is excluded and the
rest timed. Keras variants:

- ``trainer``: exactly what ``trainers.autoencoder`` compiles and runs (the config's strategy,
  ``auto``: TensorFlow's default strategy on this one-device machine; the resumable per-epoch
  pipeline, ``fit``, XLA, 7 steps per call: ``compile_options``);
- ``trainer_topk``: ``trainer`` with the Bi-half threshold found by ``top_k`` as before the
  sort-free search (``BiHalf(selection="top_k")``), to measure what the search gains;
- ``trainer_bitwise``: ``trainer`` with the Bi-half threshold search of before 2026-11-30 (32
  bit-by-bit passes, ``layer_overhead.bitwise_search``), the baseline of the snapped bisection;
- ``trainer_sign``: ``trainer`` with the straight-through ``Sign(gamma=1)`` in place of Bi-half
  (the same gradient term), to measure what Bi-half costs over a sign layer with the trainer's
  own compile options; with it in the same run, the table is followed by each trainer
  variant's epoch time over ``trainer_sign``'s, per repeat (the runs of one repeat follow each
  other, so slow drifts of the machine cancel);
- ``trainer+CHANGE[+CHANGE]``: ``trainer`` with the config changed: ``one_device`` /
  ``mirrored`` / ``auto`` / ``default`` (the strategy), ``speN`` (at most N steps per call,
  e.g. ``spe67``);
- ``plain``: the same model and pipeline with Keras' defaults (no XLA, one step per call);
- ``no_strategy``: ``plain`` without ``MirroredStrategy`` (TensorFlow's default strategy);
- ``@1thread``: the variant with TensorFlow's thread pools limited to one thread.

PyTorch (``--torch_python``, a Python with torch; run in a subprocess so that the two frameworks
never share a process): an equivalent model written here (a Bi-half autograd function with the
paper's forward and backward), trained with ``torch.optim.Adam(weight_decay=1e-5)`` and
``nn.BCELoss``, batches drawn from an in-memory tensor (the fastest loader: no per-sample
Python work), and once more through a ``DataLoader`` over a ``TensorDataset`` (the usual way).
Both frameworks use their default thread pools on the same cores (``@1thread``: one thread).

Every variant runs in its own fresh process; the runs are interleaved ``--repeats`` times so that
load from other jobs on a shared machine hits every variant alike, and the table gives the best
and the median epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_WORKER = r'''
import json, sys, time
import numpy as np
import torch
from torch import nn

x_path, bits, batch_size, epochs, loader, threads = sys.argv[1:7]
bits, batch_size, epochs, threads = int(bits), int(batch_size), int(epochs), int(threads)
if threads:
    torch.set_num_threads(threads)
x = torch.from_numpy(np.load(x_path))
torch.manual_seed(0)


class BiHalfFunction(torch.autograd.Function):
    """Forward: per column, the top floor(M/2) values -> +1, the rest -> -1.
    Backward: dL/dU = dL/dB + gamma / (M*K) * (U - B)."""

    @staticmethod
    def forward(context, u, gamma):
        order = torch.argsort(u, dim=0, descending=True)
        codes = torch.full_like(u, -1.0)
        rows = u.shape[0] // 2
        codes.scatter_(0, order[:rows], 1.0)
        context.save_for_backward(u, codes)
        context.gamma = gamma
        return codes

    @staticmethod
    def backward(context, upstream):
        u, codes = context.saved_tensors
        return upstream + context.gamma / u.numel() * (u - codes), None


class Autoencoder(nn.Module):
    def __init__(self, bits):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, bits))
        self.decoder = nn.Sequential(
            nn.Linear(bits, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid()
        )

    def forward(self, inputs):
        return self.decoder(BiHalfFunction.apply(self.encoder(inputs), 1.0))


model = Autoencoder(bits)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
criterion = nn.BCELoss()


def batches(epoch):
    if loader == "dataloader":
        dataset = torch.utils.data.TensorDataset(x)
        generator = torch.Generator().manual_seed(epoch)
        for (batch,) in torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=generator
        ):
            yield batch
    else:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(x), batch_size):
            yield x[order[start : start + batch_size]]


durations = []
for epoch in range(epochs):
    start = time.perf_counter()
    for batch in batches(epoch):
        optimizer.zero_grad()
        loss = criterion(model(batch), batch)
        loss.backward()
        optimizer.step()
    durations.append(time.perf_counter() - start)
print(json.dumps({"durations": durations, "threads": torch.get_num_threads(),
                  "version": torch.__version__, "loss": float(loss.detach())}))
'''


def keras_variant(name: str, x_train, bits: int, batch_size: int, epochs: int) -> dict:
    """Runs in a fresh process (``--keras_worker``), so thread settings apply."""
    import time

    import keras

    from tf_bihalf.losses.reconstruction import BinaryReconstructionLoss
    from tf_bihalf.models.autoencoder import HashingAutoencoder
    from tf_bihalf.training import pipelines, schedules, strategy
    from tf_bihalf.training.loop import compile_options
    from tf_bihalf.training.optimizers import build_optimizer
    from trainers import common

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.durations = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.durations.append(time.perf_counter() - self._start)

    keras.utils.set_random_seed(0)
    config = common.load_config("autoencoder")
    layer_kwargs = {"gamma": 1.0}
    layer_name = "bihalf"
    if name == "trainer_topk":
        name, layer_kwargs["selection"] = "trainer", "top_k"
    if name == "trainer_sign":
        name, layer_name = "trainer", "sign"
    if name == "trainer_bitwise":  # this worker process only
        from layer_overhead import bitwise_search

        from tf_bihalf.layers import bi_half

        name, bi_half._search_threshold = "trainer", bitwise_search
    if name.startswith("trainer+"):  # e.g. trainer+one_device+spe67
        name, *changes = name.split("+")
        for change in changes:
            if change.startswith("spe"):
                config["steps_per_execution"] = int(change[len("spe") :])
            elif change in ("one_device", "mirrored", "auto", "default"):
                config["strategy"] = change
            else:
                raise ValueError(f"Unknown trainer change {change!r}.")
    strategy_name = {"no_strategy": "default", "plain": "mirrored"}.get(name, config["strategy"])
    distribution = strategy.get_strategy(strategy_name)
    steps = pipelines.steps_per_epoch(len(x_train), batch_size)
    if name == "trainer":
        options = compile_options(config, steps, distribution.num_replicas_in_sync)
    elif name in ("plain", "no_strategy"):
        options = {"steps_per_execution": 1, "jit_compile": False}
    else:
        raise ValueError(f"Unknown variant {name!r}.")
    with distribution.scope():
        model = HashingAutoencoder(bits=bits, hash_layer=layer_name, hash_layer_kwargs=layer_kwargs)
        schedule = schedules.MultiStepDecay(1e-3, steps, milestones=[60, 80])
        model.compile(
            optimizer=build_optimizer("adam", schedule, weight_decay=1e-5),
            loss=BinaryReconstructionLoss(),
            **options,
        )
    data = pipelines.epoch_batches(
        x_train, batch_size, seed=0, epochs=epochs, transform=lambda x: (x, x)
    )
    timer = EpochTimer()
    history = model.fit(
        data, epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[timer]
    )
    return {"durations": timer.durations, "loss": history.history["loss"][-1]}


def run_worker(command: list[str]) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first untimed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant, interleaved")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument(
        "--variants",
        default="trainer,trainer_topk,trainer@1thread,plain,no_strategy",
        help="comma-separated Keras variants (name[@1thread])",
    )
    parser.add_argument("--torch_python", default=None, help="a Python with torch installed")
    parser.add_argument("--keras_worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    if args.keras_worker:  # one Keras variant, in this fresh process
        name, _, threads = args.keras_worker.partition("@")
        if threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        result = keras_variant(name, np.load(args.data), args.bits, args.batch_size, args.epochs)
        print(json.dumps(result))
        return

    from tf_bihalf.data import mnist

    (x_train, _), _ = mnist.load("mnist")
    examples = len(x_train)
    commands = {}
    with tempfile.TemporaryDirectory() as directory:
        data = os.path.join(directory, "x.npy")
        np.save(data, x_train)
        shape = [str(args.bits), str(args.batch_size), str(args.epochs)]
        for variant in [v for v in args.variants.split(",") if v]:
            commands[f"keras {variant}"] = [
                sys.executable, os.path.abspath(__file__), "--keras_worker", variant,
                "--data", data, "--epochs", str(args.epochs), "--bits", str(args.bits),
                "--batch_size", str(args.batch_size),
            ]  # fmt: skip
        if args.torch_python:
            script = os.path.join(directory, "torch_worker.py")
            with open(script, "w") as file:
                file.write(TORCH_WORKER)
            for loader, threads in (("tensor", "0"), ("tensor", "1"), ("dataloader", "0")):
                label = f"torch {loader}" + ("@1thread" if threads == "1" else "")
                commands[label] = [args.torch_python, script, data, *shape, loader, threads]
        epochs = {name: [] for name in commands}
        run_medians = {name: [] for name in commands}  # one per repeat, for paired ratios
        versions = {}
        for repeat in range(args.repeats):
            for name, command in commands.items():  # interleaved: noise hits every variant
                result = run_worker(command)
                epochs[name].extend(result["durations"][1:])
                versions[name] = result.get("version")
                timed = result["durations"][1:]
                run_medians[name].append(float(np.median(timed)))
                print(
                    f"[{repeat + 1}/{args.repeats}] {name:24s} "
                    + " ".join(f"{t:.2f}" for t in timed) + " s/epoch", flush=True,
                )  # fmt: skip

    import tensorflow as tf

    torch_version = next((v for n, v in versions.items() if n.startswith("torch")), None)
    print(
        f"\nMNIST {examples} images, {args.bits} bits, batch {args.batch_size}; "
        f"{args.repeats} runs x {args.epochs - 1} timed epochs per variant (first epoch of each "
        f"run untimed), interleaved; {os.cpu_count()} CPUs; TF {tf.__version__}"
        + (f", torch {torch_version}" if torch_version else "")
    )
    rows = []
    for name, durations in epochs.items():
        best, median = min(durations), float(np.median(durations))
        rows.append((name, examples / best, examples / median, best, median))
    reference = next((row for row in rows if row[0] == "torch tensor"), rows[0])
    print(f"| variant | samples/s (best epoch) | samples/s (median) | s/epoch best / median "
          f"| best vs {reference[0]} |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name, best_speed, median_speed, best, median in rows:
        print(
            f"| {name} | {best_speed:.0f} | {median_speed:.0f} | {best:.2f} / {median:.2f} "
            f"| {best_speed / reference[1]:.2f}x |"
        )
    sign = "keras trainer_sign"
    for name in [
        n for n in epochs if sign in epochs and n.startswith("keras trainer") and n != sign
    ]:
        ratios = [a / b for a, b in zip(run_medians[name], run_medians[sign], strict=True)]
        print(
            f"{name} / {sign} epoch time: ratio of the median epochs "
            f"{np.median(epochs[name]) / np.median(epochs[sign]):.3f}; per repeat (medians) "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + f"; median {np.median(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
