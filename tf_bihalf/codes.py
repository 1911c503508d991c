"""Binary codes: the one rule for thresholding, validating and packing them.

Every part of the project (search, metrics, export, the exported graphs) reads codes through
this module, with one rule:

- **Codes** are (N, K) arrays of ±1 values or of {0, 1} values (any numeric dtype), or bool.
  Bit 1 stands for +1 (or 1, or True); bit 0 for -1 (or 0, or False). An array mixing -1 and 0,
  or holding any other value, is refused: it is not a code, and guessing would silently change
  results.
- **Thresholding** real values (a model's features ``U``) is explicit: ``binarize`` (numpy) and
  ``pack_tf`` (in a TensorFlow graph) map ``x >= 0`` to +1 and ``x < 0`` to -1, so
  ``sign(0) = +1`` (``docs/paper.md``, "The Bi-half layer": codes are ``B = sign(U)``). NaN is
  refused by ``binarize``; the exported signatures refuse non-finite inputs before they reach
  the model.
- **Packed codes** are uint8 (N, ceil(K/8)) in ``numpy.packbits`` order: the first bit is the
  most significant bit of the first byte, the last byte is zero-padded when K is not a multiple
  of 8. ``packed_width(K)`` is the width. The numpy and TensorFlow versions give identical bytes.

Example:

>>> pack(np.array([[1, -1, 1, 1, -1, -1, -1, -1, 1]]))
array([[176, 128]], dtype=uint8)
>>> unpack(np.array([[176, 128]], dtype=np.uint8), bits=9)
array([[ 1, -1,  1,  1, -1, -1, -1, -1,  1]], dtype=int8)
>>> binarize(np.array([[0.0, -0.5, 2.0]]))
array([[ 1, -1,  1]], dtype=int8)
>>> as_packed_codes(np.array([[176, 128]], dtype=np.uint8), bits=9)
(array([[176, 128]], dtype=uint8), 9)
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

__all__ = [
    "as_packed_codes",
    "binarize",
    "check_bits",
    "pack",
    "pack_tf",
    "packed_width",
    "to_bits",
    "unpack",
    "unpack_tf",
]


def packed_width(bits: int) -> int:
    """Bytes per packed code of ``bits`` bits: ``ceil(bits / 8)``."""
    return (int(bits) + 7) // 8


def check_bits(bits, name: str = "bits") -> int:
    """Returns ``bits`` as an int after checking that it is a positive integer."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) < 1:
        raise ValueError(f"{name} must be a positive integer (the code length K); got {bits!r}.")
    return int(bits)


def binarize(values) -> np.ndarray:
    """Real values -> int8 ±1 codes, ``x >= 0`` -> +1 (``sign(0) = +1``); NaN is refused.

    This is the rule of ``pack_tf`` and of the exported ``codes`` output, in numpy.
    """
    array = np.asarray(values)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"values to binarize must be numeric; got dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError("values to binarize contain NaN, which has no sign.")
    return np.where(array >= 0, 1, -1).astype(np.int8)


def to_bits(codes, name: str = "codes") -> np.ndarray:
    """±1, {0,1} or bool codes (N, K) -> uint8 {0,1} bits (N, K); 1 stands for +1.

    Raises:
      ValueError: not 2-D, not numeric, or values that are not ±1 codes or {0,1} codes (real
        values: ``binarize`` them first).
    """
    array = np.asarray(codes)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, K); got shape {array.shape}.")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric or bool; got dtype {array.dtype}.")
    ones = array == 1
    if not np.all(ones | (array == -1)) and not np.all(ones | (array == 0)):
        bad = array[~(ones | (array == -1) | (array == 0))]
        example = bad[0] if bad.size else "a mix of -1 and 0"
        raise ValueError(
            f"{name} must hold ±1 codes or {{0,1}} codes (found {example}); threshold real "
            "values first with tf_bihalf.codes.binarize (x >= 0 -> +1), or pass packed uint8 "
            "codes with bits=K."
        )
    return ones.astype(np.uint8)


def pack(codes, name: str = "codes") -> np.ndarray:
    """Packs ±1 / {0,1} / bool codes (N, K) into uint8 (N, ceil(K/8)), ``numpy.packbits`` order."""
    return np.ascontiguousarray(np.packbits(to_bits(codes, name), axis=1))


def unpack(packed, bits: int) -> np.ndarray:
    """Unpacks uint8 (N, ceil(bits/8)) into int8 ±1 codes (N, bits)."""
    bits = check_bits(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8; got dtype {packed.dtype}.")
    if packed.ndim != 2 or packed.shape[1] != packed_width(bits):
        raise ValueError(
            f"packed codes of {bits} bits must have shape (N, {packed_width(bits)}); "
            f"got {packed.shape}."
        )
    unpacked = np.unpackbits(packed, axis=1, count=bits)
    return (unpacked.astype(np.int8) * 2 - 1).astype(np.int8)


def _tail_mask(bits: int) -> int:
    """Mask that keeps the ``bits % 8`` used (most significant) bits of the last byte."""
    used = bits % 8
    return 0xFF if used == 0 else (0xFF << (8 - used)) & 0xFF


def _clean_packed(array: np.ndarray, bits: int) -> np.ndarray:
    """Copies packed codes, zeroing the padding bits of the last byte."""
    packed = np.array(array, dtype=np.uint8, order="C", copy=True)
    mask = _tail_mask(bits)
    if mask != 0xFF and packed.size:
        packed[:, -1] &= np.uint8(mask)
    return packed


def as_packed_codes(codes, bits: int | None = None, name: str = "codes") -> tuple[np.ndarray, int]:
    """Validates codes in any accepted form and returns ``(packed uint8 (N, ceil(K/8)), K)``.

    Args:
      codes: ±1, {0, 1} or bool codes (N, K) (read by ``to_bits``), or packed uint8 codes
        (N, ceil(K/8)) with ``bits=K``.
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
    return pack(array, name), columns


_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def pack_tf(values: tf.Tensor) -> tf.Tensor:
    """In-graph ``pack(binarize(values))``: float/int (N, K) -> uint8 (N, ceil(K/8)).

    Thresholds like ``binarize`` (``x >= 0`` -> 1), so it takes a model's ±1 codes or its real
    features, not {0,1} codes. Built from elementwise ops, a reshape and a sum only (no sort, no
    bitwise op), so it converts to TFLite builtins.
    """
    values = tf.convert_to_tensor(values)
    if values.shape.rank != 2:
        raise ValueError(f"codes must be rank 2 (N, K); got shape {values.shape}.")
    bits = values.shape[-1]
    if bits is None:
        raise ValueError("pack_tf needs a static number of bits.")
    width = packed_width(bits)
    ones = tf.cast(values >= 0, tf.int32)
    padding = width * 8 - bits
    if padding:
        ones = tf.pad(ones, [[0, 0], [0, padding]])
    grouped = tf.reshape(ones, [-1, width, 8])
    weights = tf.constant(_BIT_WEIGHTS, dtype=tf.int32)
    return tf.cast(tf.reduce_sum(grouped * weights, axis=-1), tf.uint8)


def unpack_tf(packed: tf.Tensor, bits: int) -> tf.Tensor:
    """TensorFlow version of ``unpack``: uint8 (N, ceil(bits/8)) -> int8 ±1 (N, bits)."""
    packed = tf.cast(tf.convert_to_tensor(packed), tf.int32)
    weights = tf.constant(_BIT_WEIGHTS, dtype=tf.int32)
    expanded = tf.math.floormod(tf.math.floordiv(packed[..., None], weights), 2)
    flat = tf.reshape(expanded, [tf.shape(packed)[0], -1])[:, : int(bits)]
    return tf.cast(flat * 2 - 1, tf.int8)
