import KilnFormat
import KilnKernels

/// y = the inputs side by side along the last axis (channels): inputs of one rank ≥ 2 whose other dims agree.
///
/// Usually no copy at all: the memory plan (`ExecutionPlan`) gives each input whose producer can write a strided
/// output (`writesStridedOutput`), and which nothing else reads, a view into its slice of this op's output, so
/// that the producer writes there directly; the kernel then finds that input already in place and skips it. A
/// Concat's own output may be such a view too (DenseNet's concatenations of concatenations). The reference plan
/// copies every input.
struct ConcatOp: RuntimeOp {
    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 2...65536, tensors: 0...0)
        try requireNoAttributes(record)
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        let rank = inputs[0].count
        guard rank >= 2, inputs.allSatisfy({ $0.count == rank && Array($0.dropLast()) == Array(inputs[0].dropLast()) }) else {
            throw RuntimeError(.badInput, "operands \(inputs.map { "\($0)" }.joined(separator: ", ")) differ outside the last axis")
        }
        return Array(inputs[0].dropLast()) + [inputs.reduce(0) { $0 + $1[rank - 1] }]
    }

    var detail: String { "channels" }

    func writesStridedOutput(_ context: PlanContext) -> Bool { context.kernels == .fast }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let widths = context.inputs.map { $0.last ?? 0 }
        let rows = context.output.dropLast().reduce(1, *)
        let total = context.output.last ?? 0
        let stride = context.outputRowStride ?? total
        if context.kernels == .reference {
            return PlannedKernel { io in
                ReferenceKernels.concat(inputs: widths.indices.map { io.input($0) }, widths: widths, output: io.output, rows: rows)
            }
        }
        return PlannedKernel { io in
            var column = 0
            for (k, width) in widths.enumerated() {
                let destination = io.output + column
                column += width
                // An input the memory plan placed in its slice was written there by its producer.
                if io.input(k) == UnsafePointer(destination) { continue }
                FastKernels.copyRows(io.input(k), rows: rows, width: width, to: destination, rowStride: stride)
            }
        }
    }
}
