"""Keeps the weights of the epoch with the best VALIDATION mAP (never the query set's)."""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
from absl import logging

from tf_bihalf.callbacks.retrieval_evaluation import RetrievalEvaluation


class BestValidationEpoch(keras.callbacks.Callback):
    """After each evaluation of ``validation`` (a ``RetrievalEvaluation`` on a held-out part of
    the TRAINING set, placed before this callback), saves the model's variables to ``path`` when
    its mAP is the best so far (ties keep the earlier epoch). ``restore()`` loads them back.

    The file (``.npz``: the variables in ``model.variables`` order, ``epoch``, ``score``) survives
    an interruption, so a resumed run still selects over every epoch. The query set never takes
    part: docs/paper.md, "The metric".

    Args:
        validation: the ``RetrievalEvaluation`` whose ``history`` holds ``(epoch, mAP)``.
        path: where the best variables are written (atomically).
    """

    def __init__(self, validation: RetrievalEvaluation, path: str):
        super().__init__()
        self.validation = validation
        self.path = str(path)

    def best(self) -> tuple[int, float] | None:
        """``(epoch, score)`` of the stored best, or None."""
        if not os.path.isfile(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as stored:
            return int(stored["epoch"]), float(stored["score"])

    def on_epoch_end(self, epoch, logs=None):
        if not self.validation.history or self.validation.history[-1][0] != epoch + 1:
            return  # no validation this epoch
        score = float(self.validation.history[-1][1])
        best = self.best()
        if best is not None and score <= best[1]:
            return
        arrays = {
            f"v{index}": keras.ops.convert_to_numpy(variable)
            for index, variable in enumerate(self.model.variables)
        }
        arrays.update(epoch=np.array(epoch + 1), score=np.array(score))
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **arrays)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise
        logging.info("Best validation mAP so far: %.4f at epoch %d.", score, epoch + 1)

    def restore(self, model: keras.Model) -> tuple[int, float] | None:
        """Loads the best epoch's variables into ``model``; returns ``(epoch, score)``."""
        best = self.best()
        if best is None:
            return None
        with np.load(self.path, allow_pickle=False) as stored:
            for index, variable in enumerate(model.variables):
                variable.assign(stored[f"v{index}"])
        return best
