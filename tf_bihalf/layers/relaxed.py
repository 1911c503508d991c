"""Continuous relaxation baseline."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_bihalf.layers.base import HashLayer


@keras.saving.register_keras_serializable(package="tf_bihalf")
class Relaxed(HashLayer):
    """Continuous relaxation: ``B = U`` in training, ``sign(U)`` at inference.

    Call arguments:
        inputs: float tensor ``(batch, bits)``.
        training: bool.

    Returns:
        float32 tensor ``(batch, bits)``: U itself in training, ±1 at inference.

    Example:

    >>> Relaxed()(tf.constant([[0.5, -0.2]]), training=True).numpy()
    array([[ 0.5, -0.2]], dtype=float32)
    """

    def train_codes(self, u: tf.Tensor) -> tf.Tensor:
        return tf.identity(u)
