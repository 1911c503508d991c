"""Video data: UCF-101 / HMDB-51 split-1 protocols from the owners' files, PyAV decoding with
limits and full-decode checks, and ``tf.data`` clip pipelines with the 3D-ResNet reference's
sampling (see ``protocols``, ``decode`` and ``pipeline``)."""

from tf_bihalf.data.video.decode import VideoError, VideoInfo, read_frames, scan_video
from tf_bihalf.data.video.pipeline import DecodeFailures, evaluation_clips, training_clips
from tf_bihalf.data.video.protocols import (
    VideoProtocol,
    VideoSplit,
    build_split,
    hmdb51_split1,
    ucf101_split1,
)

__all__ = [
    "DecodeFailures",
    "VideoError",
    "VideoInfo",
    "VideoProtocol",
    "VideoSplit",
    "build_split",
    "evaluation_clips",
    "hmdb51_split1",
    "read_frames",
    "scan_video",
    "training_clips",
    "ucf101_split1",
]
