import KilnFormat

/// A weight tensor on the conversion side: float32 values in row-major order with a shape.
public struct WeightTensor: Sendable, Equatable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not match \(values.count) values")
        self.shape = shape
        self.values = values
    }
}

/// The conversion IR's ops. Training-time ops (BatchNorm, Dropout, ZeroPad) live here and are folded
/// away by the passes before a bundle can be written. Layouts: activations NHWC; conv kernels HWIO
/// `[kH, kW, Cin, Cout]`; dense kernels `[in, out]`; BatchNorm vectors per channel (last axis).
public enum GraphOp: Sendable {
    /// A model input, NHWC; nil dims are chosen at run time.
    case input(shape: [Int?])
    /// Zero padding of H and W (Keras ZeroPadding2D).
    case zeroPad(top: Int, bottom: Int, left: Int, right: Int)
    /// Padding of H and W with one value per channel (what zero padding becomes once preprocessing is
    /// folded into the convolution after it).
    case constantPad(top: Int, bottom: Int, left: Int, right: Int, values: [Float])
    /// A per-channel affine map on the last axis: y[..., c] = x[..., perm[c]] · scale[c] + shift[c]. Preprocessing,
    /// a BatchNormalization no convolution absorbed. `foldChannelAffines` folds it into the convolutions or dense
    /// layers that read it where that is exact; else, with the identity permutation, it is lowered to the bundle's
    /// ScaleShift op.
    case channelAffine(ChannelAffine)
    /// y = act(conv(x, kernel) + bias [+ residual]).
    case conv2d(ConvSpec)
    /// y = gamma · (x − mean) / sqrt(variance + epsilon) + beta, per channel.
    case batchNorm(BatchNormSpec)
    /// An elementwise activation (the identity, relu, clamps, …).
    case activation(Activation)
    /// Softmax over the last axis.
    case softmax
    /// y = act(a + b).
    case add(activation: Activation)
    case maxPool(Pool2DAttributes)
    /// Average pooling; padded cells are not counted.
    case avgPool(Pool2DAttributes)
    /// [N, H, W, C] → [N, C].
    case globalAvgPool
    /// [N, H, W, C] → [N, C], the maximum over H and W.
    case globalMaxPool
    /// [N, ...] → [N, product].
    case flatten
    /// y = act(x · kernel + bias), x is [N, in].
    case dense(DenseSpec)
    /// Identity at inference.
    case dropout
    /// Output axis i is input axis perm[i] (layout changes from NCHW sources).
    case transpose(perm: [Int])
    /// The same elements in the same order in another shape (0 copies the input's dim, -1 is the rest): a model's
    /// declared output shape, a softmax over flattened axes.
    case reshape(ReshapeAttributes)
    /// Mean or sum over axes (ONNX ReduceMean/ReduceSum that are not a global average pool).
    case reduce(ReduceAttributes)

    // Channel arithmetic on the last axis, as models write their own preprocessing (Keras 3 op layers, tf.keras
    // TFOpLambda): `resolveChannelArithmetic` turns each chain of them into one `channelAffine`; a bundle cannot hold them.
    /// x[..., i] (the last axis dropped) or x[..., start:stop:step].
    case channelGather(ChannelGather)
    /// Stacks rank-reduced channels on a new last axis (`stack(..., axis=-1)`).
    case channelStack
    /// Concatenates on the last axis.
    case channelConcat
    /// y = x·scale + shift, each of one value or one per channel of the last axis (Rescaling, Normalization,
    /// arithmetic with constants).
    case broadcastAffine(scale: [Double], shift: [Double])
    /// The inputs side by side along the last axis (channels); the other dims agree.
    case concat

    /// The Keras-like class name, for errors and summaries.
    public var kindName: String {
        switch self {
        case .input: return "InputLayer"
        case .zeroPad: return "ZeroPadding2D"
        case .constantPad: return "Pad"
        case .channelAffine(let a): return a.keepsOrder ? "ScaleShift" : "Preprocessing"
        case .conv2d: return "Conv2D"
        case .batchNorm: return "BatchNormalization"
        case .activation(let a):
            if a.isIdentity { return "Activation(linear)" }
            if a.isReLU { return "ReLU" }
            return "Activation(\(a))"
        case .softmax: return "Softmax"
        case .add: return "Add"
        case .maxPool: return "MaxPooling2D"
        case .avgPool: return "AveragePooling2D"
        case .globalAvgPool: return "GlobalAveragePooling2D"
        case .globalMaxPool: return "GlobalMaxPooling2D"
        case .flatten: return "Flatten"
        case .dense: return "Dense"
        case .dropout: return "Dropout"
        case .transpose: return "Transpose"
        case .reshape: return "Reshape"
        case .reduce(let r): return r.function == .mean ? "ReduceMean" : "ReduceSum"
        case .concat: return "Concatenate"
        case .channelGather: return "GetItem"
        case .channelStack: return "Stack"
        case .channelConcat: return "Concatenate"
        case .broadcastAffine: return "Arithmetic"
        }
    }
}

/// Which channels of the last axis a `channelGather` takes.
public enum ChannelGather: Sendable, Equatable {
    /// One channel (negative counts from the end); the last axis is dropped.
    case index(Int)
    /// Python's start:stop:step (nil: the default); the axis stays.
    case slice(start: Int?, stop: Int?, step: Int?)

    /// The channel indices taken from `count` channels, nil when out of range.
    public func indices(of count: Int) -> [Int]? {
        switch self {
        case .index(let i):
            let k = i < 0 ? i + count : i
            return (0..<count).contains(k) ? [k] : nil
        case let .slice(start, stop, step):
            let st = step ?? 1
            guard st != 0 else { return nil }
            func clamp(_ v: Int?, _ dflt: Int) -> Int {
                guard var v else { return dflt }
                if v < 0 { v += count }
                return st > 0 ? min(max(v, 0), count) : min(max(v, -1), count - 1)
            }
            var out: [Int] = []
            var i = clamp(start, st > 0 ? 0 : count - 1)
            let end = clamp(stop, st > 0 ? count : -1)
            while st > 0 ? i < end : i > end {
                out.append(i)
                i += st
            }
            return out
        }
    }
}

public struct ConvSpec: Sendable {
    public var kernel: WeightTensor
    public var bias: WeightTensor?
    public var strideH: Int, strideW: Int
    public var dilationH: Int, dilationW: Int
    public var padding: WindowPadding
    public var activation: Activation
    /// Set by the residual fusion: the value added before the activation.
    public var hasResidual: Bool
    /// Channel groups: the kernel is `[kH, kW, Cin / groups, Cout]` and output channel group g reads input channel
    /// group g only (1: a plain convolution; Cin: depthwise, Keras DepthwiseConv2D with its kernel reshaped).
    public var groups: Int = 1

    public init(kernel: WeightTensor, bias: WeightTensor?, strideH: Int, strideW: Int, dilationH: Int = 1,
                dilationW: Int = 1, padding: WindowPadding, activation: Activation = .none, hasResidual: Bool = false,
                groups: Int = 1) {
        self.groups = groups
        self.kernel = kernel
        self.bias = bias
        self.strideH = strideH; self.strideW = strideW
        self.dilationH = dilationH; self.dilationW = dilationW
        self.padding = padding
        self.activation = activation
        self.hasResidual = hasResidual
    }

    public var outChannels: Int { kernel.shape[3] }
    /// The input channels the convolution reads (all groups).
    public var inChannels: Int { kernel.shape[2] * groups }
}

public struct BatchNormSpec: Sendable {
    public var epsilon: Double
    public var gamma: [Float]?
    public var beta: [Float]?
    public var mean: [Float]
    public var variance: [Float]

    public init(epsilon: Double, gamma: [Float]?, beta: [Float]?, mean: [Float], variance: [Float]) {
        self.epsilon = epsilon
        self.gamma = gamma
        self.beta = beta
        self.mean = mean
        self.variance = variance
    }

    /// The map as y = x·s + t per channel, in Float64: s = gamma / sqrt(variance + epsilon), t = beta − mean·s.
    public var scaleAndShift: (scale: [Double], shift: [Double]) {
        let s = mean.indices.map { Double(gamma?[$0] ?? 1) / (Double(variance[$0]) + epsilon).squareRoot() }
        let t = mean.indices.map { Double(beta?[$0] ?? 0) - Double(mean[$0]) * s[$0] }
        return (s, t)
    }
}

public struct DenseSpec: Sendable {
    public var kernel: WeightTensor
    public var bias: WeightTensor?
    public var activation: Activation
    /// A softmax over each output row after the activation (Keras' `Dense(activation="softmax")`); lowered to
    /// Dense then Softmax.
    public var softmax: Bool

    public init(kernel: WeightTensor, bias: WeightTensor?, activation: Activation = .none, softmax: Bool = false) {
        self.kernel = kernel
        self.bias = bias
        self.activation = activation
        self.softmax = softmax
    }
}

/// One node: a named op and the names of the nodes whose outputs it reads.
public struct GraphNode: Sendable {
    public var name: String
    public var op: GraphOp
    public var inputs: [String]
    /// Names of the source layers merged into this node by the passes (for `inspect`).
    public var fusedLayers: [String]
    /// The element type of the node's output (float32 throughout today; the bundle records it per value).
    public var elementType: ElementType

    public init(name: String, op: GraphOp, inputs: [String], fusedLayers: [String] = [], elementType: ElementType = .float32) {
        self.name = name
        self.op = op
        self.inputs = inputs
        self.fusedLayers = fusedLayers
        self.elementType = elementType
    }
}

/// A named graph output: `port` is what users see, `node` the node producing it (passes may move it).
public struct GraphOutput: Sendable, Equatable {
    public var port: String
    public var node: String

    public init(port: String, node: String) {
        self.port = port
        self.node = node
    }
}

/// The conversion IR: nodes in a topological order, outputs, and metadata for the bundle.
public struct Graph: Sendable {
    public var nodes: [GraphNode]
    public var outputs: [GraphOutput]
    public var metadata: [String: MetadataValue]

    public init(nodes: [GraphNode], outputs: [GraphOutput], metadata: [String: MetadataValue] = [:]) {
        self.nodes = nodes
        self.outputs = outputs
        self.metadata = metadata
    }

    public func index(of name: String) -> Int? { nodes.firstIndex { $0.name == name } }

    public func node(named name: String) -> GraphNode? { nodes.first { $0.name == name } }

    /// How many nodes (and outputs) read each node.
    public func consumerCounts() -> [String: Int] {
        var counts: [String: Int] = [:]
        for n in nodes { for i in n.inputs { counts[i, default: 0] += 1 } }
        for o in outputs { counts[o.node, default: 0] += 1 }
        return counts
    }

    /// Adds an output at an existing node (for features such as `avg_pool`).
    public mutating func addOutput(node name: String) throws(GraphError) {
        guard index(of: name) != nil else {
            throw GraphError(layer: name, message: "no layer of that name (layers: \(nodes.prefix(3).map(\.name).joined(separator: ", ")), …)")
        }
        if !outputs.contains(where: { $0.port == name }) {
            outputs.append(GraphOutput(port: name, node: name))
        }
    }
}

/// An error in the graph: which layer, and what is wrong.
public struct GraphError: Error, CustomStringConvertible, Sendable {
    public var layer: String?
    public var message: String

    public init(layer: String? = nil, message: String) {
        self.layer = layer
        self.message = message
    }

    public var description: String {
        if let layer { return "layer '\(layer)': \(message)" }
        return message
    }
}
