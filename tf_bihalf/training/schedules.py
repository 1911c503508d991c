"""Learning-rate schedules expressed per optimizer step, with epoch-level semantics.

PyTorch's ``MultiStepLR``/``StepLR`` change the rate between epochs. With ``steps_per_epoch``
optimizer steps per epoch, the epoch of step ``s`` (0-based) is ``e = s // steps_per_epoch`` and

    ``MultiStepLR``:  lr(e) = lr_0 * factor ** |{m in milestones : m <= e}|
    ``StepLR``:       lr(e) = lr_0 * factor ** (e // period)

so with milestones (60, 80) epochs 0-59 use lr_0, 60-79 lr_0/10, 80+ lr_0/100 — the reference's
"lr x 0.1 at epochs 60 and 80".

The rate is computed and returned in float64, as PyTorch's Python floats: ``MultiStepDecay``
multiplies by ``factor`` once per passed milestone, in order (``MultiStepLR``'s chained update,
so epoch 80's rate is ``(1e-3 * 0.1) * 0.1`` bit for bit), and ``StepDecay`` is
``lr_0 * factor ** k`` (``StepLR``'s closed form). The optimizers take the float64 rate into
their float64 step size and round once, to the variables' dtype; a float32 rate would make
float64 training only float32-accurate and moves the float32 step size by an ulp at some
steps (``benchmarks/reference_parity.py``, docs/parity.md).

The schedule is a function of the optimizer's step counter, which is checkpointed with the
optimizer, so a resumed run continues with the right rate.

``build_learning_rate(schedule_config, learning_rate, steps_per_epoch)`` maps a config dict to
``(learning_rate_or_schedule, callbacks)``:

- ``{"name": "constant"}``
- ``{"name": "multistep", "milestones": [60, 80], "factor": 0.1}``
- ``{"name": "step", "period": 120, "factor": 0.1}``
- ``{"name": "plateau", "factor": 0.1, "patience": 10, "monitor": "loss", "min_lr": 0}``
  (a float rate plus ``keras.callbacks.ReduceLROnPlateau``; the callback's state is not
  checkpointed, the reduced rate is: it lives in the optimizer's learning-rate variable).

Example:

>>> schedule = MultiStepDecay(1e-3, steps_per_epoch=10, milestones=(2, 4))
>>> [round(float(schedule(step)), 6) for step in (0, 19, 20, 39, 40)]
[0.001, 0.001, 0.0001, 0.0001, 1e-05]
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_bihalf")
class MultiStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``lr_0 * factor ** (number of milestones <= current epoch)`` (PyTorch ``MultiStepLR``).

    Args:
        initial_learning_rate: ``lr_0``.
        steps_per_epoch: optimizer steps in one epoch (> 0).
        milestones: epochs (0-based) at whose start the rate is multiplied by ``factor``.
        factor: multiplier applied at each milestone.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        steps_per_epoch: int,
        milestones: Sequence[int],
        factor: float = 0.1,
    ):
        if int(steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be >= 1; got {steps_per_epoch!r}.")
        milestones = [int(m) for m in milestones]
        if any(m < 0 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(
                f"milestones must be non-negative epochs in increasing order; got {milestones}."
            )
        if not factor > 0:
            raise ValueError(f"factor must be positive; got {factor!r}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.milestones = milestones
        self.factor = float(factor)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch)
        rate = _float64(self.initial_learning_rate)
        for milestone in self.milestones:
            rate = ops.where(ops.greater_equal(epoch, milestone), rate * self.factor, rate)
        return rate

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "milestones": list(self.milestones),
            "factor": self.factor,
        }


@keras.saving.register_keras_serializable(package="tf_bihalf")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``lr_0 * factor ** (epoch // period)`` (PyTorch ``StepLR``).

    Args:
        initial_learning_rate: ``lr_0``.
        steps_per_epoch: optimizer steps in one epoch (> 0).
        period: epochs between two decays (> 0).
        factor: multiplier applied every ``period`` epochs.
    """

    def __init__(
        self, initial_learning_rate: float, steps_per_epoch: int, period: int, factor: float = 0.1
    ):
        if int(steps_per_epoch) < 1 or int(period) < 1:
            raise ValueError(
                f"steps_per_epoch and period must be >= 1; got {steps_per_epoch!r}, {period!r}."
            )
        if not factor > 0:
            raise ValueError(f"factor must be positive; got {factor!r}.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.period = int(period)
        self.factor = float(factor)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch)
        decays = ops.cast(ops.floor_divide(epoch, self.period), "float64")
        return _float64(self.initial_learning_rate) * ops.power(_float64(self.factor), decays)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "period": self.period,
            "factor": self.factor,
        }


def _float64(value: float):
    """A float64 constant from a Python float (``ops.cast`` of a Python float would round it to
    float32 first)."""
    return ops.convert_to_tensor(value, "float64")


def scale_milestones(milestones: Sequence[int], epochs: int, reference_epochs: int) -> list[int]:
    """Milestones of a ``reference_epochs`` schedule stretched to ``epochs`` (rounded).

    >>> scale_milestones([60, 80], epochs=30, reference_epochs=100)
    [18, 24]
    """
    if reference_epochs < 1 or epochs < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}, {reference_epochs}.")
    return [int(round(m * epochs / reference_epochs)) for m in milestones]


def build_learning_rate(
    schedule: dict | None, learning_rate: float, steps_per_epoch: int
) -> tuple[float | keras.optimizers.schedules.LearningRateSchedule, list[keras.callbacks.Callback]]:
    """Builds the learning rate (float or schedule) and any callbacks a config asks for.

    See the module docstring for the accepted ``schedule`` dicts; ``None`` means constant.
    """
    schedule = dict(schedule or {"name": "constant"})
    name = schedule.pop("name", None)
    try:
        if name == "constant":
            _reject_extra(name, schedule)
            return float(learning_rate), []
        if name == "multistep":
            factor = schedule.pop("factor", 0.1)
            milestones = schedule.pop("milestones")
            _reject_extra(name, schedule)
            return MultiStepDecay(learning_rate, steps_per_epoch, milestones, factor), []
        if name == "step":
            factor = schedule.pop("factor", 0.1)
            period = schedule.pop("period")
            _reject_extra(name, schedule)
            return StepDecay(learning_rate, steps_per_epoch, period, factor), []
        if name == "plateau":
            callback = keras.callbacks.ReduceLROnPlateau(
                monitor=schedule.pop("monitor", "loss"),
                factor=schedule.pop("factor", 0.1),
                patience=schedule.pop("patience", 10),
                min_lr=schedule.pop("min_lr", 0.0),
                verbose=0,
            )
            _reject_extra(name, schedule)
            return float(learning_rate), [callback]
    except KeyError as error:
        raise ValueError(f"Schedule {name!r} needs the key {error.args[0]!r}.") from None
    raise ValueError(
        f"Unknown schedule {name!r}; choose one of 'constant', 'multistep', 'step', 'plateau'."
    )


def _reject_extra(name: str, leftover: dict) -> None:
    if leftover:
        raise ValueError(f"Unknown keys for schedule {name!r}: {sorted(leftover)}.")
