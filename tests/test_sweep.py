"""trainers.sweep: grid expansion, resume, failing cells, parallel cells, the command line.

The cells run a FAKE trainer module (written into a temporary directory on PYTHONPATH) that
accepts the trainers' common flags and writes a ``results.json``; no TensorFlow is involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from trainers import sweep

FAKE_TRAINER = textwrap.dedent(
    """
    import argparse, json, os, sys, time

    parser = argparse.ArgumentParser()
    for name in ("config", "hash_layer", "workdir"):
        parser.add_argument("--" + name, required=True)
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--barrier", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "calls.txt"), "a") as file:
        file.write(" ".join(sys.argv[1:]) + "\\n")
    print("fake trainer running", args.hash_layer, args.bits, args.seed)
    if args.barrier:
        # Waits until `barrier` cells have started: only possible when they run concurrently.
        shared = os.path.dirname(os.path.abspath(args.workdir))
        open(os.path.join(shared, "started_" + os.path.basename(args.workdir)), "w").close()
        deadline = time.monotonic() + 60
        while sum(n.startswith("started_") for n in os.listdir(shared)) < args.barrier:
            if time.monotonic() > deadline:
                sys.exit("barrier timeout: the cells did not run concurrently")
            time.sleep(0.05)
    if args.hash_layer == "broken":
        sys.exit("broken hash layer")
    if args.hash_layer == "silent":
        sys.exit(0)  # Exits cleanly without results.json.
    results = {"metrics": {"map": args.seed / 10 + args.bits / 1000, "map_at": "All"}}
    with open(os.path.join(args.workdir, "results.json"), "w") as file:
        json.dump(results, file)
    """
)


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    """The name of the fake trainer module, importable by the sweep's subprocesses."""
    module_dir = tmp_path / "modules"
    module_dir.mkdir()
    (module_dir / "fake_trainer.py").write_text(FAKE_TRAINER)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(module_dir), os.environ.get("PYTHONPATH", "")])
    )
    return "fake_trainer"


def _calls(cell: sweep.Cell) -> list[str]:
    path = os.path.join(cell.workdir, "calls.txt")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return file.read().splitlines()


def test_grid_expansion_order_names_and_commands(tmp_path):
    tasks = {"autoencoder": "autoencoder", "cifar10": "image"}
    cells = sweep.expand_grid(
        ["autoencoder", "cifar10"],
        ["bihalf", "sign"],
        [16, 64],
        [0, 1, 2],
        str(tmp_path),
        extra_args=["--epochs=30"],
        resolve_task=tasks.__getitem__,
    )
    assert len(cells) == 2 * 2 * 2 * 3
    # Config-major, then hash layer, bits, seed: all seeds of a setting are adjacent.
    assert [cell.name for cell in cells[:4]] == [
        "autoencoder_bihalf_16bits_seed0",
        "autoencoder_bihalf_16bits_seed1",
        "autoencoder_bihalf_16bits_seed2",
        "autoencoder_bihalf_64bits_seed0",
    ]
    assert len({cell.workdir for cell in cells}) == len(cells)
    image_cell = next(cell for cell in cells if cell.config == "cifar10")
    assert image_cell.command("python") == [
        "python",
        "-m",
        "trainers.image",
        "--config=cifar10",
        "--hash_layer=bihalf",
        "--bits=16",
        "--seed=0",
        f"--workdir={os.path.join(str(tmp_path), 'cifar10_bihalf_16bits_seed0')}",
        "--epochs=30",
    ]


def test_task_comes_from_the_config_module(monkeypatch):
    fake = types.ModuleType("configs.fake_sweep_config")
    fake.get_config = lambda smoke=False: {"task": "video", "bits": 16}
    monkeypatch.setitem(sys.modules, "configs.fake_sweep_config", fake)
    assert sweep.task_of("fake_sweep_config") == "video"
    cells = sweep.expand_grid(["fake_sweep_config"], ["bihalf"], [16], [0], "root")
    assert cells[0].module == "trainers.video"

    no_task = types.ModuleType("configs.fake_no_task")
    no_task.get_config = lambda smoke=False: {"bits": 16}
    monkeypatch.setitem(sys.modules, "configs.fake_no_task", no_task)
    with pytest.raises(ValueError, match="no 'task' key"):
        sweep.task_of("fake_no_task")
    with pytest.raises(ValueError, match="Unknown config 'no_such_config'"):
        sweep.task_of("no_such_config")


def test_sweep_runs_every_cell_then_resumes_skipping_finished_ones(tmp_path, fake_trainer):
    root = str(tmp_path / "sweep")
    cells = sweep.expand_grid(
        ["autoencoder"], ["bihalf", "sign"], [16, 32], [0, 1], root, trainer_module=fake_trainer
    )
    outcomes = sweep.run_sweep(cells)
    assert [outcome.status for outcome in outcomes] == ["ok"] * 8
    assert all(len(_calls(cell)) == 1 for cell in cells)
    with open(os.path.join(cells[3].workdir, "results.json")) as file:
        assert json.load(file)["metrics"]["map"] == pytest.approx(1 / 10 + 32 / 1000)
    with open(os.path.join(cells[0].workdir, sweep.LOG_FILE)) as file:
        assert "fake trainer running bihalf 16 0" in file.read()

    # "Kill" the sweep's effect on two cells: one never finished, one never started.
    os.remove(os.path.join(cells[2].workdir, "results.json"))
    for name in os.listdir(cells[5].workdir):
        os.remove(os.path.join(cells[5].workdir, name))
    os.rmdir(cells[5].workdir)
    assert [cells[2].state(), cells[5].state(), cells[0].state()] == ["resume", "new", "done"]

    outcomes = sweep.run_sweep(cells)
    statuses = [outcome.status for outcome in outcomes]
    assert statuses == [
        "skipped",
        "skipped",
        "ok",
        "skipped",
        "skipped",
        "ok",
        "skipped",
        "skipped",
    ]
    assert [len(_calls(cell)) for cell in cells] == [1, 1, 2, 1, 1, 1, 1, 1]
    # The resumed cell ran with the same work directory (so the trainer resumes its checkpoint).
    assert _calls(cells[2])[0] == _calls(cells[2])[1]
    with open(os.path.join(cells[2].workdir, sweep.LOG_FILE)) as file:
        assert file.read().count("=====") == 2  # One header per attempt, appended.


def test_failing_cells_do_not_stop_the_others(tmp_path, fake_trainer):
    cells = sweep.expand_grid(
        ["autoencoder"],
        ["broken", "bihalf", "silent"],
        [16],
        [0],
        str(tmp_path),
        trainer_module=fake_trainer,
    )
    outcomes = sweep.run_sweep(cells)
    assert [outcome.status for outcome in outcomes] == ["failed", "ok", "failed"]
    assert outcomes[0].returncode == 1
    assert "results.json" in outcomes[2].message
    with open(os.path.join(cells[0].workdir, sweep.LOG_FILE)) as file:
        assert "broken hash layer" in file.read()
    table = sweep.summary_table(outcomes)
    assert "FAILED (exit status 1" in table
    assert "0.0160 @All" in table  # The bihalf cell's mAP, read from its results.json.


def test_parallel_cells_run_concurrently(tmp_path, fake_trainer):
    # Each fake cell waits until both have started; run one at a time, they would time out.
    cells = sweep.expand_grid(
        ["autoencoder"],
        ["bihalf"],
        [16],
        [0, 1],
        str(tmp_path / "grid"),
        extra_args=["--barrier=2"],
        trainer_module=fake_trainer,
    )
    outcomes = sweep.run_sweep(cells, parallel=2, devices=["0", "1"])
    assert [outcome.status for outcome in outcomes] == ["ok", "ok"]
    headers = []
    for cell in cells:
        with open(os.path.join(cell.workdir, sweep.LOG_FILE)) as file:
            headers.append(file.read().splitlines()[1])
    # Each running cell had a device of its own.
    assert sorted(header.split(" device ")[1][0] for header in headers) == ["0", "1"]


def test_a_different_command_in_the_same_root_is_refused(tmp_path, fake_trainer):
    root = str(tmp_path)
    cells = sweep.expand_grid(
        ["autoencoder"], ["bihalf"], [16], [0], root, ["--epochs=3"], trainer_module=fake_trainer
    )
    sweep.run_sweep(cells)
    other = sweep.expand_grid(
        ["autoencoder"], ["bihalf"], [16], [0], root, ["--epochs=5"], trainer_module=fake_trainer
    )
    with pytest.raises(ValueError, match="--epochs=3.*use another --root"):
        sweep.run_sweep(other)


def test_dry_run_runs_nothing(tmp_path, fake_trainer):
    cells = sweep.expand_grid(
        ["autoencoder"], ["bihalf"], [16], [0, 1], str(tmp_path), trainer_module=fake_trainer
    )
    outcomes = sweep.run_sweep(cells, dry_run=True)
    assert [outcome.status for outcome in outcomes] == ["dry_run", "dry_run"]
    assert not os.path.exists(cells[0].workdir)


def _sweep_command(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "trainers.sweep", *arguments],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=120,
    )


def test_command_line_exit_status_summary_and_extra_flags(tmp_path, fake_trainer):
    root = str(tmp_path / "cli")
    result = _sweep_command(
        "--config=autoencoder",
        "--hash_layer=bihalf,broken",
        "--bits=16",
        "--seeds=0,1",
        f"--root={root}",
        "--trainer_module=fake_trainer",
        "--",
        "--epochs=7",
    )
    assert result.returncode == 1, result.stderr
    assert "2 of 4 cells failed" in result.stderr
    assert "autoencoder_bihalf_16bits_seed1  ok" in result.stderr
    calls = _calls(
        sweep.expand_grid(["autoencoder"], ["bihalf"], [16], [1], root, trainer_module="x")[0]
    )
    assert calls == [
        f"--config=autoencoder --hash_layer=bihalf --bits=16 --seed=1 "
        f"--workdir={root}/autoencoder_bihalf_16bits_seed1 --epochs=7"
    ]

    bad = _sweep_command("--config=autoencoder", "--hash_layer=bihalf", "--bits=16,x")
    assert bad.returncode == 2
    assert "--bits must be comma-separated integers" in bad.stderr


def test_every_config_names_a_trainer_that_accepts_the_sweep_flags(tmp_path):
    """The sweep's commands against the real trainers: every config's task has a trainer module,
    and that trainer's flags parse a cell's command (one process per trainer: absl flags are
    global)."""
    import importlib.util

    from trainers import common

    by_module: dict[str, list[list[str]]] = {}
    for config in common.available_configs():
        (cell,) = sweep.expand_grid([config], ["bihalf"], [16], [1], str(tmp_path), ["--smoke"])
        assert importlib.util.find_spec(cell.module) is not None, (config, cell.module)
        by_module.setdefault(cell.module, []).append(cell.command("python")[3:])
    assert "trainers.autoencoder" in by_module
    for module, argument_lists in by_module.items():
        script = (
            "import json, sys\n"
            "from absl import flags\n"
            f"import {module} as trainer\n"
            "trainer.define_flags()\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    flags.FLAGS.unparse_flags()\n"
            "    flags.FLAGS(['prog', *args])\n"
            "    assert flags.FLAGS.seed == 1 and flags.FLAGS.bits == 16, args\n"
            "print('parsed', len(json.loads(sys.argv[1])))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(argument_lists)],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
        assert f"parsed {len(argument_lists)}" in result.stdout
