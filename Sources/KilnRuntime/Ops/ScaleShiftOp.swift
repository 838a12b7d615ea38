import KilnFormat
import KilnKernels

/// y[..., c] = act(x[..., c] · scale[c] + shift[c]), channels on the last axis, any rank ≥ 1: a per-channel affine
/// (a BatchNormalization no convolution or dense layer absorbs; issue 17's per-channel scale-and-shift).
struct ScaleShiftOp: RuntimeOp {
    let activation: Activation
    let scale: [Float]
    let shift: [Float]

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 2...2)
        activation = try decodeAttributes { () throws(AttributeError) in
            try ActivationAttributes(decoding: record.attributes, op: .scaleShift).activation
        }
        let (s, t) = (tensors[0], tensors[1])
        guard s.shape.count == 1, t.shape == s.shape, s.shape[0] >= 1 else {
            throw RuntimeError(.badBundle, "scale and shift must be two vectors of one length, have shapes \(s.shape) and \(t.shape)")
        }
        scale = s.payload.floats
        shift = t.payload.floats
        guard scale.allSatisfy(\.isFinite), shift.allSatisfy(\.isFinite) else {
            throw RuntimeError(.badBundle, "scale or shift holds NaN or infinite values")
        }
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        guard let c = inputs[0].last else { throw RuntimeError(.badInput, "needs a tensor of rank ≥ 1") }
        guard c == scale.count else {
            throw RuntimeError(.badInput, "input has \(c) channels on its last axis, scale and shift have \(scale.count)")
        }
        return inputs[0]
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int { output.reduce(1, *) * (2 + activation.flopsPerElement) }

    var detail: String { "\(scale.count) channels" + (activation.isIdentity ? "" : " " + activationDetail(activation)) }

    func inPlaceInputs(_ record: OpRecord) -> [Int] { [0] }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let channels = scale.count, rows = context.output.reduce(1, *) / channels
        let (scale, shift, activation) = (scale, shift, activation)
        if context.kernels == .reference {
            return PlannedKernel { io in
                ReferenceKernels.scaleShift(input: io.input(0), output: io.output, rows: rows, scale: scale, shift: shift,
                                            activation: activation)
            }
        }
        return PlannedKernel { io in
            FastKernels.scaleShift(input: io.input(0), output: io.output, rows: rows, scale: scale, shift: shift,
                                   activation: activation)
        }
    }
}
