import KilnFormat
import KilnGraph

extension Graph {
    /// Settles the IR batch norms the importer made (ONNX BatchNormalization, and Mul/Add/Sub/Div by
    /// per-channel constants) that `optimizeForInference` would not fold, so that every graph it imports
    /// can be lowered:
    /// - after a convolution (through single-reader batch norms only): left for `foldBatchNorms`;
    /// - after a Dense without activation, read by nothing else: folded into it here, for output column j
    ///   with s = gamma / sqrt(var + eps) and t = beta − mean·s: W'[i, j] = W[i, j]·s[j], b'[j] = b[j]·s[j] + t[j];
    /// - anywhere else: a 1×1 convolution (or a Dense) with the diagonal kernel diag(s) and bias t, exact.
    /// Float64 throughout, stored as Float32.
    mutating func resolvePerChannelAffines() throws(GraphError) {
        var changed = true
        while changed {
            changed = false
            let counts = consumerCounts()
            let outputNodes = Set(outputs.map(\.node))
            func soleReader(_ name: String) -> Bool { counts[name] == 1 && !outputNodes.contains(name) }
            for (k, bn) in nodes.enumerated() {
                guard case .batchNorm(let spec) = bn.op, let src = bn.inputs.first, let p = index(of: src) else { continue }
                var root = p
                var chain = soleReader(src)
                while chain, case .batchNorm = nodes[root].op, let up = nodes[root].inputs.first, let q = index(of: up) {
                    chain = soleReader(up)
                    root = q
                }
                if chain, case .conv2d(let c) = nodes[root].op, c.activation.isIdentity, !c.hasResidual { continue }
                let (s, t) = Self.scaleAndShift(spec)
                if soleReader(src), case .dense(var d) = nodes[p].op, d.activation.isIdentity, !d.softmax, d.kernel.shape[1] == s.count {
                    let outs = s.count
                    var w = d.kernel.values
                    for i in w.indices { w[i] = Float(Double(w[i]) * s[i % outs]) }
                    d.kernel.values = w
                    let b = d.bias?.values ?? [Float](repeating: 0, count: outs)
                    d.bias = WeightTensor(shape: [outs], values: (0..<outs).map { Float(Double(b[$0]) * s[$0] + t[$0]) })
                    nodes[p].op = .dense(d)
                    replace(bn.name, by: src)
                    changed = true
                    break
                }
                let shapes = try inferShapes()
                let rank = shapes[src]?.count ?? 0
                let channels = s.count
                var diagonal = [Float](repeating: 0, count: channels * channels)
                for c in 0..<channels { diagonal[c * channels + c] = Float(s[c]) }
                let bias = WeightTensor(shape: [channels], values: t.map { Float($0) })
                switch rank {
                case 4:
                    nodes[k].op = .conv2d(ConvSpec(kernel: WeightTensor(shape: [1, 1, channels, channels], values: diagonal), bias: bias,
                                                   strideH: 1, strideW: 1, padding: .valid))
                case 2:
                    nodes[k].op = .dense(DenseSpec(kernel: WeightTensor(shape: [channels, channels], values: diagonal), bias: bias))
                default:
                    throw GraphError(layer: bn.name, message: "a per-channel scale or shift of a rank-\(rank) tensor cannot be expressed")
                }
                changed = true
                break
            }
        }
    }

    /// BN(x) = s·x + t with s = gamma / sqrt(var + eps), t = beta − mean·s.
    static func scaleAndShift(_ spec: BatchNormSpec) -> ([Double], [Double]) {
        var s: [Double] = [], t: [Double] = []
        for c in spec.mean.indices {
            let scale = Double(spec.gamma?[c] ?? 1) / (Double(spec.variance[c]) + spec.epsilon).squareRoot()
            s.append(scale)
            t.append(Double(spec.beta?[c] ?? 0) - Double(spec.mean[c]) * scale)
        }
        return (s, t)
    }

    /// Removes node `name`; whoever read it (and any output at it) reads `source` instead.
    mutating func replace(_ name: String, by source: String) {
        nodes.removeAll { $0.name == name }
        for i in nodes.indices { nodes[i].inputs = nodes[i].inputs.map { $0 == name ? source : $0 } }
        for i in outputs.indices where outputs[i].node == name { outputs[i].node = source }
        if let k = index(of: source) { nodes[k].fusedLayers.append(name) }
    }
}
