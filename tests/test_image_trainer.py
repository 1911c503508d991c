"""trainers.image end to end on a generated folder dataset (smoke config, weights=None)."""

import json
import os

import keras
import numpy as np
import pytest
from absl import flags
from PIL import Image

import tf_bihalf  # noqa: F401
import tf_bihalf.models.image_hasher  # noqa: F401  (registers ImageHasher for load_model)
from tf_bihalf.errors import InputError
from tf_bihalf.tasks.image import ImageTask
from tf_bihalf.training.loop import train_and_evaluate
from trainers import common
from trainers import image as image_trainer


def resolve(*arguments):
    """The config ``python -m trainers.image ARGUMENTS`` resolves to."""
    flag_values = flags.FlagValues()
    image_trainer.define_flags(flag_values)
    flag_values(["trainers.image", *arguments])
    return common.resolve_for(image_trainer, flag_values)


def train(config, workdir):
    return train_and_evaluate(ImageTask(config), config, workdir, progress=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for label in range(3):
        os.makedirs(root / f"class_{label}")
        for index in range(10):
            pixels = rng.integers(0, 60, (20, 24, 3))
            pixels[..., label] += 180
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class_{label}" / f"{index}.png")
    return str(root)


def test_smoke_run_writes_the_run_directory_and_resumes(folder, tmp_path):
    config = resolve(f"--dataset=folder:{folder}", "--bits=8", "--smoke")
    assert config["protocol_options"] == {}  # flickr25k's options do not apply to a folder.
    workdir = str(tmp_path / "run")
    results = train(config, workdir)
    for name in (
        "config.json",
        "run.json",
        "results.json",
        "encoder.keras",
        "splits/train.txt",
        "plots/pr_curve.png",
    ):
        assert os.path.exists(os.path.join(workdir, name)), name
    stored = json.load(open(os.path.join(workdir, "config.json")))
    assert stored["bits"] == 8 and stored["task"] == "image" and stored["image_size"] == [32, 32]
    assert stored["backbone"] == "vgg16" and stored["hash_layer"] == "bihalf"
    record = json.load(open(os.path.join(workdir, "run.json")))
    assert record["input"]["shape"] == [32, 32, 3] and record["input"]["range"] == [0.0, 255.0]
    assert record["backbone"] == "vgg16" and record["preprocessing"]["resize"] == "stretch"
    metrics = json.load(open(os.path.join(workdir, "results.json")))["metrics"]
    assert metrics["map_at"] == "All" and 0 <= metrics["map"] <= 1
    assert len(metrics["bits"]["balance"]) == 8
    assert os.listdir(os.path.join(workdir, "tensorboard", "bits"))

    encoder = keras.models.load_model(os.path.join(workdir, "encoder.keras"))
    raw = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    codes = encoder(raw, training=False).numpy()
    assert codes.shape == (5, 8) and set(np.unique(codes)) <= {-1.0, 1.0}

    again = train(config, workdir)  # Resumes after the last epoch: no training.
    assert again["metrics"]["map"] == results["metrics"]["map"]
    assert again["training"]["re_evaluated"]
    with pytest.raises(InputError, match="different config"):
        train({**config, "bits": 16}, workdir)


def test_resume_refuses_changed_splits(folder, tmp_path):
    """An image that disappears between a run and its resumption must not change the split."""
    import shutil

    copy = str(tmp_path / "photos")
    shutil.copytree(folder, copy)
    config = resolve(f"--dataset=folder:{copy}", "--bits=8", "--smoke")
    workdir = str(tmp_path / "run")
    train(config, workdir)
    os.remove(os.path.join(copy, "class_1", "3.png"))
    with pytest.raises(ValueError, match="split computed now differs"):
        train(config, workdir)


def test_end_to_end_without_cache(folder, tmp_path):
    config = resolve(
        f"--dataset=folder:{folder}",
        "--bits=4",
        "--nofeature_cache",
        "--epochs=1",
        "--hash_layer=sign",
        "--smoke",
    )
    results = train(config, str(tmp_path / "run"))
    assert "feature_extraction" not in results["data_report"]
    assert np.isfinite(results["metrics"]["map"])


def test_config_errors():
    with pytest.raises(InputError, match="even"):
        ImageTask(resolve("--dataset=cifar10", "--batch_size=7"))
    with pytest.raises(flags.IllegalFlagValueError):
        resolve("--dataset=cifar10", "--hash_layer=binary")
    with pytest.raises(InputError, match="Unknown config"):
        resolve("--config=imagenet")
    with pytest.raises(InputError, match="--dataset .* is required"):
        resolve()
    config = resolve("--dataset=cifar10", "--weights=none", "--protocol=II")
    assert config["weights"] is None and config["evaluation"]["top_k"] is None
    assert resolve("--dataset=cifar10")["evaluation"]["top_k"] == 1000
    assert resolve("--dataset=cifar10", "--weights=x.h5")["weights"] == "x.h5"
    with pytest.raises(InputError, match="protocol 'III'"):
        resolve("--dataset=cifar10", "--protocol=III")
    smoke_ii = resolve("--dataset=nus_wide", "--protocol=II", "--smoke")
    assert smoke_ii["protocol_options"] == {"num_concepts": 5, "num_query": 10, "num_train": 20}


@pytest.mark.parametrize(
    "name", ["cifar10", "flickr25k", "nus_wide", "mscoco", "fashion_mnist_rgb"]
)
def test_configs_follow_the_reference_settings(name):
    config = resolve(f"--dataset={name}")
    assert config["optimizer"]["name"] == "sgd" and config["optimizer"]["momentum"] == 0.9
    assert config["optimizer"]["weight_decay"] == 5e-4 and config["batch_size"] == 32
    assert config["hash_layer_kwargs"] == {"gamma": 6.0}
    assert config["follows"] and config["task"] == "image" and config["config_name"] == name
