"""On-disk cache of a frozen backbone's features, so training runs only what comes after.

With a frozen backbone and no augmentation, the extractor's output for an image never changes:
``ImageHasher.extractor`` (VGG16: conv -> fc6 -> ReLU) runs once over train / query / database,
the features go to disk, and every training step runs only ``ImageHasher.tail`` (VGG16:
dropout -> fc7 -> ReLU -> dropout -> head -> hash layer). The codes of the query and database
sets are computed from the cached features too (``tail`` with ``training=False``, which equals
the full encoder on the images up to floating-point noise).

Layout (one directory per key, written to a temporary directory and renamed when complete,
so an interrupted extraction never leaves a half cache that looks valid):

    ROOT/<backbone>-<H>x<W>-<key[:16]>/
        model.json                  what the model key was made of
        split-<split_key[:16]>/
            features-00000.npy ...  float32 (rows, D) shards of ``shard_size`` rows
            labels.npy              the split's labels
            manifest.json           count, dim, shards (rows, bytes, SHA-256), the labels'
                                    SHA-256, extraction throughput

Keys. The model key is the SHA-256 of: the backbone name, the preprocessing mode, the image
size, the resize mode, the cache format version, and a digest of every variable of the
extractor (names, shapes, dtypes and bytes, i.e. whichever weights were loaded: ImageNet, a
local file or a random init) plus the SHA-256 of the weights file when one was given. The split
key hashes the split's labels and either its in-memory image bytes or its file paths with each
file's size and modification time. A cache is reused only when both keys match and every
shard file (and ``labels.npy``) is present with the size and SHA-256 recorded when it was
written; otherwise it is rebuilt, with a warning naming the file that differs (bytes overwritten
in a shard would otherwise silently change a finished run's results).

Images that cannot be used: the image pipeline checks the split's files before extraction
(``image_dataset(verify_files="decode")``, cached by content hash); an unusable file stops the
extraction with an ``InputError`` naming it, never with TensorFlow's decoder error (the rows of
the cache must match the split, so a file cannot just be skipped here: ``load_protocol``
excludes such files from the splits in the first place).

Example:

>>> cache = FeatureCache.for_hasher("~/.cache/tf_bihalf/features", hasher)   # doctest: +SKIP
>>> train = cache.load_or_build("train", splits.train)                      # doctest: +SKIP
>>> train.features.shape, train.hit                                         # doctest: +SKIP
((5000, 4096), False)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_bihalf.checksums import sha256_file
from tf_bihalf.data.image_pipeline import image_dataset, usable_files
from tf_bihalf.errors import InputError

CACHE_FORMAT = 2
DEFAULT_SHARD_SIZE = 4096


def weights_digest(model: keras.Model) -> str:
    """SHA-256 over every variable of ``model`` (path, shape, dtype and value bytes)."""
    digest = hashlib.sha256()
    for variable in model.variables:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{variable.path}|{value.shape}|{value.dtype}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def image_set_checksum(image_set) -> str:
    """SHA-256 of a split: its labels and image bytes, or its paths with size and mtime."""
    digest = hashlib.sha256()
    labels = np.ascontiguousarray(image_set.labels)
    digest.update(f"labels|{labels.shape}|{labels.dtype}|".encode())
    digest.update(labels.tobytes())
    if image_set.images is not None:
        images = np.ascontiguousarray(image_set.images)
        digest.update(f"images|{images.shape}|{images.dtype}|".encode())
        digest.update(images.tobytes())
    elif image_set.paths is not None:
        for path in image_set.paths:
            try:
                stat = os.stat(path)
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}|missing\n".encode())
    else:
        raise ValueError("The image set has neither paths nor images.")
    return digest.hexdigest()


@dataclasses.dataclass
class CachedSplit:
    """Features of one split, in memory, as the cache returned them.

    Attributes:
        features: float32 ``(N, D)`` frozen features, in the split's order.
        labels: the split's labels.
        directory: where they are stored.
        hit: True when they were read from an existing cache, False when just extracted.
        images_per_second: extraction throughput when they were built (input pipeline and
            extractor together), from the manifest.
    """

    features: np.ndarray
    labels: np.ndarray
    directory: str
    hit: bool
    images_per_second: float


class FeatureCache:
    """Builds and reuses the frozen features of image splits (see the module docstring).

    Args:
        root: cache root directory (created if needed).
        extractor: the frozen model, raw RGB images -> ``(D,)`` features.
        backbone: backbone name (part of the key and of the directory name).
        preprocessing: the preprocessing mode inside the extractor (part of the key).
        image_size: ``(H, W)`` the images are resized to.
        weights_file: the backbone weights file, if one was loaded (its SHA-256 joins the key).
        resize: the image pipeline's resize mode ("stretch" or "center_crop").
        shard_size: rows per ``.npy`` shard.
    """

    def __init__(
        self,
        root: str,
        extractor: keras.Model,
        backbone: str,
        preprocessing: str,
        image_size,
        weights_file: str | None = None,
        resize: str = "stretch",
        shard_size: int = DEFAULT_SHARD_SIZE,
    ):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1; got {shard_size}.")
        self.root = os.path.expanduser(str(root))
        self.extractor = extractor
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.weights_file = weights_file
        self.resize = resize
        self.shard_size = int(shard_size)
        self._model_key = None

        @tf.function(reduce_retracing=True)
        def extract(images):
            return extractor(images, training=False)

        self._extract = extract

    @classmethod
    def for_hasher(cls, root: str, hasher, **kwargs) -> FeatureCache:
        """A cache for ``hasher.extractor`` (an ``ImageHasher``)."""
        source = hasher.weights_source
        weights_file = source if source not in (None, "imagenet") else None
        return cls(
            root,
            hasher.extractor,
            backbone=hasher.backbone_name,
            preprocessing=hasher.backbone.preprocessing,
            image_size=hasher.image_size,
            weights_file=weights_file,
            **kwargs,
        )

    def model_description(self) -> dict:
        weights_file_sha256 = None
        if self.weights_file is not None and os.path.isfile(self.weights_file):
            weights_file_sha256 = sha256_file(self.weights_file)
        return {
            "format": CACHE_FORMAT,
            "backbone": self.backbone,
            "preprocessing": self.preprocessing,
            "image_size": list(self.image_size),
            "resize": self.resize,
            "weights_file": self.weights_file,
            "weights_file_sha256": weights_file_sha256,
            "weights_digest": weights_digest(self.extractor),
        }

    @property
    def model_directory(self) -> str:
        if self._model_key is None:
            description = self.model_description()
            key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
            height, width = self.image_size
            self._model_key = key
            self._model_dir = os.path.join(
                self.root, f"{self.backbone}-{height}x{width}-{key[:16]}"
            )
            os.makedirs(self._model_dir, exist_ok=True)
            with open(os.path.join(self._model_dir, "model.json"), "w") as handle:
                json.dump({**description, "key": key}, handle, indent=2, sort_keys=True)
        return self._model_dir

    def split_directory(self, image_set) -> str:
        """The split's directory: named by its checksum, so identical splits (CIFAR-10 (I)'s
        train and database) share one extraction."""
        return os.path.join(self.model_directory, f"split-{image_set_checksum(image_set)[:16]}")

    def load_or_build(self, name: str, image_set, batch_size: int = 64) -> CachedSplit:
        """The split's features: read from the cache when valid, else extracted and stored."""
        if len(image_set) == 0:
            raise ValueError(f"Split {name!r} is empty.")
        directory = self.split_directory(image_set)
        cached, problem = self._read(directory, image_set)
        if cached is not None:
            logging.info("Feature cache hit: %s (%d x %d).", directory, *cached.features.shape)
            return cached
        if os.path.exists(directory):
            logging.warning(
                "Feature cache at %s is damaged (%s): rebuilding it.", directory, problem
            )
            shutil.rmtree(directory)
        logging.info("Feature cache miss: extracting %d images of %r.", len(image_set), name)
        self._build(name, directory, image_set, batch_size)
        cached, problem = self._read(directory, image_set)
        if cached is None:  # pragma: no cover - only if the disk changed under us
            raise RuntimeError(
                f"The feature cache just written to {directory} does not read back: {problem}."
            )
        cached.hit = False
        return cached

    def _read(self, directory: str, image_set) -> tuple[CachedSplit | None, str]:
        """The cached split, or None and why not (checksums, sizes, shapes, labels)."""
        manifest_path = os.path.join(directory, "manifest.json")
        if not os.path.exists(manifest_path):
            return None, "no manifest"
        try:
            with open(manifest_path) as handle:
                manifest = json.load(handle)
            shards = []
            files = [*manifest["shards"], manifest["labels"]]
            for record in files:
                path = os.path.join(directory, record["file"])
                if os.path.getsize(path) != record["bytes"]:
                    return (
                        None,
                        f"{record['file']} has {os.path.getsize(path)} bytes, not {record['bytes']}",
                    )
                if sha256_file(path) != record["sha256"]:
                    return (
                        None,
                        f"{record['file']} does not have the SHA-256 recorded when it was written",
                    )
            for record in manifest["shards"]:
                shards.append(np.load(os.path.join(directory, record["file"]), allow_pickle=False))
            features = np.concatenate(shards, axis=0) if shards else np.zeros((0, 0), "float32")
            labels = np.load(
                os.path.join(directory, manifest["labels"]["file"]), allow_pickle=False
            )
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
            return None, f"unreadable ({type(error).__name__}: {error})"
        if features.shape != (manifest["count"], manifest["dim"]) or len(labels) != len(image_set):
            return None, f"features {features.shape} do not match the manifest or the split"
        if features.shape[0] != len(image_set) or not np.array_equal(labels, image_set.labels):
            return None, "the labels differ from the split's"
        return CachedSplit(features, labels, directory, True, manifest["images_per_second"]), ""

    def _build(self, name: str, directory: str, image_set, batch_size: int) -> None:
        os.makedirs(self.model_directory, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".building-", dir=self.model_directory)
        try:
            dataset = image_dataset(
                image_set,
                image_size=self.image_size,
                batch_size=batch_size,
                resize=self.resize,
                on_decode_error="raise",
            )
            progress = keras.utils.Progbar(len(image_set), unit_name="image")
            buffer, shards, count, dim = [], [], 0, None
            start = time.perf_counter()

            def flush():
                block = np.concatenate(buffer, axis=0)
                file = f"features-{len(shards):05d}.npy"
                np.save(os.path.join(scratch, file), block)
                shards.append({"rows": int(len(block)), **_file_record(scratch, file)})
                buffer.clear()

            for images, _ in _named_decode_errors(dataset, image_set):
                features = self._extract(images).numpy().astype(np.float32, copy=False)
                features = features.reshape(len(features), -1)
                dim = features.shape[1]
                while len(features):
                    room = self.shard_size - sum(len(b) for b in buffer)
                    buffer.append(features[:room])
                    features = features[room:]
                    count += len(buffer[-1])
                    if sum(len(b) for b in buffer) == self.shard_size:
                        flush()
                progress.update(count)
            if buffer:
                flush()
            seconds = time.perf_counter() - start
            if count != len(image_set):
                raise RuntimeError(
                    f"Extracted {count} feature rows for {len(image_set)} images of the split."
                )
            np.save(os.path.join(scratch, "labels.npy"), np.asarray(image_set.labels))
            manifest = {
                "name": name,
                "count": count,
                "dim": int(dim),
                "dtype": "float32",
                "shards": shards,
                "labels": _file_record(scratch, "labels.npy"),
                "seconds": seconds,
                "images_per_second": count / max(seconds, 1e-9),
            }
            with open(os.path.join(scratch, "manifest.json"), "w") as handle:
                json.dump(manifest, handle, indent=2)
            os.replace(scratch, directory)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise


def _file_record(directory: str, file: str) -> dict:
    path = os.path.join(directory, file)
    return {"file": file, "bytes": os.path.getsize(path), "sha256": sha256_file(path)}


def _named_decode_errors(dataset: tf.data.Dataset, image_set):
    """Iterates ``dataset``; a decode error (a file changed after it was checked) becomes an
    ``InputError`` naming the unusable files of ``image_set``."""
    try:
        yield from dataset
    except tf.errors.InvalidArgumentError as error:
        if image_set.paths is None:
            raise
        try:  # A fresh check (no cache) finds the file(s) that failed.
            usable_files(
                list(image_set.paths), np.asarray(image_set.labels), "decode", None, False, "raise"
            )
        except InputError as named:
            raise named from None
        raise InputError(f"Decoding an image of the split failed: {error.message}") from None
