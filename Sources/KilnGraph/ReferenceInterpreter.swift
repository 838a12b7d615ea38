import KilnFormat
import KilnKernels

/// Runs a graph as written, before any pass, with the naive reference kernels: BatchNorm as its formula
/// (in Float64), ZeroPadding as padding, Dropout as identity. The oracle for the passes and for
/// `kiln verify`. Slow by design.
extension Graph {
    /// The values of the graph outputs (by port name) for an NHWC or [N, F] input.
    public func evaluateReference(input: [Float], shape inputShape: [Int]) throws(GraphError) -> [String: (shape: [Int], values: [Float])] {
        var values: [String: (shape: [Int], values: [Float])] = [:]
        for node in nodes {
            let ins = node.inputs.compactMap { values[$0] }
            guard ins.count == node.inputs.count else { throw GraphError(layer: node.name, message: "input not computed") }
            values[node.name] = try evaluate(node, ins, input: (inputShape, input))
        }
        var out: [String: (shape: [Int], values: [Float])] = [:]
        for o in outputs { out[o.port] = values[o.node] }
        return out
    }

    func evaluate(_ node: GraphNode, _ ins: [(shape: [Int], values: [Float])], input: ([Int], [Float])) throws(GraphError) -> ([Int], [Float]) {
        func fail(_ m: String) -> GraphError { GraphError(layer: node.name, message: m) }
        func geometryError(_ e: KernelGeometryError) -> GraphError { fail(e.message) }
        switch node.op {
        case .input:
            return input
        case let .constantPad(t, b, l, r, padValues):
            let s = ins[0].shape
            let g: PadGeometry
            do { g = try PadGeometry(batch: s[0], inH: s[1], inW: s[2], channels: s[3], padTop: t, padBottom: b, padLeft: l, padRight: r) }
            catch { throw geometryError(error) }
            var out = [Float](repeating: 0, count: g.outputCount)
            ins[0].values.withUnsafeBufferPointer { x in
                padValues.withUnsafeBufferPointer { v in
                    out.withUnsafeMutableBufferPointer { o in
                        ReferenceKernels.pad(input: x.baseAddress!, output: o.baseAddress!, geometry: g, channelValues: v.baseAddress)
                    }
                }
            }
            return ([s[0], g.outH, g.outW, s[3]], out)
        case .channelAffine(let a):
            // In Float32, as the frameworks' own preprocessing computes it.
            let c = a.perm.count
            var out = ins[0].values
            for i in stride(from: 0, to: out.count, by: c) {
                for k in 0..<c {
                    out[i + k] = ins[0].values[i + a.perm[k]] * Float(a.scale[k]) + Float(a.shift[k])
                }
            }
            return (ins[0].shape, Self.activate(out, a.activation))
        case let .zeroPad(t, b, l, r):
            let s = ins[0].shape
            let g: PadGeometry
            do { g = try PadGeometry(batch: s[0], inH: s[1], inW: s[2], channels: s[3], padTop: t, padBottom: b, padLeft: l, padRight: r) }
            catch { throw geometryError(error) }
            var out = [Float](repeating: 0, count: g.outputCount)
            ins[0].values.withUnsafeBufferPointer { x in
                out.withUnsafeMutableBufferPointer { o in
                    ReferenceKernels.pad(input: x.baseAddress!, output: o.baseAddress!, geometry: g, channelValues: nil)
                }
            }
            return ([s[0], g.outH, g.outW, s[3]], out)
        case .conv2d(let c):
            let s = ins[0].shape
            let (t, b) = c.padding.amounts(size: s[1], kernel: c.kernel.shape[0], stride: c.strideH, dilation: c.dilationH, vertical: true)
            let (l, r) = c.padding.amounts(size: s[2], kernel: c.kernel.shape[1], stride: c.strideW, dilation: c.dilationW, vertical: false)
            let g: ConvGeometry
            do {
                g = try ConvGeometry(batch: s[0], inH: s[1], inW: s[2], inC: s[3], outC: c.outChannels, kernelH: c.kernel.shape[0],
                                     kernelW: c.kernel.shape[1], strideH: c.strideH, strideW: c.strideW, dilationH: c.dilationH,
                                     dilationW: c.dilationW, padTop: t, padBottom: b, padLeft: l, padRight: r, groups: c.groups)
            } catch { throw geometryError(error) }
            var out = [Float](repeating: 0, count: g.outputCount)
            let residual = c.hasResidual ? ins[1].values : nil
            ins[0].values.withUnsafeBufferPointer { x in
                c.kernel.values.withUnsafeBufferPointer { w in
                    (c.bias?.values ?? []).withUnsafeBufferPointer { bias in
                        (residual ?? []).withUnsafeBufferPointer { res in
                            out.withUnsafeMutableBufferPointer { o in
                                ReferenceKernels.conv2d(input: x.baseAddress!, weightsHWIO: w.baseAddress!,
                                                        bias: c.bias == nil ? nil : bias.baseAddress,
                                                        residual: residual == nil ? nil : res.baseAddress,
                                                        output: o.baseAddress!, geometry: g, activation: c.activation)
                            }
                        }
                    }
                }
            }
            return ([g.batch, g.outH, g.outW, g.outC], out)
        case .batchNorm(let bn):
            let c = bn.mean.count
            var out = ins[0].values
            for i in out.indices {
                let ch = i % c
                let normalized = (Double(out[i]) - Double(bn.mean[ch])) / (Double(bn.variance[ch]) + bn.epsilon).squareRoot()
                out[i] = Float(normalized * Double(bn.gamma?[ch] ?? 1) + Double(bn.beta?[ch] ?? 0))
            }
            return (ins[0].shape, out)
        case .activation(let a):
            return (ins[0].shape, Self.activate(ins[0].values, a))
        case .softmax:
            return (ins[0].shape, Self.softmax(ins[0].values, columns: ins[0].shape.last ?? 1))
        case .dropout:
            return ins[0]
        case .add(let a):
            let sum = zip(ins[0].values, ins[1].values).map { $0 + $1 }
            return (ins[0].shape, Self.activate(sum, a))
        case .maxPool(let p), .avgPool(let p):
            let s = ins[0].shape
            let (t, b) = p.padding.amounts(size: s[1], kernel: p.kernelH, stride: p.strideH, vertical: true)
            let (l, r) = p.padding.amounts(size: s[2], kernel: p.kernelW, stride: p.strideW, vertical: false)
            let g: PoolGeometry
            do {
                g = try PoolGeometry(batch: s[0], inH: s[1], inW: s[2], channels: s[3], kernelH: p.kernelH, kernelW: p.kernelW,
                                     strideH: p.strideH, strideW: p.strideW, padTop: t, padBottom: b, padLeft: l, padRight: r)
            } catch { throw geometryError(error) }
            var out = [Float](repeating: 0, count: g.outputCount)
            let isMax: Bool
            if case .maxPool = node.op { isMax = true } else { isMax = false }
            ins[0].values.withUnsafeBufferPointer { x in
                out.withUnsafeMutableBufferPointer { o in
                    if isMax {
                        ReferenceKernels.maxPool2d(input: x.baseAddress!, output: o.baseAddress!, geometry: g)
                    } else {
                        ReferenceKernels.avgPool2d(input: x.baseAddress!, output: o.baseAddress!, geometry: g)
                    }
                }
            }
            return ([s[0], g.outH, g.outW, s[3]], out)
        case .globalAvgPool:
            let s = ins[0].shape
            var out = [Float](repeating: 0, count: s[0] * s[3])
            ins[0].values.withUnsafeBufferPointer { x in
                out.withUnsafeMutableBufferPointer { o in
                    ReferenceKernels.globalAvgPool(input: x.baseAddress!, output: o.baseAddress!, batch: s[0], height: s[1], width: s[2], channels: s[3])
                }
            }
            return ([s[0], s[3]], out)
        case .globalMaxPool:
            let s = ins[0].shape
            var out = [Float](repeating: 0, count: s[0] * s[3])
            ins[0].values.withUnsafeBufferPointer { x in
                out.withUnsafeMutableBufferPointer { o in
                    ReferenceKernels.globalMaxPool(input: x.baseAddress!, output: o.baseAddress!, batch: s[0], height: s[1], width: s[2], channels: s[3])
                }
            }
            return ([s[0], s[3]], out)
        case .transpose(let perm):
            let s = ins[0].shape
            var out = ins[0].values
            ins[0].values.withUnsafeBufferPointer { x in
                out.withUnsafeMutableBufferPointer { o in
                    ReferenceKernels.transpose(input: x.baseAddress!, output: o.baseAddress!, shape: s, perm: perm)
                }
            }
            return (perm.map { s[$0] }, out)
        case .reshape(let r):
            switch r.outputShape(ins[0].shape) {
            case .success(let shape): return (shape, ins[0].values)
            case .failure(let e): throw fail(e.message)
            }
        case .reduce(let r):
            guard let shape = r.outputShape(ins[0].shape) else { throw fail("reduces axes \(r.axes) of \(ins[0].shape)") }
            var out = [Float](repeating: 0, count: shape.reduce(1, *))
            ins[0].values.withUnsafeBufferPointer { x in
                out.withUnsafeMutableBufferPointer { o in
                    ReferenceKernels.reduce(input: x.baseAddress!, output: o.baseAddress!, shape: ins[0].shape, axes: r.axes, mean: r.function == .mean)
                }
            }
            return (shape, out)
        case .channelGather(let g):
            let s = ins[0].shape, c = s.last ?? 1
            guard let taken = g.indices(of: c) else { throw fail("\(g) is outside the \(c) channels") }
            var out: [Float] = []
            for row in stride(from: 0, to: ins[0].values.count, by: c) { for k in taken { out.append(ins[0].values[row + k]) } }
            if case .index = g { return (Array(s.dropLast()), out) }
            return (s.dropLast() + [taken.count], out)
        case .channelStack, .channelConcat:
            let widths = ins.map { v -> Int in
                if case .channelStack = node.op { return 1 }
                return v.shape.last ?? 1
            }
            let rows = ins[0].values.count / max(widths[0], 1)
            var out: [Float] = []
            for r in 0..<rows { for (v, w) in zip(ins, widths) { out.append(contentsOf: v.values[(r * w)..<((r + 1) * w)]) } }
            if case .channelStack = node.op { return (ins[0].shape + [ins.count], out) }
            return (ins[0].shape.dropLast() + [widths.reduce(0, +)], out)
        case let .broadcastAffine(scale, shift):
            // In Float32, as the frameworks compute it.
            let c = ins[0].shape.last ?? 1
            let out = ins[0].values.enumerated().map { i, x in
                x * Float(scale.count == 1 ? scale[0] : scale[i % c]) + Float(shift.count == 1 ? shift[0] : shift[i % c])
            }
            return (ins[0].shape, out)
        case .concat:
            // Row by row (a row: one position's channels), the inputs' channels side by side.
            let widths = ins.map { $0.shape.last ?? 0 }
            let rows = ins[0].shape.dropLast().reduce(1, *), total = widths.reduce(0, +)
            var out: [Float] = []
            out.reserveCapacity(rows * total)
            for r in 0..<rows {
                for (t, w) in zip(ins, widths) { out += t.values[(r * w)..<((r + 1) * w)] }
            }
            return (Array(ins[0].shape.dropLast()) + [total], out)
        case .flatten:
            let s = ins[0].shape
            return ([s[0], s.dropFirst().reduce(1, *)], ins[0].values)
        case .dense(let d):
            let n = ins[0].shape[0], inF = d.kernel.shape[0], outF = d.kernel.shape[1]
            var out = [Float](repeating: 0, count: n * outF)
            ins[0].values.withUnsafeBufferPointer { x in
                d.kernel.values.withUnsafeBufferPointer { w in
                    (d.bias?.values ?? []).withUnsafeBufferPointer { bias in
                        out.withUnsafeMutableBufferPointer { o in
                            ReferenceKernels.dense(input: x.baseAddress!, weights: w.baseAddress!, bias: d.bias == nil ? nil : bias.baseAddress,
                                                   output: o.baseAddress!, batch: n, inFeatures: inF, outFeatures: outF, activation: d.activation)
                        }
                    }
                }
            }
            if d.softmax { out = Self.softmax(out, columns: outF) }
            return ([n, outF], out)
        }
    }

    static func activate(_ v: [Float], _ a: Activation) -> [Float] {
        if a.isIdentity { return v }
        var out = v
        v.withUnsafeBufferPointer { x in
            out.withUnsafeMutableBufferPointer { o in
                ReferenceKernels.activate(input: x.baseAddress!, output: o.baseAddress!, count: v.count, activation: a)
            }
        }
        return out
    }

    static func softmax(_ v: [Float], columns: Int) -> [Float] {
        var out = v
        v.withUnsafeBufferPointer { x in
            out.withUnsafeMutableBufferPointer { o in
                ReferenceKernels.softmax(input: x.baseAddress!, output: o.baseAddress!, rows: v.count / max(columns, 1), columns: columns)
            }
        }
        return out
    }
}
