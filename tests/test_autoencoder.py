"""The hashing autoencoder, its loss and its trainer (end to end on scikit-learn's real digits)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tests import testing
from tf_bihalf.layers import bihalf_codes
from tf_bihalf.losses.reconstruction import BinaryReconstructionLoss
from tf_bihalf.models.autoencoder import HashingAutoencoder
from tf_bihalf.tasks.autoencoder import AutoencoderTask
from tf_bihalf.training.loop import train_and_evaluate
from trainers import autoencoder, common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numpy_forward(model, x, binarize):
    """The autoencoder written out in numpy: the decoder sees binarize(U)."""
    w = {layer.name: [np.asarray(v) for v in layer.weights] for layer in model.layers}
    hidden = np.maximum(x @ w["encoder_hidden"][0] + w["encoder_hidden"][1], 0)
    u = hidden @ w["encoder_projection"][0] + w["encoder_projection"][1]
    codes = binarize(u)
    hidden = np.maximum(codes @ w["decoder_hidden"][0] + w["decoder_hidden"][1], 0)
    logits = hidden @ w["decoder_output"][0] + w["decoder_output"][1]
    return 1 / (1 + np.exp(-logits)), u


def test_architecture_and_pytorch_linear_init():
    keras.utils.set_random_seed(0)
    model = HashingAutoencoder(bits=16, hidden=256, input_dim=784)
    shapes = {layer.name: [tuple(v.shape) for v in layer.weights] for layer in model.layers}
    assert shapes["encoder_hidden"] == [(784, 256), (256,)]
    assert shapes["encoder_projection"] == [(256, 16), (16,)]
    assert shapes["decoder_hidden"] == [(16, 256), (256,)]
    assert shapes["decoder_output"] == [(256, 784), (784,)]
    for name, fan_in in (
        ("encoder_hidden", 784),
        ("encoder_projection", 256),
        ("decoder_hidden", 16),
    ):
        kernel, bias = (np.asarray(v) for v in model.get_layer(name).weights)
        bound = 1 / np.sqrt(fan_in)
        for values in (kernel, bias):
            assert np.abs(values).max() <= bound
        # Uniform on [-b, b] has standard deviation b / sqrt(3) (Glorot's would differ).
        assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.1)
        assert np.abs(bias).max() > 0.5 * bound  # the bias is not zero-initialised


@pytest.mark.parametrize("hash_layer", ["sign", "bihalf"])
def test_decoder_is_fed_binary_codes(hash_layer):
    keras.utils.set_random_seed(1)
    model = HashingAutoencoder(bits=8, hash_layer=hash_layer, input_dim=64, hidden=32)
    x = np.random.default_rng(0).random((10, 64)).astype("float32")

    def train_codes(u):
        if hash_layer == "sign":
            return np.where(u >= 0, 1.0, -1.0)
        return np.asarray(bihalf_codes(tf.constant(u, tf.float32)))

    expected, _ = numpy_forward(model, x, train_codes)
    np.testing.assert_allclose(np.asarray(model(x, training=True)), expected, atol=1e-5)
    expected, u = numpy_forward(model, x, lambda u: np.where(u >= 0, 1.0, -1.0))
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, atol=1e-5)
    # A decoder fed U itself would give a different reconstruction.
    continuous, _ = numpy_forward(model, x, lambda u: u)
    assert np.abs(continuous - expected).max() > 1e-3
    codes = model.encode(x)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(codes, np.where(u >= 0, 1, -1))
    np.testing.assert_allclose(np.asarray(model.continuous_encoder(x)), u, atol=1e-5)


def test_keras_round_trip_and_encoder_artifact(tmp_path):
    model = HashingAutoencoder(
        bits=12, hash_layer="median", input_dim=64, hidden=16, hash_layer_kwargs={"momentum": 0.5}
    )
    x = np.random.default_rng(0).random((6, 64)).astype("float32")
    model(x, training=True)  # moves the median, so that the round trip must carry that state
    testing.run_serialization_test(model)
    restored = testing.run_model_saving_test(model, x)
    assert restored.get_layer("hash_layer").momentum == 0.5
    path = str(tmp_path / "encoder.keras")
    model.encoder.save(path)
    encoder = keras.saving.load_model(path)
    codes = np.asarray(encoder(x, training=False))
    np.testing.assert_array_equal(codes, model.encode(x).astype(np.float32))
    assert set(np.unique(codes)) <= {-1.0, 1.0}


def test_model_argument_errors():
    with pytest.raises(ValueError, match="bits must be a positive integer"):
        HashingAutoencoder(bits=0)
    with pytest.raises(ValueError, match="Unknown hash layer"):
        HashingAutoencoder(bits=8, hash_layer="greedy")
    with pytest.raises(ValueError, match=r"encode expects \(N, 784\)"):
        HashingAutoencoder(bits=8).encode(np.zeros((2, 28, 28)))


def test_reconstruction_loss_matches_numpy_and_saturates_safely():
    rng = np.random.default_rng(0)
    targets = (rng.random((5, 20)) > 0.5).astype("float32")
    logits = rng.normal(scale=3, size=(5, 20)).astype("float32")
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = -np.mean(targets * np.log(probabilities) + (1 - targets) * np.log(1 - probabilities))
    loss = BinaryReconstructionLoss()
    assert float(loss(targets, tf.sigmoid(logits))) == pytest.approx(expected, rel=1e-4)
    # Saturated output (p == 1.0 in float32) with target 0: the model's sigmoid output carries
    # its logits, so the loss is the exact 40 nats, not a clipped 15.9 or an infinity.
    model = HashingAutoencoder(bits=4, input_dim=8, hidden=4)
    kernel, bias = model.get_layer("decoder_output").weights
    kernel.assign(np.zeros((4, 8)))
    bias.assign(np.full((8,), 40.0))
    model.compile(optimizer="sgd", loss=BinaryReconstructionLoss())
    zeros = np.zeros((4, 8), "float32")
    assert model.evaluate(zeros, zeros, verbose=0) == pytest.approx(40.0, rel=1e-4)
    with tf.GradientTape() as tape:
        value = loss(zeros, model(zeros, training=True))
    gradients = tape.gradient(value, model.trainable_variables)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in gradients)


# ----------------------------------------------------------------------------- the trainer


def digits_config(**changes):
    config = common.load_config("autoencoder", smoke=True)
    config.update(dataset="digits", epochs=3, batch_size=72, bits=16)  # 20 steps: 5 per call
    config["schedule"]["milestones"] = [2]
    config["monitor"]["sample_size"] = 300
    config.update(changes)
    return common.finalize_config(config)


def train(config, path, **options):
    return train_and_evaluate(AutoencoderTask(config), config, path, **options)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("runs") / "digits")
    results = train(digits_config(), path, progress=False)
    return path, results


def event_tags(directory):
    tags = {}
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name or "?"
                tags.setdefault(value.tag, []).append((event.step, plugin, value))
    return tags


def test_run_directory_and_results_schema(finished_run):
    path, results = finished_run
    with open(os.path.join(path, "results.json")) as file:
        stored = json.load(file)
    config = stored["config"]
    assert config["bits"] == 16 and config["task"] == "autoencoder"
    assert config["hash_layer"] == "bihalf" and config["hash_layer_kwargs"] == {"gamma": 1.0}
    with open(os.path.join(path, "config.json")) as file:
        assert json.load(file) == config
    record = stored["record"]
    assert record["input"] == {
        "kind": "vector",
        "shape": [64],
        "range": [0.0, 1.0],
        "dtype": "float32",
    }
    assert record["bits"] == 16 and record["task"] == "autoencoder" and record["backbone"] is None
    with open(os.path.join(path, "run.json")) as file:
        assert json.load(file) == record
    assert metrics_keys_ok(stored["metrics"])
    metrics = stored["metrics"]
    assert 0 < metrics["map"] <= 1 and metrics["map_at"] == "All" and metrics["ties"] == "stable"
    assert 0 < metrics["map_ties_average"] <= 1
    assert metrics["num_query"] == 360 and metrics["num_database"] == 1437
    assert len(metrics["pr_curve"]["precision"]) == 17 and len(metrics["pr_curve"]["recall"]) == 17
    assert metrics["precision_at_n"]["n"] == [1, 10, 50, 100, 200, 500, 1000]
    assert len(metrics["bits"]["balance"]) == 16 and 0 <= metrics["bits"]["mean_entropy"] <= 1
    training = stored["training"]
    assert training["epochs"] == 3 and training["resumed_from_epoch"] == 0
    assert training["samples_per_second"] > 0 and len(training["loss_history_this_process"]) == 3
    assert stored["total_wall_time_s"] > 0 and stored["environment"]["replicas"] >= 1
    for plot in stored["files"]["plots"]:
        with open(os.path.join(path, plot), "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    encoder = keras.saving.load_model(os.path.join(path, "encoder.keras"))
    digits = np.random.default_rng(0).random((4, 64)).astype("float32")
    assert set(np.unique(np.asarray(encoder(digits, training=False)))) <= {-1.0, 1.0}


def metrics_keys_ok(metrics):
    return metrics["map_at_k"] == {"All": metrics["map"]}


def test_tensorboard_has_bit_histograms_loss_and_learning_rate(finished_run):
    path, _ = finished_run
    bits = event_tags(os.path.join(path, "tensorboard", "bits"))
    for bit in range(8):
        steps = [step for step, plugin, _ in bits[f"U/bit_{bit:02d}"]]
        assert steps == [0, 1, 2] and bits[f"U/bit_{bit:02d}"][0][1] == "histograms"
    assert "U/bit_08" not in bits  # only the first 8 bits get their own histogram
    histogram = tf.make_ndarray(bits["U/all_bits"][-1][2].tensor)
    assert histogram[:, 2].sum() == pytest.approx(300 * 16)  # every U value of the sample
    balance = tf.make_ndarray(bits["bits/fraction_positive"][-1][2].tensor)
    assert balance[:, 2].sum() == pytest.approx(16)  # one entry per bit
    for tag in ("bits/mean_entropy", "bits/max_abs_correlation", "bits/fraction_positive/bit_00"):
        assert len(bits[tag]) == 3
    train = event_tags(os.path.join(path, "tensorboard", "train"))
    learning_rates = [float(tf.make_ndarray(v.tensor)) for _, _, v in train["epoch_learning_rate"]]
    np.testing.assert_allclose(learning_rates, [1e-3, 1e-3, 1e-4], rtol=1e-5)  # x0.1 at epoch 2
    assert len(train["epoch_loss"]) == 3
    retrieval = event_tags(os.path.join(path, "tensorboard", "retrieval"))
    assert [step for step, _, _ in retrieval["retrieval/map"]] == [0, 1, 2]


def test_resume_after_interruption_is_exact(finished_run, tmp_path):
    reference_path, reference = finished_run

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # dies during epoch 2's end, before its checkpoint is written
                raise KeyboardInterrupt("simulated kill")

    path = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        train(digits_config(), path, progress=False, extra_callbacks=(Kill(),))
    assert sorted(os.listdir(os.path.join(path, "checkpoints"))) == ["epoch-0001.npz"]
    resumed = train(digits_config(), path, progress=False)
    assert resumed["training"]["resumed_from_epoch"] == 1
    assert len(resumed["training"]["loss_history_this_process"]) == 2
    np.testing.assert_allclose(
        resumed["training"]["loss_history_this_process"],
        reference["training"]["loss_history_this_process"][1:],
        rtol=1e-6,
    )
    with np.load(os.path.join(reference_path, "checkpoints", "epoch-0003.npz")) as expected:
        with np.load(os.path.join(path, "checkpoints", "epoch-0003.npz")) as actual:
            for key in expected.files:
                np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert resumed["metrics"]["map"] == reference["metrics"]["map"]
    # Running a finished run again re-evaluates it and keeps the training record.
    again = train(digits_config(), path, progress=False)
    assert again["metrics"]["map"] == reference["metrics"]["map"]
    assert again["training"]["re_evaluated"] and again["training"]["resumed_from_epoch"] == 1


def test_resume_refuses_a_different_config(finished_run):
    path, _ = finished_run
    with pytest.raises(ValueError, match=r"different config \(differing keys: bits\)"):
        train(digits_config(bits=32), path, progress=False)


def test_flags_resolve_into_the_config():
    flag_values = flags.FlagValues()
    autoencoder.define_flags(flag_values)
    flag_values(
        ["trainer", "--epochs", "10", "--hash_layer", "sign", "--gamma", "0.5", "--bits", "64"]
    )
    config = common.resolve_config(flag_values, "autoencoder", {})
    assert config["epochs"] == 10 and config["bits"] == 64
    assert config["schedule"]["milestones"] == [6, 8]  # 60 and 80 of 100, stretched to 10
    assert config["hash_layer_kwargs"] == {"gamma": 0.5}
    assert "hash_layer_options" not in config
    assert common.default_workdir(config) == os.path.join("runs", "autoencoder_mnist_sign_64bits")
    flag_values.unparse_flags()
    flag_values(["trainer", "--hash_layer", "relaxed", "--gamma", "1"])
    with pytest.raises(ValueError, match="--gamma applies to"):
        common.resolve_config(flag_values, "autoencoder", {})
    flag_values.unparse_flags()
    flag_values(["trainer"])
    paper = common.resolve_config(
        flag_values, "autoencoder", {}
    )  # the default is the paper's schedule
    assert paper["epochs"] == 100 and paper["schedule"]["milestones"] == [60, 80]
    assert paper["optimizer"] == {
        "name": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 1e-5,
        "momentum": 0.0,
        "dampening": 0.0,
    }
    assert paper["batch_size"] == 128 and paper["hash_layer_kwargs"] == {"gamma": 1.0}
    with pytest.raises(ValueError, match="Unknown config 'cifar'; available: .*autoencoder"):
        common.load_config("cifar")


def test_command_line_smoke_run(tmp_path):
    workdir = str(tmp_path / "cli")
    command = [sys.executable, "-m", "trainers.autoencoder", "--smoke", "--dataset", "digits"]
    command += ["--workdir", workdir, "--noprogress", "--bits", "8"]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mAP@All = " in result.stdout
    with open(os.path.join(workdir, "results.json")) as file:
        assert json.load(file)["config"]["bits"] == 8


def test_user_errors_exit_with_one_clear_line(monkeypatch, capsys):
    def main(argv):
        common.finalize_config(dict(common.load_config("autoencoder"), bits=0))

    monkeypatch.setattr(sys, "argv", ["trainer"])
    with pytest.raises(SystemExit) as info:
        common.run(main)
    assert info.value.code == 2
    assert "error: bits must be a positive integer; got 0" in capsys.readouterr().err
