import KilnFormat
import KilnKernels

/// Mean or sum over some axes of a tensor of any rank (`ReduceAttributes`), the reduced axes kept as 1 or dropped:
/// ONNX ReduceMean/ReduceSum where they are not a global average pool over H and W.
struct ReduceOp: RuntimeOp {
    let attributes: ReduceAttributes

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...0)
        attributes = try decodeAttributes { () throws(AttributeError) in try ReduceAttributes(decoding: record.attributes) }
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        guard let shape = attributes.outputShape(inputs[0]) else {
            throw RuntimeError(.badInput, "reduces axes \(attributes.axes) of a rank-\(inputs[0].count) input \(inputs[0])")
        }
        return shape
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int { inputs[0].reduce(1, *) }

    var detail: String { "\(attributes.function) over \(attributes.axes)\(attributes.keepDims ? " keepdims" : "")" }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let shape = context.inputs[0], axes = attributes.axes, mean = attributes.function == .mean
        if context.kernels == .reference {
            return PlannedKernel { io in ReferenceKernels.reduce(input: io.input(0), output: io.output, shape: shape, axes: axes, mean: mean) }
        }
        return PlannedKernel { io in FastKernels.reduce(input: io.input(0), output: io.output, shape: shape, axes: axes, mean: mean) }
    }
}
