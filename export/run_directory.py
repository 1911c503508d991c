"""Reads a training run directory: ``RUN/run.json`` and ``RUN/encoder.keras``.

That is all export needs from a run (docs/training.md, "The run directory"):

- ``run.json``, the typed run record the training loop writes
  (``tf_bihalf.training.record.RunRecord``): ``task`` (``"autoencoder"`` | ``"image"``),
  ``bits``, ``hash_layer``, ``input`` (one example's shape, dtype and value range),
  ``preprocessing`` (for image models ``image_size`` ``[H, W]`` and ``resize``) and
  ``backbone``. Export never reads the trainer's ``config.json``;
- ``encoder.keras`` maps the raw input (autoencoder: float32 ``(N, 784)`` pixels in [0, 1]; image
  models: float32 ``(N, H, W, 3)`` RGB in [0, 255], preprocessing inside the model) to float32
  ±1 codes ``(N, K)`` when called with ``training=False``.

Example:

>>> model, spec = load_run("runs/mnist_bihalf_32")   # doctest: +SKIP
>>> spec.bits, spec.input_shape
(32, (784,))
"""

from __future__ import annotations

import dataclasses
import os

import keras

from tf_bihalf.codes import packed_width
from tf_bihalf.data.image_pipeline import RESIZE_MODES
from tf_bihalf.errors import InputError
from tf_bihalf.training.record import RunRecord

MODEL_TYPES = ("autoencoder", "image", "video")


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What a deployed encoder takes and returns.

    Attributes:
        bits: code length K.
        model_type: ``"autoencoder"``, ``"image"`` or ``"video"`` (clips
            ``(frames, H, W, 3)`` RGB in [0, 255], through ``serving_default`` only).
        input_shape: one example's shape, e.g. ``(784,)`` or ``(224, 224, 3)``.
        hash_layer: the hash layer the model was trained with (``"bihalf"``, ``"sign"``, ...).
        image_size: ``(H, W)`` for image models, else ``None``.
        backbone: backbone name for image models, else ``None``.
        resize: how images are brought to ``image_size`` (``"stretch"`` or ``"center_crop"``,
            see ``tf_bihalf.data.image_pipeline``); the config's ``resize`` when it has one.
    """

    bits: int
    model_type: str
    input_shape: tuple[int, ...]
    hash_layer: str
    image_size: tuple[int, int] | None = None
    backbone: str | None = None
    resize: str = "stretch"

    def __post_init__(self):
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or self.bits < 1:
            raise ValueError(f"bits must be a positive integer; got {self.bits!r}.")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}; got {self.model_type!r}.")
        if not self.input_shape or any(
            not isinstance(size, int) or size < 1 for size in self.input_shape
        ):
            raise ValueError(
                f"input_shape must be a non-empty list of positive integers; got "
                f"{list(self.input_shape)!r}."
            )
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}; got {self.resize!r}.")
        if self.model_type == "video" and (len(self.input_shape) != 4 or self.input_shape[-1] != 3):
            raise ValueError(
                "A video model_type needs input_shape (frames, height, width, 3); got "
                f"{list(self.input_shape)}."
            )
        if self.model_type == "image":
            if self.image_size is None or len(self.image_size) != 2:
                raise ValueError(
                    "An image model needs image_size [H, W] in its config; got "
                    f"{self.image_size!r}."
                )
            expected = (int(self.image_size[0]), int(self.image_size[1]), 3)
            if tuple(self.input_shape) != expected:
                raise ValueError(
                    f"An image model's input_shape must be image_size + [3] = {list(expected)}; "
                    f"got {list(self.input_shape)}."
                )

    @property
    def packed_width(self) -> int:
        """Bytes per packed code, ``ceil(bits / 8)``."""
        return packed_width(self.bits)

    @property
    def input_range(self) -> tuple[float, float]:
        """The range of the raw input values the encoder expects."""
        return (0.0, 255.0) if self.model_type in ("image", "video") else (0.0, 1.0)

    def to_dict(self) -> dict:
        """A JSON-ready dict (lists instead of tuples)."""
        return {
            "bits": self.bits,
            "model_type": self.model_type,
            "input_shape": list(self.input_shape),
            "hash_layer": self.hash_layer,
            "image_size": None if self.image_size is None else list(self.image_size),
            "backbone": self.backbone,
            "resize": self.resize,
        }

    @classmethod
    def from_record(cls, record: RunRecord) -> EncoderSpec:
        """The spec of a run record (``RUN/run.json``)."""
        preprocessing = record.preprocessing
        image_size = preprocessing["image_size"] if record.task == "image" else None
        return cls(
            bits=record.bits,
            model_type=record.task,
            input_shape=tuple(record.input.shape),
            hash_layer=record.hash_layer,
            image_size=None if image_size is None else tuple(int(size) for size in image_size),
            backbone=record.backbone,
            resize=preprocessing["resize"] if record.task == "image" else "stretch",
        )


def read_spec(workdir: str) -> EncoderSpec:
    """The ``EncoderSpec`` of a run directory, from its ``run.json``.

    Raises:
        FileNotFoundError: the directory or its ``run.json`` is missing.
        InputError: ``run.json`` is not a valid run record, or describes a model export does
            not support.
    """
    record = RunRecord.read(workdir)
    try:
        return EncoderSpec.from_record(record)
    except KeyError as error:
        raise InputError(f"{workdir}/run.json: preprocessing lacks {error}.") from None


def check_model(model: keras.Model, spec: EncoderSpec) -> None:
    """Raises ``ValueError`` when the model's input or output shape disagrees with the spec."""
    inputs = model.inputs if hasattr(model, "inputs") and model.inputs else None
    if inputs is not None:
        if len(inputs) != 1:
            raise ValueError(f"The encoder must have exactly one input; it has {len(inputs)}.")
        model_shape = tuple(inputs[0].shape[1:])
        if model_shape != tuple(spec.input_shape):
            raise ValueError(
                f"The encoder's input shape {model_shape} differs from config input_shape "
                f"{tuple(spec.input_shape)}."
            )
    outputs = model.outputs if hasattr(model, "outputs") and model.outputs else None
    if outputs is not None:
        if len(outputs) != 1:
            raise ValueError(f"The encoder must have exactly one output; it has {len(outputs)}.")
        output_shape = tuple(outputs[0].shape)
        if len(output_shape) != 2 or output_shape[-1] != spec.bits:
            raise ValueError(
                f"The encoder's output shape {output_shape} is not (batch, bits={spec.bits})."
            )


_LAYER_MODULES = (
    "tf_bihalf.models.backbones",
    "tf_bihalf.models.efficientnet_lite",
    "tf_bihalf.models.image_hasher",
    "tf_bihalf.models.autoencoder",
)


def _register_layers() -> None:
    """Imports tf_bihalf and the model modules that register Keras layers, where present."""
    import importlib
    import importlib.util

    import tf_bihalf  # noqa: F401  (registers the hash layers for deserialization)

    for name in _LAYER_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def load_run(workdir: str) -> tuple[keras.Model, EncoderSpec]:
    """Loads ``workdir/encoder.keras`` and the spec from ``workdir/run.json``.

    Raises:
        FileNotFoundError: the directory, ``run.json`` or ``encoder.keras`` is missing.
        ValueError: the record is invalid or disagrees with the model.
    """
    spec = read_spec(workdir)
    path = os.path.join(workdir, "encoder.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path!r} not found: the trainer writes the encoder there at the end of training."
        )
    _register_layers()
    try:
        model = keras.saving.load_model(path, compile=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Could not load {path!r}: {str(error).splitlines()[0][:400]}") from error
    check_model(model, spec)
    return model, spec
