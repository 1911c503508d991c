"""``tf.data`` clip pipelines for a ``VideoSplit``: the 3D-ResNet reference's sampling.

Evaluation (``evaluation_clips``), for query and database: every video is cut into
**non-overlapping 16-frame clips** (frames ``[0, 16)``, ``[16, 32)``, ...; the last, shorter
window is loop-padded by repeating its frames, the reference's ``LoopPadding``), frames scaled
so that the shorter side is ``clip_size`` and **centre-cropped** to ``clip_size x clip_size``
(``Scale(112)`` + ``CenterCrop(112)``). A video of ``n`` frames gives ``ceil(n / 16)`` clips,
each labelled with its video's label. Each video is decoded once, from start to end.

Training (``training_clips``): one clip per video per epoch: a **temporal random crop** of 16
consecutive frames (start uniform in ``[0, max(0, n - 16 - 1)]``, loop-padded when the video is
shorter; the reference's ``TemporalRandomCrop``), a **multi-scale corner crop** (one of 5 scales
``1, 2^-1/4, 2^-1/2, 2^-3/4, 1/2`` of the shorter side, at one of 5 positions: centre and
the four corners; ``MultiScaleCornerCrop``) resized to ``clip_size x clip_size``, and a
**horizontal flip** with probability 1/2; one draw per clip, shared by its frames. Draws come
from a seeded stream (``tf.data.Dataset.random(seed)``), so a run is reproducible. Frames are
decoded with the shorter side capped at ``train_short_side`` (default 256) to bound memory.

Decoding runs in Python (PyAV for video files, Pillow for frames folders) inside ``tf.data``
(``interleave`` of per-video generators for evaluation, a ``py_function`` map for training),
``parallel`` videos at a time, with ``prefetch`` bounded: memory is a few clips per worker.
A video that fails to decode although its scan passed (it changed on disk) is logged and its
clips are dropped (``DecodeFailures`` counts them); labels never shift, since every clip
carries its own.

Output elements: ``(clip, label)`` with ``clip`` float32 ``(16, S, S, 3)`` RGB in ``[0, 255]``
(the input every ``tf_bihalf`` video model takes), ``label`` int32; ``with_ids=True`` adds the
video index and the clip's first frame: ``(clip, label, video, start)``.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import tensorflow as tf
from absl import logging

from tf_bihalf.data.video import decode
from tf_bihalf.data.video.protocols import CLIP_FRAMES, VideoSplit

SCALE_STEP = 2**-0.25
NUM_SCALES = 5
CROP_POSITIONS = ("c", "tl", "tr", "bl", "br")


class DecodeFailures:
    """A thread-safe record of sources that failed to decode inside a pipeline."""

    def __init__(self):
        self._lock = threading.Lock()
        self.failures: list[tuple[str, str]] = []

    def add(self, source: str, reason: str) -> None:
        with self._lock:
            self.failures.append((source, reason))
        logging.warning("Dropped the clips of %s: %s", source, reason)

    def __len__(self) -> int:
        with self._lock:
            return len(self.failures)


# --- sampling (pure numpy) ------------------------------------------------------------------


def loop_pad(indices: list[int], length: int) -> list[int]:
    """Repeats ``indices`` cyclically up to ``length`` (the reference's ``LoopPadding``)."""
    if not indices:
        raise ValueError("Cannot loop-pad an empty list of frames.")
    out = list(indices)
    while len(out) < length:
        out.append(out[len(out) - len(indices)])
    return out


def evaluation_windows(frames: int, clip_frames: int = CLIP_FRAMES) -> list[list[int]]:
    """0-based frame indices of the non-overlapping clips of a video of ``frames`` frames."""
    return [
        loop_pad(list(range(start, min(start + clip_frames, frames))), clip_frames)
        for start in range(0, frames, clip_frames)
    ]


def temporal_random_indices(
    frames: int, rng: np.random.Generator, clip_frames: int = CLIP_FRAMES
) -> list[int]:
    """A random window of ``clip_frames`` consecutive frames (``TemporalRandomCrop``)."""
    last_start = max(0, frames - clip_frames - 1)
    start = int(rng.integers(0, last_start + 1))
    return loop_pad(list(range(start, min(start + clip_frames, frames))), clip_frames)


def corner_crop_box(
    height: int, width: int, scale: float, position: str
) -> tuple[int, int, int, int]:
    """``(top, left, side, side)`` of a square crop of ``scale * min(height, width)``."""
    side = int(min(height, width) * scale)
    if position == "c":
        return (height - side) // 2, (width - side) // 2, side, side
    top = 0 if position in ("tl", "tr") else height - side
    left = 0 if position in ("tl", "bl") else width - side
    return top, left, side, side


def random_crop_parameters(rng: np.random.Generator) -> tuple[float, str, bool]:
    """One draw of (scale, corner position, horizontal flip) for a training clip."""
    scale = SCALE_STEP ** int(rng.integers(0, NUM_SCALES))
    position = CROP_POSITIONS[int(rng.integers(0, len(CROP_POSITIONS)))]
    return scale, position, bool(rng.integers(0, 2))


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre ``size x size`` crop of ``(T, H, W, 3)`` frames (H, W >= size)."""
    height, width = frames.shape[1:3]
    top, left = (height - size) // 2, (width - size) // 2
    return frames[:, top : top + size, left : left + size]


def _resize_clip(clip: tf.Tensor, size: int) -> tf.Tensor:
    resized = tf.image.resize(tf.cast(clip, tf.float32), (size, size), method="bilinear")
    return tf.clip_by_value(resized, 0.0, 255.0)


# --- datasets -------------------------------------------------------------------------------


def evaluation_clips(
    split: VideoSplit,
    clip_size: int = 112,
    clip_frames: int = CLIP_FRAMES,
    parallel: int = 4,
    with_ids: bool = False,
    failures: DecodeFailures | None = None,
) -> tf.data.Dataset:
    """Every non-overlapping clip of every video, centre-cropped (see the module doc), in
    video order then time order."""
    _check_split(split, clip_size, clip_frames)
    failures = failures if failures is not None else DecodeFailures()
    sources, labels, frames = split.sources, split.labels, split.frames

    def clips_of(index):
        index = int(index)
        source, label = sources[index], int(labels[index])
        windows = evaluation_windows(int(frames[index]), clip_frames)
        needed = max(max(window) for window in windows) + 1
        try:
            decoded = decode.read_frames(source, list(range(needed)), short_side=clip_size)
        except decode.VideoError as error:
            failures.add(source, str(error))
            return
        decoded = center_crop(decoded, clip_size)
        for window in windows:
            yield decoded[window], np.int32(label), np.int32(index), np.int32(window[0])

    signature = (
        tf.TensorSpec((clip_frames, clip_size, clip_size, 3), tf.uint8),
        tf.TensorSpec((), tf.int32),
        tf.TensorSpec((), tf.int32),
        tf.TensorSpec((), tf.int32),
    )
    most_clips = max(1, int(split.clip_counts(clip_frames).max(initial=1)))
    dataset = tf.data.Dataset.range(len(split)).interleave(
        lambda index: tf.data.Dataset.from_generator(
            clips_of, args=(index,), output_signature=signature
        ),
        cycle_length=max(1, parallel),
        block_length=most_clips,  # a whole video per turn: clips stay in video order
        num_parallel_calls=max(1, parallel),
        deterministic=True,
    )
    return dataset.map(
        lambda clip, label, video, start: _finish(clip, label, video, start, with_ids),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def training_clips(
    split: VideoSplit,
    seed: int,
    clip_size: int = 112,
    clip_frames: int = CLIP_FRAMES,
    parallel: int = 4,
    shuffle: bool = True,
    train_short_side: int = 256,
    with_ids: bool = False,
    failures: DecodeFailures | None = None,
) -> tf.data.Dataset:
    """One randomly sampled, augmented clip per video (see the module doc); repeat it for
    more epochs (each pass draws new clips)."""
    _check_split(split, clip_size, clip_frames)
    failures = failures if failures is not None else DecodeFailures()
    sources, labels, frames = split.sources, split.labels, split.frames

    def sample(index, draw):
        index = int(index)
        rng = np.random.default_rng([int(draw) & 0xFFFFFFFF, index])
        indices = temporal_random_indices(int(frames[index]), rng, clip_frames)
        scale, position, flip = random_crop_parameters(rng)
        try:
            decoded = decode.read_frames(sources[index], indices, max_short_side=train_short_side)
        except decode.VideoError as error:
            failures.add(sources[index], str(error))
            return np.zeros((clip_frames, 1, 1, 3), np.uint8), False, indices[0]
        top, left, height, width = corner_crop_box(*decoded.shape[1:3], scale, position)
        crop = decoded[:, top : top + height, left : left + width]
        if flip:
            crop = crop[:, :, ::-1]
        return np.ascontiguousarray(crop), True, indices[0]

    def decode_one(index, draw):
        clip, ok, start = tf.py_function(sample, [index, draw], [tf.uint8, tf.bool, tf.int64])
        clip.set_shape((clip_frames, None, None, 3))
        ok.set_shape(())
        label = tf.gather(tf.constant(labels, tf.int32), index)
        return clip, ok, label, tf.cast(index, tf.int32), tf.cast(start, tf.int32)

    indices = tf.data.Dataset.range(len(split))
    if shuffle:
        indices = indices.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed)
    dataset = tf.data.Dataset.zip((indices, draws)).map(
        decode_one, num_parallel_calls=max(1, parallel), deterministic=True
    )
    dataset = dataset.filter(lambda clip, ok, label, video, start: ok)
    return dataset.map(
        lambda clip, ok, label, video, start: _finish(
            _resize_clip(clip, clip_size), label, video, start, with_ids
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _finish(clip, label, video, start, with_ids: bool):
    clip = tf.cast(clip, tf.float32)
    if with_ids:
        return clip, label, video, start
    return clip, label


def _check_split(split: VideoSplit, clip_size: int, clip_frames: int) -> None:
    if len(split) == 0:
        raise ValueError("The video split is empty: no clip to read.")
    if not isinstance(clip_size, int) or clip_size < 8:
        raise ValueError(f"clip_size must be an integer >= 8; got {clip_size!r}.")
    if not isinstance(clip_frames, int) or clip_frames < 1:
        raise ValueError(f"clip_frames must be a positive integer; got {clip_frames!r}.")


def total_clips(split: VideoSplit, clip_frames: int = CLIP_FRAMES) -> int:
    """Clips ``evaluation_clips`` yields when every video decodes."""
    return int(sum(math.ceil(int(n) / clip_frames) for n in split.frames))
