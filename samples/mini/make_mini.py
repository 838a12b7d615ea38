#!/usr/bin/env python3
"""Writes the small committed Keras fixtures in samples/mini/ (see README.md there).

    PY=$(scripts/pyenv) && TF_CPP_MIN_LOG_LEVEL=3 $PY samples/mini/make_mini.py

"mini" is a ResNet-50 v1 with the exact topology and layer names of keras.applications.ResNet50 but
all filter counts divided by 16. Weights are seeded; BatchNormalization statistics are calibrated on
real activations and then perturbed. Helpers are shared with scripts/make_fixtures.py.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import make_fixtures as mf  # noqa: E402
from make_fixtures import log  # noqa: E402

KEEP = {"make_mini.py", "README.md"}


def build_ops(K):
    """A small functional model covering every other supported layer."""
    L = K.layers
    x_in = L.Input(shape=(15, 16, 3), name="image")
    # 'same' stride-2 conv: H=15 (odd) pads (1,1); W=16 (even) pads (0,1) -- TensorFlow puts the extra
    # padding at the end.
    x = L.Conv2D(8, 3, strides=2, padding="same", name="conv_same_s2")(x_in)                # 8x8x8
    x = L.BatchNormalization(center=False, epsilon=1.001e-5, name="bn_nocenter")(x)
    a = L.ReLU(name="relu_layer")(x)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv_nobias")(a)              # 8x8x8
    y = L.BatchNormalization(scale=False, epsilon=1.001e-5, name="bn_noscale")(y)
    y = L.Activation("linear", name="act_linear")(y)
    x = L.Add(name="add")([a, y])
    x = L.MaxPooling2D(3, strides=2, padding="same", name="maxpool_same")(x)               # 4x4x8
    x = L.ZeroPadding2D(padding=((1, 2), (0, 1)), name="zeropad_asym")(x)                   # 7x5x8
    x = L.Conv2D(12, 3, padding="valid", name="conv_valid")(x)                              # 5x3x12
    x = L.BatchNormalization(name="bn_default_eps")(x)                                      # eps 1e-3
    x = L.Activation("relu", name="act_relu")(x)
    x = L.AveragePooling2D(2, strides=1, padding="valid", name="avgpool_valid")(x)          # 4x2x12
    x = L.AveragePooling2D(3, strides=2, padding="same", name="avgpool_same")(x)            # 2x1x12
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(16, activation="relu", name="dense_relu")(x)
    x = L.Dropout(0.5, name="dropout")(x)
    x = L.Dense(6, activation="softmax", name="predictions")(x)
    return K.Model(x_in, x, name="ops")


def build_unsupported(keras):
    L = keras.layers
    x_in = L.Input(shape=(8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="conv")(x_in)
    x = L.LayerNormalization(name="layer_norm")(x)
    x = L.Conv2DTranspose(4, 3, strides=2, name="deconv")(x)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(x_in, x, name="unsupported")


def write_not_keras(path):
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "plain HDF5 file, not written by Keras"
        f.create_dataset("data", data=rng.normal(size=(4, 8)).astype(np.float32))
        f.create_dataset("labels", data=np.arange(4, dtype=np.int64))
        g = f.create_group("group")
        g.attrs["layer_count"] = 3
        g.create_dataset("kernel", data=rng.normal(size=(3, 3, 3, 4)).astype(np.float32))


def generate(out):
    tf, keras, tf_keras = mf.frameworks()
    fx = mf.Fixtures(out)
    x64 = fx.add_input("input_64.npy", mf.preprocess(keras, mf.make_images(64, 2, 64, 64)))
    x48 = fx.add_input("input_48x80.npy", mf.preprocess(keras, mf.make_images(48, 1, 48, 80)))
    xops = fx.add_input("input_ops.npy", mf.preprocess(keras, mf.make_images(15, 2, 15, 16)))
    xcal = mf.preprocess(keras, mf.make_images(7, 4, 64, 64))
    inputs = {"input_64.npy": x64, "input_48x80.npy": x48}

    def mini(K, include_top):
        return mf.build_resnet50(K, width_div=16, include_top=include_top, pooling="avg", classes=10)

    log("mini ResNet-50 (filters / 16): init, calibrate BatchNormalization and head")
    top3, notop3 = mini(keras, True), mini(keras, False)
    rng = np.random.default_rng(16)
    mf.init_weights(top3, rng)
    n = mf.calibrate_bn(keras, top3, xcal, rng)
    feats = mf.features_model(keras, top3)
    mf.calibrate_head(top3.get_layer("predictions"), [mf.predict(feats, a) for a in (xcal, x64, x48)], rng)
    mf.copy_weights(top3, notop3)
    log(f"  calibrated {n} BatchNormalization layers; {top3.count_params()} parameters")
    ref_top = mf.reference_outputs(keras, top3, inputs)
    ref_notop = mf.reference_outputs(keras, notop3, inputs)
    for name, (y, _) in ref_top.items():
        top = mf.check_softmax_health(f"mini on {name}", y)
        log(f"  mini on {name}: top1 {np.argmax(y, 1).tolist()}, max prob {np.round(top, 3).tolist()}")

    top3.save(fx.path("mini_k3.h5"))
    notop3.save(fx.path("mini_notop_k3.h5"))
    mf.save_keras_zip(top3, fx.path("mini.keras"))
    top3.save_weights(fx.path("mini.weights.h5"))
    with open(fx.path("mini_config.json"), "w") as fh:
        fh.write(top3.to_json())

    top2, notop2 = mini(tf_keras, True), mini(tf_keras, False)
    mf.copy_weights(top3, top2)
    mf.copy_weights(top3, notop2)
    mf.save_k2(top2, fx.path("mini_k2.h5"))
    top2.save_weights(fx.path("mini_applications.h5"))
    notop2.save_weights(fx.path("mini_applications_notop.h5"))
    mf.vlen_split_copy(fx.path("mini_k2.h5"), fx.path("mini_k2_vlen_split.h5"))

    log("loading back and recording expected outputs")
    load3 = lambda p: keras.models.load_model(fx.path(p), compile=False)  # noqa: E731
    load2 = lambda p: tf_keras.models.load_model(fx.path(p), compile=False)  # noqa: E731
    fx.add_case("mini_k3.h5", "keras3-h5", mf.runner(keras, load3("mini_k3.h5")), inputs, ref_top)
    fx.add_case("mini_notop_k3.h5", "keras3-h5", mf.runner(keras, load3("mini_notop_k3.h5")), inputs,
                ref_notop, softmax=False)
    fx.add_case("mini_k2.h5", "keras2-h5", mf.runner(tf_keras, load2("mini_k2.h5")), inputs, ref_top)
    fx.add_case("mini.keras", "keras-zip", mf.runner(keras, load3("mini.keras")), inputs, ref_top)
    with open(fx.path("mini_config.json")) as fh:
        m = keras.models.model_from_json(fh.read())
    m.load_weights(fx.path("mini.weights.h5"))
    fx.add_case("mini.weights.h5", "weights-h5+config", mf.runner(keras, m), inputs, ref_top,
                config="mini_config.json")
    m = mini(tf_keras, True)
    m.load_weights(fx.path("mini_applications.h5"))
    fx.add_case("mini_applications.h5", "applications-h5", mf.runner(tf_keras, m), inputs, ref_top,
                notes="builtin ResNet-50 topology with every filter count / 16, include_top=True, 10 classes")
    m = mini(tf_keras, False)
    m.load_weights(fx.path("mini_applications_notop.h5"))
    fx.add_case("mini_applications_notop.h5", "applications-h5", mf.runner(tf_keras, m), inputs, ref_notop,
                softmax=False, notes="builtin ResNet-50 topology with every filter count / 16, include_top=False, "
                "pooling=avg")
    m = mini(keras, False)  # Keras 3 reads the applications layout too
    m.load_weights(fx.path("mini_applications_notop.h5"))
    mf.check_close("Keras 3 load_weights(mini_applications_notop.h5)", mf.predict(m, x64),
                   ref_notop["input_64.npy"][0])
    fx.add_case("mini_k2_vlen_split.h5", "keras2-h5", mf.runner(keras, load3("mini_k2_vlen_split.h5")),
                inputs, ref_top, notes="mini_k2.h5 with layer_names split into layer_names0..2 (0 and 2 "
                "fixed-length, 1 variable-length UTF-8), weight_names of conv1_conv and predictions fixed-length, "
                "of conv2_block1_0_bn and model_config variable-length UTF-8; loaded with Keras 3")
    mf.check_close("tf_keras load of mini_k2_vlen_split.h5",
                   mf.predict(load2("mini_k2_vlen_split.h5"), x64), ref_top["input_64.npy"][0])
    mf.check_close("Keras 3 load of mini_k2.h5", mf.predict(load3("mini_k2.h5"), x64), ref_top["input_64.npy"][0])

    log("nested: Sequential([mini notop (first 60% frozen), Dropout(0.3), Dense(5, softmax)])")
    mf.write_nested(fx, keras, tf_keras, lambda K: mini(K, False), notop3, 5, xcal, inputs,
                    "nested_mini_k3.h5", "nested_mini_k2.h5", "nested_mini.keras", seed=5)

    log("ops model")
    ops3 = build_ops(keras)
    rng = np.random.default_rng(99)
    mf.init_weights(ops3, rng)
    xcal_ops = mf.preprocess(keras, mf.make_images(8, 8, 15, 16))
    mf.calibrate_bn(keras, ops3, xcal_ops, rng)
    head = ops3.get_layer("predictions")
    head_in = keras.Model(ops3.inputs, head.input)
    mf.calibrate_head(head, [np.asarray(head_in(a)) for a in (xcal_ops, xops)], rng, spread=2.0)
    ref_ops = {"input_ops.npy": (mf.predict(ops3, xops), None)}
    mf.check_softmax_health("ops", ref_ops["input_ops.npy"][0])
    ops3.save(fx.path("ops_k3.h5"))
    ops2 = build_ops(tf_keras)
    mf.copy_weights(ops3, ops2)
    mf.save_k2(ops2, fx.path("ops_k2.h5"))
    ops_inputs = {"input_ops.npy": xops}
    fx.add_case("ops_k3.h5", "keras3-h5", mf.runner(keras, load3("ops_k3.h5"), with_features=False),
                ops_inputs, ref_ops)
    fx.add_case("ops_k2.h5", "keras2-h5", mf.runner(tf_keras, load2("ops_k2.h5"), with_features=False),
                ops_inputs, ref_ops)
    mf.check_close("Keras 3 load of ops_k2.h5", mf.predict(load3("ops_k2.h5"), xops), ref_ops["input_ops.npy"][0])

    log("unsupported and non-Keras files")
    un = build_unsupported(keras)
    mf.init_weights(un, np.random.default_rng(4))
    un.save(fx.path("unsupported_k3.h5"))
    load3("unsupported_k3.h5")
    fx.add_error_case("unsupported_k3.h5", "keras3-h5", "unsupported layers: LayerNormalization, Conv2DTranspose")
    write_not_keras(fx.path("not_keras.h5"))
    fx.add_error_case("not_keras.h5", None, "not a Keras file")

    fx.write_manifest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=HERE, help="output folder (default: this script's folder)")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    # Generate outside the repository (so a half-written run never shows up in the work tree), then
    # replace file by file: whatever this run wrote, and whatever the previous manifest named that this
    # run no longer writes. Nothing else in `out` (e.g. other scripts' outputs in expected/) is touched.
    tmp = tempfile.mkdtemp(prefix="kiln-mini-")
    try:
        generate(tmp)
        stale = set()
        old_manifest = os.path.join(out, "manifest.json")
        if os.path.exists(old_manifest):
            with open(old_manifest) as fh:
                for case in json.load(fh):
                    stale.update(case.get(k) for k in ("model", "config", "input", "expected", "features"))
        new = {rel for rel, _ in mf.file_listing(tmp)}
        for rel in sorted(stale - new - {None} - KEEP):
            if os.path.isfile(os.path.join(out, rel)):
                os.remove(os.path.join(out, rel))
        for rel in sorted(new):
            os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
            shutil.move(os.path.join(tmp, rel), os.path.join(out, rel))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = 0
    for rel in sorted(new):
        size = os.path.getsize(os.path.join(out, rel))
        total += size
        log(f"  {size:>9,d}  {rel}")
    log(f"total {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
