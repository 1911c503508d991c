"""Binary codes as packed words, and Hamming distances by popcount.

Every retrieval function and index in this project accepts codes in three forms, read by
``tf_bihalf.codes.as_packed_codes`` (the one owner of the code rule; re-exported here):

- ±1 codes, shape (N, K), any numeric dtype (what the hash layers return at inference);
- {0, 1} codes, shape (N, K) (bool or numeric);
- packed codes, uint8 of shape (N, ceil(K / 8)) with ``bits=K``, in ``numpy.packbits`` order
  (the first bit is the most significant bit of the first byte; +1 -> 1), which is also what
  ``tf_bihalf.codes.pack`` and the export module's ``codes_packed`` output produce.

Internally codes are packed into little-endian uint64 words (bytes zero-padded to a multiple of
8), so the Hamming distance between two codes is ``sum_w popcount(a_w XOR b_w)``; with 64-bit
codes this is one XOR and one ``numpy.bitwise_count`` per pair. On ±1 codes this equals
``(K - a . b) / 2``.

Example:

>>> packed, bits = as_packed_codes(np.array([[1, -1, 1], [-1, -1, 1]]))
>>> packed, bits
(array([[160],
       [ 32]], dtype=uint8), 3)
>>> pairwise_hamming(np.array([[1, -1, 1]]), np.array([[1, -1, 1], [-1, -1, 1], [-1, 1, -1]]))
array([[0, 1, 3]], dtype=int32)
"""

from __future__ import annotations

import numpy as np

from tf_bihalf.codes import as_packed_codes, check_bits, packed_width

__all__ = [
    "as_packed_codes",
    "check_bits",
    "distance_dtype",
    "hamming_into",
    "packed_width",
    "pairwise_hamming",
    "to_words",
]


def to_words(packed: np.ndarray) -> np.ndarray:
    """Packed uint8 codes (N, B) -> uint64 words (N, ceil(B/8)), bytes zero-padded."""
    rows, width = packed.shape
    words = (width + 7) // 8
    padded = np.zeros((rows, words * 8), dtype=np.uint8)
    padded[:, :width] = packed
    return padded.view(np.uint64)


def distance_dtype(bits: int) -> np.dtype:
    """The smallest unsigned dtype that holds distances 0..bits."""
    if bits <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if bits <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def hamming_into(
    query_words: np.ndarray,
    database_words_by_word: np.ndarray,
    out: np.ndarray,
    scratch: np.ndarray,
    count_scratch: np.ndarray | None = None,
) -> np.ndarray:
    """Writes Hamming distances (c, N) into ``out`` without allocating.

    Args:
      query_words: uint64 (c, W) query codes as words.
      database_words_by_word: uint64 (W, N): word w of every database code, contiguous.
      out: unsigned integer array (c, N) that receives the distances.
      scratch: uint64 (c, N) work array for the XOR.
      count_scratch: uint8 (c, N) work array, needed when W > 1.
    """
    words = query_words.shape[1]
    for word in range(words):
        np.bitwise_xor(
            query_words[:, word, None], database_words_by_word[word][None, :], out=scratch
        )
        if word == 0:
            np.bitwise_count(scratch, out=out)
        else:
            np.bitwise_count(scratch, out=count_scratch)
            np.add(out, count_scratch, out=out)
    return out


def pairwise_hamming(query_codes, database_codes, bits: int | None = None) -> np.ndarray:
    """All pairwise Hamming distances as an int32 (Q, N) matrix (small inputs only).

    Args:
      query_codes, database_codes: codes in any accepted form (see the module docstring).
      bits: the code length, required for packed codes.

    Returns:
      int32 (Q, N) with ``D[i, j] = popcount(q_i XOR d_j)``.
    """
    query_packed, query_bits = as_packed_codes(query_codes, bits, "query_codes")
    database_packed, database_bits = as_packed_codes(database_codes, bits, "database_codes")
    if query_bits != database_bits:
        raise ValueError(
            f"query codes have {query_bits} bits but database codes have {database_bits} bits."
        )
    query_words = to_words(query_packed)
    database_words = np.ascontiguousarray(to_words(database_packed).T)
    shape = (query_words.shape[0], database_words.shape[1])
    out = np.empty(shape, dtype=np.int32)
    scratch = np.empty(shape, dtype=np.uint64)
    count_scratch = np.empty(shape, dtype=np.uint8)
    return hamming_into(query_words, database_words, out, scratch, count_scratch)
