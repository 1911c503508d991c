"""Sign layer plus the bit-balance regulariser (the paper's "Sign + Reg" baseline)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_bihalf.layers.sign import Sign


@keras.saving.register_keras_serializable(package="tf_bihalf")
class SignReg(Sign):
    """Straight-through sign plus the ``B^T 1`` bit-balance regulariser.

    In training the layer adds ``alpha * mean_k((mean_i b_ik)^2) / 2`` to the model's losses,
    computed on the straight-through codes so that its gradient reaches U. At inference it is
    ``sign(U)`` and adds nothing.

    Args:
        alpha: weight of the regulariser (the reference uses 1).
        gamma: as in ``Sign``.
        cubic_penalty: as in ``Sign``.
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: float tensor ``(batch, bits)``.
        training: bool.

    Returns:
        float32 ±1 tensor ``(batch, bits)``.

    Example:

    >>> layer = SignReg(alpha=1.0)
    >>> codes = layer(tf.constant([[1.0, 2.0], [3.0, -1.0]]), training=True)
    >>> float(layer.losses[0])  # bit means are (1, 0): (1^2 + 0^2) / 2 / 2
    0.25

    Reference:
        Li & van Gemert, AAAI 2021, Fig. 3(d) ("Sign + Reg").
    """

    def __init__(
        self, alpha: float = 1.0, gamma: float = 0.0, cubic_penalty: float = 0.0, **kwargs
    ):
        super().__init__(gamma=gamma, cubic_penalty=cubic_penalty, **kwargs)
        self.alpha = float(alpha)
        if self.alpha < 0:
            raise ValueError(f"alpha must be non-negative; got {self.alpha}.")

    def train_codes(self, u: tf.Tensor) -> tf.Tensor:
        codes = super().train_codes(u)
        bit_means = tf.reduce_mean(codes, axis=0)
        balance = self.alpha * tf.reduce_mean(tf.square(bit_means)) / 2.0
        # An empty batch has no bit means (0 / 0): it adds nothing to the loss.
        self.add_loss(tf.where(tf.shape(codes)[0] > 0, balance, tf.zeros_like(balance)))
        return codes

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha})
        return config
