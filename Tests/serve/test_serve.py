"""kiln-serve against the real tritonclient (KServe v2 REST), on 127.0.0.1, one server per module.

Environment (as `make serve-test` sets it): KILN_BIN (release bin dir with kiln, kiln-run, kiln-serve) and
KILN_FIXTURES (head_k3.h5, a Keras head converted here into a bundle).
"""
import json, os, signal, socket, subprocess, threading, time, urllib.request
import numpy as np
import pytest
import tritonclient.http as httpclient

BIN = os.environ.get("KILN_BIN", ".build/release")
FIXTURES = os.environ.get("KILN_FIXTURES", os.path.expanduser("~/.cache/kiln/fixtures"))
MODEL = "head"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle, *extra):
    port, metrics, grpc = free_port(), free_port(), free_port()
    proc = subprocess.Popen([os.path.join(BIN, "kiln-serve"), bundle, "--host", "127.0.0.1", "--http-port", str(port),
                             "--metrics-port", str(metrics), "--grpc-port", str(grpc), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.metrics_port = metrics
    proc.grpc_port = grpc
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("kiln-serve did not become ready: " + proc.stderr.read().decode())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "head.kiln"
    subprocess.run([os.path.join(BIN, "kiln"), "convert", os.path.join(FIXTURES, "head_k3.h5"), "--output", str(out)],
                   check=True, capture_output=True, timeout=120)
    return str(out)


@pytest.fixture(scope="module")
def served(bundle):
    proc, port = start_server(bundle)
    yield proc, port
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def server(served):
    return served[1]


def test_metrics(served):
    proc, port = served
    infer(client(port), np.ones((3, 2048), np.float32))
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert int(lines['nv_inference_request_success{model="head",version="1"}']) >= 1
    assert int(lines['nv_inference_count{model="head",version="1"}']) >= 3
    assert int(lines['nv_inference_exec_count{model="head",version="1"}']) >= 1


def reference(bundle, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    subprocess.run([os.path.join(BIN, "kiln-run"), bundle, "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy")], check=True, capture_output=True, timeout=60)
    return np.load(tmp_path / "y.npy")


def client(port):
    return httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=10, network_timeout=30)


def infer(c, x, binary=True):
    i = httpclient.InferInput("input_layer_5", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    r = c.infer(MODEL, [i], outputs=[httpclient.InferRequestedOutput("dense", binary_data=binary)])
    return r.as_numpy("dense")


def test_metadata(server):
    c = client(server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    meta = c.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "input_layer_5", "datatype": "FP32", "shape": [-1, 2048]}]
    assert meta["outputs"][0]["name"] == "dense" and meta["outputs"][0]["shape"] == [-1, 25]
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [True, False])
def test_tensors_equal_kiln_run(server, bundle, tmp_path, binary):
    x = np.random.default_rng(7).standard_normal((5, 2048)).astype(np.float32)
    np.testing.assert_allclose(infer(client(server), x, binary), reference(bundle, x, tmp_path), rtol=0, atol=1e-6)


def post(port, body, headers=None, model=MODEL):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", data=body, method="POST",
                                 headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def tensor_json(name="input_layer_5", shape=(1, 2048), datatype="FP32", data=None):
    return json.dumps({"inputs": [{"name": name, "shape": list(shape), "datatype": datatype,
                                   "data": data if data is not None else [0.5] * int(np.prod(shape))}]}).encode()


def test_malformed_requests_refused_while_serving(server):
    header = json.dumps({"inputs": [{"name": "input_layer_5", "shape": [1, 2048], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8192}}]}).encode()
    cases = [
        (tensor_json(name="nope"), None, MODEL, 400),
        (tensor_json(shape=(1, 2047)), None, MODEL, 400),
        (tensor_json(datatype="INT64"), None, MODEL, 400),
        (b"{not json", None, MODEL, 400),
        (header + b"\0" * 100, {"Inference-Header-Content-Length": str(len(header))}, MODEL, 400),
        (tensor_json(), None, "no-such-model", 404),
    ]
    x = np.ones((1, 2048), np.float32)
    good = infer(client(server), x)
    for body, headers, model, status in cases:
        code, text = post(server, body, headers, model)
        assert code == status, (code, text)
        assert "error" in json.loads(text)
        np.testing.assert_array_equal(infer(client(server), x), good)


def test_request_too_large(bundle):
    proc, port = start_server(bundle, "--max-request-bytes", "1000")
    try:
        code, text = post(port, tensor_json())
        assert code == 413 and "error" in json.loads(text)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_32_clients_20_requests(server, bundle, tmp_path):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1 + k % 3, 2048)).astype(np.float32) for k in range(32)]
    refs = [reference(bundle, x, tmp_path) for x in xs[:4]]
    errors = []

    def work(k):
        try:
            c = client(server)
            for _ in range(20):
                y = infer(c, xs[k % 4], binary=(k % 2 == 0))
                np.testing.assert_allclose(y, refs[k % 4], rtol=0, atol=1e-6)
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=work, args=(k,)) for k in range(32)]
    for t in threads: t.start()
    for t in threads: t.join(timeout=120)
    assert not errors, errors[:3]


def test_bad_bundle_one_line_exit_1(tmp_path):
    bad = tmp_path / "bad.kiln"
    bad.write_bytes(b"KILN" + b"\0" * 60)
    run = subprocess.run([os.path.join(BIN, "kiln-serve"), str(bad), "--http-port", str(free_port()),
                          "--metrics-port", str(free_port()), "--grpc-port", str(free_port())], capture_output=True, timeout=30, text=True)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_sigterm_under_load_loses_nothing(bundle):
    proc, port = start_server(bundle)
    x = np.ones((2, 2048), np.float32)
    results = {"ok": 0, "refused": 0, "lost": []}
    lock = threading.Lock()
    stop = threading.Event()

    def work():
        c = client(port)
        while not stop.is_set():
            try:
                y = infer(c, x)
                assert y.shape == (2, 25)
                with lock: results["ok"] += 1
            except httpclient.InferenceServerException as e:
                # Refused with an answer (503 draining): not lost.
                with lock: results["refused"] += 1
                if "draining" not in str(e): results["lost"].append(str(e))
                return
            except Exception:  # connection refused after close: never accepted
                return
    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads: t.start()
    time.sleep(1.0)
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert time.time() - start < 30
    stop.set()
    for t in threads: t.join(timeout=30)
    assert results["ok"] > 0 and not results["lost"], results


def test_larger_than_max_batch_is_split(bundle, tmp_path):
    proc, port = start_server(bundle, "--max-batch", "2", "--max-queue-delay-us", "500")
    try:
        x = np.random.default_rng(11).standard_normal((5, 2048)).astype(np.float32)
        np.testing.assert_allclose(infer(client(port), x), reference(bundle, x, tmp_path), rtol=0, atol=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
