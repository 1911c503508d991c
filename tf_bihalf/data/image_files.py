"""Image files at the boundary: which files count as images, and reading one safely.

The one list of image file extensions (``IMAGE_EXTENSIONS``) and the checks every reader of a
user's image file applies before any pixel is decoded:

1. the path names a **regular file** (a FIFO, device or directory named ``x.jpg`` is refused
   without being read, so it cannot hang or stream without end: the file is opened with
   ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor);
2. it is not empty and at most ``max_file_bytes`` long (default 256 MiB);
3. its header (read by Pillow, no pixel decoded) names a format TensorFlow decodes (JPEG, PNG,
   BMP, GIF) and at most ``max_pixels`` pixels (default 50 megapixels: a 380 KB PNG may declare
   20000 x 20000 pixels, 1.2 GB once decoded).

A file that fails raises ``ImageFileError`` (a ``ValueError``) whose ``reason`` is one word
(``REASONS``) and whose message names the file and the limit.

WebP is not in the list: ``tf.io.decode_image(..., channels=3)`` (TensorFlow 2.21) decodes RGB
WebP but refuses WebP with an alpha channel ("Number of channels requested does not match
input") and animated WebP, so accepting ``.webp`` would let files through that the input
pipeline cannot decode.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat

from tf_bihalf.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Pillow format names of the files TensorFlow's decode_image reads (MPO: multi-picture JPEG).
DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF")
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_FILE_BYTES = 256 * 2**20
# Why a file is unusable, one word each (written to excluded.txt and counted in reports).
REASONS = (
    "missing",
    "unreadable",
    "not_regular",
    "too_large",
    "too_many_pixels",
    "unsupported",
    "corrupt",
)


class ImageFileError(InputError):
    """An image file that cannot be used; ``reason`` is one of ``REASONS``."""

    def __init__(self, path: str, reason: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """Limits on one image file.

    Attributes:
        max_pixels: largest width x height accepted, read from the header before decoding.
        max_file_bytes: largest file accepted, in bytes.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    def __post_init__(self):
        if int(self.max_pixels) < 1 or int(self.max_file_bytes) < 1:
            raise ValueError(
                f"max_pixels and max_file_bytes must be >= 1; got {self.max_pixels}, "
                f"{self.max_file_bytes}."
            )


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name ending in one of ``IMAGE_EXTENSIONS`` (any case)."""
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def open_regular_file(path: str, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> io.BufferedReader:
    """Opens ``path`` for reading after checking it is a regular, non-empty file within the cap.

    Raises:
        ImageFileError: reason "missing" (absent or empty), "unreadable" (no permission, ...),
            "not_regular" (FIFO, device, directory, socket) or "too_large".
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageFileError(path, "missing", "no such file") from None
    except OSError as error:
        raise ImageFileError(path, "unreadable", f"cannot be opened ({error.strerror})") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ImageFileError(
                path, "not_regular", "is not a regular file (a directory, FIFO or device)"
            )
        if status.st_size == 0:
            raise ImageFileError(path, "missing", "is empty")
        if status.st_size > max_file_bytes:
            raise ImageFileError(
                path,
                "too_large",
                f"has {status.st_size} bytes, more than the limit max_file_bytes={max_file_bytes}",
            )
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_image_file(path: str, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular image file of at most ``max_file_bytes`` (see ``open_regular_file``).

    The read stops one byte past the cap, so a file that grows while it is read cannot make it
    unbounded.
    """
    with open_regular_file(path, max_file_bytes) as handle:
        data = handle.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise ImageFileError(
            path, "too_large", f"has more than the limit max_file_bytes={max_file_bytes} bytes"
        )
    if not data:
        raise ImageFileError(path, "missing", "is empty")
    return data


def read_header(path: str, source, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Reads the header of an image (a file object or bytes) without decoding its pixels.

    Returns:
        (Pillow format name, width, height).

    Raises:
        ImageFileError: "corrupt" (no readable header), "unsupported" (a format TensorFlow does
            not decode), "too_many_pixels" (more than ``max_pixels``).
    """
    from PIL import Image  # noqa: PLC0415 - Pillow is only needed for header checks

    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as image:
            image_format, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        raise ImageFileError(
            path,
            "too_many_pixels",
            f"declares more than {2 * Image.MAX_IMAGE_PIXELS} pixels (Pillow's decompression-bomb "
            f"limit; max_pixels={max_pixels})",
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageFileError(
            path, "corrupt", "has no readable image header (not a recognised image format)"
        ) from None
    except Exception as error:  # noqa: BLE001  (any failure to read the header means unusable)
        raise ImageFileError(path, "corrupt", f"has no readable image header ({error})") from None
    if image_format not in DECODABLE_FORMATS:
        raise ImageFileError(
            path,
            "unsupported",
            f"is {image_format}, not one of the formats TensorFlow decodes (JPEG, PNG, BMP, GIF)",
        )
    check_pixels(path, width, height, max_pixels)
    return image_format, int(width), int(height)


def check_pixels(path: str, width: int, height: int, max_pixels: int) -> None:
    """Raises ``ImageFileError("too_many_pixels")`` when ``width * height > max_pixels``."""
    if int(width) * int(height) > max_pixels:
        raise ImageFileError(
            path,
            "too_many_pixels",
            f"is {width}x{height} = {int(width) * int(height)} pixels, more than the limit "
            f"max_pixels={max_pixels}",
        )


def decode_error(data: bytes) -> str | None:
    """None when TensorFlow decodes ``data`` exactly as the input pipeline does
    (``tf.io.decode_image(channels=3, expand_animations=False)``), else TensorFlow's message."""
    import tensorflow as tf  # noqa: PLC0415 - decoding is the one step that needs TensorFlow

    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        return _short_tf_message(error.message)
    return None


def _short_tf_message(message: str) -> str:
    """TensorFlow's error text without its ``{{function_node ...}}`` prefix and ``[Op:...]``."""
    text = message.strip()
    if text.startswith("{{"):
        text = text.split("}}", 1)[-1].strip()
    if " [Op:" in text:
        text = text[: text.index(" [Op:")]
    return text.splitlines()[0] if text else "cannot be decoded"
