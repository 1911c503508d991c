"""Export: SavedModel, TFLite and the encode CLI, each reloaded and checked against Keras.

Artifacts (two tiny runs, their SavedModels, TFLite files) are built once per module.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from export import encode as encode_cli
from export import preprocessing, saved_model, tflite
from export.run_directory import EncoderSpec, load_run
from export.saved_model import SavedModelEncoder, export_run, find_sort_ops
from tests.test_export_support import (
    IMAGE_BITS,
    IMAGE_SIZE,
    autoencoder_encoder,
    encode_image,
    make_autoencoder_run,
    make_image_run,
    random_images,
    run_record,
    write_run,
)
from tf_bihalf.codes import pack
from tf_bihalf.layers import BiHalf


def keras_codes(model: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """The reference: sign of the Keras model's inference output, +1 for 0, as int8."""
    return np.where(np.asarray(model(inputs, training=False)) >= 0, 1, -1).astype(np.int8)


def reference_decode(data: bytes, image_size) -> np.ndarray:
    """Pillow decode + RGB + bilinear antialiased resize (tf.image.resize), clipped to [0, 255]."""
    import io

    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    resized = tf.image.resize(image, image_size, method="bilinear", antialias=True).numpy()
    return np.clip(resized, 0, 255)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    autoencoder_run = make_autoencoder_run(str(root / "runs" / "autoencoder"))
    image_run = make_image_run(str(root / "runs" / "image"))
    out = str(root / "models")
    paths = {
        "root": root,
        "out": out,
        "autoencoder_run": autoencoder_run,
        "image_run": image_run,
        "autoencoder": export_run(autoencoder_run, out, "mnist_hash", 1),
        "image": export_run(image_run, out, "image_hash", 3),
    }
    return paths


@pytest.fixture(scope="module")
def models(artifacts):
    return {
        "autoencoder": load_run(artifacts["autoencoder_run"])[0],
        "image": load_run(artifacts["image_run"])[0],
    }


@pytest.fixture(scope="module")
def encoders(artifacts):
    return {kind: SavedModelEncoder(artifacts[kind]) for kind in ("autoencoder", "image")}


def inputs_for(kind: str, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "autoencoder":
        return rng.uniform(0, 1, (count, 784)).astype(np.float32)
    return random_images(count, size=IMAGE_SIZE, seed=seed).astype(np.float32)


# SavedModel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["autoencoder", "image"])
def test_saved_model_codes_equal_keras(kind, models, encoders):
    inputs = inputs_for(kind, 37)
    expected = keras_codes(models[kind], inputs)
    outputs = encoders[kind].encode(inputs, batch_size=16)  # Also across batch boundaries.
    assert outputs["codes"].dtype == np.int8 and outputs["codes_packed"].dtype == np.uint8
    np.testing.assert_array_equal(outputs["codes"], expected)
    np.testing.assert_array_equal(outputs["codes_packed"], pack(expected))
    assert len(np.unique(outputs["codes_packed"], axis=0)) > 5  # Real, input-dependent codes.


def test_signatures_and_sidecar(artifacts):
    loaded = tf.saved_model.load(artifacts["image"])
    assert set(loaded.signatures) == {"serving_default", "image_bytes"}
    float_inputs = loaded.signatures["serving_default"].structured_input_signature[1]
    assert float_inputs["inputs"].shape.as_list() == [None, *IMAGE_SIZE, 3]
    assert float_inputs["inputs"].dtype == tf.float32
    byte_inputs = loaded.signatures["image_bytes"].structured_input_signature[1]
    assert byte_inputs["image_bytes"].shape.as_list() == [None]
    assert byte_inputs["image_bytes"].dtype == tf.string
    for name in ("serving_default", "image_bytes"):
        outputs = loaded.signatures[name].structured_outputs
        assert outputs["codes"].dtype == tf.int8
        assert outputs["codes"].shape.as_list() == [None, IMAGE_BITS]
        assert outputs["codes_packed"].dtype == tf.uint8
        assert outputs["codes_packed"].shape.as_list() == [None, 2]
    autoencoder = tf.saved_model.load(artifacts["autoencoder"])
    assert set(autoencoder.signatures) == {"serving_default"}
    sidecar = saved_model.read_sidecar(artifacts["image"])
    assert sidecar["encoder"]["bits"] == IMAGE_BITS
    assert sidecar["encoder"]["image_size"] == list(IMAGE_SIZE)
    assert set(sidecar["signatures"]) == {"serving_default", "image_bytes"}


@pytest.mark.parametrize("kind", ["autoencoder", "image"])
def test_weights_are_stored_once(kind, artifacts, models):
    reader = tf.train.load_checkpoint(os.path.join(artifacts[kind], "variables", "variables"))
    stored = [key for key in reader.get_variable_to_shape_map() if "VARIABLE_VALUE" in key]
    assert len(stored) == len(models[kind].weights)


def test_exported_graph_has_no_sort_ops(artifacts, tmp_path):
    for kind in ("autoencoder", "image"):
        assert find_sort_ops(artifacts[kind]) == {}
        assert "MatMul" in set().union(*saved_model.saved_model_ops(artifacts[kind]).values())

    # The inspection must see sort ops hidden in nested library functions: a SavedModel whose
    # signature calls the training-time Bi-half ranking inside an inner tf.function.
    layer = BiHalf()

    @tf.function
    def inner(u):
        return layer(u, training=True)

    class Leaky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, u):
            return {"codes": inner(u)}

    module = Leaky()
    tf.saved_model.save(
        module, str(tmp_path / "leaky"), signatures={"serving_default": module.serve}
    )
    found = find_sort_ops(str(tmp_path / "leaky"))
    assert found, "the inspection missed the ranking's sort op"
    assert all(not name.startswith("<graph") for name in found)  # Only in library functions.


@pytest.mark.parametrize("kind", ["autoencoder", "image"])
def test_batch_of_one_equals_example_in_batch(kind, encoders):
    inputs = inputs_for(kind, 9, seed=3)
    batch = encoders[kind].encode(inputs)["codes"]
    for index in range(len(inputs)):
        single = encoders[kind].encode(inputs[index : index + 1])["codes"]
        np.testing.assert_array_equal(single[0], batch[index])


def test_bihalf_model_exports_sign_codes_not_ranking(tmp_path):
    # U = bias, independent of the input: 6 positive bits and 2 negative ones.
    bias = np.array([0.5, 1.0, 2.0, -0.5, 0.1, 3.0, -2.0, 0.7], np.float32)
    inputs = keras.Input((784,))
    features = keras.layers.Dense(8, kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, BiHalf(gamma=1.0)(features))
    model.layers[1].bias.assign(bias)
    x = np.full((1, 784), 0.5, np.float32)
    # The trap: the training-time ranking of a batch of one gives all -1.
    np.testing.assert_array_equal(model(x, training=True), -np.ones((1, 8)))
    config = {"bits": 8, "model_type": "autoencoder", "hash_layer": "bihalf", "input_shape": [784]}
    run = write_run(str(tmp_path / "run"), model, config)
    path = export_run(run, str(tmp_path / "models"), "bias", 1)
    codes = SavedModelEncoder(path).encode(x)["codes"]
    np.testing.assert_array_equal(codes[0], np.where(bias >= 0, 1, -1))
    batch = SavedModelEncoder(path).encode(np.repeat(x, 4, axis=0))["codes"]
    np.testing.assert_array_equal(batch, np.tile(np.where(bias >= 0, 1, -1), (4, 1)))


def test_decode_images_matches_pillow_reference():
    images = random_images(3, size=(31, 27), seed=5)
    gray = images[0, :, :, 0]
    rgba = np.concatenate([images[1], np.full((31, 27, 1), 77, np.uint8)], axis=-1)
    encoded = [encode_image(images[2]), encode_image(gray), encode_image(rgba)]
    decoded = preprocessing.decode_images(tf.constant(encoded), IMAGE_SIZE).numpy()
    for data, image in zip(encoded, decoded, strict=True):
        np.testing.assert_allclose(image, reference_decode(data, IMAGE_SIZE), atol=1e-4)
    np.testing.assert_array_equal(decoded[1][..., 0], decoded[1][..., 2])  # Gray -> RGB.
    same_size = images[0, :24, :20]
    np.testing.assert_array_equal(
        preprocessing.decode_image(tf.constant(encode_image(same_size)), IMAGE_SIZE), same_size
    )


def test_image_bytes_signature_matches_float_path(encoders):
    encoder = encoders["image"]
    images = random_images(6, size=(40, 33), seed=7)
    png = [encode_image(image) for image in images[:3]]
    jpeg = [encode_image(image, "JPEG") for image in images[3:]]
    from_bytes = encoder.encode_images(png + jpeg)
    # The float path on the same decoded images: Pillow for PNG (lossless), TF's JPEG decoder.
    decoded = [reference_decode(data, IMAGE_SIZE) for data in png]
    for data in jpeg:
        pixels = tf.io.decode_jpeg(data, channels=3)
        decoded.append(preprocessing.resize_images(pixels, IMAGE_SIZE).numpy())
    from_floats = encoder.encode(np.stack(decoded))
    np.testing.assert_array_equal(from_bytes["codes"], from_floats["codes"])
    np.testing.assert_array_equal(from_bytes["codes_packed"], from_floats["codes_packed"])


@pytest.mark.parametrize("kind", ["autoencoder", "image"])
def test_wrong_inputs_give_clear_errors(kind, encoders):
    encoder = encoders[kind]
    good = inputs_for(kind, 2)
    with pytest.raises(ValueError, match="batch axis"):
        encoder.encode(good[0])
    with pytest.raises(ValueError, match="Expected inputs of shape"):
        encoder.encode(good[:, :-1])
    with pytest.raises(ValueError, match="floating-point"):
        encoder.encode(good.astype(np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        encoder.encode(np.full_like(good, np.nan))
    with pytest.raises(ValueError, match="image_bytes"):
        encoder.encode([b"\x89PNG"])
    # Fed directly (as TF Serving does), the signature itself refuses a wrong shape, instead of
    # a pooled network silently encoding a wrongly sized image.
    wrong = good[:, :-1] if kind == "autoencoder" else good[:, :, :-3]
    with pytest.raises(tf.errors.InvalidArgumentError):
        encoder.signatures["serving_default"](inputs=tf.constant(wrong))
    if kind == "autoencoder":
        with pytest.raises(ValueError, match="no 'image_bytes' signature"):
            encoder.encode_images([encode_image(random_images(1)[0])])
    else:
        with pytest.raises(ValueError, match="not the path"):
            encoder.encode_images(["photo.jpg"])
        with pytest.raises(ValueError, match="Could not decode"):
            encoder.encode_images([b"not an image"])


def test_overwrite_protection_and_atomic_replace(artifacts, tmp_path):
    out = artifacts["out"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(artifacts["image_run"], out, "image_hash", 3)
    with pytest.raises(SystemExit) as exit_info:
        saved_model.main(
            [
                "--workdir",
                artifacts["image_run"],
                "--out",
                out,
                "--model_name",
                "image_hash",
                "--version",
                "3",
            ]
        )
    assert exit_info.value.code == 2
    # Overwrite a scratch version with a 24-bit model; no staging directory is left behind.
    run_16 = make_image_run(str(tmp_path / "run16"))
    run_24 = make_image_run(str(tmp_path / "run24"), bits=24)
    first = export_run(run_16, str(tmp_path / "models"), "scratch", 1)
    second = export_run(run_24, str(tmp_path / "models"), "scratch", 1, overwrite=True)
    assert first == second
    assert SavedModelEncoder(second).bits == 24
    assert os.listdir(tmp_path / "models" / "scratch") == ["1"]
    with pytest.raises(ValueError, match="positive integer"):
        export_run(run_16, str(tmp_path / "models"), "scratch", "v2")
    with pytest.raises(ValueError, match="path separators"):
        export_run(run_16, str(tmp_path / "models"), "../escape", 2)


def test_failed_verification_leaves_nothing(artifacts, tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("verification failed")

    monkeypatch.setattr(saved_model, "verify_export", failing)
    with pytest.raises(RuntimeError, match="verification failed"):
        export_run(artifacts["autoencoder_run"], str(tmp_path), "broken", 1)
    assert os.listdir(tmp_path / "broken") == []


def test_saved_model_cli(artifacts, tmp_path, capsys):
    assert (
        saved_model.main(
            [
                "--workdir",
                artifacts["autoencoder_run"],
                "--out",
                str(tmp_path),
                "--model_name",
                "cli",
                "--version",
                "7",
            ]
        )
        == 0
    )
    path = str(tmp_path / "cli" / "7")
    assert capsys.readouterr().out.startswith(path)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))


def test_run_directory_errors(tmp_path, artifacts):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="run.json"):
        load_run(str(tmp_path / "empty"))
    (tmp_path / "empty" / "run.json").write_text(json.dumps({"bits": 8}))
    with pytest.raises(ValueError, match="missing keys"):
        load_run(str(tmp_path / "empty"))
    config = {"bits": 8, "model_type": "autoencoder", "hash_layer": "bihalf", "input_shape": [784]}
    run_record(config).write(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="encoder.keras"):
        load_run(str(tmp_path / "empty"))
    # A record whose bits disagree with the model (12 bits).
    run = str(tmp_path / "mismatch")
    os.makedirs(run)
    os.symlink(os.path.join(artifacts["autoencoder_run"], "encoder.keras"), f"{run}/encoder.keras")
    run_record(config).write(run)
    with pytest.raises(ValueError, match="bits=8"):
        load_run(run)
    # export never falls back to the trainer's config.json.
    os.remove(os.path.join(run, "run.json"))
    (tmp_path / "mismatch" / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="run.json"):
        load_run(run)
    with pytest.raises(ValueError, match="image_size"):
        EncoderSpec(bits=8, model_type="image", input_shape=(32, 32, 3), hash_layer="sign")
    with pytest.raises(ValueError, match="model_type"):
        EncoderSpec(bits=8, model_type="video", input_shape=(4,), hash_layer="sign")


# TFLite ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tflite_models(artifacts):
    root = artifacts["root"]
    calibration = {
        "autoencoder": inputs_for("autoencoder", 200, seed=11),
        "image": inputs_for("image", 200, seed=12),
    }
    np.save(root / "calibration_autoencoder.npy", calibration["autoencoder"])
    image_dir = root / "calibration_images"
    image_dir.mkdir()
    for index, image in enumerate(random_images(40, size=(30, 26), seed=13)):
        (image_dir / f"{index:03d}.png").write_bytes(encode_image(image))
    result = {"calibration": calibration, "image_dir": str(image_dir)}
    for kind in ("autoencoder", "image"):
        for mode in ("none", "int8"):
            path = str(root / f"{kind}_{mode}.tflite")
            data = calibration[kind] if mode == "int8" else None
            report = tflite.export_tflite(artifacts[kind], path, mode, data)
            result[kind, mode] = (path, report)
    return result


@pytest.mark.parametrize("kind", ["autoencoder", "image"])
def test_tflite_float32_equals_keras_exactly(kind, tflite_models, models):
    path, report = tflite_models[kind, "none"]
    encoder = tflite.TFLiteEncoder(path)
    inputs = inputs_for(kind, 33, seed=21)
    outputs = encoder.encode(inputs, batch_size=10)
    expected = keras_codes(models[kind], inputs)
    assert outputs["codes"].dtype == np.int8 and outputs["codes_packed"].dtype == np.uint8
    np.testing.assert_array_equal(outputs["codes"], expected)
    np.testing.assert_array_equal(outputs["codes_packed"], pack(expected))
    # The weights are in the file (the tf.Module trap gives a tiny file emitting constants).
    assert report["size_bytes"] > 4 * models[kind].count_params()
    assert len(np.unique(outputs["codes_packed"], axis=0)) > 5
    assert report["bit_agreement"] == 1.0
    ops = encoder.op_names()
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"]
    assert {"GREATER_EQUAL", "SUM"} <= ops
    assert ("FULLY_CONNECTED" if kind == "autoencoder" else "CONV_2D") in ops
    single = encoder.encode(inputs[:1])["codes"]
    np.testing.assert_array_equal(single[0], outputs["codes"][0])
    with open(path + ".json", encoding="utf-8") as file:
        assert json.load(file)["size_bytes"] == os.path.getsize(path)


@pytest.mark.parametrize("kind", ["autoencoder", "image"])
def test_tflite_int8_agrees_on_representative_set(kind, tflite_models, encoders):
    path, report = tflite_models[kind, "int8"]
    float_path, float_report = tflite_models[kind, "none"]
    encoder = tflite.TFLiteEncoder(path)
    data = tflite_models["calibration"][kind]
    outputs = encoder.encode(data)
    reference = encoders[kind].encode(data)
    assert set(np.unique(outputs["codes"])) <= {-1, 1} and outputs["codes"].dtype == np.int8
    np.testing.assert_array_equal(outputs["codes_packed"], pack(outputs["codes"]))
    agreement = tflite.bit_agreement(outputs["codes"], reference["codes"])
    assert agreement >= 0.99
    assert agreement == pytest.approx(report["bit_agreement"])
    # Really quantised: int8 weight tensors, a smaller file than float32.
    int8_tensors = [
        detail for detail in encoder.interpreter.get_tensor_details() if detail["dtype"] == np.int8
    ]
    assert len(int8_tensors) >= 3
    assert report["size_bytes"] < float_report["size_bytes"]
    if kind == "autoencoder":  # Weights dominate the file: about a quarter of float32.
        assert report["size_bytes"] < 0.4 * float_report["size_bytes"]
    assert "QUANTIZE" in encoder.op_names()


def test_tflite_float16_and_image_directory_calibration(artifacts, tflite_models, tmp_path):
    report = tflite.export_tflite(artifacts["image"], str(tmp_path / "f16.tflite"), "float16")
    assert report["bit_agreement"] >= 0.99
    assert report["size_bytes"] < tflite_models["image", "none"][1]["size_bytes"]
    report = tflite.export_tflite(
        artifacts["image"], str(tmp_path / "int8.tflite"), "int8", tflite_models["image_dir"]
    )
    assert report["bit_agreement"] >= 0.99
    assert "40 examples" in report["checked_on"]


def test_tflite_checks_outputs_not_exit_code(artifacts, tmp_path, monkeypatch):
    # A conversion that "succeeds" but carries other weights must be caught, and write nothing.
    config = {"bits": 12, "model_type": "autoencoder", "hash_layer": "bihalf", "input_shape": [784]}
    other_run = write_run(str(tmp_path / "other"), autoencoder_encoder(seed=99), config)
    other = export_run(other_run, str(tmp_path / "models"), "other", 1)
    real_convert = tflite.convert
    monkeypatch.setattr(tflite, "convert", lambda path, *args: real_convert(other, *args))
    out = str(tmp_path / "wrong.tflite")
    with pytest.raises(tflite.AgreementError, match="Nothing was written"):
        tflite.export_tflite(artifacts["autoencoder"], out, "none")
    assert not os.path.exists(out) and not os.path.exists(out + ".json")


def test_tflite_errors_and_cli(artifacts, tmp_path, capsys):
    encoder = tflite.TFLiteEncoder(str(artifacts["root"] / "image_none.tflite"))
    with pytest.raises(ValueError, match="batch axis"):
        encoder.encode(inputs_for("image", 1)[0])
    with pytest.raises(ValueError, match="floating-point"):
        encoder.encode(inputs_for("image", 1).astype(np.uint8))
    with pytest.raises(ValueError, match="representative_data"):
        tflite.convert(artifacts["autoencoder"], "int8")
    with pytest.raises(SystemExit):
        tflite.main(
            [
                "--saved_model",
                artifacts["autoencoder"],
                "--out",
                str(tmp_path / "a.tflite"),
                "--quantize",
                "int8",
            ]
        )
    assert "representative_data" in capsys.readouterr().err
    np.save(tmp_path / "wrong.npy", np.zeros((4, 10), np.float32))
    with pytest.raises(ValueError, match="Expected inputs of shape"):
        tflite.export_tflite(
            artifacts["autoencoder"],
            str(tmp_path / "b.tflite"),
            "int8",
            str(tmp_path / "wrong.npy"),
        )
    out = str(tmp_path / "c.tflite")
    assert tflite.main(["--saved_model", artifacts["autoencoder"], "--out", out]) == 0
    assert "bit agreement 100.0000%" in capsys.readouterr().out
    assert os.path.isfile(out)


def _weight_dtypes(content: bytes) -> list[str]:
    """The dtype of the weight tensor of every weighted op, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    dtypes = {detail["index"]: detail["dtype"] for detail in interpreter.get_tensor_details()}
    return [
        np.dtype(dtypes[op["inputs"][1]]).name
        for op in interpreter._get_ops_details()
        if op["op_name"] in tflite.WEIGHTED_OPS
    ]


def test_tflite_int8_selective_keeps_the_leading_layers_in_float(artifacts, tflite_models):
    """quantize_selective(n): the first n weighted layers keep float32 weights, the others are
    int8; export_tflite stops at the fewest float layers that reach the agreement."""
    data = tflite_models["calibration"]["image"][:64]
    calibrated = tflite.calibrate(artifacts["image"], data)
    weighted = tflite.count_weighted_layers(calibrated)
    assert weighted >= 3
    for float_layers in (0, 1, 2, weighted):
        dtypes = _weight_dtypes(tflite.quantize_selective(calibrated, float_layers))
        assert dtypes == ["float32"] * float_layers + ["int8"] * (weighted - float_layers)
    with pytest.raises(ValueError, match="float_layers"):
        tflite.quantize_selective(calibrated, -1)

    reference = SavedModelEncoder(artifacts["image"]).encode(data)["codes"]
    # A bar that int8 cannot clear: every step is tried, the refusal lists them, nothing written.
    out = artifacts["root"] / "selective.tflite"
    with pytest.raises(tflite.AgreementError, match="Leading float layers tried") as error:
        tflite.export_tflite(
            artifacts["image"], str(out), "int8_selective", data, min_agreement=1.01
        )
    assert "0 -> " in str(error.value) and not out.exists()
    # The search stops at the first step that reaches the bar.
    _, full = tflite.select_float_layers(artifacts["image"], data, reference, 1.01)
    tried = dict(full["tried"])
    bar = max(tried.values())
    report = tflite.export_tflite(
        artifacts["image"], str(out), "int8_selective", data, min_agreement=bar
    )
    first = min(n for n, agreement in tried.items() if agreement >= bar)
    assert report["float_layers"] == first and report["weighted_layers"] == weighted
    assert report["bit_agreement"] >= bar and out.exists()
    assert [n for n, _ in report["selection"]] == [n for n in sorted(tried) if n <= first]
    encoder = tflite.TFLiteEncoder(str(out))
    codes = encoder.encode(data)["codes"]
    assert tflite.bit_agreement(codes, reference) == pytest.approx(report["bit_agreement"])
    assert _weight_dtypes(out.read_bytes())[first:] == ["int8"] * (weighted - first)
    # A fixed number of float layers skips the search.
    report = tflite.export_tflite(
        artifacts["image"], str(out), "int8_selective", data, min_agreement=0.0, float_layers=2
    )
    assert report["float_layers"] == 2 and len(report["selection"]) == 1
    assert _weight_dtypes(out.read_bytes())[:3] == ["float32", "float32", "int8"]


def test_int8_selective_search_without_weighted_layers_tries_plain_int8(
    artifacts, tflite_models, monkeypatch
):
    """No weighted layer to keep in float (counted 0): one try with 0 float layers, not an
    IndexError from an empty search."""
    data = tflite_models["calibration"]["image"][:16]
    reference = SavedModelEncoder(artifacts["image"]).encode(data)["codes"]
    monkeypatch.setattr(tflite, "count_weighted_layers", lambda content: 0)
    content, report = tflite.select_float_layers(artifacts["image"], data, reference, 0.0)
    assert report["float_layers"] == 0 and report["weighted_layers"] == 0
    assert [n for n, _ in report["tried"]] == [0] and content


def test_tflite_int8_refusal_points_to_int8_selective(artifacts, tflite_models, capsys):
    data = tflite_models["calibration"]["image"][:32]
    out = str(artifacts["root"] / "refused.tflite")
    with pytest.raises(tflite.AgreementError, match="--quantize int8_selective"):
        tflite.export_tflite(artifacts["image"], out, "int8", data, min_agreement=1.01)
    with pytest.raises(ValueError, match="representative_data"):
        tflite.export_tflite(artifacts["image"], out, "int8_selective")
    with pytest.raises(SystemExit) as exit_info:  # --float_layers belongs to int8_selective.
        tflite.main(["--saved_model", artifacts["image"], "--out", out, "--float_layers", "2"])
    assert exit_info.value.code == 2 and "int8_selective" in capsys.readouterr().err


# Encode CLI ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(artifacts):
    folder = artifacts["root"] / "photos"
    (folder / "cats").mkdir(parents=True)
    (folder / "dogs").mkdir()
    images = random_images(8, size=(35, 29), seed=31)
    names = [
        "cats/a.png",
        "cats/b.jpg",
        "dogs/c.png",
        "dogs/d.bmp",
        "e.png",
        "f.jpeg",
        "g.gif",
        "h.webp",
    ]
    formats = {
        "png": "PNG",
        "jpg": "JPEG",
        "jpeg": "JPEG",
        "bmp": "BMP",
        "gif": "GIF",
        "webp": "WEBP",
    }
    for name, image in zip(names, images, strict=True):
        (folder / name).write_bytes(encode_image(image, formats[name.rsplit(".", 1)[1]]))
    (folder / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image")
    # WebP decodes when sent as bytes, but directories are walked for the extensions training
    # uses (tf_bihalf.data.image_files.IMAGE_EXTENSIONS), which leave it out.
    return folder, sorted(name for name in names if not name.endswith(".webp"))


def test_encode_cli_on_image_folder(artifacts, encoders, image_folder, tmp_path, capsys):
    folder, names = image_folder
    out = str(tmp_path / "codes.npz")
    argv = [
        "--saved_model",
        artifacts["image"],
        "--images",
        str(folder),
        "--out",
        out,
        "--batch_size",
        "3",
    ]
    assert encode_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "skipped\tdogs/broken.jpg" in printed
    with np.load(out, allow_pickle=False) as saved:
        assert saved["ids"].dtype.kind == "U"
        assert list(saved["ids"]) == names
        assert list(saved["skipped"]) == ["dogs/broken.jpg"]
        reason = str(saved["skipped_reasons"][0])
        assert "decode" in reason and "JPEG" in reason and "Graph execution" not in reason
        contents = [(folder / name).read_bytes() for name in names]
        expected = encoders["image"].encode_images(contents)
        np.testing.assert_array_equal(saved["codes"], expected["codes"])
        np.testing.assert_array_equal(saved["codes_packed"], expected["codes_packed"])
        assert saved["codes"].dtype == np.int8 and saved["codes_packed"].dtype == np.uint8


def test_encode_cli_list_file_and_inputs(artifacts, encoders, image_folder, tmp_path):
    folder, names = image_folder
    list_file = folder / "list.txt"
    list_file.write_text("cats/a.png 1 0\n\ndogs/c.png 0 1\nmissing.png 0 0\n")
    out = str(tmp_path / "list.npz")
    assert (
        encode_cli.main(
            ["--saved_model", artifacts["image"], "--list", str(list_file), "--out", out]
        )
        == 0
    )
    with np.load(out) as saved:
        assert list(saved["ids"]) == ["cats/a.png", "dogs/c.png"]
        assert list(saved["skipped"]) == ["missing.png"]
    inputs = inputs_for("autoencoder", 5)
    np.save(tmp_path / "x.npy", inputs)
    out = str(tmp_path / "inputs.npz")
    assert (
        encode_cli.main(
            [
                "--saved_model",
                artifacts["autoencoder"],
                "--inputs",
                str(tmp_path / "x.npy"),
                "--out",
                out,
            ]
        )
        == 0
    )
    with np.load(out) as saved:
        np.testing.assert_array_equal(
            saved["codes"], encoders["autoencoder"].encode(inputs)["codes"]
        )
        assert list(saved["ids"]) == ["0", "1", "2", "3", "4"]
    with pytest.raises(SystemExit):  # The autoencoder takes no images.
        encode_cli.main(
            ["--saved_model", artifacts["autoencoder"], "--images", str(folder), "--out", out]
        )


def _query_matches_brute_force(saved_model, folder, name, index, codes_file, k, capsys):
    """Queries ``index`` with the image ``folder/name`` through the CLI and checks the printed
    table against brute-force Hamming distances ``(K - q.d) / 2`` over the codes the CLI saved
    in ``codes_file`` (ties by id); returns the expected ``(distance, id)`` rows."""
    query = str(folder / name)
    argv = ["--saved_model", saved_model, "--query", query, "--index", index, "-k", str(k)]
    assert encode_cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "query\trank\tdistance\tid"
    rows = [line.split("\t") for line in lines[1:]]
    assert [row[:2] for row in rows] == [[query, str(rank)] for rank in range(1, k + 1)]
    with np.load(codes_file) as saved:
        codes, ids = saved["codes"].astype(int), list(saved["ids"])
    distances = (codes.shape[1] - codes @ codes[ids.index(name)]) // 2
    expected = sorted(zip(distances.tolist(), ids, strict=True))[:k]
    assert [(int(row[2]), row[3]) for row in rows] == expected
    return expected


def test_encode_cli_index_and_query(artifacts, image_folder, tmp_path, capsys):
    from tf_bihalf.search import HammingIndex

    folder, names = image_folder
    index_dir = str(tmp_path / "index")
    out = str(tmp_path / "db.npz")
    argv = [
        "--saved_model",
        artifacts["image"],
        "--images",
        str(folder),
        "--out",
        out,
        "--index_out",
        index_dir,
    ]
    assert encode_cli.main(argv) == 0
    with pytest.raises(SystemExit):  # Existing outputs are kept without --overwrite.
        encode_cli.main(argv)
    assert "--overwrite" in capsys.readouterr().err
    assert encode_cli.main(argv + ["--overwrite"]) == 0
    index = HammingIndex.load(index_dir)
    assert index.bits == IMAGE_BITS and sorted(index.ids) == names
    capsys.readouterr()
    expected = _query_matches_brute_force(
        artifacts["image"], folder, "dogs/c.png", index_dir, out, 3, capsys
    )
    assert (0, "dogs/c.png") in expected
    with pytest.raises(SystemExit):  # An index of other codes: 12-bit autoencoder encoder.
        np.save(tmp_path / "x.npy", inputs_for("autoencoder", 2))
        encode_cli.main(
            [
                "--saved_model",
                artifacts["autoencoder"],
                "--inputs",
                str(tmp_path / "x.npy"),
                "--index",
                index_dir,
            ]
        )
    assert "16-bit codes but this encoder makes 12-bit" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["sharded"])
def test_encode_cli_queries_sharded_and_milvus_indexes(
    artifacts, image_folder, tmp_path, capsys, backend
):
    """--query --index opens the index with stores.open_index: a sharded directory or a Milvus
    Lite file written by --index_out --backend answers like the brute-force reference."""
    folder, names = image_folder
    index_out = str(tmp_path / ("index.db" if backend == "milvus" else "shards"))
    out = str(tmp_path / "db.npz")
    argv = ["--saved_model", artifacts["image"], "--images", str(folder), "--out", out]
    assert encode_cli.main(argv + ["--index_out", index_out, "--backend", backend]) == 0
    capsys.readouterr()
    _query_matches_brute_force(artifacts["image"], folder, "cats/a.png", index_out, out, 4, capsys)


def test_encode_cli_list_file_comments_and_windows_paths(artifacts, image_folder, tmp_path):
    """--list goes through tf_bihalf.data.list_files.read_paths: comments are skipped and
    backslash paths resolve; a list that names no image is one clear error."""
    folder, _ = image_folder
    list_file = folder / "windows.txt"
    list_file.write_text("# made on Windows\ncats\\a.png 1\ndogs/c.png\n")
    out = str(tmp_path / "windows.npz")
    argv = ["--saved_model", artifacts["image"], "--list", str(list_file), "--out", out]
    assert encode_cli.main(argv) == 0
    with np.load(out) as saved:
        assert list(saved["ids"]) == ["cats\\a.png", "dogs/c.png"]
        assert len(saved["skipped"]) == 0
    list_file.write_text("# nothing here\n\n")
    with pytest.raises(SystemExit) as exit_info:
        encode_cli.main(argv + ["--overwrite"])
    assert exit_info.value.code == 2
