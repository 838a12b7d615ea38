/// PIL's resampling filters that Keras' `load_img` and torchvision use on 8-bit RGB.
public enum ResampleFilter: String, Sendable, CaseIterable {
    /// `Image.resize(size, Image.NEAREST)`: Keras' `load_img` default.
    case nearest
    /// `Image.resize(size, Image.BILINEAR)`: a triangle filter widened by the scale on downscaling
    /// (antialiasing), in PIL's fixed-point 8-bit arithmetic.
    case bilinear
}

extension RGBImage {
    /// PIL's `Image.resize((width, height), filter)` on an RGB image, reproduced value for value.
    ///
    /// The same size returns the image unchanged (PIL copies it). Sizes below 1 return nil.
    public func resized(width outW: Int, height outH: Int, filter: ResampleFilter) -> RGBImage? {
        guard outW >= 1, outH >= 1 else { return nil }
        if outW == width, outH == height { return self }
        switch filter {
        case .nearest: return resizedNearest(outW, outH)
        case .bilinear: return resizedBilinear(outW, outH)
        }
    }

    /// PIL's NEAREST resize (`ImagingScaleAffine`): the source of output column x is
    /// `Int(xo)` with `xo` starting at `a/2` and advanced by `a = inW / outW` once per column, in Double —
    /// accumulated, not multiplied, as PIL does, so that the rare rounding-boundary cases agree.
    /// Likewise for rows. (PIL would leave black any column whose source falls outside the image; with a
    /// full-image box that cannot happen, but it is kept for fidelity.)
    func resizedNearest(_ outW: Int, _ outH: Int) -> RGBImage {
        func sources(_ inSize: Int, _ outSize: Int) -> [Int] {
            let a = Double(Float(inSize)) / Double(outSize)
            var o = a * 0.5
            var table = [Int](repeating: -1, count: outSize)
            for i in 0..<outSize {
                let s = o < 0 ? -1 : Int(o)
                if s >= 0, s < inSize { table[i] = s }
                o += a
            }
            return table
        }
        let xs = sources(width, outW), ys = sources(height, outH)
        var out = [UInt8](repeating: 0, count: outW * outH * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<outH where ys[y] >= 0 {
                    let srcRow = ys[y] * width * 3, dstRow = y * outW * 3
                    for x in 0..<outW where xs[x] >= 0 {
                        let s = srcRow + 3 * xs[x], d = dstRow + 3 * x
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(unchecked: outW, outH, out)
    }

    /// PIL's BILINEAR resize (`ImagingResample`): two separable passes, each skipped when its size does not
    /// change; each output value is `clip8((2^21 + Σ v·k) >> 22)` with 22-bit fixed-point weights, so the
    /// intermediate image is rounded to 8 bits as in PIL, which makes the order of the passes matter.
    /// Pillow (13) runs the vertical pass first when the height shrinks by more than twice as many pixels
    /// as the width (`inH − outH > 0 && inH − outH > (inW − outW)·2`), else the horizontal pass first,
    /// then only on the source rows that the vertical pass reads.
    func resizedBilinear(_ outW: Int, _ outH: Int) -> RGBImage {
        let needHorizontal = outW != width, needVertical = outH != height
        let horizontalFirst = !(height - outH > 0 && height - outH > (width - outW) * 2)
        let vertical = PILCoefficients(inSize: height, outSize: outH)
        let horizontal = PILCoefficients(inSize: width, outSize: outW)
        var image = self
        if horizontalFirst {
            var rowOffset = 0
            if needHorizontal {
                let first = vertical.bounds.first?.start ?? 0
                let last = vertical.bounds.last.map { $0.start + $0.count } ?? height
                image = image.horizontalPass(horizontal, rows: first..<last)
                rowOffset = first
            }
            if needVertical { image = image.verticalPass(vertical, rowOffset: rowOffset) }
        } else {
            if needVertical { image = image.verticalPass(vertical, rowOffset: 0) }
            if needHorizontal { image = image.horizontalPass(horizontal, rows: 0..<image.height) }
        }
        return image
    }

    /// PIL's `ImagingResampleHorizontal_8bpc` on the source rows `rows`. The sums in 32-bit integers, as PIL
    /// keeps them (`PILCoefficients.fitsInt32` guarantees they cannot overflow; else in 64 bits).
    func horizontalPass(_ c: PILCoefficients, rows: Range<Int>) -> RGBImage {
        let outW = c.bounds.count
        var out = [UInt8](repeating: 0, count: rows.count * outW * 3)
        out.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                guard let src = src.baseAddress, let dst = dst.baseAddress else { return }
                if c.fitsInt32 {
                    c.weights32.withUnsafeBufferPointer { weights in
                        guard let weights = weights.baseAddress else { return }
                        for y in rows {
                            let srcRow = src + y * width * 3, dstRow = dst + (y - rows.lowerBound) * outW * 3
                            for x in 0..<outW {
                                let (start, count, base) = c.bounds[x]
                                var s0: Int32 = 1 << 21, s1: Int32 = 1 << 21, s2: Int32 = 1 << 21
                                var p = srcRow + 3 * start, w = weights + base
                                for _ in 0..<count {
                                    let k = w.pointee
                                    s0 &+= Int32(p[0]) &* k
                                    s1 &+= Int32(p[1]) &* k
                                    s2 &+= Int32(p[2]) &* k
                                    p += 3
                                    w += 1
                                }
                                dstRow[3 * x] = UInt8(clamping: s0 >> 22)
                                dstRow[3 * x + 1] = UInt8(clamping: s1 >> 22)
                                dstRow[3 * x + 2] = UInt8(clamping: s2 >> 22)
                            }
                        }
                    }
                    return
                }
                for y in rows {
                    let srcRow = y * width * 3, dstRow = (y - rows.lowerBound) * outW * 3
                    for x in 0..<outW {
                        let (start, count, base) = c.bounds[x]
                        var s0 = 1 << 21, s1 = 1 << 21, s2 = 1 << 21
                        for i in 0..<count {
                            let w = c.weights[base + i]
                            let p = srcRow + 3 * (start + i)
                            s0 += Int(src[p]) * w
                            s1 += Int(src[p + 1]) * w
                            s2 += Int(src[p + 2]) * w
                        }
                        dst[dstRow + 3 * x] = clip8(s0)
                        dst[dstRow + 3 * x + 1] = clip8(s1)
                        dst[dstRow + 3 * x + 2] = clip8(s2)
                    }
                }
            }
        }
        return RGBImage(unchecked: outW, rows.count, out)
    }

    /// PIL's `ImagingResampleVertical_8bpc`; this image's row 0 is source row `rowOffset`. Each output row is
    /// summed a whole source row at a time (the same integer sums as PIL's, in another order, which integer
    /// addition does not see), so the loop over the row's values vectorises.
    func verticalPass(_ c: PILCoefficients, rowOffset: Int) -> RGBImage {
        let outH = c.bounds.count
        let stride = width * 3
        var out = [UInt8](repeating: 0, count: outH * stride)
        out.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                guard let src = src.baseAddress, let dst = dst.baseAddress else { return }
                if c.fitsInt32 {
                    let acc = UnsafeMutablePointer<Int32>.allocate(capacity: stride)
                    defer { acc.deallocate() }
                    c.weights32.withUnsafeBufferPointer { weights in
                        for y in 0..<outH {
                            let (start, count, base) = c.bounds[y]
                            acc.update(repeating: 1 << 21, count: stride)
                            for i in 0..<count {
                                let k = weights[base + i]
                                let row = src + (start - rowOffset + i) * stride
                                for v in 0..<stride { acc[v] &+= Int32(row[v]) &* k }
                            }
                            let line = dst + y * stride
                            for v in 0..<stride { line[v] = UInt8(clamping: acc[v] >> 22) }
                        }
                    }
                    return
                }
                for y in 0..<outH {
                    let (start, count, base) = c.bounds[y]
                    for v in 0..<stride {
                        var s = 1 << 21
                        for i in 0..<count {
                            s += Int(src[(start - rowOffset + i) * stride + v]) * c.weights[base + i]
                        }
                        dst[y * stride + v] = clip8(s)
                    }
                }
            }
        }
        return RGBImage(unchecked: width, outH, out)
    }

    /// The `height × width` window at (`top`, `left`); parts outside the image are black
    /// (torchvision pads with 0 before a centre crop larger than the image).
    public func cropped(top: Int, left: Int, height h: Int, width w: Int) -> RGBImage? {
        guard h >= 1, w >= 1 else { return nil }
        var out = [UInt8](repeating: 0, count: h * w * 3)
        let x0 = max(left, 0), x1 = min(left + w, width)
        guard x0 < x1 else { return RGBImage(unchecked: w, h, out) }
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<h {
                    let sy = top + y
                    guard sy >= 0, sy < height else { continue }
                    let s = (sy * width + x0) * 3, d = (y * w + x0 - left) * 3
                    for i in 0..<(x1 - x0) * 3 { dst[d + i] = src[s + i] }
                }
            }
        }
        return RGBImage(unchecked: w, h, out)
    }
}

/// `clip8` of PIL's Resample.c: the 22-bit fixed-point sum to a byte, saturating.
@inline(__always)
func clip8(_ v: Int) -> UInt8 {
    UInt8(clamping: v >> 22)
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter along one axis, with the
/// box (0, inSize). Kept in PIL's order of Double operations, since rounding to 22-bit integers makes
/// the last bit of a weight matter. The weights are stored packed (PIL keeps `ksize` per output), so an
/// extreme reduction needs about 2·inSize of them, not outSize·ksize.
struct PILCoefficients {
    /// Per output index: first source index, number of taps, and where its weights start in `weights`.
    var bounds: [(start: Int, count: Int, offset: Int)]
    /// The fixed-point weights (sum 2^22 ± rounding), output after output.
    var weights: [Int]
    /// The same weights in 32 bits, and whether every sum of 8-bit values times them fits in 32 bits
    /// (|2^21| + 255 · Σ|w| < 2^31 for every output: always, for the bilinear filter's non-negative weights).
    var weights32: [Int32] = []
    var fitsInt32 = false

    init(inSize: Int, outSize: Int) {
        let scale = Double(Float(inSize) - Float(0)) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = 1.0 * filterScale            // the bilinear (triangle) filter's support is 1
        let inverseFilterScale = 1.0 / filterScale
        bounds = []
        bounds.reserveCapacity(outSize)
        weights = []
        weights.reserveCapacity(Int(min(Double(outSize) * (2 * support + 1), Double(4 * inSize + 4 * outSize))))
        var k: [Double] = []
        for xx in 0..<outSize {
            let center = 0.0 + (Double(xx) + 0.5) * scale
            var ww = 0.0
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = max(min(Int(center + support + 0.5), inSize) - xmin, 0)
            k.removeAll(keepingCapacity: true)
            for x in 0..<xmax {
                let w = triangle((Double(x + xmin) - center + 0.5) * inverseFilterScale)
                k.append(w)
                ww += w
            }
            bounds.append((xmin, xmax, weights.count))
            for x in 0..<xmax {
                if ww != 0 { k[x] /= ww }
                let scaled = k[x] * Double(1 << 22)
                weights.append(k[x] < 0 ? Int(-0.5 + scaled) : Int(0.5 + scaled))
            }
        }
        fitsInt32 = bounds.allSatisfy { b in
            (1 << 21) + 255 * weights[b.offset..<b.offset + b.count].reduce(0) { $0 + abs($1) } < Int(Int32.max)
        }
        if fitsInt32 { weights32 = weights.map { Int32($0) } }
    }

    @inline(__always)
    func triangle(_ x: Double) -> Double {
        let a = x < 0 ? -x : x
        return a < 1 ? 1 - a : 0
    }
}
