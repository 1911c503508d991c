"""Defaults shared by the video-hashing configs: the reference's 3D-ResNet setting.

Not a config itself. Keys beyond ``configs/_common.py``'s (read by ``tf_bihalf.tasks.video``):
``backbone`` (``resnet3d_18/34/50/101``, ``i3d``), ``weights`` (a Kinetics checkpoint file,
``"kinetics400"`` for I3D, None for random; ``"required"`` makes the trainer ask for one),
``clip_frames``, ``clip_size``, ``feature_cache``, ``cache_dir``, ``extract_batch_size``,
``query_fraction`` (clip-level protocols: the share of each class's clips that are queries),
``loss.pairing``.
"""

from __future__ import annotations

from configs._common import common_config

VIDEO_DEFAULTS = {
    "task": "video",
    "backbone": "resnet3d_34",
    "weights": "required",
    "clip_frames": 16,
    "clip_size": 112,
    "bits": 64,
    "hash_layer": "bihalf",
    "hash_layer_options": {
        "bihalf": {"gamma": 6.0},
        "sign": {},
        "signreg": {"alpha": 1.0},
        "tanh": {},
        "relaxed": {},
        "median": {},
    },
    "loss": {"pairing": "half"},
    # The reference's video settings (docs/paper.md, "Settings").
    "optimizer": {
        "name": "sgd",
        "learning_rate": 0.1,
        "momentum": 0.9,
        "dampening": 0.9,
        "weight_decay": 1e-3,
    },
    "schedule": {"name": "plateau", "monitor": "loss", "factor": 0.1, "patience": 10},
    "epochs": 200,
    "batch_size": 128,
    # Speed only, the same numbers bit for bit (checked on configs/real_videos.py): up to 12
    # steps per call, as the image configs (1.8x for a head on cached features there,
    # docs/BENCHMARKS.md "Image hashing"); not timed on a video dataset of many steps.
    "steps_per_execution": 12,
    "feature_cache": True,
    "cache_dir": "~/.cache/tf_bihalf/video_features",
    "extract_batch_size": 8,
    "query_fraction": 0.25,
    "evaluation": {"top_k": 100, "precision_at": [10, 50, 100], "batch_size": 256},
    "monitor": {"sample_size": 2000},
}


def video_config(config_name: str, **overrides) -> dict:
    """``configs/_common.py``'s keys, the video defaults above, then ``overrides``."""
    return common_config(config_name, VIDEO_DEFAULTS, **overrides)


def smoke_variant(config: dict) -> dict:
    """The tiny CI variant: a 3D ResNet-10 with random weights on 8-frame 32 px clips."""
    config.update(
        backbone="resnet3d_10",
        weights=None,
        clip_frames=8,
        clip_size=32,
        epochs=2,
        batch_size=8,
        cache_dir=None,
        extract_batch_size=8,
        evaluation={
            **config["evaluation"],
            "top_k": 20,
            "precision_at": [5, 10],
            "every_n_epochs": 1,
        },
        monitor={**config["monitor"], "sample_size": 64},
    )
    return config
