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

Only the images that are shown are read (``Task.display_images(split, indices)``); a task that
has no displayable inputs returns None and gets no pictures.
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
    examples = retrieval_grid.retrieval_examples(
        query_labels, database_labels, query_codes, database_codes, NUM_QUERIES, TOP, seed
    )
    # Only the shown items are read: the chosen queries and the union of their neighbours (the
    # top 10 of a query within that union, in database order, is its top 10 in the database).
    query_rows = examples.query_indices
    database_rows = np.unique(examples.neighbours)
    query_images = task.display_images("query", query_rows)
    database_images = task.display_images("database", database_rows)
    if query_images is None or database_images is None:
        return []
    path = os.path.join(run.plots_dir, "retrieval.png")
    picture = retrieval_grid.write_retrieval_grid(
        path,
        query_images,
        query_labels[query_rows],
        database_images,
        database_labels[database_rows],
        query_codes[query_rows],
        database_codes[database_rows],
        num_queries=len(query_rows),
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
