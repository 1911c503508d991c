"""Epoch checkpoints: everything needed to resume a run exactly where it stopped.

A checkpoint holds, after epoch ``e`` (1-based count of completed epochs):

- every model variable (``model.variables``: weights, non-trainable state such as
  ``MedianShift.moving_median`` or ``Tanh.step``, and the ``SeedGenerator`` states of dropout
  layers, i.e. their RNG),
- every optimizer variable (step counter, so also the learning-rate schedule, moments, momentum
  buffers, and the learning-rate variable that ``ReduceLROnPlateau`` changes),
- the epoch count,
- the SHA-256 of the resolved config it was trained with (``config_sha256``): a checkpoint is
  only restored into a run with the same config, so deleting or editing ``RUN/config.json``
  cannot make another model resume it.

Files are ``RUN/checkpoints/epoch-0003.npz``, written atomically (temporary file, fsync, rename),
the last ``keep`` retained, so a kill during a write never leaves a broken latest checkpoint.
Should the newest file still be unreadable (a disk that lost it, a truncated copy), ``restore``
warns and falls back to the newest intact one. Data
order is not state here: trainers derive each epoch's shuffle from ``(seed, epoch)``
(``tf_bihalf.training.pipelines``), so a resumed run sees the same batches as an uninterrupted
one.

Example:

>>> checkpoint = TrainingCheckpoint("/tmp/run/checkpoints", model, optimizer)  # doctest: +SKIP
>>> initial_epoch = checkpoint.restore()         # 0 when there is nothing to resume
>>> model.fit(..., initial_epoch=initial_epoch,
...           callbacks=[checkpoint.callback()])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import zipfile

import keras
import numpy as np
from absl import logging

from tf_bihalf.errors import InputError

_PATTERN = re.compile(r"^epoch-(\d+)\.npz$")


class TrainingCheckpoint:
    """Saves and restores model + optimizer state per epoch (see the module docstring).

    Args:
        directory: where checkpoints live (created when needed).
        model: a built ``keras.Model``.
        optimizer: the model's optimizer (built on restore if needed).
        keep: how many of the newest checkpoints to keep (>= 1).
        config_sha256: the resolved config's hash (``tf_bihalf.training.record.config_sha256``),
            stored in every checkpoint and required to match on restore; None skips the check.
    """

    def __init__(
        self,
        directory: str,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        keep: int = 2,
        config_sha256: str | None = None,
    ):
        if int(keep) < 1:
            raise ValueError(f"keep must be >= 1; got {keep!r}.")
        self.directory = str(directory)
        self.model = model
        self.optimizer = optimizer
        self.keep = int(keep)
        self.config_sha256 = config_sha256

    def _variables(self) -> list:
        if not self.optimizer.built:
            # Optimizer variables must be created under the model's distribution strategy.
            strategy = getattr(self.model, "distribute_strategy", None)
            scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
            with scope:
                self.optimizer.build(self.model.trainable_variables)
        return list(self.model.variables) + list(self.optimizer.variables)

    def epochs_available(self) -> list[int]:
        """Completed-epoch counts of the checkpoints on disk, ascending."""
        if not os.path.isdir(self.directory):
            return []
        found = [_PATTERN.match(name) for name in os.listdir(self.directory)]
        return sorted(int(match.group(1)) for match in found if match)

    def path(self, epoch: int) -> str:
        return os.path.join(self.directory, f"epoch-{int(epoch):04d}.npz")

    def save(self, epoch: int) -> str:
        """Writes the checkpoint for ``epoch`` completed epochs and prunes old ones."""
        os.makedirs(self.directory, exist_ok=True)
        variables = self._variables()
        arrays = {f"v{index}": keras.ops.convert_to_numpy(v) for index, v in enumerate(variables)}
        arrays["paths"] = np.array([v.path for v in variables])
        arrays["epoch"] = np.array(int(epoch))
        arrays["config_sha256"] = np.array(self.config_sha256 or "")
        handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **arrays)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path(epoch))
            _fsync_directory(self.directory)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise
        for old in self.epochs_available()[: -self.keep]:
            os.remove(self.path(old))
        return self.path(epoch)

    def restore(self) -> int:
        """Restores the newest intact checkpoint; returns its completed-epoch count (0 if none).

        An unreadable newest file (truncated, not a zip, missing arrays) is skipped with a
        warning in favour of the next older one.

        Raises:
            InputError: the checkpoint belongs to another config, or does not match the
                model/optimizer (other architecture or optimizer; the first mismatching
                variable is named).
        """
        available = self.epochs_available()
        for position, epoch in enumerate(reversed(available)):
            path = self.path(epoch)
            try:
                stored = _read_arrays(path)
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
                older = available[: len(available) - position - 1]
                logging.warning(
                    "Checkpoint %s is unreadable (%s: %s); %s",
                    path,
                    type(error).__name__,
                    error,
                    f"falling back to epoch {older[-1]}." if older else "no older one to use.",
                )
                continue
            return self._assign(path, stored)
        if available:
            logging.warning("No intact checkpoint in %s: training starts over.", self.directory)
        return 0

    def _assign(self, path: str, stored: dict) -> int:
        recorded = str(stored.get("config_sha256", ""))
        if self.config_sha256 is not None and recorded != self.config_sha256:
            raise InputError(
                f"Checkpoint {path} was written by a run with another config "
                f"(config hash {recorded[:12] or 'not recorded'}, this run's "
                f"{self.config_sha256[:12]}): resuming it would continue a different "
                "experiment. Use another --workdir to start a new run."
            )
        variables = self._variables()
        paths = [str(p) for p in stored["paths"]]
        if len(paths) != len(variables):
            raise InputError(
                f"Checkpoint {path} holds {len(paths)} variables but the model and optimizer "
                f"have {len(variables)}: it was written by a different model or optimizer. "
                "Use another --workdir to start a new run."
            )
        for index, variable in enumerate(variables):
            value = stored[f"v{index}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise InputError(
                    f"Checkpoint {path}: variable {paths[index]} has shape {value.shape}, "
                    f"the model's {variable.path} has {tuple(variable.shape)}."
                )
        for index, variable in enumerate(variables):
            variable.assign(stored[f"v{index}"])
        epoch = int(stored["epoch"])
        logging.info("Resumed from %s (%d completed epochs).", path, epoch)
        return epoch

    def callback(self) -> keras.callbacks.Callback:
        """A callback saving a checkpoint at the end of every epoch."""
        return _EpochCheckpointCallback(self)


def _read_arrays(path: str) -> dict:
    """Every array of a checkpoint file, read fully (so a truncated file fails here)."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    for name in ("paths", "epoch"):
        if name not in arrays:
            raise KeyError(f"no {name!r} array")
    return arrays


def _fsync_directory(directory: str) -> None:
    """Makes a rename inside ``directory`` durable (POSIX; a no-op where unsupported)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


class _EpochCheckpointCallback(keras.callbacks.Callback):
    def __init__(self, checkpoint: TrainingCheckpoint):
        super().__init__()
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoint.save(epoch + 1)
