"""VideoHasher: the ImageHasher contract (tail on cached features, encoder from clips,
.keras round trip) on 3D ResNet and I3D backbones."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing import run_model_saving_test, run_serialization_test

from tf_bihalf.models.image_hasher import SimilarityPreservingModel
from tf_bihalf.models.video_hasher import VIDEO_BACKBONES, VideoHasher, build_video_backbone

RNG = np.random.default_rng(0)
SMALL = {"clip_frames": 8, "clip_size": 32}


def clips(count=3):
    return RNG.uniform(0, 255, (count, 8, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize(
    "backbone, feature_dim", [("resnet3d_18", 512), ("resnet3d_50", 2048), ("i3d", 1024)]
)
def test_shapes_and_frozen_backbone(backbone, feature_dim):
    hasher = VideoHasher(backbone, bits=12, **SMALL)
    assert hasher.feature_dim == feature_dim == hasher.frozen_dim
    assert hasher.feature_extractor is hasher.extractor and not hasher.extractor.trainable
    assert [w.path for w in hasher.trainable_weights] == ["hash_head/kernel", "hash_head/bias"]
    limit = 1 / math.sqrt(feature_dim)  # PyTorch nn.Linear init
    assert np.abs(hasher.head.kernel.numpy()).max() <= limit
    assert np.abs(hasher.head.kernel.numpy()).max() > 0.9 * limit
    codes = hasher(clips(), training=False).numpy()
    assert codes.shape == (3, 12) and set(np.unique(codes)) <= {-1.0, 1.0}


def test_tail_on_cached_features_equals_the_encoder():
    hasher = VideoHasher("resnet3d_10", bits=16, hash_layer_kwargs={"gamma": 6.0}, **SMALL)
    batch = clips(4)
    features = hasher.extractor(batch, training=False).numpy()
    assert features.shape == (4, 512)
    from_features = hasher.encode_features(features)
    assert from_features.dtype == np.int8
    np.testing.assert_array_equal(from_features, hasher(batch, training=False).numpy())
    assert hasher.training_network(from_features=True) is hasher.tail
    end_to_end = hasher.training_network(from_features=False)
    outputs = end_to_end(batch, training=True)
    assert sorted(outputs) == ["codes", "continuous", "features"]
    np.testing.assert_allclose(outputs["features"].numpy(), features, rtol=1e-5, atol=1e-5)
    continuous = hasher.continuous_model()(batch).numpy()
    np.testing.assert_array_equal(np.where(continuous >= 0, 1, -1), from_features)
    assert hasher.encode_features(np.zeros((0, 512), "float32")).shape == (0, 16)
    with pytest.raises(ValueError, match=r"\(N, 512\)"):
        hasher.encode_features(np.zeros((2, 300), "float32"))


def test_the_image_training_wrapper_trains_the_video_tail():
    hasher = VideoHasher("resnet3d_10", bits=8, **SMALL)
    model = SimilarityPreservingModel(hasher.training_network(from_features=True))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = hasher.head.kernel.numpy().copy()
    extractor_before = [w.numpy().copy() for w in hasher.extractor.weights[:3]]
    features = RNG.normal(size=(16, 512)).astype("float32")
    model.fit(features, epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(before, hasher.head.kernel.numpy())
    for old, new in zip(extractor_before, hasher.extractor.weights[:3], strict=True):
        np.testing.assert_array_equal(old, new.numpy())


def test_encode_clips_and_features_from_a_dataset():
    hasher = VideoHasher("resnet3d_10", bits=8, **SMALL)
    batch = clips(5)
    labels = np.arange(5, dtype=np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((batch.astype(np.uint8), labels)).batch(2)
    codes, got_labels = hasher.encode_clips(dataset)
    np.testing.assert_array_equal(got_labels, labels)
    expected = hasher(batch.astype(np.uint8).astype("float32"), training=False).numpy()
    np.testing.assert_array_equal(codes, expected)
    features, _ = hasher.extract_features(dataset)
    np.testing.assert_array_equal(hasher.encode_features(features), codes)
    empty = dataset.take(0)
    assert hasher.encode_clips(empty)[0].shape == (0, 8)


def test_config_and_keras_round_trip(tmp_path):
    hasher = VideoHasher(
        "resnet3d_10", bits=8, hash_layer="bihalf", hash_layer_kwargs={"gamma": 6.0}, **SMALL
    )
    run_serialization_test(hasher)
    config = hasher.get_config()
    assert (
        config["backbone"] == "resnet3d_10"
        and config["hash_layer_kwargs"] == {"gamma": 6.0}
        and config["weights"] is None
    )
    restored = run_model_saving_test(hasher, clips(2))
    assert isinstance(restored, VideoHasher) and restored.bits == 8
    np.testing.assert_array_equal(restored.head.kernel.numpy(), hasher.head.kernel.numpy())


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Unknown video backbone"):
        VideoHasher("c3d", bits=8)
    with pytest.raises(ValueError, match="bits"):
        VideoHasher("resnet3d_10", bits=0, **SMALL)
    with pytest.raises(ValueError, match="No registry ships"):
        VideoHasher("resnet3d_34", bits=8, weights="kinetics400", **SMALL)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        VideoHasher("resnet3d_10", bits=8, weights=str(tmp_path / "nope.pth"), **SMALL)
    with pytest.raises(ValueError, match="clip_size"):
        build_video_backbone("resnet3d_18", clip_size=0)
    assert "resnet3d_34" in VIDEO_BACKBONES and "i3d" in VIDEO_BACKBONES


def test_codes_of_generated_videos_through_the_clip_pipeline(tmp_path):
    from test_video_data import write_video

    from tf_bihalf.data.video import pipeline, protocols

    listed = []
    for index, frames in enumerate((11, 20)):
        path = tmp_path / f"class{index}" / f"v{index}.avi"
        write_video(path, frames, seed=index)
        listed.append((str(path), index))
    split = protocols.build_split(listed)
    dataset = pipeline.evaluation_clips(split, clip_size=32, clip_frames=8).batch(2)
    hasher = VideoHasher("resnet3d_10", bits=8, **SMALL)
    codes, labels = hasher.encode_clips(dataset)
    assert codes.shape == (pipeline.total_clips(split, 8), 8) == (2 + 3, 8)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 1])
    features, _ = hasher.extract_features(dataset)
    np.testing.assert_array_equal(hasher.encode_features(features), codes)
