"""A minimal writer of ``torch.save`` files for tests, without torch and without ``pickle``'s
global lookup: it emits the pickle opcodes (protocol 2) itself, so it can write real layouts
(legacy and zip, as torch writes them) and crafted, malicious ones alike.

``Tensor(storage, offset, shape, stride)`` and ``Storage(key, array, type_name)`` describe the
records; any other value must be a dict, OrderedDict, list, tuple, str, int, float, bool or None.
``Global(module, name)`` emits a bare global (to test that the reader refuses it).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TYPE_NAMES = {
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float32"): "FloatStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


@dataclasses.dataclass
class Storage:
    key: str
    array: np.ndarray  # 1-d, the raw elements
    type_name: str | None = None  # default: from the dtype
    declared_numel: int | None = None  # default: array.size (a lie when set)

    @property
    def numel(self) -> int:
        return self.array.size if self.declared_numel is None else self.declared_numel

    @property
    def type(self) -> str:
        return self.type_name or TYPE_NAMES[self.array.dtype]


@dataclasses.dataclass
class Tensor:
    storage: Storage
    offset: object
    shape: object
    stride: object
    parameter: bool = False


@dataclasses.dataclass
class Global:
    module: str
    name: str
    args: tuple = ()


def _global(out: io.BytesIO, module: str, name: str) -> None:
    out.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")


def _int(out: io.BytesIO, value: int) -> None:
    if 0 <= value < 256:
        out.write(b"K" + bytes([value]))
    elif -(2**31) <= value < 2**31:
        out.write(b"J" + struct.pack("<i", value))
    else:
        encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        out.write(b"\x8a" + bytes([len(encoded)]) + encoded)


def _dump(out: io.BytesIO, obj) -> None:
    if obj is None:
        out.write(b"N")
    elif obj is True:
        out.write(b"\x88")
    elif obj is False:
        out.write(b"\x89")
    elif isinstance(obj, int):
        _int(out, obj)
    elif isinstance(obj, float):
        out.write(b"G" + struct.pack(">d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        out.write(b"X" + struct.pack("<I", len(data)) + data)
    elif isinstance(obj, tuple):
        out.write(b"(")
        for item in obj:
            _dump(out, item)
        out.write(b"t")
    elif isinstance(obj, list):
        out.write(b"](")
        for item in obj:
            _dump(out, item)
        out.write(b"e")
    elif isinstance(obj, dict):
        if isinstance(obj, collections.OrderedDict):
            _global(out, "collections", "OrderedDict")
            out.write(b")R")
        else:
            out.write(b"}")
        if obj:
            out.write(b"(")
            for key, value in obj.items():
                _dump(out, key)
                _dump(out, value)
            out.write(b"u")
    elif isinstance(obj, Tensor):
        if obj.parameter:
            _global(out, "torch._utils", "_rebuild_parameter")
            out.write(b"(")
        _global(out, "torch._utils", "_rebuild_tensor_v2")
        out.write(b"(")
        _dump(out, obj.storage)
        _dump(out, obj.offset)
        _dump(out, obj.shape)
        _dump(out, obj.stride)
        _dump(out, False)
        _dump(out, collections.OrderedDict())
        out.write(b"tR")
        if obj.parameter:
            _dump(out, True)
            _dump(out, collections.OrderedDict())
            out.write(b"tR")
    elif isinstance(obj, Storage):
        # The persistent id torch writes: ("storage", StorageType, key, location, numel).
        out.write(b"(")
        _dump(out, "storage")
        _global(out, "torch", obj.type)
        _dump(out, obj.key)
        _dump(out, "cpu")
        _dump(out, obj.numel)
        out.write(b"tQ")
    elif isinstance(obj, Global):
        _global(out, obj.module, obj.name)
        _dump(out, obj.args)
        out.write(b"R")
    else:
        raise TypeError(f"torch_writer cannot write {type(obj).__name__}")


def dumps(obj) -> bytes:
    """One protocol-2 pickle of ``obj``."""
    out = io.BytesIO()
    out.write(b"\x80\x02")
    _dump(out, obj)
    out.write(b".")
    return out.getvalue()


def storages_of(obj, found: dict[str, Storage] | None = None) -> dict[str, Storage]:
    found = {} if found is None else found
    if isinstance(obj, Tensor):
        found.setdefault(obj.storage.key, obj.storage)
    elif isinstance(obj, dict):
        for value in obj.values():
            storages_of(value, found)
    elif isinstance(obj, list | tuple):
        for value in obj:
            storages_of(value, found)
    return found


def legacy_bytes(obj) -> bytes:
    """``torch.save(obj, f, _use_new_zipfile_serialization=False)`` without torch."""
    storages = storages_of(obj)
    parts = [
        dumps(LEGACY_MAGIC),
        dumps(1001),
        dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}),
        dumps(obj),
        dumps(list(storages)),
    ]
    for storage in storages.values():
        parts.append(struct.pack("<q", storage.numel))
        parts.append(storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes())
    return b"".join(parts)


def write_legacy(path, obj) -> None:
    with open(path, "wb") as handle:
        handle.write(legacy_bytes(obj))


def write_zip(path, obj, root: str = "archive") -> None:
    """``torch.save(obj, f)`` (zip serialisation, stored uncompressed) without torch."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{root}/data.pkl", dumps(obj))
        archive.writestr(f"{root}/byteorder", "little")
        for key, storage in storages_of(obj).items():
            archive.writestr(f"{root}/data/{key}", storage.array.tobytes())
        archive.writestr(f"{root}/version", "3\n")


def tensor(key: str, array: np.ndarray, transposed: bool = False) -> Tensor:
    """A tensor holding ``array`` in its own storage; ``transposed`` stores the reversed-axes
    copy and uses reversed strides (a non-contiguous tensor, as ``.t()`` gives)."""
    array = np.asarray(array)
    if transposed and array.ndim >= 2:
        raw = np.ascontiguousarray(array.transpose()).ravel()
        stride, step = [], 1
        for n in array.shape:
            stride.append(step)
            step *= n
        return Tensor(Storage(key, raw), 0, tuple(array.shape), tuple(stride))
    stride = tuple(int(s) // array.itemsize for s in array.strides) if array.ndim else ()
    return Tensor(Storage(key, np.ascontiguousarray(array).ravel()), 0, array.shape, stride)


def state_dict(arrays: dict[str, np.ndarray], transposed: bool = False):
    """An OrderedDict of tensors, one storage each (keys "0", "1", ...)."""
    return collections.OrderedDict(
        (name, tensor(str(index), array, transposed=transposed))
        for index, (name, array) in enumerate(arrays.items())
    )
