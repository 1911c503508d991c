"""TFDS builders of the manual-download collections, prepared from tiny generated layouts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tf_bihalf.data.tfds_builders import manual_layouts
from tf_bihalf.data.tfds_builders.flickr25k import Flickr25k
from tf_bihalf.data.tfds_builders.mscoco import Mscoco
from tf_bihalf.data.tfds_builders.nus_wide import NusWide


def _save(path, array, image_format="JPEG"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format=image_format)


def _prepare(builder_class, data_dir, manual_dir):
    builder = builder_class(data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    examples = list(tfds.as_numpy(builder.as_dataset(split="full", shuffle_files=False)))
    return builder, sorted(examples, key=lambda example: example["index"])


def test_flickr25k_builder_owner_layout(tmp_path):
    rng = np.random.RandomState(0)
    manual = tmp_path / "manual"
    labels = (rng.rand(12, 24) < 0.2).astype(np.uint8)
    annotations = manual / "mirflickr25k_annotations_v080"
    annotations.mkdir(parents=True)
    for column, concept in enumerate(manual_layouts.FLICKR25K_CONCEPTS):
        numbers = np.flatnonzero(labels[:, column]) + 1
        (annotations / f"{concept}.txt").write_text("".join(f"{n}\n" for n in numbers))
    shapes = {}
    for number in range(1, 13):
        if number == 6:
            continue  # a missing image
        height, width = 5 + number, 7
        array = rng.randint(0, 256, (height, width, 3), dtype=np.uint8)
        if number == 3:
            array = array[..., 0]  # a grayscale JPEG
        _save(str(manual / "mirflickr" / f"im{number}.jpg"), array)
        shapes[number] = (height, width, 3)
    builder, examples = _prepare(Flickr25k, tmp_path / "tfds", manual)
    assert [example["index"] for example in examples] == [i for i in range(12) if i != 5]
    for example in examples:
        index = int(example["index"])
        assert example["file_name"].decode() == f"mirflickr/im{index + 1}.jpg"
        assert example["image"].shape == shapes[index + 1] and example["image"].dtype == np.uint8
        np.testing.assert_array_equal(example["labels"], labels[index])
    assert builder.info.features["labels"].shape == (24,)
    assert builder.info.splits["full"].num_examples == 11
    assert builder.info.metadata["skipped"]["count"] == 1
    assert builder.info.metadata["skipped"]["first"] == ["mirflickr/im6.jpg"]
    assert "mirflickr25k_annotations_v080" in Flickr25k.MANUAL_DOWNLOAD_INSTRUCTIONS

    # A fresh builder on the same data_dir reads the prepared data back, metadata included.
    reloaded = Flickr25k(data_dir=str(tmp_path / "tfds"))
    assert reloaded.is_prepared() and reloaded.info.metadata["collection_size"] == 12


def test_nus_wide_builder_list_file_in_subfolder(tmp_path):
    rng = np.random.RandomState(1)
    manual = tmp_path / "manual"
    root = manual / "nus_wide"
    labels = (rng.rand(6, 5) < 0.5).astype(np.uint8)
    lines = []
    for row in range(6):
        _save(str(root / "images" / f"{row}.png"), rng.randint(0, 256, (4, 4, 3), np.uint8), "PNG")
        lines.append(f"images/{row}.png " + " ".join(str(value) for value in labels[row]))
    (root / "all.txt").write_text("\n".join(lines) + "\n")
    builder, examples = _prepare(NusWide, tmp_path / "tfds", manual)
    assert len(examples) == 6
    np.testing.assert_array_equal(np.stack([example["labels"] for example in examples]), labels)
    first = np.asarray(Image.open(root / "images" / "0.png"))
    np.testing.assert_array_equal(examples[0]["image"], first)
    assert builder.info.metadata["skipped"]["count"] == 0
    assert builder.info.metadata["source"] == "list files all.txt"


def test_mscoco_builder_owner_json_and_errors(tmp_path):
    rng = np.random.RandomState(2)
    manual = tmp_path / "manual"
    category_ids = sorted(rng.choice(np.arange(1, 91), size=80, replace=False).tolist())
    categories = [{"id": cid, "name": f"c{cid}"} for cid in category_ids]
    (manual / "annotations").mkdir(parents=True)
    expected = []
    for folder, image_ids in (("train2014", [8, 3]), ("val2014", [5])):
        images = [{"id": i, "file_name": f"COCO_{folder}_{i:012d}.jpg"} for i in image_ids]
        annotations = []
        for image_id in sorted(image_ids):
            chosen = rng.choice(category_ids, size=2, replace=False)
            row = np.zeros(80, np.uint8)
            for cid in chosen:
                annotations.append({"image_id": image_id, "category_id": int(cid)})
                row[category_ids.index(int(cid))] = 1
            expected.append((f"{folder}/COCO_{folder}_{image_id:012d}.jpg", row))
            _save(str(manual / expected[-1][0]), rng.randint(0, 256, (6, 6, 3), np.uint8))
        document = {"images": images, "annotations": annotations, "categories": categories}
        (manual / "annotations" / f"instances_{folder}.json").write_text(json.dumps(document))
    builder, examples = _prepare(Mscoco, tmp_path / "tfds", manual)
    assert [example["file_name"].decode() for example in examples] == [p for p, _ in expected]
    for example, (_, row) in zip(examples, expected, strict=True):
        np.testing.assert_array_equal(example["labels"], row)
    assert builder.info.metadata["class_names"] == [f"c{cid}" for cid in category_ids]

    # A list with the wrong number of label columns is a clear error.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _save(str(wrong / "a.jpg"), rng.randint(0, 256, (4, 4, 3), np.uint8))
    (wrong / "all.txt").write_text("a.jpg 1 0 1\n")
    with pytest.raises(ValueError, match="3 label columns; this builder expects 80"):
        _prepare(Mscoco, tmp_path / "tfds_wrong", wrong)
    # An empty manual directory points at the instructions.
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError, match="instances_train2014.json"):
        _prepare(Mscoco, tmp_path / "tfds_empty", tmp_path / "empty")
