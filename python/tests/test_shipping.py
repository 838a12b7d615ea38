"""The release kiln-run is one static executable: no shared library at all (so no Swift runtime), and it
classifies in an empty root holding only itself, a bundle and an image (a machine without Swift or the C
libraries; /proc mounted, as on any Linux)."""
import json
import os
import shutil
import subprocess

from conftest import kiln_run_json, photo_files


def test_kiln_run_needs_no_shared_library(bin_dir):
    exe = os.path.join(bin_dir, "kiln-run")
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True)
    assert "swift" not in (ldd.stdout + ldd.stderr).lower()
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    dynamic = subprocess.run(["readelf", "-d", exe], capture_output=True, text=True).stdout
    assert "NEEDED" not in dynamic


def test_kiln_run_classifies_alone_in_an_empty_root(bin_dir, bundle, tmp_path):
    root = tmp_path / "root"
    os.makedirs(root / "proc")
    shutil.copyfile(os.path.join(bin_dir, "kiln-run"), root / "kiln-run")
    os.chmod(root / "kiln-run", 0o755)
    shutil.copyfile(bundle, root / "model.kiln")
    image = photo_files()[3]
    shutil.copyfile(image, root / "image.jpg")
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True, timeout=30)
    try:
        proc = subprocess.run([shutil.which("chroot"), str(root), "/kiln-run", "/model.kiln", "/image.jpg", "--top", "3",
                               "--format", "json"], capture_output=True, text=True, timeout=120, env={})
    finally:
        subprocess.run(["umount", str(root / "proc")], check=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    expected = kiln_run_json(bin_dir, bundle, [image], top=3)[image]
    assert [p["label"] for p in json.loads(proc.stdout)["predictions"]] == [e[0] for e in expected]
