import Testing
@testable import KilnKernels

// Fast-against-reference checks for every op besides conv2d, one tester value per op.

struct PoolTester: Sendable, CustomTestStringConvertible {
    var batch = 1, inH = 5, inW = 5, channels = 3
    var kernelH = 3, kernelW = 3, strideH = 1, strideW = 1
    var padTop = 0, padBottom = 0, padLeft = 0, padRight = 0
    var seed: UInt64 = 1

    var testDescription: String {
        "b\(batch) \(inH)×\(inW)×\(channels) k\(kernelH)×\(kernelW) s\(strideH),\(strideW) "
            + "pad \(padTop),\(padBottom),\(padLeft),\(padRight)"
    }

    func test(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let g = try PoolGeometry(batch: batch, inH: inH, inW: inW, channels: channels,
                                 kernelH: kernelH, kernelW: kernelW, strideH: strideH, strideW: strideW,
                                 padTop: padTop, padBottom: padBottom, padLeft: padLeft, padRight: padRight)
        var rng = SplitMix64(seed: seed)
        // Mostly negative, so a padded cell read as zero would win a max or shift a mean.
        let input = Buffer.random(count: g.inputCount, in: -2...0.5, using: &rng)
        let shape = [batch, g.outH, g.outW, channels]

        let maxExpected = Buffer(count: g.outputCount), maxActual = Buffer(count: g.outputCount)
        ReferenceKernels.maxPool2d(input: input.readOnly, output: maxExpected.pointer, geometry: g)
        FastKernels.maxPool2d(input: input.readOnly, output: maxActual.pointer, geometry: g)
        expectClose(maxActual, maxExpected, shape: shape, relativeTolerance: 0, "maxPool2d \(testDescription)",
                    sourceLocation: sourceLocation)

        let avgExpected = Buffer(count: g.outputCount), avgActual = Buffer(count: g.outputCount)
        ReferenceKernels.avgPool2d(input: input.readOnly, output: avgExpected.pointer, geometry: g)
        FastKernels.avgPool2d(input: input.readOnly, output: avgActual.pointer, geometry: g)
        expectClose(avgActual, avgExpected, shape: shape, relativeTolerance: 1e-6, "avgPool2d \(testDescription)",
                    sourceLocation: sourceLocation)
    }

    static let sweep: [PoolTester] = [
        PoolTester(inH: 1, inW: 1, channels: 1, kernelH: 1, kernelW: 1),
        // ResNet: ZeroPadding(1) + MaxPool 3×3 stride 2 on an even input.
        PoolTester(inH: 12, inW: 12, channels: 17, strideH: 2, strideW: 2, padTop: 1, padBottom: 1, padLeft: 1, padRight: 1),
        // TF "same" 3×3 stride 1, and 2×2 stride 2 on odd sizes (pad bottom/right only).
        PoolTester(batch: 3, inH: 7, inW: 5, channels: 4, padTop: 1, padBottom: 1, padLeft: 1, padRight: 1, seed: 3),
        PoolTester(inH: 7, inW: 9, channels: 3, kernelH: 2, kernelW: 2, strideH: 2, strideW: 2,
                   padBottom: 1, padRight: 1, seed: 4),
        // Stride larger than the window, asymmetric pads, non-square window.
        PoolTester(batch: 3, inH: 11, inW: 13, channels: 5, kernelH: 2, kernelW: 3, strideH: 3, strideW: 2,
                   padTop: 1, padBottom: 0, padLeft: 0, padRight: 2, seed: 5),
        // A window as large as the input (global), and one larger than it thanks to padding.
        PoolTester(inH: 7, inW: 7, channels: 64, kernelH: 7, kernelW: 7, seed: 6),
        PoolTester(batch: 3, inH: 2, inW: 3, channels: 1, kernelH: 3, kernelW: 4, padTop: 1, padBottom: 2,
                   padLeft: 3, padRight: 3, seed: 7),
        // Whole 8-channel vectors only, and vectors plus a tail, on ResNet's stem pool.
        PoolTester(batch: 2, inH: 9, inW: 9, channels: 16, strideH: 2, strideW: 2, padTop: 1, padBottom: 1,
                   padLeft: 1, padRight: 1, seed: 8),
        PoolTester(inH: 10, inW: 6, channels: 27, strideH: 2, strideW: 2, padTop: 1, padBottom: 1, padLeft: 1,
                   padRight: 1, seed: 9),
    ]
}

struct DenseTester: Sendable, CustomTestStringConvertible {
    var batch = 1, inFeatures = 1, outFeatures = 1
    var bias = false, relu = false
    var seed: UInt64 = 1

    var testDescription: String {
        "b\(batch) \(inFeatures)→\(outFeatures)\(bias ? " +bias" : "")\(relu ? " relu" : "")"
    }

    func test(sourceLocation: SourceLocation = #_sourceLocation) {
        var rng = SplitMix64(seed: seed)
        let input = Buffer.random(count: batch * inFeatures, using: &rng)
        let weights = Buffer.random(count: inFeatures * outFeatures, using: &rng)
        let biasValues = bias ? Buffer.random(count: outFeatures, using: &rng) : nil
        let expected = Buffer(count: batch * outFeatures), actual = Buffer(count: batch * outFeatures)
        ReferenceKernels.dense(input: input.readOnly, weights: weights.readOnly, bias: biasValues?.readOnly,
                               output: expected.pointer, batch: batch, inFeatures: inFeatures,
                               outFeatures: outFeatures, relu: relu)
        FastKernels.dense(input: input.readOnly, weights: weights.readOnly, bias: biasValues?.readOnly,
                          output: actual.pointer, batch: batch, inFeatures: inFeatures,
                          outFeatures: outFeatures, relu: relu)
        expectClose(actual, expected, shape: [batch, outFeatures], relativeTolerance: 1e-5,
                    "dense \(testDescription)", sourceLocation: sourceLocation)
    }

    static let sweep: [DenseTester] = [
        DenseTester(),
        DenseTester(batch: 1, inFeatures: 17, outFeatures: 5, bias: true, seed: 2),
        DenseTester(batch: 3, inFeatures: 17, outFeatures: 5, bias: true, relu: true, seed: 3),
        DenseTester(batch: 1, inFeatures: 2048, outFeatures: 1000, bias: true, seed: 4),
        DenseTester(batch: 3, inFeatures: 2048, outFeatures: 1000, relu: true, seed: 5),
        DenseTester(batch: 7, inFeatures: 64, outFeatures: 65, bias: true, relu: true, seed: 6),
        // One row range (fewer than 128 inputs), and partial sums too large for the stack (written straight
        // into the output by one task).
        DenseTester(batch: 2, inFeatures: 63, outFeatures: 9, bias: true, seed: 7),
        DenseTester(batch: 40, inFeatures: 130, outFeatures: 1001, bias: true, relu: true, seed: 8),
        // Two row ranges (on 2 threads) that both end in rows outside a group of four, columns past the last 8.
        DenseTester(batch: 2, inFeatures: 257, outFeatures: 30, bias: true, seed: 9),
    ]
}

struct SoftmaxCase: Sendable, CustomTestStringConvertible {
    var rows: Int
    var columns: Int
    var scale: Float = 1
    var testDescription: String { "\(rows)×\(columns) scale \(scale)" }

    static let sweep: [SoftmaxCase] = [
        SoftmaxCase(rows: 1, columns: 1),
        SoftmaxCase(rows: 1, columns: 2),
        SoftmaxCase(rows: 3, columns: 17),
        SoftmaxCase(rows: 2, columns: 1000),
        // Logits far from zero: a softmax without the max subtraction overflows to inf/inf = NaN.
        SoftmaxCase(rows: 3, columns: 10, scale: 1000),
    ]
}

struct PadTester: Sendable, CustomTestStringConvertible {
    var batch = 1, inH = 3, inW = 3, channels = 2
    var padTop = 0, padBottom = 0, padLeft = 0, padRight = 0
    var channelValues = false

    var testDescription: String {
        "b\(batch) \(inH)×\(inW)×\(channels) pad \(padTop),\(padBottom),\(padLeft),\(padRight)"
            + (channelValues ? " per-channel value" : " zero")
    }

    static let sweep: [PadTester] = [
        PadTester(inH: 1, inW: 1, channels: 1),
        PadTester(inH: 1, inW: 1, channels: 1, padTop: 1, padBottom: 1, padLeft: 1, padRight: 1),
        PadTester(batch: 3, inH: 5, inW: 4, channels: 3, padTop: 3, padBottom: 0, padLeft: 1, padRight: 2, channelValues: true),
        PadTester(batch: 3, inH: 5, inW: 4, channels: 3, padTop: 0, padBottom: 2, padLeft: 3, padRight: 0),
        PadTester(inH: 7, inW: 7, channels: 17, padTop: 3, padBottom: 3, padLeft: 3, padRight: 3, channelValues: true),
    ]
}

@Suite("other ops: fast against reference")
struct OpFastTests {
    @Test(arguments: PoolTester.sweep)
    func pools(_ tester: PoolTester) throws { try tester.test() }

    @Test(arguments: DenseTester.sweep)
    func dense(_ tester: DenseTester) { tester.test() }

    @Test(arguments: [(1, 1, 1, 1), (1, 7, 7, 64), (3, 5, 3, 17), (3, 1, 9, 2)])
    func globalAvgPool(_ shape: (Int, Int, Int, Int)) {
        let (n, h, w, c) = shape
        var rng = SplitMix64(seed: UInt64(n * 1000 + h * 100 + w * 10 + c))
        let input = Buffer.random(count: n * h * w * c, using: &rng)
        let expected = Buffer(count: n * c), actual = Buffer(count: n * c)
        ReferenceKernels.globalAvgPool(input: input.readOnly, output: expected.pointer, batch: n, height: h, width: w, channels: c)
        FastKernels.globalAvgPool(input: input.readOnly, output: actual.pointer, batch: n, height: h, width: w, channels: c)
        expectClose(actual, expected, shape: [n, c], relativeTolerance: 1e-6, "globalAvgPool [\(n), \(h), \(w), \(c)]")
    }

    @Test(arguments: SoftmaxCase.sweep)
    func softmax(_ shape: SoftmaxCase) {
        var rng = SplitMix64(seed: UInt64(shape.rows * 31 + shape.columns))
        let count = shape.rows * shape.columns
        let input = Buffer.random(count: count, in: -shape.scale...shape.scale, using: &rng)
        let expected = Buffer(count: count), actual = Buffer(count: count)
        ReferenceKernels.softmax(input: input.readOnly, output: expected.pointer, rows: shape.rows, columns: shape.columns)
        FastKernels.softmax(input: input.readOnly, output: actual.pointer, rows: shape.rows, columns: shape.columns)
        expectClose(actual, expected, shape: [shape.rows, shape.columns], relativeTolerance: 1e-5,
                    "softmax \(shape.testDescription)")
        // In place gives the same.
        FastKernels.softmax(input: input.readOnly, output: input.pointer, rows: shape.rows, columns: shape.columns)
        expectClose(input, expected, shape: [shape.rows, shape.columns], relativeTolerance: 1e-5,
                    "softmax in place \(shape.testDescription)")
    }

    @Test(arguments: [1, 17, 1000], [false, true])
    func addAndRelu(count: Int, relu: Bool) {
        var rng = SplitMix64(seed: UInt64(count))
        let a = Buffer.random(count: count, using: &rng), b = Buffer.random(count: count, using: &rng)
        let expected = Buffer(count: count), actual = Buffer(count: count)
        ReferenceKernels.add(a.readOnly, b.readOnly, output: expected.pointer, count: count, relu: relu)
        FastKernels.add(a.readOnly, b.readOnly, output: actual.pointer, count: count, relu: relu)
        expectClose(actual, expected, shape: [count], relativeTolerance: 0, "add \(count) relu \(relu)")
        FastKernels.add(a.readOnly, b.readOnly, output: a.pointer, count: count, relu: relu)
        expectClose(a, expected, shape: [count], relativeTolerance: 0, "add in place \(count) relu \(relu)")

        let reluExpected = Buffer(count: count), reluActual = Buffer(count: count)
        ReferenceKernels.relu(input: b.readOnly, output: reluExpected.pointer, count: count)
        FastKernels.relu(input: b.readOnly, output: reluActual.pointer, count: count)
        expectClose(reluActual, reluExpected, shape: [count], relativeTolerance: 0, "relu \(count)")
    }

    @Test(arguments: PadTester.sweep)
    func pad(_ t: PadTester) throws {
        let g = try PadGeometry(batch: t.batch, inH: t.inH, inW: t.inW, channels: t.channels,
                                padTop: t.padTop, padBottom: t.padBottom, padLeft: t.padLeft, padRight: t.padRight)
        var rng = SplitMix64(seed: UInt64(g.outputCount))
        let input = Buffer.random(count: g.inputCount, using: &rng)
        let values = t.channelValues ? Buffer.random(count: t.channels, using: &rng) : nil
        let expected = Buffer(count: g.outputCount), actual = Buffer(count: g.outputCount)
        ReferenceKernels.pad(input: input.readOnly, output: expected.pointer, geometry: g, channelValues: values?.readOnly)
        FastKernels.pad(input: input.readOnly, output: actual.pointer, geometry: g, channelValues: values?.readOnly)
        expectClose(actual, expected, shape: [t.batch, g.outH, g.outW, t.channels], relativeTolerance: 0,
                    "pad \(t.testDescription)")
    }
}
