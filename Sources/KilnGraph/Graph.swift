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
    /// Preprocessing as an op: y[..., c] = x[..., perm[c]] · scale[c] + shift[c]. Folded into the first
    /// convolution by `foldInputAffine`; a bundle cannot hold it.
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
    /// [N, ...] → [N, product].
    case flatten
    /// y = act(x · kernel + bias), x is [N, in].
    case dense(DenseSpec)
    /// Identity at inference.
    case dropout
    /// Output axis i is input axis perm[i] (layout changes from NCHW sources).
    case transpose(perm: [Int])
    /// The inputs side by side along the last axis (channels); the other dims agree.
    case concat

    /// The Keras-like class name, for errors and summaries.
    public var kindName: String {
        switch self {
        case .input: return "InputLayer"
        case .zeroPad: return "ZeroPadding2D"
        case .constantPad: return "Pad"
        case .channelAffine: return "Preprocessing"
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
        case .flatten: return "Flatten"
        case .dense: return "Dense"
        case .dropout: return "Dropout"
        case .transpose: return "Transpose"
        case .concat: return "Concatenate"
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
