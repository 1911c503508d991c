"""Empty batches give empty outputs: a mixin for the functional-subclass hashing models.

A batch of zero examples is a legitimate input (the last shard of a split, a filter that let
nothing through) and must give outputs with zero rows, not an error. TensorFlow's CPU
convolution kernels (oneDNN) refuse it outside XLA: they return the *input's* shape, and the
next layer fails deep inside the backbone ("input depth must be evenly divisible by filter
depth", "Incompatible shapes: [64] vs. [0, 32, 32, 3]"). Keras' ``Model.predict`` on an empty
array fails inside Keras itself. ``EmptyBatchSupport`` answers both, without changing what a
non-empty batch computes:

* a batch whose size is known to be 0 (eager calls, ``predict``, a trace with that shape)
  never reaches the network: the outputs are zeros of shape ``(0, ...)`` in the outputs'
  dtypes, and no layer state changes (no moving median or step update from nothing);
* an unknown batch size inside an XLA-compiled function runs the network as is (XLA's
  kernels handle zero rows): no guard, no cost;
* an unknown batch size in a TensorFlow graph, in a model with convolutions
  (``guard_graph_batches``), at inference gets a zero row when it has none (the batch and a
  zero row concatenated, the first ``max(rows, 1)`` gathered: the input is copied, its values
  unchanged) and the outputs are sliced back to the batch's rows: no control flow and static
  channel counts, so an exported graph still converts to TFLite builtins;
* an unknown batch size in a TensorFlow graph in training runs the network under a
  ``tf.cond`` on the batch size (padding would feed a fake example to layers with state),
  except under several replicas, where a replica skipping the network would leave the others
  waiting in Bi-half's cross-replica gather: there the network runs as is.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_bihalf.layers.bi_half import _in_xla_context


def _batch_tensor(inputs):
    """``(shape, inputs)`` when ``inputs`` is one array or tensor with a batch axis (the only
    case the guard handles; Keras hands functional models numpy arrays unconverted)."""
    if isinstance(inputs, np.ndarray) and inputs.ndim:
        return tf.TensorShape(inputs.shape), inputs
    if isinstance(inputs, tf.Tensor | tf.Variable) and inputs.shape.rank:
        return inputs.shape, inputs
    return None, None


def _at_least_one_row(batch, count, shape: tf.TensorShape):
    """``batch`` itself when it has rows, else one row of zeros, as a tensor whose non-batch
    axes keep their static sizes: the batch and a zero row are concatenated and the first
    ``max(count, 1)`` rows gathered (builtin ops for TFLite; a ``tf.pad`` by a run-time amount
    would leave the converter no static channel count, and TFLite's builtin Conv2D needs one).
    Inputs whose other axes have no static size are padded instead."""
    if None in tuple(shape[1:]):
        return tf.pad(batch, [[0, tf.maximum(1 - count, 0)]] + [[0, 0]] * (shape.rank - 1))
    filler = tf.zeros([1, *shape[1:]], batch.dtype)
    return tf.gather(tf.concat([batch, filler], axis=0), tf.range(tf.maximum(count, 1)))


class EmptyBatchSupport:
    """Mixin (before ``keras.Model`` in the bases) for functional models of one input.

    Overrides ``call`` and ``predict`` so that a batch of zero examples gives outputs of zero
    rows (see the module docstring). The model's graph, config and weights are unchanged, so
    saved files and exports are the same as without the mixin.

    ``guard_graph_batches``: whether a batch of unknown size in a TensorFlow graph needs the
    guard (True where the network has layers that refuse zero rows, the convolutions); a
    model of dense layers sets it False and runs such batches as is.
    """

    guard_graph_batches = True

    def _outputs_have_static_shapes(self) -> bool:
        """Whether every output's shape is known past the batch axis (needed to build empty
        outputs; checked without creating a tensor)."""
        return all(None not in tuple(spec.shape[1:]) for spec in keras.tree.flatten(self.output))

    def _empty_outputs(self):
        """Zeros with zero rows in the structure, shapes and dtypes of the model's outputs
        (built only where an empty batch is possible: callers check
        ``_outputs_have_static_shapes`` first)."""
        return keras.tree.map_structure(
            lambda spec: tf.zeros((0, *spec.shape[1:]), spec.dtype), self.output
        )

    def call(self, inputs, training=None, mask=None):
        network = super().call

        def run(x):
            return network(x, training=training, mask=mask)

        shape, batch = _batch_tensor(inputs)
        if batch is None or not self._outputs_have_static_shapes():
            return run(inputs)
        if shape[0] == 0:
            return self._empty_outputs()
        if shape[0] is not None or not self.guard_graph_batches or _in_xla_context():
            return run(inputs)
        count = tf.shape(batch)[0]
        if not training:
            outputs = run(_at_least_one_row(batch, count, shape))
            return keras.tree.map_structure(lambda output: output[:count], outputs)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            return run(inputs)
        return tf.cond(count > 0, lambda: run(inputs), self._empty_outputs)

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict``; an array or tensor of zero examples gives empty outputs
        (as numpy arrays) instead of Keras' error on a run without batches."""
        shape = getattr(x, "shape", None)
        if not isinstance(x, tf.data.Dataset) and shape is not None and len(shape) and not shape[0]:
            outputs = self(tf.convert_to_tensor(x), training=False)
            return keras.tree.map_structure(lambda output: np.asarray(output), outputs)
        return super().predict(x, *args, **kwargs)
