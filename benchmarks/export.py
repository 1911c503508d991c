"""Encoder throughput and batch-1 latency: Keras vs SavedModel vs TFLite float32 / float16 / int8
/ int8_selective.

    python -m benchmarks.export                                   # two built models (below)
    python -m benchmarks.export --run mnist=runs/mnist_64 --run fmnist=runs/fmnist_rgb_64
    python -m benchmarks.export --build autoencoder --build efficientnet_lite0_224 --seconds 5

Every model goes through the real export path (run directory -> ``export.saved_model`` ->
``export.tflite.export_tflite``) and each runtime encodes the same evaluation inputs:

- ``keras``: ``model.predict_on_batch`` (compiled predict function) + sign;
- ``saved_model``: the ``serving_default`` signature of the reloaded SavedModel;
- ``tflite_fp32`` / ``tflite_fp16`` / ``tflite_int8`` / ``tflite_int8_selective``:
  ``ai_edge_litert`` with ``--threads`` threads (XNNPACK); float16 stores half-size weights and
  computes in float32 on CPU; ``int8_selective`` is ``export_tflite(..., "int8_selective", ...)``:
  int8 with the fewest leading weighted layers (convolutions, dense) kept in float32 that give
  ``--min_agreement`` of the bits on the calibration images.

Per runtime: throughput at ``--batch_size`` (images/s, median of timed calls) and batch-1
latency (median and 90th percentile), timed in rounds in which the runtimes take turns (about
``--seconds`` per runtime in all) so that load from other processes hits them alike; the
artifact size; how many weighted layers run in float (``all`` for float TFLite, ``0 of N`` for
int8, ``n of N`` as ``export_tflite`` reports it for int8_selective); the fraction of code bits
equal to the Keras model's on held-out inputs; and the mAP@All of those codes (200 held-out
queries against the other held-out images, class labels), to show what the changed bits cost in
retrieval.

Both int8 rows are calibrated on the same ``--calibration`` images, drawn from the **training**
split (MNIST / Fashion-MNIST ``x_train``), so they are disjoint from the held-out test images the
rows are measured on. ``int8`` is exported with ``min_agreement=0`` (it is shown whatever it
keeps). ``int8_selective`` searches for ``--min_agreement`` (default 99%, measured against the
SavedModel on the calibration images, as ``python -m export.tflite`` does); when no number of
float layers reaches it, ``export_tflite`` refuses, and the benchmark exports the largest number
the search tried with ``min_agreement=0`` instead and marks the row ``target missed`` (the
refusal's message is printed under the table), so the row is shown but the miss is not hidden.

Models: ``--run NAME=DIR`` benchmarks a training run directory (read only); ``--build`` makes an
untrained one: ``autoencoder`` (784-256-64 + Bi-half, the MNIST encoder) or
``<backbone>_<size>`` (``tf_bihalf.models.image_hasher.ImageHasher``, 64 bits, e.g.
``efficientnet_lite0_224``, ``mobilenet_v3_small_224``) with ``--weights`` (``none`` or
``imagenet``; an untrained hash head either way). Inputs: MNIST / Fashion-MNIST images
(pixels rounded for the autoencoder; gray -> RGB, resized like the training pipeline for image
models) when ``tf_bihalf.data.mnist`` can load them, else generated images (said in the table).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from export import tflite
from export.run_directory import EncoderSpec, load_run
from export.saved_model import export_saved_model

BITS = 64


def _timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def measure(
    functions: dict, batch: np.ndarray, single: np.ndarray, seconds: float, rounds: int = 5
) -> dict[str, dict]:
    """Throughput at ``len(batch)`` and batch-1 latency of each ``functions[name](inputs)``.

    The runtimes take turns: ``rounds`` rounds, each timing every runtime for about
    ``seconds / rounds`` (batch calls, then single calls), so that load from other processes on
    a shared machine hits all of them alike. Medians over all timed calls.
    """
    estimates = {}
    for name, function in functions.items():
        function(batch)  # Warm-up (tracing, allocation).
        function(single)
        estimates[name] = (
            max(_timed(lambda f=function: f(batch), 1)[0], 1e-6),
            max(_timed(lambda f=function: f(single), 1)[0], 1e-6),
        )
    batch_times = {name: [] for name in functions}
    single_times = {name: [] for name in functions}
    share = seconds / rounds / 2
    for _ in range(rounds):
        for name, function in functions.items():
            batch_estimate, single_estimate = estimates[name]
            batch_times[name] += _timed(
                lambda f=function: f(batch), max(1, int(share / batch_estimate))
            )
            single_times[name] += _timed(
                lambda f=function: f(single), min(max(3, int(share / single_estimate)), 500)
            )
    return {
        name: {
            "throughput": len(batch) / float(np.median(batch_times[name])),
            "latency_ms": 1000 * float(np.median(single_times[name])),
            "latency_p90_ms": 1000 * float(np.percentile(single_times[name], 90)),
        }
        for name in functions
    }


def _directory_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, files in os.walk(path)
        for name in files
    )


def load_images(
    spec: EncoderSpec, calibration: int, evaluation: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """``(calibration images, held-out images, held-out labels, source)``: raw model inputs for
    ``spec``. Calibration images are a random subset of the MNIST / Fashion-MNIST training split,
    held-out images one of the test split (disjoint by construction); without the data, generated
    images and no labels."""
    try:
        from tf_bihalf.data import mnist

        if spec.model_type == "autoencoder":
            name, options = "mnist", {"pixels": "rounded"}
        else:
            name, options = "fashion_mnist", {"pixels": "uint8", "flatten": False}
        (train_images, _), (test_images, test_labels) = mnist.load(name, **options)
        source = f"{name}: calibration from train, held-out from test"
    except Exception as error:  # No data here: say so in the table rather than stop.
        logging.warning("MNIST images unavailable (%s); using generated images.", error)
        train_images = test_images = test_labels = None
        source = "generated"
    rng = np.random.default_rng(seed)
    if test_images is None:
        shape = (784,) if spec.model_type == "autoencoder" else (28, 28)
        high = 1.0 if spec.model_type == "autoencoder" else 255.0
        raw = rng.uniform(0, high, (calibration + evaluation, *shape))
        if spec.model_type == "autoencoder":
            raw = (raw > 0.7).astype(np.float32)
        calibration_raw, evaluation_raw, labels = raw[:calibration], raw[calibration:], None
    else:
        calibration_raw = train_images[rng.permutation(len(train_images))[:calibration]]
        chosen = rng.permutation(len(test_images))[:evaluation]
        evaluation_raw, labels = test_images[chosen], test_labels[chosen]
    return (
        _model_inputs(spec, calibration_raw),
        _model_inputs(spec, evaluation_raw),
        labels,
        source,
    )


def _model_inputs(spec: EncoderSpec, images: np.ndarray) -> np.ndarray:
    """MNIST-shaped images -> the encoder's raw float input (gray -> RGB, resized like the
    training pipeline for image models)."""
    if spec.model_type == "autoencoder":
        return np.asarray(images, np.float32)
    from tf_bihalf.data.image_pipeline import resize_images

    rgb = np.repeat(np.asarray(images)[..., None], 3, axis=-1).astype(np.uint8)
    resized = resize_images(rgb, spec.image_size, spec.resize).numpy()
    return np.round(resized).astype(np.float32)


def retrieval_map(codes: np.ndarray, labels: np.ndarray | None, queries: int = 200) -> float:
    """mAP@All of the first ``queries`` held-out images against the rest (NaN without labels):
    what a changed bit costs in retrieval."""
    if labels is None:
        return float("nan")
    from tf_bihalf.metrics.retrieval import mean_average_precision

    return float(
        mean_average_precision(codes[:queries], codes[queries:], labels[:queries], labels[queries:])
    )


def build_model(name: str, weights: str | None) -> tuple[keras.Model, EncoderSpec]:
    """An untrained encoder: ``autoencoder`` or ``<backbone>_<size>`` (see the module doc)."""
    if name == "autoencoder":
        from tf_bihalf.models.autoencoder import HashingAutoencoder

        model = HashingAutoencoder(bits=BITS, hash_layer="bihalf", hash_layer_kwargs={"gamma": 1.0})
        spec = EncoderSpec(BITS, "autoencoder", (784,), "bihalf")
        return model.encoder, spec
    backbone, _, size = name.rpartition("_")
    if not backbone or not size.isdigit():
        raise ValueError(f"--build takes 'autoencoder' or '<backbone>_<size>'; got {name!r}.")
    from tf_bihalf.models.image_hasher import ImageHasher

    size = int(size)
    model = ImageHasher(
        backbone=backbone, bits=BITS, hash_layer="bihalf", weights=weights, image_size=size
    )
    spec = EncoderSpec(
        BITS, "image", (size, size, 3), "bihalf", image_size=(size, size), backbone=backbone
    )
    return model, spec


def benchmark_model(
    label: str,
    model: keras.Model,
    spec: EncoderSpec,
    workdir: str,
    batch_size: int,
    seconds: float,
    threads: int,
    calibration: int,
    evaluation: int,
    min_agreement: float = tflite.DEFAULT_MIN_AGREEMENT["int8_selective"],
) -> tuple[list[dict], list[str]]:
    """The rows of one model (one per runtime) and notes on its int8_selective search."""
    calibration_set, evaluation_set, evaluation_labels, source = load_images(
        spec, calibration, evaluation
    )
    batch = evaluation_set[:batch_size]
    if len(batch) < batch_size:
        batch = np.resize(evaluation_set, (batch_size, *evaluation_set.shape[1:]))
    single = evaluation_set[:1]

    path = export_saved_model(model, spec, workdir, "encoder", 1)
    keras_path = os.path.join(workdir, "encoder.keras")
    model.save(keras_path)

    def keras_codes(inputs):
        return np.where(np.asarray(model.predict_on_batch(inputs)) >= 0, 1, -1).astype(np.int8)

    reference = np.concatenate(
        [keras_codes(evaluation_set[start : start + 256]) for start in range(0, evaluation, 256)]
    )
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]

    def saved_model_codes(inputs):
        return signature(inputs=tf.constant(inputs))["codes"].numpy()

    runtimes = [
        ("keras", keras_codes, os.path.getsize(keras_path)),
        ("saved_model", saved_model_codes, _directory_size(path)),
    ]
    float_layers = {"keras": "all", "saved_model": "all"}
    notes, weighted = [], 0
    for mode, name in (
        ("none", "tflite_fp32"),
        ("float16", "tflite_fp16"),
        ("int8", "tflite_int8"),
        ("int8_selective", "tflite_int8_selective"),
    ):
        out = os.path.join(workdir, f"{name}.tflite")
        if mode == "int8_selective":
            float_layers[name], note = _export_selective(
                path, out, calibration_set, min_agreement, weighted
            )
            notes.append(f"{label}: {note}")
        else:
            data = calibration_set if mode == "int8" else None
            tflite.export_tflite(path, out, mode, data, min_agreement=0.0)
            float_layers[name] = f"0 of {weighted}" if mode == "int8" else "all"
        if mode == "none":  # The count every int8 row is read against.
            with open(out, "rb") as file:
                weighted = tflite.count_weighted_layers(file.read())
        encoder = tflite.TFLiteEncoder(out, num_threads=threads)
        runtimes.append(
            (
                name,
                lambda inputs, e=encoder: e.encode(inputs, len(inputs))["codes"],
                os.path.getsize(out),
            )
        )
    timings = measure({name: function for name, function, _ in runtimes}, batch, single, seconds)
    rows = []
    for name, function, size in runtimes:
        codes = np.concatenate(
            [function(evaluation_set[start : start + 256]) for start in range(0, evaluation, 256)]
        )
        rows.append(
            {
                "model": label,
                "runtime": name,
                "size_mb": size / 2**20,
                "agreement": float(np.mean(codes == reference)),
                "map": retrieval_map(codes, evaluation_labels),
                "source": source,
                "float_layers": float_layers[name],
                **timings[name],
            }
        )
        logging.info("%s %s: %s", label, name, rows[-1])
    return rows, notes


def _export_selective(
    saved_model: str, out: str, calibration_set: np.ndarray, min_agreement: float, weighted: int
) -> tuple[str, str]:
    """Exports ``out`` with ``--quantize int8_selective``: the fewest leading float layers that
    keep ``min_agreement`` of the bits on ``calibration_set``; if none does, the largest number
    the search tries, at ``min_agreement=0``, marked. Returns ``(float layers, note)``."""
    try:
        report = tflite.export_tflite(
            saved_model, out, "int8_selective", calibration_set, min_agreement=min_agreement
        )
        missed = ""
    except tflite.AgreementError as error:
        # The search tried every step below the weighted-layer count; keep its last one.
        largest = max(step for step in tflite.SELECTIVE_STEPS if step < max(weighted, 1))
        report = tflite.export_tflite(
            saved_model,
            out,
            "int8_selective",
            calibration_set,
            min_agreement=0.0,
            float_layers=largest,
        )
        missed = f"; target missed, the export refused it: {error}"
    tried = ", ".join(f"{n} -> {100 * a:.2f}%" for n, a in report["selection"])
    note = (
        f"int8_selective kept the first {report['float_layers']} of "
        f"{report['weighted_layers']} weighted layers in float; search on {len(calibration_set)} "
        f"calibration images (float layers -> bits equal to the SavedModel, target "
        f"{100 * min_agreement:g}%): {tried}{missed}"
    )
    float_layers = f"{report['float_layers']} of {report['weighted_layers']}"
    return float_layers + (" (target missed)" if missed else ""), note


def format_table(rows: list[dict], batch_size: int) -> str:
    lines = [
        f"| model | runtime | size (MB) | images/s at batch {batch_size} | batch-1 latency "
        "median / p90 (ms) | weighted layers in float | bits equal to Keras | mAP@All (held-out) "
        "| vs Keras throughput |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    baseline = {row["model"]: row["throughput"] for row in rows if row["runtime"] == "keras"}
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['runtime']} | {row['size_mb']:.2f} | "
            f"{row['throughput']:,.0f} | {row['latency_ms']:.2f} / {row['latency_p90_ms']:.2f} | "
            f"{row['float_layers']} | {100 * row['agreement']:.2f}% | {row['map']:.4f} | "
            f"x{row['throughput'] / baseline[row['model']]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export", description=__doc__)
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR")
    parser.add_argument("--build", action="append", default=None, help="model to build")
    parser.add_argument("--weights", default="none", choices=("none", "imagenet"))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per runtime")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TFLite threads")
    parser.add_argument(
        "--calibration", type=int, default=200, help="int8 calibration images (training split)"
    )
    parser.add_argument("--evaluation", type=int, default=1000, help="held-out images")
    parser.add_argument(
        "--min_agreement",
        type=float,
        default=tflite.DEFAULT_MIN_AGREEMENT["int8_selective"],
        help="int8_selective's target bit agreement on the calibration images",
    )
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    models = []
    for item in args.run:
        label, _, directory = item.partition("=")
        if not directory:
            parser.error(f"--run takes NAME=RUN_DIR; got {item!r}")
        model, spec = load_run(directory)
        models.append((f"{label} ({spec.model_type}, {spec.bits} bits, trained)", model, spec))
    builds = (
        args.build
        if args.build is not None
        else ([] if args.run else ["autoencoder", "efficientnet_lite0_224"])
    )
    weights = None if args.weights == "none" else args.weights
    for name in builds:
        model, spec = build_model(name, weights)
        note = "untrained" if name == "autoencoder" else f"weights={args.weights}, untrained head"
        models.append((f"{name} ({note})", model, spec))
    rows, notes = [], []
    for label, model, spec in models:
        workdir = tempfile.mkdtemp(prefix="export_benchmark_")
        try:
            model_rows, model_notes = benchmark_model(
                label,
                model,
                spec,
                workdir,
                args.batch_size,
                args.seconds,
                args.threads,
                args.calibration,
                args.evaluation,
                args.min_agreement,
            )
            rows += model_rows
            notes += model_notes
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_table(rows, args.batch_size))
    sources = sorted({f"{row['model']}: {row['source']}" for row in rows})
    print(
        f"\nInputs: {'; '.join(sources)}. TFLite threads: {args.threads}; CPU cores: "
        f"{os.cpu_count()}."
    )
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
