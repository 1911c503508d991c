"""The contract every hash layer shares: continuous U (batch, K) in, ±1 codes out.

In training a hash layer applies its own binarisation (bi-half ranking, straight-through sign,
tanh relaxation, ...). At inference every layer returns ``sign(U)`` with ``sign(0) = +1``
(``MedianShift`` first subtracts its tracked median): never anything that depends on the other
rows of the batch, so a batch of one encodes exactly like the same row inside a larger batch.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def sign_codes(u: tf.Tensor) -> tf.Tensor:
    """``sign(u)`` as ±1 in ``u``'s dtype, with ``sign(0) = +1``."""
    one = tf.ones_like(u)
    return tf.where(u >= 0, one, -one)


class HashLayer(keras.layers.Layer):
    """Base class of the tf_bihalf hash layers.

    Subclasses implement ``train_codes(u)``, the training-time output for ``u``;
    ``call`` validates the input, casts it to the compute dtype and dispatches on ``training``.
    The compute and output dtype is float32 (float16/bfloat16 inputs are widened, also under a
    mixed-precision policy), except that float64 inputs stay float64, values and gradients
    alike, in every layer without state (``BiHalf``, ``Sign``, ``SignReg``, ``Relaxed``);
    layers with float32 state (``Tanh``'s step, ``MedianShift``'s median) compute in float32.
    The output has the input's shape.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Inputs are validated and cast in `call`; Keras must not cast them (or, under a
        # mixed-precision policy, the layer's float32 variables) to the compute dtype first.
        self.autocast = False
        self.supports_masking = False

    def _validate(self, shape) -> None:
        if len(shape) != 2:
            raise ValueError(
                f"{type(self).__name__} expects a rank-2 input of shape (batch, bits); "
                f"got shape {tuple(shape)} (rank {len(shape)}). Flatten or project the "
                "features to (batch, bits) first."
            )
        if shape[-1] is not None and shape[-1] < 1:
            raise ValueError(
                f"{type(self).__name__} needs at least one bit; got shape {tuple(shape)}."
            )

    def build(self, input_shape):
        self._validate(input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        inputs = tf.convert_to_tensor(inputs)
        self._validate(inputs.shape)
        if not inputs.dtype.is_floating:
            raise ValueError(
                f"{type(self).__name__} expects floating-point features; got dtype "
                f"{inputs.dtype.name}. Cast the continuous features to float first."
            )
        u = tf.cast(inputs, self._compute_dtype_for(inputs.dtype))
        if training:
            return self.train_codes(u)
        return self.inference_codes(u)

    def _compute_dtype_for(self, dtype) -> tf.DType:
        """float64 stays float64 when the layer has no (float32) state; all else is float32."""
        if tf.as_dtype(dtype) == tf.float64 and not self.weights:
            return tf.float64
        return tf.float32

    def train_codes(self, u: tf.Tensor) -> tf.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def inference_codes(self, u: tf.Tensor) -> tf.Tensor:
        return sign_codes(u)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(inputs.shape, dtype=self._compute_dtype_for(inputs.dtype).name)


def batch_mean_or_zero(values: tf.Tensor) -> tf.Tensor:
    """``tf.reduce_mean(values)`` of a batch-dependent regulariser term, and 0 (not NaN) when
    the batch is empty, so that an empty batch adds nothing to the loss."""
    return tf.where(tf.size(values) > 0, tf.reduce_mean(values), tf.zeros((), values.dtype))


def straight_through(u: tf.Tensor, codes: tf.Tensor, gamma: float | tf.Tensor = 0.0) -> tf.Tensor:
    """Forward ``codes``; backward ``dL/dU = dL/dB + gamma / (M*K) * (U - B)``.

    ``M*K`` is the number of elements of ``u`` (the real batch, also the last, smaller one).
    With ``gamma = 0`` this is the plain straight-through estimator.
    """

    @tf.custom_gradient
    def _forward(x):
        def grad(upstream):
            if isinstance(gamma, (int, float)) and not gamma:
                return upstream
            if x.shape.is_fully_defined():
                scale = gamma / max(x.shape.num_elements(), 1)  # a constant, no ops
            else:
                scale = gamma / tf.maximum(tf.cast(tf.size(x), x.dtype), 1.0)
            return upstream + scale * (x - codes)

        return tf.identity(codes), grad

    return _forward(u)
