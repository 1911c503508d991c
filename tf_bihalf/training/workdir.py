"""The run directory a trainer writes (see docs/autoencoder.md, "The run directory").

Layout of ``RUN``::

    RUN/config.json      the resolved config (written before training starts)
    RUN/results.json     metrics + the config (written at the end)
    RUN/checkpoints/     resume state (``tf_bihalf.training.checkpoint``)
    RUN/tensorboard/     event files
    RUN/plots/           PNG plots
    RUN/encoder.keras    the inference encoder (raw input -> ±1 codes)

A run restarted with the same directory resumes; ``prepare_workdir`` refuses to resume a run
whose stored config differs from the new one (continuing someone else's run with other
settings would silently mix two experiments) and names the keys that differ, and refuses a
directory that holds checkpoints but no ``config.json`` (nothing says what they were trained
with). ``Workdir.lock()`` takes an exclusive lock (``RUN/.lock``), so a second trainer started
on the same directory exits at once with a clear message instead of interleaving checkpoints
with the first; once it holds the lock it removes temporary files left by a killed write.

Example:

>>> import tempfile
>>> run = prepare_workdir(tempfile.mkdtemp(), {"bits": 32})
>>> run.resuming
False
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import tempfile
from typing import Any

import numpy as np
from absl import logging

from tf_bihalf.errors import InputError

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
PLOTS_DIR = "plots"
ENCODER_FILE = "encoder.keras"
LOCK_FILE = ".lock"


def _to_json(value: Any) -> Any:
    """Converts numpy scalars/arrays and tuples to JSON types; NaN/inf become None."""
    if isinstance(value, dict):
        return {str(key): _to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return _to_json(value.tolist())
    if isinstance(value, np.generic):
        return _to_json(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, data: dict) -> None:
    """Writes ``data`` as indented JSON, atomically (a temporary file, then a rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(_to_json(data), file, indent=2, sort_keys=False, allow_nan=False)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def read_json(path: str) -> dict:
    """Reads a JSON file; a clear ``FileNotFoundError``/``ValueError`` when missing or broken."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path}")
    with open(path) as file:
        try:
            return json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path} is not valid JSON: {error}") from None


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two (nested) configs.

    >>> config_differences({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 0})
    ['b.c', 'd']
    """
    differences = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        if key not in old or key not in new:
            differences.append(name)
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            differences.extend(config_differences(old[key], new[key], f"{name}."))
        elif old[key] != new[key]:
            differences.append(name)
    return differences


@dataclasses.dataclass
class Workdir:
    """Paths of one run directory; ``resuming`` is true when a checkpoint already exists."""

    path: str
    resuming: bool
    _lock_handle: Any = dataclasses.field(default=None, repr=False, compare=False)

    def lock(self) -> None:
        """Takes the run directory's exclusive lock for this process (held until ``unlock`` or
        exit).

        Raises:
            InputError: another process holds it (a trainer already running on this directory).
        """
        if self._lock_handle is not None:
            return
        handle = open(os.path.join(self.path, LOCK_FILE), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise InputError(
                f"The work directory {self.path} is in use by {owner}: two trainers on one "
                "directory would overwrite each other's checkpoints. Wait for it to finish, or "
                "pass another --workdir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle
        # Only the lock holder may remove temporaries: another trainer's could be in flight.
        remove_stale_temporaries(self.path)
        remove_stale_temporaries(self.checkpoint_dir)

    def unlock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, CONFIG_FILE)

    @property
    def results_path(self) -> str:
        return os.path.join(self.path, RESULTS_FILE)

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.path, CHECKPOINT_DIR)

    @property
    def tensorboard_dir(self) -> str:
        return os.path.join(self.path, TENSORBOARD_DIR)

    @property
    def plots_dir(self) -> str:
        return os.path.join(self.path, PLOTS_DIR)

    @property
    def encoder_path(self) -> str:
        return os.path.join(self.path, ENCODER_FILE)

    @property
    def record_path(self) -> str:
        return os.path.join(self.path, "run.json")

    def write_results(self, results: dict) -> str:
        """Writes ``results.json`` (the caller includes the config) and returns its path."""
        write_json(self.results_path, results)
        return self.results_path


def has_checkpoint(path: str) -> bool:
    """Whether ``path`` holds resumable training state."""
    directory = os.path.join(path, CHECKPOINT_DIR)
    return os.path.isdir(directory) and any(name.endswith(".npz") for name in os.listdir(directory))


def remove_stale_temporaries(directory: str) -> list[str]:
    """Removes ``*.tmp`` files (left by writes killed before their rename); returns them."""
    removed = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith(".tmp") and os.path.isfile(path):
                os.remove(path)
                removed.append(path)
    if removed:
        logging.warning(
            "Removed %d temporary file(s) of interrupted writes: %s", len(removed), removed
        )
    return removed


def prepare_workdir(path: str, config: dict) -> Workdir:
    """Creates the run directory and writes ``config.json``; detects a run to resume.

    Raises:
        InputError: ``path`` holds a run whose ``config.json`` differs from ``config``, holds
            checkpoints without a ``config.json``, or is a file.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"--workdir {path} exists and is not a directory.")
    config = _to_json(config)
    config_path = os.path.join(path, CONFIG_FILE)
    resuming = has_checkpoint(path)
    if resuming and not os.path.exists(config_path):
        raise InputError(
            f"The work directory {path} holds checkpoints but no {CONFIG_FILE}: nothing says "
            "which settings they were trained with, so they cannot be resumed safely. Pass "
            "another --workdir, or delete that directory to start over."
        )
    if os.path.exists(config_path):
        stored = read_json(config_path)
        differences = config_differences(stored, config)
        if differences:
            raise InputError(
                f"The work directory {path} holds a run with a different config "
                f"(differing keys: {', '.join(differences)}). Resuming it would mix two "
                "experiments: pass another --workdir, or delete that directory to start over."
            )
    for sub_directory in (CHECKPOINT_DIR, TENSORBOARD_DIR, PLOTS_DIR):
        os.makedirs(os.path.join(path, sub_directory), exist_ok=True)
    write_json(config_path, config)
    return Workdir(path=path, resuming=resuming)
