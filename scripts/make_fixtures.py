#!/usr/bin/env python3
"""Writes the full-size Keras ResNet-50 test fixtures, and holds the helpers that samples/mini/make_mini.py
shares. Python is used only for test fixtures; Kiln itself never needs it.

Normally run through `scripts/fixtures`, which caches the result in $KILN_CACHE/fixtures (default
~/.cache/kiln/fixtures) and only reruns this script when it or requirements-fixtures.txt change:

    python scripts/make_fixtures.py --out DIR

Files (all with the same seeded weights; `notop` = include_top=False, pooling='avg', input (None, None, 3)):
  resnet50_k3.h5, resnet50_notop_k3.h5          Keras 3 model.save("x.h5") (legacy HDF5)
  resnet50_k2.h5, resnet50_notop_k2.h5          tf_keras (Keras 2) model.save("x.h5")
  resnet50.keras, resnet50_notop.keras          Keras 3 zip
  resnet50.weights.h5 + resnet50_config.json    Keras 3 save_weights + to_json
  resnet50_notop.weights.h5                     Keras 3 save_weights, no config (builtin topology)
  resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5   tf_keras save_weights (applications layout)
  nested_k3.h5, nested_k2.h5, nested.keras      Sequential([notop, Dropout(0.3), Dense(25, softmax)]),
                                                the backbone's first 60% of layers frozen
  input_224.npy [2,224,224,3], input_160x192.npy [1,160,192,3]   preprocess_input'ed images
  expected/<model>.<input>.npy, expected/<model>.<input>.avg_pool.npy, manifest.json
The top models have Keras' fixed 224x224 input and only take input_224; the others take both inputs.

Every model is a randomly initialised (seeded) ResNet-50 whose BatchNormalization statistics are set
from the real activation statistics of a calibration batch and then perturbed, so that activations stay
well scaled and the softmax outputs are neither uniform nor one-hot. Each file written is loaded back
with Keras (tf_keras for the Keras 2 files as well) and must reproduce the in-memory model's output.
"""
import argparse
import json
import os
import shutil
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

_T0 = time.time()
_TAG = os.path.basename(sys.argv[0]).replace(".py", "")


def log(msg):
    print(f"[{_TAG} {time.time() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Frameworks


def frameworks():
    """Imports TensorFlow, Keras 3 and tf_keras (Keras 2) with deterministic ops."""
    warnings.filterwarnings("ignore")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    tf.get_logger().setLevel("ERROR")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    import keras
    import tf_keras

    keras.utils.set_random_seed(1234)  # only default initialisers and dropout; weights come from numpy
    tf_keras.utils.set_random_seed(1234)
    return tf, keras, tf_keras


# ---------------------------------------------------------------------------------------------------
# Inputs


def make_images(seed, n, h, w):
    """Seeded image-like uint8 RGB pictures: a random coarse colour grid, bilinearly enlarged, plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        gh, gw = (int(v) for v in rng.integers(2, 9, size=2))
        grid = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(grid, "RGB").resize((w, h), Image.BILINEAR), np.float64)
        img += rng.normal(0.0, 16.0, size=img.shape)
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def preprocess(keras, images):
    """keras.applications.resnet50.preprocess_input ("caffe": RGB->BGR, minus the ImageNet means)."""
    x = np.array(images, dtype=np.float32)  # a copy: preprocess_input works in place on float arrays
    return np.ascontiguousarray(keras.applications.resnet50.preprocess_input(x), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------
# Models


def build_resnet50(K, width_div=1, include_top=True, pooling=None, classes=1000,
                   input_shape=(None, None, 3), name="resnet50"):
    """ResNet-50 v1 with the layer names of keras.applications.ResNet50, all filter counts divided by
    `width_div`. `K` is the Keras module to build with (keras for Keras 3, tf_keras for Keras 2)."""
    L = K.layers
    eps = 1.001e-5

    def bn(name):
        return L.BatchNormalization(axis=3, epsilon=eps, name=name)

    def bottleneck(x, width, stride, project, prefix):
        if project:
            skip = L.Conv2D(4 * width, 1, strides=stride, name=prefix + "_0_conv")(x)
            skip = bn(prefix + "_0_bn")(skip)
        else:
            skip = x
        y = L.Conv2D(width, 1, strides=stride, name=prefix + "_1_conv")(x)
        y = bn(prefix + "_1_bn")(y)
        y = L.Activation("relu", name=prefix + "_1_relu")(y)
        y = L.Conv2D(width, 3, padding="same", name=prefix + "_2_conv")(y)
        y = bn(prefix + "_2_bn")(y)
        y = L.Activation("relu", name=prefix + "_2_relu")(y)
        y = L.Conv2D(4 * width, 1, name=prefix + "_3_conv")(y)
        y = bn(prefix + "_3_bn")(y)
        y = L.Add(name=prefix + "_add")([skip, y])
        return L.Activation("relu", name=prefix + "_out")(y)

    image = L.Input(shape=input_shape)
    x = L.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(image)
    x = L.Conv2D(64 // width_div, 7, strides=2, name="conv1_conv")(x)
    x = bn("conv1_bn")(x)
    x = L.Activation("relu", name="conv1_relu")(x)
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, width, blocks, stride in ((2, 64, 3, 1), (3, 128, 4, 2), (4, 256, 6, 2), (5, 512, 3, 2)):
        for b in range(1, blocks + 1):
            x = bottleneck(x, width // width_div, stride if b == 1 else 1, b == 1, f"conv{stage}_block{b}")
    if include_top:
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
        x = L.Dense(classes, activation="softmax", name="predictions")(x)
    elif pooling == "avg":
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    return K.Model(image, x, name=name)


def leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from leaf_layers(layer)
        else:
            yield layer


def short_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def q(a):
    """Float32 with the low 13 mantissa bits cleared, so that last-bit differences in the calibration
    forward pass cannot change the stored weights."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return (a.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def init_weights(model, rng):
    """Seeded He-normal kernels, small biases; BatchNormalization neutral until calibrated."""
    for layer in leaf_layers(model):
        if not layer.weights:
            continue
        values = []
        for v in layer.weights:
            n, shape = short_name(v), tuple(v.shape)
            if n == "kernel":
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
                raise ValueError(f"{layer.name}: unexpected weight {v.name}")
            values.append(q(a))
        layer.set_weights(values)


def _inbound_layer_names(node_config):
    """Names of the layers whose outputs feed a layer, from its serialized `inbound_nodes` (Keras 3:
    `{"args": [<tensor or list of tensors>], ...}` with tensors `{"config": {"keras_history": [name, node,
    index]}}`)."""
    names = []

    def walk(obj):
        if isinstance(obj, dict):
            if "keras_history" in obj:
                names.append(obj["keras_history"][0])
                return
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(node_config)
    return names


def calibrate_bn(keras, model, x, rng):
    """One forward pass over the calibration batch `x`, layer by layer in topological order (a Keras 3
    functional model); just before each BatchNormalization runs, its statistics are set from its actual
    input: moving_mean = mean + N(0, 0.2 std), moving_variance = var * U(0.5, 2), gamma U(0.5, 1.5),
    beta N(0, 0.2). Returns the number of BatchNormalization layers."""
    config = model.get_config()
    values, count = {}, 0
    for lc in config["layers"]:
        name = lc["name"]
        layer = model.get_layer(name)
        if lc["class_name"] == "InputLayer":
            values[name] = keras.ops.convert_to_tensor(x)
            continue
        inbound = _inbound_layer_names(lc["inbound_nodes"])
        args = values[inbound[0]] if len(inbound) == 1 else [values[n] for n in inbound]
        if lc["class_name"] == "BatchNormalization":
            a = np.asarray(args, np.float64)
            a = a.reshape(-1, a.shape[-1])
            mean, var = a.mean(axis=0), a.var(axis=0)
            c = mean.shape[0]
            stats = {
                "gamma": rng.uniform(0.5, 1.5, c),
                "beta": rng.normal(0.0, 0.2, c),
                "moving_mean": mean + rng.normal(0.0, 1.0, c) * 0.2 * np.sqrt(var),
                "moving_variance": np.maximum(var * rng.uniform(0.5, 2.0, c), 1e-4),
            }
            layer.set_weights([q(stats[short_name(v)]) for v in layer.weights])
            count += 1
        values[name] = layer(args, training=False)
    return count


def calibrate_head(dense, features, rng, spread=1.5):
    """Sets a softmax Dense so that its logits vary across the given inputs with standard deviation
    `spread`, centred on their mean (a moderate softmax, a top-1 that depends on the input). `features`:
    a list of [batch, channels] arrays (the calibration batch and the fixture inputs)."""
    f = np.concatenate([np.asarray(a, np.float64) for a in features], axis=0)
    units = int(dense.weights[0].shape[-1])
    w = rng.normal(0.0, 1.0, (f.shape[1], units))
    z = (f - f.mean(axis=0)) @ w
    w *= spread / max(float(z.std()), 1e-12)
    b = -(f.mean(axis=0) @ w) + rng.normal(0.0, 0.3, units)
    dense.set_weights([q(w), q(b)])


def copy_weights(src, dst):
    """Copies weights layer by layer, matching layers by name (recursing into nested models)."""
    src_layers = {l.name: l for l in src.layers}
    for layer in dst.layers:
        if not layer.weights:
            continue
        s = src_layers.get(layer.name)
        if s is None:
            raise KeyError(f"no source layer for {layer.name}")
        if hasattr(layer, "layers"):
            copy_weights(s, layer)
        else:
            layer.set_weights(s.get_weights())


def features_model(K, model):
    """The `avg_pool` output of `model` (a functional model, or a Sequential whose first layer is one)."""
    if isinstance(model.layers[0], K.Model) and not _has_layer(model, "avg_pool"):
        return model.layers[0]
    return K.Model(model.inputs, model.get_layer("avg_pool").output)


def _has_layer(model, name):
    return any(l.name == name for l in model.layers)


def freeze_prefix(model, fraction):
    """Sets trainable=False on the first `fraction` of the model's layers; returns how many."""
    n = int(round(len(model.layers) * fraction))
    for layer in model.layers[:n]:
        layer.trainable = False
    return n


def predict(model, x):
    """The model's inference output. An eager call (training=False) runs the same TensorFlow kernels as
    model.predict without tracing a tf.function for every model (seconds each on 2 cores)."""
    return np.asarray(model(x, training=False), np.float32)


def check_close(what, got, want, rtol=1e-4, atol_rel=1e-4):
    """Elementwise |got - want| <= rtol |want| + atol_rel max|want|. Keras 3 and tf_keras compute
    BatchNormalization differently (separate ops versus the fused kernel): ~1e-5 relative apart."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape} != {want.shape}")
    err = np.abs(got - want)
    tol = atol_rel * np.abs(want).max() + rtol * np.abs(want)
    if not np.all(err <= tol):
        raise AssertionError(f"{what}: max abs diff {err.max():.3g} (max |want| {np.abs(want).max():.3g})")
    return float(err.max())


def check_softmax_health(what, probs):
    """Softmax outputs must be neither saturated nor uniform, and top-1 must vary across inputs."""
    p = np.asarray(probs, np.float64)
    top = p.max(axis=1)
    k = p.shape[1]
    if np.any(top > 0.995) or np.any(top < 1.5 / k):
        raise AssertionError(f"{what}: degenerate softmax, max probabilities {top}")
    logp = np.sort(np.log(p), axis=1)
    if np.any(logp[:, -1] - logp[:, -2] < 0.01):  # a top-1 that float32 noise could flip
        raise AssertionError(f"{what}: top-1 and top-2 logits closer than 0.01")
    return top


# ---------------------------------------------------------------------------------------------------
# Output folder and manifest


class Fixtures:
    """An output folder: inputs, expected outputs, and the manifest of cases."""

    def __init__(self, root):
        self.root = root
        self.cases = []
        self.inputs = {}
        os.makedirs(os.path.join(root, "expected"), exist_ok=True)

    def path(self, name):
        return os.path.join(self.root, name)

    def add_input(self, name, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        np.save(self.path(name), x)
        self.inputs[name] = x
        return x

    def add_case(self, model_file, layout, run, input_names, reference, config=None, features=None,
                 softmax=True, notes=None):
        """Runs `run(x)` (outputs, features-or-None) for each input, checks it against
        `reference[input]` = (outputs, features) from the in-memory model, writes the expected files
        and records the case."""
        stem = model_file[: -len(".keras")] if model_file.endswith(".keras") else model_file[: -len(".h5")]
        for inp in input_names:
            x = self.inputs[inp]
            y, f = run(x)
            istem = inp[: -len(".npy")]
            want_y, want_f = reference[inp]
            err = check_close(f"{model_file} on {inp}", y, want_y)
            exp = f"expected/{stem}.{istem}.npy"
            np.save(self.path(exp), np.asarray(y, np.float32))
            feat = None
            if f is not None:
                err = max(err, check_close(f"{model_file} avg_pool on {inp}", f, want_f))
                feat = f"expected/{stem}.{istem}.avg_pool.npy"
                np.save(self.path(feat), np.asarray(f, np.float32))
            top1 = [int(i) for i in np.argmax(y, axis=1)] if softmax else None
            case = {"model": model_file, "layout": layout, "config": config, "input": inp,
                    "expected": exp, "features": feat, "top1": top1, "error": None}
            if notes:
                case["notes"] = notes
            self.cases.append(case)
            log(f"  ok {model_file} x {inp}: output {tuple(np.shape(y))}, max diff vs in-memory {err:.2g}"
                + (f", top1 {top1}" if top1 is not None else ""))

    def add_error_case(self, model_file, layout, error):
        self.cases.append({"model": model_file, "layout": layout, "config": None, "input": None,
                           "expected": None, "features": None, "top1": None, "error": error})

    def write_manifest(self):
        with open(self.path("manifest.json"), "w") as fh:  # a JSON list, one case per line
            fh.write("[\n" + ",\n".join(json.dumps(c) for c in self.cases) + "\n]\n")


def reference_outputs(K, model, inputs, with_features=True):
    feats = features_model(K, model) if with_features else None
    return {name: (predict(model, x), predict(feats, x) if feats is not None else None)
            for name, x in inputs.items()}


def runner(K, model, with_features=True):
    feats = features_model(K, model) if with_features else None

    def run(x):
        return predict(model, x), (predict(feats, x) if feats is not None else None)

    return run


# ---------------------------------------------------------------------------------------------------
# File writers


def save_k3(model, path):
    """Keras 3 legacy HDF5 (`model.save("x.h5")`)."""
    model.save(path)


def save_k2(model, path):
    """tf_keras (Keras 2) legacy HDF5."""
    model.save(path, save_format="h5")


def vlen_split_copy(src, dst, chunks=3):
    """Copies a legacy .h5 and rewrites its string attributes in the other forms readers meet.

    Keras writes an unsplit string-list attribute from a Python list (h5py makes variable-length ASCII
    strings), but an attribute over 64 KB is split with np.array_split into `name0`, `name1`, ... and each
    chunk is a numpy bytes array: FIXED-length, null-padded strings. Here `model_weights/layer_names`
    becomes `layer_names0..2`, chunks 0 and 2 fixed-length (as Keras writes them), chunk 1 variable-length
    UTF-8; `weight_names` of conv1_conv and predictions become fixed-length, that of conv2_block1_0_bn
    variable-length UTF-8; the root `model_config` variable-length UTF-8 (too large for a fixed-length
    attribute in a default-format file)."""
    shutil.copyfile(src, dst)
    utf8 = h5py.string_dtype("utf-8")

    def as_str(values):
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]

    with h5py.File(dst, "r+") as f:
        g = f["model_weights"]
        names = as_str(g.attrs["layer_names"])
        del g.attrs["layer_names"]
        parts = np.array_split(np.asarray([n.encode("utf-8") for n in names]), chunks)
        for i, part in enumerate(parts):
            if i % 2 == 0:
                g.attrs[f"layer_names{i}"] = part  # |S<n>: fixed-length
            else:
                g.attrs.create(f"layer_names{i}", [p.decode("utf-8") for p in part], dtype=utf8)
        for layer, fixed in (("conv1_conv", True), ("conv2_block1_0_bn", False), ("predictions", True)):
            wn = as_str(g[layer].attrs["weight_names"])
            del g[layer].attrs["weight_names"]
            if fixed:
                g[layer].attrs["weight_names"] = np.asarray([w.encode("utf-8") for w in wn])
            else:
                g[layer].attrs.create("weight_names", wn, dtype=utf8)
        cfg = f.attrs["model_config"]
        cfg = cfg.decode("utf-8") if isinstance(cfg, bytes) else str(cfg)
        del f.attrs["model_config"]
        f.attrs.create("model_config", cfg, dtype=utf8)


def _renumber_shared_object_ids(obj, ids):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "shared_object_id" and isinstance(v, int):
                obj[k] = ids.setdefault(v, len(ids) + 1)
            else:
                _renumber_shared_object_ids(v, ids)
    elif isinstance(obj, list):
        for v in obj:
            _renumber_shared_object_ids(v, ids)


def save_keras_zip(model, path, date="2026-01-01@00:00:00"):
    """model.save("x.keras"), then the zip rewritten so that reruns give identical bytes: a fixed
    `date_saved` in metadata.json, fixed entry times (same entries, order and compression), and the
    `shared_object_id`s of config.json (Python id() values, e.g. of the DTypePolicy every layer shares)
    renumbered 1, 2, ... in order of first appearance, which keeps the sharing."""
    import zipfile

    model.save(path)
    with zipfile.ZipFile(path) as z:
        entries = [(info, z.read(info.filename)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for info, data in entries:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = date
                data = json.dumps(meta).encode("utf-8")
            elif info.filename == "config.json":
                config = json.loads(data)
                _renumber_shared_object_ids(config, {})
                data = json.dumps(config).encode("utf-8")
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            z.writestr(fixed, data)


def file_listing(root):
    rows = []
    for dirpath, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            rows.append((os.path.relpath(p, root), os.path.getsize(p)))
    return sorted(rows)


# ---------------------------------------------------------------------------------------------------
# Full-size ResNet-50


def main_full(out):
    tf, keras, tf_keras = frameworks()
    fx = Fixtures(out)
    x224 = fx.add_input("input_224.npy", preprocess(keras, make_images(224, 2, 224, 224)))
    x160 = fx.add_input("input_160x192.npy", preprocess(keras, make_images(160, 1, 160, 192)))
    xcal = preprocess(keras, make_images(7, 3, 224, 224))
    top_inputs = {"input_224.npy": x224}
    any_inputs = {"input_224.npy": x224, "input_160x192.npy": x160}

    log("building Keras 3 ResNet-50 (top and notop) and calibrating BatchNormalization")
    top3 = keras.applications.ResNet50(weights=None)
    notop3 = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                         input_shape=(None, None, 3))
    rng = np.random.default_rng(50)
    init_weights(top3, rng)
    n = calibrate_bn(keras, top3, xcal, rng)
    copy_weights(top3, notop3)  # the backbone; notop3 also takes the 160x192 input
    calibrate_head(top3.get_layer("predictions"), [predict(notop3, a) for a in (xcal, x224, x160)], rng)
    log(f"calibrated {n} BatchNormalization layers")

    ref_top = reference_outputs(keras, top3, top_inputs)
    for name, (y, _) in ref_top.items():
        top = check_softmax_health(f"resnet50 on {name}", y)
        log(f"resnet50 on {name}: top1 {np.argmax(y, 1).tolist()}, max prob {np.round(top, 3).tolist()}")
    ref_notop = reference_outputs(keras, notop3, any_inputs)

    log("writing Keras 3 files")
    save_k3(top3, fx.path("resnet50_k3.h5"))
    save_k3(notop3, fx.path("resnet50_notop_k3.h5"))
    save_keras_zip(top3, fx.path("resnet50.keras"))
    save_keras_zip(notop3, fx.path("resnet50_notop.keras"))
    top3.save_weights(fx.path("resnet50.weights.h5"))
    with open(fx.path("resnet50_config.json"), "w") as fh:
        fh.write(top3.to_json())
    notop3.save_weights(fx.path("resnet50_notop.weights.h5"))

    log("building the same models in tf_keras (Keras 2) and writing Keras 2 files")
    top2 = tf_keras.applications.ResNet50(weights=None)
    notop2 = tf_keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                            input_shape=(None, None, 3))
    copy_weights(top3, top2)
    copy_weights(top3, notop2)
    save_k2(top2, fx.path("resnet50_k2.h5"))
    save_k2(notop2, fx.path("resnet50_notop_k2.h5"))
    top2.save_weights(fx.path("resnet50_weights_tf_dim_ordering_tf_kernels.h5"))
    notop2.save_weights(fx.path("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"))
    del top2, notop2

    log("loading every file back and recording expected outputs")
    load3 = lambda p: keras.models.load_model(fx.path(p), compile=False)  # noqa: E731
    load2 = lambda p: tf_keras.models.load_model(fx.path(p), compile=False)  # noqa: E731
    fx.add_case("resnet50_k3.h5", "keras3-h5", runner(keras, load3("resnet50_k3.h5")), top_inputs, ref_top)
    fx.add_case("resnet50_notop_k3.h5", "keras3-h5", runner(keras, load3("resnet50_notop_k3.h5")),
                any_inputs, ref_notop, softmax=False)
    fx.add_case("resnet50_k2.h5", "keras2-h5", runner(tf_keras, load2("resnet50_k2.h5")), top_inputs, ref_top)
    runner(keras, load3("resnet50_k2.h5"))  # Keras 3 reads Keras 2 files too
    fx.add_case("resnet50_notop_k2.h5", "keras2-h5", runner(tf_keras, load2("resnet50_notop_k2.h5")),
                any_inputs, ref_notop, softmax=False)
    fx.add_case("resnet50.keras", "keras-zip", runner(keras, load3("resnet50.keras")), top_inputs, ref_top)
    fx.add_case("resnet50_notop.keras", "keras-zip", runner(keras, load3("resnet50_notop.keras")),
                any_inputs, ref_notop, softmax=False)
    with open(fx.path("resnet50_config.json")) as fh:
        m = keras.models.model_from_json(fh.read())
    m.load_weights(fx.path("resnet50.weights.h5"))
    fx.add_case("resnet50.weights.h5", "weights-h5+config", runner(keras, m), top_inputs, ref_top,
                config="resnet50_config.json")
    m = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(None, None, 3))
    m.load_weights(fx.path("resnet50_notop.weights.h5"))
    fx.add_case("resnet50_notop.weights.h5", "weights-h5+config", runner(keras, m), any_inputs, ref_notop,
                softmax=False, notes="no config: builtin ResNet-50 topology, include_top=False, pooling=avg")
    m = tf_keras.applications.ResNet50(weights=None)
    m.load_weights(fx.path("resnet50_weights_tf_dim_ordering_tf_kernels.h5"))
    fx.add_case("resnet50_weights_tf_dim_ordering_tf_kernels.h5", "applications-h5", runner(tf_keras, m),
                top_inputs, ref_top, notes="builtin ResNet-50 topology, include_top=True")
    m = tf_keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(None, None, 3))
    m.load_weights(fx.path("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"))
    fx.add_case("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "applications-h5",
                runner(tf_keras, m), any_inputs, ref_notop, softmax=False,
                notes="builtin ResNet-50 topology, include_top=False, pooling=avg")
    del m

    log("nested models: Sequential([ResNet-50 notop (first 60% frozen), Dropout, Dense(25, softmax)])")
    nested3 = write_nested(fx, keras, tf_keras, lambda K: K.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=(None, None, 3)),
        notop3, 25, xcal, any_inputs, "nested_k3.h5", "nested_k2.h5", "nested.keras", seed=25)
    write_heads(fx, keras, tf_keras, nested3, x224)

    fx.write_manifest()
    total = 0
    for rel, size in file_listing(out):
        total += size
        log(f"  {size:>11,d}  {rel}")
    log(f"total {total / 1e6:.1f} MB in {out}")


def write_nested(fx, keras, tf_keras, make_backbone, trained_backbone, classes, xcal, inputs,
                 k3_name, k2_name, zip_name, seed):
    """Sequential([backbone, Dropout(0.3), Dense(classes, softmax)]) with the backbone's first 60% of
    layers frozen, written as Keras 3 .h5, Keras 2 .h5 and .keras; all checked and recorded."""
    rng = np.random.default_rng(seed)
    bb3 = make_backbone(keras)
    copy_weights(trained_backbone, bb3)
    nested3 = keras.Sequential([bb3, keras.layers.Dropout(0.3), keras.layers.Dense(classes, activation="softmax")])
    calibrate_head(nested3.layers[-1], [predict(bb3, a) for a in [xcal, *inputs.values()]], rng)
    frozen = freeze_prefix(bb3, 0.6)
    log(f"  froze {frozen} of {len(bb3.layers)} backbone layers")
    ref = reference_outputs(keras, nested3, inputs)
    for name, (y, _) in ref.items():
        top = check_softmax_health(f"{k3_name} on {name}", y)
        log(f"  {k3_name} on {name}: top1 {np.argmax(y, 1).tolist()}, max prob {np.round(top, 3).tolist()}")
    save_k3(nested3, fx.path(k3_name))
    save_keras_zip(nested3, fx.path(zip_name))

    bb2 = make_backbone(tf_keras)
    copy_weights(bb3, bb2)
    nested2 = tf_keras.Sequential([bb2, tf_keras.layers.Dropout(0.3),
                                   tf_keras.layers.Dense(classes, activation="softmax")])
    nested2.layers[-1].set_weights(nested3.layers[-1].get_weights())
    freeze_prefix(bb2, 0.6)
    save_k2(nested2, fx.path(k2_name))
    del nested2, bb2

    fx.add_case(k3_name, "keras3-h5", runner(keras, keras.models.load_model(fx.path(k3_name), compile=False)),
                inputs, ref)
    fx.add_case(k2_name, "keras2-h5",
                runner(tf_keras, tf_keras.models.load_model(fx.path(k2_name), compile=False)), inputs, ref)
    fx.add_case(zip_name, "keras-zip", runner(keras, keras.models.load_model(fx.path(zip_name), compile=False)),
                inputs, ref)
    return nested3


def write_heads(fx, keras, tf_keras, nested3, x):
    """The nested model's trained head on its own (Dropout + Dense(25) on the 2048 pooled features) as
    head_k3.h5, head.keras and head_k2.h5, for `kiln fuse`; raw_224.npy: the RGB 0-255 pixels whose
    preprocess_input is input_224.npy; expected/fused.raw_224.npy: Keras' preprocess_input + nested model on
    them. fuse.json lists them."""
    import json
    dense = nested3.layers[-1]
    features = dense.get_weights()[0].shape[0]
    head3 = keras.Sequential([keras.Input((features,)), keras.layers.Dropout(0.3),
                              keras.layers.Dense(dense.units, activation="softmax", name="dense")], name="head")
    head3.layers[-1].set_weights(dense.get_weights())
    save_k3(head3, fx.path("head_k3.h5"))
    save_keras_zip(head3, fx.path("head.keras"))
    head2 = tf_keras.Sequential([tf_keras.Input((features,)), tf_keras.layers.Dropout(0.3),
                                 tf_keras.layers.Dense(dense.units, activation="softmax", name="dense")], name="head")
    head2.layers[-1].set_weights(dense.get_weights())
    save_k2(head2, fx.path("head_k2.h5"))
    raw = np.round(x[..., ::-1] + np.array([123.68, 116.779, 103.939], dtype="float32")).astype("float32")
    assert raw.min() >= 0 and raw.max() <= 255
    np.save(fx.path("raw_224.npy"), raw)
    y = predict(nested3, keras.applications.resnet50.preprocess_input(raw.copy()))
    check_softmax_health("fused reference on raw_224", y)
    np.save(fx.path("expected/fused.raw_224.npy"), y.astype("float32"))
    with open(fx.path("fuse.json"), "w") as fh:
        json.dump({"backbones": ["resnet50_notop_k3.h5", "resnet50_k2.h5", "resnet50.keras",
                                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"],
                   "heads": ["head_k3.h5", "head_k2.h5", "head.keras"],
                   "input": "raw_224.npy", "expected": "expected/fused.raw_224.npy",
                   "top1": np.argmax(y, 1).tolist()}, fh)
    log(f"heads written; fused reference top1 {np.argmax(y, 1).tolist()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (created; should be empty)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    main_full(args.out)


if __name__ == "__main__":
    main()
