import KilnFormat

/// The inference passes, in the order `optimizeForInference` runs them. Each pass is a small rewrite that
/// keeps the graph valid; a graph output is never fused away (its producer keeps a value of its own).
extension Graph {
    /// Runs every pass: drop identities, fold batch norm (into the layer before it, else a per-channel affine),
    /// merge and fold per-channel affines (preprocessing, batch norms) into the layers after them, fold zero padding, fuse residual adds and
    /// activations, hoist strides, remove dead nodes. Afterwards no BatchNormalization, Dropout or
    /// ZeroPadding remains unless it could not be folded (lowering then names it).
    public mutating func optimizeForInference() throws(GraphError) {
        _ = try inferShapes()
        dropIdentities()
        try resolveChannelArithmetic()
        try foldBatchNorms()
        mergeChannelAffines()
        try foldChannelAffines()
        foldZeroPadding()
        fuseResidualAdds()
        fuseActivations()
        hoistStrides()
        eliminateDeadNodes()
        _ = try inferShapes()
    }

    // MARK: - Rewiring

    /// Removes node `absorbed`: whoever read it now reads `into`, and the outputs follow.
    mutating func absorb(_ absorbed: String, into: String) {
        nodes.removeAll { $0.name == absorbed }
        for i in nodes.indices {
            nodes[i].inputs = nodes[i].inputs.map { $0 == absorbed ? into : $0 }
        }
        for i in outputs.indices where outputs[i].node == absorbed {
            outputs[i].node = into
        }
        if let k = index(of: into) { nodes[k].fusedLayers.append(absorbed) }
    }

    /// True if `name` is read by exactly one node and is not a graph output.
    func hasSingleInternalConsumer(_ name: String, _ counts: [String: Int]) -> Bool {
        counts[name] == 1 && !outputs.contains { $0.node == name }
    }

    // MARK: - Passes

    /// Dropout and linear activations are the identity at inference: their readers read their input.
    public mutating func dropIdentities() {
        for name in nodes.map(\.name) {
            // The node as it is now: an identity before it may have been dropped already (a chain of them).
            guard let node = self.node(named: name) else { continue }
            let isIdentity: Bool
            switch node.op {
            case .dropout: isIdentity = true
            case .activation(let a): isIdentity = a.isIdentity
            default: isIdentity = false
            }
            guard isIdentity, let source = node.inputs.first else { continue }
            nodes.removeAll { $0.name == node.name }
            for i in nodes.indices { nodes[i].inputs = nodes[i].inputs.map { $0 == node.name ? source : $0 } }
            for i in outputs.indices where outputs[i].node == node.name { outputs[i].node = source }
        }
    }

    /// Folds each BatchNormalization into the convolution or dense layer that feeds it, and turns every other one
    /// into a per-channel affine (`channelAffine`), which `foldChannelAffines` folds into the layers that read it
    /// where that is exact, or the bundle holds as a ScaleShift op.
    ///
    /// For output channel c, with s[c] = gamma[c] / sqrt(var[c] + eps):
    ///     BN(conv(x)) = s·(W∗x + b − mean) + beta = (s·W)∗x + (b − mean)·s + beta
    /// so W'[kh, kw, ci, c] = W[kh, kw, ci, c]·s[c] and b'[c] = (b[c] − mean[c])·s[c] + beta[c]
    /// (b = 0 without a bias; gamma = 1 when `scale` is false, beta = 0 when `center` is false); a Dense kernel
    /// [in, out] the same way with c the output column. Computed in Float64, stored as Float32; epsilon is each
    /// layer's own. The producer must have no activation (nor a residual, nor a softmax) and no other reader.
    public mutating func foldBatchNorms() throws(GraphError) {
        var changed = true
        while changed {
            changed = false
            let counts = consumerCounts()
            for bn in nodes {
                guard case .batchNorm(let spec) = bn.op, let src = bn.inputs.first, let k = index(of: src),
                      hasSingleInternalConsumer(src, counts) else { continue }
                let (s, t) = spec.scaleAndShift
                func folded(_ kernel: inout WeightTensor, _ bias: inout WeightTensor?) throws(GraphError) {
                    let cout = kernel.shape[kernel.shape.count - 1]
                    guard s.count == cout else {
                        throw GraphError(layer: bn.name, message: "has \(s.count) channels but '\(src)' produces \(cout)")
                    }
                    let b = bias?.values ?? [Float](repeating: 0, count: cout)
                    bias = WeightTensor(shape: [cout], values: (0..<cout).map { Float(Double(b[$0]) * s[$0] + t[$0]) })
                    var w = kernel.values
                    for i in w.indices { w[i] = Float(Double(w[i]) * s[i % cout]) }
                    kernel.values = w
                }
                switch nodes[k].op {
                case .conv2d(var conv) where conv.activation.isIdentity && !conv.hasResidual:
                    try folded(&conv.kernel, &conv.bias)
                    nodes[k].op = .conv2d(conv)
                case .dense(var dense) where dense.activation.isIdentity && !dense.softmax:
                    try folded(&dense.kernel, &dense.bias)
                    nodes[k].op = .dense(dense)
                default:
                    continue
                }
                // The folded layer takes over the BN's place: readers of the BN read it.
                absorb(bn.name, into: src)
                changed = true
                break
            }
        }
        // Every other BN: y = x·s + t with t = beta − mean·s (the same algebra with W = 1, b = 0).
        for i in nodes.indices {
            guard case .batchNorm(let spec) = nodes[i].op else { continue }
            let (s, t) = spec.scaleAndShift
            nodes[i].op = .channelAffine(ChannelAffine(perm: Array(0..<s.count), scale: s, shift: t))
        }
    }

    /// Folds ZeroPadding2D into the explicit padding of the convolution or max-pool that reads it.
    /// A max-pool only where its input is provably non-negative (then a zero never beats a real cell,
    /// and every window keeps at least one real cell when the pad is smaller than the window).
    public mutating func foldZeroPadding() {
        var changed = true
        while changed {
            changed = false
            let counts = consumerCounts()
            for (k, node) in nodes.enumerated() {
                guard node.inputs.count >= 1, let p = index(of: node.inputs[0]),
                      case let .zeroPad(t, b, l, r) = nodes[p].op,
                      hasSingleInternalConsumer(nodes[p].name, counts) else { continue }
                let padName = nodes[p].name
                let padInput = nodes[p].inputs[0]
                switch node.op {
                case .conv2d(var conv):
                    guard case let .explicit(t0, b0, l0, r0) = conv.padding else { continue }
                    conv.padding = .explicit(top: t0 + t, bottom: b0 + b, left: l0 + l, right: r0 + r)
                    nodes[k].op = .conv2d(conv)
                case .maxPool(var pool):
                    guard case let .explicit(t0, b0, l0, r0) = pool.padding, isNonNegative(padInput),
                          t + t0 < pool.kernelH, b + b0 < pool.kernelH, l + l0 < pool.kernelW, r + r0 < pool.kernelW
                    else { continue }
                    pool.padding = .explicit(top: t0 + t, bottom: b0 + b, left: l0 + l, right: r0 + r)
                    nodes[k].op = .maxPool(pool)
                default:
                    continue
                }
                nodes[k].inputs[0] = padInput
                nodes.removeAll { $0.name == padName }
                if let j = index(of: node.name) { nodes[j].fusedLayers.insert(padName, at: 0) }
                changed = true
                break
            }
        }
    }

    /// True when the node's output can never be negative: a ReLU, or something with a fused ReLU, or a
    /// max-pool / zero-pad of such a value.
    public func isNonNegative(_ name: String) -> Bool {
        guard let node = node(named: name) else { return false }
        switch node.op {
        case .activation(let a) where a.isNonNegative: return true
        case .softmax: return true
        case .conv2d(let c): return c.activation.isNonNegative
        case .add(let a): return a.isNonNegative
        case .dense(let d): return d.activation.isNonNegative || d.softmax
        case .activation(let a) where a.isIdentity: return node.inputs.first.map(isNonNegative) ?? false
        case .maxPool, .zeroPad, .dropout, .globalMaxPool, .globalAvgPool: return node.inputs.first.map(isNonNegative) ?? false
        case .channelAffine(let m): return m.activation.isNonNegative
        case .concat: return node.inputs.allSatisfy(isNonNegative)
        case .constantPad(_, _, _, _, let values):
            return values.allSatisfy { $0 >= 0 } && (node.inputs.first.map(isNonNegative) ?? false)
        default: return false
        }
    }

    /// Fuses `add(conv(x), r)` into the convolution as a residual input, when the conv has no activation
    /// and the add is its only reader. The conv chosen is the operand computed later, so the residual is
    /// always ready before it runs. The add's activation moves onto the conv.
    public mutating func fuseResidualAdds() {
        var changed = true
        while changed {
            changed = false
            let counts = consumerCounts()
            for add in nodes {
                guard case .add(let act) = add.op, add.inputs.count == 2 else { continue }
                let candidates = add.inputs.compactMap { name -> (Int, String)? in
                    guard let k = index(of: name) else { return nil }
                    return (k, name)
                }.sorted { $0.0 > $1.0 }
                for (k, name) in candidates {
                    guard case .conv2d(var conv) = nodes[k].op, conv.activation.isIdentity, !conv.hasResidual,
                          hasSingleInternalConsumer(name, counts),
                          add.inputs[0] != add.inputs[1] else { continue }
                    let residual = add.inputs[0] == name ? add.inputs[1] : add.inputs[0]
                    guard let r = index(of: residual), r < k else { continue }
                    conv.hasResidual = true
                    conv.activation = act
                    nodes[k].op = .conv2d(conv)
                    nodes[k].inputs.append(residual)
                    // The add's position is after both operands; the conv now produces the sum.
                    absorb(add.name, into: name)
                    changed = true
                    break
                }
                if changed { break }
            }
        }
    }

    /// Fuses an elementwise activation into the conv, add or dense that feeds it when it is its only reader and
    /// has none of its own (a dense with a softmax keeps it: the softmax comes after).
    public mutating func fuseActivations() {
        var changed = true
        while changed {
            changed = false
            let counts = consumerCounts()
            for act in nodes {
                guard case .activation(let a) = act.op, !a.isIdentity, let src = act.inputs.first, let k = index(of: src),
                      hasSingleInternalConsumer(src, counts) else { continue }
                switch nodes[k].op {
                case .conv2d(var c) where c.activation.isIdentity:
                    c.activation = a
                    nodes[k].op = .conv2d(c)
                case .add(let own) where own.isIdentity:
                    nodes[k].op = .add(activation: a)
                case .dense(var d) where d.activation.isIdentity && !d.softmax:
                    d.activation = a
                    nodes[k].op = .dense(d)
                case .channelAffine(var m) where m.activation.isIdentity && m.keepsOrder:
                    m.activation = a
                    nodes[k].op = .channelAffine(m)
                default:
                    continue
                }
                absorb(act.name, into: src)
                changed = true
                break
            }
        }
    }

    /// Removes nodes that no output depends on (the ImageNet classifier after a cut, for example).
    public mutating func eliminateDeadNodes() {
        var live = Set(outputs.map(\.node))
        for node in nodes.reversed() where live.contains(node.name) {
            live.formUnion(node.inputs)
        }
        nodes.removeAll { !live.contains($0.name) }
    }

    /// Moves a subsampling up the graph, so that only the values that are read are computed.
    ///
    /// A 1×1 convolution with stride s and no padding reads its input only at every s-th row and column.
    /// When every reader of a convolution `p` is such a 1×1 convolution (the same s, reading `p` as its
    /// input, not as a residual), `p` itself can compute only those cells: its stride is multiplied by s
    /// with the same padding (output i of the new `p` is output s·i of the old one, and the count is
    /// ceil(old / s), what the readers produced), and the readers become stride 1. A residual that `p`
    /// adds is subsampled the same way by a 1×1 max-pool with stride s (a strided copy). Applied until
    /// nothing changes, the stride travels through a chain: in ResNet-50 v1 the stride-2 1×1
    /// convolutions that open stages 3, 4 and 5 hand their stride to the previous block's last 1×1
    /// convolution and from it to its 3×3 convolution (a quarter of their work), as OpenVINO does.
    /// "same" padding is resolved only where `p` has stride 1 (then it does not depend on the size).
    public mutating func hoistStrides() {
        func zeroPadded1x1(_ c: ConvSpec) -> Bool {
            guard c.kernel.shape[0] == 1, c.kernel.shape[1] == 1 else { return false }
            return c.padding == .same || c.padding == .valid
        }
        var changed = true
        while changed {
            changed = false
            for (k, node) in nodes.enumerated() {
                guard case .conv2d(var conv) = node.op, !outputs.contains(where: { $0.node == node.name }) else { continue }
                let readers = nodes.indices.filter { nodes[$0].inputs.contains(node.name) }
                guard let first = readers.first, case .conv2d(let r0) = nodes[first].op, r0.strideH * r0.strideW > 1
                else { continue }
                let (sh, sw) = (r0.strideH, r0.strideW)
                let allStrided1x1 = readers.allSatisfy { i in
                    guard case .conv2d(let r) = nodes[i].op else { return false }
                    return zeroPadded1x1(r) && r.strideH == sh && r.strideW == sw && nodes[i].inputs[0] == node.name
                        && !nodes[i].inputs.dropFirst().contains(node.name)
                }
                guard allStrided1x1 else { continue }
                if conv.padding == .same {
                    guard conv.strideH == 1, conv.strideW == 1 else { continue }
                    let th = (conv.kernel.shape[0] - 1) * conv.dilationH, tw = (conv.kernel.shape[1] - 1) * conv.dilationW
                    conv.padding = .explicit(top: th / 2, bottom: th - th / 2, left: tw / 2, right: tw - tw / 2)
                }
                conv.strideH *= sh
                conv.strideW *= sw
                if conv.hasResidual {
                    var name = node.name + "/residual_stride"
                    while index(of: name) != nil { name += "_" }
                    let pool = Pool2DAttributes(kernelH: 1, kernelW: 1, strideH: sh, strideW: sw, padding: .valid)
                    nodes.insert(GraphNode(name: name, op: .maxPool(pool), inputs: [node.inputs[1]]), at: k)
                    nodes[k + 1].inputs[1] = name
                }
                let at = conv.hasResidual ? k + 1 : k
                nodes[at].op = .conv2d(conv)
                for i in readers {
                    let j = conv.hasResidual && i >= k ? i + 1 : i
                    guard case .conv2d(var r) = nodes[j].op else { continue }
                    r.strideH = 1
                    r.strideW = 1
                    r.padding = .valid
                    nodes[j].op = .conv2d(r)
                }
                changed = true
                break
            }
        }
    }
}
