import KilnFormat
import KilnKernels

/// Softmax over the last axis: each row `exp(x − max) / Σ exp(x − max)`.
struct SoftmaxOp: RuntimeOp {
    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...0)
        try requireNoAttributes(record)
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        guard !inputs[0].isEmpty else { throw RuntimeError(.badInput, "needs a tensor of rank ≥ 1") }
        return inputs[0]
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int { 3 * output.reduce(1, *) }

    func inPlaceInputs(_ record: OpRecord) -> [Int] { [0] }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let count = context.output.reduce(1, *), columns = context.output.last ?? 1
        let rows = columns == 0 ? 0 : count / columns
        if context.kernels == .reference {
            return PlannedKernel { io in ReferenceKernels.softmax(input: io.input(0), output: io.output, rows: rows, columns: columns) }
        }
        return PlannedKernel { io in FastKernels.softmax(input: io.input(0), output: io.output, rows: rows, columns: columns) }
    }
}
