"""Retrieval mAP during training, logged to TensorBoard."""

from __future__ import annotations

import time

import keras
import tensorflow as tf
from absl import logging

from tf_bihalf import metrics
from tf_bihalf.callbacks.summary import SummaryCallback
from tf_bihalf.training import submodels
from tf_bihalf.training.evaluation import encode_dataset


class RetrievalEvaluation(SummaryCallback):
    """Encodes a query set and a database every ``every_n_epochs`` epochs and logs mAP@k.

    Written to TensorBoard (step = 0-based epoch, as Keras' ``TensorBoard``): ``retrieval/map``
    (ties by database order), and ``retrieval/map_ties_average`` when ``average_ties``. Also kept
    in ``self.history`` as ``[(epochs_completed, map), ...]``. Encoding shows progress bars.

    This is monitoring only: a fair report evaluates the final model, never the best epoch on
    the query set (docs/paper.md, "The metric"), so the trainers do not select epochs with it.

    Args:
        query: ``tf.data.Dataset`` of ``(inputs, labels)`` batches (the query set).
        database: the same for the database.
        log_dir: TensorBoard directory (e.g. ``RUN/tensorboard/retrieval``).
        every_n_epochs: evaluation period in epochs (>= 1).
        top_k: k of mAP@k; None for mAP@All.
        average_ties: also log the tie-averaged mAP.
        encoder: optional ``keras.Model`` input -> codes; default
            ``tf_bihalf.training.submodels.code_encoder(model)``.
        progress: show progress bars while encoding.

    Example:

    >>> evaluation = RetrievalEvaluation(query_ds, database_ds, "RUN/tensorboard/retrieval",
    ...                                  every_n_epochs=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        query,
        database,
        log_dir: str,
        every_n_epochs: int = 10,
        top_k: int | None = None,
        average_ties: bool = False,
        encoder: keras.Model | None = None,
        progress: bool = True,
    ):
        super().__init__()
        if int(every_n_epochs) < 1:
            raise ValueError(f"every_n_epochs must be >= 1; got {every_n_epochs!r}.")
        self.query = query
        self.database = database
        self.log_dir = str(log_dir)
        self.every_n_epochs = int(every_n_epochs)
        self.top_k = top_k
        self.average_ties = bool(average_ties)
        self.encoder = encoder
        self.progress = bool(progress)
        self.history: list[tuple[int, float]] = []
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.encoder is None:
            self.encoder = submodels.code_encoder(self.model)

    def evaluate(self, step: int) -> dict:
        """Encodes both sets, computes and logs mAP at ``step``; returns the values."""
        start = time.perf_counter()
        query_codes, query_labels = encode_dataset(
            self.encoder, self.query, self.progress, "encoding the query set"
        )
        database_codes, database_labels = encode_dataset(
            self.encoder, self.database, self.progress, "encoding the database"
        )
        arguments = (query_codes, database_codes, query_labels, database_labels)
        values = {"retrieval/map": metrics.mean_average_precision(*arguments, top_k=self.top_k)}
        if self.average_ties:
            values["retrieval/map_ties_average"] = metrics.mean_average_precision(
                *arguments, top_k=self.top_k, ties="average"
            )
        with self._summary_writer().as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self._writer.flush()
        logging.info(
            "epoch %d: mAP@%s = %.4f (%.1f s)",
            step + 1,
            self.top_k or "All",
            values["retrieval/map"],
            time.perf_counter() - start,
        )
        return values

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0:
            values = self.evaluate(epoch)
            self.history.append((epoch + 1, values["retrieval/map"]))
