/// Convolution weights in the layout `FastKernels.conv2d` reads, made once by an explicit packer
/// (`packConvWeightsHWIO`, `packConvWeightsOIHW`) and owned for the life of the model.
///
/// Packed layout: a row-major `[kernelH * kernelW * inC, outC]` matrix, rows ordered (ky, kx, ci). This is the
/// B operand of the GEMM `im2col(input) [pixels, kH·kW·inC] × B → output [pixels, outC]`, and happens to be
/// HWIO flattened. The buffer is 64-byte aligned and immutable after packing, so one instance may be read by
/// any number of concurrent kernel calls.
public final class PackedConvWeights: @unchecked Sendable {
    public let kernelH: Int, kernelW: Int, inC: Int, outC: Int
    /// Rows of the packed matrix: `kernelH * kernelW * inC`.
    public var rows: Int { kernelH * kernelW * inC }
    /// Number of floats in `values`.
    public let count: Int
    private let storage: UnsafeMutablePointer<Float>

    /// The packed values, `[kernelH * kernelW * inC, outC]` row-major.
    public var values: UnsafePointer<Float> { UnsafePointer(storage) }

    fileprivate init(kernelH: Int, kernelW: Int, inC: Int, outC: Int,
                     fill: (UnsafeMutablePointer<Float>) -> Void) {
        precondition(kernelH > 0 && kernelW > 0 && inC > 0 && outC > 0,
                     "conv weights need positive sizes, got [\(kernelH), \(kernelW), \(inC), \(outC)]")
        let (partial, o1) = kernelH.multipliedReportingOverflow(by: kernelW)
        let (rows, o2) = partial.multipliedReportingOverflow(by: inC)
        let (count, o3) = rows.multipliedReportingOverflow(by: outC)
        precondition(!o1 && !o2 && !o3 && count <= Int.max / MemoryLayout<Float>.stride,
                     "conv weights [\(kernelH), \(kernelW), \(inC), \(outC)] are too large")
        self.kernelH = kernelH; self.kernelW = kernelW; self.inC = inC; self.outC = outC
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.stride, alignment: 64)
        storage = raw.bindMemory(to: Float.self, capacity: count)
        fill(storage)
    }

    deinit {
        UnsafeMutableRawPointer(storage).deallocate()
    }

    /// True when these weights fit `geometry` (same kernel size and channel counts).
    public func matches(_ geometry: ConvGeometry) -> Bool {
        kernelH == geometry.kernelH && kernelW == geometry.kernelW && inC == geometry.inC && outC == geometry.outC
    }
}

/// Packs convolution weights stored HWIO `[kernelH, kernelW, inC, outC]` (Keras/TensorFlow, and the `.kiln`
/// bundle). `weights` must hold `kernelH * kernelW * inC * outC` floats.
public func packConvWeightsHWIO(_ weights: UnsafePointer<Float>,
                                kernelH: Int, kernelW: Int, inC: Int, outC: Int) -> PackedConvWeights {
    PackedConvWeights(kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC) { packed in
        // HWIO flattened is already the packed [kH·kW·inC, outC] matrix.
        packed.update(from: weights, count: kernelH * kernelW * inC * outC)
    }
}

/// Packs convolution weights stored OIHW `[outC, inC, kernelH, kernelW]` (ONNX, PyTorch).
/// `weights` must hold `outC * inC * kernelH * kernelW` floats.
public func packConvWeightsOIHW(_ weights: UnsafePointer<Float>,
                                kernelH: Int, kernelW: Int, inC: Int, outC: Int) -> PackedConvWeights {
    PackedConvWeights(kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC) { packed in
        for o in 0..<outC {
            for i in 0..<inC {
                for ky in 0..<kernelH {
                    for kx in 0..<kernelW {
                        packed[((ky * kernelW + kx) * inC + i) * outC + o] =
                            weights[((o * inC + i) * kernelH + ky) * kernelW + kx]
                    }
                }
            }
        }
    }
}
