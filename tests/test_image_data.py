"""Image datasets, protocols, split files and the tf.data pipeline, on generated data.

Every dataset is generated here in its real on-disk format (CIFAR-10 binary batches prepared by the
real TFDS ``cifar10`` builder, the MIRFlickr / NUS-WIDE / COCO owner layouts, list files, class
folders), and the protocol splits are compared with small reimplementations of the rules.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_bihalf.data import image_pipeline, list_files, protocols
from tf_bihalf.data.protocols import (
    ImageSet,
    load_protocol,
    verify_splits,
    write_splits,
)
from tf_bihalf.data.protocols import cifar10 as cifar10_protocol
from tf_bihalf.data.tfds_builders import manual_layouts


@pytest.fixture(autouse=True)
def _private_check_cache(tmp_path, monkeypatch):
    """Decode-check results go to a cache of this test only."""
    monkeypatch.setenv("TF_BIHALF_DATA", str(tmp_path / "tf_bihalf_cache"))


def _save(path: str, array: np.ndarray, image_format: str = "PNG", mode: str | None = None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, format=image_format)


def _random_image(rng, height=6, width=5):
    return rng.randint(0, 256, size=(height, width, 3), dtype=np.uint8)


def _truncated_jpeg(path: str, rng) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_random_image(rng, 96, 96)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    with open(path, "wb") as handle:  # the header is intact, the scan data cut short
        handle.write(data[: (3 * len(data)) // 4])


# ---------------------------------------------------------------------------------------------
# CIFAR-10 through the real TFDS builder (its download replaced by generated binary batches).

CIFAR_PER_CLASS_TRAIN, CIFAR_PER_CLASS_TEST = 6, 2


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    import tensorflow_datasets as tfds

    base = tmp_path_factory.mktemp("cifar")
    source = base / "extracted" / "cifar-10-batches-bin"
    source.mkdir(parents=True)
    rng = np.random.RandomState(123)
    train_labels = np.repeat(np.arange(10), CIFAR_PER_CLASS_TRAIN)
    rng.shuffle(train_labels)
    test_labels = np.repeat(np.arange(10), CIFAR_PER_CLASS_TEST)
    rng.shuffle(test_labels)
    images = rng.randint(0, 256, size=(len(train_labels) + len(test_labels), 3, 32, 32))
    images = images.astype(np.uint8)

    def records(labels, planes):
        return b"".join(
            bytes([label]) + plane.tobytes() for label, plane in zip(labels, planes, strict=True)
        )

    per_file = len(train_labels) // 5
    for number in range(5):
        part = slice(number * per_file, (number + 1) * per_file)
        (source / f"data_batch_{number + 1}.bin").write_bytes(
            records(train_labels[part], images[part])
        )
    (source / "test_batch.bin").write_bytes(records(test_labels, images[len(train_labels) :]))
    (source / "batches.meta.txt").write_text(
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"
    )
    patch = pytest.MonkeyPatch()
    patch.setattr(
        tfds.download.DownloadManager,
        "download_and_extract",
        lambda self, url: str(base / "extracted"),
    )
    patch.setattr(cifar10_protocol, "check_reachable", lambda host, timeout=5.0: None)
    data_dir = str(base / "tfds")
    try:
        protocols.load_cifar10_pool(data_dir)  # prepares TFDS cifar10 once
    finally:
        patch.undo()
    pool_images = np.transpose(images, (0, 2, 3, 1))
    pool_labels = np.concatenate([train_labels, test_labels]).astype(np.int64)
    return data_dir, pool_images, pool_labels


def _reference_cifar(labels, seed, num_query, num_database, num_train):
    """The reference construction with numpy's global RNG (np.random.seed + permutation)."""
    np.random.seed(seed)
    query, database, train = [], [], []
    for label in range(10):
        index = np.where(labels == label)[0]
        index = index[np.random.permutation(index.shape[0])]
        query.extend(index[:num_query])
        database.extend(index[num_query : num_query + num_database])
        if num_train is None:
            train.extend(index[num_query : num_query + num_database])
        else:
            train.extend(index[num_query : num_query + num_train])
    return sorted(query), sorted(database), sorted(train)


def test_cifar10_pool_is_tfds_order_train_then_test(cifar):
    data_dir, pool_images, pool_labels = cifar
    images, labels, names = protocols.load_cifar10_pool(data_dir, download=False)
    np.testing.assert_array_equal(images, pool_images)
    np.testing.assert_array_equal(labels, pool_labels)
    assert names[0] == "airplane" and len(names) == 10


@pytest.mark.parametrize("protocol", ["I", "II"])
def test_cifar10_protocols_match_reference_rule(cifar, protocol):
    data_dir, pool_images, pool_labels = cifar
    num_train = None if protocol == "I" else 3
    options = {"num_query_per_class": 2, "num_database_per_class": 6}
    if protocol == "II":
        options["num_train_per_class"] = num_train
    splits = load_protocol(
        "cifar10", data_dir=data_dir, protocol=protocol, download=False, **options
    )
    query, database, train = _reference_cifar(pool_labels, 0, 2, 6, num_train)
    np.testing.assert_array_equal(splits.query.indices, query)
    np.testing.assert_array_equal(splits.database.indices, database)
    np.testing.assert_array_equal(splits.train.indices, train)
    for image_set in (splits.query, splits.database, splits.train):
        np.testing.assert_array_equal(image_set.images, pool_images[image_set.indices])
        np.testing.assert_array_equal(image_set.labels, pool_labels[image_set.indices])
        assert image_set.labels.dtype == np.int64 and image_set.paths is None
    assert np.bincount(splits.query.labels).tolist() == [2] * 10
    assert np.bincount(splits.database.labels).tolist() == [6] * 10
    assert len(splits.train) == (60 if protocol == "I" else 30)
    assert not set(splits.query.indices) & set(splits.database.indices)
    assert splits.num_classes == 10 and splits.protocol == protocol


def test_cifar10_seed_and_errors(cifar, tmp_path):
    data_dir, _, pool_labels = cifar
    options = {"num_query_per_class": 2, "num_database_per_class": 6, "download": False}
    first = load_protocol("cifar10", data_dir=data_dir, **options)
    again = load_protocol("cifar10", data_dir=data_dir, **options)
    other = load_protocol("cifar10", data_dir=data_dir, seed=1, **options)
    np.testing.assert_array_equal(first.query.indices, again.query.indices)
    assert not np.array_equal(first.query.indices, other.query.indices)
    np.testing.assert_array_equal(
        other.query.indices, _reference_cifar(pool_labels, 1, 2, 6, None)[0]
    )
    with pytest.raises(ValueError, match="fewer than the protocol needs"):
        load_protocol("cifar10", data_dir=data_dir, num_query_per_class=5, download=False)
    with pytest.raises(ValueError, match="protocols"):
        load_protocol("cifar10", data_dir=data_dir, protocol="III", download=False)
    with pytest.raises(ValueError, match="Unknown option"):
        load_protocol("cifar10", data_dir=data_dir, num_queries=5, download=False)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        load_protocol("cifar10", data_dir=str(tmp_path / "empty"), download=False)


def test_cifar10_split_files_are_pool_indices(cifar, tmp_path):
    data_dir, _, _ = cifar
    splits = load_protocol(
        "cifar10",
        data_dir=data_dir,
        protocol="II",
        num_query_per_class=2,
        num_database_per_class=6,
        num_train_per_class=3,
        download=False,
    )
    manifest = write_splits(splits, str(tmp_path))
    lines = (tmp_path / "query.txt").read_text().splitlines()
    assert lines == [
        f"{index} {label}"
        for index, label in zip(splits.query.indices, splits.query.labels, strict=True)
    ]
    assert manifest["entries"] == "indices" and manifest["counts"]["train"] == 30
    assert verify_splits(str(tmp_path), splits)["protocol"] == "II"


# ---------------------------------------------------------------------------------------------
# Flickr25k (MIRFlickr owner layout).


def _make_flickr(root, rng, num_images=60, missing=(), corrupt=(), unlabeled=(5, 17, 33)):
    labels = (rng.rand(num_images, 24) < 0.15).astype(np.uint8)
    labels[list(unlabeled)] = 0
    for row in range(num_images):
        if row not in unlabeled and not labels[row].any():
            labels[row, rng.randint(24)] = 1
    annotations = os.path.join(root, "mirflickr25k_annotations_v080")
    os.makedirs(annotations)
    for column, concept in enumerate(manual_layouts.FLICKR25K_CONCEPTS):
        numbers = np.flatnonzero(labels[:, column]) + 1
        with open(os.path.join(annotations, concept + ".txt"), "w") as handle:
            handle.write("".join(f"{number}\n" for number in numbers))
        # The "relevant" subsets must not be read as extra classes.
        with open(os.path.join(annotations, concept + "_r1.txt"), "w") as handle:
            handle.write("".join(f"{number}\n" for number in numbers[:1]))
    for number in range(1, num_images + 1):
        path = os.path.join(root, "mirflickr", f"im{number}.jpg")
        if number - 1 in missing:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            continue
        if number - 1 in corrupt:
            with open(path, "wb") as handle:
                handle.write(b"not a jpeg")
            continue
        _save(path, _random_image(rng), "JPEG")
    return labels


def _reference_random(num_items, seed, num_query, num_train):
    perm = np.random.RandomState(seed).permutation(num_items)
    database = perm[num_query:]
    return sorted(perm[:num_query]), sorted(database), sorted(database[:num_train])


def test_flickr25k_owner_layout_protocol(tmp_path):
    rng = np.random.RandomState(0)
    labels = _make_flickr(str(tmp_path / "flickr25k"), rng)
    splits = load_protocol("flickr25k", data_dir=str(tmp_path), num_query=10, num_train=20)
    query, database, train = _reference_random(60, 0, 10, 20)
    np.testing.assert_array_equal(splits.query.indices, query)
    np.testing.assert_array_equal(splits.database.indices, database)
    np.testing.assert_array_equal(splits.train.indices, train)
    np.testing.assert_array_equal(splits.database.labels, labels[database])
    assert splits.query.paths[0].endswith(f"mirflickr/im{query[0] + 1}.jpg")
    assert splits.num_classes == 24 and splits.class_names[-1] == "water"
    assert splits.report["unlabeled"] == 3 and splits.report["missing"] == 0
    assert splits.query.labels.dtype == np.uint8

    dropped = load_protocol(
        "flickr25k",
        data_dir=str(tmp_path / "flickr25k"),
        num_query=10,
        num_train=20,
        unlabeled="drop",
    )
    kept = np.flatnonzero(labels.any(axis=1))
    query, database, _ = _reference_random(57, 0, 10, 20)
    np.testing.assert_array_equal(dropped.query.indices, kept[query])
    np.testing.assert_array_equal(dropped.database.indices, kept[database])
    assert dropped.report["unlabeled"] == 3


def test_missing_and_corrupt_images_are_excluded_not_moved(tmp_path):
    rng = np.random.RandomState(0)
    clean_root, broken_root = tmp_path / "clean", tmp_path / "broken"
    _make_flickr(str(clean_root), np.random.RandomState(1))
    _make_flickr(str(broken_root), np.random.RandomState(1), missing=(0, 7), corrupt=(3,))
    _truncated_jpeg(str(broken_root / "mirflickr" / "im12.jpg"), rng)
    options = {"num_query": 10, "num_train": 20}
    clean = load_protocol("flickr25k", data_dir=str(clean_root), **options)
    broken = load_protocol("flickr25k", data_dir=str(broken_root), **options)
    # The default check decodes every image: the truncated JPEG (valid header) is found too.
    bad = {0: "missing", 7: "missing", 3: "corrupt", 11: "corrupt"}
    assert broken.report["missing"] == 2 and broken.report["corrupt"] == 2
    assert broken.report["verify"] == "decode"
    for name in ("query", "database", "train"):
        expected = [index for index in clean.split(name).indices if index not in bad]
        np.testing.assert_array_equal(broken.split(name).indices, expected)
        excluded = {os.path.basename(path): reason for path, reason in broken.excluded[name]}
        assert excluded == {
            f"im{index + 1}.jpg": bad[index] for index in clean.split(name).indices if index in bad
        }
        assert broken.report["excluded"][name] == len(excluded)
    # The truncated JPEG has a valid header: only full decoding finds it.
    header = load_protocol("flickr25k", data_dir=str(broken_root), verify="header", **options)
    assert header.report["corrupt"] == 1
    exists = load_protocol("flickr25k", data_dir=str(broken_root), verify="exists", **options)
    assert exists.report["corrupt"] == 0 and exists.report["missing"] == 2
    nothing = load_protocol("flickr25k", data_dir=str(broken_root), verify="none", **options)
    assert nothing.report["missing"] == 0 and len(nothing.query) == len(clean.query)
    with pytest.raises(FileNotFoundError, match="unusable"):
        load_protocol("flickr25k", data_dir=str(broken_root), on_missing="raise", **options)
    with pytest.raises(ValueError, match="verify"):
        load_protocol("flickr25k", data_dir=str(broken_root), verify="all", **options)

    manifest = write_splits(broken, str(tmp_path / "splits"))
    excluded_lines = (tmp_path / "splits" / "excluded.txt").read_text().splitlines()
    assert "database missing mirflickr/im1.jpg" in excluded_lines or (
        "query missing mirflickr/im1.jpg" in excluded_lines
    )
    assert len(excluded_lines) == sum(broken.report["excluded"].values())
    assert manifest["report"]["missing"] == 2


# ---------------------------------------------------------------------------------------------
# NUS-WIDE (owner layout) and MS-COCO (owner JSON, HashNet-style lists).


def _make_nus_wide(root, rng, num_images=120, num_concepts=12):
    concepts = [f"concept{column:02d}" for column in range(num_concepts)]
    # Column frequencies decrease with a few random swaps, so "most frequent" is not "first".
    probabilities = np.linspace(0.5, 0.08, num_concepts)
    rng.shuffle(probabilities)
    labels = (rng.rand(num_images, num_concepts) < probabilities).astype(np.uint8)
    lines = []
    for row in range(num_images):
        folder = concepts[row % num_concepts]
        relative = f"Flickr/{folder}/{row:04d}_{1000 + row}.jpg"
        lines.append("C:\\ImageData\\" + relative.replace("/", "\\"))
        _save(os.path.join(root, relative), _random_image(rng), "JPEG")
    os.makedirs(os.path.join(root, "ImageList"))
    with open(os.path.join(root, "ImageList", "Imagelist.txt"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    label_dir = os.path.join(root, "Groundtruth", "AllLabels")
    os.makedirs(label_dir)
    for column, concept in enumerate(concepts):
        with open(os.path.join(label_dir, f"Labels_{concept}.txt"), "w") as handle:
            handle.write("".join(f"{value}\n" for value in labels[:, column]))
    # The concept order file lists the concepts in reverse name order.
    with open(os.path.join(root, "Concepts81.txt"), "w") as handle:
        handle.write("\n".join(reversed(concepts)) + "\n")
    order = list(reversed(range(num_concepts)))
    return labels[:, order], list(reversed(concepts))


def _reference_top_columns(labels, count):
    frequency = [(-int(labels[:, column].sum()), column) for column in range(labels.shape[1])]
    return sorted(column for _, column in sorted(frequency)[:count])


def test_nus_wide_protocols(tmp_path):
    rng = np.random.RandomState(0)
    labels, concepts = _make_nus_wide(str(tmp_path), rng)

    splits = load_protocol(
        "nus_wide", data_dir=str(tmp_path), protocol="I", num_concepts=4, num_query_per_class=3
    )
    columns = _reference_top_columns(labels, 4)
    assert splits.report["selected_columns"] == columns
    assert splits.class_names == [concepts[column] for column in columns]
    kept = np.flatnonzero(labels[:, columns].any(axis=1))
    assert splits.report["dropped_without_selected_concept"] == len(labels) - len(kept)
    # Reference: walk one permutation per concept, taking the first 3 unused carriers.
    perm = np.random.RandomState(0).permutation(len(kept))
    taken = []
    for column in columns:
        carriers = [item for item in perm if labels[kept[item], column] and item not in taken]
        taken.extend(carriers[:3])
    np.testing.assert_array_equal(splits.query.indices, sorted(kept[taken]))
    rest = sorted(set(kept) - set(kept[taken]))
    np.testing.assert_array_equal(splits.database.indices, rest)
    np.testing.assert_array_equal(splits.train.indices, rest)
    np.testing.assert_array_equal(splits.query.labels, labels[splits.query.indices][:, columns])
    assert len(splits.query) == 12 and splits.num_classes == 4
    assert (
        splits.query.paths[0]
        .replace(os.sep, "/")
        .startswith(str(tmp_path).replace(os.sep, "/") + "/Flickr/")
    )

    second = load_protocol(
        "nus_wide",
        data_dir=str(tmp_path),
        protocol="II",
        num_concepts=3,
        num_query=10,
        num_train=15,
    )
    columns = _reference_top_columns(labels, 3)
    kept = np.flatnonzero(labels[:, columns].any(axis=1))
    query, database, train = _reference_random(len(kept), 0, 10, 15)
    np.testing.assert_array_equal(second.query.indices, kept[query])
    np.testing.assert_array_equal(second.database.indices, kept[database])
    np.testing.assert_array_equal(second.train.indices, kept[train])
    assert second.report["missing"] == 0

    named = load_protocol(
        "nus_wide",
        data_dir=str(tmp_path),
        protocol="II",
        concepts=[concepts[1], concepts[0]],
        num_query=5,
        num_train=5,
    )
    assert named.class_names == [concepts[0], concepts[1]]
    with pytest.raises(ValueError, match="Unknown concept"):
        load_protocol("nus_wide", data_dir=str(tmp_path), protocol="II", concepts=["nope"])


def _make_coco(root, rng):
    categories = [{"id": cid, "name": f"category{cid}"} for cid in (1, 2, 5, 7, 90, 11)]
    expected_paths, expected_labels = [], []
    columns = {cid: column for column, cid in enumerate(sorted(c["id"] for c in categories))}
    os.makedirs(os.path.join(root, "annotations"))
    for folder, image_ids in (("train2014", [30, 4, 17, 8, 12, 2]), ("val2014", [9, 1, 40, 22])):
        images = [
            {"id": image_id, "file_name": f"COCO_{folder}_{image_id:012d}.jpg"}
            for image_id in image_ids
        ]
        annotations = []
        for image_id in sorted(image_ids):
            row = np.zeros(len(categories), dtype=np.uint8)
            if image_id not in (17, 40):  # two images without any object
                for cid in rng.choice([1, 2, 5, 7, 90, 11], size=rng.randint(1, 4)):
                    annotations.append({"image_id": image_id, "category_id": int(cid)})
                    row[columns[int(cid)]] = 1
            expected_paths.append(os.path.join(root, folder, f"COCO_{folder}_{image_id:012d}.jpg"))
            expected_labels.append(row)
            _save(expected_paths[-1], _random_image(rng), "JPEG")
        with open(os.path.join(root, "annotations", f"instances_{folder}.json"), "w") as handle:
            json.dump(
                {"images": images, "annotations": annotations, "categories": categories}, handle
            )
    return expected_paths, np.asarray(expected_labels)


def test_mscoco_owner_layout_and_hashnet_lists(tmp_path):
    rng = np.random.RandomState(0)
    paths, labels = _make_coco(str(tmp_path / "coco"), rng)
    collection = manual_layouts.read_collection("mscoco", str(tmp_path / "coco"))
    assert collection.paths == paths
    np.testing.assert_array_equal(collection.labels, labels)
    assert collection.class_names == [f"category{cid}" for cid in (1, 2, 5, 7, 11, 90)]

    splits = load_protocol("mscoco", data_dir=str(tmp_path / "coco"), num_query=2, num_train=3)
    kept = np.flatnonzero(labels.any(axis=1))
    assert len(kept) == 8 and splits.report["unlabeled"] == 2
    query, database, train = _reference_random(8, 0, 2, 3)
    np.testing.assert_array_equal(splits.query.indices, kept[query])
    np.testing.assert_array_equal(splits.train.indices, kept[train])
    assert splits.num_classes == 6

    # The same collection as HashNet-style database.txt + test.txt with a foreign path prefix.
    lists = tmp_path / "lists"
    lists.mkdir()
    lines = [
        "/home/someone/coco/"
        + os.path.relpath(path, tmp_path / "coco")
        + " "
        + " ".join(str(value) for value in row)
        for path, row in zip(paths, labels, strict=True)
    ]
    (lists / "database.txt").write_text("\n".join(lines[:7] + lines[2:3]) + "\n")  # a duplicate
    (lists / "test.txt").write_text("\n".join(lines[7:]) + "\n")
    pooled = load_protocol(
        "mscoco",
        data_dir=str(lists),
        image_root=str(tmp_path / "coco"),
        strip_prefix="/home/someone/coco/",
        num_query=2,
        num_train=3,
    )
    assert pooled.report["collection_size"] == 10 and pooled.report["missing"] == 0
    np.testing.assert_array_equal(pooled.query.indices, splits.query.indices)
    assert pooled.query.paths == splits.query.paths


def test_manual_dataset_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_protocol("flickr25k", data_dir=str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="docs/datasets.md"):
        load_protocol("nus_wide", data_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="Unknown dataset"):
        load_protocol("imagenet")
    with pytest.raises(ValueError, match="protocols"):
        load_protocol("nus_wide", data_dir=str(tmp_path / "empty"), protocol="III")


# ---------------------------------------------------------------------------------------------
# List files and user datasets.


def test_list_file_parsing(tmp_path):
    multi = tmp_path / "multi.txt"
    multi.write_text("# comment\n\na.jpg 0 1 1\nsub/b.jpg 1 0 0\n/abs/c.png 0 0 0\n")
    entries = list_files.read_list_file(str(multi))
    assert entries.label_format == "multi_hot" and entries.labels.dtype == np.uint8
    np.testing.assert_array_equal(entries.labels, [[0, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert entries.paths == [str(tmp_path / "a.jpg"), str(tmp_path / "sub" / "b.jpg"), "/abs/c.png"]
    assert entries.line_numbers == [3, 4, 5]

    ids = tmp_path / "ids.txt"
    ids.write_text("x.jpg 3\ny.jpg 0\n")
    entries = list_files.read_list_file(str(ids), image_root="/data")
    assert entries.label_format == "class_id" and entries.labels.dtype == np.int64
    assert entries.labels.tolist() == [3, 0] and entries.paths == ["/data/x.jpg", "/data/y.jpg"]

    spaced = tmp_path / "spaced.txt"
    spaced.write_text("my photos/a b.jpg 1 0\nother/c.jpg 0 1\n")
    entries = list_files.read_list_file(str(spaced), num_labels=2)
    assert entries.paths[0] == str(tmp_path / "my photos" / "a b.jpg")

    windows = tmp_path / "windows.txt"
    windows.write_text("C:\\data\\img\\a.jpg 2\n")
    entries = list_files.read_list_file(str(windows), strip_prefix="C:\\data", image_root="/d")
    assert entries.paths == ["/d/img/a.jpg"]

    cases = {
        "a.jpg 0 1\nb.jpg 0 1 1\n": r"bad\.txt:2: expected 2 label values",
        "a.jpg 0 1\nb.jpg 0 2\n": r"bad\.txt:2: multi-hot label values must be 0 or 1",
        "a.jpg 1\nb.jpg\n": r"bad\.txt:2: expected 'path label\.\.\.'",
        "a.jpg 1\nb.jpg x\n": r"bad\.txt:2: label 'x' is not an integer",
        "a.jpg 1\nb.jpg -1\n": r"bad\.txt:2: class id -1 is negative",
        "# only a comment\n": "has no entries",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            list_files.read_list_file(str(bad))
    bad.write_text("a.jpg 0 1\nb.jpg 1 1 0\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: class-id lists need exactly one label"):
        list_files.read_list_file(str(bad), label_format="class_id")
    with pytest.raises(FileNotFoundError):
        list_files.read_list_file(str(tmp_path / "absent.txt"))


def test_list_file_paths_only(tmp_path):
    listed = tmp_path / "images.txt"
    listed.write_text("# images to encode\na.jpg\n\nsub/b.png 0 1\n/abs/c.jpg\nC:\\x\\d.jpg 3\n")
    ids, paths = list_files.read_paths(str(listed))
    assert ids == ["a.jpg", "sub/b.png", "/abs/c.jpg", "C:\\x\\d.jpg"]
    assert paths[:3] == [str(tmp_path / "a.jpg"), str(tmp_path / "sub/b.png"), "/abs/c.jpg"]
    assert list_files.read_paths(str(listed), image_root="/r", strip_prefix="C:\\x")[1][3] == (
        "/r/d.jpg"
    )
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="names no images"):
        list_files.read_paths(str(tmp_path / "empty.txt"))
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        list_files.read_paths(str(tmp_path / "absent.txt"))
    os.mkfifo(tmp_path / "fifo.txt")  # would block a reader forever
    for read in (list_files.read_paths, list_files.read_list_file):
        with pytest.raises(ValueError, match="fifo.txt' is not a regular file"):
            read(str(tmp_path / "fifo.txt"))


def test_list_dataset_multi_hot_and_class_id(tmp_path):
    rng = np.random.RandomState(0)
    labels = (rng.rand(30, 5) < 0.3).astype(np.uint8)
    lines = []
    for row in range(30):
        _save(str(tmp_path / "images" / f"{row}.png"), _random_image(rng))
        lines.append(f"images/{row}.png " + " ".join(str(v) for v in labels[row]))
    (tmp_path / "all.txt").write_text("\n".join(lines) + "\n")
    splits = load_protocol(
        "list:all.txt", data_dir=str(tmp_path), num_query=6, num_train=10, seed=3
    )
    query, database, train = _reference_random(30, 3, 6, 10)
    np.testing.assert_array_equal(splits.query.indices, query)
    np.testing.assert_array_equal(splits.database.indices, database)
    np.testing.assert_array_equal(splits.train.indices, train)
    np.testing.assert_array_equal(splits.train.labels, labels[train])
    assert splits.num_classes == 5 and splits.report["unlabeled"] == int((~labels.any(1)).sum())
    again = load_protocol("list:all.txt", data_dir=str(tmp_path), num_query=6, num_train=10, seed=3)
    other = load_protocol("list:all.txt", data_dir=str(tmp_path), num_query=6, num_train=10, seed=4)
    assert again.query.paths == splits.query.paths and other.query.paths != splits.query.paths
    default = load_protocol(f"list:{tmp_path / 'all.txt'}")
    assert len(default.query) == 3 and len(default.train) == 27  # 10% queries, train = database

    class_ids = rng.randint(0, 3, size=30)
    (tmp_path / "ids.txt").write_text(
        "".join(f"images/{row}.png {class_ids[row]}\n" for row in range(30))
    )
    splits = load_protocol(f"list:{tmp_path / 'ids.txt'}", num_query_per_class=2)
    expected = _reference_per_class(class_ids, 0, lambda count: 2)
    np.testing.assert_array_equal(splits.query.indices, expected)
    assert splits.query.labels.dtype == np.int64 and splits.num_classes == 3


def _reference_per_class(class_ids, seed, num_query):
    rng = np.random.RandomState(seed)
    query = []
    for label in range(int(class_ids.max()) + 1):
        members = [index for index in range(len(class_ids)) if class_ids[index] == label]
        order = rng.permutation(len(members))
        query.extend(members[position] for position in order[: num_query(len(members))])
    return sorted(query)


def test_folder_dataset(tmp_path):
    rng = np.random.RandomState(0)
    counts = {"b_dog": 11, "a_cat": 25, "c_eel": 1}
    for name, count in counts.items():
        for number in range(count):
            nested = "nested/" if number % 4 == 0 else ""
            extension = [".png", ".JPG", ".jpeg", ".bmp"][number % 4]
            image_format = {".png": "PNG", ".JPG": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[
                extension
            ]
            _save(
                str(tmp_path / "photos" / name / f"{nested}{number:02d}{extension}"),
                _random_image(rng),
                image_format,
            )
    (tmp_path / "photos" / "a_cat" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / "a_cat" / ".hidden.png").write_bytes(b"")
    splits = load_protocol("folder:photos", data_dir=str(tmp_path), query_fraction=0.2)
    assert splits.class_names == ["a_cat", "b_dog", "c_eel"]
    class_ids = np.repeat([0, 1, 2], [25, 11, 1])
    expected = _reference_per_class(
        class_ids, 0, lambda count: 0 if count < 2 else max(1, int(np.floor(0.2 * count)))
    )
    np.testing.assert_array_equal(splits.query.indices, expected)
    assert np.bincount(splits.query.labels, minlength=3).tolist() == [5, 2, 0]
    assert len(splits.database) == 37 - 7 and splits.report["ignored_non_image_files"] == 1
    cat_paths = [path for path in splits.database.paths if "/a_cat/" in path]
    assert cat_paths == sorted(cat_paths)
    fixed = load_protocol(f"folder:{tmp_path / 'photos' / '..' / 'photos'}", num_train_per_class=1)
    assert np.bincount(fixed.query.labels, minlength=3).tolist() == [2, 1, 0]  # 10% default
    assert fixed.train.labels.tolist() == [0, 1, 2]
    assert fixed.dataset == f"folder:{tmp_path / 'photos'}"
    with pytest.raises(ValueError, match="Class 2 has 1 images, fewer than"):
        load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=1)
    with pytest.raises(FileNotFoundError):
        load_protocol(f"folder:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="query_fraction"):
        load_protocol(f"folder:{tmp_path / 'photos'}", query_fraction=1.5)


# ---------------------------------------------------------------------------------------------
# Split files.


def test_write_and_verify_splits_detects_tampering(tmp_path):
    rng = np.random.RandomState(0)
    _make_flickr(str(tmp_path / "data"), rng, num_images=30, missing=(4,), unlabeled=(5,))
    splits = load_protocol("flickr25k", data_dir=str(tmp_path / "data"), num_query=5, num_train=8)
    directory = tmp_path / "splits"
    manifest = write_splits(splits, str(directory))
    for name in ("train.txt", "query.txt", "database.txt", "excluded.txt"):
        data = (directory / name).read_bytes()
        assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["files"][name]["lines"] == data.count(b"\n")
    on_disk = json.loads((directory / "splits.json").read_text())
    assert on_disk == manifest
    assert manifest["dataset"] == "flickr25k" and manifest["seed"] == 0
    # im5 is missing: it is excluded from each split it was drawn into, nothing else moves.
    before = splits.report["counts_before_exclusion"]
    assert before["query"] == 5 and before["database"] == 25 and before["train"] == 8
    assert manifest["counts"] == {
        name: before[name] - splits.report["excluded"][name]
        for name in ("train", "query", "database")
    }
    assert splits.report["excluded"]["query"] + splits.report["excluded"]["database"] == 1
    assert manifest["label_format"] == "multi_hot" and manifest["num_classes"] == 24
    # The list files read back as the splits (paths relative to the image root).
    entries = list_files.read_list_file(
        str(directory / "query.txt"), image_root=str(tmp_path / "data")
    )
    assert entries.paths == splits.query.paths
    np.testing.assert_array_equal(entries.labels, splits.query.labels)
    assert verify_splits(str(directory), splits) == manifest

    other_seed = load_protocol(
        "flickr25k", data_dir=str(tmp_path / "data"), num_query=5, num_train=8, seed=1
    )
    with pytest.raises(ValueError, match="seed"):
        verify_splits(str(directory), other_seed)
    other_seed.seed = 0
    with pytest.raises(ValueError, match="differs from the one saved"):
        verify_splits(str(directory), other_seed)

    assert manifest["report"] == json.loads(json.dumps(splits.report))

    text = (directory / "query.txt").read_text()
    (directory / "query.txt").write_text(text.replace("im", "IM", 1))
    with pytest.raises(ValueError, match="Checksum mismatch for split file .*query.txt"):
        verify_splits(str(directory))
    (directory / "query.txt").write_text(text)
    verify_splits(str(directory))
    (directory / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train.txt"):
        verify_splits(str(directory))
    with pytest.raises(FileNotFoundError, match="manifest"):
        verify_splits(str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------------------------------
# The tf.data pipeline.


def test_pipeline_decodes_formats_and_channels(tmp_path):
    rng = np.random.RandomState(0)
    base = _random_image(rng, 12, 10)
    gray = base[..., 0]
    rgba = np.concatenate([base, rng.randint(0, 256, (12, 10, 1), dtype=np.uint8)], axis=-1)
    files = {
        "rgb.png": (base, "PNG", None),
        "gray.png": (gray, "PNG", None),
        "rgba.png": (rgba, "PNG", None),
        "rgb.bmp": (base, "BMP", None),
        "gray.jpg": (gray, "JPEG", None),
        "first.gif": (base, "GIF", None),
    }
    paths = []
    for name, (array, image_format, mode) in files.items():
        _save(str(tmp_path / name), array, image_format, mode)
        paths.append(str(tmp_path / name))
    image_set = ImageSet(labels=np.arange(len(paths), dtype=np.int64), paths=paths)
    images, labels = next(
        iter(image_pipeline.image_dataset(image_set, image_size=(12, 10), batch_size=len(paths)))
    )
    images = images.numpy()
    assert images.shape == (6, 12, 10, 3) and images.dtype == np.float32
    assert labels.numpy().tolist() == list(range(6))
    np.testing.assert_array_equal(images[0], base)  # same size: no resampling
    np.testing.assert_array_equal(images[1], np.repeat(gray[..., None], 3, axis=-1))
    np.testing.assert_array_equal(images[2], base)  # alpha dropped, colour kept
    np.testing.assert_array_equal(images[3], base)
    gray_jpeg = images[4]
    np.testing.assert_array_equal(gray_jpeg[..., 0], gray_jpeg[..., 1])
    np.testing.assert_array_equal(gray_jpeg[..., 0], gray_jpeg[..., 2])
    expected_gif = np.asarray(Image.open(tmp_path / "first.gif").convert("RGB"))
    np.testing.assert_array_equal(images[5], expected_gif)


def test_pipeline_resize_shuffle_batching(tmp_path):
    rng = np.random.RandomState(0)
    arrays = [_random_image(rng, 20 + 3 * row, 17) for row in range(7)]
    paths = []
    for row, array in enumerate(arrays):
        _save(str(tmp_path / f"{row}.png"), array)
        paths.append(str(tmp_path / f"{row}.png"))
    labels = (rng.rand(7, 4) < 0.5).astype(np.uint8)
    image_set = ImageSet(labels=labels, paths=paths)
    dataset = image_pipeline.image_dataset(image_set, image_size=(16, 24), batch_size=3)
    batches = list(dataset.as_numpy_iterator())
    assert [batch[0].shape for batch in batches] == [(3, 16, 24, 3)] * 2 + [(1, 16, 24, 3)]
    assert batches[0][1].dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate([batch[1] for batch in batches]), labels)
    for row in range(7):
        expected = tf.image.resize(arrays[row].astype(np.float32), (16, 24), antialias=True)
        np.testing.assert_allclose(batches[row // 3][0][row % 3], expected.numpy(), atol=1e-4)
    values = np.concatenate([batch[0].ravel() for batch in batches])
    assert values.min() >= 0.0 and values.max() <= 255.0

    cropped = next(
        iter(
            image_pipeline.image_dataset(
                image_set, image_size=(8, 8), batch_size=7, resize="center_crop"
            )
        )
    )[0].numpy()
    assert cropped.shape == (7, 8, 8, 3)
    expected = tf.image.resize(arrays[6].astype(np.float32), (18, 8), antialias=True)[
        5:13
    ]  # 38x17 -> 18x8
    np.testing.assert_allclose(cropped[6], expected.numpy(), atol=1e-4)

    def order(**kwargs):
        dataset = image_pipeline.image_dataset(image_set, image_size=(4, 4), batch_size=7, **kwargs)
        return [tuple(map(tuple, batch[1])) for batch in dataset.take(2).as_numpy_iterator()]

    assert order(shuffle=True, seed=5) == order(shuffle=True, seed=5)
    shuffled = order(shuffle=True, seed=5, repeat=True)
    assert sorted(shuffled[0]) == sorted(map(tuple, labels))
    dropped = image_pipeline.image_dataset(
        image_set, image_size=(4, 4), batch_size=2, drop_remainder=True
    )
    assert [batch[0].shape[0] for batch in dropped.as_numpy_iterator()] == [2, 2, 2]
    repeated = image_pipeline.image_dataset(image_set, image_size=(4, 4), batch_size=4, repeat=True)
    assert len(list(repeated.take(5).as_numpy_iterator())) == 5
    with pytest.raises(ValueError, match="batch_size"):
        image_pipeline.image_dataset(image_set, batch_size=0)
    with pytest.raises(ValueError, match="resize"):
        image_pipeline.image_dataset(image_set, resize="squash")


def test_pipeline_in_memory_images_and_decode_errors(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    image_set = ImageSet(labels=np.arange(5, dtype=np.int64), images=images)
    batches = list(
        image_pipeline.image_dataset(
            image_set, image_size=(64, 64), batch_size=2
        ).as_numpy_iterator()
    )
    assert [batch[0].shape for batch in batches] == [(2, 64, 64, 3)] * 2 + [(1, 64, 64, 3)]
    expected = tf.image.resize(images.astype(np.float32), (64, 64), antialias=True).numpy()
    np.testing.assert_allclose(np.concatenate([batch[0] for batch in batches]), expected, atol=1e-4)
    shuffled = image_pipeline.image_dataset(
        image_set, image_size=(32, 32), batch_size=5, shuffle=True, seed=1
    )
    first_images, first_labels = next(iter(shuffled))
    np.testing.assert_array_equal(first_images.numpy(), images[first_labels.numpy()])

    good = str(tmp_path / "good.png")
    _save(good, images[0])
    _truncated_jpeg(str(tmp_path / "bad.jpg"), rng)
    broken = ImageSet(labels=np.array([0, 1, 2]), paths=[good, str(tmp_path / "bad.jpg"), good])
    labels = [
        batch[1].tolist()
        for batch in image_pipeline.image_dataset(
            broken, image_size=(8, 8), batch_size=3
        ).as_numpy_iterator()
    ]
    assert labels == [[0, 2]]
    # The files are checked before decoding: the error names the file, not TensorFlow's op.
    with pytest.raises(ValueError, match=r"1 of 3 image files cannot be used: .*bad\.jpg"):
        image_pipeline.image_dataset(broken, image_size=(8, 8), on_decode_error="raise")
    unchecked = image_pipeline.image_dataset(
        broken, image_size=(8, 8), batch_size=3, verify_files="none"
    )
    assert [batch[1].tolist() for batch in unchecked.as_numpy_iterator()] == [[0, 2]]
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(
            image_pipeline.image_dataset(
                broken, image_size=(8, 8), on_decode_error="raise", verify_files="none"
            )
        )
    with pytest.raises(ValueError, match="cannot be used"):
        image_pipeline.image_dataset(ImageSet(labels=[1], paths=[str(tmp_path / "bad.jpg")]))
    with pytest.raises(ValueError, match="empty"):
        image_pipeline.image_dataset(ImageSet(labels=np.zeros((0,), np.int64), paths=[]))


def test_image_set_validation():
    with pytest.raises(ValueError, match="2 paths but 3 labels"):
        ImageSet(labels=np.zeros(3, np.int64), paths=["a", "b"])
    with pytest.raises(ValueError, match=r"images must be uint8 \(N, H, W, 3\)"):
        ImageSet(labels=np.zeros(2, np.int64), images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="class ids"):
        ImageSet(labels=np.zeros((2, 3, 1), np.uint8), paths=["a", "b"])
    image_set = ImageSet(labels=[1, 0], paths=["a", "b"], indices=[4, 9])
    assert len(image_set) == 2 and image_set.indices.dtype == np.int64
