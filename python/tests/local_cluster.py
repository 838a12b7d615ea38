"""A local Ray cluster of two nodes on 127.0.0.1 for the tests and the benchmark: a head and one more worker
node, two `ray start --block` processes (each in its own process group) with 2 logical CPUs and 100 MB of object
store each, a token of its own for Ray's token authentication, and every process stopped at the end (SIGTERM
to each group, SIGKILL after 20 s, then any process still naming the cluster's temp dir), even on failure.
"""
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Every Ray process goes through ray_loopback.py: the cluster stays on 127.0.0.1.
LOOPBACK = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_loopback.py")]
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


@contextlib.contextmanager
def local_cluster(env_extra):
    """Yields (address, env) of a running two-node cluster; `env` is what its drivers must run with."""
    # Ray's socket paths live under the temp dir: it must be short.
    temp = tempfile.mkdtemp(prefix="kr", dir="/tmp")
    # A token of this cluster's own for Ray's token authentication, given to each process (nothing in ~/.ray).
    env = dict(os.environ, **env_extra, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(32))
    logs = open(os.path.join(temp, "ray-start.log"), "w")
    procs = []

    def start(args):
        # Ports of each node chosen free here, so that the two nodes on one host do not collide.
        agent, agent_grpc, runtime_env, metrics = free_ports(4)
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
        try:
            wait_for_nodes(address, 1, env, procs)
            start([f"--address={address}", "--min-worker-port=21000", "--max-worker-port=21999"])
            wait_for_nodes(address, 2, env, procs)
        except AssertionError as e:
            logs.flush()
            with open(logs.name) as f:
                raise AssertionError(f"{e}; ray start said:\n" + "".join(f.readlines()[-30:])) from None
        yield address, env
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


