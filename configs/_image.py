"""Defaults shared by the image-hashing configs: the reference code's VGG16 setting.

Not a config itself (the leading underscore keeps it out of ``trainers.common.available_configs``):
each ``configs/<dataset>.py`` starts from ``image_config(...)`` and states only what differs.
"""

from __future__ import annotations

import copy

_DEFAULTS = {
    "model_type": "image",
    "dataset": None,
    "protocol": None,
    "protocol_options": {},
    "follows": None,
    "backbone": "vgg16",
    "weights": "imagenet",
    "image_size": [224, 224],
    "resize": "stretch",
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
    "loss": {"pairing": "half"},
    "optimizer": {"name": "sgd", "learning_rate": 1e-4, "momentum": 0.9, "weight_decay": 5e-4},
    "schedule": {"name": "step", "period": 60, "factor": 0.1},
    "epochs": 100,
    "batch_size": 32,
    "feature_cache": True,
    "cache_dir": "~/.cache/tf_bihalf/features",
    "extract_batch_size": 64,
    "evaluation": {
        "top_k": None,
        "extra_top_k": [],  # Further mAP@k to report.
        "ties": "stable",
        "precision_at": [100, 500, 1000, 5000],
        "batch_size": 256,
    },
    "seed": 0,
    "strategy": "mirrored",
}


def image_config(*, evaluation: dict | None = None, **overrides) -> dict:
    """The shared defaults with top-level ``overrides`` and ``evaluation`` keys merged in."""
    unknown = set(overrides) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown image config keys: {sorted(unknown)}.")
    config = copy.deepcopy(_DEFAULTS)
    config.update(copy.deepcopy(overrides))
    config["evaluation"].update(evaluation or {})
    return config


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
        evaluation={**config["evaluation"], "precision_at": [10, 50], **(evaluation or {})},
    )
    return config
