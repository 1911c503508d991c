"""``folder:<dir>``: a user's collection with one sub-folder per class.

The class id is the position of the folder name in sorted order. Images are found recursively
(``tf_bihalf.data.image_files.IMAGE_EXTENSIONS``, any case; hidden files and folders skipped)
and sorted by path within a class. Per class (as for CIFAR-10): ``num_query_per_class`` or, by
default, ``max(1, floor(query_fraction * n_c))`` with ``query_fraction=0.1`` (a class with a
single image goes to the database); database = the rest of the class; train = the database, or
its first ``num_train_per_class`` per class. A relative ``<dir>`` is taken relative to
``data_dir``. The file-check options are those of ``assemble.FILE_OPTIONS``.
"""

from __future__ import annotations

import os

import numpy as np

from tf_bihalf.data.image_files import is_image_file
from tf_bihalf.data.protocols.assemble import FILE_OPTIONS, assemble_file_splits
from tf_bihalf.data.protocols.registry import check_protocol, register, take_options
from tf_bihalf.data.protocols.split_rules import class_id_split
from tf_bihalf.data.protocols.types import ProtocolSplits
from tf_bihalf.errors import InputError


@register("folder:")
def load_folder(directory, data_dir, protocol, seed, options) -> ProtocolSplits:
    """Splits of a class-folder collection (see the module docstring)."""
    protocol = check_protocol("folder", protocol, ("default",))
    options = take_options(
        options,
        {
            "num_query_per_class": None,
            "query_fraction": 0.1,
            "num_train_per_class": None,
            **FILE_OPTIONS,
        },
        "folder",
    )
    if not directory:
        raise InputError("folder dataset needs a directory: 'folder:<dir>'.")
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
        raise InputError(f"{directory!r} has no class sub-folders (one folder per label).")
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
                if is_image_file(file):
                    found.append(os.path.join(current, file))
                else:
                    ignored += 1
        found.sort()
        if not found:
            raise InputError(f"Class folder {os.path.join(directory, name)!r} has no images.")
        paths.extend(found)
        labels.extend([label] * len(found))
    labels_array = np.asarray(labels, dtype=np.int64)
    report = {
        "collection_size": len(paths),
        "source": f"folder {directory}",
        "ignored_non_image_files": ignored,
    }
    index_splits = class_id_split(labels_array, len(class_names), seed, options, report)
    return assemble_file_splits(
        dataset=f"folder:{directory}",
        protocol=protocol,
        seed=seed,
        options=options,
        paths=paths,
        labels=labels_array,
        index_splits=index_splits,
        num_classes=len(class_names),
        class_names=class_names,
        image_root=directory,
        report=report,
    )
