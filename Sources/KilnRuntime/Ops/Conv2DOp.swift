import KilnFormat
import KilnKernels

/// y = act(conv(x, W) + b [+ residual]): inputs x `[N, H, W, Cin]` [, residual `[N, outH, outW, Cout]`]; tensors W
/// (HWIO `[kH, kW, Cin / groups, Cout]`) and b. Weights are packed once at load for the algorithm
/// `ConvAlgorithm.choose` gives the layer (Winograd for stride-1 3×3 where it pays, GEMM panels otherwise, the
/// portable layout on CPUs without AVX2); grouped ones for `GroupedConvAlgorithm.choose`'s (the depthwise
/// microkernel, or a GEMM per group).
struct Conv2DOp: RuntimeOp {
    let attributes: Conv2DAttributes
    let kernel: TensorPayload
    let kernelShape: [Int]
    let packing: Packing
    let bias: TensorPayload
    let hasResidual: Bool

    /// The packed weights: a plain convolution's, or a grouped one's (with the bias inside).
    enum Packing {
        case plain(PackedConvWeights)
        case grouped(PackedGroupedConvWeights)
    }

    init(_ record: OpRecord, tensors: [TensorRecord]) throws(RuntimeError) {
        try checkArity(record, inputs: 1...2, tensors: 2...2)
        let a = try decodeAttributes { () throws(AttributeError) in try Conv2DAttributes(decoding: record.attributes) }
        let kernel = tensors[0], bias = tensors[1]
        let s = kernel.shape
        guard s.count == 4, s[0] == a.kernelH, s[1] == a.kernelW, s[2] >= 1, s[3] >= 1 else {
            throw RuntimeError(.badBundle, "kernel '\(kernel.name)' has shape \(s), expected [\(a.kernelH), \(a.kernelW), Cin, Cout]")
        }
        guard s[3] % a.groups == 0, s[2].multipliedReportingOverflow(by: a.groups).partialValue <= 1 << 24 else {
            throw RuntimeError(.badBundle, "kernel '\(kernel.name)' has \(s[3]) output channels, not a multiple of \(a.groups) groups")
        }
        guard bias.shape == [s[3]] else {
            throw RuntimeError(.badBundle, "bias '\(bias.name)' has shape \(bias.shape), expected [\(s[3])]")
        }
        attributes = a
        kernelShape = s
        hasResidual = record.inputs.count == 2
        // The bias is copied first (it is small): packing hands the mapped kernel's pages back to the OS, in whole
        // 2 MiB pages that may hold the bias too, and reading it later would map them again.
        let biasValues = TensorPayload.owned(bias.payload.floats)
        self.bias = biasValues
        self.kernel = kernel.payload
        if a.groups == 1 {
            packing = .plain(kernel.payload.withFloats {
                packConvWeightsHWIO($0.baseAddress!, kernelH: s[0], kernelW: s[1], inC: s[2], outC: s[3],
                                    strideH: a.strideH, strideW: a.strideW, dilationH: a.dilationH, dilationW: a.dilationW)
            })
        } else {
            packing = .grouped(kernel.payload.withFloats { w in
                biasValues.withFloats { b in
                    packGroupedConvWeightsHWIO(w.baseAddress!, bias: b.baseAddress, kernelH: s[0], kernelW: s[1],
                                               inC: s[2] * a.groups, outC: s[3], groups: a.groups)
                }
            })
        }
    }

    func geometry(input s: [Int]) throws(RuntimeError) -> ConvGeometry {
        let (n, h, w, c) = try nhwc(s)
        let ks = kernelShape, a = attributes
        guard c == ks[2] * a.groups else {
            throw RuntimeError(.badInput, "input has \(c) channels, the kernel \(ks)\(a.groups == 1 ? "" : " in \(a.groups) groups") expects \(ks[2] * a.groups)")
        }
        let (t, b) = a.padding.amounts(size: h, kernel: a.kernelH, stride: a.strideH, dilation: a.dilationH, vertical: true)
        let (l, r) = a.padding.amounts(size: w, kernel: a.kernelW, stride: a.strideW, dilation: a.dilationW, vertical: false)
        return try KilnRuntime.geometry { () throws(KernelGeometryError) in
            try ConvGeometry(batch: n, inH: h, inW: w, inC: c, outC: ks[3], kernelH: ks[0], kernelW: ks[1],
                             strideH: a.strideH, strideW: a.strideW, dilationH: a.dilationH, dilationW: a.dilationW,
                             padTop: t, padBottom: b, padLeft: l, padRight: r, groups: a.groups)
        }
    }

    func outputShape(_ inputs: [[Int]]) throws(RuntimeError) -> [Int] {
        let g = try geometry(input: inputs[0])
        let out = [g.batch, g.outH, g.outW, g.outC]
        if hasResidual, inputs[1] != out {
            throw RuntimeError(.badInput, "residual has shape \(inputs[1]), the convolution gives \(out)")
        }
        return out
    }

    func flops(inputs: [[Int]], output: [Int]) -> Int {
        let count = output.reduce(1, *), ks = kernelShape
        return 2 * count * ks[0] * ks[1] * ks[2] + (hasResidual ? count : 0)
    }

    var detail: String {
        let a = attributes
        var text = "\(kernelShape[0])x\(kernelShape[1])/\(a.strideH)"
        if case let .explicit(t, b, l, r) = a.padding, t + b + l + r > 0 { text += " pad \(t),\(b),\(l),\(r)" }
        if case .same = a.padding { text += " same" }
        if !a.activation.isIdentity { text += " " + activationDetail(a.activation) }
        if a.groups > 1 { text += a.groups == kernelShape[3] && kernelShape[2] == 1 ? " depthwise" : " groups \(a.groups)" }
        if hasResidual { text += " +residual" }
        return text
    }

    /// The residual, accumulated in place; never when it is also the convolution's input (the kernels read the
    /// input while writing the output).
    func inPlaceInputs(_ record: OpRecord) -> [Int] {
        hasResidual && record.inputs[1] != record.inputs[0] ? [1] : []
    }

    /// The GEMM, Winograd, depthwise and group-GEMM kernels write strided outputs; the portable and reference ones
    /// do not, nor does a convolution whose residual may be its own output.
    func writesStridedOutput(_ context: PlanContext) -> Bool {
        guard context.kernels == .fast else { return false }
        switch packing {
        case .grouped(let w): return w.algorithm != .portable
        case .plain(let w): return w.algorithm != .portable
        }
    }

    func plan(_ context: PlanContext) throws(RuntimeError) -> PlannedKernel {
        try context.requireElementTypes()
        let g = try geometry(input: context.inputs[0])
        let activation = attributes.activation, residual = hasResidual, bias = bias
        let stride = context.outputRowStride
        if context.kernels == .reference {
            let kernel = kernel
            return PlannedKernel { io in
                bias.withFloats { b in
                    kernel.withFloats { w in
                        ReferenceKernels.conv2d(input: io.input(0), weightsHWIO: w.baseAddress!, bias: b.baseAddress,
                                                residual: residual ? io.input(1) : nil, output: io.output, geometry: g, activation: activation)
                    }
                }
            }
        }
        let packed: PackedConvWeights
        switch packing {
        case .grouped(let weights):
            guard weights.matches(g) else { throw RuntimeError(.internal, "grouped weights packed for \(weights.algorithm) do not fit \(g)") }
            return PlannedKernel(workspaceFloats: { FastKernels.groupedConvWorkspaceFloats(for: g, algorithm: weights.algorithm) }) { io in
                FastKernels.groupedConv2d(input: io.input(0), weights: weights, residual: residual ? io.input(1) : nil,
                                          output: io.output, geometry: g, activation: activation, workspace: io.workspace,
                                          outputRowStride: stride)
            }
        case .plain(let weights):
            packed = weights
        }
        guard packed.matches(g) else {
            throw RuntimeError(.internal, "weights packed for \(packed.algorithm) do not fit \(g)")
        }
        let weights = context.model?.convWeights(step: context.step, packed: packed, kernel: kernel, geometry: g) ?? packed
        return PlannedKernel(workspaceFloats: { FastKernels.convWorkspaceFloats(for: g, algorithm: weights.algorithm) }) { io in
            bias.withFloats { b in
                FastKernels.conv2d(input: io.input(0), weights: weights, bias: b.baseAddress, residual: residual ? io.input(1) : nil,
                                   output: io.output, geometry: g, activation: activation, workspace: io.workspace,
                                   outputRowStride: stride)
            }
        }
    }
}
