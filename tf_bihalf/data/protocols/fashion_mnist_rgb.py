"""``fashion_mnist_rgb``: Fashion-MNIST as uint8 RGB images, class-balanced.

The pool is the training set followed by the test set (indices 0..59,999 = the 60,000 training
images, 60,000.. = the test images, in their file order). One ``np.random.RandomState(seed)``
draws, for classes 0..9 in turn, ``num_query_per_class`` TEST images -> query (first
permutation per class, over the test labels), then for classes 0..9 in turn
``num_database_per_class`` TRAIN images -> database (over the training labels); train = the
database, or the first ``num_train_per_class`` of each class's database draw. Images are the
28 x 28 gray values repeated in the three RGB channels.

Options (defaults): ``num_query_per_class=100``, ``num_database_per_class=500``,
``num_train_per_class=None`` (train = database). ``data_dir``: a directory with Fashion-MNIST
(``tf_bihalf.data.mnist.load``: Keras' npz, ``fashion_mnist.npz`` or the four IDX files); None
finds it in the cache or fetches it (``python -m tf_bihalf.data.fetch fashion_mnist``).
"""

from __future__ import annotations

import numpy as np
from absl import logging

from tf_bihalf.data.protocols.assemble import add_warnings
from tf_bihalf.data.protocols.registry import check_protocol, register, take_options
from tf_bihalf.data.protocols.types import ImageSet, ProtocolSplits
from tf_bihalf.errors import InputError

NUM_CLASSES = 10


def _per_class(labels, count: int, offset: int, rng, where: str) -> list[np.ndarray]:
    chosen = []
    for label in range(NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        if len(members) < count:
            raise InputError(
                f"Class {label} has {len(members)} {where} images, fewer than the protocol "
                f"needs ({count})."
            )
        chosen.append(members[rng.permutation(len(members))][:count] + offset)
    return chosen


@register("fashion_mnist_rgb")
def load_fashion_mnist_rgb(name, data_dir, protocol, seed, options) -> ProtocolSplits:
    """Fashion-MNIST RGB splits (see the module docstring)."""
    from tf_bihalf.data import mnist  # noqa: PLC0415 - only this dataset needs it

    protocol = check_protocol(name, protocol, ("default",))
    options = take_options(
        options,
        {"num_query_per_class": 100, "num_database_per_class": 500, "num_train_per_class": None},
        name,
    )
    for key in ("num_query_per_class", "num_database_per_class"):
        if int(options[key]) < 1:
            raise InputError(f"{key} must be >= 1; got {options[key]}.")
    num_train = options["num_train_per_class"]
    if num_train is not None and not 1 <= int(num_train) <= int(options["num_database_per_class"]):
        raise InputError(
            f"num_train_per_class must be in [1, num_database_per_class="
            f"{options['num_database_per_class']}]; got {num_train}."
        )
    (x_train, y_train), (x_test, y_test) = mnist.load(
        "fashion_mnist", data_dir=data_dir, pixels="uint8", flatten=False
    )
    rng = np.random.RandomState(seed)
    offset = len(x_train)  # 60,000 for Fashion-MNIST
    query = np.sort(
        np.concatenate(_per_class(y_test, int(options["num_query_per_class"]), offset, rng, "test"))
    )
    database_parts = _per_class(y_train, int(options["num_database_per_class"]), 0, rng, "training")
    database = np.sort(np.concatenate(database_parts))
    if num_train is None:
        train = database
    else:
        train = np.sort(np.concatenate([part[: int(num_train)] for part in database_parts]))
    pool = np.concatenate([x_train, x_test])
    labels = np.concatenate([y_train, y_test]).astype(np.int64)

    def subset(indices: np.ndarray) -> ImageSet:
        indices = indices.astype(np.int64)
        gray = pool[indices]
        return ImageSet(
            labels=labels[indices], indices=indices, images=np.repeat(gray[..., None], 3, axis=-1)
        )

    database_set = subset(database)
    sets = {
        "train": database_set if num_train is None else subset(train),
        "query": subset(query),
        "database": database_set,
    }
    report = {
        "collection_size": len(labels),
        "rule": (
            "per-class permutation (numpy RandomState(seed)): queries from the test set, "
            "database from the training set, classes 0..9 in order"
        ),
        "counts": {"train": len(train), "query": len(query), "database": len(database)},
    }
    add_warnings(name, sets, report)
    logging.info("%s: %s", name, report["counts"])
    return ProtocolSplits(
        dataset=name,
        protocol=protocol,
        num_classes=NUM_CLASSES,
        report=report,
        seed=seed,
        options=dict(options),
        **sets,
    )
