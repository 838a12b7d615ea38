import KilnFormat
import KilnKernels

/// The same elements in the same order in another shape (`ReshapeAttributes`: 0 copies the input's dim, -1 is the
/// rest). What an importer adds so that an output has the shape its model declares (`[N, C, 1, 1]`), and around a
/// softmax over flattened axes. A copy, or nothing when the plan gives the output the input's buffer.
struct ReshapeOp: RuntimeOp {
    let attributes: ReshapeAttributes

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...0)
        attributes = try decodeAttributes { () throws(AttributeError) in try ReshapeAttributes(decoding: record.attributes) }
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        switch attributes.outputShape(inputs[0]) {
        case .success(let shape): return shape
        case .failure(let e): throw RuntimeError(.badInput, e.message)
        }
    }

    var detail: String { "\(attributes.dims.map { $0 == 0 ? "=" : $0 == -1 ? "*" : String($0) })" }

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
