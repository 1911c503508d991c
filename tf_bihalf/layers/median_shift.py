"""Median shift baseline (paper section 4.2): sign(U + t), t the per-bit batch median."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_bihalf.layers.base import HashLayer, sign_codes, straight_through


def column_median(u: tf.Tensor) -> tf.Tensor:
    """Per-column median of ``u`` (M, K); the mean of the two middle values for even M.

    An empty ``u`` (M = 0) has no median: the result is then zeros (callers must not use it).
    """
    m = tf.shape(u)[0]
    # One row of zeros when M = 0 keeps the gathers in range; a zero padding is free (tf.pad
    # forwards the input's buffer) and changes nothing for M > 0.
    ordered = tf.pad(tf.sort(u, axis=0), [[0, tf.maximum(1 - m, 0)], [0, 0]])
    m = tf.maximum(m, 1)
    low = tf.gather(ordered, (m - 1) // 2, axis=0)
    high = tf.gather(ordered, m // 2, axis=0)
    return (low + high) / 2.0


@keras.saving.register_keras_serializable(package="tf_bihalf")
class MedianShift(HashLayer):
    """Median-shifted sign: ``B = sign(U - median_batch(U))`` per bit in training.

    The batch median is tracked with an exponential moving average
    (``moving = momentum * moving + (1 - momentum) * median``) and used at inference:
    ``sign(U - moving_median)``; an empty batch leaves the moving median unchanged. The
    gradient is straight-through. Not in the public
    reference code; follows the paper's description (section 4.2, Fig. 4b).

    Args:
        momentum: EMA momentum in [0, 1).
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: float tensor ``(batch, bits)``.
        training: bool.

    Returns:
        float32 ±1 tensor ``(batch, bits)``.

    Example:

    >>> layer = MedianShift(momentum=0.0)
    >>> layer(tf.constant([[1.0], [2.0], [3.0], [4.0]]), training=True).numpy().ravel()
    array([-1., -1.,  1.,  1.], dtype=float32)
    >>> layer(tf.constant([[2.4]]), training=False).numpy().ravel()  # moving median 2.5
    array([-1.], dtype=float32)
    """

    def __init__(self, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum}.")

    def build(self, input_shape):
        self._validate(input_shape)
        if input_shape[-1] is None:
            raise ValueError(
                f"MedianShift needs a known number of bits (the last dimension) for its "
                f"per-bit moving median; got shape {tuple(input_shape)}."
            )
        self.moving_median = self.add_weight(
            name="moving_median",
            shape=(input_shape[-1],),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            aggregation="mean",
        )
        super().build(input_shape)

    def train_codes(self, u: tf.Tensor) -> tf.Tensor:
        median = column_median(u)
        moving = tf.convert_to_tensor(self.moving_median)
        # An empty batch has no median: it leaves the moving median as it is.
        self.moving_median.assign(
            tf.where(
                tf.shape(u)[0] > 0,
                self.momentum * moving + (1.0 - self.momentum) * median,
                moving,
            )
        )
        return straight_through(u, sign_codes(u - median))

    def inference_codes(self, u: tf.Tensor) -> tf.Tensor:
        return sign_codes(u - tf.convert_to_tensor(self.moving_median))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum})
        return config
