"""A callback base that owns one lazily created TensorBoard summary writer."""

from __future__ import annotations

import keras
import tensorflow as tf


class SummaryCallback(keras.callbacks.Callback):
    """Creates its ``tf.summary`` writer for ``self.log_dir`` on first use (so a run that never
    logs leaves no empty event file) and closes it when training ends."""

    log_dir: str
    _writer = None

    def _summary_writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
