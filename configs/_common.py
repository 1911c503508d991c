"""Keys every config has, with their meaning; each config states only what differs.

Not a config itself (the leading underscore keeps it out of the trainers' config list). The one
training loop (``tf_bihalf.training.loop``) reads exactly these keys; a task reads its own on top
(documented in ``configs/_image.py`` and ``configs/autoencoder.py``).

- ``task``: which trainer / ``tf_bihalf.tasks`` task runs the config (``"autoencoder"``,
  ``"image"``, ``"video"``).
- ``config_name``: the config module's name (set by ``common_config``).
- ``dataset``, ``protocol`` (None where a dataset has one protocol), ``data_dir`` (None: the
  dataset's default location), ``follows``: "paper" or "reference code" and how (docs/paper.md).
- ``bits``: code length K. ``hash_layer``: ``bihalf``, ``sign``, ``signreg``, ``tanh``,
  ``relaxed`` or ``median``. ``hash_layer_options``: each layer's keyword arguments; the trainer
  replaces this by ``hash_layer_kwargs``, the chosen layer's, in the resolved config.
- ``optimizer``: ``{"name": "sgd" | "adam", "learning_rate", "weight_decay" (coupled L2, as
  PyTorch), "momentum", "dampening"}``. ``schedule``: a ``tf_bihalf.training.schedules`` dict
  (``multistep``, ``step``, ``plateau``, ``constant``). ``epochs``, ``batch_size`` (global).
- ``seed``: the seed of the split, the initialisation and the data order.
- ``strategy``: ``"auto"`` (the default: mirrored over several GPUs, else TensorFlow's default
  strategy on the one device; on one device ``OneDeviceStrategy`` gives the same numbers about
  1.4x slower, and a one-replica ``MirroredStrategy`` slower still, docs/BENCHMARKS.md),
  ``"one_device"``, ``"mirrored"`` (every visible GPU, else the CPU), ``"multi_worker"`` (the
  workers of ``TF_CONFIG``; docs/distributed.md) or ``"default"``.
- ``jit_compile``: ``True``, ``False`` or ``"auto"`` (XLA on a single replica).
  ``steps_per_execution``: at most this many steps per call (the largest divisor of the epoch).
- A value that differs by protocol is written ``{"by_protocol": {"I": ..., "II": ...}}``; the
  trainer keeps the entry of the run's protocol (this is allowed for ``evaluation.top_k`` and
  ``protocol_options``).
- ``evaluation``: ``top_k`` (k of the protocol's mAP@k, None = mAP@All), ``extra_top_k`` (more mAP@k to report), ``ties``
  (``"stable"``: equal distances in database order; ``"average"``), ``precision_at`` (N of the
  precision@N curve), ``radius`` (precision within this Hamming radius), ``every_n_epochs``
  (mAP to TensorBoard every N epochs, monitoring only, 0 = off), ``batch_size`` (encoding),
  ``validation_fraction`` (hold this share of the TRAINING set out of training as validation
  queries against the rest; 0 = none) and ``select_epoch`` (``"final"``, the paper's and the
  default, or ``"best_validation"``: the epoch with the best validation mAP, evaluated every
  ``every_n_epochs``; the query set never picks an epoch).
- ``monitor``: the bit monitor's ``sample_size`` (training inputs), ``histogram_bits`` (bits
  with their own U histogram) and ``every_n_epochs``.
"""

from __future__ import annotations

import copy

COMMON = {
    "task": None,
    "config_name": None,
    "dataset": None,
    "protocol": None,
    "data_dir": None,
    "follows": None,
    "bits": 32,
    "hash_layer": "bihalf",
    "hash_layer_options": {},
    "optimizer": {},
    "schedule": {"name": "constant"},
    "epochs": 1,
    "batch_size": 32,
    "seed": 0,
    "strategy": "auto",
    "jit_compile": False,
    "steps_per_execution": 1,
    "evaluation": {
        "top_k": None,
        "extra_top_k": [],
        "ties": "stable",
        "precision_at": [1, 10, 50, 100, 200, 500, 1000, 2000, 5000, 10000],
        "radius": 2,
        "every_n_epochs": 10,
        "batch_size": 256,
        "validation_fraction": 0.0,
        "select_epoch": "final",
    },
    "monitor": {"sample_size": 2000, "histogram_bits": 8, "every_n_epochs": 1},
}


def common_config(config_name: str, task_defaults: dict, **overrides) -> dict:
    """``COMMON``, then the task's defaults, then ``overrides``; nested dicts are merged one
    level deep (``evaluation={"top_k": 1000}`` changes only ``top_k``).

    Raises:
        ValueError: an override names a key that neither ``COMMON`` nor the task defines.
    """
    config = copy.deepcopy(COMMON)
    for layer in (task_defaults, overrides):
        unknown = set(layer) - set(config) if layer is overrides else set()
        if unknown:
            raise ValueError(f"configs/{config_name}.py: unknown config keys {sorted(unknown)}.")
        for key, value in copy.deepcopy(layer).items():
            if key in ("evaluation", "monitor") and isinstance(value, dict):
                config[key].update(value)
            else:
                config[key] = value
    config["config_name"] = config_name
    return config
