"""Exact Hamming search over binary codes: in memory, sharded on disk, or in Milvus.

- ``HammingIndex``: in memory, numpy and faiss backends, saved as a directory;
- ``ShardedHammingIndex``: memory-mapped shards in a directory, searched under a memory budget;
- ``MilvusHammingIndex``: a Milvus Lite file or a Milvus server (pymilvus is imported only when
  one is opened, so this package imports without it);
- ``write_index`` / ``open_index``: one entry point for all of them (``INDEX_BACKENDS``).

CLI: ``python -m tf_bihalf.search build|query|info ...`` (see ``docs/retrieval.md``).
faiss is imported only when a faiss backend is built.
"""

from tf_bihalf.codes import as_packed_codes
from tf_bihalf.search.backends import BACKENDS, HammingBackend, faiss_available
from tf_bihalf.search.hamming import pairwise_hamming
from tf_bihalf.search.index import HammingIndex
from tf_bihalf.search.milvus import MilvusHammingIndex
from tf_bihalf.search.sharded import ShardedHammingIndex, merge_top_k
from tf_bihalf.search.stores import INDEX_BACKENDS, open_index, write_index

__all__ = [
    "BACKENDS",
    "INDEX_BACKENDS",
    "HammingBackend",
    "HammingIndex",
    "MilvusHammingIndex",
    "ShardedHammingIndex",
    "as_packed_codes",
    "faiss_available",
    "merge_top_k",
    "open_index",
    "pairwise_hamming",
    "write_index",
]
