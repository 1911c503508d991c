"""Datasets, the paper's protocols and tf.data pipelines.

- ``tf_bihalf.data.mnist``: MNIST / Fashion-MNIST from checksum-verified sources.
- ``tf_bihalf.data.image_protocols``: CIFAR-10 (I/II), Flickr25k, NUS-WIDE (I/II), MS-COCO, and
  users' own ``folder:<dir>`` / ``list:<file>`` collections, split by the paper's seeded rules.
- ``tf_bihalf.data.image_pipeline``: decoding, resizing and batching images with tf.data.
- ``tf_bihalf.data.feature_cache``: frozen-backbone features cached on disk.
- ``tf_bihalf.data.tfds_builders``: TFDS builders for the manual-download datasets.

``python -m tf_bihalf.data.fetch mnist`` puts verified MNIST into the cache directory.
"""

from tf_bihalf.data.image_pipeline import image_dataset
from tf_bihalf.data.image_protocols import (
    ImageSet,
    ProtocolSplits,
    load_protocol,
    read_splits,
    verify_splits,
    write_splits,
)

__all__ = [
    "ImageSet",
    "ProtocolSplits",
    "image_dataset",
    "load_protocol",
    "read_splits",
    "verify_splits",
    "write_splits",
]
