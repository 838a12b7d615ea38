import KilnFormat
import KilnKernels

/// One op of the bundle's op set, defined once: a type per op code (the registry is `OpCode.definition`) that
/// decodes and validates its record at load, gives its output shape, counts its FLOPs, and plans its kernels for
/// one input shape — the fast ones and the reference ones (the test oracle) side by side.
///
/// Errors an op throws name no op: `Model` adds the op's name.
protocol RuntimeOp: Sendable {
    /// Decodes `record`'s attributes and checks them and its tensors (`tensors`, in the record's order, reduced
    /// precision already widened to float32). Called once, at load; packs weights where the op has any.
    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError)

    /// The output shape for inputs of `inputs`; throws saying what does not fit.
    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int]

    /// Floating-point operations of one run (2 per multiply-add), for `kiln inspect`.
    func flops(inputs: [[Int]], output: [Int]) -> Int

    /// The attributes in a few words for `kiln inspect` ("3x3/1 same +relu"), empty when there is nothing to say.
    var detail: String { get }

    /// Positions of the inputs the kernels may write the output over (same size, read before written).
    func inPlaceInputs(_ record: OpRecord) -> [Int]

    /// The kernels for one input shape, geometry resolved.
    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel

    /// True when the kernels `plan(context)` gives can write the output with rows (last-axis vectors)
    /// `context.outputRowStride` floats apart, into a slice of a wider value (a Concat's output).
    func writesStridedOutput(_ context: PlanContext) -> Bool
}

extension RuntimeOp {
    func flops(inputs: [[Int]], output: [Int]) -> Int { 0 }
    var detail: String { "" }
    func inPlaceInputs(_ record: OpRecord) -> [Int] { [] }
    func writesStridedOutput(_ context: PlanContext) -> Bool { false }
}

/// What planning an op knows: its input and output shapes and element types, the kernels asked for, and the model
/// it belongs to (for weights packed again for larger batches; nil for an op planned on its own, as the op tests
/// do). An op picks its kernels by (element type, kernel set, algorithm); it refuses element types it has no
/// kernels for (`requireElementTypes`).
struct PlanContext {
    var opcode: OpCode
    var inputs: [[Int]]
    var output: [Int]
    var kernels: KernelChoice
    var inputTypes: [ElementType]
    var outputType: ElementType = .float32
    var step: Int = 0
    var model: Model? = nil
    /// Floats from one row (last-axis vector) of the output to the next when the output is a slice of a wider
    /// value (set only for ops whose `writesStridedOutput` said yes); nil: contiguous.
    var outputRowStride: Int? = nil

    init(_ opcode: OpCode, inputs: [[Int]], output: [Int], kernels: KernelChoice, inputTypes: [ElementType]? = nil,
         outputType: ElementType = .float32, step: Int = 0, model: Model? = nil) {
        self.opcode = opcode
        self.inputs = inputs
        self.output = output
        self.kernels = kernels
        self.inputTypes = inputTypes ?? inputs.map { _ in .float32 }
        self.outputType = outputType
        self.step = step
        self.model = model
    }

    /// Refuses values of another element type than the op's kernels take (today every kernel is float32).
    func requireElementTypes(_ supported: Set<ElementType> = [.float32]) throws(RuntimeError) {
        for t in inputTypes + [outputType] where !supported.contains(t) {
            throw RuntimeError(.unsupported, "\(opcode) has no kernels for \(t) values")
        }
    }
}

/// The buffers of one run of an op: its inputs by position, its output, the plan's workspace. Raw memory, so that
/// kernels of other element types get the same signature; the float32 kernels read it through the typed views.
struct OpBuffers {
    let rawInput: (Int) -> UnsafeRawPointer
    let rawOutput: UnsafeMutableRawPointer
    let workspace: UnsafeMutableBufferPointer<Float>

    func input(_ i: Int) -> UnsafePointer<Float> { rawInput(i).assumingMemoryBound(to: Float.self) }
    var output: UnsafeMutablePointer<Float> { rawOutput.assumingMemoryBound(to: Float.self) }
}

/// An op's kernels for one input shape. `run` allocates nothing.
struct PlannedKernel {
    /// Floats of workspace the kernels need with the kernels' current thread count.
    var workspaceFloats: () -> Int = { 0 }
    var run: (OpBuffers) -> Void
}

extension OpCode {
    /// The op's definition: every op code has exactly one (the switch is exhaustive, so a new code without a
    /// definition does not compile).
    var definition: any RuntimeOp.Type {
        switch self {
        case .conv2d: return Conv2DOp.self
        case .dense: return DenseOp.self
        case .add: return AddOp.self
        case .maxPool2d, .avgPool2d: return Pool2DOp.self
        case .globalAvgPool: return GlobalAvgPoolOp.self
        case .softmax: return SoftmaxOp.self
        case .relu, .unary: return UnaryOp.self
        case .pad: return PadOp.self
        case .flatten: return FlattenOp.self
        case .transpose: return TransposeOp.self
        case .reshape: return ReshapeOp.self
        case .reduce: return ReduceOp.self
        case .globalMaxPool: return GlobalMaxPoolOp.self
        case .scaleShift: return ScaleShiftOp.self
        case .concat: return ConcatOp.self
        }
    }
}

/// Checks an op's input and tensor counts.
func checkArity(_ record: OpRecord, inputs: ClosedRange<Int>, tensors: ClosedRange<Int>) throws(RuntimeError) {
    guard inputs.contains(record.inputs.count) else {
        throw RuntimeError(.badBundle, "\(record.opcode) has \(record.inputs.count) inputs, expected \(inputs)")
    }
    guard tensors.contains(record.tensors.count) else {
        throw RuntimeError(.badBundle, "\(record.opcode) has \(record.tensors.count) tensors, expected \(tensors)")
    }
}

/// Decodes attributes, turning an `AttributeError` into the runtime's.
func decodeAttributes<T>(_ body: () throws(AttributeError) -> T) throws(RuntimeError) -> T {
    do { return try body() } catch { throw RuntimeError(.badBundle, error.message) }
}

/// Refuses attributes on an op that takes none.
func requireNoAttributes(_ record: OpRecord) throws(RuntimeError) {
    guard record.attributes.isEmpty else {
        throw RuntimeError(.badBundle, "\(record.opcode) takes no attributes, has \(record.attributes.count)")
    }
}

/// The four dims of an NHWC shape.
func nhwc(_ s: [Int]) throws(RuntimeError) -> (n: Int, h: Int, w: Int, c: Int) {
    guard s.count == 4 else { throw RuntimeError(.badInput, "needs an NHWC input, got shape \(s)") }
    return (s[0], s[1], s[2], s[3])
}

/// A kernel-geometry error as the runtime's.
func geometry<T>(_ body: () throws(KernelGeometryError) -> T) throws(RuntimeError) -> T {
    do { return try body() } catch { throw RuntimeError(.badInput, error.message) }
}

/// " +relu", " +clamp[0, 6]": an activation for `detail`.
func activationDetail(_ a: Activation) -> String { a.isIdentity ? "" : "+\(a)" }
