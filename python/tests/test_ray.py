"""examples/ray/classify_folder.py on a local two-node Ray cluster that the test starts and stops: a head and
one more worker node, two `ray start --block` processes on 127.0.0.1 with 2 logical CPUs and 100 MB of object
store each. Every image is classified exactly once, by workers on both nodes, with kiln-run's answers."""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import BIN, ROOT, kiln_run_json, photo_files

EXAMPLE = os.path.join(ROOT, "examples", "ray", "classify_folder.py")
# Every Ray process of the test goes through ray_loopback.py: the cluster stays on 127.0.0.1.
LOOPBACK = [sys.executable, os.path.join(os.path.dirname(__file__), "ray_loopback.py")]
START_SECONDS = 180


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def stop(proc):
    """Ends a `ray start --block` and every process of its session: SIGTERM, then SIGKILL after 20 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def leftover_pids(marker):
    """Processes whose command line names our cluster's temp dir (none should outlive the test)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def cluster():
    # Ray's socket paths live under the temp dir: it must be short.
    temp = tempfile.mkdtemp(prefix="kr", dir="/tmp")
    # A token of this cluster's own for Ray's token authentication, given to each process (nothing in ~/.ray).
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), KILN_LIBRARY=BIN, RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    logs = open(os.path.join(temp, "ray-start.log"), "w")
    procs = []

    def start(args):
        # Ports of each node chosen free here, so that the two nodes on one host do not collide.
        agent, agent_grpc, runtime_env, metrics, lo = free_ports(5)
        procs.append(subprocess.Popen(
            [*LOOPBACK, "ray", "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
             "--object-store-memory=100000000", "--disable-usage-stats", f"--dashboard-agent-listen-port={agent}",
             f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
             f"--metrics-export-port={metrics}", *args],
            env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        (port,) = free_ports(1)
        address = f"127.0.0.1:{port}"
        start(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
               "--min-worker-port=20000", "--max-worker-port=20999"])
        wait_for_nodes(address, 1, env, procs)
        start([f"--address={address}", "--min-worker-port=21000", "--max-worker-port=21999"])
        wait_for_nodes(address, 2, env, procs)
        yield address, env, temp
    finally:
        for proc in reversed(procs):
            stop(proc)
        logs.close()
        left = leftover_pids(temp)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes outlived their `ray start`: {left}"


def wait_for_nodes(address, count, env, procs):
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a `ray start` exited"
        script = os.path.join(os.path.dirname(__file__), "ray_probe.py")
        out = subprocess.run([*LOOPBACK, script, address], capture_output=True, text=True, env=env, timeout=120)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    raise AssertionError(f"the Ray cluster at {address} did not reach {count} nodes in {START_SECONDS} s")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The sample photos twice over (50 files, in two sub-folders), so that each worker gets several batches."""
    d = tmp_path_factory.mktemp("images")
    for copy in ("a", "b"):
        os.makedirs(d / copy)
        for f in photo_files():
            shutil.copyfile(f, d / copy / os.path.basename(f))
    return str(d)


def test_classify_folder_on_two_nodes_equals_kiln_run(cluster, folder, bin_dir, bundle, tmp_path):
    address, env, _ = cluster
    out = tmp_path / "parquet"
    proc = subprocess.run([*LOOPBACK, EXAMPLE, bundle, folder, str(out), "--top", "3", "--workers", "2",
                           "--batch", "4", "--address", address], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "classify_folder: 50 images" in proc.stdout, proc.stdout
    table = pq.read_table(str(out)).to_pydict()
    files = sorted(os.path.join(folder, c, os.path.basename(f)) for c in ("a", "b") for f in photo_files())
    # Every image exactly once.
    assert sorted(table["file"]) == files
    assert all(e == "" for e in table["error"])
    # Workers on both nodes took part.
    assert len(set(table["node"])) == 2, set(table["node"])
    expected = kiln_run_json(bin_dir, bundle, files, top=3)
    for f, labels, scores in zip(table["file"], table["labels"], table["scores"]):
        assert labels == [w[0] for w in expected[f]], f
        np.testing.assert_allclose(scores, [w[1] for w in expected[f]], rtol=1e-6, atol=1e-7)


def test_classify_folder_refuses_a_non_empty_output(tmp_path, bundle, folder):
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("x")
    proc = subprocess.run([sys.executable, EXAMPLE, bundle, folder, str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "not empty" in proc.stderr
