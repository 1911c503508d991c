"""Optimizers with PyTorch's update rules and COUPLED L2 weight decay.

PyTorch's ``weight_decay`` adds ``wd * w`` to the gradient before anything else, so the decay
goes through SGD's momentum buffer and through Adam's moment estimates ("coupled" L2). Keras'
own ``weight_decay`` argument is decoupled (``w -= lr * wd * w`` applied beside the update, as in
AdamW), which is a different optimiser. The paper's reference code uses PyTorch's coupled form
everywhere, so the trainers use the optimizers below.

For one variable ``w`` with gradient ``g`` at step ``t = 1, 2, ...`` (learning rate ``lr``):

``CoupledL2SGD`` (PyTorch ``torch.optim.SGD``)::

    d = g + wd * w
    buf = d                                      if t == 1
    buf = momentum * buf + (1 - dampening) * d   otherwise      (only when momentum != 0)
    d = d + momentum * buf  if nesterov  else  buf
    w = w - lr * d

``CoupledL2Adam`` (PyTorch ``torch.optim.Adam``, ``amsgrad=False``)::

    d = g + wd * w
    m = m + (1 - beta_1) * (d - m)               (= beta_1 * m + (1 - beta_1) * d)
    v = beta_2 * v + (1 - beta_2) * d^2
    w = w - lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)

Rounding follows PyTorch's as well: the coefficients (``1 - beta_1``, ``beta_2``,
``1 - beta_2``, ``wd``, ``epsilon``, momentum, dampening) are rounded once from Python floats to
the variable's dtype, and the bias corrections ``1 - beta^t`` and the step size
``lr / (1 - beta_1^t)`` are computed in float64 (PyTorch's Python floats) and rounded at the
end. Rounded through float32 instead, ``beta_2 = 0.999`` makes ``1 - beta_2`` 1.3e-5 too
small and ``1 - beta_2^t`` is off by up to 2e-5 relative, and float64 training would be only
float32-accurate. ``benchmarks/reference_parity.py`` trains the MNIST autoencoder
step for step beside PyTorch (docs/parity.md).

Note where ``epsilon`` sits: PyTorch adds it to the bias-corrected ``sqrt(v)``, Keras' Adam to
the uncorrected one; the default is PyTorch's 1e-8. Decay applies to every trainable variable
(biases included), as PyTorch's does for a plain ``model.parameters()`` parameter group.

Example:

>>> optimizer = build_optimizer("adam", learning_rate=1e-3, weight_decay=1e-5)
>>> type(optimizer).__name__, optimizer.l2_weight_decay
('CoupledL2Adam', 1e-05)
"""

from __future__ import annotations

import keras
from keras import ops


def _constant(value: float, dtype):
    """A Python float as a tensor of ``dtype``, rounded once (``ops.cast`` of a Python float
    would round it to float32 first, and would make float64 training float32-accurate)."""
    return ops.convert_to_tensor(value, dtype=dtype)


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if value is None or not value >= 0:
            raise ValueError(f"{name} must be a non-negative number; got {value!r}.")


@keras.saving.register_keras_serializable(package="tf_bihalf")
class CoupledL2SGD(keras.optimizers.Optimizer):
    """SGD with PyTorch's momentum, dampening, Nesterov and coupled L2 semantics.

    The momentum buffer holds the (dampened) sum of gradients, not of learning-rate-scaled
    steps as in Keras' SGD, so a learning-rate change takes effect at once, exactly as in
    PyTorch. On the first step the buffer is set to the gradient (dampening not applied).

    Args:
        learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``.
        momentum: momentum factor (>= 0).
        dampening: dampening of the momentum's new gradient term, in [0, 1].
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``, as in
            PyTorch).
        l2_weight_decay: coupled L2 coefficient ``wd`` (``wd * w`` added to the gradient).
        **kwargs: passed to ``keras.optimizers.Optimizer`` (``name``, ``clipnorm``, ...). Keras'
            decoupled ``weight_decay`` is refused here; use ``l2_weight_decay``.

    Example:

    >>> optimizer = CoupledL2SGD(learning_rate=0.1, momentum=0.9, l2_weight_decay=5e-4)
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        l2_weight_decay: float = 0.0,
        name: str = "coupled_l2_sgd",
        **kwargs,
    ):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "CoupledL2SGD applies PyTorch-style coupled L2 through `l2_weight_decay`; "
                "Keras' decoupled `weight_decay` is not supported here."
            )
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        _check_non_negative(momentum=momentum, l2_weight_decay=l2_weight_decay)
        if not 0.0 <= dampening <= 1.0:
            raise ValueError(f"dampening must be in [0, 1]; got {dampening!r}.")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening = 0.")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.l2_weight_decay = float(l2_weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum != 0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        direction = ops.cast(gradient, dtype)
        if self.l2_weight_decay:
            direction = direction + _constant(self.l2_weight_decay, dtype) * variable
        if self.momentum != 0:
            buffer = self.momentums[self._get_variable_index(variable)]
            momentum = _constant(self.momentum, dtype)
            accumulated = buffer * momentum + direction * _constant(1.0 - self.dampening, dtype)
            first_step = ops.equal(self.iterations, 0)
            self.assign(buffer, ops.where(first_step, direction, accumulated))
            if self.nesterov:
                direction = direction + buffer * momentum
            else:
                direction = buffer
        self.assign_sub(variable, direction * learning_rate)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(
            {
                "momentum": self.momentum,
                "dampening": self.dampening,
                "nesterov": self.nesterov,
                "l2_weight_decay": self.l2_weight_decay,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tf_bihalf")
class CoupledL2Adam(keras.optimizers.Optimizer):
    """Adam with PyTorch's update rule (epsilon placement) and coupled L2.

    Args:
        learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``.
        beta_1: first-moment decay.
        beta_2: second-moment decay.
        epsilon: added to the bias-corrected ``sqrt(v)`` (PyTorch's default 1e-8).
        l2_weight_decay: coupled L2 coefficient ``wd`` (``wd * w`` added to the gradient).
        **kwargs: passed to ``keras.optimizers.Optimizer``. Keras' decoupled
            ``weight_decay`` is refused here; use ``l2_weight_decay``.

    Example:

    >>> optimizer = CoupledL2Adam(learning_rate=1e-3, l2_weight_decay=1e-5)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        l2_weight_decay: float = 0.0,
        name: str = "coupled_l2_adam",
        **kwargs,
    ):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "CoupledL2Adam applies PyTorch-style coupled L2 through `l2_weight_decay`; "
                "Keras' decoupled `weight_decay` is not supported here (that is AdamW)."
            )
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        _check_non_negative(l2_weight_decay=l2_weight_decay, epsilon=epsilon)
        for beta_name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{beta_name} must be in [0, 1); got {beta!r}.")
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.l2_weight_decay = float(l2_weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums, self._velocities = self.add_optimizer_variables(
            variables, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        direction = ops.cast(gradient, dtype)
        if self.l2_weight_decay:
            direction = direction + _constant(self.l2_weight_decay, dtype) * variable
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        # PyTorch: m.lerp_(d, 1 - beta_1); v.mul_(beta_2).addcmul_(d, d, value=1 - beta_2).
        self.assign(m, m + _constant(1.0 - self.beta_1, dtype) * (direction - m))
        self.assign(
            v,
            v * _constant(self.beta_2, dtype)
            + _constant(1.0 - self.beta_2, dtype) * direction * direction,
        )
        # The bias corrections and the step size in float64 (PyTorch's Python floats), rounded
        # to the variable's dtype only at the end.
        step = ops.cast(self.iterations + 1, "float64")
        bias_correction_1 = 1.0 - ops.power(_constant(self.beta_1, "float64"), step)
        bias_correction_2 = 1.0 - ops.power(_constant(self.beta_2, "float64"), step)
        step_size = ops.cast(ops.cast(learning_rate, "float64") / bias_correction_1, dtype)
        root_correction_2 = ops.cast(ops.sqrt(bias_correction_2), dtype)
        denominator = ops.sqrt(v) / root_correction_2 + _constant(self.epsilon, dtype)
        self.assign_sub(variable, step_size * m / denominator)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "l2_weight_decay": self.l2_weight_decay,
            }
        )
        return config


OPTIMIZERS = {"sgd": CoupledL2SGD, "adam": CoupledL2Adam}


def build_optimizer(
    name: str,
    learning_rate,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    dampening: float = 0.0,
    **kwargs,
) -> keras.optimizers.Optimizer:
    """Returns a PyTorch-equivalent optimizer with coupled L2 weight decay.

    Args:
        name: ``"sgd"`` or ``"adam"``.
        learning_rate: float or a ``LearningRateSchedule`` (see ``tf_bihalf.training.schedules``).
        weight_decay: PyTorch's ``weight_decay`` (coupled L2: ``wd * w`` added to the gradient).
        momentum: SGD momentum (must be 0 for Adam).
        dampening: SGD dampening (must be 0 for Adam).
        **kwargs: further constructor arguments (``nesterov``; ``beta_1``, ``beta_2``,
            ``epsilon``; ``clipnorm``, ...).

    Example:

    >>> build_optimizer("sgd", 1e-4, weight_decay=5e-4, momentum=0.9).momentum
    0.9
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}.")
    if key == "adam":
        if momentum or dampening:
            raise ValueError(
                "momentum and dampening are SGD arguments; Adam uses beta_1/beta_2 "
                f"(got momentum={momentum}, dampening={dampening})."
            )
        return CoupledL2Adam(learning_rate=learning_rate, l2_weight_decay=weight_decay, **kwargs)
    return CoupledL2SGD(
        learning_rate=learning_rate,
        momentum=momentum,
        dampening=dampening,
        l2_weight_decay=weight_decay,
        **kwargs,
    )
