#!/usr/bin/env python3
"""Writes the trained-model fixtures (scripts/fixtures-compact): a model whose weights were learnt, not drawn.

Real Keras 3 trains the mini ResNet-50 (the exact topology and layer names of keras.applications.ResNet50,
filter counts divided by 16) on scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10
classes), enlarged to 32x32 RGB. The held-out test set, its labels and Keras' own predictions are written
beside the model. Reduced-precision bundles (f16, bf16, int8) are judged on this model: random weights
amplify rounding far more than learnt ones do.

    PY=$(scripts/pyenv) && $PY scripts/make_compact_fixtures.py --out DIR
"""
import argparse
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import make_fixtures as mf  # noqa: E402
from make_fixtures import log  # noqa: E402

SIZE = 32


def digit_images():
    """scikit-learn's digits (0-16 grey levels) as uint8 RGB SIZE x SIZE pictures, PIL bilinear, and labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    out = np.empty((len(grey), SIZE, SIZE, 3), np.uint8)
    for i, g in enumerate(grey):
        big = np.asarray(Image.fromarray(g, "L").resize((SIZE, SIZE), Image.BILINEAR))
        out[i] = big[:, :, None]
    return out, d.target.astype(np.int64)


def stratified_split(labels, test_fraction, rng):
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test.extend(idx[: int(round(len(idx) * test_fraction))])
    test = np.sort(np.array(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def rounded(a, storage):
    """`a` stored as `storage` and widened back, as numpy does it (an independent check of Kiln's encoders):
    binary16 and bfloat16 round to nearest even; int8 is symmetric per output channel (the last axis)."""
    import tensorflow as tf

    if storage == "f16":
        return a.astype(np.float16).astype(np.float32)
    if storage == "bf16":
        return tf.cast(tf.cast(a, tf.bfloat16), tf.float32).numpy()
    scale = np.abs(a).max(axis=tuple(range(a.ndim - 1)), keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return (np.clip(np.rint(a / scale), -127, 127) * scale).astype(np.float32)


def keras_sensitivity(keras, path, x, labels, reference):
    """What storing the kernels in each reduced precision does to Keras' own predictions (BatchNormalization
    not folded, so the rounding falls on other numbers than Kiln's; a yardstick, not a reference)."""
    out = {}
    for storage in ("f16", "bf16", "int8"):
        model = keras.models.load_model(path, compile=False)
        for layer in model.layers:
            for v in layer.weights:
                if v.path.endswith("kernel"):
                    v.assign(rounded(v.numpy(), storage))
        probs = mf.predict(model, x)
        out[storage] = {"max_rel_error": float(np.abs(probs - reference).max() / np.abs(reference).max()),
                        "top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
                        "accuracy": float((probs.argmax(1) == labels).mean())}
        log(f"  Keras with {storage} kernels: {out[storage]}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tf, keras, _ = mf.frameworks()

    images, labels = digit_images()
    rng = np.random.default_rng(20261201)
    train, test = stratified_split(labels, 0.2, rng)
    x = mf.preprocess(keras, images)
    log(f"digits: {len(labels)} images {SIZE}x{SIZE}, train {len(train)}, test {len(test)}")

    model = mf.build_resnet50(keras, width_div=16, include_top=True, classes=10, input_shape=(SIZE, SIZE, 3),
                              name="digits_mini_resnet50")
    for layer in model.layers:  # moving statistics that settle within a short training run (Keras' default: 0.99)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[train], labels[train], batch_size=64, epochs=args.epochs, shuffle=True, verbose=0,
                        validation_data=(x[test], labels[test]))
    for e, (a, va) in enumerate(zip(history.history["accuracy"], history.history["val_accuracy"])):
        log(f"  epoch {e + 1}: train accuracy {a:.3f}, test accuracy {va:.3f}")

    path = os.path.join(args.out, "digits_mini_k3.h5")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    probs = mf.predict(loaded, x[test])
    accuracy = float((probs.argmax(axis=1) == labels[test]).mean())
    log(f"saved {path}: Keras test accuracy {accuracy:.4f}")
    if accuracy < 0.8:
        raise AssertionError(f"the trained sample model reaches only {accuracy:.3f} on its test set")
    sensitivity = keras_sensitivity(keras, path, x[test], labels[test], probs)
    np.save(os.path.join(args.out, "test_x.npy"), x[test])
    np.save(os.path.join(args.out, "test_labels.npy"), labels[test].astype(np.float32))
    np.save(os.path.join(args.out, "test_keras_probs.npy"), probs)
    with open(os.path.join(args.out, "manifest.json"), "w") as fh:
        json.dump({"model": "digits_mini_k3.h5", "input": "test_x.npy", "labels": "test_labels.npy",
                   "keras_probs": "test_keras_probs.npy", "keras_test_accuracy": accuracy,
                   "keras_rounded_kernels": sensitivity, "train_images": int(len(train)), "test_images": int(len(test)), "epochs": args.epochs,
                   "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}, fh, indent=1)


if __name__ == "__main__":
    main()
