"""Unusable image files: every kind is excluded with its reason before it can reach a batch.

Each failure is reproduced on generated files: truncated PNG / JPEG (valid headers, cut data),
a PNG header declaring 20000 x 20000 pixels, a FIFO and a directory named like images,
``/dev/zero``, an oversized file, a dangling link. The decode checks are cached by content
hash: a rerun decodes nothing again.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tf_bihalf.data import image_files, image_pipeline, load_protocol, write_splits
from tf_bihalf.data.protocols import ImageSet, check_image_files, file_checks


@pytest.fixture(autouse=True)
def _private_check_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_BIHALF_DATA", str(tmp_path / "tf_bihalf_cache"))


@pytest.fixture
def no_hang():
    """Fails the test instead of hanging forever (a FIFO read blocks without a writer)."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the file check hung"))
    signal.alarm(60)
    yield
    signal.alarm(0)


@pytest.fixture
def decode_calls(monkeypatch):
    """Counts the full decodes the file checks run."""
    calls = []
    original = image_files.decode_error

    def counting(data):
        calls.append(len(data))
        return original(data)

    monkeypatch.setattr(image_files, "decode_error", counting)
    return calls


def _image_bytes(image_format: str, seed: int = 0, size: int = 48) -> bytes:
    rng = np.random.RandomState(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(
        buffer, format=image_format
    )
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header declares ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def _write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


def _folder(root, per_class=12):
    """Two classes of good PNG/JPEG images."""
    for label in ("a", "b"):
        for index in range(per_class):
            image_format = "PNG" if index % 2 else "JPEG"
            extension = ".png" if index % 2 else ".jpg"
            _write(
                root / label / f"{index:02d}{extension}",
                _image_bytes(image_format, seed=100 * (label == "b") + index),
            )


def test_truncated_png_and_jpeg_are_excluded_with_their_reason(tmp_path, caplog):
    """They used to stop the trainer in feature extraction: 'Invalid PNG data', no file name."""
    _folder(tmp_path / "photos")
    png = _image_bytes("PNG", seed=7)
    jpeg = _image_bytes("JPEG", seed=8)
    _write(tmp_path / "photos" / "a" / "cut.png", png[: len(png) // 2])
    _write(tmp_path / "photos" / "b" / "cut.jpg", jpeg[: (3 * len(jpeg)) // 4])
    with caplog.at_level("WARNING"):
        splits = load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=2)
    excluded = {
        os.path.basename(path): reason
        for name in ("train", "query", "database")
        for path, reason in splits.excluded[name]
    }
    assert excluded == {"cut.png": "corrupt", "cut.jpg": "corrupt"}
    assert splits.report["corrupt"] == 2 and splits.report["verify"] == "decode"
    assert any("cut.png: cannot be decoded" in line for line in splits.report["unusable_examples"])
    assert "cut.png" in caplog.text and "cut.jpg" in caplog.text
    kept = [path for name in ("train", "query", "database") for path in splits.split(name).paths]
    assert not any("cut." in path for path in kept)
    write_splits(splits, str(tmp_path / "splits"))
    lines = (tmp_path / "splits" / "excluded.txt").read_text().splitlines()
    assert sorted(lines) == [  # train = database here: listed for both
        "database corrupt a/cut.png",
        "database corrupt b/cut.jpg",
        "train corrupt a/cut.png",
        "train corrupt b/cut.jpg",
    ]
    # Every kept image decodes in the pipeline: nothing is skipped there.
    dataset = image_pipeline.image_dataset(splits.train, image_size=(8, 8), batch_size=64)
    assert sum(len(labels) for _, labels in dataset.as_numpy_iterator()) == len(splits.train)


def test_pixel_cap_is_read_from_the_header_before_decoding(tmp_path, decode_calls):
    """A valid 20000 x 20000 PNG needs 1.2 GB decoded; its header says so in a few bytes."""
    _folder(tmp_path / "photos")
    _write(tmp_path / "photos" / "a" / "huge.png", _png_header_only(20000, 20000))
    _write(tmp_path / "photos" / "b" / "big.png", _png_header_only(9000, 9000))
    splits = load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=2)
    reasons = {
        os.path.basename(path): reason
        for name in ("train", "query", "database")
        for path, reason in splits.excluded[name]
    }
    assert reasons == {"huge.png": "too_many_pixels", "big.png": "too_many_pixels"}
    assert splits.report["too_many_pixels"] == 2
    assert any(
        "9000x9000 = 81000000 pixels, more than the limit max_pixels=50000000" in line
        for line in splits.report["unusable_examples"]
    )
    assert len(decode_calls) == 24  # the 24 good images; the oversized ones were never decoded
    # The limit is configurable; a clear error names it and the file.
    small = image_files.ImageLimits(max_pixels=48 * 48 - 1)
    problems = check_image_files([str(tmp_path / "photos" / "a" / "01.png")], limits=small)
    assert problems[0].reason == "too_many_pixels"
    assert "48x48 = 2304 pixels, more than the limit max_pixels=2303" in problems[0].detail
    with pytest.raises(ValueError, match=r"huge\.png: .*max_pixels"):
        image_pipeline.image_dataset(
            ImageSet(labels=[0], paths=[str(tmp_path / "photos" / "a" / "huge.png")])
        )


def test_fifo_device_directory_and_links_are_refused_without_reading(tmp_path, no_hang):
    _folder(tmp_path / "photos", per_class=6)
    os.mkfifo(tmp_path / "photos" / "a" / "x.jpg")
    os.makedirs(tmp_path / "photos" / "b" / "folder.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "photos" / "b" / "dangling.png")
    os.symlink(tmp_path / "photos" / "a" / "01.png", tmp_path / "photos" / "b" / "linked.png")
    splits = load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=1)
    reasons = {
        os.path.basename(path): reason
        for name in ("train", "query", "database")
        for path, reason in splits.excluded[name]
    }
    # folder.png is a directory: os.walk lists it as a folder, so it is never a candidate.
    assert reasons == {"x.jpg": "not_regular", "dangling.png": "missing"}
    for verify in ("exists", "header", "decode"):
        problems = check_image_files(
            [str(tmp_path / "photos" / "a" / "x.jpg"), "/dev/zero", str(tmp_path / "photos")],
            verify,
        )
        assert [problem.reason for problem in problems.values()] == ["not_regular"] * 3
    # The input pipeline refuses them too, naming the file, instead of blocking on the FIFO.
    fifo_set = ImageSet(
        labels=[0, 1], paths=[str(tmp_path / "photos" / "a" / "x.jpg"), "/dev/zero"]
    )
    with pytest.raises(ValueError, match=r"x\.jpg: is not a regular file"):
        image_pipeline.image_dataset(fifo_set, image_size=(8, 8))


def test_file_size_cap_and_empty_files(tmp_path):
    good = _write(tmp_path / "good.png", _image_bytes("PNG"))
    empty = _write(tmp_path / "empty.png", b"")
    limits = image_files.ImageLimits(max_file_bytes=os.path.getsize(good) - 1)
    for verify in ("exists", "header", "decode"):
        problems = check_image_files([good, empty], verify, limits)
        assert problems[0].reason == "too_large" and "max_file_bytes" in problems[0].detail
        assert problems[1] == file_checks.FileProblem("missing", "is empty")
    with pytest.raises(image_files.ImageFileError, match="max_file_bytes"):
        image_files.read_image_file(good, os.path.getsize(good) - 1)
    assert image_files.read_image_file(good) == open(good, "rb").read()
    with pytest.raises(ValueError, match="max_pixels"):
        image_files.ImageLimits(max_pixels=0)


def test_decode_results_are_cached_by_content(tmp_path, decode_calls):
    paths = [
        _write(tmp_path / f"{index}.png", _image_bytes("PNG", seed=index)) for index in range(5)
    ]
    cut = _image_bytes("PNG", seed=9)
    paths.append(_write(tmp_path / "cut.png", cut[: len(cut) // 2]))
    cache_dir = str(tmp_path / "cache")
    first = check_image_files(paths, cache_dir=cache_dir)
    assert set(first) == {5} and first[5].reason == "corrupt" and len(decode_calls) == 6
    # A rerun only stats the files: nothing is decoded (or even read) again.
    again = check_image_files(paths, cache_dir=cache_dir)
    assert again == first and len(decode_calls) == 6
    # The same content under another name is recognised by its hash.
    copy = _write(tmp_path / "copy.png", open(paths[0], "rb").read())
    assert check_image_files([copy], cache_dir=cache_dir) == {} and len(decode_calls) == 6
    # Changed content is decoded again (and the new verdict replaces the old one).
    _write(tmp_path / "0.png", cut[: len(cut) // 3])
    changed = check_image_files(paths, cache_dir=cache_dir)
    assert set(changed) == {0, 5} and len(decode_calls) == 7
    # A damaged cache file is ignored with a warning, not an error.
    cache_file = file_checks.DecodeCache(cache_dir).path
    open(cache_file, "w").write("{not json")
    assert set(check_image_files(paths, cache_dir=cache_dir)) == {0, 5}
    assert len(decode_calls) == 7 + 6
    # No cache at all.
    check_image_files(paths[:2], cache_dir=False)
    assert len(decode_calls) == 7 + 6 + 2


def test_every_image_unusable_is_a_clear_error(tmp_path):
    for label in ("a", "b"):
        for index in range(3):
            _write(tmp_path / "photos" / label / f"{index}.png", b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(
        ValueError,
        match=r"every one of the 4 images of the 'train' split is unusable .*0\.png: has no readable image header \(not a recognised",
    ):
        load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=1)
    with pytest.raises(FileNotFoundError, match="unusable"):
        load_protocol(f"folder:{tmp_path / 'photos'}", num_query_per_class=1, on_missing="raise")


def test_webp_is_not_an_image_extension():
    """tf.io.decode_image(channels=3) refuses WebP with alpha: WebP stays out of the list."""
    assert image_files.IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".bmp", ".gif")
    assert image_files.is_image_file("A/B.JPG") and not image_files.is_image_file("a/.hidden.png")
    assert not image_files.is_image_file("photo.webp")
