"""examples/ray/classify_folder.py on a local two-node Ray cluster that the test starts and stops: a head and
one more worker node, two `ray start --block` processes on 127.0.0.1 with 2 logical CPUs and 100 MB of object
store each. Every image is classified exactly once, by workers on both nodes, with kiln-run's answers."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import BIN, ROOT, kiln_run_json, photo_files
from local_cluster import LOOPBACK, local_cluster

EXAMPLE = os.path.join(ROOT, "examples", "ray", "classify_folder.py")


@pytest.fixture(scope="module")
def cluster():
    with local_cluster({"PYTHONPATH": os.path.join(ROOT, "python"), "KILN_LIBRARY": BIN}) as running:
        yield running


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
    address, env = cluster
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
