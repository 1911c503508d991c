"""The distribution strategy trainers run under.

``get_strategy("mirrored")`` returns a ``tf.distribute.MirroredStrategy`` over every visible GPU,
or over the CPU when there is none (one replica). Batch sizes in the configs are GLOBAL: each of
R replicas gets ``batch_size / R`` rows per step, and the Bi-half layer ranks over the gathered
global batch (``BiHalf(cross_replica=True)``), so R replicas train like one device with the full
batch. ``"default"`` returns TensorFlow's default (no-op) strategy, for comparisons.

Example:

>>> strategy = get_strategy()
>>> strategy.num_replicas_in_sync >= 1
True
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging

STRATEGIES = ("mirrored", "default")


def get_strategy(name: str = "mirrored") -> tf.distribute.Strategy:
    """``MirroredStrategy`` over the visible GPUs (the CPU when none), or the default strategy."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")
    if name == "default":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [device.name for device in gpus] or ["/cpu:0"]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    logging.info("MirroredStrategy over %s (%d replicas).", devices, len(devices))
    return strategy
