r"""Train a video hasher (frozen 3D ResNet or I3D + hash head + Bi-half) on clips.

    python -m trainers.video --dataset=ucf101 --bits=64 --data_dir=/data/ucf101 --weights=resnet-34-kinetics.pth
    python -m trainers.video --dataset=hmdb51 --bits=64 --data_dir=/data/hmdb51 --backbone=i3d --weights=kinetics400
    python -m trainers.video --dataset=folder:/data/my_videos --bits=32 --backbone=i3d --weights=kinetics400
    python -m trainers.video --config=real_videos --bits=64      # offline real check (I3D, real clips)

The config is ``configs/<dataset>.py`` (``--config`` names another; users' ``folder:DIR``
collections use ``configs/real_videos.py``'s settings). The task is ``tf_bihalf.tasks.video``
(clip features of the frozen backbone cached, the head trained on them, clip-level mAP@100);
the loop, the run directory and the common flags: docs/training.md. ``RUN/encoder.keras`` is the
whole model: raw RGB clips (T, H, W, 3) in [0, 255] -> ±1 codes.
"""

from __future__ import annotations

import sys

from absl import flags

from trainers import common

DEFAULT_CONFIG = None
CUSTOM_DATASET_CONFIG = "real_videos"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """The common flags plus this trainer's (called from ``__main__`` only)."""
    common.define_common_flags(DEFAULT_CONFIG, flag_values)
    common.define_backbone_flags(
        "resnet3d_18 | resnet3d_34 | resnet3d_50 | resnet3d_101 | i3d",
        "a Kinetics checkpoint file | kinetics400 (i3d)",
        flag_values,
    )
    define = {"flag_values": flag_values}
    flags.DEFINE_integer("clip_frames", None, "Frames per clip.", **define)
    flags.DEFINE_integer("clip_size", None, "Clip height and width in pixels.", **define)


def task_overrides(values: flags.FlagValues) -> dict:
    return {
        **common.backbone_overrides(values),
        "clip_frames": values.clip_frames,
        "clip_size": values.clip_size,
    }


main = common.main_for(sys.modules[__name__])

if __name__ == "__main__":
    define_flags()
    common.run(main)
