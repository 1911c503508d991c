"""Datasets, the paper's protocols and tf.data pipelines.

- ``tf_bihalf.data.mnist``: MNIST / Fashion-MNIST from checksum-verified sources.
- ``tf_bihalf.data.protocols``: the dataset registry and the paper's split rules: CIFAR-10
  (I/II), Fashion-MNIST RGB, Flickr25k, NUS-WIDE (I/II), MS-COCO, and users' own
  ``folder:<dir>`` / ``list:<file>`` collections.
- ``tf_bihalf.data.image_files``: the image file extensions, limits and safe reading.
- ``tf_bihalf.data.list_files``: the list-file format (``path label...`` lines).
- ``tf_bihalf.data.image_pipeline``: decoding, resizing and batching images with tf.data.
- ``tf_bihalf.data.feature_cache``: frozen-backbone features cached on disk.
- ``tf_bihalf.data.tfds_builders``: TFDS builders for the manual-download datasets.

``python -m tf_bihalf.data.fetch mnist`` puts verified MNIST into the cache directory.
"""

from tf_bihalf.data.feature_cache import FeatureCache
from tf_bihalf.data.image_pipeline import image_dataset
from tf_bihalf.data.protocols import (
    MANIFEST_NAME,
    ImageSet,
    ProtocolSplits,
    load_protocol,
    register,
    registered_names,
    verify_splits,
    write_splits,
)

__all__ = [
    "MANIFEST_NAME",
    "FeatureCache",
    "ImageSet",
    "ProtocolSplits",
    "image_dataset",
    "load_protocol",
    "register",
    "registered_names",
    "verify_splits",
    "write_splits",
]
