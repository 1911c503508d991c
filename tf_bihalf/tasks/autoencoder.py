"""The hashing autoencoder task: MNIST / Fashion-MNIST / digits, the paper's Fig. 3 experiment.

Data: ``tf_bihalf.data.mnist.load(config["dataset"], pixels=config["pixels"])``, the first
``train_examples`` / ``test_examples`` rows when set. Query = the test split, database = the
training split (the reference code's protocol; docs/paper.md, "Dataset protocols"). Training
batches: ``tf_bihalf.training.pipelines.epoch_batches`` (a per-epoch permutation seeded by
``(seed, epoch)``, each epoch's smaller last batch kept, as PyTorch's ``DataLoader``), target =
input. Model: ``HashingAutoencoder`` (784-256-K, hash layer, decoder fed the binary codes), loss
``BinaryReconstructionLoss`` (mean BCE). Task config keys: ``dataset``, ``data_dir``, ``pixels``,
``train_examples``, ``test_examples``, ``hidden``, ``loss.from_probabilities``,
``monitor.sample_size``,
``evaluation.batch_size``.
"""

from __future__ import annotations

import math

import numpy as np

from tf_bihalf.data import mnist
from tf_bihalf.losses.reconstruction import BinaryReconstructionLoss
from tf_bihalf.models.autoencoder import HashingAutoencoder
from tf_bihalf.training import pipelines
from tf_bihalf.training.record import InputSpec
from tf_bihalf.training.task import RecordFields, Task, TaskData, TaskModels


class AutoencoderTask(Task):
    """See the module docstring."""

    name = "autoencoder"

    def prepare(self, run) -> None:
        config = self.config
        (x_train, y_train), (x_test, y_test) = mnist.load(
            config["dataset"], data_dir=config["data_dir"], pixels=config["pixels"]
        )
        if config["train_examples"]:
            x_train, y_train = (
                x_train[: config["train_examples"]],
                y_train[: config["train_examples"]],
            )
        if config["test_examples"]:
            x_test, y_test = x_test[: config["test_examples"]], y_test[: config["test_examples"]]
        self.train_split, self.test_split = (x_train, y_train), (x_test, y_test)

    def build_models(self) -> TaskModels:
        config = self.config
        model = HashingAutoencoder(
            bits=config["bits"],
            hash_layer=config["hash_layer"],
            hidden=config["hidden"],
            input_dim=int(self.train_split[0].shape[1]),
            hash_layer_kwargs=config["hash_layer_kwargs"],
        )
        return TaskModels(
            train_model=model,
            encoder=model.encoder,
            continuous_encoder=model.continuous_encoder,
            export_model=model.encoder,
            loss=BinaryReconstructionLoss(from_probabilities=config["loss"]["from_probabilities"]),
        )

    def build_data(self, models, run) -> TaskData:
        config = self.config
        x_train, y_train = self.train_split
        batch_size = config["evaluation"]["batch_size"]
        validation = None
        fraction = config["evaluation"]["validation_fraction"]
        if fraction:
            kept, held_out = pipelines.holdout_split(len(x_train), fraction, config["seed"])
            validation = (
                pipelines.ordered_batches((x_train[held_out], y_train[held_out]), batch_size),
                pipelines.ordered_batches((x_train[kept], y_train[kept]), batch_size),
            )
            x_train = x_train[kept]

        def train(initial_epoch: int):
            return pipelines.epoch_batches(
                x_train,
                config["batch_size"],
                seed=config["seed"],
                epochs=config["epochs"],
                initial_epoch=initial_epoch,
                transform=lambda x: (x, x),
            )

        return TaskData(
            train=train,
            steps_per_epoch=pipelines.steps_per_epoch(len(x_train), config["batch_size"]),
            examples_per_epoch=len(x_train),
            query=pipelines.ordered_batches(self.test_split, batch_size),
            database=pipelines.ordered_batches(self.train_split, batch_size),
            monitor_inputs=x_train[: config["monitor"]["sample_size"]],
            report={
                "counts": {
                    "train": len(x_train),
                    "validation": len(self.train_split[0]) - len(x_train),
                    "query": len(self.test_split[0]),
                    "database": len(self.train_split[0]),
                }
            },
            validation=validation,
        )

    def display_images(self, split, indices):
        images = self.test_split[0] if split == "query" else self.train_split[0]
        return images[np.asarray(indices)]

    def display_shape(self):
        side = int(round(math.sqrt(self.train_split[0].shape[1])))
        return (side, side) if side * side == self.train_split[0].shape[1] else None

    def record_fields(self, models) -> RecordFields:
        return RecordFields(
            input=InputSpec(
                kind="vector", shape=(int(self.train_split[0].shape[1]),), range=(0.0, 1.0)
            ),
            preprocessing={"pixels": self.config["pixels"], "flatten": True},
        )
