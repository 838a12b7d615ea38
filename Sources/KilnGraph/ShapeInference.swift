import KilnFormat

/// Shapes on the conversion side: NHWC or [N, F], nil where the size is chosen at run time.
public typealias SymbolicShape = [Int?]

extension Graph {
    /// Infers every node's output shape, checking channel counts and weight shapes on the way.
    public func inferShapes() throws(GraphError) -> [String: SymbolicShape] {
        var shapes: [String: SymbolicShape] = [:]
        for node in nodes {
            var ins: [SymbolicShape] = []
            for name in node.inputs {
                guard let s = shapes[name] else {
                    throw GraphError(layer: node.name, message: "reads '\(name)', which is not computed before it")
                }
                ins.append(s)
            }
            shapes[node.name] = try Self.outputShape(of: node, inputs: ins)
        }
        return shapes
    }

    static func outputShape(of node: GraphNode, inputs: [SymbolicShape]) throws(GraphError) -> SymbolicShape {
        func fail(_ m: String) -> GraphError { GraphError(layer: node.name, message: m) }
        func expectArity(_ n: Int) throws(GraphError) {
            guard inputs.count == n else { throw fail("\(node.op.kindName) takes \(n) input(s), got \(inputs.count)") }
        }
        func image(_ s: SymbolicShape) throws(GraphError) -> (Int?, Int?, Int?, Int?) {
            guard s.count == 4 else { throw fail("\(node.op.kindName) needs a 4-D NHWC input, got rank \(s.count)") }
            return (s[0], s[1], s[2], s[3])
        }
        func windowed(_ size: Int?, kernel: Int, stride: Int, dilation: Int, padding: WindowPadding, vertical: Bool) throws(GraphError) -> Int? {
            guard let size else { return nil }
            let (a, b) = padding.amounts(size: size, kernel: kernel, stride: stride, dilation: dilation, vertical: vertical)
            let effective = (kernel - 1) * dilation + 1
            let padded = size + a + b
            guard padded >= effective else {
                throw fail("input size \(size) (padded \(padded)) is smaller than the window \(effective)")
            }
            return (padded - effective) / stride + 1
        }

        switch node.op {
        case .input(let shape):
            try expectArity(0)
            return shape
        case let .zeroPad(t, b, l, r):
            try expectArity(1)
            let (n, h, w, c) = try image(inputs[0])
            return [n, h.map { $0 + t + b }, w.map { $0 + l + r }, c]
        case let .constantPad(t, b, l, r, values):
            try expectArity(1)
            let (n, h, w, c) = try image(inputs[0])
            if let c, c != values.count { throw fail("\(values.count) pad values for \(c) channels") }
            return [n, h.map { $0 + t + b }, w.map { $0 + l + r }, c]
        case .channelAffine(let a):
            try expectArity(1)
            if let c = inputs[0].last ?? nil, c != a.perm.count {
                throw fail("preprocessing for \(a.perm.count) channels on an input of \(c) channels")
            }
            return inputs[0]
        case .conv2d(let spec):
            try expectArity(spec.hasResidual ? 2 : 1)
            let (n, h, w, c) = try image(inputs[0])
            guard spec.kernel.shape.count == 4 else { throw fail("kernel has shape \(spec.kernel.shape), expected [kH, kW, Cin, Cout]") }
            if let c, c != spec.inChannels {
                throw fail("input has \(c) channels but the kernel \(spec.kernel.shape) expects \(spec.inChannels)")
            }
            guard spec.groups >= 1, spec.outChannels % spec.groups == 0 else {
                throw fail("\(spec.outChannels) output channels are not a multiple of \(spec.groups) groups")
            }
            if let bias = spec.bias, bias.shape != [spec.outChannels] {
                throw fail("bias has shape \(bias.shape), expected [\(spec.outChannels)]")
            }
            let oh = try windowed(h, kernel: spec.kernel.shape[0], stride: spec.strideH, dilation: spec.dilationH, padding: spec.padding, vertical: true)
            let ow = try windowed(w, kernel: spec.kernel.shape[1], stride: spec.strideW, dilation: spec.dilationW, padding: spec.padding, vertical: false)
            let out: SymbolicShape = [n, oh, ow, spec.outChannels]
            if spec.hasResidual { try requireCompatible(out, inputs[1], node: node) }
            return out
        case .batchNorm(let spec):
            try expectArity(1)
            let c = inputs[0].last ?? nil
            for (what, v) in [("moving_mean", spec.mean), ("moving_variance", spec.variance), ("gamma", spec.gamma ?? spec.mean), ("beta", spec.beta ?? spec.mean)] {
                if let c, v.count != c { throw fail("\(what) has \(v.count) values but the input has \(c) channels") }
                if v.count != spec.mean.count { throw fail("\(what) has \(v.count) values, moving_mean \(spec.mean.count)") }
            }
            return inputs[0]
        case .activation, .softmax, .dropout:
            try expectArity(1)
            return inputs[0]
        case .add:
            try expectArity(2)
            try requireCompatible(inputs[0], inputs[1], node: node)
            return zip(inputs[0], inputs[1]).map { $0 ?? $1 }
        case .maxPool(let p), .avgPool(let p):
            try expectArity(1)
            let (n, h, w, c) = try image(inputs[0])
            let oh = try windowed(h, kernel: p.kernelH, stride: p.strideH, dilation: 1, padding: p.padding, vertical: true)
            let ow = try windowed(w, kernel: p.kernelW, stride: p.strideW, dilation: 1, padding: p.padding, vertical: false)
            return [n, oh, ow, c]
        case .globalAvgPool, .globalMaxPool:
            try expectArity(1)
            let (n, _, _, c) = try image(inputs[0])
            return [n, c]
        case .flatten:
            try expectArity(1)
            guard let first = inputs[0].first else { throw fail("Flatten needs a batch dimension") }
            let rest = inputs[0].dropFirst()
            if rest.contains(where: { $0 == nil }) { return [first, nil] }
            return [first, rest.reduce(1) { $0 * ($1 ?? 1) }]
        case .concat:
            guard inputs.count >= 2 else { throw fail("Concatenate takes 2 or more inputs, got \(inputs.count)") }
            let rank = inputs[0].count
            guard rank >= 2, inputs.allSatisfy({ $0.count == rank }) else {
                throw fail("Concatenate operands have ranks \(inputs.map(\.count)); one rank of 2 or more expected")
            }
            var out = inputs[0]
            for s in inputs.dropFirst() {
                for axis in 0..<(rank - 1) {
                    if let a = out[axis], let b = s[axis], a != b {
                        throw fail("Concatenate operands \(inputs.map(describe).joined(separator: ", ")) differ outside the channel axis")
                    }
                    out[axis] = out[axis] ?? s[axis]
                }
                out[rank - 1] = out[rank - 1].flatMap { a in s[rank - 1].map { a + $0 } }
            }
            return out
        case .transpose(let perm):
            try expectArity(1)
            guard perm.count == inputs[0].count, Set(perm) == Set(0..<perm.count) else {
                throw fail("permutation \(perm) does not fit a rank-\(inputs[0].count) input")
            }
            return perm.map { inputs[0][$0] }
        case .reshape(let r):
            try expectArity(1)
            let x = inputs[0]
            var out: [Int?] = []
            for (i, d) in r.dims.enumerated() {
                switch d {
                case 0:
                    guard i < x.count else { throw fail("Reshape dim \(i) copies a dim the input \(describe(x)) does not have") }
                    out.append(x[i])
                case -1: out.append(nil)
                default: out.append(d)
                }
            }
            if let rest = r.dims.firstIndex(of: -1) {
                let known = x.allSatisfy { $0 != nil } && out.enumerated().allSatisfy { $0.offset == rest || $0.element != nil }
                if known, case .success(let s) = r.outputShape(x.map { $0 ?? 1 }) { out[rest] = s[rest] }
            } else if case .failure = r.outputShape(x.map { $0 ?? 1 }), x.allSatisfy({ $0 != nil }) {
                throw fail("cannot reshape \(describe(x)) to \(describe(out))")
            }
            return out
        case .reduce(let r):
            try expectArity(1)
            guard let last = r.axes.last, last < inputs[0].count else {
                throw fail("reduces axes \(r.axes) of a rank-\(inputs[0].count) input")
            }
            if r.keepDims { return inputs[0].enumerated().map { r.axes.contains($0.offset) ? 1 : $0.element } }
            return inputs[0].enumerated().filter { !r.axes.contains($0.offset) }.map(\.element)
        case .channelGather(let g):
            try expectArity(1)
            guard let last = inputs[0].last else { throw fail("needs a tensor of rank ≥ 1") }
            guard let c = last else {
                if case .index = g { return Array(inputs[0].dropLast()) }
                return inputs[0].dropLast() + [nil]
            }
            guard let taken = g.indices(of: c) else { throw fail("\(g) is outside the \(c) channels of the last axis") }
            if case .index = g { return Array(inputs[0].dropLast()) }
            return inputs[0].dropLast() + [taken.count]
        case .channelStack:
            guard let first = inputs.first, inputs.allSatisfy({ $0.count == first.count }) else {
                throw fail("stacks tensors of different ranks")
            }
            return first + [inputs.count]
        case .channelConcat:
            guard let first = inputs.first, inputs.allSatisfy({ $0.count == first.count && !$0.isEmpty }) else {
                throw fail("concatenates tensors of different ranks")
            }
            let lasts = inputs.map { $0.last ?? nil }
            return first.dropLast() + [lasts.contains { $0 == nil } ? nil : lasts.reduce(0) { $0 + ($1 ?? 0) }]
        case let .broadcastAffine(scale, shift):
            try expectArity(1)
            let c = inputs[0].last ?? nil
            for v in [scale, shift] where v.count != 1 {
                if let c, v.count != c { throw fail("\(v.count) values for a last axis of \(c)") }
            }
            return inputs[0]
        case .dense(let spec):
            try expectArity(1)
            guard inputs[0].count == 2 else {
                throw fail("Dense on a rank-\(inputs[0].count) input is not supported (add Flatten or global pooling before it)")
            }
            guard spec.kernel.shape.count == 2 else { throw fail("kernel has shape \(spec.kernel.shape), expected [in, out]") }
            if let f = inputs[0][1], f != spec.kernel.shape[0] {
                throw fail("input has \(f) features but the kernel \(spec.kernel.shape) expects \(spec.kernel.shape[0])")
            }
            if let bias = spec.bias, bias.shape != [spec.kernel.shape[1]] {
                throw fail("bias has shape \(bias.shape), expected [\(spec.kernel.shape[1])]")
            }
            return [inputs[0][0], spec.kernel.shape[1]]
        }
    }

    static func requireCompatible(_ a: SymbolicShape, _ b: SymbolicShape, node: GraphNode) throws(GraphError) {
        guard a.count == b.count else {
            throw GraphError(layer: node.name, message: "operands have ranks \(a.count) and \(b.count)")
        }
        for (x, y) in zip(a, b) {
            if let x, let y, x != y {
                throw GraphError(layer: node.name, message: "operand shapes \(describe(a)) and \(describe(b)) differ")
            }
        }
    }
}

public func describe(_ shape: SymbolicShape) -> String {
    "(" + shape.map { $0.map(String.init) ?? "None" }.joined(separator: ", ") + ")"
}
