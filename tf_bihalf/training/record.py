"""The typed run record: what a trained run is, written by the training loop, read by export.

``RUN/run.json`` (``RunRecord``) says what the saved encoder (``RUN/encoder.keras``) expects and
produces, so that export never re-derives it from the trainer's untyped ``config.json``:

- ``task``: ``"autoencoder"``, ``"image"`` or ``"video"``; ``config_name``, ``dataset``,
  ``protocol``, ``seed``;
- ``bits``, ``hash_layer`` and ``hash_layer_kwargs``;
- ``input``: one example's ``shape`` (without the batch axis), ``dtype``, value ``range`` and
  ``kind`` (``"vector"``, ``"image"``, ``"video"``);
- ``preprocessing``: how raw data becomes that input (e.g. ``{"resize": "stretch",
  "image_size": [224, 224]}``; the model normalises internally);
- ``backbone``: the frozen backbone's name (None for the autoencoder);
- ``config_sha256``: the hash of the resolved config (``config.json``), tying the record to it.

Example:

>>> record = RunRecord(task="autoencoder", config_name="autoencoder", dataset="mnist",
...                    protocol=None, seed=0, bits=32, hash_layer="bihalf",
...                    hash_layer_kwargs={"gamma": 1.0},
...                    input=InputSpec(kind="vector", shape=(784,), range=(0.0, 1.0)))
>>> RunRecord.from_dict(record.to_dict()) == record
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from tf_bihalf.errors import InputError

RECORD_FILE = "run.json"
FORMAT_VERSION = 1
TASKS = ("autoencoder", "image", "video")
INPUT_KINDS = ("vector", "image", "video")


def config_sha256(config: dict) -> str:
    """SHA-256 of a config's canonical JSON (sorted keys): the identity of a resolved config."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One example as the encoder takes it: ``kind``, ``shape``, ``dtype``, value ``range``."""

    kind: str
    shape: tuple[int, ...]
    range: tuple[float, float]
    dtype: str = "float32"

    def __post_init__(self):
        if self.kind not in INPUT_KINDS:
            raise InputError(f"input kind must be one of {INPUT_KINDS}; got {self.kind!r}.")
        shape = tuple(self.shape)
        if not shape or any(
            isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in shape
        ):
            raise InputError(f"input shape must be positive integers; got {list(shape)!r}.")
        object.__setattr__(self, "shape", shape)
        low, high = (float(value) for value in self.range)
        if not low < high:
            raise InputError(f"input range must be (low, high) with low < high; got {self.range}.")
        object.__setattr__(self, "range", (low, high))


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a trained run is (see the module docstring)."""

    task: str
    config_name: str
    dataset: str
    protocol: str | None
    seed: int
    bits: int
    hash_layer: str
    hash_layer_kwargs: dict
    input: InputSpec
    preprocessing: dict = dataclasses.field(default_factory=dict)
    backbone: str | None = None
    config_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.task not in TASKS:
            raise InputError(f"task must be one of {TASKS}; got {self.task!r}.")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or self.bits < 1:
            raise InputError(f"bits must be a positive integer; got {self.bits!r}.")
        if self.format_version != FORMAT_VERSION:
            raise InputError(
                f"run.json format_version {self.format_version} is not supported (this version "
                f"reads {FORMAT_VERSION})."
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input"]["shape"] = list(self.input.shape)
        data["input"]["range"] = list(self.input.range)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        if not isinstance(data, dict):
            raise InputError(f"A run record must be a JSON object; got {type(data).__name__}.")
        fields = {field.name for field in dataclasses.fields(cls)}
        required = {
            field.name
            for field in dataclasses.fields(cls)
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        }
        missing, unknown = sorted(required - set(data)), sorted(set(data) - fields)
        if missing or unknown:
            raise InputError(f"run record: missing keys {missing}, unknown keys {unknown}.")
        values = dict(data)
        spec = values["input"]
        if not isinstance(spec, dict) or set(spec) - {"kind", "shape", "range", "dtype"}:
            raise InputError(
                f"run record: 'input' must hold kind, shape, range, dtype; got {spec}."
            )
        try:
            values["input"] = InputSpec(
                kind=spec["kind"],
                shape=tuple(spec["shape"]),
                range=tuple(spec["range"]),
                dtype=spec["dtype"],
            )
        except (KeyError, TypeError) as error:
            raise InputError(f"run record: bad 'input' {spec!r} ({error}).") from None
        return cls(**values)

    def write(self, run_directory: str) -> str:
        """Writes ``RUN/run.json`` atomically; returns its path."""
        from tf_bihalf.training.workdir import write_json  # noqa: PLC0415 - avoids a cycle

        path = os.path.join(run_directory, RECORD_FILE)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, run_directory: str) -> RunRecord:
        """Reads ``RUN/run.json``.

        Raises:
            FileNotFoundError: the directory or its ``run.json`` is missing.
            InputError: the file is not a valid run record.
        """
        path = os.path.join(run_directory, RECORD_FILE)
        if not os.path.isdir(run_directory):
            raise FileNotFoundError(f"Run directory {run_directory!r} does not exist.")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path!r} not found: is {run_directory!r} a finished training run (the "
                "trainers write run.json when training ends)?"
            )
        with open(path, encoding="utf-8") as file:
            try:
                data = json.load(file)
            except json.JSONDecodeError as error:
                raise InputError(f"{path!r} is not valid JSON: {error}") from None
        return cls.from_dict(data)
