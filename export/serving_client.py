"""Client for an encoder served by TF Serving: REST and gRPC requests in, numpy codes out.

Commands:

    python -m export.serving_client --url http://localhost:8501 --model_name NAME \\
        --images a.jpg b.png
    python -m export.serving_client --grpc localhost:8500 --model_name NAME --inputs x.npy

``--images`` (files or directories) goes to the ``image_bytes`` signature, ``--inputs`` (a float
``.npy`` of raw model inputs) to ``serving_default``; ``--signature`` overrides. The command
prints one line per item, ``<id>\\t<packed code as hex>``, and ``--out codes.npz`` saves
``codes`` (int8 ±1), ``codes_packed`` (uint8) and ``ids``.

REST (TF Serving's ``POST /v1/models/NAME[/versions/N]:predict``): the row format sends
``{"signature_name": ..., "instances": [{"image_bytes": {"b64": "..."}}, ...]}``, the columnar
format ``{"signature_name": ..., "inputs": {"image_bytes": [{"b64": "..."}, ...]}}``. Binary
strings travel base64-encoded as ``{"b64": ...}`` objects; the bytes input is named
``image_bytes`` (TF Serving's and Cloud AI Platform's convention: a ``_bytes`` suffix marks
binary inputs). Answers are ``{"predictions": [{"codes": [...], "codes_packed": [...]}, ...]}``
(row) or ``{"outputs": {"codes": [[...]], "codes_packed": [[...]]}}`` (columnar).

gRPC: a ``tensorflow_serving.apis.predict_pb2.PredictRequest`` with the inputs as
``TensorProto``s (``tf.make_tensor_proto``), sent to ``PredictionService/Predict``.

Example (Python):

>>> out = rest_predict("http://localhost:8501", "bihalf64", images=[open("a.jpg", "rb").read()])
...                                                                   # doctest: +SKIP
>>> out["codes"].shape                                                # doctest: +SKIP
(1, 64)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np

from export.preprocessing import list_images, read_image_file
from export.saved_model import (
    BYTES_INPUT_KEY,
    BYTES_SIGNATURE,
    FLOAT_INPUT_KEY,
    FLOAT_SIGNATURE,
    OUTPUT_KEYS,
)
from export.validation import check_image_bytes

FORMATS = ("row", "columnar")
_MAX_GRPC_MESSAGE = 256 * 1024 * 1024


class ServingError(RuntimeError):
    """The server could not be reached or answered with an error."""


def _request_parts(inputs, images, signature_name, input_key):
    if (inputs is None) == (images is None):
        raise ValueError("Pass exactly one of inputs (float array) or images (encoded bytes).")
    if images is not None:
        values = check_image_bytes(images)
        return values, signature_name or BYTES_SIGNATURE, input_key or BYTES_INPUT_KEY
    array = np.asarray(inputs)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"inputs must be floating-point raw model inputs; got dtype {array.dtype}."
        )
    if array.ndim < 2:
        raise ValueError(f"inputs must have a batch axis; got shape {array.shape}.")
    return array.astype(np.float32), signature_name or FLOAT_SIGNATURE, input_key or FLOAT_INPUT_KEY


def rest_request_body(
    inputs=None,
    images=None,
    signature_name: str | None = None,
    input_key: str | None = None,
    request_format: str = "row",
) -> dict:
    """The JSON body of a TF Serving REST predict request.

    Args:
        inputs: float array ``(N,) + input_shape`` for ``serving_default``.
        images: list of encoded image bytes for ``image_bytes`` (sent as ``{"b64": ...}``).
        signature_name: defaults to ``image_bytes`` for images, ``serving_default`` otherwise.
        input_key: the signature's input name (``image_bytes`` / ``inputs`` by default).
        request_format: ``"row"`` (``instances``) or ``"columnar"`` (``inputs``).

    Example:

    >>> rest_request_body(images=[b"\\x89PNG"])
    {'signature_name': 'image_bytes', 'instances': [{'image_bytes': {'b64': 'iVBORw=='}}]}
    """
    if request_format not in FORMATS:
        raise ValueError(f"request_format must be one of {FORMATS}; got {request_format!r}.")
    values, signature_name, input_key = _request_parts(inputs, images, signature_name, input_key)
    if images is not None:
        items = [{"b64": base64.b64encode(value).decode("ascii")} for value in values]
    else:
        items = values.tolist()  # float32 -> Python float is exact, and so is the way back.
    body = {"signature_name": signature_name}
    if request_format == "row":
        body["instances"] = [{input_key: item} for item in items]
    else:
        body["inputs"] = {input_key: items}
    return body


def parse_rest_response(body, output_keys=OUTPUT_KEYS) -> dict[str, np.ndarray]:
    """A TF Serving REST predict answer (dict or JSON text) -> ``{"codes", "codes_packed"}``.

    Row answers (``predictions``) and columnar answers (``outputs``) are both accepted; an
    ``error`` answer raises ``ServingError``.
    """
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as error:
            raise ServingError(f"The server's answer is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ServingError(f"Unexpected answer of type {type(body).__name__}.")
    if "error" in body:
        raise ServingError(f"The server answered with an error: {body['error']}")
    if "predictions" in body:
        predictions = body["predictions"]
        if not isinstance(predictions, list) or not all(
            isinstance(item, dict) for item in predictions
        ):
            raise ServingError(
                f"Expected predictions as a list of objects with keys {list(output_keys)}."
            )
        columns = {}
        for key in output_keys:
            try:
                columns[key] = [item[key] for item in predictions]
            except KeyError:
                raise ServingError(
                    f"A prediction lacks output {key!r}; it has {sorted(predictions[0])}."
                ) from None
    elif "outputs" in body:
        outputs = body["outputs"]
        missing = [
            key for key in output_keys if not isinstance(outputs, dict) or key not in outputs
        ]
        if missing:
            raise ServingError(f"The answer's outputs lack {missing}.")
        columns = {key: outputs[key] for key in output_keys}
    else:
        raise ServingError(f"The answer has neither predictions nor outputs: {sorted(body)}.")
    return _to_codes(columns)


def _to_codes(columns: dict) -> dict[str, np.ndarray]:
    result = {}
    if "codes" in columns:
        codes = np.asarray(columns["codes"])
        if codes.size and (codes.ndim != 2 or not np.all(np.isin(codes, (-1, 1)))):
            raise ServingError("codes must be a (N, K) array of ±1.")
        result["codes"] = codes.astype(np.int8).reshape(len(codes), -1)
    if "codes_packed" in columns:
        packed = np.asarray(columns["codes_packed"])
        if packed.size and (packed.ndim != 2 or packed.min() < 0 or packed.max() > 255):
            raise ServingError("codes_packed must be a (N, W) array of bytes 0..255.")
        result["codes_packed"] = packed.astype(np.uint8).reshape(len(packed), -1)
    return result


def rest_predict_url(base_url: str, model_name: str, version: int | None = None) -> str:
    """``{base_url}/v1/models/{model_name}[/versions/{version}]:predict``."""
    base_url = base_url.rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"The REST URL must start with http:// or https://; got {base_url!r}.")
    path = f"{base_url}/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return path + ":predict"


def _http(url: str, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("error", text)
        except (json.JSONDecodeError, AttributeError):
            message = text
        raise ServingError(f"HTTP {error.code} from {url}: {message}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ServingError(f"Cannot reach {url}: {reason}") from None


def rest_predict(
    base_url: str,
    model_name: str,
    inputs=None,
    images=None,
    signature_name: str | None = None,
    version: int | None = None,
    input_key: str | None = None,
    request_format: str = "row",
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:
    """Sends one REST predict request and returns ``{"codes", "codes_packed"}`` as numpy."""
    body = rest_request_body(inputs, images, signature_name, input_key, request_format)
    return parse_rest_response(
        _http(rest_predict_url(base_url, model_name, version), body, timeout)
    )


def model_status(base_url: str, model_name: str, timeout: float = 5.0) -> dict:
    """TF Serving's ``GET /v1/models/NAME`` answer (the versions and their states)."""
    return _http(f"{base_url.rstrip('/')}/v1/models/{model_name}", None, timeout)


def wait_until_available(base_url: str, model_name: str, timeout: float = 60.0) -> dict:
    """Polls the model status until a version is ``AVAILABLE``; ``ServingError`` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status = model_status(base_url, model_name)
            states = [item.get("state") for item in status.get("model_version_status", [])]
            if "AVAILABLE" in states:
                return status
            last = status
        except ServingError as error:
            last = str(error)
        time.sleep(0.25)
    raise ServingError(f"{model_name!r} not available at {base_url} after {timeout:.0f} s: {last}")


def grpc_request(
    model_name: str,
    inputs=None,
    images=None,
    signature_name: str | None = None,
    version: int | None = None,
    input_key: str | None = None,
):
    """A ``PredictRequest`` protocol buffer for TF Serving's gRPC ``Predict``."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    values, signature_name, input_key = _request_parts(inputs, images, signature_name, input_key)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    if images is not None:
        tensor = tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)])
    else:
        tensor = tf.make_tensor_proto(values, dtype=tf.float32)
    request.inputs[input_key].CopyFrom(tensor)
    return request


def parse_grpc_response(response, output_keys=OUTPUT_KEYS) -> dict[str, np.ndarray]:
    """A ``PredictResponse`` -> ``{"codes": int8, "codes_packed": uint8}``."""
    import tensorflow as tf

    missing = [key for key in output_keys if key not in response.outputs]
    if missing:
        raise ServingError(
            f"The response lacks outputs {missing}; it has {sorted(response.outputs)}."
        )
    return _to_codes({key: tf.make_ndarray(response.outputs[key]) for key in output_keys})


def grpc_predict(
    target: str,
    model_name: str,
    inputs=None,
    images=None,
    signature_name: str | None = None,
    version: int | None = None,
    input_key: str | None = None,
    timeout: float = 30.0,
) -> dict[str, np.ndarray]:
    """Sends one gRPC ``Predict`` to ``target`` (``host:port``) and returns the codes."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = grpc_request(model_name, inputs, images, signature_name, version, input_key)
    options = [
        ("grpc.max_send_message_length", _MAX_GRPC_MESSAGE),
        ("grpc.max_receive_message_length", _MAX_GRPC_MESSAGE),
    ]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise ServingError(
                f"gRPC Predict to {target} failed ({error.code().name}): {error.details()}"
            ) from None
    return parse_grpc_response(response)


def _collect_images(paths: list[str]) -> tuple[list[str], list[bytes]]:
    ids, contents = [], []
    for path in paths:
        files = (
            [os.path.join(path, name) for name in list_images(path)]
            if os.path.isdir(path)
            else [path]
        )
        for file_path in files:
            if not os.path.exists(file_path):
                raise FileNotFoundError(f"Image {file_path!r} does not exist.")
            contents.append(read_image_file(file_path))  # Regular files only, size capped.
            ids.append(file_path)
    if not contents:
        raise ValueError(f"No images found in {paths}.")
    return ids, contents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.serving_client",
        description="Encode images or inputs with an encoder served by TF Serving.",
    )
    server = parser.add_mutually_exclusive_group(required=True)
    server.add_argument("--url", help="REST base URL, e.g. http://localhost:8501")
    server.add_argument("--grpc", help="gRPC target host:port, e.g. localhost:8500")
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--version", type=int, default=None, help="default: the latest")
    parser.add_argument("--signature", default=None, help="default: by input kind")
    parser.add_argument("--input_key", default=None, help="the signature's input name")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--images", nargs="+", help="image files or directories")
    data.add_argument("--inputs", help="float .npy of raw model inputs (N, ...)")
    parser.add_argument("--format", default="row", choices=FORMATS, help="REST request format")
    parser.add_argument("--batch_size", type=int, default=32, help="items per request")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--out", default=None, help="save codes, codes_packed and ids (.npz)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be positive")
    try:
        if args.images:
            ids, items = _collect_images(args.images)
            kind = "images"
        else:
            items = np.load(args.inputs, allow_pickle=False)
            ids = [str(index) for index in range(len(items))]
            kind = "inputs"
        codes, packed = [], []
        for start in range(0, len(items), args.batch_size):
            chunk = {kind: items[start : start + args.batch_size]}
            if args.url:
                result = rest_predict(
                    args.url,
                    args.model_name,
                    signature_name=args.signature,
                    version=args.version,
                    input_key=args.input_key,
                    request_format=args.format,
                    timeout=args.timeout,
                    **chunk,
                )
            else:
                result = grpc_predict(
                    args.grpc,
                    args.model_name,
                    signature_name=args.signature,
                    version=args.version,
                    input_key=args.input_key,
                    timeout=args.timeout,
                    **chunk,
                )
            codes.append(result["codes"])
            packed.append(result["codes_packed"])
    except (FileNotFoundError, ValueError, ServingError) as error:
        parser.exit(2, f"error: {error}\n")
    codes, packed = np.concatenate(codes), np.concatenate(packed)
    for item_id, row in zip(ids, packed, strict=True):
        print(f"{item_id}\t{row.tobytes().hex()}")
    if args.out:
        np.savez(args.out, codes=codes, codes_packed=packed, ids=np.array(ids, dtype=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
