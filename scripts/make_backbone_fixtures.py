#!/usr/bin/env python3
"""Writes the backbone fixtures of issue 17: models beyond ResNet-50 with seeded random weights and randomised
BatchNorm statistics, and the frameworks' own outputs on seeded inputs. Normally run through
`scripts/fixtures-backbones` (`make fixtures-backbones`), which caches the result in $KILN_CACHE/fixtures-backbones.

    python scripts/make_backbone_fixtures.py --part keras --out DIR    (scripts/pyenv: Keras 3, tf_keras)
    python scripts/make_backbone_fixtures.py --part torch --out DIR    (scripts/pyenv torch: torch, torchvision)

Files (`<m>.<layout>` with layout k3.h5 = Keras 3 model.save("x.h5"), keras = the .keras zip, k2.h5 = tf_keras):
  <m>.weights.h5, <applications name>.h5   mobilenetv2 and densenet121 weights only (Keras 3 save_weights, tf_keras
                                   save_weights: the Keras applications layout), read with the built-in topologies
  small.{k3.h5,keras,k2.h5}        a hand-built model with every layer this issue adds: DepthwiseConv2D (same,
                                   stride 2 after ZeroPadding2D((0,1),(0,1)) = MobileNet's correct_pad, depth
                                   multiplier 2, dilation 2, 5x5), SeparableConv2D, Conv2D(groups=4), Concatenate
                                   (of two branches, and of three inputs one of them twice), BN folded into a
                                   depthwise convolution; input (None, None, 3), fed 2 x 33 x 31 images
  mobilenetv2.{k3.h5,keras,k2.h5}  keras.applications.MobileNetV2(weights=None, input 160x160, classes=10)
  densenet121.{k3.h5,keras,k2.h5}  keras.applications.DenseNet121(weights=None, input 160x160, classes=10)
  resnext50_32x4d.onnx             torchvision resnext50_32x4d(num_classes=10), torch.onnx.export (dynamo, opset 18),
  resnext50_32x4d.torchscript.onnx   and its TorchScript exporter (opset 17); NCHW 2x3x160x160
  inputs/<m>.npy                   the model's input: preprocess_input'ed images (MobileNetV2 and small: tf, DenseNet:
                                   torch; ResNeXt: torchvision's normalisation, NCHW)
  expected/<m>.npy                 the framework's output on it (Keras: model(x, training=False); torch: eval mode)
  manifest.json                    per model: files, input, expected, framework versions

Weights: He-normal kernels (fan-in of one output: kH·kW for depthwise kernels), small biases. BatchNorm statistics
are set from the actual statistics of a calibration batch at each BatchNormalization's input, then perturbed
(scripts/make_fixtures.py calibrate_bn; torch: a training-mode pass with momentum 1, perturbed alike), and the
classifier is scaled so that the softmax is neither uniform nor one-hot and top-1 varies across inputs.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SEED = 1717
SIZE = 160


def log(msg):
    print(f"[make_backbone_fixtures] {msg}", file=sys.stderr, flush=True)


def images(seed, n, h, w):
    """Seeded image-like uint8 RGB pictures: a random coarse colour grid enlarged (nearest), smoothed by a 5x5 box,
    plus noise (numpy only: the torch environment has no PIL-free make_fixtures)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        gh, gw = (int(v) for v in rng.integers(2, 9, size=2))
        grid = rng.integers(0, 256, size=(gh, gw, 3)).astype(np.float64)
        img = grid[np.arange(h) * gh // h][:, np.arange(w) * gw // w]
        padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="edge")
        img = sum(padded[dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5)) / 25
        img += rng.normal(0.0, 16.0, size=img.shape)
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------------
# Keras


def build_small(K):
    L = K.layers
    x = L.Input((None, None, 3), name="input")
    y = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    y = L.BatchNormalization(name="stem_bn")(y)
    y = L.Activation("relu", name="stem_relu")(y)
    a = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw1")(y)
    a = L.BatchNormalization(epsilon=1e-3, name="dw1_bn")(a)
    a = L.Activation("relu", name="dw1_relu")(a)
    a = L.Conv2D(24, 1, name="pw1")(a)
    b = L.SeparableConv2D(20, 3, padding="same", activation="relu", name="sep")(y)
    c = L.Concatenate(name="cat1")([a, b])
    c = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(c)
    c = L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, name="dw2")(c)
    c = L.Conv2D(32, 3, groups=4, padding="same", activation="relu", name="grouped")(c)
    d = L.DepthwiseConv2D(5, dilation_rate=2, padding="same", name="dw_dilated")(c)
    e = L.Concatenate(name="cat2")([c, d, c])
    e = L.GlobalAveragePooling2D(name="gap")(e)
    out = L.Dense(10, activation="softmax", name="predictions")(e)
    return K.Model(x, out, name="small_backbone")


def init_keras_weights(K, model, rng):
    from make_fixtures import leaf_layers, q, short_name
    for layer in leaf_layers(model):
        if not layer.weights:
            continue
        depthwise = isinstance(layer, K.layers.DepthwiseConv2D)
        values = []
        for v in layer.weights:
            n, shape = short_name(v), tuple(v.shape)
            if n in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                fan_in = int(np.prod(shape[:2])) if (depthwise or n == "depthwise_kernel") else int(np.prod(shape[:-1]))
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


def keras_part(out):
    from make_fixtures import (calibrate_bn, calibrate_head, check_close, check_softmax_health, frameworks, predict,
                               save_k2, save_k3, save_keras_zip)
    tf, keras, tf_keras = frameworks()
    manifest = {}
    os.makedirs(f"{out}/inputs", exist_ok=True)
    os.makedirs(f"{out}/expected", exist_ok=True)

    def tf_pre(x):
        return np.ascontiguousarray(keras.applications.mobilenet_v2.preprocess_input(np.array(x, np.float32)), np.float32)

    def torch_pre(x):
        return np.ascontiguousarray(keras.applications.densenet.preprocess_input(np.array(x, np.float32)), np.float32)

    # (name, builder, input size, preprocess_input, its name, the applications weights-file name or None)
    cases = [
        ("small", lambda K: build_small(K), (33, 31), tf_pre, "tf", None),
        ("mobilenetv2", lambda K: K.applications.MobileNetV2(weights=None, input_shape=(SIZE, SIZE, 3), classes=10),
         (SIZE, SIZE), tf_pre, "tf", f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{SIZE}.h5"),
        ("densenet121", lambda K: K.applications.DenseNet121(weights=None, input_shape=(SIZE, SIZE, 3), classes=10),
         (SIZE, SIZE), torch_pre, "torch", "densenet121_weights_tf_dim_ordering_tf_kernels.h5"),
    ]
    for index, (name, build, (h, w), pre, preprocessing, weights_file) in enumerate(cases):
        log(f"{name}: building")
        rng = np.random.default_rng(SEED + index)
        keras.utils.set_random_seed(SEED + index)
        model = build(keras)
        init_keras_weights(keras, model, rng)
        xcal = pre(images(SEED + 100 + index, 4, h, w))
        x = pre(images(SEED + 200 + index, 2, h, w))
        n_bn = calibrate_bn(keras, model, xcal, rng)
        gap = [l for l in model.layers if isinstance(l, keras.layers.GlobalAveragePooling2D)][-1]
        features = keras.Model(model.input, gap.output)
        dense = model.layers[-1]
        calibrate_head(dense, [predict(features, xcal), predict(features, x)], rng)
        y = predict(model, x)
        check_softmax_health(name, y)
        files = []
        save_k3(model, f"{out}/{name}.k3.h5")
        files.append(f"{name}.k3.h5")
        save_keras_zip(model, f"{out}/{name}.keras")
        files.append(f"{name}.keras")
        for f in list(files):
            check_close(f"{f} reloaded", predict(keras.models.load_model(f"{out}/{f}", compile=False), x), y)
        k2 = build(tf_keras)
        k2.set_weights(model.get_weights())
        check_close(f"{name} tf_keras", predict(k2, x), y)
        save_k2(k2, f"{out}/{name}.k2.h5")
        check_close(f"{name}.k2.h5 reloaded", predict(tf_keras.models.load_model(f"{out}/{name}.k2.h5", compile=False), x), y)
        files.append(f"{name}.k2.h5")
        if weights_file:
            # Weights only, no config: read with the built-in topology (the applications layout, and Keras 3's).
            k2.save_weights(f"{out}/{weights_file}")
            model.save_weights(f"{out}/{name}.weights.h5")
            files += [weights_file, f"{name}.weights.h5"]
        np.save(f"{out}/inputs/{name}.npy", x)
        np.save(f"{out}/expected/{name}.npy", y)
        manifest[name] = {"files": files, "input": f"inputs/{name}.npy", "expected": f"expected/{name}.npy",
                          "preprocessing": preprocessing, "batch_norms": n_bn, "framework": f"keras {keras.__version__}",
                          "top1": [int(i) for i in y.argmax(axis=1)]}
        log(f"{name}: {len(files)} files, {n_bn} batch norms, top-1 {manifest[name]['top1']}")
    return manifest


# ---------------------------------------------------------------------------------------------------
# torch


def torch_part(out):
    import torch
    import torchvision

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    manifest = {}
    os.makedirs(f"{out}/inputs", exist_ok=True)
    os.makedirs(f"{out}/expected", exist_ok=True)
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)

    def pre(imgs):
        return np.ascontiguousarray((imgs.transpose(0, 3, 1, 2).astype(np.float32) / 255 - mean) / std, np.float32)

    name = "resnext50_32x4d"
    model = torchvision.models.resnext50_32x4d(weights=None, num_classes=10)
    xcal = torch.from_numpy(pre(images(SEED + 300, 4, SIZE, SIZE)))
    x = torch.from_numpy(pre(images(SEED + 301, 2, SIZE, SIZE)))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # Running statistics from a training-mode pass over the calibration batch (momentum 1), then perturbed.
    with torch.no_grad():
        for m in bns:
            m.momentum = 1.0
        model.train()
        model(xcal)
        model.eval()
        for m in bns:
            c = m.num_features
            var = m.running_var.numpy().astype(np.float64)
            m.running_mean += torch.from_numpy((rng.normal(0, 1, c) * 0.2 * np.sqrt(var)).astype(np.float32))
            m.running_var.copy_(torch.from_numpy(np.maximum(var * rng.uniform(0.5, 2.0, c), 1e-4).astype(np.float32)))
            m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, c).astype(np.float32)))
            m.bias.copy_(torch.from_numpy(rng.normal(0, 0.2, c).astype(np.float32)))
        feats = {}
        hook = model.avgpool.register_forward_hook(lambda mod, i, o: feats.__setitem__("f", o.flatten(1)))
        model(torch.cat([xcal, x]))
        hook.remove()
        f = feats["f"].numpy().astype(np.float64)
        w = rng.normal(0, 1, (10, f.shape[1]))
        z = (f - f.mean(axis=0)) @ w.T
        w *= 1.5 / max(float(z.std()), 1e-12)
        model.fc.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        model.fc.bias.copy_(torch.from_numpy((-(f.mean(axis=0) @ w.T) + rng.normal(0, 0.3, 10)).astype(np.float32)))
        y = model(x).numpy()
    # The default (dynamo) exporter, and the TorchScript one (its adaptive average pool is GlobalAveragePool where
    # dynamo writes ReduceMean).
    files = []
    try:
        torch.onnx.export(model, (x,), f"{out}/{name}.onnx", dynamo=True, opset_version=18)
        files.append(f"{name}.onnx")
    except Exception as e:
        log(f"{name}: dynamo export failed ({type(e).__name__}: {str(e)[:120]})")
    torch.onnx.export(model, (x,), f"{out}/{name}.torchscript.onnx", dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    files.append(f"{name}.torchscript.onnx")
    np.save(f"{out}/inputs/{name}.npy", x.numpy())
    np.save(f"{out}/expected/{name}.npy", y)
    top = y.argmax(axis=1)
    srt = np.sort(y, axis=1)
    if np.any(srt[:, -1] - srt[:, -2] < 0.01):
        raise AssertionError(f"{name}: top-1 and top-2 logits closer than 0.01")
    manifest[name] = {"files": files, "input": f"inputs/{name}.npy", "expected": f"expected/{name}.npy",
                      "layout": "NCHW", "framework": f"torch {torch.__version__}",
                      "top1": [int(i) for i in top]}
    log(f"{name}: exported ({', '.join(files)}), top-1 {manifest[name]['top1']}")
    return manifest


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["keras", "torch"], required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    manifest = keras_part(a.out) if a.part == "keras" else torch_part(a.out)
    path = f"{a.out}/manifest.json"
    whole = json.load(open(path)) if os.path.exists(path) else {}
    whole.update(manifest)
    with open(path, "w") as f:
        json.dump(whole, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
