"""tf_bihalf.report.retrieval_grid: neighbour choice, relevance frames, image forms, projector."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from tf_bihalf.report import retrieval_grid as grid


def naive_neighbours(query_codes, database_codes, top):
    """Reference: sort (distance, database index) pairs in plain Python."""
    indices, distances = [], []
    for query in query_codes:
        pairs = sorted(
            (sum(int(a != b) for a, b in zip(query, code, strict=True)), index)
            for index, code in enumerate(database_codes)
        )[:top]
        distances.append([distance for distance, _ in pairs])
        indices.append([index for _, index in pairs])
    return np.array(indices), np.array(distances)


def random_codes(rng, count, bits):
    return np.where(rng.random((count, bits)) < 0.5, -1, 1).astype(np.int8)


@pytest.mark.parametrize("bits", [4, 12])
def test_neighbours_match_a_naive_reference_with_many_ties(bits):
    rng = np.random.default_rng(bits)
    query, database = random_codes(rng, 6, bits), random_codes(rng, 300, bits)
    indices, distances = grid.hamming_neighbours(query, database, top=10)
    expected_indices, expected_distances = naive_neighbours(query, database, 10)
    np.testing.assert_array_equal(distances, expected_distances)
    # With 4 bits and 300 items nearly every distance is tied: the database index decides.
    np.testing.assert_array_equal(indices, expected_indices)
    # {0, 1} and bool codes are the same codes.
    indices01, _ = grid.hamming_neighbours((query > 0).astype(np.uint8), database > 0, top=10)
    np.testing.assert_array_equal(indices01, expected_indices)


def test_queries_are_a_fixed_seeded_sample():
    first = grid.select_queries(1000, 8, seed=3)
    assert len(set(first)) == 8 and list(first) == sorted(first)
    np.testing.assert_array_equal(first, grid.select_queries(1000, 8, seed=3))
    assert not np.array_equal(first, grid.select_queries(1000, 8, seed=4))
    np.testing.assert_array_equal(grid.select_queries(5, 8), np.arange(5))


def _frame_colour(image, row, column, tile):
    y, x = grid.tile_origin(row, column, tile, tile)
    return tuple(int(value) for value in image[y + 1, x + 1])


def test_grid_marks_relevant_neighbours_and_writes_the_png(tmp_path):
    rng = np.random.default_rng(0)
    database_labels = rng.integers(0, 3, size=200)
    query_labels = rng.integers(0, 3, size=40)
    database_codes, query_codes = random_codes(rng, 200, 6), random_codes(rng, 40, 6)
    database_images = rng.integers(0, 256, size=(200, 28 * 28), dtype=np.uint8)  # Flat MNIST.
    query_images = rng.integers(0, 256, size=(40, 28 * 28), dtype=np.uint8)

    path = str(tmp_path / "plots" / "retrieval.png")
    image = grid.write_retrieval_grid(
        path,
        query_images,
        query_labels,
        database_images,
        database_labels,
        query_codes,
        database_codes,
        num_queries=5,
        top=10,
        seed=1,
        image_shape=(28, 28),
        tile=56,
    )
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    with Image.open(path) as saved:
        np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), image)

    chosen = grid.select_queries(40, 5, seed=1)
    expected, _ = naive_neighbours(query_codes[chosen], database_codes, 10)
    for row, query in enumerate(chosen):
        assert _frame_colour(image, row, 0, 56) == grid.QUERY_COLOUR
        for column in range(10):
            relevant = database_labels[expected[row, column]] == query_labels[query]
            colour = grid.RELEVANT_COLOUR if relevant else grid.IRRELEVANT_COLOUR
            assert _frame_colour(image, row, column + 1, 56) == colour
    # The shown pixels are the neighbour's own (nearest-neighbour upscaling by 2).
    y, x = grid.tile_origin(0, 1, 56, 56)
    shown = image[
        y + grid.FRAME : y + grid.FRAME + 56 : 2, x + grid.FRAME : x + grid.FRAME + 56 : 2, 0
    ]
    np.testing.assert_array_equal(shown, database_images[expected[0, 0]].reshape(28, 28))


def test_multi_hot_relevance_and_image_forms(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0]])
    codes = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    examples = grid.retrieval_examples(labels, labels, codes, codes, num_queries=4, top=4)
    # Query 1 (labels 1, 2) shares label 2 with item 2 only (and itself); the empty row none.
    np.testing.assert_array_equal(examples.neighbours[1], [1, 0, 3, 2])
    np.testing.assert_array_equal(examples.relevant[1], [True, False, False, True])
    assert not examples.relevant[3].any()

    for images in (
        rng.random((4, 8, 8)),  # Float grayscale in [0, 1].
        rng.normal(size=(4, 8, 8, 1)),  # Standardised: min-max scaled per image.
        rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8),  # RGB uint8.
        rng.random((4, 5, 8, 8, 3)),  # Video clips: the middle frame is shown.
    ):
        image = grid.write_retrieval_grid(
            str(tmp_path / "g.png"), images, labels, images, labels, codes, codes, top=3
        )
        assert image.shape[2] == 3
    with pytest.raises(ValueError, match="pass image_shape"):
        grid.write_retrieval_grid(
            str(tmp_path / "g.png"),
            rng.random((4, 64)),
            labels,
            rng.random((4, 64)),
            labels,
            codes,
            codes,
        )
    with pytest.raises(ValueError, match="query_codes have 2 bits but database_codes have 3"):
        grid.hamming_neighbours(codes, np.ones((4, 3)), top=2)


def test_embedding_projector_files(tmp_path):
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    rng = np.random.default_rng(2)
    codes = random_codes(rng, 50, 16)
    labels = rng.integers(0, 3, size=50)
    thumbnails = rng.integers(0, 256, size=(50, 28 * 28), dtype=np.uint8)
    log_dir = str(tmp_path / "projector")
    files = grid.write_embedding_projector(
        log_dir,
        codes,
        labels,
        thumbnails,
        class_names=["zero", "one", "two"],
        image_shape=(28, 28),
    )

    config = projector.ProjectorConfig()
    with open(os.path.join(log_dir, "projector_config.pbtxt")) as file:
        text_format.Parse(file.read(), config)
    (entry,) = config.embeddings
    assert entry.metadata_path == "metadata.tsv" and entry.sprite.image_path == "sprite.png"
    assert list(entry.sprite.single_image_dim) == [28, 28]

    # TensorBoard finds the checkpoint through log_dir/checkpoint and reads the tensor by name.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(log_dir))
    np.testing.assert_array_equal(reader.get_tensor(entry.tensor_name), codes.astype(np.float32))
    assert files["checkpoint"].startswith(os.path.join(log_dir, "embedding.ckpt"))

    with open(files["metadata"]) as file:
        lines = file.read().splitlines()
    assert lines[0] == "label\tindex" and len(lines) == 51
    assert lines[1] == f"{['zero', 'one', 'two'][labels[0]]}\t0"

    with Image.open(files["sprite"]) as sprite:
        assert sprite.size == (8 * 28, 8 * 28)  # ceil(sqrt(50)) = 8 thumbnails a side.
        pixels = np.asarray(sprite.convert("L"))
    np.testing.assert_array_equal(pixels[28:56, 0:28], thumbnails[8].reshape(28, 28))


def test_images_can_be_read_lazily_for_the_shown_rows_only(tmp_path):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=120)
    codes = random_codes(rng, 120, 8)
    images = rng.integers(0, 256, size=(120, 10, 10), dtype=np.uint8)
    requested = []

    def read(indices):
        requested.append(np.asarray(indices).copy())
        return images[indices]

    eager = grid.write_retrieval_grid(
        str(tmp_path / "eager.png"), images, labels, images, labels, codes, codes, 3, 5, seed=2
    )
    lazy = grid.write_retrieval_grid(
        str(tmp_path / "lazy.png"), read, labels, read, labels, codes, codes, 3, 5, seed=2
    )
    np.testing.assert_array_equal(lazy, eager)
    examples = grid.retrieval_examples(labels, labels, codes, codes, 3, 5, seed=2)
    np.testing.assert_array_equal(requested[0], examples.query_indices)
    np.testing.assert_array_equal(requested[1], np.unique(examples.neighbours))
    with pytest.raises(ValueError, match="returned 2 images, not one per index"):
        grid.write_retrieval_grid(
            str(tmp_path / "bad.png"),
            lambda indices: images[:2],
            labels,
            images,
            labels,
            codes,
            codes,
            3,
            5,
        )
