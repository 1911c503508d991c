"""Resumable training: epoch checkpoints, the per-epoch shuffle, the run directory."""

import json
import os
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bihalf.losses.reconstruction import BinaryReconstructionLoss
from tf_bihalf.models.autoencoder import HashingAutoencoder
from tf_bihalf.training import loop, pipelines, schedules, workdir
from tf_bihalf.training.checkpoint import TrainingCheckpoint
from tf_bihalf.training.optimizers import build_optimizer

X = (np.random.default_rng(0).random((150, 16)) > 0.5).astype("float32")
STEPS = pipelines.steps_per_epoch(150, 32)  # 5, the last batch has 22 rows


def compiled_model(hash_layer, kwargs):
    keras.utils.set_random_seed(3)
    model = HashingAutoencoder(
        bits=6, hash_layer=hash_layer, hidden=8, input_dim=16, hash_layer_kwargs=kwargs
    )
    schedule = schedules.MultiStepDecay(0.05, STEPS, milestones=[1, 2])
    optimizer = build_optimizer("sgd", schedule, weight_decay=1e-3, momentum=0.9, dampening=0.5)
    model.compile(optimizer=optimizer, loss=BinaryReconstructionLoss())
    return model, optimizer


def fit(model, checkpoint, initial_epoch, epochs=3):
    data = pipelines.epoch_batches(
        X, 32, seed=7, epochs=epochs, initial_epoch=initial_epoch, transform=lambda x: (x, x)
    )
    model.fit(
        data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=STEPS,
        verbose=0,
        shuffle=False,
        callbacks=[checkpoint.callback()],
    )


@pytest.mark.parametrize(
    "hash_layer, kwargs, state",
    [
        ("tanh", {"growth": 0.5}, "hash_layer/step"),
        ("median", {"momentum": 0.5}, "hash_layer/moving_median"),
    ],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path, hash_layer, kwargs, state):
    model, optimizer = compiled_model(hash_layer, kwargs)
    fit(model, TrainingCheckpoint(str(tmp_path / "full"), model, optimizer), initial_epoch=0)
    expected = {v.path: np.asarray(v) for v in model.variables + optimizer.variables}

    model, optimizer = compiled_model(hash_layer, kwargs)
    fit(model, TrainingCheckpoint(str(tmp_path / "cut"), model, optimizer), 0, epochs=2)
    # A new process: fresh objects (other random init), restored from the directory.
    keras.utils.set_random_seed(99)
    model, optimizer = compiled_model(hash_layer, kwargs)
    checkpoint = TrainingCheckpoint(str(tmp_path / "cut"), model, optimizer)
    assert checkpoint.restore() == 2
    assert int(optimizer.iterations) == 2 * STEPS
    fit(model, checkpoint, initial_epoch=2)
    actual = {v.path: np.asarray(v) for v in model.variables + optimizer.variables}
    assert state in actual and np.any(actual[state] != 0)  # the hash layer's state is covered
    assert any("momentum" in name for name in actual)  # and the SGD momentum buffers
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_checkpoint_keeps_the_newest_and_rejects_another_model(tmp_path):
    model, optimizer = compiled_model("bihalf", {})
    checkpoint = TrainingCheckpoint(str(tmp_path), model, optimizer, keep=2)
    assert checkpoint.restore() == 0
    for epoch in (1, 2, 3):
        checkpoint.save(epoch)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002.npz", "epoch-0003.npz"]
    other = HashingAutoencoder(bits=7, hidden=8, input_dim=16)
    schedule = schedules.MultiStepDecay(0.1, STEPS, milestones=[1])
    other.compile(build_optimizer("sgd", schedule, momentum=0.9), BinaryReconstructionLoss())
    with pytest.raises(ValueError, match=r"encoder_projection/kernel has shape \(8, 6\)"):
        TrainingCheckpoint(str(tmp_path), other, other.optimizer).restore()
    adam = HashingAutoencoder(bits=6, hidden=8, input_dim=16)
    adam.compile(optimizer=build_optimizer("adam", 1e-3), loss=BinaryReconstructionLoss())
    with pytest.raises(ValueError, match="different model or optimizer"):
        TrainingCheckpoint(str(tmp_path), adam, adam.optimizer).restore()
    with pytest.raises(ValueError, match="keep must be >= 1"):
        TrainingCheckpoint(str(tmp_path), model, optimizer, keep=0)


def test_epoch_batches_resume_and_remainder():
    data = np.arange(10)
    full = [batch.numpy().tolist() for batch in pipelines.epoch_batches(data, 4, seed=1, epochs=3)]
    assert [len(batch) for batch in full] == [4, 4, 2] * 3
    for epoch in range(3):
        assert sorted(sum(full[3 * epoch : 3 * epoch + 3], [])) == list(range(10))
    assert full[:3] != full[3:6]  # reshuffled every epoch
    resumed = [
        b.numpy().tolist()
        for b in pipelines.epoch_batches(data, 4, seed=1, epochs=3, initial_epoch=2)
    ]
    assert resumed == full[6:]
    dropped = list(pipelines.epoch_batches(data, 4, seed=1, epochs=1, drop_remainder=True))
    assert [len(batch) for batch in dropped] == [4, 4]
    assert [pipelines.steps_per_execution_for(s, 8) for s in (469, 40, 23, 3)] == [7, 8, 1, 3]
    with pytest.raises(ValueError, match="no batch"):
        pipelines.steps_per_epoch(3, 4, drop_remainder=True)
    with pytest.raises(ValueError, match="same number of rows"):
        pipelines.epoch_batches((np.zeros(3), np.zeros(4)), 2, seed=0, epochs=1)


def test_training_data_runs_without_the_autotuning_model():
    # tf.data's autotuning thread sleeps up to 60 s between optimisations and deleting the
    # iterator waits for it: the end of a long fit stalled for up to a minute.
    data = np.arange(10)
    assert pipelines.epoch_batches(data, 4, seed=1, epochs=1).options().autotune.enabled is False
    autotuned = tf.data.Dataset.range(5).map(lambda x: x * 2).prefetch(tf.data.AUTOTUNE)
    assert autotuned.options().autotune.enabled is not False

    class Recorder:
        def fit(self, dataset, **kwargs):
            self.dataset = dataset
            return SimpleNamespace(history={"loss": [0.5]})

    models = SimpleNamespace(train_model=Recorder(), loss=None)
    task_data = SimpleNamespace(train=lambda epoch: autotuned, steps_per_epoch=5)
    strategy = tf.distribute.get_strategy()
    assert loop._fit(models, task_data, strategy, {"epochs": 1}, 0, [], False) == [0.5]
    fed = models.train_model.dataset
    assert fed.options().autotune.enabled is False
    assert fed.options().autotune.initial_parallelism == os.cpu_count()
    assert list(fed.as_numpy_iterator()) == [0, 2, 4, 6, 8]


def test_workdir_resume_detection_and_config_mismatch(tmp_path):
    path = str(tmp_path / "run")
    config = {"bits": 32, "optimizer": {"name": "adam", "learning_rate": np.float32(0.001)}}
    run = workdir.prepare_workdir(path, config)
    assert not run.resuming and os.path.isdir(run.checkpoint_dir)
    with open(run.config_path) as file:
        assert json.load(file)["optimizer"]["learning_rate"] == pytest.approx(0.001)
    open(os.path.join(run.checkpoint_dir, "epoch-0001.npz"), "wb").close()
    assert workdir.prepare_workdir(path, config).resuming
    changed = {"bits": 64, "optimizer": {"name": "sgd", "learning_rate": np.float32(0.001)}}
    with pytest.raises(ValueError, match=r"differing keys: bits, optimizer.name\)"):
        workdir.prepare_workdir(path, changed)
    run.write_results({"map": np.float64(0.5), "curve": np.arange(3), "missing": float("nan")})
    with open(run.results_path) as file:
        assert json.load(file) == {"map": 0.5, "curve": [0, 1, 2], "missing": None}
