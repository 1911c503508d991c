"""Multi-worker training (``--strategy=multi_worker``): two worker processes on 127.0.0.1 train
the autoencoder task exactly like one process, resume together from the chief's checkpoint, and
a dead worker fails the other with a clear error instead of a hang. Data: scikit-learn's digits,
307 training rows in batches of 100, so every epoch ends with an uneven 7-row batch (4 + 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bihalf.errors import InputError
from tf_bihalf.tasks.autoencoder import AutoencoderTask
from tf_bihalf.training import distributed, strategy
from tf_bihalf.training.loop import train_and_evaluate
from trainers import common, launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 20  # the workers' collective timeout in these tests
HANG_GUARD_S = 240  # a worker still running after this is a hang (never reached when correct)

# One worker: trains the tiny config under --strategy=multi_worker (TF_CONFIG from the test),
# then saves its model and optimizer variables. argv: workdir, output .npz, options (JSON).
WORKER = r"""
import json, os, signal, sys, time
import keras, numpy as np
from tf_bihalf.tasks.autoencoder import AutoencoderTask
from tf_bihalf.training.loop import train_and_evaluate
from tests.test_multi_worker import tiny_config, Snapshot

workdir, output, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = tiny_config(strategy="multi_worker", epochs=options["epochs"])

class Control(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == options.get("die_after_epoch"):
            os.kill(os.getpid(), signal.SIGKILL)
        if epoch + 1 == options.get("hang_after_epoch"):
            time.sleep(3600)  # alive (heartbeats go on) but never joins the next collective
        if epoch + 1 == options.get("stop_after_epoch"):
            self.model.stop_training = True

train_and_evaluate(AutoencoderTask(config), config, workdir, progress=False,
                   extra_callbacks=[Control(), Snapshot(output)])
"""


def tiny_config(**changes) -> dict:
    config = common.load_config("autoencoder", smoke=True)
    config.update(
        dataset="digits",
        train_examples=307,
        test_examples=50,
        epochs=2,
        batch_size=100,
        bits=8,
        hidden=16,
    )
    config["schedule"]["milestones"] = [1]
    config["monitor"]["sample_size"] = 50
    config["evaluation"]["every_n_epochs"] = 0
    config.update(changes)
    return common.finalize_config(config)


class Snapshot(keras.callbacks.Callback):
    """Saves every model and optimizer variable at the end of training."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_end(self, logs=None):
        variables = list(self.model.variables) + list(self.model.optimizer.variables)
        np.savez(self.path, *[keras.ops.convert_to_numpy(v) for v in variables])


def start_workers(
    tmp_path,
    name: str,
    options_per_worker: list[dict],
    workdirs: list[str] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> list[tuple]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    addresses = [f"127.0.0.1:{port}" for port in launch.free_ports(len(options_per_worker))]
    started = []
    for index, options in enumerate(options_per_worker):
        environment = launch.worker_environment(addresses, index, timeout_s=timeout_s)
        environment["PYTHONPATH"] = ROOT + os.pathsep + environment.get("PYTHONPATH", "")
        workdir = workdirs[index] if workdirs else str(tmp_path / f"{name}-worker{index}")
        output = str(tmp_path / f"{name}-worker{index}.npz")
        log = open(tmp_path / f"{name}-worker{index}.log", "w+")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, str(script), workdir, output, json.dumps(options)],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log, workdir, output))
    return started


def finish(started) -> list[tuple[int, str]]:
    results = []
    for process, log, _, _ in started:
        try:
            code = process.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            for other, *_ in started:
                other.kill()
            raise AssertionError("a worker hung") from None
        log.seek(0)
        results.append((code, log.read()))
        log.close()
    return results


def load(path: str) -> list[np.ndarray]:
    with np.load(path) as stored:
        return [stored[f"arr_{index}"] for index in range(len(stored.files))]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: one process, the regular loop (``model.fit``), same global batches."""
    path = tmp_path_factory.mktemp("single")
    config = tiny_config(strategy="default")
    results = train_and_evaluate(
        AutoencoderTask(config),
        config,
        str(path / "run"),
        progress=False,
        extra_callbacks=[Snapshot(str(path / "final.npz"))],
    )
    return load(str(path / "final.npz")), results["training"]["loss_history_this_process"]


def test_two_workers_train_and_resume_exactly_like_one_process(tmp_path, single_process):
    reference, reference_losses = single_process
    # Both workers stop after epoch 1 of 2: the chief has written epoch-0001 alone.
    first = start_workers(tmp_path, "first", [{"epochs": 2, "stop_after_epoch": 1}] * 2)
    for code, output in finish(first):
        assert code == 0, output[-3000:]
    chief_dir, worker_dir = first[0][2], first[1][2]
    assert os.listdir(os.path.join(chief_dir, "checkpoints")) == ["epoch-0001.npz"]
    assert os.path.isdir(os.path.join(chief_dir, "tensorboard", "train"))
    # The other worker wrote no checkpoint and no TensorBoard events.
    assert os.listdir(os.path.join(worker_dir, "checkpoints")) == []
    assert not os.path.exists(os.path.join(worker_dir, "tensorboard", "train"))

    # Resume: the chief from its checkpoint, the other worker from an EMPTY run directory; the
    # chief's state and epoch are broadcast, so both train epoch 2 on the same global batches.
    fresh = str(tmp_path / "second-worker1")
    second = start_workers(tmp_path, "second", [{"epochs": 2}] * 2, workdirs=[chief_dir, fresh])
    for code, output in finish(second):
        assert code == 0, output[-3000:]
    chief, other = load(second[0][3]), load(second[1][3])
    assert len(chief) == len(reference) == len(other)
    for chief_value, other_value in zip(chief, other, strict=True):
        np.testing.assert_array_equal(chief_value, other_value)  # bit-identical workers
    for value, expected in zip(chief, reference, strict=True):
        np.testing.assert_allclose(value, expected, rtol=0, atol=1e-6)
    resumed = json.loads(open(os.path.join(second[0][2], "results.json")).read())["training"]
    assert resumed["resumed_from_epoch"] == 1
    assert sorted(os.listdir(os.path.join(second[0][2], "checkpoints"))) == [
        "epoch-0001.npz",
        "epoch-0002.npz",
    ]
    # The logged epoch loss is the global batch-size-weighted mean, as fit logs it.
    assert resumed["loss_history_this_process"] == pytest.approx(reference_losses[1:], abs=1e-6)


def test_a_killed_worker_fails_the_other_with_a_clear_error(tmp_path):
    # Worker 1 is killed (SIGKILL) after its first epoch of a long run.
    started = start_workers(
        tmp_path, "kill", [{"epochs": 1000}, {"epochs": 1000, "die_after_epoch": 1}]
    )
    (code, output), (killed_code, _) = finish(started)
    assert killed_code == -signal.SIGKILL
    assert code != 0
    assert "WorkerFailure: multi-worker training failed on worker 0" in output
    assert "restart all of them" in output
    assert "Epoch 1000/1000" not in output


def test_a_hung_worker_fails_the_other_after_the_collective_timeout(tmp_path):
    # Worker 1 stays alive but stops training after its first epoch: only the collective
    # timeout (the watchdog) can end worker 0.
    started = start_workers(
        tmp_path, "hang", [{"epochs": 1000}, {"epochs": 1000, "hang_after_epoch": 1}], timeout_s=10
    )
    chief = started[0][0]
    try:
        chief.wait(timeout=HANG_GUARD_S)
    finally:
        started[1][0].kill()
    (code, output), _ = finish(started)
    assert code != 0
    assert "WorkerFailure: multi-worker training failed on worker 0" in output
    assert "DeadlineExceededError" in output
    assert "within the collective timeout (10 s)" in output


def test_the_launcher_runs_a_trainer_on_two_workers(tmp_path):
    workdir = str(tmp_path / "run")
    command = [
        sys.executable, "-m", "trainers.launch", "--workers=2", f"--collective_timeout_s={TIMEOUT_S}",
        "--", sys.executable, "-m", "trainers.autoencoder", "--dataset=digits", "--smoke",
        "--epochs=1", "--bits=8", "--train_examples=307", "--test_examples=50", "--eval_every=0",
        f"--workdir={workdir}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mAP@" in result.stdout  # the chief's summary is streamed
    results = json.loads(open(os.path.join(workdir, "results.json")).read())
    assert results["config"]["strategy"] == "multi_worker"
    assert results["environment"]["replicas"] == 2
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["epoch-0001.npz"]


def test_the_launcher_stops_the_job_when_a_worker_fails(tmp_path):
    # Worker 1 exits with status 3 at once; worker 0 would sleep: it is stopped.
    program = (
        "import json, os, sys, time\n"
        "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
        "assert sys.argv[-1] == '--strategy=multi_worker' or index > 0\n"
        "sys.exit(3) if index == 1 else time.sleep(600)\n"
    )
    command = [sys.executable, "-m", "trainers.launch", "--workers=2", "--", sys.executable, "-c"]
    result = subprocess.run(
        [*command, program], cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert result.returncode == 3
    assert "Worker 1 exited with status 3; stopping the others" in result.stderr


def test_worker_commands_and_environment():
    commands = launch.worker_commands(["python", "-m", "trainers.autoencoder"], 2, "/scratch")
    assert commands[0] == ["python", "-m", "trainers.autoencoder", "--strategy=multi_worker"]
    assert commands[1][-1] == "--workdir=/scratch/worker-1"  # the last --workdir wins
    environment = launch.worker_environment(["a:1", "b:2"], 1, timeout_s=7, gpus_per_worker=2)
    assert json.loads(environment["TF_CONFIG"]) == {
        "cluster": {"worker": ["a:1", "b:2"]},
        "task": {"type": "worker", "index": 1},
    }
    assert environment[distributed.TIMEOUT_ENVIRONMENT_VARIABLE] == "7"
    assert environment["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert launch.TIMEOUT_ENVIRONMENT_VARIABLE == distributed.TIMEOUT_ENVIRONMENT_VARIABLE


@pytest.mark.parametrize("rows", [0, 1, 2, 7, 100, 101])
@pytest.mark.parametrize("replicas", [1, 2, 3, 8])
def test_row_ranges_tile_the_global_batch_in_order(rows, replicas):
    ranges = [distributed.row_range(rows, replicas, replica) for replica in range(replicas)]
    expected = np.array_split(np.arange(rows), replicas)
    assert [list(range(*bounds)) for bounds in ranges] == [list(part) for part in expected]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', 'no "task"'),
        ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
            "out of range",
        ),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "only"),
    ],
)
def test_malformed_tf_config_is_a_clear_error(value, message):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(InputError, match=message):
        distributed.cluster_from_environment(environ)


def test_multi_worker_without_tf_config_and_bad_timeouts(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(InputError, match="needs the TF_CONFIG environment variable"):
        strategy.get_strategy("multi_worker")
    with pytest.raises(InputError, match="Unknown strategy"):
        strategy.get_strategy("parameter_server")
    monkeypatch.setenv(distributed.TIMEOUT_ENVIRONMENT_VARIABLE, "soon")
    with pytest.raises(InputError, match="TF_BIHALF_COLLECTIVE_TIMEOUT_S must be a number"):
        distributed.collective_timeout_s()
    monkeypatch.setenv(distributed.TIMEOUT_ENVIRONMENT_VARIABLE, "0")
    with pytest.raises(InputError, match="positive"):
        distributed.collective_timeout_s()
    monkeypatch.delenv(distributed.TIMEOUT_ENVIRONMENT_VARIABLE)
    assert distributed.collective_timeout_s() == distributed.DEFAULT_COLLECTIVE_TIMEOUT_S


def test_single_machine_strategies():
    assert strategy.get_strategy("auto").num_replicas_in_sync >= 1
    if len(tf.config.list_logical_devices("GPU")) <= 1:  # one device: no distribution wrapper
        assert strategy.get_strategy("auto") is tf.distribute.get_strategy()
    assert isinstance(strategy.get_strategy("one_device"), tf.distribute.OneDeviceStrategy)
