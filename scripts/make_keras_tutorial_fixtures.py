#!/usr/bin/env python3
"""Writes whole Keras classifiers built as the TensorFlow / keras.io transfer-learning tutorials build them, with
Keras' own outputs on fixed raw pixels. Python is used only for test fixtures; Kiln itself never needs it.

Normally run through `scripts/fixtures-tutorial` (`make fixtures-tutorial`), which caches the result in
$KILN_CACHE/fixtures-tutorial:

    python scripts/make_keras_tutorial_fixtures.py --out DIR

Every model takes raw RGB 0..255 pixels, NHWC, 64x64 (the ResNet-50 ones 96x96), and is written from seeded random weights (He-normal
kernels, small biases) with every BatchNormalization's statistics set from its real input on a calibration batch
and then perturbed (moving mean/variance, gamma, beta), so activations stay well scaled and heads are neither
saturated nor flat. Files:

  tutorial_*      Input -> data_augmentation Sequential (RandomFlip, RandomRotation, RandomZoom, RandomTranslation,
                  RandomContrast, tf.keras' RandomBrightness, GaussianNoise) -> preprocessing (preprocess_input on the symbolic
                  tensor: Keras 3 op layers / tf.keras TFOpLambda + SlicingOpLambda; or Rescaling; or Normalization)
                  -> base model(training=False) (keras.applications.ResNet50 or a small residual net) ->
                  GlobalAveragePooling2D -> Dropout -> Dense(1) | Dense(1, sigmoid) | Dense(N, softmax)
  flat_*          one functional model, no nesting: BatchNormalization on the input, after ReLU, after Add and in
                  the head (GAP -> BN -> Dense), GlobalMaxPooling2D, LeakyReLU, ReLU(max_value/threshold/
                  negative_slope), SpatialDropout2D, GaussianDropout, AlphaDropout, ActivityRegularization
  act_*           a small net whose Dense head uses one activation (sigmoid, tanh, elu, selu, gelu, swish, silu,
                  softplus, hard_sigmoid, linear), plus `Activation` layers of the same names inside the net
  geometry_*      Resizing(64, 64) on an input of free size: the bundle takes 64x64
  unsupported_*   a layer Kiln does not execute (LayerNormalization), a CenterCrop that changes the size inside the
                  model: the error must name the layer

Each model is written as Keras 3 `.keras` and `.h5` (`k3`), and, where tf.keras builds it, as tf.keras `.h5`
(`k2`). Each file is loaded back with Keras and must reproduce the in-memory model (except Keras 3 `.h5` files
with op layers, which Keras 3.15 writes but cannot read: there the in-memory model is the reference). `input_raw.npy` [2, 64, 64, 3]
(`input_raw_96.npy` [2, 96, 96, 3]) holds the pixels (float32 integers 0..255), `expected/<case>.npy` the loaded model's output on them, labels_N.txt
N class names, manifest.json one entry per file: file, layout, expected, labels, self_preprocessed (whether the
model preprocesses its raw input itself: a conflicting --preprocess must be refused), preprocessing (the mode).
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from make_fixtures import frameworks, log, make_images, q, save_keras_zip  # noqa: E402

SIZE = 64


# ---------------------------------------------------------------------------------------------------
# Weights


def leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from leaf_layers(layer)
        else:
            yield layer


def short_name(variable):
    return variable.path.split("/")[-1] if hasattr(variable, "path") else variable.name.split("/")[-1].split(":")[0]


def init_weights(model, rng):
    """He-normal kernels, small biases, BatchNormalization neutral until calibrated; other layers' variables
    (Normalization's adapted mean and variance) are kept."""
    for layer in leaf_layers(model):
        if not layer.weights or type(layer).__name__ == "Normalization":
            continue
        values = []
        for v in layer.weights:
            n, shape = short_name(v).split(":")[0], tuple(v.shape)
            if n in ("kernel", "depthwise_kernel"):
                fan_in = int(np.prod(shape[:-1]))
                a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
            elif n == "bias":
                a = rng.normal(0.0, 0.05, shape)
            elif n == "gamma":
                a = rng.uniform(0.5, 1.5, shape)
            elif n == "beta":
                a = rng.normal(0.0, 0.2, shape)
            elif n == "moving_mean":
                a = np.zeros(shape)
            elif n == "moving_variance":
                a = np.ones(shape)
            else:
                a = np.asarray(v)
            values.append(q(a))
        layer.set_weights(values)


def batch_norms(model):
    return [l for l in model.layers if type(l).__name__ == "BatchNormalization"]


def calibrate_bns(K, model, x, rng):
    """For each BatchNormalization of the flat functional `model`, in order: its statistics from its actual input
    on `x` (moving_mean = mean + N(0, 0.2 std), moving_variance = var * U(0.5, 2), gamma U(0.5, 1.5), beta
    N(0, 0.2)). Returns the number of layers set."""
    count = 0
    for layer in batch_norms(model):
        probe = K.Model(model.inputs, layer.input)
        a = np.asarray(probe(x, training=False), np.float64)
        a = a.reshape(-1, a.shape[-1])
        mean, var = a.mean(axis=0), a.var(axis=0)
        c = mean.shape[0]
        stats = {
            "gamma": rng.uniform(0.5, 1.5, c),
            "beta": rng.normal(0.0, 0.2, c),
            "moving_mean": mean + rng.normal(0.0, 1.0, c) * 0.2 * np.sqrt(var),
            "moving_variance": np.maximum(var * rng.uniform(0.5, 2.0, c), 1e-4),
        }
        layer.set_weights([q(stats[short_name(v).split(":")[0]]) for v in layer.weights])
        count += 1
    return count


def calibrate_dense(dense, features, rng, spread=1.5):
    """Sets `dense` so that its pre-activation varies across `features` with standard deviation `spread` around
    a small offset: heads are neither saturated nor flat."""
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    units = int(dense.weights[0].shape[-1])
    w = rng.normal(0.0, 1.0, (f.shape[1], units))
    z = (f - f.mean(axis=0)) @ w
    w *= spread / max(float(z.std()), 1e-12)
    b = -(f.mean(axis=0) @ w) + rng.normal(0.0, 0.3, units)
    dense.set_weights([q(w), q(b)])


# ---------------------------------------------------------------------------------------------------
# Models


def augmentation(K):
    layers = [K.layers.RandomFlip("horizontal"), K.layers.RandomRotation(0.1), K.layers.RandomZoom(0.1),
              K.layers.RandomTranslation(0.1, 0.1), K.layers.RandomContrast(0.2)]
    if K.__name__ == "tf_keras":
        layers.append(K.layers.RandomBrightness(0.1))  # Keras 3.15 cannot write it to .h5 (its config holds a module)
    layers.append(K.layers.GaussianNoise(0.1))
    return K.Sequential(layers, name="data_augmentation")


def small_base(K, channels=3, name="base"):
    """A small residual net (conv/BN/ReLU, a projection shortcut, an Add), 'same' padding with strides."""
    L = K.layers
    x = inp = K.Input((SIZE, SIZE, channels))
    x = L.Conv2D(16, 3, strides=2, padding="same", name="stem_conv")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(16, 3, padding="same", name="block_conv1")(x)
    y = L.BatchNormalization(name="block_bn1")(y)
    y = L.Activation("relu", name="block_relu1")(y)
    y = L.Conv2D(24, 3, strides=2, padding="same", name="block_conv2")(y)
    y = L.BatchNormalization(name="block_bn2")(y)
    s = L.Conv2D(24, 1, strides=2, name="block_shortcut")(x)
    s = L.BatchNormalization(name="block_shortcut_bn")(s)
    x = L.Add(name="block_add")([y, s])
    x = L.ReLU(name="block_out")(x)
    return K.Model(inp, x, name=name)


def preprocessing(K, kind, x, norm_stats):
    """The preprocessing the tutorials put in the model, applied to the symbolic tensor `x`."""
    L = K.layers
    if kind == "caffe":
        return K.applications.resnet50.preprocess_input(x)
    if kind == "tf":
        return K.applications.mobilenet_v2.preprocess_input(x)
    if kind == "torch":
        return K.applications.densenet.preprocess_input(x)
    if kind == "rescaling":
        return L.Rescaling(1.0 / 127.5, offset=-1.0)(x)
    if kind == "normalization":
        mean, var, _ = norm_stats
        return L.Normalization(mean=mean.tolist(), variance=var.tolist())(x)
    if kind == "normalization_adapted":
        layer = L.Normalization()
        layer.adapt(norm_stats[2])
        return layer(x)
    raise ValueError(kind)


def tutorial_model(K, kind, head, base_kind, rng, xcal):
    """Input -> augmentation -> preprocessing -> base(training=False) -> GAP -> Dropout -> head."""
    L = K.layers
    size = xcal.shape[1]
    inputs = K.Input((size, size, 3))
    x = augmentation(K)(inputs)
    cal = xcal.reshape(-1, 3).astype(np.float64)
    norm_stats = (cal.mean(axis=0), cal.var(axis=0), xcal)
    pre = preprocessing(K, kind, x, norm_stats)
    pre_model = K.Model(inputs, pre)
    if base_kind == "resnet50":
        base = K.applications.ResNet50(weights=None, include_top=False, input_shape=(size, size, 3))
    else:
        base = small_base(K)
    init_weights(base, rng)
    x_pre = np.asarray(pre_model(xcal, training=False))
    calibrate_bns(K, base, x_pre, rng)
    base.trainable = False
    x = base(pre, training=False)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="top_dropout")(x)
    units, activation = head
    dense = L.Dense(units, activation=activation, name="classifier")
    outputs = dense(x)
    model = K.Model(inputs, outputs, name=f"tutorial_{kind}")
    features = np.asarray(K.Model(inputs, x)(xcal, training=False))
    calibrate_dense(dense, features, rng)
    return model


def flat_model(K, variant, rng, xcal):
    """One functional model: Rescaling, BatchNormalization anywhere, GlobalMaxPooling2D, LeakyReLU, ReLU
    variants, the dropout/noise/regularisation layers that are the identity at inference."""
    L = K.layers
    inputs = K.Input((SIZE, SIZE, 3))
    x = L.RandomFlip("horizontal", name="flip")(inputs)
    x = L.Rescaling(1.0 / 255.0, name="rescale")(x)
    if variant == "bn_input":
        x = L.BatchNormalization(name="input_bn")(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", name="conv1")(x)
    if variant == "leaky":
        try:
            leaky = L.LeakyReLU(negative_slope=0.2, name="leaky1")  # Keras 3
        except TypeError:
            leaky = L.LeakyReLU(alpha=0.2, name="leaky1")  # tf.keras
        x = leaky(x)
    elif variant == "relu_variants":
        x = L.ReLU(max_value=1.5, name="relu_max")(x)
    else:
        x = L.ReLU(name="relu1")(x)
    # BN after a ReLU (not foldable into the conv before it; the conv after has 'same' padding).
    x = L.BatchNormalization(name="bn_after_relu")(x)
    x = L.SpatialDropout2D(0.1, name="spatial_dropout")(x)
    y = L.Conv2D(16, 3, padding="same", name="conv2")(x)
    if variant == "relu_variants":
        y = L.ReLU(threshold=0.1, negative_slope=0.3, name="relu_threshold")(y)
    else:
        y = L.ReLU(name="relu2")(y)
    y = L.Conv2D(16, 3, padding="same", name="conv3")(y)
    x = L.Add(name="add")([x, y])
    x = L.BatchNormalization(name="bn_after_add")(x)
    x = L.GaussianDropout(0.1, name="gaussian_dropout")(x)
    if variant == "leaky":
        x = L.LeakyReLU(name="leaky2")(x)
    elif variant == "relu_variants":
        x = L.ReLU(max_value=2.0, threshold=0.2, negative_slope=0.1, name="relu_all")(x)
    else:
        x = L.ReLU(name="relu3")(x)
    if variant == "gmp":
        x = L.GlobalMaxPooling2D(name="gmp")(x)
    else:
        x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.ActivityRegularization(l2=0.01, name="activity_reg")(x)
    x = L.BatchNormalization(name="head_bn")(x)
    x = L.AlphaDropout(0.1, name="alpha_dropout")(x)
    dense = L.Dense(4, activation="softmax", name="classifier")
    outputs = dense(x)
    model = K.Model(inputs, outputs, name=f"flat_{variant}")
    init_weights(model, rng)
    calibrate_bns(K, model, xcal, rng)
    features = np.asarray(K.Model(inputs, dense.input)(xcal, training=False))
    calibrate_dense(dense, features, rng)
    return model


def activation_model(K, activation, rng, xcal):
    """A small net with `Activation(activation)` inside and a Dense(3, activation) head."""
    L = K.layers
    inputs = K.Input((SIZE, SIZE, 3))
    x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Activation(activation, name="act1")(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation=activation, name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    dense = L.Dense(3, activation=activation, name="classifier")
    outputs = dense(x)
    model = K.Model(inputs, outputs, name=f"act_{activation}")
    init_weights(model, rng)
    calibrate_bns(K, model, xcal, rng)
    features = np.asarray(K.Model(inputs, dense.input)(xcal, training=False))
    calibrate_dense(dense, features, rng, spread=2.0)
    return model


def resizing_model(K, rng, xcal):
    """Input of free size -> Resizing(64, 64) -> Rescaling -> a small net: the bundle takes 64x64 (the layer is the
    identity there)."""
    L = K.layers
    inputs = K.Input((None, None, 3))
    x = L.Resizing(SIZE, SIZE, name="resize")(inputs)
    x = L.Rescaling(1.0 / 255, name="rescale")(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", name="conv1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    dense = L.Dense(3, activation="softmax", name="classifier")
    outputs = dense(x)
    model = K.Model(inputs, outputs, name="resizing")
    init_weights(model, rng)
    calibrate_bns(K, model, xcal, rng)
    calibrate_dense(dense, np.asarray(K.Model(inputs, dense.input)(xcal, training=False)), rng)
    return model


def center_crop_model(K, rng):
    """A CenterCrop that changes the size inside the model: refused, naming the layer."""
    L = K.layers
    inputs = K.Input((SIZE, SIZE, 3))
    x = L.CenterCrop(48, 48, name="crop")(inputs)
    x = L.Conv2D(8, 3, name="conv1")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(2, name="classifier")(x)
    model = K.Model(inputs, outputs, name="center_crop")
    init_weights(model, rng)
    return model


def unsupported_model(K, rng):
    L = K.layers
    inputs = K.Input((SIZE, SIZE, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = L.LayerNormalization(name="layer_norm")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(2, name="classifier")(x)
    model = K.Model(inputs, outputs, name="unsupported")
    init_weights(model, rng)
    return model


# ---------------------------------------------------------------------------------------------------
# Writing


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = args.out
    os.makedirs(os.path.join(out, "expected"), exist_ok=True)
    tf, keras, tf_keras = frameworks()

    raw = make_images(7, 2, SIZE, SIZE).astype(np.float32)
    xcal = make_images(8, 8, SIZE, SIZE).astype(np.float32)
    np.save(os.path.join(out, "input_raw.npy"), raw)
    # ResNet-50 at 96x96: its last stage keeps 3x3 cells (at 64x64, 2x2, where the global pool averages too few
    # cells and the random net's features are ill-conditioned: Keras' own oneDNN and Eigen paths differ by 3e-5).
    raw96 = make_images(9, 2, 96, 96).astype(np.float32)
    xcal96 = make_images(10, 8, 96, 96).astype(np.float32)
    np.save(os.path.join(out, "input_raw_96.npy"), raw96)
    for n in (2, 3, 4):
        with open(os.path.join(out, f"labels_{n}.txt"), "w") as f:
            f.write("".join(f"class_{chr(ord('a') + i)}\n" for i in range(n)))
    manifest = []

    def write(case, model, K, layouts, preprocessing_kind, classes, raw=raw, input_name="input_raw.npy"):
        # The in-memory model's output, then each file's: they must agree.
        want = np.asarray(model(raw, training=False), np.float32)
        assert np.all(np.isfinite(want)), case
        spread = float(want.std())
        assert spread > 1e-3, f"{case}: outputs are flat ({want})"
        for layout in layouts:
            if layout == "k3-keras":
                name = f"{case}_k3.keras"
                save_keras_zip(model, os.path.join(out, name))
                loaded = keras.models.load_model(os.path.join(out, name), compile=False)
            elif layout == "k3-h5":
                name = f"{case}_k3.h5"
                model.save(os.path.join(out, name))
                try:
                    loaded = keras.models.load_model(os.path.join(out, name), compile=False)
                except ValueError as e:
                    # Keras 3.15 writes op layers (GetItem, Stack, ...) into .h5 but cannot read them back: the
                    # in-memory model that wrote the file is the reference.
                    if "Unknown layer" not in str(e):
                        raise
                    loaded = model
            else:
                name = f"{case}_k2.h5"
                model.save(os.path.join(out, name), save_format="h5")
                loaded = tf_keras.models.load_model(os.path.join(out, name), compile=False)
            got = np.asarray(loaded(raw, training=False), np.float32)
            err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
            assert err < 1e-5, f"{name}: reloaded model differs by {err}"
            expected = f"expected/{name}.npy"
            np.save(os.path.join(out, expected), got)
            manifest.append({"file": name, "layout": layout, "expected": expected, "input": input_name,
                             "labels": f"labels_{max(classes, 2)}.txt", "classes": classes,
                             "self_preprocessed": preprocessing_kind is not None,
                             "preprocessing": preprocessing_kind})
            log(f"{name}: output {list(got.shape)}, std {spread:.3g}")

    both = ["k3-keras", "k3-h5"]
    heads = {"logit": (1, None), "sigmoid": (1, "sigmoid"), "softmax": (3, "softmax"), "softmax4": (4, "softmax")}
    # The tutorials: keras.applications.ResNet50 with its preprocess_input, in Keras 3 and tf.keras.
    for K, layouts, tag in [(keras, both, "k3"), (tf_keras, ["k2-h5"], "k2")]:
        rng = np.random.default_rng(100 if tag == "k3" else 200)
        head = "logit" if tag == "k3" else "softmax"
        m = tutorial_model(K, "caffe", heads[head], "resnet50", rng, xcal96)
        write(f"tutorial_resnet50_caffe_{head}", m, K, layouts, "caffe", heads[head][0], raw=raw96,
              input_name="input_raw_96.npy")
    # The other preprocessings and heads on the small base.
    plan = [("tf", "sigmoid"), ("torch", "softmax"), ("rescaling", "softmax4"), ("normalization", "logit"),
            ("normalization_adapted", "softmax"), ("caffe", "sigmoid")]
    for i, (kind, head) in enumerate(plan):
        for K, layouts, tag in [(keras, both, "k3"), (tf_keras, ["k2-h5"], "k2")]:
            rng = np.random.default_rng(300 + 10 * i + (0 if tag == "k3" else 1))
            m = tutorial_model(K, kind, heads[head], "small", rng, xcal)
            mode = {"rescaling": "rescaling", "normalization": "normalization",
                    "normalization_adapted": "normalization"}.get(kind, kind)
            write(f"tutorial_small_{kind}_{head}", m, K, layouts, mode, heads[head][0])
    for i, variant in enumerate(["plain", "bn_input", "gmp", "leaky", "relu_variants"]):
        for K, layouts, tag in [(keras, both, "k3"), (tf_keras, ["k2-h5"], "k2")]:
            rng = np.random.default_rng(500 + 10 * i + (0 if tag == "k3" else 1))
            m = flat_model(K, variant, rng, xcal)
            write(f"flat_{variant}", m, K, layouts, "rescaling", 4)
    for i, act in enumerate(["sigmoid", "tanh", "elu", "selu", "gelu", "swish", "silu", "softplus",
                             "hard_sigmoid", "linear"]):
        for K, layouts, tag in [(keras, both, "k3"), (tf_keras, ["k2-h5"], "k2")]:
            if tag == "k2" and act == "silu":
                continue  # tf.keras names it swish
            rng = np.random.default_rng(700 + 10 * i + (0 if tag == "k3" else 1))
            m = activation_model(K, act, rng, xcal)
            write(f"act_{act}", m, K, layouts, "rescaling", 3)
    write("geometry_resizing", resizing_model(keras, np.random.default_rng(850), xcal), keras, both, "rescaling", 3)
    m = unsupported_model(keras, np.random.default_rng(900))
    m.save(os.path.join(out, "unsupported_k3.h5"))
    center_crop_model(keras, np.random.default_rng(901)).save(os.path.join(out, "unsupported_center_crop_k3.h5"))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"cases": manifest,
                   "unsupported": [{"file": "unsupported_k3.h5", "layer": "layer_norm", "class": "LayerNormalization",
                                    "says": "is not supported"},
                                   {"file": "unsupported_center_crop_k3.h5", "layer": "crop", "class": "CenterCrop",
                                    "says": "changes the image size"}]}, f, indent=1)
    log(f"{len(manifest)} files")


if __name__ == "__main__":
    sys.exit(main())
