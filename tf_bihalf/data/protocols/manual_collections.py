"""The manual-download collections: Flickr25k, NUS-WIDE (I / II) and MS-COCO
(``docs/paper.md``, "Dataset protocols").

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

They are read from ``data_dir`` (or ``data_dir/<name>`` when that exists; default
``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``, then ``downloads/manual/<name>``) by
``tfds_builders.manual_layouts.read_collection``: a list file, HashNet-style ``database.txt`` +
``test.txt``, or the owners' layout. ``list_file=``, ``image_root=``, ``strip_prefix=`` options
are passed on to it. The file-check options are those of ``assemble.FILE_OPTIONS``.
"""

from __future__ import annotations

import os

import numpy as np

from tf_bihalf.data.protocols.assemble import FILE_OPTIONS, assemble_file_splits
from tf_bihalf.data.protocols.registry import check_protocol, register, take_options
from tf_bihalf.data.protocols.split_rules import (
    most_frequent_columns,
    per_label_query_split,
    random_split,
)
from tf_bihalf.data.protocols.types import ProtocolSplits
from tf_bihalf.data.tfds_builders import manual_layouts
from tf_bihalf.errors import InputError


def _manual_root(name: str, data_dir: str | None) -> str:
    if data_dir is None:
        base = os.environ.get("TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))
        return os.path.join(os.path.expanduser(base), "downloads", "manual", name)
    data_dir = os.path.expanduser(data_dir)
    nested = os.path.join(data_dir, name)
    return nested if os.path.isdir(nested) else data_dir


@register("flickr25k")
@register("nus_wide")
@register("mscoco")
def load_collection(dataset, data_dir, protocol, seed, options) -> ProtocolSplits:
    """Splits of a manual-download collection (see the module docstring)."""
    accepted = ("I", "II") if dataset == "nus_wide" else ("default",)
    protocol = check_protocol(dataset, protocol, accepted)
    layout_defaults = {"list_file": None, "image_root": None, "strip_prefix": None}
    if dataset == "flickr25k":
        defaults = {"num_query": 2000, "num_train": 5000, "unlabeled": "keep"}
    elif dataset == "mscoco":
        defaults = {"num_query": 5000, "num_train": 10000, "unlabeled": "drop"}
    elif protocol == "I":
        defaults = {"num_concepts": 21, "concepts": None, "num_query_per_class": 100}
    else:
        defaults = {"num_concepts": 10, "concepts": None, "num_query": 5000, "num_train": 10500}
    options = take_options(options, {**defaults, **layout_defaults, **FILE_OPTIONS}, dataset)
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
            raise InputError(f"unlabeled must be 'keep' or 'drop'; got {options['unlabeled']!r}.")
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
    return assemble_file_splits(
        dataset=dataset,
        protocol=protocol,
        seed=seed,
        options=options,
        paths=collection.paths,
        labels=labels,
        index_splits=index_splits,
        num_classes=labels.shape[1],
        class_names=class_names,
        image_root=collection.image_root,
        report=report,
    )


def _select_concepts(labels, class_names, options) -> np.ndarray:
    if options["concepts"] is None:
        return most_frequent_columns(labels, int(options["num_concepts"]))
    columns = []
    for concept in options["concepts"]:
        if isinstance(concept, str):
            if not class_names or concept not in class_names:
                raise InputError(f"Unknown concept {concept!r}; known: {class_names}.")
            columns.append(class_names.index(concept))
        else:
            if not 0 <= int(concept) < labels.shape[1]:
                raise InputError(f"Concept column {concept} out of range [0, {labels.shape[1]}).")
            columns.append(int(concept))
    return np.sort(np.unique(columns))
