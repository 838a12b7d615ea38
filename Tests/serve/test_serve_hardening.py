"""kiln-serve's command line, threads, typed JSON parsing and the drain of the listen queue (127.0.0.1 only)."""
import http.client, json, os, re, signal, subprocess, threading, time, urllib.request
import numpy as np
import pytest
from test_serve import BIN, MODEL, bundle, client, free_port, infer, post, reference, start_server, tensor_json  # noqa: F401

SERVE = os.path.join(BIN, "kiln-serve")


@pytest.mark.parametrize("args", [[], ["--threads", "0"], ["--threads", "300"], ["--max-batch", "0"],
                                  ["--bogus"], ["--http-port", "70000"], ["--threads", "two"]])
def test_usage_errors_exit_64(tmp_path, args):
    bundle_arg = [] if args == [] else [str(tmp_path / "m.kiln")]
    run = subprocess.run([SERVE, *bundle_arg, *args], capture_output=True, text=True, timeout=30)
    assert run.returncode == 64, (run.returncode, run.stderr)
    assert "Error:" in run.stderr and "Usage:" in run.stderr


def test_help_lists_every_option_with_its_default():
    run = subprocess.run([SERVE, "--help"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    text = re.sub(r"\s+", " ", run.stdout)
    for option, default in [("--name", None), ("--host", "127.0.0.1"), ("--http-port", "8000"), ("--grpc-port", "8001"),
                            ("--metrics-port", "8002"), ("--threads", "2"), ("--max-batch", "8"),
                            ("--max-queue-delay-us", "2000"), ("--max-queue", "256"), ("--max-request-bytes", "67108864")]:
        assert option in text, option
        if default is not None:
            assert re.search(re.escape(option) + r" <[^>]+>.*?\(default: " + re.escape(default) + r"\)", text), option


def metrics(proc):
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10) as r:
        return dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines() if not line.startswith("#"))


def thread_count(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))


def test_threads_set_the_kernel_pool(bundle):
    for n in (1, 3):
        proc, port = start_server(bundle, "--threads", str(n))
        try:
            infer(client(port), np.ones((2, 2048), np.float32))
            m = metrics(proc)
            assert int(m["kiln_kernel_threads"]) == n and int(m["kiln_prepare_threads"]) == n, m
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0


def test_threads_stay_bounded_under_64_clients(bundle, tmp_path):
    """64 clients at once: answers right, and the process never grows a thread per request."""
    # A long batching delay keeps requests waiting: a server with a thread per waiting request shows it.
    proc, port = start_server(bundle, "--threads", "2", "--max-queue-delay-us", "50000")
    try:
        x = np.random.default_rng(5).standard_normal((2, 2048)).astype(np.float32)
        ref = reference(bundle, x, tmp_path)
        infer(client(port), x)  # the kernel pool's workers start with the first run
        time.sleep(0.2)
        idle = thread_count(proc.pid)
        peak, errors, stop = [idle], [], threading.Event()

        def sample():
            while not stop.is_set():
                peak.append(thread_count(proc.pid))
                time.sleep(0.005)

        def work():
            try:
                c = client(port)
                for _ in range(5):
                    np.testing.assert_allclose(infer(c, x), ref, rtol=0, atol=1e-6)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        sampler = threading.Thread(target=sample)
        sampler.start()
        workers = [threading.Thread(target=work) for _ in range(64)]
        for t in workers: t.start()
        for t in workers: t.join(timeout=120)
        stop.set()
        sampler.join()
        assert not errors, errors[:3]
        # Fixed after the first run: main, signal, event loop, batcher, 2 prepare threads, 1 kernel worker, a few
        # of Dispatch's. A thread per waiting request grows with the clients.
        assert max(peak) <= idle + 1 and max(peak) <= 12, (idle, max(peak))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_json_nested_data_equals_kiln_run(bundle, tmp_path):
    proc, port = start_server(bundle)
    try:
        x = np.random.default_rng(9).standard_normal((3, 2048)).astype(np.float32)
        body = json.dumps({"id": "r1", "inputs": [{"name": "input_layer_5", "shape": [3, 2048], "datatype": "FP32",
                                                   "data": x.tolist()}]}).encode()
        code, text = post(port, body)
        assert code == 200, text
        answer = json.loads(text)
        assert answer["id"] == "r1" and answer["model_name"] == MODEL
        out = answer["outputs"][0]
        assert out["name"] == "dense" and out["shape"] == [3, 25]
        np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(3, 25), reference(bundle, x, tmp_path),
                                   rtol=0, atol=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("body, words", [
    (b'{"inputs": [{"name": "input_layer_5", "shape": [1, "x"], "datatype": "FP32", "data": [0]}]}', "shape"),
    (b'{"inputs": [{"name": "input_layer_5", "shape": [1, 2], "datatype": "FP32", "data": [true, false]}]}', "data"),
    (b'{"outputs": []}', "inputs"),
    (b'{"inputs": [{"shape": [1, 2048], "datatype": "FP32", "data": [0]}]}', "name"),
    (b'[1, 2, 3]', "valid inference request"),
    (b'{"inputs": [{"name": "input_layer_5", "shape": [1, 2], "datatype": "FP32", "data": [1, "a"]}]}', "data"),
])
def test_json_type_errors_named(bundle, body, words):
    proc, port = start_server(bundle)
    try:
        code, text = post(port, body)
        assert code == 400, (code, text)
        assert words in json.loads(text)["error"], text
        assert infer(client(port), np.ones((1, 2048), np.float32)).shape == (1, 25)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_sigterm_answers_the_listen_queue(bundle, tmp_path):
    """Connections the kernel completed while the server could not accept them (stopped) are still answered
    after SIGTERM, not reset."""
    proc, port = start_server(bundle)
    x = np.random.default_rng(13).standard_normal((1, 2048)).astype(np.float32)
    ref = reference(bundle, x, tmp_path)
    body = tensor_json(data=x.reshape(-1).tolist())
    proc.send_signal(signal.SIGSTOP)
    try:
        conns = []
        for _ in range(24):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers={"Content-Type": "application/json"})
            conns.append(c)
        proc.send_signal(signal.SIGTERM)
    finally:
        proc.send_signal(signal.SIGCONT)
    answers = []
    for c in conns:
        r = c.getresponse()
        answers.append((r.status, r.read()))
        c.close()
    assert proc.wait(timeout=30) == 0
    for status, text in answers:
        assert status == 200, (status, text)
        y = np.array(json.loads(text)["outputs"][0]["data"], np.float32).reshape(1, 25)
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
    # Nothing listens any more.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)
