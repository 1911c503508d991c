"""Image list files: the format the hashing literature uses to describe an image collection.

One image per line, the path first, then its labels, separated by white space:

    images/0001.jpg 0 1 0 0 1        # multi-hot: one 0/1 value per class (C values)
    images/0002.jpg 3                # class id: a single non-negative integer

Empty lines and lines starting with ``#`` are skipped. Relative paths are taken relative to an
image root (by default the list file's directory). A path may contain spaces only when the
number of label columns is given (``num_labels``): the line is then split from the right.

This is the one parser of list files in the project: ``read_list_file`` (paths and labels, for
the protocols and the TFDS builders) and ``read_paths`` (paths only, labels optional, for tools
that encode images).

Example:

>>> entries = read_list_file("lists/all.txt")                  # doctest: +SKIP
>>> entries.paths[0], entries.labels.shape, entries.label_format  # doctest: +SKIP
('/data/coco/images/0001.jpg', (122218, 80), 'multi_hot')
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tf_bihalf.errors import InputError

LABEL_FORMATS = ("auto", "multi_hot", "class_id")


@dataclasses.dataclass
class ListEntries:
    """The parsed content of a list file.

    Attributes:
        paths: image paths, joined with the image root when relative (absolute paths and
            paths under the root are kept as they are otherwise).
        labels: int64 (N,) class ids, or uint8 (N, C) multi-hot.
        label_format: ``"class_id"`` or ``"multi_hot"``.
        line_numbers: 1-based line number of each entry in the file (for error messages).
        raw_paths: the paths as written in the file.
    """

    paths: list[str]
    labels: np.ndarray
    label_format: str
    line_numbers: list[int]
    raw_paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def resolve_path(path: str, image_root: str | None, strip_prefix: str | None = None) -> str:
    """Joins a list-file path with the image root (after removing ``strip_prefix``).

    ``strip_prefix`` removes a leading directory that only existed on the machine where the list
    was made (e.g. ``/home/user/data/coco/``); backslashes are turned into ``/`` first, so Windows
    paths from a list (``C:\\ImageData\\Flickr\\...``) work too.
    """
    path = path.replace("\\", "/")
    if strip_prefix:
        prefix = strip_prefix.replace("\\", "/")
        if path.startswith(prefix):
            path = path[len(prefix) :].lstrip("/")
    if os.path.isabs(path) or image_root is None:
        return path
    return os.path.join(image_root, path)


def read_list_file(
    path: str,
    label_format: str = "auto",
    num_labels: int | None = None,
    image_root: str | None = None,
    strip_prefix: str | None = None,
) -> ListEntries:
    """Reads a list file of ``path label...`` lines.

    Args:
        path: the list file.
        label_format: ``"multi_hot"`` (every line has C values in {0, 1}), ``"class_id"`` (one
            integer >= 0 per line) or ``"auto"``: class id when every line has exactly one label
            value, multi-hot otherwise.
        num_labels: number of label columns; when given, each line is split from the right so
            that the path may contain spaces.
        image_root: directory that relative paths are relative to; default: the list file's
            directory.
        strip_prefix: leading path prefix to remove before joining (see ``resolve_path``).

    Returns:
        ``ListEntries``.

    Raises:
        FileNotFoundError: the list file does not exist.
        ValueError: a malformed line (the message names the file and the line number).
    """
    if label_format not in LABEL_FORMATS:
        raise InputError(f"label_format must be one of {LABEL_FORMATS}; got {label_format!r}.")
    if num_labels is not None and int(num_labels) < 1:
        raise InputError(f"num_labels must be >= 1; got {num_labels}.")
    _check_list_file(path)
    if image_root is None:
        image_root = os.path.dirname(os.path.abspath(path))
    raw_paths: list[str] = []
    raw_labels: list[list[str]] = []
    line_numbers: list[int] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if num_labels is not None:
                tokens = text.rsplit(maxsplit=int(num_labels))
                if len(tokens) != int(num_labels) + 1:
                    raise InputError(
                        f"{path}:{line_number}: expected a path and {num_labels} label values, "
                        f"got {len(tokens)} fields: {text!r}."
                    )
            else:
                tokens = text.split()
                if len(tokens) < 2:
                    raise InputError(
                        f"{path}:{line_number}: expected 'path label...' but the line has no "
                        f"label: {text!r}."
                    )
            raw_paths.append(tokens[0])
            raw_labels.append(tokens[1:])
            line_numbers.append(line_number)
    if not raw_paths:
        raise InputError(f"List file {path!r} has no entries.")

    widths = {len(labels) for labels in raw_labels}
    if label_format == "auto":
        label_format = "class_id" if widths == {1} else "multi_hot"
    labels = _parse_labels(path, raw_labels, line_numbers, label_format)
    paths = [resolve_path(item, image_root, strip_prefix) for item in raw_paths]
    return ListEntries(paths, labels, label_format, line_numbers, raw_paths)


def read_paths(
    path: str, image_root: str | None = None, strip_prefix: str | None = None
) -> tuple[list[str], list[str]]:
    """Reads the image paths of a list file whose lines may or may not carry labels.

    The first field of every line is the image (labels after it are ignored); empty lines and
    ``#`` comments are skipped. For tools that only need the images (``export.encode``).

    Returns:
        ``(ids, paths)``: the paths as written, and resolved on ``image_root`` (default: the
        list file's directory) by ``resolve_path``.

    Raises:
        FileNotFoundError: the list file does not exist.
        InputError: the file names no image.
    """
    _check_list_file(path)
    if image_root is None:
        image_root = os.path.dirname(os.path.abspath(path))
    ids = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                ids.append(fields[0])
    if not ids:
        raise InputError(f"List file {path!r} names no images.")
    return ids, [resolve_path(item, image_root, strip_prefix) for item in ids]


def _check_list_file(path: str) -> None:
    """A list file must be a regular file (a FIFO would block the read forever)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"List file {path!r} does not exist.")
    if not os.path.isfile(path):
        raise InputError(f"List file {path!r} is not a regular file.")


def _parse_labels(path, raw_labels, line_numbers, label_format) -> np.ndarray:
    expected = len(raw_labels[0])
    if label_format == "class_id":
        values = np.empty(len(raw_labels), dtype=np.int64)
        for row, (tokens, line_number) in enumerate(zip(raw_labels, line_numbers, strict=True)):
            if len(tokens) != 1:
                raise InputError(
                    f"{path}:{line_number}: class-id lists need exactly one label per line, "
                    f"got {len(tokens)} values (use a multi-hot list, or pass num_labels when "
                    "paths contain spaces)."
                )
            try:
                values[row] = int(tokens[0])
            except ValueError:
                raise InputError(
                    f"{path}:{line_number}: label {tokens[0]!r} is not an integer."
                ) from None
            if values[row] < 0:
                raise InputError(f"{path}:{line_number}: class id {values[row]} is negative.")
        return values
    values = np.empty((len(raw_labels), expected), dtype=np.uint8)
    for row, (tokens, line_number) in enumerate(zip(raw_labels, line_numbers, strict=True)):
        if len(tokens) != expected:
            raise InputError(
                f"{path}:{line_number}: expected {expected} label values (as on line "
                f"{line_numbers[0]}), got {len(tokens)}. If paths contain spaces, pass "
                "num_labels."
            )
        for column, token in enumerate(tokens):
            if token not in ("0", "1"):
                raise InputError(
                    f"{path}:{line_number}: multi-hot label values must be 0 or 1, got "
                    f"{token!r} in column {column + 1}."
                )
            values[row, column] = token == "1"
    return values


def format_list_lines(paths: list[str], labels: np.ndarray) -> list[str]:
    """Lines ``path l1 ... lC`` (multi-hot) or ``path class_id`` for the given entries."""
    labels = np.asarray(labels)
    if len(paths) != len(labels):
        raise InputError(f"{len(paths)} paths but {len(labels)} labels.")
    lines = []
    for item, label in zip(paths, labels, strict=True):
        if "\n" in item or "\r" in item:
            raise InputError(f"Image path {item!r} contains a line break.")
        if labels.ndim == 1:
            lines.append(f"{item} {int(label)}")
        else:
            lines.append(item + " " + " ".join(str(int(value)) for value in label))
    return lines


def write_list_file(path: str, paths: list[str], labels: np.ndarray) -> None:
    """Writes a list file readable by ``read_list_file`` (with ``num_labels`` if paths have
    spaces)."""
    text = "".join(line + "\n" for line in format_list_lines(paths, labels))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
