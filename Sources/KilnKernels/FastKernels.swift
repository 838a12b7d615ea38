import CKilnKernels
import COpenBLAS
import KilnFormat
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The kernels the runtime calls: same contracts as `ReferenceKernels`, built for speed.
///
/// All tensors are NHWC float32, contiguous, row-major. No kernel allocates: the only scratch memory is the
/// workspace the caller passes to `conv2d` (and a few KiB of stack). Kernels keep no state, so any number of calls
/// may run at once on different threads as long as their outputs and workspaces are distinct (the only shared
/// state is the thread pools, sized by `setKernelThreads`: the AVX2 kernels' own, on which concurrent calls take
/// turns, and OpenBLAS's for the portable path). Unless a kernel says otherwise, the output must not overlap any
/// input.
///
/// Where the CPU has AVX2 and FMA (checked at run time: `ConvAlgorithm.avx2Available`), convolutions packed for
/// `.gemm` or `.winograd`, dense, max pooling, global average pooling and add run the C kernels of CKilnKernels
/// on that pool; everywhere else, and for `.portable` weights, the Swift and OpenBLAS code below.
public enum FastKernels {
    /// The im2col scratch `convWorkspaceFloats(for:)` aims for: 512 Ki floats (2 MiB). Small enough that a
    /// chunk is still in cache when the GEMM reads it back (on ResNet-50's 3×3 layers, chunks of 500–1000 rows
    /// beat whole-image chunks of 3136 rows; `make bench` measures the whole network).
    public static let convWorkspaceBudgetFloats = 512 * 1024
    /// Fewer im2col rows than this per GEMM call wastes OpenBLAS's blocking, so the budget yields to it.
    static let minimumChunkPixels = 64

    /// Floats of workspace `conv2d` should be given for `geometry` with weights packed for `algorithm` (default:
    /// what `packConvWeightsHWIO` picks without geometry), with the kernels' current thread count.
    ///
    /// `.portable`: zero for a pointwise convolution, else whole im2col rows (`kernelH * kernelW * inC` floats each)
    /// up to about `convWorkspaceBudgetFloats`, never fewer than min(64, output pixels) rows. The AVX2 algorithms:
    /// per-thread im2col blocks, or the transformed tiles of a Winograd block.
    public static func convWorkspaceFloats(for geometry: ConvGeometry,
                                           algorithm: ConvAlgorithm = .defaultWithoutGeometry) -> Int {
        switch algorithm {
        case .portable:
            if geometry.isPointwise { return 0 }
            let k = geometry.reductionSize
            let pixels = min(geometry.outputPixels, max(minimumChunkPixels, convWorkspaceBudgetFloats / k))
            return pixels * k
        case .gemm, .winograd:
            var shape = kilnShape(geometry, algorithm: algorithm, relu: false)
            return kiln_conv_workspace_floats(&shape, kiln_threads_get())
        }
    }

    /// `output = activation(conv(input, weights) + bias + residual)`, as `ReferenceKernels.conv2d`.
    ///
    /// - input: `[batch, inH, inW, inC]`
    /// - weights: packed by `packConvWeightsHWIO`/`packConvWeightsOIHW` for this kernel size and channel counts
    ///   (and, for Winograd, stride 1 and dilation 1)
    /// - bias: `[outC]`, or nil
    /// - residual: `[batch, outH, outW, outC]`, or nil; may be exactly `output` (accumulated onto it), but must not
    ///   otherwise overlap it
    /// - output: `[batch, outH, outW, outC]`
    /// - workspace: at least `convWorkspaceFloats(for: geometry, algorithm: weights.algorithm)` floats (the
    ///   `.portable` algorithm also accepts less, down to one im2col row: more, smaller GEMM calls).
    ///
    /// `.portable` (any CPU): a pointwise convolution (1×1, stride 1, unpadded) is one OpenBLAS sgemm
    /// `[pixels, inC] × [inC, outC]` straight on the NHWC input; anything else is im2col over as many output pixels
    /// as the workspace holds, then an sgemm per chunk. `.gemm` and `.winograd` run the AVX2 + FMA kernels of
    /// CKilnKernels on the kernels' thread pool (`setKernelThreads`). Bias, residual and ReLU are applied while each
    /// block of the output is in cache (in registers, for the AVX2 kernels, which apply ReLU6-like clamps there too:
    /// `registerClamp`); any other activation in one pass over the output afterwards (`activate`).
    ///
    /// `outputRowStride` (`.gemm` and `.winograd` only): floats from one output pixel to the next when the output
    /// is a slice of a wider tensor (a Concat's); the residual stays contiguous and must not be the output then.
    public static func conv2d(input: UnsafePointer<Float>, weights: PackedConvWeights,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                              output: UnsafeMutablePointer<Float>, geometry g: ConvGeometry, activation: Activation,
                              workspace: UnsafeMutableBufferPointer<Float>, outputRowStride: Int? = nil) {
        let relu = activation.isReLU
        let clamp = weights.algorithm == .portable ? nil : registerClamp(activation)
        defer {
            if clamp == nil && !relu && !activation.isIdentity {
                activateRows(output, rows: g.outputPixels, width: g.outC, rowStride: outputRowStride ?? g.outC, activation: activation)
            }
        }
        precondition(outputRowStride == nil || weights.algorithm != .portable, "the portable conv2d writes contiguous outputs only")
        precondition(weights.matches(g), "packed weights [\(weights.kernelH), \(weights.kernelW), \(weights.inC), "
            + "\(weights.outC)] for \(weights.algorithm) do not fit \(g)")
        if weights.algorithm != .portable {
            var shape = kilnShape(g, algorithm: weights.algorithm, relu: clamp?.relu ?? relu, maximum: clamp?.maximum)
            shape.out_stride = Int32(outputRowStride ?? 0)
            let need = kiln_conv_workspace_floats(&shape, kiln_threads_get())
            precondition(workspace.count >= need, "conv2d (\(weights.algorithm)) needs a workspace of \(need) floats, "
                + "got \(workspace.count), for \(g)")
            kiln_conv2d(&shape, input, weights.values, bias, residual, output, workspace.baseAddress)
            return
        }
        let pixels = g.outputPixels, k = g.reductionSize, n = g.outC
        // A residual that is the output itself is accumulated by the GEMM (beta = 1), not re-added.
        let accumulate = residual.map { $0 == UnsafePointer(output) } ?? false
        let residualToAdd = accumulate ? nil : residual
        let beta: Float = accumulate ? 1 : 0

        if g.isPointwise {
            sgemm(m: pixels, n: n, k: k, a: input, b: weights.values, c: output, beta: beta)
            applyEpilogue(output, rows: pixels, channels: n, bias: bias, residual: residualToAdd, relu: relu)
            return
        }

        guard let scratch = workspace.baseAddress, workspace.count >= k else {
            preconditionFailure("conv2d needs a workspace of at least \(k) floats (one im2col row), got "
                + "\(workspace.count), for \(g)")
        }
        let chunk = min(pixels, workspace.count / k)
        var first = 0
        while first < pixels {
            let count = min(chunk, pixels - first)
            im2col(input: input, geometry: g, firstPixel: first, pixelCount: count, into: scratch)
            let out = output + first * n
            sgemm(m: count, n: n, k: k, a: scratch, b: weights.values, c: out, beta: beta)
            applyEpilogue(out, rows: count, channels: n, bias: bias, residual: residualToAdd.map { $0 + first * n },
                          relu: relu)
            first += count
        }
    }

    /// The part of `activation` the AVX2/AVX-512 GEMM tiles and the Winograd output transform apply in registers:
    /// max(x, 0) and min(x, maximum) (ReLU, ReLU6, clamps at 0); nil when it is more than that (applied after).
    static func registerClamp(_ a: Activation) -> (relu: Bool, maximum: Float?)? {
        guard a.function == .linear, a.alpha == 1, a.beta == 0, a.minimum == 0 || a.minimum == -.infinity else { return nil }
        return (a.minimum == 0, a.maximum < .infinity ? a.maximum : nil)
    }

    /// The C kernels' description of a convolution call.
    static func kilnShape(_ g: ConvGeometry, algorithm: ConvAlgorithm, relu: Bool, maximum: Float? = nil) -> kiln_conv_shape {
        let code: Int32
        switch algorithm {
        case .winograd(let tile): code = Int32(tile)
        default: code = Int32(KILN_CONV_GEMM)
        }
        return kiln_conv_shape(batch: Int32(g.batch), in_h: Int32(g.inH), in_w: Int32(g.inW), in_c: Int32(g.inC),
                               out_h: Int32(g.outH), out_w: Int32(g.outW), out_c: Int32(g.outC),
                               kernel_h: Int32(g.kernelH), kernel_w: Int32(g.kernelW),
                               stride_h: Int32(g.strideH), stride_w: Int32(g.strideW),
                               dilation_h: Int32(g.dilationH), dilation_w: Int32(g.dilationW),
                               pad_top: Int32(g.padTop), pad_left: Int32(g.padLeft),
                               algorithm: code, relu: relu ? 1 : 0, out_stride: 0, has_max: maximum == nil ? 0 : 1,
                               max_value: maximum ?? 0)
    }

    /// `output = activation(input · weights + bias)`: input `[batch, inFeatures]`, weights `[inFeatures, outFeatures]`
    /// row-major (used as stored, no packing), bias `[outFeatures]` or nil, output `[batch, outFeatures]`.
    public static func dense(input: UnsafePointer<Float>, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                             output: UnsafeMutablePointer<Float>,
                             batch: Int, inFeatures: Int, outFeatures: Int, activation: Activation) {
        let relu = activation.isReLU
        defer {
            if !relu && !activation.isIdentity { activate(input: output, output: output, count: batch * outFeatures, activation: activation) }
        }
        precondition(batch > 0 && inFeatures > 0 && outFeatures > 0
                        && batch <= Int32.max && inFeatures <= Int32.max && outFeatures <= Int32.max,
                     "dense sizes batch \(batch), in \(inFeatures), out \(outFeatures) are out of range")
        if ConvAlgorithm.avx2Available {
            kiln_dense(input, weights, bias, output, batch, inFeatures, outFeatures, relu ? 1 : 0)
            return
        }
        if batch == 1 {
            // y = Wᵀ x, with W row-major [in, out].
            cblas_sgemv(CblasRowMajor, CblasTrans, Int32(inFeatures), Int32(outFeatures), 1,
                        weights, Int32(outFeatures), input, 1, 0, output, 1)
        } else {
            sgemm(m: batch, n: outFeatures, k: inFeatures, a: input, b: weights, c: output, beta: 0)
        }
        applyEpilogue(output, rows: batch, channels: outFeatures, bias: bias, residual: nil, relu: relu)
    }

    /// Max over each window, as `ReferenceKernels.maxPool2d`: padded cells never win.
    public static func maxPool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                 geometry g: PoolGeometry) {
        if ConvAlgorithm.avx2Available {
            kiln_maxpool2d(input, output, Int32(g.batch), Int32(g.inH), Int32(g.inW), Int32(g.channels), Int32(g.outH),
                           Int32(g.outW), Int32(g.kernelH), Int32(g.kernelW), Int32(g.strideH), Int32(g.strideW),
                           Int32(g.padTop), Int32(g.padLeft))
            return
        }
        let c = g.channels
        for b in 0..<g.batch {
            let image = input + b * g.inH * g.inW * c
            for oy in 0..<g.outH {
                let y0 = oy * g.strideH - g.padTop
                let rowsInside = max(y0, 0)..<min(y0 + g.kernelH, g.inH)
                for ox in 0..<g.outW {
                    let x0 = ox * g.strideW - g.padLeft
                    let columnsInside = max(x0, 0)..<min(x0 + g.kernelW, g.inW)
                    let out = output + ((b * g.outH + oy) * g.outW + ox) * c
                    // Geometry guarantees at least one real cell; start from the first and fold in the rest.
                    out.update(from: image + (rowsInside.lowerBound * g.inW + columnsInside.lowerBound) * c, count: c)
                    for iy in rowsInside {
                        for ix in columnsInside {
                            let cell = image + (iy * g.inW + ix) * c
                            for j in 0..<c {
                                let v = cell[j]
                                out[j] = v > out[j] ? v : out[j]
                            }
                        }
                    }
                }
            }
        }
    }

    /// Mean over each window, as `ReferenceKernels.avgPool2d`: padded cells are not counted.
    public static func avgPool2d(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                 geometry g: PoolGeometry) {
        let c = g.channels
        for b in 0..<g.batch {
            let image = input + b * g.inH * g.inW * c
            for oy in 0..<g.outH {
                let y0 = oy * g.strideH - g.padTop
                let rowsInside = max(y0, 0)..<min(y0 + g.kernelH, g.inH)
                for ox in 0..<g.outW {
                    let x0 = ox * g.strideW - g.padLeft
                    let columnsInside = max(x0, 0)..<min(x0 + g.kernelW, g.inW)
                    let out = output + ((b * g.outH + oy) * g.outW + ox) * c
                    out.update(repeating: 0, count: c)
                    for iy in rowsInside {
                        for ix in columnsInside {
                            let cell = image + (iy * g.inW + ix) * c
                            for j in 0..<c { out[j] += cell[j] }
                        }
                    }
                    let scale = 1 / Float(rowsInside.count * columnsInside.count)
                    for j in 0..<c { out[j] *= scale }
                }
            }
        }
    }

    /// Mean over H and W: `[batch, height, width, channels]` → `[batch, channels]`.
    public static func globalAvgPool(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                     batch: Int, height: Int, width: Int, channels: Int) {
        if ConvAlgorithm.avx2Available {
            kiln_global_avgpool(input, output, batch, height * width, channels)
            return
        }
        let cells = height * width
        let scale = 1 / Float(cells)
        for b in 0..<batch {
            let out = output + b * channels
            out.update(repeating: 0, count: channels)
            let image = input + b * cells * channels
            for p in 0..<cells {
                let cell = image + p * channels
                for j in 0..<channels { out[j] += cell[j] }
            }
            for j in 0..<channels { out[j] *= scale }
        }
    }

    /// Mean (or sum) over `axes` of a row-major tensor of `shape` (as `ReferenceKernels.reduce`). Axes that form one
    /// run are `[outer, reduced, inner]`: rows of `inner` floats added in order, in Float; other sets of axes are
    /// first merged into such runs where adjacent, and the rest go through one strided pass per output row.
    public static func reduce(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, shape: [Int], axes: [Int],
                              mean: Bool) {
        // Merge adjacent axes of the same kind: [(size, reduced)].
        var groups: [(size: Int, reduced: Bool)] = []
        for (a, d) in shape.enumerated() where d != 1 {
            let r = axes.contains(a)
            if let last = groups.last, last.reduced == r { groups[groups.count - 1].size *= d } else { groups.append((d, r)) }
        }
        let count = shape.reduce(1, *)
        let reducedCount = max(groups.filter(\.reduced).reduce(1) { $0 * $1.size }, 1)
        let scale: Float = mean ? 1 / Float(reducedCount) : 1
        let runs = groups.filter(\.reduced).count
        if runs <= 1 {
            let r = groups.firstIndex { $0.reduced }
            let outer = r.map { groups[..<$0].reduce(1) { $0 * $1.size } } ?? count
            let span = r.map { groups[$0].size } ?? 1
            let inner = r.map { groups[($0 + 1)...].reduce(1) { $0 * $1.size } } ?? 1
            for o in 0..<outer {
                let y = output + o * inner
                let x = input + o * span * inner
                y.update(from: x, count: inner)
                for k in 1..<max(span, 1) {
                    let row = x + k * inner
                    for i in 0..<inner { y[i] += row[i] }
                }
                if mean { for i in 0..<inner { y[i] *= scale } }
            }
            return
        }
        // Several runs: the reference's walk, in Float.
        let sizes = groups.map(\.size)
        let outSizes = groups.filter { !$0.reduced }.map(\.size)
        let outCount = outSizes.reduce(1, *)
        output.update(repeating: 0, count: outCount)
        var index = [Int](repeating: 0, count: sizes.count)
        for i in 0..<count {
            var rem = i
            for a in stride(from: sizes.count - 1, through: 0, by: -1) { index[a] = rem % sizes[a]; rem /= sizes[a] }
            var o = 0
            for (a, g) in groups.enumerated() where !g.reduced { o = o * g.size + index[a] }
            output[o] += input[i]
        }
        if mean { for o in 0..<outCount { output[o] *= scale } }
    }

    /// `[batch, height, width, channels]` → `[batch, channels]`, as `ReferenceKernels.globalMaxPool`: a running
    /// maximum row over the cells (contiguous channels, which the compiler vectorises).
    public static func globalMaxPool(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                     batch: Int, height: Int, width: Int, channels: Int) {
        let cells = height * width
        for b in 0..<batch {
            let out = output + b * channels
            let image = input + b * cells * channels
            out.update(from: image, count: channels)
            for p in 1..<max(cells, 1) {
                let cell = image + p * channels
                for j in 0..<channels {
                    let v = cell[j]
                    if v > out[j] || v.isNaN { out[j] = v }  // a NaN, once in, stays: v > NaN is false
                }
            }
        }
    }

    /// `output[r, c] = activation(input[r, c] · scale[c] + shift[c])`, as `ReferenceKernels.scaleShift` (one fused
    /// multiply-add per element, then the activation's pass). `output` may be exactly `input`.
    public static func scaleShift(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, rows: Int,
                                  scale: [Float], shift: [Float], activation: Activation) {
        let channels = scale.count
        scale.withUnsafeBufferPointer { s in
            shift.withUnsafeBufferPointer { t in
                for r in 0..<rows {
                    let x = input + r * channels, y = output + r * channels
                    for c in 0..<channels { y[c] = t[c].addingProduct(x[c], s[c]) }
                }
            }
        }
        if !activation.isIdentity { activate(input: output, output: output, count: rows * channels, activation: activation) }
    }

    /// Softmax of each row of `[rows, columns]`, numerically stable (the row maximum is subtracted first).
    /// `output` may be exactly `input`.
    public static func softmax(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                               rows: Int, columns: Int) {
        for r in 0..<rows {
            let x = input + r * columns
            let y = output + r * columns
            var largest = -Float.infinity
            for j in 0..<columns { largest = x[j] > largest ? x[j] : largest }
            var total: Float = 0
            for j in 0..<columns {
                let e = expf(x[j] - largest)
                y[j] = e
                total += e
            }
            let scale = 1 / total
            for j in 0..<columns { y[j] *= scale }
        }
    }

    /// `activation` over `rows` rows of `width` floats, `rowStride` apart, in place.
    public static func activateRows(_ values: UnsafeMutablePointer<Float>, rows: Int, width: Int, rowStride: Int,
                                    activation: Activation) {
        if rowStride == width {
            activate(input: values, output: values, count: rows * width, activation: activation)
            return
        }
        for r in 0..<rows { activate(input: values + r * rowStride, output: values + r * rowStride, count: width, activation: activation) }
    }

    /// Copies `rows` rows of `width` floats from contiguous `input` to `output`, its rows `rowStride` floats apart
    /// (a Concat's slice).
    public static func copyRows(_ input: UnsafePointer<Float>, rows: Int, width: Int, to output: UnsafeMutablePointer<Float>,
                                rowStride: Int) {
        if rowStride == width {
            output.update(from: input, count: rows * width)
            return
        }
        for r in 0..<rows { (output + r * rowStride).update(from: input + r * width, count: width) }
    }

    /// `output[i] = activation(a[i] + b[i])` for `i < count`. `output` may be exactly `a` or `b`.
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                           count: Int, activation: Activation) {
        let relu = activation.isReLU
        if ConvAlgorithm.avx2Available {
            kiln_add(a, b, output, count, relu ? 1 : 0)
        } else if relu {
            for i in 0..<count { output[i] = reluValue(a[i] + b[i]) }
        } else {
            for i in 0..<count { output[i] = a[i] + b[i] }
        }
        if !relu && !activation.isIdentity { activate(input: output, output: output, count: count, activation: activation) }
    }

    /// `output[i] = activation(input[i])` for `i < count`, as `ReferenceKernels.activate` (within a few ulp for the
    /// transcendental functions). `output` may be exactly `input`. Large counts run on the kernels' pool.
    public static func activate(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, count: Int,
                                activation a: Activation) {
        let code = Int32(a.function.rawValue)
        if ConvAlgorithm.avx2Available && kiln_activation_supported(code) == 1 {
            kiln_activate(input, output, count, code, a.alpha, a.beta, a.minimum, a.maximum)
            return
        }
        for i in 0..<count { output[i] = Float(a.referenceValue(Double(input[i]))) }
    }

    /// Permutes axes, as `ReferenceKernels.transpose`: walks the output in order with a carried input index.
    public static func transpose(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, shape: [Int],
                                 perm: [Int]) {
        let rank = shape.count
        var inStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
        let outShape = perm.map { shape[$0] }
        let step = perm.map { inStrides[$0] }
        let count = shape.reduce(1, *)
        guard count > 0 else { return }
        var index = [Int](repeating: 0, count: rank)
        var src = 0
        for o in 0..<count {
            output[o] = input[src]
            var axis = rank - 1
            while axis >= 0 {
                index[axis] += 1
                src += step[axis]
                if index[axis] < outShape[axis] { break }
                src -= step[axis] * outShape[axis]
                index[axis] = 0
                axis -= 1
            }
        }
    }

    /// Constant padding of H and W, as `ReferenceKernels.pad`: padded cells of channel c hold
    /// `channelValues[c]`, or zero when `channelValues` is nil.
    public static func pad(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                           geometry g: PadGeometry, channelValues: UnsafePointer<Float>?) {
        let c = g.channels
        let outRow = g.outW * c
        for b in 0..<g.batch {
            let image = input + b * g.inH * g.inW * c
            let out = output + b * g.outH * outRow
            fillPixels(out, pixels: g.padTop * g.outW, channels: c, values: channelValues)
            for y in 0..<g.inH {
                let row = out + (g.padTop + y) * outRow
                fillPixels(row, pixels: g.padLeft, channels: c, values: channelValues)
                (row + g.padLeft * c).update(from: image + y * g.inW * c, count: g.inW * c)
                fillPixels(row + (g.padLeft + g.inW) * c, pixels: g.padRight, channels: c, values: channelValues)
            }
            fillPixels(out + (g.padTop + g.inH) * outRow, pixels: g.padBottom * g.outW, channels: c,
                       values: channelValues)
        }
    }
}

// MARK: - Pieces

/// `max(x, 0)`, written so that it vectorises; NaN becomes 0.
@inline(__always)
func reluValue(_ x: Float) -> Float { x > 0 ? x : 0 }

extension FastKernels {
    /// Row-major `C[m, n] = A[m, k] · B[k, n] + beta · C`, all densely packed (lda = k, ldb = ldc = n).
    @inline(__always)
    static func sgemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                      c: UnsafeMutablePointer<Float>, beta: Float) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(k), b, Int32(n), beta, c, Int32(n))
    }

    /// Writes im2col rows for output pixels `firstPixel ..< firstPixel + pixelCount` (counted over the whole
    /// batch, row-major) into `rows`: row r is `[kernelH, kernelW, inC]` flattened, the input cells output pixel
    /// `firstPixel + r` reads, zeros where they fall in the padding.
    static func im2col(input: UnsafePointer<Float>, geometry g: ConvGeometry, firstPixel: Int, pixelCount: Int,
                       into rows: UnsafeMutablePointer<Float>) {
        let k = g.reductionSize
        let cin = g.inC
        let tapRow = g.kernelW * cin
        let imagePixels = g.outH * g.outW
        var b = firstPixel / imagePixels
        var oy = (firstPixel % imagePixels) / g.outW
        var ox = firstPixel % g.outW
        for r in 0..<pixelCount {
            let image = input + b * g.inH * g.inW * cin
            let x0 = ox * g.strideW - g.padLeft
            // With dilation 1 and no column in the padding, one kernel row is one contiguous run of the input.
            let contiguous = g.dilationW == 1 && x0 >= 0 && x0 + g.kernelW <= g.inW
            for ky in 0..<g.kernelH {
                let dst = rows + r * k + ky * tapRow
                let iy = oy * g.strideH - g.padTop + ky * g.dilationH
                if iy < 0 || iy >= g.inH {
                    dst.update(repeating: 0, count: tapRow)
                    continue
                }
                let inputRow = image + iy * g.inW * cin
                if contiguous {
                    dst.update(from: inputRow + x0 * cin, count: tapRow)
                } else {
                    for kx in 0..<g.kernelW {
                        let ix = x0 + kx * g.dilationW
                        if ix < 0 || ix >= g.inW {
                            (dst + kx * cin).update(repeating: 0, count: cin)
                        } else {
                            (dst + kx * cin).update(from: inputRow + ix * cin, count: cin)
                        }
                    }
                }
            }
            ox += 1
            if ox == g.outW {
                ox = 0
                oy += 1
                if oy == g.outH { oy = 0; b += 1 }
            }
        }
    }

    /// In place over `[rows, channels]`: adds `bias[channel]` and `residual[row, channel]` when given, then relu.
    static func applyEpilogue(_ out: UnsafeMutablePointer<Float>, rows: Int, channels: Int,
                              bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?, relu: Bool) {
        if bias == nil && residual == nil && !relu { return }
        for r in 0..<rows {
            let o = out + r * channels
            if let bias, let residual {
                let res = residual + r * channels
                for j in 0..<channels { o[j] += bias[j] + res[j] }
            } else if let bias {
                for j in 0..<channels { o[j] += bias[j] }
            } else if let residual {
                let res = residual + r * channels
                for j in 0..<channels { o[j] += res[j] }
            }
            if relu {
                for j in 0..<channels { o[j] = reluValue(o[j]) }
            }
        }
    }

    /// Fills `pixels` consecutive NHWC cells with `values[0..<channels]`, or zeros when `values` is nil.
    static func fillPixels(_ dst: UnsafeMutablePointer<Float>, pixels: Int, channels: Int,
                           values: UnsafePointer<Float>?) {
        guard pixels > 0 else { return }
        guard let values else {
            dst.update(repeating: 0, count: pixels * channels)
            return
        }
        for p in 0..<pixels { (dst + p * channels).update(from: values, count: channels) }
    }
}

/// C [m, n] = op(A) · op(B) + beta · C, row-major and contiguous: op(A) is A [m, k] or, with `transA`, the
/// transpose of A [k, m]; op(B) is B [k, n] or, with `transB`, the transpose of B [n, k]. On the AVX2/AVX-512
/// GEMM and the kernels' threads where the CPU has AVX2 and the product pays for packing B on every call (16 or
/// more columns, a million or more multiply-adds: a hidden layer's products in head training, where it beats
/// Debian's OpenBLAS, which picks an SSE3 kernel on some CPUs; `kiln-train-bench` measures it), else OpenBLAS. The same inputs give the
/// same bits on any thread count.
public func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                  beta: Float, c: UnsafeMutablePointer<Float>) {
    precondition(m >= 0 && n >= 0 && k >= 0, "sgemm sizes must not be negative")
    if ConvAlgorithm.avx2Available, n >= 16, m.multipliedReportingOverflow(by: n).partialValue * k >= 1 << 20,
       kiln_sgemm(transA ? 1 : 0, transB ? 1 : 0, m, n, k, a, b, beta, c) == 0 {
        return
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), 1, a, Int32(transA ? m : k), b, Int32(transB ? k : n), beta, c, Int32(n))
}

/// A thread's floating-point mode, as `flushDenormals` found it.
public struct FloatMode: Sendable {
    fileprivate let raw: UInt32
}

/// Flushes denormal floats to zero (inputs and results) on the calling thread, and on the kernels' threads while
/// they work for it, until `restoreFloatMode`; returns the mode before. For training, where vanishing gradients
/// and Adam's moments reach denormals and every operation on one costs a hundred times more on x86 (TensorFlow
/// trains with them flushed too).
public func flushDenormals() -> FloatMode { FloatMode(raw: kiln_flush_denormals()) }

/// Restores the calling thread's mode from before `flushDenormals`.
public func restoreFloatMode(_ mode: FloatMode) { kiln_restore_float_mode(mode.raw) }

/// The `--threads` values every command line accepts (the kernel pool itself runs at most 64 workers).
public let acceptedKernelThreadCounts = 1...256

/// Sets how many threads the kernels use (process-wide): the AVX2 kernels' pool (the caller plus count − 1
/// workers, at most 64) and OpenBLAS's for the portable path. Call before planning or running, not during: a
/// workspace sized for fewer threads is too small for more.
public func setKernelThreads(_ count: Int) {
    precondition(count >= 1 && count <= 4096, "kernel thread count \(count) is out of range")
    openblas_set_num_threads(Int32(count))
    kiln_threads_set(Int32(min(count, 64)))
}

/// The number of threads the kernels use.
public func kernelThreads() -> Int {
    ConvAlgorithm.avx2Available ? Int(kiln_threads_get()) : Int(openblas_get_num_threads())
}

/// Runs `body(i)` for every `i < count` on the kernels' thread pool (the caller takes part) and returns when all
/// are done. Calls from several threads take turns; `body` must not call `parallelFor` itself.
public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    guard count > 0 else { return }
    if count == 1 {
        body(0)
        return
    }
    withoutActuallyEscaping(body) { body in
        var task = body
        withUnsafeMutablePointer(to: &task) { context in
            kiln_parallel_for(count, { context, index, _ in
                context?.assumingMemoryBound(to: ((Int) -> Void).self).pointee(index)
            }, context)
        }
    }
}
