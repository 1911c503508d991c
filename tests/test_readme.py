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


def test_readme_trainer_flags_exist():
    commands = trainer_commands()
    assert {"trainers.autoencoder", "trainers.image"} <= set(commands)
    # One process per trainer (each defines its flags on absl's global FLAGS).
    for module, argument_lists in commands.items():
        script = (
            "import json, sys\n"
            "from absl import flags\n"
            f"import {module} as trainer\n"
            "if hasattr(trainer, 'define_flags'):\n"
            "    trainer.define_flags()\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    flags.FLAGS.unparse_flags()\n"
            "    flags.FLAGS(['prog', *args])\n"
            "print('parsed', len(json.loads(sys.argv[1])))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(argument_lists)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
        assert f"parsed {len(argument_lists)}" in result.stdout
