import CKilnKernels
import KilnFormat

/// How a grouped convolution (`ConvGeometry.groups` > 1) is computed, fixed when its weights are packed.
public enum GroupedConvAlgorithm: Sendable, Equatable, CustomStringConvertible {
    /// Depthwise with multiplier 1 (groups = inC = outC): the depthwise microkernel, channels in vector lanes
    /// (AVX-512 or AVX2), bias and clamps applied in registers.
    case depthwise
    /// Depthwise with a multiplier m > 1 (groups = inC, outC = m · inC): m passes of the depthwise microkernel, pass j
    /// computing output channels c·m + j into the workspace, each then put in its place (a GEMM per group would
    /// multiply [pixels, kH·kW] by [kH·kW, m]: m columns of 16, 40× slower on MobileNet-like sizes).
    case depthwiseMultiplier(Int)
    /// Groups of g = 2, 4, 8 or 16 channels in and out (ResNeXt's), AVX-512: output channels in the 16 lanes, each
    /// input of a group spread over its lanes by one permute, on the HWIO weights as stored.
    case smallGroups
    /// Any other grouping: per group, im2col of the group's input channels and a GEMM into its output columns.
    case groupGEMM
    /// CPUs without AVX2 + FMA: the direct loop of the reference kernel, in float.
    case portable

    public var description: String {
        switch self {
        case .depthwise: return "depthwise"
        case .depthwiseMultiplier(let m): return "depthwise x\(m)"
        case .smallGroups: return "small groups"
        case .groupGEMM: return "group gemm"
        case .portable: return "portable"
        }
    }

    /// The algorithm for a layer: what its channels allow on this CPU.
    public static func choose(inC: Int, outC: Int, groups: Int) -> GroupedConvAlgorithm {
        guard ConvAlgorithm.avx2Available else { return .portable }
        if groups == inC && groups == outC { return .depthwise }
        if groups == inC && outC % inC == 0 { return .depthwiseMultiplier(outC / inC) }
        if kiln_small_groups_supported(Int32(inC), Int32(outC), Int32(groups)) != 0 { return .smallGroups }
        return .groupGEMM
    }
}

/// Grouped-convolution weights and bias packed once, for `algorithm`, by `packGroupedConvWeightsHWIO`.
///
/// Layouts: `.depthwise`, `[kH·kW + 1][C rounded up to 16]` — the bias row, then one row per kernel cell (zero past
/// C); `.depthwiseMultiplier(m)`, m such blocks, block j for the output channels c·m + j; `.groupGEMM`, per group its `[kH·kW·inC/groups, outC/groups]` matrix in 16-column GEMM panels, and the bias
/// beside it; `.smallGroups` and `.portable`, the HWIO weights as given and the bias. Immutable after packing.
public final class PackedGroupedConvWeights: @unchecked Sendable {
    public let kernelH: Int, kernelW: Int, inC: Int, outC: Int, groups: Int
    public let algorithm: GroupedConvAlgorithm
    private let storage: AlignedFloatBuffer
    private let biasStorage: AlignedFloatBuffer

    var values: UnsafePointer<Float> { UnsafePointer(storage.floats) }
    var bias: UnsafePointer<Float> { UnsafePointer(biasStorage.floats) }

    fileprivate init(weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?, kernelH: Int, kernelW: Int,
                     inC: Int, outC: Int, groups: Int, algorithm: GroupedConvAlgorithm) {
        precondition(kernelH > 0 && kernelW > 0 && groups > 0 && inC % groups == 0 && outC % groups == 0 && outC > 0,
                     "grouped conv weights [\(kernelH), \(kernelW), \(inC)/\(groups), \(outC)] do not fit")
        self.kernelH = kernelH; self.kernelW = kernelW; self.inC = inC; self.outC = outC; self.groups = groups
        self.algorithm = algorithm
        let cells = kernelH * kernelW, k = cells * (inC / groups)
        biasStorage = AlignedFloatBuffer(floats: outC)
        if let bias { biasStorage.floats.update(from: bias, count: outC) } else { biasStorage.floats.update(repeating: 0, count: outC) }
        switch algorithm {
        case .depthwise:
            precondition(groups == inC && groups == outC && ConvAlgorithm.avx2Available, "depthwise packing needs groups = inC = outC and AVX2")
            storage = AlignedFloatBuffer(floats: kiln_dwconv_packed_floats(cells, outC))
            kiln_dwconv_pack(weights, bias, cells, outC, storage.floats)
        case .depthwiseMultiplier(let m):
            precondition(groups == inC && outC == m * inC && ConvAlgorithm.avx2Available, "depthwise x\(m) packing needs outC = \(m) · inC and AVX2")
            let one = kiln_dwconv_packed_floats(cells, inC)
            storage = AlignedFloatBuffer(floats: m * one)
            var w = [Float](repeating: 0, count: cells * inC), b = [Float](repeating: 0, count: inC)
            for j in 0..<m {
                // Pass j: output channel c·m + j of HWIO [kH, kW, 1, inC·m] as channel c.
                for cell in 0..<cells { for c in 0..<inC { w[cell * inC + c] = weights[cell * outC + c * m + j] } }
                for c in 0..<inC { b[c] = bias?[c * m + j] ?? 0 }
                kiln_dwconv_pack(w, b, cells, inC, storage.floats + j * one)
            }
        case .groupGEMM:
            precondition(ConvAlgorithm.avx2Available, "the group GEMM needs AVX2 and FMA")
            storage = AlignedFloatBuffer(floats: kiln_grouped_conv_packed_floats(k, outC / groups, groups))
            kiln_grouped_conv_pack(weights, k, outC / groups, groups, 0, groups, storage.floats)
        case .portable, .smallGroups:
            storage = AlignedFloatBuffer(floats: k * outC)
            storage.floats.update(from: weights, count: k * outC)
        }
    }

    /// True when these weights fit `geometry` (kernel size, channels and groups).
    public func matches(_ g: ConvGeometry) -> Bool {
        kernelH == g.kernelH && kernelW == g.kernelW && inC == g.inC && outC == g.outC && groups == g.groups
    }
}

/// Packs grouped-convolution weights stored HWIO `[kernelH, kernelW, inC / groups, outC]` and the bias `[outC]`
/// (nil: zero) for `algorithm` (default: `GroupedConvAlgorithm.choose`). The source is copied, not borrowed.
public func packGroupedConvWeightsHWIO(_ weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?, kernelH: Int,
                                       kernelW: Int, inC: Int, outC: Int, groups: Int,
                                       algorithm: GroupedConvAlgorithm? = nil) -> PackedGroupedConvWeights {
    PackedGroupedConvWeights(weights: weights, bias: bias, kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC,
                             groups: groups, algorithm: algorithm ?? .choose(inC: inC, outC: outC, groups: groups))
}

extension FastKernels {
    /// Floats of workspace `groupedConv2d` needs for `geometry` with `algorithm`, with the kernels' thread count.
    public static func groupedConvWorkspaceFloats(for g: ConvGeometry, algorithm: GroupedConvAlgorithm) -> Int {
        if case .depthwiseMultiplier = algorithm { return g.outputPixels * g.inC }
        guard algorithm == .groupGEMM else { return 0 }
        var shape = kilnShape(g, algorithm: .gemm, relu: false)
        return kiln_grouped_conv_workspace_floats(&shape, Int32(g.groups), kiln_threads_get())
    }

    /// `output = activation(grouped conv(input, weights) + bias + residual)`, as `ReferenceKernels.conv2d` with
    /// `geometry.groups` > 1; the bias is packed with the weights.
    ///
    /// - input `[batch, inH, inW, inC]`; residual nil or `[batch, outH, outW, outC]`, and may be exactly `output`;
    ///   output `[batch, outH, outW, outC]`
    /// - workspace: at least `groupedConvWorkspaceFloats(for:algorithm:)` floats.
    /// - outputRowStride (not `.portable`): floats from one output pixel to the next when the output is a slice of a
    ///   wider tensor (a Concat's); the residual stays contiguous and must not be the output then.
    ///
    /// The depthwise kernel applies linear activations and clamps (ReLU, ReLU6, hard-sigmoid) in registers, the group
    /// GEMM ReLU and ReLU6-like clamps (`registerClamp`); any other activation runs in one pass over the output after.
    public static func groupedConv2d(input: UnsafePointer<Float>, weights: PackedGroupedConvWeights,
                                     residual: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>,
                                     geometry g: ConvGeometry, activation: Activation,
                                     workspace: UnsafeMutableBufferPointer<Float>, outputRowStride: Int? = nil) {
        let stride = outputRowStride ?? g.outC
        precondition(outputRowStride == nil || weights.algorithm != .portable, "the portable grouped conv2d writes contiguous outputs only")
        precondition(weights.matches(g), "grouped conv weights [\(weights.kernelH), \(weights.kernelW), \(weights.inC), "
            + "\(weights.outC)] / \(weights.groups) do not fit \(g)")
        switch weights.algorithm {
        case .depthwise:
            let fused = activation.function == .linear
            var shape = kiln_dwconv_shape(
                batch: Int32(g.batch), in_h: Int32(g.inH), in_w: Int32(g.inW), channels: Int32(g.inC),
                out_h: Int32(g.outH), out_w: Int32(g.outW), kernel_h: Int32(g.kernelH), kernel_w: Int32(g.kernelW),
                stride_h: Int32(g.strideH), stride_w: Int32(g.strideW), dilation_h: Int32(g.dilationH),
                dilation_w: Int32(g.dilationW), pad_top: Int32(g.padTop), pad_left: Int32(g.padLeft),
                in_pixel_stride: Int64(g.inC), out_pixel_stride: Int64(stride), residual_pixel_stride: Int64(g.outC),
                alpha: fused ? activation.alpha : 1, beta: fused ? activation.beta : 0,
                min: fused ? activation.minimum : -.infinity, max: fused ? activation.maximum : .infinity)
            kiln_dwconv2d(&shape, input, weights.values, residual, output)
            if !fused { activateRows(output, rows: g.outputPixels, width: g.outC, rowStride: stride, activation: activation) }
        case .depthwiseMultiplier(let m):
            // The activation in the passes where nothing is added after them, else after the residual.
            let fused = activation.function == .linear && residual == nil
            let channels = g.inC, pixels = g.outputPixels
            precondition(workspace.count >= pixels * channels, "depthwise x\(m) needs a workspace of \(pixels * channels) floats, got \(workspace.count)")
            let one = kiln_dwconv_packed_floats(g.kernelH * g.kernelW, channels)
            for j in 0..<m {
                var shape = kiln_dwconv_shape(
                    batch: Int32(g.batch), in_h: Int32(g.inH), in_w: Int32(g.inW), channels: Int32(channels),
                    out_h: Int32(g.outH), out_w: Int32(g.outW), kernel_h: Int32(g.kernelH), kernel_w: Int32(g.kernelW),
                    stride_h: Int32(g.strideH), stride_w: Int32(g.strideW), dilation_h: Int32(g.dilationH),
                    dilation_w: Int32(g.dilationW), pad_top: Int32(g.padTop), pad_left: Int32(g.padLeft),
                    in_pixel_stride: Int64(g.inC), out_pixel_stride: Int64(channels), residual_pixel_stride: Int64(channels),
                    alpha: fused ? activation.alpha : 1, beta: fused ? activation.beta : 0,
                    min: fused ? activation.minimum : -.infinity, max: fused ? activation.maximum : .infinity)
                let pass = workspace.baseAddress!
                kiln_dwconv2d(&shape, input, weights.values + j * one, nil, pass)
                for p in 0..<pixels {
                    let from = pass + p * channels, to = output + p * stride + j
                    if let residual {
                        let r = residual + p * g.outC + j
                        for c in 0..<channels { to[c * m] = from[c] + r[c * m] }
                    } else {
                        for c in 0..<channels { to[c * m] = from[c] }
                    }
                }
            }
            if !fused && !activation.isIdentity { activateRows(output, rows: pixels, width: g.outC, rowStride: stride, activation: activation) }
        case .smallGroups:
            let clamp = registerClamp(activation)
            var shape = kilnShape(g, algorithm: .gemm, relu: clamp?.relu ?? false, maximum: clamp?.maximum)
            shape.out_stride = Int32(stride)
            kiln_small_groups_conv2d(&shape, Int32(g.groups), input, weights.values, weights.bias, residual, output)
            if clamp == nil { activateRows(output, rows: g.outputPixels, width: g.outC, rowStride: stride, activation: activation) }
        case .groupGEMM:
            let clamp = registerClamp(activation)
            var shape = kilnShape(g, algorithm: .gemm, relu: clamp?.relu ?? false, maximum: clamp?.maximum)
            shape.out_stride = Int32(stride)
            let need = kiln_grouped_conv_workspace_floats(&shape, Int32(g.groups), kiln_threads_get())
            precondition(workspace.count >= need, "grouped conv2d needs a workspace of \(need) floats, got \(workspace.count), for \(g)")
            kiln_grouped_conv2d(&shape, Int32(g.groups), input, weights.values, weights.bias, residual, output,
                                workspace.baseAddress)
            if clamp == nil { activateRows(output, rows: g.outputPixels, width: g.outC, rowStride: stride, activation: activation) }
        case .portable:
            portableGroupedConv2d(input: input, weights: weights.values, bias: weights.bias, residual: residual,
                                  output: output, geometry: g, activation: activation)
        }
    }

    /// The direct loop, in float, for CPUs without AVX2: output pixel by pixel, each group's dot products.
    static func portableGroupedConv2d(input: UnsafePointer<Float>, weights: UnsafePointer<Float>,
                                      bias: UnsafePointer<Float>, residual: UnsafePointer<Float>?,
                                      output: UnsafeMutablePointer<Float>, geometry g: ConvGeometry,
                                      activation: Activation) {
        let gi = g.groupInC, go = g.groupOutC
        for n in 0..<g.batch {
            for oy in 0..<g.outH {
                for ox in 0..<g.outW {
                    let o = ((n * g.outH + oy) * g.outW + ox) * g.outC
                    for co in 0..<g.outC {
                        var sum = bias[co] + (residual?[o + co] ?? 0)
                        let first = co / go * gi
                        for ky in 0..<g.kernelH {
                            let iy = oy * g.strideH - g.padTop + ky * g.dilationH
                            if iy < 0 || iy >= g.inH { continue }
                            for kx in 0..<g.kernelW {
                                let ix = ox * g.strideW - g.padLeft + kx * g.dilationW
                                if ix < 0 || ix >= g.inW { continue }
                                let x = input + ((n * g.inH + iy) * g.inW + ix) * g.inC + first
                                let w = weights + (ky * g.kernelW + kx) * gi * g.outC + co
                                for ci in 0..<gi { sum += x[ci] * w[ci * g.outC] }
                            }
                        }
                        output[o + co] = sum
                    }
                }
            }
        }
        if !activation.isIdentity { activate(input: output, output: output, count: g.outputCount, activation: activation) }
    }
}
