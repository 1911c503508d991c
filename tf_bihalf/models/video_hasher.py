"""Video hasher: frozen 3D backbone -> pooled feature -> Linear(feat, K) -> hash layer.

The paper's video setting (``docs/paper.md``, "Settings"): a Kinetics-pretrained 3D CNN,
frozen; its pooled clip feature (512-d for 3D ResNet-18/34, 2048-d for 50/101, 1024-d for
I3D) feeds the hash head ``Linear(feat, K)`` (PyTorch's ``nn.Linear`` initialisation) and the
hash layer. ``VideoHasher`` maps raw clips (float32 ``(N, T, H, W, 3)`` RGB in ``[0, 255]``;
uint8 is accepted) to codes ``(N, K)``; with ``training=False`` the codes are ``sign(U)``
(±1), so the model itself is the encoder a run saves as ``encoder.keras``.

Its pieces follow ``ImageHasher``, so one training loop trains both:

* ``extractor`` (alias ``feature_extractor``): clip -> pooled feature, frozen and
  deterministic: computed once per clip and cached (``tf_bihalf.data.feature_cache``);
* ``tail``: cached feature -> ``{"features": x, "continuous": U, "codes": b}``; the only
  trained weights are the head's (and the hash layer's, if it has any);
* ``training_network(from_features=True)`` is ``tail``; ``from_features=False`` runs from clips;
* ``encode_features(features)`` and ``encode_clips(dataset)`` give int8 ±1 codes.

Backbones (``VIDEO_BACKBONES``): ``resnet3d_10`` ... ``resnet3d_200`` (Hara et al.; weights: a
``.pth`` Kinetics checkpoint of the reference or its converted ``.weights.h5``) and ``i3d``
(weights ``"kinetics400"``: the real checkpoint, fetched and verified; or a file).

Example:

>>> hasher = VideoHasher("resnet3d_18", bits=16, clip_size=32, clip_frames=8)
>>> hasher(np.zeros((2, 8, 32, 32, 3), "float32")).shape
TensorShape([2, 16])
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tf_bihalf import layers as hash_layers
from tf_bihalf.models import i3d as i3d_module
from tf_bihalf.models import resnet3d
from tf_bihalf.models.empty_batch import EmptyBatchSupport
from tf_bihalf.models.inputs import finite_features
from tf_bihalf.models.linear import torch_linear

VIDEO_BACKBONES = tuple(f"resnet3d_{depth}" for depth in sorted(resnet3d.DEPTHS)) + ("i3d",)


def build_video_backbone(
    name: str,
    weights: str | None = None,
    clip_frames: int = 16,
    clip_size: int = 112,
    shortcut: str | None = None,
) -> keras.Model:
    """The frozen feature extractor of a video backbone: raw clip -> pooled feature.

    Args:
        name: one of ``VIDEO_BACKBONES``.
        weights: None (random), ``"kinetics400"`` (I3D only), or a weights file.
        clip_frames, clip_size: the clip shape ``(clip_frames, clip_size, clip_size, 3)``.
        shortcut: 3D ResNet shortcut type (None = the reference's for the depth).

    Returns:
        A non-trainable ``keras.Model`` named ``"<name>_extractor"``.
    """
    if name not in VIDEO_BACKBONES:
        raise ValueError(
            f"Unknown video backbone {name!r}; expected one of {', '.join(VIDEO_BACKBONES)}."
        )
    for value, what in ((clip_frames, "clip_frames"), (clip_size, "clip_size")):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{what} must be a positive integer; got {value!r}.")
    shape = (clip_frames, clip_size, clip_size, 3)
    if name == "i3d":
        model = i3d_module.i3d(shape, include_top=False, name="i3d_extractor")
        if weights is not None:
            i3d_module.load_weights(model, weights)
    else:
        if weights == "kinetics400":
            raise ValueError(
                "No registry ships Kinetics weights for the 3D ResNets: pass the reference's "
                ".pth checkpoint (or its converted .weights.h5) as weights=PATH."
            )
        depth = int(name.split("_")[1])
        model = resnet3d.resnet3d(
            depth, shortcut, input_shape=shape, include_top=False, name=f"{name}_extractor"
        )
        if weights is not None:
            resnet3d.load_weights(model, weights)
    model.trainable = False
    return model


@keras.saving.register_keras_serializable(package="tf_bihalf")
class VideoHasher(EmptyBatchSupport, keras.Model):
    """Frozen video backbone + ``Linear(feat, K)`` head + hash layer (functional subclass).

    Args:
        backbone: a name of ``VIDEO_BACKBONES`` (``resnet3d_18``, ``resnet3d_34``,
            ``resnet3d_50``, ``resnet3d_101``, ``i3d``, ...).
        bits: code length K.
        hash_layer: ``bihalf``, ``sign``, ``signreg``, ``tanh``, ``relaxed`` or ``median``.
        weights: backbone weights (None, ``"kinetics400"`` for I3D, or a file). They are
            part of the saved ``.keras`` file, so the saved config records None (a reload
            never downloads); the original value is kept in ``weights_source``.
        clip_frames: frames per clip (16 in the paper).
        clip_size: clip height and width (112 in the paper).
        shortcut: 3D ResNet shortcut type, None = the reference's for the depth.
        dropout: dropout between the frozen feature and the head (None: none, as in the
            reference).
        hash_layer_kwargs: keyword arguments of the hash layer (e.g. ``{"gamma": 6.0}`` for
            bi-half), as ``ImageHasher``'s and ``HashingAutoencoder``'s.
        name: model name.
        **kwargs: passed to ``keras.Model`` (``trainable``, ``dtype``).

    Call arguments:
        inputs: ``(N, clip_frames, clip_size, clip_size, 3)`` RGB in ``[0, 255]``.
        training: bool; the hash layer's training behaviour (and the dropout).

    Returns:
        float32 codes ``(N, bits)``; ±1 when ``training`` is false. An empty batch gives
        ``(0, bits)`` codes (``tf_bihalf.models.empty_batch``).

    Example:

    >>> hasher = VideoHasher(
    ...     "resnet3d_18", bits=8, clip_size=32, clip_frames=8, hash_layer_kwargs={"gamma": 6.0}
    ... )
    >>> sorted(hasher.tail.output)
    ['codes', 'continuous', 'features']
    """

    def __init__(
        self,
        backbone: str = "resnet3d_34",
        bits: int = 64,
        hash_layer: str = "bihalf",
        weights: str | None = None,
        clip_frames: int = 16,
        clip_size: int = 112,
        shortcut: str | None = None,
        dropout: float | None = None,
        hash_layer_kwargs: dict | None = None,
        name: str = "video_hasher",
        **kwargs,
    ):
        if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
            raise ValueError(f"bits must be a positive integer; got {bits!r}.")
        if not isinstance(hash_layer, str):
            raise ValueError(f"hash_layer must be a layer name; got {hash_layer!r}.")
        if dropout is not None and not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}.")
        hash_layer_kwargs = dict(hash_layer_kwargs or {})
        extractor = build_video_backbone(backbone, weights, clip_frames, clip_size, shortcut)
        tail = self._build_tail(
            int(extractor.output.shape[-1]),
            bits,
            dropout,
            hash_layers.get(hash_layer, **hash_layer_kwargs),
        )
        clips = keras.Input((clip_frames, clip_size, clip_size, 3), name="clips")
        outputs = tail(extractor(clips, training=False))
        super().__init__(clips, outputs["codes"], name=name, **kwargs)
        self.backbone_name = backbone
        self.bits = bits
        self.hash_layer_name = hash_layer
        self.weights_source = weights
        self.clip_frames = clip_frames
        self.clip_size = clip_size
        self.shortcut = shortcut
        self.dropout = dropout
        self.hash_layer_kwargs = hash_layer_kwargs
        self.extractor = extractor
        self.tail = tail

    @staticmethod
    def _build_tail(feature_dim: int, bits: int, dropout, hash_layer) -> keras.Model:
        frozen = keras.Input((feature_dim,), name="frozen_features")
        features = frozen
        if dropout:
            features = keras.layers.Dropout(dropout, name="feature_dropout")(features)
        continuous = torch_linear(bits, feature_dim, name="hash_head")(features)
        codes = hash_layer(continuous)
        outputs = {"features": features, "continuous": continuous, "codes": codes}
        return keras.Model(frozen, outputs, name="hash_tail")

    @property
    def feature_extractor(self) -> keras.Model:
        """Clip -> pooled frozen feature (the part whose output is cached)."""
        return self.extractor

    @property
    def feature_dim(self) -> int:
        return int(self.extractor.output.shape[-1])

    @property
    def frozen_dim(self) -> int:
        """Size of the cached feature (equal to ``feature_dim``: there is no per-step top)."""
        return self.feature_dim

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.clip_frames, self.clip_size, self.clip_size, 3)

    @property
    def head(self) -> keras.layers.Dense:
        return self.tail.get_layer("hash_head")

    @property
    def hash_layer(self) -> keras.layers.Layer:
        return self.tail.layers[-1]

    def continuous_model(self) -> keras.Model:
        """Clips -> continuous U ``(N, bits)`` (a new model sharing the hasher's layers)."""
        clips = keras.Input(self.clip_shape, name="clips")
        outputs = self.tail(self.extractor(clips, training=False))
        return keras.Model(clips, outputs["continuous"], name="continuous")

    def training_network(self, from_features: bool) -> keras.Model:
        """The network to train: cached features (``from_features``) or clips -> the tail's
        dict ``{"features", "continuous", "codes"}``; it shares the hasher's layers."""
        if from_features:
            return self.tail
        clips = keras.Input(self.clip_shape, name="clips")
        outputs = self.tail(self.extractor(clips, training=False))
        return keras.Model(clips, outputs, name="end_to_end")

    def encode_features(self, features, batch_size: int = 256) -> np.ndarray:
        """int8 ±1 codes of cached features ``(N, feature_dim)`` (inference mode: equal to
        the codes of the clips they came from); ``ValueError`` for a wrong shape or NaN/Inf."""
        features = finite_features(features, self.feature_dim, "features")
        codes = [
            self._encode_tail(tf.convert_to_tensor(features[start : start + batch_size])).numpy()
            for start in range(0, len(features), batch_size)
        ]
        return np.concatenate([np.zeros((0, self.bits), np.int8), *codes]).astype(np.int8)

    def encode_clips(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """int8 ±1 codes and labels of a batched ``(clips, labels, ...)`` ``tf.data`` dataset."""
        codes, labels = [np.zeros((0, self.bits), np.int8)], [np.zeros((0,), np.int32)]
        for batch in dataset:
            clips, batch_labels = batch[0], batch[1]
            if clips.shape[0] == 0:  # Convolutions refuse a batch of zero examples.
                continue
            codes.append(self._encode_clips(tf.cast(clips, tf.float32)).numpy().astype(np.int8))
            labels.append(np.asarray(batch_labels))
        return np.concatenate(codes), np.concatenate(labels)

    def extract_features(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """Pooled frozen features and labels of a batched ``(clips, labels, ...)`` dataset."""
        features = [np.zeros((0, self.feature_dim), np.float32)]
        labels = [np.zeros((0,), np.int32)]
        for batch in dataset:
            if batch[0].shape[0] == 0:
                continue
            features.append(self._extract(tf.cast(batch[0], tf.float32)).numpy())
            labels.append(np.asarray(batch[1]))
        return np.concatenate(features), np.concatenate(labels)

    @tf.function(reduce_retracing=True, autograph=False)
    def _encode_tail(self, features):
        return self.tail(features, training=False)["codes"]

    @tf.function(reduce_retracing=True, autograph=False)
    def _encode_clips(self, clips):
        return self(clips, training=False)

    @tf.function(reduce_retracing=True, autograph=False)
    def _extract(self, clips):
        return self.extractor(clips, training=False)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": self.backbone_name,
                "bits": self.bits,
                "hash_layer": self.hash_layer_name,
                "weights": None,
                "clip_frames": self.clip_frames,
                "clip_size": self.clip_size,
                "shortcut": self.shortcut,
                "dropout": self.dropout,
                "hash_layer_kwargs": dict(self.hash_layer_kwargs),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
