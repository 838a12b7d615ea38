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
    /// Floats of the arena (all intermediate values) and of the kernels' workspace.
    public var arenaFloats: Int { memory.arenaFloats }
    public private(set) var workspaceFloats: Int

    /// When true, `run` adds each op's wall time (seconds) to `opSeconds`, in op order.
    public var profiling = false
    public private(set) var opSeconds: [Double]

    private let ops: [PlannedOp]
    private let memory: MemoryPlan
    private let arena: AlignedFloatBuffer
    private var workspace: AlignedFloatBuffer
    private var plannedThreads: Int
    private var inputPointer: UnsafePointer<Float>?

    /// One op with everything resolved for this input shape.
    struct PlannedOp {
        var step: Int
        var inputs: [Int]
        var output: Int
        var kind: Kind
        enum Kind {
            case conv(ConvGeometry, PackedConvWeights, kernel: TensorPayload, bias: TensorPayload, relu: Bool)
            case dense(kernel: TensorPayload, bias: TensorPayload, batch: Int, inFeatures: Int, outFeatures: Int,
                       relu: Bool, softmax: Bool)
            case add(count: Int, relu: Bool)
            case maxPool(PoolGeometry)
            case avgPool(PoolGeometry)
            case globalAvgPool(batch: Int, height: Int, width: Int, channels: Int)
            case softmax(rows: Int, columns: Int)
            case relu(count: Int)
            case copy(count: Int)
            case transpose(shape: [Int], perm: [Int])
            case pad(PadGeometry, values: TensorPayload?)
        }
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

        var ops: [PlannedOp] = []
        ops.reserveCapacity(steps.count)
        for (index, step) in steps.enumerated() {
            let op = step.record
            let ins = op.inputs.map { shapes[$0] ?? [] }
            let count = (shapes[op.output] ?? []).reduce(1, *)
            let kind: PlannedOp.Kind
            switch step.kind {
            case let .conv(a, kernel, packed, bias, ks):
                let g = try model.convGeometry(a, kernelShape: ks, input: ins[0], op: op.name)
                guard packed.matches(g) || kernels == .reference else {
                    throw RuntimeError(.internal, op: op.name, "weights packed for \(packed.algorithm) do not fit \(g)")
                }
                let weights = kernels == .fast
                    ? model.convWeights(step: index, packed: packed, kernel: kernel, geometry: g) : packed
                kind = .conv(g, weights, kernel: kernel, bias: bias, relu: a.activation == .relu)
            case let .dense(act, kernel, bias, inF, outF):
                kind = .dense(kernel: kernel, bias: bias, batch: ins[0][0], inFeatures: inF, outFeatures: outF,
                              relu: act == .relu, softmax: act == .softmax)
            case .add(let act):
                kind = .add(count: count, relu: act == .relu)
            case .maxPool(let a):
                kind = .maxPool(try model.poolGeometry(a, input: ins[0], op: op.name))
            case .avgPool(let a):
                kind = .avgPool(try model.poolGeometry(a, input: ins[0], op: op.name))
            case .globalAvgPool:
                kind = .globalAvgPool(batch: ins[0][0], height: ins[0][1], width: ins[0][2], channels: ins[0][3])
            case .softmax:
                let columns = ins[0].last ?? 1
                kind = .softmax(rows: columns == 0 ? 0 : count / columns, columns: columns)
            case .relu:
                kind = .relu(count: count)
            case .flatten:
                kind = .copy(count: count)
            case .transpose(let perm):
                kind = .transpose(shape: ins[0], perm: perm)
            case let .pad(p, values):
                let s = ins[0]
                guard s.count == 4 else { throw RuntimeError(.badInput, op: op.name, "needs an NHWC input, got shape \(s)") }
                let g: PadGeometry
                do {
                    g = try PadGeometry(batch: s[0], inH: s[1], inW: s[2], channels: s[3], padTop: p.top,
                                        padBottom: p.bottom, padLeft: p.left, padRight: p.right)
                } catch {
                    throw RuntimeError(.badInput, op: op.name, error.message)
                }
                kind = .pad(g, values: values)
            }
            ops.append(PlannedOp(step: index, inputs: op.inputs, output: op.output, kind: kind))
        }
        self.ops = ops

        // Lifetimes, and which outputs may take over an input's buffer.
        var lastUse = [Int](repeating: -1, count: frozen.valueNames.count)
        for (i, step) in steps.enumerated() { for v in step.record.inputs { lastUse[v] = i } }
        for v in outputValues { lastUse[v] = steps.count }
        var values = (0..<frozen.valueNames.count).map { v in
            MemoryPlan.Value(floats: (shapes[v] ?? []).reduce(1, *), firstStep: -1, lastStep: lastUse[v],
                             reuses: nil, inArena: v != inputValue && shapes[v] != nil)
        }
        for (i, planned) in ops.enumerated() {
            let op = steps[i].record
            values[op.output].firstStep = i
            values[op.output].lastStep = max(values[op.output].lastStep, i)
            // Inputs this op may write its output over: it is their last reader, they are the same size, and they
            // are neither the model's input nor one of its outputs.
            let candidates: [Int]
            switch planned.kind {
            case .conv:
                // The residual, accumulated in place; never when it is also the convolution's input (the
                // kernels read the input while writing the output).
                candidates = op.inputs.count == 2 && op.inputs[1] != op.inputs[0] ? [op.inputs[1]] : []
            case .add: candidates = op.inputs
            case .relu, .softmax, .copy: candidates = [op.inputs[0]]
            default: candidates = []
            }
            if let r = candidates.first(where: { r in
                lastUse[r] == i && r != inputValue && !outputValues.contains(r)
                    && values[r].floats == values[op.output].floats && values[r].inArena
            }) {
                values[op.output].reuses = r
            }
        }
        memory = MemoryPlan(values: values)
        arena = AlignedFloatBuffer(floats: memory.arenaFloats)
        arena.prefault()
        plannedThreads = kernelThreads()
        workspaceFloats = Self.workspaceNeed(ops, kernels: kernels)
        workspace = AlignedFloatBuffer(floats: workspaceFloats)
        workspace.prefault()
        opSeconds = [Double](repeating: 0, count: ops.count)
    }

    /// The largest workspace any op needs with the kernels' current thread count.
    private static func workspaceNeed(_ ops: [PlannedOp], kernels: KernelChoice) -> Int {
        guard kernels == .fast else { return 0 }
        var need = 0
        for op in ops {
            if case let .conv(g, packed, _, _, _) = op.kind {
                need = max(need, FastKernels.convWorkspaceFloats(for: g, algorithm: packed.algorithm))
            }
        }
        return need
    }

    /// The buffer of value `v` during a run.
    private func pointer(_ v: Int) -> UnsafeMutablePointer<Float> {
        if let offset = memory.offsets[v] { return arena.floats + offset }
        // The model input: read only, never written (no op may write over it).
        return UnsafeMutablePointer(mutating: inputPointer!)
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
        inputPointer = base
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
            UnsafeBufferPointer(start: pointer(port.value), count: (shapes[port.value] ?? []).reduce(1, *))
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
        let x = UnsafePointer(pointer(planned.inputs[0]))
        let o = pointer(planned.output)
        let reference = kernels == .reference
        switch planned.kind {
        case let .conv(g, packed, kernel, bias, relu):
            let residual = planned.inputs.count == 2 ? UnsafePointer(pointer(planned.inputs[1])) : nil
            bias.withFloats { b in
                if reference {
                    kernel.withFloats { w in
                        ReferenceKernels.conv2d(input: x, weightsHWIO: w.baseAddress!, bias: b.baseAddress,
                                                residual: residual, output: o, geometry: g, relu: relu)
                    }
                } else {
                    FastKernels.conv2d(input: x, weights: packed, bias: b.baseAddress, residual: residual,
                                       output: o, geometry: g, relu: relu,
                                       workspace: UnsafeMutableBufferPointer(start: workspace.floats, count: workspaceFloats))
                }
            }
        case let .dense(kernel, bias, n, inF, outF, relu, softmax):
            kernel.withFloats { w in
                bias.withFloats { b in
                    if reference {
                        ReferenceKernels.dense(input: x, weights: w.baseAddress!, bias: b.baseAddress, output: o,
                                               batch: n, inFeatures: inF, outFeatures: outF, relu: relu)
                    } else {
                        FastKernels.dense(input: x, weights: w.baseAddress!, bias: b.baseAddress, output: o,
                                          batch: n, inFeatures: inF, outFeatures: outF, relu: relu)
                    }
                }
            }
            if softmax { FastKernels.softmax(input: o, output: o, rows: n, columns: outF) }
        case let .add(count, relu):
            let y = UnsafePointer(pointer(planned.inputs[1]))
            if reference {
                ReferenceKernels.add(x, y, output: o, count: count, relu: relu)
            } else {
                FastKernels.add(x, y, output: o, count: count, relu: relu)
            }
        case .maxPool(let g):
            if reference {
                ReferenceKernels.maxPool2d(input: x, output: o, geometry: g)
            } else {
                FastKernels.maxPool2d(input: x, output: o, geometry: g)
            }
        case .avgPool(let g):
            if reference {
                ReferenceKernels.avgPool2d(input: x, output: o, geometry: g)
            } else {
                FastKernels.avgPool2d(input: x, output: o, geometry: g)
            }
        case let .globalAvgPool(n, h, w, c):
            if reference {
                ReferenceKernels.globalAvgPool(input: x, output: o, batch: n, height: h, width: w, channels: c)
            } else {
                FastKernels.globalAvgPool(input: x, output: o, batch: n, height: h, width: w, channels: c)
            }
        case let .softmax(rows, columns):
            if reference {
                ReferenceKernels.softmax(input: x, output: o, rows: rows, columns: columns)
            } else {
                FastKernels.softmax(input: x, output: o, rows: rows, columns: columns)
            }
        case .relu(let count):
            FastKernels.relu(input: x, output: o, count: count)
        case .copy(let count):
            if x != UnsafePointer(o) { o.update(from: x, count: count) }  // flatten: nothing to do in place
        case let .transpose(shape, perm):
            transpose(x, shape: shape, perm: perm, into: o)
        case let .pad(g, values):
            if let values {
                values.withFloats { v in FastKernels.pad(input: x, output: o, geometry: g, channelValues: v.baseAddress) }
            } else {
                FastKernels.pad(input: x, output: o, geometry: g, channelValues: nil)
            }
        }
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// Permutes axes: output axis i is input axis perm[i]. Walks the output in order with a carried index.
func transpose(_ input: UnsafePointer<Float>, shape: [Int], perm: [Int], into output: UnsafeMutablePointer<Float>) {
    let rank = shape.count
    var inStrides = [Int](repeating: 1, count: rank)
    for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
    let outShape = perm.map { shape[$0] }
    let step = perm.map { inStrides[$0] }
    let count = shape.reduce(1, *)
    guard count > 0 else { return }
    var index = [Int](repeating: 0, count: rank)
    var src = 0
    for o in 0..<count {
        output[o] = input[src]
        var axis = rank - 1
        while axis >= 0 {
            index[axis] += 1
            src += step[axis]
            if index[axis] < outShape[axis] { break }
            src -= step[axis] * outShape[axis]
            index[axis] = 0
            axis -= 1
        }
    }
}
