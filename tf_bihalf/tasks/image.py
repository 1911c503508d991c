"""The image hashing task: frozen backbone + ``Linear(feat, K)`` head + hash layer.

Data: the protocol ``config["dataset"]`` from ``tf_bihalf.data``'s registry (cifar10, flickr25k,
nus_wide, mscoco, fashion_mnist_rgb, ``folder:DIR``, ``list:FILE``) with ``config["protocol"]``,
``config["seed"]`` and ``config["protocol_options"]``; the splits are written to
``RUN/splits/`` with checksums, and a resumed run verifies them instead (a changed collection is
an error, never a silent change of split).

With ``feature_cache`` (the default: the backbone is frozen and there is no augmentation), the
frozen part runs once over train / query / database (``tf_bihalf.data.feature_cache``) and the
loop trains only the per-step tail (dropout, fc7 for VGG16, head, hash layer) on the cached
features; evaluation encodes the cached features with the same tail, which equals encoding the
images. Without it, training and evaluation decode images end to end.

Model: ``ImageHasher`` (the whole model, raw RGB in [0, 255] -> codes, is ``RUN/encoder.keras``)
inside ``SimilarityPreservingModel`` (cosine similarity preservation, docs/paper.md "Settings").
Task config keys: ``backbone``, ``weights``, ``image_size``, ``resize``, ``dropout``,
``loss.pairing``, ``feature_cache``, ``cache_dir``, ``extract_batch_size``, ``protocol_options``,
``data_dir``, ``monitor.sample_size``, ``evaluation.batch_size``.
"""

from __future__ import annotations

import io
import os

import numpy as np
from absl import logging
from PIL import Image

from tf_bihalf import data as data_lib
from tf_bihalf.data.feature_cache import FeatureCache
from tf_bihalf.data.image_files import read_image_file
from tf_bihalf.data.image_pipeline import image_dataset
from tf_bihalf.errors import InputError
from tf_bihalf.models.image_hasher import ImageHasher
from tf_bihalf.tasks.similarity import check_even_batch, similarity_models
from tf_bihalf.training import pipelines
from tf_bihalf.training.record import InputSpec
from tf_bihalf.training.task import RecordFields, Task, TaskData, TaskModels

SPLITS_DIRECTORY = "splits"
SPLITS_MANIFEST = "splits.json"


THUMBNAIL = 64


def _thumbnail(path: str) -> np.ndarray:
    """A THUMBNAIL x THUMBNAIL uint8 RGB picture of an image file (gray when unreadable)."""
    try:
        data = read_image_file(path)
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB").resize((THUMBNAIL, THUMBNAIL)), np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        logging.warning("No thumbnail of %s: %s", path, error)
        return np.full((THUMBNAIL, THUMBNAIL, 3), 128, np.uint8)


class ImageTask(Task):
    """See the module docstring."""

    name = "image"

    def __init__(self, config: dict):
        super().__init__(config)
        check_even_batch(config)

    def prepare(self, run) -> None:
        config = self.config
        splits = data_lib.load_protocol(
            config["dataset"],
            data_dir=config["data_dir"],
            protocol=config["protocol"],
            seed=config["seed"],
            **config["protocol_options"],
        )
        directory = os.path.join(run.path, SPLITS_DIRECTORY)
        if os.path.isfile(os.path.join(directory, SPLITS_MANIFEST)):
            # A resumed run trains and evaluates on exactly the splits it started with.
            data_lib.verify_splits(directory, splits)
        else:
            data_lib.write_splits(splits, directory)
        pipelines.steps_per_epoch(len(splits.train), config["batch_size"], drop_remainder=True)
        self.splits = splits

    def build_models(self) -> TaskModels:
        config = self.config
        hasher = ImageHasher(
            config["backbone"],
            bits=config["bits"],
            hash_layer=config["hash_layer"],
            weights=config["weights"],
            image_size=config["image_size"],
            dropout=config["dropout"],
            hash_layer_kwargs=config["hash_layer_kwargs"],
        )
        self.hasher = hasher
        return similarity_models(hasher, config)

    def build_data(self, models, run) -> TaskData:
        config = self.config
        batch_size = config["batch_size"]
        splits = self.splits
        steps = pipelines.steps_per_epoch(len(splits.train), batch_size, drop_remainder=True)
        evaluation_batch = config["evaluation"]["batch_size"]
        sample_size = config["monitor"]["sample_size"]
        report = dict(splits.report)
        validation = None
        if config["feature_cache"]:
            cache_dir = config["cache_dir"] or os.path.join(run.path, "feature_cache")
            cache = FeatureCache.for_hasher(cache_dir, self.hasher, resize=config["resize"])
            cached, extraction = {}, {}
            for name in ("train", "query", "database"):
                cached[name] = cache.load_or_build(
                    name, splits.split(name), batch_size=config["extract_batch_size"]
                )
                extraction[name] = {
                    "cache_hit": cached[name].hit,
                    "images_per_second": cached[name].images_per_second,
                }
            report["feature_extraction"] = extraction
            train_arrays = (cached["train"].features, cached["train"].labels)
            fraction = config["evaluation"]["validation_fraction"]
            if fraction:
                kept, held_out = pipelines.holdout_split(
                    len(train_arrays[0]), fraction, config["seed"]
                )
                validation = tuple(
                    pipelines.ordered_batches(
                        tuple(array[rows] for array in train_arrays), evaluation_batch
                    )
                    for rows in (held_out, kept)
                )
                train_arrays = tuple(array[kept] for array in train_arrays)
                steps = pipelines.steps_per_epoch(len(kept), batch_size, drop_remainder=True)
                report["counts"] = dict(report.get("counts", {}), validation=len(held_out))

            def train(initial_epoch: int):
                return pipelines.epoch_batches(
                    train_arrays,
                    batch_size,
                    seed=config["seed"],
                    epochs=config["epochs"],
                    initial_epoch=initial_epoch,
                    drop_remainder=True,
                )

            def ordered(name):
                split = cached[name]
                return pipelines.ordered_batches((split.features, split.labels), evaluation_batch)

            query, database = ordered("query"), ordered("database")
            monitor_inputs = train_arrays[0][:sample_size]
        else:
            if config["evaluation"]["validation_fraction"]:
                raise InputError(
                    "evaluation.validation_fraction needs the feature cache (feature_cache=True)."
                )

            def images(name, size, **options):
                return image_dataset(
                    splits.split(name),
                    config["image_size"],
                    size,
                    resize=config["resize"],
                    **options,
                )

            def train(initial_epoch: int):
                # Images are not in memory: a resumed run reshuffles with a seed derived from
                # the epoch it starts at.
                return images(
                    "train",
                    batch_size,
                    shuffle=True,
                    seed=config["seed"] + initial_epoch,
                    drop_remainder=True,
                    repeat=True,
                )

            query = images("query", evaluation_batch)
            database = images("database", evaluation_batch)
            monitor_inputs = np.concatenate(
                [batch[0] for batch in images("train", min(256, sample_size)).take(1)]
            )
        return TaskData(
            train=train,
            steps_per_epoch=steps,
            examples_per_epoch=steps * batch_size,
            query=query,
            database=database,
            monitor_inputs=monitor_inputs,
            report=report,
            validation=validation,
        )

    def display_images(self, split, indices):
        image_set = self.splits.split(split)
        indices = np.asarray(indices)
        if image_set.images is not None:
            return image_set.images[indices]
        thumbnails = [_thumbnail(image_set.paths[index]) for index in indices]
        return (
            np.stack(thumbnails) if thumbnails else np.zeros((0, THUMBNAIL, THUMBNAIL, 3), np.uint8)
        )

    def record_fields(self, models) -> RecordFields:
        height, width = (int(size) for size in self.config["image_size"])
        return RecordFields(
            input=InputSpec(kind="image", shape=(height, width, 3), range=(0.0, 255.0)),
            preprocessing={
                "image_size": [height, width],
                "resize": self.config["resize"],
                "channels": "RGB",
                "normalization": "inside the model",
            },
            backbone=self.config["backbone"],
        )
