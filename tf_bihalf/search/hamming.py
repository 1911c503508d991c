"""Binary codes as packed words, and Hamming distances by popcount.

Every retrieval function and index in this project accepts codes in three forms:

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

import numbers

import numpy as np

__all__ = [
    "as_packed_codes",
    "check_bits",
    "distance_dtype",
    "hamming_into",
    "packed_width",
    "pairwise_hamming",
    "to_words",
]


def packed_width(bits: int) -> int:
    """Bytes per packed code of ``bits`` bits: ``ceil(bits / 8)``."""
    return (int(bits) + 7) // 8


def check_bits(bits, name: str = "bits") -> int:
    """Returns ``bits`` as an int after checking that it is a positive integer."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) < 1:
        raise ValueError(f"{name} must be a positive integer (the code length K); got {bits!r}.")
    return int(bits)


def _tail_mask(bits: int) -> int:
    """Mask that keeps the ``bits % 8`` used (most significant) bits of the last byte."""
    used = bits % 8
    return 0xFF if used == 0 else (0xFF << (8 - used)) & 0xFF


def as_packed_codes(codes, bits: int | None = None, name: str = "codes") -> tuple[np.ndarray, int]:
    """Validates codes in any accepted form and returns ``(packed uint8 (N, ceil(K/8)), K)``.

    Args:
      codes: ±1 or {0, 1} codes (N, K), or packed uint8 codes (N, ceil(K/8)) with ``bits=K``.
      bits: the code length K. Required for packed codes; for unpacked codes, when given, it must
        equal the number of columns.
      name: how error messages call the array (``"query_codes"``...).

    Returns:
      The packed codes (C-contiguous, unused trailing bits of the last byte set to zero) and K.

    Raises:
      ValueError: wrong rank or dtype, values other than ±1 / {0, 1}, a shape that matches
        neither ``bits`` nor ``ceil(bits / 8)``, or uint8 values above 1 without ``bits``.
    """
    if bits is not None:
        bits = check_bits(bits)
    array = np.asarray(codes)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array: ±1 or {{0,1}} codes (N, K), or packed uint8 codes "
            f"(N, ceil(K/8)) with bits=K; got shape {array.shape}."
        )
    columns = array.shape[1]
    if bits is not None and columns == packed_width(bits) and columns != bits:
        if array.dtype != np.uint8:
            raise ValueError(
                f"{name} has {columns} columns = ceil(bits/8) for bits={bits}, so it is read as "
                f"packed codes, which must be uint8; got dtype {array.dtype}."
            )
        return _clean_packed(array, bits), bits
    if bits is not None and columns == bits == 1 and array.dtype == np.uint8:
        # One-bit codes: (N, 1) uint8 is packed if it holds a packed value (0 or 128).
        if array.size and array.max() > 1:
            return _clean_packed(array, bits), bits
    if array.dtype == np.uint8 and bits is None and array.size and array.max() > 1:
        raise ValueError(
            f"{name} is uint8 with values above 1, which looks like packed codes: pass bits=K "
            "(the code length) so that they can be unpacked."
        )
    if bits is not None and columns != bits:
        raise ValueError(
            f"{name} has {columns} columns, which matches neither bits={bits} (unpacked codes) "
            f"nor ceil(bits/8)={packed_width(bits)} (packed uint8 codes)."
        )
    if columns == 0:
        raise ValueError(f"{name} has zero columns; codes need at least one bit.")
    if array.dtype == np.bool_:
        ones = array
    elif array.dtype.kind in "iuf":
        ones = array == 1
        if not np.all(ones | (array == -1)) and not np.all(ones | (array == 0)):
            bad = array[~(ones | (array == -1) | (array == 0))]
            example = bad[0] if bad.size else "a mix of -1 and 0"
            raise ValueError(
                f"{name} must hold ±1 codes or {{0,1}} codes (found {example}); binarize "
                "real-valued outputs first (for example np.where(x >= 0, 1, -1)), or pass "
                "packed uint8 codes with bits=K."
            )
    else:
        raise ValueError(f"{name} must be numeric or bool; got dtype {array.dtype}.")
    return np.ascontiguousarray(np.packbits(ones, axis=1)), columns


def _clean_packed(array: np.ndarray, bits: int) -> np.ndarray:
    """Copies packed codes, zeroing the padding bits of the last byte."""
    packed = np.array(array, dtype=np.uint8, order="C", copy=True)
    mask = _tail_mask(bits)
    if mask != 0xFF and packed.size:
        packed[:, -1] &= np.uint8(mask)
    return packed


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
