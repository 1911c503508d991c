"""Checks user inputs before they reach an exported encoder, with errors that say what to fix.

Called with a wrong shape or dtype, a SavedModel signature or a TFLite interpreter fails deep
inside TensorFlow with a message about placeholders and tensor indices. These checks run first.

Example:

>>> check_float_inputs(np.zeros((2, 784), np.float32), (784,)).shape
(2, 784)
>>> check_float_inputs(np.zeros((784,), np.float32), (784,))
Traceback (most recent call last):
...
ValueError: Expected inputs of shape (batch, 784); got shape (784,). ...
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np


def check_float_inputs(inputs, input_shape) -> np.ndarray:
    """Returns ``inputs`` as a float32 array of shape ``(N,) + input_shape``.

    Floating-point arrays of any precision are accepted. Integer arrays are refused on purpose:
    an image model expects RGB values in [0, 255] and the autoencoder pixels in [0, 1], so an
    implicit cast of uint8 pixels would silently feed the autoencoder values 255 times too large.
    """
    input_shape = tuple(int(size) for size in input_shape)
    expected = "(batch, " + ", ".join(str(size) for size in input_shape) + ")"
    if isinstance(inputs, (bytes, str)) or (
        isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (bytes, str))
    ):
        raise ValueError(
            "Got encoded images or paths where float inputs of shape "
            f"{expected} were expected; use the image_bytes signature (encode_images) for "
            "encoded JPEG/PNG bytes."
        )
    array = np.asarray(inputs)
    if not np.issubdtype(array.dtype, np.floating):
        hint = "RGB values in [0, 255]" if len(input_shape) == 3 else "pixel values in [0, 1]"
        raise ValueError(
            f"Expected floating-point inputs ({hint}); got dtype {array.dtype}. Convert "
            "explicitly, e.g. images.astype('float32') for RGB in [0, 255] or "
            "pixels.astype('float32') / 255 for the autoencoder."
        )
    if array.ndim != len(input_shape) + 1 or tuple(array.shape[1:]) != input_shape:
        extra = ""
        if tuple(array.shape) == input_shape:
            extra = " Add a batch axis for a single example: inputs[None]."
        raise ValueError(
            f"Expected inputs of shape {expected}; got shape {tuple(array.shape)}.{extra}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("Inputs contain NaN or infinite values.")
    return array.astype(np.float32, copy=False)


def load_float_array(path: str, what: str = "Inputs") -> np.ndarray:
    """The array of a regular ``.npy`` file (no pickle), with a one-line error otherwise.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a regular file (a FIFO or device is never read), not a readable ``.npy``
        (truncated, an ``.npz``, text...).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} file {path!r} does not exist.")
    if not os.path.isfile(path):
        raise ValueError(f"{what} file {path!r} is not a regular file.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{what} file {path!r} is not a readable .npy array ({type(error).__name__}: {error})."
        ) from None
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ValueError(f"{what} file {path!r} is an .npz archive; pass one .npy array.")
    return loaded


def check_image_bytes(images) -> list[bytes]:
    """Returns ``images`` as a list of ``bytes`` (encoded JPEG/PNG/BMP/GIF/WebP file contents)."""
    if isinstance(images, (bytes, bytearray)):
        raise ValueError("Expected a list of encoded images; wrap a single image as [image_bytes].")
    if isinstance(images, np.ndarray) and images.dtype.kind in "fiu":
        raise ValueError(
            "Expected encoded image bytes (file contents) but got a numeric array of shape "
            f"{images.shape}; use encode() for decoded float images."
        )
    result = []
    for index, image in enumerate(images):
        if isinstance(image, str):
            raise ValueError(
                f"Item {index} is a str ({image[:60]!r}); pass the file contents "
                "(open(path, 'rb').read()), not the path."
            )
        if not isinstance(image, (bytes, bytearray, np.bytes_)):
            raise ValueError(
                f"Item {index} has type {type(image).__name__}; expected bytes of an encoded image."
            )
        result.append(bytes(image))
    return result


def error_reason(error: Exception) -> str:
    """The informative line of an error message, without TensorFlow's graph-execution framing.

    Example: ``"Graph execution error:\n\nDetected at node ...\nInvalid PNG data, size 100\n\t
    [[{{node ...}}]]"`` -> ``"Invalid PNG data, size 100"``.
    """
    message = getattr(error, "message", None) or str(error)
    framing = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[")
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(framing)]
    reason = useful[0] if useful else message.strip()
    reason = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", reason)
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", reason)[:300]
