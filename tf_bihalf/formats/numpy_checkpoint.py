"""Reads pickled numpy checkpoints (nested dicts of arrays, as Flax/JAX ports save them)
memory-safely, without numpy's own unpickling code.

A ``.ckpt`` pickle is untrusted input. ``pickle.load`` on it can run any code; a numpy-only
unpickler still hands numpy's constructors whatever the file says: ``ndarray(shape)`` returns
uninitialised process memory, ``_reconstruct`` allocates any shape, and Python's unpickler
itself allocates a ``BINBYTES8`` record's declared size before reading it (a 1 TB claim in a
40-byte file is a ``MemoryError``). This reader, like ``tf_bihalf.formats.torch_checkpoint``
for ``.pth`` files, admits only what arrays need and checks every record against the file:

* **Opcodes first**: the whole pickle is walked with ``pickletools.genops`` before anything
  is built. Every length-prefixed record must fit in the bytes that are left (checked without
  allocating), there must be nothing after ``STOP``, and opcodes that reach outside the data
  (persistent ids, the extension registry, out-of-band buffers) or build arbitrary objects
  (``INST``, ``OBJ``, ``NEWOBJ``) are refused.
* **Globals as records**: the only globals are numpy's array pickling entry points
  (``numpy.ndarray``, ``numpy.dtype``, ``_reconstruct`` and ``scalar`` of
  ``numpy.core.multiarray`` / ``numpy._core.multiarray``, ``_frombuffer`` of
  ``numpy.core.numeric`` / ``numpy._core.numeric``) and ``_codecs.encode`` (str -> latin1
  bytes, how protocol 2 stores bytes) and ``bytes()`` without arguments (how it stores
  ``b""``). They resolve to inert records here, never to numpy:
  ``_reconstruct`` only as numpy calls it (``(ndarray, (0,), b"b")``), ``ndarray`` cannot be
  called, and a dtype must be a plain little/big-endian bool, integer or float of 1 to 8
  bytes (no object, structured, sub-array or void dtypes). Any other global raises.
* **Arrays against their bytes**: an array's state gives a shape (non-negative Python ints,
  at most ``MAX_NDIM`` of them, each below 2**63), a dtype and raw bytes; the bytes must be
  exactly ``prod(shape) * itemsize`` long, so a huge declared shape cannot allocate memory.
  The array is then copied out of those bytes with ``np.frombuffer`` (native byte order).

Every failure is a ``ValueError`` (``UnsafeCheckpointError``) naming the file; nothing a file
holds can crash the process, allocate more than a small multiple of its size, or return
memory from outside it.

Example:

>>> variables = load("i3d-kinetics-400.ckpt")                # doctest: +SKIP
>>> variables["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"].shape   # doctest: +SKIP
(7, 7, 7, 3, 64)
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import struct

import numpy as np

from tf_bihalf.formats.torch_checkpoint import (
    MAX_NDIM,
    UNPICKLING_ERRORS,
    UnsafeCheckpointError,
    _check_file,
)

DEFAULT_MAX_BYTES = 1 << 30
MAX_DEPTH = 100
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
# Kind + item size -> dtype; the byte order comes from the dtype's pickled state.
_DTYPES = {
    name: np.dtype(name)
    for name in ("b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
}
_REFUSED_OPCODES = {
    "PERSID",
    "BINPERSID",
    "EXT1",
    "EXT2",
    "EXT4",
    "INST",
    "OBJ",
    "NEWOBJ",
    "NEWOBJ_EX",
    "NEXT_BUFFER",
    "READONLY_BUFFER",
}


def _refuse(message: str):
    raise UnsafeCheckpointError(message)


def _as_bytes(data, what: str) -> bytes:
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):  # A Python 2 pickle's raw bytes, read with encoding="latin1".
        return data.encode("latin1")
    return _refuse(f"{what} must be bytes; got {type(data).__name__}.")


def _as_shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, tuple | list):
        _refuse(f"An array's shape must be a tuple; got {type(shape).__name__}.")
    if len(shape) > MAX_NDIM:
        _refuse(f"An array's shape has {len(shape)} dimensions (at most {MAX_NDIM}).")
    for size in shape:
        # bool is an int subclass and numpy integers are not ints: accept exactly Python ints.
        if type(size) is not int or not 0 <= size < 2**63:
            _refuse(f"An array's shape {str(shape)[:80]} is not a tuple of sizes in [0, 2**63).")
    return tuple(shape)


class _NdarrayClass:
    """What ``numpy.ndarray`` resolves to: only a marker for ``_reconstruct``."""

    def __call__(self, *args, **kwargs):
        _refuse("Refusing to call numpy.ndarray() from a checkpoint (uninitialised memory).")


_NDARRAY = _NdarrayClass()


class _DTypeRecord:
    """``numpy.dtype(name, align, copy)`` followed by ``BUILD`` with the byte order."""

    def __init__(self, name, align=False, copy=True, *unused):
        if unused or not isinstance(name, str) or name not in _DTYPES:
            _refuse(
                f"Refusing the dtype {str(name)[:40]!r}: only bool, integer and float arrays "
                f"({', '.join(_DTYPES)}) are allowed."
            )
        self.dtype = _DTYPES[name]

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            _refuse(f"A dtype's state {str(state)[:80]} is not numpy's (version 3 or 4).")
        byteorder = state[1]
        if byteorder not in ("<", ">", "|", "=") or any(item is not None for item in state[2:5]):
            _refuse("Refusing a dtype with fields, a sub-array or an unknown byte order.")
        if byteorder in ("<", ">") and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(byteorder)


def _dtype_of(record, what: str) -> np.dtype:
    if not isinstance(record, _DTypeRecord):
        _refuse(f"{what} does not name a dtype.")
    return record.dtype


def _array(raw: bytes, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        _refuse(
            f"An array of shape {shape} and dtype {dtype.str} needs {expected} bytes but the "
            f"file holds {len(raw)} for it."
        )
    flat = np.frombuffer(raw, dtype=dtype)
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")


class _ArrayRecord:
    """``_reconstruct(ndarray, (0,), b"b")`` followed by ``BUILD`` with the array's state."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            _refuse(f"An array's state {str(state)[:80]} is not numpy's.")
        if len(state) == 5:
            if state[0] != 1:
                _refuse(f"Unsupported numpy array state version {str(state[0])[:20]}.")
            state = state[1:]
        shape, dtype, fortran, raw = state
        if fortran not in (True, False, 0, 1):
            _refuse("An array's Fortran-order flag is not a bool.")
        self.array = _array(
            _as_bytes(raw, "An array's data"),
            _dtype_of(dtype, "An array's state"),
            _as_shape(shape),
            bool(fortran),
        )


def _reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        _refuse("numpy _reconstruct is only allowed as numpy pickles arrays.")
    return _ArrayRecord()


def _scalar(dtype, data=None):
    dtype = _dtype_of(dtype, "A numpy scalar")
    return _array(_as_bytes(data, "A scalar's data"), dtype, (), False)[()]


def _frombuffer(buffer, dtype, shape, order):
    if order not in ("C", "F"):
        _refuse(f"Unknown array order {str(order)[:20]!r}.")
    raw = _as_bytes(buffer, "An array's buffer")
    return _array(raw, _dtype_of(dtype, "An array buffer"), _as_shape(shape), order == "F")


def _latin1_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        _refuse("Refusing _codecs.encode other than str -> latin1 bytes.")
    return text.encode("latin1")


def _empty_bytes(*args):
    # Protocols 0 to 2 store b"" (the data of an empty array) as the call bytes().
    if args:
        _refuse("Refusing bytes() with arguments.")
    return b""


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("numpy", "dtype"):
            return _DTypeRecord
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module in ("builtins", "__builtin__") and name == "bytes":
            return _empty_bytes
        if module in _MULTIARRAY and name == "_reconstruct":
            return _reconstruct
        if module in _MULTIARRAY and name == "scalar":
            return _scalar
        if module in _NUMERIC and name == "_frombuffer":
            return _frombuffer
        return _refuse(
            f"Refusing to load {module}.{name} from a checkpoint: only numpy arrays and plain "
            "containers are allowed."
        )

    def persistent_load(self, pid):
        _refuse("Persistent ids are not allowed in a numpy checkpoint.")


def check_opcodes(data: bytes) -> None:
    """Walks the pickle's opcodes without building anything (see the module docstring).

    Raises:
        UnsafeCheckpointError: a record is longer than what is left, an opcode is refused,
            the pickle does not end with ``STOP`` or bytes follow it.
    """
    end = None
    try:
        for opcode, _, position in pickletools.genops(io.BytesIO(data)):
            if opcode.name in _REFUSED_OPCODES:
                _refuse(f"Opcode {opcode.name} at byte {position} is not allowed.")
            if opcode.name == "STOP":
                end = position + 1
    except (ValueError, struct.error, UnicodeDecodeError, OverflowError) as error:
        if isinstance(error, UnsafeCheckpointError):
            raise
        _refuse(f"Malformed or truncated pickle ({str(error)[:200]}).")
    if end is None:
        _refuse("Truncated pickle: no STOP opcode.")
    if end != len(data):
        _refuse(f"{len(data) - end} bytes follow the end of the pickle.")


def _materialize(obj, depth: int = 0):
    if depth > MAX_DEPTH:
        _refuse(f"The checkpoint nests containers more than {MAX_DEPTH} deep.")
    if isinstance(obj, _ArrayRecord):
        if obj.array is None:
            _refuse("An array record has no state.")
        return obj.array
    if isinstance(obj, dict):
        return {key: _materialize(value, depth + 1) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_materialize(value, depth + 1) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(value, depth + 1) for value in obj)
    if isinstance(obj, _DTypeRecord | _NdarrayClass):
        _refuse("A bare dtype or ndarray class outside an array is not supported.")
    return obj


def loads(data: bytes):
    """Unpickles ``data`` (see the module docstring); arrays come back as ``np.ndarray``.

    Raises:
        UnsafeCheckpointError: as ``load``, without a file name.
    """
    check_opcodes(data)
    try:
        return _materialize(_NumpyUnpickler(io.BytesIO(data), encoding="latin1").load())
    except UnsafeCheckpointError:
        raise
    except UNPICKLING_ERRORS as error:
        raise UnsafeCheckpointError(
            f"not a readable numpy checkpoint ({type(error).__name__}: {str(error)[:200]})."
        ) from None


def load(path: str, max_bytes: int = DEFAULT_MAX_BYTES):
    """Loads a pickled numpy checkpoint from ``path``.

    Args:
        path: a regular file holding one pickle (protocol 0 to 5, numpy 1.x or 2 spelling).
        max_bytes: refuse larger files (default 1 GiB).

    Returns:
        The pickled object, with ``np.ndarray`` (native byte order) for every array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a regular file, too large, malformed, truncated, a refused global or
            opcode, or an array whose bytes do not match its shape (``UnsafeCheckpointError``);
            the message names the file.
    """
    file_size = _check_file(path, max_bytes)
    with open(path, "rb") as handle:
        data = handle.read(file_size + 1)
    if len(data) != file_size:
        raise UnsafeCheckpointError(f"{path}: the file changed size while it was read.")
    try:
        return loads(data)
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"{path}: {error}") from None
