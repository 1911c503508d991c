"""Hashing models: the MNIST autoencoder, the image hasher and the video hasher (backbone +
head + hash layer).

Backbones by name live in ``tf_bihalf.models.backbones``; EfficientNet-Lite0 and its weight
converter in ``tf_bihalf.models.efficientnet_lite``; video backbones in
``tf_bihalf.models.resnet3d`` (3D ResNets and their checkpoint converter) and
``tf_bihalf.models.i3d``; the torch-free ``.pth`` reader in
``tf_bihalf.formats.torch_checkpoint`` and the numpy-pickle (``.ckpt``) reader in
``tf_bihalf.formats.numpy_checkpoint``, both memory-safe. Every hasher gives empty outputs
for an empty batch (``tf_bihalf.models.empty_batch``).
"""

from tf_bihalf.models.autoencoder import HashingAutoencoder
from tf_bihalf.models.backbones import available_backbones, build_backbone, register_backbone
from tf_bihalf.models.image_hasher import ImageHasher
from tf_bihalf.models.video_hasher import VideoHasher

__all__ = [
    "HashingAutoencoder",
    "ImageHasher",
    "VideoHasher",
    "available_backbones",
    "build_backbone",
    "register_backbone",
]
