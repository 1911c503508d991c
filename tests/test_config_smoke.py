"""Every config's smoke variant runs end to end through its trainer's entry point.

The data are generated here in the owners' formats (MNIST / Fashion-MNIST IDX files with the
content pins replaced by the generated arrays' hashes, CIFAR-10's binary batches prepared by the
real TFDS builder, the MIRFlickr / NUS-WIDE / MS-COCO manual-download layouts), so a config
whose smoke variant cannot run fails CI. Each run: resolve the flags exactly as ``main`` does,
train, evaluate, write the run directory.
"""

from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest
from absl import flags

from tests.test_image_data import _make_flickr, _make_nus_wide, _random_image, _save
from tf_bihalf.data import mnist, protocols, sources
from tf_bihalf.data.protocols import cifar10 as cifar10_protocol
from trainers import autoencoder as autoencoder_trainer
from trainers import common
from trainers import image as image_trainer
from trainers import video as video_trainer


def run_trainer(trainer, *arguments):
    """``python -m trainers.X ARGUMENTS`` in this process (absl's parsing, the real main path)."""
    flag_values = flags.FlagValues()
    trainer.define_flags(flag_values)
    flag_values(["trainer", "--smoke", "--noprogress", *arguments])
    return common.train(common.resolve_for(trainer, flag_values), flag_values)


def check_run(results, workdir):
    for name in ("config.json", "run.json", "results.json", "encoder.keras"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    metrics = results["metrics"]
    assert 0.0 <= metrics["map"] <= 1.0 and np.isfinite(metrics["map"])
    assert results["training"]["epochs"] == results["config"]["epochs"]
    assert len(results["training"]["loss_history_this_process"]) == results["config"]["epochs"]


# ---------------------------------------------------------------------------- MNIST-style IDX


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(directory, name, monkeypatch, train_per_class, test_per_class, seed):
    """Class-balanced 28x28 uint8 images as the four gzipped IDX files, pinned as ``name``."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 50, size=(len(labels), 28, 28))
        for index, label in enumerate(labels):  # a class-dependent bright stripe
            images[index, 2 * label : 2 * label + 3] += 200
        arrays[f"x_{split}"] = images.astype(np.uint8)
        arrays[f"y_{split}"] = labels
    os.makedirs(directory, exist_ok=True)
    for key, stem in mnist.IDX_FILES.items():
        with open(os.path.join(directory, f"{stem}.gz"), "wb") as file:
            file.write(gzip.compress(idx_bytes(arrays[key])))
    pins = {key: sources.array_sha256(value) for key, value in arrays.items()}
    monkeypatch.setitem(mnist.CONTENT_SHA256, name, pins)
    return str(directory)


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TF_BIHALF_DATA", str(tmp_path / "cache"))


def test_autoencoder_smoke(tmp_path, monkeypatch):
    data_dir = write_idx(tmp_path / "mnist", "mnist", monkeypatch, 30, 8, seed=0)
    workdir = str(tmp_path / "run")
    results = run_trainer(
        autoencoder_trainer, f"--data_dir={data_dir}", f"--workdir={workdir}", "--bits=8"
    )
    check_run(results, workdir)
    assert results["metrics"]["num_database"] == 300 and results["metrics"]["num_query"] == 80


def test_fashion_mnist_rgb_smoke(tmp_path, monkeypatch):
    data_dir = write_idx(tmp_path / "fashion", "fashion_mnist", monkeypatch, 22, 6, seed=1)
    workdir = str(tmp_path / "run")
    results = run_trainer(
        image_trainer,
        "--dataset=fashion_mnist_rgb",
        f"--data_dir={data_dir}",
        f"--workdir={workdir}",
    )
    check_run(results, workdir)
    assert results["metrics"]["num_query"] == 50 and results["metrics"]["num_database"] == 200
    assert set(results["metrics"]["map_at_k"]) == {"All", "50"}


# ---------------------------------------------------------------------------- CIFAR-10 (TFDS)


def write_cifar_batches(directory, per_class_train, per_class_test, seed):
    """CIFAR-10's binary distribution: label byte + 3x32x32 planes per record."""
    rng = np.random.RandomState(seed)
    os.makedirs(directory)
    train = np.repeat(np.arange(10), per_class_train)
    test = np.repeat(np.arange(10), per_class_test)
    rng.shuffle(train)
    rng.shuffle(test)

    def records(labels):
        planes = rng.randint(0, 256, size=(len(labels), 3, 32, 32)).astype(np.uint8)
        return b"".join(
            bytes([label]) + plane.tobytes() for label, plane in zip(labels, planes, strict=True)
        )

    per_file = len(train) // 5
    for number in range(5):
        part = train[number * per_file : (number + 1) * per_file]
        with open(os.path.join(directory, f"data_batch_{number + 1}.bin"), "wb") as file:
            file.write(records(part))
    with open(os.path.join(directory, "test_batch.bin"), "wb") as file:
        file.write(records(test))
    with open(os.path.join(directory, "batches.meta.txt"), "w") as file:
        file.write("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")


@pytest.mark.parametrize("protocol", ["I", "II"])
def test_cifar10_smoke(tmp_path, monkeypatch, protocol):
    import tensorflow_datasets as tfds

    extracted = tmp_path / "extracted"
    write_cifar_batches(extracted / "cifar-10-batches-bin", 45, 10, seed=0)
    monkeypatch.setattr(
        tfds.download.DownloadManager, "download_and_extract", lambda self, url: str(extracted)
    )
    # No network here: the reachability probe would (rightly) stop the download.
    monkeypatch.setattr(cifar10_protocol, "check_reachable", lambda host, timeout=5.0: None)
    data_dir = str(tmp_path / "tfds")
    workdir = str(tmp_path / "run")
    results = run_trainer(
        image_trainer,
        "--dataset=cifar10",
        f"--protocol={protocol}",
        f"--data_dir={data_dir}",
        f"--workdir={workdir}",
    )
    check_run(results, workdir)
    metrics = results["metrics"]
    assert metrics["num_query"] == 100 and metrics["num_database"] == 400
    assert metrics["map_at"] == (100 if protocol == "I" else "All")


# --------------------------------------------------------------- manual-download collections


def make_coco(root, rng, num_train=50, num_val=30):
    """The MS-COCO owner layout: instances_{train,val}2014.json + the image folders."""
    categories = [{"id": cid, "name": f"category{cid}"} for cid in (1, 2, 5, 7, 11)]
    os.makedirs(os.path.join(root, "annotations"))
    image_id = 0
    for folder, count in (("train2014", num_train), ("val2014", num_val)):
        images, annotations = [], []
        for _ in range(count):
            image_id += 1
            name = f"COCO_{folder}_{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": name})
            for cid in rng.choice([1, 2, 5, 7, 11], size=rng.randint(1, 3), replace=False):
                annotations.append({"image_id": image_id, "category_id": int(cid)})
            _save(os.path.join(root, folder, name), _random_image(rng), "JPEG")
        with open(os.path.join(root, "annotations", f"instances_{folder}.json"), "w") as handle:
            json.dump(
                {"images": images, "annotations": annotations, "categories": categories}, handle
            )


@pytest.mark.parametrize(
    "dataset, protocol",
    [("flickr25k", None), ("nus_wide", "I"), ("nus_wide", "II"), ("mscoco", None)],
)
def test_manual_collection_smoke(tmp_path, dataset, protocol):
    rng = np.random.RandomState(0)
    root = str(tmp_path / dataset)
    os.makedirs(root)
    if dataset == "flickr25k":
        _make_flickr(root, rng, num_images=64)
    elif dataset == "nus_wide":
        _make_nus_wide(root, rng, num_images=120, num_concepts=12)
    else:
        make_coco(root, rng)
    workdir = str(tmp_path / "run")
    arguments = [f"--dataset={dataset}", f"--data_dir={root}", f"--workdir={workdir}"]
    if protocol:
        arguments.append(f"--protocol={protocol}")
    results = run_trainer(image_trainer, *arguments)
    check_run(results, workdir)
    assert results["data_report"]["counts"]["query"] == results["metrics"]["num_query"]


# ----------------------------------------------------------------------------------- video


def write_hmdb(root):
    """HMDB-51 layout: <class>/<video>.avi and testTrainMulti_7030_splits/<class>_test_split1.txt
    (1 = train/database, 2 = test/query, 0 = unused)."""
    from tests.test_video_data import write_video

    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for label, name in enumerate(["brush_hair", "cartwheel", "dive"]):
        lines = []
        for index, kind in enumerate(["1", "2", "0", "1", "1"]):
            video = f"{name}_clip_{index}.avi"
            write_video(root / name / video, 17 + 4 * index, seed=7 * label + index)
            lines.append(f"{video} {kind} \n")
        (splits / f"{name}_test_split1.txt").write_text("".join(lines))


@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51"])
def test_video_smoke(tmp_path, dataset):
    from tests.test_video_data import make_ucf

    root = tmp_path / dataset
    if dataset == "ucf101":
        make_ucf(root, broken=True)  # a garbage, a truncated and a missing video among them
    else:
        write_hmdb(root)
    workdir = str(tmp_path / "run")
    results = run_trainer(
        video_trainer, f"--dataset={dataset}", f"--data_dir={root}", f"--workdir={workdir}"
    )
    check_run(results, workdir)
    record = results["record"]
    assert record["task"] == "video" and record["input"]["shape"] == [8, 32, 32, 3]
    counts = results["data_report"]["counts"]
    assert counts["query"] == results["metrics"]["num_query"] > 0
    if dataset == "ucf101":
        excluded = results["data_report"]["database"]["excluded"]
        assert excluded == 2 and results["data_report"]["query"]["excluded"] == 1
        # The run exports like the others: a SavedModel taking a clip tensor, codes == Keras.
        import keras
        import tensorflow as tf

        from export.saved_model import export_run

        path = export_run(workdir, str(tmp_path / "exported"), "clips", 1)
        clips = np.random.default_rng(0).uniform(0, 255, (3, 8, 32, 32, 3)).astype("float32")
        serving = tf.saved_model.load(path).signatures["serving_default"]
        exported = serving(inputs=tf.constant(clips))["codes"].numpy()
        encoder = keras.saving.load_model(os.path.join(workdir, "encoder.keras"))
        np.testing.assert_array_equal(exported, np.asarray(encoder(clips, training=False)))


def test_real_videos_config_smoke_on_a_generated_folder(tmp_path):
    """configs/real_videos.py's settings on users' ``folder:`` videos (the real clips are
    fetched from package registries, too large for every CI run; docs/video.md has their
    measured check)."""
    from tests.test_video_data import write_video

    for label in range(3):
        for index in range(3):
            write_video(tmp_path / "videos" / f"scene{label}" / f"v{index}.avi", 40, seed=label)
    workdir = str(tmp_path / "run")
    results = run_trainer(
        video_trainer,
        f"--dataset=folder:{tmp_path / 'videos'}",
        f"--workdir={workdir}",
        "--bits=8",
    )
    check_run(results, workdir)
    assert results["config"]["config_name"] == "real_videos"
    assert (
        results["data_report"]["videos"] == 9 and results["data_report"]["clips"] == 45
    )  # 40 frames: 5 clips of 8
    assert os.path.isfile(os.path.join(workdir, "plots", "retrieval.png"))


def test_every_config_has_a_smoke_test():
    """A new config needs a smoke run here: this list is the configs/ directory."""
    covered = {"autoencoder", "fashion_mnist_rgb", "cifar10", "flickr25k", "nus_wide", "mscoco"}
    covered |= {"ucf101", "hmdb51", "real_videos"}
    assert set(common.available_configs()) == covered
    assert protocols  # the registry module is importable (used by the trainers' tasks)


def test_cifar10_offline_download_is_refused_before_tfds_retries(tmp_path, monkeypatch):
    """Without the download host, the data check says so at once: a connection probe with a
    short timeout runs before TFDS' download (which alone retries for minutes)."""
    import tensorflow_datasets as tfds

    def never(self, *args, **kwargs):
        raise AssertionError("download_and_prepare must not start when the host is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", never)
    monkeypatch.setattr(cifar10_protocol, "CIFAR10_HOST", ("127.0.0.1", 9))  # refused
    with pytest.raises(FileNotFoundError, match="127.0.0.1 cannot be reached"):
        cifar10_protocol.load_cifar10_pool(str(tmp_path / "tfds"))
