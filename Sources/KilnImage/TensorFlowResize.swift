#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A float RGB image: rows top to bottom, pixels interleaved R, G, B (`[height, width, 3]`, row-major),
/// values on the 0–255 scale. What `tf.image.resize` gives (bicubic may overshoot 0…255: TensorFlow does
/// not clamp), and what every resize mode hands to the model (`InputResize.pixels`).
public struct RGBFloatImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var values: [Float]

    /// An image from `height · width · 3` interleaved values; nil when the count does not match.
    public init?(width: Int, height: Int, values: [Float]) {
        guard width >= 1, height >= 1, values.count == width * height * 3 else { return nil }
        self.init(unchecked: width, height, values)
    }

    init(unchecked width: Int, _ height: Int, _ values: [Float]) {
        self.width = width
        self.height = height
        self.values = values
    }

    /// The 8-bit image's values as floats (Keras' `img_to_array`).
    public init(_ image: RGBImage) {
        self.init(unchecked: image.width, image.height, image.floats)
    }
}

/// `tf.image.resize` methods (TensorFlow 2, `antialias=False`), the `interpolation` argument of Keras'
/// `image_dataset_from_directory` and `smart_resize`.
public enum TensorFlowResizeMethod: String, Sendable, CaseIterable {
    /// `ResizeBilinear(half_pixel_centers=True)`: the default.
    case bilinear
    /// `ResizeNearestNeighbor(half_pixel_centers=True)`.
    case nearest
    /// `ResizeBicubic(half_pixel_centers=True)`: Keys' cubic with a = −0.5, taps outside the image dropped
    /// and the rest renormalised.
    case bicubic
    /// `ResizeArea`: each output pixel the area-weighted mean of the input pixels it covers.
    case area
}

extension RGBImage {
    /// `tf.image.resize(image, (height, width), method)` on this 8-bit image (as `tf.io.decode_image` gives
    /// it), reproduced in TensorFlow's float32 arithmetic and order of operations (`ImageResizerState`,
    /// the CPU kernels of `resize_*_op.cc`). The aspect ratio is not kept. Sizes below 1 return nil.
    /// TensorFlow 2 runs the kernel even at the same size (bilinear, nearest and area then give the image back).
    public func tensorFlowResized(height outH: Int, width outW: Int, method: TensorFlowResizeMethod) -> RGBFloatImage? {
        guard outW >= 1, outH >= 1 else { return nil }
        switch method {
        case .bilinear: return tensorFlowBilinear(outH, outW)
        case .nearest: return tensorFlowNearest(outH, outW)
        case .bicubic: return tensorFlowBicubic(outH, outW)
        case .area: return tensorFlowArea(outH, outW)
        }
    }

    /// The centred window Keras' `smart_resize` (`crop_to_aspect_ratio=True`) cuts before resizing to
    /// `height × width`: the largest with that aspect ratio, in its float32 arithmetic —
    /// `crop_h = Int32(Float(W · height) / Float(width))` clamped to 1…H, `crop_w` likewise, the start
    /// `Int32(Float(H − crop_h) / 2)` (truncated).
    public func tensorFlowAspectCrop(height targetH: Int, width targetW: Int) -> RGBImage {
        let cropH = max(min(height, Int(Float(width * targetH) / Float(targetW))), 1)
        let cropW = max(min(width, Int(Float(height * targetW) / Float(targetH))), 1)
        let top = Int(Float(height - cropH) / 2), left = Int(Float(width - cropW) / 2)
        if cropH == height, cropW == width { return self }
        return cropped(top: top, left: left, height: cropH, width: cropW) ?? self
    }

    /// TensorFlow's `CalculateResizeScale` without align_corners: `in / Float(out)`.
    @inline(__always)
    static func tensorFlowScale(_ inSize: Int, _ outSize: Int) -> Float { Float(inSize) / Float(outSize) }

    /// `compute_interpolation_weights` with the `HalfPixelScaler`: source `in = (i + 0.5)·scale − 0.5`,
    /// lower `max(floor(in), 0)`, upper `min(ceil(in), inSize − 1)`, weight of the upper `in − floor(in)`.
    static func tensorFlowLinearTaps(_ inSize: Int, _ outSize: Int) -> [(lower: Int, upper: Int, lerp: Float)] {
        let scale = tensorFlowScale(inSize, outSize)
        return (0..<outSize).map { i in
            let source: Float = (Float(i) + 0.5) * scale - 0.5
            let floor = source.rounded(.down)
            return (max(Int(floor), 0), min(Int(source.rounded(.up)), inSize - 1), source - floor)
        }
    }

    /// `ResizeBilinear`: `top = tl + (tr − tl)·x_lerp`, `bottom = bl + (br − bl)·x_lerp`,
    /// `out = top + (bottom − top)·y_lerp`, in float.
    func tensorFlowBilinear(_ outH: Int, _ outW: Int) -> RGBFloatImage {
        let ys = Self.tensorFlowLinearTaps(height, outH), xs = Self.tensorFlowLinearTaps(width, outW)
        var out = [Float](repeating: 0, count: outH * outW * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<outH {
                    let top = ys[y].lower * width * 3, bottom = ys[y].upper * width * 3, yl = ys[y].lerp
                    for x in 0..<outW {
                        let l = 3 * xs[x].lower, r = 3 * xs[x].upper, xl = xs[x].lerp
                        let d = (y * outW + x) * 3
                        for c in 0..<3 {
                            let tl = Float(src[top + l + c]), tr = Float(src[top + r + c])
                            let bl = Float(src[bottom + l + c]), br = Float(src[bottom + r + c])
                            let t = tl + (tr - tl) * xl
                            let b = bl + (br - bl) * xl
                            dst[d + c] = t + (b - t) * yl
                        }
                    }
                }
            }
        }
        return RGBFloatImage(unchecked: outW, outH, out)
    }

    /// `ResizeNearestNeighbor` with `HalfPixelScalerForNN`: source `min(floor((i + 0.5)·scale), inSize − 1)`,
    /// at least 0. The values are the 8-bit ones (TensorFlow keeps uint8 for nearest; Keras' pipeline gives
    /// them as float).
    func tensorFlowNearest(_ outH: Int, _ outW: Int) -> RGBFloatImage {
        func sources(_ inSize: Int, _ outSize: Int) -> [Int] {
            let scale = Self.tensorFlowScale(inSize, outSize)
            return (0..<outSize).map { i in max(min(Int(((Float(i) + 0.5) * scale).rounded(.down)), inSize - 1), 0) }
        }
        let ys = sources(height, outH), xs = sources(width, outW)
        var out = [Float](repeating: 0, count: outH * outW * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<outH {
                    let row = ys[y] * width * 3
                    for x in 0..<outW {
                        let s = row + 3 * xs[x], d = (y * outW + x) * 3
                        dst[d] = Float(src[s]); dst[d + 1] = Float(src[s + 1]); dst[d + 2] = Float(src[s + 2])
                    }
                }
            }
        }
        return RGBFloatImage(unchecked: outW, outH, out)
    }

    /// TensorFlow's bicubic coefficient table (`InitCoeffsTable(-0.5)`): 1025 pairs, at `x = i / 1024` (float)
    /// the weight of the near tap `((a + 2)x − (a + 3))x² + 1` and, at `x + 1`, of the far tap
    /// `((a·x − 5a)x + 8a)x − 4a`, computed in double and stored as float.
    static let tensorFlowKeysTable: [Float] = {
        let a = -0.5
        var table = [Float](repeating: 0, count: 1025 * 2)
        for i in 0...1024 {
            var x = Double(Float(Double(i) * 1.0 / 1024))
            table[2 * i] = Float(((a + 2) * x - (a + 3)) * x * x + 1)
            x = Double(Float(x + 1.0))
            table[2 * i + 1] = Float(((a * x - 5 * a) * x + 8 * a) * x - 4 * a)
        }
        return table
    }()

    /// `GetWeightsAndIndices<HalfPixelScaler, use_keys_cubic=true>` for every output index: four taps at
    /// `floor(in) − 1 … + 2`, the table entry at `lrintf(delta · 1024)`; a tap outside the image gets weight 0
    /// (its index clamped) and the four are renormalised to sum 1.
    static func tensorFlowCubicTaps(_ inSize: Int, _ outSize: Int) -> [(index: (Int, Int, Int, Int), weight: (Float, Float, Float, Float))] {
        let scale = tensorFlowScale(inSize, outSize)
        let table = tensorFlowKeysTable
        func bound(_ v: Int) -> Int { min(inSize - 1, max(0, v)) }
        return (0..<outSize).map { i in
            let source: Float = (Float(i) + 0.5) * scale - 0.5
            let base = Int(source.rounded(.down))
            let delta = source - Float(base)
            let offset = Int(lrintf(delta * 1024))
            let i0 = bound(base - 1), i1 = bound(base), i2 = bound(base + 1), i3 = bound(base + 2)
            var w0: Float = i0 == base - 1 ? table[offset * 2 + 1] : 0
            var w1: Float = i1 == base ? table[offset * 2] : 0
            var w2: Float = i2 == base + 1 ? table[(1024 - offset) * 2] : 0
            var w3: Float = i3 == base + 2 ? table[(1024 - offset) * 2 + 1] : 0
            let sum = w0 + w1 + w2 + w3
            if abs(sum) >= 1000 * Float.leastNormalMagnitude {
                let inverse = 1 / sum
                w0 *= inverse; w1 *= inverse; w2 *= inverse; w3 *= inverse
            }
            return ((i0, i1, i2, i3), (w0, w1, w2, w3))
        }
    }

    /// `ResizeBicubic` (`interpolate_with_caching`): at each of the four source columns, the vertical
    /// interpolation of the four source rows; then the horizontal one of those four values. Float throughout,
    /// not clamped.
    func tensorFlowBicubic(_ outH: Int, _ outW: Int) -> RGBFloatImage {
        let ys = Self.tensorFlowCubicTaps(height, outH), xs = Self.tensorFlowCubicTaps(width, outW)
        var out = [Float](repeating: 0, count: outH * outW * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let stride = width * 3
                for y in 0..<outH {
                    let (ri, rw) = ys[y]
                    let r0 = ri.0 * stride, r1 = ri.1 * stride, r2 = ri.2 * stride, r3 = ri.3 * stride
                    @inline(__always) func column(_ x: Int) -> Float {
                        Float(src[r0 + x]) * rw.0 + Float(src[r1 + x]) * rw.1 + Float(src[r2 + x]) * rw.2 + Float(src[r3 + x]) * rw.3
                    }
                    for x in 0..<outW {
                        let (ci, cw) = xs[x]
                        let d = (y * outW + x) * 3
                        for c in 0..<3 {
                            dst[d + c] = column(3 * ci.0 + c) * cw.0 + column(3 * ci.1 + c) * cw.1
                                + column(3 * ci.2 + c) * cw.2 + column(3 * ci.3 + c) * cw.3
                        }
                    }
                }
            }
        }
        return RGBFloatImage(unchecked: outW, outH, out)
    }

    /// `ResizeArea`'s span along one axis for output index i: the source cells `start ..< end` under
    /// `[i·scale, (i + 1)·scale)` and the covered fraction of the first and of the last.
    static func tensorFlowAreaSpans(_ inSize: Int, _ outSize: Int) -> [(start: Int, end: Int, first: Float, last: Float)] {
        let scale = tensorFlowScale(inSize, outSize)
        /// The covered fraction of cell v (TensorFlow's nested ternary, with its int→float comparisons).
        func fraction(_ v: Int, _ lo: Float, _ hi: Float) -> Float {
            Float(v) < lo ? (Float(v + 1) > hi ? scale : Float(v + 1) - lo) : (Float(v + 1) > hi ? hi - Float(v) : 1)
        }
        return (0..<outSize).map { i in
            let lo = Float(i) * scale, hi = Float(i + 1) * scale
            let start = Int(lo.rounded(.down)), end = Int(hi.rounded(.up))
            return (start, end, fraction(start, lo, hi), fraction(end - 1, lo, hi))
        }
    }

    /// `ResizeArea` (`ComputePatchSumOf3Channels`): for each covered source row, the row's sum over the covered
    /// columns (first and last weighted by their fractions, indices clamped into the image), times the row's
    /// fraction; the total times `1 / (scale_h · scale_w)`. Float, in TensorFlow's order.
    func tensorFlowArea(_ outH: Int, _ outW: Int) -> RGBFloatImage {
        let ys = Self.tensorFlowAreaSpans(height, outH), xs = Self.tensorFlowAreaSpans(width, outW)
        let hScale = Self.tensorFlowScale(height, outH), wScale = Self.tensorFlowScale(width, outW)
        let normaliser = Float(1.0 / Double(hScale * wScale))
        var out = [Float](repeating: 0, count: outH * outW * 3)
        var rows: [(offset: Int, scale: Float)] = []
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                func boundX(_ v: Int) -> Int { min(width - 1, max(0, v)) }
                for y in 0..<outH {
                    // The covered source rows (clamped into the image) and their fractions.
                    let span = ys[y]
                    rows.removeAll(keepingCapacity: true)
                    var i = span.start
                    while i < span.end {
                        let scale = i == span.start ? span.first : i == span.end - 1 ? span.last : 1
                        rows.append((min(height - 1, max(0, i)) * width * 3, scale))
                        i += 1
                    }
                    for x in 0..<outW {
                        let sx = xs[x]
                        var s0: Float = 0, s1: Float = 0, s2: Float = 0
                        for (row, rowScale) in rows {
                            var p = row + 3 * boundX(sx.start)
                            var r0 = Float(src[p]) * sx.first, r1 = Float(src[p + 1]) * sx.first, r2 = Float(src[p + 2]) * sx.first
                            if sx.start + 1 != sx.end {
                                var c = sx.start + 1
                                while c < sx.end - 1 {
                                    p = row + 3 * boundX(c)
                                    r0 += Float(src[p]); r1 += Float(src[p + 1]); r2 += Float(src[p + 2])
                                    c += 1
                                }
                                p = row + 3 * boundX(sx.end - 1)
                                r0 += Float(src[p]) * sx.last; r1 += Float(src[p + 1]) * sx.last; r2 += Float(src[p + 2]) * sx.last
                            }
                            s0 += r0 * rowScale; s1 += r1 * rowScale; s2 += r2 * rowScale
                        }
                        let d = (y * outW + x) * 3
                        dst[d] = s0 * normaliser; dst[d + 1] = s1 * normaliser; dst[d + 2] = s2 * normaliser
                    }
                }
            }
        }
        return RGBFloatImage(unchecked: outW, outH, out)
    }
}
