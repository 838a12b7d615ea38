#!/usr/bin/env python3
"""Writes the tf.image.resize fixtures: real photos that ship in scikit-learn and scikit-image (as shipped,
plus a few re-encodings by PIL: 4:2:0 / 4:2:2 / progressive 4:4:4 / grayscale / CMYK JPEG, 16-bit gray and
palette PNG, and small copies that get upscaled), each with the pixels Keras' data pipeline makes of it:

    keras.utils.image_dataset_from_directory(folder, labels=None, image_size=(H, W),
                                             interpolation=METHOD, crop_to_aspect_ratio=CROP)

for METHOD in bilinear, nearest, bicubic, area, CROP in False/True, at two targets per photo (float32
[H, W, 3], in file `expected/NAME.tf-METHOD[-crop].HxW.npy`), and tf.io.decode_image's 8-bit RGB of each
photo (`expected/NAME.decoded.npy`). Every dataset element is checked against the direct computation
(tf.io.decode_image, then keras.utils's smart_resize crop when CROP, then tf.image.resize), so the arrays are
both. manifest.json lists photos and cases. Python is used only for test fixtures.

    python scripts/make_tf_resize_fixtures.py --out DIR       # cached by scripts/fixtures-tfresize
"""
import argparse
import io
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

_T0 = time.time()
METHODS = ["bilinear", "nearest", "bicubic", "area"]


def log(msg):
    print(f"[make_tf_resize_fixtures {time.time() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def package_files():
    import skimage
    import sklearn

    sk = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images")
    si = os.path.join(os.path.dirname(skimage.__file__), "data")
    return sk, si


def _pil(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def photos():
    """name -> (bytes, note). The package files as shipped, and PIL re-encodings of some of them."""
    sk, si = package_files()
    shipped = {
        "china.jpg": (os.path.join(sk, "china.jpg"), "scikit-learn china.jpg as shipped, 640x427"),
        "flower.jpg": (os.path.join(sk, "flower.jpg"), "scikit-learn flower.jpg as shipped, 640x427"),
        "rocket.jpg": (os.path.join(si, "rocket.jpg"), "scikit-image rocket.jpg as shipped, 427x640 (portrait)"),
        "hubble.jpg": (os.path.join(si, "hubble_deep_field.jpg"), "scikit-image hubble_deep_field.jpg as shipped, 1000x872"),
        "chelsea.png": (os.path.join(si, "chelsea.png"), "scikit-image chelsea.png as shipped, 451x300"),
        "coffee.png": (os.path.join(si, "coffee.png"), "scikit-image coffee.png as shipped, 600x400"),
        "astronaut.png": (os.path.join(si, "astronaut.png"), "scikit-image astronaut.png as shipped, 512x512"),
        "camera.png": (os.path.join(si, "camera.png"), "scikit-image camera.png as shipped, grayscale 512x512"),
        "motorcycle.png": (os.path.join(si, "motorcycle_left.png"), "scikit-image motorcycle_left.png as shipped, 741x500"),
    }
    out = {name: (open(path, "rb").read(), note) for name, (path, note) in shipped.items()}

    def rgb(name):
        return Image.open(io.BytesIO(out[name][0])).convert("RGB")

    chelsea, coffee, astronaut = rgb("chelsea.png"), rgb("coffee.png"), rgb("astronaut.png")
    camera = Image.open(io.BytesIO(out["camera.png"][0])).convert("L")
    out["chelsea_q90.jpg"] = (_pil(chelsea, "JPEG", quality=90), "chelsea re-encoded by PIL: JPEG quality 90, 4:2:0")
    out["coffee_q85_422.jpg"] = (_pil(coffee, "JPEG", quality=85, subsampling=1), "coffee: JPEG quality 85, 4:2:2")
    out["astronaut_q70_progressive_444.jpg"] = (
        _pil(astronaut, "JPEG", quality=70, progressive=True, subsampling=0), "astronaut: JPEG progressive, quality 70, 4:4:4")
    out["camera_gray_q80.jpg"] = (_pil(camera, "JPEG", quality=80), "camera: grayscale JPEG quality 80")
    out["coffee_cmyk_q90.jpg"] = (_pil(coffee.convert("CMYK"), "JPEG", quality=90), "coffee: CMYK JPEG (Adobe marker), quality 90")
    out["camera_gray16.png"] = (_pil(Image.fromarray(np.asarray(camera).astype(np.uint16) * 257 + 3), "PNG"),
                                "camera: 16-bit grayscale PNG (TensorFlow keeps the high byte)")
    out["flower_palette.png"] = (_pil(Image.open(io.BytesIO(out["flower.jpg"][0])).convert("RGB").quantize(180), "PNG"),
                                 "flower: 8-bit palette PNG (180 colours)")
    small = chelsea.resize((57, 38), Image.LANCZOS)
    out["chelsea_small.png"] = (_pil(small, "PNG"), "chelsea at 57x38 (PIL LANCZOS), PNG: every target upscales it")
    out["chelsea_small_q95.jpg"] = (_pil(small, "JPEG", quality=95), "the same, JPEG quality 95, 4:2:0")
    out["coffee_odd.png"] = (_pil(coffee.crop((13, 7, 13 + 333, 7 + 217)), "PNG"), "coffee cropped to 333x217 (odd sides), PNG")
    return out


def targets(width, height):
    """Two targets per photo: a square one and a wide one; both upscale the small photos."""
    return [(96, 96), (75, 130)]


def direct(contents, size, method, crop):
    import tensorflow as tf
    from keras.src.backend import tensorflow as tf_backend
    from keras.src.utils import image_utils

    img = tf.io.decode_image(contents, channels=3, expand_animations=False)
    if crop:
        img = image_utils.smart_resize(img, size, interpolation=method, backend_module=tf_backend)
    else:
        img = tf.image.resize(img, size, method=method)
    return np.asarray(img, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import keras
    import tensorflow as tf

    out = args.out
    os.makedirs(os.path.join(out, "photos"), exist_ok=True)
    os.makedirs(os.path.join(out, "expected"), exist_ok=True)
    manifest = {"tensorflow": tf.__version__, "keras": keras.__version__, "photos": [], "cases": []}
    sources = photos()
    for name in sorted(sources):
        data, note = sources[name]
        path = os.path.join(out, "photos", name)
        with open(path, "wb") as f:
            f.write(data)
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
        stem = name.rsplit(".", 1)[0] + "." + name.rsplit(".", 1)[1]
        np.save(os.path.join(out, "expected", f"{stem}.decoded.npy"), decoded)
        manifest["photos"].append({"file": f"photos/{name}", "note": note, "height": int(decoded.shape[0]),
                                   "width": int(decoded.shape[1]), "decoded": f"expected/{stem}.decoded.npy"})

    folder = os.path.join(out, "photos")
    for (h, w) in targets(0, 0):
        for method in METHODS:
            for crop in (False, True):
                mode = f"tf-{method}" + ("-crop" if crop else "")
                ds = keras.utils.image_dataset_from_directory(
                    folder, labels=None, image_size=(h, w), interpolation=method, crop_to_aspect_ratio=crop,
                    shuffle=False, batch_size=None, verbose=False)
                paths = list(ds.file_paths)
                for path, element in zip(paths, ds):
                    name = os.path.basename(path)
                    got = np.asarray(element, dtype=np.float32)
                    want = direct(sources[name][0], (h, w), method, crop)
                    if got.shape != (h, w, 3) or not np.array_equal(got, want):
                        raise SystemExit(f"{name} {mode} {h}x{w}: image_dataset_from_directory differs from "
                                         f"tf.image.resize(decode_image) by {np.abs(got - want).max()}")
                    rel = f"expected/{name}.{mode}.{h}x{w}.npy"
                    np.save(os.path.join(out, rel), got)
                    manifest["cases"].append({"photo": f"photos/{name}", "resize": mode, "height": h, "width": w,
                                              "expected": rel})
                log(f"{mode} {h}x{w}: {len(paths)} photos")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    log(f"{len(manifest['cases'])} cases, {len(manifest['photos'])} photos in {out}")


if __name__ == "__main__":
    main()
