"""Reliability of the export entry points against hostile but plausible inputs.

``python -m export.encode``, both serving signatures (``serving_default`` and ``image_bytes``),
``SavedModelEncoder`` and the TFLite calibration reader are fed NaN, empty batches, wrong
shapes, images whose header declares billions of pixels, and files that are not images at all
(a FIFO or ``/dev/zero`` named ``x.jpg``, empty, truncated, oversized). Each must give a clear
error or a counted skip: never a crash, a hang (timeouts) or unbounded memory. The cases that
could exhaust memory on a broken implementation run in a subprocess under
``resource.setrlimit(RLIMIT_AS, 4 GiB)``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from export import encode as encode_cli
from export import preprocessing
from export.saved_model import SavedModelEncoder, export_run, read_sidecar
from tests.test_export_support import (
    AUTOENCODER_BITS,
    IMAGE_BITS,
    IMAGE_SIZE,
    encode_image,
    make_autoencoder_run,
    make_image_run,
    random_images,
)

MEMORY_LIMIT_BYTES = 4 * 2**30
SUBPROCESS_TIMEOUT_S = 240
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust_export")
    models = str(root / "models")
    return {
        "root": root,
        "autoencoder": export_run(make_autoencoder_run(str(root / "runs" / "a")), models, "a", 1),
        "image_run": str(root / "runs" / "i"),
        "image": export_run(make_image_run(str(root / "runs" / "i")), models, "i", 1),
    }


@pytest.fixture(scope="module")
def loaded(exported):
    # Keep the loaded objects alive: their signatures need them.
    return {kind: tf.saved_model.load(exported[kind]) for kind in ("autoencoder", "image")}


def float_inputs(kind: str, count: int) -> np.ndarray:
    shape = (784,) if kind == "autoencoder" else (*IMAGE_SIZE, 3)
    return np.random.default_rng(0).uniform(0, 1, (count, *shape)).astype(np.float32)


# Crafted images: small files whose header declares a huge image ----------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit grayscale PNG (about 60 KB) that decodes to ``width x height x 3`` bytes."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def _pillow(image_format: str, mode: str = "RGB", **options) -> bytes:
    buffer = io.BytesIO()
    color = (255, 0, 0, 128)[: len(mode)]  # Half transparent in RGBA: WebP keeps the alpha.
    Image.new(mode, (8, 8), color).save(buffer, format=image_format, **options)
    return buffer.getvalue()


@functools.cache
def crafted_images() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """name -> (file contents, the (width, height) its header declares)."""
    jpeg = bytearray(_pillow("JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    gif = bytearray(_pillow("GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    bmp = bytearray(_pillow("BMP"))
    bmp[18:26] = struct.pack("<ii", 30000, -30000)  # Negative height: a top-down BMP.
    webp = bytearray(_pillow("WEBP", "RGBA"))
    assert webp[12:16] == b"VP8X"
    webp[24:30] = (16383).to_bytes(3, "little") * 2
    return {
        "huge.png": (huge_png(), (20000, 20000)),
        "huge.jpg": (bytes(jpeg), (60000, 60000)),
        "huge.gif": (bytes(gif), (65535, 65535)),
        "huge.bmp": (bytes(bmp), (30000, 30000)),
        "huge.webp": (bytes(webp), (16384, 16384)),
    }


@pytest.mark.parametrize(
    "image_format, mode, options",
    [
        ("PNG", "RGB", {}),
        ("PNG", "L", {}),
        ("JPEG", "RGB", {}),
        ("JPEG", "RGB", {"progressive": True}),
        ("GIF", "RGB", {}),
        ("BMP", "RGB", {}),
        ("WEBP", "RGB", {}),
        ("WEBP", "RGB", {"lossless": True}),
        ("WEBP", "RGBA", {}),
        ("WEBP", "RGBA", {"lossless": True}),
    ],
)
def test_header_dimensions_match_pillow(image_format, mode, options):
    for width, height in [(1, 1), (37, 5), (300, 17)]:
        buffer = io.BytesIO()
        color = (0, 0, 255, 100)[: len(mode)]
        Image.new(mode, (width, height), color).save(buffer, format=image_format, **options)
        dimensions = preprocessing.image_dimensions(tf.constant(buffer.getvalue())).numpy()
        assert tuple(dimensions) == (width, height), (image_format, options)
    for name, (data, size) in crafted_images().items():
        assert tuple(preprocessing.image_dimensions(tf.constant(data)).numpy()) == size, name
    assert tuple(preprocessing.image_dimensions(tf.constant(b"")).numpy()) == (0, 0)


def test_pixel_check_has_no_overflow_and_names_the_limit():
    header = struct.pack(">IIBBBBB", 0xFFFFFFFF, 0xFFFFFFFF, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)  # width * height > 2**63.
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than the limit max_pixels=100"):
        preprocessing.check_pixel_limit(tf.constant(png), max_pixels=100)
    small = encode_image(random_images(1, size=(10, 10))[0])
    assert preprocessing.check_pixel_limit(tf.constant(small), max_pixels=100).numpy() == small
    with pytest.raises(tf.errors.InvalidArgumentError, match="declares 10x10 = 100 pixels"):
        preprocessing.check_pixel_limit(tf.constant(small), max_pixels=99)


# The subprocess under a memory limit ------------------------------------------------------------

_HOSTILE_SCRIPT = r"""
import json, os, sys
import tensorflow as tf
from export import encode

saved_model, crafted, images, out = sys.argv[1:5]
loaded = tf.saved_model.load(saved_model)
function = loaded.signatures["image_bytes"]
results = {}
for name in sorted(os.listdir(crafted)):
    with open(os.path.join(crafted, name), "rb") as file:
        data = file.read()
    try:
        outputs = function(image_bytes=tf.constant([data]))
        results[name] = "encoded"
    except tf.errors.InvalidArgumentError as error:
        results[name] = "InvalidArgumentError: " + error.message
print("SIGNATURE " + json.dumps(results), flush=True)
status = encode.main(
    ["--saved_model", saved_model, "--images", images, "--out", out, "--max_file_bytes", "200000"]
)
print("STATUS", status, flush=True)
"""


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


@pytest.fixture(scope="module")
def hostile_run(exported):
    root = exported["root"]
    crafted = root / "crafted"
    crafted.mkdir()
    for name, (data, _) in crafted_images().items():
        (crafted / name).write_bytes(data)
    images = root / "hostile_images"
    images.mkdir()
    pictures = random_images(3, size=(30, 26), seed=5)
    (images / "good1.png").write_bytes(encode_image(pictures[0]))
    (images / "good2.jpg").write_bytes(encode_image(pictures[1], "JPEG"))
    png = encode_image(pictures[2])
    (images / "truncated.png").write_bytes(png[: len(png) // 2])
    (images / "empty.png").write_bytes(b"")
    (images / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    big = np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    (images / "big.bmp").write_bytes(encode_image(big, "BMP"))  # 270 KB > max_file_bytes.
    (images / "huge.png").write_bytes(huge_png())
    os.mkfifo(images / "fifo.jpg")
    os.symlink("/dev/zero", images / "zero.jpg")
    out = root / "hostile_codes.npz"
    command = [sys.executable, "-c", _HOSTILE_SCRIPT, exported["image"], str(crafted)]
    command += [str(images), str(out)]
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        process = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            preexec_fn=_limit_memory,
            env=environment,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"export.encode hung (no answer in {SUBPROCESS_TIMEOUT_S} s).")
    return process, out


def test_oversized_images_are_refused_by_image_bytes_before_decoding(hostile_run):
    process, _ = hostile_run
    lines = [line for line in process.stdout.splitlines() if line.startswith("SIGNATURE ")]
    assert lines, f"the subprocess died (exit {process.returncode}): {process.stderr[-2000:]}"
    results = json.loads(lines[0][len("SIGNATURE ") :])
    for name, (_, (width, height)) in crafted_images().items():
        assert results[name].startswith("InvalidArgumentError"), (name, results[name])
        assert f"declares {width}x{height}" in results[name], (name, results[name])
        assert "more than the limit max_pixels=50000000" in results[name], name


def test_encode_skips_and_counts_every_unusable_file(hostile_run):
    process, out = hostile_run
    assert process.returncode == 0, process.stderr[-3000:]
    assert "STATUS 0" in process.stdout
    saved = np.load(out, allow_pickle=False)
    assert sorted(saved["ids"]) == ["good1.png", "good2.jpg"]
    assert saved["codes"].shape == (2, IMAGE_BITS)
    reasons = dict(zip(saved["skipped"], saved["skipped_reasons"], strict=True))
    expected = {
        "fifo.jpg": "not a regular file",
        "zero.jpg": "not a regular file",
        "empty.png": "is empty",
        "big.bmp": "more than the limit max_file_bytes=200000",
        "huge.png": "more than the limit max_pixels=50000000",
        "truncated.png": "Could not decode",
        "garbage.jpg": "Could not decode",
    }
    assert set(reasons) == set(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert "encoded 2 items" in process.stdout and "skipped 7" in process.stdout
    assert sum(line.startswith("skipped\t") for line in process.stdout.splitlines()) == 7


# In-process cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["autoencoder", "image"])
def test_serving_default_refuses_nan_and_inf(kind, loaded):
    function = loaded[kind].signatures["serving_default"]
    for bad in (np.nan, np.inf, -np.inf):
        inputs = float_inputs(kind, 3)
        inputs[1].flat[7] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match="inputs contain NaN or Inf"):
            function(inputs=tf.constant(inputs))
    # Wrong shapes and dtypes are refused too (the shape in the graph, the dtype at the call).
    wrong = float_inputs(kind, 2)[..., :-1]
    with pytest.raises(tf.errors.InvalidArgumentError):
        function(inputs=tf.constant(wrong))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        function(inputs=tf.constant(float_inputs(kind, 2).astype(np.int32)))


def _check_empty_batches(kind, loaded, exported):
    bits = AUTOENCODER_BITS if kind == "autoencoder" else IMAGE_BITS
    width = (bits + 7) // 8
    signatures = loaded[kind].signatures
    outputs = signatures["serving_default"](inputs=tf.constant(float_inputs(kind, 0)))
    assert outputs["codes"].shape == (0, bits) and outputs["codes_packed"].shape == (0, width)
    encoder = SavedModelEncoder(exported[kind])
    assert encoder.encode(float_inputs(kind, 0))["codes"].shape == (0, bits)
    if kind == "image":
        outputs = signatures["image_bytes"](image_bytes=tf.constant([], tf.string))
        assert outputs["codes"].shape == (0, bits) and outputs["codes_packed"].shape == (0, width)
        assert encoder.encode_images([])["codes_packed"].shape == (0, width)
    # A non-empty batch is unaffected by the empty-batch handling.
    inputs = float_inputs(kind, 2) * (255 if kind == "image" else 1)
    single = signatures["serving_default"](inputs=tf.constant(inputs[:1]))["codes"].numpy()
    both = signatures["serving_default"](inputs=tf.constant(inputs))["codes"].numpy()
    np.testing.assert_array_equal(single, both[:1])


def test_empty_batches_give_empty_outputs_for_every_model_and_signature(loaded, exported):
    for kind in ("autoencoder", "image"):
        _check_empty_batches(kind, loaded, exported)


def test_pixel_limit_is_configurable_and_recorded(exported, tmp_path):
    path = export_run(exported["image_run"], str(tmp_path), "small", 1, max_pixels=500)
    assert read_sidecar(path)["signatures"]["image_bytes"]["preprocessing"]["max_pixels"] == 500
    encoder = SavedModelEncoder(path)
    pictures = random_images(2, size=(20, 25), seed=2)
    assert encoder.encode_images([encode_image(pictures[0])])["codes"].shape == (1, IMAGE_BITS)
    large = encode_image(random_images(1, size=(30, 20), seed=3)[0])  # 600 pixels.
    with pytest.raises(ValueError, match=r"declares 20x30 = 600 pixels.*max_pixels=500"):
        encoder.encode_images([large])
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        export_run(exported["image_run"], str(tmp_path), "zero", 1, max_pixels=0)


class _Timeout(Exception):
    pass


@pytest.fixture
def alarm():
    """Fails the test with ``_Timeout`` instead of hanging (a blocked ``open`` is interrupted)."""

    def handler(signum, frame):
        raise _Timeout("the call hung")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_calibration_images_skip_fifos_and_oversized_files(tmp_path, alarm):
    good = tmp_path / "good.png"
    good.write_bytes(encode_image(random_images(1, size=(20, 20))[0]))
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "large.png").write_bytes(encode_image(random_images(1, size=(50, 40))[0]))
    paths = [str(tmp_path / name) for name in ("good.png", "fifo.jpg", "large.png", "none.png")]
    images, kept, failed = preprocessing.load_image_arrays(
        paths, IMAGE_SIZE, max_file_bytes=good.stat().st_size
    )
    assert images.shape == (1, *IMAGE_SIZE, 3) and kept == [0]
    reasons = dict(failed)
    assert "not a regular file" in reasons[paths[1]]
    assert "max_file_bytes" in reasons[paths[2]]
    assert "no such file" in reasons[paths[3]]
    _, _, failed = preprocessing.load_image_arrays(paths[2:3], IMAGE_SIZE, max_pixels=1000)
    assert "max_pixels=1000" in failed[0][1]


def test_encode_cli_errors_are_one_line(exported, tmp_path, capsys, alarm):
    zip_junk = tmp_path / "inputs.npy"  # Starts like an .npz, then stops.
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((4, 784), np.float32))
    zip_junk.write_bytes(buffer.getvalue()[:100])
    os.mkfifo(tmp_path / "fifo.npy")
    for inputs, message in [
        (zip_junk, "is not a readable .npy array"),
        (tmp_path / "fifo.npy", "is not a regular file"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            encode_cli.main(
                ["--saved_model", exported["autoencoder"], "--inputs", str(inputs)]
                + ["--out", str(tmp_path / "codes.npz")]
            )
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error:") and "\n" not in error and message in error, error
    # Every image unusable: one line naming examples, not a traceback.
    folder = tmp_path / "bad_images"
    folder.mkdir()
    os.mkfifo(folder / "a.jpg")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(SystemExit) as exit_info:
        encode_cli.main(
            ["--saved_model", exported["image"], "--images", str(folder)]
            + ["--out", str(tmp_path / "codes.npz")]
        )
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "None of the 2 images" in error and "a.jpg" in error and "not a regular file" in error


def test_models_encode_empty_inputs():
    from tf_bihalf.models import HashingAutoencoder, ImageHasher

    hasher = ImageHasher("mobilenet_v3_small", bits=12, image_size=32, hash_layer="bihalf")
    frozen_dim = hasher.extractor.output_shape[-1]
    assert hasher.encode_features(np.zeros((0, frozen_dim), np.float32)).shape == (0, 12)
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 32, 32, 3), np.float32), np.zeros((0, 5), np.int32))
    ).batch(4)
    codes, labels = hasher.encode_images(empty)
    assert codes.shape == (0, 12) and codes.dtype == np.int8 and labels.shape == (0, 5)
    autoencoder = HashingAutoencoder(bits=8)
    assert autoencoder.encode(np.zeros((0, 784), np.float32)).shape == (0, 8)


def test_tflite_representative_data_errors_are_clear(exported, tmp_path, alarm):
    from export import tflite

    encoder = SavedModelEncoder(exported["autoencoder"])
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((4, 784), np.float32))
    (tmp_path / "zip.npy").write_bytes(buffer.getvalue()[:100])  # A truncated .npz named .npy.
    (tmp_path / "archive.npy").write_bytes(buffer.getvalue())
    os.mkfifo(tmp_path / "fifo.npy")
    for name, message in [
        ("zip.npy", "is not a readable .npy array"),
        ("archive.npy", "is an .npz archive"),
        ("fifo.npy", "is not a regular file"),
    ]:
        with pytest.raises(ValueError, match=message):
            tflite.load_representative_data(str(tmp_path / name), encoder)
