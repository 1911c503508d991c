"""Cosine similarity-preservation loss against a plain numpy reference."""

import numpy as np
import pytest
import tensorflow as tf

from tf_bihalf.losses.cosine import CosineSimilarityPreservation

RNG = np.random.default_rng(1)


def numpy_cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def reference(features, codes, pairing):
    rows = len(features)
    if pairing == "half":
        half = rows // 2
        pairs = [(i, i + half) for i in range(half)]
    else:
        pairs = [(i, j) for i in range(rows) for j in range(i + 1, rows)]
    return np.mean(
        [
            (numpy_cosine(codes[i], codes[j]) - numpy_cosine(features[i], features[j])) ** 2
            for i, j in pairs
        ]
    )


@pytest.mark.parametrize("pairing", ["half", "all"])
@pytest.mark.parametrize("rows", [2, 8, 7])
def test_matches_numpy_reference(pairing, rows):
    features = RNG.normal(size=(rows, 10))
    codes = np.sign(RNG.normal(size=(rows, 6)))
    loss = CosineSimilarityPreservation(pairing=pairing)
    np.testing.assert_allclose(
        float(loss(features, codes)), reference(features, codes, pairing), rtol=1e-5
    )


def test_half_pairing_is_i_with_i_plus_half_and_odd_batch_drops_last_row():
    features = RNG.normal(size=(7, 5))
    codes = np.sign(RNG.normal(size=(7, 4)))
    loss = CosineSimilarityPreservation()
    expected = reference(features[:6], codes[:6], "half")  # Pairs (0,3), (1,4), (2,5).
    np.testing.assert_allclose(float(loss(features, codes)), expected, rtol=1e-5)
    # Not adjacent pairs (0,1), (2,3), ...: those would give another value.
    adjacent = np.mean(
        [
            (numpy_cosine(codes[i], codes[i + 1]) - numpy_cosine(features[i], features[i + 1])) ** 2
            for i in (0, 2, 4)
        ]
    )
    assert not np.isclose(float(loss(features, codes)), adjacent)


def test_gradient_reaches_codes_and_zero_rows_are_safe():
    features = tf.constant(RNG.normal(size=(4, 3)), tf.float32)
    codes = tf.Variable(RNG.normal(size=(4, 5)), dtype=tf.float32)
    with tf.GradientTape() as tape:
        value = CosineSimilarityPreservation(pairing="all")(features, codes)
    gradient = tape.gradient(value, codes)
    assert np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).sum() > 0
    zero = CosineSimilarityPreservation()(np.zeros((2, 3)), np.ones((2, 4)))
    np.testing.assert_allclose(float(zero), 1.0)  # cos(0, x) = 0 vs cos(b, b) = 1.


def test_errors():
    with pytest.raises(ValueError, match="pairing"):
        CosineSimilarityPreservation(pairing="neighbours")
    with pytest.raises(ValueError, match="at least 2"):
        CosineSimilarityPreservation()(np.ones((1, 3)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="different batch sizes"):
        CosineSimilarityPreservation()(np.ones((4, 3)), np.ones((2, 2)))
    config = CosineSimilarityPreservation(pairing="all").get_config()
    assert CosineSimilarityPreservation.from_config(config).pairing == "all"
