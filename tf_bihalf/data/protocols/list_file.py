"""``list:<file>``: a user's collection described by a list file (``tf_bihalf.data.list_files``).

Class-id lists follow the folder rule (``split_rules.class_id_split``); multi-hot lists the
random rule: ``perm[:num_query]`` query (default ``max(1, floor(query_fraction * N))``), the rest
database, ``perm[num_query:][:num_train]`` train (default: the whole database). Image paths are
relative to ``image_root`` (option), else ``data_dir``, else the list file's directory; a
relative list path is taken relative to ``data_dir``. The file-check options are those of
``assemble.FILE_OPTIONS``.
"""

from __future__ import annotations

import math
import os

import numpy as np

from tf_bihalf.data import list_files
from tf_bihalf.data.protocols.assemble import FILE_OPTIONS, assemble_file_splits
from tf_bihalf.data.protocols.registry import check_protocol, register, take_options
from tf_bihalf.data.protocols.split_rules import class_id_split, random_split
from tf_bihalf.data.protocols.types import ProtocolSplits
from tf_bihalf.errors import InputError


@register("list:")
def load_list(list_path, data_dir, protocol, seed, options) -> ProtocolSplits:
    """Splits of a list-file collection (see the module docstring)."""
    protocol = check_protocol("list", protocol, ("default",))
    options = take_options(
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
            **FILE_OPTIONS,
        },
        "list",
    )
    if not list_path:
        raise InputError("list dataset needs a file: 'list:<file>'.")
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
        index_splits = class_id_split(entries.labels, num_classes, seed, options, report)
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
    return assemble_file_splits(
        dataset=f"list:{list_path}",
        protocol=protocol,
        seed=seed,
        options=options,
        paths=entries.paths,
        labels=entries.labels,
        index_splits=index_splits,
        num_classes=num_classes,
        class_names=None,
        image_root=image_root,
        report=report,
    )
