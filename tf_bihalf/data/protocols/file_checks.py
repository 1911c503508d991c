"""Checking a collection's image files, in parallel threads, with decode results cached.

``check_image_files(paths, verify)`` returns ``{position: FileProblem(reason, detail)}`` for the
files that cannot be used. ``verify``:

- ``"none"``: no check;
- ``"exists"``: a regular, non-empty file within ``max_file_bytes``
  (``tf_bihalf.data.image_files.open_regular_file``);
- ``"header"``: also a header Pillow reads, in a format TensorFlow decodes, within
  ``max_pixels``;
- ``"decode"`` (the default of every protocol): also TensorFlow decodes the whole image exactly
  as the input pipeline does, so no file that passes can stop a run later.

Decode results are cached in ``<cache_dir>/decode-v1-tf<version>.json`` (default cache dir:
``$TF_BIHALF_DATA/image_checks`` or ``~/.cache/tf_bihalf/image_checks``), keyed by the SHA-256
of the file's bytes, with an index from (absolute path, size, modification time) to that hash:
a rerun on unchanged files only stats them; a changed file is hashed and, if its content is
new, decoded again. The cache is written atomically (a concurrent writer can only make a later
run redo some checks). The pixel and size limits are applied on every run, not cached.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import sys
import tempfile
import typing

from absl import logging

from tf_bihalf.data import image_files
from tf_bihalf.errors import InputError

VERIFY_MODES = ("none", "exists", "header", "decode")
CACHE_VERSION = 1


class FileProblem(typing.NamedTuple):
    """Why a file is unusable: ``reason`` (one word of ``image_files.REASONS``) and a sentence."""

    reason: str
    detail: str


def default_cache_dir() -> str:
    """``$TF_BIHALF_DATA/image_checks``, or ``~/.cache/tf_bihalf/image_checks``."""
    from tf_bihalf.data.mnist import default_cache_dir as data_cache_dir  # noqa: PLC0415

    return os.path.join(data_cache_dir(), "image_checks")


class DecodeCache:
    """Decode results by content hash, plus a (path, size, mtime) -> hash index (see above)."""

    def __init__(self, directory: str):
        import tensorflow as tf  # noqa: PLC0415 - the decoder's version keys the cache

        self.directory = os.path.expanduser(directory)
        self.path = os.path.join(self.directory, f"decode-v{CACHE_VERSION}-tf{tf.__version__}.json")
        self.files: dict[str, list] = {}
        self.results: dict[str, dict] = {}
        self.changed = False
        stored = self._load()
        self.files.update(stored["files"])
        self.results.update(stored["results"])

    def _load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as handle:
                stored = json.load(handle)
            if isinstance(stored.get("files"), dict) and isinstance(stored.get("results"), dict):
                return stored
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as error:
            logging.warning("Ignoring the unreadable image check cache %s (%s).", self.path, error)
        return {"files": {}, "results": {}}

    def known_hash(self, path: str, status: os.stat_result) -> str | None:
        record = self.files.get(os.path.abspath(path))
        if (
            record is not None
            and record[0] == status.st_size
            and record[1] == status.st_mtime_ns
            and record[2] in self.results
        ):
            return record[2]
        return None

    def remember(self, path: str, status: os.stat_result, digest: str, result: dict) -> None:
        self.files[os.path.abspath(path)] = [status.st_size, status.st_mtime_ns, digest]
        self.results[digest] = result
        self.changed = True

    def save(self) -> None:
        """Merges with what another process may have written meanwhile, then replaces the file."""
        if not self.changed:
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            stored = self._load()
            stored["files"].update(self.files)
            stored["results"].update(self.results)
            handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(stored, file, separators=(",", ":"))
            os.replace(temporary, self.path)
            self.changed = False
        except OSError as error:
            logging.warning("Could not write the image check cache %s (%s).", self.path, error)


def check_image_files(
    paths: list[str],
    verify: str = "decode",
    limits: image_files.ImageLimits | None = None,
    num_threads: int = 8,
    cache_dir: str | None | bool = None,
) -> dict[int, FileProblem]:
    """Checks image files; returns ``{position: FileProblem}`` for those that fail.

    Args:
        paths: the image files.
        verify: "none" | "exists" | "header" | "decode" (see the module docstring).
        limits: pixel and file-size caps (default ``ImageLimits()``: 50 megapixels, 256 MiB).
        num_threads: threads the checks run in (they wait on the disk and on TensorFlow's
            decoders, which release the GIL).
        cache_dir: where decode results are cached (None: ``default_cache_dir()``; False: no
            cache).

    Reasons: see ``tf_bihalf.data.image_files.REASONS``. A progress bar is shown for more
    than 20,000 files.
    """
    if verify not in VERIFY_MODES:
        raise InputError(f"verify must be one of {VERIFY_MODES}; got {verify!r}.")
    if verify == "none" or not paths:
        return {}
    limits = limits or image_files.ImageLimits()
    cache = None
    if verify == "decode" and cache_dir is not False:
        cache = DecodeCache(cache_dir or default_cache_dir())

    def check(path: str) -> FileProblem | None:
        try:
            if verify == "exists":
                image_files.open_regular_file(path, limits.max_file_bytes).close()
            elif verify == "header":
                with image_files.open_regular_file(path, limits.max_file_bytes) as handle:
                    image_files.read_header(path, handle, limits.max_pixels)
            else:
                _check_decodes(path, limits, cache)
        except image_files.ImageFileError as error:
            return FileProblem(error.reason, error.detail)
        except OSError as error:
            return FileProblem("unreadable", f"cannot be read ({error.strerror or error})")
        return None

    try:
        results = _map_with_progress(check, list(paths), num_threads, f"Checking images ({verify})")
    finally:
        if cache is not None:
            cache.save()
    return {position: problem for position, problem in enumerate(results) if problem}


def _check_decodes(path: str, limits: image_files.ImageLimits, cache: DecodeCache | None) -> None:
    """Raises ``ImageFileError`` unless the file passes every check up to a full decode."""
    data = None
    with image_files.open_regular_file(path, limits.max_file_bytes) as handle:
        status = os.fstat(handle.fileno())
        digest = cache.known_hash(path, status) if cache is not None else None
        if digest is None:
            data = handle.read(limits.max_file_bytes + 1)
            if len(data) > limits.max_file_bytes:
                raise image_files.ImageFileError(
                    path,
                    "too_large",
                    f"has more than the limit max_file_bytes={limits.max_file_bytes} bytes",
                )
            digest = hashlib.sha256(data).hexdigest()
    result = cache.results.get(digest) if cache is not None else None
    if result is None:
        try:
            image_format, width, height = image_files.read_header(path, data, sys.maxsize)
            result = {"format": image_format, "width": width, "height": height, "decode": None}
        except image_files.ImageFileError as error:
            if error.reason == "too_many_pixels":  # depends on Pillow's limit: not cached
                raise
            result = {"header_error": [error.reason, error.detail]}
    if "header_error" in result:
        if cache is not None:
            cache.remember(path, status, digest, result)
        raise image_files.ImageFileError(path, *result["header_error"])
    image_files.check_pixels(path, result["width"], result["height"], limits.max_pixels)
    if result["decode"] is None:
        if data is None:  # pragma: no cover - a cached header always comes with a decode result
            data = image_files.read_image_file(path, limits.max_file_bytes)
        result = {**result, "decode": image_files.decode_error(data) or ""}
        if cache is not None:
            cache.remember(path, status, digest, result)
    elif cache is not None and data is not None:
        cache.remember(path, status, digest, result)
    if result["decode"]:
        raise image_files.ImageFileError(
            path, "corrupt", f"cannot be decoded by TensorFlow ({result['decode']})"
        )


def _map_with_progress(function, items: list, num_threads: int, title: str) -> list:
    if len(items) <= 20000:
        with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
            return list(pool.map(function, items))
    import keras  # noqa: PLC0415 - only for the progress bar of large collections

    logging.info("%s: %d files", title, len(items))
    progress = keras.utils.Progbar(len(items), unit_name="file")
    results: list = []
    chunk = 10000
    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        for start in range(0, len(items), chunk):
            results.extend(pool.map(function, items[start : start + chunk]))
            progress.update(len(results))
    return results
