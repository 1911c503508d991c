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
from tf_bihalf.data.image_pipeline import RESIZE_MODES, resize_images

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def decode_image(image_bytes: tf.Tensor, image_size, resize: str = "stretch") -> tf.Tensor:
    """One encoded image (scalar string) -> float32 ``(H, W, 3)`` RGB in [0, 255]."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}.")
    height, width = (int(size) for size in image_size)
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    image = resize_images(image, (height, width), resize)
    return tf.ensure_shape(image, [height, width, 3])


def decode_images(image_bytes: tf.Tensor, image_size, resize: str = "stretch") -> tf.Tensor:
    """A batch of encoded images (N,) -> float32 ``(N, H, W, 3)``; see ``decode_image``."""
    height, width = (int(size) for size in image_size)
    return tf.map_fn(
        lambda one: decode_image(one, (height, width), resize),
        image_bytes,
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
    )


def list_images(directory: str) -> list[str]:
    """Image files under ``directory`` (recursively), as sorted paths relative to it.

    Files are recognised by extension (``IMAGE_EXTENSIONS``, case-insensitive); hidden files and
    directories are skipped.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Image directory {directory!r} does not exist.")
    found = []
    for root, directories, files in os.walk(directory):
        directories[:] = sorted(name for name in directories if not name.startswith("."))
        for name in files:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            relative = os.path.relpath(os.path.join(root, name), directory)
            found.append(relative.replace(os.sep, "/"))
    return sorted(found)


def load_image_arrays(
    paths: list[str], image_size, resize: str = "stretch"
) -> tuple[np.ndarray, list[int], list[tuple]]:
    """Reads and decodes image files into float32 ``(N, H, W, 3)`` with ``decode_image``.

    Returns ``(images, kept, failed)``: the decoded images, the indices into ``paths`` they came
    from, and ``(path, reason)`` for every file that could not be read or decoded.
    """
    height, width = (int(size) for size in image_size)
    decode = tf.function(
        lambda data: decode_image(data, (height, width), resize),
        input_signature=[tf.TensorSpec([], tf.string)],
    )
    images, kept, failed = [], [], []
    for index, path in enumerate(paths):
        try:
            with open(path, "rb") as file:
                data = file.read()
            images.append(decode(tf.constant(data)).numpy())
            kept.append(index)
        except (OSError, tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
            failed.append((path, _short_reason(error)))
    array = np.stack(images) if images else np.zeros((0, height, width, 3), np.float32)
    return array, kept, failed


def _short_reason(error: Exception) -> str:
    """``"<ErrorType>: <the informative line of the message>"``."""
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error_reason(error)}"
