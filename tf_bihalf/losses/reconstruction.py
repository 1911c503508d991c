"""Binary cross-entropy reconstruction loss of the hashing autoencoder (docs/paper.md,
"Settings").

For targets ``x`` in [0, 1] and reconstructions ``p`` in (0, 1), over a batch of M examples of
D pixels,

    ``L = -1 / (M * D) * sum_{i, j} [x_ij * log(p_ij) + (1 - x_ij) * log(1 - p_ij)]``

(the mean over every pixel of the batch, as PyTorch's ``BCELoss(reduction="mean")``). Two ways
of evaluating it, which agree wherever the sigmoid is not saturated:

- ``from_probabilities=False`` (default): when ``p`` comes straight from a sigmoid (as the
  autoencoder's output does, inside a compiled train step) Keras evaluates the loss from the
  sigmoid's logits ``z``, ``max(z, 0) - z * x + log(1 + exp(-|z|))``, which is exact and never
  overflows; its gradient is ``dL/dz = sigmoid(z) - x`` for every pixel. Otherwise ``p`` is
  clipped to ``[1e-7, 1 - 1e-7]``.
- ``from_probabilities=True``: PyTorch's ``BCELoss`` exactly, as the reference code trains.
  Each log is clamped at -100, ``-(x * max(log p, -100) + (1 - x) * max(log(1 - p), -100))``,
  and the gradient with respect to ``p`` is PyTorch's ``(p - x) / max(p (1 - p), 1e-12)``.
  Where the sigmoid saturates (``p (1 - p) < 1e-12``: ``|z| > 27.6``, and in float32 any
  ``z > 16.6``, where ``p`` rounds to 1) this gradient is no longer ``sigmoid(z) - x``: it is
  scaled by ``p (1 - p) / 1e-12`` (0 when ``p`` rounds to 0 or 1), so a confidently wrong
  pixel stops pulling its logit back, and its loss is capped at 100 nats. The two agree to
  float rounding on every pixel whose ``p (1 - p) >= 1e-12``.

Example:

>>> loss = BinaryReconstructionLoss()
>>> round(float(loss([[1.0, 0.0]], [[0.5, 0.5]])), 6)  # -log(0.5)
0.693147
>>> torch_like = BinaryReconstructionLoss(from_probabilities=True)
>>> round(float(torch_like([[0.0]], [[1.0]])), 6)  # log(1 - 1) clamped at -100
100.0
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

# PyTorch's BCELoss: the logs are clamped at -100, the backward divides by max(p(1-p), 1e-12).
LOG_FLOOR = -100.0
GRADIENT_EPSILON = 1e-12


def binary_reconstruction_loss(targets, reconstructions, from_probabilities: bool = False):
    """Per-example mean BCE over all non-batch axes, shape ``(batch,)``.

    ``from_probabilities`` selects PyTorch's ``BCELoss`` semantics (module docstring).
    """
    reconstructions = tf.convert_to_tensor(reconstructions)
    targets = ops.cast(targets, reconstructions.dtype)
    if from_probabilities:
        elementwise = torch_binary_crossentropy(targets, reconstructions)
    else:
        elementwise = ops.binary_crossentropy(targets, reconstructions, from_logits=False)
    axes = tuple(range(1, len(elementwise.shape)))
    return ops.mean(elementwise, axis=axes) if axes else elementwise


def torch_binary_crossentropy(targets: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """Elementwise BCE with PyTorch's clamped logs and PyTorch's gradient (module docstring).

    No gradient flows into ``targets``. Probabilities outside [0, 1] give NaN, as the logs do.
    """
    floor = tf.constant(LOG_FLOOR, probabilities.dtype)

    @tf.custom_gradient
    def _bce(p):
        value = -(
            targets * tf.maximum(tf.math.log(p), floor)
            + (1.0 - targets) * tf.maximum(tf.math.log1p(-p), floor)
        )

        def grad(upstream):
            denominator = tf.maximum((1.0 - p) * p, tf.constant(GRADIENT_EPSILON, p.dtype))
            return upstream * (p - targets) / denominator

        return value, grad

    return _bce(probabilities)


@keras.saving.register_keras_serializable(package="tf_bihalf")
class BinaryReconstructionLoss(keras.losses.Loss):
    """Mean binary cross-entropy between inputs and their reconstructions.

    With the default ``"sum_over_batch_size"`` reduction the value is the mean over every pixel
    of the batch (module docstring).

    Args:
        from_probabilities: evaluate PyTorch's ``BCELoss`` from the probabilities (clamped
            logs, PyTorch's gradient; what the reference code trains with) instead of Keras'
            exact form from the sigmoid's logits (the default). They differ only on pixels
            where the sigmoid saturates; see the module docstring.
        name: loss name.
        **kwargs: passed to ``keras.losses.Loss`` (``reduction``, ``dtype``).
    """

    def __init__(self, from_probabilities: bool = False, name: str = "reconstruction", **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(from_probabilities, bool):
            raise ValueError(f"from_probabilities must be a bool; got {from_probabilities!r}.")
        self.from_probabilities = from_probabilities

    def call(self, y_true, y_pred):
        return binary_reconstruction_loss(y_true, y_pred, self.from_probabilities)

    def get_config(self):
        config = super().get_config()
        config["from_probabilities"] = self.from_probabilities
        return config
