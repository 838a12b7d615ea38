import KilnFormat
import KilnKernels

/// `[N, ...]` → `[N, product of the rest]`, row-major (NHWC order, as Keras' Flatten). A copy, or nothing when
/// the plan gives the output the input's buffer.
struct FlattenOp: RuntimeOp {
    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...0)
        try requireNoAttributes(record)
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        guard let n = inputs[0].first else { throw RuntimeError(.badInput, "needs a batch dimension") }
        guard let features = Model.elementCount(Array(inputs[0].dropFirst())) else {
            throw RuntimeError(.badInput, "flattening \(inputs[0]) gives more than the limit of \(Model.maximumValueElements) elements")
        }
        return [n, features]
    }

    func inPlaceInputs(_ record: OpRecord) -> [Int] { [0] }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let count = context.output.reduce(1, *)
        // The same for both kernel sets: a copy has nothing to get wrong differently.
        return PlannedKernel { io in
            if io.input(0) != UnsafePointer(io.output) { io.output.update(from: io.input(0), count: count) }
        }
    }
}
