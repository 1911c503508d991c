"""Reading videos and JPEG-frame folders into RGB frames, with limits and full-decode checks.

Two on-disk forms of a video are read:

* a video file (``.avi``, ``.mp4``, ...), decoded with PyAV (FFmpeg);
* a frames folder: one directory per video holding its frames as JPEG files
  (``image_00001.jpg``, ... as the 3D-ResNet reference extracts them), read in name order.

Untrusted input is checked at the boundary: only regular files (a FIFO or ``/dev/zero`` is
refused, not read), a byte cap per file (``max_bytes``), a pixel cap per frame read from the
stream header before anything is decoded (``max_pixels``) and a frame cap (``max_frames``).
``scan_video`` decodes a video completely once and returns its frame count or the reason it
cannot be used (unreadable, no video stream, truncated: fewer frames decoded than the
container declares, with the stream data running up to the end of the file); the protocols use it to exclude such videos before they can reach a
batch. Every decoding function raises ``VideoError`` (a ``ValueError``) naming the file.

Frames are returned as ``uint8`` RGB arrays ``(T, H, W, 3)``, optionally scaled (bilinear, by
FFmpeg's scaler) so that the shorter side is ``short_side`` pixels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Iterator, Sequence

import numpy as np

DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_FRAMES = 100_000
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
# A container may declare a frame or two more than it decodes (B-frame delay, an empty last
# packet); more than this is a truncated file.
TRUNCATION_SLACK = 2
# A complete file ends with an index or trailer after its last packet; a cut one does not.
TRAILER_BYTES = 64


class VideoError(ValueError):
    """A video or frames folder that cannot be used; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a full decode of one video found: its frame count, or why it is unusable."""

    path: str
    frames: int
    width: int = 0
    height: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.frames > 0


def _check_regular_file(path: str, max_bytes: int) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise VideoError(f"{path}: file not found") from None
    except OSError as error:
        raise VideoError(f"{path}: cannot stat ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise VideoError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise VideoError(f"{path}: empty file")
    if info.st_size > max_bytes:
        raise VideoError(f"{path}: {info.st_size} bytes, over the limit max_bytes={max_bytes}")


def frame_files(directory: str) -> list[str]:
    """The frame images of a frames folder, in name order."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise VideoError(f"{directory}: cannot list frames ({error.strerror})") from None
    return [
        os.path.join(directory, name) for name in names if name.lower().endswith(FRAME_EXTENSIONS)
    ]


def _scaled_size(width: int, height: int, short_side) -> tuple[int, int]:
    """``short_side``: None (keep), an int (scale to it), or ``("max", n)`` (shrink only)."""
    if short_side is None:
        return width, height
    if isinstance(short_side, tuple):
        if min(width, height) <= short_side[1]:
            return width, height
        short_side = short_side[1]
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def iter_video_frames(
    path: str,
    stop: int | None = None,
    short_side: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Iterator[np.ndarray]:
    """Yields the RGB frames ``(H, W, 3)`` uint8 of a video file (the first ``stop`` only).

    Raises:
        VideoError: not a regular file, over a limit, no video stream, or undecodable.
    """
    import av  # Imported here: only video users need PyAV.

    _check_regular_file(path, max_bytes)
    try:
        container = av.open(path, mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"{path}: cannot open ({error})") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise VideoError(
                f"{path}: frames of {width}x{height} pixels, over the limit max_pixels={max_pixels}"
            )
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                if stop is not None and count >= stop:
                    return
                if count >= max_frames:
                    raise VideoError(f"{path}: more than max_frames={max_frames} frames")
                if frame.width * frame.height > max_pixels:
                    raise VideoError(f"{path}: a frame of {frame.width}x{frame.height} pixels")
                target_width, target_height = _scaled_size(frame.width, frame.height, short_side)
                yield frame.reformat(
                    width=target_width,
                    height=target_height,
                    format="rgb24",
                    interpolation="BILINEAR",
                ).to_ndarray()
                count += 1
        except (av.error.FFmpegError, OSError, ValueError, MemoryError) as error:
            if isinstance(error, VideoError):
                raise
            raise VideoError(f"{path}: decoding failed after {count} frames ({error})") from None


def _read_image(path: str, short_side: int | None, max_bytes: int, max_pixels: int) -> np.ndarray:
    from PIL import Image

    _check_regular_file(path, max_bytes)
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise VideoError(
                    f"{path}: {image.width}x{image.height} pixels, over max_pixels={max_pixels}"
                )
            image = image.convert("RGB")
            size = _scaled_size(image.width, image.height, short_side)
            if size != image.size:
                image = image.resize(size, Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except VideoError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise VideoError(f"{path}: cannot decode ({error})") from None


def read_frames(
    source: str,
    indices: Sequence[int],
    short_side: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_short_side: int | None = None,
) -> np.ndarray:
    """The frames ``indices`` (0-based, may repeat, any order) of a video file or frames
    folder as ``(len(indices), H, W, 3)`` uint8, scaled so that the shorter side is
    ``short_side`` (if given), or shrunk to ``max_short_side`` when it is longer.

    A video file is decoded from its start up to the last index needed (seeking in AVI files
    is not frame-accurate); a frames folder reads only the files needed.

    Raises:
        VideoError: the source is unusable or has fewer frames than an index needs.
    """
    indices = [int(i) for i in indices]
    if not indices or min(indices) < 0:
        raise VideoError(f"{source}: frame indices must be non-negative and not empty")
    wanted = sorted(set(indices))
    if short_side is None and max_short_side is not None:
        short_side = ("max", int(max_short_side))
    if os.path.isdir(source):
        files = frame_files(source)
        if wanted[-1] >= len(files):
            raise VideoError(f"{source}: frame {wanted[-1]} asked, the folder has {len(files)}")
        found = {i: _read_image(files[i], short_side, max_bytes, max_pixels) for i in wanted}
    else:
        found, position = {}, 0
        for position, frame in enumerate(
            iter_video_frames(source, wanted[-1] + 1, short_side, max_bytes, max_pixels)
        ):
            if position in wanted:
                found[position] = frame
        if len(found) != len(wanted):
            raise VideoError(
                f"{source}: frame {wanted[-1]} asked, only {position + 1 if found else 0} decoded"
            )
    shapes = {frame.shape for frame in found.values()}
    if len(shapes) != 1:
        raise VideoError(f"{source}: frames of different sizes {sorted(shapes)}")
    return np.stack([found[i] for i in indices])


def scan_video(
    source: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> VideoInfo:
    """Decodes a video completely (a frames folder: lists it and decodes its first and last
    frame) and returns its frame count and size, or the reason it is unusable. Never raises
    for a bad file."""
    try:
        if os.path.isdir(source):
            files = frame_files(source)
            if not files:
                raise VideoError(f"{source}: no frame images in the folder")
            first = _read_image(files[0], None, max_bytes, max_pixels)
            _read_image(files[-1], None, max_bytes, max_pixels)
            return VideoInfo(source, len(files), first.shape[1], first.shape[0])
        import av

        _check_regular_file(source, max_bytes)
        count, width, height, declared, data_end = 0, 0, 0, 0, 0
        try:
            with av.open(source, mode="r") as container:
                if not container.streams.video:
                    raise VideoError(f"{source}: no video stream")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                declared = int(stream.frames or 0)
                width, height = stream.codec_context.width, stream.codec_context.height
                if width * height > max_pixels:
                    raise VideoError(
                        f"{source}: frames of {width}x{height} pixels, over the limit "
                        f"max_pixels={max_pixels}"
                    )
                for packet in container.demux(stream):
                    if packet.pos is not None and packet.pos >= 0 and packet.size:
                        data_end = max(data_end, packet.pos + packet.size)
                    for frame in packet.decode():
                        count += 1
                        if count > max_frames:
                            raise VideoError(f"{source}: more than max_frames={max_frames} frames")
                        width, height = frame.width, frame.height
        except (av.error.FFmpegError, OSError, ValueError, MemoryError) as error:
            if isinstance(error, VideoError):
                raise
            raise VideoError(f"{source}: decoding failed after {count} frames ({error})") from None
        if count == 0:
            raise VideoError(f"{source}: no decodable frame")
        # Fewer frames than the header declares is truncation only when the stream data runs
        # up to the end of the file (no index or trailer after it): some complete files
        # declare more frames than they hold (opencv's tree.avi: 444 declared, 68 stored,
        # followed by its index).
        trailing = os.path.getsize(source) - data_end
        if declared and count + TRUNCATION_SLACK < declared and trailing < TRAILER_BYTES:
            raise VideoError(f"{source}: truncated: {count} of {declared} declared frames decode")
        return VideoInfo(source, count, width, height)
    except VideoError as error:
        return VideoInfo(source, 0, error=str(error))


def clip_count(frames: int, clip_frames: int = 16) -> int:
    """Non-overlapping clips of a video: ``ceil(frames / clip_frames)`` (the last one is
    loop-padded)."""
    return math.ceil(frames / clip_frames) if frames > 0 else 0
