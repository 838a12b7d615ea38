import KilnFormat
import KilnKernels

/// Constant padding of H and W of an NHWC input: a padded cell of channel c holds values[c] (tensor 0), or zero
/// without the tensor.
struct PadOp: RuntimeOp {
    let attributes: PadAttributes
    let values: TensorPayload?

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...1, tensors: 0...1)
        attributes = try decodeAttributes { () throws(AttributeError) in try PadAttributes(decoding: record.attributes) }
        if let v = tensors.first, v.shape.count != 1 {
            throw RuntimeError(.badBundle, "pad values '\(v.name)' have shape \(v.shape), expected [C]")
        }
        values = tensors.first?.payload
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        let (n, h, w, c) = try nhwc(inputs[0])
        if let values, values.withFloats({ $0.count }) != c { throw RuntimeError(.badInput, "pad values do not match \(c) channels") }
        let p = attributes
        return [n, h + p.top + p.bottom, w + p.left + p.right, c]
    }

    var detail: String {
        let p = attributes
        return "\(p.top),\(p.bottom),\(p.left),\(p.right)" + (values == nil ? "" : " per-channel values")
    }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let (n, h, w, c) = try nhwc(context.inputs[0])
        let p = attributes
        let g = try geometry { () throws(KernelGeometryError) in
            try PadGeometry(batch: n, inH: h, inW: w, channels: c, padTop: p.top, padBottom: p.bottom,
                            padLeft: p.left, padRight: p.right)
        }
        let values = values, reference = context.kernels == .reference
        return PlannedKernel { io in
            func pad(_ v: UnsafePointer<Float>?) {
                if reference {
                    ReferenceKernels.pad(input: io.input(0), output: io.output, geometry: g, channelValues: v)
                } else {
                    FastKernels.pad(input: io.input(0), output: io.output, geometry: g, channelValues: v)
                }
            }
            if let values { values.withFloats { pad($0.baseAddress) } } else { pad(nil) }
        }
    }
}
