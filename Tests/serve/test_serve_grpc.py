"""kiln-serve's gRPC inference.GRPCInferenceService against the real tritonclient.grpc, on 127.0.0.1."""
import json, os, signal, subprocess
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException
from test_serve import BIN, MODEL, bundle, reference, start_server  # noqa: F401
from test_serve_images import PHOTOS, fused  # noqa: F401


@pytest.fixture(scope="module")
def served(bundle):
    proc, port = start_server(bundle)
    yield proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def client(proc):
    return grpcclient.InferenceServerClient(f"127.0.0.1:{proc.grpc_port}")


def infer(c, x, model=MODEL, name="input_layer_5", datatype="FP32"):
    i = grpcclient.InferInput(name, list(x.shape), datatype)
    i.set_data_from_numpy(x)
    return c.infer(model, [i], outputs=[grpcclient.InferRequestedOutput("dense")]).as_numpy("dense")


def test_grpc_live_ready_metadata(served):
    c = client(served)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    meta = c.get_model_metadata(MODEL, as_json=True)
    assert meta["name"] == MODEL and meta["platform"] == "kiln"
    assert meta["inputs"] == [{"name": "input_layer_5", "datatype": "FP32", "shape": ["-1", "2048"]}]
    assert meta["outputs"][0]["name"] == "dense" and meta["outputs"][0]["shape"] == ["-1", "25"]
    server = c.get_server_metadata(as_json=True)
    assert server["name"] == "kiln-serve" and "classification" in server["extensions"]


def test_grpc_infer_equals_kiln_run(served, bundle, tmp_path):
    x = np.random.default_rng(21).standard_normal((6, 2048)).astype(np.float32)
    np.testing.assert_allclose(infer(client(served), x), reference(bundle, x, tmp_path), rtol=0, atol=1e-6)


def test_grpc_typed_contents_equal_kiln_run(served, bundle, tmp_path):
    """fp32_contents instead of raw_input_contents, through the generated stub."""
    import grpc
    x = np.random.default_rng(22).standard_normal((2, 2048)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed-1")
    tensor = request.inputs.add(name="input_layer_5", datatype="FP32", shape=[2, 2048])
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert response.id == "typed-1" and response.outputs[0].name == "dense" and list(response.outputs[0].shape) == [2, 25]
    y = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 25)
    np.testing.assert_allclose(y, reference(bundle, x, tmp_path), rtol=0, atol=1e-6)


def test_grpc_message_larger_than_grpc_default_4mib(served, bundle, tmp_path):
    x = np.random.default_rng(23).standard_normal((640, 2048)).astype(np.float32)  # 5.2 MB
    np.testing.assert_allclose(infer(client(served), x), reference(bundle, x, tmp_path), rtol=0, atol=1e-6)


def test_grpc_malformed_refused_while_serving(served):
    c = client(served)
    good_x = np.ones((1, 2048), np.float32)
    good = infer(c, good_x)
    cases = [
        (lambda: infer(c, good_x, name="nope"), "INVALID_ARGUMENT", "no input 'nope'"),
        (lambda: infer(c, np.ones((1, 2047), np.float32)), "INVALID_ARGUMENT", "shape"),
        (lambda: infer(c, np.ones((1, 2048), np.int64), datatype="INT64"), "INVALID_ARGUMENT", "FP32"),
        (lambda: infer(c, good_x, model="no-such-model"), "NOT_FOUND", "unknown model"),
        (lambda: c.infer(MODEL, [grpcclient.InferInput("input_layer_5", [1, 2048], "FP32")]), "INVALID_ARGUMENT", "data"),
        (lambda: c.infer(MODEL, [shorter_than_declared()]), "INVALID_ARGUMENT", "bytes"),
        (lambda: c.infer(MODEL, [one(good_x)], outputs=[grpcclient.InferRequestedOutput("nope")]), "INVALID_ARGUMENT", "no output"),
    ]
    for call, status, words in cases:
        with pytest.raises(InferenceServerException) as error:
            call()
        assert error.value.status() == f"StatusCode.{status}", (error.value.status(), error.value.message())
        assert words in error.value.message(), error.value.message()
        np.testing.assert_array_equal(infer(c, good_x), good)


def one(x):
    i = grpcclient.InferInput("input_layer_5", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def shorter_than_declared():
    """Shape [2, 2048] with the raw bytes of one row."""
    i = one(np.ones((1, 2048), np.float32))
    i.set_shape([2, 2048])
    return i


def test_grpc_request_too_large(bundle):
    """A message over --max-request-bytes is refused by the transport (grpc-swift resets the stream: the client
    sees CANCELLED), one under it is answered, and the server keeps serving."""
    proc, _ = start_server(bundle, "--max-request-bytes", "100000")
    try:
        c = client(proc)
        assert infer(c, np.ones((12, 2048), np.float32)).shape == (12, 25)  # 98 kB
        with pytest.raises(InferenceServerException) as error:
            infer(c, np.ones((16, 2048), np.float32))  # 131 kB
        assert error.value.status() in ("StatusCode.RESOURCE_EXHAUSTED", "StatusCode.CANCELLED"), error.value.status()
        assert infer(client(proc), np.ones((1, 2048), np.float32)).shape == (1, 25)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_grpc_images_class_count_1_equals_kiln_run_top1(fused):
    proc, _ = start_server(fused)
    try:
        run = subprocess.run([os.path.join(BIN, "kiln-run"), fused, *PHOTOS, "--top", "1", "--format", "json"],
                             check=True, capture_output=True, timeout=120, text=True)
        labels = [json.loads(line)["predictions"][0]["label"] for line in run.stdout.splitlines() if line.strip()]
        c = client(proc)
        i = grpcclient.InferInput("image", [len(PHOTOS)], "BYTES")
        i.set_data_from_numpy(np.array([open(p, "rb").read() for p in PHOTOS], dtype=np.object_))
        out = c.get_model_metadata("fused", as_json=True)["outputs"][0]["name"]
        r = c.infer("fused", [i], outputs=[grpcclient.InferRequestedOutput(out, class_count=1)])
        got = [(e.decode() if isinstance(e, bytes) else e).split(":", 2)[2] for e in r.as_numpy(out).reshape(-1)]
        assert got == labels
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
