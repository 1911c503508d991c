"""Straight-through sign layer (the GreedyHash baseline)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_bihalf.layers.base import HashLayer, batch_mean_or_zero, sign_codes, straight_through


@keras.saving.register_keras_serializable(package="tf_bihalf")
class Sign(HashLayer):
    """Sign hash layer with the straight-through gradient.

    Training forward ``B = sign(U)`` (``sign(0) = +1``); backward
    ``dL/dU = dL/dB + gamma / (M*K) * (U - B)`` (plain identity with ``gamma = 0``, the
    default). The reference autoencoder's "Sign" baseline uses ``gamma = 0.2``. With
    ``cubic_penalty > 0`` the layer adds GreedyHash's ``cubic_penalty * mean(| |U| - 1 |^3)``
    to the model's losses (GreedyHash uses 0.1).

    Args:
        gamma: numerator of the optional pull of U towards B in the gradient (>= 0).
        cubic_penalty: weight of GreedyHash's cubic penalty (>= 0).
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: float tensor ``(batch, bits)``.
        training: bool.

    Returns:
        float32 ±1 tensor ``(batch, bits)``; ``sign(U)`` in training and at inference.

    Example:

    >>> Sign()(tf.constant([[0.5, 0.0, -2.0]]), training=True).numpy()
    array([[ 1.,  1., -1.]], dtype=float32)

    Reference:
        Su et al., "Greedy Hash: Towards Fast Optimization for Accurate Hash Coding in CNN",
        NeurIPS 2018.
    """

    def __init__(self, gamma: float = 0.0, cubic_penalty: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.cubic_penalty = float(cubic_penalty)
        if self.gamma < 0 or self.cubic_penalty < 0:
            raise ValueError(
                f"gamma and cubic_penalty must be non-negative; got {self.gamma}, {self.cubic_penalty}."
            )

    def train_codes(self, u: tf.Tensor) -> tf.Tensor:
        if self.cubic_penalty:
            self.add_loss(self.cubic_penalty * batch_mean_or_zero(tf.abs(tf.abs(u) - 1.0) ** 3))
        return straight_through(u, sign_codes(u), self.gamma)

    def get_config(self):
        config = super().get_config()
        config.update({"gamma": self.gamma, "cubic_penalty": self.cubic_penalty})
        return config
