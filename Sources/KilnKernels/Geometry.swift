/// The shapes the kernels work on. Every geometry is validated once, at construction, so that the kernels
/// themselves can trust it: all sizes are positive, every window sees at least one real input cell, and
/// every element count fits in `Int` (and, for the sgemm calls, in `Int32`).

/// An impossible kernel geometry, with the values that make it so.
public struct KernelGeometryError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Output size along one axis of a window op: `floor((in + padBefore + padAfter - effectiveKernel) / stride) + 1`,
/// where `effectiveKernel = (kernel - 1) * dilation + 1`. Nil when the padded input is shorter than the window.
func windowOutputSize(input: Int, kernel: Int, stride: Int, dilation: Int, padBefore: Int, padAfter: Int) -> Int? {
    let effective = (kernel - 1) * dilation + 1
    let padded = input + padBefore + padAfter
    guard padded >= effective else { return nil }
    return (padded - effective) / stride + 1
}

/// Product of `factors`, or nil on overflow.
func checkedProduct(_ factors: Int...) -> Int? {
    var result = 1
    for f in factors {
        let (p, overflow) = result.multipliedReportingOverflow(by: f)
        if overflow { return nil }
        result = p
    }
    return result
}

/// The largest size any kernel dimension may have; keeps every intermediate product far from overflow.
let maximumKernelDimension = 1 << 24

private func requirePositive(_ pairs: KeyValuePairs<String, Int>, op: String) throws(KernelGeometryError) {
    for (name, value) in pairs where value < 1 || value > maximumKernelDimension {
        throw KernelGeometryError("\(op): \(name) is \(value), expected 1...\(maximumKernelDimension)")
    }
}

private func requireNonNegative(_ pairs: KeyValuePairs<String, Int>, op: String) throws(KernelGeometryError) {
    for (name, value) in pairs where value < 0 || value > maximumKernelDimension {
        throw KernelGeometryError("\(op): \(name) is \(value), expected 0...\(maximumKernelDimension)")
    }
}

/// The shape of a 2-D convolution over NHWC float32.
///
/// Input `[batch, inH, inW, inC]`, weights HWIO `[kernelH, kernelW, inC / groups, outC]`, output
/// `[batch, outH, outW, outC]`. Output cell (oy, ox) reads input row `oy * strideH - padTop + ky * dilationH`
/// and column `ox * strideW - padLeft + kx * dilationW`; rows and columns outside the input read zero. With
/// `groups` > 1, output channel co reads only the input channels of its group, `co / (outC / groups)`: input
/// channels `g * inC/groups ..< (g + 1) * inC/groups` (depthwise: groups = inC).
public struct ConvGeometry: Sendable, Equatable, CustomStringConvertible {
    public let batch: Int, inH: Int, inW: Int, inC: Int, outC: Int
    public let kernelH: Int, kernelW: Int
    public let strideH: Int, strideW: Int
    public let dilationH: Int, dilationW: Int
    public let padTop: Int, padBottom: Int, padLeft: Int, padRight: Int
    public let outH: Int, outW: Int
    /// Channel groups (1: a plain convolution).
    public let groups: Int

    /// Throws when a size is not positive, a pad is negative, the padded input is smaller than the dilated
    /// kernel, the groups do not divide both channel counts, or a tensor's element count would overflow.
    public init(batch: Int, inH: Int, inW: Int, inC: Int, outC: Int,
                kernelH: Int, kernelW: Int, strideH: Int = 1, strideW: Int = 1,
                dilationH: Int = 1, dilationW: Int = 1,
                padTop: Int = 0, padBottom: Int = 0, padLeft: Int = 0, padRight: Int = 0,
                groups: Int = 1) throws(KernelGeometryError) {
        try requirePositive(["batch": batch, "inH": inH, "inW": inW, "inC": inC, "outC": outC,
                             "kernelH": kernelH, "kernelW": kernelW, "strideH": strideH, "strideW": strideW,
                             "dilationH": dilationH, "dilationW": dilationW, "groups": groups], op: "conv2d")
        guard inC % groups == 0, outC % groups == 0 else {
            throw KernelGeometryError("conv2d: \(groups) groups do not divide \(inC) input and \(outC) output channels")
        }
        try requireNonNegative(["padTop": padTop, "padBottom": padBottom, "padLeft": padLeft,
                                "padRight": padRight], op: "conv2d")
        guard let oh = windowOutputSize(input: inH, kernel: kernelH, stride: strideH, dilation: dilationH,
                                        padBefore: padTop, padAfter: padBottom),
              let ow = windowOutputSize(input: inW, kernel: kernelW, stride: strideW, dilation: dilationW,
                                        padBefore: padLeft, padAfter: padRight) else {
            throw KernelGeometryError("conv2d: padded input \(inH + padTop + padBottom)×\(inW + padLeft + padRight) "
                + "is smaller than the dilated kernel \((kernelH - 1) * dilationH + 1)×\((kernelW - 1) * dilationW + 1)")
        }
        guard let inCount = checkedProduct(batch, inH, inW, inC),
              let outCount = checkedProduct(batch, oh, ow, outC),
              let rows = checkedProduct(batch, oh, ow),
              let k = checkedProduct(kernelH, kernelW, inC / groups),
              checkedProduct(k, outC) != nil,
              inCount > 0, outCount > 0,
              rows <= Int(Int32.max), k <= Int(Int32.max) else {
            throw KernelGeometryError("conv2d: [\(batch), \(inH), \(inW), \(inC)] → \(outC) channels with a "
                + "\(kernelH)×\(kernelW) kernel is too large")
        }
        self.batch = batch; self.inH = inH; self.inW = inW; self.inC = inC; self.outC = outC
        self.kernelH = kernelH; self.kernelW = kernelW
        self.strideH = strideH; self.strideW = strideW
        self.dilationH = dilationH; self.dilationW = dilationW
        self.padTop = padTop; self.padBottom = padBottom; self.padLeft = padLeft; self.padRight = padRight
        self.outH = oh; self.outW = ow
        self.groups = groups
    }

    /// Input channels of one group.
    public var groupInC: Int { inC / groups }
    /// Output channels of one group.
    public var groupOutC: Int { outC / groups }
    /// True for a depthwise convolution with multiplier 1: one input channel per group, one output channel each.
    public var isDepthwise: Bool { groups > 1 && groups == inC && groups == outC }

    /// Elements of the input `[batch, inH, inW, inC]`.
    public var inputCount: Int { batch * inH * inW * inC }
    /// Elements of the output (and of the residual) `[batch, outH, outW, outC]`.
    public var outputCount: Int { batch * outH * outW * outC }
    /// Elements of the HWIO weights `[kernelH, kernelW, inC / groups, outC]`.
    public var weightCount: Int { kernelH * kernelW * groupInC * outC }
    /// Output pixels over the whole batch: the M of the GEMM.
    public var outputPixels: Int { batch * outH * outW }
    /// Weights per output channel: the K of the GEMM (of each group's GEMM).
    public var reductionSize: Int { kernelH * kernelW * groupInC }
    /// Multiply-adds of one call.
    public var multiplyAdds: Int { outputPixels * reductionSize * outC }

    /// True when the convolution is a plain matrix product over the NHWC rows: a 1×1 kernel, stride 1, no padding.
    public var isPointwise: Bool {
        kernelH == 1 && kernelW == 1 && strideH == 1 && strideW == 1
            && padTop == 0 && padBottom == 0 && padLeft == 0 && padRight == 0
    }

    public var description: String {
        "conv2d [\(batch), \(inH), \(inW), \(inC)] → [\(batch), \(outH), \(outW), \(outC)] kernel \(kernelH)×\(kernelW) "
            + "stride \(strideH)×\(strideW) dilation \(dilationH)×\(dilationW) "
            + "pad t\(padTop) b\(padBottom) l\(padLeft) r\(padRight)" + (groups == 1 ? "" : " groups \(groups)")
    }
}

/// The shape of a 2-D max or average pool over NHWC float32: input `[batch, inH, inW, channels]`, output
/// `[batch, outH, outW, channels]`. Window (oy, ox) covers input rows `oy * strideH - padTop ..< + kernelH`
/// and columns `ox * strideW - padLeft ..< + kernelW`; cells outside the input are padding.
public struct PoolGeometry: Sendable, Equatable, CustomStringConvertible {
    public let batch: Int, inH: Int, inW: Int, channels: Int
    public let kernelH: Int, kernelW: Int
    public let strideH: Int, strideW: Int
    public let padTop: Int, padBottom: Int, padLeft: Int, padRight: Int
    public let outH: Int, outW: Int

    /// Throws when a size is not positive, a pad is negative, the padded input is smaller than the window,
    /// or some window would hold padding only (a pad as large as the kernel).
    public init(batch: Int, inH: Int, inW: Int, channels: Int,
                kernelH: Int, kernelW: Int, strideH: Int, strideW: Int,
                padTop: Int = 0, padBottom: Int = 0, padLeft: Int = 0, padRight: Int = 0) throws(KernelGeometryError) {
        try requirePositive(["batch": batch, "inH": inH, "inW": inW, "channels": channels,
                             "kernelH": kernelH, "kernelW": kernelW, "strideH": strideH, "strideW": strideW],
                            op: "pool")
        try requireNonNegative(["padTop": padTop, "padBottom": padBottom, "padLeft": padLeft,
                                "padRight": padRight], op: "pool")
        guard let oh = windowOutputSize(input: inH, kernel: kernelH, stride: strideH, dilation: 1,
                                        padBefore: padTop, padAfter: padBottom),
              let ow = windowOutputSize(input: inW, kernel: kernelW, stride: strideW, dilation: 1,
                                        padBefore: padLeft, padAfter: padRight) else {
            throw KernelGeometryError("pool: padded input \(inH + padTop + padBottom)×\(inW + padLeft + padRight) "
                + "is smaller than the \(kernelH)×\(kernelW) window")
        }
        // Window starts grow monotonically, so checking the first and the last window of each axis is enough.
        guard padTop < kernelH, (oh - 1) * strideH - padTop < inH,
              padLeft < kernelW, (ow - 1) * strideW - padLeft < inW else {
            throw KernelGeometryError("pool: with pads t\(padTop) b\(padBottom) l\(padLeft) r\(padRight) some "
                + "\(kernelH)×\(kernelW) window holds padding only")
        }
        guard checkedProduct(batch, inH, inW, channels) != nil, checkedProduct(batch, oh, ow, channels) != nil else {
            throw KernelGeometryError("pool: [\(batch), \(inH), \(inW), \(channels)] is too large")
        }
        self.batch = batch; self.inH = inH; self.inW = inW; self.channels = channels
        self.kernelH = kernelH; self.kernelW = kernelW
        self.strideH = strideH; self.strideW = strideW
        self.padTop = padTop; self.padBottom = padBottom; self.padLeft = padLeft; self.padRight = padRight
        self.outH = oh; self.outW = ow
    }

    public var inputCount: Int { batch * inH * inW * channels }
    public var outputCount: Int { batch * outH * outW * channels }

    public var description: String {
        "pool [\(batch), \(inH), \(inW), \(channels)] → [\(batch), \(outH), \(outW), \(channels)] "
            + "window \(kernelH)×\(kernelW) stride \(strideH)×\(strideW) pad t\(padTop) b\(padBottom) l\(padLeft) r\(padRight)"
    }
}

/// The shape of a constant pad of H and W over NHWC float32: input `[batch, inH, inW, channels]`, output
/// `[batch, padTop + inH + padBottom, padLeft + inW + padRight, channels]`.
public struct PadGeometry: Sendable, Equatable, CustomStringConvertible {
    public let batch: Int, inH: Int, inW: Int, channels: Int
    public let padTop: Int, padBottom: Int, padLeft: Int, padRight: Int

    public init(batch: Int, inH: Int, inW: Int, channels: Int,
                padTop: Int, padBottom: Int, padLeft: Int, padRight: Int) throws(KernelGeometryError) {
        try requirePositive(["batch": batch, "inH": inH, "inW": inW, "channels": channels], op: "pad")
        try requireNonNegative(["padTop": padTop, "padBottom": padBottom, "padLeft": padLeft,
                                "padRight": padRight], op: "pad")
        guard checkedProduct(batch, inH + padTop + padBottom, inW + padLeft + padRight, channels) != nil else {
            throw KernelGeometryError("pad: [\(batch), \(inH), \(inW), \(channels)] is too large")
        }
        self.batch = batch; self.inH = inH; self.inW = inW; self.channels = channels
        self.padTop = padTop; self.padBottom = padBottom; self.padLeft = padLeft; self.padRight = padRight
    }

    public var outH: Int { padTop + inH + padBottom }
    public var outW: Int { padLeft + inW + padRight }
    public var inputCount: Int { batch * inH * inW * channels }
    public var outputCount: Int { batch * outH * outW * channels }

    public var description: String {
        "pad [\(batch), \(inH), \(inW), \(channels)] → [\(batch), \(outH), \(outW), \(channels)]"
    }
}
