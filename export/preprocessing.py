"""Image decoding shared by the exported ``image_bytes`` signature and the export tools.

An encoded image (JPEG, PNG, BMP, WebP or the first frame of a GIF) becomes the encoder's raw input:
float32 ``(H, W, 3)`` RGB in [0, 255] at the model's ``image_size``, exactly as the training and
evaluation pipeline (``tf_bihalf.data.image_pipeline``) makes it: ``tf.io.decode_image(channels=3,
expand_animations=False)`` (grayscale replicated to RGB, alpha dropped), then that module's
``resize_images`` (``"stretch"``: bilinear with antialias straight to ``image_size``;
``"center_crop"``: shorter side to size, then the centre crop). An image that already has the
model's size passes through unchanged. Backbone normalisation is inside the encoder model.

Because the same functions build the SavedModel's ``image_bytes`` signature and decode images
for ``export.encode``, TFLite calibration and the benchmarks, every path gives the same pixels.

Image files are found and read as training finds and reads them (``tf_bihalf.data.image_files``:
one extension list, JPEG/PNG/BMP/GIF; regular files only, with a size cap), and every decode is
preceded by a pixel cap read from the header (``check_pixel_limit``).

Example:

>>> png = tf.io.encode_png(tf.zeros([4, 6, 3], tf.uint8))
>>> decode_image(png, (2, 3)).shape
TensorShape([2, 3, 3])
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from export.validation import error_reason
from tf_bihalf.data.image_files import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageFileError,
    is_image_file,
    read_image_file,
)
from tf_bihalf.data.image_pipeline import RESIZE_MODES, resize_images

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageFileError",
    "check_pixel_limit",
    "decode_image",
    "decode_images",
    "image_dimensions",
    "list_images",
    "load_image_arrays",
    "read_image_file",
    "short_reason",
]


def short_reason(error: Exception) -> str:
    """``"<ErrorType>: <the informative line of the message>"`` for a file that was skipped."""
    if isinstance(error, ImageFileError):
        return f"{type(error).__name__}: {error.detail}"
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error_reason(error)}"


_HEADER_BYTES = 32


def _field(header: tf.Tensor, offset: int, size: int, big_endian: bool) -> tf.Tensor:
    """The unsigned integer of ``size`` bytes at ``offset`` of a uint8 header, as int64."""
    values = tf.cast(header[offset : offset + size], tf.int64)
    weights = [256**index for index in range(size)]
    if big_endian:
        weights.reverse()
    return tf.reduce_sum(values * tf.constant(weights, tf.int64))


def _starts_with(header: tf.Tensor, offset: int, magic: bytes) -> tf.Tensor:
    expected = tf.constant(list(magic), tf.uint8)
    return tf.reduce_all(tf.equal(header[offset : offset + len(magic)], expected))


def image_dimensions(image_bytes: tf.Tensor) -> tf.Tensor:
    """``[width, height]`` (int64) declared by an encoded image's header, read without decoding.

    PNG (IHDR), GIF (logical screen), BMP (info header; a negative, top-down height counts by
    its size), WebP (``VP8 ``, ``VP8L`` and ``VP8X`` chunks) are read from the first 32 bytes;
    JPEG with ``tf.io.extract_jpeg_shape`` (the SOF marker, no pixel decoded). Anything else
    gives ``[0, 0]``: ``tf.io.decode_image`` refuses it on its own.
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    # The first 32 bytes, zero-padded, as uint8 (substr clips at the end of a shorter string).
    head = tf.strings.substr(image_bytes, 0, _HEADER_BYTES)
    head = tf.strings.substr(tf.strings.join([head, "\0" * _HEADER_BYTES]), 0, _HEADER_BYTES)
    header = tf.io.decode_raw(head, tf.uint8)
    header = tf.ensure_shape(header, [_HEADER_BYTES])

    def webp():
        vp8 = tf.stack(
            [
                tf.bitwise.bitwise_and(_field(header, 26, 2, False), 0x3FFF),
                tf.bitwise.bitwise_and(_field(header, 28, 2, False), 0x3FFF),
            ]
        )
        bits = _field(header, 21, 4, False)
        vp8l = tf.stack(
            [
                tf.bitwise.bitwise_and(bits, 0x3FFF) + 1,
                tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1,
            ]
        )
        vp8x = tf.stack([_field(header, 24, 3, False) + 1, _field(header, 27, 3, False) + 1])
        return tf.where(
            _starts_with(header, 12, b"VP8X"),
            vp8x,
            tf.where(_starts_with(header, 12, b"VP8L"), vp8l, vp8),
        )

    def bmp():
        height = _field(header, 22, 4, False)
        height = tf.where(height >= 2**31, 2**32 - height, height)  # int32, negative = top-down
        width = _field(header, 18, 4, False)
        width = tf.where(width >= 2**31, 2**32 - width, width)
        return tf.stack([width, height])

    def jpeg():
        shape = tf.io.extract_jpeg_shape(image_bytes, output_type=tf.int32)
        return tf.cast(tf.stack([shape[1], shape[0]]), tf.int64)

    png = tf.stack([_field(header, 16, 4, True), _field(header, 20, 4, True)])
    gif = tf.stack([_field(header, 6, 2, False), _field(header, 8, 2, False)])
    is_webp = tf.logical_and(_starts_with(header, 0, b"RIFF"), _starts_with(header, 8, b"WEBP"))
    dimensions = tf.where(
        _starts_with(header, 0, b"\x89PNG\r\n\x1a\n"),
        png,
        tf.where(
            _starts_with(header, 0, b"GIF8"),
            gif,
            tf.where(
                _starts_with(header, 0, b"BM"),
                bmp(),
                tf.where(is_webp, webp(), tf.zeros([2], tf.int64)),
            ),
        ),
    )
    return tf.cond(_starts_with(header, 0, b"\xff\xd8\xff"), jpeg, lambda: dimensions)


def check_pixel_limit(image_bytes: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """``image_bytes`` unchanged, after checking in the graph that its header declares at most
    ``max_pixels`` pixels; raises ``InvalidArgumentError`` ("... more than the limit
    max_pixels=N") before anything is decoded otherwise."""
    max_pixels = int(max_pixels)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer; got {max_pixels}.")
    dimensions = image_dimensions(image_bytes)
    pixels = dimensions[0] * dimensions[1]
    message = tf.strings.format(
        "image_bytes: the image declares {}x{} = {} pixels, more than the limit "
        "max_pixels={}; resize it before sending it",
        (dimensions[0], dimensions[1], pixels, max_pixels),
    )
    # Each side is checked too: with both sides within the limit the product cannot overflow.
    within = tf.reduce_all(
        tf.stack([dimensions[0] <= max_pixels, dimensions[1] <= max_pixels, pixels <= max_pixels])
    )
    check = tf.debugging.Assert(within, [message], summarize=1)
    with tf.control_dependencies([check]):
        return tf.identity(image_bytes)


def decode_image(
    image_bytes: tf.Tensor,
    image_size,
    resize: str = "stretch",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tf.Tensor:
    """One encoded image (scalar string) -> float32 ``(H, W, 3)`` RGB in [0, 255].

    An image whose header declares more than ``max_pixels`` pixels is refused before it is
    decoded (``check_pixel_limit``): a 380 KB PNG may declare 20000 x 20000 pixels, 4.8 GB as
    float32.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}.")
    height, width = (int(size) for size in image_size)
    image_bytes = check_pixel_limit(image_bytes, max_pixels)
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    image = resize_images(image, (height, width), resize)
    return tf.ensure_shape(image, [height, width, 3])


def decode_images(
    image_bytes: tf.Tensor,
    image_size,
    resize: str = "stretch",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tf.Tensor:
    """A batch of encoded images (N,) -> float32 ``(N, H, W, 3)``; see ``decode_image``."""
    height, width = (int(size) for size in image_size)
    return tf.map_fn(
        lambda one: decode_image(one, (height, width), resize, max_pixels),
        image_bytes,
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
    )


def list_images(directory: str) -> list[str]:
    """Image files under ``directory`` (recursively), as sorted paths relative to it.

    Files are recognised by extension (``tf_bihalf.data.image_files.IMAGE_EXTENSIONS``, the
    list training uses, case-insensitive); hidden files and directories are skipped.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Image directory {directory!r} does not exist.")
    found = []
    for root, directories, files in os.walk(directory):
        directories[:] = sorted(name for name in directories if not name.startswith("."))
        for name in files:
            if not is_image_file(name):
                continue
            relative = os.path.relpath(os.path.join(root, name), directory)
            found.append(relative.replace(os.sep, "/"))
    return sorted(found)


def load_image_arrays(
    paths: list[str],
    image_size,
    resize: str = "stretch",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> tuple[np.ndarray, list[int], list[tuple]]:
    """Reads and decodes image files into float32 ``(N, H, W, 3)`` with ``decode_image``.

    Files are read with ``tf_bihalf.data.image_files.read_image_file`` (regular files of at
    most ``max_file_bytes``, the reader training uses) and refused above ``max_pixels`` before
    decoding.

    Returns ``(images, kept, failed)``: the decoded images, the indices into ``paths`` they came
    from, and ``(path, reason)`` for every file that could not be read or decoded.
    """
    height, width = (int(size) for size in image_size)
    decode = tf.function(
        lambda data: decode_image(data, (height, width), resize, max_pixels),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    images, kept, failed = [], [], []
    for index, path in enumerate(paths):
        try:
            images.append(decode(tf.constant(read_image_file(path, max_file_bytes))).numpy())
            kept.append(index)
        except (OSError, ValueError, tf.errors.OpError) as error:
            failed.append((path, short_reason(error)))
    array = np.stack(images) if images else np.zeros((0, height, width, 3), np.float32)
    return array, kept, failed
