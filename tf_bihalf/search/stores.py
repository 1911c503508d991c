"""Every kind of Hamming index behind one entry point: in memory, sharded on disk, or Milvus.

All three answer the same queries with the same results (``search``: the k smallest
(distance, id) pairs; ``range_search``: every item within an inclusive radius, sorted by
(distance, id)) and take codes the same way (``add(codes, ids=None)``):

========================  =====================================================================
``backend``               index
========================  =====================================================================
``auto``, ``numpy``,      ``HammingIndex`` in memory, saved as a directory (``save`` / ``load``)
``faiss``,
``faiss_multihash``
``sharded``               ``ShardedHammingIndex``: memory-mapped shards in a directory, searched
                          under a memory budget, appended to in place
``milvus``                ``MilvusHammingIndex``: a Milvus Lite file (``*.db``) or a Milvus
                          server or cluster (``http://host:19530``)
========================  =====================================================================

``write_index(location, codes, ...)`` writes codes into a new (or, for the sharded and Milvus
stores, an existing) index of any kind; ``open_index(location)`` opens whatever is there.

Example:

>>> path = write_index(os.path.join(tmp_dir, "shards"), np.eye(4) * 2 - 1, backend="sharded")
>>> open_index(path).search(np.array([[1, -1, -1, -1]]), k=2)
(array([[0, 2]], dtype=int32), array([[0, 1]]))
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from tf_bihalf.codes import as_packed_codes
from tf_bihalf.search import backends
from tf_bihalf.search.index import HammingIndex
from tf_bihalf.search.milvus import MilvusHammingIndex, drop_collection, is_milvus_uri
from tf_bihalf.search.sharded import ShardedHammingIndex, is_sharded_index

__all__ = ["INDEX_BACKENDS", "open_index", "write_index"]

INDEX_BACKENDS = ("auto", *backends.BACKENDS, "sharded", "milvus")


def _check_backend(backend: str) -> None:
    if backend not in INDEX_BACKENDS:
        raise ValueError(f"backend must be one of {INDEX_BACKENDS}; got {backend!r}.")


def open_index(location: str, backend: str | None = None, **options):
    """Opens the index at ``location``: a Milvus ``*.db`` file or server URI, a sharded index
    directory, or a saved ``HammingIndex`` directory (loaded with ``backend``, default: the
    saved one). ``options`` go to ``MilvusHammingIndex`` / ``ShardedHammingIndex``.

    Raises:
      FileNotFoundError: nothing at ``location``.
      ValueError: an unknown backend, or an index of another kind than ``backend`` asks for.
    """
    location = os.fspath(location)
    if backend is not None:
        _check_backend(backend)
    if is_milvus_uri(location):
        if backend not in (None, "milvus"):
            raise ValueError(
                f"{location} is a Milvus location; backend {backend!r} cannot open it."
            )
        if location.endswith(".db") and not os.path.exists(location):
            raise FileNotFoundError(f"Milvus Lite file {location} not found.")
        return MilvusHammingIndex(location, **options)
    if not os.path.isdir(location):
        raise FileNotFoundError(f"index {location} not found.")
    if is_sharded_index(location):
        if backend not in (None, "sharded"):
            options.setdefault("backend", backend)
        return ShardedHammingIndex(location, **options)
    if backend == "sharded":
        raise ValueError(f"{location} is not a sharded index.")
    return HammingIndex.load(location, backend=backend)


def write_index(
    location: str,
    codes,
    bits: int | None = None,
    ids=None,
    backend: str = "auto",
    overwrite: bool = False,
    **options,
) -> str:
    """Writes codes (±1, {0,1} or packed with ``bits``) and ids into an index at ``location``.

    ``backend`` picks the kind (see the module docstring); a ``*.db`` path or server URI means
    ``milvus`` whatever ``backend`` says unless it names another kind. A ``HammingIndex``
    directory must be new (or ``overwrite``). The sharded and Milvus stores are appended to when
    they exist; ``overwrite`` empties them first. ``options`` go to the store's constructor
    (e.g. ``shard_size``, ``collection``); string ids create a Milvus collection with
    ``id_type="str"``.

    Returns:
      ``location``.
    """
    location = os.fspath(location)
    _check_backend(backend)
    packed, bits = as_packed_codes(np.asarray(codes), bits, "codes")
    if is_milvus_uri(location) and backend == "auto":
        backend = "milvus"
    if backend == "milvus":
        if ids is not None and np.asarray(ids).dtype.kind in "USO":
            options.setdefault("id_type", "str")
        if overwrite:  # Whatever the old collection held (bits, id type), start a new one.
            drop_collection(
                location, options.get("collection", "tf_bihalf_codes"), options.get("token", "")
            )
        with MilvusHammingIndex(location, bits=bits, **options) as index:
            index.add(packed, ids=ids)
        return location
    if is_milvus_uri(location):
        raise ValueError(f"{location} is a Milvus location; use backend 'milvus' or 'auto'.")
    if backend == "sharded":
        if overwrite and os.path.isdir(location):
            shutil.rmtree(location)
        elif overwrite and os.path.exists(location):
            os.remove(location)
        index = ShardedHammingIndex(location, bits=bits, **options)
        index.add(packed, ids=ids)
        return location
    index = HammingIndex(bits, backend=backend)
    index.add(packed, ids=ids)
    return index.save(location, overwrite=overwrite)
