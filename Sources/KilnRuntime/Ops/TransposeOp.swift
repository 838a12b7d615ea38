import KilnFormat
import KilnKernels

/// Permutes the axes: output axis i is input axis perm[i] (layout changes from NCHW sources).
struct TransposeOp: RuntimeOp {
    let perm: [Int]

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...0)
        perm = try decodeAttributes { () throws(AttributeError) in try decodePermutation(record.attributes) }
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        guard perm.count == inputs[0].count else {
            throw RuntimeError(.badInput, "permutation \(perm) does not fit shape \(inputs[0])")
        }
        return perm.map { inputs[0][$0] }
    }

    var detail: String { "\(perm)" }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let shape = context.inputs[0], perm = perm
        if context.kernels == .reference {
            return PlannedKernel { io in ReferenceKernels.transpose(input: io.input(0), output: io.output, shape: shape, perm: perm) }
        }
        return PlannedKernel { io in FastKernels.transpose(input: io.input(0), output: io.output, shape: shape, perm: perm) }
    }
}
