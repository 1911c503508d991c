"""``HammingIndex``: exact Hamming search over binary codes, with ids, saved without pickle.

Results are identical whichever backend runs them:

- ``search(queries, k)`` returns, per query, the k smallest (distance, id) pairs sorted by
  distance, then id (so ties at the k-th distance are cut by id, not by backend internals);
- ``range_search(queries, radius)`` returns every item at distance <= radius (inclusive), in
  the faiss layout ``(lims, distances, ids)``: the results of query i are
  ``distances[lims[i]:lims[i+1]]`` and ``ids[lims[i]:lims[i+1]]``, sorted by (distance, id).

Ids are int64 (default: 0, 1, 2, ... in the order codes are added) or strings. The index keeps
its codes sorted by id, which is how backends that break ties by storage position break them
by id.

On disk an index is a directory (``save`` / ``load``)::

    INDEX_DIR/manifest.json   format, format_version, bits, count, backend, ids_dtype, the
                              SHA-256 of both arrays and of the manifest itself
    INDEX_DIR/codes.npy       packed uint8 codes (count, ceil(bits/8)), in id order
    INDEX_DIR/ids.npy         int64 or unicode ids (count,), sorted

``load`` checks the manifest's own SHA-256 (``manifest_sha256``, over its other entries as
canonical JSON: an edited ``bits`` or ``count`` would otherwise load and return wrong
distances), then the SHA-256 of both arrays, and loads them with ``allow_pickle=False``.

Example:

>>> index = HammingIndex(bits=4, backend="numpy")
>>> index.add(np.array([[1, 1, 1, 1], [1, 1, 1, -1], [-1, -1, -1, -1]]), ids=[10, 20, 30])
>>> index.search(np.array([[1, 1, -1, -1]]), k=2)
(array([[1, 2]], dtype=int32), array([[20, 10]]))
>>> lims, distances, ids = index.range_search(np.array([[1, 1, 1, 1]]), radius=1)
>>> lims, distances, ids
(array([0, 2]), array([0, 1], dtype=int32), array([10, 20]))
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import shutil
import tempfile

import numpy as np
from absl import logging

from tf_bihalf.checksums import sha256_file
from tf_bihalf.codes import as_packed_codes, check_bits, packed_width
from tf_bihalf.search import backends

__all__ = ["FORMAT", "FORMAT_VERSION", "HammingIndex"]

FORMAT = "tf_bihalf.hamming_index"
FORMAT_VERSION = 2  # 2: the manifest carries its own checksum (manifest_sha256).
_CODES_FILE = "codes.npy"
_IDS_FILE = "ids.npy"
_MANIFEST_FILE = "manifest.json"
_MAX_MANIFEST_BYTES = 1 << 20


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of a manifest's entries other than ``manifest_sha256``, as canonical JSON."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _as_ids(ids, count: int) -> np.ndarray:
    """Validates user ids: a 1-D array of ``count`` integers (-> int64) or strings (-> unicode)."""
    array = np.asarray(ids)
    if array.ndim != 1 or array.shape[0] != count:
        raise ValueError(
            f"ids must be a 1-D array with one id per code ({count}); got shape {array.shape}."
        )
    if array.dtype.kind in "iu":
        if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
            raise ValueError("integer ids must fit in int64.")
        return array.astype(np.int64)
    if array.dtype.kind == "U":
        return array
    if array.dtype.kind == "S":
        return array.astype(str)
    if array.dtype.kind == "O" and all(isinstance(value, str) for value in array):
        return array.astype(str)
    raise ValueError(f"ids must be integers or strings; got dtype {array.dtype}.")


def packed_index_codes(codes, bits: int, name: str) -> np.ndarray:
    """``codes`` (one code or a batch, any form ``tf_bihalf.codes`` accepts) packed for an index
    of ``bits``-bit codes; a mismatch names the index's code length."""
    array = np.asarray(codes)
    if array.ndim == 1:
        array = array[None, :]
    try:
        packed, _ = as_packed_codes(array, bits, name)
    except ValueError as error:
        raise ValueError(f"{error} (this index holds {bits}-bit codes)") from None
    return packed


class HammingIndex:
    """Exact Hamming-distance index over binary codes with a pluggable backend.

    Args:
      bits: the code length K.
      backend: ``"auto"`` (default: ``"faiss"`` when faiss is importable, else ``"numpy"``),
        ``"numpy"`` (brute-force popcount, no extra dependency), ``"faiss"``
        (``IndexBinaryFlat``) or ``"faiss_multihash"`` (``IndexBinaryMultiHash``: multi-index
        hashing, exact and fast for small-radius ``range_search``).

    Codes are ±1 or {0,1} (n, K) arrays or packed uint8 (n, ceil(K/8)); a 1-D code is one query.
    """

    def __init__(self, bits: int, backend: str = "auto"):
        self.bits = check_bits(bits)
        self._backend = backends.make_backend(backend, self.bits)
        self._packed = np.zeros((0, packed_width(self.bits)), dtype=np.uint8)
        self._ids = np.zeros(0, dtype=np.int64)

    # -- properties ------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """Name of the backend in use (``"numpy"``, ``"faiss"`` or ``"faiss_multihash"``)."""
        return self._backend.name

    @property
    def ids(self) -> np.ndarray:
        """The stored ids, sorted (a copy)."""
        return self._ids.copy()

    @property
    def codes(self) -> np.ndarray:
        """The stored packed uint8 codes, in id order (a copy)."""
        return self._packed.copy()

    def __len__(self) -> int:
        return self._ids.shape[0]

    @property
    def ntotal(self) -> int:
        """Number of stored codes (faiss' name for ``len``)."""
        return len(self)

    def __repr__(self) -> str:
        return f"HammingIndex(bits={self.bits}, backend={self.backend!r}, count={len(self)})"

    # -- building --------------------------------------------------------------------------------

    def _packed_codes(self, codes, name: str) -> np.ndarray:
        return packed_index_codes(codes, self.bits, name)

    def add(self, codes, ids=None) -> None:
        """Adds codes with ids (default: consecutive integers after the largest int id).

        Raises:
          ValueError: codes of another length or form, ids of the wrong length, kind (int vs
            string, which must match the ids already stored) or duplicate ids.
        """
        packed = self._packed_codes(codes, "codes")
        count = packed.shape[0]
        if ids is None:
            if self._ids.dtype.kind != "i":
                raise ValueError("this index holds string ids, so add() needs ids for new codes.")
            first = int(self._ids.max()) + 1 if len(self) else 0
            new_ids = np.arange(first, first + count, dtype=np.int64)
        else:
            new_ids = _as_ids(ids, count)
            if len(self) and (new_ids.dtype.kind == "U") != (self._ids.dtype.kind == "U"):
                raise ValueError(
                    f"ids must all be integers or all strings; the index holds {self._ids.dtype} ids "
                    f"and got {new_ids.dtype}."
                )
        if count == 0:
            return
        if np.unique(new_ids).size != count:
            raise ValueError("ids must be unique; the new ids contain duplicates.")
        if len(self) and np.isin(new_ids, self._ids).any():
            duplicate = new_ids[np.isin(new_ids, self._ids)][0].item()
            raise ValueError(f"ids must be unique; id {duplicate!r} is already in the index.")
        order = np.argsort(new_ids, kind="stable")
        new_ids, packed = new_ids[order], packed[order]
        if not len(self):
            self._ids = new_ids
            self._packed = packed
            self._backend.add(packed)
            return
        appended = new_ids[0] > self._ids[-1]
        ids_all = np.concatenate([self._ids, new_ids])
        packed_all = np.concatenate([self._packed, packed])
        if appended:
            self._backend.add(packed)
        else:
            order = np.argsort(ids_all, kind="stable")
            ids_all, packed_all = ids_all[order], packed_all[order]
            self._backend.reset()
            self._backend.add(packed_all)
        self._ids, self._packed = ids_all, packed_all

    def reset(self) -> None:
        """Removes every code and id."""
        self._backend.reset()
        self._packed = self._packed[:0].copy()
        self._ids = np.zeros(0, dtype=np.int64)

    # -- queries ---------------------------------------------------------------------------------

    def _check_queries(self, query_codes) -> np.ndarray:
        if not len(self):
            raise ValueError("the index is empty: add() codes before searching.")
        return self._packed_codes(query_codes, "query_codes")

    def search(self, query_codes, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes of each query.

        Args:
          query_codes: (Q, K) ±1/{0,1} or (Q, ceil(K/8)) packed uint8 (one 1-D code is a query).
          k: how many neighbours; values above ``len(self)`` return every code.

        Returns:
          ``(distances, ids)``: int32 (Q, min(k, len)) and the ids (int64 or str) of the k
          smallest (distance, id) pairs, sorted by distance then id.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}.")
        queries = self._check_queries(query_codes)
        k = min(int(k), len(self))
        if not queries.shape[0]:  # No queries: empty results, identical for every backend.
            return np.zeros((0, k), np.int32), self._ids[:0].reshape(0, k)
        distances, positions = self._backend.search(queries, k)
        return distances, self._ids[positions]

    def range_search(self, query_codes, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every code within Hamming distance ``radius`` (inclusive) of each query.

        Returns:
          ``(lims, distances, ids)``: int64 (Q+1,), int32 (total,), ids (total,). The results of
          query i are at ``lims[i]:lims[i+1]``, sorted by (distance, id).
        """
        if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer; got {radius!r}.")
        queries = self._check_queries(query_codes)
        if not queries.shape[0]:
            return np.zeros(1, np.int64), np.zeros(0, np.int32), self._ids[:0]
        lims, distances, positions = self._backend.range_search(
            queries, min(int(radius), self.bits)
        )
        return lims, distances, self._ids[positions]

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path: str, overwrite: bool = False) -> str:
        """Writes the index to directory ``path`` (created; atomic replace with ``overwrite``).

        Returns:
          The directory path.
        """
        path = os.fspath(path)
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)) and not overwrite:
            raise FileExistsError(
                f"{path} exists and is not an empty directory; pass overwrite=True."
            )
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".hamming_index.", dir=parent)
        try:
            np.save(os.path.join(staging, _CODES_FILE), self._packed, allow_pickle=False)
            np.save(os.path.join(staging, _IDS_FILE), self._ids, allow_pickle=False)
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "bits": self.bits,
                "count": len(self),
                "backend": self.backend,
                "ids_dtype": self._ids.dtype.str,
                "files": {
                    name: {"sha256": sha256_file(os.path.join(staging, name))}
                    for name in (_CODES_FILE, _IDS_FILE)
                },
            }
            manifest["manifest_sha256"] = manifest_digest(manifest)
            with open(os.path.join(staging, _MANIFEST_FILE), "w") as handle:
                json.dump(manifest, handle, indent=2)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
            os.replace(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str, backend: str | None = None) -> HammingIndex:
        """Loads an index saved by ``save``, verifying checksums.

        Args:
          path: the index directory.
          backend: the backend to use; default: the saved one when it is available here, else
            "auto" (results do not depend on the backend).

        Raises:
          FileNotFoundError: a missing directory or file.
          ValueError: an unknown format or version, a checksum mismatch, or inconsistent arrays.
        """
        path = os.fspath(path)
        manifest_path = os.path.join(path, _MANIFEST_FILE)
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(
                f"{manifest_path} not found: {path} is not a saved HammingIndex."
            )
        with open(manifest_path, "rb") as handle:
            text = handle.read(_MAX_MANIFEST_BYTES + 1)
        if len(text) > _MAX_MANIFEST_BYTES:
            raise ValueError(
                f"{manifest_path} is larger than a manifest can be; rebuild the index."
            )
        try:
            manifest = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{manifest_path} is not valid JSON: {error}") from None
        if not isinstance(manifest, dict):
            raise ValueError(f"{manifest_path} is not a JSON object.")
        if manifest.get("format") != FORMAT:
            hint = ""
            if manifest.get("format") == "tf_bihalf.sharded_hamming_index":
                hint = (
                    " It is a sharded index: open it with tf_bihalf.search.sharded."
                    "ShardedHammingIndex(path) or tf_bihalf.search.stores.open_index(path)."
                )
            raise ValueError(
                f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}.{hint}"
            )
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{manifest_path}: format_version {manifest.get('format_version')!r} is not supported "
                f"(this version reads {FORMAT_VERSION}); rebuild the index from its codes "
                "(python -m tf_bihalf.search build)."
            )
        expected_digest = manifest.get("manifest_sha256")
        actual_digest = manifest_digest(manifest)
        if expected_digest != actual_digest:
            raise ValueError(
                f"checksum mismatch for {manifest_path}: its entries hash to {actual_digest}, "
                f"manifest_sha256 says {expected_digest}. The manifest was modified or is "
                "corrupt; rebuild the index."
            )
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise ValueError(f"{manifest_path} lists no files.")
        arrays = {}
        for name in (_CODES_FILE, _IDS_FILE):
            file_path = os.path.join(path, name)
            if not os.path.isfile(file_path):
                raise FileNotFoundError(f"{file_path} not found (listed in {manifest_path}).")
            entry = files.get(name)
            expected = entry.get("sha256") if isinstance(entry, dict) else None
            actual = sha256_file(file_path)
            if actual != expected:
                raise ValueError(
                    f"checksum mismatch for {file_path}: SHA-256 {actual}, manifest says {expected}. "
                    "The index is corrupt or was modified; rebuild it."
                )
            arrays[name] = np.load(file_path, allow_pickle=False)
        bits = check_bits(manifest.get("bits"), "manifest bits")
        packed, ids = arrays[_CODES_FILE], arrays[_IDS_FILE]
        count = manifest.get("count")
        if packed.dtype != np.uint8 or packed.shape != (count, packed_width(bits)):
            raise ValueError(
                f"{path}: codes.npy has {packed.dtype} {packed.shape}, manifest says {count} x {bits} bits."
            )
        if ids.shape != (count,) or ids.dtype.kind not in "iU":
            raise ValueError(f"{path}: ids.npy has {ids.dtype} {ids.shape}, expected {count} ids.")
        if count > 1 and not np.all(ids[1:] > ids[:-1]):
            raise ValueError(f"{path}: ids.npy is not sorted and unique.")
        if backend is None:
            saved = manifest.get("backend", "auto")
            backend = saved if saved == "numpy" or backends.faiss_available() else "auto"
            if backend != saved:
                logging.info(
                    "Index saved with backend %r, which is unavailable; using %r.", saved, backend
                )
        index = cls(bits, backend=backend)
        index._ids = ids.astype(np.int64) if ids.dtype.kind == "i" else ids
        index._packed = packed
        index._backend.add(packed)
        return index
