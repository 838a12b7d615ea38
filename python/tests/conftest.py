"""Shared fixtures of the embed tests (make embed-test): the release binaries, a fused bundle with labels made
by `kiln fuse` from the committed samples (as `make demo` makes it), and kiln-run's own answers to compare with.

KILN_BIN: the release bin directory (default: `swift build -c release --show-bin-path`). libkiln is found there
(KILN_LIBRARY is set to it for the in-process tests).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PHOTOS = os.path.join(ROOT, "samples", "images", "photos")
BROKEN = os.path.join(ROOT, "samples", "images", "broken")
LABELS = ["beans", "cake", "pasta", "vinegar", "tea"]


def _bin():
    env = os.environ.get("KILN_BIN")
    if env:
        return os.path.abspath(env)
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


BIN = _bin()
os.environ["KILN_LIBRARY"] = BIN
sys.path.insert(0, os.path.join(ROOT, "python"))


def photo_files():
    return sorted(os.path.join(PHOTOS, f) for f in os.listdir(PHOTOS) if not f.startswith("."))


@pytest.fixture(scope="session")
def bin_dir():
    for name in ("kiln", "kiln-run", "libkiln.so"):
        assert os.path.exists(os.path.join(BIN, name)), f"{name} missing in {BIN}: run `make release`"
    return BIN


@pytest.fixture(scope="session")
def bundle(bin_dir, tmp_path_factory):
    """The demo's fused bundle: the mini backbone + the 5-class head, caffe preprocessing folded, labels."""
    d = tmp_path_factory.mktemp("bundle")
    labels = d / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    out = d / "fused.kiln"
    s = os.path.join(ROOT, "samples", "mini")
    subprocess.run([os.path.join(bin_dir, "kiln"), "fuse", os.path.join(s, "mini_notop_k3.h5"),
                    os.path.join(s, "head_k3.h5"), "-o", str(out), "--labels", str(labels),
                    "--input-size", "40x56", "--resize", "keras-nearest"],
                   check=True, capture_output=True, timeout=300)
    return str(out)


def kiln_run_json(bin_dir, bundle, files, top):
    """kiln-run's answers per file: {path: [(label, score, index), ...]} or {path: None} for a failure."""
    proc = subprocess.run([os.path.join(bin_dir, "kiln-run"), bundle, *files, "--format", "json", "--top", str(top)],
                          capture_output=True, text=True, timeout=300)
    answers = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        if "error" in row:
            answers[row["file"]] = None
        else:
            answers[row["file"]] = [(p["label"], p.get("probability", p.get("score")), p["index"])
                                    for p in row["predictions"]]
    assert set(answers) == set(files), proc.stderr
    return answers


@pytest.fixture(scope="session")
def cc():
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "no C compiler"
    return compiler
