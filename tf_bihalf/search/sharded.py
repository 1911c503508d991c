"""``ShardedHammingIndex``: exact Hamming search over codes on disk, beyond memory.

The database lives in a directory of immutable shards, each a pair of ``.npy`` files (packed
uint8 codes and their ids, sorted by id within the shard) read through ``numpy`` memory maps.
A search walks the shards in blocks of at most ``memory_budget_bytes``: each block is copied
into an in-memory backend (``numpy`` or ``faiss``, see ``tf_bihalf.search.backends``), searched,
and its k best (distance, id) pairs are merged into the running k best. Results are identical
to ``HammingIndex`` (and to a brute-force sort by (distance, id)):

- within a block, codes are in id order, so a backend's (distance, position) order is the
  (distance, id) order;
- the k smallest (distance, id) pairs of the whole database are among the union of each
  block's k smallest, so merging the per-block lists by (distance, id) and keeping k is exact,
  whatever the order of the shards or how their id ranges overlap.

``add`` tops up the last shard when it is not larger than the new codes, appends new shards
of at most ``shard_size`` codes, and merges the last two shards while the older is not larger
and both fit (merged shards are rewritten under new names: shards are immutable). Repeated
small adds thus end in few shards at O(log) rewrites per code. The manifest is replaced
atomically after the shard files are written, so a reader never sees a half-written index, and
an interrupted ``add`` leaves the previous index intact.

On disk::

    INDEX_DIR/manifest.json           format "tf_bihalf.sharded_hamming_index", format_version,
                                      bits, count, shard_size, ids_kind ("int" or "str"),
                                      next_serial, shards [{name, count, min_id, max_id,
                                      files: {codes: {sha256, bytes}, ids: {sha256, bytes}}}],
                                      and manifest_sha256 (over the other entries)
    INDEX_DIR/shard-000000.codes.npy  packed uint8 (count, ceil(bits/8)), sorted by id
    INDEX_DIR/shard-000000.ids.npy    int64 or unicode ids (count,), sorted

Memory: a search holds at most ``memory_budget_bytes`` of database (codes, ids and the
backend's copy) at a time, plus the queries' running results (Q x k pairs) and the backend's
fixed scratch buffers. The memory-mapped files themselves are in the operating system's page
cache, which the kernel reclaims under pressure; they are not the process' own memory.

Example:

>>> index = ShardedHammingIndex(tmp_dir, bits=4, shard_size=2, memory_budget_bytes=64)
>>> index.add(np.array([[1, 1, 1, 1], [1, 1, 1, -1], [-1, -1, -1, -1]]), ids=[10, 20, 30])
>>> index.num_shards
2
>>> index.search(np.array([[1, 1, -1, -1]]), k=2)
(array([[1, 2]], dtype=int32), array([[20, 10]]))
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile

import numpy as np
from absl import logging

from tf_bihalf.checksums import sha256_file
from tf_bihalf.codes import check_bits, packed_width
from tf_bihalf.search import backends
from tf_bihalf.search.index import _as_ids, manifest_digest, packed_index_codes

__all__ = ["FORMAT", "FORMAT_VERSION", "ShardedHammingIndex", "is_sharded_index", "merge_top_k"]

FORMAT = "tf_bihalf.sharded_hamming_index"
FORMAT_VERSION = 1
_MANIFEST_FILE = "manifest.json"
_MAX_MANIFEST_BYTES = 64 << 20
DEFAULT_SHARD_SIZE = 1 << 22  # 4 Mi codes: 32 MiB of 64-bit codes and 32 MiB of int64 ids.
DEFAULT_MEMORY_BUDGET = 256 << 20


def is_sharded_index(path: str) -> bool:
    """True when ``path`` is a directory holding a sharded index manifest."""
    manifest_path = os.path.join(os.fspath(path), _MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        return False
    try:
        with open(manifest_path, "rb") as handle:
            return json.loads(handle.read(_MAX_MANIFEST_BYTES)).get("format") == FORMAT
    except (ValueError, AttributeError, OSError):
        return False


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _json_id(value):
    return value.item() if isinstance(value, np.generic) else value


def merge_top_k(parts, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merges per-part search results into the k smallest (distance, id) pairs per query.

    Each part is ``(distances, ids)`` of shape (Q, k_part), the k_part smallest (distance, id)
    pairs of each query within that part (a block, a shard, a machine, a Milvus collection);
    the parts hold disjoint ids. The k smallest pairs of the union are among the parts' own k
    smallest, so the result is exactly a search of the union. This is how a search fans out to
    several indexes (processes or machines) and comes back with ``HammingIndex``'s results.

    >>> merge_top_k([(np.array([[1, 3]]), np.array([[7, 2]])), (np.array([[1]]), np.array([[4]]))], 2)
    (array([[1, 1]]), array([[4, 7]]))
    """
    distances = np.concatenate([np.asarray(part[0]) for part in parts], axis=1)
    ids = np.concatenate([np.asarray(part[1]) for part in parts], axis=1)
    order = np.lexsort((ids, distances), axis=-1)[:, :k]
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(ids, order, axis=1)


class _Shard:
    """One immutable shard: its manifest entry and (lazily opened) memory maps."""

    def __init__(self, directory: str, entry: dict):
        self.entry = entry
        self.name = entry["name"]
        self.count = int(entry["count"])
        self.codes_path = os.path.join(directory, f"{self.name}.codes.npy")
        self.ids_path = os.path.join(directory, f"{self.name}.ids.npy")
        self._codes = None
        self._ids = None

    @property
    def codes(self) -> np.ndarray:
        if self._codes is None:
            self._codes = np.load(self.codes_path, mmap_mode="r", allow_pickle=False)
        return self._codes

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = np.load(self.ids_path, mmap_mode="r", allow_pickle=False)
        return self._ids

    def overlaps(self, low, high) -> bool:
        return not (high < self.entry["min_id"] or low > self.entry["max_id"])


class ShardedHammingIndex:
    """Exact Hamming index over memory-mapped shards on disk, with a memory budget.

    Same queries and results as ``HammingIndex`` (``search``, ``range_search``: k smallest
    (distance, id) pairs; every item within an inclusive radius, sorted by (distance, id)).

    Args:
      path: the index directory. An existing sharded index is opened (its manifest and, with
        ``verify``, every shard's SHA-256 are checked); otherwise a new empty one is created.
      bits: the code length K; required to create an index, checked against an existing one.
      shard_size: codes per shard for a new index (an existing index keeps its own).
      memory_budget_bytes: the most database bytes (codes, ids and the backend's copy) a search
        holds in memory at once; a larger database is searched in several blocks.
      backend: the in-memory engine for each block: ``"auto"``, ``"numpy"``, ``"faiss"``.
      verify: on open, hash every shard file and compare with the manifest (reads the whole
        index once). With ``False`` only sizes and array headers are checked.
    """

    def __init__(
        self,
        path: str,
        bits: int | None = None,
        shard_size: int = DEFAULT_SHARD_SIZE,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
        backend: str = "auto",
        verify: bool = True,
    ):
        self.path = os.fspath(path)
        self.memory_budget_bytes = _positive_int(memory_budget_bytes, "memory_budget_bytes")
        manifest_path = os.path.join(self.path, _MANIFEST_FILE)
        if os.path.exists(manifest_path):
            self._manifest = self._read_manifest(manifest_path)
            stored_bits = self._manifest["bits"]
            if bits is not None and check_bits(bits) != stored_bits:
                raise ValueError(f"{self.path} holds {stored_bits}-bit codes; got bits={bits}.")
        else:
            if bits is None:
                raise ValueError(
                    f"{manifest_path} not found: pass bits=K to create a new sharded index there."
                )
            if os.path.exists(self.path) and (
                not os.path.isdir(self.path) or os.listdir(self.path)
            ):
                raise FileExistsError(
                    f"{self.path} exists and is neither empty nor a sharded index."
                )
            os.makedirs(self.path, exist_ok=True)
            self._manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "bits": check_bits(bits),
                "count": 0,
                "shard_size": _positive_int(shard_size, "shard_size"),
                "ids_kind": None,
                "next_serial": 0,
                "shards": [],
            }
            self._write_manifest()
        self.bits = self._manifest["bits"]
        self.shard_size = self._manifest["shard_size"]
        if backend not in ("auto", "numpy", "faiss"):
            raise ValueError(f"backend must be 'auto', 'numpy' or 'faiss'; got {backend!r}.")
        self._backend = backends.make_backend(backend, self.bits)
        self._shards = [_Shard(self.path, entry) for entry in self._manifest["shards"]]
        for shard in self._shards:
            self._check_shard(shard, verify)
        #: Blocks visited and the largest block (rows) of the last search, for monitoring.
        self.last_search_blocks = 0
        self.last_block_rows = 0

    # -- properties ------------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """The in-memory engine that searches each block (``"numpy"`` or ``"faiss"``)."""
        return self._backend.name

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def __len__(self) -> int:
        return int(self._manifest["count"])

    @property
    def ntotal(self) -> int:
        return len(self)

    @property
    def nbytes(self) -> int:
        """Bytes of the shard files on disk."""
        return sum(
            entry["files"][kind]["bytes"]
            for entry in self._manifest["shards"]
            for kind in ("codes", "ids")
        )

    def __repr__(self) -> str:
        return (
            f"ShardedHammingIndex({self.path!r}, bits={self.bits}, count={len(self)}, "
            f"shards={self.num_shards}, backend={self.backend!r})"
        )

    def block_rows(self) -> int:
        """Rows per search block under the memory budget (at least one)."""
        width = packed_width(self.bits)
        words = (width + 7) // 8
        ids_bytes = (
            8
            if self._manifest["ids_kind"] != "str"
            else max((np.dtype(shard.ids.dtype).itemsize for shard in self._shards), default=8)
        )
        # The block's codes and ids read from the maps, and the backend's copies (the numpy
        # backend pads codes to uint64 words and transposes them: up to three word copies).
        per_row = width + ids_bytes + 3 * 8 * words
        return max(1, self.memory_budget_bytes // per_row)

    # -- manifest --------------------------------------------------------------------------------

    def _read_manifest(self, manifest_path: str) -> dict:
        with open(manifest_path, "rb") as handle:
            text = handle.read(_MAX_MANIFEST_BYTES + 1)
        if len(text) > _MAX_MANIFEST_BYTES:
            raise ValueError(f"{manifest_path} is larger than a manifest can be.")
        try:
            manifest = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{manifest_path} is not valid JSON: {error}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else None
            raise ValueError(f"{manifest_path}: format is {found!r}, expected {FORMAT!r}.")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{manifest_path}: format_version {manifest.get('format_version')!r} is not "
                f"supported (this version reads {FORMAT_VERSION})."
            )
        if manifest.get("manifest_sha256") != manifest_digest(manifest):
            raise ValueError(
                f"checksum mismatch for {manifest_path}: the manifest was modified or is corrupt."
            )
        check_bits(manifest.get("bits"), "manifest bits")
        shards = manifest.get("shards")
        if not isinstance(shards, list) or manifest.get("count") != sum(
            entry.get("count", 0) for entry in shards
        ):
            raise ValueError(f"{manifest_path}: the shard counts do not add up to its count.")
        return manifest

    def _write_manifest(self) -> None:
        self._manifest.pop("manifest_sha256", None)
        self._manifest["manifest_sha256"] = manifest_digest(self._manifest)
        descriptor, staging = tempfile.mkstemp(prefix=".manifest.", dir=self.path)
        try:
            with os.fdopen(descriptor, "w") as handle:
                json.dump(self._manifest, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, os.path.join(self.path, _MANIFEST_FILE))
        except BaseException:
            if os.path.exists(staging):
                os.remove(staging)
            raise

    def _check_shard(self, shard: _Shard, verify: bool) -> None:
        for kind, file_path in (("codes", shard.codes_path), ("ids", shard.ids_path)):
            if not os.path.isfile(file_path):
                raise FileNotFoundError(f"{file_path} not found (listed in {self.path} manifest).")
            expected = shard.entry["files"][kind]
            if os.path.getsize(file_path) != expected["bytes"]:
                raise ValueError(
                    f"{file_path} has {os.path.getsize(file_path)} bytes, the manifest says "
                    f"{expected['bytes']}: the shard is truncated or was replaced; rebuild it."
                )
            if verify and sha256_file(file_path) != expected["sha256"]:
                raise ValueError(
                    f"checksum mismatch for {file_path}: the shard is corrupt or was modified."
                )
        try:
            codes, ids = shard.codes, shard.ids
        except ValueError as error:
            raise ValueError(f"cannot map {shard.codes_path}: {error}") from None
        if codes.dtype != np.uint8 or codes.shape != (shard.count, packed_width(self.bits)):
            raise ValueError(
                f"{shard.codes_path} has {codes.dtype} {codes.shape}, the manifest says "
                f"{shard.count} x {self.bits} bits."
            )
        if ids.shape != (shard.count,) or ids.dtype.kind not in "iU":
            raise ValueError(f"{shard.ids_path} has {ids.dtype} {ids.shape}, expected ids.")

    # -- building --------------------------------------------------------------------------------

    def _packed_codes(self, codes, name: str) -> np.ndarray:
        return packed_index_codes(codes, self.bits, name)

    def _max_int_id(self) -> int:
        return max((int(entry["max_id"]) for entry in self._manifest["shards"]), default=-1)

    def _write_shard(self, packed: np.ndarray, ids: np.ndarray) -> dict:
        serial = self._manifest["next_serial"]
        self._manifest["next_serial"] = serial + 1
        name = f"shard-{serial:06d}"
        entry = {
            "name": name,
            "count": int(ids.shape[0]),
            "min_id": _json_id(ids[0]),
            "max_id": _json_id(ids[-1]),
            "files": {},
        }
        for kind, array in (("codes", packed), ("ids", ids)):
            final = os.path.join(self.path, f"{name}.{kind}.npy")
            descriptor, staging = tempfile.mkstemp(prefix=f".{name}.", dir=self.path)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(staging, final)
            except BaseException:
                if os.path.exists(staging):
                    os.remove(staging)
                raise
            entry["files"][kind] = {"sha256": sha256_file(final), "bytes": os.path.getsize(final)}
        return entry

    def add(self, codes, ids=None) -> None:
        """Adds codes with unique ids (default: consecutive integers after the largest int id).

        New codes top up the last shard when it is not larger than them, then fill new shards
        of ``shard_size``; the last shards are merged while the older is not larger and both fit
        in one shard (an add holds at most about two shards of codes in memory). The manifest is
        replaced once every new shard is on disk, then the merged-away shard files are removed.

        Raises:
          ValueError: codes of another length, ids of the wrong length or kind (int vs string,
            as already stored) or duplicate ids (among themselves or with stored ones).
        """
        packed = self._packed_codes(codes, "codes")
        count = packed.shape[0]
        kind = self._manifest["ids_kind"]
        if ids is None:
            if kind == "str":
                raise ValueError("this index holds string ids, so add() needs ids for new codes.")
            first = self._max_int_id() + 1
            new_ids = np.arange(first, first + count, dtype=np.int64)
        else:
            new_ids = _as_ids(ids, count)
        new_kind = "str" if new_ids.dtype.kind == "U" else "int"
        if kind is not None and new_kind != kind and count:
            raise ValueError(
                f"ids must all be integers or all strings; the index holds {kind} ids "
                f"and got {new_ids.dtype}."
            )
        if count == 0:
            return
        order = np.argsort(new_ids, kind="stable")
        new_ids, packed = new_ids[order], packed[order]
        if np.any(new_ids[1:] == new_ids[:-1]):
            raise ValueError("ids must be unique; the new ids contain duplicates.")
        for shard in self._shards:
            if not shard.overlaps(_json_id(new_ids[0]), _json_id(new_ids[-1])):
                continue
            stored = shard.ids
            found = np.searchsorted(stored, new_ids)
            found = np.minimum(found, shard.count - 1)
            duplicate = np.asarray(stored[found]) == new_ids
            if duplicate.any():
                raise ValueError(
                    f"ids must be unique; id {_json_id(new_ids[duplicate][0])!r} is already in the index."
                )
        # The new codes as pieces of at most shard_size, then the tail is merged: the last two
        # pieces merge while the older one is not larger and both fit in a shard. A code is
        # rewritten only when its shard at least doubles, so many small adds cost O(log) writes
        # per code (a binary counter), not a rewrite of a full last shard each time.
        stored, pieces, replaced = list(self._shards), [], []
        if stored and stored[-1].count < self.shard_size and stored[-1].count <= count:
            # Top up a last shard that is not larger than the new codes (rewrite cost <= count).
            take = min(count, self.shard_size - stored[-1].count)
            last = stored.pop()
            replaced.append(last)
            merged_codes = np.concatenate([np.asarray(last.codes), packed[:take]])
            merged_ids = np.concatenate([np.asarray(last.ids), new_ids[:take]])
            order = np.argsort(merged_ids, kind="stable")
            pieces.append((merged_codes[order], merged_ids[order]))
            packed, new_ids = packed[take:], new_ids[take:]
        pieces.extend(
            (packed[start : start + self.shard_size], new_ids[start : start + self.shard_size])
            for start in range(0, new_ids.shape[0], self.shard_size)
        )
        while len(stored) + len(pieces) >= 2:
            newer = pieces[-1]
            older = pieces[-2] if len(pieces) >= 2 else stored[-1]
            older_count = older.count if isinstance(older, _Shard) else older[1].shape[0]
            newer_count = newer[1].shape[0]
            if older_count > newer_count or older_count + newer_count > self.shard_size:
                break
            if isinstance(older, _Shard):
                replaced.append(stored.pop())
                older = (np.asarray(older.codes), np.asarray(older.ids))
            else:
                pieces.pop(-2)
            merged_codes = np.concatenate([older[0], newer[0]])
            merged_ids = np.concatenate([older[1], newer[1]])
            order = np.argsort(merged_ids, kind="stable")
            pieces[-1] = (merged_codes[order], merged_ids[order])
        shards = [shard.entry for shard in stored]
        shards.extend(
            self._write_shard(codes_piece, ids_piece) for codes_piece, ids_piece in pieces
        )
        self._manifest["shards"] = shards
        self._manifest["count"] = int(self._manifest["count"]) + count
        self._manifest["ids_kind"] = new_kind
        self._write_manifest()
        self._shards = stored + [_Shard(self.path, entry) for entry in shards[len(stored) :]]
        for stale in replaced:
            for stale_path in (stale.codes_path, stale.ids_path):
                os.remove(stale_path)
        logging.debug("Added %d codes to %s (%d shards).", count, self.path, self.num_shards)

    def reset(self) -> None:
        """Removes every code and shard file."""
        stale = [(shard.codes_path, shard.ids_path) for shard in self._shards]
        self._manifest.update(count=0, ids_kind=None, shards=[])
        self._write_manifest()
        self._shards = []
        for paths in stale:
            for file_path in paths:
                os.remove(file_path)

    # -- queries ---------------------------------------------------------------------------------

    def _blocks(self):
        """Yields (shard, start, stop) blocks of at most ``block_rows()`` rows."""
        rows = self.block_rows()
        for shard in self._shards:
            for start in range(0, shard.count, rows):
                yield shard, start, min(shard.count, start + rows)

    def _load_block(self, shard: _Shard, start: int, stop: int) -> np.ndarray:
        self._backend.reset()
        self._backend.add(np.array(shard.codes[start:stop]))
        self.last_search_blocks += 1
        self.last_block_rows = max(self.last_block_rows, stop - start)
        return np.array(shard.ids[start:stop])

    def _check_queries(self, query_codes) -> np.ndarray:
        if not len(self):
            raise ValueError("the index is empty: add() codes before searching.")
        return self._packed_codes(query_codes, "query_codes")

    def _empty_ids(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64 if self._manifest["ids_kind"] != "str" else "U1")

    def search(self, query_codes, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest codes of each query: ``(distances, ids)`` as in ``HammingIndex.search``.

        Returns:
          int32 (Q, min(k, len)) distances and the ids of the k smallest (distance, id) pairs,
          sorted by distance then id.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}.")
        queries = self._check_queries(query_codes)
        k = min(int(k), len(self))
        num_queries = queries.shape[0]
        self.last_search_blocks = self.last_block_rows = 0
        if not num_queries:
            return np.zeros((0, k), np.int32), self._empty_ids().reshape(0, k)
        best_distances = np.zeros((num_queries, 0), np.int32)
        best_ids = self._empty_ids().reshape(num_queries, 0)
        for shard, start, stop in self._blocks():
            block_ids = self._load_block(shard, start, stop)
            distances, positions = self._backend.search(queries, min(k, stop - start))
            best_distances, best_ids = merge_top_k(
                [(best_distances, best_ids), (distances, block_ids[positions])], k
            )
        self._backend.reset()
        return best_distances, best_ids

    def range_search(self, query_codes, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every code within Hamming distance ``radius`` (inclusive): ``(lims, distances, ids)``
        as in ``HammingIndex.range_search``, sorted by (distance, id) per query."""
        if isinstance(radius, bool) or not isinstance(radius, numbers.Integral) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer; got {radius!r}.")
        queries = self._check_queries(query_codes)
        num_queries = queries.shape[0]
        self.last_search_blocks = self.last_block_rows = 0
        if not num_queries:
            return np.zeros(1, np.int64), np.zeros(0, np.int32), self._empty_ids()
        radius = min(int(radius), self.bits)
        query_index, distances, found = [], [], []
        for shard, start, stop in self._blocks():
            block_ids = self._load_block(shard, start, stop)
            lims, block_distances, positions = self._backend.range_search(queries, radius)
            query_index.append(np.repeat(np.arange(num_queries), np.diff(lims)))
            distances.append(block_distances)
            found.append(block_ids[positions])
        self._backend.reset()
        query_index = np.concatenate(query_index)
        distances = np.concatenate(distances).astype(np.int32)
        found = np.concatenate(found)
        order = np.lexsort((found, distances, query_index))
        lims = np.zeros(num_queries + 1, dtype=np.int64)
        np.cumsum(np.bincount(query_index, minlength=num_queries), out=lims[1:])
        return lims, distances[order], found[order]
