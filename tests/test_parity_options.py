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


# ----------------------------------------------------------------------------- the benchmark
# benchmarks/reference_parity.py compares the project with PyTorch (not installed in CI); its
# project side is tested here so that it keeps working with the trainer's components.


def test_parity_benchmark_exports_the_trainers_batches():
    from benchmarks import reference_parity
    from tf_bihalf.training import pipelines

    order, offsets, lengths = reference_parity.export_batches(10, 4, seed=3, epochs=2)
    assert lengths.tolist() == [4, 4, 2, 4, 4, 2]
    assert offsets.tolist() == [0, 4, 8, 10, 14, 18]
    expected = np.concatenate([pipelines.epoch_permutation(10, 3, epoch) for epoch in (0, 1)])
    np.testing.assert_array_equal(order, expected)


def test_parity_benchmark_keras_side_runs_in_float64_throughout():
    from benchmarks import reference_parity

    rng = np.random.default_rng(0)
    order, offsets, lengths = reference_parity.export_batches(20, 8, seed=0, epochs=2)
    spec = {
        "pixels": (rng.random((20, 16)) > 0.5).astype(np.uint8),
        "order": order,
        "offsets": offsets,
        "lengths": lengths,
        "snapshot_steps": reference_parity.snapshot_steps(6, 3, first=2, every=50),
        **reference_parity.initial_weights(bits=4, hidden=8, input_dim=16, seed=0),
    }
    config = {
        "bits": 4, "hidden": 8, "input_dim": 16, "learning_rate": 1e-3, "weight_decay": 1e-5,
        "milestones": [1], "factor": 0.1, "epochs": 2, "batch_size": 8, "steps_per_epoch": 3,
        "hash_layer": "bihalf", "gamma": 1.0, "dtype": "float64", "bce": "logits",
    }  # fmt: skip
    exact = reference_parity.run_keras_steps(spec, config, "f64")
    assert keras.config.floatx() == "float32"
    assert keras.config.dtype_policy().name == "float32"  # later tests build float32 models
    # The float64 rate, exactly PyTorch's Python floats, dropping at the first step of epoch 1.
    assert exact["rates"].tolist() == [1e-3] * 3 + [1e-3 * 0.1] * 3
    assert reference_parity.change_steps(exact["rates"]) == [3]
    assert exact["codes"].shape == (40, 4) and set(np.unique(exact["codes"])) == {-1, 1}
    # Each bi-half batch is half +1 per bit (8 rows: 4; the last 4 rows: 2).
    assert (exact["codes"][:8] == 1).sum(axis=0).tolist() == [4] * 4
    assert sorted(exact["weights"]) == spec["snapshot_steps"].tolist()
    assert exact["codes"].dtype == np.int8 and np.isfinite(exact["losses"]).all()
