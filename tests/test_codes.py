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
    features = np.array([[0.0, -1, -1, -1, -1, -1, -1, 1]])
    np.testing.assert_array_equal(codes.pack(codes.binarize(features)), [[129]])
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


# One rule everywhere --------------------------------------------------------------------------

SIGNS = np.array([[1, -1, -1, 1, 1, 1, -1, 1, -1, 1], [-1, -1, -1, -1, 1, 1, 1, 1, 1, -1]])
SIGNS_PACKED = np.packbits(SIGNS > 0, axis=1)


@pytest.mark.parametrize(
    "form",
    [
        SIGNS.astype(np.int8),
        SIGNS.astype(np.float32),
        SIGNS.astype(np.float64),
        (SIGNS > 0).astype(np.uint8),
        (SIGNS > 0).astype(np.float32),
        SIGNS > 0,
    ],
    ids=["pm1_int8", "pm1_float32", "pm1_float64", "01_uint8", "01_float32", "bool"],
)
def test_every_reader_applies_the_same_rule(form):
    from tf_bihalf.metrics import bits as bit_metrics
    from tf_bihalf.search import HammingIndex, hamming

    np.testing.assert_array_equal(codes.pack(form), SIGNS_PACKED)
    packed, bits = codes.as_packed_codes(form)
    np.testing.assert_array_equal(packed, SIGNS_PACKED)
    assert bits == SIGNS.shape[1]
    np.testing.assert_array_equal(hamming.as_packed_codes(form)[0], SIGNS_PACKED)
    index = HammingIndex(bits=SIGNS.shape[1], backend="numpy")
    index.add(form)
    np.testing.assert_array_equal(index.codes, SIGNS_PACKED)
    # The metrics read codes the same way: bit 1 stands for +1.
    np.testing.assert_array_equal(bit_metrics.bit_balance(form), (SIGNS > 0).mean(axis=0))


def test_threshold_rule_is_sign_with_zero_positive_in_numpy_and_graph():
    features = np.array([[0.0, -0.0, 1e-30, -1e-30, 3.0, -2.0, 0.0, -7.0, 5.0]], np.float32)
    expected = np.array([[1, 1, 1, -1, 1, -1, 1, -1, 1]], np.int8)
    np.testing.assert_array_equal(codes.binarize(features), expected)
    np.testing.assert_array_equal(
        codes.pack_tf(tf.constant(features)).numpy(), codes.pack(expected)
    )
    from export.saved_model import codes_outputs

    outputs = codes_outputs(tf.constant(features))
    np.testing.assert_array_equal(outputs["codes"].numpy(), expected)
    np.testing.assert_array_equal(outputs["codes_packed"].numpy(), codes.pack(expected))


def test_real_values_and_ambiguous_codes_are_refused_not_guessed():
    # Before the one rule, codes.pack thresholded these silently while the search refused them.
    with pytest.raises(ValueError, match="binarize"):
        codes.pack(np.array([[0.3, -0.2, 1.0]]))
    with pytest.raises(ValueError, match="a mix of -1 and 0"):
        codes.pack(np.array([[1, 0, -1]]))
    with pytest.raises(ValueError, match="NaN"):
        codes.binarize(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="positive integer"):
        codes.unpack(np.zeros((1, 1), np.uint8), 0)


def test_packed_width_and_packing_have_one_owner():
    import pathlib

    from tf_bihalf.search import backends, hamming, index

    assert hamming.packed_width is codes.packed_width
    assert hamming.as_packed_codes is codes.as_packed_codes
    assert index.as_packed_codes is codes.as_packed_codes
    assert backends.packed_width is codes.packed_width
    root = pathlib.Path(__file__).resolve().parents[1]
    owners = []
    for path in [*root.joinpath("tf_bihalf").rglob("*.py"), *root.joinpath("export").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        if any(
            pattern in text
            for pattern in ("def packed_width(bits", "def as_packed_codes(", "bits + 7) // 8")
        ):
            owners.append(path.relative_to(root).as_posix())
    assert owners == ["tf_bihalf/codes.py"]
