import Testing
@testable import KilnFormat
import KilnKernels

// Independent oracles for the reference kernels: tiny examples worked out by hand, never copied from output.

/// Runs the reference conv on arrays. Input NHWC, weights HWIO.
private func referenceConv(_ input: [Float], _ weights: [Float], bias: [Float]? = nil, residual: [Float]? = nil,
                           _ g: ConvGeometry, relu: Bool = false) -> [Float] {
    let x = Buffer(input), w = Buffer(weights)
    let b = bias.map(Buffer.init), r = residual.map(Buffer.init)
    let out = Buffer(count: g.outputCount)
    ReferenceKernels.conv2d(input: x.readOnly, weightsHWIO: w.readOnly, bias: b?.readOnly, residual: r?.readOnly,
                            output: out.pointer, geometry: g, activation: relu ? .relu : .none)
    return out.array
}

private let oneToNine: [Float] = [1, 2, 3,
                                  4, 5, 6,
                                  7, 8, 9]

@Suite("reference kernels against hand-computed values")
struct ReferenceKernelTests {
    @Test("conv 3×3 input, 2×2 kernel, valid")
    func convValid() throws {
        // kernel [[1, 2], [3, 4]]:
        //   (0,0) = 1·1 + 2·2 + 4·3 + 5·4 = 37     (0,1) = 2·1 + 3·2 + 5·3 + 6·4 = 47
        //   (1,0) = 4·1 + 5·2 + 7·3 + 8·4 = 67     (1,1) = 5·1 + 6·2 + 8·3 + 9·4 = 77
        let g = try ConvGeometry(batch: 1, inH: 3, inW: 3, inC: 1, outC: 1, kernelH: 2, kernelW: 2)
        #expect(g.outH == 2 && g.outW == 2)
        expectValues(referenceConv(oneToNine, [1, 2, 3, 4], g), [37, 47, 67, 77], "conv valid")
    }

    @Test("conv 3×3 'same' with a ones kernel sums the in-bounds neighbours; bias and relu after")
    func convSame() throws {
        // Each output is the sum of its 3×3 neighbourhood, padding contributing zero:
        //   12 21 16        1+2+4+5    1+…+6      2+3+5+6
        //   27 45 33   =    1+2+4+5+7+8  all     2+3+5+6+8+9
        //   24 39 28        4+5+7+8    4+…+9      5+6+8+9
        let g = try ConvGeometry(batch: 1, inH: 3, inW: 3, inC: 1, outC: 1, kernelH: 3, kernelW: 3,
                                 padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        let ones = [Float](repeating: 1, count: 9)
        expectValues(referenceConv(oneToNine, ones, g), [12, 21, 16, 27, 45, 33, 24, 39, 28], "conv same")
        // With bias -30 and relu: max(x - 30, 0).
        expectValues(referenceConv(oneToNine, ones, bias: [-30], g, relu: true), [0, 0, 0, 0, 15, 3, 0, 9, 0],
                     "conv same + bias + relu")
        // Stride 2 keeps the four corners of the stride-1 result.
        let strided = try ConvGeometry(batch: 1, inH: 3, inW: 3, inC: 1, outC: 1, kernelH: 3, kernelW: 3,
                                       strideH: 2, strideW: 2, padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        expectValues(referenceConv(oneToNine, ones, strided), [12, 16, 24, 28], "conv same stride 2")
    }

    @Test("conv channel indexing: HWIO weights, per-channel bias, residual")
    func convChannels() throws {
        // One pixel, x = [1, 2]; W[ci][co] = [[1, 2, 3], [4, 5, 6]]:
        //   out[co] = 1·W[0][co] + 2·W[1][co] = [1+8, 2+10, 3+12] = [9, 12, 15]
        let g = try ConvGeometry(batch: 1, inH: 1, inW: 1, inC: 2, outC: 3, kernelH: 1, kernelW: 1)
        expectValues(referenceConv([1, 2], [1, 2, 3, 4, 5, 6], g), [9, 12, 15], "conv channels")
        // + bias [0.5, 0, -20] + residual [1, 1, 1], relu: [10.5, 13, 0]
        expectValues(referenceConv([1, 2], [1, 2, 3, 4, 5, 6], bias: [0.5, 0, -20], residual: [1, 1, 1], g, relu: true),
                     [10.5, 13, 0], "conv channels + bias + residual + relu")
    }

    @Test("conv batch items do not mix")
    func convBatch() throws {
        // Two 1×2 images [1, 2] and [10, 20], kernel 1×2 [1, 1]: one output each, 3 and 30.
        let g = try ConvGeometry(batch: 2, inH: 1, inW: 2, inC: 1, outC: 1, kernelH: 1, kernelW: 2)
        expectValues(referenceConv([1, 2, 10, 20], [1, 1], g), [3, 30], "conv batch")
    }

    @Test("conv dilation 2 reads every other cell")
    func convDilation() throws {
        // Input 5×5 holding 1…25 row-major, 2×2 ones kernel, dilation 2 → 3×3 output;
        //   (y, x) = in(y, x) + in(y, x+2) + in(y+2, x) + in(y+2, x+2) = 4·in(y, x) + 24 = 4·(5y + x + 1) + 24,
        //   so (0,0) = 1 + 3 + 11 + 13 = 28 and each step right adds 4, each step down 20.
        let g = try ConvGeometry(batch: 1, inH: 5, inW: 5, inC: 1, outC: 1, kernelH: 2, kernelW: 2,
                                 dilationH: 2, dilationW: 2)
        #expect(g.outH == 3 && g.outW == 3)
        let input = (1...25).map(Float.init)
        expectValues(referenceConv(input, [1, 1, 1, 1], g), [28, 32, 36, 48, 52, 56, 68, 72, 76], "conv dilation")
    }

    @Test("conv asymmetric padding lands on the named side")
    func convAsymmetricPad() throws {
        // Row [1, 2, 3], kernel 1×2 [1, 10], one zero on the left only:
        //   padded row [0, 1, 2, 3] → [0·1 + 1·10, 1·1 + 2·10, 2·1 + 3·10] = [10, 21, 32]
        // (padding on the right instead would give [21, 32, 3]).
        let left = try ConvGeometry(batch: 1, inH: 1, inW: 3, inC: 1, outC: 1, kernelH: 1, kernelW: 2, padLeft: 1)
        expectValues(referenceConv([1, 2, 3], [1, 10], left), [10, 21, 32], "conv pad left")
        let right = try ConvGeometry(batch: 1, inH: 1, inW: 3, inC: 1, outC: 1, kernelH: 1, kernelW: 2, padRight: 1)
        expectValues(referenceConv([1, 2, 3], [1, 10], right), [21, 32, 3], "conv pad right")
    }

    @Test("max pool: padding never wins, even over negative inputs")
    func maxPoolPadding() throws {
        // 2×2 input of negatives, 3×3 window stride 1 pad 1: every window holds all four cells, so every output
        // is the largest, -1. A zero pad would wrongly give 0.
        let g = try PoolGeometry(batch: 1, inH: 2, inW: 2, channels: 1, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1,
                                 padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        let input = Buffer([-1, -2, -3, -4]), out = Buffer(count: g.outputCount)
        ReferenceKernels.maxPool2d(input: input.readOnly, output: out.pointer, geometry: g)
        expectValues(out.array, [-1, -1, -1, -1], "max pool padding")

        // 1…9 in a 3×3, 2×2 window stride 2, pad bottom/right (TF 'same'):
        //   windows {1,2,4,5} {3,6} {7,8} {9} → 5, 6, 8, 9; negated → -1, -3, -7, -9.
        let same = try PoolGeometry(batch: 1, inH: 3, inW: 3, channels: 2, kernelH: 2, kernelW: 2, strideH: 2, strideW: 2,
                                    padBottom: 1, padRight: 1)
        let twoChannels = Buffer(oneToNine.flatMap { [$0, -$0] })
        let out2 = Buffer(count: same.outputCount)
        ReferenceKernels.maxPool2d(input: twoChannels.readOnly, output: out2.pointer, geometry: same)
        expectValues(out2.array, [5, -1, 6, -3, 8, -7, 9, -9], "max pool same")
    }

    @Test("avg pool: divides by the number of real cells")
    func avgPoolPadding() throws {
        // 1…9, 3×3 window stride 1 'same': corner (0,0) = (1+2+4+5)/4 = 3, edge (0,1) = 21/6 = 3.5,
        // centre 45/9 = 5, (0,2) = 16/4 = 4, (1,0) = 27/6 = 4.5, (1,2) = 33/6 = 5.5, (2,0) = 24/4 = 6,
        // (2,1) = 39/6 = 6.5, (2,2) = 28/4 = 7.
        let g = try PoolGeometry(batch: 1, inH: 3, inW: 3, channels: 1, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1,
                                 padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        let input = Buffer(oneToNine), out = Buffer(count: g.outputCount)
        ReferenceKernels.avgPool2d(input: input.readOnly, output: out.pointer, geometry: g)
        expectValues(out.array, [3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7], "avg pool same 3×3")

        // 2×2 window stride 2, pad bottom/right: {1,2,4,5}/4 = 3, {3,6}/2 = 4.5, {7,8}/2 = 7.5, {9}/1 = 9.
        let same = try PoolGeometry(batch: 1, inH: 3, inW: 3, channels: 1, kernelH: 2, kernelW: 2, strideH: 2, strideW: 2,
                                    padBottom: 1, padRight: 1)
        let out2 = Buffer(count: same.outputCount)
        ReferenceKernels.avgPool2d(input: input.readOnly, output: out2.pointer, geometry: same)
        expectValues(out2.array, [3, 4.5, 7.5, 9], "avg pool same 2×2")
    }

    @Test("global average pool per channel and per batch item")
    func globalAvgPool() {
        // Batch 2 of 2×2×2: channel 0 of item 0 holds 1, 2, 3, 4 → 2.5; channel 1 holds 10, 20, 30, 40 → 25;
        // item 1 holds the negatives → -2.5, -25.
        let item: [Float] = [1, 10, 2, 20, 3, 30, 4, 40]
        let input = Buffer(item + item.map { -$0 }), out = Buffer(count: 4)
        ReferenceKernels.globalAvgPool(input: input.readOnly, output: out.pointer, batch: 2, height: 2, width: 2, channels: 2)
        expectValues(out.array, [2.5, 25, -2.5, -25], "global average pool")
    }

    @Test("reduce: mean and sum over one axis, two separate axes, and all")
    func reduce() {
        // x [2, 2, 3] = 1...12: over axis 1 the pairs (1,4) (2,5) (3,6) (7,10) (8,11) (9,12) → means 2.5 3.5 4.5 8.5 9.5 10.5.
        let x = Buffer((1...12).map(Float.init)), out = Buffer(count: 6)
        ReferenceKernels.reduce(input: x.readOnly, output: out.pointer, shape: [2, 2, 3], axes: [1], mean: true)
        expectValues(out.array, [2.5, 3.5, 4.5, 8.5, 9.5, 10.5], "mean over axis 1")
        // Sum over axes 0 and 2 (not adjacent): row j of the middle axis holds 1+2+3+7+8+9 = 30 and 4+5+6+10+11+12 = 48.
        let sums = Buffer(count: 2)
        ReferenceKernels.reduce(input: x.readOnly, output: sums.pointer, shape: [2, 2, 3], axes: [0, 2], mean: false)
        expectValues(sums.array, [30, 48], "sum over axes 0 and 2")
        let all = Buffer(count: 1)
        ReferenceKernels.reduce(input: x.readOnly, output: all.pointer, shape: [2, 2, 3], axes: [0, 1, 2], mean: true)
        expectValues(all.array, [6.5], "mean of everything")
    }

    @Test("dense: x · W + b, relu")
    func dense() {
        // x = [1, 2], W = [[1, 2, 3], [4, 5, 6]], b = [0.5, -20, 0]:
        //   x·W = [9, 12, 15]; + b = [9.5, -8, 15]; relu → [9.5, 0, 15]
        let x = Buffer([1, 2]), w = Buffer([1, 2, 3, 4, 5, 6]), b = Buffer([0.5, -20, 0]), out = Buffer(count: 3)
        ReferenceKernels.dense(input: x.readOnly, weights: w.readOnly, bias: b.readOnly, output: out.pointer,
                               batch: 1, inFeatures: 2, outFeatures: 3, activation: .relu)
        expectValues(out.array, [9.5, 0, 15], "dense")
    }

    @Test("softmax: [0, ln 2] → [1/3, 2/3], large logits, one column")
    func softmax() {
        // e^0 : e^ln2 = 1 : 2. Row 2 is [1000, 1001] (naively e^1000 = inf), e^0 : e^1 = 1 : e,
        // so 1/(1+e) = 0.26894142 and e/(1+e) = 0.73105858. (1000 + ln 3 is not a Float, 1001 is.)
        let ln2 = Float(0.6931471805599453)
        let input = Buffer([0, ln2, 1000, 1001]), out = Buffer(count: 4)
        ReferenceKernels.softmax(input: input.readOnly, output: out.pointer, rows: 2, columns: 2)
        expectValues(out.array, [1.0 / 3, 2.0 / 3, 0.26894142, 0.73105858], "softmax")
        // One column is always 1; in place.
        let single = Buffer([-5, 0, 7])
        ReferenceKernels.softmax(input: single.readOnly, output: single.pointer, rows: 3, columns: 1)
        expectValues(single.array, [1, 1, 1], "softmax one column")
    }

    @Test("add, relu")
    func addRelu() {
        let a = Buffer([1, -2, 0.5]), b = Buffer([-3, 1, 0.25]), out = Buffer(count: 3)
        ReferenceKernels.add(a.readOnly, b.readOnly, output: out.pointer, count: 3, activation: .none)
        expectValues(out.array, [-2, -1, 0.75], "add")
        ReferenceKernels.add(a.readOnly, b.readOnly, output: out.pointer, count: 3, activation: .relu)
        expectValues(out.array, [0, 0, 0.75], "add relu")
        let x = Buffer([-1, 0, 2])
        ReferenceKernels.activate(input: x.readOnly, output: x.pointer, count: 3, activation: .relu)
        expectValues(x.array, [0, 0, 2], "relu")
    }

    @Test("pad: per-channel values on the named sides")
    func pad() throws {
        // One pixel [5, 6], one row on top and one column on the right, filled with [7, 8]:
        //   row 0: [7, 8] [7, 8];  row 1: [5, 6] [7, 8]
        let g = try PadGeometry(batch: 1, inH: 1, inW: 1, channels: 2, padTop: 1, padBottom: 0, padLeft: 0, padRight: 1)
        #expect(g.outH == 2 && g.outW == 2)
        let input = Buffer([5, 6]), values = Buffer([7, 8]), out = Buffer(count: g.outputCount)
        ReferenceKernels.pad(input: input.readOnly, output: out.pointer, geometry: g, channelValues: values.readOnly)
        expectValues(out.array, [7, 8, 7, 8, 5, 6, 7, 8], "pad with values")
        ReferenceKernels.pad(input: input.readOnly, output: out.pointer, geometry: g, channelValues: nil)
        expectValues(out.array, [0, 0, 0, 0, 5, 6, 0, 0], "pad with zero")
    }
}

@Suite("geometry validation")
struct GeometryTests {
    @Test("output sizes of well-known layers")
    func knownSizes() throws {
        // ResNet-50 stem: 224, 7×7 stride 2, TF 'same' pads (2, 3) → 112; stage-1 maxpool on ZeroPadding(1): 56.
        let stem = try ConvGeometry(batch: 1, inH: 224, inW: 224, inC: 3, outC: 64, kernelH: 7, kernelW: 7,
                                    strideH: 2, strideW: 2, padTop: 2, padBottom: 3, padLeft: 2, padRight: 3)
        #expect(stem.outH == 112 && stem.outW == 112)
        #expect(stem.reductionSize == 147 && stem.outputPixels == 112 * 112)
        #expect(!stem.isPointwise)
        let pool = try PoolGeometry(batch: 1, inH: 112, inW: 112, channels: 64, kernelH: 3, kernelW: 3,
                                    strideH: 2, strideW: 2, padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        #expect(pool.outH == 56 && pool.outW == 56)
        let pointwise = try ConvGeometry(batch: 2, inH: 56, inW: 56, inC: 64, outC: 256, kernelH: 1, kernelW: 1)
        #expect(pointwise.isPointwise && pointwise.outH == 56)
        // Dilation widens the window: 3×3 dilation 2 is 5 wide, so 9 → 5 unpadded.
        let dilated = try ConvGeometry(batch: 1, inH: 9, inW: 9, inC: 1, outC: 1, kernelH: 3, kernelW: 3,
                                       dilationH: 2, dilationW: 2)
        #expect(dilated.outH == 5 && dilated.outW == 5)
    }

    @Test("impossible geometry throws a message naming the value")
    func rejects() {
        #expect(throws: KernelGeometryError.self) {
            try ConvGeometry(batch: 0, inH: 3, inW: 3, inC: 1, outC: 1, kernelH: 1, kernelW: 1)
        }
        #expect(throws: KernelGeometryError.self) {
            try ConvGeometry(batch: 1, inH: 3, inW: 3, inC: 1, outC: 1, kernelH: 3, kernelW: 3, strideH: 0)
        }
        #expect(throws: KernelGeometryError.self) {
            try ConvGeometry(batch: 1, inH: 3, inW: 3, inC: 1, outC: 1, kernelH: 3, kernelW: 3, padTop: -1)
        }
        // Kernel larger than the padded input; dilation making it so.
        #expect(throws: KernelGeometryError.self) {
            try ConvGeometry(batch: 1, inH: 3, inW: 3, inC: 1, outC: 1, kernelH: 5, kernelW: 3, padTop: 1)
        }
        #expect(throws: KernelGeometryError.self) {
            try ConvGeometry(batch: 1, inH: 4, inW: 4, inC: 1, outC: 1, kernelH: 3, kernelW: 3, dilationW: 2)
        }
        // Too large to index.
        #expect(throws: KernelGeometryError.self) {
            try ConvGeometry(batch: 1 << 24, inH: 1 << 24, inW: 1 << 24, inC: 1, outC: 1, kernelH: 1, kernelW: 1)
        }
        // A pool window made of padding only.
        #expect(throws: KernelGeometryError.self) {
            try PoolGeometry(batch: 1, inH: 3, inW: 3, channels: 1, kernelH: 2, kernelW: 2, strideH: 1, strideW: 1,
                             padTop: 2)
        }
        #expect(throws: KernelGeometryError.self) {
            try PoolGeometry(batch: 1, inH: 3, inW: 3, channels: 1, kernelH: 2, kernelW: 2, strideH: 1, strideW: 1,
                             padRight: 2)
        }
        #expect(throws: KernelGeometryError.self) {
            try PadGeometry(batch: 1, inH: 3, inW: 3, channels: 1, padTop: 0, padBottom: -1, padLeft: 0, padRight: 0)
        }
        do {
            _ = try ConvGeometry(batch: 1, inH: 3, inW: 3, inC: 1, outC: 1, kernelH: 3, kernelW: 3, strideW: -2)
            Issue.record("stride -2 was accepted")
        } catch {
            #expect(error.description.contains("strideW is -2"))
        }
    }
}
