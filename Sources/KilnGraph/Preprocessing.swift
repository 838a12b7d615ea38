import KilnFormat

/// A per-channel affine map on the last axis: y[..., c] = act(x[..., perm[c]] · scale[c] + shift[c]). The activation is
/// the identity until `fuseActivations` moves one onto a map that stays (the bundle's ScaleShift op applies it).
public struct ChannelAffine: Sendable, Equatable {
    public var perm: [Int]
    public var scale: [Double]
    public var shift: [Double]
    public var activation: Activation

    public init(perm: [Int], scale: [Double], shift: [Double], activation: Activation = .none) {
        self.perm = perm
        self.scale = scale
        self.shift = shift
        self.activation = activation
    }

    /// True when the map keeps the channel order (what the ScaleShift op computes).
    public var keepsOrder: Bool { perm == Array(0..<perm.count) }
}

/// The preprocessing a model was trained with, from raw RGB pixels in 0…255.
public enum Preprocessing: String, Sendable, CaseIterable {
    /// Keras "caffe" (ResNet-50, VGG): RGB → BGR, subtract the ImageNet means [103.939, 116.779, 123.68] (B, G, R).
    case caffe
    /// PyTorch/torchvision: x/255, subtract [0.485, 0.456, 0.406], divide by [0.229, 0.224, 0.225] (RGB).
    case torch
    /// Keras "tf" (MobileNet, Inception): x/127.5 − 1.
    case tf
    /// The input is what the first layer takes.
    case none

    /// The map from raw RGB 0–255 to the model's input, or nil for `.none`.
    public var affine: ChannelAffine? {
        switch self {
        case .caffe:
            return ChannelAffine(perm: [2, 1, 0], scale: [1, 1, 1], shift: [-103.939, -116.779, -123.68])
        case .torch:
            let mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]
            return ChannelAffine(perm: [0, 1, 2], scale: std.map { 1 / (255 * $0) }, shift: zip(mean, std).map { -$0 / $1 })
        case .tf:
            return ChannelAffine(perm: [0, 1, 2], scale: [1 / 127.5, 1 / 127.5, 1 / 127.5], shift: [-1, -1, -1])
        case .none:
            return nil
        }
    }
}

extension Graph {
    /// The preprocessing the model applies to its own input (Rescaling, Normalization, preprocess_input written on
    /// the symbolic tensor, after identity layers such as the data augmentation): the per-channel affine that is the
    /// input's one reader once identities are dropped and channel arithmetic resolved (both done here, as
    /// `optimizeForInference` would). Its name is `caffe`, `tf` or `torch` when it is one of those (within 1e-6),
    /// else `model`. Nil when the input goes straight into the network.
    public mutating func ownPreprocessing() throws(GraphError) -> (name: String, affine: ChannelAffine)? {
        dropIdentities()
        try resolveChannelArithmetic()
        guard let input = nodes.first(where: { if case .input = $0.op { return true } else { return false } }) else { return nil }
        let readers = nodes.filter { $0.inputs.contains(input.name) }
        guard readers.count == 1, case .channelAffine(let a) = readers[0].op else { return nil }
        func close(_ x: [Double], _ y: [Double]) -> Bool {
            x.count == y.count && zip(x, y).allSatisfy { abs($0 - $1) <= 1e-6 * max(abs($1), 1) }
        }
        let known = Preprocessing.allCases.first { p in
            guard let b = p.affine else { return false }
            return a.perm == b.perm && close(a.scale, b.scale) && close(a.shift, b.shift)
        }
        return (known?.rawValue ?? "model", a)
    }

    /// Makes the graph take raw RGB 0–255: inserts `preprocessing` as an op after the input.
    /// `optimizeForInference` then folds it into the first convolution.
    public mutating func prependPreprocessing(_ preprocessing: Preprocessing) throws(GraphError) {
        guard let affine = preprocessing.affine else { return }
        guard let inputIndex = nodes.firstIndex(where: { if case .input = $0.op { return true } else { return false } }) else {
            throw GraphError(message: "the graph has no input")
        }
        let input = nodes[inputIndex]
        if case .input(let shape) = input.op, shape.count != 4 || (shape[3] != nil && shape[3] != 3) {
            throw GraphError(layer: input.name, message: "preprocessing '\(preprocessing.rawValue)' needs an RGB image input, the input is \(describe(shape))")
        }
        let name = "preprocess_\(preprocessing.rawValue)"
        for i in nodes.indices { nodes[i].inputs = nodes[i].inputs.map { $0 == input.name ? name : $0 } }
        nodes.insert(GraphNode(name: name, op: .channelAffine(affine), inputs: [input.name]), at: inputIndex + 1)
    }

    /// Merges a per-channel affine into the one after it when that is its only reader: with a = x[pa[c]]·sa[c] + ta[c]
    /// and b = a[pb[c]]·sb[c] + tb[c], b = x[pa[pb[c]]]·(sa[pb[c]]·sb[c]) + (ta[pb[c]]·sb[c] + tb[c]) (Float64).
    /// Rescaling then a BatchNormalization on the input become one map.
    public mutating func mergeChannelAffines() {
        var changed = true
        while changed {
            changed = false
            let counts = consumerCounts()
            for (k, node) in nodes.enumerated() {
                guard case .channelAffine(let b) = node.op, let src = node.inputs.first, let j = index(of: src),
                      case .channelAffine(let a) = nodes[j].op, a.perm.count == b.perm.count, a.activation.isIdentity,
                      hasSingleInternalConsumer(src, counts) else { continue }
                let merged = ChannelAffine(perm: b.perm.map { a.perm[$0] },
                                           scale: b.perm.indices.map { a.scale[b.perm[$0]] * b.scale[$0] },
                                           shift: b.perm.indices.map { a.shift[b.perm[$0]] * b.scale[$0] + b.shift[$0] },
                                           activation: b.activation)
                nodes[k].op = .channelAffine(merged)
                nodes[k].inputs = nodes[j].inputs
                nodes[k].fusedLayers.insert(contentsOf: [src] + nodes[j].fusedLayers, at: 0)
                nodes.remove(at: j)
                changed = true
                break
            }
        }
    }

    /// Folds each per-channel affine (preprocessing, a batch norm no producer absorbed) exactly into the layers that
    /// read it, when every reader is a convolution (directly or through a zero padding) or a dense layer.
    ///
    /// With u = A(x), u[c] = x[perm[c]]·scale[c] + shift[c], and a conv y[o] = Σ W[kh,kw,c,o]·u[c] + b[o]:
    ///     y[o] = Σ (W[kh,kw,c,o]·scale[c])·x[perm[c]] + (b[o] + Σ_{kh,kw,c} W[kh,kw,c,o]·shift[c])
    /// so W'[kh,kw,perm[c],o] = W[kh,kw,c,o]·scale[c] and b'[o] = b[o] + Σ W[kh,kw,c,o]·shift[c] (Float64).
    /// The b' term assumes every tap sees a real value. At the borders the conv saw zeros in u-space,
    /// i.e. x[perm[c]] = −shift[c]/scale[c] (for preprocessing: the mean pixel): so the padding moves out of the
    /// conv into a constant pad of x with exactly those values, and the folded conv then sees them like any other
    /// value. The result equals affine + conv everywhere, borders included; it needs every scale ≠ 0 when there is
    /// padding. A dense layer [in, out] the same way with one tap and no padding.
    ///
    /// An affine some reader cannot absorb stays, to be lowered as the bundle's ScaleShift op, when it keeps the
    /// channel order; one that reorders channels (preprocessing) is refused, naming the reader.
    public mutating func foldChannelAffines() throws(GraphError) {
        var kept: Set<String> = []
        func nextAffine() -> Int? {
            nodes.firstIndex { node in
                if case .channelAffine = node.op { return !kept.contains(node.name) }
                return false
            }
        }
        while let a = nextAffine() {
            let affineNode = nodes[a]
            guard case .channelAffine(let affine) = affineNode.op, let source = affineNode.inputs.first else { return }
            let shapes = try inferShapes()
            let c = affine.perm.count
            let keepsOrder = affine.keepsOrder

            enum Fold { case conv(index: Int, pad: Int?, total: (Int, Int, Int, Int)), dense(index: Int) }
            /// How reader `r` absorbs the affine, or why it cannot.
            func plan(_ r: Int) -> Result<Fold, GraphError> {
                let reader = nodes[r]
                var convIndex = r
                var padIndex: Int?
                var padding = (0, 0, 0, 0)
                if case .dense(let d) = reader.op {
                    guard reader.inputs == [affineNode.name], shapes[affineNode.name]?.count == 2, d.kernel.shape[0] == c else {
                        return .failure(GraphError(layer: reader.name, message: "a per-channel map before it cannot be folded into it"))
                    }
                    return .success(.dense(index: r))
                }
                if case let .zeroPad(t, b, l, rr) = reader.op {
                    let padReaders = nodes.indices.filter { nodes[$0].inputs.contains(reader.name) }
                    guard padReaders.count == 1, !outputs.contains(where: { $0.node == reader.name }) else {
                        return .failure(GraphError(layer: reader.name, message: "zero padding after the preprocessing feeds more than one layer; cannot fold"))
                    }
                    convIndex = padReaders[0]
                    padIndex = r
                    padding = (t, b, l, rr)
                }
                let expectedInput = padIndex == nil ? affineNode.name : reader.name
                guard case .conv2d(let conv) = nodes[convIndex].op, nodes[convIndex].inputs.first == expectedInput,
                      !nodes[convIndex].inputs.dropFirst().contains(expectedInput) else {
                    return .failure(GraphError(layer: nodes[convIndex].name, message: "preprocessing can only be folded into a convolution, and '\(nodes[convIndex].name)' is a \(nodes[convIndex].op.kindName)"))
                }
                guard conv.groups == 1 else {
                    return .failure(GraphError(layer: nodes[convIndex].name, message: "a per-channel map cannot be folded into a grouped convolution (\(conv.groups) groups)"))
                }
                let inShape = shapes[nodes[convIndex].inputs[0]] ?? []
                let ks = conv.kernel.shape
                let own: (Int, Int, Int, Int)
                switch conv.padding {
                case let .explicit(t, b, l, r): own = (t, b, l, r)
                case .same:
                    if inShape.count == 4, let h = inShape[1], let w = inShape[2] {
                        let (t, b) = conv.padding.amounts(size: h, kernel: ks[0], stride: conv.strideH, dilation: conv.dilationH, vertical: true)
                        let (l, r) = conv.padding.amounts(size: w, kernel: ks[1], stride: conv.strideW, dilation: conv.dilationW, vertical: false)
                        own = (t, b, l, r)
                    } else if conv.strideH == 1, conv.strideW == 1 {
                        let (t, b) = conv.padding.amounts(size: 1, kernel: ks[0], stride: 1, dilation: conv.dilationH, vertical: true)
                        let (l, r) = conv.padding.amounts(size: 1, kernel: ks[1], stride: 1, dilation: conv.dilationW, vertical: false)
                        own = (t, b, l, r)
                    } else {
                        return .failure(GraphError(layer: nodes[convIndex].name, message: "'same' padding with stride > 1 on an input of free size: give the input size to fold the preprocessing"))
                    }
                }
                let total = (padding.0 + own.0, padding.1 + own.1, padding.2 + own.2, padding.3 + own.3)
                if total != (0, 0, 0, 0), affine.scale.contains(where: { $0 == 0 || !$0.isFinite }) {
                    return .failure(GraphError(layer: nodes[convIndex].name, message: "a per-channel map with a zero scale before a padded convolution cannot be folded into it"))
                }
                return .success(.conv(index: convIndex, pad: padIndex, total: total))
            }

            let readers = nodes.indices.filter { nodes[$0].inputs.contains(affineNode.name) }
            var folds: [Fold] = []
            var refusal: GraphError?
            if outputs.contains(where: { $0.node == affineNode.name }) || readers.isEmpty {
                refusal = GraphError(layer: affineNode.name, message: "preprocessing is a graph output and cannot be folded")
            } else if !affine.activation.isIdentity {
                refusal = GraphError(layer: affineNode.name, message: "a per-channel map with an activation cannot be folded forward")
            }
            for r in readers where refusal == nil {
                switch plan(r) {
                case .success(let f): folds.append(f)
                case .failure(let e): refusal = e
                }
            }
            if let refusal {
                if keepsOrder { kept.insert(affineNode.name); continue }
                throw refusal
            }

            var padValues = [Float](repeating: 0, count: c)
            for k in 0..<c where affine.scale[k] != 0 { padValues[affine.perm[k]] = Float(-affine.shift[k] / affine.scale[k]) }
            /// W'[tap, perm[ci], o] = W[tap, ci, o]·scale[ci]; b'[o] = b[o] + Σ W[tap, ci, o]·shift[ci].
            func foldKernel(_ kernel: inout WeightTensor, _ bias: inout WeightTensor?) {
                let cout = kernel.shape[kernel.shape.count - 1]
                let taps = kernel.values.count / (c * cout)
                var w = [Float](repeating: 0, count: kernel.values.count)
                var b = (bias?.values ?? [Float](repeating: 0, count: cout)).map(Double.init)
                for tap in 0..<taps {
                    for ci in 0..<c {
                        for o in 0..<cout {
                            let original = Double(kernel.values[(tap * c + ci) * cout + o])
                            w[(tap * c + affine.perm[ci]) * cout + o] = Float(original * affine.scale[ci])
                            b[o] += original * affine.shift[ci]
                        }
                    }
                }
                kernel.values = w
                bias = WeightTensor(shape: [cout], values: b.map { Float($0) })
            }
            var padsToRemove: [String] = []
            var padsToInsert: [(before: String, node: GraphNode)] = []
            for fold in folds {
                switch fold {
                case .dense(let i):
                    guard case .dense(var d) = nodes[i].op else { continue }
                    foldKernel(&d.kernel, &d.bias)
                    nodes[i].op = .dense(d)
                    nodes[i].inputs = [source]
                    nodes[i].fusedLayers.insert(affineNode.name, at: 0)
                case let .conv(i, pad, total):
                    guard case .conv2d(var conv) = nodes[i].op else { continue }
                    foldKernel(&conv.kernel, &conv.bias)
                    conv.padding = .valid
                    nodes[i].op = .conv2d(conv)
                    nodes[i].fusedLayers.insert(affineNode.name, at: 0)
                    let constant = GraphOp.constantPad(top: total.0, bottom: total.1, left: total.2, right: total.3, values: padValues)
                    if total == (0, 0, 0, 0) {
                        nodes[i].inputs[0] = source
                        if let pad { padsToRemove.append(nodes[pad].name) }
                    } else if let pad {
                        nodes[pad].op = constant
                        nodes[pad].inputs = [source]
                    } else {
                        var padName = "\(nodes[i].name)_pad"
                        while index(of: padName) != nil { padName += "_" }
                        nodes[i].inputs[0] = padName
                        padsToInsert.append((nodes[i].name, GraphNode(name: padName, op: constant, inputs: [source])))
                    }
                }
            }
            nodes.removeAll { padsToRemove.contains($0.name) }
            for (before, pad) in padsToInsert {
                if let i = index(of: before) { nodes.insert(pad, at: i) }
            }
            nodes.removeAll { $0.name == affineNode.name }
        }
    }
}

extension Graph {
    /// Makes a graph whose input is NCHW (an ONNX import: the input is read only through a transpose to
    /// NHWC) take NHWC directly, as decoded images are: the input's shape is permuted and the transposes
    /// become identities, which the passes drop. Returns false, changing nothing, for any other graph.
    @discardableResult
    public mutating func takingNHWCInput() -> Bool {
        guard let i = nodes.firstIndex(where: { if case .input = $0.op { return true } else { return false } }),
              case .input(let s) = nodes[i].op, s.count == 4 else { return false }
        let name = nodes[i].name
        let readers = nodes.indices.filter { nodes[$0].inputs.contains(name) }
        let allTransposeToNHWC = readers.allSatisfy { r in
            if case .transpose(let p) = nodes[r].op { return p == [0, 2, 3, 1] && nodes[r].inputs == [name] }
            return false
        }
        guard !readers.isEmpty, allTransposeToNHWC, !outputs.contains(where: { $0.node == name }) else { return false }
        nodes[i].op = .input(shape: [s[0], s[2], s[3], s[1]])
        for r in readers { nodes[r].op = .activation(.none) }
        return true
    }
}
