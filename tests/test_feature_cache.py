"""Feature cache: hit / miss / invalidation / damage, shards, and equivalence with end to end."""

import json
import os

import keras
import numpy as np
import pytest

from tf_bihalf.data import ImageSet
from tf_bihalf.data.feature_cache import FeatureCache
from tf_bihalf.models.image_hasher import ImageHasher, SimilarityPreservingModel
from tf_bihalf.training.pipelines import epoch_batches

RNG = np.random.default_rng(2)


def image_set(count=10, size=8):
    return ImageSet(
        labels=np.arange(count, dtype=np.int64) % 3,
        images=RNG.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
        indices=np.arange(count),
    )


def tiny_extractor(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x)


def make_cache(root, extractor, shard_size=4):
    return FeatureCache(
        str(root),
        extractor,
        backbone="tiny",
        preprocessing="none",
        image_size=(8, 8),
        shard_size=shard_size,
    )


def test_miss_then_hit_with_shards_in_order(tmp_path):
    split = image_set(10)
    extractor = tiny_extractor()
    cache = make_cache(tmp_path, extractor)
    first = cache.load_or_build("train", split, batch_size=3)
    assert not first.hit and first.features.shape == (10, 3)
    expected = extractor(split.images.astype("float32")).numpy()
    np.testing.assert_allclose(first.features, expected, rtol=1e-5, atol=1e-5)
    manifest = json.load(open(os.path.join(first.directory, "manifest.json")))
    assert [shard["rows"] for shard in manifest["shards"]] == [4, 4, 2]
    second = make_cache(tmp_path, extractor).load_or_build("train", split)
    assert second.hit
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.labels, split.labels)
    # A split with the same content (CIFAR-10 (I): train = database) shares the extraction.
    assert cache.load_or_build("database", split).hit


def test_invalidation_on_weights_split_and_damage(tmp_path):
    split = image_set(6)
    extractor = tiny_extractor(0)
    cache = make_cache(tmp_path, extractor)
    built = cache.load_or_build("train", split)
    # Other weights: another model directory, a miss.
    other = make_cache(tmp_path, tiny_extractor(1)).load_or_build("train", split)
    assert not other.hit and other.directory != built.directory
    # Another split content: a miss.
    changed = ImageSet(labels=split.labels, images=split.images.copy(), indices=split.indices)
    changed.images[0, 0, 0, 0] ^= 1
    assert not cache.load_or_build("train", changed).hit
    # A damaged shard: detected and rebuilt.
    shard = os.path.join(built.directory, "features-00000.npy")
    with open(shard, "r+b") as handle:
        handle.truncate(os.path.getsize(shard) - 8)
    assert make_cache(tmp_path, extractor).load_or_build("train", split).hit is False
    rebuilt = make_cache(tmp_path, extractor).load_or_build("train", split)
    assert rebuilt.hit and rebuilt.directory == built.directory
    np.testing.assert_array_equal(rebuilt.features, built.features)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="shard_size"):
        make_cache(tmp_path, tiny_extractor(), shard_size=0)
    with pytest.raises(ValueError, match="empty"):
        make_cache(tmp_path, tiny_extractor()).load_or_build(
            "train", ImageSet(labels=np.zeros((0,), np.int64), images=np.zeros((0, 8, 8, 3)))
        )


def test_cached_training_equals_end_to_end(tmp_path):
    """Same weights, same batches, dropout off: cached and end-to-end training agree."""
    split = ImageSet(
        labels=np.zeros(16, np.int64), images=RNG.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    )
    keras.utils.set_random_seed(3)
    hasher = ImageHasher("vgg16", bits=8, image_size=32, dropout=0.0)
    initial = [w.numpy() for w in hasher.tail.trainable_weights]
    cached = FeatureCache.for_hasher(tmp_path, hasher).load_or_build("train", split)
    images = split.images.astype("float32")
    np.testing.assert_allclose(
        cached.features, hasher.extractor(images).numpy(), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_array_equal(
        hasher.encode_features(cached.features), hasher(images, training=False).numpy()
    )

    def train(from_features):
        for weight, value in zip(hasher.tail.trainable_weights, initial, strict=True):
            weight.assign(value)
        model = SimilarityPreservingModel(hasher.training_network(from_features))
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
        inputs = cached.features if from_features else images
        data = epoch_batches((inputs, split.labels), 8, seed=0, epochs=2, drop_remainder=True)
        losses = model.fit(data, epochs=2, steps_per_epoch=2, verbose=0).history["loss"]
        return losses, [w.numpy() for w in hasher.tail.trainable_weights]

    cached_losses, cached_weights = train(True)
    direct_losses, direct_weights = train(False)
    np.testing.assert_allclose(cached_losses, direct_losses, rtol=1e-4)
    for a, b, start in zip(cached_weights, direct_weights, initial, strict=True):
        assert not np.allclose(a, start)
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_overwritten_shard_bytes_are_detected_and_rebuilt(tmp_path, caplog):
    """Same-size bytes overwritten in a shard: the SHA-256 recorded at write catches them."""
    split = image_set(6)
    extractor = tiny_extractor(0)
    built = make_cache(tmp_path, extractor).load_or_build("train", split)
    manifest = json.load(open(os.path.join(built.directory, "manifest.json")))
    assert all(len(record["sha256"]) == 64 for record in manifest["shards"])
    assert len(manifest["labels"]["sha256"]) == 64
    shard = os.path.join(built.directory, "features-00001.npy")
    size = os.path.getsize(shard)
    with open(shard, "r+b") as handle:  # the last float32 of the shard, same file size
        handle.seek(size - 4)
        handle.write(np.float32(1234.5).tobytes())
    assert os.path.getsize(shard) == size
    with caplog.at_level("WARNING"):
        rebuilt = make_cache(tmp_path, extractor).load_or_build("train", split)
    assert not rebuilt.hit and rebuilt.directory == built.directory
    assert "features-00001.npy does not have the SHA-256 recorded" in caplog.text
    np.testing.assert_array_equal(rebuilt.features, built.features)
    assert make_cache(tmp_path, extractor).load_or_build("train", split).hit
    # The labels file is covered too.
    labels = os.path.join(rebuilt.directory, "labels.npy")
    data = bytearray(open(labels, "rb").read())
    data[-1] ^= 1
    open(labels, "wb").write(bytes(data))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert not make_cache(tmp_path, extractor).load_or_build("train", split).hit
    assert "labels.npy does not have the SHA-256" in caplog.text


def _file_split(tmp_path, count=4):
    from PIL import Image

    paths = []
    for row in range(count):
        path = str(tmp_path / f"{row}.png")
        Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return ImageSet(labels=np.arange(count, dtype=np.int64), paths=paths)


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def test_unusable_image_stops_extraction_with_its_name(tmp_path, monkeypatch):
    """A truncated PNG used to stop extraction with 'Invalid PNG data' and no file name."""
    monkeypatch.setenv("TF_BIHALF_DATA", str(tmp_path / "check_cache"))
    split = _file_split(tmp_path)
    _truncate(split.paths[2])
    with pytest.raises(ValueError, match=r"1 of 4 image files cannot be used: .*2\.png"):
        make_cache(tmp_path / "cache", tiny_extractor()).load_or_build("train", split)
    # A file that breaks after the check (here: no check at all) is still named.
    from tf_bihalf.data import feature_cache

    unchecked = feature_cache.image_dataset

    def without_check(*args, **kwargs):
        return unchecked(*args, **kwargs, verify_files="none")

    monkeypatch.setattr(feature_cache, "image_dataset", without_check)
    with pytest.raises(ValueError, match=r"2\.png: cannot be decoded by TensorFlow"):
        make_cache(tmp_path / "cache", tiny_extractor()).load_or_build("train", split)
