"""BinaryReconstructionLoss(from_probabilities=True) against a numpy PyTorch BCELoss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bihalf.losses.reconstruction import BinaryReconstructionLoss


def torch_bce_reference(targets, probabilities):
    """torch.nn.BCELoss(reduction="mean"), written out: value and d(value)/d(probabilities)."""
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(probabilities), -100.0)
        log_not_p = np.maximum(np.log1p(-probabilities), -100.0)
    value = -np.mean(targets * log_p + (1 - targets) * log_not_p)
    gradient = (probabilities - targets) / np.maximum(probabilities * (1 - probabilities), 1e-12)
    return value, gradient / targets.size


# Logits from ordinary values to saturated ones: float32 rounds sigmoid(z) to exactly 1 above
# z ~ 16.6 and p (1 - p) falls under 1e-12 beyond |z| ~ 27.6.
LOGITS = np.array([[-3.0, 0.5, 2.0, 12.0, 20.0, 40.0], [-40.0, -30.0, 3.0, -20.0, 0.0, 25.0]])
TARGETS = np.array([[0.0, 1.0, 1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]])


def loss_and_logit_gradient(loss, targets, logits, dtype):
    logits = tf.constant(logits, dtype)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = loss(tf.constant(targets, dtype), tf.sigmoid(logits))
    return float(value), tape.gradient(value, logits).numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_probabilities_matches_pytorch_bceloss(dtype):
    loss = BinaryReconstructionLoss(from_probabilities=True, dtype=dtype)
    value, logit_gradient = loss_and_logit_gradient(loss, TARGETS, LOGITS, dtype)
    probabilities = tf.sigmoid(tf.constant(LOGITS, dtype)).numpy().astype(np.float64)
    expected_value, probability_gradient = torch_bce_reference(TARGETS, probabilities)
    # Through the sigmoid: d/dz = d/dp * p (1 - p).
    expected_gradient = probability_gradient * probabilities * (1 - probabilities)
    tolerance = 1e-6 if dtype == "float32" else 1e-12
    assert value == pytest.approx(expected_value, rel=tolerance)
    np.testing.assert_allclose(logit_gradient, expected_gradient, rtol=1e-5, atol=tolerance)
    if dtype == "float32":
        # A confidently wrong pixel (z = 20 or 40 with target 0: p == 1.0) costs the clamped 100
        # nats and gets no gradient, as in PyTorch; the logits form would give 1 / size.
        assert logit_gradient[0, 4] == 0.0 and logit_gradient[0, 5] == 0.0


def test_formulations_agree_off_saturation_and_differ_on_it():
    logits_loss = BinaryReconstructionLoss(dtype="float64")
    torch_loss = BinaryReconstructionLoss(from_probabilities=True, dtype="float64")

    @tf.function  # the logits form needs the sigmoid's graph (Keras reads its logits)
    def both(targets, logits):
        probabilities = tf.sigmoid(logits)
        return logits_loss(targets, probabilities), torch_loss(targets, probabilities)

    targets = tf.constant([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]], tf.float64)
    logits = tf.constant([[-3.0, 0.5, 2.0, 12.0], [-20.0, 3.0, 0.0, 25.0]], tf.float64)
    first, second = both(targets, logits)
    assert float(first) == pytest.approx(float(second), rel=1e-12)
    # A wrong pixel saturated in float64 (p (1 - p) < 1e-12 beyond |z| ~ 27.6; p == 1.0 beyond
    # z ~ 36.7): exact 40 nats from the logits, the clamped 100 from the probabilities.
    saturated = both(tf.constant([[0.0]], tf.float64), tf.constant([[40.0]], tf.float64))
    assert [float(v) for v in saturated] == pytest.approx([40.0, 100.0], rel=1e-9)


def test_from_probabilities_config_and_errors():
    loss = BinaryReconstructionLoss(from_probabilities=True)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, BinaryReconstructionLoss) and clone.from_probabilities
    assert not BinaryReconstructionLoss().from_probabilities
    with pytest.raises(ValueError, match="from_probabilities must be a bool"):
        BinaryReconstructionLoss(from_probabilities="yes")
