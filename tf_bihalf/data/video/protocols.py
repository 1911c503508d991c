"""UCF-101 and HMDB-51 split 1 from the owners' files, as query/database video splits.

The clip-level protocol of the paper's video setting (``docs/paper.md``, "Dataset
protocols"): split 1; **query = the test split's clips, database = the train split's clips**;
clips of 16 frames. Neither dataset is in a package registry: the owners' videos and split
files are read from a manual directory, laid out as the owners distribute them.

UCF-101 (``ucf101_split1``)::

    MANUAL_DIR/ucfTrainTestlist/classInd.txt       "1 ApplyEyeMakeup" (1-based ids)
    MANUAL_DIR/ucfTrainTestlist/trainlist01.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    MANUAL_DIR/ucfTrainTestlist/testlist01.txt     "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    MANUAL_DIR/UCF-101/<Class>/v_<Class>_gXX_cYY.avi

HMDB-51 (``hmdb51_split1``)::

    MANUAL_DIR/testTrainMulti_7030_splits/<class>_test_split1.txt   "<name>.avi 1" per line:
        1 = train, 2 = test, 0 = unused in this split
    MANUAL_DIR/<class>/<name>.avi     (or MANUAL_DIR/hmdb51_org/<class>/<name>.avi)

Frames folders (``frames_dir=``): the same videos as JPEG frames, one directory per video
named like the video file without its extension, under ``<frames_dir>/<class>/`` (the
3D-ResNet reference's ``image_00001.jpg`` layout; any frame names, read in name order).

Labels are class indices: UCF's ``classInd.txt`` order (0-based), HMDB's classes sorted by
name. A test video's label comes from its class directory; a train line's label id must agree
with its directory (else ``ValueError``: a corrupt list). Every listed video is scanned
(decoded completely, in parallel, the result cached by path, size and modification time):
missing, unreadable or truncated videos are excluded, counted and listed with their reason in
``protocol.report()`` and the log. A label always travels with its own video, so an excluded
video never shifts another's label.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re

import numpy as np
from absl import logging

from tf_bihalf.checksums import sha256_bytes
from tf_bihalf.data.video import decode

UCF_LIST_DIR = "ucfTrainTestlist"
UCF_VIDEO_DIR = "UCF-101"
HMDB_SPLIT_DIR = "testTrainMulti_7030_splits"
CLIP_FRAMES = 16
# Part of every scan-cache key: a change to what the scan checks invalidates old results.
SCAN_VERSION = 2


@dataclasses.dataclass
class VideoSplit:
    """Videos of one split: sources (files or frames folders), labels, frame counts.

    ``excluded`` lists ``(source, reason)`` for videos that were listed but are unusable;
    they are not in ``sources``.
    """

    sources: list[str]
    labels: np.ndarray  # int32 class indices
    frames: np.ndarray  # int64 decoded frame counts
    excluded: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    def clip_counts(self, clip_frames: int = CLIP_FRAMES) -> np.ndarray:
        """Non-overlapping clips per video (``ceil(frames / clip_frames)``)."""
        return np.array([decode.clip_count(int(n), clip_frames) for n in self.frames], np.int64)


@dataclasses.dataclass
class VideoProtocol:
    """A clip-level retrieval protocol: query (test split) and database (train split)."""

    name: str
    class_names: list[str]
    database: VideoSplit
    query: VideoSplit

    @property
    def train(self) -> VideoSplit:
        """The training videos (the database, as in the reference)."""
        return self.database

    def report(self) -> dict:
        """Counts and the excluded videos with their reasons, per split."""
        return {
            "protocol": self.name,
            "classes": len(self.class_names),
            **{
                split: {
                    "videos": len(part),
                    "clips": int(part.clip_counts().sum()),
                    "excluded": len(part.excluded),
                    "excluded_videos": [{"source": s, "reason": r} for s, r in part.excluded],
                }
                for split, part in (("database", self.database), ("query", self.query))
            },
        }


# --- scanning with a cache ------------------------------------------------------------------


def _scan_key(source: str) -> str | None:
    try:
        info = os.stat(source)
    except OSError:
        return None
    if os.path.isdir(source):
        # A frames folder changes when its listing changes.
        try:
            names = "\n".join(sorted(os.listdir(source)))
        except OSError:
            return None
        return sha256_bytes(f"v{SCAN_VERSION}|dir|{os.path.abspath(source)}|{names}".encode())
    key = f"v{SCAN_VERSION}|{os.path.abspath(source)}|{info.st_size}|{info.st_mtime_ns}"
    return sha256_bytes(key.encode())


def scan_sources(
    sources: list[str], cache_file: str | None = None, workers: int = 4
) -> list[decode.VideoInfo]:
    """``decode.scan_video`` for every source, in parallel threads, cached in ``cache_file``
    (JSON, keyed by path, size, modification time and ``SCAN_VERSION``) so a rerun does not
    decode again."""
    cache: dict = {}
    if cache_file and os.path.isfile(cache_file):
        try:
            with open(cache_file, encoding="utf-8") as handle:
                cache = json.load(handle)
        except (OSError, ValueError):
            logging.warning("Video scan cache %s is unreadable; scanning again.", cache_file)
            cache = {}
    keys = [_scan_key(source) for source in sources]
    results: list[decode.VideoInfo | None] = [None] * len(sources)
    todo = []
    for index, (source, key) in enumerate(zip(sources, keys, strict=True)):
        hit = cache.get(key) if key else None
        if hit is not None:
            results[index] = decode.VideoInfo(source, **hit)
        else:
            todo.append(index)
    if todo:
        logging.info(
            "Decoding %d videos to check them (%d cached).", len(todo), len(sources) - len(todo)
        )
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            for index, info in zip(
                todo, pool.map(decode.scan_video, [sources[i] for i in todo]), strict=True
            ):
                results[index] = info
                if keys[index]:
                    cache[keys[index]] = {
                        "frames": info.frames,
                        "width": info.width,
                        "height": info.height,
                        "error": info.error,
                    }
        if cache_file:
            os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
            with open(cache_file + ".tmp", "w", encoding="utf-8") as handle:
                json.dump(cache, handle)
            os.replace(cache_file + ".tmp", cache_file)
    return results  # type: ignore[return-value]


def build_split(
    listed: list[tuple[str, int]],
    cache_file: str | None = None,
    workers: int = 4,
    min_frames: int = 1,
) -> VideoSplit:
    """Scans ``(source, label)`` pairs and keeps the usable ones (labels stay attached)."""
    infos = scan_sources([source for source, _ in listed], cache_file, workers)
    kept, labels, frames, excluded = [], [], [], []
    for (source, label), info in zip(listed, infos, strict=True):
        if not info.ok:
            excluded.append((source, info.error or "no frames"))
        elif info.frames < min_frames:
            excluded.append((source, f"{info.frames} frames, fewer than {min_frames}"))
        else:
            kept.append(source)
            labels.append(label)
            frames.append(info.frames)
    for source, reason in excluded[:20]:
        logging.warning("Excluded video %s: %s", source, reason)
    if len(excluded) > 20:
        logging.warning("... and %d more excluded videos.", len(excluded) - 20)
    return VideoSplit(kept, np.asarray(labels, np.int32), np.asarray(frames, np.int64), excluded)


def _read_lines(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Split file {path} does not exist.")
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line.strip() for line in handle if line.strip()]


def _source(videos_dir: str, frames_dir: str | None, class_dir: str, file_name: str) -> str:
    if frames_dir is not None:
        return os.path.join(frames_dir, class_dir, os.path.splitext(file_name)[0])
    return os.path.join(videos_dir, class_dir, file_name)


def _check_manual_dir(manual_dir: str, needed: str, what: str) -> None:
    if not os.path.isdir(os.path.join(manual_dir, needed)):
        raise FileNotFoundError(
            f"{what}: {os.path.join(manual_dir, needed)} does not exist. Download the dataset "
            f"from its owners and unpack it into {manual_dir} (see tf_bihalf.data.video)."
        )


def ucf101_split1(
    manual_dir: str,
    frames_dir: str | None = None,
    cache_dir: str | None = None,
    workers: int = 4,
) -> VideoProtocol:
    """UCF-101 split 1 (query = testlist01, database = trainlist01); see the module doc."""
    manual_dir = os.path.expanduser(manual_dir)
    _check_manual_dir(manual_dir, UCF_LIST_DIR, "UCF-101")
    lists = os.path.join(manual_dir, UCF_LIST_DIR)
    class_names, class_ids = [], {}
    for number, line in enumerate(_read_lines(os.path.join(lists, "classInd.txt")), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != number:
            raise ValueError(f"{lists}/classInd.txt line {number}: expected '{number} ClassName'.")
        class_ids[parts[1].lower()] = len(class_names)
        class_names.append(parts[1])
    if frames_dir is None:
        _check_manual_dir(manual_dir, UCF_VIDEO_DIR, "UCF-101 videos")
    videos_dir = os.path.join(manual_dir, UCF_VIDEO_DIR)

    def listed(file_name: str, with_labels: bool) -> list[tuple[str, int]]:
        result = []
        for number, line in enumerate(_read_lines(os.path.join(lists, file_name)), start=1):
            parts = line.split()
            relative = parts[0].replace("\\", "/")
            class_dir, _, video = relative.partition("/")
            if not video or class_dir.lower() not in class_ids:
                raise ValueError(f"{file_name} line {number}: unknown class in {relative!r}.")
            label = class_ids[class_dir.lower()]
            if with_labels:
                if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) - 1 != label:
                    raise ValueError(
                        f"{file_name} line {number}: label {parts[1:]!r} does not match the "
                        f"class directory {class_dir!r} (id {label + 1})."
                    )
            result.append((_source(videos_dir, frames_dir, class_dir, video), label))
        return result

    cache_file = _cache_file(cache_dir, "ucf101", frames_dir)
    database = build_split(listed("trainlist01.txt", True), cache_file, workers)
    query = build_split(listed("testlist01.txt", False), cache_file, workers)
    return _finish(VideoProtocol("ucf101_split1", class_names, database, query))


_HMDB_FILE = re.compile(r"^(?P<name>.+)_test_split(?P<split>\d)\.txt$")


def hmdb51_split1(
    manual_dir: str,
    frames_dir: str | None = None,
    cache_dir: str | None = None,
    workers: int = 4,
) -> VideoProtocol:
    """HMDB-51 split 1 (ids 1 = database/train, 2 = query/test, 0 = unused); see the
    module doc."""
    manual_dir = os.path.expanduser(manual_dir)
    _check_manual_dir(manual_dir, HMDB_SPLIT_DIR, "HMDB-51")
    splits = os.path.join(manual_dir, HMDB_SPLIT_DIR)
    files = {}
    for file_name in os.listdir(splits):
        match = _HMDB_FILE.match(file_name)
        if match and match.group("split") == "1":
            files[match.group("name")] = file_name
    if not files:
        raise FileNotFoundError(f"{splits} holds no <class>_test_split1.txt file.")
    class_names = sorted(files)
    videos_dir = manual_dir
    if frames_dir is None and not os.path.isdir(os.path.join(manual_dir, class_names[0])):
        videos_dir = os.path.join(manual_dir, "hmdb51_org")
    train, test = [], []
    for label, name in enumerate(class_names):
        for number, line in enumerate(_read_lines(os.path.join(splits, files[name])), start=1):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{files[name]} line {number}: expected '<video>.avi 0|1|2'.")
            if parts[1] == "0":
                continue
            source = _source(videos_dir, frames_dir, name, parts[0])
            (train if parts[1] == "1" else test).append((source, label))
    cache_file = _cache_file(cache_dir, "hmdb51", frames_dir)
    database = build_split(train, cache_file, workers)
    query = build_split(test, cache_file, workers)
    return _finish(VideoProtocol("hmdb51_split1", class_names, database, query))


def _cache_file(cache_dir: str | None, name: str, frames_dir: str | None) -> str | None:
    if cache_dir is None:
        return None
    suffix = "_frames" if frames_dir else ""
    return os.path.join(os.path.expanduser(cache_dir), f"{name}{suffix}_scan.json")


def _finish(protocol: VideoProtocol) -> VideoProtocol:
    for split, part in (("database", protocol.database), ("query", protocol.query)):
        listed = len(part) + len(part.excluded)
        logging.info(
            "%s %s: %d of %d videos usable, %d clips of %d frames.",
            protocol.name,
            split,
            len(part),
            listed,
            int(part.clip_counts().sum()),
            CLIP_FRAMES,
        )
        if len(part) == 0:
            raise ValueError(
                f"{protocol.name} {split}: none of the {listed} listed videos is usable "
                f"(first reasons: {[reason for _, reason in part.excluded[:3]]})."
            )
    return protocol
