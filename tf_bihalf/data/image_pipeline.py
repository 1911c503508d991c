"""``tf.data`` input pipeline for an ``ImageSet``: decode, resize, batch, prefetch.

Output: ``(images, labels)`` batches, images float32 (B, H, W, 3) RGB with values in [0, 255]
(the raw input every tf_bihalf image model takes; backbone preprocessing lives inside the
model), labels as stored in the ``ImageSet`` (int64 class ids or uint8 multi-hot).

Decoding: ``tf.io.decode_image(..., channels=3, expand_animations=False)`` reads JPEG, PNG, BMP
and GIF (first frame). ``channels=3`` turns grayscale into RGB (the gray value repeated, as
``tf.image.grayscale_to_rgb`` and Pillow's ``convert("RGB")`` do) and drops the alpha channel of
RGBA / gray+alpha images (as Pillow's ``convert("RGB")`` does, no compositing); palette images
are expanded to RGB.

Resizing: ``tf.image.resize(method="bilinear", antialias=True)`` straight to ``image_size``
(aspect ratio not kept, ``resize="stretch"``), the TensorFlow equivalent of torchvision's
``Resize((H, W))`` on a PIL image (bilinear with an antialiasing filter when shrinking; when
enlarging, e.g. CIFAR 32 -> 224, antialiasing changes nothing). ``resize="center_crop"``
instead resizes the shorter side to the target and crops the centre (torchvision's
``Resize(S)`` + ``CenterCrop(S)``). Values stay in [0, 255] (bilinear weights are
non-negative; a clip guards the contract).

Files that cannot be used: ``load_protocol`` checks the files up front (``verify="decode"`` by
default) and leaves out the ones that fail. The pipeline checks the files of its image set
again before it decodes anything (``verify_files``, default ``"decode"``; the decode results are
cached by content hash, so files ``load_protocol`` already checked cost one ``stat`` each):
a missing, non-regular, oversized (``limits``: bytes, and pixels read from the header) or
undecodable file is, by default (``on_decode_error="skip"``), left out with a logged warning
naming it; with ``on_decode_error="raise"`` it is an ``InputError`` naming the files. A file
that changes after the check and then fails to decode is dropped by ``tf.data``'s
``ignore_errors`` (``"skip"``) or stops with TensorFlow's error (``"raise"``).

Example:

>>> splits = load_protocol("folder:/data/my_photos")            # doctest: +SKIP
>>> dataset = image_dataset(splits.train, image_size=(224, 224), batch_size=32, shuffle=True)
>>> images, labels = next(iter(dataset))                        # doctest: +SKIP
>>> images.shape, images.dtype                                  # doctest: +SKIP
(TensorShape([32, 224, 224, 3]), tf.float32)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from tf_bihalf.data.image_files import ImageLimits
from tf_bihalf.data.protocols.file_checks import VERIFY_MODES, check_image_files
from tf_bihalf.errors import InputError

RESIZE_MODES = ("stretch", "center_crop")


def decode_image_file(path: tf.Tensor) -> tf.Tensor:
    """Reads and decodes one image file to uint8 (H, W, 3) RGB (see the module docstring)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_images(
    images: tf.Tensor, image_size: tuple[int, int], resize: str = "stretch"
) -> tf.Tensor:
    """Resizes uint8/float images (H, W, 3) or (B, H, W, 3) to float32 ``image_size`` in [0, 255].

    ``resize="stretch"``: bilinear with antialias straight to ``image_size``.
    ``resize="center_crop"``: scale so the shorter side fits (bilinear, antialias), then crop the
    centre to ``image_size``.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}.")
    height, width = int(image_size[0]), int(image_size[1])
    images = tf.cast(images, tf.float32)
    if resize == "stretch":
        resized = tf.image.resize(images, (height, width), method="bilinear", antialias=True)
    else:
        shape = tf.cast(tf.shape(images)[-3:-1], tf.float32)
        scale = tf.reduce_max(tf.constant([height, width], tf.float32) / shape)
        new_size = tf.cast(tf.math.ceil(shape * scale), tf.int32)
        new_size = tf.maximum(new_size, [height, width])
        resized = tf.image.resize(images, new_size, method="bilinear", antialias=True)
        top = (new_size[0] - height) // 2
        left = (new_size[1] - width) // 2
        resized = resized[..., top : top + height, left : left + width, :]
    return tf.clip_by_value(resized, 0.0, 255.0)


def image_dataset(
    image_set,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    repeat: bool = False,
    *,
    resize: str = "stretch",
    on_decode_error: str = "skip",
    shuffle_buffer_size: int | None = None,
    verify_files: str = "decode",
    limits: ImageLimits | None = None,
    check_cache_dir: str | None | bool = None,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of ``(images, labels)`` for an ``ImageSet``.

    Args:
        image_set: a ``tf_bihalf.data.ImageSet`` with ``paths`` (files, decoded
            in parallel) or ``images`` (uint8 (N, h, w, 3) arrays, resized in the graph).
        image_size: output (H, W).
        batch_size: images per batch.
        shuffle: shuffle the order (reshuffled every epoch, seeded by ``seed``).
        seed: shuffle seed.
        drop_remainder: drop the last, smaller batch (the cosine loss needs even batches).
        repeat: repeat forever (each pass reshuffled when ``shuffle``).
        resize: "stretch" (default) or "center_crop" (see the module docstring).
        on_decode_error: "skip" (leave out an unusable file, with a warning naming it) or
            "raise" (an ``InputError`` naming the unusable files).
        shuffle_buffer_size: default: the whole split (a uniform shuffle; only file names or
            uint8 arrays are buffered).
        verify_files: the check applied to the files before decoding: "none", "exists",
            "header" or "decode" (``tf_bihalf.data.protocols.file_checks``).
        limits: pixel and file-size caps (default ``ImageLimits()``).
        check_cache_dir: where decode checks are cached (None: the default; False: none).

    Returns:
        ``tf.data.Dataset`` of (float32 (B, H, W, 3) in [0, 255], labels (B,) or (B, C)).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if len(image_size) != 2 or min(int(image_size[0]), int(image_size[1])) < 1:
        raise ValueError(f"image_size must be (height, width) > 0; got {image_size}.")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}.")
    if on_decode_error not in ("skip", "raise"):
        raise ValueError(f"on_decode_error must be 'skip' or 'raise'; got {on_decode_error!r}.")
    if verify_files not in VERIFY_MODES:
        raise ValueError(f"verify_files must be one of {VERIFY_MODES}; got {verify_files!r}.")
    labels = np.asarray(image_set.labels)
    if len(labels) == 0:
        raise ValueError("The image set is empty.")
    image_size = (int(image_size[0]), int(image_size[1]))
    buffer_size = shuffle_buffer_size or len(labels)

    def order(dataset: tf.data.Dataset) -> tf.data.Dataset:
        if shuffle:
            dataset = dataset.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        return dataset

    if image_set.paths is not None:
        if len(image_set.paths) != len(labels):
            raise ValueError(f"{len(image_set.paths)} paths but {len(labels)} labels.")
        paths, labels = usable_files(
            list(image_set.paths), labels, verify_files, limits, check_cache_dir, on_decode_error
        )
        buffer_size = shuffle_buffer_size or len(labels)
        dataset = order(tf.data.Dataset.from_tensor_slices((paths, labels)))
        dataset = dataset.map(
            lambda path, label: (
                resize_images(decode_image_file(path), image_size, resize),
                label,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if on_decode_error == "skip":
            dataset = dataset.ignore_errors(log_warning=True)
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    elif image_set.images is not None:
        images = np.asarray(image_set.images)
        if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
            raise ValueError(
                f"In-memory images must be (N, H, W, 3) with N = {len(labels)}; got {images.shape}."
            )
        dataset = order(tf.data.Dataset.from_tensor_slices((images, labels)))
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        dataset = dataset.map(
            lambda batch, label: (resize_images(batch, image_size, resize), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        raise ValueError("The image set has neither paths nor images.")
    return dataset.prefetch(tf.data.AUTOTUNE)


def usable_files(
    paths: list[str],
    labels: np.ndarray,
    verify: str,
    limits: ImageLimits | None,
    cache_dir: str | None | bool,
    on_error: str,
) -> tuple[list[str], np.ndarray]:
    """The paths and labels of the files that pass ``verify`` (see ``image_dataset``).

    Raises:
        InputError: with ``on_error="raise"``, when any file fails (the message names them);
            always, when no file is left.
    """
    problems = check_image_files(paths, verify, limits, cache_dir=cache_dir)
    if not problems:
        return paths, labels
    listed = [f"{paths[position]}: {problem.detail}" for position, problem in problems.items()]
    message = f"{len(problems)} of {len(paths)} image files cannot be used: {listed[:5]}"
    if on_error == "raise" or len(problems) == len(paths):
        raise InputError(
            message + ". Load the splits with load_protocol(verify='decode') (the default), "
            "which excludes such files and lists them."
        )
    logging.warning("%s; they are left out.", message)
    keep = np.ones(len(paths), dtype=bool)
    keep[list(problems)] = False
    return [path for path, kept in zip(paths, keep, strict=True) if kept], labels[keep]
