"""Video protocols and pipelines on small videos the test writes with PyAV, in the owners'
UCF-101 and HMDB-51 layouts with their split-file formats."""

from __future__ import annotations

import math
import os

import av
import numpy as np
import pytest
from PIL import Image

from tf_bihalf.data.video import decode, pipeline, protocols

WIDTH, HEIGHT = 64, 48


def frame_value(video_seed: int, index: int) -> int:
    """The grey level of frame ``index``: encodes the frame's position (survives mpeg4)."""
    return (40 + 11 * index + 13 * video_seed) % 200 + 20


def write_video(path, frames: int, seed: int = 0, codec: str = "mpeg4") -> None:
    """A small .avi of flat grey frames whose level encodes the frame index; the left half
    is darker so that flips and crops are visible."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"qscale": "1"} if codec == "mpeg4" else {}
        for index in range(frames):
            image = np.full((HEIGHT, WIDTH, 3), frame_value(seed, index), np.uint8)
            image[:, : WIDTH // 4] //= 2
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames_folder(directory, frames: int, seed: int = 0) -> None:
    os.makedirs(directory, exist_ok=True)
    for index in range(frames):
        image = np.full((HEIGHT, WIDTH, 3), frame_value(seed, index), np.uint8)
        image[:, : WIDTH // 4] //= 2
        Image.fromarray(image).save(
            os.path.join(directory, f"image_{index + 1:05d}.jpg"), quality=98
        )


UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]


def make_ucf(root, broken=True, frames_dir=None):
    """UCF-101 layout: 3 classes, 2 train + 1 test video each; returns {relative: frames}."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text(
        "".join(f"{i} {name}\r\n" for i, name in enumerate(UCF_CLASSES, start=1))
    )
    train, test, lengths = [], [], {}
    for label, name in enumerate(UCF_CLASSES):
        # The owners' files spell HandStandPushups inside a HandstandPushups directory.
        stem = "HandStandPushups" if name == "HandstandPushups" else name
        for group, split in ((8, train), (9, train), (1, test)):
            relative = f"{name}/v_{stem}_g{group:02d}_c01.avi"
            frames = 20 + 6 * label + group  # 21 .. 41 frames: 2 or 3 clips of 16
            seed = 3 * label + group
            lengths[relative] = frames
            if frames_dir is None:
                write_video(root / "UCF-101" / relative, frames, seed)
            else:
                write_frames_folder(str(frames_dir / relative[:-4]), frames, seed)
            split.append(relative)
    if broken and frames_dir is None:
        # One garbage file in the train list, one truncated video in the test list, one
        # listed video that does not exist.
        garbage = "Basketball/v_Basketball_g10_c01.avi"
        (root / "UCF-101" / garbage).write_bytes(b"RIFF not really an avi" * 10)
        truncated = "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi"
        write_video(root / "UCF-101" / truncated, 60, seed=99)
        data = (root / "UCF-101" / truncated).read_bytes()
        (root / "UCF-101" / truncated).write_bytes(data[: len(data) // 3])
        train.insert(2, garbage)
        test.insert(0, truncated)
        train.append("HandstandPushups/v_HandStandPushups_g11_c01.avi")  # missing
    (lists / "trainlist01.txt").write_text(
        "".join(f"{path} {UCF_CLASSES.index(path.split('/')[0]) + 1}\r\n" for path in train)
    )
    (lists / "testlist01.txt").write_text("".join(f"{path}\r\n" for path in test))
    return lengths


def test_scan_reports_bad_videos(tmp_path):
    good = tmp_path / "good.avi"
    write_video(good, 30)
    info = decode.scan_video(str(good))
    assert info.ok and info.frames == 30 and (info.width, info.height) == (WIDTH, HEIGHT)
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert not decode.scan_video(str(truncated)).ok
    assert (
        "truncated" in decode.scan_video(str(truncated)).error
        or "decod" in decode.scan_video(str(truncated)).error
    )
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(os.urandom(3000))
    assert not decode.scan_video(str(garbage)).ok
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    assert "empty" in decode.scan_video(str(empty)).error
    fifo = tmp_path / "fifo.avi"
    os.mkfifo(fifo)
    assert "not a regular file" in decode.scan_video(str(fifo)).error  # must not block
    assert "max_pixels" in decode.scan_video(str(good), max_pixels=100).error
    assert "max_bytes" in decode.scan_video(str(good), max_bytes=100).error
    with pytest.raises(decode.VideoError, match="frame 40 asked"):
        decode.read_frames(str(good), [0, 40])


def test_read_frames_gets_the_right_frames(tmp_path):
    path = tmp_path / "v.avi"
    write_video(path, 25, seed=1)
    frames = decode.read_frames(str(path), [3, 0, 3, 24])
    assert frames.shape == (4, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    levels = frames[:, :, WIDTH // 2 :].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(levels, [frame_value(1, i) for i in (3, 0, 3, 24)], atol=3)
    scaled = decode.read_frames(str(path), [0], short_side=24)
    assert scaled.shape == (1, 24, 32, 3)
    folder = tmp_path / "frames"
    write_frames_folder(str(folder), 10, seed=1)
    from_folder = decode.read_frames(str(folder), [9, 2], short_side=24)
    assert from_folder.shape == (2, 24, 32, 3)
    np.testing.assert_allclose(
        from_folder[:, :, 16:].mean(axis=(1, 2, 3)), [frame_value(1, 9), frame_value(1, 2)], atol=3
    )


def test_sampling_rules():
    assert pipeline.evaluation_windows(40) == [
        list(range(16)),
        list(range(16, 32)),
        [32, 33, 34, 35, 36, 37, 38, 39, 32, 33, 34, 35, 36, 37, 38, 39],
    ]
    assert pipeline.evaluation_windows(5)[0] == [0, 1, 2, 3, 4] * 3 + [0]
    rng = np.random.default_rng(0)
    starts = {pipeline.temporal_random_indices(20, rng)[0] for _ in range(300)}
    assert starts == {0, 1, 2, 3}  # [0, max(0, 20 - 16 - 1)]
    assert pipeline.temporal_random_indices(10, rng) == list(range(10)) + list(range(6))
    assert pipeline.corner_crop_box(48, 64, 1.0, "c") == (0, 8, 48, 48)
    assert pipeline.corner_crop_box(48, 64, 0.5, "br") == (24, 40, 24, 24)
    assert pipeline.corner_crop_box(48, 64, 0.5, "tl") == (0, 0, 24, 24)
    draws = [pipeline.random_crop_parameters(rng) for _ in range(500)]
    assert {round(d[0], 4) for d in draws} == {round(2 ** (-i / 4), 4) for i in range(5)}
    assert {d[1] for d in draws} == set(pipeline.CROP_POSITIONS)
    assert 0.4 < np.mean([d[2] for d in draws]) < 0.6


def test_ucf101_split1_protocol(tmp_path):
    lengths = make_ucf(tmp_path)
    cache_dir = tmp_path / "cache"
    protocol = protocols.ucf101_split1(str(tmp_path), cache_dir=str(cache_dir), workers=2)
    assert protocol.class_names == UCF_CLASSES
    report = protocol.report()
    assert report["database"]["videos"] == 6 and report["database"]["excluded"] == 2
    assert report["query"]["videos"] == 3 and report["query"]["excluded"] == 1
    reasons = {
        os.path.basename(e["source"]): e["reason"] for e in report["database"]["excluded_videos"]
    }
    assert "not found" in reasons["v_HandStandPushups_g11_c01.avi"]
    assert "v_Basketball_g10_c01.avi" in reasons
    assert "v_ApplyEyeMakeup_g02_c01.avi" in report["query"]["excluded_videos"][0]["source"]
    # Labels travel with their own videos: the class directory always names the label.
    for split in (protocol.database, protocol.query):
        for source, label, frames in zip(split.sources, split.labels, split.frames, strict=True):
            relative = os.path.relpath(source, tmp_path / "UCF-101")
            assert UCF_CLASSES[label] == relative.split(os.sep)[0]
            assert frames == lengths[relative.replace(os.sep, "/")]
    assert report["query"]["clips"] == sum(math.ceil(n / 16) for n in protocol.query.frames)
    # A rerun reads the scan cache instead of decoding again.
    assert (cache_dir / "ucf101_scan.json").exists()
    again = protocols.ucf101_split1(str(tmp_path), cache_dir=str(cache_dir))
    assert again.report() == report


def test_ucf101_list_errors(tmp_path):
    make_ucf(tmp_path, broken=False)
    lists = tmp_path / "ucfTrainTestlist"
    good = (lists / "trainlist01.txt").read_bytes()
    (lists / "trainlist01.txt").write_bytes(good.replace(b" 1\r\n", b" 2\r\n", 1))
    with pytest.raises(ValueError, match="does not match the class directory"):
        protocols.ucf101_split1(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ucfTrainTestlist"):
        protocols.ucf101_split1(str(tmp_path / "nowhere"))


def test_evaluation_clips_are_complete_and_labelled(tmp_path):
    make_ucf(tmp_path)
    protocol = protocols.ucf101_split1(str(tmp_path))
    split = protocol.database
    failures = pipeline.DecodeFailures()
    dataset = pipeline.evaluation_clips(
        split, clip_size=32, parallel=3, with_ids=True, failures=failures
    )
    rows = list(dataset.as_numpy_iterator())
    assert len(rows) == pipeline.total_clips(split) == int(split.clip_counts().sum())
    assert len(failures) == 0
    videos = [int(r[2]) for r in rows]
    assert videos == sorted(videos)  # video order, then time order
    for clip, label, video, start in rows:
        assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.float32
        assert label == split.labels[video]
        seed = _seed_of(split.sources[video])
        window = pipeline.evaluation_windows(int(split.frames[video]))[start // 16]
        expected = [frame_value(seed, i) for i in window]
        # Centre crop of the 64x48 frame scaled to 43x32: columns 5.. hold both halves; the
        # right part of the crop is the undarkened level.
        np.testing.assert_allclose(clip[:, :, 20:].mean(axis=(1, 2, 3)), expected, atol=4)


def _seed_of(source: str) -> int:
    name = os.path.basename(source.rstrip("/"))
    group = int(name.split("_g")[1][:2])
    label = next(i for i, c in enumerate(UCF_CLASSES) if f"/{c}/" in source.replace(os.sep, "/"))
    return 3 * label + group


def test_decode_failure_inside_the_pipeline_is_skipped_and_counted(tmp_path):
    make_ucf(tmp_path, broken=False)
    protocol = protocols.ucf101_split1(str(tmp_path))
    split = protocol.query
    # A video breaks after the scan: its clips are dropped, the others keep their labels.
    broken = split.sources[1]
    with open(broken, "wb") as handle:
        handle.write(b"\0" * 100)
    failures = pipeline.DecodeFailures()
    rows = list(
        pipeline.evaluation_clips(
            split, clip_size=32, with_ids=True, failures=failures
        ).as_numpy_iterator()
    )
    assert len(failures) == 1 and failures.failures[0][0] == broken
    assert {int(r[2]) for r in rows} == {0, 2}
    assert all(r[1] == split.labels[r[2]] for r in rows)
    train = list(
        pipeline.training_clips(split, seed=0, clip_size=32, with_ids=True, failures=failures)
    )
    assert len(train) == 2 and len(failures) == 2


def test_training_clips_are_seeded_and_augmented(tmp_path):
    make_ucf(tmp_path, broken=False)
    split = protocols.ucf101_split1(str(tmp_path)).database
    first = list(
        pipeline.training_clips(split, seed=3, clip_size=24, with_ids=True).as_numpy_iterator()
    )
    second = list(
        pipeline.training_clips(split, seed=3, clip_size=24, with_ids=True).as_numpy_iterator()
    )
    other = list(
        pipeline.training_clips(split, seed=4, clip_size=24, with_ids=True).as_numpy_iterator()
    )
    assert len(first) == len(split)
    assert sorted(int(r[2]) for r in first) == list(range(len(split)))  # one clip per video
    for (clip_a, label_a, video_a, start_a), (clip_b, *_rest) in zip(first, second, strict=True):
        np.testing.assert_array_equal(clip_a, clip_b)
        assert clip_a.shape == (16, 24, 24, 3)
        assert label_a == split.labels[video_a]
        assert 0 <= start_a <= max(0, split.frames[video_a] - 17)
        levels = clip_a.mean(axis=(1, 3)).max(axis=1)
        seed = _seed_of(split.sources[video_a])
        expected = [frame_value(seed, start_a + i) for i in range(16)]
        # Every crop reaches past the darkened left quarter: the brightest column holds the
        # frame's level. Loop padding does not occur (every video has >= 26 frames).
        np.testing.assert_allclose(levels, expected, atol=6)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_flip_and_corner_crop_are_applied(tmp_path):
    """Over many draws both the darkened left quarter and its mirror image appear, at
    several crop sizes."""
    path = tmp_path / "videos" / "a" / "v.avi"
    write_video(path, 20)
    split = protocols.VideoSplit([str(path)], np.array([0], np.int32), np.array([20]))
    left_dark, right_dark = 0, 0
    for seed in range(16):
        clip = next(iter(pipeline.training_clips(split, seed=seed, clip_size=16)))[0].numpy()
        column_means = clip[0].mean(axis=(0, 2))
        if column_means[0] < column_means[-1] - 10:
            left_dark += 1
        elif column_means[-1] < column_means[0] - 10:
            right_dark += 1
    assert left_dark > 0 and right_dark > 0


def test_frames_folder_layout(tmp_path):
    frames_dir = tmp_path / "jpegs"
    lengths = make_ucf(tmp_path, broken=False, frames_dir=frames_dir)
    protocol = protocols.ucf101_split1(str(tmp_path), frames_dir=str(frames_dir))
    assert len(protocol.database) == 6 and len(protocol.query) == 3
    assert sorted(protocol.query.frames.tolist()) == sorted(
        lengths[p] for p in lengths if "_g01_" in p
    )
    rows = list(pipeline.evaluation_clips(protocol.query, clip_size=32).as_numpy_iterator())
    assert len(rows) == int(protocol.query.clip_counts().sum())


def test_hmdb51_split1_protocol(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    classes = ["brush_hair", "cartwheel"]
    expected = {"database": [], "query": []}
    for label, name in enumerate(classes):
        lines = []
        for index, kind in enumerate(["1", "2", "0", "1"]):
            video = f"{name}_clip_{index}.avi"
            write_video(tmp_path / name / video, 17 + index, seed=index)
            lines.append(f"{video} {kind} \n")
            if kind != "0":
                expected["database" if kind == "1" else "query"].append((video, label))
        (splits / f"{name}_test_split1.txt").write_text("".join(lines))
        (splits / f"{name}_test_split2.txt").write_text("ignored.avi 1\n")
    protocol = protocols.hmdb51_split1(str(tmp_path))
    assert protocol.class_names == classes
    for part in ("database", "query"):
        split = getattr(protocol, part)
        got = [
            (os.path.basename(s), int(label))
            for s, label in zip(split.sources, split.labels, strict=True)
        ]
        assert got == expected[part]
    (splits / "cartwheel_test_split1.txt").write_text("x.avi 3\n")
    with pytest.raises(ValueError, match="0\\|1\\|2"):
        protocols.hmdb51_split1(str(tmp_path))


def test_everything_unreadable_is_a_clear_error(tmp_path):
    make_ucf(tmp_path, broken=False)
    for path in (tmp_path / "UCF-101").rglob("*.avi"):
        path.write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the 6 listed videos is usable"):
        protocols.ucf101_split1(str(tmp_path))


@pytest.mark.parametrize("fraction", [0.5, 0.7, 0.9])
def test_truncation_is_detected_at_several_points(tmp_path, fraction):
    path = tmp_path / "v.avi"
    write_video(path, 60, seed=5)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    info = decode.scan_video(str(path))
    assert not info.ok and ("truncated" in info.error or "cannot open" in info.error)


def test_a_complete_stream_without_its_index_is_usable(tmp_path):
    # Cutting only the trailing AVI index leaves every frame: not a truncated video.
    path = tmp_path / "v.avi"
    write_video(path, 60, seed=5)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.97)])
    info = decode.scan_video(str(path))
    assert info.ok and info.frames == 60
