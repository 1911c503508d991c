"""Bad and empty inputs at the public entry points not covered elsewhere: every model on an
empty batch, every hash layer on empty, unknown-size, NaN and wrongly typed inputs, and the
metrics on malformed codes and labels. Each case asserts a clear outcome (empty outputs, or a
``ValueError`` whose message says what is wrong), never an error from deep inside TensorFlow.

Cases already tested elsewhere are not repeated here; the README's reliability table cites
them (layers: ``tests/test_layers.py::test_bad_inputs_give_clear_errors``; metrics:
``tests/test_metrics.py::test_bad_inputs_raise_clear_errors``; the trainers' data paths:
``tests/test_mnist_data.py::test_idx_decoding_errors``,
``tests/test_data_files.py::test_file_size_cap_and_empty_files``,
``tests/test_video_data.py::test_truncation_is_detected_at_several_points``)."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_bihalf import layers, metrics
from tf_bihalf.models import HashingAutoencoder, ImageHasher, VideoHasher
from tf_bihalf.models.empty_batch import EmptyBatchSupport

BITS = 8
MODELS = {
    "autoencoder": (lambda: HashingAutoencoder(bits=BITS, hash_layer="median"), (784,)),
    "vgg16": (lambda: ImageHasher("vgg16", bits=BITS, image_size=32), (32, 32, 3)),
    "efficientnet_lite0": (
        lambda: ImageHasher("efficientnet_lite0", bits=BITS, image_size=32, hash_layer="signreg"),
        (32, 32, 3),
    ),
    "resnet3d": (
        lambda: VideoHasher(
            "resnet3d_10", bits=BITS, clip_size=32, clip_frames=4, hash_layer="tanh"
        ),
        (4, 32, 32, 3),
    ),
    "i3d": (lambda: VideoHasher("i3d", bits=BITS, clip_size=32, clip_frames=4), (4, 32, 32, 3)),
}


def _state(model) -> list[np.ndarray]:
    return [np.array(weight) for weight in model.non_trainable_weights]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_empty_batches_give_empty_outputs_for_every_model(name):
    """Eager calls, ``predict``, graphs of unknown batch size with and without XLA, in
    training and at inference: zero rows in, zero rows out, no state changed; a non-empty
    batch through the guarded graph gives exactly the unguarded network's outputs."""
    build, shape = MODELS[name]
    model = build()
    width = 784 if name == "autoencoder" else BITS
    empty = np.zeros((0, *shape), "float32")
    before = _state(model)
    spec = [tf.TensorSpec((None, *shape), tf.float32)]
    for training in (False, True):
        assert tuple(model(empty, training=training).shape) == (0, width)
        for jit_compile in (False, True):
            function = tf.function(
                lambda x, training=training: model(x, training=training),
                input_signature=spec,
                jit_compile=jit_compile,
            )
            outputs = function(tf.constant(empty))
            assert outputs.shape == (0, width) and outputs.dtype == tf.float32
    predicted = model.predict(empty, verbose=0)
    assert isinstance(predicted, np.ndarray) and predicted.shape == (0, width)
    for old, new in zip(before, _state(model), strict=True):
        np.testing.assert_array_equal(old, new)  # no moving median or step update
    batch = np.random.default_rng(0).uniform(0, 1, (3, *shape)).astype("float32")
    guarded = tf.function(lambda x: model(x, training=False), input_signature=spec)(batch)
    unguarded = tf.function(
        lambda x: super(EmptyBatchSupport, model).call(x, training=False), input_signature=spec
    )(batch)
    np.testing.assert_array_equal(np.asarray(guarded), np.asarray(unguarded))


def test_empty_outputs_are_built_only_where_a_batch_can_be_empty(monkeypatch):
    """A non-empty eager call (and ``predict``'s batches) never builds the zero-row outputs;
    an empty batch, and a training graph of unknown batch size (its ``tf.cond``), do."""
    model = HashingAutoencoder(bits=BITS, hash_layer="median")
    calls = []
    original = EmptyBatchSupport._empty_outputs

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(EmptyBatchSupport, "_empty_outputs", counting)
    batch = np.random.default_rng(2).uniform(0, 1, (3, 784)).astype("float32")
    model(batch, training=False)
    model(tf.constant(batch), training=True)
    model.predict(batch, verbose=0)
    assert calls == []
    assert model(batch[:0], training=False).shape == (0, 784) and len(calls) == 1
    model.guard_graph_batches = True  # as a model with convolutions
    spec = [tf.TensorSpec((None, 784), tf.float32)]
    outputs = tf.function(lambda x: model(x, training=True), input_signature=spec)(batch[:0])
    assert outputs.shape == (0, 784) and len(calls) == 2


def test_guarded_model_saves_exports_and_keeps_empty_batches(tmp_path):
    """The guard changes neither the saved file nor the export: a reloaded model and the
    exported ``serve`` endpoint both give the original codes and take empty batches."""
    model = VideoHasher("resnet3d_10", bits=BITS, clip_size=16, clip_frames=2)
    clips = np.random.default_rng(1).uniform(0, 255, (2, 2, 16, 16, 3)).astype("float32")
    expected = np.asarray(model(clips, training=False))
    path = str(tmp_path / "hasher.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(np.asarray(reloaded(clips, training=False)), expected)
    assert reloaded(clips[:0], training=False).shape == (0, BITS)
    model.export(str(tmp_path / "exported"), verbose=False)
    exported = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_array_equal(exported.serve(tf.constant(clips)).numpy(), expected)
    assert exported.serve(tf.constant(clips[:0])).shape == (0, BITS)


def test_guarded_image_hasher_converts_to_tflite(tmp_path):
    """The inference guard keeps the channel count static, so a convolutional hasher's export
    converts to TFLite builtins (a ``tf.pad`` by a run-time amount did not: "'tf.Conv2D' op is
    neither a custom op nor a flex op") and gives the Keras model's codes; the SavedModel still
    answers an empty batch."""
    from export import saved_model, tflite
    from tests.test_export_support import write_run

    model = ImageHasher("efficientnet_lite0", bits=BITS, image_size=32)
    config = {
        "bits": BITS,
        "model_type": "image",
        "hash_layer": "bihalf",
        "input_shape": [32, 32, 3],
        "image_size": [32, 32],
        "backbone": "efficientnet_lite0",
    }
    run = write_run(str(tmp_path / "run"), model, config)
    exported = saved_model.export_run(run, str(tmp_path / "serving"), "hasher", 1)
    images = np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(images, training=False))
    out = str(tmp_path / "hasher.tflite")
    tflite.export_tflite(exported, out, "none")
    codes = tflite.TFLiteEncoder(out).encode(images, len(images))["codes"]
    np.testing.assert_array_equal(codes, expected)
    encoder = saved_model.SavedModelEncoder(exported)
    assert encoder.encode(images[:0])["codes"].shape == (0, BITS)


LAYERS = {name: cls for name, cls in layers.LAYERS.items()}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_hash_layer_on_an_empty_batch(name):
    """A (0, K) batch in training: (0, K) codes, no NaN in a loss or a gradient, no state
    update (the moving median, the tanh schedule), in eager and XLA-compiled calls."""
    layer = LAYERS[name]()
    layer(tf.zeros((4, 5)), training=False)  # built
    before = [np.array(weight) for weight in layer.weights]
    empty = tf.zeros((0, 5))

    def step(u):
        with tf.GradientTape() as tape:
            tape.watch(u)
            codes = layer(u, training=True)
            loss = tf.reduce_sum(codes) + tf.add_n([0.0, *layer.losses])
        return codes, loss, tape.gradient(loss, u)

    dynamic = [tf.TensorSpec((None, 5), tf.float32)]
    for function in (
        step,
        tf.function(step, jit_compile=True),
        tf.function(step, input_signature=dynamic),
        tf.function(step, input_signature=dynamic, jit_compile=True),
    ):
        codes, loss, gradient = function(empty)
        assert codes.shape == (0, 5) and gradient.shape == (0, 5)
        assert np.isfinite(float(loss)) and float(loss) == 0.0
    for old, weight in zip(before, layer.weights, strict=True):
        np.testing.assert_array_equal(old, np.array(weight))
    assert layer(empty, training=False).shape == (0, 5)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_hash_layer_refuses_bad_shapes_and_dtypes(name):
    """Wrong rank, integer or string dtype, zero bits: a ValueError naming the layer and the
    problem, before any TensorFlow kernel runs (``test_layers.py`` covers BiHalf alone)."""
    cls = LAYERS[name]
    for bad, message in (
        (np.zeros((2, 3, 4), "float32"), "rank-2"),
        (np.zeros((5,), "float32"), "rank-2"),
        (np.zeros((2, 3), "int32"), "floating-point"),
        (np.zeros((2, 3), "bool"), "floating-point"),
        (np.zeros((2, 0), "float32"), "at least one bit"),
    ):
        for training in (False, True):
            with pytest.raises(ValueError, match=message) as raised:
                cls()(bad, training=training)
            assert cls.__name__ in str(raised.value)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_hash_layer_with_unknown_batch_and_bits(name):
    """Unknown batch size and (where the layer has no per-bit state) unknown width in a
    graph: the same codes as eagerly; a layer with per-bit state says it needs the width."""
    u = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
    layer = LAYERS[name]()
    eager = layer(u, training=False)
    function = tf.function(
        lambda x: layer(x, training=False), input_signature=[tf.TensorSpec((None, 5))]
    )
    np.testing.assert_array_equal(function(u).numpy(), eager.numpy())
    fresh = LAYERS[name]()
    unknown_width = tf.function(
        lambda x: fresh(x, training=True), input_signature=[tf.TensorSpec((None, None))]
    )
    if name == "median":
        with pytest.raises(ValueError, match="number of bits"):
            unknown_width(u)
    else:
        assert unknown_width(u).shape == (6, 5)


def test_nan_features_do_not_crash_a_layer_and_give_defined_codes():
    """NaN has no sign: every layer still returns ±1 codes of the input's shape (NaN maps to
    -1 at inference, ``NaN >= 0`` being false); refusing NaN is the serving signatures' job
    (``tests/test_robustness_export.py::test_serving_default_refuses_nan_and_inf``)."""
    u = np.array([[np.nan, 1.0], [-1.0, np.nan], [2.0, 3.0]], "float32")
    for name, cls in LAYERS.items():
        codes = cls()(u, training=False).numpy()
        np.testing.assert_array_equal(codes, [[-1, 1], [-1, -1], [1, 1]], err_msg=name)


def _problem():
    rng = np.random.default_rng(3)
    query = np.where(rng.normal(size=(3, 16)) > 0, 1, -1).astype(np.int8)
    database = np.where(rng.normal(size=(10, 16)) > 0, 1, -1).astype(np.int8)
    return dict(
        query_codes=query,
        database_codes=database,
        query_labels=rng.integers(0, 2, 3),
        database_labels=rng.integers(0, 2, 10),
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"query_codes": np.full((3, 16), np.nan)}, "found nan"),
        ({"database_codes": np.full((10, 16), np.inf)}, "found inf"),
        ({"query_codes": np.full((3, 16), "a")}, "numeric or bool"),
        ({"query_codes": np.zeros((1, 3, 16))}, "2-D array"),
        ({"query_codes": np.zeros((3, 0)), "database_codes": np.zeros((10, 0))}, "zero columns"),
        ({"database_labels": np.zeros(5, int)}, "5 rows but the database has 10"),
        ({"query_labels": np.zeros((3, 1, 1), int)}, "class ids \\(N,\\) or multi-hot"),
        ({"query_labels": None}, "class ids \\(N,\\) or multi-hot"),
        ({"query_labels": np.array(["a", "b", "c"])}, "must be integers"),
        ({"query_labels": np.array([np.nan, 1.0, 0.0])}, "must be integers"),
        ({"top_k": 2.5}, "top_k must be a positive integer"),
        ({"top_k": True}, "top_k must be a positive integer"),
        ({"num_threads": 0}, "num_threads must be a positive integer"),
    ],
)
def test_metrics_refuse_malformed_codes_and_labels(changes, message):
    with pytest.raises(ValueError, match=message):
        metrics.mean_average_precision(**{**_problem(), **changes})


@pytest.mark.parametrize("function", [metrics.bit_balance, metrics.bit_entropy])
def test_bit_statistics_refuse_malformed_codes(function):
    for bad, message in (
        (np.full((3, 4), np.nan), "found nan"),
        (np.ones((2, 3, 4)), "2-D array"),
        (np.ones(4), "2-D array"),
        (np.full((3, 4), "x"), "numeric or bool"),
        (np.full((3, 4), 2), "found 2"),
    ):
        with pytest.raises(ValueError, match=message):
            function(bad)


def test_image_folder_with_a_zero_byte_file_and_a_non_image(tmp_path):
    """The image trainer's folder data path: a zero-byte image and a text file named .png are
    excluded and listed with their reason and name; a non-image extension is not collected;
    every good image keeps its label."""
    import io

    from PIL import Image

    from tf_bihalf.data.protocols import load_protocol

    rng = np.random.default_rng(4)
    for label in ("a", "b"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for index in range(6):
            buffer = io.BytesIO()
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="PNG")
            (tmp_path / "photos" / label / f"{index}.png").write_bytes(buffer.getvalue())
    (tmp_path / "photos" / "a" / "empty.jpg").write_bytes(b"")
    (tmp_path / "photos" / "a" / "notes.png").write_bytes(b"this is not an image\n")
    (tmp_path / "photos" / "b" / "readme.txt").write_text("not collected")
    splits = load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=1)
    excluded = {
        os.path.basename(path)
        for name in ("train", "query", "database")
        for path, _ in splits.excluded[name]
    }
    assert excluded == {"empty.jpg", "notes.png"}
    messages = " ".join(splits.report["unusable_examples"])
    assert "empty.jpg: is empty" in messages
    assert "notes.png: has no readable image header" in messages
    kept = {path for name in ("train", "query", "database") for path in splits.split(name).paths}
    assert len(kept) == 12 and all(os.path.basename(path)[0].isdigit() for path in kept)


def test_encode_helpers_refuse_nan_and_wrong_shapes():
    """The models' encode helpers take user arrays: NaN/Inf rows (which would silently encode
    as -1), wrong widths and non-numeric arrays are a ValueError that says which."""
    autoencoder = HashingAutoencoder(bits=BITS)
    pixels = np.zeros((4, 784), "float32")
    pixels[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf in 1 of 4 rows \\(first: row 2\\)"):
        autoencoder.encode(pixels)
    assert autoencoder.encode(np.zeros((0, 784), "float32")).shape == (0, BITS)
    image = ImageHasher("vgg16", bits=BITS, image_size=32)
    video = VideoHasher("resnet3d_10", bits=BITS, clip_size=16, clip_frames=2)
    for model, width in ((image, image.backbone.frozen_dim), (video, video.feature_dim)):
        features = np.ones((3, width), "float32")
        features[0, 0] = np.inf
        with pytest.raises(ValueError, match="NaN or Inf in 1 of 3 rows"):
            model.encode_features(features)
        with pytest.raises(ValueError, match=f"must be \\(N, {width}\\)"):
            model.encode_features(np.ones((3, width + 1), "float32"))
        with pytest.raises(ValueError, match="must be numeric"):
            model.encode_features(np.full((3, width), "x"))
        assert model.encode_features(np.ones((0, width), "float32")).shape == (0, BITS)
