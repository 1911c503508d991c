"""Pictures of retrieval written by every run: a query / top-10 grid and the embedding projector.

``write_retrieval_pictures(task, run, query, database, seed)`` draws, after the final
evaluation:

- ``RUN/plots/retrieval.png`` (and the same picture as the TensorBoard image ``retrieval/grid``
  in ``RUN/tensorboard/retrieval``): a fixed, seeded sample of 8 queries, each with its 10 nearest
  database items by Hamming distance (ties by database order), relevant ones framed green,
  the others red (``tf_bihalf.report.retrieval_grid``);
- ``RUN/tensorboard/projector/``: the codes of a seeded sample of at most ``projector_size``
  database items for TensorBoard's embedding projector, with their labels and thumbnails, so one
  sees how the classes fall apart in Hamming space.

Only the images that are shown are read (``Task.display_images(split, indices)``, passed as a
callable); a task that has no displayable inputs returns None and gets no pictures.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from tf_bihalf.report import retrieval_grid

NUM_QUERIES = 8
TOP = 10
PROJECTOR_SIZE = 1000


def write_retrieval_pictures(
    task, run, query: tuple, database: tuple, seed: int, projector_size: int = PROJECTOR_SIZE
) -> list[str]:
    """Writes the grid and the projector files (see the module docstring); returns the PNG paths.

    Args:
        task: the run's ``Task`` (``display_images`` and ``display_shape``).
        run: the ``Workdir``.
        query, database: ``(codes, labels)`` of the final evaluation.
        seed: the run's seed (the sample of queries and of projector items).
        projector_size: at most this many database items in the projector.
    """
    (query_codes, query_labels), (database_codes, database_labels) = query, database
    if query_labels is None or database_labels is None:
        return []
    if task.display_images("query", np.zeros(0, np.int64)) is None:
        return []  # the task has nothing to show
    path = os.path.join(run.plots_dir, "retrieval.png")
    # Callables: only the shown queries and neighbours are read (image files stay on disk).
    picture = retrieval_grid.write_retrieval_grid(
        path,
        lambda rows: task.display_images("query", rows),
        query_labels,
        lambda rows: task.display_images("database", rows),
        database_labels,
        query_codes,
        database_codes,
        num_queries=NUM_QUERIES,
        top=TOP,
        seed=seed,
        image_shape=task.display_shape(),
    )
    writer = tf.summary.create_file_writer(os.path.join(run.tensorboard_dir, "retrieval"))
    with writer.as_default(step=0):
        tf.summary.image("retrieval/grid", picture[None], step=0)
    writer.close()

    count = min(int(projector_size), len(database_codes))
    sample = np.sort(np.random.default_rng(seed).choice(len(database_codes), count, replace=False))
    thumbnails = task.display_images("database", sample)
    retrieval_grid.write_embedding_projector(
        os.path.join(run.tensorboard_dir, "projector"),
        database_codes[sample],
        database_labels[sample],
        thumbnails,
        image_shape=task.display_shape(),
    )
    logging.info("Retrieval pictures: %s, %s", path, os.path.join(run.tensorboard_dir, "projector"))
    return [path]
