"""Dense layers initialised like PyTorch's ``nn.Linear``, to match the reference code."""

from __future__ import annotations

import math

import keras


def torch_linear(
    units: int, fan_in: int, activation=None, name: str | None = None
) -> keras.layers.Dense:
    """``Dense(units)`` initialised like ``torch.nn.Linear(fan_in, units)``.

    Weight and bias are drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's
    ``kaiming_uniform_(a=sqrt(5))`` reduces to that bound for the weight).

    >>> torch_linear(8, fan_in=4096).kernel_initializer.maxval
    0.015625
    """
    limit = 1.0 / math.sqrt(fan_in)
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.RandomUniform(-limit, limit),
        bias_initializer=keras.initializers.RandomUniform(-limit, limit),
        name=name,
    )
