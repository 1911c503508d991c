"""Packing and unpacking of binary codes: numpy and TensorFlow agree with numpy.packbits."""

import numpy as np
import pytest
import tensorflow as tf

from tf_bihalf import codes


@pytest.mark.parametrize("bits", [1, 7, 8, 13, 64, 65])
def test_round_trip_and_agreement(bits):
    rng = np.random.default_rng(bits)
    signs = np.where(rng.random((11, bits)) < 0.5, -1, 1).astype(np.int8)
    packed = codes.pack(signs)
    assert packed.dtype == np.uint8 and packed.shape == (11, (bits + 7) // 8)
    np.testing.assert_array_equal(packed, np.packbits(signs > 0, axis=1))
    np.testing.assert_array_equal(codes.unpack(packed, bits), signs)
    packed_tf = codes.pack_tf(tf.constant(signs, tf.float32)).numpy()
    np.testing.assert_array_equal(packed_tf, packed)
    np.testing.assert_array_equal(codes.unpack_tf(packed_tf, bits).numpy(), signs)


def test_bit_order_and_zero_maps_to_one():
    # First bit is the most significant bit of the first byte; sign(0) = +1.
    np.testing.assert_array_equal(codes.pack(np.array([[0.0, -1, -1, -1, -1, -1, -1, 1]])), [[129]])
    np.testing.assert_array_equal(codes.pack(np.array([[0, 1, 1, 0, 0, 0, 0, 0]])), [[96]])
    np.testing.assert_array_equal(
        codes.pack_tf(tf.constant([[0.0, -1, -1, -1, -1, -1, -1, 1]])), [[129]]
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        codes.pack(np.ones(8))
    with pytest.raises(ValueError, match="uint8"):
        codes.unpack(np.ones((2, 1), np.int32), 8)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        codes.unpack(np.ones((2, 1), np.uint8), 9)
