import KilnFormat
import KilnKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Model {
    /// Runs the model on one batch and returns its outputs in the bundle's output order.
    ///
    /// Plans the run first (shapes, memory), so a bad input fails before any work; the caller's input is never
    /// modified. Safe to call concurrently: each call makes its own `ExecutionPlan`. To run many batches of one
    /// shape without planning and allocating each time, keep an `ExecutionPlan`.
    public func run(_ input: Tensor, kernels: KernelChoice = .fast) throws(RuntimeError) -> [Tensor] {
        let plan = try ExecutionPlan(model: self, inputShape: input.shape, kernels: kernels)
        return try plan.run(input)
    }
}

/// Everything one input shape needs, decided once: every op's geometry, the memory plan (one arena that all
/// intermediate values share, see `MemoryPlan`), and the kernels' workspace. Running it allocates nothing.
///
/// Not for concurrent use: a plan owns the memory its runs write. Make one plan per thread (they share the
/// model's packed weights).
public final class ExecutionPlan: @unchecked Sendable {
    public let model: Model
    public let inputShape: [Int]
    public let kernels: KernelChoice
    /// Shape of every value (nil for values this input never produces).
    public let shapes: [[Int]?]
    /// Bytes of the arena (all intermediate values, each of its element type), and floats of the kernels'
    /// workspace.
    public var arenaBytes: Int { memory.arenaBytes }
    public private(set) var workspaceFloats: Int

    /// When true, `run` adds each op's wall time (seconds) to `opSeconds`, in op order.
    public var profiling = false
    public private(set) var opSeconds: [Double]

    private let ops: [PlannedOp]
    private let memory: MemoryPlan
    /// Values that live in a slice of a Concat's output (see `concatViews`), by value id.
    private let views: [Int: ConcatView]
    private let arena: AlignedFloatBuffer
    private var workspace: AlignedFloatBuffer
    private var plannedThreads: Int
    private var inputPointer: UnsafeRawPointer?

    /// One op with everything resolved for this input shape.
    struct PlannedOp {
        var step: Int
        var inputs: [Int]
        var output: Int
        var kernel: PlannedKernel
    }

    /// Plans a run of `model` on inputs of `inputShape` with `kernels`. Size the kernels' threads
    /// (`setKernelThreads`) first: the workspace is sized for them.
    public init(model: Model, inputShape: [Int], kernels: KernelChoice = .fast) throws(RuntimeError) {
        self.model = model
        self.inputShape = inputShape
        self.kernels = kernels
        let shapes = try model.plan(inputShape: inputShape)
        self.shapes = shapes
        let frozen = model.frozen
        let steps = model.steps
        let inputValue = frozen.inputs[0].value
        let outputValues = Set(frozen.outputs.map(\.value))

        // Lifetimes.
        var lastUse = [Int](repeating: -1, count: frozen.valueNames.count)
        for (i, step) in steps.enumerated() { for v in step.record.inputs { lastUse[v] = i } }
        for v in outputValues { lastUse[v] = steps.count }
        func context(_ index: Int, outputRowStride: Int? = nil) -> PlanContext {
            let op = steps[index].record
            var c = PlanContext(op.opcode, inputs: op.inputs.map { shapes[$0] ?? [] }, output: shapes[op.output] ?? [],
                                kernels: kernels, inputTypes: op.inputs.map(frozen.valueType),
                                outputType: frozen.valueType(op.output), step: index, model: model)
            c.outputRowStride = outputRowStride
            return c
        }
        let views = Self.concatViews(model: model, shapes: shapes, lastUse: lastUse, kernels: kernels, context: context)
        self.views = views

        var ops: [PlannedOp] = []
        ops.reserveCapacity(steps.count)
        for (index, step) in steps.enumerated() {
            let op = step.record
            let context = context(index, outputRowStride: views[op.output]?.rowStride)
            let kernel: PlannedKernel
            do { kernel = try step.op.plan(context) } catch { throw error.naming(op.name) }
            ops.append(PlannedOp(step: index, inputs: op.inputs, output: op.output, kernel: kernel))
        }
        self.ops = ops

        // Which outputs may take over an input's buffer. A view is not a buffer of its own: its Concat's output
        // holds it, from the first view's producer on.
        var values = (0..<frozen.valueNames.count).map { v in
            MemoryPlan.Value(bytes: frozen.valueType(v).storedByteCount(shape: shapes[v] ?? []), firstStep: -1,
                             lastStep: lastUse[v], reuses: nil,
                             inArena: v != inputValue && shapes[v] != nil && views[v] == nil)
        }
        for (i, step) in steps.enumerated() {
            let op = step.record
            values[op.output].firstStep = i
            values[op.output].lastStep = max(values[op.output].lastStep, i)
            // Inputs this op may write its output over: the kernels allow it, it is their last reader, they are the
            // same size, and they are neither the model's input nor one of its outputs.
            let candidates = step.op.inPlaceInputs(op).map { op.inputs[$0] }
            if views[op.output] == nil, let r = candidates.first(where: { r in
                lastUse[r] == i && r != inputValue && !outputValues.contains(r)
                    && values[r].bytes == values[op.output].bytes && values[r].inArena
            }) {
                values[op.output].reuses = r
            }
        }
        for (v, view) in views {
            let producer = values[v].firstStep
            values[view.root].firstStep = min(values[view.root].firstStep, producer)
        }
        memory = MemoryPlan(values: values)
        arena = AlignedFloatBuffer(floats: (memory.arenaBytes + 3) / 4)
        arena.prefault()
        plannedThreads = kernelThreads()
        workspaceFloats = Self.workspaceNeed(ops, kernels: kernels)
        workspace = AlignedFloatBuffer(floats: workspaceFloats)
        workspace.prefault()
        opSeconds = [Double](repeating: 0, count: ops.count)
    }

    /// The largest workspace any op needs with the kernels' current thread count.
    private static func workspaceNeed(_ ops: [PlannedOp], kernels: KernelChoice) -> Int {
        ops.reduce(0) { max($0, $1.kernel.workspaceFloats()) }
    }

    /// The values that live in a slice of a Concat's output (written there by their producers), by value id.
    var concatViewValues: [Int] { views.keys.sorted() }

    /// The buffer of value `v` during a run.
    private func pointer(_ v: Int) -> UnsafeMutableRawPointer {
        if let offset = memory.offsets[v] { return UnsafeMutableRawPointer(arena.floats) + offset }
        if let view = views[v], let offset = memory.offsets[view.root] {
            return UnsafeMutableRawPointer(arena.floats) + offset + view.column * MemoryLayout<Float>.stride
        }
        // The model input: read only, never written (no op may write over it).
        return UnsafeMutableRawPointer(mutating: inputPointer!)
    }

    /// Runs the plan on `input` (`inputShape`, row-major) and returns pointers to the outputs in the bundle's
    /// output order. They point into the plan's arena: valid until the next run.
    public func run(input: UnsafeBufferPointer<Float>) throws(RuntimeError) -> [UnsafeBufferPointer<Float>] {
        let expected = inputShape.reduce(1, *)
        guard input.count == expected, let base = input.baseAddress else {
            throw RuntimeError(.badInput, "input has \(input.count) values for shape \(inputShape)")
        }
        if kernelThreads() != plannedThreads {
            // The kernels' threads changed since planning: size the workspace again.
            plannedThreads = kernelThreads()
            let need = Self.workspaceNeed(ops, kernels: kernels)
            if need > workspaceFloats {
                workspace = AlignedFloatBuffer(floats: need)
                workspace.prefault()
                workspaceFloats = need
            }
        }
        inputPointer = UnsafeRawPointer(base)
        defer { inputPointer = nil }
        for i in ops.indices { timed(i) }
        if let arenaOutputs { return arenaOutputs }
        return outputsNow()
    }

    /// The outputs' buffers, made once when all of them lie in the arena (returning them allocates nothing).
    private lazy var arenaOutputs: [UnsafeBufferPointer<Float>]? =
        model.frozen.outputs.allSatisfy({ memory.offsets[$0.value] != nil }) ? outputsNow() : nil

    private func outputsNow() -> [UnsafeBufferPointer<Float>] {
        model.frozen.outputs.map { port in
            UnsafeBufferPointer(start: pointer(port.value).assumingMemoryBound(to: Float.self),
                                count: (shapes[port.value] ?? []).reduce(1, *))
        }
    }

    /// Runs the plan on `input` and returns copies of the outputs.
    public func run(_ input: Tensor) throws(RuntimeError) -> [Tensor] {
        guard input.shape == inputShape else {
            throw RuntimeError(.badInput, "input has shape \(input.shape), the plan is for \(inputShape)")
        }
        guard input.values.count == input.shape.reduce(1, *) else {
            throw RuntimeError(.badInput, "input has \(input.values.count) values for shape \(input.shape)")
        }
        var outputs: [UnsafeBufferPointer<Float>] = []
        try input.values.withUnsafeBufferPointer { (values) throws(RuntimeError) in
            outputs = try run(input: values)
        }
        return zip(model.frozen.outputs, outputs).map { port, values in
            Tensor(shape: shapes[port.value] ?? [], values: Array(values))
        }
    }

    private func timed(_ i: Int) {
        let start = profiling ? monotonicSeconds() : 0
        execute(ops[i])
        if profiling { opSeconds[i] += monotonicSeconds() - start }
    }

    /// Names of the ops, in the order of `opSeconds`.
    public var opNames: [String] { ops.map { model.steps[$0.step].record.name } }

    private func execute(_ planned: PlannedOp) {
        let workspace = UnsafeMutableBufferPointer(start: workspace.floats, count: workspaceFloats)
        planned.kernel.run(OpBuffers(rawInput: { UnsafeRawPointer(self.pointer(planned.inputs[$0])) },
                                     rawOutput: pointer(planned.output), workspace: workspace))
    }
}

/// A value that lives in a slice of a Concat's output: its rows (last-axis vectors) start at `column` of the rows
/// of `root` (the outermost Concat's output, a buffer of the arena), `rowStride` floats apart.
struct ConcatView {
    var root: Int
    var column: Int
    var rowStride: Int
}

extension ExecutionPlan {
    /// The Concat inputs whose producers write straight into their slice of the Concat's output, so that the Concat
    /// copies nothing for them (DenseNet's layers, each adding its channels to the block's growing concatenation).
    ///
    /// A value becomes a view when the Concat is its only reader (counted with repetition), it is neither the
    /// model's input nor an output, and its producer's kernels write strided outputs for this plan
    /// (`RuntimeOp.writesStridedOutput`: the fast kernels of convolutions, and Concat itself, so that a Concat of
    /// Concats nests). Concats are visited last first, so that a nested one's inputs point into the outermost
    /// buffer. Only fast plans: the reference kernels write contiguous outputs, and the reference plan copies.
    static func concatViews(model: Model, shapes: [[Int]?], lastUse: [Int], kernels: KernelChoice,
                            context: (Int, Int?) -> PlanContext) -> [Int: ConcatView] {
        guard kernels == .fast else { return [:] }
        let frozen = model.frozen, steps = model.steps
        let inputValue = frozen.inputs[0].value
        let outputValues = Set(frozen.outputs.map(\.value))
        var readers = [Int](repeating: 0, count: frozen.valueNames.count)
        var producer = [Int?](repeating: nil, count: frozen.valueNames.count)
        for (i, step) in steps.enumerated() {
            for v in step.record.inputs { readers[v] += 1 }
            producer[step.record.output] = i
        }
        var views: [Int: ConcatView] = [:]
        for (i, step) in steps.enumerated().reversed() where step.record.opcode == .concat {
            let o = step.record.output
            guard let outShape = shapes[o], let width = outShape.last else { continue }
            let base = views[o] ?? ConcatView(root: o, column: 0, rowStride: width)
            var column = base.column
            for v in step.record.inputs {
                let channels = shapes[v]?.last ?? 0
                defer { column += channels }
                guard readers[v] == 1, lastUse[v] == i, v != inputValue, !outputValues.contains(v), views[v] == nil,
                      frozen.valueType(v) == .float32, let p = producer[v],
                      steps[p].op.writesStridedOutput(context(p, base.rowStride)) else { continue }
                views[v] = ConcatView(root: base.root, column: column, rowStride: base.rowStride)
            }
        }
        return views
    }
}
