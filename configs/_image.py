"""Defaults shared by the image-hashing configs: the reference code's VGG16 setting.

Not a config itself (the leading underscore keeps it out of the trainers' config list): each
``configs/<dataset>.py`` starts from ``image_config(name, ...)`` and states only what differs.
Keys beyond ``configs/_common.py``'s (read by ``tf_bihalf.tasks.image``): ``protocol_options``,
``backbone``, ``weights``, ``image_size`` ``[H, W]``, ``resize``, ``dropout``, ``loss.pairing``,
``feature_cache``, ``cache_dir``, ``extract_batch_size``.
"""

from __future__ import annotations

from configs._common import common_config

IMAGE_DEFAULTS = {
    "task": "image",
    # Options of the dataset's protocol (tf_bihalf.data.load_protocol keyword arguments).
    "protocol_options": {},
    "backbone": "vgg16",
    "weights": "imagenet",  # "imagenet", None or a local weights file.
    "image_size": [224, 224],
    "resize": "stretch",  # or "center_crop"
    "dropout": None,  # The backbone's default: 0.5 after fc6 and fc7 for VGG16.
    "bits": 64,
    "hash_layer": "bihalf",
    # Keyword arguments per hash layer; the one named by "hash_layer" is used.
    "hash_layer_options": {
        "bihalf": {"gamma": 6.0},
        "sign": {},
        "signreg": {"alpha": 1.0},
        "tanh": {},
        "relaxed": {},
        "median": {},
    },
    "loss": {"pairing": "half"},  # cosine similarity preservation: i with i + M/2
    "optimizer": {
        "name": "sgd",
        "learning_rate": 1e-4,
        "momentum": 0.9,
        "dampening": 0.0,
        "weight_decay": 5e-4,
    },
    "schedule": {"name": "step", "period": 60, "factor": 0.1},
    "epochs": 100,
    "batch_size": 32,
    # Speed only, the same numbers bit for bit: up to 12 steps per call (the largest divisor of
    # the epoch's steps), 1.8x the samples/s of one step per call for the head on cached
    # features (benchmarks/image_head_throughput.py). XLA stays off (configs/_common.py): it
    # adds 1.2x there but rounds differently and is not measured for end-to-end training.
    "steps_per_execution": 12,
    # Train on cached frozen features (the backbone is frozen, there is no augmentation).
    "feature_cache": True,
    "cache_dir": "~/.cache/tf_bihalf/features",  # None: RUN/feature_cache
    "extract_batch_size": 64,
    "evaluation": {
        "precision_at": [100, 500, 1000, 5000],
        "batch_size": 256,
    },
    "monitor": {"sample_size": 2000},
}


def image_config(config_name: str, **overrides) -> dict:
    """``configs/_common.py``'s keys, the image defaults above, then ``overrides``."""
    return common_config(config_name, IMAGE_DEFAULTS, **overrides)


def smoke_variant(config: dict, protocol_options: dict, evaluation: dict | None = None) -> dict:
    """Turns ``config`` into its tiny CI variant (no weights, 32 px, 2 epochs), in place."""
    config.update(
        weights=None,
        image_size=[32, 32],
        epochs=2,
        batch_size=8,
        cache_dir=None,
        extract_batch_size=16,
        protocol_options=protocol_options,
        evaluation={
            **config["evaluation"],
            "precision_at": [10, 50],
            "every_n_epochs": 1,
            **(evaluation or {}),
        },
        monitor={**config["monitor"], "sample_size": 64},
    )
    return config
