"""The BYTES `image` input with the classification extension, against kiln-run's top-1 (fused bundle as scripts/demo makes it)."""
import glob, json, os, signal, subprocess
import numpy as np
import pytest
import tritonclient.http as httpclient
from test_serve import BIN, start_server

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
PHOTOS = sorted(p for p in glob.glob(os.path.join(ROOT, "samples/images/photos/*")) if p.endswith((".jpg", ".png")))[:6]


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    d = tmp_path_factory.mktemp("fused")
    (d / "labels.txt").write_text("beans\ncake\npasta\nvinegar\ntea\n")
    s = os.path.join(ROOT, "samples/mini")
    subprocess.run([os.path.join(BIN, "kiln"), "fuse", f"{s}/mini_notop_k3.h5", f"{s}/head_k3.h5", "-o", str(d / "fused.kiln"),
                    "--labels", str(d / "labels.txt"), "--input-size", "40x56", "--resize", "keras-nearest"],
                   check=True, capture_output=True, timeout=120)
    return str(d / "fused.kiln")


@pytest.fixture(scope="module")
def server(fused):
    proc, port = start_server(fused)
    yield port
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_image_input_in_metadata(server):
    meta = httpclient.InferenceServerClient(f"127.0.0.1:{server}").get_model_metadata("fused")
    assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]


@pytest.mark.parametrize("binary", [True, False])
def test_jpeg_png_top1_equals_kiln_run(server, fused, binary):
    assert PHOTOS
    run = subprocess.run([os.path.join(BIN, "kiln-run"), fused, *PHOTOS, "--top", "1", "--format", "json"],
                         check=True, capture_output=True, timeout=120, text=True)
    expected = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server}")
    data = np.array([open(p, "rb").read() for p in PHOTOS], dtype=np.object_)
    i = httpclient.InferInput("image", [len(PHOTOS)], "BYTES")
    i.set_data_from_numpy(data, binary_data=True)
    out = c.get_model_metadata("fused")["outputs"][0]["name"]
    r = c.infer("fused", [i], outputs=[httpclient.InferRequestedOutput(out, binary_data=binary, class_count=1)])
    got = [(e.decode() if isinstance(e, bytes) else e).split(":", 2)[2] for e in r.as_numpy(out).reshape(-1)]
    labels = [item["predictions"][0]["label"] for item in expected]
    assert got == labels
