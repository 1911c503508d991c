"""trainers.image end to end on a generated folder dataset (smoke config, weights=None)."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

import tf_bihalf  # noqa: F401
import tf_bihalf.models.image_hasher  # noqa: F401  (registers ImageHasher for load_model)
from trainers import image as image_trainer


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
    config = image_trainer.resolve_config(f"folder:{folder}", {"bits": 8}, smoke=True)
    assert config["protocol_options"] == {}  # flickr25k's options do not apply to a folder.
    workdir = str(tmp_path / "run")
    results = image_trainer.train(config, workdir)
    for name in (
        "config.json",
        "results.json",
        "encoder.keras",
        "splits/train.txt",
        "plots/pr_curve.png",
    ):
        assert os.path.exists(os.path.join(workdir, name)), name
    stored = json.load(open(os.path.join(workdir, "config.json")))
    assert stored["bits"] == 8 and stored["model_type"] == "image"
    assert stored["input_shape"] == [32, 32, 3] and stored["image_size"] == [32, 32]
    assert stored["backbone"] == "vgg16" and stored["hash_layer"] == "bihalf"
    metrics = json.load(open(os.path.join(workdir, "results.json")))["metrics"]
    assert metrics["map_at"] == "All" and 0 <= metrics["map"] <= 1
    assert len(metrics["bits"]["balance"]) == 8
    assert os.listdir(os.path.join(workdir, "tensorboard", "bits"))

    encoder = keras.models.load_model(os.path.join(workdir, "encoder.keras"))
    raw = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    codes = encoder(raw, training=False).numpy()
    assert codes.shape == (5, 8) and set(np.unique(codes)) <= {-1.0, 1.0}

    again = image_trainer.train(config, workdir)  # Resumes after the last epoch: no training.
    assert again["metrics"]["map"] == results["metrics"]["map"]
    assert again["timing"]["train"]["epochs_this_process"] == 0
    with pytest.raises(ValueError, match="different config"):
        image_trainer.train({**config, "bits": 16}, workdir)


def test_resume_refuses_changed_splits(folder, tmp_path):
    """An image that disappears between a run and its resumption must not change the split."""
    import shutil

    copy = str(tmp_path / "photos")
    shutil.copytree(folder, copy)
    config = image_trainer.resolve_config(f"folder:{copy}", {"bits": 8}, smoke=True)
    workdir = str(tmp_path / "run")
    image_trainer.train(config, workdir)
    os.remove(os.path.join(copy, "class_1", "3.png"))
    with pytest.raises(ValueError, match="split computed now differs"):
        image_trainer.train(config, workdir)


def test_end_to_end_without_cache(folder, tmp_path):
    config = image_trainer.resolve_config(
        f"folder:{folder}",
        {"bits": 4, "feature_cache": False, "epochs": 1, "hash_layer": "sign"},
        smoke=True,
    )
    results = image_trainer.train(config, str(tmp_path / "run"))
    assert "extract_train" not in results["timing"]
    assert np.isfinite(results["metrics"]["map"])


def test_config_errors():
    with pytest.raises(ValueError, match="even"):
        image_trainer.resolve_config("cifar10", {"batch_size": 7})
    with pytest.raises(ValueError, match="hash layer"):
        image_trainer.resolve_config("cifar10", {"hash_layer": "binary"})
    with pytest.raises(ValueError, match="Unknown config"):
        image_trainer.resolve_config("imagenet", {})
    config = image_trainer.resolve_config("cifar10", {"weights": "none", "protocol": "II"})
    assert config["weights"] is None and image_trainer.protocol_top_k(config) is None
    assert image_trainer.protocol_top_k(image_trainer.resolve_config("cifar10", {})) == 1000


@pytest.mark.parametrize(
    "name", ["cifar10", "flickr25k", "nus_wide", "mscoco", "fashion_mnist_rgb"]
)
def test_configs_follow_the_reference_settings(name):
    config = image_trainer.resolve_config(name, {})
    assert config["optimizer"]["name"] == "sgd" and config["optimizer"]["momentum"] == 0.9
    assert config["optimizer"]["weight_decay"] == 5e-4 and config["batch_size"] == 32
    assert config["hash_layer_options"]["bihalf"] == {"gamma": 6.0}
    assert config["follows"]
