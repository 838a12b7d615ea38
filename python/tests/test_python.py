"""The Python package against kiln-run: tensors (8 threads in a fresh venv after `pip install ./python`),
classification, metadata, errors."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import LABELS, ROOT, kiln_run_json, photo_files

import kiln  # noqa: E402  (conftest puts python/ on the path and sets KILN_LIBRARY)

REQUIREMENTS = os.path.join(ROOT, "scripts", "requirements-embed.txt")


def pin(name):
    for line in open(REQUIREMENTS):
        if line.lower().startswith(name + "=="):
            return line.strip()
    raise AssertionError(f"{name} is not pinned in {REQUIREMENTS}")


@pytest.fixture(scope="module")
def inputs_and_expected(bin_dir, bundle, tmp_path_factory):
    """Six input tensors (batches of 1-3, seeded) and kiln-run's output for each (--input/--output .npy)."""
    d = tmp_path_factory.mktemp("tensors")
    rng = np.random.default_rng(19)
    cases = []
    for i in range(6):
        x = rng.uniform(0, 255, size=(1 + i % 3, 40, 56, 3)).astype(np.float32)
        xin, yout = d / f"x{i}.npy", d / f"y{i}.npy"
        np.save(xin, x)
        subprocess.run([os.path.join(bin_dir, "kiln-run"), bundle, "--input", str(xin), "--output", str(yout)],
                       check=True, capture_output=True, timeout=120)
        cases.append((str(xin), str(yout)))
    return cases


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A new venv with `pip install ./python` (and the pinned numpy): what a user does."""
    d = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(d)], check=True, timeout=300)
    py = str(d / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", pin("numpy"),
                    os.path.join(ROOT, "python")], check=True, timeout=900)
    return py


def test_pip_install_builds_nothing_and_installs_pure_python(fresh_venv):
    out = subprocess.run([fresh_venv, "-c", "import kiln, os; print(os.path.dirname(kiln.__file__))"],
                         capture_output=True, text=True, check=True, env=dict(os.environ), timeout=120).stdout.strip()
    files = [f for _, _, fs in os.walk(out) for f in fs]
    assert not [f for f in files if f.endswith((".so", ".c", ".pyd"))], files
    assert out.startswith(os.path.dirname(os.path.dirname(fresh_venv)))


def test_run_from_8_threads_equals_kiln_run_in_a_fresh_venv(fresh_venv, bundle, inputs_and_expected, tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(textwrap.dedent("""
        import sys, threading
        import numpy as np
        import kiln
        bundle, cases = sys.argv[1], [c.split(",") for c in sys.argv[2:]]
        model = kiln.Model(bundle)
        worst, results, errors = 0.0, [], []
        lock = threading.Lock()
        def work(t):
            try:
                for r in range(3):                       # 8 threads x 3 = 24 runs
                    xin, yout = cases[(t * 3 + r) % len(cases)]
                    x, want = np.load(xin), np.load(yout)
                    got = model.run(x)
                    (name, y), = got.items()
                    assert y.shape == want.shape and y.dtype == np.float32, (y.shape, want.shape)
                    with lock:
                        results.append(float(np.max(np.abs(y - want))))
            except Exception as e:
                with lock:
                    errors.append(repr(e))
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(results), max(results) if results else -1, errors)
    """))
    env = dict(os.environ)  # KILN_LIBRARY points at the release directory
    proc = subprocess.run([fresh_venv, str(script), bundle, *[f"{a},{b}" for a, b in inputs_and_expected]],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    runs, worst, errors = proc.stdout.strip().split(" ", 2)
    assert errors == "[]" and int(runs) == 24
    assert float(worst) <= 1e-6, f"max |kiln.Model.run - kiln-run| = {worst}"


def test_run_reads_the_caller_array_and_returns_every_output(bundle, inputs_and_expected):
    m = kiln.Model(bundle)
    xin, yout = inputs_and_expected[1]
    x = np.load(xin)
    out = m.run(x)
    assert list(out) == [p.name for p in m.outputs]
    np.testing.assert_allclose(out[m.outputs[0].name], np.load(yout), rtol=0, atol=1e-6)
    # A non-contiguous or float64 input is converted once, with the same answer.
    np.testing.assert_allclose(m.run(np.asfortranarray(x.astype(np.float64)))[m.outputs[0].name], np.load(yout),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("top", [1, 3, 5])
def test_classify_paths_and_bytes_equal_kiln_run_top_k(bin_dir, bundle, top):
    files = photo_files()
    expected = kiln_run_json(bin_dir, bundle, files, top)
    m = kiln.Model(bundle)
    by_path = m.classify(files, top=top)
    by_bytes = m.classify([open(f, "rb").read() for f in files], top=top, batch=3)
    for f, a, b in zip(files, by_path, by_bytes):
        want = expected[f]
        assert [p.label for p in a] == [w[0] for w in want], f
        assert [p.index for p in a] == [w[2] for w in want], f
        np.testing.assert_allclose([p.score for p in a], [w[1] for w in want], rtol=1e-6, atol=1e-7)
        assert a == b
    assert m.classify(files[0], top=top) == by_path[0]


def test_metadata(bundle):
    m = kiln.Model(bundle)
    assert m.labels == LABELS
    assert len(m.inputs) == 1 and m.inputs[0].shape[-1] == 3 and m.inputs[0].shape[0] is None
    assert [p.shape for p in m.outputs] == [(None, 5)]
    assert m.image_input["height"] == 40 and m.image_input["width"] == 56
    assert m.image_input["resize"] == "keras-nearest" and m.image_input["preprocessing"] == "caffe"
    assert m.image_input["layout"] == "NHWC" and m.image_input["scores"] == "probability"
    assert m.output_shapes((7, 40, 56, 3)) == [(7, 5)]
    assert kiln.version() == "0.1.0"


def test_errors_have_kinds_and_one_line(bundle, tmp_path):
    bad = tmp_path / "bad.kiln"
    bad.write_bytes(b"KILN" + b"\0" * 60)
    with pytest.raises(kiln.BadBundleError) as e:
        kiln.Model(bad)
    assert "\n" not in str(e.value) and e.value.kind == "bad-bundle"
    with pytest.raises(kiln.BadInputError):
        kiln.Model(tmp_path / "missing.kiln")
    m = kiln.Model(bundle)
    with pytest.raises(kiln.BadInputError):
        m.run(np.zeros((1, 40, 56, 4), np.float32))
    with pytest.raises(kiln.BadInputError):
        m.classify(photo_files()[0], top=6)
    results = m.classify([b"not an image", str(tmp_path / "nope.jpg"), photo_files()[0]], errors="return")
    assert isinstance(results[0], kiln.BadInputError) and "image 0" in str(results[0])
    assert isinstance(results[1], kiln.BadInputError) and "nope.jpg" in str(results[1])
    assert len(results[2]) == 5
    with pytest.raises(kiln.BadInputError):
        m.classify([b"not an image"])
    m.close()
    with pytest.raises(ValueError):
        m.run(np.zeros((1, 40, 56, 3), np.float32))


def test_missing_library_is_one_clear_import_error(tmp_path):
    env = dict(os.environ, KILN_LIBRARY=str(tmp_path / "nowhere" / "libkiln.so"), PYTHONPATH=os.path.join(ROOT, "python"))
    proc = subprocess.run([sys.executable, "-c", "import kiln"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "libkiln not found" in proc.stderr and "KILN_LIBRARY" in proc.stderr


def test_library_beside_the_package_is_found_without_kiln_library(fresh_venv, bin_dir, bundle):
    where = subprocess.run([fresh_venv, "-c", "import importlib.util as u; print(u.find_spec('kiln').submodule_search_locations[0])"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    target = os.path.join(where, "libkiln.so")
    import shutil
    shutil.copyfile(os.path.realpath(os.path.join(bin_dir, "libkiln.so")), target)
    try:
        env = {k: v for k, v in os.environ.items() if k != "KILN_LIBRARY"}
        out = subprocess.run([fresh_venv, "-c", "import sys, kiln; print(kiln.library_path); print(kiln.Model(sys.argv[1]).labels)",
                              bundle], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        path, labels = out.stdout.strip().splitlines()
        assert path == target and labels == str(LABELS)
    finally:
        os.remove(target)


def test_runs_release_the_gil(bundle):
    """While another thread runs the model, the main thread's Python loop never stalls for as long as a run:
    the run goes on inside libkiln without the GIL. Were the GIL held during the call (ctypes.PyDLL, say), the
    loop would stop for the whole of each call."""
    import threading
    import time
    m = kiln.Model(bundle)
    # Runs long enough (~0.5-1 s here) that the OS's own scheduling delays on a loaded machine stay well below.
    x = np.random.default_rng(3).uniform(0, 255, size=(1024, 40, 56, 3)).astype(np.float32)
    m.run(x)  # plans made before timing
    durations = []

    def work():
        for _ in range(3):
            start = time.perf_counter()
            m.run(x)
            durations.append(time.perf_counter() - start)

    t = threading.Thread(target=work)
    t.start()
    last, longest_gap = time.perf_counter(), 0.0
    while t.is_alive():
        now = time.perf_counter()
        longest_gap = max(longest_gap, now - last)
        last = now
    t.join()
    # Held, the GIL would stop the loop for nearly a whole run (the C call is all but the whole of it).
    assert longest_gap < 0.6 * min(durations), f"the loop stalled {longest_gap:.3f} s; runs took {durations}"
