"""Cosine-similarity preservation: the unsupervised loss of the Bi-half image experiments.

The codes ``b`` should keep the angular structure of the deep features ``x`` they come from:

    L = mean over pairs (i, j) of ( cos(b_i, b_j) - cos(x_i, x_j) )^2,
    cos(u, v) = u . v / (max(|u|, eps) * max(|v|, eps)),  eps = 1e-8.

Pairings:

* ``"half"`` (the reference, docs/paper.md "Settings"): the batch of M rows is cut in two halves and row
  ``i`` is paired with row ``i + M/2`` (``i < M/2``): ``M/2`` pairs. With an odd M the
  pairs are ``(i, i + floor(M/2))`` and the **last row is left out** (the reference would
  fail on an odd batch; trainers use ``drop_remainder`` batches, which are even). Under
  ``MirroredStrategy`` the halves are those of each replica's slice.
* ``"all"``: every pair ``i < j`` of the batch, ``M (M - 1) / 2`` pairs.

A batch with fewer than two rows has no pair: the loss is 0 (``ValueError`` when the
batch size is statically known to be < 2).

Example:

>>> loss = CosineSimilarityPreservation()
>>> x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
>>> b = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [-1.0, 1.0]])
>>> round(float(loss(x, b)), 6)   # pairs (0, 2): (1 - 1)^2, (1, 3): (0 - 0.707107)^2; mean
0.25
"""

from __future__ import annotations

import keras
import tensorflow as tf

PAIRINGS = ("half", "all")
EPSILON = 1e-8


def _normalize(values: tf.Tensor) -> tf.Tensor:
    norm = tf.norm(values, axis=-1, keepdims=True)
    return values / tf.maximum(norm, EPSILON)


def pair_cosines(values: tf.Tensor, pairing: str = "half") -> tf.Tensor:
    """Cosine similarity of each pair of rows of ``values`` (M, D) under ``pairing``.

    Returns ``(floor(M/2),)`` for ``"half"`` and ``(M (M - 1) / 2,)`` (row-major upper
    triangle) for ``"all"``.
    """
    unit = _normalize(tf.cast(values, tf.float32))
    if pairing == "half":
        half = tf.shape(unit)[0] // 2
        return tf.reduce_sum(unit[:half] * unit[half : 2 * half], axis=-1)
    gram = tf.matmul(unit, unit, transpose_b=True)
    rows = tf.shape(gram)[0]
    upper = tf.range(rows)[:, None] < tf.range(rows)[None, :]
    return tf.boolean_mask(gram, upper)


@keras.saving.register_keras_serializable(package="tf_bihalf")
class CosineSimilarityPreservation(keras.losses.Loss):
    """``mean_pairs (cos(b_i, b_j) - cos(x_i, x_j))^2`` (see the module docstring).

    Args:
        pairing: ``"half"`` (row i with row i + M/2, the reference) or ``"all"`` (i < j).
        name: loss name.
        **kwargs: passed to ``keras.losses.Loss`` (e.g. ``reduction``).

    Call arguments:
        y_true: the features ``x``, float ``(M, D)``.
        y_pred: the codes ``b`` (or any continuous output), float ``(M, K)``.

    Returns:
        The mean squared difference over the pairs (scalar, float32), scaled for
        ``tf.distribute`` like every Keras loss.

    Example:

    >>> CosineSimilarityPreservation(pairing="all")(np.eye(3), np.eye(3)).numpy()
    0.0
    """

    def __init__(
        self, pairing: str = "half", name: str = "cosine_similarity_preservation", **kwargs
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name, **kwargs)
        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}; got {pairing!r}.")
        self.pairing = pairing

    def call(self, y_true, y_pred):
        features = tf.convert_to_tensor(y_true)
        codes = tf.convert_to_tensor(y_pred)
        if features.shape.rank != 2 or codes.shape.rank != 2:
            raise ValueError(
                "CosineSimilarityPreservation expects features (M, D) and codes (M, K); got "
                f"shapes {features.shape} and {codes.shape}."
            )
        rows = (features.shape[0], codes.shape[0])
        if None not in rows and rows[0] != rows[1]:
            raise ValueError(f"features and codes have different batch sizes: {rows}.")
        if rows[0] is not None and rows[0] < 2:
            raise ValueError(f"The cosine loss needs at least 2 rows per batch; got {rows[0]}.")
        difference = pair_cosines(codes, self.pairing) - pair_cosines(features, self.pairing)
        return tf.square(difference)

    def get_config(self):
        config = super().get_config()
        config.update({"pairing": self.pairing})
        return config
