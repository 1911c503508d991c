"""Saved splits: the list files of a protocol's splits and their checksummed manifest.

``write_splits(splits, directory)`` writes ``train.txt``, ``query.txt``, ``database.txt``,
``excluded.txt`` (see ``render_split_files``) and ``splits.json`` (dataset, protocol, seed,
options, counts, report, and the SHA-256 and line count of every list file).
``verify_splits(directory, splits)`` re-checks the files against the manifest and, when
``splits`` is given (recomputed on resume), that they are exactly what would be written now.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from absl import logging

from tf_bihalf.checksums import sha256_file
from tf_bihalf.data import list_files
from tf_bihalf.data.protocols.types import SPLIT_NAMES, ProtocolSplits
from tf_bihalf.errors import InputError

MANIFEST_NAME = "splits.json"
MANIFEST_VERSION = 1


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
            raise InputError(f"Split {name!r} has neither paths nor indices to write.")
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
            raise InputError(
                f"Split manifest {manifest_path!r} is not valid JSON: {error}."
            ) from None
    for name, record in manifest.get("files", {}).items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Split file {path!r} named in {manifest_path!r} is missing.")
        actual = sha256_file(path)
        if actual != record["sha256"]:
            raise InputError(
                f"Checksum mismatch for split file {path!r}: the manifest records SHA-256 "
                f"{record['sha256']} but the file has {actual}. The split files were modified "
                "after they were written; restore them or start a new run directory."
            )
    if splits is not None:
        for key in ("dataset", "protocol", "seed"):
            if manifest.get(key) != getattr(splits, key):
                raise InputError(
                    f"Saved splits in {directory!r} are for {key}={manifest.get(key)!r}, not "
                    f"{getattr(splits, key)!r}."
                )
        for name, data in render_split_files(splits).items():
            expected = manifest["files"].get(name, {}).get("sha256")
            if hashlib.sha256(data).hexdigest() != expected:
                raise InputError(
                    f"The {name!r} split computed now differs from the one saved in "
                    f"{directory!r} (did the data or its missing images change?). Restore the "
                    "data or start a new run directory."
                )
    return manifest
