import KilnFormat
import KilnKernels

/// `[N, H, W, C]` → `[N, C]`, the maximum over H and W (Keras' GlobalMaxPooling2D).
struct GlobalMaxPoolOp: RuntimeOp {
    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...0)
        try requireNoAttributes(record)
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        let (n, h, w, c) = try nhwc(inputs[0])
        guard h >= 1, w >= 1 else { throw RuntimeError(.badInput, "needs at least one cell, got shape \(inputs[0])") }
        return [n, c]
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int { inputs[0].reduce(1, *) }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let s = context.inputs[0]
        let (n, h, w, c) = (s[0], s[1], s[2], s[3])
        if context.kernels == .reference {
            return PlannedKernel { io in
                ReferenceKernels.globalMaxPool(input: io.input(0), output: io.output, batch: n, height: h, width: w, channels: c)
            }
        }
        return PlannedKernel { io in
            FastKernels.globalMaxPool(input: io.input(0), output: io.output, batch: n, height: h, width: w, channels: c)
        }
    }
}
