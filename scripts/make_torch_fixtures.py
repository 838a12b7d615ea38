#!/usr/bin/env python3
"""Writes the PyTorch export fixtures: torchvision ResNets with replaced heads as `torch.onnx.export` writes
them, torch's own outputs as the truth, and tiny ONNX models (onnx.helper) with onnxruntime's outputs for the
op semantics the ResNets do not reach (Softmax per opset, ReduceMean/ReduceSum, declared output shapes, models
the runtime cannot run). Python is used only for test fixtures; Kiln itself never needs it.

Normally run through `scripts/fixtures-torchvision`, which caches the result in $KILN_CACHE/fixtures-torchvision.
Two stages, one per pinned environment (torch and onnxruntime do not share one):

    $(scripts/pyenv torch) scripts/make_torch_fixtures.py torch --out DIR   # the exports and torch's outputs
    $(scripts/pyenv)       scripts/make_torch_fixtures.py onnx  --out DIR   # tiny models, onnxruntime's checks

The torch stage builds torchvision resnet18/resnet50 from seeded random weights, calibrates the BatchNorm
running statistics on a batch of seeded images (so activations stay in range through 50 layers) and then
randomises them (mean shifted, variance scaled, gamma and beta drawn), replaces the head by
`fc = Linear(F, N)` or the fine-tuning recipe `fc = Sequential(Dropout(0.2), Linear(F, N))`, and exports in
eval mode with a symbolic batch:
- the default exporter (dynamo, opset 18+, weights in `NAME.onnx.data` beside the file, AdaptiveAvgPool2d as
  ReduceMean with axes as an input), also with `external_data=False` (one file), at opset 18, and with
  `optimize=False` (the exporter's raw graph: BatchNormalization, Shape/Squeeze/Concat/Reshape before the
  head, dead Expand/CastLike chains);
- the TorchScript exporter (`dynamo=False`, opset 17: GlobalAveragePool + Flatten; opset 11: Identity nodes for
  the weights), and at opset 13 a head that writes `x.mean((2, 3))` and `x.view(x.size(0), -1)` (ReduceMean
  with axes as an attribute, Shape/Gather/Unsqueeze/Concat/Reshape).
torch's outputs on fixed normalised NCHW inputs (torchvision preprocessing of seeded uint8 images) are the
expected values, and torch's pooled features of a few photos through torchvision's own transforms (for `kiln
features`' defaults with a PyTorch backbone); the onnx stage also runs onnxruntime on every export and records how far it is from torch
(`onnxruntime_vs_torch`), so a fixture whose export itself were wrong would show.

manifest.json lists one case per line: model, kind, input, expected, outputs, declared output shape (batch
as -1), top1, layout, opset, ops, notes; refusal cases carry `refuse` (what kiln convert must say).
"""
import argparse
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in scripts/

import numpy as np  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def log(msg):
    print(f"[make_torch_fixtures] {msg}", file=sys.stderr, flush=True)


def seeded_images(seed, n, size):
    """Seeded image-like uint8 RGB pictures [n, size, size, 3]: smooth colour fields plus noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.empty((size, size, 3))
        for c in range(3):
            a, b, f, p = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(1, 6), rng.uniform(0, 6.3)
            img[..., c] = 128 + 90 * np.sin(f * (a * xs + b * ys) + p)
        img += rng.normal(0, 12, img.shape)
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def torchvision_nchw(images):
    """torchvision's preprocessing: RGB / 255, minus mean, over std, as NCHW float32."""
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def write_case(cases, **case):
    cases.append(case)


def write_manifest(out, cases, name):
    with open(os.path.join(out, name), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, sort_keys=True) for c in cases) + "\n]\n")


# ---------------------------------------------------------------------------------------------------
# Stage 1: torch


TORCH_MODELS = [
    # name, arch, head, exporter, size, extra export options
    ("resnet50_sequential_dynamo_224", "resnet50", "sequential", "dynamo", 224, {}),
    ("resnet50_linear_dynamo_64", "resnet50", "linear", "dynamo", 64, {}),
    ("resnet50_linear_torchscript_64", "resnet50", "linear", "torchscript", 64, {"opset_version": 17}),
    ("resnet18_linear_dynamo_64", "resnet18", "linear", "dynamo", 64, {}),
    ("resnet18_sequential_dynamo_onefile_64", "resnet18", "sequential", "dynamo", 64,
     {"external_data": False, "opset_version": 18}),
    ("resnet18_sequential_dynamo_unoptimized_64", "resnet18", "sequential", "dynamo", 64, {"optimize": False}),
    ("resnet18_sequential_torchscript_64", "resnet18", "sequential", "torchscript", 64, {"opset_version": 17}),
    ("resnet18_meanview_torchscript_64", "resnet18", "meanview", "torchscript", 64, {"opset_version": 13}),
    ("resnet18_linear_torchscript_opset11_64", "resnet18", "linear", "torchscript", 64, {"opset_version": 11}),
]
CLASSES = {"resnet50": 5, "resnet18": 7}
# RGB photos of samples/images/photos (several sizes and aspect ratios) for the photo-features case.
PHOTOS = ["chelsea_q90.jpg", "china_q95_444.jpg", "flower_q85_422.jpg", "rocket_q90.jpg"]


def torch_stage(out, photos):
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import torchvision
    import onnx

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)

    class MeanViewHead(torch.nn.Module):
        """A ResNet whose forward pools with `x.mean((2, 3))` and flattens with `x.view(x.size(0), -1)`."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            n = self.net
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
            x = x.mean((2, 3), keepdim=True)
            return n.fc(x.view(x.size(0), -1))

    def build(arch, head, size, seed):
        """A torchvision ResNet with seeded weights, BN statistics calibrated then randomised, a replaced head."""
        torch.manual_seed(seed)
        net = getattr(torchvision.models, arch)(weights=None)
        features = net.fc.in_features
        classes = CLASSES[arch]
        if head == "sequential":
            net.fc = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(features, classes))
        else:
            net.fc = torch.nn.Linear(features, classes)
        # BatchNorm statistics: calibrated on seeded images (cumulative average), then randomised.
        calib = torch.from_numpy(torchvision_nchw(seeded_images(seed + 1, 8, size)))
        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        net.train()
        with torch.no_grad():
            net(calib)
            g = torch.Generator().manual_seed(seed + 2)
            for m in bns:
                c = m.num_features
                std = m.running_var.sqrt()
                m.running_mean += 0.2 * std * torch.randn(c, generator=g)
                m.running_var *= torch.empty(c).uniform_(0.7, 1.4, generator=g)
                m.weight.copy_(torch.empty(c).uniform_(0.6, 1.4, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
        net.eval()
        with torch.no_grad():
            # The head centred on the calibration images' mean feature (post-ReLU features share a large
            # common part that would give every image the same class), logits of a few units.
            head_module = net.fc
            fc = head_module[1] if head == "sequential" else head_module
            net.fc = torch.nn.Identity()
            mean_feature = net(calib).mean(0)
            net.fc = head_module
            fc.weight.mul_(4.0)
            fc.bias.copy_(0.1 * torch.randn(classes, generator=g) - fc.weight @ mean_feature)
        model = MeanViewHead(net).eval() if head == "meanview" else net
        assert not any(m.training for m in model.modules())
        with torch.no_grad():
            logits = model(torch.from_numpy(inputs[size])).numpy().astype(np.float32)
        return model, logits

    inputs = {}
    for size, batch, seed in [(224, 2, 224), (64, 3, 64)]:
        x = torchvision_nchw(seeded_images(seed, batch, size))
        np.save(os.path.join(out, f"input_{size}_nchw.npy"), x)
        inputs[size] = x

    os.makedirs(os.path.join(out, "expected"), exist_ok=True)
    cases = []
    built = {}
    for name, arch, head, exporter, size, options in TORCH_MODELS:
        key = (arch, head, size)
        if key not in built:
            # Seeds in order until every input's top-1 leads by 0.2% of the largest logit (no near tie that float
            # rounding could flip).
            for attempt in range(10):
                seed = sum(map(ord, f"{arch}/{head}")) + size + 1000 * attempt
                model, logits = build(arch, head, size, seed)
                top = np.sort(logits, axis=1)
                if (top[:, -1] - top[:, -2]).min() >= 2e-3 * np.abs(logits).max():
                    break
            else:
                raise SystemExit(f"{name}: no seed gives clear top-1 classes")
            log(f"{name}: seed {seed}")
            built[key] = (model, logits)
        model, logits = built[key]
        path = os.path.join(out, name + ".onnx")
        x = torch.from_numpy(inputs[size])
        log(f"{name}: torch.onnx.export ({exporter} {options})")
        if exporter == "dynamo":
            torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["logits"], dynamo=True,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False, **options)
        else:
            torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["logits"], dynamo=False,
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, **options)
        proto = onnx.load(path, load_external_data=False)
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        external = os.path.exists(path + ".data")
        ops = sorted({n.op_type for n in proto.graph.node})
        expected = f"expected/{name}.logits.npy"
        np.save(os.path.join(out, expected), logits)
        top = np.sort(logits, axis=1)
        write_case(cases, model=name + ".onnx", kind=f"torch-{exporter}", arch=arch, head=head,
                   input=f"input_{size}_nchw.npy", expected=[expected], outputs=["logits"],
                   declared=[[-1, CLASSES[arch]]], top1=[int(i) for i in logits.argmax(1)], layout="NCHW",
                   opset=int(opset), external_data=external, ops=ops,
                   top1_margin=float((top[:, -1] - top[:, -2]).min()), max_abs_logit=float(np.abs(logits).max()),
                   notes=f"{exporter} {options}")
    # torch's pooled features of real photos through torchvision's own transforms (Resize(73) + CenterCrop(64),
    # what `--resize torchvision` does for 64x64), for `kiln features` with a PyTorch backbone's defaults.
    if photos:
        from PIL import Image
        from torchvision import transforms

        net = built[("resnet18", "linear", 64)][0]
        pipeline = transforms.Compose([transforms.Resize(73), transforms.CenterCrop(64), transforms.ToTensor(),
                                       transforms.Normalize(MEAN.tolist(), STD.tolist())])
        batch = torch.stack([pipeline(Image.open(os.path.join(photos, f)).convert("RGB")) for f in PHOTOS])
        fc, net.fc = net.fc, torch.nn.Identity()
        with torch.no_grad():
            features = net(batch).numpy().astype(np.float32)
        net.fc = fc
        np.save(os.path.join(out, "expected/photo_features_resnet18_64.npy"), features)
        write_case(cases, model="resnet18_linear_dynamo_64.onnx", kind="photo-features", photos=PHOTOS,
                   expected=["expected/photo_features_resnet18_64.npy"], outputs=["mean"], layout="NCHW", opset=20,
                   notes="torchvision Resize(73) + CenterCrop(64) + ToTensor + Normalize on PIL images, pooled features")
    write_manifest(out, cases, "manifest-torch.json")


# ---------------------------------------------------------------------------------------------------
# Stage 2: onnx.helper models and onnxruntime


def onnx_stage(out):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(16)
    with open(os.path.join(out, "manifest-torch.json")) as f:
        cases = json.load(f)

    # onnxruntime on every export, against torch.
    for c in cases:
        if c["kind"] == "photo-features":
            continue
        session = ort.InferenceSession(os.path.join(out, c["model"]), providers=["CPUExecutionProvider"])
        x = np.load(os.path.join(out, c["input"]))
        got = session.run(None, {"x": x})[0]
        want = np.load(os.path.join(out, c["expected"][0]))
        c["onnxruntime_vs_torch"] = float(np.abs(got - want).max() / np.abs(want).max())
        assert c["onnxruntime_vs_torch"] < 5e-5, c
        assert list(got.argmax(1)) == c["top1"], c

    os.makedirs(os.path.join(out, "ops"), exist_ok=True)

    def save_model(name, nodes, inputs, outputs, opset, initializers=()):
        graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="kiln-fixtures")
        model.ir_version = 7
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(out, "ops", name + ".onnx")
        onnx.save(model, path)
        return path

    def tensor(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    def run_case(name, kind, nodes, x_shape, y_shape, opset, initializers=(), notes=""):
        """A one-input model: saved, run by onnxruntime on a seeded input, listed with its declared output."""
        declared = [-1 if isinstance(d, str) else d for d in y_shape]
        path = save_model(name, nodes, [tensor("x", x_shape)], [tensor("y", y_shape)], opset, initializers)
        concrete = [{"h": 9, "w": 11}.get(d, 3) if isinstance(d, str) else d for d in x_shape]
        x = rng.normal(0, 2, concrete).astype(np.float32)
        np.save(os.path.join(out, "ops", name + ".input.npy"), x)
        y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.save(os.path.join(out, "ops", name + ".expected.npy"), y)
        write_case(cases, model=f"ops/{name}.onnx", kind=kind, input=f"ops/{name}.input.npy",
                   expected=[f"ops/{name}.expected.npy"], outputs=["y"], declared=[declared],
                   expected_shape=list(y.shape), layout="NCHW" if len(x_shape) == 4 else "", opset=opset, notes=notes)

    # Softmax: opsets <= 12 flatten the axes from `axis` (default 1); 13+ take one axis (default -1).
    for opset in (11, 12, 13):
        for shape, axes in [(["n", 5], [None, 0, 1, -1, -2]), (["n", 3, 4, 5], [None, 1, 2, 3, -3])]:
            for axis in axes:
                attrs = {} if axis is None else {"axis": axis}
                label = "default" if axis is None else str(axis).replace("-", "m")
                name = f"softmax_opset{opset}_rank{len(shape)}_axis_{label}"
                run_case(name, "softmax", [helper.make_node("Softmax", ["x"], ["y"], **attrs)], shape, shape, opset,
                         notes=f"Softmax axis {axis} at opset {opset}")

    # Reductions: axes as an attribute (ReduceMean <= 17, ReduceSum <= 12) or an input (18+, 13+).
    def reduce_case(op, opset, axes, keepdims, as_input):
        shape = ["n", 4, 6, 5]
        label = "_".join(str(a).replace("-", "m") for a in axes)
        name = f"{op.lower()}_opset{opset}_axes_{label}_keep{keepdims}"
        nodes, inits = [], []
        if as_input:
            inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
            nodes.append(helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims))
        else:
            nodes.append(helper.make_node(op, ["x"], ["y"], axes=axes, keepdims=keepdims))
        norm = [a % 4 for a in axes]
        y = [("n" if i == 0 else shape[i]) if i not in norm else 1 for i in range(4)]
        if not keepdims:
            y = [d for i, d in enumerate(y) if i not in norm]
        run_case(name, "reduce", nodes, shape, y, opset, inits, notes=f"{op} axes {axes} keepdims {keepdims}")

    reduce_case("ReduceMean", 13, [2, 3], 1, False)
    reduce_case("ReduceMean", 17, [-1, -2], 0, False)
    reduce_case("ReduceMean", 18, [-1, -2], 1, True)
    reduce_case("ReduceMean", 18, [2, 3], 0, True)
    reduce_case("ReduceMean", 18, [1], 1, True)
    reduce_case("ReduceMean", 13, [1], 0, False)
    reduce_case("ReduceMean", 18, [3], 1, True)
    reduce_case("ReduceSum", 11, [2, 3], 1, False)
    reduce_case("ReduceSum", 13, [-1, -2], 0, True)
    reduce_case("ReduceSum", 13, [1], 1, True)

    # Declared output shapes: a pooled map [N, C, 1, 1], a convolution to [N, C, 1, 1], a feature map.
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.3, (4,)).astype(np.float32), "b")
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    run_case("gap_keepdims_opset13", "shape", [conv, helper.make_node("GlobalAveragePool", ["c"], ["y"])],
             ["n", 3, 8, 8], ["n", 4, 1, 1], 13, [w, b], notes="GlobalAveragePool keeps [N, C, 1, 1]")
    run_case("conv_to_1x1_opset13", "shape", [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
             ["n", 3, 3, 3], ["n", 4, 1, 1], 13, [w, b], notes="an NCHW [N, C, 1, 1] output")
    run_case("conv_feature_map_opset13", "shape", [conv, helper.make_node("Relu", ["c"], ["y"])],
             ["n", 3, 6, 7], ["n", 4, 6, 7], 13, [w, b], notes="an NCHW feature map output")

    # The same ops on a convolution's output, which Kiln holds NHWC: the axes move in the IR.
    for name, op, opset, attrs in [("conv_softmax_opset13_axis_1", "Softmax", 13, {"axis": 1}),
                                   ("conv_softmax_opset13_axis_m1", "Softmax", 13, {}),
                                   ("conv_softmax_opset11_axis_2", "Softmax", 11, {"axis": 2}),
                                   ("conv_softmax_opset11_axis_1", "Softmax", 11, {}),
                                   ("conv_reducemean_opset13_axes_1_keep0", "ReduceMean", 13, {"axes": [1], "keepdims": 0}),
                                   ("conv_reducesum_opset11_axes_1_3_keep1", "ReduceSum", 11, {"axes": [1, 3], "keepdims": 1})]:
        out_shape = ["n", 4, 6, 7]
        if op == "ReduceMean":
            out_shape = ["n", 6, 7]
        elif op == "ReduceSum":
            out_shape = ["n", 1, 6, 1]
        run_case(name, "reduce" if op.startswith("Reduce") else "softmax",
                 [conv, helper.make_node(op, ["c"], ["y"], **attrs)], ["n", 3, 6, 7], out_shape, opset, [w, b],
                 notes=f"{op} {attrs} after a Conv at opset {opset}")

    flatten = helper.make_node("Flatten", ["p"], ["y"])
    run_case("conv_free_size_opset13", "shape", [conv, helper.make_node("GlobalAveragePool", ["c"], ["p"]), flatten],
             ["n", 3, "h", "w"], ["n", 4], 13, [w, b], notes="NCHW input of any size (kiln inspect counts 224x224)")

    # Models the runtime cannot run: kiln convert must refuse them.
    relu = helper.make_node("Relu", ["x"], ["y"])
    for rank in (1, 3, 6):
        shape = [2, 3, 4, 2, 3, 2][:rank]
        path = save_model(f"input_rank{rank}", [relu], [tensor("x", shape)], [tensor("y", shape)], 13)
        write_case(cases, model=f"ops/{os.path.basename(path)}", kind="refuse", outputs=["y"], layout="", opset=13,
                   refuse=f"rank {rank}")
    path = save_model("two_inputs", [helper.make_node("Add", ["x", "z"], ["y"])],
                      [tensor("x", ["n", 5]), tensor("z", ["n", 5])], [tensor("y", ["n", 5])], 13)
    write_case(cases, model="ops/two_inputs.onnx", kind="refuse", outputs=["y"], layout="", opset=13, refuse="2 inputs")

    write_manifest(out, cases, "manifest.json")
    log(f"{len(cases)} cases")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["torch", "onnx"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--photos", help="samples/images/photos (torch stage): torch's features of a few photos")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.stage == "torch":
        torch_stage(args.out, args.photos)
    else:
        onnx_stage(args.out)


if __name__ == "__main__":
    main()
