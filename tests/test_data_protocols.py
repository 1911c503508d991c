"""The dataset registry, Fashion-MNIST RGB, the protocol warnings, and split files that stay
byte-identical to those written before the registry (hashes recorded from the old module)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct

import numpy as np
import pytest
from PIL import Image

from tf_bihalf.data import ProtocolSplits, load_protocol, mnist, registered_names, sources
from tf_bihalf.data.protocols import ImageSet, register, registry, render_split_files


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_BIHALF_DATA", str(tmp_path / "tf_bihalf_cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


# ---------------------------------------------------------------------------------------------
# Registry.


def test_every_dataset_is_registered_and_unknown_names_list_them():
    assert registered_names() == [
        "cifar10",
        "fashion_mnist_rgb",
        "flickr25k",
        "folder:<...>",
        "list:<...>",
        "mscoco",
        "nus_wide",
    ]
    with pytest.raises(ValueError, match=r"Unknown dataset 'imagenet'; registered: cifar10, "):
        load_protocol("imagenet")
    with pytest.raises(ValueError, match="Unknown dataset 'folder'"):
        load_protocol("folder")  # the prefix needs its colon
    with pytest.raises(ValueError, match="non-empty string"):
        load_protocol("")


def test_register_dispatches_by_name_and_prefix(monkeypatch):
    monkeypatch.setattr(registry, "_LOADERS", dict(registry._LOADERS))
    calls = []

    def loader(name, data_dir, protocol, seed, options):
        calls.append((name, data_dir, protocol, seed, options))
        return "splits"

    register("toy")(loader)
    register("toys:")(loader)
    assert load_protocol("toy", data_dir="/d", protocol="I", seed="3", k=1) == "splits"
    assert load_protocol("toys:/some/where", seed=2) == "splits"
    assert calls == [("toy", "/d", "I", 3, {"k": 1}), ("/some/where", None, None, 2, {})]
    assert "toy" in registered_names() and "toys:<...>" in registered_names()
    register("toy")(loader)  # the same loader again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register("toy")(lambda *args: None)


def test_protocol_splits_are_built_by_keyword():
    image_set = ImageSet(labels=np.zeros(2, np.int64), paths=["a", "b"])
    with pytest.raises(TypeError):
        ProtocolSplits("d", "p", 1, image_set, image_set, image_set, {})  # positional: refused
    splits = ProtocolSplits(
        dataset="d",
        protocol="p",
        num_classes=1,
        train=image_set,
        query=image_set,
        database=image_set,
        report={},
    )
    assert splits.split("query") is image_set and splits.seed == 0
    assert [field.name for field in dataclasses.fields(ProtocolSplits)][:3] == [
        "dataset",
        "protocol",
        "num_classes",
    ]


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST RGB, from a generated IDX directory.

TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 6


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def fashion_dir(tmp_path, monkeypatch):
    rng = np.random.RandomState(5)
    y_train = np.repeat(np.arange(10), TRAIN_PER_CLASS).astype(np.uint8)
    y_test = np.repeat(np.arange(10), TEST_PER_CLASS).astype(np.uint8)
    rng.shuffle(y_train)
    rng.shuffle(y_test)
    arrays = {
        "x_train": rng.randint(0, 256, (len(y_train), 28, 28)).astype(np.uint8),
        "y_train": y_train,
        "x_test": rng.randint(0, 256, (len(y_test), 28, 28)).astype(np.uint8),
        "y_test": y_test,
    }
    pins = {key: sources.array_sha256(value) for key, value in arrays.items()}
    monkeypatch.setitem(mnist.CONTENT_SHA256, "fashion_mnist", pins)
    directory = tmp_path / "fashion"
    directory.mkdir()
    for key, stem in mnist.IDX_FILES.items():
        (directory / f"{stem}.gz").write_bytes(gzip.compress(_idx(arrays[key])))
    return str(directory), arrays


def _reference_fashion(y_train, y_test, seed, num_query, num_database, num_train):
    """The rule of the trainer's former ``fashion_mnist_rgb_splits``, written out again."""
    rng = np.random.RandomState(seed)
    query, database, train = [], [], []
    for label in range(10):
        members = np.flatnonzero(y_test == label)
        query.extend(members[rng.permutation(len(members))][:num_query] + len(y_train))
    for label in range(10):
        members = np.flatnonzero(y_train == label)
        chosen = members[rng.permutation(len(members))][:num_database]
        database.extend(chosen)
        train.extend(chosen if num_train is None else chosen[:num_train])
    return sorted(query), sorted(database), sorted(train)


def test_fashion_mnist_rgb_splits(fashion_dir):
    directory, arrays = fashion_dir
    options = {"num_query_per_class": 4, "num_database_per_class": 20, "num_train_per_class": 7}
    splits = load_protocol("fashion_mnist_rgb", data_dir=directory, **options)
    query, database, train = _reference_fashion(arrays["y_train"], arrays["y_test"], 0, 4, 20, 7)
    np.testing.assert_array_equal(splits.query.indices, query)
    np.testing.assert_array_equal(splits.database.indices, database)
    np.testing.assert_array_equal(splits.train.indices, train)
    offset = len(arrays["y_train"])
    assert splits.report["counts"] == {"train": 70, "query": 40, "database": 200}
    assert (splits.query.indices >= offset).all() and (splits.database.indices < offset).all()
    assert not set(splits.query.indices) & set(splits.database.indices)
    assert set(splits.train.indices) <= set(splits.database.indices)
    for image_set, per_class in ((splits.query, 4), (splits.database, 20), (splits.train, 7)):
        assert np.bincount(image_set.labels, minlength=10).tolist() == [per_class] * 10
    # Images: uint8 RGB, the gray values repeated; labels from the right source split.
    first = splits.query.indices[0] - offset
    np.testing.assert_array_equal(
        splits.query.images[0], np.repeat(arrays["x_test"][first][..., None], 3, axis=-1)
    )
    assert splits.query.images.dtype == np.uint8 and splits.query.images.shape[1:] == (28, 28, 3)
    np.testing.assert_array_equal(splits.database.labels, arrays["y_train"][database])
    assert splits.dataset == "fashion_mnist_rgb" and splits.protocol == "default"
    assert splits.num_classes == 10 and splits.options == options
    assert splits.report["warnings"] == []
    # Deterministic by seed; another seed draws other images.
    again = load_protocol("fashion_mnist_rgb", data_dir=directory, **options)
    other = load_protocol("fashion_mnist_rgb", data_dir=directory, seed=1, **options)
    for name in ("train", "query", "database"):
        np.testing.assert_array_equal(again.split(name).indices, splits.split(name).indices)
    assert not np.array_equal(other.query.indices, splits.query.indices)
    np.testing.assert_array_equal(
        other.query.indices,
        _reference_fashion(arrays["y_train"], arrays["y_test"], 1, 4, 20, 7)[0],
    )
    # Default train = database (the same ImageSet), and the split files are pool indices.
    full = load_protocol(
        "fashion_mnist_rgb", data_dir=directory, num_query_per_class=2, num_database_per_class=5
    )
    assert full.train is full.database and len(full.database) == 50
    lines = render_split_files(full)["query.txt"].decode().splitlines()
    assert lines[0] == f"{full.query.indices[0]} {full.query.labels[0]}"


def test_fashion_mnist_rgb_errors(fashion_dir):
    directory, _ = fashion_dir
    with pytest.raises(ValueError, match="Class 0 has 6 test images, fewer than"):
        load_protocol("fashion_mnist_rgb", data_dir=directory, num_query_per_class=7)
    with pytest.raises(ValueError, match="Class 0 has 30 training images, fewer than"):
        load_protocol(
            "fashion_mnist_rgb",
            data_dir=directory,
            num_query_per_class=2,
            num_database_per_class=31,
        )
    with pytest.raises(ValueError, match="num_train_per_class must be in"):
        load_protocol(
            "fashion_mnist_rgb",
            data_dir=directory,
            num_database_per_class=5,
            num_train_per_class=6,
        )
    with pytest.raises(ValueError, match="Unknown option"):
        load_protocol("fashion_mnist_rgb", data_dir=directory, num_queries=5)
    with pytest.raises(ValueError, match="protocols"):
        load_protocol("fashion_mnist_rgb", data_dir=directory, protocol="II")


# ---------------------------------------------------------------------------------------------
# Warnings.


def _png(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 256, (6, 5, 3), dtype=np.uint8)).save(path)


def test_single_class_warns_that_map_measures_nothing(tmp_path, caplog):
    for index in range(10):
        _png(str(tmp_path / "one" / "only" / f"{index}.png"), index)
    with caplog.at_level("WARNING"):
        splits = load_protocol(f"folder:{tmp_path / 'one'}")
    assert len(splits.report["warnings"]) == 1
    assert "single class" in splits.report["warnings"][0]
    assert "mAP is 1.0 whatever the codes" in caplog.text
    # Multi-hot labels with one column used are the same situation.
    with open(tmp_path / "list.txt", "w") as handle:
        for index in range(10):
            handle.write(f"one/only/{index}.png 1 0 0\n")
    multi = load_protocol(f"list:{tmp_path / 'list.txt'}", num_query=2)
    assert any("single class" in message for message in multi.report["warnings"])


def test_lost_files_and_missing_queries_warn(tmp_path):
    for label in ("a", "b"):
        for index in range(20):
            _png(str(tmp_path / "photos" / label / f"{index:02d}.png"), index)
    clean = load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=2)
    assert clean.report["warnings"] == []
    # One unusable file of 18 per class in the database: 1 of 36 = 2.8%, below the 5% default.
    (tmp_path / "photos" / "a" / clean_database_name(clean)).write_bytes(b"broken")
    one = load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=2)
    assert one.report["warnings"] == []
    strict = load_protocol(
        f"folder:{tmp_path / 'photos'}", num_query_per_class=2, max_excluded_fraction=0.01
    )
    assert any("'database' split lost 1 of its 36" in m for m in strict.report["warnings"])
    # A lost query: fewer queries than the protocol drew.
    query_name = os.path.basename(clean.query.paths[0])
    (tmp_path / "photos" / "a" / query_name).write_bytes(b"broken")
    fewer = load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=2)
    messages = " ".join(fewer.report["warnings"])
    assert "drew 4 queries but only 3 are usable" in messages
    assert "'query' split lost 1 of its 4 images (25.0%" in messages
    with pytest.raises(ValueError, match="max_excluded_fraction"):
        load_protocol(f"folder:{tmp_path / 'photos'}", max_excluded_fraction=2)


def clean_database_name(splits) -> str:
    return next(
        os.path.basename(path)
        for path in splits.database.paths
        if os.path.basename(os.path.dirname(path)) == "a"
    )


def test_class_without_query_warns(tmp_path):
    for index in range(10):
        _png(str(tmp_path / "photos" / "many" / f"{index}.png"), index)
    _png(str(tmp_path / "photos" / "single" / "0.png"), 99)
    splits = load_protocol(f"folder:{tmp_path / 'photos'}")
    assert any(
        "1 class(es) have too few images for a query" in m for m in splits.report["warnings"]
    )


# ---------------------------------------------------------------------------------------------
# Split files written by the registry equal those of the former image_protocols module.

# SHA-256 of the list files that module wrote for the collections built below (verify="header",
# recorded before it was removed).
FORMER_SPLIT_FILES = {
    ("folder", 0): {
        "train.txt": "c203683d6e2d099b5cdb5de2200b0fa08eb1c022335ee8a149ad749cf6099a31",
        "query.txt": "b60b333bb339b3c17997c358ec4f4d66a1d5d1f5ffb4c2555ddc1ccdcf2e3b34",
        "database.txt": "c203683d6e2d099b5cdb5de2200b0fa08eb1c022335ee8a149ad749cf6099a31",
        "excluded.txt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    ("folder", 7): {
        "train.txt": "ed60246d2dcea6fef32c7a0b9f3c82b7fc89d69069a2f5ff5c691d02f46708af",
        "query.txt": "274c397df2d3dc73444a59b8ade384e7a0527d3eb24e636d40acb5d7c2f79310",
        "database.txt": "ed60246d2dcea6fef32c7a0b9f3c82b7fc89d69069a2f5ff5c691d02f46708af",
        "excluded.txt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    ("multi_hot_list", 0): {
        "train.txt": "23798d2cc825cd2c80bdf52845af0617d04c023b586c6dbfc51663eb48d0c618",
        "query.txt": "cdf60a0e5607ae84ae925d2d587e21bce922e206ee1159f50d783c1393463ff1",
        "database.txt": "f522272e9dc8c159742028230fe2554dbeb45a42c52a18b40c9a720343f55409",
        "excluded.txt": "6138b15d44029a94a3fd5d50164525ed3b98c0df53f413d6fbde5ffe94a56970",
    },
    ("multi_hot_list", 7): {
        "train.txt": "67dfb3bd3d76d8f4b079ec2050228f06e995c60b4f0260723de6b120ab1f02f8",
        "query.txt": "e76b071aab2ec7db690abde25748cd10948260a109d2845c6c4ed8ad61212f8c",
        "database.txt": "9c259aaa7b02b4feb670f3b304cc5bf2111bbdb78f6bd449ef41b7d348777925",
        "excluded.txt": "3d49cdd78d883ddf1da61f4219b4e7f9acbdaa16d8463457f5b30ea186acd82f",
    },
    ("class_id_list", 0): {
        "train.txt": "d20566f95c41d819543776bf50162f8a4ce5b41e410f64985a635854e6a0b603",
        "query.txt": "506de9e0b14fcace761c49bd059e3d4e60d8cceb25b313d673a74e308ad97ea9",
        "database.txt": "d20566f95c41d819543776bf50162f8a4ce5b41e410f64985a635854e6a0b603",
        "excluded.txt": "6138b15d44029a94a3fd5d50164525ed3b98c0df53f413d6fbde5ffe94a56970",
    },
    ("class_id_list", 7): {
        "train.txt": "c00fd733563d21d0e50d7a8f950b3ed46841a05ce015e26f79e8e1d13e70c057",
        "query.txt": "25722309fe9d8244a52bf2df7627659a30ab4a2cb2391577f130536da0afc80e",
        "database.txt": "c00fd733563d21d0e50d7a8f950b3ed46841a05ce015e26f79e8e1d13e70c057",
        "excluded.txt": "6138b15d44029a94a3fd5d50164525ed3b98c0df53f413d6fbde5ffe94a56970",
    },
}


def _golden_collections(root) -> dict:
    rng = np.random.RandomState(42)
    for label, count in (("cat", 23), ("dog", 11), ("owl", 5)):
        for index in range(count):
            _png(os.path.join(root, "photos", label, f"{index:03d}.png"), index)
    with open(os.path.join(root, "multi.txt"), "w") as handle:
        for index in range(60):
            _png(os.path.join(root, "multi", f"{index:03d}.png"), index)
            values = " ".join(str(int(v)) for v in (rng.rand(6) < 0.4))
            handle.write(f"multi/{index:03d}.png {values}\n")
    with open(os.path.join(root, "ids.txt"), "w") as handle:
        for index in range(45):
            handle.write(f"multi/{index:03d}.png {index % 4}\n")
    os.remove(os.path.join(root, "multi", "007.png"))  # a missing file, excluded
    return {
        "folder": (f"folder:{root}/photos", {}),
        "multi_hot_list": (f"list:{root}/multi.txt", {"num_query": 9, "num_train": 30}),
        "class_id_list": (f"list:{root}/ids.txt", {"num_query_per_class": 2}),
    }


def golden_hashes(load, root, render=render_split_files, **extra) -> dict:
    """{(case, seed): {file: sha256}} of the split files ``load`` (a load_protocol) gives.

    Paths are written relative to the collection root, so the hashes do not depend on ``root``.
    """
    hashes = {}
    for case, (dataset, options) in _golden_collections(str(root)).items():
        for seed in (0, 7):
            splits = load(dataset, seed=seed, **options, **extra)
            hashes[(case, seed)] = {
                name: hashlib.sha256(data).hexdigest() for name, data in render(splits).items()
            }
    return hashes


@pytest.mark.parametrize("verify", ["header", "decode"])
def test_split_files_are_byte_identical_to_the_former_module(tmp_path, verify):
    assert golden_hashes(load_protocol, tmp_path, verify=verify) == FORMER_SPLIT_FILES
