r"""Trains an image hasher (frozen backbone + hash head + Bi-half) under a paper protocol.

    python -m trainers.image --dataset=cifar10 --bits=64 --workdir=runs/cifar10_64
    python -m trainers.image --dataset=folder:/data/photos --bits=32 --workdir=runs/photos
    python -m trainers.image --dataset=fashion_mnist_rgb --backbone=efficientnet_lite0 \
        --weights=imagenet --hash_layer=sign --workdir=runs/fmnist_sign

The config comes from ``configs/<dataset>.py`` (``--config`` names another; users' own
``folder:DIR`` / ``list:FILE`` collections use ``configs/flickr25k.py`` without its protocol
options); flags override it; the resolved config is written to ``RUN/config.json``. Then:

1. the protocol's splits (``tf_bihalf.data.image_protocols``), written to ``RUN/splits/``;
2. with ``feature_cache`` (the default: the backbone is frozen, there is no augmentation), the
   frozen part runs once over train / query / database (``tf_bihalf.data.feature_cache``) and
   training runs only the per-step tail on the cached features; otherwise it trains end to end
   on decoded images;
3. ``fit`` under ``MirroredStrategy`` (the batch size is global; Bi-half ranks over the global
   batch), SGD with coupled L2, the config's schedule, epoch checkpoints (a restarted run with
   the same ``--workdir`` resumes), TensorBoard;
4. evaluation of the query set against the database: the protocol's mAP (@1000 / @All /
   @5000), precision@N, precision-recall over Hamming radius, bit balance / entropy /
   correlation; ``RUN/results.json`` and ``RUN/plots/``;
5. ``RUN/encoder.keras``: the whole ``ImageHasher`` (preprocessing + backbone + head + hash
   layer, raw RGB [0, 255] images -> ±1 codes), also when it was trained on cached features.
"""

from __future__ import annotations

import importlib
import json
import os
import time

import keras
import numpy as np
from absl import app, flags, logging

from tf_bihalf.data import image_protocols
from tf_bihalf.data.feature_cache import FeatureCache
from tf_bihalf.data.image_pipeline import image_dataset
from tf_bihalf.losses.cosine import CosineSimilarityPreservation
from tf_bihalf.metrics import (
    bit_balance,
    bit_correlation,
    bit_entropy,
    mean_average_precision,
    precision_at_n,
    precision_recall_curve,
    precision_within_radius,
)
from tf_bihalf.models.image_hasher import ImageHasher, SimilarityPreservingModel
from tf_bihalf.training.checkpoint import TrainingCheckpoint
from tf_bihalf.training.optimizers import build_optimizer
from tf_bihalf.training.pipelines import epoch_batches, steps_per_epoch
from tf_bihalf.training.schedules import build_learning_rate
from tf_bihalf.training.strategy import get_strategy
from tf_bihalf.training.workdir import prepare_workdir

FLAGS = flags.FLAGS
CUSTOM_DATASET_CONFIG = "flickr25k"

flags.DEFINE_string(
    "dataset",
    None,
    "cifar10 | flickr25k | nus_wide | mscoco | fashion_mnist_rgb | folder:<dir> | list:<file>.",
)
flags.DEFINE_string("config", None, "Config module in configs/ (default: the dataset's).")
flags.DEFINE_integer("bits", None, "Code length K.")
flags.DEFINE_string("hash_layer", None, "bihalf | sign | signreg | tanh | relaxed | median.")
flags.DEFINE_string(
    "backbone",
    None,
    "vgg16 | resnet50 | efficientnet_b0 | mobilenet_v3_small | efficientnet_lite0 | ...",
)
flags.DEFINE_string("weights", None, "Backbone weights: imagenet | none | a local file.")
flags.DEFINE_string("data_dir", None, "Where the dataset lives.")
flags.DEFINE_string("workdir", None, "Run directory (resumed when it holds a checkpoint).")
flags.DEFINE_integer("epochs", None, "Training epochs.")
flags.DEFINE_integer("batch_size", None, "Global batch size (even: the cosine loss pairs halves).")
flags.DEFINE_string("protocol", None, "I | II (cifar10, nus_wide).")
flags.DEFINE_integer("image_size", None, "Square input size (pixels).")
flags.DEFINE_float("learning_rate", None, "Overrides the config's learning rate.")
flags.DEFINE_boolean("feature_cache", None, "Train on cached frozen features (config default).")
flags.DEFINE_string("cache_dir", None, "Feature cache root (default: the config's).")
flags.DEFINE_integer("seed", None, "Seed of the protocol split, init and data order.")
flags.DEFINE_boolean("smoke", False, "The config's tiny variant (CI end-to-end check).")


# --- Config ------------------------------------------------------------------------------


def config_name(dataset: str, config: str | None = None) -> str:
    if config:
        return config
    if dataset.startswith(("folder:", "list:")):
        return CUSTOM_DATASET_CONFIG
    return dataset


def load_config(name: str, smoke: bool = False) -> dict:
    """``configs/<name>.py``'s ``get_config(smoke)``; ``ValueError`` naming the choices."""
    try:
        module = importlib.import_module(f"configs.{name}")
    except ModuleNotFoundError:
        here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
        known = sorted(f[:-3] for f in os.listdir(here) if f.endswith(".py") and f[0] != "_")
        raise ValueError(f"No config {name!r} in configs/; known: {known}.") from None
    return module.get_config(smoke=smoke)


def resolve_config(
    dataset: str, overrides: dict, config: str | None = None, smoke: bool = False
) -> dict:
    """The config for ``dataset`` with ``overrides`` (flag values; None = keep) applied."""
    if not dataset:
        raise ValueError("--dataset is required (e.g. --dataset=cifar10 or folder:/data/photos).")
    resolved = load_config(config_name(dataset, config), smoke)
    if resolved["dataset"] != dataset:
        # Protocol options belong to the config's own dataset.
        resolved.update(dataset=dataset, protocol_options={})
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "learning_rate":
            resolved["optimizer"] = {**resolved["optimizer"], "learning_rate": float(value)}
        elif key == "image_size":
            resolved["image_size"] = [int(value), int(value)]
        elif key == "weights":
            resolved["weights"] = None if value.lower() == "none" else value
        else:
            resolved[key] = value
    if resolved["batch_size"] < 2 or resolved["batch_size"] % 2:
        raise ValueError(
            f"batch_size must be even and >= 2 (the cosine loss pairs row i with i + M/2); "
            f"got {resolved['batch_size']}."
        )
    if resolved["hash_layer"] not in resolved["hash_layer_options"]:
        raise ValueError(
            f"Unknown hash layer {resolved['hash_layer']!r}; choose one of "
            f"{sorted(resolved['hash_layer_options'])}."
        )
    height, width = resolved["image_size"]
    resolved["input_shape"] = [height, width, 3]
    resolved["model_type"] = "image"
    return resolved


# --- Data --------------------------------------------------------------------------------


def fashion_mnist_rgb_splits(data_dir: str | None, seed: int, options: dict):
    """Fashion-MNIST as uint8 RGB images, class-balanced: per class ``num_query_per_class``
    test images -> query, ``num_database_per_class`` training images -> database, train =
    the database or its first ``num_train_per_class`` per class. Indices: 0..59,999 = the
    training set, 60,000.. = the test set."""
    from tf_bihalf.data import mnist  # noqa: PLC0415 - only this dataset needs it

    (x_train, y_train), (x_test, y_test) = mnist.load(
        "fashion_mnist", data_dir=data_dir, pixels="uint8", flatten=False
    )
    rng = np.random.RandomState(seed)

    def per_class(labels, count, offset):
        chosen = []
        for label in range(10):
            members = np.flatnonzero(labels == label)
            chosen.append(members[rng.permutation(len(members))][:count] + offset)
        return chosen

    query = np.sort(np.concatenate(per_class(y_test, options["num_query_per_class"], 60000)))
    database_parts = per_class(y_train, options["num_database_per_class"], 0)
    database = np.sort(np.concatenate(database_parts))
    if options["num_train_per_class"] is None:
        train = database
    else:
        train = np.sort(
            np.concatenate([p[: options["num_train_per_class"]] for p in database_parts])
        )
    pool = np.concatenate([x_train, x_test])
    labels = np.concatenate([y_train, y_test]).astype(np.int64)

    def subset(indices):
        gray = pool[indices]
        return image_protocols.ImageSet(
            labels=labels[indices], indices=indices, images=np.repeat(gray[..., None], 3, axis=-1)
        )

    report = {"counts": {"train": len(train), "query": len(query), "database": len(database)}}
    return image_protocols.ProtocolSplits(
        "fashion_mnist_rgb",
        "default",
        10,
        subset(train),
        subset(query),
        subset(database),
        report,
        seed,
        dict(options),
    )


def load_splits(config: dict, data_dir: str | None):
    if config["dataset"] == "fashion_mnist_rgb":
        return fashion_mnist_rgb_splits(data_dir, config["seed"], config["protocol_options"])
    return image_protocols.load_protocol(
        config["dataset"],
        data_dir=data_dir,
        protocol=config["protocol"],
        seed=config["seed"],
        **config["protocol_options"],
    )


# --- Evaluation --------------------------------------------------------------------------


def protocol_top_k(config: dict):
    top_k = config["evaluation"]["top_k"]
    if isinstance(top_k, dict):
        return top_k[config["protocol"] or "I"]
    return top_k


def evaluate_codes(
    query_codes, database_codes, query_labels, database_labels, config: dict
) -> dict:
    """The protocol's metrics on ±1 codes (aggregated first, computed once)."""
    evaluation = config["evaluation"]
    ties = evaluation["ties"]
    num_database = len(database_codes)
    metrics = {}
    for top_k in [protocol_top_k(config), *evaluation["extra_top_k"]]:
        key = "map@all" if top_k is None else f"map@{top_k}"
        metrics[key] = mean_average_precision(
            query_codes,
            database_codes,
            query_labels,
            database_labels,
            top_k=None if top_k is None else min(int(top_k), num_database),
            ties=ties,
        )
    metrics["map"] = metrics[
        "map@all" if protocol_top_k(config) is None else f"map@{protocol_top_k(config)}"
    ]
    ns = [n for n in evaluation["precision_at"] if n <= num_database]
    metrics["precision_at_n"] = dict(
        zip(
            [str(n) for n in ns],
            precision_at_n(query_codes, database_codes, query_labels, database_labels, ns).tolist(),
            strict=True,
        )
    )
    curve = precision_recall_curve(query_codes, database_codes, query_labels, database_labels)
    metrics["pr_curve"] = {key: np.asarray(value).tolist() for key, value in curve.items()}
    metrics["precision_radius_2"] = precision_within_radius(
        query_codes, database_codes, query_labels, database_labels, radius=2
    )
    per_bit_entropy, mean_entropy = bit_entropy(database_codes)
    correlation = bit_correlation(database_codes)
    off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
    metrics["bits"] = {
        "balance": bit_balance(database_codes).tolist(),
        "entropy_per_bit": np.asarray(per_bit_entropy).tolist(),
        "mean_entropy": float(mean_entropy),
        "max_abs_correlation": float(np.abs(off_diagonal).max()) if off_diagonal.size else 0.0,
    }
    metrics["ties"] = ties
    return metrics


def write_plots(metrics: dict, directory: str, title: str) -> list[str]:
    """PR curve, precision@N and bit balance PNGs (minimal; see the report)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    os.makedirs(directory, exist_ok=True)
    written = []
    figure, axis = plt.subplots(figsize=(4.5, 4))
    curve = metrics["pr_curve"]
    axis.plot(curve["recall"], curve["precision"], marker=".")
    axis.set(xlabel="recall", ylabel="precision", title=f"{title}: PR by Hamming radius")
    written.append(os.path.join(directory, "pr_curve.png"))
    figure.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(4.5, 4))
    ns = [int(n) for n in metrics["precision_at_n"]]
    axis.plot(ns, list(metrics["precision_at_n"].values()), marker="o")
    axis.set(xlabel="N", ylabel="precision@N", title=f"{title}: precision@N")
    written.append(os.path.join(directory, "precision_at_n.png"))
    figure.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(6, 3))
    balance = metrics["bits"]["balance"]
    axis.bar(range(len(balance)), balance)
    axis.axhline(0.5, color="k", linewidth=0.8)
    axis.set(xlabel="bit", ylabel="fraction of +1", ylim=(0, 1), title=f"{title}: bit balance")
    written.append(os.path.join(directory, "bit_balance.png"))
    figure.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)
    return written


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (for the training throughput in results.json)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


# --- Training ----------------------------------------------------------------------------


def train(config: dict, workdir: str, data_dir: str | None = None) -> dict:
    """Runs one training + evaluation (see the module docstring); returns results.json's dict."""
    run = prepare_workdir(workdir, config)
    keras.utils.set_random_seed(config["seed"])
    splits = load_splits(config, data_dir)
    image_protocols.write_splits(splits, os.path.join(run.path, "splits"))
    strategy = get_strategy(config["strategy"])
    use_cache = bool(config["feature_cache"])
    batch_size = config["batch_size"]
    steps = steps_per_epoch(len(splits.train), batch_size, drop_remainder=True)
    hash_options = config["hash_layer_options"][config["hash_layer"]]
    with strategy.scope():
        hasher = ImageHasher(
            config["backbone"],
            bits=config["bits"],
            hash_layer=config["hash_layer"],
            weights=config["weights"],
            image_size=config["image_size"],
            dropout=config["dropout"],
            **hash_options,
        )
        model = SimilarityPreservingModel(
            hasher.training_network(from_features=use_cache),
            CosineSimilarityPreservation(pairing=config["loss"]["pairing"]),
        )
        optimizer_config = dict(config["optimizer"])
        learning_rate, schedule_callbacks = build_learning_rate(
            config["schedule"], optimizer_config.pop("learning_rate"), steps
        )
        optimizer = build_optimizer(learning_rate=learning_rate, **optimizer_config)
        model.compile(optimizer=optimizer)
    checkpoint = TrainingCheckpoint(run.checkpoint_dir, model, optimizer)
    cached = {}
    timing = {}
    if use_cache:
        cache_dir = config["cache_dir"] or os.path.join(run.path, "feature_cache")
        cache = FeatureCache.for_hasher(cache_dir, hasher, resize=config["resize"])
        for name in ("train", "query", "database"):
            cached[name] = cache.load_or_build(
                name, splits.split(name), batch_size=config["extract_batch_size"]
            )
            timing[f"extract_{name}_images_per_second"] = cached[name].images_per_second
            timing[f"extract_{name}_cache_hit"] = cached[name].hit
    with strategy.scope():
        if use_cache:
            model(cached["train"].features[:batch_size])  # Builds the variables.
        else:
            model(np.zeros((batch_size, *config["input_shape"]), "float32"))
        initial_epoch = checkpoint.restore()
    if initial_epoch:
        logging.info("Resuming %s after epoch %d.", run.path, initial_epoch)
    timer = EpochTimer()
    callbacks = [
        checkpoint.callback(),
        keras.callbacks.TensorBoard(run.tensorboard_dir),
        timer,
        *schedule_callbacks,
    ]
    if initial_epoch < config["epochs"]:
        if use_cache:
            train_data = epoch_batches(
                (cached["train"].features, cached["train"].labels),
                batch_size,
                seed=config["seed"],
                epochs=config["epochs"],
                initial_epoch=initial_epoch,
                drop_remainder=True,
            )
        else:
            train_data = image_dataset(
                splits.train,
                image_size=config["image_size"],
                batch_size=batch_size,
                shuffle=True,
                seed=config["seed"] + initial_epoch,
                drop_remainder=True,
                repeat=True,
                resize=config["resize"],
            )
        model.fit(
            train_data,
            epochs=config["epochs"],
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=2,
        )
    if timer.seconds:
        timing["train_seconds_per_epoch"] = float(np.median(timer.seconds))
        timing["train_examples_per_second"] = steps * batch_size / timing["train_seconds_per_epoch"]

    start = time.perf_counter()
    if use_cache:
        query_codes = hasher.encode_features(cached["query"].features)
        database_codes = hasher.encode_features(cached["database"].features)
        query_labels, database_labels = cached["query"].labels, cached["database"].labels
    else:
        encode = config["evaluation"]["batch_size"]
        query_codes, query_labels = hasher.encode_images(
            image_dataset(
                splits.query,
                config["image_size"],
                encode,
                resize=config["resize"],
                on_decode_error="raise",
            )
        )
        database_codes, database_labels = hasher.encode_images(
            image_dataset(
                splits.database,
                config["image_size"],
                encode,
                resize=config["resize"],
                on_decode_error="raise",
            )
        )
    timing["encode_seconds"] = time.perf_counter() - start
    metrics = evaluate_codes(query_codes, database_codes, query_labels, database_labels, config)
    hasher.save(run.encoder_path)
    title = f"{config['dataset']} {config['hash_layer']} {config['bits']} bits"
    plots = write_plots(metrics, run.plots_dir, title)
    results = {
        "metrics": metrics,
        "config": config,
        "data_report": splits.report,
        "timing": timing,
        "epochs_completed": config["epochs"],
        "replicas": strategy.num_replicas_in_sync,
        "plots": [os.path.relpath(p, run.path) for p in plots],
    }
    run.write_results(results)
    logging.info(
        "%s: mAP %.4f (%s); results in %s",
        title,
        metrics["map"],
        json.dumps({k: v for k, v in metrics.items() if k.startswith("map@")}),
        run.results_path,
    )
    return results


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required.")
    overrides = {
        "bits": FLAGS.bits,
        "hash_layer": FLAGS.hash_layer,
        "backbone": FLAGS.backbone,
        "weights": FLAGS.weights,
        "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size,
        "protocol": FLAGS.protocol,
        "image_size": FLAGS.image_size,
        "learning_rate": FLAGS.learning_rate,
        "feature_cache": FLAGS.feature_cache,
        "cache_dir": FLAGS.cache_dir,
        "seed": FLAGS.seed,
    }
    config = resolve_config(FLAGS.dataset, overrides, FLAGS.config, FLAGS.smoke)
    results = train(config, FLAGS.workdir, FLAGS.data_dir)
    summary = {k: round(v, 4) for k, v in results["metrics"].items() if k.startswith("map")}
    print(json.dumps({"workdir": FLAGS.workdir, **summary}))


if __name__ == "__main__":
    app.run(main)
