"""The Bi-half layer (Li & van Gemert, AAAI 2021, eq. 8-9)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_bihalf.layers.base import HashLayer

_SELECTIONS = ("auto", "top_k", "search")


def _in_xla_context() -> bool:
    """Whether the graph being traced is compiled by XLA (``tf.function(jit_compile=True)``)."""
    from tensorflow.python.ops import control_flow_util  # noqa: PLC0415 - private TF module

    if tf.executing_eagerly():
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _gpus_visible() -> bool:
    """Whether TensorFlow sees a GPU (its default placement for the traced ops)."""
    return bool(tf.config.list_logical_devices("GPU"))


def _xla_selection(u: tf.Tensor) -> str:
    """``"auto"`` inside XLA: ``"search"`` on a CPU, ``"top_k"`` on a GPU.

    Measured (docs/BENCHMARKS.md, "Bi-half on a GPU"): the search's dependent passes are cheap
    on a CPU, where XLA's ``TopK`` sorts, but were latency-bound on a GPU, where ``TopK`` is one
    kernel (timed with the former 32-pass search; the snapped search's ~10 steps are not yet
    timed on a GPU). The device is the traced tensor's placement when it has one, else the GPU
    whenever one is visible (TensorFlow's default placement).
    """
    device = (u.device or "").upper()
    on_gpu = ("GPU:" in device) if device else _gpus_visible()
    return "top_k" if on_gpu else "search"


def _order_keys(u: tf.Tensor) -> tf.Tensor:
    """float32 -> int32 keys whose signed order is the float order, ``-0.0`` equal to ``+0.0``.

    Negative floats have their 31 magnitude bits flipped. Comparing keys rather than floats
    also keeps subnormal values apart from zero where XLA's CPU code flushes them to zero.
    """
    bits = tf.bitcast(u, tf.int32)
    keys = tf.bitwise.bitwise_xor(
        bits, tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 31), 0x7FFFFFFF)
    )
    return tf.where(keys == -1, 0, keys)  # -1 is the key of -0.0


def _search_threshold(keys: tf.Tensor, k) -> tf.Tensor:
    """The ``k``-th largest of every column of int32 ``keys`` (M, K), without sorting.

    A bisection over the key range that snaps to the column's own keys. Per column it keeps
    ``lo``, a key with at least ``k`` keys ``>=`` it, and ``hi``, a key the answer cannot
    exceed (at first the column's minimum and maximum). Each step takes the midpoint ``c`` of
    ``(lo, hi]`` and counts the keys ``>= c`` in one fused pass that also finds the smallest key
    ``>= c`` and the largest key ``< c``. With at least ``k`` keys ``>= c``, ``lo`` becomes that
    smallest key (the same count); otherwise ``hi`` becomes that largest key. The range at least
    halves each step, so at most 32 steps, until ``lo == hi``: the largest key with ``k`` keys at
    or above it, the answer, exactly. Snapping to the keys skips the empty parts of the range:
    on float features about 7-12 steps for 128 rows instead of a bit-by-bit search's 32, inside
    one ``tf.while_loop`` (docs/BENCHMARKS.md, "Hash layer overhead").
    """
    low = tf.reduce_min(keys, axis=0)
    high = tf.reduce_max(keys, axis=0)

    def step(low, high):
        low64 = tf.cast(low, tf.int64)
        middle = tf.cast(low64 + (tf.cast(high, tf.int64) - low64 + 1) // 2, tf.int32)
        at_least = keys >= middle
        count = tf.reduce_sum(tf.cast(at_least, tf.int32), axis=0)
        smallest_above = tf.reduce_min(tf.where(at_least, keys, 2**31 - 1), axis=0)
        largest_below = tf.reduce_max(tf.where(at_least, -(2**31), keys), axis=0)
        open_ = low < high
        enough = count >= k
        low = tf.where(open_ & enough, smallest_above, low)
        high = tf.where(open_ & ~enough, largest_below, high)
        return low, high

    low, _ = tf.while_loop(
        lambda low, high: tf.reduce_any(low < high), step, (low, high), maximum_iterations=32
    )
    return low


def bihalf_codes(
    u: tf.Tensor, num_rows: tf.Tensor | None = None, selection: str = "auto"
) -> tf.Tensor:
    """Per column of ``u`` (M, K): the ``floor(M/2)`` largest values -> +1, the rest -> -1.

    Exactly the ranking of paper eq. 8 (docs/paper.md, "The Bi-half layer") with ties broken
    by row order (of equal values, the earlier row ranks higher), so the result is
    deterministic; ``M = 1`` gives all -1, odd ``M`` one more -1 than +1. ``num_rows``
    overrides M when ``u`` carries padding rows (of -inf, which rank last).

    Implementation: rather than two ``argsort``s (rank = inverse permutation of the sort
    order), find the ``floor(M/2)``-th largest value ``t`` of each column. When exactly
    ``floor(M/2)`` values of every column are ``>= t`` (no tie straddles the cut: the usual
    case for float features) those are the +1s; otherwise values above ``t`` are +1 and, of
    the values equal to ``t``, the first ones in row order fill the remaining places. Same
    result as the ranking, at a fraction of the cost (``benchmarks/layer_overhead.py``).

    ``selection`` says how ``t`` is found: ``"top_k"``, one unsorted ``tf.math.top_k`` per
    column (the fewest ops: fastest in TensorFlow's graph executor, and under XLA on a GPU);
    ``"search"``, a sort-free search (about ten compare-and-count passes in a loop: faster than
    XLA's CPU ``TopK``, which sorts); ``"auto"`` (default), ``"search"`` for float32 inside an
    XLA-compiled function placed on a CPU, ``"top_k"`` otherwise. Inside XLA both work on the
    order-preserving integer view of the float32 bits and compare the values as those
    integers, since XLA's CPU code flushes subnormal floats to zero in comparisons. All give
    the same codes, bit for bit.
    """
    if selection not in _SELECTIONS:
        raise ValueError(f"selection must be one of {_SELECTIONS}; got {selection!r}.")
    exact_keys = u.dtype == tf.float32 and _in_xla_context()
    if selection == "auto":
        selection = _xla_selection(u) if exact_keys else "top_k"
    if selection == "search" and u.dtype != tf.float32:
        raise ValueError(f"selection='search' needs float32 features; got {u.dtype.name}.")
    static_rows = u.shape[0]
    if static_rows is not None and num_rows is None:
        half = static_rows // 2
        k = min(max(half, 1), static_rows)
    else:
        rows = tf.shape(u)[0]
        half = (rows if num_rows is None else num_rows) // 2
        k = tf.minimum(tf.maximum(half, 1), rows)
    values = _order_keys(u) if selection == "search" or exact_keys else u
    if selection == "search":
        threshold = _search_threshold(values, k)
    else:
        top = tf.math.top_k(tf.transpose(values), k=k, sorted=False).values
        threshold = tf.reduce_min(top, axis=1)  # the half-th largest value of each column
    at_least = values >= threshold

    def with_ties():
        above = values > threshold
        tied = tf.logical_and(at_least, tf.logical_not(above))
        places_left = half - tf.reduce_sum(tf.cast(above, tf.int32), axis=0)
        tie_order = tf.cumsum(tf.cast(tied, tf.int32), axis=0)
        plus = tf.logical_or(above, tf.logical_and(tied, tie_order <= places_left))
        return tf.logical_and(plus, half > 0)

    counts = tf.reduce_sum(tf.cast(at_least, tf.int32), axis=0)
    plus = tf.cond(tf.reduce_all(tf.equal(counts, half)), lambda: at_least, with_ties)
    one = tf.ones_like(u)
    return tf.where(plus, one, -one)


def _global_rows(u: tf.Tensor, context: tf.distribute.ReplicaContext):
    """Gather ``u`` over all replicas, padded to the largest local batch.

    Returns the gathered (R * max_m, K) tensor, this replica's offset into it, and the
    global number of real rows. Padding rows hold -inf and rank below every real row.
    """
    local_m = tf.shape(u)[0]
    sizes = context.all_gather(tf.reshape(local_m, [1]), axis=0)
    max_m = tf.reduce_max(sizes)
    total_m = tf.reduce_sum(sizes)
    pad = tf.fill([max_m - local_m, tf.shape(u)[1]], tf.constant(-float("inf"), u.dtype))
    gathered = context.all_gather(tf.concat([u, pad], axis=0), axis=0)
    offset = tf.cast(context.replica_id_in_sync_group, tf.int32) * max_m
    return gathered, offset, total_m


@keras.saving.register_keras_serializable(package="tf_bihalf")
class BiHalf(HashLayer):
    """Bi-half hash layer: half of the batch is +1 and half is -1 in every bit.

    Training forward (paper eq. 8): for each column (bit) of the continuous features
    ``U`` (M x K), rank the M values over the batch; the top ``floor(M/2)`` become +1 and the
    rest -1 (odd M: one extra -1; M = 1: all -1). Backward (eq. 9):
    ``dL/dU = dL/dB + gamma / (M*K) * (U - B)``, M the actual batch size. The gamma term
    acts on the gradient only; it never appears in a logged loss.

    At inference (``training=False``, and in every exported model) the codes are
    ``sign(U)`` with ``sign(0) = +1``. The batch ranking is never used there: a single
    query ranked over a batch of one would come out all -1.

    Under a ``tf.distribute`` strategy with several replicas and ``cross_replica=True`` the
    ranking runs over the global batch (U is gathered across replicas; each replica keeps its
    own rows and gradient, with M the global batch size), so 2 replicas x 16 rows give the
    codes and gradients of 1 replica x 32 rows. ``cross_replica=False`` ranks per replica.

    Args:
        gamma: numerator of the gradient's pull of U towards B; divided by ``M*K``. The
            reference code uses 6 for image and video hashing and 1 for the MNIST
            autoencoder; the paper writes ``3 / (N*K)``.
        cross_replica: rank over the global batch under a multi-replica strategy.
        selection: how the per-bit threshold is found, ``"auto"``, ``"top_k"`` or
            ``"search"`` (see ``bihalf_codes``); every choice gives the same codes.
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: float tensor of shape ``(batch, bits)`` (float16/bfloat16/float32/float64).
        training: bool; bi-half ranking when true, ``sign`` otherwise.

    Returns:
        tensor of ±1, shape ``(batch, bits)``: float32, or float64 for float64 inputs.

    Example:

    >>> layer = BiHalf(gamma=6.0)
    >>> u = tf.constant([[0.3, -2.0], [0.1, -1.0], [-0.5, 4.0], [0.2, 0.0]])
    >>> layer(u, training=True).numpy()
    array([[ 1., -1.],
           [-1., -1.],
           [-1.,  1.],
           [ 1.,  1.]], dtype=float32)
    >>> layer(u, training=False).numpy()
    array([[ 1., -1.],
           [ 1., -1.],
           [-1.,  1.],
           [ 1.,  1.]], dtype=float32)

    Reference:
        Li & van Gemert, "Deep Unsupervised Image Hashing by Maximizing Bit Entropy",
        AAAI 2021.
    """

    def __init__(
        self, gamma: float = 6.0, cross_replica: bool = True, selection: str = "auto", **kwargs
    ):
        super().__init__(**kwargs)
        if selection not in _SELECTIONS:
            raise ValueError(f"selection must be one of {_SELECTIONS}; got {selection!r}.")
        self.selection = selection
        gamma = float(gamma)
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative; got {gamma}.")
        self.gamma = gamma
        self.cross_replica = bool(cross_replica)

    def train_codes(self, u: tf.Tensor) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        distributed = (
            self.cross_replica and context is not None and context.num_replicas_in_sync > 1
        )
        gamma = self.gamma
        selection = self.selection

        @tf.custom_gradient
        def _bihalf(x):
            if distributed:
                gathered, offset, total_m = _global_rows(x, context)
                codes = bihalf_codes(gathered, total_m, selection)
                codes = codes[offset : offset + tf.shape(x)[0]]
            else:
                total_m = tf.shape(x)[0]
                codes = bihalf_codes(x, selection=selection)

            def grad(upstream):
                if x.shape.is_fully_defined() and not distributed:
                    scale = gamma / max(x.shape.num_elements(), 1)  # a constant, no ops
                else:
                    size = tf.cast(total_m * tf.shape(x)[1], x.dtype)
                    scale = gamma / tf.maximum(size, 1.0)
                return upstream + scale * (x - codes)

            return codes, grad

        return _bihalf(u)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"gamma": self.gamma, "cross_replica": self.cross_replica, "selection": self.selection}
        )
        return config
