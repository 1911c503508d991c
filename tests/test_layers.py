"""Tests of the Bi-half layer against small numpy references of the paper's definitions."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_bihalf
from tests.testing import run_layer_test, run_model_saving_test
from tf_bihalf.layers import BiHalf, MedianShift, Relaxed, Sign, SignReg, Tanh, bihalf_codes, get


def reference_bihalf(u: np.ndarray) -> np.ndarray:
    """Paper eq. 8, written as plainly as possible: per column, the floor(M/2) largest -> +1."""
    m, k = u.shape
    codes = -np.ones_like(u, dtype=np.float32)
    for column in range(k):
        # Largest first; equal values keep row order (np.argsort stable on the negated values).
        order = np.argsort(-u[:, column], kind="stable")
        codes[order[: m // 2], column] = 1.0
    return codes


def reference_gradient(u, codes, upstream, gamma):
    m, k = u.shape
    return upstream + gamma / (m * k) * (u - codes)


def codes_and_gradient(layer, u, upstream):
    """Graph-friendly: codes and dL/dU of L = sum(codes * upstream), as tensors."""
    with tf.GradientTape() as tape:
        tape.watch(u)
        loss = tf.reduce_sum(layer(u, training=True) * upstream)
        codes = layer(u, training=True)
    return codes, tape.gradient(loss, u)


def bihalf_and_gradient(layer, u, upstream):
    u = tf.convert_to_tensor(u)
    with tf.GradientTape() as tape:
        tape.watch(u)
        codes = layer(u, training=True)
        loss = tf.reduce_sum(codes * upstream)
    return codes.numpy(), tape.gradient(loss, u).numpy()


@pytest.mark.parametrize("m", [1, 2, 7, 32, 33])
def test_forward_matches_reference(m):
    rng = np.random.default_rng(m)
    # Columns on very different scales and offsets: a global threshold or per-row rule fails.
    u = rng.normal(size=(m, 12)) * rng.uniform(0.01, 100, size=12) + rng.normal(size=12) * 5
    u = u.astype("float32")
    codes = BiHalf()(u, training=True).numpy()
    np.testing.assert_array_equal(codes, reference_bihalf(u))
    # Exactly floor(M/2) plus ones per bit.
    np.testing.assert_array_equal((codes > 0).sum(axis=0), np.full(12, m // 2))


def test_single_row_is_all_minus_one_in_training_and_sign_at_inference():
    u = np.array([[0.5, 2.0, -1.0, 0.0]], dtype="float32")
    layer = BiHalf()
    np.testing.assert_array_equal(layer(u, training=True).numpy(), -np.ones((1, 4)))
    np.testing.assert_array_equal(layer(u, training=False).numpy(), [[1, 1, -1, 1]])
    np.testing.assert_array_equal(layer(u).numpy(), [[1, 1, -1, 1]])


def test_ties_are_broken_by_row_order():
    u = np.zeros((5, 2), dtype="float32")
    u[4, 1] = 1.0
    codes = BiHalf()(u, training=True).numpy()
    np.testing.assert_array_equal(codes[:, 0], [1, 1, -1, -1, -1])
    np.testing.assert_array_equal(codes[:, 1], [1, -1, -1, -1, 1])
    np.testing.assert_array_equal(codes, reference_bihalf(u))


@pytest.mark.parametrize("m", [2, 9, 64, 129])
def test_heavily_tied_inputs_match_reference(m):
    rng = np.random.default_rng(100 + m)
    u = np.round(rng.normal(size=(m, 16)), 0).astype("float32")  # few distinct values
    u[:, 0] = 3.0  # a constant column
    u[: m // 3, 1] = np.inf
    codes = BiHalf()(u, training=True).numpy()
    np.testing.assert_array_equal(codes, reference_bihalf(u))
    np.testing.assert_array_equal(
        tf.function(lambda x: BiHalf()(x, training=True), jit_compile=True)(u).numpy(), codes
    )


@pytest.mark.parametrize("m,gamma", [(8, 6.0), (13, 1.0), (1, 3.0)])
def test_gradient_matches_formula(m, gamma):
    rng = np.random.default_rng(0)
    u = rng.normal(size=(m, 16)).astype("float32")
    upstream = rng.normal(size=(m, 16)).astype("float32")
    codes, grad = bihalf_and_gradient(BiHalf(gamma=gamma), u, upstream)
    np.testing.assert_allclose(grad, reference_gradient(u, codes, upstream, gamma), atol=1e-6)
    # The gamma term matters: without it the gradient would be the upstream alone.
    assert np.abs(grad - upstream).max() > 1e-3


def test_inference_is_sign_not_ranking():
    rng = np.random.default_rng(1)
    u = np.abs(rng.normal(size=(6, 8))).astype("float32") + 0.1  # all positive
    layer = BiHalf()
    np.testing.assert_array_equal(layer(u, training=False).numpy(), np.ones((6, 8)))
    assert (layer(u, training=True).numpy() < 0).sum() == 6 // 2 * 8


def test_inside_keras_model_fit_uses_ranking_and_predict_uses_sign():
    inputs = keras.Input((4,))
    outputs = BiHalf(gamma=1.0)(keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(2).normal(size=(16, 4)).astype("float32")
    y = np.ones((16, 8), dtype="float32")
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    # In training exactly half of each bit is +1, so the MSE against all-ones is exactly 2.
    assert history.history["loss"][0] == pytest.approx(2.0)
    predicted = model.predict(x, verbose=0)
    u = model.layers[1](x).numpy()
    np.testing.assert_array_equal(predicted, np.where(u >= 0, 1.0, -1.0))


def test_jit_compile_matches_eager():
    rng = np.random.default_rng(3)
    u = tf.constant(rng.normal(size=(10, 6)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(10, 6)).astype("float32"))
    layer = BiHalf(gamma=2.0)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            codes = layer(x, training=True)
            loss = tf.reduce_sum(codes * upstream)
        return codes, tape.gradient(loss, x)

    eager_codes, eager_grad = step(u)
    xla_codes, xla_grad = tf.function(step, jit_compile=True)(u)
    graph_codes, graph_grad = tf.function(step)(u)
    np.testing.assert_array_equal(xla_codes.numpy(), eager_codes.numpy())
    np.testing.assert_allclose(xla_grad.numpy(), eager_grad.numpy(), atol=1e-6)
    np.testing.assert_array_equal(graph_codes.numpy(), eager_codes.numpy())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs(dtype):
    rng = np.random.default_rng(4)
    u32 = rng.normal(size=(9, 5)).astype("float32")
    u = tf.cast(u32, dtype)
    with tf.GradientTape() as tape:
        tape.watch(u)
        codes = BiHalf(gamma=1.0)(u, training=True)
        loss = tf.reduce_sum(codes)
    grad = tape.gradient(loss, u)
    assert codes.dtype == tf.float32
    assert grad.dtype == u.dtype
    np.testing.assert_array_equal(codes.numpy(), reference_bihalf(tf.cast(u, "float32").numpy()))


@pytest.mark.parametrize("jit", [False, True])
def test_float64_inputs_stay_float64(jit):
    rng = np.random.default_rng(4)
    # Differences far below float32 resolution: a float32 cast would tie (and round) them.
    u = 1.0 + rng.normal(size=(9, 5)) * 1e-12
    upstream = rng.normal(size=(9, 5))
    layer = BiHalf(gamma=3.0)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            codes = layer(x, training=True)
            loss = tf.reduce_sum(codes * upstream)
        return codes, tape.gradient(loss, x)

    codes, grad = tf.function(step, jit_compile=jit)(tf.constant(u))
    assert codes.dtype == tf.float64 and grad.dtype == tf.float64
    np.testing.assert_array_equal(codes.numpy(), reference_bihalf(u))
    # XLA may fuse the multiply-add: float64 rounding only (a float32 U would be off by ~1e-13).
    expected = reference_gradient(u, codes.numpy(), upstream, 3.0)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=0, atol=1e-15)
    assert layer(tf.constant(u)).dtype == tf.float64  # inference: sign(U) in float64
    assert Sign(gamma=1.0)(tf.constant(u), training=True).dtype == tf.float64
    # Layers with float32 state keep computing in float32.
    assert Tanh()(tf.constant(u), training=True).dtype == tf.float32
    assert MedianShift()(tf.constant(u), training=True).dtype == tf.float32


def test_float64_in_a_functional_model():
    inputs = keras.Input((3,), dtype="float64")
    outputs = BiHalf()(inputs)
    assert outputs.dtype == "float64"
    model = keras.Model(inputs, outputs)
    u = np.array([[0.5, -1.0, 1e-300], [-0.25, 2.0, -1e-300]])
    np.testing.assert_array_equal(model(u, training=True).numpy(), reference_bihalf(u))


# Values that trip float comparisons: signed zeros, infinities, huge and subnormal magnitudes.
SPECIAL_VALUES = [0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -1e-45, 2e-45, 1.0, -1.0]


def _selection_cases():
    rng = np.random.default_rng(11)
    for m in (1, 2, 7, 32, 33, 128):
        yield rng.normal(size=(m, 6)) * rng.uniform(1e-20, 1e20, size=6)
        yield rng.integers(-2, 3, size=(m, 6)).astype(float)  # heavy ties across the cut
        yield rng.choice(SPECIAL_VALUES, size=(m, 6))
        yield np.full((m, 6), 0.5)


@pytest.mark.parametrize("case", list(range(24)))
@pytest.mark.parametrize(
    "selection, jits", [("search", (False, True)), ("top_k", (True,)), ("auto", (True,))]
)
def test_selection_matches_reference(case, selection, jits):
    # Under XLA every selection compares integer keys: XLA's CPU code flushes subnormal
    # floats to zero, so a float top_k there would tie 1e-45 with 0 (the special-value cases).
    u = list(_selection_cases())[case].astype("float32")
    upstream = np.random.default_rng(case).normal(size=u.shape).astype("float32")
    reference = reference_bihalf(u)
    for jit in jits:
        layer = BiHalf(gamma=2.0, selection=selection)
        codes, grad = tf.function(
            functools.partial(codes_and_gradient, layer), jit_compile=jit, autograph=False
        )(tf.constant(u), tf.constant(upstream))
        codes, grad = codes.numpy(), grad.numpy()
        np.testing.assert_array_equal(codes, reference)
        if np.isfinite(u).all():
            expected = reference_gradient(u, reference, upstream, 2.0)
            np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)


def _threshold_cases():
    rng = np.random.default_rng(14)
    powers = [2**j for j in range(31)]
    # Keys spread geometrically over the whole int32 range, both extremes included: each
    # bisection step removes little more than half of the range here, so these need the most
    # steps (more than 20).
    spread = np.array([*powers, *(-p for p in powers), 0, -(2**31), 2**31 - 1], np.int64)
    yield np.stack([spread, spread[::-1], np.sort(spread), rng.permutation(spread)], axis=1)
    yield rng.integers(-(2**31), 2**31, size=(65, 5))  # uniform over all int32 keys
    yield rng.integers(-3, 4, size=(40, 3))  # many equal keys
    yield np.full((9, 2), 2**31 - 1)


@pytest.mark.parametrize("case", list(range(4)))
@pytest.mark.parametrize("jit", [False, True])
def test_search_threshold_is_the_kth_largest_key(case, jit):
    from tf_bihalf.layers.bi_half import _search_threshold  # noqa: PLC0415

    keys = list(_threshold_cases())[case].astype(np.int32)
    search = tf.function(_search_threshold, jit_compile=jit, autograph=False)
    for k in range(1, len(keys) + 1):
        expected = -np.sort(-keys.astype(np.int64), axis=0)[k - 1]
        np.testing.assert_array_equal(search(tf.constant(keys), tf.constant(k)).numpy(), expected)


def _graph_ops(step, *args) -> set:
    graph = step.get_concrete_function(*args).graph.as_graph_def()
    return {node.op for f in graph.library.function for node in f.node_def} | {
        node.op for node in graph.node
    }


def test_xla_auto_is_search_on_cpu_and_matches_top_k_on_random_features():
    gpu = bool(tf.config.list_logical_devices("GPU"))
    rng = np.random.default_rng(12)
    u = tf.constant(rng.normal(size=(128, 64)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(128, 64)).astype("float32"))
    results = {}
    for selection in ("auto", "top_k", "search"):
        layer = BiHalf(gamma=1.0, selection=selection)
        step = tf.function(
            functools.partial(codes_and_gradient, layer), jit_compile=True, autograph=False
        )
        results[selection] = [t.numpy() for t in step(u, upstream)]
        top_k = selection == "top_k" or (selection == "auto" and gpu)
        assert ("TopKV2" in _graph_ops(step, u, upstream)) == top_k, selection
    for selection in ("auto", "search"):
        for got, expected in zip(results[selection], results["top_k"], strict=True):
            np.testing.assert_array_equal(got, expected)
    # Outside XLA, "auto" is one top_k (the fewest ops for TensorFlow's executor).
    assert "TopKV2" in _graph_ops(tf.function(lambda x: bihalf_codes(x)), u)


def test_xla_auto_follows_the_device(monkeypatch):
    # "auto" under XLA: top_k where the ops land on a GPU (faster there, docs/BENCHMARKS.md),
    # the search on a CPU; an explicit CPU placement wins over a visible GPU.
    from tf_bihalf.layers import bi_half  # noqa: PLC0415

    monkeypatch.setattr(bi_half, "_gpus_visible", lambda: True)
    u = tf.constant(np.random.default_rng(13).normal(size=(32, 8)).astype("float32"))
    on_default = tf.function(lambda x: bihalf_codes(x), jit_compile=True)
    assert "TopKV2" in _graph_ops(on_default, u)
    np.testing.assert_array_equal(on_default(u).numpy(), reference_bihalf(u.numpy()))

    def pinned(x):
        with tf.device("/CPU:0"):
            return bihalf_codes(tf.identity(x))

    assert "TopKV2" not in _graph_ops(tf.function(pinned, jit_compile=True), u)
    monkeypatch.setattr(bi_half, "_gpus_visible", lambda: False)
    assert "TopKV2" not in _graph_ops(tf.function(lambda x: bihalf_codes(x), jit_compile=True), u)


def test_bad_selection():
    with pytest.raises(ValueError, match="selection"):
        BiHalf(selection="sort")
    with pytest.raises(ValueError, match="float32"):
        bihalf_codes(tf.zeros((4, 2), tf.float64), selection="search")


def test_mixed_precision_policy_model():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(6)(inputs)
        outputs = BiHalf()(hidden)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="adam", loss="mse")
        x = np.random.default_rng(5).normal(size=(8, 4)).astype("float32")
        model.fit(x, np.ones((8, 6), "float32"), verbose=0)
        assert model(x, training=True).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 3, 4), "float32"), "rank-2"),
        (np.zeros((5,), "float32"), "rank-2"),
        (np.zeros((2, 3), "int32"), "floating-point"),
    ],
)
def test_bad_inputs_give_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        BiHalf()(bad, training=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="gamma"):
        BiHalf(gamma=-1)
    with pytest.raises(ValueError, match="Unknown hash layer"):
        get("bihalves")
    with pytest.raises(ValueError, match="momentum"):
        MedianShift(momentum=1.0)


# --------------------------------------------------------------------------------------------
# Global-batch ranking under tf.distribute (two logical CPUs, configured in conftest.py).


@functools.lru_cache(maxsize=1)
def _two_replica_strategy():
    # One strategy for the whole module: separate MirroredStrategy objects in one process reuse
    # collective instance keys, and a later one can then see a stale shape.
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        return None
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


def _strategy_or_skip():
    strategy = _two_replica_strategy()
    if strategy is None:
        pytest.skip("two logical CPU devices could not be configured in this process")
    return strategy


def _distributed_codes_and_gradients(
    u, upstream, sizes, cross_replica=True, gamma=6.0, selection="auto"
):
    strategy = _strategy_or_skip()
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    with strategy.scope():
        layer = BiHalf(gamma=gamma, cross_replica=cross_replica, selection=selection)

    def slice_for(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                array[
                    offsets[ctx.replica_id_in_sync_group] : offsets[
                        ctx.replica_id_in_sync_group + 1
                    ]
                ]
            )
        )

    @tf.function
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch(x)
            codes = layer(x, training=True)
            loss = tf.reduce_sum(codes * w)
        return codes, tape.gradient(loss, x)

    codes, grads = strategy.run(step, args=(slice_for(u), slice_for(upstream)))
    codes = np.concatenate([t.numpy() for t in strategy.experimental_local_results(codes)])
    grads = np.concatenate([t.numpy() for t in strategy.experimental_local_results(grads)])
    return codes, grads


@pytest.mark.parametrize("selection", ["auto", "search"])
@pytest.mark.parametrize("sizes", [(16, 16), (9, 6)])
def test_two_replicas_equal_one_replica(sizes, selection):
    rng = np.random.default_rng(6)
    m = sum(sizes)
    u = rng.normal(size=(m, 8)).astype("float32")
    upstream = rng.normal(size=(m, 8)).astype("float32")
    codes, grads = _distributed_codes_and_gradients(u, upstream, sizes, selection=selection)
    single_codes, single_grads = bihalf_and_gradient(BiHalf(gamma=6.0), u, upstream)
    np.testing.assert_array_equal(codes, single_codes)
    np.testing.assert_allclose(grads, single_grads, atol=1e-6)
    np.testing.assert_array_equal(codes, reference_bihalf(u))


def test_cross_replica_false_ranks_per_replica():
    rng = np.random.default_rng(7)
    u = rng.normal(size=(16, 8)).astype("float32")
    u[:8] += 10.0  # replica 0's rows are all larger: the global ranking makes them all +1.
    upstream = np.zeros_like(u)
    global_codes, _ = _distributed_codes_and_gradients(u, upstream, (8, 8))
    local_codes, _ = _distributed_codes_and_gradients(u, upstream, (8, 8), cross_replica=False)
    np.testing.assert_array_equal(global_codes[:8], np.ones((8, 8)))
    np.testing.assert_array_equal(local_codes[:8], reference_bihalf(u[:8]))
    np.testing.assert_array_equal(local_codes[8:], reference_bihalf(u[8:]))


def test_model_fit_under_mirrored_strategy():
    strategy = _strategy_or_skip()
    with strategy.scope():
        inputs = keras.Input((4,))
        outputs = BiHalf(gamma=1.0)(keras.layers.Dense(6)(inputs))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(8).normal(size=(32, 4)).astype("float32")
    history = model.fit(x, np.ones((32, 6), "float32"), batch_size=16, epochs=1, verbose=0)
    # Half of every bit is +1 over the global batch: the MSE against ones is exactly 2.
    assert history.history["loss"][0] == pytest.approx(2.0)


# --------------------------------------------------------------------------------------------
# Baselines.


def test_sign_straight_through_and_gamma_term():
    rng = np.random.default_rng(9)
    u = rng.normal(size=(6, 4)).astype("float32")
    upstream = rng.normal(size=(6, 4)).astype("float32")
    codes, grad = bihalf_and_gradient(Sign(), u, upstream)
    np.testing.assert_array_equal(codes, np.where(u >= 0, 1, -1))
    np.testing.assert_allclose(grad, upstream, atol=1e-7)
    codes, grad = bihalf_and_gradient(Sign(gamma=0.2), u, upstream)
    np.testing.assert_allclose(grad, reference_gradient(u, codes, upstream, 0.2), atol=1e-7)


def test_sign_cubic_penalty():
    u = np.array([[0.5, -2.0], [1.0, 0.0]], dtype="float32")
    layer = Sign(cubic_penalty=0.1)
    layer(u, training=True)
    expected = 0.1 * np.mean(np.abs(np.abs(u) - 1) ** 3)
    assert float(layer.losses[0]) == pytest.approx(expected)
    layer_eval = Sign(cubic_penalty=0.1)
    layer_eval(u, training=False)
    assert not layer_eval.losses


def test_signreg_regulariser_value_and_gradient():
    rng = np.random.default_rng(10)
    u = tf.constant(rng.normal(size=(8, 4)).astype("float32"))
    layer = SignReg(alpha=1.0)
    with tf.GradientTape() as tape:
        tape.watch(u)
        codes = layer(u, training=True)
        reg = layer.losses[0]
    b = np.where(u.numpy() >= 0, 1.0, -1.0)
    means = b.mean(axis=0)
    assert float(reg) == pytest.approx(np.mean(means**2) / 2)
    # d/dU of alpha * mean_k(mean_i b_ik)^2 / 2 through the straight-through estimator.
    expected_grad = np.broadcast_to(means / (4 * 8), (8, 4))
    np.testing.assert_allclose(tape.gradient(reg, u).numpy(), expected_grad, atol=1e-7)
    np.testing.assert_array_equal(codes.numpy(), b)


def test_tanh_schedule_and_inference():
    layer = Tanh(beta=1.0, growth=0.5)
    u = np.array([[0.3, -0.7]], dtype="float32")
    first = layer(u, training=True).numpy()
    np.testing.assert_allclose(first, np.tanh(u), rtol=1e-6)
    second = layer(u, training=True).numpy()
    np.testing.assert_allclose(second, np.tanh(np.sqrt(1.5) * u), rtol=1e-6)
    np.testing.assert_array_equal(layer(u, training=False).numpy(), [[1, -1]])


def test_relaxed_is_identity_in_training():
    u = np.array([[0.3, -0.7]], dtype="float32")
    np.testing.assert_array_equal(Relaxed()(u, training=True).numpy(), u)
    np.testing.assert_array_equal(Relaxed()(u, training=False).numpy(), [[1, -1]])


def test_median_shift_training_and_moving_average():
    rng = np.random.default_rng(11)
    u = (rng.normal(size=(11, 3)) + [5.0, -3.0, 0.0]).astype("float32")
    layer = MedianShift(momentum=0.5)
    codes = layer(u, training=True).numpy()
    median = np.median(u, axis=0)
    np.testing.assert_array_equal(codes, np.where(u - median >= 0, 1, -1))
    np.testing.assert_allclose(layer.moving_median.numpy(), 0.5 * median, rtol=1e-6)
    even = u[:10]
    layer(even, training=True)
    expected = 0.5 * (0.5 * median) + 0.5 * np.median(even, axis=0)
    np.testing.assert_allclose(layer.moving_median.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(
        layer(u, training=False).numpy(), np.where(u - expected >= 0, 1, -1)
    )


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (BiHalf, {"gamma": 1.0, "cross_replica": False}),
        (Sign, {"gamma": 0.2, "cubic_penalty": 0.1}),
        (SignReg, {"alpha": 0.5}),
        (Tanh, {"beta": 2.0, "growth": 0.01}),
        (Relaxed, {}),
        (MedianShift, {"momentum": 0.9}),
    ],
)
def test_layer_contract(cls, kwargs):
    run_layer_test(cls, kwargs, (6, 5))
    assert isinstance(
        get(cls.__name__.lower() if cls is not MedianShift else "median", **kwargs), cls
    )


def _all_layers_model():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4)(inputs)
    branches = [get(name) for name in ["bihalf", "sign", "signreg", "tanh", "relaxed", "median"]]
    outputs = keras.layers.Concatenate()([layer(hidden) for layer in branches])
    return keras.Model(inputs, outputs)


def test_keras_round_trip_in_process():
    model = _all_layers_model()
    x = np.random.default_rng(12).normal(size=(3, 5)).astype("float32")
    run_model_saving_test(model, x)


def test_keras_file_loads_in_a_fresh_process(tmp_path):
    model = _all_layers_model()
    # Move MedianShift's state away from its initial value so that loading must restore it.
    median_layer = [layer for layer in model.layers if isinstance(layer, MedianShift)][0]
    median_layer.moving_median.assign(np.full(4, 0.25, "float32"))
    x = np.random.default_rng(13).normal(size=(3, 5)).astype("float32")
    path = tmp_path / "all_layers.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import json, numpy as np, keras
        import tf_bihalf
        model = keras.saving.load_model({str(path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        print(json.dumps(np.asarray(model(x, training=False)).tolist()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    restored = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_array_equal(restored, model(x, training=False).numpy())


def test_package_exposes_version():
    assert tf_bihalf.__version__
