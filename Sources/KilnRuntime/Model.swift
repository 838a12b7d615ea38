import KilnFormat
import KilnKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A dense float32 tensor, row-major (NHWC for images).
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        self.shape = shape
        self.values = values
    }

    public var count: Int { values.count }
}

/// An error while loading or running a bundle: its kind, the op (layer name) and what is wrong.
public struct RuntimeError: KindedError, Sendable {
    public var kind: ErrorKind
    public var op: String?
    public var message: String

    public init(_ kind: ErrorKind, op: String? = nil, _ message: String) {
        self.kind = kind
        self.op = op
        self.message = message
    }

    public var description: String {
        if let op { return "op '\(op)': \(message)" }
        return message
    }
}

/// Which kernels run the ops: the fast ones, or the naive reference kernels (the test oracle).
public enum KernelChoice: Sendable {
    case fast
    case reference
}

/// A loaded bundle ready to run: every op checked against its tensors, conv weights packed once.
/// Immutable after loading, so one `Model` may serve concurrent `run` calls.
public final class Model: @unchecked Sendable {
    public let bundle: Bundle
    public var frozen: FrozenModel { bundle.model }
    let steps: [Step]
    /// Convolution weights packed again for plans with many rows (`ConvAlgorithm.forLargerBatch`), by step:
    /// made by the first such plan and kept, so that only a process that runs larger batches holds them.
    private var largerBatchWeights: [Int: PackedConvWeights] = [:]
    private let largerBatchLock = ModelLock()

    /// A validated op with its decoded attributes and weights.
    struct Step {
        var record: OpRecord
        var kind: Kind

        enum Kind {
            case conv(Conv2DAttributes, kernel: TensorPayload, packed: PackedConvWeights, bias: TensorPayload, kernelShape: [Int])
            case dense(Activation, kernel: TensorPayload, bias: TensorPayload, inFeatures: Int, outFeatures: Int)
            case add(Activation)
            case maxPool(Pool2DAttributes)
            case avgPool(Pool2DAttributes)
            case globalAvgPool
            case softmax
            case relu
            case flatten
            case transpose([Int])
            case pad(PadAttributes, values: TensorPayload?)
        }
    }

    /// The weights a plan of `geometry` runs step `index` with: the load-time packing, or one for larger batches.
    func convWeights(step index: Int, packed: PackedConvWeights, kernel: TensorPayload,
                     geometry: ConvGeometry) -> PackedConvWeights {
        guard let better = ConvAlgorithm.forLargerBatch(packed.algorithm, geometry: geometry) else { return packed }
        return largerBatchLock.locked {
            // A step has one larger-batch algorithm (its load-time one fixes it): made once, then reused.
            if let made = largerBatchWeights[index] { return made }
            let made = kernel.withFloats {
                packConvWeightsHWIO($0.baseAddress!, kernelH: packed.kernelH, kernelW: packed.kernelW,
                                    inC: packed.inC, outC: packed.outC, algorithm: better)
            }
            largerBatchWeights[index] = made
            return made
        }
    }

    /// Loads and validates the bundle at `path` (mapped, not copied).
    public convenience init(contentsOf path: String) throws {
        try self.init(bundle: Bundle(contentsOf: path))
    }

    public init(bundle: Bundle) throws(RuntimeError) {
        self.bundle = bundle
        let model = bundle.model
        var steps: [Step] = []
        steps.reserveCapacity(model.ops.count)
        for op in model.ops {
            steps.append(try Self.validate(op, tensors: model.tensors))
        }
        self.steps = steps
        for p in model.inputs where p.shape.count != 4 && p.shape.count != 2 {
            throw RuntimeError(.unsupported, "input '\(p.name)' has rank \(p.shape.count); rank 2 or 4 (NHWC) expected")
        }
    }

    static func validate(_ op: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) -> Step {
        func fail(_ m: String) -> RuntimeError { RuntimeError(.badBundle, op: op.name, m) }
        func arity(_ inputs: ClosedRange<Int>, tensors t: ClosedRange<Int>) throws(RuntimeError) {
            guard inputs.contains(op.inputs.count) else { throw fail("\(op.opcode) has \(op.inputs.count) inputs, expected \(inputs)") }
            guard t.contains(op.tensors.count) else { throw fail("\(op.opcode) has \(op.tensors.count) tensors, expected \(t)") }
        }
        func decode<T>(_ body: () throws(AttributeError) -> T) throws(RuntimeError) -> T {
            do { return try body() } catch { throw fail(error.message) }
        }
        func float32(_ i: Int) throws(RuntimeError) -> TensorRecord {
            // Reduced-precision weights are widened once, here, into float32 owned by the model.
            var t = tensors[op.tensors[i]]
            if t.elementType != .float32 {
                t.payload = .owned(t.decodedFloats())
                t.elementType = .float32
            }
            return t
        }
        switch op.opcode {
        case .conv2d:
            try arity(1...2, tensors: 2...2)
            let attrs = try decode { () throws(AttributeError) in try Conv2DAttributes(decoding: op.attributes) }
            let kernel = try float32(0), bias = try float32(1)
            let s = kernel.shape
            guard s.count == 4, s[0] == attrs.kernelH, s[1] == attrs.kernelW, s[2] >= 1, s[3] >= 1 else {
                throw fail("kernel '\(kernel.name)' has shape \(s), expected [\(attrs.kernelH), \(attrs.kernelW), Cin, Cout]")
            }
            guard bias.shape == [s[3]] else { throw fail("bias '\(bias.name)' has shape \(bias.shape), expected [\(s[3])]") }
            // The bias is copied first (it is small): packing hands the mapped kernel's pages back to the OS, in
            // whole 2 MiB pages that may hold the bias too, and reading it later would map them again.
            let biasValues = TensorPayload.owned(bias.payload.floats)
            // Packed once, for the algorithm this layer gets (ConvAlgorithm.choose: Winograd for stride-1 3×3 where it
            // pays, else GEMM panels, or the portable layout on CPUs without AVX2).
            let packed = kernel.payload.withFloats {
                packConvWeightsHWIO($0.baseAddress!, kernelH: s[0], kernelW: s[1], inC: s[2], outC: s[3],
                                    strideH: attrs.strideH, strideW: attrs.strideW,
                                    dilationH: attrs.dilationH, dilationW: attrs.dilationW)
            }
            return Step(record: op, kind: .conv(attrs, kernel: kernel.payload, packed: packed, bias: biasValues, kernelShape: s))
        case .dense:
            try arity(1...1, tensors: 2...2)
            let act = try decode { () throws(AttributeError) in try decodeActivation(op.attributes, op: "Dense") }
            let kernel = try float32(0), bias = try float32(1)
            guard kernel.shape.count == 2, kernel.shape.allSatisfy({ $0 >= 1 }) else {
                throw fail("kernel '\(kernel.name)' has shape \(kernel.shape), expected [in, out]")
            }
            guard bias.shape == [kernel.shape[1]] else { throw fail("bias '\(bias.name)' has shape \(bias.shape), expected [\(kernel.shape[1])]") }
            return Step(record: op, kind: .dense(act, kernel: kernel.payload, bias: bias.payload, inFeatures: kernel.shape[0], outFeatures: kernel.shape[1]))
        case .add:
            try arity(2...2, tensors: 0...0)
            let act = try decode { () throws(AttributeError) in try decodeActivation(op.attributes, op: "Add") }
            guard act != .softmax else { throw fail("Add cannot fuse a softmax") }
            return Step(record: op, kind: .add(act))
        case .maxPool2d, .avgPool2d:
            try arity(1...1, tensors: 0...0)
            let attrs = try decode { () throws(AttributeError) in try Pool2DAttributes(decoding: op.attributes) }
            return Step(record: op, kind: op.opcode == .maxPool2d ? .maxPool(attrs) : .avgPool(attrs))
        case .globalAvgPool, .softmax, .relu, .flatten:
            try arity(1...1, tensors: 0...0)
            guard op.attributes.isEmpty else { throw fail("\(op.opcode) takes no attributes, has \(op.attributes.count)") }
            let kinds: [OpCode: Step.Kind] = [.globalAvgPool: .globalAvgPool, .softmax: .softmax, .relu: .relu, .flatten: .flatten]
            return Step(record: op, kind: kinds[op.opcode] ?? .relu)
        case .transpose:
            try arity(1...1, tensors: 0...0)
            let perm = try decode { () throws(AttributeError) in try decodePermutation(op.attributes) }
            return Step(record: op, kind: .transpose(perm))
        case .pad:
            try arity(1...1, tensors: 0...1)
            let attrs = try decode { () throws(AttributeError) in try PadAttributes(decoding: op.attributes) }
            let values = op.tensors.isEmpty ? nil : try float32(0)
            if let values, values.shape.count != 1 { throw fail("pad values '\(values.name)' have shape \(values.shape), expected [C]") }
            return Step(record: op, kind: .pad(attrs, values: values?.payload))
        }
    }

    // MARK: - Shapes

    /// The output shape of every value for an input of `inputShape`, checking each op.
    public func plan(inputShape: [Int]) throws(RuntimeError) -> [[Int]?] {
        let model = frozen
        guard model.inputs.count == 1, let port = model.inputs.first else {
            throw RuntimeError(.unsupported, "the bundle has \(model.inputs.count) inputs; one is supported")
        }
        guard inputShape.count == port.shape.count else {
            throw RuntimeError(.badInput, "input has shape \(inputShape), the model expects rank \(port.shape.count) \(describeDims(port.shape))")
        }
        for (i, (d, e)) in zip(inputShape, port.shape).enumerated() {
            guard d >= 1, e == -1 || Int64(d) == e else {
                throw RuntimeError(.badInput, "input has shape \(inputShape), the model expects \(describeDims(port.shape)) (dim \(i))")
            }
        }
        var shapes = [[Int]?](repeating: nil, count: model.valueNames.count)
        shapes[port.value] = inputShape
        for step in steps {
            let ins = step.record.inputs.map { shapes[$0] ?? [] }
            let out = try outputShape(step, ins)
            guard Self.elementCount(out) != nil else {
                throw RuntimeError(.badInput, op: step.record.name, "output shape \(out) has more than the limit of \(Self.maximumValueElements) elements")
            }
            shapes[step.record.output] = out
        }
        return shapes
    }

    /// The most elements one value of a plan may have (16 GiB of float32), checked before anything is allocated.
    public static let maximumValueElements = 1 << 32

    /// The element count of `shape`, or nil when it overflows or exceeds `maximumValueElements`.
    static func elementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, o) = count.multipliedReportingOverflow(by: d)
            guard !o, p <= maximumValueElements else { return nil }
            count = p
        }
        return count
    }

    func outputShape(_ step: Step, _ ins: [[Int]]) throws(RuntimeError) -> [Int] {
        let op = step.record
        func fail(_ m: String) -> RuntimeError { RuntimeError(.badInput, op: op.name, m) }
        func nhwc(_ s: [Int]) throws(RuntimeError) -> (Int, Int, Int, Int) {
            guard s.count == 4 else { throw fail("needs an NHWC input, got shape \(s)") }
            return (s[0], s[1], s[2], s[3])
        }
        switch step.kind {
        case let .conv(a, _, _, _, ks):
            let g = try convGeometry(a, kernelShape: ks, input: ins[0], op: op.name)
            let out = [g.batch, g.outH, g.outW, g.outC]
            if ins.count == 2, ins[1] != out { throw fail("residual has shape \(ins[1]), the convolution gives \(out)") }
            return out
        case let .dense(_, _, _, inF, outF):
            guard ins[0].count == 2, ins[0][1] == inF else { throw fail("input has shape \(ins[0]), expected [N, \(inF)]") }
            return [ins[0][0], outF]
        case .add:
            guard ins[0] == ins[1] else { throw fail("operands have shapes \(ins[0]) and \(ins[1])") }
            return ins[0]
        case .maxPool(let a), .avgPool(let a):
            let g = try poolGeometry(a, input: ins[0], op: op.name)
            return [g.batch, g.outH, g.outW, g.channels]
        case .globalAvgPool:
            let (n, _, _, c) = try nhwc(ins[0])
            return [n, c]
        case .softmax, .relu:
            guard !ins[0].isEmpty else { throw fail("needs a tensor of rank ≥ 1") }
            return ins[0]
        case .transpose(let perm):
            guard perm.count == ins[0].count else { throw fail("permutation \(perm) does not fit shape \(ins[0])") }
            return perm.map { ins[0][$0] }
        case .flatten:
            guard let n = ins[0].first else { throw fail("needs a batch dimension") }
            guard let features = Self.elementCount(Array(ins[0].dropFirst())) else {
                throw fail("flattening \(ins[0]) gives more than the limit of \(Self.maximumValueElements) elements")
            }
            return [n, features]
        case let .pad(p, values):
            let (n, h, w, c) = try nhwc(ins[0])
            if let values, values.withFloats({ $0.count }) != c { throw fail("pad values do not match \(c) channels") }
            return [n, h + p.top + p.bottom, w + p.left + p.right, c]
        }
    }

    func convGeometry(_ a: Conv2DAttributes, kernelShape ks: [Int], input s: [Int], op: String) throws(RuntimeError) -> ConvGeometry {
        guard s.count == 4 else { throw RuntimeError(.badInput, op: op, "needs an NHWC input, got shape \(s)") }
        guard s[3] == ks[2] else { throw RuntimeError(.badInput, op: op, "input has \(s[3]) channels, the kernel \(ks) expects \(ks[2])") }
        let (t, b) = a.padding.amounts(size: s[1], kernel: a.kernelH, stride: a.strideH, dilation: a.dilationH, vertical: true)
        let (l, r) = a.padding.amounts(size: s[2], kernel: a.kernelW, stride: a.strideW, dilation: a.dilationW, vertical: false)
        do {
            return try ConvGeometry(batch: s[0], inH: s[1], inW: s[2], inC: s[3], outC: ks[3], kernelH: ks[0], kernelW: ks[1],
                                    strideH: a.strideH, strideW: a.strideW, dilationH: a.dilationH, dilationW: a.dilationW,
                                    padTop: t, padBottom: b, padLeft: l, padRight: r)
        } catch {
            throw RuntimeError(.badInput, op: op, error.message)
        }
    }

    func poolGeometry(_ a: Pool2DAttributes, input s: [Int], op: String) throws(RuntimeError) -> PoolGeometry {
        guard s.count == 4 else { throw RuntimeError(.badInput, op: op, "needs an NHWC input, got shape \(s)") }
        let (t, b) = a.padding.amounts(size: s[1], kernel: a.kernelH, stride: a.strideH, vertical: true)
        let (l, r) = a.padding.amounts(size: s[2], kernel: a.kernelW, stride: a.strideW, vertical: false)
        do {
            return try PoolGeometry(batch: s[0], inH: s[1], inW: s[2], channels: s[3], kernelH: a.kernelH, kernelW: a.kernelW,
                                    strideH: a.strideH, strideW: a.strideW, padTop: t, padBottom: b, padLeft: l, padRight: r)
        } catch {
            throw RuntimeError(.badInput, op: op, error.message)
        }
    }
}

func describeDims(_ shape: [Int64]) -> String {
    "[" + shape.map { $0 < 0 ? "?" : String($0) }.joined(separator: ", ") + "]"
}

/// A mutex for the model's lazily packed weights (plans may be made on several threads at once).
final class ModelLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}
