"""Losses: binary-cross-entropy reconstruction (autoencoder) and cosine-similarity
preservation (image and video hashing)."""

from tf_bihalf.losses.cosine import CosineSimilarityPreservation
from tf_bihalf.losses.reconstruction import BinaryReconstructionLoss

__all__ = ["BinaryReconstructionLoss", "CosineSimilarityPreservation"]
