#!/usr/bin/env python3
"""Writes the small committed ONNX samples in samples/onnx/ (see README.md there).

    PY=$(scripts/pyenv) && TF_CPP_MIN_LOG_LEVEL=3 $PY samples/onnx/make_samples.py

The builder, calibration and checks are those of scripts/make_onnx_fixtures.py (full-size fixtures); here
the ResNets are "micro" (stem 6, three stages of one bottleneck each, widths 3/5/7, 10 classes) so that
every file stays a few kilobytes. Reference outputs are onnxruntime's on the files as written.
"""
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import make_onnx_fixtures as mo  # noqa: E402
from make_fixtures import log, make_images  # noqa: E402

KEEP = {"make_samples.py", "README.md"}


def micro(v15, seed, xcal, inputs):
    net = mo.ResNet(stem=6, widths=(3, 5, 7), blocks=(1, 1, 1), classes=10, v15=v15)
    rng = np.random.default_rng(seed)
    net.init(rng)
    net.calibrate(xcal, inputs, rng)
    return net


def ops_model(path, rng):
    """A small opset-17 graph for the ops a ResNet file does not show: an NHWC input with tf2onnx's
    leading Transpose, auto_pad SAME_UPPER/SAME_LOWER, Mul+Add batch norm, a BatchNormalization after a
    Relu (not foldable: becomes a diagonal 1x1 conv), AveragePool with count_include_pad, MaxPool with
    ceil_mode, Sub/Div by per-channel constants, Flatten of a 2x2 feature map (NCHW order), MatMul+Add+Mul
    (folded into one Dense), and outputs in NCHW, NHWC and pooled form."""
    def w(name, shape, scale=1.0):
        return numpy_helper.from_array(mo.q(rng.normal(0, scale, shape)), name)

    def positive(name, shape):
        return numpy_helper.from_array(mo.q(rng.uniform(0.5, 1.5, shape)), name)

    inits = [
        w("w1", (8, 3, 3, 3), 0.4), w("b1", (8,), 0.1), positive("s1", (1, 8, 1, 1)), w("t1", (1, 8, 1, 1), 0.2),
        w("w2", (6, 8, 3, 3), 0.2), positive("g2", (6,)), w("be2", (6,), 0.2), w("m2", (6,), 0.2), positive("v2", (6,)),
        positive("g3", (6,)), w("be3", (6,), 0.2), w("m3", (6,), 0.3), positive("v3", (6,)),
        w("sub", (6, 1, 1), 0.3), positive("div", (1, 6, 1, 1)),
        w("wd", (24, 7), 0.5), w("bd", (7,), 0.1), positive("sd", (7,)),
    ]
    N = helper.make_node
    nodes = [
        N("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        N("Conv", ["nchw", "w1", "b1"], ["c1"], auto_pad="SAME_UPPER", strides=[2, 2], kernel_shape=[3, 3], name="conv_same_upper"),
        N("Mul", ["c1", "s1"], ["bn1_mul"], name="bn1_mul"),
        N("Add", ["bn1_mul", "t1"], ["bn1_add"], name="bn1_add"),
        N("Relu", ["bn1_add"], ["r1"], name="relu1"),
        N("Conv", ["r1", "w2"], ["c2"], auto_pad="SAME_LOWER", strides=[2, 2], name="conv_same_lower"),
        N("BatchNormalization", ["c2", "g2", "be2", "m2", "v2"], ["bn2"], epsilon=1e-3, name="bn2"),
        N("Relu", ["bn2"], ["r2"], name="relu2"),
        N("BatchNormalization", ["r2", "g3", "be3", "m3", "v3"], ["bn3"], name="bn_after_relu"),
        N("AveragePool", ["bn3"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1, name="avgpool_include_pad"),
        N("MaxPool", ["ap"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, name="maxpool_ceil"),
        N("Sub", ["mp", "sub"], ["sb"], name="sub_const"),
        N("Div", ["sb", "div"], ["dv"], name="div_const"),
        N("Flatten", ["dv"], ["flat"], axis=1, name="flatten_2x2"),
        N("MatMul", ["flat", "wd"], ["mm"], name="matmul"),
        N("Add", ["mm", "bd"], ["mm_bias"], name="bias"),
        N("Mul", ["mm_bias", "sd"], ["mm_scaled"], name="scale"),
        N("Softmax", ["mm_scaled"], ["prob"], axis=1, name="softmax"),
        N("Transpose", ["r1"], ["relu1_nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
        N("GlobalAveragePool", ["r2"], ["pooled"], name="gap"),
    ]
    outputs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 7]),
               helper.make_tensor_value_info("relu1_nhwc", TensorProto.FLOAT, ["N", 6, 5, 8]),
               helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 6, 1, 1])]
    graph = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 12, 10, 3])],
                              outputs, initializer=inits)
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="kiln-samples", producer_version="1",
                              ir_version=helper.find_min_ir_version_for(opsets))
    mo.save(model, path, external=False)


def bad_models(folder):
    """Tiny damaged models, one fault each (the importer must refuse them with a one-line error)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(99)
    weight = rng.normal(0, 1, (2, 3, 3, 3)).astype(np.float32)

    def model(name, init=None, extra_inputs=(), op="Conv", domain="", attrs=None, opset=13, ir=None):
        node = helper.make_node(op, ["x", "conv.weight"] if op == "Conv" else ["x"], ["y"], name="conv",
                                domain=domain, **(attrs if attrs is not None else {"pads": [1, 1, 1, 1]}))
        graph = helper.make_graph([node, helper.make_node("Relu", ["y"], ["out"], name="relu")], name,
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]), *extra_inputs],
                                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                                  initializer=[init] if init is not None else [])
        opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
        m = helper.make_model(graph, opset_imports=opsets, producer_name="kiln-samples",
                              ir_version=ir or helper.find_min_ir_version_for([opsets[0]]))
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(m.SerializeToString())

    good = numpy_helper.from_array(weight, "conv.weight")
    short = numpy_helper.from_array(weight, "conv.weight")
    short.raw_data = short.raw_data[:-4]
    model("raw_data_short.onnx", short)
    counted = TensorProto(name="conv.weight", data_type=TensorProto.FLOAT, dims=[2, 3, 3, 3])
    counted.float_data.extend(weight.ravel()[:-1].tolist())
    model("float_data_short.onnx", counted)
    # Weights listed as graph inputs (older exporters) but the initializer itself left out.
    model("missing_initializer.onnx", None,
          extra_inputs=[helper.make_tensor_value_info("conv.weight", TensorProto.FLOAT, [2, 3, 3, 3])], ir=3, opset=7)
    model("missing_tensor.onnx", None)
    for name, location in (("external_escape.onnx", "../outside.bin"), ("external_absolute.onnx", "/etc/hostname"),
                           ("external_missing.onnx", "no_such_file.bin")):
        t = TensorProto(name="conv.weight", data_type=TensorProto.FLOAT, dims=[2, 3, 3, 3])
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", location
        model(name, t)
    model("unsupported_op.onnx", good, op="LRN", attrs={"size": 3})
    model("unsupported_domain.onnx", good, op="FusedConv", domain="com.microsoft", attrs={})
    model("grouped_conv.onnx", good, attrs={"group": 3})
    log(f"  {len(os.listdir(folder))} damaged models in {folder}")


def main():
    import onnxruntime  # noqa: F401  (fail early when the environment lacks it)

    out = HERE
    for fn in os.listdir(out):
        if fn not in KEEP:
            p = os.path.join(out, fn)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    fx = mo.Fixtures(out)
    newest = mo.newest_opset()
    log(f"newest opset both onnx and onnxruntime know: {newest}")

    x2 = mo.torch_nchw(make_images(40, 2, 40, 48))
    x_small = mo.torch_nchw(make_images(32, 1, 32, 32))
    xcal = mo.torch_nchw(make_images(41, 4, 40, 48))
    inp2 = fx.save("input_40x48_nchw.npy", x2)
    inp_small = fx.save("input_32x32_nchw.npy", x_small)
    nets = {False: micro(False, 16, xcal, [x2, x_small]), True: micro(True, 17, xcal, [x2, x_small])}
    for v15, net in nets.items():
        for x in (x2, x_small):
            mo.check_conditioning(f"micro v15={v15}", net, x, maxpool_ceil=not v15)
    variants = [
        ("micro_v1_opset9.onnx", False, mo.Variant("micro_v1_opset9", 9, residual="Sum", pool=(3, 3), flatten="reshape_const",
                                                   batch=2, spatial=(40, 48), weights_as_inputs=True, storage="float_data")),
        ("micro_v15_opset13.onnx", True, mo.Variant("micro_v15_opset13", 13, identity_dropout=True, spatial=("H", "W"))),
        ("micro_v1_opset7.onnx", False, mo.Variant("micro_v1_opset7", 7, residual="Sum", flatten="reshape_shape",
                                                   head="gemm_alpha", storage="float_data", weights_as_inputs=True,
                                                   identity_dropout=True, bn_spatial=True, spatial=(40, 48))),
        (f"micro_v15_opset{newest}.onnx", True, mo.Variant(f"micro_v15_opset{newest}", newest, flatten="reshape_shape",
                                                           head="matmul_add", softmax_axis=-1, constant_nodes=("fc.bias",),
                                                           constant_of_shape=True, stem_pad_node=True, external=True,
                                                           spatial=(40, 48))),
        ("micro_v1_opset11.onnx", False, mo.Variant("micro_v1_opset11", 11, flatten="squeeze", maxpool_ceil=True, batch=2,
                                                    softmax=False, outputs=("logits", "features"), spatial=(40, 48))),
    ]
    for fn, v15, v in variants:
        net = nets[v15]
        mo.write_resnet(net, v, fx.path(fn))
        cases = [(inp2, x2)] + ([(inp_small, x_small)] if v.spatial == ("H", "W") else [])
        for inp, x in cases:
            outs = mo.run_ort(fx.path(fn), x)
            _, logits = net.forward(x, maxpool_ceil=v.maxpool_ceil)
            want = mo.softmax(logits) if v.softmax else logits
            if v.softmax:
                mo.check_softmax_health(f"{fn} on {inp}", outs[0])
            err = mo.check_close(f"{fn} onnxruntime vs numpy", outs[0], want, tol=1e-3)
            names = ["prob" if v.softmax else "logits"] + (["avgpool"] if "features" in v.outputs else [])
            fx.case(fn, "zoo", inp, list(zip(names, outs)), "NCHW", v.opset, notes=f"numpy forward agrees to {err:.2g}",
                    external=v.external)

    rng = np.random.default_rng(170)
    ops_model(fx.path("ops_opset17.onnx"), rng)
    x_ops = fx.save("input_ops_nhwc.npy", rng.normal(0, 1, (2, 12, 10, 3)).astype(np.float32))
    outs = mo.run_ort(fx.path("ops_opset17.onnx"), np.load(fx.path(x_ops)))
    fx.case("ops_opset17.onnx", "ops", x_ops, list(zip(["prob", "relu1_nhwc", "pooled"], outs)), "NHWC", 17)

    log("tf2onnx of samples/mini/ops_k3.h5 (opset 17): Keras' layers as tf2onnx writes them")
    import keras

    mini = os.path.join(HERE, "..", "mini")
    m = keras.models.load_model(os.path.join(mini, "ops_k3.h5"), compile=False)
    mo.tf2onnx_convert(m, fx.path("keras_ops_tf2onnx.onnx"), input_shape=(None, 15, 16, 3))
    x = np.load(os.path.join(mini, "input_ops.npy"))
    outs = mo.run_ort(fx.path("keras_ops_tf2onnx.onnx"), x)
    keras_expected = "expected/ops_k3.input_ops.npy"
    err = mo.check_close("keras_ops_tf2onnx onnxruntime vs Keras", outs[0], np.load(os.path.join(mini, keras_expected)))
    fx.case("keras_ops_tf2onnx.onnx", "tf2onnx", "../mini/input_ops.npy", [("output", outs[0])], "NHWC", 17,
            notes=f"onnxruntime vs Keras {err:.2g}", keras_model="../mini/ops_k3.h5", keras_expected=f"../mini/{keras_expected}")

    log("ONNX's light_resnet50 (onnx/backend/test/data/light), input arange / n made by the test")
    mo.light_models(fx, names={"light_resnet50.onnx"})
    os.remove(fx.path("light", "light_resnet50_input.npy"))  # 600 kB: the test makes it
    os.remove(fx.path("light", "light_resnet50_output_0.npy"))  # the test reads the .pb
    fx.cases[-1]["input"] = None
    fx.cases[-1]["expected"] = None
    bad_models(fx.path("bad"))
    fx.write_manifest()
    total = 0
    for dirpath, _, files in os.walk(out):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    log(f"total {total / 1e3:.0f} kB in {out}")


if __name__ == "__main__":
    main()
