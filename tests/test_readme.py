"""The README's commands must not rot: the quick start, and every trainer command's flags."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def quick_start_commands() -> list[str]:
    section = readme().split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_install_and_main_job_then_tests():
    install_and_run, tests = quick_start_commands()
    assert "pip install -r requirements-dev.txt" in install_and_run
    assert install_and_run.endswith("python -m trainers.autoencoder")
    # CI runs the same test command as the README.
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    assert tests in ci.splitlines(), f"{tests!r} is not a line of .ci/run"


def trainer_commands() -> dict[str, list[list[str]]]:
    """``{module: [args, ...]}`` for every ``python -m trainers.X ...`` line of the README."""
    commands: dict[str, list[list[str]]] = {}
    for line in readme().splitlines():
        match = re.search(r"python -m (trainers\.\w+)(.*)", line)
        if not match:
            continue
        words = shlex.split(match.group(2), comments=True)
        commands.setdefault(match.group(1), []).append(words)
    return commands


RESOLVE_SCRIPT = """
import json, sys
from absl import flags
from tf_bihalf import tasks
from trainers import common
import {module} as trainer
trainer.define_flags()
for args in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog", *args])
    config = common.resolve_for(trainer, flags.FLAGS)
    tasks.get(config["task"])(config)  # the task accepts the config
    print("resolved", config["config_name"], config["dataset"], config["bits"],
          common.default_workdir(config, flags.FLAGS.smoke))
"""


def test_readme_trainer_commands_resolve_through_the_real_entry_points():
    """Every ``python -m trainers.X ...`` line of the README parses its flags and resolves a
    config exactly as the trainer's ``main`` does (a missing required flag fails here)."""
    commands = trainer_commands()
    assert {"trainers.autoencoder", "trainers.image"} <= set(commands)
    # One process per trainer (each defines its flags on absl's global FLAGS).
    for module, argument_lists in commands.items():
        if module in ("trainers.sweep", "trainers.launch"):
            continue  # not trainers: tests/test_sweep.py and tests/test_multi_worker.py run them
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                RESOLVE_SCRIPT.format(module=module),
                json.dumps(argument_lists),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
        assert result.stdout.count("resolved ") == len(argument_lists), result.stdout


def test_design_headline_command_reaches_the_data_check(tmp_path):
    """``python -m trainers.image --dataset=nus_wide --bits=64`` with no other flag: no
    required-flag error; it gets to the data and says where the manual download goes."""
    environment = dict(os.environ, HOME=str(tmp_path), TFDS_DATA_DIR=str(tmp_path / "tfds"))
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run(
        [sys.executable, "-m", "trainers.image", "--dataset=nus_wide", "--bits=64"],
        cwd=str(tmp_path),
        env=dict(environment, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "nus_wide" in lines[0] and "docs/datasets.md" in lines[0]
    assert "Traceback" not in result.stderr and "cuInit" not in result.stderr
    assert os.path.isfile(tmp_path / "runs" / "nus_wide_I_bihalf_64bits" / "config.json")


def test_reliability_promises_name_tests_that_exist():
    """Every test the README's reliability table cites is defined in the file it names."""
    section = readme().split("## Reliability", 1)[1].split("\n## ", 1)[0]
    cited = 0
    for row in section.splitlines():
        if not row.startswith("| ") or "tests/" not in row:
            continue
        current = None
        for token in re.findall(r"`([^`]+)`", row.split("|")[2]):
            path, _, name = token.partition("::")
            if path.startswith("tests/"):
                current = path
            name = name or (None if path.startswith("tests/") else path)
            if name:
                with open(os.path.join(ROOT, current), encoding="utf-8") as handle:
                    assert f"def {name}(" in handle.read(), f"{current} has no {name}"
                cited += 1
    assert cited >= 20
