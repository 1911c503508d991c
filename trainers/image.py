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

import json
import os
import time

import keras
import numpy as np
from absl import flags, logging

from tf_bihalf.callbacks import BitMonitor
from tf_bihalf.data import image_protocols
from tf_bihalf.data.feature_cache import FeatureCache
from tf_bihalf.data.image_pipeline import image_dataset
from tf_bihalf.losses.cosine import CosineSimilarityPreservation
from tf_bihalf.metrics import mean_average_precision
from tf_bihalf.models.image_hasher import ImageHasher, SimilarityPreservingModel
from tf_bihalf.training import evaluation, plots
from tf_bihalf.training.checkpoint import TrainingCheckpoint
from tf_bihalf.training.optimizers import build_optimizer
from tf_bihalf.training.pipelines import epoch_batches, steps_per_epoch
from tf_bihalf.training.schedules import build_learning_rate
from tf_bihalf.training.strategy import get_strategy
from tf_bihalf.training.workdir import prepare_workdir
from trainers import common

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


def resolve_config(
    dataset: str, overrides: dict, config: str | None = None, smoke: bool = False
) -> dict:
    """The config for ``dataset`` with ``overrides`` (flag values; None = keep) applied."""
    if not dataset:
        raise ValueError("--dataset is required (e.g. --dataset=cifar10 or folder:/data/photos).")
    resolved = common.load_config(config_name(dataset, config), smoke)
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


def evaluate_codes(query, database, config: dict) -> dict:
    """The protocol's metrics (``tf_bihalf.training.evaluation.evaluate_retrieval``) plus any
    ``extra_top_k`` mAP@k, on ``(codes, labels)`` pairs aggregated over the whole split."""
    settings = config["evaluation"]
    results = evaluation.evaluate_retrieval(
        query,
        database,
        top_k=protocol_top_k(config),
        precision_ns=settings["precision_at"],
        ties=settings["ties"],
    )
    results["map_at_k"] = {str(results["map_at"]): results["map"]}
    for k in settings["extra_top_k"]:
        results["map_at_k"][str(k)] = mean_average_precision(
            query[0],
            database[0],
            query[1],
            database[1],
            top_k=min(int(k), len(database[0])),
            ties=settings["ties"],
        )
    return results


# --- Training ----------------------------------------------------------------------------


def train(config: dict, workdir: str, data_dir: str | None = None) -> dict:
    """Runs one training + evaluation (see the module docstring); returns results.json's dict."""
    run = prepare_workdir(workdir, config)
    keras.utils.set_random_seed(int(config["seed"]))
    splits = load_splits(config, data_dir)
    split_directory = os.path.join(run.path, "splits")
    if os.path.isfile(os.path.join(split_directory, image_protocols.MANIFEST_NAME)):
        # A resumed run must train and evaluate on exactly the splits it started with: a
        # changed collection (an image gone missing, say) is an error, never a silent change.
        image_protocols.verify_splits(split_directory, splits)
    else:
        image_protocols.write_splits(splits, split_directory)
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

    timing, cached = {}, {}
    if use_cache:
        cache_dir = config["cache_dir"] or os.path.join(run.path, "feature_cache")
        cache = FeatureCache.for_hasher(cache_dir, hasher, resize=config["resize"])
        for name in ("train", "query", "database"):
            cached[name] = cache.load_or_build(
                name, splits.split(name), batch_size=config["extract_batch_size"]
            )
            timing[f"extract_{name}"] = {
                "cache_hit": cached[name].hit,
                "images_per_second": cached[name].images_per_second,
            }
        sample_inputs = cached["train"].features[:2000]
    else:
        sample_inputs = next(
            iter(
                image_dataset(
                    splits.train,
                    config["image_size"],
                    min(256, len(splits.train)),
                    resize=config["resize"],
                    on_decode_error="raise",
                )
            )
        )[0]
    with strategy.scope():
        model(sample_inputs[:batch_size])  # Builds the variables before a restore.
        initial_epoch = checkpoint.restore()
    if initial_epoch:
        logging.info("Resuming %s after epoch %d.", run.path, initial_epoch)

    timer = common.EpochTimer()
    monitor = BitMonitor(sample_inputs, os.path.join(run.tensorboard_dir, "bits"))
    callbacks = common.standard_callbacks(
        run, checkpoint, extra=[*schedule_callbacks, monitor], timer=timer
    )
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
            # End to end, a resumed run reshuffles with another seed (images are not in memory).
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
    timing["train"] = common.throughput(timer, steps * batch_size)

    start = time.perf_counter()
    if use_cache:
        query = (hasher.encode_features(cached["query"].features), cached["query"].labels)
        database = (hasher.encode_features(cached["database"].features), cached["database"].labels)
    else:
        size, resize = config["evaluation"]["batch_size"], config["resize"]
        query, database = (
            evaluation.encode_dataset(
                hasher,
                image_dataset(
                    splits.split(name),
                    config["image_size"],
                    size,
                    resize=resize,
                    on_decode_error="raise",
                ),
                description=f"encoding {name}",
            )
            for name in ("query", "database")
        )
    timing["encode_seconds"] = time.perf_counter() - start
    metrics = evaluate_codes(query, database, config)
    hasher.save(run.encoder_path)
    title = f"{config['dataset']} {config['hash_layer']} {config['bits']} bits"
    written = plots.write_plots(metrics, run.plots_dir, title)
    results = {
        "metrics": metrics,
        "config": config,
        "data_report": splits.report,
        "timing": timing,
        "replicas": strategy.num_replicas_in_sync,
        "plots": [os.path.relpath(path, run.path) for path in written],
    }
    run.write_results(results)
    logging.info(
        "%s: mAP@%s %.4f; results in %s", title, metrics["map_at"], metrics["map"], run.results_path
    )
    return results


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise ValueError("--workdir is required.")
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
    print(json.dumps({"workdir": FLAGS.workdir, "map_at_k": results["metrics"]["map_at_k"]}))


if __name__ == "__main__":
    common.run(main)
