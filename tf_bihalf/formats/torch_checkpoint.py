"""Reads PyTorch ``torch.save`` checkpoints into numpy arrays, without torch, memory-safely.

A ``.pth`` file is untrusted input: ``pickle.load`` on it can run any code, and a tensor record
names a storage, an offset, a shape and strides that a crafted file can point anywhere. This
reader admits only what a checkpoint of tensors needs and checks every record against the file:

* **Restricted unpickler**: the only globals resolved are ``collections.OrderedDict``,
  ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2`` / ``_rebuild_parameter`` and the
  typed storage classes (``torch.FloatStorage``, ...). Any other global (``os.system``,
  ``builtins.eval``, ...) raises ``UnsafeCheckpointError``. Containers, strings and numbers
  need no global and load as usual, so a whole training checkpoint
  (``{"epoch", "arch", "state_dict", "optimizer"}``) loads with its tensors as arrays.
* **Storages against the file**: each storage's element count, dtype and byte size must agree
  with what the file holds (legacy: the int64 count before the raw bytes; zip: the member's
  size); a size is checked before anything is read, so a huge count cannot allocate memory.
  Zip members larger than the archive itself (a zip bomb) are refused.
* **Tensors against their storage**: shape and stride are tuples of non-negative ints of equal
  length (negative strides are refused), the offset is a non-negative int, the lowest element
  (``offset``) and the highest (``offset + sum((n - 1) * stride)``) lie inside the storage, and
  a tensor may not have more elements than its storage (zero strides cannot blow up memory).
  Arrays are then gathered with numpy's bounds-checked indexing (``np.take``), never with
  ``as_strided``, so even a bug in these checks could not return memory outside the file.

Every failure is a ``ValueError`` naming the file (``UnsafeCheckpointError`` is also a
``pickle.UnpicklingError``); nothing a file holds can crash the process.

Two serialisations are read:

* **legacy** (torch < 1.6, or ``_use_new_zipfile_serialization=False``): five pickles in a row
  (magic number ``0x1950a86a20f9469cfc6c``, protocol ``1001``, system info, the object with
  persistent storage records ``("storage", StorageType, key, location, numel, view)``, the list
  of storage keys), then per key an int64 element count and the raw little-endian bytes;
* **zip** (torch >= 1.6): ``<root>/data.pkl`` (the object) and ``<root>/data/<key>`` (raw bytes
  per storage), with ``("storage", StorageType, key, location, numel)`` records.

Example:

>>> state = load_state_dict("resnet-34-kinetics.pth")     # doctest: +SKIP
>>> state["conv1.weight"].shape                          # doctest: +SKIP
(64, 3, 7, 7, 7)
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import pickle
import stat
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
DEFAULT_MAX_BYTES = 8 << 30  # 8 GiB: larger than any public checkpoint of these models.
MAX_NDIM = 16

# Typed storage class -> numpy dtype of its elements (little-endian on disk).
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # Widened to float32 on read.
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("u1"),  # Turned into bool (!= 0) on read.
}


class UnsafeCheckpointError(ValueError, pickle.UnpicklingError):
    """A checkpoint that is malformed, truncated or asks for something the reader refuses."""


# What a malformed pickle can raise inside ``pickle.Unpickler`` and the record builders; the
# readers turn each into an ``UnsafeCheckpointError`` naming the file.
UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    MemoryError,
    OverflowError,
    RecursionError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ValueError,
    struct.error,
    UnicodeDecodeError,
)


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    storage_type: _StorageType
    numel: int


@dataclasses.dataclass(frozen=True)
class _LazyTensor:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _as_index(value, what: str) -> int:
    # bool is an int subclass, and numpy integers are not ints: accept exactly Python ints.
    if type(value) is not int:
        raise UnsafeCheckpointError(f"{what} must be an int; got {type(value).__name__}.")
    if value < 0:
        raise UnsafeCheckpointError(f"{what} must be non-negative; got {value}.")
    return value


def _as_index_tuple(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple | list):
        raise UnsafeCheckpointError(f"{what} must be a tuple; got {type(values).__name__}.")
    if len(values) > MAX_NDIM:
        raise UnsafeCheckpointError(f"{what} has {len(values)} dimensions (at most {MAX_NDIM}).")
    return tuple(_as_index(v, f"every entry of {what}") for v in values)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused, **unused_kwargs):
    if not isinstance(storage, _StorageRef):
        raise UnsafeCheckpointError("A tensor record does not name a storage.")
    shape = _as_index_tuple(size, "a tensor's shape")
    strides = _as_index_tuple(stride, "a tensor's stride (negative strides are refused)")
    if len(shape) != len(strides):
        raise UnsafeCheckpointError(
            f"A tensor's shape {shape} and stride {strides} have different lengths."
        )
    return _LazyTensor(storage, _as_index(storage_offset, "a tensor's offset"), shape, strides)


def _rebuild_parameter(data, *unused, **unused_kwargs):
    if not isinstance(data, _LazyTensor):
        raise UnsafeCheckpointError("A parameter record does not hold a tensor.")
    return data


def _ordered_dict(*args):
    if args and not (len(args) == 1 and isinstance(args[0], list | tuple)):
        raise UnsafeCheckpointError("OrderedDict() takes at most one list of pairs here.")
    return collections.OrderedDict(*args)


class _CheckpointUnpickler(pickle.Unpickler):
    """Admits only ordered dicts, tensor rebuilds and typed storages (see the module doc)."""

    _ALLOWED = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, stream, storages: dict[str, _StorageRef]):
        super().__init__(stream)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"Refusing to load {module}.{name} from a checkpoint: only tensors, ordered dicts "
            "and plain containers are allowed."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"Unknown persistent record {str(pid)[:80]} in the file.")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"Unsupported storage type {str(storage_type)[:80]}.")
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise UnsafeCheckpointError("A storage key must be a string.")
        if len(pid) == 6 and pid[5] is not None:
            raise UnsafeCheckpointError("Storage views (torch < 0.4 files) are not supported.")
        ref = _StorageRef(str(key), storage_type, _as_index(numel, "a storage's size"))
        known = self.storages.setdefault(ref.key, ref)
        if known != ref:
            raise UnsafeCheckpointError(
                f"Storage {ref.key!r} is declared twice with different types or sizes."
            )
        return ref


def _unpickle(data_or_stream, storages: dict[str, _StorageRef]):
    stream = io.BytesIO(data_or_stream) if isinstance(data_or_stream, bytes) else data_or_stream
    return _CheckpointUnpickler(stream, storages).load()


def _gather(tensor: _LazyTensor, flat: np.ndarray) -> np.ndarray:
    """The tensor's elements, bounds-checked against its storage ``flat``."""
    shape, stride, offset = tensor.shape, tensor.stride, tensor.offset
    count = math.prod(shape)
    key = tensor.storage.key
    if count == 0:
        return np.zeros(shape, flat.dtype)
    highest = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if offset >= flat.size or highest >= flat.size:
        raise UnsafeCheckpointError(
            f"A tensor of shape {shape} (offset {offset}, stride {stride}) reaches element "
            f"{highest} of storage {key!r}, which has {flat.size}."
        )
    if count > flat.size:
        raise UnsafeCheckpointError(
            f"A tensor of shape {shape} has more elements than its storage {key!r} "
            f"({flat.size}); zero or overlapping strides are refused."
        )
    contiguous = []
    step = 1
    for n in reversed(shape):
        contiguous.append(step)
        step *= n
    if all(n == 1 or s == c for n, s, c in zip(shape, stride, reversed(contiguous), strict=True)):
        return flat[offset : offset + count].reshape(shape).copy()
    index = np.full((1,) * len(shape), offset, dtype=np.int64)
    for axis, (n, s) in enumerate(zip(shape, stride, strict=True)):
        view = [1] * len(shape)
        view[axis] = n
        index = index + (np.arange(n, dtype=np.int64) * s).reshape(view)
    return np.take(flat, index, mode="raise")


def _convert(flat: np.ndarray, storage_type: _StorageType) -> np.ndarray:
    if storage_type.name == "BoolStorage":
        return flat != 0
    if storage_type.name == "BFloat16Storage":
        return (flat.astype(np.uint32) << 16).view(np.float32)
    return flat.astype(flat.dtype.newbyteorder("="), copy=False)


def _materialize(obj, buffers: dict[str, np.ndarray], depth: int = 0):
    if depth > 100:
        raise UnsafeCheckpointError("The checkpoint nests containers more than 100 deep.")
    if isinstance(obj, _LazyTensor):
        return _gather(obj, buffers[obj.storage.key])
    if isinstance(obj, dict):
        items = ((k, _materialize(v, buffers, depth + 1)) for k, v in obj.items())
        return (
            collections.OrderedDict(items)
            if isinstance(obj, collections.OrderedDict)
            else dict(items)
        )
    if isinstance(obj, list):
        return [_materialize(v, buffers, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, buffers, depth + 1) for v in obj)
    if isinstance(obj, _StorageRef | _StorageType):
        raise UnsafeCheckpointError("A bare storage outside a tensor is not supported.")
    return obj


def _read_exact(handle, count: int, remaining: int, what: str) -> bytes:
    if count > remaining:
        raise UnsafeCheckpointError(
            f"Truncated file: {what} needs {count} bytes but only {remaining} are left."
        )
    data = handle.read(count)
    if len(data) != count:
        raise UnsafeCheckpointError(f"Truncated file: {what} is short.")
    return data


def _load_legacy(handle, file_size: int):
    storages: dict[str, _StorageRef] = {}
    if _unpickle(handle, storages) != LEGACY_MAGIC:
        raise UnsafeCheckpointError("Not a torch.save file (neither zip nor the legacy magic).")
    protocol = _unpickle(handle, storages)
    if protocol != LEGACY_PROTOCOL:
        raise UnsafeCheckpointError(f"Unsupported legacy torch protocol {protocol!r}.")
    system = _unpickle(handle, storages)
    if not isinstance(system, dict) or system.get("little_endian") is not True:
        raise UnsafeCheckpointError("Only little-endian torch files are supported.")
    state = _unpickle(handle, storages)
    keys = _unpickle(handle, storages)
    if not isinstance(keys, list) or len(set(map(str, keys))) != len(keys):
        raise UnsafeCheckpointError("The list of storage keys is malformed.")
    buffers = {}
    for key in map(str, keys):
        ref = storages.get(key)
        if ref is None:
            raise UnsafeCheckpointError(f"Storage {key!r} has data but no tensor uses it.")
        remaining = file_size - handle.tell()
        header = _read_exact(handle, 8, remaining, f"the size of storage {key!r}")
        numel = struct.unpack("<q", header)[0]
        if numel != ref.numel:
            raise UnsafeCheckpointError(
                f"Storage {key!r} declares {ref.numel} elements but its record holds {numel}."
            )
        dtype = ref.storage_type.dtype
        data = _read_exact(handle, numel * dtype.itemsize, remaining - 8, f"storage {key!r}")
        buffers[key] = _convert(np.frombuffer(data, dtype=dtype), ref.storage_type)
    missing = sorted(set(storages) - set(buffers))
    if missing:
        raise UnsafeCheckpointError(f"Truncated file: storages {missing[:5]} have no data.")
    return state, buffers


def _load_zip(archive: zipfile.ZipFile, file_size: int):
    infos = {info.filename: info for info in archive.infolist()}
    pickles = [name for name in infos if name == "data.pkl" or name.endswith("/data.pkl")]
    pickles = [name for name in pickles if name.count("/") <= 1]
    if len(pickles) != 1:
        raise UnsafeCheckpointError("A zip checkpoint must hold exactly one <root>/data.pkl.")
    root = pickles[0][: -len("data.pkl")]

    def read(name: str) -> bytes:
        info = infos.get(name)
        if info is None:
            raise UnsafeCheckpointError(f"The archive has no member {name!r}.")
        if info.file_size > file_size:
            raise UnsafeCheckpointError(
                f"Member {name!r} claims {info.file_size} bytes, more than the whole file."
            )
        return archive.read(info)

    if f"{root}byteorder" in infos and read(f"{root}byteorder").strip() != b"little":
        raise UnsafeCheckpointError("Only little-endian torch files are supported.")
    storages: dict[str, _StorageRef] = {}
    state = _unpickle(read(pickles[0]), storages)
    buffers = {}
    for key, ref in storages.items():
        name = f"{root}data/{key}"
        dtype = ref.storage_type.dtype
        info = infos.get(name)
        if info is None:
            raise UnsafeCheckpointError(f"Storage {key!r} has no data ({name!r} is missing).")
        if info.file_size != ref.numel * dtype.itemsize:
            raise UnsafeCheckpointError(
                f"Storage {key!r} declares {ref.numel} elements of {dtype.itemsize} bytes but "
                f"{name!r} holds {info.file_size} bytes."
            )
        buffers[key] = _convert(np.frombuffer(read(name), dtype=dtype), ref.storage_type)
    return state, buffers


def _check_file(path: str, max_bytes: int) -> int:
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file {path!r} does not exist.")
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"Checkpoint {path!r} is not a regular file.")
    if info.st_size > max_bytes:
        raise ValueError(
            f"Checkpoint {path!r} has {info.st_size} bytes, more than the limit max_bytes="
            f"{max_bytes}; raise it if the file is trusted to be that large."
        )
    return info.st_size


def load(path: str, max_bytes: int = DEFAULT_MAX_BYTES):
    """Loads a whole ``torch.save`` file; every tensor becomes a ``np.ndarray``.

    Args:
        path: a ``.pth``/``.pt`` file, legacy or zip serialisation.
        max_bytes: refuse files larger than this (default 8 GiB).

    Returns:
        The saved object (dicts, lists, numbers, strings) with arrays for tensors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a regular file, too large, malformed, truncated, or it asks for a
            global the reader refuses (``UnsafeCheckpointError``); the message names the file.
    """
    path = os.path.expanduser(str(path))
    file_size = _check_file(path, max_bytes)
    try:
        with open(path, "rb") as handle:
            if zipfile.is_zipfile(handle):
                handle.seek(0)
                with zipfile.ZipFile(handle) as archive:
                    state, buffers = _load_zip(archive, file_size)
            else:
                handle.seek(0)
                state, buffers = _load_legacy(handle, file_size)
        return _materialize(state, buffers)
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"{path}: {error}") from None
    except (*UNPICKLING_ERRORS, zipfile.BadZipFile, NotImplementedError) as error:
        raise UnsafeCheckpointError(
            f"{path}: not a readable torch checkpoint ({type(error).__name__}: {str(error)[:200]})."
        ) from None


def load_state_dict(
    path: str, strip_prefix: str | None = "module.", max_bytes: int = DEFAULT_MAX_BYTES
) -> collections.OrderedDict[str, np.ndarray]:
    """Loads the parameter dict of a ``torch.save`` file as ``name -> np.ndarray``.

    A training checkpoint (a dict with a ``"state_dict"`` entry, as the 3D-ResNet and many
    other reference repositories save) yields that entry; a bare state dict yields itself.
    ``strip_prefix`` (default ``"module."``, what ``nn.DataParallel`` adds) is removed from
    names that start with it.

    Raises:
        ValueError: as ``load``, or the file holds no dict of arrays.
    """
    obj = load(path, max_bytes=max_bytes)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise ValueError(f"{path}: does not hold a state dict (a dict of name -> tensor).")
    state = collections.OrderedDict()
    for name, value in obj.items():
        if strip_prefix and name.startswith(strip_prefix):
            name = name[len(strip_prefix) :]
        state[name] = value
    return state


def load_torch_state_dict(path: str) -> collections.OrderedDict[str, np.ndarray]:
    """A bare state dict (no prefix stripped): ``load_state_dict(path, strip_prefix=None)``."""
    return load_state_dict(path, strip_prefix=None)
