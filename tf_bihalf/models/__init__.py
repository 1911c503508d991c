"""Hashing models: the MNIST autoencoder and the image hasher (backbone + head + hash layer).

Backbones by name live in ``tf_bihalf.models.backbones``; EfficientNet-Lite0 and its weight
converter in ``tf_bihalf.models.efficientnet_lite``.
"""

from tf_bihalf.models.autoencoder import HashingAutoencoder
from tf_bihalf.models.backbones import available_backbones, build_backbone, register_backbone
from tf_bihalf.models.image_hasher import ImageHasher

__all__ = [
    "HashingAutoencoder",
    "ImageHasher",
    "available_backbones",
    "build_backbone",
    "register_backbone",
]
