import KilnFormat
import KilnKernels

/// y = act(x) elementwise, any shape: the Unary op (1.2) with its activation, and the 1.0 ReLU op (max(x, 0)).
struct UnaryOp: RuntimeOp {
    let activation: Activation

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...0)
        if record.opcode == .relu {
            try requireNoAttributes(record)
            activation = .relu
        } else {
            activation = try decodeAttributes { () throws(AttributeError) in
                try ActivationAttributes(decoding: record.attributes, op: .unary).activation
            }
        }
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        guard !inputs[0].isEmpty else { throw RuntimeError(.badInput, "needs a tensor of rank ≥ 1") }
        return inputs[0]
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int { output.reduce(1, *) * activation.flopsPerElement }

    var detail: String { "\(activation)" }

    func inPlaceInputs(_ record: OpRecord) -> [Int] { [0] }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let count = context.output.reduce(1, *), activation = activation
        if context.kernels == .reference {
            return PlannedKernel { io in ReferenceKernels.activate(input: io.input(0), output: io.output, count: count, activation: activation) }
        }
        return PlannedKernel { io in FastKernels.activate(input: io.input(0), output: io.output, count: count, activation: activation) }
    }
}
