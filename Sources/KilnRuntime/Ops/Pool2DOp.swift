import KilnFormat
import KilnKernels

/// MaxPool2D (padded cells never win) and AvgPool2D (padded cells not counted: Keras/TF semantics) over kH×kW
/// windows of an NHWC input; the two share their attributes and geometry.
struct Pool2DOp: RuntimeOp {
    let attributes: Pool2DAttributes
    let isMax: Bool

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...0)
        attributes = try decodeAttributes { () throws(AttributeError) in try Pool2DAttributes(decoding: record.attributes) }
        isMax = record.opcode == .maxPool2d
    }

    func geometry(input s: [Int]) throws(RuntimeError) -> PoolGeometry {
        let (n, h, w, c) = try nhwc(s)
        let a = attributes
        let (t, b) = a.padding.amounts(size: h, kernel: a.kernelH, stride: a.strideH, vertical: true)
        let (l, r) = a.padding.amounts(size: w, kernel: a.kernelW, stride: a.strideW, vertical: false)
        return try KilnRuntime.geometry { () throws(KernelGeometryError) in
            try PoolGeometry(batch: n, inH: h, inW: w, channels: c, kernelH: a.kernelH, kernelW: a.kernelW,
                             strideH: a.strideH, strideW: a.strideW, padTop: t, padBottom: b, padLeft: l, padRight: r)
        }
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        let g = try geometry(input: inputs[0])
        return [g.batch, g.outH, g.outW, g.channels]
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int { output.reduce(1, *) * attributes.kernelH * attributes.kernelW }

    var detail: String {
        let a = attributes
        var text = "\(a.kernelH)x\(a.kernelW)/\(a.strideH)"
        if case let .explicit(t, b, l, r) = a.padding, t + b + l + r > 0 { text += " pad \(t),\(b),\(l),\(r)" }
        return text
    }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let g = try geometry(input: context.inputs[0])
        switch (isMax, context.kernels) {
        case (true, .fast): return PlannedKernel { io in FastKernels.maxPool2d(input: io.input(0), output: io.output, geometry: g) }
        case (true, .reference): return PlannedKernel { io in ReferenceKernels.maxPool2d(input: io.input(0), output: io.output, geometry: g) }
        case (false, .fast): return PlannedKernel { io in FastKernels.avgPool2d(input: io.input(0), output: io.output, geometry: g) }
        case (false, .reference): return PlannedKernel { io in ReferenceKernels.avgPool2d(input: io.input(0), output: io.output, geometry: g) }
        }
    }
}
