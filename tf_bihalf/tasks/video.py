"""The video hashing task: frozen 3D CNN (3D ResNet or I3D) + ``Linear(feat, K)`` + hash layer.

Datasets (``config["dataset"]``):

- ``ucf101`` / ``hmdb51``: split 1 from the owners' files in a manual directory
  (``tf_bihalf.data.video.protocols``); query = the clips of the test videos, database = the
  clips of the training videos (docs/paper.md, "Settings": clip-level mAP@100);
- ``folder:DIR``: one sub-folder of videos per class; ``real_videos``: the real videos that ship
  in registry packages (``tf_bihalf.data.video.real_clips``, scene = label). Both are split at the
  clip level: per class, a seeded ``query_fraction`` of the clips are queries, the rest the
  database and training set.

Every video is cut into non-overlapping 16-frame clips, centre-cropped (the reference's
evaluation). With ``feature_cache`` (the default) the frozen backbone runs once over every clip
(cached in ``cache_dir`` or ``RUN/feature_cache``, keyed by the backbone's weights and the
videos) and the head trains on the database clips' features: the reference samples one random,
augmented clip per video and epoch instead, which ``feature_cache=False`` does end to end
(``tf_bihalf.data.video.pipeline.training_clips``; a GPU job). Task config keys: ``backbone``,
``weights``, ``clip_frames``, ``clip_size``, ``feature_cache``, ``cache_dir``,
``extract_batch_size``, ``query_fraction``, ``data_dir``, ``loss.pairing``.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from absl import logging

from tf_bihalf.data.feature_cache import weights_digest
from tf_bihalf.data.video import pipeline, protocols, real_clips
from tf_bihalf.data.video.decode import frame_files
from tf_bihalf.errors import InputError
from tf_bihalf.models.video_hasher import VideoHasher
from tf_bihalf.tasks.similarity import check_even_batch, similarity_models
from tf_bihalf.training import pipelines
from tf_bihalf.training.record import InputSpec
from tf_bihalf.training.task import RecordFields, Task, TaskData, TaskModels
from tf_bihalf.training.workdir import write_json

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".mpg", ".mpeg", ".webm")
THUMBNAIL = 64
REQUIRED = "required"


def _folder_split(directory: str, cache_file: str | None) -> tuple[protocols.VideoSplit, list]:
    """Every video (file, or folder of frames) under ``directory/<class>/``, class = folder."""
    directory = os.path.expanduser(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Video folder {directory} does not exist.")
    classes = sorted(
        name for name in os.listdir(directory) if os.path.isdir(os.path.join(directory, name))
    )
    listed = []
    for label, name in enumerate(classes):
        root = os.path.join(directory, name)
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            if entry.lower().endswith(VIDEO_EXTENSIONS) or (
                os.path.isdir(path) and frame_files(path)
            ):
                listed.append((path, label))
    if not listed:
        raise InputError(
            f"{directory} holds no videos: expected <class>/<video>{VIDEO_EXTENSIONS[0]} (or "
            "<class>/<video>/ folders of JPEG frames)."
        )
    return protocols.build_split(listed, cache_file), classes


def _real_videos_split(directory: str, cache_file: str | None):
    paths = real_clips.fetch_real_videos(directory)
    scene_names = {}
    for name, scene in real_clips.SCENES.items():
        scene_names.setdefault(scene, name)
    listed = [(paths[name], real_clips.SCENES[name]) for name in sorted(paths)]
    classes = [scene_names[scene] for scene in sorted(scene_names)]
    return protocols.build_split(listed, cache_file), classes


class VideoTask(Task):
    """See the module docstring."""

    name = "video"

    def __init__(self, config: dict):
        super().__init__(config)
        check_even_batch(config)
        if not 0.0 < config["query_fraction"] < 1.0:
            raise InputError(f"query_fraction must be in (0, 1); got {config['query_fraction']}.")

    # --- data ---------------------------------------------------------------------------

    def prepare(self, run) -> None:
        config = self.config
        dataset, data_dir = config["dataset"], config["data_dir"]
        cache_file = os.path.join(run.path, "video_scan.json")
        if dataset in ("ucf101", "hmdb51"):
            if data_dir is None:
                raise InputError(
                    f"--data_dir is required for {dataset}: the owners' videos and split files "
                    "(see docs/video.md for the layout; the datasets are manual downloads)."
                )
            load = protocols.ucf101_split1 if dataset == "ucf101" else protocols.hmdb51_split1
            protocol = load(data_dir, cache_dir=os.path.join(run.path, "video_scan"))
            self.splits = {"query": protocol.query, "database": protocol.database}
            self.clip_level = False
            report = protocol.report()
        elif dataset == "real_videos" or dataset.startswith("folder:"):
            if dataset == "real_videos":
                directory = data_dir or os.path.join(
                    os.path.expanduser("~"), ".cache", "tf_bihalf", "real_videos"
                )
                split, classes = _real_videos_split(directory, cache_file)
            else:
                split, classes = _folder_split(dataset.split(":", 1)[1], cache_file)
            self.splits = {"all": split}
            self.clip_level = True
            report = {
                "protocol": "clip-level split",
                "classes": len(classes),
                "videos": len(split),
                "clips": int(split.clip_counts(config["clip_frames"]).sum()),
                "excluded_videos": [{"source": s, "reason": r} for s, r in split.excluded],
            }
        else:
            raise InputError(
                f"Unknown video dataset {dataset!r}: ucf101, hmdb51, real_videos or folder:DIR."
            )
        self.report = report
        write_json(os.path.join(run.path, "video_splits.json"), self._split_listing())

    def _split_listing(self) -> dict:
        return {
            name: {"sources": list(split.sources), "labels": split.labels.tolist()}
            for name, split in self.splits.items()
        }

    # --- models -------------------------------------------------------------------------

    def build_models(self) -> TaskModels:
        config = self.config
        if config["weights"] == REQUIRED:
            raise InputError(
                f"configs/{config['config_name']}.py needs the backbone's Kinetics weights: "
                "--weights=PATH to the 3D ResNet's Kinetics checkpoint (Hara et al.'s .pth; no "
                "package registry ships it), or --backbone=i3d --weights=kinetics400 (fetched "
                "and verified), or --weights=none for random weights."
            )
        hasher = VideoHasher(
            config["backbone"],
            bits=config["bits"],
            hash_layer=config["hash_layer"],
            weights=config["weights"],
            clip_frames=config["clip_frames"],
            clip_size=config["clip_size"],
            hash_layer_kwargs=config["hash_layer_kwargs"],
        )
        self.hasher = hasher
        return similarity_models(hasher, config)

    # --- features -----------------------------------------------------------------------

    def _cache_path(self, run, name: str) -> str:
        config = self.config
        split = self.splits[name]
        identity = {
            "backbone": config["backbone"],
            "weights": weights_digest(self.hasher.extractor),
            "clip_frames": config["clip_frames"],
            "clip_size": config["clip_size"],
            "videos": [
                [source, int(frames), _size(source)]
                for source, frames in zip(split.sources, split.frames, strict=True)
            ],
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        root = config["cache_dir"] or os.path.join(run.path, "feature_cache")
        return os.path.join(os.path.expanduser(root), f"video_{name}_{key}.npz")

    def _clip_features(self, run, name: str) -> dict:
        """Features, labels, video index, first frame and a thumbnail of every clip of a
        split, computed once and cached (an unreadable cache file is rebuilt)."""
        path = self._cache_path(run, name)
        if os.path.isfile(path):
            try:
                with np.load(path, allow_pickle=False) as stored:
                    return {key: stored[key] for key in stored.files}
            except (OSError, ValueError, KeyError) as error:
                logging.warning("Rebuilding the clip feature cache %s (%s).", path, error)
        config = self.config
        failures = pipeline.DecodeFailures()
        clips = pipeline.evaluation_clips(
            self.splits[name],
            clip_size=config["clip_size"],
            clip_frames=config["clip_frames"],
            with_ids=True,
            failures=failures,
        ).batch(config["extract_batch_size"])
        parts = {key: [] for key in ("features", "labels", "video", "start", "thumbnails")}
        extractor = self.hasher.extractor
        for batch_clips, labels, video, start in clips:
            parts["features"].append(np.asarray(extractor(batch_clips, training=False)))
            parts["labels"].append(np.asarray(labels))
            parts["video"].append(np.asarray(video))
            parts["start"].append(np.asarray(start))
            middle = np.asarray(batch_clips[:, batch_clips.shape[1] // 2], np.float32)
            parts["thumbnails"].append(_thumbnails(middle))
        if not parts["features"]:
            raise InputError(f"No clip of the {name} videos could be decoded: {failures}.")
        arrays = {key: np.concatenate(value) for key, value in parts.items()}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(path + ".tmp", path)
        logging.info("Cached %d clip features of %s in %s.", len(arrays["labels"]), name, path)
        return arrays

    def _clip_level_split(self, arrays: dict) -> tuple[dict, dict]:
        """Per class, a seeded ``query_fraction`` of the clips (at least one) -> query."""
        rng = np.random.default_rng(self.config["seed"])
        labels = arrays["labels"]
        query = np.zeros(len(labels), bool)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            count = max(1, round(self.config["query_fraction"] * len(members)))
            if count < len(members):
                query[rng.choice(members, count, replace=False)] = True
        return (
            {key: value[query] for key, value in arrays.items()},
            {key: value[~query] for key, value in arrays.items()},
        )

    def build_data(self, models, run) -> TaskData:
        config = self.config
        batch_size = config["batch_size"]
        evaluation_batch = config["evaluation"]["batch_size"]
        if not config["feature_cache"]:
            return self._end_to_end_data(batch_size, evaluation_batch)
        if self.clip_level:
            query, database = self._clip_level_split(self._clip_features(run, "all"))
            self.clips = {"query": query, "database": database}
        else:
            self.clips = {name: self._clip_features(run, name) for name in ("query", "database")}
        train = self.clips["database"]
        steps = pipelines.steps_per_epoch(len(train["labels"]), batch_size, drop_remainder=True)
        report = dict(
            self.report,
            counts={name: int(len(clips["labels"])) for name, clips in self.clips.items()},
        )

        def train_batches(initial_epoch: int):
            return pipelines.epoch_batches(
                (train["features"], train["labels"]),
                batch_size,
                seed=config["seed"],
                epochs=config["epochs"],
                initial_epoch=initial_epoch,
                drop_remainder=True,
            )

        def ordered(name):
            clips = self.clips[name]
            return pipelines.ordered_batches((clips["features"], clips["labels"]), evaluation_batch)

        return TaskData(
            train=train_batches,
            steps_per_epoch=steps,
            examples_per_epoch=steps * batch_size,
            query=ordered("query"),
            database=ordered("database"),
            monitor_inputs=train["features"][: config["monitor"]["sample_size"]],
            report=report,
        )

    def _end_to_end_data(self, batch_size: int, evaluation_batch: int) -> TaskData:
        config = self.config
        if self.clip_level:
            raise InputError(
                "feature_cache=False (the reference's random clip sampling) needs a protocol "
                "with video-level splits (ucf101, hmdb51)."
            )
        database = self.splits["database"]
        steps = pipelines.steps_per_epoch(len(database), batch_size, drop_remainder=True)
        size, frames = config["clip_size"], config["clip_frames"]

        def train_batches(initial_epoch: int):
            # One random, augmented clip per video and epoch; a resumed run draws with a seed
            # derived from the epoch it starts at.
            clips = pipeline.training_clips(
                database, seed=config["seed"] + initial_epoch, clip_size=size, clip_frames=frames
            )
            return clips.repeat().batch(batch_size, drop_remainder=True).prefetch(2)

        def ordered(name):
            return pipeline.evaluation_clips(
                self.splits[name], clip_size=size, clip_frames=frames
            ).batch(evaluation_batch)

        monitor = next(iter(train_batches(0)))[0]
        return TaskData(
            train=train_batches,
            steps_per_epoch=steps,
            examples_per_epoch=steps * batch_size,
            query=ordered("query"),
            database=ordered("database"),
            monitor_inputs=monitor,
            report=dict(self.report),
        )

    # --- record and pictures ------------------------------------------------------------

    def display_images(self, split, indices):
        if not getattr(self, "clips", None):
            return None
        return self.clips[split]["thumbnails"][np.asarray(indices, np.int64)]

    def record_fields(self, models) -> RecordFields:
        config = self.config
        frames, size = int(config["clip_frames"]), int(config["clip_size"])
        return RecordFields(
            input=InputSpec(kind="video", shape=(frames, size, size, 3), range=(0.0, 255.0)),
            preprocessing={
                "clip_frames": frames,
                "clip_size": size,
                "clips": "non-overlapping, loop-padded; shorter side scaled, centre crop",
                "channels": "RGB",
                "normalization": "inside the model",
            },
            backbone=config["backbone"],
        )


def _size(source: str) -> int:
    try:
        return os.path.getsize(source) if os.path.isfile(source) else len(os.listdir(source))
    except OSError:
        return -1


def _thumbnails(frames: np.ndarray) -> np.ndarray:
    """uint8 (N, THUMBNAIL, THUMBNAIL, 3) of float (N, H, W, 3) frames in [0, 255]."""
    import tensorflow as tf  # noqa: PLC0415

    resized = tf.image.resize(frames, (THUMBNAIL, THUMBNAIL), antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
