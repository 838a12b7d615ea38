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
        let shape = context.inputs[0], perm = perm
        if context.kernels == .reference {
            return PlannedKernel { x, o, _ in ReferenceKernels.transpose(input: x(0), output: o, shape: shape, perm: perm) }
        }
        return PlannedKernel { x, o, _ in FastKernels.transpose(input: x(0), output: o, shape: shape, perm: perm) }
    }
}
