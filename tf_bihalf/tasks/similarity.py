"""What the image and video tasks share: a frozen-backbone hasher trained by cosine similarity
preservation (docs/paper.md, "Settings")."""

from __future__ import annotations

import keras

from tf_bihalf.errors import InputError
from tf_bihalf.losses.cosine import CosineSimilarityPreservation
from tf_bihalf.models.image_hasher import SimilarityPreservingModel
from tf_bihalf.training.task import TaskModels


def check_even_batch(config: dict) -> None:
    """The cosine loss pairs row i with i + M/2: batches must be even.

    Raises:
        InputError: ``config["batch_size"]`` is odd or below 2.
    """
    if config["batch_size"] < 2 or config["batch_size"] % 2:
        raise InputError(
            f"batch_size must be even and >= 2 (the cosine loss pairs row i with i + M/2); "
            f"got {config['batch_size']}."
        )


def similarity_models(hasher: keras.Model, config: dict) -> TaskModels:
    """The loop's models for ``hasher`` (an ``ImageHasher`` or ``VideoHasher``): its tail on
    cached features (``feature_cache``) or the whole model, trained with the cosine loss of
    ``config["loss"]["pairing"]``; the hasher itself (raw input -> codes) is exported."""
    model = SimilarityPreservingModel(
        hasher.training_network(from_features=bool(config["feature_cache"])),
        CosineSimilarityPreservation(pairing=config["loss"]["pairing"]),
    )
    return TaskModels(
        train_model=model,
        encoder=model.encoder,
        continuous_encoder=model.continuous_encoder,
        export_model=hasher,
    )
