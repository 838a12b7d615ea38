"""The C API through real C programs built with `cc -I include ... -L <release dir> -lkiln`."""
import os
import shutil
import subprocess

import pytest

from conftest import BROKEN, ROOT, kiln_run_json, photo_files

INCLUDE = os.path.join(ROOT, "include")
EXAMPLES = os.path.join(ROOT, "examples", "c")


def build(cc, bin_dir, tmp_path, source, extra=()):
    exe = tmp_path / os.path.splitext(source)[0]
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", *extra, "-I", INCLUDE,
                    os.path.join(EXAMPLES, source), "-L", bin_dir, "-lkiln", f"-Wl,-rpath,{bin_dir}",
                    "-o", str(exe)], check=True, timeout=120)
    return str(exe)


def test_c_example_top1_equals_kiln_run(cc, bin_dir, bundle, tmp_path):
    exe = build(cc, bin_dir, tmp_path, "classify.c")
    files = photo_files()
    proc = subprocess.run([exe, bundle, *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = kiln_run_json(bin_dir, bundle, files, top=1)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(files)
    for line, path in zip(lines, files):
        name, label, score = line.split("\t")
        assert name == path
        want_label, want_score, _ = expected[path][0]
        assert label == want_label, path
        assert float(score) == pytest.approx(want_score, rel=1e-5), path


def test_c_example_reports_each_broken_file_and_exits_1(cc, bin_dir, bundle, tmp_path):
    exe = build(cc, bin_dir, tmp_path, "classify.c")
    broken = sorted(os.path.join(BROKEN, f) for f in os.listdir(BROKEN))
    good = photo_files()[0]
    proc = subprocess.run([exe, bundle, good, *broken], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 + len(broken)
    assert lines[0].split("\t")[1] != "error"
    expected = kiln_run_json(bin_dir, bundle, broken, top=1)
    for line, path in zip(lines[1:], broken):
        # kiln-run refuses exactly the same files.
        assert (line.split("\t")[1] == "error") == (expected[path] is None), line


def test_c_example_bad_bundle_exits_2_with_one_line(cc, bin_dir, tmp_path):
    exe = build(cc, bin_dir, tmp_path, "classify.c")
    bad = tmp_path / "bad.kiln"
    bad.write_bytes(b"KILN" + b"\0" * 60)
    proc = subprocess.run([exe, str(bad), photo_files()[0]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "bad-bundle" in proc.stderr


def test_api_contract_on_bad_arguments(cc, bin_dir, bundle, tmp_path):
    exe = build(cc, bin_dir, tmp_path, "api_contract.c")
    proc = subprocess.run([exe, bundle, photo_files()[0]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(" 0 failed"), proc.stdout


def asan_build(bin_dir, tmp_path):
    gcc = shutil.which("gcc")
    assert gcc, "gcc (with AddressSanitizer) is needed"
    exe = tmp_path / "open_run_close_asan"
    subprocess.run([gcc, "-std=c11", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-I", INCLUDE,
                    os.path.join(EXAMPLES, "open_run_close.c"), "-L", bin_dir, "-lkiln", f"-Wl,-rpath,{bin_dir}",
                    "-o", str(exe)], check=True, timeout=120)
    return str(exe)


def test_open_run_close_100_times_leaks_nothing_under_asan(bin_dir, bundle, tmp_path):
    exe = asan_build(bin_dir, tmp_path)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=23")
    proc = subprocess.run([exe, bundle, photo_files()[0], "100"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "open_run_close: 100 rounds, ok" in proc.stdout
    assert "LeakSanitizer" not in proc.stderr


def test_leak_check_reports_a_forgotten_close(bin_dir, bundle, tmp_path):
    """The leak check itself can fail: without kiln_session_free / kiln_model_close it reports the leak."""
    exe = asan_build(bin_dir, tmp_path)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=23")
    proc = subprocess.run([exe, bundle, photo_files()[0], "2", "--forget-close"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 23
    assert "Direct leak" in proc.stderr


def test_header_compiles_as_cplusplus(bin_dir, tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++")
    assert cxx
    src = tmp_path / "t.cpp"
    src.write_text('#include "kiln.h"\nint main() { return kiln_api_version() == KILN_API_VERSION ? 0 : 1; }\n')
    subprocess.run([cxx, "-Wall", "-Werror", "-I", INCLUDE, str(src), "-L", bin_dir, "-lkiln",
                    f"-Wl,-rpath,{bin_dir}", "-o", str(tmp_path / "t")], check=True, timeout=120)
    assert subprocess.run([str(tmp_path / "t")], timeout=60).returncode == 0


# The link line of libkiln.a (README "Embedding"): the Swift runtime's static libraries, swiftrt.o (it registers
# the Swift metadata sections), and the C libraries.
SWIFT_STATIC_LIBRARIES = ["-lswiftCore", "-lswift_Concurrency", "-lswiftSynchronization", "-lFoundationEssentials",
                          "-l_FoundationCollections", "-l_FoundationCShims", "-lswift_StringProcessing",
                          "-lswift_RegexParser", "-lswiftGlibc", "-ldispatch", "-lBlocksRuntime"]
C_LIBRARIES = ["-lturbojpeg", "-lpng16", "-lzstd", "-lopenblas", "-lstdc++", "-lm", "-ldl", "-lpthread"]


def test_static_library_links_into_a_c_program_without_swift(cc, bin_dir, bundle, tmp_path):
    swiftc = shutil.which("swiftc")
    assert swiftc
    static = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(swiftc))), "lib", "swift_static", "linux")
    exe = tmp_path / "classify_static"
    subprocess.run([cc, "-std=c11", "-I", INCLUDE, os.path.join(EXAMPLES, "classify.c"),
                    os.path.join(static, "x86_64", "swiftrt.o"), os.path.join(bin_dir, "libkiln.a"),
                    f"-L{static}", *SWIFT_STATIC_LIBRARIES, *C_LIBRARIES, "-o", str(exe)], check=True, timeout=300)
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
    assert "swift" not in ldd.lower() and "libkiln" not in ldd
    files = photo_files()[:6]
    proc = subprocess.run([str(exe), bundle, *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = kiln_run_json(bin_dir, bundle, files, top=1)
    assert [line.split("\t")[1] for line in proc.stdout.splitlines()] == [expected[f][0][0] for f in files]
