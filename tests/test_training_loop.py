"""The one training loop's guarantees: locked run directories, config-bound and crash-safe
checkpoints, readable output. Runs the autoencoder task on scikit-learn's 8x8 digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tf_bihalf.errors import InputError
from tf_bihalf.tasks.autoencoder import AutoencoderTask
from tf_bihalf.training import workdir as workdir_lib
from tf_bihalf.training.checkpoint import TrainingCheckpoint
from tf_bihalf.training.loop import train_and_evaluate
from tf_bihalf.training.record import RunRecord, config_sha256
from trainers import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**changes):
    config = common.load_config("autoencoder", smoke=True)
    config.update(dataset="digits", epochs=2, batch_size=240, bits=8, hidden=16)
    config["schedule"]["milestones"] = [1]
    config["monitor"]["sample_size"] = 100
    config["evaluation"]["every_n_epochs"] = 0
    config.update(changes)
    return common.finalize_config(config)


def train(config, path, **options):
    return train_and_evaluate(AutoencoderTask(config), config, path, progress=False, **options)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("loop") / "run")
    return path, train(tiny_config(), path)


def test_a_second_trainer_on_the_same_directory_is_refused(tmp_path):
    path = str(tmp_path / "run")
    config = tiny_config()
    run = workdir_lib.prepare_workdir(path, config)
    run.lock()
    try:
        # Another process (here: another open of the lock file) cannot take it.
        script = (
            "import sys; from tf_bihalf.training import workdir\n"
            "run = workdir.Workdir(path=sys.argv[1], resuming=False)\n"
            "try:\n    run.lock()\nexcept ValueError as error:\n    print('refused:', error)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, path], capture_output=True, text=True, cwd=ROOT
        )
        assert "refused:" in result.stdout and f"process {os.getpid()}" in result.stdout
        assert "another --workdir" in result.stdout
    finally:
        run.unlock()
    train(config, path)  # free again once the first one is done


def test_checkpoints_are_bound_to_the_config(finished, tmp_path):
    path, _ = finished
    # A directory with checkpoints but without config.json cannot be resumed by anyone.
    stripped = str(tmp_path / "stripped")
    os.makedirs(os.path.join(stripped, "checkpoints"))
    for name in os.listdir(os.path.join(path, "checkpoints")):
        with open(os.path.join(path, "checkpoints", name), "rb") as source:
            data = source.read()
        with open(os.path.join(stripped, "checkpoints", name), "wb") as target:
            target.write(data)
    with pytest.raises(InputError, match="holds checkpoints but no config.json"):
        train(tiny_config(hash_layer="sign"), stripped)
    # Writing another config.json by hand does not help: the checkpoint knows its config.
    other = tiny_config()
    other["hash_layer_kwargs"] = {"gamma": 2.0}
    workdir_lib.write_json(os.path.join(stripped, "config.json"), other)
    with pytest.raises(InputError, match="written by a run with another config"):
        train(other, stripped)


def test_truncated_newest_checkpoint_falls_back_to_the_older_one(finished, tmp_path):
    path, reference = finished
    copy = str(tmp_path / "copy")
    os.makedirs(os.path.join(copy, "checkpoints"))
    workdir_lib.write_json(os.path.join(copy, "config.json"), reference["config"])
    for name in ("epoch-0001.npz", "epoch-0002.npz"):
        with open(os.path.join(path, "checkpoints", name), "rb") as source:
            data = source.read()
        if name == "epoch-0002.npz":
            data = data[: len(data) // 2]  # a truncated copy
        with open(os.path.join(copy, "checkpoints", name), "wb") as target:
            target.write(data)
    stale = os.path.join(copy, "checkpoints", "tmpabc.tmp")
    open(stale, "w").close()
    resumed = train(tiny_config(), copy)
    assert not os.path.exists(stale)  # temporaries of killed writes are removed at start
    assert resumed["training"]["resumed_from_epoch"] == 1
    # Epoch 2 retrained from the intact epoch-1 state: the same result as the clean run.
    np.testing.assert_allclose(
        resumed["training"]["final_loss"], reference["training"]["final_loss"], rtol=1e-6
    )
    assert resumed["metrics"]["map"] == reference["metrics"]["map"]


def test_checkpoint_restore_unit_cases(finished, tmp_path):
    path, reference = finished
    directory = str(tmp_path / "checkpoints")
    os.makedirs(directory)
    with open(os.path.join(directory, "epoch-0003.npz"), "wb") as file:
        file.write(b"not a zip file")
    config = tiny_config()
    task = AutoencoderTask(config)
    task.prepare(None)
    models = task.build_models()
    models.train_model.compile(optimizer="adam", loss=models.loss)
    checkpoint = TrainingCheckpoint(
        directory, models.train_model, models.train_model.optimizer, config_sha256="x"
    )
    assert checkpoint.restore() == 0  # nothing intact: start over (with a warning)


def test_run_record_round_trip_and_errors(finished, tmp_path):
    path, results = finished
    record = RunRecord.read(path)
    assert record.to_dict() == results["record"]
    stored_config = json.load(open(os.path.join(path, "config.json")))
    assert record.config_sha256 == config_sha256(stored_config)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        RunRecord.read(str(broken))
    (broken / "run.json").write_text(json.dumps({**results["record"], "bits": 0}))
    with pytest.raises(InputError, match="bits must be a positive integer"):
        RunRecord.read(str(broken))


def test_log_output_is_one_line_per_epoch_without_escape_codes(tmp_path):
    """Redirected output (a file or pipe) gets one line per epoch, no progress-bar escapes,
    and none of the warnings Keras would print for the loop's own data."""
    command = [sys.executable, "-m", "trainers.autoencoder", "--smoke", "--dataset=digits"]
    command += [f"--workdir={tmp_path / 'run'}", "--bits=8", "--epochs=3"]
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "\x1b" not in output and "\r" not in output and "\x08" not in output
    assert len([line for line in output.splitlines() if "/step - loss:" in line]) == 3
    for noise in ("shuffle=True", "structure of `inputs`", "cuInit", "absl::InitializeLog"):
        assert noise not in output, noise


def test_best_epoch_is_selected_on_held_out_training_rows_never_the_queries(tmp_path):
    config = tiny_config(epochs=4)
    config["evaluation"].update(
        validation_fraction=0.2, select_epoch="best_validation", every_n_epochs=1
    )
    path = str(tmp_path / "run")
    results = train(config, path)
    counts = results["data_report"]["counts"]
    assert (
        counts["validation"] == round(0.2 * 1437) and counts["train"] == 1437 - counts["validation"]
    )
    assert counts["database"] == 1437  # the protocol's database is unchanged
    with np.load(os.path.join(path, "checkpoints", "best_validation.npz")) as best:
        epoch, score = int(best["epoch"]), float(best["score"])
    assert results["training"]["selected_epoch"] == epoch and 1 <= epoch <= 4
    # The stored score is the best of the validation curve logged to TensorBoard.
    import tensorflow as tf

    directory = os.path.join(path, "tensorboard", "validation")
    curve = [
        float(tf.make_ndarray(value.tensor))
        for name in os.listdir(directory)
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name))
        for value in event.summary.value
        if value.tag == "retrieval/map"
    ]
    assert len(curve) == 4 and score == pytest.approx(max(curve))
    assert curve.index(max(curve)) + 1 == epoch  # ties keep the earlier epoch
    # Selecting without a validation split is refused: never on the query set.
    bad = tiny_config()
    bad["evaluation"]["select_epoch"] = "best_validation"
    with pytest.raises(InputError, match="validation_fraction > 0"):
        train(bad, str(tmp_path / "bad"))


def test_evaluation_ranks_once_and_equals_the_separate_metrics(monkeypatch):
    from tf_bihalf import metrics
    from tf_bihalf.training import evaluation

    rng = np.random.default_rng(0)
    query = np.where(rng.random((40, 12)) > 0.5, 1, -1), rng.integers(0, 4, 40)
    database = np.where(rng.random((300, 12)) > 0.5, 1, -1), rng.integers(0, 4, 300)
    arguments = (query[0], database[0], query[1], database[1])
    expected = {
        "100": metrics.mean_average_precision(*arguments, top_k=100),
        "All": metrics.mean_average_precision(*arguments),
        "average": metrics.mean_average_precision(*arguments, top_k=100, ties="average"),
        "p@n": list(metrics.precision_at_n(*arguments, [1, 10, 200])),
        "pr": list(metrics.precision_recall_curve(*arguments)["precision"]),
        "radius": metrics.precision_within_radius(*arguments, radius=2),
    }
    for name in (
        "mean_average_precision",
        "precision_at_n",
        "precision_recall_curve",
        "precision_within_radius",
    ):  # the one-pass report must not fall back on the per-metric functions
        monkeypatch.setattr(metrics, name, None)
    scores = evaluation.evaluate_retrieval(
        query, database, top_k=100, extra_top_k=[1000], precision_ns=[1, 10, 200, 5000]
    )
    assert scores["map"] == expected["100"] and scores["map_at"] == 100
    assert scores["map_at_k"] == {"100": expected["100"], "All": expected["All"]}
    assert scores["map_ties_average"] == expected["average"]
    assert scores["precision_at_n"] == {"n": [1, 10, 200], "precision": expected["p@n"]}
    assert scores["pr_curve"]["precision"] == expected["pr"]
    assert scores["precision_within_radius"] == {"radius": 2, "precision": expected["radius"]}
