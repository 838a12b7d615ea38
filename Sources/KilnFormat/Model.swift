/// The frozen model that a `.kiln` bundle holds, as plain values.
///
/// The writer serialises a `FrozenModel`; the reader gives one back whose tensor payloads point into the
/// mapped file. Every op here is one the runtime executes: training-time ops (BatchNorm, Dropout) cannot be
/// expressed, so an unfolded graph cannot be written. Layout conventions: activations are NHWC float32,
/// convolution kernels are HWIO `[kH, kW, Cin, Cout]`, dense kernels `[in, out]`.

/// Storage type of a tensor's elements (little-endian).
public enum ElementType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case float32 = 1
    /// IEEE binary16, rounded to nearest even from float32 (version 1.1).
    case float16 = 2
    /// The upper half of a float32, rounded to nearest even (version 1.1).
    case bfloat16 = 3
    /// Symmetric int8 with one float32 scale per index of the last axis (the output channel of HWIO and
    /// [in, out] kernels): value = q · scale[c]. Stored as the int8 values, zero padding to a multiple of 4
    /// bytes, then the float32 scales (version 1.1).
    case int8PerChannel = 4

    /// Bytes a tensor of `shape` occupies.
    public func storedByteCount(shape: [Int]) -> Int {
        let n = shape.reduce(1, *)
        switch self {
        case .float32: return 4 * n
        case .float16, .bfloat16: return 2 * n
        case .int8PerChannel: return (n + 3) / 4 * 4 + 4 * (shape.last ?? 1)
        }
    }

    /// The width of the values, for the byte-plane shuffle before compression.
    public var planeWidth: Int {
        switch self {
        case .float32: return 4
        case .float16, .bfloat16: return 2
        case .int8PerChannel: return 1
        }
    }

    public var description: String {
        switch self {
        case .float32: return "f32"
        case .float16: return "f16"
        case .bfloat16: return "bf16"
        case .int8PerChannel: return "int8"
        }
    }
}

/// The ops of bundle version 1. Each op has one output value. Integer attributes are listed per op in
/// `formats/kiln-bundle.md`; the typed views (`Conv2DAttributes`, …) decode and validate them.
public enum OpCode: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// y = act(conv(x, W) + b [+ residual]); inputs [x] or [x, residual]; tensors [W (HWIO), b].
    case conv2d = 1
    /// y = act(a + b), same shapes.
    case add = 2
    /// Max over kH×kW windows; padded cells never win.
    case maxPool2d = 3
    /// Mean over kH×kW windows; padded cells are not counted (Keras/TF semantics).
    case avgPool2d = 4
    /// [N, H, W, C] → [N, C], mean over H and W.
    case globalAvgPool = 5
    /// y = act(x · W + b); x is [N, in]; tensors [W ([in, out]), b].
    case dense = 6
    /// Softmax over the last axis.
    case softmax = 7
    /// y = max(x, 0).
    case relu = 8
    /// Constant padding of H and W; value per channel from tensor 0 when present, else zero.
    case pad = 9
    /// [N, ...] → [N, product of the rest] (row-major, NHWC order, as Keras' Flatten).
    case flatten = 10
    /// Permutes the axes: output axis i is input axis perm[i] (attributes: perm).
    case transpose = 11
    /// y = act(x) elementwise, any rank (attributes: the activation; version 1.2).
    case unary = 12
    /// The same elements in the same order in another shape (attributes: the output dims, 0 = the input's dim at
    /// that position, -1 = the rest; version 1.3).
    case reshape = 13
    /// Mean or sum over some axes (attributes: function, keepdims, the axes; version 1.3).
    case reduce = 14
    /// [N, H, W, C] → [N, C], max over H and W (version 1.3).
    case globalMaxPool = 15
    /// y[..., c] = act(x[..., c] · scale[c] + shift[c]), any rank, channels last; tensors [scale, shift] ([C] each);
    /// attributes: the activation (version 1.3). A BatchNormalization that no neighbour absorbs.
    case scaleShift = 16
    /// The inputs side by side along the last axis (channels), same leading dims; two or more inputs, no
    /// attributes (version 1.3).
    case concat = 17

    public var description: String {
        switch self {
        case .conv2d: return "Conv2D"
        case .add: return "Add"
        case .maxPool2d: return "MaxPool2D"
        case .avgPool2d: return "AvgPool2D"
        case .globalAvgPool: return "GlobalAvgPool"
        case .dense: return "Dense"
        case .softmax: return "Softmax"
        case .relu: return "ReLU"
        case .pad: return "Pad"
        case .flatten: return "Flatten"
        case .transpose: return "Transpose"
        case .unary: return "Unary"
        case .reshape: return "Reshape"
        case .reduce: return "Reduce"
        case .globalMaxPool: return "GlobalMaxPool"
        case .scaleShift: return "ScaleShift"
        case .concat: return "Concat"
        }
    }
}

/// How a window op pads its input.
public enum PaddingMode: Int64, Sendable {
    /// The four explicit amounts in the attributes.
    case explicit = 0
    /// TensorFlow/Keras "same": output = ceil(input / stride), the odd cell at the bottom/right.
    case same = 1
}

/// One op of the frozen graph.
public struct OpRecord: Sendable, Equatable {
    public var opcode: OpCode
    /// The layer name the op came from (kept for errors, `inspect` and `--output-name`).
    public var name: String
    /// Value ids read by the op.
    public var inputs: [Int]
    /// The value id written by the op.
    public var output: Int
    /// Integer attributes, meaning per opcode (see the typed views).
    public var attributes: [Int64]
    /// Indices into the model's tensor table.
    public var tensors: [Int]

    public init(opcode: OpCode, name: String, inputs: [Int], output: Int, attributes: [Int64] = [], tensors: [Int] = []) {
        self.opcode = opcode
        self.name = name
        self.inputs = inputs
        self.output = output
        self.attributes = attributes
        self.tensors = tensors
    }

    /// True when the op needs format 1.3: Reshape, Reduce, GlobalMaxPool, ScaleShift, Concat, a grouped (or
    /// depthwise) convolution, or an activation function of code 2 or more (found in the 5-word form: [16 + function,
    /// …] as the first attribute word of Unary/Add/Dense/ScaleShift, or Conv2D's word 9).
    var needsVersion1_3: Bool {
        switch opcode {
        case .reshape, .reduce, .globalMaxPool, .scaleShift, .concat: return true
        case .unary, .add, .dense: return attributes.count == 5 && attributes[0] >= Activation.extendedBase + 2
        case .conv2d:
            return Conv2DAttributes.hasGroupsWord(attributes) || (attributes.count >= 16 && attributes[9] >= Activation.extendedBase + 2)
        default: return false
        }
    }

    /// True when the op needs format 1.2: the Unary op, or an activation in the 5-word form.
    var needsVersion1_2: Bool {
        switch opcode {
        case .unary, .globalMaxPool, .scaleShift: return true
        case .conv2d: return attributes.count >= 16
        case .dense, .add: return attributes.count > 1
        case .maxPool2d, .avgPool2d, .globalAvgPool, .softmax, .relu, .pad, .flatten, .transpose, .reshape, .reduce, .concat: return false
        }
    }
}

/// A named model input or output: a value id and, for inputs, the NHWC shape (-1 = any size).
public struct PortRecord: Sendable, Equatable {
    public var name: String
    public var value: Int
    public var shape: [Int64]

    public init(name: String, value: Int, shape: [Int64]) {
        self.name = name
        self.value = value
        self.shape = shape
    }
}

/// A weight tensor: its name, type and shape, and its stored bytes (little-endian).
public struct TensorRecord: Sendable {
    public var name: String
    public var elementType: ElementType
    public var shape: [Int]
    public var payload: TensorPayload

    public init(name: String, elementType: ElementType = .float32, shape: [Int], payload: TensorPayload) {
        self.name = name
        self.elementType = elementType
        self.shape = shape
        self.payload = payload
    }

    /// A float32 tensor owning its values.
    public init(name: String, shape: [Int], floats: [Float]) {
        self.init(name: name, elementType: .float32, shape: shape, payload: .owned(floats))
    }

    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementType.storedByteCount(shape: shape) }

    /// The values as float32, widening reduced-precision storage.
    public func decodedFloats() -> [Float] {
        if elementType == .float32 { return payload.floats }
        return payload.withStoredBytes { raw in decodeElements(raw, type: elementType, shape: shape) }
    }
}

/// Where a tensor's bytes live: float32 values or encoded bytes owned by the writer side, or bytes mapped
/// from a bundle file.
public enum TensorPayload: @unchecked Sendable {
    case owned([Float])
    /// Encoded storage (any element type), owned.
    case bytes([UInt8])
    /// Points into a mapping that outlives the model (the `Bundle` that produced it).
    case mapped(UnsafeRawBufferPointer)

    /// Calls `body` with the float32 values. Only for float32 tensors.
    public func withFloats<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        switch self {
        case .owned(let values):
            return try values.withUnsafeBufferPointer(body)
        case .bytes(let b):
            return try b.withUnsafeBytes { try body($0.bindMemory(to: Float.self)) }
        case .mapped(let raw):
            let floats = raw.bindMemory(to: Float.self)
            return try body(floats)
        }
    }

    /// Calls `body` with the stored bytes.
    public func withStoredBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch self {
        case .owned(let values): return try values.withUnsafeBytes(body)
        case .bytes(let b): return try b.withUnsafeBytes(body)
        case .mapped(let raw): return try body(raw)
        }
    }

    public var floats: [Float] { withFloats { Array($0) } }
}

/// A typed metadata value.
public enum MetadataValue: Sendable, Equatable {
    case int(Int64)
    case float(Double)
    case string(String)
    case strings([String])
    case floats([Double])
}

/// The whole frozen model.
public struct FrozenModel: Sendable {
    /// Namespaced keys (`kiln.`, `source.`, `input.`, `labels.`), kept sorted by the writer.
    public var metadata: [String: MetadataValue]
    /// Names of all values; value ids index this list.
    public var valueNames: [String]
    /// The element types of the values (the activations) that are not float32, by value id; every other value is
    /// float32 (all of them, today). Kernels are chosen by op and element type; a bundle records the types only
    /// when one is not float32 (version 1.2).
    public var otherValueTypes: [Int: ElementType]
    public var inputs: [PortRecord]
    public var outputs: [PortRecord]
    /// In execution order: every op's inputs are model inputs or outputs of earlier ops.
    public var ops: [OpRecord]
    public var tensors: [TensorRecord]

    public init(metadata: [String: MetadataValue] = [:], valueNames: [String], inputs: [PortRecord],
                outputs: [PortRecord], ops: [OpRecord], tensors: [TensorRecord], valueTypes: [ElementType]? = nil) {
        self.metadata = metadata
        self.valueNames = valueNames
        var other: [Int: ElementType] = [:]
        for (v, t) in (valueTypes ?? []).enumerated() where t != .float32 { other[v] = t }
        self.otherValueTypes = other
        self.inputs = inputs
        self.outputs = outputs
        self.ops = ops
        self.tensors = tensors
    }
}

extension FrozenModel {
    /// The element type of value `v`.
    public func valueType(_ v: Int) -> ElementType { otherValueTypes[v] ?? .float32 }
    /// Every value's element type, by value id.
    public var valueTypes: [ElementType] { valueNames.indices.map(valueType) }
    /// True when a value is not float32: the graph section then ends with the values' element types (1.2).
    var hasValueTypes: Bool { !otherValueTypes.isEmpty }
}

// MARK: - Typed attribute views

/// Attributes of `conv2d`: [kH, kW, strideH, strideW, padMode, padTop, padBottom, padLeft, padRight,
/// activation (1 word, or 5 from version 1.2), dilationH, dilationW [, groups (version 1.3)]].
public struct Conv2DAttributes: Sendable, Equatable {
    public var kernelH: Int, kernelW: Int
    public var strideH: Int, strideW: Int
    public var padding: WindowPadding
    public var activation: Activation
    public var dilationH: Int, dilationW: Int
    /// Channel groups: input channel group g (Cin/groups channels) feeds only output channel group g
    /// (Cout/groups channels), and the kernel is `[kH, kW, Cin/groups, Cout]`. 1 is a plain convolution,
    /// groups = Cin a depthwise one (Cout = Cin × multiplier). Written only when not 1 (version 1.3).
    public var groups: Int

    public init(kernelH: Int, kernelW: Int, strideH: Int, strideW: Int, padding: WindowPadding,
                activation: Activation, dilationH: Int = 1, dilationW: Int = 1, groups: Int = 1) {
        self.kernelH = kernelH; self.kernelW = kernelW
        self.strideH = strideH; self.strideW = strideW
        self.padding = padding
        self.activation = activation
        self.dilationH = dilationH; self.dilationW = dilationW
        self.groups = groups
    }

    public var encoded: [Int64] {
        [Int64(kernelH), Int64(kernelW), Int64(strideH), Int64(strideW)] + padding.encoded
            + activation.encoded + [Int64(dilationH), Int64(dilationW)] + (groups == 1 ? [] : [Int64(groups)])
    }

    public init(decoding a: [Int64]) throws(AttributeError) {
        guard [12, 13, 16, 17].contains(a.count) else {
            throw AttributeError(message: "Conv2D has \(a.count) attributes, expected 12, 13, 16 or 17")
        }
        let (act, width) = try Activation.decode(a[9...], op: "Conv2D")
        let hasGroups = 9 + width + 3 == a.count
        guard 9 + width + 2 == a.count || hasGroups else { throw AttributeError(message: "Conv2D has \(a.count) attributes for a \(width)-word activation") }
        let k = try positive(a, [0, 1, 2, 3, 9 + width, 10 + width] + (hasGroups ? [11 + width] : []), op: "Conv2D")
        self.init(kernelH: k[0], kernelW: k[1], strideH: k[2], strideW: k[3],
                  padding: try WindowPadding(decoding: Array(a[4..<9])), activation: act,
                  dilationH: k[4], dilationW: k[5], groups: hasGroups ? k[6] : 1)
    }

    /// True when the attribute list holds the groups word (a 1.3 feature).
    static func hasGroupsWord(_ a: [Int64]) -> Bool { a.count == 13 || a.count == 17 }
}

/// Attributes of `dense`: [activation] (1 word, or 5 from version 1.2). The 1.0 code 2 means a softmax over each
/// row after the product (`softmax`); bundles since 1.2 write a Softmax op instead.
public struct DenseAttributes: Sendable, Equatable {
    public var activation: Activation
    /// A softmax over each output row, applied after the activation (the 1.0 fused form).
    public var softmax: Bool

    public init(activation: Activation, softmax: Bool = false) {
        self.activation = activation
        self.softmax = softmax
    }

    static let legacySoftmax: Int64 = 2

    public var encoded: [Int64] { softmax && activation.isIdentity ? [Self.legacySoftmax] : activation.encoded }

    public init(decoding a: [Int64]) throws(AttributeError) {
        if a == [Self.legacySoftmax] {
            self.init(activation: .none, softmax: true)
            return
        }
        let (act, width) = try Activation.decode(a[...], op: "Dense")
        guard width == a.count else { throw AttributeError(message: "Dense has \(a.count) attributes, expected \(width)") }
        self.init(activation: act)
    }
}

/// Attributes of `add` and `unary`: the activation (1 word, or 5 from version 1.2).
public struct ActivationAttributes: Sendable, Equatable {
    public var activation: Activation

    public init(_ activation: Activation) { self.activation = activation }

    public var encoded: [Int64] { activation.encoded }

    public init(decoding a: [Int64], op: OpCode) throws(AttributeError) {
        let (act, width) = try Activation.decode(a[...], op: "\(op)")
        guard width == a.count else { throw AttributeError(message: "\(op) has \(a.count) attributes, expected \(width)") }
        self.init(act)
    }
}

/// Attributes of `maxPool2d` and `avgPool2d`: [kH, kW, strideH, strideW, padMode, padTop, padBottom,
/// padLeft, padRight].
public struct Pool2DAttributes: Sendable, Equatable {
    public var kernelH: Int, kernelW: Int
    public var strideH: Int, strideW: Int
    public var padding: WindowPadding

    public init(kernelH: Int, kernelW: Int, strideH: Int, strideW: Int, padding: WindowPadding) {
        self.kernelH = kernelH; self.kernelW = kernelW
        self.strideH = strideH; self.strideW = strideW
        self.padding = padding
    }

    public var encoded: [Int64] {
        [Int64(kernelH), Int64(kernelW), Int64(strideH), Int64(strideW)] + padding.encoded
    }

    public init(decoding a: [Int64]) throws(AttributeError) {
        guard a.count == 9 else { throw AttributeError(message: "pool has \(a.count) attributes, expected 9") }
        let k = try positive(a, [0, 1, 2, 3], op: "pool")
        self.init(kernelH: k[0], kernelW: k[1], strideH: k[2], strideW: k[3],
                  padding: try WindowPadding(decoding: Array(a[4..<9])))
    }
}

/// Attributes of `pad`: [padTop, padBottom, padLeft, padRight].
public struct PadAttributes: Sendable, Equatable {
    public var top: Int, bottom: Int, left: Int, right: Int

    public init(top: Int, bottom: Int, left: Int, right: Int) {
        self.top = top; self.bottom = bottom; self.left = left; self.right = right
    }

    public var encoded: [Int64] { [Int64(top), Int64(bottom), Int64(left), Int64(right)] }

    public init(decoding a: [Int64]) throws(AttributeError) {
        guard a.count == 4 else { throw AttributeError(message: "Pad has \(a.count) attributes, expected 4") }
        for v in a where v < 0 || v > Int64(WindowPadding.maximumPad) {
            throw AttributeError(message: "Pad amount \(v) is outside 0...\(WindowPadding.maximumPad)")
        }
        self.init(top: Int(a[0]), bottom: Int(a[1]), left: Int(a[2]), right: Int(a[3]))
    }
}

/// Attributes of `reshape`: the output dims (rank 1…8), each a size ≥ 1, 0 for the input's dim at the same
/// position, or -1 (at most one) for what the other dims leave (ONNX Reshape without allowzero).
public struct ReshapeAttributes: Sendable, Equatable {
    public var dims: [Int]

    public init(dims: [Int]) { self.dims = dims }

    public var encoded: [Int64] { dims.map(Int64.init) }

    public init(decoding a: [Int64]) throws(AttributeError) {
        guard !a.isEmpty, a.count <= BundleLayout.maximumRank else {
            throw AttributeError(message: "Reshape has \(a.count) dims, expected 1...\(BundleLayout.maximumRank)")
        }
        guard a.allSatisfy({ $0 >= -1 && $0 <= Int64(Int32.max) }), a.filter({ $0 == -1 }).count <= 1 else {
            throw AttributeError(message: "Reshape dims \(a) must be sizes, 0 (copy) or one -1")
        }
        self.init(dims: a.map { Int($0) })
    }

    /// The output shape for an input of `input`, or nil with the reason when it does not fit.
    public func outputShape(_ input: [Int]) -> Result<[Int], AttributeError> {
        var out: [Int] = []
        var rest: Int?
        for (i, d) in dims.enumerated() {
            switch d {
            case 0:
                guard i < input.count else { return .failure(AttributeError(message: "Reshape dim \(i) copies a dim the input \(input) does not have")) }
                out.append(input[i])
            case -1: rest = i; out.append(1)
            default: out.append(d)
            }
        }
        func product(_ dims: [Int]) -> Int? {
            var p = 1
            for d in dims {
                let (q, overflow) = p.multipliedReportingOverflow(by: d)
                guard !overflow else { return nil }
                p = q
            }
            return p
        }
        guard let total = product(input), let given = product(out) else {
            return .failure(AttributeError(message: "reshaping \(input) to \(dims): too many elements"))
        }
        if let rest {
            guard given > 0, total % given == 0 else {
                return .failure(AttributeError(message: "cannot reshape \(input) to \(dims)"))
            }
            out[rest] = total / given
        } else if given != total {
            return .failure(AttributeError(message: "cannot reshape \(input) (\(total) elements) to \(out)"))
        }
        return .success(out)
    }
}

/// What `reduce` computes over its axes.
public enum ReduceFunction: Int64, Sendable, CaseIterable, CustomStringConvertible {
    case mean = 0
    case sum = 1

    public var description: String { self == .mean ? "mean" : "sum" }
}

/// Attributes of `reduce`: `[function, keepdims, axis…]`, the axes distinct, ascending, of the input (rank ≤ 8).
public struct ReduceAttributes: Sendable, Equatable {
    public var function: ReduceFunction
    public var keepDims: Bool
    public var axes: [Int]

    public init(function: ReduceFunction, keepDims: Bool, axes: [Int]) {
        self.function = function
        self.keepDims = keepDims
        self.axes = axes.sorted()
    }

    public var encoded: [Int64] { [function.rawValue, keepDims ? 1 : 0] + axes.map(Int64.init) }

    public init(decoding a: [Int64]) throws(AttributeError) {
        guard a.count >= 3, a.count <= 2 + BundleLayout.maximumRank else {
            throw AttributeError(message: "Reduce has \(a.count) attributes, expected 3...\(2 + BundleLayout.maximumRank)")
        }
        guard let f = ReduceFunction(rawValue: a[0]) else { throw AttributeError(message: "Reduce function \(a[0]) is unknown") }
        guard a[1] == 0 || a[1] == 1 else { throw AttributeError(message: "Reduce keepdims \(a[1]) is not 0 or 1") }
        let axes = Array(a[2...])
        guard axes.allSatisfy({ $0 >= 0 && $0 < Int64(BundleLayout.maximumRank) }), axes == axes.sorted(), Set(axes).count == axes.count else {
            throw AttributeError(message: "Reduce axes \(axes) must be distinct ascending axes below \(BundleLayout.maximumRank)")
        }
        self.init(function: f, keepDims: a[1] == 1, axes: axes.map { Int($0) })
    }

    /// The output shape for an input of `input`, or nil when an axis is beyond its rank.
    public func outputShape(_ input: [Int]) -> [Int]? {
        guard let last = axes.last, last < input.count else { return nil }
        if keepDims { return input.enumerated().map { axes.contains($0.offset) ? 1 : $0.element } }
        return input.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
    }
}

/// Attributes of `transpose`: the permutation, a rearrangement of 0..<rank (rank ≤ 8).
public func decodePermutation(_ a: [Int64]) throws(AttributeError) -> [Int] {
    guard !a.isEmpty, a.count <= BundleLayout.maximumRank, Set(a) == Set((0..<Int64(a.count))) else {
        throw AttributeError(message: "Transpose permutation \(a) is not a permutation of 0..<\(a.count)")
    }
    return a.map { Int($0) }
}

/// Padding of a window op: explicit amounts, or "same" resolved against the input size.
public enum WindowPadding: Sendable, Equatable {
    case explicit(top: Int, bottom: Int, left: Int, right: Int)
    case same

    public static let maximumPad = 1 << 16

    public static let valid = WindowPadding.explicit(top: 0, bottom: 0, left: 0, right: 0)

    var encoded: [Int64] {
        switch self {
        case let .explicit(t, b, l, r): return [PaddingMode.explicit.rawValue, Int64(t), Int64(b), Int64(l), Int64(r)]
        case .same: return [PaddingMode.same.rawValue, 0, 0, 0, 0]
        }
    }

    init(decoding a: [Int64]) throws(AttributeError) {
        guard a.count == 5, let mode = PaddingMode(rawValue: a[0]) else {
            throw AttributeError(message: "padding mode \(a.first ?? -1) is unknown")
        }
        for v in a[1...] where v < 0 || v > Int64(WindowPadding.maximumPad) {
            throw AttributeError(message: "padding amount \(v) is outside 0...\(WindowPadding.maximumPad)")
        }
        switch mode {
        case .explicit: self = .explicit(top: Int(a[1]), bottom: Int(a[2]), left: Int(a[3]), right: Int(a[4]))
        case .same: self = .same
        }
    }

    /// The amounts (top, bottom) or (left, right) along one axis for an input of `size`.
    /// "same" follows TensorFlow: total = max((ceil(size/stride) - 1) * stride + effectiveKernel - size, 0),
    /// the smaller half first.
    public func amounts(size: Int, kernel: Int, stride: Int, dilation: Int = 1, vertical: Bool) -> (Int, Int) {
        switch self {
        case let .explicit(t, b, l, r):
            return vertical ? (t, b) : (l, r)
        case .same:
            let out = (size + stride - 1) / stride
            let effective = (kernel - 1) * dilation + 1
            let total = max((out - 1) * stride + effective - size, 0)
            return (total / 2, total - total / 2)
        }
    }
}

/// A malformed attribute list: the bundle (or the graph being lowered) is inconsistent.
public struct AttributeError: KindedError, Sendable {
    public var message: String
    public var kind: ErrorKind { .badBundle }
    public var description: String { message }
}

private func positive(_ a: [Int64], _ indices: [Int], op: String) throws(AttributeError) -> [Int] {
    var out: [Int] = []
    for i in indices {
        guard a[i] >= 1, a[i] <= 1 << 16 else {
            throw AttributeError(message: "\(op) attribute \(i) is \(a[i]), expected 1...65536")
        }
        out.append(Int(a[i]))
    }
    return out
}
