#!/usr/bin/env python3
"""make bench-serve: kiln-serve against the real Triton Inference Server (nvidia-pytriton's tritonserver, the model
in its Python callable on ONNX Runtime and on OpenVINO, Triton's dynamic batching on) and KServe's Python
ModelServer (ONNX Runtime), under the same load from tritonclient's async HTTP API (binary tensors), all on
127.0.0.1.

The model: the fixture ResNet-50 backbone + the fixture head (25 classes), as `kiln fuse` makes it for kiln-serve
(raw RGB 0-255 in, Keras "caffe" preprocessing folded in) and as a Keras model exported to ONNX (tf2onnx) for the
peers, whose callables apply the same preprocessing in NumPy. Two kinds of request: a tensor ([1, 224, 224, 3]
FP32 pixels) and a JPEG (the server decodes it and resizes it nearest-neighbour, as Keras load_img does).
`--model head` runs the 2048 -> 25 head alone (tensors only), where the servers' own overhead is most of the time.
OpenVINO is held to float32 (INFERENCE_PRECISION_HINT f32), as in scripts/bench_peers.py: on a CPU with
AVX512_BF16 it would otherwise compute in bfloat16.

Subcommands (scripts/bench-serve runs them):
    convert --fixtures DIR --out DIR        (fixtures env) the peers' ONNX model, cached
    triton --onnx M --runtime R --port P    (bench-serve env) one pytriton server
    kserve --onnx M --port P                (bench-serve env) one KServe ModelServer
    drive ...                               (bench-serve env) starts every server, runs the load, prints the table

Fairness: every server process (and its children) is pinned to the same cores (--cores, default all of this
machine's, sched_setaffinity), every runtime computes with the same number of threads (--threads: kiln-serve
--threads, ONNX Runtime intra_op_num_threads, OpenVINO INFERENCE_NUM_THREADS; one model instance each), every
server batches dynamically up to --max-batch with --max-queue-delay-us. The load generator runs on the same
cores (a 2-core machine has no others). The cells run server after server (kiln, triton-ort, triton-ov,
kserve-ort, then the next cell) so that drifting machine load hits every server alike; every cell runs for
--seconds after a warm-up, and the whole run is bounded (--budget seconds).
"""
import argparse, asyncio, json, os, signal, socket, statistics, subprocess, sys, time

MEAN_BGR = (103.939, 116.779, 123.68)  # Keras "caffe" preprocessing: RGB -> BGR, minus the ImageNet means


def log(message):
    print(f"[bench-serve] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# convert (fixtures environment: keras, tf2onnx)

def convert(args):
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "resnet50_head.onnx")
    backbone = os.path.join(args.fixtures, "resnet50_notop_k3.h5")
    head = os.path.join(args.fixtures, "head_k3.h5")
    stamp = f"{os.path.getmtime(backbone)} {os.path.getmtime(head)} v1"
    stamp_path = onnx_path + ".stamp"
    head_path = os.path.join(args.out, "head.onnx")
    if os.path.exists(onnx_path) and os.path.exists(stamp_path) and open(stamp_path).read() == stamp \
            and os.path.exists(head_path):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras, tensorflow as tf, tf2onnx
    b = keras.models.load_model(backbone, compile=False)
    h = keras.models.load_model(head, compile=False)
    pooled = b.output
    if len(pooled.shape) == 4:
        pooled = keras.layers.GlobalAveragePooling2D()(pooled)
    model = keras.Model(b.input, h(pooled))
    spec = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="input"),)
    if not (os.path.exists(onnx_path) and os.path.exists(stamp_path) and open(stamp_path).read() == stamp):
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=onnx_path + ".tmp")
        os.replace(onnx_path + ".tmp", onnx_path)
    # The head alone (Dropout, Dense + softmax) as the three ONNX nodes it is: tf2onnx's from_keras trips over
    # the head once it is part of `model`.
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    dense = next(layer for layer in h.layers if layer.get_weights())
    kernel, bias = dense.get_weights()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "kernel"], ["logits"]), helper.make_node("Add", ["logits", "bias"], ["scores"]),
         helper.make_node("Softmax", ["scores"], ["output"], axis=-1)],
        "head", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, kernel.shape[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, kernel.shape[1]])],
        [numpy_helper.from_array(kernel, "kernel"), numpy_helper.from_array(bias, "bias")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), head_path + ".tmp")
    os.replace(head_path + ".tmp", head_path)
    open(stamp_path, "w").write(stamp)
    log(f"wrote {head_path} (and {onnx_path})")


# ---------------------------------------------------------------------------------------------------------------
# the peers' model: ONNX Runtime or OpenVINO on the exported model, caffe preprocessing in NumPy, PIL for JPEGs

def make_runner(onnx_path, runtime, threads, features=False):
    import numpy as np
    mean = np.array(MEAN_BGR, np.float32)
    if runtime == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        run = lambda x: session.run(None, {name: x})[0]  # noqa: E731
    else:
        import openvino as ov
        core = ov.Core()
        compiled = core.compile_model(core.read_model(onnx_path), "CPU",
                                      {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                                       # float32 like the others: on a CPU with AVX512_BF16 OpenVINO would
                                       # otherwise compute in bfloat16 (as scripts/bench_peers.py sets it too)
                                       "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        run = lambda x: request.infer({0: x})[compiled.output(0)].copy()  # noqa: E731

    def pixels(x):  # [N, 224, 224, 3] RGB 0-255 -> the model's input (the head alone: features as they are)
        if features:
            return np.ascontiguousarray(x, dtype=np.float32)
        return np.ascontiguousarray(x[..., ::-1] - mean, dtype=np.float32)

    def decode(blobs):
        import io
        from PIL import Image
        rows = []
        for blob in blobs:
            image = Image.open(io.BytesIO(bytes(blob))).convert("RGB")
            if image.size != (224, 224):
                image = image.resize((224, 224), Image.NEAREST)
            rows.append(np.asarray(image, np.float32))
        return np.stack(rows)
    return (lambda x: run(pixels(x))), decode


def pin_and_threads(args):
    if args.cores:
        os.sched_setaffinity(0, {int(c) for c in args.cores.split(",")})


def triton(args):
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig
    run, decode = make_runner(args.onnx, args.runtime, args.threads, features=args.model == "head")
    row = (2048,) if args.model == "head" else (224, 224, 3)

    @batch
    def infer_tensor(input):
        return {"output": run(input)}

    @batch
    def infer_image(image):
        return {"output": run(decode(image.reshape(-1)))}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.port, grpc_address="127.0.0.1", grpc_port=args.port + 1,
                          metrics_port=args.port + 2, metrics_address="127.0.0.1", allow_metrics=False, log_verbose=0)
    batching = ModelConfig(max_batch_size=args.max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us))
    with Triton(config=config) as server:
        server.bind(model_name="bench", infer_func=infer_tensor, inputs=[Tensor(name="input", dtype=np.float32, shape=row)],
                    outputs=[Tensor(name="output", dtype=np.float32, shape=(25,))], config=batching, strict=False)
        server.bind(model_name="bench_image", infer_func=infer_image, inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
                    outputs=[Tensor(name="output", dtype=np.float32, shape=(25,))], config=batching, strict=False)
        server.serve()


def kserve_server(args):
    import uvicorn
    original = uvicorn.Config.__init__

    def loopback(self, *a, **k):  # KServe listens on 0.0.0.0: keep it to 127.0.0.1
        k["host"] = "127.0.0.1"
        original(self, *a, **k)
    uvicorn.Config.__init__ = loopback
    sys.argv = sys.argv[:1]
    import numpy as np
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    run, decode = make_runner(args.onnx, "onnxruntime", args.threads, features=args.model == "head")

    class Bench(Model):
        def __init__(self, name):
            super().__init__(name)
            self.ready = True

        def predict(self, payload: InferRequest, headers=None) -> InferResponse:
            tensor = payload.inputs[0]
            if tensor.name == "image":
                y = run(decode(tensor.as_numpy().reshape(-1)))
            else:
                y = run(tensor.as_numpy().astype(np.float32, copy=False))
            out = InferOutput(name="output", shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(y, binary_data=True)
            return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "0")

    import logging
    server = ModelServer(http_port=args.port, grpc_port=args.port + 1, enable_grpc=False, workers=1,
                         enable_latency_logging=False)
    for name in ("uvicorn.access", "kserve.trace", "kserve"):  # no line per request (Triton writes none either)
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([Bench("bench"), Bench("bench_image")])


# ---------------------------------------------------------------------------------------------------------------
# drive

def free_port(span=1):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span < 65535:
            return port


class Server:
    def __init__(self, name, command, port, tensor_model, image_model, image_shape, cores):
        self.name, self.command, self.port = name, command, port
        self.tensor_model, self.image_model, self.image_shape = tensor_model, image_model, image_shape
        self.cores, self.proc = cores, None
        self.kinds = ("tensor", "jpeg")

    def start(self, log_dir):
        cores = self.cores
        self.log = open(os.path.join(log_dir, f"{self.name}.log"), "w")
        self.proc = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)

    def wait_ready(self, timeout):
        import urllib.request
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} (see {self.log.name})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/models/{self.image_model}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout} s (see {self.log.name})")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


async def load(server, kind, concurrency, seconds, pixels, jpeg):
    """`concurrency` clients sending one-image requests back to back for `seconds`; latencies in ms."""
    import numpy as np
    import tritonclient.http.aio as aioclient
    client = aioclient.InferenceServerClient(f"127.0.0.1:{server.port}", conn_limit=max(concurrency, 4))
    if kind == "tensor":
        model = server.tensor_model
        make = lambda: [input_of(aioclient, "input" if server.name != "kiln" else server.tensor_input, pixels, "FP32")]  # noqa: E731
    else:
        model = server.image_model
        blob = np.array([jpeg], dtype=np.object_).reshape(server.image_shape)
        make = lambda: [input_of(aioclient, "image", blob, "BYTES")]  # noqa: E731
    outputs = [aioclient.InferRequestedOutput(server.output, binary_data=True)]
    latencies, errors, first = [], [], []
    deadline = time.perf_counter() + seconds

    async def worker():
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                result = await client.infer(model, make(), outputs=outputs)
                latencies.append((time.perf_counter() - start) * 1000)
                if not first:
                    first.append(result.as_numpy(server.output).reshape(-1))
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e)[:200])
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    await client.close()
    return latencies, wall, errors, (first[0] if first else None)


def input_of(module, name, array, datatype):
    i = module.InferInput(name, list(array.shape), datatype)
    i.set_data_from_numpy(array, binary_data=True)
    return i


def percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


def drive(args):
    import numpy as np
    here = os.path.dirname(os.path.abspath(__file__))
    cores = {int(c) for c in args.cores.split(",")} if args.cores else os.sched_getaffinity(0)
    os.makedirs(args.work, exist_ok=True)
    jpeg = open(args.jpeg, "rb").read()
    from PIL import Image
    pixels = np.asarray(Image.open(args.jpeg).convert("RGB").resize((224, 224), Image.NEAREST), np.float32)[None]
    if args.model == "head":
        pixels = np.random.default_rng(1).random((1, 2048), dtype=np.float32)
    servers = []
    port = free_port(3)
    kiln = Server("kiln", [os.path.join(args.bin, "kiln-serve"), args.bundle, "--name", "bench", "--host", "127.0.0.1",
                           "--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0", "--threads", str(args.threads),
                           "--max-batch", str(args.max_batch), "--max-queue-delay-us", str(args.delay_us)],
                  port, "bench", "bench", [1], cores)
    kiln.tensor_input, kiln.output = args.kiln_input, args.kiln_output
    servers.append(kiln)
    python = sys.executable
    for runtime, short in (("onnxruntime", "ort"), ("openvino", "ov")):
        if f"triton-{short}" not in args.servers:
            continue
        p = free_port(3) + 3
        s = Server(f"triton-{short}", [python, os.path.join(here, "bench_serve.py"), "triton", "--onnx", args.onnx, "--runtime", runtime,
                                       "--port", str(p), "--threads", str(args.threads), "--max-batch", str(args.max_batch),
                                       "--delay-us", str(args.delay_us), "--model", args.model], p, "bench", "bench_image", [1, 1], cores)
        s.output = "output"
        servers.append(s)
    if "kserve-ort" in args.servers:
        p = free_port(2) + 7
        s = Server("kserve-ort", [python, os.path.join(here, "bench_serve.py"), "kserve", "--onnx", args.onnx, "--port", str(p),
                                  "--threads", str(args.threads), "--model", args.model], p, "bench", "bench_image", [1], cores)
        s.output = "output"
        # KServe 0.21's REST server turns every binary input into JSON-style data (infer_type.py, from_bytes ->
        # set_data_from_numpy(binary_data=False)), which refuses BYTES that are not UTF-8: no JPEG requests.
        s.kinds = ("tensor",)
        servers.append(s)
    servers = [s for s in servers if s.name in args.servers]
    if args.model == "head":
        for s in servers:
            s.kinds = ("tensor",)
    started = time.time()
    try:
        for s in servers:
            s.start(args.work)
        for s in servers:
            s.wait_ready(180)
            log(f"{s.name} ready on 127.0.0.1:{s.port}")
        # Warm-up: every server, both kinds, a few requests at the largest concurrency (plans, batch shapes).
        for s in servers:
            for kind in s.kinds:
                _, _, errors, _ = asyncio.run(load(s, kind, max(args.concurrency), args.warmup, pixels, jpeg))
                if errors:
                    raise RuntimeError(f"{s.name} {kind}: {errors[0]}")
        results, answers = {}, {}
        for kind in ("tensor", "jpeg"):
            for c in args.concurrency:
                for s in servers:
                    if kind not in s.kinds:
                        continue
                    if time.time() - started > args.budget:
                        raise RuntimeError(f"over the time budget of {args.budget} s")
                    latencies, wall, errors, first = asyncio.run(load(s, kind, c, args.seconds, pixels, jpeg))
                    results[(s.name, kind, c)] = (len(latencies) / wall, percentile(latencies, 50), percentile(latencies, 99),
                                                  len(latencies), len(errors))
                    if first is not None:
                        answers.setdefault((s.name, kind), first)
                    log(f"{s.name:11s} {kind:6s} c={c:<3d} {len(latencies) / wall:7.1f} req/s  p50 {percentile(latencies, 50):7.1f} ms  "
                        f"p99 {percentile(latencies, 99):7.1f} ms  errors {len(errors)}")
    finally:
        for s in servers:
            s.stop()
    report(args, servers, results, answers, time.time() - started)


def report(args, servers, results, answers, took):
    import numpy as np
    names = [s.name for s in servers]
    lines = [f"Machine: {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f} at the end; {took:.0f} s in all",
             ("Model: the 2048 -> 25 head alone, one [1, 2048] row per request;" if args.model == "head" else
              "Model: ResNet-50 + 25-class head, one 224x224 image per request;") + f" {args.threads} compute threads per server, "
             f"cores {args.cores or 'all'} for every server; dynamic batching up to {args.max_batch}, "
             f"{args.delay_us} us; {args.seconds} s per cell; load: tritonclient.http.aio, binary tensors", ""]
    header = f"{'request':7s} {'conc':>4s}  " + "  ".join(f"{n:>24s}" for n in names)
    lines += [header, f"{'':13s}  " + "  ".join(f"{'req/s   p50 ms   p99 ms':>24s}" for _ in names)]
    for kind in ("tensor", "jpeg"):
        for c in args.concurrency:
            cells = []
            for n in names:
                r = results.get((n, kind, c))
                cells.append(f"{r[0]:7.1f} {r[1]:8.1f} {r[2]:8.1f}" + ("!" if r[4] else " ") if r else f"{'-':>24s}")
            lines.append(f"{kind:7s} {c:4d}  " + "  ".join(f"{x:>24s}" for x in cells))
    lines.append("(! = some requests failed; - = not measured: KServe's REST server cannot take non-UTF-8 BYTES)")
    lines.append("")
    peers = [n for n in names if n != "kiln"]
    verdict = True
    for kind in ("tensor", "jpeg"):
        if "kiln" not in names or not peers or ("kiln", kind, args.concurrency[0]) not in results:
            break
        c8 = [c for c in args.concurrency if c == 8]
        c1 = [c for c in args.concurrency if c == 1]
        if c8:
            best = max(results[(n, kind, 8)][0] for n in peers if (n, kind, 8) in results)
            ratio = results[("kiln", kind, 8)][0] / best
            ok = ratio >= 1.5
            verdict &= ok
            lines.append(f"  {'PASS' if ok else 'MISS'}  {kind}: throughput at concurrency 8 / best peer's >= 1.5: {ratio:.2f}")
        if c1:
            best = min(results[(n, kind, 1)][2] for n in peers if (n, kind, 1) in results)
            ratio = results[("kiln", kind, 1)][2] / best
            ok = ratio <= 1.0
            verdict &= ok
            lines.append(f"  {'PASS' if ok else 'MISS'}  {kind}: p99 latency at concurrency 1 / best peer's <= 1.0: {ratio:.2f}")
    for kind in ("tensor", "jpeg"):
        ref = answers.get(("kiln", kind))
        for n in peers:
            other = answers.get((n, kind))
            if ref is not None and other is not None:
                diff = float(np.max(np.abs(ref - other)) / max(1e-12, float(np.max(np.abs(ref)))))
                same = int(np.argmax(ref)) == int(np.argmax(other))
                lines.append(f"  outputs {kind}: {n} vs kiln max|Δ|/max|kiln| {diff:.1e}, top-1 {'equal' if same else 'DIFFERENT'}")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}/{k[1]}/{k[2]}": dict(zip(("rps", "p50_ms", "p99_ms", "requests", "errors"), v))
                       for k, v in results.items()}, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert")
    p.add_argument("--fixtures", required=True)
    p.add_argument("--out", required=True)
    for name in ("triton", "kserve"):
        p = sub.add_parser(name)
        p.add_argument("--onnx", required=True)
        p.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"])
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--max-batch", type=int, default=8)
        p.add_argument("--delay-us", type=int, default=2000)
        p.add_argument("--cores", default="")
        p.add_argument("--model", default="resnet50", choices=["resnet50", "head"])
    p = sub.add_parser("drive")
    p.add_argument("--model", default="resnet50", choices=["resnet50", "head"],
                   help="resnet50: ResNet-50 + head on images; head: the 2048 -> 25 head alone (tensors only), where "
                        "the servers' own overhead, not the model, is most of the time")
    p.add_argument("--bin", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--kiln-input", required=True)
    p.add_argument("--kiln-output", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--jpeg", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--servers", nargs="+", default=["kiln", "triton-ort", "triton-ov", "kserve-ort"])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cores", default="", help="comma-separated CPU ids for every server (default: all)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--delay-us", type=int, default=2000)
    p.add_argument("--budget", type=float, default=1500)
    p.add_argument("--json", default="")
    args = parser.parse_args()
    if args.command == "convert":
        convert(args)
    elif args.command == "triton":
        pin_and_threads(args)
        triton(args)
    elif args.command == "kserve":
        pin_and_threads(args)
        kserve_server(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
