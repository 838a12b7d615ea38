#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KilnFormat

/// Naive loops, one per op: the oracle the fast kernels are tested against.
///
/// Written to be obviously correct, not fast: every output element is computed from its definition, sums
/// are accumulated in `Double`, and nothing is shared between elements. All tensors are NHWC float32,
/// contiguous, row-major. Unless a kernel says otherwise, the output must not overlap any input.
public enum ReferenceKernels {
    /// `output = activation(conv(input, weights) + bias + residual)`.
    ///
    /// - input: `[batch, inH, inW, inC]`
    /// - weightsHWIO: `[kernelH, kernelW, inC / groups, outC]`; output channel co reads the input channels of its
    ///   group `co / (outC / groups)` only
    /// - bias: `[outC]`, or nil for none
    /// - residual: `[batch, outH, outW, outC]`, or nil for none; may be exactly `output` (each element is read
    ///   before it is written), but must not otherwise overlap it
    /// - output: `[batch, outH, outW, outC]`
    ///
    /// Padded cells are zero.
    public static func conv2d(input: UnsafePointer<Float>, weightsHWIO: UnsafePointer<Float>,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                              output: UnsafeMutablePointer<Float>, geometry g: ConvGeometry, activation: Activation) {
        for n in 0..<g.batch {
            for oy in 0..<g.outH {
                for ox in 0..<g.outW {
                    for co in 0..<g.outC {
                        let firstInput = co / g.groupOutC * g.groupInC
                        var sum = 0.0
                        for ky in 0..<g.kernelH {
                            let iy = oy * g.strideH - g.padTop + ky * g.dilationH
                            if iy < 0 || iy >= g.inH { continue }
                            for kx in 0..<g.kernelW {
                                let ix = ox * g.strideW - g.padLeft + kx * g.dilationW
                                if ix < 0 || ix >= g.inW { continue }
                                for ci in 0..<g.groupInC {
                                    let x = input[((n * g.inH + iy) * g.inW + ix) * g.inC + firstInput + ci]
                                    let w = weightsHWIO[((ky * g.kernelW + kx) * g.groupInC + ci) * g.outC + co]
                                    sum += Double(x) * Double(w)
                                }
                            }
                        }
                        let o = ((n * g.outH + oy) * g.outW + ox) * g.outC + co
                        if let bias { sum += Double(bias[co]) }
                        if let residual { sum += Double(residual[o]) }
                        output[o] = Float(activation.referenceValue(Double(Float(sum))))
                    }
                }
            }
        }
    }

    /// The inputs side by side along the last axis: input k is `[rows, widths[k]]`, the output
    /// `[rows, sum of widths]`, row by row.
    public static func concat(inputs: [UnsafePointer<Float>], widths: [Int], output: UnsafeMutablePointer<Float>, rows: Int) {
        let total = widths.reduce(0, +)
        for r in 0..<rows {
            var column = 0
            for (x, w) in zip(inputs, widths) {
                for j in 0..<w { output[r * total + column + j] = x[r * w + j] }
                column += w
            }
        }
    }

    /// Max over each window: `[batch, inH, inW, channels]` → `[batch, outH, outW, channels]`.
    /// Padded cells never win (as if they held -infinity).
    public static func maxPool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                 geometry g: PoolGeometry) {
        for n in 0..<g.batch {
            for oy in 0..<g.outH {
                for ox in 0..<g.outW {
                    for c in 0..<g.channels {
                        var best = -Float.infinity
                        for ky in 0..<g.kernelH {
                            let iy = oy * g.strideH - g.padTop + ky
                            if iy < 0 || iy >= g.inH { continue }
                            for kx in 0..<g.kernelW {
                                let ix = ox * g.strideW - g.padLeft + kx
                                if ix < 0 || ix >= g.inW { continue }
                                let v = input[((n * g.inH + iy) * g.inW + ix) * g.channels + c]
                                if v > best { best = v }
                            }
                        }
                        output[((n * g.outH + oy) * g.outW + ox) * g.channels + c] = best
                    }
                }
            }
        }
    }

    /// Mean over each window: `[batch, inH, inW, channels]` → `[batch, outH, outW, channels]`.
    /// Padded cells are not counted: the sum is divided by the number of real cells in the window
    /// (TensorFlow/Keras semantics; ONNX `count_include_pad = 0`).
    public static func avgPool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                 geometry g: PoolGeometry) {
        for n in 0..<g.batch {
            for oy in 0..<g.outH {
                for ox in 0..<g.outW {
                    for c in 0..<g.channels {
                        var sum = 0.0
                        var cells = 0
                        for ky in 0..<g.kernelH {
                            let iy = oy * g.strideH - g.padTop + ky
                            if iy < 0 || iy >= g.inH { continue }
                            for kx in 0..<g.kernelW {
                                let ix = ox * g.strideW - g.padLeft + kx
                                if ix < 0 || ix >= g.inW { continue }
                                sum += Double(input[((n * g.inH + iy) * g.inW + ix) * g.channels + c])
                                cells += 1
                            }
                        }
                        output[((n * g.outH + oy) * g.outW + ox) * g.channels + c] = Float(sum / Double(cells))
                    }
                }
            }
        }
    }

    /// Mean over H and W: `[batch, height, width, channels]` → `[batch, channels]`.
    public static func globalAvgPool(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                     batch: Int, height: Int, width: Int, channels: Int) {
        for n in 0..<batch {
            for c in 0..<channels {
                var sum = 0.0
                for y in 0..<height {
                    for x in 0..<width {
                        sum += Double(input[((n * height + y) * width + x) * channels + c])
                    }
                }
                output[n * channels + c] = Float(sum / Double(height * width))
            }
        }
    }

    /// `[batch, height, width, channels]` → `[batch, channels]`, the maximum over the cells (NaN wins, as in
    /// TensorFlow's reduce_max).
    public static func globalMaxPool(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                     batch: Int, height: Int, width: Int, channels: Int) {
        for n in 0..<batch {
            for c in 0..<channels {
                var best = -Float.infinity
                for p in 0..<(height * width) {
                    let v = input[(n * height * width + p) * channels + c]
                    if v > best || v.isNaN { best = v }
                    if best.isNaN { break }
                }
                output[n * channels + c] = best
            }
        }
    }

    /// `output[r, c] = activation(input[r, c] · scale[c] + shift[c])` for rows `r < rows`, in Double, rounded once.
    /// `output` may be exactly `input`.
    public static func scaleShift(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, rows: Int,
                                  scale: [Float], shift: [Float], activation: Activation) {
        let channels = scale.count
        for r in 0..<rows {
            for c in 0..<channels {
                let i = r * channels + c
                output[i] = Float(activation.referenceValue(Double(input[i]) * Double(scale[c]) + Double(shift[c])))
            }
        }
    }

    /// `output = activation(input · weights + bias)`: input `[batch, inFeatures]`, weights `[inFeatures, outFeatures]`,
    /// bias `[outFeatures]` or nil, output `[batch, outFeatures]`.
    public static func dense(input: UnsafePointer<Float>, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                             output: UnsafeMutablePointer<Float>,
                             batch: Int, inFeatures: Int, outFeatures: Int, activation: Activation) {
        for n in 0..<batch {
            for o in 0..<outFeatures {
                var sum = 0.0
                for i in 0..<inFeatures {
                    sum += Double(input[n * inFeatures + i]) * Double(weights[i * outFeatures + o])
                }
                if let bias { sum += Double(bias[o]) }
                output[n * outFeatures + o] = Float(activation.referenceValue(Double(Float(sum))))
            }
        }
    }

    /// Softmax of each row of `[rows, columns]`: `exp(x - max) / Σ exp(x - max)`. `output` may be exactly `input`.
    public static func softmax(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                               rows: Int, columns: Int) {
        for r in 0..<rows {
            let row = r * columns
            var largest = -Double.infinity
            for j in 0..<columns { largest = Swift.max(largest, Double(input[row + j])) }
            var total = 0.0
            for j in 0..<columns { total += exp(Double(input[row + j]) - largest) }
            for j in 0..<columns { output[row + j] = Float(exp(Double(input[row + j]) - largest) / total) }
        }
    }

    /// `output[i] = activation(a[i] + b[i])` for `i < count`. `output` may be exactly `a` or `b`.
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                           count: Int, activation: Activation) {
        for i in 0..<count {
            output[i] = Float(activation.referenceValue(Double(a[i] + b[i])))
        }
    }

    /// `output[i] = activation(input[i])` for `i < count`, from the activation's Double formula, rounded once.
    /// `output` may be exactly `input`.
    public static func activate(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, count: Int,
                                activation: Activation) {
        for i in 0..<count { output[i] = Float(activation.referenceValue(Double(input[i]))) }
    }

    /// Mean (or sum, `mean` false) over `axes` of a row-major tensor of `shape`, accumulated in Double: output element
    /// k holds the reduction over every input element whose kept coordinates are k's (the kept axes in order, so
    /// keepdims changes the shape only). Each input index is decoded into coordinates.
    public static func reduce(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, shape: [Int], axes: [Int],
                              mean: Bool) {
        let rank = shape.count
        let kept = (0..<rank).filter { !axes.contains($0) }
        let outCount = kept.reduce(1) { $0 * shape[$1] }
        let count = shape.reduce(1, *)
        let reduced = outCount == 0 ? 0 : count / outCount
        var sums = [Double](repeating: 0, count: outCount)
        var index = [Int](repeating: 0, count: rank)
        for i in 0..<count {
            var rem = i
            for a in stride(from: rank - 1, through: 0, by: -1) { index[a] = rem % shape[a]; rem /= shape[a] }
            var o = 0
            for a in kept { o = o * shape[a] + index[a] }
            sums[o] += Double(input[i])
        }
        for o in 0..<outCount { output[o] = Float(mean && reduced > 0 ? sums[o] / Double(reduced) : sums[o]) }
    }

    /// Permutes axes: output axis i is input axis perm[i]. Each output index is decoded into coordinates and
    /// the input index computed from them.
    public static func transpose(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, shape: [Int],
                                 perm: [Int]) {
        let rank = shape.count
        var inStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
        let outShape = perm.map { shape[$0] }
        let count = shape.reduce(1, *)
        var index = [Int](repeating: 0, count: rank)
        for o in 0..<count {
            var rem = o
            for i in stride(from: rank - 1, through: 0, by: -1) { index[i] = rem % outShape[i]; rem /= outShape[i] }
            var src = 0
            for i in 0..<rank { src += index[i] * inStrides[perm[i]] }
            output[o] = input[src]
        }
    }

    /// Constant padding of H and W: `[batch, inH, inW, channels]` → `[batch, outH, outW, channels]`.
    /// A padded cell of channel c holds `channelValues[c]`, or zero when `channelValues` is nil.
    public static func pad(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                           geometry g: PadGeometry, channelValues: UnsafePointer<Float>?) {
        for n in 0..<g.batch {
            for oy in 0..<g.outH {
                for ox in 0..<g.outW {
                    for c in 0..<g.channels {
                        let iy = oy - g.padTop
                        let ix = ox - g.padLeft
                        let inside = iy >= 0 && iy < g.inH && ix >= 0 && ix < g.inW
                        output[((n * g.outH + oy) * g.outW + ox) * g.channels + c] = inside
                            ? input[((n * g.inH + iy) * g.inW + ix) * g.channels + c]
                            : (channelValues?[c] ?? 0)
                    }
                }
            }
        }
    }
}

