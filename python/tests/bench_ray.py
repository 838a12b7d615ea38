"""Throughput of examples/ray/classify_folder.py on the local two-node cluster against one kiln-run on the
same folder (README, "Embedding"). Not a test: run by hand.

    KILN_BIN=<release dir> "$(scripts/pyenv embed)" python/tests/bench_ray.py BUNDLE FOLDER [--batch 8]

Prints, for each: images, wall seconds (whole command: process start, bundle load, every image), images/s.
kiln-run uses --threads 2 (both cores); the cluster has two workers (one per node) with one kernel thread each.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_cluster import LOOPBACK, local_cluster  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def timed(args, env=None):
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("folder")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    bin_dir = os.environ["KILN_BIN"]
    images = sum(len(fs) for _, _, fs in os.walk(args.folder))
    seconds, out = timed([os.path.join(bin_dir, "kiln-run"), args.bundle, args.folder, "--format", "csv",
                          "--top", "5", "--batch", str(args.batch), "--threads", "2"])
    print(f"kiln-run (1 process, 2 threads): {images} images, {seconds:.2f} s, {images / seconds:.1f} images/s")
    with local_cluster({"PYTHONPATH": os.path.join(ROOT, "python"), "KILN_LIBRARY": bin_dir}) as (address, env):
        with tempfile.TemporaryDirectory() as d:
            seconds, out = timed([*LOOPBACK, os.path.join(ROOT, "examples", "ray", "classify_folder.py"), args.bundle,
                                  args.folder, os.path.join(d, "out"), "--top", "5", "--workers", "2", "--threads",
                                  "1", "--batch", str(args.batch), "--address", address], env=env)
    print(f"Ray, 2 nodes x 1 worker x 1 thread: {images} images, {seconds:.2f} s, {images / seconds:.1f} images/s "
          f"(its own line: {out.strip().splitlines()[-1]})")


if __name__ == "__main__":
    main()
