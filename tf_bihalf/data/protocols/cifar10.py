"""CIFAR-10, protocols "I" and "II" (``docs/paper.md``, "Dataset protocols").

The 60,000 images of TFDS ``cifar10``, pooled as the 50,000 train images sorted by their TFDS
id (``train_00000`` ... = the order of the original binary batches) followed by the 10,000 test
images sorted by id. For class c = 0..9 in turn:
``members = flatnonzero(label == c); members = members[rng.permutation(len(members))]``; the
first 1,000 -> query, the next 5,000 -> database. Train = the database (I, 50,000) or the first
500 per class of each class's database part (II, 5,000). Options: ``num_query_per_class=1000``,
``num_database_per_class=5000``, ``num_train_per_class`` (None for I, 500 for II),
``download=True`` (let TFDS download and prepare CIFAR-10 when ``data_dir`` has no prepared
copy). ``data_dir`` is the TFDS data directory.
"""

from __future__ import annotations

import socket

import numpy as np
from absl import logging

from tf_bihalf.data.protocols.assemble import add_warnings
from tf_bihalf.data.protocols.registry import check_protocol, register, take_options
from tf_bihalf.data.protocols.split_rules import per_class_split
from tf_bihalf.data.protocols.types import ImageSet, ProtocolSplits


@register("cifar10")
def load_cifar10(name, data_dir, protocol, seed, options) -> ProtocolSplits:
    """CIFAR-10 splits (see the module docstring)."""
    protocol = check_protocol(name, protocol, ("I", "II"))
    options = take_options(
        options,
        {
            "num_query_per_class": 1000,
            "num_database_per_class": 5000,
            "num_train_per_class": None if protocol == "I" else 500,
            "download": True,
        },
        name,
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
    sets = {"train": train_set, "query": subset(query), "database": database_set}
    report = {
        "collection_size": len(labels),
        "rule": "per-class permutation (numpy RandomState(seed), classes 0..9 in order)",
        "counts": {"train": len(train), "query": len(query), "database": len(database)},
        "missing": 0,
        "corrupt": 0,
    }
    add_warnings(name, sets, report)
    options = {key: value for key, value in options.items() if key != "download"}
    logging.info("cifar10 protocol %s: %s", protocol, report["counts"])
    return ProtocolSplits(
        dataset=name,
        protocol=protocol,
        num_classes=10,
        report=report,
        seed=seed,
        options=options,
        class_names=class_names,
        **sets,
    )


CIFAR10_HOST = ("www.cs.toronto.edu", 443)  # where TFDS downloads cifar-10-binary.tar.gz from


def check_reachable(host: tuple[str, int], timeout: float = 5.0) -> None:
    """Fails within ``timeout`` seconds when ``host`` cannot be reached (TFDS itself retries a
    failing download for minutes before it gives up).

    Raises:
        FileNotFoundError: the host does not resolve or refuses/drops the connection.
    """
    try:
        with socket.create_connection(host, timeout=timeout):
            pass
    except OSError as error:
        raise FileNotFoundError(
            f"CIFAR-10 is not prepared and its download host {host[0]} cannot be reached "
            f"({error}). Prepare it where the internet is reachable (`tfds build cifar10 "
            "--data_dir=DIR`), copy DIR here and pass data_dir=DIR."
        ) from None


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
        check_reachable(CIFAR10_HOST)
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
