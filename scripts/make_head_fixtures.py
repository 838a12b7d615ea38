#!/usr/bin/env python3
"""Writes the classifier-head fixtures: a small seeded Keras 3 backbone (two convolutions and a global average
pool, taking raw 0..255 RGB), the heads that the tutorials end with, each as a separate head file (for
`kiln fuse`) and joined to the backbone as one whole model (for `kiln convert`), and Keras' outputs on the pixels
`keras.utils.image_dataset_from_directory(image_size=(32, 32))` (tf-bilinear) makes of a few committed photos:

    head              last layers                    output.kind
    binary_logit      Dense(1)                       binary-logit
    binary_sigmoid    Dense(1, sigmoid)              binary-probability
    binary_activation Dense(1), Activation(sigmoid)  binary-probability
    logits            Dense(4)                       logits
    softmax           Dense(4, softmax)              probabilities
    multilabel        Dense(4, sigmoid)              multi-label

Files: backbone.h5, head_NAME.h5, whole_NAME.h5, photos/class/*.jpg|png, x.npy (the photos' pixels, [N, 32, 32, 3],
in file order), y_NAME.npy (Keras' output on x), labels2.txt / labels4.txt, manifest.json (photos in order, heads
with their expected kind and label file). Dense weights are scaled by the backbone features' spread so that
logits land in about -3..3 (sigmoids and softmaxes that do not saturate). Python is used only for fixtures.

    python scripts/make_head_fixtures.py --out DIR       # cached by scripts/fixtures-heads
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PHOTOS = ["chelsea_q90.jpg", "china_q50.jpg", "coffee_rgb16.png", "flower_q85_422.jpg", "rocket_q90.jpg",
          "astronaut_rgba.png", "camera_gray_q80.jpg"]
HEADS = {
    "binary_logit": (1, [("dense", None)], "binary-logit"),
    "binary_sigmoid": (1, [("dense", "sigmoid")], "binary-probability"),
    "binary_activation": (1, [("dense", None), ("activation", "sigmoid")], "binary-probability"),
    "logits": (4, [("dense", None)], "logits"),
    "softmax": (4, [("dense", "softmax")], "probabilities"),
    "multilabel": (4, [("dense", "sigmoid")], "multi-label"),
}
SIZE = (32, 32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(16)
    rng = np.random.default_rng(16)
    photos_dir = os.path.join(out, "photos", "class")
    os.makedirs(photos_dir, exist_ok=True)
    for p in PHOTOS:
        shutil.copyfile(os.path.join(ROOT, "samples", "images", "photos", p), os.path.join(photos_dir, p))
    ds = keras.utils.image_dataset_from_directory(os.path.join(out, "photos"), labels=None, image_size=SIZE,
                                                  interpolation="bilinear", shuffle=False, batch_size=None, verbose=False)
    files = [os.path.relpath(f, out) for f in ds.file_paths]
    x = np.stack([np.asarray(e, np.float32) for e in ds])
    np.save(os.path.join(out, "x.npy"), x)

    inp = keras.Input((None, None, 3), name="image")
    h = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
    feat = keras.layers.GlobalAveragePooling2D(name="avg_pool")(h)
    backbone = keras.Model(inp, feat, name="tiny_backbone")
    for layer in backbone.layers:
        if layer.weights:
            k, b = layer.get_weights()
            layer.set_weights([(rng.normal(size=k.shape) * 0.02).astype(np.float32),
                               (rng.normal(size=b.shape) * 0.5).astype(np.float32)])
    backbone.save(os.path.join(out, "backbone.h5"))
    f = backbone.predict(x, verbose=0)
    mean, std = f.mean(axis=0), f.std(axis=0) + 1e-3

    with open(os.path.join(out, "labels2.txt"), "w") as fh:
        fh.write("cat\ndog\n")
    with open(os.path.join(out, "labels4.txt"), "w") as fh:
        fh.write("red\ngreen\nblue\ngray\n")
    manifest = {"photos": files, "size": list(SIZE), "resize": "tf-bilinear", "heads": []}
    for name, (units, layers, kind) in HEADS.items():
        w = (rng.normal(size=(f.shape[1], units)) / std[:, None] * 0.8).astype(np.float32)
        b = (-(mean / std) @ (w * std[:, None]) + rng.normal(size=units) * 0.3).astype(np.float32)
        hin = keras.Input((f.shape[1],), name="features")
        y = hin
        for i, (what, act) in enumerate(layers):
            if what == "dense":
                dense = keras.layers.Dense(units, activation=act, name="predictions" if i == len(layers) - 1 else "logit")
                y = dense(y)
                dense.set_weights([w, b])
            else:
                y = keras.layers.Activation(act, name="predictions")(y)
        head = keras.Model(hin, y, name=f"head_{name}")
        head.save(os.path.join(out, f"head_{name}.h5"))
        whole = keras.Model(inp, head(backbone(inp)), name=f"whole_{name}")
        whole.save(os.path.join(out, f"whole_{name}.h5"))
        out_y = whole.predict(x, verbose=0).astype(np.float32)
        np.save(os.path.join(out, f"y_{name}.npy"), out_y)
        manifest["heads"].append({"name": name, "kind": kind, "units": units,
                                  "labels": "labels2.txt" if units == 1 else "labels4.txt",
                                  "head": f"head_{name}.h5", "whole": f"whole_{name}.h5", "expected": f"y_{name}.npy"})
        print(f"{name}: output range {out_y.min():.3f}..{out_y.max():.3f}", file=sys.stderr)
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
    print(f"keras {keras.__version__}, tensorflow {tf.__version__}: {len(HEADS)} heads in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
