import KilnFormat
import KilnKernels

/// y = act(a + b), operands of one shape.
struct AddOp: RuntimeOp {
    let activation: Activation

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 2...2, tensors: 0...0)
        activation = try decodeAttributes { () throws(AttributeError) in
            try ActivationAttributes(decoding: record.attributes, op: .add).activation
        }
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        guard inputs[0] == inputs[1] else { throw RuntimeError(.badInput, "operands have shapes \(inputs[0]) and \(inputs[1])") }
        return inputs[0]
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int { output.reduce(1, *) }

    var detail: String { activationDetail(activation) }

    func inPlaceInputs(_ record: OpRecord) -> [Int] { [0, 1] }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let count = context.output.reduce(1, *), activation = activation
        let reference = context.kernels == .reference
        return PlannedKernel { io in
            if reference {
                ReferenceKernels.add(io.input(0), io.input(1), output: io.output, count: count, activation: activation)
            } else {
                FastKernels.add(io.input(0), io.input(1), output: io.output, count: count, activation: activation)
            }
        }
    }
}
