import KilnFormat

/// A per-channel affine map of the input: y[..., c] = x[..., perm[c]] · scale[c] + shift[c].
public struct ChannelAffine: Sendable, Equatable {
    public var perm: [Int]
    public var scale: [Double]
    public var shift: [Double]

    public init(perm: [Int], scale: [Double], shift: [Double]) {
        self.perm = perm
        self.scale = scale
        self.shift = shift
    }
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

    /// Folds an input affine (preprocessing) exactly into the convolutions that read it.
    ///
    /// With u = A(x), u[c] = x[perm[c]]·scale[c] + shift[c], and a conv y[o] = Σ W[kh,kw,c,o]·u[c] + b[o]:
    ///     y[o] = Σ (W[kh,kw,c,o]·scale[c])·x[perm[c]] + (b[o] + Σ_{kh,kw,c} W[kh,kw,c,o]·shift[c])
    /// so W'[kh,kw,perm[c],o] = W[kh,kw,c,o]·scale[c] and b'[o] = b[o] + Σ W[kh,kw,c,o]·shift[c] (Float64).
    /// The b' term assumes every tap sees a real pixel. At the borders the conv saw zeros in u-space,
    /// i.e. raw pixels x[perm[c]] = −shift[c]/scale[c] (the mean): so the padding moves out of the conv
    /// into a constant pad of raw pixels with exactly those values, and the folded conv then sees them
    /// like any other pixel. The result equals preprocessing + model everywhere, borders included.
    public mutating func foldInputAffine() throws(GraphError) {
        while let a = nodes.firstIndex(where: { if case .channelAffine = $0.op { return true } else { return false } }) {
            let affineNode = nodes[a]
            guard case .channelAffine(let affine) = affineNode.op, let source = affineNode.inputs.first else { return }
            let shapes = try inferShapes()
            let c = affine.perm.count
            var padValues = [Float](repeating: 0, count: c)
            for k in 0..<c { padValues[affine.perm[k]] = Float(-affine.shift[k] / affine.scale[k]) }

            let readers = nodes.indices.filter { nodes[$0].inputs.contains(affineNode.name) }
            if outputs.contains(where: { $0.node == affineNode.name }) || readers.isEmpty {
                throw GraphError(layer: affineNode.name, message: "preprocessing is a graph output and cannot be folded")
            }
            for r in readers {
                let reader = nodes[r]
                // The conv that receives the preprocessed pixels, directly or through a zero padding.
                var convIndex = r
                var padding = (0, 0, 0, 0)
                if case let .zeroPad(t, b, l, rr) = reader.op {
                    let padReaders = nodes.indices.filter { nodes[$0].inputs.contains(reader.name) }
                    guard padReaders.count == 1, !outputs.contains(where: { $0.node == reader.name }) else {
                        throw GraphError(layer: reader.name, message: "zero padding after the preprocessing feeds more than one layer; cannot fold")
                    }
                    convIndex = padReaders[0]
                    padding = (t, b, l, rr)
                }
                let expectedInput = convIndex == r ? affineNode.name : reader.name
                guard case .conv2d(var conv) = nodes[convIndex].op, nodes[convIndex].inputs.first == expectedInput, !conv.hasResidual else {
                    throw GraphError(layer: nodes[convIndex].name, message: "preprocessing can only be folded into a convolution, and '\(nodes[convIndex].name)' is a \(nodes[convIndex].op.kindName)")
                }
                guard conv.groups == 1 else {
                    throw GraphError(layer: nodes[convIndex].name, message: "preprocessing cannot be folded into a grouped convolution (\(conv.groups) groups)")
                }
                let inShape = shapes[nodes[convIndex].inputs[0]] ?? []
                let ks = conv.kernel.shape
                let own: (Int, Int, Int, Int)
                switch conv.padding {
                case let .explicit(t, b, l, r): own = (t, b, l, r)
                case .same:
                    guard inShape.count == 4, let h = inShape[1], let w = inShape[2] else {
                        if conv.strideH == 1, conv.strideW == 1 {
                            let (t, b) = conv.padding.amounts(size: 1, kernel: ks[0], stride: 1, dilation: conv.dilationH, vertical: true)
                            let (l, r) = conv.padding.amounts(size: 1, kernel: ks[1], stride: 1, dilation: conv.dilationW, vertical: false)
                            own = (t, b, l, r)
                            break
                        }
                        throw GraphError(layer: nodes[convIndex].name, message: "'same' padding with stride > 1 on an input of free size: give the input size to fold the preprocessing")
                    }
                    let (t, b) = conv.padding.amounts(size: h, kernel: ks[0], stride: conv.strideH, dilation: conv.dilationH, vertical: true)
                    let (l, r) = conv.padding.amounts(size: w, kernel: ks[1], stride: conv.strideW, dilation: conv.dilationW, vertical: false)
                    own = (t, b, l, r)
                }
                let total = (padding.0 + own.0, padding.1 + own.1, padding.2 + own.2, padding.3 + own.3)

                // Fold the affine into the kernel and bias (algebra above).
                let cout = ks[3]
                var w = [Float](repeating: 0, count: conv.kernel.values.count)
                var bias = (conv.bias?.values ?? [Float](repeating: 0, count: cout)).map(Double.init)
                for tap in 0..<(ks[0] * ks[1]) {
                    for ci in 0..<c {
                        for o in 0..<cout {
                            let original = Double(conv.kernel.values[(tap * c + ci) * cout + o])
                            w[(tap * c + affine.perm[ci]) * cout + o] = Float(original * affine.scale[ci])
                            bias[o] += original * affine.shift[ci]
                        }
                    }
                }
                conv.kernel.values = w
                conv.bias = WeightTensor(shape: [cout], values: bias.map { Float($0) })
                conv.padding = .valid
                nodes[convIndex].op = .conv2d(conv)
                nodes[convIndex].fusedLayers.insert(affineNode.name, at: 0)

                if total == (0, 0, 0, 0) {
                    nodes[convIndex].inputs[0] = source
                    if convIndex != r { nodes.removeAll { $0.name == reader.name } }
                } else if convIndex != r {
                    nodes[r].op = .constantPad(top: total.0, bottom: total.1, left: total.2, right: total.3, values: padValues)
                    nodes[r].inputs = [source]
                } else {
                    let padName = "\(nodes[convIndex].name)_pad"
                    nodes[convIndex].inputs[0] = padName
                    nodes.insert(GraphNode(name: padName, op: .constantPad(top: total.0, bottom: total.1, left: total.2, right: total.3, values: padValues),
                                           inputs: [source]), at: convIndex)
                }
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
