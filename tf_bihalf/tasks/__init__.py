"""Tasks: one per model family, each a ``tf_bihalf.training.task.Task`` for the one loop.

``get(name)`` returns the task class a config's ``task`` key names:

- ``"autoencoder"``: ``tf_bihalf.tasks.autoencoder.AutoencoderTask`` (MNIST-style hashing
  autoencoder, the paper's Fig. 3);
- ``"image"``: ``tf_bihalf.tasks.image.ImageTask`` (frozen backbone + hash head, the paper's
  image protocols and users' own collections).
"""

from __future__ import annotations

import importlib

from tf_bihalf.errors import InputError

_TASKS = {
    "autoencoder": ("tf_bihalf.tasks.autoencoder", "AutoencoderTask"),
    "image": ("tf_bihalf.tasks.image", "ImageTask"),
    "video": ("tf_bihalf.tasks.video", "VideoTask"),
}


def names() -> list[str]:
    """The registered task names."""
    return sorted(_TASKS)


def get(name: str):
    """The ``Task`` subclass registered as ``name``.

    Raises:
        InputError: no such task (the message lists the registered ones).
    """
    if name not in _TASKS:
        raise InputError(f"Unknown task {name!r}; available: {', '.join(names())}.")
    module, attribute = _TASKS[name]
    return getattr(importlib.import_module(module), attribute)
