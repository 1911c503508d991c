"""The ``Task`` interface: what a model family supplies to the one training loop.

A task builds its inputs, its models and its loss; ``tf_bihalf.training.loop.train_and_evaluate``
owns everything else (strategy, compile options, optimizer and schedule, checkpoints, TensorBoard,
monitoring, progress, the final evaluation, plots, the run record and ``results.json``). The
pattern is tensorflow/models' ``base_task`` with its ``train_lib``: a new model family is a new
task, never a new loop.

The loop calls, in this order:

1. ``prepare(run)``: load and check the data (no model yet: a missing manual download is reported
   before anything large is built); may write split files into the run directory.
2. ``build_models()`` (inside the strategy's scope): a ``TaskModels``.
3. ``build_data(models, run)``: a ``TaskData`` (may run the frozen part of the model once, e.g.
   to cache features).
4. ``record_fields(models)``: what the saved encoder takes (``InputSpec``), its preprocessing and
   backbone, for ``RUN/run.json``.

Every dataset a task returns yields batches in the *training input space* (the space of
``TaskModels.train_model``'s inputs: pixels for the autoencoder, cached features for an image
hasher trained on a feature cache); ``TaskModels.export_model`` maps *raw* inputs to codes and is
what ``RUN/encoder.keras`` holds.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tf_bihalf.training.record import InputSpec
from tf_bihalf.training.workdir import Workdir


@dataclasses.dataclass
class TaskModels:
    """The models of one run; they share layers and weights.

    Attributes:
        train_model: the model ``fit`` trains (the loop compiles it).
        encoder: training inputs -> codes (``sign(U)`` with ``training=False``).
        continuous_encoder: training inputs -> U, the hash layer's input (for monitoring).
        export_model: raw inputs -> codes; saved as ``RUN/encoder.keras``.
        loss: passed to ``compile(loss=...)``; None when ``train_model`` computes its own loss.
    """

    train_model: keras.Model
    encoder: keras.Model
    continuous_encoder: keras.Model
    export_model: keras.Model
    loss: keras.losses.Loss | None = None


@dataclasses.dataclass
class TaskData:
    """The data of one run, in the training input space.

    Attributes:
        train: ``initial_epoch -> tf.data.Dataset`` of the batches of epochs
            ``initial_epoch .. epochs - 1`` as one stream (``steps_per_epoch`` batches each).
        steps_per_epoch: optimizer steps in one epoch.
        examples_per_epoch: training examples in one epoch (for throughput).
        query: ``(inputs, labels)`` batches of the query set, in storage order.
        database: the same for the retrieval database.
        monitor_inputs: a fixed sample of training inputs for the bit monitor.
        report: what the data check found (counts, excluded files, warnings), or None.
        validation: ``(query, database)`` batches of a held-out part of the TRAINING set
            (``evaluation.validation_fraction``), for monitoring and best-epoch selection that
            never look at the query set; None without one.
    """

    train: Callable[[int], tf.data.Dataset]
    steps_per_epoch: int
    examples_per_epoch: int
    query: tf.data.Dataset
    database: tf.data.Dataset
    monitor_inputs: Any
    report: dict | None = None
    validation: tuple | None = None


@dataclasses.dataclass(frozen=True)
class RecordFields:
    """The task-specific part of the run record (``tf_bihalf.training.record.RunRecord``)."""

    input: InputSpec
    preprocessing: dict = dataclasses.field(default_factory=dict)
    backbone: str | None = None


class Task(abc.ABC):
    """One model family's inputs, models and loss (see the module docstring).

    Args:
        config: the resolved config (a dict; its keys are documented in ``configs/``).
    """

    #: The task's name, as in the configs' ``task`` key and ``RUN/run.json``.
    name: str = ""

    def __init__(self, config: dict):
        self.config = config

    @abc.abstractmethod
    def prepare(self, run: Workdir) -> None:
        """Loads and checks the data (called before any model is built)."""

    @abc.abstractmethod
    def build_models(self) -> TaskModels:
        """Builds the models (called inside the distribution strategy's scope)."""

    @abc.abstractmethod
    def build_data(self, models: TaskModels, run: Workdir) -> TaskData:
        """The training, query and database data in the training input space."""

    @abc.abstractmethod
    def record_fields(self, models: TaskModels) -> RecordFields:
        """What the exported encoder takes: input spec, preprocessing, backbone."""

    def display_images(self, split: str, indices):
        """The raw inputs of ``split`` (``"query"`` or ``"database"``) at ``indices`` as
        displayable images (uint8 or float arrays; see ``tf_bihalf.report.retrieval_grid``),
        or None when the task has nothing to show. Used for the retrieval pictures."""
        del split, indices
        return None

    def display_shape(self):
        """The image shape of flat inputs (e.g. ``(28, 28)`` for MNIST vectors), else None."""
        return None

    def title(self) -> str:
        """A short human-readable name of the run (plot titles, the log's last line)."""
        config = self.config
        return f"{config['dataset']} {config['hash_layer']} {config['bits']} bits"
