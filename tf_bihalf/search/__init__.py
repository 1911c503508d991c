"""Exact Hamming search over binary codes: ``HammingIndex`` with numpy and faiss backends.

CLI: ``python -m tf_bihalf.search build|query ...`` (see ``docs/retrieval.md``).
faiss is imported only when a faiss backend is built.
"""

from tf_bihalf.codes import as_packed_codes
from tf_bihalf.search.backends import BACKENDS, HammingBackend, faiss_available
from tf_bihalf.search.hamming import pairwise_hamming
from tf_bihalf.search.index import HammingIndex

__all__ = [
    "BACKENDS",
    "HammingBackend",
    "HammingIndex",
    "as_packed_codes",
    "faiss_available",
    "pairwise_hamming",
]
