"""Coupled-L2 optimizers against hand-written numpy versions of PyTorch's update rules."""

import keras
import numpy as np
import pytest

from tf_bihalf.training import schedules
from tf_bihalf.training.optimizers import CoupledL2Adam, CoupledL2SGD, build_optimizer


def torch_sgd_reference(weights, gradients, learning_rates, wd, momentum, dampening, nesterov):
    """torch.optim.SGD, written out: decay into the gradient, buffer = d on the first step."""
    w = weights.copy()
    buffer = None
    for gradient, lr in zip(gradients, learning_rates, strict=True):
        d = gradient + wd * w
        if momentum:
            buffer = d.copy() if buffer is None else momentum * buffer + (1 - dampening) * d
            d = d + momentum * buffer if nesterov else buffer
        w = w - lr * d
    return w


def torch_adam_reference(
    weights, gradients, learning_rates, wd, beta_1=0.9, beta_2=0.999, eps=1e-8
):
    """torch.optim.Adam, written out (coupled L2, epsilon after the bias correction)."""
    w = weights.copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, (gradient, lr) in enumerate(zip(gradients, learning_rates, strict=True), start=1):
        d = gradient + wd * w
        m = beta_1 * m + (1 - beta_1) * d
        v = beta_2 * v + (1 - beta_2) * d * d
        denominator = np.sqrt(v) / np.sqrt(1 - beta_2**t) + eps
        w = w - lr / (1 - beta_1**t) * m / denominator
    return w


def run_keras(optimizer, weights, gradients):
    variable = keras.Variable(weights.astype("float32"))
    for gradient in gradients:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(gradient, "float32"), variable)])
    return np.asarray(variable)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, 4))
    gradients = [rng.normal(size=(3, 4)) for _ in range(6)]
    return weights, gradients


@pytest.mark.parametrize(
    "momentum, dampening, nesterov",
    [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 0.9, False), (0.9, 0.0, True)],
)
def test_sgd_matches_pytorch_rule(problem, momentum, dampening, nesterov):
    weights, gradients = problem
    wd = 0.05  # large, so that a decoupled or missing decay is visible
    optimizer = build_optimizer(
        "sgd", 0.1, weight_decay=wd, momentum=momentum, dampening=dampening, nesterov=nesterov
    )
    expected = torch_sgd_reference(weights, gradients, [0.1] * 6, wd, momentum, dampening, nesterov)
    np.testing.assert_allclose(
        run_keras(optimizer, weights, gradients), expected, rtol=1e-5, atol=1e-6
    )


def test_sgd_momentum_buffer_survives_learning_rate_change(problem):
    # PyTorch's buffer is lr-free: after a decay the buffered gradients are scaled by the new lr.
    # Keras' own SGD keeps lr-scaled steps in its buffer and would differ here.
    weights, gradients = problem
    schedule = schedules.MultiStepDecay(0.1, steps_per_epoch=2, milestones=[1])
    optimizer = CoupledL2SGD(schedule, momentum=0.9, l2_weight_decay=0.01)
    expected = torch_sgd_reference(weights, gradients, [0.1, 0.1] + [0.01] * 4, 0.01, 0.9, 0, False)
    np.testing.assert_allclose(
        run_keras(optimizer, weights, gradients), expected, rtol=1e-5, atol=1e-6
    )


def test_adam_matches_pytorch_rule(problem):
    weights, gradients = problem
    optimizer = build_optimizer("adam", 1e-2, weight_decay=0.1)
    expected = torch_adam_reference(weights, gradients, [1e-2] * 6, 0.1)
    np.testing.assert_allclose(
        run_keras(optimizer, weights, gradients), expected, rtol=1e-5, atol=1e-6
    )
    # Keras' AdamW-style decoupled decay is a different rule: make sure we are not it.
    decoupled = keras.optimizers.AdamW(1e-2, weight_decay=0.1, epsilon=1e-8)
    assert not np.allclose(run_keras(decoupled, weights, gradients), expected, atol=1e-5)


def test_adam_epsilon_is_applied_after_bias_correction():
    # With tiny gradients epsilon dominates, and its placement changes the first step by ~30x.
    weights = np.ones((2,))
    gradients = [np.full((2,), 1e-9)]
    optimizer = CoupledL2Adam(1.0, epsilon=1e-8)
    expected = torch_adam_reference(weights, gradients, [1.0], 0.0)
    np.testing.assert_allclose(run_keras(optimizer, weights, gradients), expected, rtol=1e-5)


def test_optimizer_config_round_trip_and_errors():
    optimizer = build_optimizer("sgd", 1e-3, weight_decay=5e-4, momentum=0.9, dampening=0.9)
    clone = CoupledL2SGD.from_config(optimizer.get_config())
    assert (clone.momentum, clone.dampening, clone.l2_weight_decay) == (0.9, 0.9, 5e-4)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        build_optimizer("rmsprop", 1e-3)
    with pytest.raises(ValueError, match="SGD arguments"):
        build_optimizer("adam", 1e-3, momentum=0.9)
    with pytest.raises(ValueError, match="decoupled"):
        CoupledL2Adam(weight_decay=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        CoupledL2SGD(momentum=0.9, dampening=0.5, nesterov=True)


def test_multistep_schedule_matches_multisteplr():
    schedule = schedules.MultiStepDecay(1.0, steps_per_epoch=3, milestones=[2, 4])
    epochs = np.arange(0, 18) // 3
    expected = [0.1 ** sum(e >= m for m in (2, 4)) for e in epochs]
    np.testing.assert_allclose([float(schedule(s)) for s in range(18)], expected, rtol=1e-6)
    step = schedules.StepDecay(1.0, steps_per_epoch=2, period=3)
    np.testing.assert_allclose(
        [float(step(s)) for s in (0, 5, 6, 11, 12)], [1, 1, 0.1, 0.1, 0.01], rtol=1e-6
    )
    learning_rate, callbacks = schedules.build_learning_rate(
        {"name": "multistep", "milestones": [60, 80]}, 1e-3, steps_per_epoch=469
    )
    # Float64 and bit-identical to MultiStepLR's chained Python-float update (lr * 0.1 * 0.1,
    # which is not 1e-3 * 0.1 ** 2 nor float32(1e-3) * ...).
    chained, rates = 1e-3, []
    for epoch in (0, 59, 60, 79, 80, 99):
        rate = learning_rate(epoch * 469 + 468)
        assert keras.backend.standardize_dtype(rate.dtype) == "float64"
        rates.append(float(rate))
    torch_chain = [1e-3, 1e-3, 1e-3 * 0.1, 1e-3 * 0.1, 1e-3 * 0.1 * 0.1, 1e-3 * 0.1 * 0.1]
    assert rates == torch_chain
    assert torch_chain[-1] != 1e-3 * 0.1**2 and chained != float(np.float32(1e-3))
    step_rates = [float(schedules.StepDecay(0.3, 1, period=1, factor=0.7)(s)) for s in (0, 3)]
    assert step_rates == [0.3, 0.3 * 0.7**3]  # StepLR's closed form, in float64
    assert float(learning_rate(60 * 469 - 1)) == pytest.approx(1e-3)
    assert float(learning_rate(60 * 469)) == pytest.approx(1e-4)
    assert callbacks == []
    _, callbacks = schedules.build_learning_rate({"name": "plateau", "patience": 10}, 0.1, 5)
    assert isinstance(callbacks[0], keras.callbacks.ReduceLROnPlateau)
    with pytest.raises(ValueError, match="milestones"):
        schedules.build_learning_rate({"name": "multistep"}, 1e-3, 10)
    with pytest.raises(ValueError, match="Unknown schedule"):
        schedules.build_learning_rate({"name": "cosine"}, 1e-3, 10)


def run_keras_float64(make_optimizer, weights, gradients):
    keras.config.set_floatx("float64")  # before the optimizer: its rate variable is floatx
    try:
        optimizer = make_optimizer()
        variable = keras.Variable(weights.astype("float64"), dtype="float64")
        for gradient in gradients:
            optimizer.apply_gradients(
                [(keras.ops.convert_to_tensor(gradient, "float64"), variable)]
            )
        return np.asarray(variable)
    finally:
        keras.config.set_floatx("float32")


def test_float64_training_is_float64_accurate(problem):
    # The coefficients (betas, epsilon, decay, momentum, dampening) must not pass through
    # float32: keras.ops.cast(0.999, "float64") gives float32(0.999), a 1.3e-5 relative error
    # in 1 - beta_2 that made float64 training only float32-accurate.
    weights, gradients = problem
    gradients = [g * 1e-8 for g in gradients]  # Adam near epsilon: sensitive to every constant
    adam = lambda: CoupledL2Adam(1e-3, l2_weight_decay=1e-5)  # noqa: E731
    expected = torch_adam_reference(weights, gradients, [1e-3] * 6, 1e-5)
    np.testing.assert_allclose(
        run_keras_float64(adam, weights, gradients), expected, rtol=0, atol=1e-15
    )
    sgd = lambda: CoupledL2SGD(0.1, momentum=0.9, dampening=0.1, l2_weight_decay=0.05)  # noqa: E731
    expected = torch_sgd_reference(weights, gradients, [0.1] * 6, 0.05, 0.9, 0.1, False)
    np.testing.assert_allclose(
        run_keras_float64(sgd, weights, gradients), expected, rtol=0, atol=1e-15
    )


def test_float32_adam_bias_corrections_are_exact():
    # PyTorch computes 1 - beta^t and lr / (1 - beta_1^t) from Python floats and rounds the
    # results once. Through float32 (beta_2 = float32(0.999), powers in float32), 1 - 0.999^t
    # is off by up to 2e-5 relative, a ~1e-5 relative error in every early update; here the
    # updates stay within float32 rounding of the exact ones.
    rng = np.random.default_rng(1)
    weights = rng.normal(scale=1e-3, size=(256,)).astype("float32").astype(np.float64)
    gradients = [rng.normal(size=(256,)) for _ in range(5)]
    expected = torch_adam_reference(weights, gradients, [1e-3] * 5, 0.0)
    updated = run_keras(CoupledL2Adam(1e-3), weights, gradients).astype(np.float64)
    # Small weights keep their own float32 rounding (~1e-10 a step) far below the 1e-8 that a
    # 1e-5 relative error in the ~1e-3 steps would show.
    np.testing.assert_allclose(updated - weights, expected - weights, rtol=0, atol=2e-9)
