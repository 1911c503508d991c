"""Image datasets and the paper's retrieval protocols: query / database / train splits.

``load_protocol(dataset, data_dir, protocol, seed, **options)`` returns a ``ProtocolSplits``
with three ``ImageSet`` splits. Every rule below uses one ``np.random.RandomState(seed)`` (the
legacy Mersenne-Twister generator, i.e. what ``np.random.seed(seed)`` seeds), so a split is fully
determined by the labels, the seed and the options. Splits are returned in ascending collection
order.

Datasets and protocols (REFERENCE: Li & van Gemert, AAAI 2021, "Datasets"):

- ``cifar10`` "I" / "II": the 60,000 images of TFDS ``cifar10``, pooled as the 50,000 train
  images sorted by their TFDS id (``train_00000`` ... = the order of the original binary batches)
  followed by the 10,000 test images sorted by id. For class c = 0..9 in turn:
  ``members = flatnonzero(label == c); members = members[rng.permutation(len(members))]``; the
  first 1,000 -> query, the next 5,000 -> database. Train = the database (I, 50,000) or the
  first 500 per class of each class's database part (II, 5,000). Options:
  ``num_query_per_class=1000``, ``num_database_per_class=5000``, ``num_train_per_class`` (None for
  I, 500 for II), ``download=True`` (let TFDS download and prepare CIFAR-10 when ``data_dir`` has
  no prepared copy).
- ``flickr25k``: 24 concepts; 2,000 random queries; database = all the rest; train = 5,000
  random images of the database. ``perm = rng.permutation(N)``: query = ``perm[:2000]``, train =
  ``perm[2000:7000]``. Images without any label stay in the collection (``unlabeled="keep"``, as
  the reference code does: a query without labels scores AP 0); ``unlabeled="drop"`` removes them
  before splitting. Either way their number is in ``report["unlabeled"]``.
- ``nus_wide`` "I": the 21 concepts carried by most images (column sums over the whole
  collection; ties -> lower column first), labels restricted to those columns (in their original
  column order), images with none of them dropped. Queries: one permutation ``perm`` of the
  remaining images; for each selected concept in column order, the first 100 images of ``perm``
  that carry it and were not taken by an earlier concept (2,100 distinct queries). Database =
  train = all the rest. "II": the 10 most frequent concepts, same filtering; ``perm[:5000]`` ->
  query, the rest database, ``perm[5000:15500]`` (10,500) -> train. Options ``num_concepts``,
  ``concepts`` (names or column indices instead of the most frequent), ``num_query_per_class``
  (I), ``num_query``, ``num_train`` (II).
- ``mscoco``: the 80 categories; images without any category are dropped (the "pruned" set of
  122,218 images; ``unlabeled="keep"`` keeps them); ``perm[:5000]`` query, the rest database,
  ``perm[5000:15000]`` train.
- ``folder:<dir>``: one sub-folder per class (class id = position of the folder name in sorted
  order); images found recursively (``.jpg .jpeg .png .bmp .gif``, any case; hidden files
  skipped), sorted by path within a class. Per class (as for CIFAR): ``num_query_per_class`` or,
  by default, ``max(1, floor(query_fraction * n_c))`` with ``query_fraction=0.1`` (a class with a
  single image goes to the database); database = the rest of the class; train = the database, or
  its first ``num_train_per_class`` per class.
- ``list:<file>``: a list file (``tf_bihalf.data.list_files``). Class-id lists follow the folder
  rule; multi-hot lists the random rule: ``perm[:num_query]`` query (default
  ``max(1, floor(query_fraction * N))``), the rest database, ``perm[num_query:][:num_train]``
  train (default: the whole database). Image paths are relative to ``image_root`` (option), else
  ``data_dir``, else the list file's directory.

The manual-download collections (flickr25k, nus_wide, mscoco) are read from ``data_dir`` (or
``data_dir/<name>`` when that exists; default ``~/tensorflow_datasets/downloads/manual/<name>``)
by ``tfds_builders.manual_layouts.read_collection``: a list file, HashNet-style
``database.txt`` + ``test.txt``, or the owners' layout. ``list_file=``, ``image_root=``,
``strip_prefix=`` options are passed on to it.

Missing and unreadable images. Splits are computed from the labels alone, before any image file
is looked at, so a missing file never moves another image to a different split. Then the files
are checked (option ``verify``): ``"none"``; ``"exists"`` (a regular, non-empty file);
``"header"`` (default; also: Pillow can read the header and the format is one TensorFlow decodes:
JPEG, PNG, BMP, GIF); ``"decode"`` (TensorFlow decodes the whole image exactly as the input
pipeline does; slow on large collections). Images that fail are removed from their splits,
counted in ``report`` ("missing", "corrupt", "unsupported", "excluded" per split), logged with
``absl.logging``, kept in ``ProtocolSplits.excluded`` and written to ``excluded.txt`` by
``write_splits``. ``options["on_missing"]="raise"`` makes any excluded image an error instead.

Example:

>>> splits = load_protocol("cifar10", protocol="I")      # doctest: +SKIP
>>> len(splits.query), len(splits.database), len(splits.train)   # doctest: +SKIP
(10000, 50000, 50000)
>>> write_splits(splits, "runs/cifar/splits")            # doctest: +SKIP

Saved splits: ``write_splits`` (list files + ``splits.json`` with SHA-256), ``verify_splits``
(checksums, and equality with freshly computed splits), ``read_splits`` (load them back to
resume a run with exactly the same splits).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os

import numpy as np
from absl import logging

from tf_bihalf.checksums import sha256_file
from tf_bihalf.data import list_files
from tf_bihalf.data.tfds_builders import manual_layouts

SPLIT_NAMES = ("train", "query", "database")
VERIFY_MODES = ("none", "exists", "header", "decode")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Pillow format names of the files TensorFlow's decode_image reads (MPO: multi-picture JPEG).
_DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF")
MANIFEST_NAME = "splits.json"
MANIFEST_VERSION = 1


@dataclasses.dataclass
class ImageSet:
    """One split of an image dataset.

    Attributes:
        labels: int64 (N,) class ids, or uint8 (N, C) multi-hot.
        paths: image files (file-based datasets), or None.
        images: uint8 (N, H, W, 3) RGB (in-memory datasets such as CIFAR-10), or None.
        indices: int64 (N,) position of each item in the dataset's full collection (the pooled
            60,000 images for CIFAR-10, the list / folder order otherwise), or None.
    """

    labels: np.ndarray
    paths: list[str] | None = None
    images: np.ndarray | None = None
    indices: np.ndarray | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels)
        if self.labels.ndim not in (1, 2):
            raise ValueError(
                f"labels must be class ids (N,) or multi-hot (N, C); got shape {self.labels.shape}."
            )
        count = len(self.labels)
        if self.paths is not None and len(self.paths) != count:
            raise ValueError(f"{len(self.paths)} paths but {count} labels.")
        if self.images is not None and (
            np.ndim(self.images) != 4 or np.shape(self.images)[-1] != 3 or len(self.images) != count
        ):
            raise ValueError(
                f"images must be uint8 (N, H, W, 3) with N = {count}; got {np.shape(self.images)}."
            )
        if self.indices is not None:
            self.indices = np.asarray(self.indices, dtype=np.int64)
            if self.indices.shape != (count,):
                raise ValueError(f"indices must have shape ({count},); got {self.indices.shape}.")

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass
class ProtocolSplits:
    """The train / query / database splits of a dataset under a protocol.

    Attributes:
        dataset, protocol, num_classes: what was loaded.
        train, query, database: the splits.
        report: counts (collection size, split sizes, missing / corrupt / unsupported / unlabeled
            images, excluded per split), the rule used, the selected classes.
        seed: the protocol seed.
        options: the protocol options used (JSON-serialisable).
        class_names: names of the classes (label columns), when known.
        image_root: directory the file paths are written relative to by ``write_splits``.
        excluded: per split, ``(path_or_index, reason)`` of the images removed because they are
            missing or unreadable.
    """

    dataset: str
    protocol: str
    num_classes: int
    train: ImageSet
    query: ImageSet
    database: ImageSet
    report: dict
    seed: int = 0
    options: dict = dataclasses.field(default_factory=dict)
    class_names: list[str] | None = None
    image_root: str | None = None
    excluded: dict = dataclasses.field(default_factory=dict)

    def split(self, name: str) -> ImageSet:
        """The split called ``name`` ("train", "query" or "database")."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLIT_NAMES}.")
        return getattr(self, name)


# ---------------------------------------------------------------------------------------------
# Split rules (labels only, no files).


def per_class_split(
    class_ids: np.ndarray,
    rng: np.random.RandomState,
    num_query_per_class: int | list[int],
    num_database_per_class: int | None = None,
    num_train_per_class: int | None = None,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class split (CIFAR-10 and class-id datasets).

    For c = 0, 1, ..., C-1 in turn: ``members = flatnonzero(class_ids == c)`` permuted by
    ``rng.permutation(len(members))``; the first ``num_query_per_class`` -> query, the next
    ``num_database_per_class`` (None: all the rest) -> database, the first
    ``num_train_per_class`` of that database part (None: all of it) -> train.

    Returns:
        (query, database, train) sorted int64 index arrays.
    """
    class_ids = np.asarray(class_ids)
    num_classes = int(class_ids.max()) + 1 if num_classes is None else num_classes
    query, database, train = [], [], []
    for label in range(num_classes):
        members = np.flatnonzero(class_ids == label)
        members = members[rng.permutation(len(members))]
        wanted = (
            num_query_per_class[label]
            if isinstance(num_query_per_class, list | tuple)
            else num_query_per_class
        )
        needed = wanted + (num_database_per_class or 0)
        if len(members) < needed or (num_database_per_class is None and len(members) <= wanted):
            raise ValueError(
                f"Class {label} has {len(members)} images, fewer than the protocol needs "
                f"({wanted} queries + {num_database_per_class or 'at least 1'} database)."
            )
        end = None if num_database_per_class is None else wanted + num_database_per_class
        class_database = members[wanted:end]
        if num_train_per_class is not None and len(class_database) < num_train_per_class:
            raise ValueError(
                f"Class {label} has {len(class_database)} database images, fewer than "
                f"num_train_per_class={num_train_per_class}."
            )
        query.append(members[:wanted])
        database.append(class_database)
        train.append(class_database[:num_train_per_class])
    return tuple(
        np.sort(np.concatenate(part)).astype(np.int64) for part in (query, database, train)
    )


def random_split(
    num_items: int,
    rng: np.random.RandomState,
    num_query: int,
    num_train: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random split (Flickr25k, NUS-WIDE II, MS-COCO, multi-hot lists).

    ``perm = rng.permutation(num_items)``; query = ``perm[:num_query]``, database =
    ``perm[num_query:]``, train = ``perm[num_query:num_query + num_train]`` (None: the database).

    Returns:
        (query, database, train) sorted int64 index arrays.
    """
    if not 0 < num_query < num_items:
        raise ValueError(
            f"The protocol needs {num_query} queries and a non-empty database but the dataset "
            f"has {num_items} images."
        )
    if num_train is not None and num_train > num_items - num_query:
        raise ValueError(
            f"The protocol needs {num_train} training images from a database of "
            f"{num_items - num_query}."
        )
    perm = rng.permutation(num_items)
    database = perm[num_query:]
    train = database if num_train is None else database[:num_train]
    return tuple(np.sort(part).astype(np.int64) for part in (perm[:num_query], database, train))


def per_label_query_split(
    labels: np.ndarray, rng: np.random.RandomState, num_query_per_class: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class queries for multi-label data (NUS-WIDE I).

    ``perm = rng.permutation(N)``; for each label column c in order, the first
    ``num_query_per_class`` images of ``perm`` that carry label c and are not yet queries become
    queries. Database = train = everything else.

    Returns:
        (query, database, train) sorted int64 index arrays.
    """
    labels = np.asarray(labels)
    perm = rng.permutation(len(labels))
    taken = np.zeros(len(labels), dtype=bool)
    for column in range(labels.shape[1]):
        candidates = perm[(labels[perm, column] > 0) & ~taken[perm]]
        if len(candidates) < num_query_per_class:
            raise ValueError(
                f"Label column {column} has only {len(candidates)} images left for "
                f"{num_query_per_class} queries."
            )
        taken[candidates[:num_query_per_class]] = True
    query = np.flatnonzero(taken).astype(np.int64)
    database = np.flatnonzero(~taken).astype(np.int64)
    return query, database, database


def most_frequent_columns(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` label columns carried by most images (ties: lower column first),
    returned in ascending column order."""
    labels = np.asarray(labels)
    if count > labels.shape[1]:
        raise ValueError(f"Cannot select {count} concepts from {labels.shape[1]} label columns.")
    frequency = labels.astype(np.int64).sum(axis=0)
    order = np.lexsort((np.arange(labels.shape[1]), -frequency))
    return np.sort(order[:count])


# ---------------------------------------------------------------------------------------------
# Image file verification.


def check_image_files(
    paths: list[str], verify: str = "header", num_threads: int = 8
) -> dict[int, str]:
    """Checks image files; returns ``{position: reason}`` for those that fail.

    Reasons: ``"missing"`` (no such file, or empty), ``"corrupt"`` (unreadable header, or
    TensorFlow cannot decode it), ``"unsupported"`` (an image format TensorFlow does not decode).
    ``verify``: "none" | "exists" | "header" | "decode" (see the module docstring). The file
    checks run in ``num_threads`` threads (they wait on the disk); a progress bar is shown for
    more than 20,000 files.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}; got {verify!r}.")
    if verify == "none" or not paths:
        return {}
    check = _check_header if verify == "header" else _check_exists
    results = _map_with_progress(check, paths, num_threads, f"Checking images ({verify})")
    failures = {position: reason for position, reason in enumerate(results) if reason}
    if verify == "decode":
        remaining = [position for position in range(len(paths)) if position not in failures]
        decoded = _decodable_positions([paths[position] for position in remaining])
        for local, position in enumerate(remaining):
            if local not in decoded:
                failures[position] = "corrupt"
    return failures


def _check_exists(path: str) -> str | None:
    try:
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            return "missing"
    except OSError:
        return "missing"
    return None


def _check_header(path: str) -> str | None:
    from PIL import Image

    reason = _check_exists(path)
    if reason:
        return reason
    try:
        with Image.open(path) as image:
            image_format = image.format
    except Exception:  # noqa: BLE001  (any failure to read the header means unusable)
        return "corrupt"
    return None if image_format in _DECODABLE_FORMATS else "unsupported"


def _map_with_progress(function, items: list, num_threads: int, title: str) -> list:
    if len(items) <= 20000:
        with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
            return list(pool.map(function, items, chunksize=256))
    import keras

    logging.info("%s: %d files", title, len(items))
    progress = keras.utils.Progbar(len(items), unit_name="file")
    results: list = []
    chunk = 10000
    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        for start in range(0, len(items), chunk):
            results.extend(pool.map(function, items[start : start + chunk], chunksize=256))
            progress.update(len(results))
    return results


def _decodable_positions(paths: list[str]) -> set[int]:
    """Positions of the files TensorFlow decodes as the input pipeline does."""
    import tensorflow as tf

    from tf_bihalf.data.image_pipeline import decode_image_file

    if not paths:
        return set()
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), paths))
    dataset = dataset.map(
        lambda position, path: (position, tf.shape(decode_image_file(path))[0]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.ignore_errors().batch(4096)
    decoded: set[int] = set()
    for positions, _ in dataset.as_numpy_iterator():
        decoded.update(int(position) for position in positions)
    return decoded


# ---------------------------------------------------------------------------------------------
# Loading.


def load_protocol(
    dataset: str,
    data_dir: str | None = None,
    protocol: str | None = None,
    seed: int = 0,
    **options,
) -> ProtocolSplits:
    """Loads ``dataset`` and splits it by ``protocol`` (see the module docstring for the rules).

    Args:
        dataset: "cifar10", "flickr25k", "nus_wide", "mscoco", "folder:<dir>" or "list:<file>".
        data_dir: where the data lives: the TFDS data directory for cifar10; the collection's
            directory (or its parent) for flickr25k / nus_wide / mscoco; the base for relative
            folder / list paths.
        protocol: "I" or "II" for cifar10 and nus_wide (default "I"); others have one protocol.
        seed: the protocol seed (0 in the paper).
        **options: per-dataset options (documented in the module docstring), plus ``verify`` and
            ``on_missing`` ("report" | "raise") for file-based datasets.

    Returns:
        ``ProtocolSplits``.

    Raises:
        ValueError: unknown dataset / protocol / option, or a dataset too small for the protocol.
        FileNotFoundError: the data is not where it should be.
    """
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset must be a non-empty string; got {dataset!r}.")
    seed = int(seed)
    if dataset == "cifar10":
        return _load_cifar10(data_dir, protocol or "I", seed, options)
    if dataset in manual_layouts.COLLECTIONS:
        return _load_collection(dataset, data_dir, protocol, seed, options)
    if dataset.startswith("folder:"):
        return _load_folder(dataset[len("folder:") :], data_dir, protocol, seed, options)
    if dataset.startswith("list:"):
        return _load_list(dataset[len("list:") :], data_dir, protocol, seed, options)
    raise ValueError(
        f"Unknown dataset {dataset!r}; expected cifar10, flickr25k, nus_wide, mscoco, "
        "folder:<dir> or list:<file>."
    )


def _take_options(options: dict, defaults: dict, dataset: str) -> dict:
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for dataset {dataset!r}; accepted: {sorted(defaults)}."
        )
    return {**defaults, **options}


def _check_protocol(dataset: str, protocol: str | None, accepted: tuple[str, ...]) -> str:
    protocol = accepted[0] if protocol is None else str(protocol)
    if protocol not in accepted:
        raise ValueError(f"Dataset {dataset!r} has protocols {accepted}; got {protocol!r}.")
    return protocol


_FILE_OPTIONS = {"verify": "header", "on_missing": "report"}


def _load_cifar10(data_dir, protocol, seed, options) -> ProtocolSplits:
    protocol = _check_protocol("cifar10", protocol, ("I", "II"))
    options = _take_options(
        options,
        {
            "num_query_per_class": 1000,
            "num_database_per_class": 5000,
            "num_train_per_class": None if protocol == "I" else 500,
            "download": True,
        },
        "cifar10",
    )
    images, labels, class_names = load_cifar10_pool(data_dir, download=options["download"])
    rng = np.random.RandomState(seed)
    query, database, train = per_class_split(
        labels,
        rng,
        options["num_query_per_class"],
        options["num_database_per_class"],
        options["num_train_per_class"],
        num_classes=10,
    )

    def subset(indices: np.ndarray) -> ImageSet:
        return ImageSet(labels=labels[indices], images=images[indices], indices=indices)

    database_set = subset(database)
    train_set = database_set if np.array_equal(train, database) else subset(train)
    report = {
        "collection_size": len(labels),
        "rule": "per-class permutation (numpy RandomState(seed), classes 0..9 in order)",
        "counts": {"train": len(train), "query": len(query), "database": len(database)},
        "missing": 0,
        "corrupt": 0,
    }
    options = {key: value for key, value in options.items() if key != "download"}
    logging.info("cifar10 protocol %s: %s", protocol, report["counts"])
    return ProtocolSplits(
        "cifar10",
        protocol,
        10,
        train_set,
        subset(query),
        database_set,
        report,
        seed,
        options,
        class_names,
    )


def load_cifar10_pool(
    data_dir: str | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The 60,000 CIFAR-10 images from TFDS: train sorted by id, then test sorted by id.

    Returns:
        (images uint8 (60000, 32, 32, 3), labels int64 (60000,), class names).

    Raises:
        FileNotFoundError: CIFAR-10 is not prepared in ``data_dir`` and ``download`` is false or
            the download failed.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar10", data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(
                f"CIFAR-10 is not prepared in {builder.data_dir!r}. Prepare it where the internet "
                "is reachable (`tfds build cifar10 --data_dir=DIR`) and pass data_dir=DIR."
            )
        try:
            builder.download_and_prepare()
        except Exception as error:  # noqa: BLE001  (TFDS raises many kinds of network errors)
            raise FileNotFoundError(
                f"Could not download and prepare CIFAR-10 into {builder.data_dir!r} ({error}). "
                "Prepare it where the internet is reachable (`tfds build cifar10 "
                "--data_dir=DIR`), copy DIR here and pass data_dir=DIR."
            ) from error
    images, labels = [], []
    for split in ("train", "test"):
        dataset = builder.as_dataset(split=split, shuffle_files=False, batch_size=4096)
        ids, split_images, split_labels = [], [], []
        for batch in tfds.as_numpy(dataset):
            ids.extend(item.decode() for item in batch["id"])
            split_images.append(batch["image"])
            split_labels.append(batch["label"])
        order = np.argsort(np.asarray(ids), kind="stable")
        images.append(np.concatenate(split_images)[order])
        labels.append(np.concatenate(split_labels)[order])
    class_names = builder.info.features["label"].names
    return np.concatenate(images), np.concatenate(labels).astype(np.int64), list(class_names)


def _manual_root(name: str, data_dir: str | None) -> str:
    if data_dir is None:
        base = os.environ.get("TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))
        return os.path.join(os.path.expanduser(base), "downloads", "manual", name)
    data_dir = os.path.expanduser(data_dir)
    nested = os.path.join(data_dir, name)
    return nested if os.path.isdir(nested) else data_dir


def _load_collection(dataset, data_dir, protocol, seed, options) -> ProtocolSplits:
    accepted = ("I", "II") if dataset == "nus_wide" else ("default",)
    protocol = _check_protocol(dataset, protocol, accepted)
    layout_defaults = {"list_file": None, "image_root": None, "strip_prefix": None}
    if dataset == "flickr25k":
        defaults = {"num_query": 2000, "num_train": 5000, "unlabeled": "keep"}
    elif dataset == "mscoco":
        defaults = {"num_query": 5000, "num_train": 10000, "unlabeled": "drop"}
    elif protocol == "I":
        defaults = {"num_concepts": 21, "concepts": None, "num_query_per_class": 100}
    else:
        defaults = {"num_concepts": 10, "concepts": None, "num_query": 5000, "num_train": 10500}
    options = _take_options(options, {**defaults, **layout_defaults, **_FILE_OPTIONS}, dataset)
    root = _manual_root(dataset, data_dir)
    collection = manual_layouts.read_collection(
        dataset,
        root,
        list_file=options["list_file"],
        image_root=options["image_root"],
        strip_prefix=options["strip_prefix"],
    )
    labels = collection.labels
    class_names = collection.class_names
    pool = np.arange(len(collection), dtype=np.int64)
    report: dict = {"collection_size": len(collection), "source": collection.source}
    rng = np.random.RandomState(seed)
    if dataset == "nus_wide":
        columns = _select_concepts(labels, class_names, options)
        labels = labels[:, columns]
        class_names = [class_names[column] for column in columns] if class_names else None
        keep = labels.any(axis=1)
        report["selected_columns"] = [int(column) for column in columns]
        report["selected_concepts"] = class_names
        report["dropped_without_selected_concept"] = int((~keep).sum())
        pool = pool[keep]
        if protocol == "I":
            rule = "per-label queries over one permutation (NUS-WIDE I)"
            query, database, train = per_label_query_split(
                labels[pool], rng, options["num_query_per_class"]
            )
        else:
            rule = "random permutation: query, then train from the database (NUS-WIDE II)"
            query, database, train = random_split(
                len(pool), rng, options["num_query"], options["num_train"]
            )
    else:
        if options["unlabeled"] not in ("keep", "drop"):
            raise ValueError(f"unlabeled must be 'keep' or 'drop'; got {options['unlabeled']!r}.")
        unlabeled = ~labels.any(axis=1)
        report["unlabeled"] = int(unlabeled.sum())
        report["unlabeled_policy"] = options["unlabeled"]
        if options["unlabeled"] == "drop":
            pool = pool[~unlabeled]
        rule = "random permutation: query, then train from the database"
        query, database, train = random_split(
            len(pool), rng, options["num_query"], options["num_train"]
        )
    report["rule"] = rule + " (numpy RandomState(seed))"
    index_splits = {"query": pool[query], "database": pool[database], "train": pool[train]}
    return _finish_file_splits(
        dataset,
        protocol,
        seed,
        options,
        collection.paths,
        labels,
        index_splits,
        labels.shape[1],
        class_names,
        collection.image_root,
        report,
    )


def _select_concepts(labels, class_names, options) -> np.ndarray:
    if options["concepts"] is None:
        return most_frequent_columns(labels, int(options["num_concepts"]))
    columns = []
    for concept in options["concepts"]:
        if isinstance(concept, str):
            if not class_names or concept not in class_names:
                raise ValueError(f"Unknown concept {concept!r}; known: {class_names}.")
            columns.append(class_names.index(concept))
        else:
            if not 0 <= int(concept) < labels.shape[1]:
                raise ValueError(f"Concept column {concept} out of range [0, {labels.shape[1]}).")
            columns.append(int(concept))
    return np.sort(np.unique(columns))


def _load_folder(directory, data_dir, protocol, seed, options) -> ProtocolSplits:
    protocol = _check_protocol("folder", protocol, ("default",))
    options = _take_options(
        options,
        {
            "num_query_per_class": None,
            "query_fraction": 0.1,
            "num_train_per_class": None,
            **_FILE_OPTIONS,
        },
        "folder",
    )
    if not directory:
        raise ValueError("folder dataset needs a directory: 'folder:<dir>'.")
    if data_dir is not None and not os.path.isabs(directory):
        directory = os.path.join(data_dir, directory)
    directory = os.path.normpath(os.path.expanduser(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Folder dataset directory {directory!r} does not exist.")
    class_names = sorted(
        entry
        for entry in os.listdir(directory)
        if not entry.startswith(".") and os.path.isdir(os.path.join(directory, entry))
    )
    if not class_names:
        raise ValueError(f"{directory!r} has no class sub-folders (one folder per label).")
    paths: list[str] = []
    labels: list[int] = []
    ignored = 0
    for label, name in enumerate(class_names):
        found = []
        for current, folders, files in os.walk(os.path.join(directory, name)):
            folders[:] = [folder for folder in folders if not folder.startswith(".")]
            for file in files:
                if file.startswith("."):
                    continue
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(os.path.join(current, file))
                else:
                    ignored += 1
        found.sort()
        if not found:
            raise ValueError(f"Class folder {os.path.join(directory, name)!r} has no images.")
        paths.extend(found)
        labels.extend([label] * len(found))
    labels_array = np.asarray(labels, dtype=np.int64)
    report = {
        "collection_size": len(paths),
        "source": f"folder {directory}",
        "ignored_non_image_files": ignored,
    }
    index_splits = _class_id_split(labels_array, len(class_names), seed, options, report)
    return _finish_file_splits(
        f"folder:{directory}",
        protocol,
        seed,
        options,
        paths,
        labels_array,
        index_splits,
        len(class_names),
        class_names,
        directory,
        report,
    )


def _class_id_split(labels, num_classes, seed, options, report) -> dict:
    counts = np.bincount(labels, minlength=num_classes)
    if options["num_query_per_class"] is not None:
        num_query = int(options["num_query_per_class"])
        if num_query < 1:
            raise ValueError(f"num_query_per_class must be >= 1; got {num_query}.")
    else:
        fraction = float(options["query_fraction"])
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"query_fraction must be in (0, 1); got {fraction}.")
        num_query = [0 if count < 2 else max(1, math.floor(fraction * count)) for count in counts]
    rng = np.random.RandomState(seed)
    query, database, train = per_class_split(
        labels, rng, num_query, None, options["num_train_per_class"], num_classes=num_classes
    )
    report["rule"] = "per-class permutation (numpy RandomState(seed), classes in order)"
    return {"query": query, "database": database, "train": train}


def _load_list(list_path, data_dir, protocol, seed, options) -> ProtocolSplits:
    protocol = _check_protocol("list", protocol, ("default",))
    options = _take_options(
        options,
        {
            "label_format": "auto",
            "num_labels": None,
            "image_root": None,
            "strip_prefix": None,
            "num_query": None,
            "num_query_per_class": None,
            "query_fraction": 0.1,
            "num_train": None,
            "num_train_per_class": None,
            **_FILE_OPTIONS,
        },
        "list",
    )
    if not list_path:
        raise ValueError("list dataset needs a file: 'list:<file>'.")
    if data_dir is not None and not os.path.isabs(list_path):
        list_path = os.path.join(data_dir, list_path)
    list_path = os.path.normpath(os.path.expanduser(list_path))
    image_root = options["image_root"] or data_dir or os.path.dirname(os.path.abspath(list_path))
    entries = list_files.read_list_file(
        list_path,
        label_format=options["label_format"],
        num_labels=options["num_labels"],
        image_root=image_root,
        strip_prefix=options["strip_prefix"],
    )
    report = {"collection_size": len(entries), "source": f"list {list_path}"}
    if entries.label_format == "class_id":
        num_classes = int(entries.labels.max()) + 1
        index_splits = _class_id_split(entries.labels, num_classes, seed, options, report)
    else:
        num_classes = entries.labels.shape[1]
        report["unlabeled"] = int((~entries.labels.any(axis=1)).sum())
        num_query = options["num_query"]
        if num_query is None:
            num_query = max(1, math.floor(float(options["query_fraction"]) * len(entries)))
        query, database, train = random_split(
            len(entries), np.random.RandomState(seed), int(num_query), options["num_train"]
        )
        report["rule"] = "random permutation: query, then train from the database"
        index_splits = {"query": query, "database": database, "train": train}
    return _finish_file_splits(
        f"list:{list_path}",
        protocol,
        seed,
        options,
        entries.paths,
        entries.labels,
        index_splits,
        num_classes,
        None,
        image_root,
        report,
    )


def _finish_file_splits(
    dataset,
    protocol,
    seed,
    options,
    paths,
    labels,
    index_splits,
    num_classes,
    class_names,
    image_root,
    report,
) -> ProtocolSplits:
    """Verifies the files of the split images, removes the failures, assembles the result."""
    if options["on_missing"] not in ("report", "raise"):
        raise ValueError(f"on_missing must be 'report' or 'raise'; got {options['on_missing']!r}.")
    used = np.unique(np.concatenate(list(index_splits.values())))
    failures_local = check_image_files([paths[index] for index in used], options["verify"])
    failures = {int(used[local]): reason for local, reason in failures_local.items()}
    reasons = ("missing", "corrupt", "unsupported")
    for reason in reasons:
        report[reason] = sum(1 for value in failures.values() if value == reason)
    report["verify"] = options["verify"]
    report["counts_before_exclusion"] = {name: len(index_splits[name]) for name in SPLIT_NAMES}
    sets, excluded = {}, {}
    for name in SPLIT_NAMES:
        indices = index_splits[name]
        bad = np.asarray([index in failures for index in indices.tolist()], dtype=bool)
        excluded[name] = [(paths[index], failures[index]) for index in indices[bad].tolist()]
        kept = indices[~bad]
        sets[name] = ImageSet(
            labels=labels[kept], paths=[paths[index] for index in kept.tolist()], indices=kept
        )
    report["excluded"] = {name: len(excluded[name]) for name in SPLIT_NAMES}
    report["counts"] = {name: len(sets[name]) for name in SPLIT_NAMES}
    if failures:
        examples = [f"{paths[index]} ({reason})" for index, reason in list(failures.items())[:5]]
        message = (
            f"{dataset}: {len(failures)} of {len(used)} images are unusable "
            f"({', '.join(f'{report[reason]} {reason}' for reason in reasons)}); they are "
            f"excluded from their splits (excluded per split: {report['excluded']}). "
            f"First: {examples}."
        )
        if options["on_missing"] == "raise":
            raise FileNotFoundError(message)
        logging.warning(message)
    logging.info("%s protocol %s: %s", dataset, protocol, report["counts"])
    json_options = {key: value for key, value in options.items()}
    return ProtocolSplits(
        dataset,
        protocol,
        int(num_classes),
        sets["train"],
        sets["query"],
        sets["database"],
        report,
        seed,
        json_options,
        class_names,
        image_root,
        excluded,
    )


# ---------------------------------------------------------------------------------------------
# Split files.


def _relative(path: str, root: str | None) -> str:
    if root is None:
        return path
    absolute_root = os.path.abspath(root)
    absolute = os.path.abspath(path)
    if absolute == absolute_root or absolute.startswith(absolute_root.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, absolute_root)
    return path


def render_split_files(splits: ProtocolSplits) -> dict[str, bytes]:
    """The bytes of every split file ``write_splits`` writes (except the manifest).

    File-based datasets: ``<split>.txt`` with ``path l1 ... lC`` (multi-hot) or ``path class_id``
    lines, paths relative to ``splits.image_root`` when inside it. In-memory datasets (CIFAR-10):
    ``index label`` lines, the index into the pooled collection. ``excluded.txt``: ``split reason
    path`` for every image removed because it is missing or unreadable.
    """
    files: dict[str, bytes] = {}
    for name in SPLIT_NAMES:
        image_set = splits.split(name)
        if image_set.paths is not None:
            items = [_relative(path, splits.image_root) for path in image_set.paths]
        elif image_set.indices is not None:
            items = [str(int(index)) for index in image_set.indices]
        else:
            raise ValueError(f"Split {name!r} has neither paths nor indices to write.")
        lines = list_files.format_list_lines(items, image_set.labels)
        files[f"{name}.txt"] = "".join(line + "\n" for line in lines).encode("utf-8")
    excluded_lines = [
        f"{name} {reason} {_relative(str(item), splits.image_root)}\n"
        for name in SPLIT_NAMES
        for item, reason in splits.excluded.get(name, [])
    ]
    files["excluded.txt"] = "".join(excluded_lines).encode("utf-8")
    return files


def _json_safe(value):
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _manifest(splits: ProtocolSplits, files: dict[str, bytes]) -> dict:
    first = splits.train
    return {
        "format_version": MANIFEST_VERSION,
        "dataset": splits.dataset,
        "protocol": splits.protocol,
        "seed": splits.seed,
        "num_classes": splits.num_classes,
        "label_format": "class_id" if np.asarray(first.labels).ndim == 1 else "multi_hot",
        "entries": "paths" if first.paths is not None else "indices",
        "image_root": None if splits.image_root is None else os.path.abspath(splits.image_root),
        "class_names": splits.class_names,
        "options": _json_safe(splits.options),
        "counts": {name: len(splits.split(name)) for name in SPLIT_NAMES},
        "report": _json_safe(splits.report),
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "lines": data.count(b"\n")}
            for name, data in files.items()
        },
    }


def write_splits(splits: ProtocolSplits, directory: str) -> dict:
    """Writes the split list files and the ``splits.json`` manifest into ``directory``.

    Files: ``train.txt``, ``query.txt``, ``database.txt``, ``excluded.txt`` (see
    ``render_split_files``) and ``splits.json`` holding the dataset, protocol, seed, options,
    counts, report and the SHA-256 and line count of every list file.

    Returns:
        The manifest (as written).
    """
    os.makedirs(directory, exist_ok=True)
    files = render_split_files(splits)
    manifest = _manifest(splits, files)
    for name, data in {**files, MANIFEST_NAME: _dump(manifest)}.items():
        temporary = os.path.join(directory, name + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, os.path.join(directory, name))
    logging.info("Wrote %s splits to %s: %s", splits.dataset, directory, manifest["counts"])
    return manifest


def _dump(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def verify_splits(directory: str, splits: ProtocolSplits | None = None) -> dict:
    """Re-checks the split files in ``directory`` against their manifest.

    Every list file named in ``splits.json`` must exist and have the recorded SHA-256. When
    ``splits`` is given (e.g. recomputed by ``load_protocol`` on resume), its dataset, protocol,
    seed and the content of every split must also equal what was written.

    Returns:
        The manifest.

    Raises:
        FileNotFoundError: no manifest or a missing list file.
        ValueError: a checksum mismatch, or ``splits`` differs from the saved splits.
    """
    manifest_path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(f"No split manifest {manifest_path!r}.")
    with open(manifest_path, encoding="utf-8") as handle:
        try:
            manifest = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"Split manifest {manifest_path!r} is not valid JSON: {error}."
            ) from None
    for name, record in manifest.get("files", {}).items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Split file {path!r} named in {manifest_path!r} is missing.")
        actual = sha256_file(path)
        if actual != record["sha256"]:
            raise ValueError(
                f"Checksum mismatch for split file {path!r}: the manifest records SHA-256 "
                f"{record['sha256']} but the file has {actual}. The split files were modified "
                "after they were written; restore them or start a new run directory."
            )
    if splits is not None:
        for key in ("dataset", "protocol", "seed"):
            if manifest.get(key) != getattr(splits, key):
                raise ValueError(
                    f"Saved splits in {directory!r} are for {key}={manifest.get(key)!r}, not "
                    f"{getattr(splits, key)!r}."
                )
        for name, data in render_split_files(splits).items():
            expected = manifest["files"].get(name, {}).get("sha256")
            if hashlib.sha256(data).hexdigest() != expected:
                raise ValueError(
                    f"The {name!r} split computed now differs from the one saved in "
                    f"{directory!r} (did the data or its missing images change?). Restore the "
                    "data or start a new run directory."
                )
    return manifest


def read_splits(
    directory: str, data_dir: str | None = None, image_root: str | None = None
) -> ProtocolSplits:
    """Reads splits saved by ``write_splits`` back (after ``verify_splits`` checks them).

    Resuming a run this way reuses the exact saved splits without re-reading the collection or
    re-checking its files. File-based splits get their paths from the list files (joined with
    ``image_root``, default: the root recorded in the manifest; pass another one when the data
    moved) and ``indices=None``. Index-based splits (cifar10) are looked up in the CIFAR-10 pool
    from ``data_dir``; the labels in the files must match the pool's.

    Raises:
        FileNotFoundError / ValueError: as ``verify_splits``; the pool's labels differ.
    """
    manifest = verify_splits(directory)
    multi_hot = manifest["label_format"] == "multi_hot"
    root = image_root or manifest.get("image_root")
    pool = None
    if manifest["entries"] == "indices":
        if manifest["dataset"] != "cifar10":
            raise ValueError(f"Index-based splits of {manifest['dataset']!r} cannot be read.")
        pool = load_cifar10_pool(data_dir, download=False)
    sets = {}
    for name in SPLIT_NAMES:
        path = os.path.join(directory, f"{name}.txt")
        if manifest["files"][f"{name}.txt"]["lines"] == 0:
            shape = (0, manifest["num_classes"]) if multi_hot else (0,)
            labels = np.zeros(shape, np.uint8 if multi_hot else np.int64)
            items: list[str] = []
        else:
            entries = list_files.read_list_file(
                path,
                label_format=manifest["label_format"],
                num_labels=manifest["num_classes"] if multi_hot else 1,
                image_root=root,
            )
            labels = entries.labels
            items = entries.raw_paths if pool is not None else entries.paths
        if pool is None:
            sets[name] = ImageSet(labels=labels, paths=items)
            continue
        indices = np.asarray([int(item) for item in items], dtype=np.int64)
        if len(indices) and (indices.max() >= len(pool[1]) or indices.min() < 0):
            raise ValueError(f"{path}: an index lies outside the CIFAR-10 pool of {len(pool[1])}.")
        if not np.array_equal(pool[1][indices], labels):
            raise ValueError(
                f"{path}: the labels do not match the CIFAR-10 pool in {data_dir!r} (a different "
                "copy or order of CIFAR-10?)."
            )
        sets[name] = ImageSet(labels=labels, images=pool[0][indices], indices=indices)
    excluded: dict[str, list] = {name: [] for name in SPLIT_NAMES}
    with open(os.path.join(directory, "excluded.txt"), encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                name, reason, item = line.rstrip("\n").split(" ", 2)
                excluded[name].append((list_files.resolve_path(item, root), reason))
    return ProtocolSplits(
        manifest["dataset"],
        manifest["protocol"],
        manifest["num_classes"],
        sets["train"],
        sets["query"],
        sets["database"],
        manifest["report"],
        manifest["seed"],
        manifest["options"],
        manifest.get("class_names"),
        root,
        excluded,
    )
