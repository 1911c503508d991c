"""BitMonitor and RetrievalEvaluation write what they promise to TensorBoard."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bihalf import metrics
from tf_bihalf.callbacks import BitMonitor, RetrievalEvaluation
from tf_bihalf.layers import Sign
from tf_bihalf.training import submodels
from tf_bihalf.training.pipelines import ordered_batches


def read_events(directory):
    """{tag: [(step, numpy value), ...]} of every summary in ``directory``."""
    events = {}
    for name in sorted(os.listdir(directory)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                events.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
    return events


def small_hashing_model(bits=6):
    """A generic functional model (no ``continuous_encoder`` attribute): Dense -> Sign -> Dense."""
    inputs = keras.Input((10,))
    u = keras.layers.Dense(bits, name="projection")(inputs)
    codes = Sign(name="codes")(u)
    outputs = keras.layers.Dense(10)(codes)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    return model


def test_bit_monitor_histograms_and_bit_statistics(tmp_path):
    keras.utils.set_random_seed(0)
    model = small_hashing_model()
    x = np.random.default_rng(0).normal(size=(64, 10)).astype("float32")
    monitor = BitMonitor(x[:40], str(tmp_path), histogram_bits=3)
    model.fit(x, x, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    events = read_events(str(tmp_path))
    assert {"U/bit_00", "U/bit_01", "U/bit_02", "U/all_bits"} <= set(events)
    assert "U/bit_03" not in events
    assert [step for step, _ in events["U/bit_00"]] == [0, 1]
    # The final histograms describe the final model's U on the sample batch.
    u = np.asarray(model.get_layer("projection")(x[:40]))
    bit_two = events["U/bit_02"][-1][1]  # rows: (left edge, right edge, count)
    assert bit_two[:, 2].sum() == 40
    assert bit_two[0, 0] == pytest.approx(u[:, 2].min(), abs=1e-5)
    assert bit_two[-1, 1] == pytest.approx(u[:, 2].max(), abs=1e-5)
    assert events["U/all_bits"][-1][1][:, 2].sum() == 40 * 6
    codes = np.where(u >= 0, 1, -1)
    _, mean_entropy = metrics.bit_entropy(codes)
    assert float(events["bits/mean_entropy"][-1][1]) == pytest.approx(mean_entropy, abs=1e-5)
    balance = metrics.bit_balance(codes)
    assert float(events["bits/fraction_positive/bit_01"][-1][1]) == pytest.approx(balance[1])
    assert float(events["bits/fraction_positive_min"][-1][1]) == pytest.approx(balance.min())
    correlation = np.abs(metrics.bit_correlation(codes) - np.eye(6)).max()
    assert float(events["bits/max_abs_correlation"][-1][1]) == pytest.approx(correlation, abs=1e-6)


def test_submodels_need_exactly_one_hash_layer():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    with pytest.raises(ValueError, match="has 0 tf_bihalf hash layers"):
        submodels.continuous_encoder(plain)
    monitor = BitMonitor(np.zeros((2, 4), "float32"), "/tmp/unused")
    monitor.set_model(plain)
    with pytest.raises(ValueError, match="has 0 tf_bihalf hash layers"):
        monitor.on_train_begin()
    model = small_hashing_model(bits=5)
    assert submodels.continuous_encoder(model).output.shape == (None, 5)
    assert isinstance(submodels.find_hash_layer(model), Sign)


def test_retrieval_evaluation_logs_the_map_of_the_current_codes(tmp_path):
    keras.utils.set_random_seed(1)
    model = small_hashing_model(bits=8)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 10)).astype("float32")
    labels = rng.integers(0, 3, size=120)
    query, database = (
        ordered_batches((x[:20], labels[:20]), 16),
        ordered_batches((x[20:], labels[20:]), 32),
    )
    evaluation = RetrievalEvaluation(
        query, database, str(tmp_path), every_n_epochs=2, average_ties=True, progress=False
    )
    model.fit(x, x, epochs=3, batch_size=32, verbose=0, callbacks=[evaluation])
    events = read_events(str(tmp_path))
    assert [step for step, _ in events["retrieval/map"]] == [1]  # after epoch 2 only
    encoder = submodels.code_encoder(model)
    codes = np.asarray(encoder(x, training=False))
    # The logged value was computed before the third epoch; evaluate() again now, against
    # tf_bihalf.metrics on the current codes.
    assert evaluation.history == [(2, pytest.approx(float(events["retrieval/map"][0][1])))]
    fresh = evaluation.evaluate(step=2)
    expected = metrics.mean_average_precision(codes[:20], codes[20:], labels[:20], labels[20:])
    assert fresh["retrieval/map"] == pytest.approx(expected)
    assert "retrieval/map_ties_average" in fresh
    with pytest.raises(ValueError, match="every_n_epochs"):
        RetrievalEvaluation(query, database, str(tmp_path), every_n_epochs=0)
