"""Pictures of retrieval: query/top-10 grids and TensorBoard's embedding projector.

- ``write_retrieval_grid``: a fixed, seeded sample of queries, each followed by its ``top``
  nearest database items in Hamming distance (ties broken by database index, the project's
  ``ties="stable"`` rule, docs/paper.md, "The metric"), each neighbour framed green when it is
  relevant (shares a label with the query: equal class ids, or a common label of multi-hot
  vectors) and red when not, with its Hamming distance and label under it (the query: its index
  and label). The qualitative figure of every hashing paper. Writes a PNG and returns the same
  picture as a uint8 (H, W, 3) array, ready for ``tf.summary.image(name, image[None], step)``.
- ``write_embedding_projector``: the codes as an embedding for TensorBoard's projector (a
  checkpoint holding the variable, ``metadata.tsv`` with the labels, ``projector_config.pbtxt``
  and, with thumbnails, a sprite image), so a user sees how the classes fall apart in Hamming
  space: ``tensorboard --logdir LOG_DIR``, "Projector" tab.

Images may be uint8 (0..255) or float; float images within [0, 1] are shown as they are, other
float images are min-max scaled per image (so standardised or [-1, 1] inputs still display).
Shapes: (N, H, W) or (N, H, W, 1) grayscale, (N, H, W, 3) colour, flat vectors (N, D) with
``image_shape=(H, W)`` or ``(H, W, C)`` (e.g. MNIST's 784 values with ``(28, 28)``), or video
clips (N, T, H, W, C), shown by their middle frame.

Example:

>>> image = write_retrieval_grid(
...     "RUN/plots/retrieval.png", test_images, test_labels, train_images, train_labels,
...     query_codes, database_codes, image_shape=(28, 28))  # doctest: +SKIP
>>> tf.summary.image("retrieval", image[None], step=epoch)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tf_bihalf import codes as codes_lib

QUERY_COLOUR = (40, 90, 200)
RELEVANT_COLOUR = (0, 160, 0)
IRRELEVANT_COLOUR = (215, 0, 0)
BACKGROUND = (255, 255, 255)

# Layout of the grid, in pixels (see ``tile_origin``).
FRAME = 3
GAP = 4
SEPARATOR = 14  # Extra space between the query column and its neighbours.
LABEL = 13  # Text strip under each tile.
PAD = 6

PROJECTOR_TENSOR = "codes"
SPRITE_MAX_SIDE = 8192  # TensorBoard's limit on the sprite image.


@dataclasses.dataclass
class RetrievalExamples:
    """What a retrieval grid shows: per sampled query, its neighbours and their relevance."""

    query_indices: np.ndarray  # int64 (Q,), sorted
    neighbours: np.ndarray  # int64 (Q, top), database indices, nearest first
    distances: np.ndarray  # int64 (Q, top), Hamming distances
    relevant: np.ndarray  # bool (Q, top)


def select_queries(num_total: int, num_queries: int, seed: int = 0) -> np.ndarray:
    """``min(num_queries, num_total)`` distinct indices drawn with ``seed``, sorted."""
    if num_total < 1:
        raise ValueError("There are no queries to draw from.")
    if num_queries < 1:
        raise ValueError(f"num_queries must be at least 1; got {num_queries}.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_total, size=min(num_queries, num_total), replace=False))


def _bits(codes, name: str) -> np.ndarray:
    return codes_lib.to_bits(np.asarray(codes), name=name)


def hamming_neighbours(query_codes, database_codes, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` nearest database codes of each query, ties broken by database index.

    Codes are ±1, {0, 1} or bool (N, K). Returns ``(indices, distances)``, both int64
    (Q, min(top, N)).
    """
    query = _bits(query_codes, "query_codes")
    database = _bits(database_codes, "database_codes")
    if query.shape[1] != database.shape[1]:
        raise ValueError(
            f"query_codes have {query.shape[1]} bits but database_codes have {database.shape[1]}."
        )
    if top < 1:
        raise ValueError(f"top must be at least 1; got {top}.")
    top = min(top, database.shape[0])
    indices = np.empty((query.shape[0], top), dtype=np.int64)
    distances = np.empty((query.shape[0], top), dtype=np.int64)
    for row, code in enumerate(query):
        distance = np.count_nonzero(database != code, axis=1)
        order = np.argsort(distance, kind="stable")[:top]
        indices[row] = order
        distances[row] = distance[order]
    return indices, distances


def _relevance(query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
    """Relevant (Q, M): equal class ids (1-D labels), or a shared label (multi-hot rows)."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == database_labels
    return np.einsum("qc,qmc->qm", query_labels.astype(bool), database_labels.astype(bool)) > 0


def _check_labels(labels, count: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.shape[0] != count:
        raise ValueError(
            f"{name} must be class ids (N,) or multi-hot (N, C) with N = {count}; got shape "
            f"{labels.shape}."
        )
    return labels


def retrieval_examples(
    query_labels,
    database_labels,
    query_codes,
    database_codes,
    num_queries: int = 8,
    top: int = 10,
    seed: int = 0,
) -> RetrievalExamples:
    """The queries (seeded sample), neighbours, distances and relevance a grid shows."""
    query_codes = np.asarray(query_codes)
    database_codes = np.asarray(database_codes)
    query_labels = _check_labels(query_labels, len(query_codes), "query_labels")
    database_labels = _check_labels(database_labels, len(database_codes), "database_labels")
    if query_labels.ndim != database_labels.ndim:
        raise ValueError("query_labels and database_labels must both be class ids or multi-hot.")
    chosen = select_queries(len(query_codes), num_queries, seed)
    neighbours, distances = hamming_neighbours(query_codes[chosen], database_codes, top)
    relevant = _relevance(query_labels[chosen], database_labels[neighbours])
    return RetrievalExamples(chosen, neighbours, distances, relevant)


def _display_images(images, image_shape: Sequence[int] | None, name: str) -> np.ndarray:
    """Images in any accepted form -> float32 (N, H, W, 3) in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 5:  # Video clips (N, T, H, W, C): the middle frame stands for the clip.
        images = images[:, images.shape[1] // 2]
    if images.ndim == 2:
        if image_shape is None:
            raise ValueError(
                f"{name} are flat vectors {images.shape}; pass image_shape=(H, W) or (H, W, C)."
            )
        if math.prod(image_shape) != images.shape[1]:
            raise ValueError(
                f"image_shape {tuple(image_shape)} has {math.prod(image_shape)} values but "
                f"{name} rows have {images.shape[1]}."
            )
        images = images.reshape((images.shape[0], *image_shape))
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must be (N, H, W), (N, H, W, 1), (N, H, W, 3) or flat (N, D); got "
            f"{images.shape}."
        )
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_:
        images = images.astype(np.float32)
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            low = images.min(axis=(1, 2, 3), keepdims=True)
            high = images.max(axis=(1, 2, 3), keepdims=True)
            images = (images - low) / np.maximum(high - low, 1e-12)
    else:
        raise ValueError(f"{name} must be numeric; got dtype {images.dtype}.")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.clip(images, 0.0, 1.0)


def _tile_size(height: int, width: int, tile: int) -> tuple[int, int]:
    scale = tile / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float (H, W, 3) in [0, 1] -> uint8 (h, w, 3): nearest when enlarging, box when shrinking."""
    pixels = Image.fromarray(np.round(image * 255).astype(np.uint8))
    if pixels.size != (size[1], size[0]):
        enlarging = size[0] >= image.shape[0]
        resample = Image.Resampling.NEAREST if enlarging else Image.Resampling.BOX
        pixels = pixels.resize((size[1], size[0]), resample)
    return np.asarray(pixels)


def tile_origin(row: int, column: int, tile_height: int, tile_width: int) -> tuple[int, int]:
    """Top-left pixel (y, x) of the frame of grid cell (row, column); column 0 is the query."""
    x = PAD + column * (tile_width + 2 * FRAME + GAP) + (SEPARATOR if column > 0 else 0)
    y = PAD + row * (tile_height + 2 * FRAME + LABEL + GAP)
    return y, x


def _label_text(labels: np.ndarray, index: int, class_names: Sequence[str] | None) -> str:
    label = labels[index]
    if labels.ndim == 1:
        value = int(label)
        return str(class_names[value]) if class_names is not None else str(value)
    on = np.flatnonzero(label)
    names = [str(class_names[i]) if class_names is not None else str(i) for i in on]
    return "+".join(names) or "-"


def _pick(images, indices: np.ndarray, count: int, name: str):
    """The rows ``indices`` of ``images``: an array of all ``count`` items, or a callable that
    returns the images of the given indices (so only the shown items are ever read)."""
    if callable(images):
        picked = np.asarray(images(indices))
        if len(picked) != len(indices):
            raise ValueError(
                f"{name}({len(indices)} indices) returned {len(picked)} images, not one per index."
            )
        return picked
    images = np.asarray(images)
    if len(images) != count:
        raise ValueError(f"{name} has {len(images)} images but there are {count} labels.")
    return images[indices]


def write_retrieval_grid(
    path: str,
    query_images,
    query_labels,
    database_images,
    database_labels,
    query_codes,
    database_codes,
    num_queries: int = 8,
    top: int = 10,
    seed: int = 0,
    *,
    image_shape: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    tile: int = 64,
) -> np.ndarray:
    """Writes the retrieval grid PNG to ``path`` and returns it as uint8 (H, W, 3).

    Args:
      path: The PNG to write (directories are created).
      query_images, database_images: The images (see the module doc for accepted forms), in the
        order of the codes and labels; or callables ``indices -> images`` that return just the
        requested rows (e.g. decoding image files), so only the shown items are read.
      query_labels, database_labels: Class ids (N,) or multi-hot (N, C).
      query_codes, database_codes: ±1, {0, 1} or bool codes (N, K).
      num_queries: Queries drawn (without replacement) with ``seed``; the same seed gives the
        same queries in every epoch and every run over the same query set.
      top: Neighbours shown per query, nearest first, ties by database index.
      image_shape: (H, W) or (H, W, C) for flat image vectors.
      class_names: Names for the class ids (shown under the query and neighbours).
      tile: The longer side of each shown image, in pixels.

    Returns:
      The grid as a uint8 (H, W, 3) array (what the PNG holds).
    """
    examples = retrieval_examples(
        query_labels, database_labels, query_codes, database_codes, num_queries, top, seed
    )
    query_labels = np.asarray(query_labels)
    database_labels = np.asarray(database_labels)
    query_position = {int(index): row for row, index in enumerate(examples.query_indices)}
    queries = _display_images(
        _pick(query_images, examples.query_indices, len(query_labels), "query_images"),
        image_shape,
        "query_images",
    )
    shown = np.unique(examples.neighbours)
    position = {int(index): row for row, index in enumerate(shown)}
    database_shown = _display_images(
        _pick(database_images, shown, len(database_labels), "database_images"),
        image_shape,
        "database_images",
    )
    if database_shown.shape[1:3] != queries.shape[1:3]:
        raise ValueError(
            f"query images are {queries.shape[1:3]} but database images are "
            f"{database_shown.shape[1:3]}."
        )
    tile_height, tile_width = _tile_size(queries.shape[1], queries.shape[2], tile)
    rows, columns = examples.neighbours.shape
    bottom, right = tile_origin(rows, columns + 1, tile_height, tile_width)
    canvas = Image.new("RGB", (right - GAP + PAD, bottom - GAP + PAD), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()

    def put(row: int, column: int, image: np.ndarray, colour, text: str) -> None:
        y, x = tile_origin(row, column, tile_height, tile_width)
        draw.rectangle(
            [x, y, x + tile_width + 2 * FRAME - 1, y + tile_height + 2 * FRAME - 1], fill=colour
        )
        canvas.paste(
            Image.fromarray(_resize(image, (tile_height, tile_width))), (x + FRAME, y + FRAME)
        )
        limit = tile_width + 2 * FRAME + GAP
        while len(text) > 1 and draw.textlength(text, font=font) > limit:
            text = text[:-2] + "…"  # Shortened to the tile's width.
        draw.text((x, y + tile_height + 2 * FRAME), text, fill=(0, 0, 0), font=font)

    for row, query in enumerate(examples.query_indices):
        put(
            row,
            0,
            queries[query_position[int(query)]],
            QUERY_COLOUR,
            f"#{query} {_label_text(query_labels, query, class_names)}",
        )
        for column in range(columns):
            index = int(examples.neighbours[row, column])
            colour = RELEVANT_COLOUR if examples.relevant[row, column] else IRRELEVANT_COLOUR
            put(
                row,
                column + 1,
                database_shown[position[index]],
                colour,
                f"d={examples.distances[row, column]} "
                f"{_label_text(database_labels, index, class_names)}",
            )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path, format="PNG")
    return np.asarray(canvas, dtype=np.uint8)


def _metadata_rows(labels: np.ndarray, class_names: Sequence[str] | None) -> list[str]:
    rows = []
    for index in range(len(labels)):
        text = _label_text(labels, index, class_names)
        rows.append(f"{text.replace(chr(9), ' ').replace(chr(10), ' ')}\t{index}")
    return rows


def _sprite(thumbnails, image_shape, count: int) -> tuple[Image.Image, tuple[int, int]]:
    images = _display_images(thumbnails, image_shape, "thumbnails")
    if len(images) != count:
        raise ValueError(f"thumbnails has {len(images)} images but there are {count} codes.")
    side = math.ceil(math.sqrt(count))
    height, width = images.shape[1:3]
    longest = min(max(height, width), SPRITE_MAX_SIDE // side)
    if longest < 1:
        raise ValueError(
            f"{count} thumbnails do not fit TensorBoard's {SPRITE_MAX_SIDE} px sprite."
        )
    tile_height, tile_width = _tile_size(height, width, longest)
    sprite = Image.new("RGB", (side * tile_width, side * tile_height), BACKGROUND)
    for index, image in enumerate(images):
        row, column = divmod(index, side)
        sprite.paste(
            Image.fromarray(_resize(image, (tile_height, tile_width))),
            (column * tile_width, row * tile_height),
        )
    return sprite, (tile_height, tile_width)


def write_embedding_projector(
    log_dir: str,
    codes,
    labels,
    thumbnails=None,
    class_names: Sequence[str] | None = None,
    *,
    image_shape: Sequence[int] | None = None,
) -> dict[str, str]:
    """Writes the codes as a TensorBoard projector embedding into ``log_dir``.

    Files: ``embedding.ckpt-1.*`` and ``checkpoint`` (the ±1 codes as the float32 variable
    ``codes``), ``metadata.tsv`` (columns ``label`` and ``index``: the class name or id, or the
    multi-hot labels joined by ``+``, and the row's index), ``sprite.png`` with thumbnails (at
    most 8192 px a side, thumbnails shrunk to fit) and ``projector_config.pbtxt``. The checkpoint
    is found by TensorBoard through ``log_dir/checkpoint``, so the directory can be moved.

    Args:
      log_dir: A TensorBoard log directory (e.g. ``RUN/tensorboard/projector``).
      codes: ±1, {0, 1} or bool (N, K); shown as ±1.
      labels: Class ids (N,) or multi-hot (N, C).
      thumbnails: Optional images (N, ...), in any form ``write_retrieval_grid`` accepts.
      class_names: Optional names for the class ids (or the multi-hot columns).
      image_shape: (H, W) or (H, W, C) for flat thumbnail vectors.

    Returns:
      The written files by role: ``checkpoint``, ``metadata``, ``config`` and maybe ``sprite``.
    """
    import tensorflow as tf  # Imported here: the grid functions do not need TensorFlow.
    from tensorboard.plugins import projector

    embedding = codes_lib.to_bits(np.asarray(codes), name="codes").astype(np.float32) * 2 - 1
    labels = _check_labels(labels, len(embedding), "labels")
    os.makedirs(log_dir, exist_ok=True)
    files = {}
    config = projector.ProjectorConfig()
    entry = config.embeddings.add()
    entry.tensor_name = f"{PROJECTOR_TENSOR}/.ATTRIBUTES/VARIABLE_VALUE"
    files["metadata"] = os.path.join(log_dir, "metadata.tsv")
    with open(files["metadata"], "w") as file:
        file.write("label\tindex\n")
        file.write("\n".join(_metadata_rows(labels, class_names)) + "\n")
    entry.metadata_path = "metadata.tsv"
    if thumbnails is not None:
        sprite, (height, width) = _sprite(thumbnails, image_shape, len(embedding))
        files["sprite"] = os.path.join(log_dir, "sprite.png")
        sprite.save(files["sprite"], format="PNG")
        entry.sprite.image_path = "sprite.png"
        entry.sprite.single_image_dim.extend([width, height])
    checkpoint = tf.train.Checkpoint(**{PROJECTOR_TENSOR: tf.Variable(embedding)})
    files["checkpoint"] = checkpoint.save(os.path.join(log_dir, "embedding.ckpt"))
    projector.visualize_embeddings(log_dir, config)
    files["config"] = os.path.join(log_dir, "projector_config.pbtxt")
    return files
