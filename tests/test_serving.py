"""TF Serving: request and response formats of export.serving_client, checked end to end.

``tensorflow_model_server`` cannot be installed on the test machines, so the formats are checked
against the exported SavedModel run in-process behind a small emulation of TF Serving's two
front ends, written here from its API documentation: the REST predict API (JSON decoding of
``instances``/``inputs``, ``{"b64": ...}`` strings, row/columnar answers, ``{"error": ...}``
with HTTP 400/404) served over real HTTP, and the gRPC ``PredictionService/Predict`` over a real
gRPC channel. A final test runs the real server whenever its binary is on PATH.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from export import serving_client
from export.saved_model import SavedModelEncoder, export_run
from export.serving_client import ServingError
from tests.test_export_support import (
    IMAGE_SIZE,
    encode_image,
    make_autoencoder_run,
    make_image_run,
    random_images,
)

MODEL = "hasher"
AUTOENCODER_MODEL = "digits"


# An emulation of TF Serving's predict front ends ------------------------------------------------


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _json_to_array(value, spec: tf.TensorSpec) -> np.ndarray:
    """TF Serving's JSON -> tensor rule: nested lists, b64 objects only for DT_STRING."""

    def convert(item):
        if isinstance(item, list):
            return [convert(element) for element in item]
        if _is_b64(item):
            if spec.dtype != tf.string:
                raise RequestError(f"b64 value given for a {spec.dtype.name} input")
            return base64.b64decode(item["b64"])
        if isinstance(item, dict):
            raise RequestError("unexpected object in tensor value")
        if spec.dtype == tf.string and not isinstance(item, str):
            raise RequestError("expected a string value")
        return item

    converted = convert(value)
    try:
        dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
        array = np.array(converted, dtype=dtype)
    except (ValueError, TypeError) as error:
        raise RequestError(f"cannot convert value to {spec.dtype.name}: {error}") from None
    return array  # Shapes are not checked here (TF Serving does not); the graph does.


def decode_rest_request(body, signature) -> tuple[dict[str, np.ndarray], str]:
    """Returns the input arrays and the format ("row" or "columnar") of a predict request."""
    specs = signature.structured_input_signature[1]
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    present = [key for key in ("instances", "inputs") if key in body]
    if len(present) != 1:
        raise RequestError("expecting exactly one of 'instances' or 'inputs'")
    if present[0] == "instances":
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError("'instances' must be a non-empty list")
        if all(isinstance(item, dict) and not _is_b64(item) for item in instances):
            for item in instances:
                if set(item) != set(specs):
                    raise RequestError(f"instance keys {sorted(item)} != inputs {sorted(specs)}")
            columns = {name: [item[name] for item in instances] for name in specs}
        else:
            if len(specs) != 1:
                raise RequestError("a plain list of instances needs a single-input signature")
            columns = {next(iter(specs)): instances}
        return {name: _json_to_array(value, specs[name]) for name, value in columns.items()}, "row"
    inputs = body["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        if set(inputs) != set(specs):
            raise RequestError(f"input keys {sorted(inputs)} != {sorted(specs)}")
        columns = inputs
    else:
        if len(specs) != 1:
            raise RequestError("unnamed inputs need a single-input signature")
        columns = {next(iter(specs)): inputs}
    return {name: _json_to_array(value, specs[name]) for name, value in columns.items()}, "columnar"


def encode_rest_response(outputs: dict[str, np.ndarray], request_format: str) -> dict:
    if request_format == "row":
        count = {len(value) for value in outputs.values()}
        if len(count) != 1:
            raise RequestError("outputs differ in batch size")
        return {
            "predictions": [
                {name: value[index].tolist() for name, value in outputs.items()}
                for index in range(count.pop())
            ]
        }
    return {"outputs": {name: value.tolist() for name, value in outputs.items()}}


class ServingEmulator:
    """Loads every numeric version under a model base path, as TF Serving does."""

    def __init__(self, model_name: str, model_base_path: str):
        self.model_name = model_name
        self.versions = {
            int(name): tf.saved_model.load(os.path.join(model_base_path, name))
            for name in os.listdir(model_base_path)
            if name.isdigit()
        }

    def signature(self, model_name: str, version: int | None, signature_name: str):
        if model_name != self.model_name:
            raise RequestError(f"Servable not found for request: Latest({model_name})", 404)
        version = max(self.versions) if version is None else version
        if version not in self.versions:
            raise RequestError(
                f"Servable not found for request: Specific({model_name}, {version})", 404
            )
        loaded = self.versions[version]
        if signature_name not in loaded.signatures:
            raise RequestError(f'Serving signature name: "{signature_name}" not found')
        return version, loaded.signatures[signature_name]

    def run(self, signature, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = signature(**{name: tf.constant(value) for name, value in arrays.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise RequestError(str(error).splitlines()[0]) from None
        return {name: value.numpy() for name, value in outputs.items()}

    def rest(self, path: str, body_text: bytes) -> tuple[int, dict]:
        match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:predict", path)
        if match is None:
            return 404, {"error": f"Malformed request: POST {path}"}
        try:
            try:
                body = json.loads(body_text)
            except json.JSONDecodeError as error:
                raise RequestError(f"JSON Parse error: {error}") from None
            version = None if match.group(2) is None else int(match.group(2))
            signature_name = body.get("signature_name", "serving_default")
            _, signature = self.signature(match.group(1), version, signature_name)
            arrays, request_format = decode_rest_request(body, signature)
            return 200, encode_rest_response(self.run(signature, arrays), request_format)
        except RequestError as error:
            return error.status, {"error": error.message}

    def status(self, path: str) -> tuple[int, dict]:
        if path != f"/v1/models/{self.model_name}":
            return 404, {"error": f"Could not find any versions of model {path}"}
        return 200, {
            "model_version_status": [
                {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK"}}
                for version in sorted(self.versions)
            ]
        }

    def grpc_predict(self, request, context):
        import grpc
        from tensorflow_serving.apis import predict_pb2

        try:
            version = (
                request.model_spec.version.value if request.model_spec.HasField("version") else None
            )
            signature_name = request.model_spec.signature_name or "serving_default"
            version, signature = self.signature(request.model_spec.name, version, signature_name)
            specs = signature.structured_input_signature[1]
            if set(request.inputs) != set(specs):
                raise RequestError(f"input keys {sorted(request.inputs)} != {sorted(specs)}")
            arrays = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            outputs = self.run(signature, arrays)
        except RequestError as error:
            code = (
                grpc.StatusCode.NOT_FOUND
                if error.status == 404
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            context.abort(code, error.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.signature_name = signature_name
        response.model_spec.version.value = version
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def start_http(emulator: ServingEmulator, port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict):
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", 0))
            self._answer(*emulator.rest(self.path, self.rfile.read(length)))

        def do_GET(self):  # noqa: N802
            self._answer(*emulator.status(self.path))

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_grpc(emulator: ServingEmulator, port: int = 0):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC method name)
            return emulator.grpc_predict(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


# Fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    image_run = make_image_run(str(root / "image_run"))
    autoencoder_run = make_autoencoder_run(str(root / "autoencoder_run"))
    out = str(root / "models")
    paths = {
        "image": export_run(image_run, out, MODEL, 2),
        "autoencoder": export_run(autoencoder_run, out, AUTOENCODER_MODEL, 1),
    }
    emulators = {
        "image": ServingEmulator(MODEL, os.path.join(out, MODEL)),
        "autoencoder": ServingEmulator(AUTOENCODER_MODEL, os.path.join(out, AUTOENCODER_MODEL)),
    }
    images = random_images(5, size=(30, 26), seed=41)
    data = {
        "root": root,
        "out": out,
        "paths": paths,
        "emulators": emulators,
        "encoders": {kind: SavedModelEncoder(path) for kind, path in paths.items()},
        "pngs": [encode_image(image) for image in images[:3]]
        + [encode_image(image, "JPEG") for image in images[3:]],
        "floats": random_images(4, size=IMAGE_SIZE, seed=42).astype(np.float32),
        "pixels": np.random.default_rng(43).uniform(0, 1, (3, 784)).astype(np.float32),
    }
    return data


@pytest.fixture(scope="module")
def http_server(served):
    server = start_http(served["emulators"]["image"])
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def grpc_target(served):
    server, port = start_grpc(served["emulators"]["image"])
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def assert_same_codes(result: dict, expected: dict) -> None:
    assert result["codes"].dtype == np.int8 and result["codes_packed"].dtype == np.uint8
    np.testing.assert_array_equal(result["codes"], expected["codes"])
    np.testing.assert_array_equal(result["codes_packed"], expected["codes_packed"])


# REST ------------------------------------------------------------------------------------------


def test_rest_request_bodies(served):
    pngs = served["pngs"]
    row = serving_client.rest_request_body(images=pngs)
    assert row["signature_name"] == "image_bytes"
    assert [set(item) for item in row["instances"]] == [{"image_bytes"}] * len(pngs)
    assert [base64.b64decode(item["image_bytes"]["b64"]) for item in row["instances"]] == pngs
    columnar = serving_client.rest_request_body(images=pngs, request_format="columnar")
    assert set(columnar) == {"signature_name", "inputs"}
    assert [base64.b64decode(item["b64"]) for item in columnar["inputs"]["image_bytes"]] == pngs
    floats = served["floats"]
    body = json.loads(json.dumps(serving_client.rest_request_body(inputs=floats)))
    assert body["signature_name"] == "serving_default"
    sent = np.array([item["inputs"] for item in body["instances"]], np.float32)
    np.testing.assert_array_equal(sent, floats)  # float32 survives the JSON round trip exactly.
    with pytest.raises(ValueError, match="exactly one"):
        serving_client.rest_request_body()
    with pytest.raises(ValueError, match="floating-point"):
        serving_client.rest_request_body(inputs=floats.astype(np.uint8))
    with pytest.raises(ValueError, match="not the path"):
        serving_client.rest_request_body(images=["a.jpg"])
    with pytest.raises(ValueError, match="request_format"):
        serving_client.rest_request_body(images=pngs, request_format="csv")


@pytest.mark.parametrize("request_format", ["row", "columnar"])
@pytest.mark.parametrize("kind", ["bytes", "floats", "pixels"])
def test_rest_round_trip_in_process(served, kind, request_format):
    emulator = served["emulators"]["autoencoder" if kind == "pixels" else "image"]
    encoder = served["encoders"]["autoencoder" if kind == "pixels" else "image"]
    if kind == "bytes":
        body = serving_client.rest_request_body(
            images=served["pngs"], request_format=request_format
        )
        expected = encoder.encode_images(served["pngs"])
    else:
        inputs = served[kind]
        body = serving_client.rest_request_body(inputs=inputs, request_format=request_format)
        expected = encoder.encode(inputs)
    name = emulator.model_name
    status, answer = emulator.rest(f"/v1/models/{name}:predict", json.dumps(body).encode())
    assert status == 200, answer
    assert set(answer) == {"predictions" if request_format == "row" else "outputs"}
    assert_same_codes(serving_client.parse_rest_response(json.dumps(answer)), expected)


def test_emulator_accepts_plain_instances(served):
    # TF Serving also takes unnamed instances for a single-input signature; same answer.
    emulator, pngs = served["emulators"]["image"], served["pngs"]
    plain = {
        "signature_name": "image_bytes",
        "instances": [{"b64": base64.b64encode(data).decode()} for data in pngs],
    }
    status, answer = emulator.rest(f"/v1/models/{MODEL}:predict", json.dumps(plain).encode())
    assert status == 200
    expected = served["encoders"]["image"].encode_images(pngs)
    assert_same_codes(serving_client.parse_rest_response(answer), expected)


def test_parse_rest_response_errors():
    with pytest.raises(ServingError, match="Servable not found"):
        serving_client.parse_rest_response({"error": "Servable not found for request"})
    with pytest.raises(ServingError, match="lacks output 'codes_packed'"):
        serving_client.parse_rest_response({"predictions": [{"codes": [1, -1]}]})
    with pytest.raises(ServingError, match="±1"):
        serving_client.parse_rest_response({"outputs": {"codes": [[0, 1]], "codes_packed": [[64]]}})
    with pytest.raises(ServingError, match="not JSON"):
        serving_client.parse_rest_response("<html>")
    result = serving_client.parse_rest_response(
        {"outputs": {"codes": [[1, -1, 1]], "codes_packed": [[160]]}}
    )
    np.testing.assert_array_equal(result["codes"], [[1, -1, 1]])
    np.testing.assert_array_equal(result["codes_packed"], [[160]])


def test_rest_over_http(served, http_server):
    encoder = served["encoders"]["image"]
    status = serving_client.wait_until_available(http_server, MODEL, timeout=10)
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    result = serving_client.rest_predict(http_server, MODEL, images=served["pngs"])
    assert_same_codes(result, encoder.encode_images(served["pngs"]))
    result = serving_client.rest_predict(
        http_server, MODEL, inputs=served["floats"], version=2, request_format="columnar"
    )
    assert_same_codes(result, encoder.encode(served["floats"]))
    assert serving_client.rest_predict_url(http_server, MODEL, 2).endswith(
        f"/v1/models/{MODEL}/versions/2:predict"
    )
    with pytest.raises(ServingError, match="HTTP 400"):
        serving_client.rest_predict(http_server, MODEL, inputs=served["floats"][:, :5])
    with pytest.raises(ServingError, match="HTTP 404"):
        serving_client.rest_predict(http_server, MODEL, images=served["pngs"], version=9)
    with pytest.raises(ServingError, match="Cannot reach"):
        serving_client.rest_predict(
            f"http://127.0.0.1:{_free_port()}", MODEL, images=served["pngs"]
        )


# gRPC ------------------------------------------------------------------------------------------


def test_grpc_request_protos(served):
    request = serving_client.grpc_request(MODEL, images=served["pngs"], version=2)
    assert request.model_spec.name == MODEL
    assert request.model_spec.signature_name == "image_bytes"
    assert request.model_spec.version.value == 2
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [dim.size for dim in tensor.tensor_shape.dim] == [len(served["pngs"])]
    assert list(tensor.string_val) == served["pngs"]
    request = serving_client.grpc_request(MODEL, inputs=served["floats"])
    assert request.model_spec.signature_name == "serving_default"
    assert not request.model_spec.HasField("version")
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["inputs"]), served["floats"])


def test_grpc_over_channel(served, grpc_target):
    encoder = served["encoders"]["image"]
    result = serving_client.grpc_predict(grpc_target, MODEL, images=served["pngs"])
    assert_same_codes(result, encoder.encode_images(served["pngs"]))
    result = serving_client.grpc_predict(grpc_target, MODEL, inputs=served["floats"], version=2)
    assert_same_codes(result, encoder.encode(served["floats"]))
    with pytest.raises(ServingError, match="INVALID_ARGUMENT"):
        serving_client.grpc_predict(grpc_target, MODEL, inputs=served["floats"][:, :5])
    with pytest.raises(ServingError, match="NOT_FOUND"):
        serving_client.grpc_predict(grpc_target, "unknown", images=served["pngs"])


# CLI -------------------------------------------------------------------------------------------


def test_serving_client_cli(served, http_server, grpc_target, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, data in enumerate(served["pngs"][:3]):
        (folder / f"{index}.png").write_bytes(data)
    out = str(tmp_path / "codes.npz")
    argv = [
        "--url",
        http_server,
        "--model_name",
        MODEL,
        "--images",
        str(folder),
        "--out",
        out,
        "--batch_size",
        "2",
    ]
    assert serving_client.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = served["encoders"]["image"].encode_images(served["pngs"][:3])
    assert [line.split("\t")[1] for line in lines] == [
        row.tobytes().hex() for row in expected["codes_packed"]
    ]
    with np.load(out, allow_pickle=False) as saved:
        assert_same_codes(dict(saved), expected)
        assert [os.path.basename(item) for item in saved["ids"]] == ["0.png", "1.png", "2.png"]
    np.save(tmp_path / "x.npy", served["floats"])
    argv = ["--grpc", grpc_target, "--model_name", MODEL, "--inputs", str(tmp_path / "x.npy")]
    assert serving_client.main(argv) == 0
    expected = served["encoders"]["image"].encode(served["floats"])
    hexes = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert hexes == [row.tobytes().hex() for row in expected["codes_packed"]]
    with pytest.raises(SystemExit):
        serving_client.main(["--url", http_server, "--model_name", "nope", "--images", str(folder)])
    assert "HTTP 404" in capsys.readouterr().err


# The real server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_real_tensorflow_model_server(served, tmp_path):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip(
            "tensorflow_model_server is not on PATH (no pip/apt package provides it here); "
            "the formats are checked against the in-process emulation above"
        )
    # TF Serving binds its TCP ports on 0.0.0.0 with no flag to change it (tensorflow/serving
    # #1969): gRPC goes over a Unix socket instead (--port=0 disables its TCP port); REST needs
    # TCP, on a free port, and is only ever called on 127.0.0.1.
    rest_port, socket_path = _free_port(), tmp_path / "grpc.sock"
    log_path = tmp_path / "model_server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "--port=0",
                f"--grpc_socket_path={socket_path}",
                f"--rest_api_port={rest_port}",
                f"--model_name={MODEL}",
                f"--model_base_path={os.path.abspath(os.path.join(served['out'], MODEL))}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{rest_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"tensorflow_model_server exited: {log_path.read_text()[-2000:]}")
            try:
                serving_client.wait_until_available(url, MODEL, timeout=2)
                break
            except ServingError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready in 90 s: {log_path.read_text()[-2000:]}")
        encoder = served["encoders"]["image"]
        expected_bytes = encoder.encode_images(served["pngs"])
        expected_floats = encoder.encode(served["floats"])
        for request_format in ("row", "columnar"):
            result = serving_client.rest_predict(
                url, MODEL, images=served["pngs"], request_format=request_format
            )
            assert_same_codes(result, expected_bytes)
            result = serving_client.rest_predict(
                url, MODEL, inputs=served["floats"], request_format=request_format, version=2
            )
            assert_same_codes(result, expected_floats)
        target = f"unix:{socket_path}"
        assert_same_codes(
            serving_client.grpc_predict(target, MODEL, images=served["pngs"]), expected_bytes
        )
        assert_same_codes(
            serving_client.grpc_predict(target, MODEL, inputs=served["floats"]), expected_floats
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
