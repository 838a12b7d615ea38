#!/usr/bin/env python3
"""Writes the image test fixtures: real photos that ship in scikit-learn and scikit-image, re-encoded by
PIL (and a small PNG writer below for the layouts PIL cannot write) into JPEG and PNG variants, with the
pixel arrays that PIL, Keras' load_img and torchvision's resize + centre crop produce for each, and a set
of broken files with what PIL says about them. Python is used only for test fixtures.

Two sets, same recipes:

    python scripts/make_image_fixtures.py --samples samples/images   # small (photos <= 80 px), committed
    python scripts/make_image_fixtures.py --out DIR [--model M.h5]   # full size, cached by
                                                                     # scripts/fixtures-images

--samples also writes the Keras predictions of the committed mini model (samples/mini/nested_mini_k3.h5)
on every sample image; --model does the same for a full-size model (the fixture ResNet-50). Every Keras
pixel tensor is checked against the direct PIL computation, so the .npy arrays are both. The output is
deterministic: rerunning rewrites every file byte for byte.
"""
import argparse
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import warnings
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

_T0 = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(msg):
    print(f"[make_image_fixtures {time.time() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Source photos (shipped inside the scikit-learn and scikit-image wheels)


def source_photos():
    """name -> (PIL image, where it comes from). Only photos that the packages ship, no downloads."""
    import skimage
    import sklearn

    sk = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images")
    si = os.path.join(os.path.dirname(skimage.__file__), "data")
    files = {
        "chelsea": os.path.join(si, "chelsea.png"),       # cat, RGB 451x300
        "coffee": os.path.join(si, "coffee.png"),         # RGB 600x400
        "astronaut": os.path.join(si, "astronaut.png"),   # RGB 512x512
        "camera": os.path.join(si, "camera.png"),         # grayscale 512x512
        "rocket": os.path.join(si, "rocket.jpg"),         # RGB 427x640 (portrait)
        "china": os.path.join(sk, "china.jpg"),           # RGB 640x427
        "flower": os.path.join(sk, "flower.jpg"),         # RGB 640x427
        "motorcycle": os.path.join(si, "motorcycle_left.png"),
        "hubble": os.path.join(si, "hubble_deep_field.jpg"),
        "retina": os.path.join(si, "retina.jpg"),
    }
    out = {}
    for name, path in files.items():
        pkg = "scikit-learn" if path.startswith(sk) else "scikit-image"
        im = Image.open(path)
        im.load()
        out[name] = (im, path, f"{pkg} {os.path.basename(path)}")
    return out


def shrink(im, longest):
    """The photo with its longer side `longest` (LANCZOS), mode kept (RGB or L)."""
    w, h = im.size
    s = longest / max(w, h)
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)


# ---------------------------------------------------------------------------------------------------
# A small PNG writer for what PIL cannot write: 16-bit RGB/RGBA/LA, 1/2/4-bit gray, low-bit palettes
# with tRNS, Adam7 interlacing.


def _chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _pack_rows(a, depth):
    """Scanlines (filter byte 0) of a [h, w] or [h, w, c] integer array at `depth` bits per sample."""
    rows = []
    for r in a:
        if depth < 8:
            r = r.reshape(-1).astype(np.uint8)
            per = 8 // depth
            pad = (-len(r)) % per
            r = np.concatenate([r, np.zeros(pad, np.uint8)]).reshape(-1, per)
            b = np.zeros(len(r), np.uint16)
            for i in range(per):
                b = (b << depth) | r[:, i]
            data = b.astype(np.uint8).tobytes()
        elif depth == 8:
            data = r.astype(np.uint8).tobytes()
        else:
            data = r.astype(">u2").tobytes()
        rows.append(b"\x00" + data)
    return b"".join(rows)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_bytes(a, color_type, depth, palette=None, trns=None, interlace=False, gamma=None):
    h, w = a.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    chunks = [_chunk(b"IHDR", ihdr)]
    if gamma is not None:
        chunks.append(_chunk(b"gAMA", struct.pack(">I", int(round(gamma * 100000)))))
    if palette is not None:
        chunks.append(_chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1))))
    if trns is not None:
        chunks.append(_chunk(b"tRNS", trns))
    if interlace:
        raw = b"".join(_pack_rows(a[y0::dy, x0::dx], depth) for x0, y0, dx, dy in ADAM7
                       if a[y0::dy, x0::dx].size)
    else:
        raw = _pack_rows(a, depth)
    chunks.append(_chunk(b"IDAT", zlib.compress(raw, 9)))
    chunks.append(_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


# ---------------------------------------------------------------------------------------------------
# Encodings: name suffix -> (description, function(photo RGB, photo gray, rng) -> bytes)


def _pil(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def _wide(a8, rng):
    """8-bit samples to 16-bit with a varying low byte (PIL keeps the high byte: the low one must not matter;
    a decoder that rounds v·255/65535 instead would differ on most values)."""
    low = (np.arange(a8.shape[1], dtype=np.uint16) * 7 + 0xA5) & 0xFF
    low = low.reshape((1, -1) + (1,) * (a8.ndim - 2))
    return a8.astype(np.uint16) * 256 + low


def _alpha(h, w):
    """A diagonal alpha ramp 0..255 (compositing would change the colours; dropping it does not)."""
    y, x = np.mgrid[0:h, 0:w]
    return ((x + y) * 255 // max(1, h + w - 2)).astype(np.uint8)


ENCODINGS = {
    # JPEG (PIL/libjpeg-turbo encoder)
    "q90.jpg": ("JPEG baseline, quality 90, 4:2:0", lambda rgb, g, r: _pil(rgb, "JPEG", quality=90)),
    "q50.jpg": ("JPEG baseline, quality 50, 4:2:0", lambda rgb, g, r: _pil(rgb, "JPEG", quality=50)),
    "q95_444.jpg": ("JPEG baseline, quality 95, 4:4:4", lambda rgb, g, r: _pil(rgb, "JPEG", quality=95, subsampling=0)),
    "q85_422.jpg": ("JPEG baseline, quality 85, 4:2:2", lambda rgb, g, r: _pil(rgb, "JPEG", quality=85, subsampling=1)),
    "q75_progressive.jpg": ("JPEG progressive, quality 75, 4:2:0",
                            lambda rgb, g, r: _pil(rgb, "JPEG", quality=75, progressive=True)),
    "q60_progressive_444.jpg": ("JPEG progressive, quality 60, 4:4:4",
                                lambda rgb, g, r: _pil(rgb, "JPEG", quality=60, progressive=True, subsampling=0)),
    "gray_q80.jpg": ("JPEG grayscale (1 component), quality 80", lambda rgb, g, r: _pil(g, "JPEG", quality=80)),
    "cmyk_q90.jpg": ("JPEG CMYK (Adobe, inverted), quality 90",
                     lambda rgb, g, r: _pil(rgb.convert("CMYK"), "JPEG", quality=90)),
    # PNG written by PIL (adaptive row filters)
    "rgb.png": ("PNG RGB 8-bit", lambda rgb, g, r: _pil(rgb, "PNG")),
    "rgba.png": ("PNG RGBA 8-bit, alpha ramp",
                 lambda rgb, g, r: _pil(Image.fromarray(np.dstack([np.asarray(rgb), _alpha(rgb.height, rgb.width)]), "RGBA"), "PNG")),
    "gray.png": ("PNG grayscale 8-bit", lambda rgb, g, r: _pil(g, "PNG")),
    "palette.png": ("PNG palette 8-bit (PIL quantize, 200 colours)", lambda rgb, g, r: _pil(rgb.quantize(200), "PNG")),
    "palette16.png": ("PNG palette 4-bit (PIL quantize, 16 colours)", lambda rgb, g, r: _pil(rgb.quantize(16), "PNG")),
    "gray16.png": ("PNG grayscale 16-bit (PIL I;16: values 0..765, PIL clips at 255)",
                   lambda rgb, g, r: _pil(Image.fromarray((np.asarray(g).astype(np.uint16) * 3)), "PNG")),
    # PNG written by png_bytes (layouts PIL does not write)
    "rgb16.png": ("PNG RGB 16-bit, low bytes varying (PIL keeps the high byte)",
                  lambda rgb, g, r: png_bytes(_wide(np.asarray(rgb), r), 2, 16)),
    "rgba16.png": ("PNG RGBA 16-bit, alpha ramp",
                   lambda rgb, g, r: png_bytes(_wide(np.dstack([np.asarray(rgb), _alpha(rgb.height, rgb.width)]), r), 6, 16)),
    "la.png": ("PNG gray+alpha 8-bit", lambda rgb, g, r: png_bytes(np.dstack([np.asarray(g), _alpha(g.height, g.width)]), 4, 8)),
    "la16.png": ("PNG gray+alpha 16-bit",
                 lambda rgb, g, r: png_bytes(_wide(np.dstack([np.asarray(g), _alpha(g.height, g.width)]), r), 4, 16)),
    "gray4.png": ("PNG grayscale 4-bit", lambda rgb, g, r: png_bytes(np.asarray(g) >> 4, 0, 4)),
    "gray2.png": ("PNG grayscale 2-bit", lambda rgb, g, r: png_bytes(np.asarray(g) >> 6, 0, 2)),
    "gray1.png": ("PNG grayscale 1-bit (threshold 128)", lambda rgb, g, r: png_bytes(np.asarray(g) >> 7, 0, 1)),
    "palette4_trns.png": ("PNG palette 4-bit, 12 entries, tRNS, indices up to 15 (past the palette: black in PIL)",
                          lambda rgb, g, r: _palette4(rgb)),
    "interlaced.png": ("PNG RGB 8-bit, Adam7 interlaced, gAMA 1.0 (ignored by PIL)",
                       lambda rgb, g, r: png_bytes(np.asarray(rgb), 2, 8, interlace=True, gamma=1.0)),
    "gray_interlaced_trns.png": ("PNG grayscale 8-bit, Adam7 interlaced, tRNS",
                                 lambda rgb, g, r: png_bytes(np.asarray(g), 0, 8, interlace=True, trns=b"\x00\x80")),
}


def _palette4(rgb):
    q = rgb.quantize(16)
    idx = np.asarray(q).astype(np.uint8)
    pal = np.asarray(q.getpalette()[:36], np.uint8).reshape(12, 3)   # only 12 of the 16 entries
    return png_bytes(idx, 3, 4, palette=pal, trns=bytes(range(0, 240, 20)))


# Which encodings each photo gets: (photo, longest side in the samples or None for full size, encodings).
SAMPLE_PLAN = [
    ("chelsea", 80, ["q90.jpg", "q75_progressive.jpg", "rgb.png", "interlaced.png"]),
    ("china", 76, ["q50.jpg", "q95_444.jpg"]),
    ("flower", 74, ["q85_422.jpg", "palette.png", "palette4_trns.png"]),
    ("coffee", 78, ["cmyk_q90.jpg", "rgb16.png", "rgba16.png"]),
    ("astronaut", 64, ["rgba.png", "q60_progressive_444.jpg"]),
    ("camera", 60, ["gray_q80.jpg", "gray.png", "gray16.png", "gray4.png", "gray2.png", "gray1.png",
                    "la.png", "la16.png", "gray_interlaced_trns.png"]),
    ("rocket", 72, ["q90.jpg", "palette16.png"]),
]
FULL_PLAN = [
    ("chelsea", None, ["q90.jpg", "q75_progressive.jpg", "rgb.png", "interlaced.png", "rgba.png"]),
    ("china", None, ["q50.jpg", "q95_444.jpg", "q85_422.jpg", "rgb16.png"]),
    ("flower", None, ["q85_422.jpg", "palette.png", "palette4_trns.png", "q60_progressive_444.jpg"]),
    ("coffee", None, ["cmyk_q90.jpg", "rgb16.png", "rgba16.png", "q90.jpg"]),
    ("astronaut", None, ["rgba.png", "q60_progressive_444.jpg", "q50.jpg"]),
    ("camera", None, ["gray_q80.jpg", "gray.png", "gray16.png", "gray4.png", "gray2.png", "gray1.png",
                      "la.png", "la16.png", "gray_interlaced_trns.png"]),
    ("rocket", None, ["q90.jpg", "palette16.png", "q75_progressive.jpg"]),
    ("motorcycle", None, ["q95_444.jpg", "rgb.png"]),
    ("hubble", None, ["q90.jpg"]),
    ("retina", None, ["q85_422.jpg"]),
]
# The photos as the packages ship them (JPEGs from other encoders), full set only.
ORIGINALS = ["china", "flower", "rocket", "hubble", "retina"]

# Target sizes (height, width). Samples: small; full: the ResNet-50 input.
SAMPLE_TARGETS = {"keras": [(40, 56)], "keras_up": (60, 90), "torchvision": (48, 40, 40)}
FULL_TARGETS = {"keras": [(224, 224), (160, 192)], "keras_up": None, "torchvision": (256, 224, 224)}
# Images that also get an upscaling target in the samples.
UPSCALE = {"chelsea_q90.jpg", "coffee_rgb16.png"}


# ---------------------------------------------------------------------------------------------------
# References


def pil_rgb(path):
    """PIL's decode + convert("RGB"), exactly Keras' load_img before resizing."""
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        rgb = im.convert("RGB") if im.mode != "RGB" else im.copy()
    return rgb, mode


def torchvision_resized_size(h, w, size):
    """torchvision.transforms.functional._compute_resized_output_size for an int size (max_size None)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w


def torchvision_center_crop(im, ch, cw):
    """torchvision.transforms.functional.center_crop on a PIL image (pads with 0 when the crop is larger)."""
    w, h = im.size
    if cw > w or ch > h:
        pad = [(cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0,
               (cw - w + 1) // 2 if cw > w else 0, (ch - h + 1) // 2 if ch > h else 0]
        canvas = Image.new(im.mode, (w + pad[0] + pad[2], h + pad[1] + pad[3]), 0)
        canvas.paste(im, (pad[0], pad[1]))
        im = canvas
        w, h = im.size
        if cw == w and ch == h:
            return im
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return im.crop((left, top, left + cw, top + ch))


def torchvision_pipeline(rgb, shorter, ch, cw):
    """transforms.Compose([Resize(shorter), CenterCrop((ch, cw))]) on a PIL RGB image (bilinear, PIL)."""
    nh, nw = torchvision_resized_size(rgb.height, rgb.width, shorter)
    if (nh, nw) != (rgb.height, rgb.width):
        rgb = rgb.resize((nw, nh), Image.BILINEAR)
    return torchvision_center_crop(rgb, ch, cw)


def keras_load(keras, path, h, w, interpolation):
    """keras.utils.load_img(path, target_size=(h, w), interpolation=...) + img_to_array (float32)."""
    img = keras.utils.load_img(path, target_size=(h, w), interpolation=interpolation)
    return keras.utils.img_to_array(img)


# ---------------------------------------------------------------------------------------------------
# Broken files


def broken_files(good_jpeg, good_png):
    """name -> (bytes, expected Kiln error kind, note)."""
    huge_png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + \
        _chunk(b"IDAT", zlib.compress(b"\x00" * 301)) + _chunk(b"IEND", b"")
    # A valid JPEG whose SOF0 claims 60000 x 60000.
    j = bytearray(good_jpeg)
    sof = j.find(b"\xff\xc0")
    struct.pack_into(">HH", j, sof + 5, 60000, 60000)
    # A PNG with one IDAT byte changed (CRC mismatch).
    p = bytearray(good_png)
    idat = p.find(b"IDAT")
    p[idat + 4 + 10] ^= 0xFF
    gif = _pil(Image.new("RGB", (8, 8), (200, 30, 30)), "GIF")
    return {
        "truncated.jpg": (good_jpeg[: len(good_jpeg) * 6 // 10], "truncated", "the first 60% of a baseline JPEG"),
        "truncated.png": (good_png[: len(good_png) * 6 // 10], "truncated", "the first 60% of an RGB PNG"),
        "empty.jpg": (b"", "empty", "0 bytes"),
        "not_an_image.jpg": (b"This is a text file with a .jpg name.\n", "not-an-image", "text"),
        "huge_header.png": (huge_png, "too-large", "IHDR claims 100000 x 100000 RGB"),
        "huge_header.jpg": (bytes(j), "too-large", "SOF0 claims 60000 x 60000"),
        "bad_crc.png": (bytes(p), "corrupt", "one IDAT byte flipped: CRC mismatch"),
        "image.gif": (gif, "unsupported", "a GIF"),
    }


def pil_verdict(path):
    """What PIL (as Keras uses it) says: None when it decodes, else the exception."""
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
        with Image.open(path) as im:
            im.load()
            im.convert("RGB")
        return None
    except Exception as e:  # noqa: BLE001 -- recording whatever PIL raises
        return f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------------------------------------------
# Writing


def frameworks():
    warnings.filterwarnings("ignore")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    tf.get_logger().setLevel("ERROR")
    import keras

    return keras


def save_u8(path, a):
    a = np.asarray(a)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3, (path, a.dtype, a.shape)
    np.save(path, np.ascontiguousarray(a))


def write_set(out, plan, targets, samples, keras, model_path):
    photos = source_photos()
    os.makedirs(os.path.join(out, "photos"))
    os.makedirs(os.path.join(out, "broken"))
    os.makedirs(os.path.join(out, "expected"))
    rng = np.random.default_rng(20261129)
    manifest = {"pillow": Image.__version__, "keras": keras.__version__, "images": [], "broken": []}
    files = []
    for name, longest, encs in plan:
        im, _, origin = photos[name]
        im = im.convert("RGB") if im.mode not in ("RGB", "L") else im
        base = shrink(im, longest) if longest else im
        rgb, gray = base.convert("RGB"), base.convert("L")
        for enc in encs:
            desc, make = ENCODINGS[enc]
            files.append((f"{name}_{enc}", make(rgb, gray, rng), desc, origin))
    if not samples:
        for name in ORIGINALS:
            _, path, origin = photos[name]
            with open(path, "rb") as f:
                files.append((f"{name}_original{os.path.splitext(path)[1]}", f.read(), "as shipped by the package", origin))

    for fname, data, desc, origin in files:
        path = os.path.join(out, "photos", fname)
        with open(path, "wb") as f:
            f.write(data)
        rgb, mode = pil_rgb(path)
        stem = os.path.splitext(fname)[0]
        entry = {"file": f"photos/{fname}", "source": origin, "encoding": desc, "pil_mode": mode,
                 "width": rgb.width, "height": rgb.height, "decoded": f"expected/{stem}.decoded.npy", "resized": []}
        save_u8(os.path.join(out, entry["decoded"]), np.asarray(rgb))
        sizes = list(targets["keras"])
        if samples and fname in UPSCALE:
            sizes.append(targets["keras_up"])
        for h, w in sizes:
            for mode_name, interp, filt in (("keras-nearest", "nearest", Image.NEAREST),
                                            ("keras-bilinear", "bilinear", Image.BILINEAR)):
                direct = np.asarray(rgb.resize((w, h), filt) if rgb.size != (w, h) else rgb)
                via_keras = keras_load(keras, path, h, w, interp)
                assert via_keras.dtype == np.float32 and np.array_equal(via_keras, direct.astype(np.float32)), fname
                rel = f"expected/{stem}.{mode_name}_{h}x{w}.npy"
                save_u8(os.path.join(out, rel), direct)
                entry["resized"].append({"resize": mode_name, "height": h, "width": w, "expected": rel})
        shorter, ch, cw = targets["torchvision"]
        tv = np.asarray(torchvision_pipeline(rgb, shorter, ch, cw))
        rel = f"expected/{stem}.torchvision_{shorter}_{ch}x{cw}.npy"
        save_u8(os.path.join(out, rel), tv)
        entry["resized"].append({"resize": "torchvision", "resize_shorter": shorter, "height": ch, "width": cw,
                                 "expected": rel})
        manifest["images"].append(entry)
    log(f"{len(files)} images with their PIL and Keras references")

    good_jpeg = next(d for f, d, _, _ in files if f.endswith("_q90.jpg"))
    good_png = next(d for f, d, _, _ in files if f.endswith("_rgb.png"))
    for fname, (data, kind, note) in broken_files(good_jpeg, good_png).items():
        path = os.path.join(out, "broken", fname)
        with open(path, "wb") as f:
            f.write(data)
        verdict = pil_verdict(path)
        # PIL refuses every one of them except the GIF, which Kiln refuses as a format it does not read.
        assert (verdict is None) == (kind == "unsupported"), f"PIL on broken/{fname}: {verdict}"
        verdict = verdict and verdict.replace(path, f"broken/{fname}")
        manifest["broken"].append({"file": f"broken/{fname}", "kind": kind, "note": note, "pil": verdict})
    log(f"{len(manifest['broken'])} broken files")

    if model_path:
        h, w = targets["keras"][0]
        model = keras.models.load_model(model_path, compile=False)
        x = np.stack([keras_load(keras, os.path.join(out, e["file"]), h, w, "nearest") for e in manifest["images"]])
        x = keras.applications.resnet50.preprocess_input(x.copy())
        y = np.asarray(model.predict(x, batch_size=8, verbose=0), np.float32)
        rel = f"expected/predictions.{os.path.basename(model_path)}.keras-nearest_{h}x{w}.npy"
        np.save(os.path.join(out, rel), y)
        manifest["predictions"] = {"model": os.path.relpath(model_path, ROOT) if samples else os.path.basename(model_path),
                                   "resize": "keras-nearest", "height": h, "width": w,
                                   "preprocessing": "caffe", "expected": rel,
                                   "top1": [int(i) for i in y.argmax(axis=1)]}
        log(f"Keras predictions of {os.path.basename(model_path)} on {len(x)} images: {y.shape}")

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--samples", help="write the small committed set into this folder (its generated parts replaced)")
    g.add_argument("--out", help="write the full-size set into this (empty) folder")
    ap.add_argument("--model", help="a Keras model file: also write its predictions on every image")
    args = ap.parse_args()
    keras = frameworks()
    if args.samples:
        dest = os.path.abspath(args.samples)
        os.makedirs(dest, exist_ok=True)
        # Generated outside the repository (an interrupted run leaves nothing there), then moved in.
        tmp = tempfile.mkdtemp(prefix="kiln-images-")
        try:
            model = args.model or os.path.join(ROOT, "samples", "mini", "nested_mini_k3.h5")
            write_set(tmp, SAMPLE_PLAN, SAMPLE_TARGETS, True, keras, model)
            for part in ("photos", "broken", "expected", "manifest.json"):
                old = os.path.join(dest, part)
                if os.path.isdir(old):
                    shutil.rmtree(old)
                elif os.path.exists(old):
                    os.remove(old)
                shutil.move(os.path.join(tmp, part), old)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        write_set(args.out, FULL_PLAN, FULL_TARGETS, False, keras, args.model)
    log("done")


if __name__ == "__main__":
    main()
