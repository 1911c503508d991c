"""The distribution strategy trainers run under (``--strategy``).

- ``"auto"``: ``MirroredStrategy`` over the visible GPUs when there are more than one, else
  ``"default"`` (TensorFlow places the ops on the one GPU, or the CPU). On one device the
  default strategy computes exactly what ``OneDeviceStrategy`` computes, without its distributed
  iterator and per-step ``strategy.run``: the autoencoder trains about 1.4x faster on the
  2-core CPU (docs/BENCHMARKS.md, "Training throughput").
- ``"one_device"``: ``OneDeviceStrategy`` on the first GPU, else the CPU.
- ``"mirrored"``: ``MirroredStrategy`` over every visible GPU, or over the CPU when there is none
  (one replica).
- ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` over the worker processes of ``TF_CONFIG``
  (NCCL collectives on GPUs, RING on CPUs, a collective timeout always set; see
  ``tf_bihalf.training.distributed`` and docs/distributed.md). The loop trains with its own exact
  step loop there, not ``model.fit``.
- ``"default"``: TensorFlow's default (no-op) strategy, for comparisons.

Batch sizes in the configs are GLOBAL: each of R replicas gets its share of ``batch_size`` rows
per step, and the Bi-half layer ranks over the gathered global batch
(``BiHalf(cross_replica=True)``), so R replicas train like one device with the full batch.

Example:

>>> strategy = get_strategy("auto")
>>> strategy.num_replicas_in_sync >= 1
True
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging

from tf_bihalf.errors import InputError
from tf_bihalf.training import distributed

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "default")


def get_strategy(name: str = "mirrored", timeout_s: float | None = None) -> tf.distribute.Strategy:
    """The strategy called ``name`` (module docstring).

    Args:
        name: one of ``STRATEGIES``.
        timeout_s: ``"multi_worker"`` only: the collective timeout in seconds (default
            ``$TF_BIHALF_COLLECTIVE_TIMEOUT_S``, else 300).

    Raises:
        InputError: an unknown name; ``"multi_worker"`` without a valid ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise InputError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    if name == "multi_worker":
        return distributed.multi_worker_strategy(timeout_s)
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "default" or (name == "auto" and len(gpus) <= 1):
        logging.info("TensorFlow's default strategy (one device: %s).", gpus[0] if gpus else "CPU")
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = gpus[0] if gpus else "/cpu:0"
        logging.info("OneDeviceStrategy on %s.", device)
        return tf.distribute.OneDeviceStrategy(device)
    devices = gpus or ["/cpu:0"]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    logging.info("MirroredStrategy over %s (%d replicas).", devices, len(devices))
    return strategy
