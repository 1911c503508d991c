"""What every trainer shares: configs by name, flag overrides, the run directory, callbacks.

- ``load_config(name, smoke)``: ``configs/<name>.py``'s ``get_config(smoke=...)`` (a plain
  nested dict; the defaults live there).
- ``apply_overrides(config, {"optimizer.learning_rate": 0.01, "bits": None, ...})``: command-line
  flags into the config (dotted keys; ``None`` means "flag not given"; unknown keys are errors).
- ``default_workdir(...)``: ``runs/<parts joined by _>`` — deterministic, so re-running the same
  command resumes the same run.
- ``standard_callbacks(workdir, checkpoint, extra)``: Keras' ``TensorBoard`` (loss and the
  learning rate used in each epoch in ``RUN/tensorboard/train``), the extra callbacks, an ``EpochTimer`` and the
  epoch checkpoint LAST (so it saves the state after every other callback ran, e.g. a
  ``ReduceLROnPlateau`` that just changed the rate).
- ``run(main)``: ``absl.app.run`` that reports user errors (``ValueError``,
  ``FileNotFoundError``) as one clear line instead of a traceback.

Example (a trainer's main)::

    config = common.load_config("autoencoder", smoke=FLAGS.smoke)
    common.apply_overrides(config, {"bits": FLAGS.bits, "epochs": FLAGS.epochs})
    workdir = workdir_lib.prepare_workdir(FLAGS.workdir or common.default_workdir(...), config)
"""

from __future__ import annotations

import copy
import importlib
import os
import pkgutil
import sys
import time
from typing import Any

import keras
from absl import app, logging

import configs
from tf_bihalf.callbacks import TrainingTensorBoard

RUNS_DIRECTORY = "runs"


def available_configs() -> list[str]:
    """Names of the config modules in ``configs/``."""
    return sorted(
        module.name
        for module in pkgutil.iter_modules(configs.__path__)
        if not module.name.startswith("_")  # shared defaults, not configs
    )


def load_config(name: str, smoke: bool = False) -> dict:
    """``configs/<name>.py``'s ``get_config(smoke=smoke)``, as a fresh dict.

    Raises:
        ValueError: no such config (the message lists the available ones).
    """
    if not isinstance(name, str) or not name.isidentifier() or name not in available_configs():
        raise ValueError(f"Unknown config {name!r}; available: {', '.join(available_configs())}.")
    module = importlib.import_module(f"configs.{name}")
    config = module.get_config(smoke=smoke)
    if not isinstance(config, dict):
        raise ValueError(f"configs/{name}.py get_config() must return a dict.")
    return copy.deepcopy(config)


def apply_overrides(config: dict, overrides: dict[str, Any]) -> dict:
    """Sets dotted keys of ``config`` in place (skipping ``None``); returns ``config``.

    >>> apply_overrides({"a": 1, "b": {"c": 2}}, {"b.c": 3, "a": None})
    {'a': 1, 'b': {'c': 3}}
    """
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, key = dotted.split(".")
        node = config
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                raise ValueError(f"The config has no section {parent!r} (override {dotted!r}).")
            node = node[parent]
        if key not in node:
            raise ValueError(f"The config has no key {dotted!r}; keys there: {sorted(node)}.")
        node[key] = value
    return config


def default_workdir(*parts: Any) -> str:
    """``runs/<part>_<part>_...`` (e.g. ``runs/autoencoder_mnist_bihalf_32bits``)."""
    name = "_".join(str(part) for part in parts if part not in (None, ""))
    return os.path.join(RUNS_DIRECTORY, name)


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch run in this process (``self.durations``, seconds)."""

    def __init__(self):
        super().__init__()
        self.durations: list[float] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(time.perf_counter() - self._start)


def standard_callbacks(workdir, checkpoint, extra=(), timer: EpochTimer | None = None) -> list:
    """TensorBoard (loss, learning rate), ``extra``, the timer and the checkpoint (last)."""
    tensorboard = TrainingTensorBoard(
        log_dir=workdir.tensorboard_dir,
        update_freq="epoch",
        write_graph=False,
        profile_batch=0,
    )
    callbacks = [tensorboard, *extra]
    if timer is not None:
        callbacks.append(timer)
    callbacks.append(checkpoint.callback())
    return callbacks


def throughput(timer: EpochTimer, examples_per_epoch: int) -> dict:
    """Training speed of this process: all epochs, and excluding the first (graph tracing)."""
    durations = timer.durations
    total = float(sum(durations))
    result = {
        "epochs_this_process": len(durations),
        "wall_time_s": total,
        "samples_per_second": examples_per_epoch * len(durations) / total if total else None,
    }
    if len(durations) > 1:
        steady = float(sum(durations[1:]))
        result["samples_per_second_after_first_epoch"] = (
            examples_per_epoch * (len(durations) - 1) / steady
        )
    return result


def run(main) -> None:
    """``absl.app.run(main)``, with user errors reported as one line and exit status 2."""

    def guarded(argv):
        try:
            return main(argv)
        except (ValueError, FileNotFoundError) as error:
            logging.error("%s: %s", type(error).__name__, error)
            sys.stderr.write(f"error: {error}\n")
            sys.exit(2)

    app.run(guarded)
