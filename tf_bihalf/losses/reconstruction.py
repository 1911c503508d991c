"""Binary cross-entropy reconstruction loss of the hashing autoencoder (REFERENCE §3).

For targets ``x`` in [0, 1] and reconstructions ``p`` in (0, 1), over a batch of M examples of
D pixels,

    ``L = -1 / (M * D) * sum_{i, j} [x_ij * log(p_ij) + (1 - x_ij) * log(1 - p_ij)]``

(the mean over every pixel of the batch, as PyTorch's ``BCELoss(reduction="mean")``). When ``p``
comes straight from a sigmoid (as the autoencoder's output does) Keras evaluates the loss from
the sigmoid's logits, ``max(z, 0) - z * x + log(1 + exp(-|z|))``, which is exact and never
overflows; otherwise ``p`` is clipped to ``[1e-7, 1 - 1e-7]``.

Example:

>>> loss = BinaryReconstructionLoss()
>>> round(float(loss([[1.0, 0.0]], [[0.5, 0.5]])), 6)  # -log(0.5)
0.693147
"""

from __future__ import annotations

import keras
from keras import ops


def binary_reconstruction_loss(targets, reconstructions):
    """Per-example mean BCE over all non-batch axes, shape ``(batch,)``."""
    targets = ops.cast(targets, reconstructions.dtype)
    elementwise = ops.binary_crossentropy(targets, reconstructions, from_logits=False)
    axes = tuple(range(1, len(elementwise.shape)))
    return ops.mean(elementwise, axis=axes) if axes else elementwise


@keras.saving.register_keras_serializable(package="tf_bihalf")
class BinaryReconstructionLoss(keras.losses.Loss):
    """Mean binary cross-entropy between inputs and their reconstructions.

    With the default ``"sum_over_batch_size"`` reduction the value is the mean over every pixel
    of the batch (module docstring).

    Args:
        name: loss name.
        **kwargs: passed to ``keras.losses.Loss`` (``reduction``, ``dtype``).
    """

    def __init__(self, name: str = "reconstruction", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return binary_reconstruction_loss(y_true, y_pred)
