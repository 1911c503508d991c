"""TensorBoard monitoring of the continuous features U and of the bits, every epoch."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_bihalf.callbacks.summary import SummaryCallback
from tf_bihalf.training import submodels
from tf_bihalf.training.evaluation import bit_statistics


class BitMonitor(SummaryCallback):
    """Logs, on a fixed sample batch at the end of every ``every_n_epochs``-th epoch:

    - ``U/bit_00`` ... : the histogram of the continuous pre-hash feature U of each of the first
      ``histogram_bits`` bits, and ``U/all_bits``, all bits pooled;
    - ``bits/fraction_positive``: histogram over bits of the fraction of +1 of the inference
      codes (the model's encoder with ``training=False``: ``sign(U)``, or
      ``sign(U - median)`` for ``MedianShift``), plus scalars ``bits/fraction_positive/bit_00`` ... for the first
      ``histogram_bits`` bits and ``bits/fraction_positive_min`` / ``_max``;
    - ``bits/mean_entropy``: mean over bits of the binary entropy of each bit (1 = balanced);
    - ``bits/max_abs_correlation``: the largest |Pearson correlation| between two bits.

    Steps are 0-based epochs, as for Keras' ``TensorBoard`` callback. U is read with
    ``training=False`` (no dropout) through ``tf_bihalf.training.submodels.continuous_encoder``:
    the model's ``continuous_encoder`` attribute, or the input of its single hash layer.

    Args:
        sample_inputs: a fixed batch of model inputs (numpy or tensor), e.g. 2,000 training
            images; the same rows every epoch so that the histograms are comparable.
        log_dir: the TensorBoard directory written to (e.g. ``RUN/tensorboard/bits``).
        histogram_bits: number of bits with their own U histogram (the first ones).
        every_n_epochs: logging period in epochs.
        feature_model: optional ``keras.Model`` input -> U, overriding the default.
        code_model: optional ``keras.Model`` input -> codes, overriding the default
            (``submodels.code_encoder``).

    Example:

    >>> monitor = BitMonitor(x_train[:2000], "RUN/tensorboard/bits")  # doctest: +SKIP
    >>> model.fit(dataset, epochs=10, callbacks=[monitor])  # doctest: +SKIP
    """

    def __init__(
        self,
        sample_inputs,
        log_dir: str,
        histogram_bits: int = 8,
        every_n_epochs: int = 1,
        feature_model: keras.Model | None = None,
        code_model: keras.Model | None = None,
    ):
        super().__init__()
        if int(histogram_bits) < 0 or int(every_n_epochs) < 1:
            raise ValueError(
                f"histogram_bits must be >= 0 and every_n_epochs >= 1; got {histogram_bits}, "
                f"{every_n_epochs}."
            )
        self.sample_inputs = sample_inputs
        self.log_dir = str(log_dir)
        self.histogram_bits = int(histogram_bits)
        self.every_n_epochs = int(every_n_epochs)
        self.feature_model = feature_model
        self.code_model = code_model
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.feature_model is None:
            self.feature_model = submodels.continuous_encoder(self.model)
        if self.code_model is None:
            self.code_model = submodels.code_encoder(self.model)

    def continuous_features(self) -> np.ndarray:
        """U of the sample batch, float32 (N, K)."""
        features = self.feature_model(self.sample_inputs, training=False)
        return np.asarray(keras.ops.convert_to_numpy(features), dtype=np.float32)

    def log(self, step: int) -> dict:
        """Computes and writes the statistics at ``step``; returns the scalars."""
        u = self.continuous_features()
        codes = keras.ops.convert_to_numpy(self.code_model(self.sample_inputs, training=False))
        codes = np.where(codes >= 0, 1, -1).astype(np.int8)
        stats = bit_statistics(codes)
        balance = np.asarray(stats["balance"], dtype=np.float64)
        scalars = {
            "bits/mean_entropy": stats["mean_entropy"],
            "bits/max_abs_correlation": stats["max_abs_correlation"],
            "bits/fraction_positive_min": float(balance.min()),
            "bits/fraction_positive_max": float(balance.max()),
        }
        shown = min(self.histogram_bits, u.shape[1])
        with self._summary_writer().as_default(step=step):
            for bit in range(shown):
                tf.summary.histogram(f"U/bit_{bit:02d}", u[:, bit])
                tf.summary.scalar(f"bits/fraction_positive/bit_{bit:02d}", balance[bit])
            tf.summary.histogram("U/all_bits", u.reshape(-1))
            tf.summary.histogram("bits/fraction_positive", balance)
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        self._writer.flush()
        return scalars

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0:
            self.log(epoch)
