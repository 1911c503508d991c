"""Step-for-step parity of the MNIST autoencoder training with an independent PyTorch version.

Usage::

    python benchmarks/reference_parity.py --torch_python /work/torchenv/bin/python
    python benchmarks/reference_parity.py --torch_python ... --layers bihalf --modes f64,f32_xla
    python benchmarks/reference_parity.py --torch_python ... --epochs 1 --milestones 60,80

Both sides train the paper's MNIST autoencoder (784-256(ReLU)-K encoder, hash layer, decoder
K-256(ReLU)-784 sigmoid fed the binary codes, mean BCE, Adam lr 1e-3 with coupled L2 1e-5 on
every parameter, batch 128 with each epoch's smaller last batch kept, lr x ``--factor`` at the
``--milestones`` epochs) from IDENTICAL initial weights and on IDENTICAL batches:

- the initial weights are drawn once (the project's ``nn.Linear``-style init, seed ``--seed``)
  and handed to both sides through an ``.npz`` file;
- the batches are the project's ``tf_bihalf.training.pipelines.epoch_batches`` stream run over
  the example indices, exported as index lists, so PyTorch sees exactly the trainer's order.

The PyTorch side (``TORCH_WORKER`` below, run with ``--torch_python`` in its own process: torch
is never a dependency of the project) is written from the paper and the reference's published
settings, not from the project: a Bi-half ``autograd.Function`` (per bit, the top ``floor(M/2)``
of the batch -> +1, the rest -1, ties by row order; backward
``dL/dU = dL/dB + gamma/(M*K) (U - B)``), a straight-through sign function with the same gamma
term, ``nn.BCELoss()`` on the sigmoid's probabilities, ``torch.optim.Adam(weight_decay=...)``
and ``MultiStepLR`` stepped after every epoch.

The Keras side uses the project's trainer components (``HashingAutoencoder``,
``BinaryReconstructionLoss``, ``build_optimizer``, ``build_learning_rate``), in these modes:

- ``f64``: ``keras.config.set_floatx("float64")``, one step per ``train_on_batch``, no XLA;
  (the project's hash layers keep float64 features in float64 and its schedules return a
  float64 rate, so nothing in this run is rounded to float32; docs/parity.md keeps the history
  of the two float32 islands that once were there);
- ``f32``: float32, one step per call, no XLA; ``f32_xla``: the same with XLA;
- ``f32_trainer``: what ``trainers.autoencoder`` runs (the config's strategy, ``auto``;
  ``fit`` over ``epoch_batches``, XLA, 7 steps per call); losses per epoch only, weights at
  epoch ends. (docs/parity.md's figures were taken under the former ``MirroredStrategy``
  default, which computes the same numbers on one device);
- ``torch_f32`` / ``torch_f64``: the PyTorch side alone, per epoch: rate, loss and the pixels
  where ``BCELoss``'s gradient departs from ``sigmoid(z) - x`` (``p (1 - p) < 1e-12``).

It prints, per layer and mode, the per-step table for the first ``--first_steps`` steps (learning
rate, loss of each side, |loss difference|, max |weight difference|, batch rows whose codes
differ), a per-epoch table, the learning rate's change steps on both sides, and a summary with
the first step beyond the tolerances (float64: 1e-9 in loss, 1e-7 in weights; float32: 1e-5 and
1e-4) and the first step at which the codes differ, with how close the features were to the code
boundary there (gap at the bi-half cut, or smallest ``|U|`` for sign, over the column's largest
``|U|``). A table compares PyTorch's default ``nn.Linear`` init with the project's. Results and
their reading: docs/parity.md. ``--bce`` selects the project loss's
formulation (``logits``: Keras' default from the sigmoid's logits; ``probabilities``: PyTorch's
``BCELoss`` semantics, see ``tf_bihalf.losses.reconstruction``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER_NAMES = ("encoder_hidden", "encoder_projection", "decoder_hidden", "decoder_output")
GAMMAS = {"bihalf": 1.0, "sign": 0.2}  # the reference autoencoder's numerators
MODES = ("f64", "f32", "f32_xla", "f32_trainer", "torch_f32", "torch_f64")
TOLERANCES = {"float64": (1e-9, 1e-7), "float32": (1e-5, 1e-4)}

TORCH_WORKER = r'''
import json, sys
import numpy as np
import torch
from torch import nn

spec = np.load(sys.argv[1])
config = json.loads(str(spec["config"]))
dtype = {"float64": torch.float64, "float32": torch.float32}[config["dtype"]]
torch.set_default_dtype(dtype)
if config["threads"]:
    torch.set_num_threads(config["threads"])
pixels = torch.from_numpy(spec["pixels"]).to(dtype)
order = torch.from_numpy(spec["order"])
offsets, lengths = spec["offsets"], spec["lengths"]
snapshots = set(int(s) for s in spec["snapshot_steps"])


class BiHalf(torch.autograd.Function):
    """Per column the top floor(M/2) of the batch -> +1 (equal values: earlier row first)."""

    @staticmethod
    def forward(ctx, u, gamma):
        order = torch.argsort(u, dim=0, descending=True, stable=True)
        codes = torch.full_like(u, -1.0)
        codes.scatter_(0, order[: u.shape[0] // 2], 1.0)
        ctx.save_for_backward(u, codes)
        ctx.gamma = gamma
        return codes

    @staticmethod
    def backward(ctx, upstream):
        u, codes = ctx.saved_tensors
        return upstream + ctx.gamma / u.numel() * (u - codes), None


class Sign(torch.autograd.Function):
    """sign(U) with sign(0) = +1; straight-through backward plus the gamma pull."""

    @staticmethod
    def forward(ctx, u, gamma):
        codes = torch.where(u >= 0, 1.0, -1.0).to(u.dtype)
        ctx.save_for_backward(u, codes)
        ctx.gamma = gamma
        return codes

    @staticmethod
    def backward(ctx, upstream):
        u, codes = ctx.saved_tensors
        return upstream + ctx.gamma / u.numel() * (u - codes), None


hash_function = {"bihalf": BiHalf, "sign": Sign}[config["hash_layer"]]
bits, hidden, input_dim = config["bits"], config["hidden"], config["input_dim"]
layers = nn.ModuleDict({
    "encoder_hidden": nn.Linear(input_dim, hidden),
    "encoder_projection": nn.Linear(hidden, bits),
    "decoder_hidden": nn.Linear(bits, hidden),
    "decoder_output": nn.Linear(hidden, input_dim),
})
# The distribution of PyTorch's own default init, for the comparison with the project's.
init_stats = []
for layer in layers.values():
    fan_in = layer.weight.shape[1]
    for tensor in (layer.weight, layer.bias):
        values = tensor.detach().double()
        init_stats.append([
            float(values.abs().max() * fan_in ** 0.5), float(values.std() * (3 * fan_in) ** 0.5)
        ])
with torch.no_grad():
    for name, layer in layers.items():
        layer.weight.copy_(torch.from_numpy(spec[f"init/{name}/kernel"].T.copy()))
        layer.bias.copy_(torch.from_numpy(spec[f"init/{name}/bias"]))


def forward(x):
    u = layers["encoder_projection"](torch.relu(layers["encoder_hidden"](x)))
    codes = hash_function.apply(u, config["gamma"])
    h = torch.relu(layers["decoder_hidden"](codes))
    return codes, torch.sigmoid(layers["decoder_output"](h))


optimizer = torch.optim.Adam(
    layers.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"]
)
scheduler = torch.optim.lr_scheduler.MultiStepLR(
    optimizer, milestones=config["milestones"], gamma=config["factor"]
)
criterion = nn.BCELoss()
losses, rates, saturated, wrong_saturated, codes_out, weights = [], [], [], [], [], {}
step = 0
for epoch in range(config["epochs"]):
    for _ in range(config["steps_per_epoch"]):
        x = pixels[order[offsets[step] : offsets[step] + lengths[step]]]
        codes, probabilities = forward(x)
        loss = criterion(probabilities, x)
        with torch.no_grad():
            flat = probabilities * (1 - probabilities)
            stuck = flat < 1e-12  # BCELoss's backward divides by max(p(1-p), 1e-12)
            saturated.append(int(stuck.sum()))
            wrong_saturated.append(int((stuck & ((probabilities - x).abs() > 0.5)).sum()))
        rates.append(optimizer.param_groups[0]["lr"])
        losses.append(loss.item())
        codes_out.append(codes.detach().to(torch.int8).numpy())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step in snapshots:
            for name, layer in layers.items():
                weights[f"step{step}/{name}/kernel"] = layer.weight.detach().numpy().T.copy()
                weights[f"step{step}/{name}/bias"] = layer.bias.detach().numpy().copy()
    scheduler.step()
np.savez(
    sys.argv[2], losses=np.array(losses), rates=np.array(rates),
    saturated=np.array(saturated), wrong_saturated=np.array(wrong_saturated),
    codes=np.concatenate(codes_out), version=np.array(torch.__version__),
    threads=np.array(torch.get_num_threads()), init_stats=np.array(init_stats), **weights,
)
'''


# ----------------------------------------------------------------------------------------------
# The shared inputs: pixels, batch order, initial weights.


def export_batches(num_examples: int, batch_size: int, seed: int, epochs: int):
    """The trainer's batch stream as index lists: ``(order, offsets, lengths)``.

    ``epoch_batches`` is run over the example indices themselves, so the indices are exactly the
    rows the trainer's pipeline gathers.
    """
    from tf_bihalf.training import pipelines

    batches = [
        np.asarray(batch)
        for batch in pipelines.epoch_batches(
            np.arange(num_examples, dtype=np.int64), batch_size, seed=seed, epochs=epochs
        )
    ]
    lengths = np.array([len(batch) for batch in batches], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return np.concatenate(batches), offsets, lengths


def initial_weights(bits: int, hidden: int, input_dim: int, seed: int) -> dict:
    """The project's init (``nn.Linear``-style uniform), drawn once, as float64 arrays."""
    import keras

    from tf_bihalf.models.autoencoder import HashingAutoencoder

    keras.utils.set_random_seed(seed)
    model = HashingAutoencoder(bits=bits, hash_layer="sign", hidden=hidden, input_dim=input_dim)
    arrays = {}
    for name in LAYER_NAMES:
        layer = model.get_layer(name)
        arrays[f"init/{name}/kernel"] = np.asarray(layer.kernel, np.float64)
        arrays[f"init/{name}/bias"] = np.asarray(layer.bias, np.float64)
    return arrays


def snapshot_steps(total: int, steps_per_epoch: int, first: int, every: int) -> np.ndarray:
    """Steps (1-based, after the update) whose weights both sides record."""
    steps = set(range(1, min(first, total) + 1)) | set(range(every, total + 1, every))
    for end in range(steps_per_epoch, total + 1, steps_per_epoch):
        steps |= {end - 1, end, end + 1}
    return np.array(sorted(s for s in steps if 1 <= s <= total), np.int64)


# ----------------------------------------------------------------------------------------------
# The Keras side.


def build_keras(spec: dict, config: dict, jit_compile: bool, steps_per_execution: int = 1):
    from tf_bihalf.losses.reconstruction import BinaryReconstructionLoss
    from tf_bihalf.models.autoencoder import HashingAutoencoder
    from tf_bihalf.training import schedules
    from tf_bihalf.training.optimizers import build_optimizer

    model = HashingAutoencoder(
        bits=config["bits"],
        hash_layer=config["hash_layer"],
        hidden=config["hidden"],
        input_dim=config["input_dim"],
        hash_layer_kwargs={"gamma": config["gamma"]},
    )
    for name in LAYER_NAMES:
        layer = model.get_layer(name)
        layer.kernel.assign(spec[f"init/{name}/kernel"].astype(config["dtype"]))
        layer.bias.assign(spec[f"init/{name}/bias"].astype(config["dtype"]))
    learning_rate, _ = schedules.build_learning_rate(
        {"name": "multistep", "milestones": config["milestones"], "factor": config["factor"]},
        config["learning_rate"],
        config["steps_per_epoch"],
    )
    optimizer = build_optimizer("adam", learning_rate, weight_decay=config["weight_decay"])
    loss = BinaryReconstructionLoss(from_probabilities=config["bce"] == "probabilities")
    model.compile(
        optimizer=optimizer,
        loss=loss,
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model, optimizer


def model_weights(model) -> dict:
    arrays = {}
    for name in LAYER_NAMES:
        layer = model.get_layer(name)
        arrays[f"{name}/kernel"] = np.asarray(layer.kernel)
        arrays[f"{name}/bias"] = np.asarray(layer.bias)
    return arrays


def code_margin(u: np.ndarray, columns: np.ndarray, hash_layer: str) -> float:
    """How close the batch's features ``u`` were to a code change in ``columns``, relative to
    the column's spread: the gap between the two values at the bi-half cut, or the smallest
    ``|U|`` for the sign layer."""
    u = u[:, columns].astype(np.float64)
    scale = np.abs(u).max(axis=0)
    if hash_layer == "bihalf":
        ordered = -np.sort(-u, axis=0)
        half = len(u) // 2
        gaps = ordered[half - 1] - ordered[half]
    else:
        gaps = np.abs(u).min(axis=0)
    return float(np.max(gaps / scale))


def run_keras_steps(spec: dict, config: dict, mode: str, reference_codes=None) -> dict:
    """One ``train_on_batch`` per step; records loss, rate and codes of every step, and at the
    first step whose codes differ from ``reference_codes`` how close the features were to the
    code boundary (``code_margin``)."""
    import keras

    keras.backend.clear_session()
    keras.config.set_floatx(config["dtype"])
    pixels = spec["pixels"].astype(config["dtype"])
    snapshots = set(int(s) for s in spec["snapshot_steps"])
    losses, rates, codes, weights, first_flip = [], [], [], {}, None
    try:
        model, optimizer = build_keras(spec, config, jit_compile=mode == "f32_xla")
        for step in range(len(spec["offsets"])):
            start = spec["offsets"][step]
            x = pixels[spec["order"][start : start + spec["lengths"][step]]]
            rates.append(float(np.asarray(optimizer.learning_rate)))
            codes.append(np.asarray(model.encoder(x, training=True)).astype(np.int8))
            if first_flip is None and reference_codes is not None:
                other = reference_codes[start : start + len(x)] != codes[-1]
                if other.any():
                    u = np.asarray(model.continuous_encoder(x))
                    columns = np.flatnonzero(other.any(axis=0))
                    margin = code_margin(u, columns, config["hash_layer"])
                    first_flip = {"step": step + 1, "bits": len(columns), "margin": margin}
            losses.append(float(model.train_on_batch(x, x)))
            if step + 1 in snapshots:
                weights[step + 1] = model_weights(model)
    finally:
        # Keras caches its global dtype policy from floatx on first use: reset both.
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    return {
        "losses": np.array(losses),
        "rates": np.array(rates),
        "codes": np.concatenate(codes),
        "weights": weights,
        "first_flip": first_flip,
    }


def run_keras_trainer(spec: dict, config: dict) -> dict:
    """The trainer's path: the config's strategy, ``fit`` over ``epoch_batches``, XLA, 7
    steps per call."""
    import keras

    from tf_bihalf.training import pipelines, strategy
    from trainers import common

    keras.backend.clear_session()
    keras.config.set_floatx("float32")
    steps = config["steps_per_epoch"]
    distribution = strategy.get_strategy(common.load_config("autoencoder")["strategy"])
    with distribution.scope():
        model, _ = build_keras(
            spec, config, True, pipelines.steps_per_execution_for(steps, config["trainer_spe"])
        )
    weights = {}

    class EpochWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights[(epoch + 1) * steps] = model_weights(model)

    data = pipelines.epoch_batches(
        spec["pixels"].astype("float32"),
        config["batch_size"],
        seed=config["seed"],
        epochs=config["epochs"],
        transform=lambda x: (x, x),
    )
    history = model.fit(
        data,
        epochs=config["epochs"],
        steps_per_epoch=steps,
        verbose=0,
        shuffle=False,
        callbacks=[EpochWeights()],
    )
    return {"epoch_losses": np.array(history.history["loss"]), "weights": weights}


# ----------------------------------------------------------------------------------------------
# Comparison and report.


def max_weight_difference(left: dict, right: dict) -> float:
    return max(float(np.max(np.abs(left[key] - right[key]))) for key in left)


def torch_weights(torch_result, step: int) -> dict:
    return {
        f"{name}/{kind}": torch_result[f"step{step}/{name}/{kind}"]
        for name in LAYER_NAMES
        for kind in ("kernel", "bias")
    }


def change_steps(rates: np.ndarray) -> list[int]:
    """0-based indices of the updates whose rate differs from the previous update's."""
    return [int(i) for i in np.flatnonzero(np.abs(np.diff(rates)) > 1e-3 * np.abs(rates[1:])) + 1]


def compare(torch_result, keras_result, spec, config, first_steps: int) -> dict:
    """Per-step and per-epoch tables plus the summary row of one mode."""
    loss_tolerance, weight_tolerance = TOLERANCES[config["dtype"]]
    steps_per_epoch = config["steps_per_epoch"]
    snapshot_list = [int(s) for s in spec["snapshot_steps"]]
    weight_gaps = {
        step: max_weight_difference(
            keras_result["weights"][step], torch_weights(torch_result, step)
        )
        for step in snapshot_list
        if step in keras_result["weights"]
    }
    lines = []
    summary = {"mode": config["mode"], "layer": config["hash_layer"], "dtype": config["dtype"]}
    torch_epoch_losses = torch_result["losses"].reshape(config["epochs"], -1).mean(axis=1)
    if "losses" not in keras_result:  # f32_trainer: epoch-level only
        # Keras' epoch loss weights each batch by its size (the last one is smaller).
        sizes = spec["lengths"].reshape(config["epochs"], -1)
        per_step = torch_result["losses"].reshape(config["epochs"], -1)
        torch_epoch_losses = (per_step * sizes).sum(axis=1) / sizes.sum(axis=1)
        lines.append(
            "| epoch | loss torch (batch-size weighted) | loss keras (fit) | max abs dW at epoch end |"
        )
        lines.append("|---:|---:|---:|---:|")
        for epoch in range(config["epochs"]):
            end = (epoch + 1) * steps_per_epoch
            lines.append(
                f"| {epoch + 1} | {torch_epoch_losses[epoch]:.9f} | "
                f"{keras_result['epoch_losses'][epoch]:.9f} | {weight_gaps.get(end, float('nan')):.3e} |"
            )
        summary.update(
            steps=config["epochs"] * steps_per_epoch,
            max_loss_gap=float(np.max(np.abs(torch_epoch_losses - keras_result["epoch_losses"]))),
            final_weight_gap=weight_gaps[max(weight_gaps)],
            first_loss_step=None,
            first_weight_step=next(
                (s for s, gap in sorted(weight_gaps.items()) if gap > weight_tolerance), None
            ),
            first_code_step=None,
            rate_changes_torch=change_steps(torch_result["rates"]),
            rate_changes_keras=None,
        )
        return {"lines": lines, "summary": summary}

    loss_gaps = np.abs(torch_result["losses"] - keras_result["losses"])
    rows_per_step = spec["lengths"]
    code_mismatch = np.any(torch_result["codes"] != keras_result["codes"], axis=1)
    row_ends = np.cumsum(rows_per_step)
    mismatched_rows = np.add.reduceat(code_mismatch.astype(np.int64), row_ends - rows_per_step)
    lines.append(
        "| step | lr torch | lr keras | loss torch | loss keras | abs dloss | max abs dW | rows with other codes |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for step in range(min(first_steps, len(loss_gaps))):
        lines.append(
            f"| {step + 1} | {torch_result['rates'][step]:.3g} | {keras_result['rates'][step]:.3g} | "
            f"{torch_result['losses'][step]:.12f} | {keras_result['losses'][step]:.12f} | "
            f"{loss_gaps[step]:.2e} | {weight_gaps.get(step + 1, float('nan')):.2e} | "
            f"{mismatched_rows[step]} |"
        )
    lines.append("")
    lines.append(
        "| epoch | mean loss torch | mean loss keras | max abs dloss | max abs dW at epoch end "
        "| steps with other codes | torch pixels p(1-p)<1e-12 (wrong side) |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    keras_epoch_losses = keras_result["losses"].reshape(config["epochs"], -1).mean(axis=1)
    for epoch in range(config["epochs"]):
        window = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        end = (epoch + 1) * steps_per_epoch
        lines.append(
            f"| {epoch + 1} | {torch_epoch_losses[epoch]:.9f} | {keras_epoch_losses[epoch]:.9f} | "
            f"{loss_gaps[window].max():.2e} | {weight_gaps.get(end, float('nan')):.2e} | "
            f"{int(np.count_nonzero(mismatched_rows[window]))} | "
            f"{int(torch_result['saturated'][window].sum())} "
            f"({int(torch_result['wrong_saturated'][window].sum())}) |"
        )
    drift = ", ".join(
        f"{step}: {gap:.1e}" for step, gap in sorted(weight_gaps.items()) if step > first_steps
    )
    lines.append("")
    lines.append(f"max abs dW after step: {drift}")
    first = lambda mask: int(np.argmax(mask)) + 1 if np.any(mask) else None  # noqa: E731
    summary.update(
        steps=len(loss_gaps),
        max_loss_gap=float(loss_gaps.max()),
        final_weight_gap=weight_gaps[max(weight_gaps)],
        first_loss_step=first(loss_gaps > loss_tolerance),
        first_weight_step=next(
            (s for s, gap in sorted(weight_gaps.items()) if gap > weight_tolerance), None
        ),
        first_code_step=first(mismatched_rows > 0),
        first_flip_margin=(keras_result["first_flip"] or {}).get("margin"),
        rate_changes_torch=change_steps(torch_result["rates"]),
        rate_changes_keras=change_steps(keras_result["rates"]),
    )
    return {"lines": lines, "summary": summary}


def torch_epoch_lines(torch_result, config: dict) -> list[str]:
    """Per epoch of the PyTorch run: rate, mean loss and the pixels where ``BCELoss``'s
    gradient departs from ``sigmoid(z) - x`` (``p (1 - p) < 1e-12``)."""
    lines = [
        "| epoch | lr | mean loss | pixels p(1-p)<1e-12 | of them on the wrong side |",
        "|---:|---:|---:|---:|---:|",
    ]
    steps = config["steps_per_epoch"]
    for epoch in range(config["epochs"]):
        window = slice(epoch * steps, (epoch + 1) * steps)
        lines.append(
            f"| {epoch + 1} | {torch_result['rates'][window][0]:.3g} | "
            f"{torch_result['losses'][window].mean():.6f} | "
            f"{int(torch_result['saturated'][window].sum())} | "
            f"{int(torch_result['wrong_saturated'][window].sum())} |"
        )
    return lines


def init_lines(torch_result, spec) -> list[str]:
    """PyTorch's default ``nn.Linear`` init next to the project's (the one both sides start
    from): for U(-1/sqrt(fan_in), 1/sqrt(fan_in)) both columns are ~1."""
    lines = [
        "| tensor | torch default: max abs * sqrt(fan_in) | std * sqrt(3 fan_in) "
        "| project: max abs * sqrt(fan_in) | std * sqrt(3 fan_in) |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = iter(torch_result["init_stats"])
    for name in LAYER_NAMES:
        fan_in = spec[f"init/{name}/kernel"].shape[0]
        for kind in ("kernel", "bias"):
            values = spec[f"init/{name}/{kind}"]
            torch_max, torch_std = next(rows)
            lines.append(
                f"| {name}/{kind} | {torch_max:.4f} | {torch_std:.4f} | "
                f"{np.abs(values).max() * fan_in**0.5:.4f} | {values.std() * (3 * fan_in) ** 0.5:.4f} |"
            )
    return lines


def run_torch(torch_python: str, spec_path: str, directory: str, tag: str) -> dict:
    script = os.path.join(directory, "torch_worker.py")
    with open(script, "w") as handle:
        handle.write(TORCH_WORKER)
    output = os.path.join(directory, f"torch_{tag}.npz")
    result = subprocess.run(
        [torch_python, script, spec_path, output], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"The PyTorch worker failed:\n{result.stderr[-3000:]}")
    return dict(np.load(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch_python", required=True, help="a Python with torch installed")
    parser.add_argument("--layers", default="bihalf,sign")
    parser.add_argument(
        "--modes",
        default=",".join(m for m in MODES if not m.startswith("torch")),
        help=f"any of {MODES} (torch_*: the PyTorch side alone, per epoch)",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--milestones", default="1,2", help="epochs of the lr drops (the paper: 60,80)"
    )
    parser.add_argument("--factor", type=float, default=0.1)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_examples", type=int, default=None, help="first N images")
    parser.add_argument("--first_steps", type=int, default=10, help="per-step rows printed")
    parser.add_argument("--snapshot_every", type=int, default=50)
    parser.add_argument("--bce", choices=("logits", "probabilities"), default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--trainer_spe", type=int, default=8, help="trainer steps_per_execution")
    parser.add_argument("--json", default=None, help="also write the summaries here")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {MODES}")

    sys.path.insert(0, ROOT)
    from tf_bihalf.data import mnist
    from tf_bihalf.losses import reconstruction

    (x_train, _), _ = mnist.load("mnist", pixels="rounded")
    if args.train_examples:
        x_train = x_train[: args.train_examples]
    bce = args.bce or (
        "probabilities"
        if reconstruction.BinaryReconstructionLoss().from_probabilities
        else "logits"
    )
    order, offsets, lengths = export_batches(len(x_train), 128, args.seed, args.epochs)
    steps_per_epoch = len(offsets) // args.epochs
    base = {
        "bits": args.bits,
        "hidden": 256,
        "input_dim": int(x_train.shape[1]),
        "learning_rate": 1e-3,
        "weight_decay": 1e-5,
        "milestones": [int(m) for m in args.milestones.split(",") if m],
        "factor": args.factor,
        "epochs": args.epochs,
        "batch_size": 128,
        "steps_per_epoch": steps_per_epoch,
        "seed": args.seed,
        "threads": args.threads,
        "trainer_spe": args.trainer_spe,
        "bce": bce,
    }
    spec = {
        "pixels": x_train.astype(np.uint8),
        "order": order,
        "offsets": offsets,
        "lengths": lengths,
        "snapshot_steps": snapshot_steps(
            len(offsets), steps_per_epoch, args.first_steps, args.snapshot_every
        )
        if any(not mode.startswith("torch") for mode in modes)
        else np.zeros((0,), np.int64),
        **initial_weights(args.bits, 256, base["input_dim"], args.seed),
    }
    if not np.array_equal(spec["pixels"], x_train):
        raise ValueError("Pixels are expected to be 0/1 (pixels='rounded').")
    summaries, torch_version = [], None
    with tempfile.TemporaryDirectory() as directory:
        for layer in args.layers.split(","):
            torch_runs = {}
            for mode in modes:
                dtype = "float64" if mode.endswith("f64") or mode.startswith("f64") else "float32"
                config = dict(base, hash_layer=layer, gamma=GAMMAS[layer], dtype=dtype, mode=mode)
                if dtype not in torch_runs:
                    spec_path = os.path.join(directory, f"spec_{layer}_{dtype}.npz")
                    np.savez(spec_path, config=np.array(json.dumps(config)), **spec)
                    started = time.perf_counter()
                    torch_runs[dtype] = run_torch(
                        args.torch_python, spec_path, directory, f"{layer}_{dtype}"
                    )
                    if torch_version is None:
                        print("\n### Initialisation (the same distribution on both sides)\n")
                        print("\n".join(init_lines(torch_runs[dtype], spec)))
                    torch_version = str(torch_runs[dtype]["version"])
                    print(f"[torch {layer} {dtype}: {time.perf_counter() - started:.0f} s]")
                if mode.startswith("torch"):
                    print(f"\n### {layer}, PyTorch alone ({dtype})\n")
                    print("\n".join(torch_epoch_lines(torch_runs[dtype], config)))
                    continue
                started = time.perf_counter()
                if mode == "f32_trainer":
                    keras_result = run_keras_trainer(spec, config)
                else:
                    keras_result = run_keras_steps(spec, config, mode, torch_runs[dtype]["codes"])
                print(f"[keras {layer} {mode}: {time.perf_counter() - started:.0f} s]")
                report = compare(torch_runs[dtype], keras_result, spec, config, args.first_steps)
                print(f"\n### {layer}, {mode} ({dtype}, BCE from {bce})\n")
                print("\n".join(report["lines"]))
                summaries.append(report["summary"])
                sys.stdout.flush()

    if not summaries:
        return
    import keras
    import tensorflow as tf

    print(
        f"\n### Summary (torch {torch_version}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}; {len(offsets)} steps = {args.epochs} epochs of {steps_per_epoch}; "
        f"milestones {base['milestones']}; BCE from {bce})\n"
    )
    print(
        "| layer | mode | steps | max abs dloss | max abs dW at end | first step dloss > tol "
        "| first snapshot dW > tol | first step codes differ (relative margin) "
        "| lr changes torch / keras |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in summaries:
        print(
            f"| {row['layer']} | {row['mode']} | {row['steps']} | {row['max_loss_gap']:.2e} | "
            f"{row['final_weight_gap']:.2e} | {row['first_loss_step']} | "
            f"{row['first_weight_step']} | {row['first_code_step']}"
            + (f" ({row['first_flip_margin']:.1e})" if row.get("first_flip_margin") else "")
            + f" | {row['rate_changes_torch']} / {row['rate_changes_keras']} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summaries, handle, indent=1)


if __name__ == "__main__":
    main()
