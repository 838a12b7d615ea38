import KilnFormat
import KilnGraph

/// One handler per ONNX op type. Attributes are read as the model's opset defines them; the comments name
/// the opset versions where an op changed in a way that matters here.
extension Converter {
    static let supportedOps: [String] = ([
        "Add", "AveragePool", "BatchNormalization", "Cast", "CastLike", "Concat", "Constant", "ConstantOfShape", "Conv", "Div",
        "Dropout", "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "MatMul", "MaxPool", "Mul", "Pad",
        "ReduceMean", "ReduceSum", "Reshape", "Shape", "Slice", "Softmax", "Squeeze", "Sub", "Sum", "Transpose", "Unsqueeze",
    ] + onnxActivations.keys).sorted()

    /// ONNX's elementwise activations without attributes that Kiln executes, each as its `Activation`.
    static let onnxActivations: [String: Activation] = [
        "Relu": .relu,
        "Sigmoid": Activation(.sigmoid),
    ]

    /// Converts node `n`; returns one value per output (nil for outputs nothing reads).
    mutating func convert(_ n: ONNXNodeProto) throws(ONNXImportError) -> [Value?] {
        guard n.domain.isEmpty || n.domain == "ai.onnx" else {
            throw fail("operator domain '\(n.domain)' is not supported (only the standard ONNX operators are)")
        }
        guard !n.outputs.isEmpty, !n.outputs[0].isEmpty else { throw fail("the node has no output") }
        let out = n.outputs[0]
        switch n.opType {
        case "Conv": return [try conv(n)]
        case "BatchNormalization": return [try batchNorm(n)]
        case let op where Self.onnxActivations[op] != nil:
            let x = try runtimeInput(n, 0, "X")
            let node = emit(out, .activation(Self.onnxActivations[op] ?? .none), inputs: [x.node])
            return [.runtime(RuntimeTensor(node: node, shape: x.shape, irShape: x.irShape, perm: x.perm))]
        case "Add", "Sub", "Mul", "Div": return [try arithmetic(n)]
        case "Sum": return [try sum(n)]
        case "MaxPool":
            try requireUnused(n, from: 1, "Indices")
            return [try pool(n, isMax: true)]
        case "AveragePool": return [try pool(n, isMax: false)]
        case "GlobalAveragePool":
            let x = try runtimeInput(n, 0, "X")
            guard x.shape.count == 4 else { throw fail("only 4-D (NCHW) inputs are supported, got \(describe(x.shape))") }
            let node = emit(out, .globalAvgPool, inputs: [try layout(x, nhwc, for: "GlobalAveragePool")])
            // ONNX keeps [N, C, 1, 1]; the IR gives [N, C], the same elements in the same order.
            return [.runtime(RuntimeTensor(node: node, shape: [x.shape[0], x.shape[1], .known(1), .known(1)],
                                           irShape: [x.shape[0], x.shape[1]], perm: nil))]
        case "Gemm": return [try gemm(n)]
        case "MatMul": return [try matMul(n)]
        case "Softmax": return [try softmax(n)]
        case "ReduceMean", "ReduceSum": return [try reduce(n)]
        case "Flatten", "Reshape", "Squeeze", "Unsqueeze": return [try reshape(n)]
        case "Transpose": return [try transpose(n)]
        case "Identity":
            return [try input(n, 0)]
        case "Dropout":
            // Opset 12+: ratio and training_mode are inputs; in training mode Dropout is not the identity.
            if opset >= 12, let mode = try optionalConstant(n, 2, "training_mode") {
                guard mode.ints?.allSatisfy({ $0 == 0 }) ?? false else { throw fail("training_mode is true") }
            }
            try requireUnused(n, from: 1, "mask")
            return [try input(n, 0)]
        case "Pad": return [try pad(n)]
        case "Constant": return [.constant(try constant(n))]
        case "ConstantOfShape": return [.constant(try constantOfShape(n))]
        case "Shape": return [.constant(try shape(n))]
        case "Gather": return [.constant(try gather(n))]
        case "Concat": return [try concatInputsAreConstant(n) ? .constant(try concat(n)) : try concatChannels(n)]
        case "Slice": return [.constant(try slice(n))]
        case "Cast": return [try cast(n)]
        case "CastLike": return [try castLike(n)]
        case "Expand": return [.constant(try expand(n))]
        default:
            throw fail("op type '\(n.opType)' is not supported (supported: \(Self.supportedOps.joined(separator: ", ")))")
        }
    }

    // MARK: - Convolution and pooling

    /// Conv (opsets 1, 11, 22: same attributes): W `[Cout, Cin / group, kH, kW]` becomes HWIO
    /// `[kH, kW, Cin / group, Cout]` with `group` channel groups (depthwise: group = Cin).
    mutating func conv(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        let x = try runtimeInput(n, 0, "X")
        let w = try floatInput(n, 1, "W")
        guard x.shape.count == 4 else { throw fail("only 2-D convolutions (4-D NCHW input) are supported, the input is \(describe(x.shape))") }
        guard w.shape.count == 4, let wv = w.floats else { throw fail("W has shape \(w.shape), expected [Cout, Cin, kH, kW]", tensor: n.inputs[1]) }
        let group = try int(n, "group", default: 1)
        let (cout, cin, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        guard group >= 1, group <= 1 << 24, cout % group == 0 else {
            throw fail("group \(group) does not divide the \(cout) output channels of W \(w.shape)", tensor: n.inputs[1])
        }
        if let c = x.shape[1].value, c != cin * group {
            throw fail("the input has \(c) channels but W \(w.shape) in \(group) group(s) expects \(cin * group)", tensor: n.inputs[1])
        }
        guard (1...65536).contains(kh), (1...65536).contains(kw), cout >= 1, cin >= 1 else {
            throw fail("W has shape \(w.shape): a window outside 1...65536 or no channels", tensor: n.inputs[1])
        }
        if let k = try ints(n, "kernel_shape"), k != [kh, kw] {
            throw fail("kernel_shape \(k) does not match W \(w.shape)")
        }
        let strides = try spatial(n, "strides", count: 2, default: [1, 1], minimum: 1)
        let dilations = try spatial(n, "dilations", count: 2, default: [1, 1], minimum: 1)
        let (padding, oh, ow, _) = try window(n, x, kernel: [kh, kw], strides: strides, dilations: dilations, ceilMode: false)
        var bias: WeightTensor?
        if let b = try optionalConstant(n, 2, "B") {
            guard b.shape == [cout], let bv = b.floats else { throw fail("B has shape \(b.shape), expected [\(cout)]", tensor: n.inputs[2]) }
            bias = WeightTensor(shape: [cout], values: bv)
        }
        var hwio = [Float](repeating: 0, count: wv.count)
        for o in 0..<cout {
            for c in 0..<cin {
                for i in 0..<kh {
                    for j in 0..<kw {
                        hwio[((i * kw + j) * cin + c) * cout + o] = wv[((o * cin + c) * kh + i) * kw + j]
                    }
                }
            }
        }
        let spec = ConvSpec(kernel: WeightTensor(shape: [kh, kw, cin, cout], values: hwio), bias: bias,
                            strideH: strides[0], strideW: strides[1], dilationH: dilations[0], dilationW: dilations[1],
                            padding: padding, groups: group)
        let node = emit(n.outputs[0], .conv2d(spec), inputs: [try layout(x, nhwc, for: "Conv")])
        return .runtime(RuntimeTensor(node: node, shape: [x.shape[0], .known(cout), oh, ow],
                                      irShape: [x.shape[0], oh, ow, .known(cout)], perm: nhwc))
    }

    /// MaxPool (opset 8: storage_order; 10: ceil_mode, dilations) and AveragePool (7: count_include_pad;
    /// 10: ceil_mode; 19: dilations).
    mutating func pool(_ n: ONNXNodeProto, isMax: Bool) throws(ONNXImportError) -> Value {
        let x = try runtimeInput(n, 0, "X")
        guard x.shape.count == 4 else { throw fail("only 2-D pooling (4-D NCHW input) is supported, the input is \(describe(x.shape))") }
        guard let kernel = try ints(n, "kernel_shape"), kernel.count == 2, kernel.allSatisfy({ $0 >= 1 && $0 <= 65536 }) else {
            throw fail("kernel_shape must hold 2 sizes")
        }
        let strides = try spatial(n, "strides", count: 2, default: [1, 1], minimum: 1)
        let dilations = try spatial(n, "dilations", count: 2, default: [1, 1], minimum: 1)
        guard dilations == [1, 1] else { throw fail("dilations \(dilations) are not supported in pooling") }
        let ceilMode = opset >= 10 ? try int(n, "ceil_mode", default: 0) != 0 : false
        var (padding, oh, ow, extra) = try window(n, x, kernel: kernel, strides: strides, dilations: [1, 1], ceilMode: ceilMode)
        var source = try layout(x, nhwc, for: n.opType)
        let countIncludePad = isMax || opset < 7 ? 0 : try int(n, "count_include_pad", default: 0)
        let includePad = countIncludePad != 0
        if includePad, case let .explicit(t, b, l, r) = padding, t + b + l + r > 0 {
            // Padding that counts as zeros is zero padding followed by a pool of the padded tensor. The
            // cells that ceil_mode adds beyond the pads are not counted by ONNX either: they stay pool padding.
            source = emit(n.outputs[0] + "/pad", .zeroPad(top: t, bottom: b - extra.0, left: l, right: r - extra.1), inputs: [source])
            padding = .explicit(top: 0, bottom: extra.0, left: 0, right: extra.1)
        } else if includePad, padding == .same {
            throw fail("count_include_pad with auto_pad SAME_UPPER is not supported")
        }
        let spec = Pool2DAttributes(kernelH: kernel[0], kernelW: kernel[1], strideH: strides[0], strideW: strides[1], padding: padding)
        let node = emit(n.outputs[0], isMax ? .maxPool(spec) : .avgPool(spec), inputs: [source])
        return .runtime(RuntimeTensor(node: node, shape: [x.shape[0], x.shape[1], oh, ow],
                                      irShape: [x.shape[0], oh, ow, x.shape[1]], perm: nhwc))
    }

    /// The explicit `pads` attribute as (top, bottom, left, right).
    func explicitPads(_ n: ONNXNodeProto) throws(ONNXImportError) -> (Int, Int, Int, Int) {
        let p = try spatial(n, "pads", count: 4, default: [0, 0, 0, 0], minimum: 0)
        return (p[0], p[2], p[1], p[3])
    }

    /// Padding and output sizes of a window op from auto_pad, pads (`[top, left, bottom, right]`) and
    /// ceil_mode (which becomes extra bottom/right padding, never counted and never winning; returned as
    /// `extra`, included in the padding).
    mutating func window(_ n: ONNXNodeProto, _ x: RuntimeTensor, kernel: [Int], strides: [Int], dilations: [Int],
                         ceilMode: Bool) throws(ONNXImportError) -> (WindowPadding, Dim, Dim, extra: (Int, Int)) {
        let autoPad = try string(n, "auto_pad", default: "NOTSET")
        let sizes = [x.shape[2], x.shape[3]]
        let effective = (0..<2).map { (kernel[$0] - 1) * dilations[$0] + 1 }
        var padding: WindowPadding
        var ceilExtra = (0, 0)
        switch autoPad {
        case "NOTSET", "":
            let (t, b, l, r) = try explicitPads(n)
            var extra = [0, 0]
            if ceilMode {
                for a in 0..<2 where strides[a] > 1 {
                    guard let size = sizes[a].value else {
                        throw fail("ceil_mode with a size known only at run time is not supported")
                    }
                    let (begin, end) = a == 0 ? (t, b) : (l, r)
                    let span = size + begin + end - effective[a]
                    guard span >= 0 else { throw fail("the input \(describe(x.shape)) is smaller than the window") }
                    var out = (span + strides[a] - 1) / strides[a] + 1
                    // A last window that would start in the end padding is dropped (ONNX, PyTorch).
                    if (out - 1) * strides[a] >= size + begin { out -= 1 }
                    extra[a] = max(0, (out - 1) * strides[a] + effective[a] - (size + begin + end))
                }
            }
            padding = .explicit(top: t, bottom: b + extra[0], left: l, right: r + extra[1])
            ceilExtra = (extra[0], extra[1])
        case "VALID":
            padding = .valid
        case "SAME_UPPER":
            padding = .same
        case "SAME_LOWER":
            guard let h = sizes[0].value, let w = sizes[1].value else {
                throw fail("auto_pad SAME_LOWER with a size known only at run time is not supported")
            }
            var totals: [Int] = []
            for (size, a) in [(h, 0), (w, 1)] {
                let out = (size + strides[a] - 1) / strides[a]
                totals.append(max((out - 1) * strides[a] + effective[a] - size, 0))
            }
            // SAME_LOWER puts the odd cell at the beginning.
            padding = .explicit(top: totals[0] - totals[0] / 2, bottom: totals[0] / 2,
                                left: totals[1] - totals[1] / 2, right: totals[1] / 2)
        default:
            throw fail("auto_pad '\(autoPad)' is unknown")
        }
        if case .explicit(let t, let b, let l, let r) = padding, ![t, b, l, r].allSatisfy({ (0...65536).contains($0) }) {
            throw fail("padding (\(t), \(b), \(l), \(r)) is outside 0...65536")
        }
        var out: [Dim] = []
        for a in 0..<2 {
            guard let size = sizes[a].value else {
                out.append(freshSymbol(n.outputs[0]))
                continue
            }
            let (begin, end) = padding.amounts(size: size, kernel: kernel[a], stride: strides[a], dilation: dilations[a], vertical: a == 0)
            let span = size + begin + end - effective[a]
            guard span >= 0 else {
                throw fail("the input \(describe(x.shape)) padded by \(begin)+\(end) is smaller than the window \(kernel)")
            }
            out.append(.known(span / strides[a] + 1))
        }
        return (padding, out[0], out[1], ceilExtra)
    }

    // MARK: - Normalisation and elementwise arithmetic

    /// BatchNormalization (opset 7: `spatial`; 9: no `spatial`; 14/15: `training_mode`).
    mutating func batchNorm(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        let x = try runtimeInput(n, 0, "X")
        if opset < 9, try int(n, "spatial", default: 1) != 1 { throw fail("spatial = 0 is not supported") }
        if opset >= 14, try int(n, "training_mode", default: 0) != 0 { throw fail("training_mode = 1 is not supported") }
        try requireUnused(n, from: 1, "training statistics")
        let epsilon = Double(try float(n, "epsilon", default: 1e-5))
        var vectors: [[Float]] = []
        for (i, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
            let c = try floatInput(n, i, what)
            guard c.shape.count == 1, let v = c.floats else {
                throw fail("\(what) has shape \(c.shape), expected one value per channel", tensor: n.inputs[i])
            }
            if let channels = x.shape.count > 1 ? x.shape[1].value : nil, v.count != channels {
                throw fail("\(what) has \(v.count) values but the input has \(channels) channels", tensor: n.inputs[i])
            }
            vectors.append(v)
        }
        let spec = BatchNormSpec(epsilon: epsilon, gamma: vectors[0], beta: vectors[1], mean: vectors[2], variance: vectors[3])
        let (node, irShape, perm) = try channelsLast(x, for: "BatchNormalization")
        let out = emit(n.outputs[0], .batchNorm(spec), inputs: [node])
        return .runtime(RuntimeTensor(node: out, shape: x.shape, irShape: irShape, perm: perm))
    }

    /// The IR node holding `x` with ONNX axis 1 (channels) as the last IR axis: NHWC for images, `[N, C]`
    /// as is.
    mutating func channelsLast(_ x: RuntimeTensor, for what: String) throws(ONNXImportError) -> (String, [Dim], [Int]?) {
        switch x.shape.count {
        case 2:
            let (node, ir) = try inONNXOrder(x, for: what)
            guard ir.count == 2 else { throw fail("\(what) on \(describe(x.shape)) held as \(describe(ir)) is not supported") }
            return (node, ir, x.perm ?? (ir == x.shape ? [0, 1] : nil))
        case 4:
            if x.effectivePerm == nil, x.irShape.count == 2, x.irShape[1] == x.shape[1],
               x.shape[2] == .known(1), x.shape[3] == .known(1) {
                return (x.node, x.irShape, nil)  // [N, C, 1, 1] held as [N, C]
            }
            return (try layout(x, nhwc, for: what), [x.shape[0], x.shape[2], x.shape[3], x.shape[1]], nhwc)
        default:
            throw fail("\(what) on a rank-\(x.shape.count) tensor is not supported (only [N, C] and [N, C, H, W])")
        }
    }

    /// A constant that broadcasts against `x` as one value per channel (ONNX axis 1), as Float64.
    func perChannel(_ c: ConstantTensor, _ x: RuntimeTensor, name: String) throws(ONNXImportError) -> [Double] {
        guard let values = c.floats else { throw fail("the constant '\(name)' holds sizes known only at run time", tensor: name) }
        let rank = x.shape.count
        guard c.shape.count <= rank, rank == 2 || rank == 4 else {
            throw fail("a constant \(c.shape) with a tensor \(describe(x.shape)) is not supported", tensor: name)
        }
        let padded = [Int](repeating: 1, count: rank - c.shape.count) + c.shape
        for (a, d) in padded.enumerated() where a != 1 && d != 1 {
            throw fail("the constant \(c.shape) varies along axis \(a) of \(describe(x.shape)); only one value per channel (axis 1) is supported", tensor: name)
        }
        if padded[1] == 1 {
            guard let channels = x.shape[1].value else {
                throw fail("a scalar with a channel count known only at run time is not supported", tensor: name)
            }
            return [Double](repeating: Double(values[0]), count: channels)
        }
        if let channels = x.shape[1].value, channels != padded[1] {
            throw fail("the constant has \(padded[1]) values for \(channels) channels", tensor: name)
        }
        return values.map { Double($0) }
    }

    /// y = x · scale + shift per channel: an IR BatchNormalization with mean 0, variance 1, epsilon 0, which
    /// the passes fold into the convolution before it (see `resolvePerChannelAffines` for the rest).
    mutating func affine(_ x: RuntimeTensor, scale: [Double]?, shift: [Double]?, output: String, what: String) throws(ONNXImportError) -> Value {
        let channels = (scale ?? shift)?.count ?? 0
        let spec = BatchNormSpec(epsilon: 0, gamma: scale.map { $0.map { Float($0) } }, beta: shift.map { $0.map { Float($0) } },
                                 mean: [Float](repeating: 0, count: channels), variance: [Float](repeating: 1, count: channels))
        let (node, irShape, perm) = try channelsLast(x, for: what)
        let out = emit(output, .batchNorm(spec), inputs: [node])
        return .runtime(RuntimeTensor(node: out, shape: x.shape, irShape: irShape, perm: perm))
    }

    /// Add, Sub, Mul, Div (opset 7+: numpy broadcasting): constants fold; a tensor with a per-channel
    /// constant becomes an affine; tensor + tensor becomes an IR Add.
    mutating func arithmetic(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        guard let a = try input(n, 0), let b = try input(n, 1) else { throw fail("needs two inputs") }
        if opset < 7, try int(n, "broadcast", default: 0) != 0 {
            throw fail("the legacy 'broadcast' attribute (opsets before 7) is not supported")
        }
        let out = n.outputs[0]
        switch (a, b) {
        case let (.constant(x), .constant(y)):
            return .constant(try fold(n.opType, x, y))
        case let (.runtime(x), .constant(c)):
            let v = try perChannel(c, x, name: n.inputs[1])
            switch n.opType {
            case "Add": return try affine(x, scale: nil, shift: v, output: out, what: "Add")
            case "Sub": return try affine(x, scale: nil, shift: v.map { -$0 }, output: out, what: "Sub")
            case "Mul": return try affine(x, scale: v, shift: nil, output: out, what: "Mul")
            default:
                guard !v.contains(0) else { throw fail("division by zero", tensor: n.inputs[1]) }
                return try affine(x, scale: v.map { 1 / $0 }, shift: nil, output: out, what: "Div")
            }
        case let (.constant(c), .runtime(x)):
            let v = try perChannel(c, x, name: n.inputs[0])
            switch n.opType {
            case "Add": return try affine(x, scale: nil, shift: v, output: out, what: "Add")
            case "Sub": return try affine(x, scale: v.map { _ in -1 }, shift: v, output: out, what: "Sub")
            case "Mul": return try affine(x, scale: v, shift: nil, output: out, what: "Mul")
            default: throw fail("dividing a constant by a computed tensor is not supported")
            }
        case let (.runtime(x), .runtime(y)):
            guard n.opType == "Add" else { throw fail("\(n.opType) of two computed tensors is not supported (only Add)") }
            return .runtime(try add(x, y, output: out))
        }
    }

    /// Sum (opsets 6, 8): an Add chain; constants among the operands are summed first.
    mutating func sum(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        var tensors: [RuntimeTensor] = []
        var constant: ConstantTensor?
        for i in n.inputs.indices {
            switch try input(n, i) {
            case .runtime(let t)?: tensors.append(t)
            case .constant(let c)?:
                if let c0 = constant { constant = try fold("Add", c0, c) } else { constant = c }
            case nil: continue
            }
        }
        guard var acc = tensors.first else {
            guard let constant else { throw fail("Sum has no inputs") }
            return .constant(constant)
        }
        for (k, t) in tensors.dropFirst().enumerated() {
            let last = k == tensors.count - 2 && constant == nil
            acc = try add(acc, t, output: last ? n.outputs[0] : "\(n.outputs[0])/sum\(k)")
        }
        if let constant {
            return try affine(acc, scale: nil, shift: try perChannel(constant, acc, name: "constant operands"),
                              output: n.outputs[0], what: "Sum")
        }
        return .runtime(acc)
    }

    /// IR Add of two tensors of the same shape, the second brought into the first one's layout.
    mutating func add(_ x: RuntimeTensor, _ y: RuntimeTensor, output: String) throws(ONNXImportError) -> RuntimeTensor {
        guard x.shape.count == y.shape.count, zip(x.shape, y.shape).allSatisfy({ $0 == $1 || $0.value == nil || $1.value == nil }) else {
            throw fail("adding tensors of shapes \(describe(x.shape)) and \(describe(y.shape)) (broadcasting) is not supported")
        }
        let shape = zip(x.shape, y.shape).map { $0.value == nil ? $1 : $0 }
        if let p = x.effectivePerm {
            let other = try layout(y, p, for: "Add")
            let node = emit(output, .add(activation: .none), inputs: [x.node, other])
            return RuntimeTensor(node: node, shape: shape, irShape: x.irShape, perm: p)
        }
        let (a, ia) = try inONNXOrder(x, for: "Add"), (b, ib) = try inONNXOrder(y, for: "Add")
        guard ia.count == ib.count else { throw fail("adding tensors held as \(describe(ia)) and \(describe(ib)) is not supported") }
        let node = emit(output, .add(activation: .none), inputs: [a, b])
        return RuntimeTensor(node: node, shape: shape, irShape: ia, perm: nil)
    }

    // MARK: - Classifier head

    /// Gemm (opset 7+: alpha, beta, transA, transB; C optional from 11): Y = alpha·A·B' + beta·C.
    mutating func gemm(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        let a = try runtimeInput(n, 0, "A")
        guard try int(n, "transA", default: 0) == 0 else { throw fail("transA = 1 is not supported") }
        let b = try floatInput(n, 1, "B")
        guard b.shape.count == 2, let bv = b.floats else { throw fail("B has shape \(b.shape), expected 2-D", tensor: n.inputs[1]) }
        let transB = try int(n, "transB", default: 0) != 0
        let alpha = Double(try float(n, "alpha", default: 1)), beta = Double(try float(n, "beta", default: 1))
        let (k, outs) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
        var kernel = [Float](repeating: 0, count: bv.count)
        for i in 0..<k {
            for j in 0..<outs {
                let v = transB ? bv[j * k + i] : bv[i * outs + j]
                kernel[i * outs + j] = alpha == 1 ? v : Float(Double(v) * alpha)
            }
        }
        var bias: WeightTensor?
        if let c = try optionalConstant(n, 2, "C") {
            guard let cv = c.floats, cv.count == 1 || cv.count == outs,
                  c.shape.dropLast().allSatisfy({ $0 == 1 }), c.shape.count <= 2 else {
                throw fail("C has shape \(c.shape); only a bias of \(outs) values (or one) is supported", tensor: n.inputs[2])
            }
            let full = cv.count == 1 ? [Float](repeating: cv[0], count: outs) : cv
            bias = WeightTensor(shape: [outs], values: beta == 1 ? full : full.map { Float(Double($0) * beta) })
        }
        return .runtime(try dense(a, kernel: WeightTensor(shape: [k, outs], values: kernel), bias: bias, output: n.outputs[0], what: "Gemm"))
    }

    /// MatMul of a `[N, K]` tensor by a constant `[K, M]`: a Dense without bias.
    mutating func matMul(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        let a = try runtimeInput(n, 0, "A")
        let b = try floatInput(n, 1, "B")
        guard b.shape.count == 2, let bv = b.floats else {
            throw fail("B has shape \(b.shape); only a constant 2-D right operand is supported", tensor: n.inputs[1])
        }
        return .runtime(try dense(a, kernel: WeightTensor(shape: b.shape, values: bv), bias: nil, output: n.outputs[0], what: "MatMul"))
    }

    mutating func dense(_ a: RuntimeTensor, kernel: WeightTensor, bias: WeightTensor?, output: String, what: String) throws(ONNXImportError) -> RuntimeTensor {
        guard a.shape.count == 2 else { throw fail("only a 2-D left operand [N, K] is supported, got \(describe(a.shape))") }
        if let k = a.shape[1].value, k != kernel.shape[0] {
            throw fail("the input has \(k) features but the weights \(kernel.shape) expect \(kernel.shape[0])")
        }
        var (node, ir) = try inONNXOrder(a, for: what)
        if ir.count != 2 {
            guard ir.count > 2, ir[0] == a.shape[0] else {
                throw fail("the input \(describe(a.shape)) is held as \(describe(ir)) and cannot be flattened")
            }
            node = emit(node + "/flatten", .flatten, inputs: [node])
            ir = a.shape
        }
        let out = emit(output, .dense(DenseSpec(kernel: kernel, bias: bias)), inputs: [node])
        let shape = [a.shape[0], .known(kernel.shape[1])]
        return RuntimeTensor(node: out, shape: shape, irShape: [ir[0], .known(kernel.shape[1])], perm: [0, 1])
    }
}
