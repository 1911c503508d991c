"""Smoothed continuation baseline: tanh with a growing slope."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_bihalf.layers.base import HashLayer


@keras.saving.register_keras_serializable(package="tf_bihalf")
class Tanh(HashLayer):
    """Smoothed continuation: ``B = tanh(beta_t * U)`` in training, ``sign(U)`` at inference.

    ``beta_t = beta * (1 + growth * t) ** 0.5`` with ``t`` the number of training calls so far
    (on non-empty batches)
    (HashNet's continuation schedule), stored in a non-trainable ``step`` variable so that it
    is checkpointed and resumes with the model.

    Args:
        beta: initial slope (> 0).
        growth: schedule rate (>= 0); 0 keeps the slope fixed.
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: float tensor ``(batch, bits)``.
        training: bool.

    Returns:
        float32 tensor ``(batch, bits)`` in (-1, 1) in training, ±1 at inference.

    Example:

    >>> layer = Tanh(beta=2.0, growth=0.0)
    >>> round(float(layer(tf.constant([[0.5]]), training=True)[0, 0]), 4)
    0.7616

    Reference:
        Cao et al., "HashNet: Deep Learning to Hash by Continuation", ICCV 2017.
    """

    def __init__(self, beta: float = 1.0, growth: float = 0.005, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)
        self.growth = float(growth)
        if self.beta <= 0 or self.growth < 0:
            raise ValueError(f"beta must be > 0 and growth >= 0; got {self.beta}, {self.growth}.")

    def build(self, input_shape):
        self.step = self.add_weight(
            name="step",
            shape=(),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            aggregation="only_first_replica",
        )
        super().build(input_shape)

    def current_beta(self) -> tf.Tensor:
        return self.beta * tf.sqrt(1.0 + self.growth * tf.convert_to_tensor(self.step))

    def train_codes(self, u: tf.Tensor) -> tf.Tensor:
        beta = self.current_beta()
        # An empty batch is not a training step: it does not advance the schedule.
        self.step.assign_add(tf.cast(tf.shape(u)[0] > 0, tf.float32))
        return tf.tanh(beta * u)

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta, "growth": self.growth})
        return config
