"""Split rules: which items of a collection go to query / database / train, from labels alone.

Every rule takes a ``np.random.RandomState`` (the legacy Mersenne-Twister generator, i.e. what
``np.random.seed(seed)`` seeds) and returns sorted int64 index arrays, so a split is fully
determined by the labels, the seed and the options (``docs/paper.md``, "Dataset protocols").
"""

from __future__ import annotations

import math

import numpy as np

from tf_bihalf.errors import InputError


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
            raise InputError(
                f"Class {label} has {len(members)} images, fewer than the protocol needs "
                f"({wanted} queries + {num_database_per_class or 'at least 1'} database)."
            )
        end = None if num_database_per_class is None else wanted + num_database_per_class
        class_database = members[wanted:end]
        if num_train_per_class is not None and len(class_database) < num_train_per_class:
            raise InputError(
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
        raise InputError(
            f"The protocol needs {num_query} queries and a non-empty database but the dataset "
            f"has {num_items} images."
        )
    if num_train is not None and num_train > num_items - num_query:
        raise InputError(
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
            raise InputError(
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
        raise InputError(f"Cannot select {count} concepts from {labels.shape[1]} label columns.")
    frequency = labels.astype(np.int64).sum(axis=0)
    order = np.lexsort((np.arange(labels.shape[1]), -frequency))
    return np.sort(order[:count])


def class_id_split(
    labels: np.ndarray, num_classes: int, seed: int, options: dict, report: dict
) -> dict:
    """The per-class rule for class-id collections (folders, class-id lists).

    Queries per class: ``options["num_query_per_class"]``, or by default
    ``max(1, floor(query_fraction * n_c))`` (0 for a class with a single image); database = the
    rest of the class; train = the database or its first ``num_train_per_class`` per class.

    Returns:
        ``{"query", "database", "train"}`` index arrays; ``report["rule"]`` is set.
    """
    counts = np.bincount(labels, minlength=num_classes)
    if options["num_query_per_class"] is not None:
        num_query = int(options["num_query_per_class"])
        if num_query < 1:
            raise InputError(f"num_query_per_class must be >= 1; got {num_query}.")
    else:
        fraction = float(options["query_fraction"])
        if not 0.0 < fraction < 1.0:
            raise InputError(f"query_fraction must be in (0, 1); got {fraction}.")
        num_query = [0 if count < 2 else max(1, math.floor(fraction * count)) for count in counts]
        report["classes_without_query"] = [
            label for label, wanted in enumerate(num_query) if wanted == 0
        ]
    rng = np.random.RandomState(seed)
    query, database, train = per_class_split(
        labels, rng, num_query, None, options["num_train_per_class"], num_classes=num_classes
    )
    report["rule"] = "per-class permutation (numpy RandomState(seed), classes in order)"
    return {"query": query, "database": database, "train": train}
