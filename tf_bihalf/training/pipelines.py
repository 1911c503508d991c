"""``tf.data`` pipelines over in-memory arrays, with a resumable per-epoch shuffle.

``epoch_batches`` yields the training batches of epochs ``initial_epoch .. epochs - 1`` as one
stream. The order inside epoch ``e`` is a permutation seeded by ``(seed, e)`` only, so it does
not depend on how many epochs ran before in this process: a run resumed at epoch 3 sees exactly
the batches an uninterrupted run sees at epoch 3. Each epoch ends with its smaller remainder
batch unless ``drop_remainder`` (PyTorch's ``DataLoader(shuffle=True, drop_last=False)``).

Arrays are captured once as tensors (not embedded in the graph) and gathered per batch, so the
cost per step is one gather, with ``prefetch`` overlapping it with the training step.

``for_whole_run`` (applied by ``epoch_batches`` and by the trainers to every task's training
data) turns off tf.data's autotuning model for a dataset iterated for a whole run. Its thread
re-optimises at intervals that double up to 60 s, and deleting the iterator waits for the
current interval to end, so the end of a long ``fit`` could stall for up to a minute.

Example:

>>> x = np.arange(10, dtype="float32")[:, None]
>>> dataset = epoch_batches((x, x), batch_size=4, seed=0, epochs=2)
>>> [int(batch[0].shape[0]) for batch in dataset]
[4, 4, 2, 4, 4, 2]
"""

from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Optimizer steps in one epoch: ``ceil(N / B)`` (or ``floor`` when dropping the remainder).

    >>> steps_per_epoch(60000, 128)
    469
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    steps = num_examples // batch_size if drop_remainder else math.ceil(num_examples / batch_size)
    if steps < 1:
        raise ValueError(
            f"{num_examples} examples give no batch of {batch_size} (drop_remainder="
            f"{drop_remainder}); use a smaller batch_size."
        )
    return steps


def steps_per_execution_for(steps: int, target: int) -> int:
    """The largest divisor of ``steps`` that is <= ``target``.

    Keras runs ``steps_per_execution`` steps per call and would otherwise read past an
    epoch's batches when it does not divide ``steps_per_epoch``, which would shift every later
    epoch's data.

    >>> steps_per_execution_for(469, 8)  # 469 = 7 * 67
    7
    """
    if steps < 1 or target < 1:
        raise ValueError(f"steps and target must be >= 1; got {steps}, {target}.")
    return max(d for d in range(1, min(steps, target) + 1) if steps % d == 0)


def _check_arrays(arrays) -> int:
    sizes = {int(np.shape(array)[0]) for array in tf.nest.flatten(arrays)}
    if len(sizes) != 1:
        raise ValueError(f"All arrays need the same number of rows; got sizes {sorted(sizes)}.")
    return sizes.pop()


def for_whole_run(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuning model turned off, for an iterator that lives a whole
    run (``fit`` over many epochs).

    TensorFlow's autotuning thread sleeps between optimisations for intervals that double up
    to 60 s, and deleting the iterator waits for the current interval to end. A training run of
    more than a minute or two could therefore stall for up to a minute at the end of ``fit``
    (measured: 52 s to delete an iterator after 150 s of use, 0 s with autotuning off;
    docs/training.md, "The end of fit"). Without the model, ``AUTOTUNE`` parallelism is set to
    the number of cores (tf.data's own default would stop at 16, too few for image decoding on
    a large machine), and ``prefetch(AUTOTUNE)`` buffers grow when the consumer has to wait.
    The elements and their order do not change.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    options.autotune.initial_parallelism = max(1, os.cpu_count() or 1)
    return dataset.with_options(options)


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch``: a permutation seeded by ``(seed, epoch)`` only."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def epoch_batches(
    arrays,
    batch_size: int,
    seed: int,
    epochs: int,
    initial_epoch: int = 0,
    drop_remainder: bool = False,
    transform=None,
) -> tf.data.Dataset:
    """Shuffled batches of epochs ``initial_epoch .. epochs - 1`` (see the module docstring).

    Args:
        arrays: a numpy array or a (nested) tuple of arrays with the same first dimension.
        batch_size: global batch size.
        seed: base seed; epoch ``e`` uses the permutation of ``(seed, e)``.
        epochs: total number of epochs of the run.
        initial_epoch: first epoch to produce (the resumed run's start).
        drop_remainder: drop each epoch's last, smaller batch.
        transform: optional function applied to each gathered batch (e.g. a cast, or
            ``lambda x: (x, x)`` for a reconstruction target).

    Returns:
        A ``tf.data.Dataset`` of ``(epochs - initial_epoch) * steps_per_epoch`` batches, without
        tf.data's autotuning model (``for_whole_run``).
    """
    num_examples = _check_arrays(arrays)
    steps = steps_per_epoch(num_examples, batch_size, drop_remainder)
    if not 0 <= initial_epoch <= epochs:
        raise ValueError(f"initial_epoch must be in [0, epochs={epochs}]; got {initial_epoch}.")
    order = np.concatenate(
        [epoch_permutation(num_examples, seed, e) for e in range(initial_epoch, epochs)]
        or [np.zeros((0,), np.int64)]
    ).astype(np.int64)
    # Batch boundaries per epoch: reshape each epoch's index list into its batches.
    starts = np.arange(steps) * batch_size
    lengths = np.minimum(batch_size, num_examples - starts)
    epoch_count = epochs - initial_epoch
    offsets = (np.arange(epoch_count)[:, None] * num_examples + starts[None, :]).reshape(-1)
    lengths = np.tile(lengths, epoch_count)
    tensors = tf.nest.map_structure(tf.convert_to_tensor, arrays)
    order_tensor = tf.constant(order)

    def gather(offset, length):
        indices = order_tensor[offset : offset + length]
        batch = tf.nest.map_structure(lambda tensor: tf.gather(tensor, indices), tensors)
        return transform(batch) if transform is not None else batch

    dataset = tf.data.Dataset.from_tensor_slices((offsets, lengths))
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return for_whole_run(dataset.prefetch(tf.data.AUTOTUNE))


def ordered_batches(arrays, batch_size: int) -> tf.data.Dataset:
    """Batches in storage order, the last one smaller (for encoding and evaluation)."""
    _check_arrays(arrays)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


def holdout_split(num_examples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sorted row indices: ``round(fraction * N)`` rows drawn with ``seed``
    (at least one when ``fraction > 0``), e.g. a validation part of the training set.

    >>> kept, held_out = holdout_split(10, 0.2, seed=0)
    >>> len(kept), len(held_out), sorted(set(kept) | set(held_out)) == list(range(10))
    (8, 2, True)
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"The held-out fraction must be in [0, 1); got {fraction!r}.")
    count = max(1, round(fraction * num_examples)) if fraction > 0 else 0
    if count >= num_examples:
        raise ValueError(f"Holding out {count} of {num_examples} rows leaves none to train on.")
    held_out = np.sort(
        np.random.default_rng([int(seed), 7]).choice(num_examples, count, replace=False)
    )
    kept = np.setdiff1d(np.arange(num_examples), held_out)
    return kept, held_out
