"""HMDB-51 split 1: a Kinetics-pretrained 3D ResNet-34 (frozen) + Bi-half, clip-level mAP@100.

Command (the owners' videos and split files in a manual directory, see docs/video.md)::

    python -m trainers.video --dataset=hmdb51 --bits=64 --data_dir=/data/hmdb51 \
        --weights=/models/resnet-34-kinetics.pth

Follows the reference code's video settings (docs/paper.md, "Settings"): 3D ResNet-34 pretrained
on Kinetics (Hara et al.'s checkpoint: no package registry ships it, so ``--weights`` names the
file; ``--backbone=i3d --weights=kinetics400`` uses the Kinetics I3D this project can fetch),
frozen, pooled 512-d feature, hash head Linear(512, K) with PyTorch's init, gamma numerator 6,
half-batch cosine loss, SGD lr 0.1, momentum 0.9, dampening 0.9, coupled L2 1e-3, batch 128,
reduce on plateau (patience 10, x0.1), 200 epochs; non-overlapping 16-frame clips at 112x112,
centre crop; query = the clips of the split-1 test videos (id 2), database = those of its
training videos (id 1). Difference: by
default the head trains on the cached features of every database clip (``feature_cache``); the
reference samples one random, augmented clip per video and epoch, which ``--nofeature_cache``
does (end to end through the frozen backbone: a GPU job).

Paper mAP@100 (%), Bi-half, 16 / 32 / 64 bits: 36.68 / 41.48 / 43.03 with a ResNet-101 backbone
(docs/paper.md, "Published numbers"). Not measured by this project: HMDB-51 and the Kinetics 3D
ResNet weights cannot be downloaded on its machines.
"""

from __future__ import annotations

from configs._video import smoke_variant, video_config


def get_config(smoke: bool = False) -> dict:
    config = video_config(
        "hmdb51", dataset="hmdb51", follows="reference code (its HMDB-51 settings)"
    )
    if smoke:
        smoke_variant(config)
    return config
