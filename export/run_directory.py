"""Reads a training run directory: ``RUN/config.json`` and ``RUN/encoder.keras``.

That is all export needs from a run (see the run-directory contract in the project docs):

- ``config.json`` has ``bits``, ``model_type`` (``"autoencoder"`` | ``"image"``), ``hash_layer``,
  ``input_shape`` (without the batch axis) and, for image models, ``image_size`` ``[H, W]`` and
  ``backbone``;
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
import json
import os

import keras

from tf_bihalf.data.image_pipeline import RESIZE_MODES

MODEL_TYPES = ("autoencoder", "image")


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What a deployed encoder takes and returns.

    Attributes:
        bits: code length K.
        model_type: ``"autoencoder"`` or ``"image"``.
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
        return (self.bits + 7) // 8

    @property
    def input_range(self) -> tuple[float, float]:
        """The range of the raw input values the encoder expects."""
        return (0.0, 255.0) if self.model_type == "image" else (0.0, 1.0)

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
    def from_config(cls, config: dict) -> EncoderSpec:
        """Builds the spec from a run's ``config.json`` contents (extra keys are ignored)."""
        if not isinstance(config, dict):
            raise ValueError(f"The run config must be a JSON object; got {type(config).__name__}.")
        missing = [key for key in ("bits", "model_type", "input_shape") if key not in config]
        if missing:
            raise ValueError(
                f"The run config lacks {missing}; a training run's config.json always has "
                "'bits', 'model_type', 'hash_layer' and 'input_shape'."
            )
        image_size = config.get("image_size")
        data_config = config.get("data") if isinstance(config.get("data"), dict) else {}
        resize = config.get("resize", data_config.get("resize", "stretch"))
        return cls(
            bits=config["bits"],
            model_type=config["model_type"],
            input_shape=tuple(config["input_shape"]),
            hash_layer=str(config.get("hash_layer", "unknown")),
            image_size=None if image_size is None else tuple(int(size) for size in image_size),
            backbone=config.get("backbone"),
            resize=resize,
        )


def read_config(workdir: str) -> dict:
    """Returns the parsed ``workdir/config.json``."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"Run directory {workdir!r} does not exist.")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path!r} not found: is {workdir!r} a training run directory (--workdir of a trainer)?"
        )
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is not valid JSON: {error}") from None


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
    """Loads ``workdir/encoder.keras`` and the spec from ``workdir/config.json``.

    Raises:
        FileNotFoundError: the directory, ``config.json`` or ``encoder.keras`` is missing.
        ValueError: the config is incomplete or disagrees with the model.
    """
    spec = EncoderSpec.from_config(read_config(workdir))
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
