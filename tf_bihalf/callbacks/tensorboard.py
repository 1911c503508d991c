"""Keras' TensorBoard callback, with the learning rate of each epoch logged at that epoch."""

from __future__ import annotations

import keras
from keras import ops


class TrainingTensorBoard(keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` whose ``epoch_learning_rate`` at step ``e`` is the rate
    used DURING epoch ``e``.

    Keras reads the optimizer's rate at the end of the epoch, when a per-step schedule already
    gives the NEXT epoch's rate (with lr x 0.1 at epoch 60, Keras would log the drop at step 59).
    This subclass reads it at the start of the epoch instead. Everything else is Keras'
    TensorBoard (``epoch_loss`` and the other metrics under ``log_dir/train``).

    Args: as ``keras.callbacks.TensorBoard``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch_learning_rate = None

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self._epoch_learning_rate = float(ops.convert_to_numpy(optimizer.learning_rate))

    def _collect_learning_rate(self, logs):
        logs = super()._collect_learning_rate(logs)
        if self._epoch_learning_rate is not None and "learning_rate" in logs:
            logs["learning_rate"] = self._epoch_learning_rate
        return logs
