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
    /// False when loaded with `winograd: false`: every convolution direct (GEMM), at every batch size.
    public let winograd: Bool

    /// A validated op: its record and its definition (decoded attributes, packed weights).
    struct Step {
        var record: OpRecord
        var op: any RuntimeOp
    }

    /// The weights a plan of `geometry` runs step `index` with: the load-time packing, or one for larger batches.
    func convWeights(step index: Int, packed: PackedConvWeights, kernel: TensorPayload,
                     geometry: ConvGeometry) -> PackedConvWeights {
        guard winograd, let better = ConvAlgorithm.forLargerBatch(packed.algorithm, geometry: geometry) else {
            return packed
        }
        return largerBatchLock.locked {
            // A step has one larger-batch algorithm (its load-time one fixes it): made once, then reused.
            if let made = largerBatchWeights[index] { return made }
            let made = PrepackedConvWeights.$current.withValue(prepacked.isEmpty ? nil : prepacked) {
                kernel.withFloats {
                    packConvWeightsHWIO($0.baseAddress!, kernelH: packed.kernelH, kernelW: packed.kernelW,
                                        inC: packed.inC, outC: packed.outC, algorithm: better)
                }
            }
            largerBatchWeights[index] = made
            return made
        }
    }

    /// The larger-batch packing a plan made for step `index`, if any.
    func largerBatchPacking(step index: Int) -> PackedConvWeights? {
        largerBatchLock.locked { largerBatchWeights[index] }
    }

    /// Loads and validates the bundle at `path` (mapped, not copied).
    public convenience init(contentsOf path: String, winograd: Bool = true) throws {
        try self.init(bundle: Bundle(contentsOf: path), winograd: winograd)
    }

    /// Validates every op and packs the convolution weights — or borrows them from the bundle's PACK section where
    /// it was written for this build's kernels (`kiln convert --pack`). `winograd: false` keeps every convolution
    /// direct (GEMM): slower on 3×3 layers, and rounded like a plain dot product (kiln-run's `--exact`).
    public init(bundle: Bundle, winograd: Bool = true) throws(RuntimeError) {
        self.bundle = bundle
        self.winograd = winograd
        let model = bundle.model
        var notes: [String] = []
        var packedByTensor: [Int: [PackedLayouts.Entry]] = [:]
        if let packed = bundle.packedLayouts {
            if let own = PrepackedConvWeights.layoutKey, packed.key == own {
                // The entries used at load are checked now, side by side on the kernels' threads; the others (for
                // larger batches) when a plan first borrows them. A damaged entry is not used.
                let entries = packed.entries
                var intact = [Bool](repeating: true, count: entries.count)
                intact.withUnsafeMutableBufferPointer { ok in
                    let ok = ok
                    parallelFor(entries.count) { i in
                        if entries[i].use == 0 { ok[i] = entries[i].verify() }
                    }
                }
                for (e, ok) in zip(entries, intact) {
                    if ok {
                        packedByTensor[e.tensor, default: []].append(e)
                    } else {
                        let name = e.tensor < model.tensors.count ? model.tensors[e.tensor].name : "#\(e.tensor)"
                        notes.append("the PACK section's entry for tensor '\(name)' (layout \(e.layout)) fails its checksum (damaged): not used, packed at load")
                    }
                }
            } else {
                let own = PrepackedConvWeights.layoutKey.map { "'\($0)'" } ?? "none (portable kernels)"
                notes.append("the bundle's PACK section is for kernels '\(packed.key)', this build's are \(own): ignored, weights packed at load")
            }
        }
        var prepacked = PrepackedConvWeights()
        let validated = ConvAlgorithm.$winogradAllowed.withValue(winograd) {
            Result { () throws(RuntimeError) in
                try model.ops.map { op throws(RuntimeError) in
                    try Self.validate(op, tensors: model.tensors, packed: packedByTensor, prepacked: &prepacked)
                }
            }
        }
        self.steps = try validated.get()
        self.prepacked = prepacked
        if !packedByTensor.isEmpty {
            let packedHere = steps.filter { ($0.op as? Conv2DOp)?.plainPacking.map { !$0.isBorrowed && $0.algorithm != .portable } ?? false }.count
            if packedHere > 0 {
                notes.append("\(packedHere) convolutions were not in the bundle's PACK section in the layout this build chose for them: packed at load")
            }
        }
        self.notes = notes
        try Self.checkRunnable(model)
    }

    /// What loading noticed and worked around (a PACK section written for other kernels, layers packed anyway):
    /// the front ends print these on stderr.
    public let notes: [String]
    /// The bundle's packed weights this build reads, by the address of their source (for larger-batch plans too).
    let prepacked: PrepackedConvWeights

    /// Refuses a model this runtime cannot run, whatever its ops: other than one input, an input of another rank than
    /// 2 (`[N, F]`) or 4 (an image), values of another element type than float32. Loading checks it; `kiln convert`
    /// calls it on the model it is about to write, so that it never writes a bundle the runtime then refuses.
    public static func checkRunnable(_ model: FrozenModel) throws(RuntimeError) {
        guard model.inputs.count == 1 else {
            let names = model.inputs.map { "'\($0.name)'" }.joined(separator: ", ")
            throw RuntimeError(.unsupported, "the model has \(model.inputs.count) inputs (\(names)); the runtime runs models with one input")
        }
        for p in model.inputs where p.shape.count != 4 && p.shape.count != 2 {
            throw RuntimeError(.unsupported, "input '\(p.name)' has rank \(p.shape.count); rank 2 or 4 (NHWC) expected")
        }
        if let (v, t) = model.otherValueTypes.min(by: { $0.key < $1.key }) {
            throw RuntimeError(.unsupported, "value '\(model.valueNames[v])' is \(t): this runtime computes float32 values only")
        }
    }

    static func validate(_ op: OpRecord, tensors: [TensorRecord], packed: [Int: [PackedLayouts.Entry]] = [:],
                         prepacked: inout PrepackedConvWeights) throws(RuntimeError) -> Step {
        // Reduced-precision weights are widened once, here, into float32 owned by the model.
        let records = op.tensors.map { index -> TensorRecord in
            var t = tensors[index]
            if t.elementType != .float32 {
                t.payload = .owned(t.decodedFloats())
                t.elementType = .float32
            }
            return t
        }
        // This op's tensors that the PACK section holds, by the address the op's packer will be handed.
        var mine = PrepackedConvWeights()
        // Only convolution kernels (their op keeps the payload, so no other tensor can later reuse its address).
        for (index, record) in zip(op.tensors, records).prefix(op.opcode == .conv2d ? 1 : 0) {
            guard let entries = packed[index] else { continue }
            // The payload outlives the op (mapped, or an array the op keeps), so its address stays valid.
            guard let base = record.payload.withFloats({ UnsafeRawPointer($0.baseAddress) }) else { continue }
            for e in entries {
                // Entries for larger batches were not checked at load: checked when first borrowed.
                let entry = e
                let check: (@Sendable () -> Bool)? = e.use == 0 ? nil : { @Sendable in entry.verify() }
                mine.add(source: base, code: e.layout, packed: e.bytes, check: check)
                prepacked.add(source: base, code: e.layout, packed: e.bytes, check: check)
            }
        }
        let made = PrepackedConvWeights.$current.withValue(mine.isEmpty ? nil : mine) {
            Result { () throws(RuntimeError) in try op.opcode.definition.init(op, tensors: records) }
        }
        do {
            return Step(record: op, op: try made.get())
        } catch {
            throw error.naming(op.name)
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
        do { return try step.op.outputShape(ins) } catch { throw error.naming(step.record.name) }
    }
}

extension RuntimeError {
    /// The error with `op` set, unless it names one already.
    func naming(_ op: String) -> RuntimeError {
        var e = self
        if e.op == nil { e.op = op }
        return e
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
