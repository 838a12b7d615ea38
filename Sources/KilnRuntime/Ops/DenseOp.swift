import KilnFormat
import KilnKernels

/// y = act(x · W + b), x `[N, in]`; tensors W `[in, out]` (used as stored) and b `[out]`. A 1.0 bundle's Dense may
/// end in a softmax over each row (`DenseAttributes.softmax`); later bundles write a Softmax op instead.
struct DenseOp: RuntimeOp {
    let attributes: DenseAttributes
    let kernel: TensorPayload
    let bias: TensorPayload
    let inFeatures: Int, outFeatures: Int

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 2...2)
        attributes = try decodeAttributes { () throws(AttributeError) in try DenseAttributes(decoding: record.attributes) }
        let kernel = tensors[0], bias = tensors[1]
        guard kernel.shape.count == 2, kernel.shape.allSatisfy({ $0 >= 1 }) else {
            throw RuntimeError(.badBundle, "kernel '\(kernel.name)' has shape \(kernel.shape), expected [in, out]")
        }
        guard bias.shape == [kernel.shape[1]] else {
            throw RuntimeError(.badBundle, "bias '\(bias.name)' has shape \(bias.shape), expected [\(kernel.shape[1])]")
        }
        self.kernel = kernel.payload
        self.bias = bias.payload
        inFeatures = kernel.shape[0]
        outFeatures = kernel.shape[1]
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        guard inputs[0].count == 2, inputs[0][1] == inFeatures else {
            throw RuntimeError(.badInput, "input has shape \(inputs[0]), expected [N, \(inFeatures)]")
        }
        return [inputs[0][0], outFeatures]
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int { 2 * output.reduce(1, *) * inFeatures }

    var detail: String {
        attributes.softmax ? "+softmax" : activationDetail(attributes.activation)
    }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let n = context.inputs[0][0], inF = inFeatures, outF = outFeatures
        let activation = attributes.activation, softmax = attributes.softmax
        let kernel = kernel, bias = bias
        let reference = context.kernels == .reference
        return PlannedKernel { io in
            kernel.withFloats { w in
                bias.withFloats { b in
                    if reference {
                        ReferenceKernels.dense(input: io.input(0), weights: w.baseAddress!, bias: b.baseAddress, output: io.output,
                                               batch: n, inFeatures: inF, outFeatures: outF, activation: activation)
                    } else {
                        FastKernels.dense(input: io.input(0), weights: w.baseAddress!, bias: b.baseAddress, output: io.output,
                                          batch: n, inFeatures: inF, outFeatures: outF, activation: activation)
                    }
                }
            }
            if softmax {
                if reference {
                    ReferenceKernels.softmax(input: io.output, output: io.output, rows: n, columns: outF)
                } else {
                    FastKernels.softmax(input: io.output, output: io.output, rows: n, columns: outF)
                }
            }
        }
    }
}
