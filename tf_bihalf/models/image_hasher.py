"""Image hasher: frozen backbone -> Linear(feat, K) -> hash layer, and its training wrapper.

``ImageHasher`` maps raw RGB images (float32 ``(N, H, W, 3)`` in ``[0, 255]``) to codes
``(N, K)``; with ``training=False`` the codes are ``sign(U)`` (±1), so the model itself is the
encoder a run leaves in ``RUN/encoder.keras``. Its graph, per docs/paper.md, "Settings" (VGG16):

    image -> preprocessing -> conv -> fc6 -> ReLU          (backbone.extractor: frozen, cacheable)
          -> dropout(0.5) -> fc7 -> ReLU -> dropout(0.5)   (backbone.top: frozen weights, per step)
          = x (features, 4096)
          -> Linear(4096, K)                                (head: the only trained weights)
          = U (continuous)
          -> hash layer (bi-half in training, sign at inference)
          = b (codes)

The head is initialised like PyTorch's ``nn.Linear``: weight and bias ~
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

``hasher.tail`` is the part after the extractor as its own model (frozen features ->
``{"features": x, "continuous": U, "codes": b}``); training on cached features trains exactly
these layers, so the full ``ImageHasher`` (which contains the same layer objects) is the
trained encoder afterwards. ``hasher.continuous_model()`` maps images to U.
``SimilarityPreservingModel`` wraps either network with the cosine loss for ``fit``.

Example:

>>> hasher = ImageHasher("vgg16", bits=16, image_size=32)
>>> hasher(np.zeros((2, 32, 32, 3), "float32")).shape
TensorShape([2, 16])
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_bihalf import layers as hash_layers
from tf_bihalf.losses.cosine import CosineSimilarityPreservation
from tf_bihalf.models.backbones import Backbone, build_backbone, normalize_image_size
from tf_bihalf.models.empty_batch import EmptyBatchSupport
from tf_bihalf.models.inputs import finite_features
from tf_bihalf.models.linear import torch_linear


@keras.saving.register_keras_serializable(package="tf_bihalf")
class ImageHasher(EmptyBatchSupport, keras.Model):
    """Frozen image backbone + ``Linear(feat, K)`` head + hash layer (functional subclass).

    Args:
        backbone: a name from ``tf_bihalf.models.backbones`` (``vgg16``, ``resnet50``,
            ``efficientnet_b0``, ``mobilenet_v3_small``, ``efficientnet_lite0``, ...).
        bits: code length K.
        hash_layer: ``bihalf``, ``sign``, ``signreg``, ``tanh``, ``relaxed`` or ``median``.
        weights: backbone weights: None, ``"imagenet"`` or a local file. They are part of
            the saved ``.keras`` file, so the saved config records ``None`` (a reload never
            downloads); the original value is kept in ``self.weights_source``.
        image_size: int or ``(height, width)`` of the input images.
        dropout: dropout of the backbone's per-step top; None = the backbone's default
            (0.5 after fc6 and fc7 for VGG, as in the reference; none otherwise).
        hash_layer_kwargs: keyword arguments of the hash layer (e.g. ``{"gamma": 6.0}`` for
            bi-half), as ``HashingAutoencoder``'s.
        name: model name.
        **kwargs: passed to ``keras.Model`` (e.g. ``dtype``, ``trainable``).

    Call arguments:
        inputs: float32 ``(N, H, W, 3)`` RGB in ``[0, 255]``.
        training: bool; the hash layer's training behaviour and the top's dropout.

    Returns:
        float32 codes ``(N, bits)``; ±1 when ``training`` is false. An empty batch gives
        ``(0, bits)`` codes (``tf_bihalf.models.empty_batch``).

    Example:

    >>> hasher = ImageHasher("vgg16", bits=8, image_size=32, hash_layer_kwargs={"gamma": 6.0})
    >>> sorted(hasher.tail.output)
    ['codes', 'continuous', 'features']
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        bits: int = 64,
        hash_layer: str = "bihalf",
        weights: str | None = None,
        image_size=224,
        dropout: float | None = None,
        hash_layer_kwargs: dict | None = None,
        name: str = "image_hasher",
        **kwargs,
    ):
        if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
            raise ValueError(f"bits must be a positive integer; got {bits!r}.")
        if not isinstance(hash_layer, str):
            raise ValueError(f"hash_layer must be a layer name; got {hash_layer!r}.")
        hash_layer_kwargs = dict(hash_layer_kwargs or {})
        image_size = normalize_image_size(image_size)
        parts = build_backbone(backbone, weights=weights, image_size=image_size, dropout=dropout)
        tail = self._build_tail(parts, bits, hash_layers.get(hash_layer, **hash_layer_kwargs))
        images = keras.Input((*image_size, 3), name="images")
        outputs = tail(parts.extractor(images))
        super().__init__(images, outputs["codes"], name=name, **kwargs)
        self.backbone_name = backbone
        self.bits = bits
        self.hash_layer_name = hash_layer
        self.weights_source = weights
        self.image_size = image_size
        self.dropout = dropout
        self.hash_layer_kwargs = dict(hash_layer_kwargs)
        self.backbone = parts
        self.extractor = parts.extractor
        self.tail = tail

    @staticmethod
    def _build_tail(parts: Backbone, bits: int, hash_layer) -> keras.Model:
        frozen = keras.Input((parts.frozen_dim,), name="frozen_features")
        features = parts.top(frozen)
        continuous = torch_linear(bits, parts.feature_dim, name="hash_head")(features)
        codes = hash_layer(continuous)
        outputs = {"features": features, "continuous": continuous, "codes": codes}
        return keras.Model(frozen, outputs, name="hash_tail")

    @property
    def head(self) -> keras.layers.Dense:
        return self.tail.get_layer("hash_head")

    @property
    def hash_layer(self) -> keras.layers.Layer:
        return self.tail.layers[-1]

    def continuous_model(self) -> keras.Model:
        """Images -> continuous U ``(N, bits)`` (a new model sharing the hasher's layers; a
        method, not a property, so that Keras' saving never walks into it)."""
        images = keras.Input((*self.image_size, 3), name="images")
        outputs = self.tail(self.extractor(images))
        return keras.Model(images, outputs["continuous"], name="continuous")

    def training_network(self, from_features: bool) -> keras.Model:
        """The network to train: frozen features (``from_features``) or images -> the tail's
        dict ``{"features", "continuous", "codes"}``; it shares the hasher's layers."""
        if from_features:
            return self.tail
        images = keras.Input((*self.image_size, 3), name="images")
        return keras.Model(images, self.tail(self.extractor(images)), name="end_to_end")

    def encode_features(self, features, batch_size: int = 256) -> np.ndarray:
        """int8 ±1 codes of cached frozen features ``(N, frozen_dim)`` (inference mode: equal
        to the codes of the images they came from); ``ValueError`` for a wrong shape or
        NaN/Inf."""
        features = finite_features(features, self.backbone.frozen_dim, "features")
        codes = [
            self._encode_tail(tf.convert_to_tensor(features[start : start + batch_size])).numpy()
            for start in range(0, len(features), batch_size)
        ]
        return np.concatenate([np.zeros((0, self.bits), np.int8), *codes]).astype(np.int8)

    def encode_images(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """int8 ±1 codes and labels of an ``(images, labels)`` ``tf.data`` dataset."""
        codes, labels = [np.zeros((0, self.bits), np.int8)], []
        for images, batch_labels in dataset:
            if images.shape[0] == 0:  # Convolutions refuse a batch of zero examples.
                continue
            codes.append(self._encode_images(images).numpy().astype(np.int8))
            labels.append(np.asarray(batch_labels))
        if not labels:
            labels_spec = dataset.element_spec[1]
            labels = [np.zeros((0, *labels_spec.shape[1:]), labels_spec.dtype.as_numpy_dtype)]
        return np.concatenate(codes), np.concatenate(labels)

    @tf.function(reduce_retracing=True, autograph=False)
    def _encode_tail(self, features):
        return self.tail(features, training=False)["codes"]

    @tf.function(reduce_retracing=True, autograph=False)
    def _encode_images(self, images):
        return self(images, training=False)

    def get_config(self):
        config = super().get_config()  # name, trainable, dtype
        config.update(
            {
                "backbone": self.backbone_name,
                "bits": self.bits,
                "hash_layer": self.hash_layer_name,
                "weights": None,
                "image_size": list(self.image_size),
                "dropout": self.dropout,
                "hash_layer_kwargs": dict(self.hash_layer_kwargs),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "hash_layer_kwargs" not in config:
            # Files saved before hash_layer_kwargs: the layer's arguments were top-level keys.
            known = {"backbone", "bits", "hash_layer", "weights", "image_size", "dropout"}
            known |= {"name", "trainable", "dtype"}
            config["hash_layer_kwargs"] = {
                key: config.pop(key) for key in list(config) if key not in known
            }
        return cls(**config)


class SimilarityPreservingModel(keras.Model):
    """Trains a hash network with the cosine similarity-preservation loss (docs/paper.md, "Settings").

    ``network`` maps its inputs (images or cached frozen features) to a dict with
    ``"features"`` (x, the backbone features after the per-step top), ``"continuous"`` (U) and
    ``"codes"`` (b, the hash layer's training output); ``continuous_encoder`` / ``encoder``
    (input -> U / codes) serve ``tf_bihalf.callbacks.BitMonitor``. The loss is ``loss(x, b)`` plus every loss the layers add
    (e.g. ``SignReg``'s balance term); labels in the dataset are ignored (unsupervised).

    Args:
        network: ``ImageHasher.training_network(...)`` or any model with that output dict.
        loss: a ``CosineSimilarityPreservation`` (default ``pairing="half"``).
        **kwargs: passed to ``keras.Model``.

    Example:

    >>> hasher = ImageHasher("vgg16", bits=8, image_size=32)
    >>> model = SimilarityPreservingModel(hasher.training_network(from_features=True))
    >>> model.compile(optimizer="sgd")
    """

    def __init__(self, network: keras.Model, loss: keras.losses.Loss | None = None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.similarity_loss = loss if loss is not None else CosineSimilarityPreservation()
        # The tf_bihalf.training.submodels protocol: network input -> U / codes.
        outputs = network.output
        # One input tensor, not a one-element list: called with a tensor, as the loop does.
        inputs = network.inputs[0] if len(network.inputs) == 1 else network.inputs
        self.continuous_encoder = keras.Model(inputs, outputs["continuous"])
        self.encoder = keras.Model(inputs, outputs["codes"])

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = self.similarity_loss(y_pred["features"], y_pred["codes"])
        if self.losses:
            # Layer losses (e.g. SignReg's balance term) are per replica: scale them like
            # Keras scales every loss under tf.distribute.
            extra = tf.add_n([tf.cast(tf.reduce_sum(loss), total.dtype) for loss in self.losses])
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            total = total + extra / float(replicas)
        return total
