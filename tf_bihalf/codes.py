"""Binary codes: conversion between ±1 / {0,1} codes and packed bytes.

Packing follows ``numpy.packbits`` (big-endian bit order within a byte, the first bit in the
most significant position; +1 -> 1, -1 -> 0; the last byte zero-padded when K is not a
multiple of 8). The numpy and TensorFlow versions give identical bytes.

Example:

>>> pack(np.array([[1, -1, 1, 1, -1, -1, -1, -1, 1]]))
array([[176, 128]], dtype=uint8)
>>> unpack(np.array([[176, 128]], dtype=np.uint8), bits=9)
array([[ 1, -1,  1,  1, -1, -1, -1, -1,  1]], dtype=int8)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def packed_width(bits: int) -> int:
    """Bytes per packed code of ``bits`` bits: ``ceil(bits / 8)``."""
    return (int(bits) + 7) // 8


def to_bits(codes) -> np.ndarray:
    """±1 or {0,1} codes (N, K) -> uint8 {0,1}; positive values (and 0 in ±1 codes) map to 1.

    Accepts ±1 codes (values in {-1, 1}), {0, 1} codes, or real-valued features (thresholded at
    zero, ``sign(0) = +1``). A {0,1} array is taken as bits as they are.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array (N, K); got shape {codes.shape}.")
    if codes.dtype == np.bool_:
        return codes.astype(np.uint8)
    if not (np.issubdtype(codes.dtype, np.number)):
        raise ValueError(f"codes must be numeric; got dtype {codes.dtype}.")
    if codes.size and codes.min() >= 0 and codes.max() <= 1 and np.all((codes == 0) | (codes == 1)):
        return codes.astype(np.uint8)
    return (codes >= 0).astype(np.uint8)


def pack(codes) -> np.ndarray:
    """Packs codes (N, K) into uint8 (N, ceil(K/8)), bit order as ``numpy.packbits``."""
    return np.packbits(to_bits(codes), axis=1)


def unpack(packed, bits: int) -> np.ndarray:
    """Unpacks uint8 (N, ceil(bits/8)) into int8 ±1 codes (N, bits)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8; got dtype {packed.dtype}.")
    if packed.ndim != 2 or packed.shape[1] != packed_width(bits):
        raise ValueError(
            f"packed codes of {bits} bits must have shape (N, {packed_width(bits)}); got {packed.shape}."
        )
    unpacked = np.unpackbits(packed, axis=1, count=int(bits))
    return (unpacked.astype(np.int8) * 2 - 1).astype(np.int8)


_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def pack_tf(codes: tf.Tensor) -> tf.Tensor:
    """TensorFlow version of ``pack``: float/int codes (N, K) -> uint8 (N, ceil(K/8)).

    Built from elementwise ops, a reshape and a sum only (no sort, no bitwise op), so it
    converts to TFLite builtins. ``codes >= 0`` counts as a 1 bit.
    """
    codes = tf.convert_to_tensor(codes)
    if codes.shape.rank != 2:
        raise ValueError(f"codes must be rank 2 (N, K); got shape {codes.shape}.")
    bits = codes.shape[-1]
    if bits is None:
        raise ValueError("pack_tf needs a static number of bits.")
    width = packed_width(bits)
    ones = tf.cast(codes >= 0, tf.int32)
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
