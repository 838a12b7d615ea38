import Testing
@testable import KilnFormat
import KilnKernels

/// One fast-vs-reference convolution check: packs with the real packer, runs both kernels on the same seeded
/// inputs, and compares relative to max|reference|.
struct ConvTester: Sendable, CustomTestStringConvertible {
    enum Residual: Sendable { case none, separate, inPlace }
    enum Workspace: Sendable { case recommended, rows(Int) }

    var batch = 1, inH = 5, inW = 5, inC = 3, outC = 4
    var kernelH = 3, kernelW = 3
    var strideH = 1, strideW = 1
    var dilationH = 1, dilationW = 1
    var padTop = 0, padBottom = 0, padLeft = 0, padRight = 0
    var bias = false
    var residual = Residual.none
    var relu = false
    var workspace = Workspace.recommended
    /// nil: what `packConvWeightsHWIO` picks without geometry (`.gemm` with AVX2 + FMA, else `.portable`).
    var algorithm: ConvAlgorithm? = nil
    var seed: UInt64 = 1

    /// Relative to max|reference|. Winograd's transforms cost precision: F(2,3) a little, F(4,3) more (its
    /// points ±2 put factors up to 8 in the output transform).
    var relativeTolerance: Float {
        switch algorithm {
        case .winograd(tile: 4)?: return 1e-4
        case .winograd?: return 3e-5
        default: return 1e-5
        }
    }

    /// A copy with `change` applied, for building sweeps.
    func with(_ change: (inout ConvTester) -> Void) -> ConvTester {
        var copy = self
        change(&copy)
        return copy
    }

    /// The same geometry with bias, a separate residual and relu all on.
    var fused: ConvTester { with { $0.bias = true; $0.residual = .separate; $0.relu = true; $0.seed += 100 } }

    var testDescription: String {
        var s = "b\(batch) \(inH)×\(inW)×\(inC)→\(outC) k\(kernelH)×\(kernelW) s\(strideH),\(strideW)"
        if dilationH != 1 || dilationW != 1 { s += " d\(dilationH),\(dilationW)" }
        if padTop + padBottom + padLeft + padRight > 0 { s += " pad \(padTop),\(padBottom),\(padLeft),\(padRight)" }
        if bias { s += " +bias" }
        switch residual {
        case .none: break
        case .separate: s += " +residual"
        case .inPlace: s += " +residual(in place)"
        }
        if relu { s += " relu" }
        if case .rows(let r) = workspace { s += " ws \(r) rows" }
        if let algorithm { s += " [\(algorithm)]" }
        return s
    }

    func test(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let g = try ConvGeometry(batch: batch, inH: inH, inW: inW, inC: inC, outC: outC,
                                 kernelH: kernelH, kernelW: kernelW, strideH: strideH, strideW: strideW,
                                 dilationH: dilationH, dilationW: dilationW,
                                 padTop: padTop, padBottom: padBottom, padLeft: padLeft, padRight: padRight)
        var rng = SplitMix64(seed: seed)
        let input = Buffer.random(count: g.inputCount, using: &rng)
        let weights = Buffer.random(count: g.weightCount, using: &rng)
        let biasValues = bias ? Buffer.random(count: outC, using: &rng) : nil
        let residualValues = residual == .none ? nil : Buffer.random(count: g.outputCount, using: &rng)

        let expected = Buffer(count: g.outputCount)
        ReferenceKernels.conv2d(input: input.readOnly, weightsHWIO: weights.readOnly, bias: biasValues?.readOnly,
                                residual: residualValues?.readOnly, output: expected.pointer, geometry: g, activation: relu ? .relu : .none)

        let chosen = algorithm ?? .defaultWithoutGeometry
        let packed = packConvWeightsHWIO(weights.readOnly, kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC,
                                         algorithm: chosen)
        #expect(packed.algorithm == chosen && packed.matches(g) && !packed.isBorrowed)
        let workspaceFloats: Int
        switch workspace {
        case .recommended: workspaceFloats = FastKernels.convWorkspaceFloats(for: g, algorithm: chosen)
        case .rows(let r): workspaceFloats = r * g.reductionSize
        }
        let scratch = Buffer(count: workspaceFloats)
        let actual = Buffer(count: g.outputCount)
        var residualPointer = residualValues?.readOnly
        if residual == .inPlace, let residualValues {
            actual.copy(from: residualValues)
            residualPointer = actual.readOnly
        }
        FastKernels.conv2d(input: input.readOnly, weights: packed, bias: biasValues?.readOnly,
                           residual: residualPointer, output: actual.pointer, geometry: g, activation: relu ? .relu : .none,
                           workspace: scratch.bufferPointer)
        expectClose(actual, expected, shape: [batch, g.outH, g.outW, outC],
                    relativeTolerance: relativeTolerance, "\(testDescription)", sourceLocation: sourceLocation)
    }

    /// The algorithms this CPU can run for this geometry: both GEMMs, and Winograd F(2,3) and F(4,3) where they fit.
    var algorithms: [ConvAlgorithm] {
        guard ConvAlgorithm.avx2Available else { return [.portable] }
        var all: [ConvAlgorithm] = [.portable, .gemm]
        if kernelH == 3 && kernelW == 3 && strideH == 1 && strideW == 1 && dilationH == 1 && dilationW == 1
            && inC % 8 == 0 && outC % 8 == 0 {
            all += [.winograd(tile: 2), .winograd(tile: 4)]
        }
        return all
    }

    /// This tester once per algorithm the CPU can run for it.
    var everyAlgorithm: [ConvTester] { algorithms.map { a in with { $0.algorithm = a } } }

    /// The sweep: awkward sizes (1, primes, powers of two ± 1), kernels 1/2/3/7 and non-square, strides 1/2,
    /// dilation 1/2, symmetric and asymmetric pads, batch 1 and 3; each geometry plain and fully fused.
    static let sweep: [ConvTester] = {
        let base = ConvTester()
        let geometries: [ConvTester] = [
            // Pointwise (one straight sgemm).
            base.with { $0.inH = 1; $0.inW = 1; $0.inC = 1; $0.outC = 1; $0.kernelH = 1; $0.kernelW = 1 },
            base.with { $0.batch = 3; $0.inH = 5; $0.inW = 7; $0.inC = 17; $0.outC = 16; $0.kernelH = 1; $0.kernelW = 1 },
            base.with { $0.inH = 8; $0.inW = 8; $0.inC = 64; $0.outC = 65; $0.kernelH = 1; $0.kernelW = 1 },
            base.with { $0.inH = 3; $0.inW = 2; $0.inC = 63; $0.outC = 1; $0.kernelH = 1; $0.kernelW = 1 },
            // 1×1 that is not pointwise: ResNet's stride-2 projection; a padded 1×1.
            base.with { $0.inH = 7; $0.inW = 7; $0.inC = 16; $0.outC = 32; $0.kernelH = 1; $0.kernelW = 1
                        $0.strideH = 2; $0.strideW = 2 },
            base.with { $0.batch = 3; $0.inH = 4; $0.inW = 5; $0.inC = 5; $0.outC = 3; $0.kernelH = 1; $0.kernelW = 1
                        $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1 },
            // 3×3.
            base.with { $0.inH = 1; $0.inW = 1; $0.inC = 1; $0.outC = 1
                        $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1 },
            base.with { $0.batch = 3; $0.inH = 7; $0.inW = 7; $0.inC = 3; $0.outC = 5
                        $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1 },
            base.with { $0.inH = 8; $0.inW = 8; $0.inC = 16; $0.outC = 16; $0.strideH = 2; $0.strideW = 2
                        $0.padTop = 0; $0.padBottom = 1; $0.padLeft = 0; $0.padRight = 1 },
            base.with { $0.inH = 9; $0.inW = 9; $0.inC = 17; $0.outC = 13 },
            base.with { $0.batch = 3; $0.inH = 11; $0.inW = 13; $0.inC = 5; $0.outC = 7; $0.strideH = 2; $0.strideW = 2
                        $0.padTop = 1; $0.padBottom = 0; $0.padLeft = 0; $0.padRight = 1 },
            base.with { $0.inH = 9; $0.inW = 9; $0.inC = 4; $0.outC = 3; $0.dilationH = 2; $0.dilationW = 2
                        $0.padTop = 2; $0.padBottom = 2; $0.padLeft = 2; $0.padRight = 2 },
            base.with { $0.batch = 3; $0.inH = 10; $0.inW = 6; $0.inC = 2; $0.outC = 9; $0.strideH = 2; $0.strideW = 1
                        $0.dilationH = 1; $0.dilationW = 2; $0.padTop = 2; $0.padBottom = 1; $0.padLeft = 0; $0.padRight = 3 },
            // 2×2 stride 2, no padding.
            base.with { $0.inH = 6; $0.inW = 5; $0.inC = 7; $0.outC = 8; $0.kernelH = 2; $0.kernelW = 2
                        $0.strideH = 2; $0.strideW = 2 },
            // 7×7: a ResNet-like stem (TF "same" on an even input), a kernel larger than the input, dilated.
            base.with { $0.inH = 16; $0.inW = 16; $0.inC = 3; $0.outC = 8; $0.kernelH = 7; $0.kernelW = 7
                        $0.strideH = 2; $0.strideW = 2; $0.padTop = 2; $0.padBottom = 3; $0.padLeft = 2; $0.padRight = 3 },
            base.with { $0.batch = 3; $0.inH = 5; $0.inW = 5; $0.inC = 2; $0.outC = 3; $0.kernelH = 7; $0.kernelW = 7
                        $0.padTop = 3; $0.padBottom = 3; $0.padLeft = 3; $0.padRight = 3 },
            base.with { $0.inH = 13; $0.inW = 13; $0.inC = 3; $0.outC = 4; $0.kernelH = 7; $0.kernelW = 7
                        $0.dilationH = 2; $0.dilationW = 2; $0.padTop = 6; $0.padBottom = 6; $0.padLeft = 6; $0.padRight = 6 },
            // Non-square kernels (Inception-style 1×7 and 7×1).
            base.with { $0.inH = 6; $0.inW = 11; $0.inC = 5; $0.outC = 6; $0.kernelH = 1; $0.kernelW = 7
                        $0.padLeft = 3; $0.padRight = 3 },
            base.with { $0.batch = 3; $0.inH = 11; $0.inW = 3; $0.inC = 5; $0.outC = 6; $0.kernelH = 7; $0.kernelW = 1
                        $0.padTop = 3; $0.padBottom = 3 },
        ]
        var cases: [ConvTester] = []
        for (i, g) in geometries.enumerated() {
            let seeded = g.with { $0.seed = UInt64(i + 1) }
            cases += seeded.everyAlgorithm
            cases += seeded.fused.everyAlgorithm
        }
        return cases
    }()

    /// The AVX2 (and AVX-512) GEMM's edges: row counts around its 6-row tiles and 120-row blocks, column counts around its
    /// 16-column panels, reductions around its 256-deep passes (a residual accumulated in place must survive
    /// the passes that store partial sums), each pointwise (A read in place) and padded 1×1 (im2col).
    static let gemmEdges: [ConvTester] = {
        guard ConvAlgorithm.avx2Available else { return [] }
        var cases: [ConvTester] = []
        var seed: UInt64 = 500
        func add(_ t: ConvTester) {
            seed += 1
            cases.append(t.with { $0.algorithm = .gemm; $0.seed = seed })
        }
        let pointwise = ConvTester().with { $0.kernelH = 1; $0.kernelW = 1; $0.inH = 1 }
        for pixels in [1, 2, 5, 6, 7, 11, 13, 119, 120, 121, 241] {
            add(pointwise.with { $0.inW = pixels; $0.inC = 9; $0.outC = 16 }.fused)
        }
        for outC in [1, 8, 15, 16, 17, 31, 33, 48] {
            add(pointwise.with { $0.inW = 13; $0.inC = 5; $0.outC = outC }.fused)
        }
        for inC in [1, 255, 256, 257, 600] {
            add(pointwise.with { $0.inW = 8; $0.inC = inC; $0.outC = 24 }.fused)
            add(pointwise.with { $0.inW = 8; $0.inC = inC; $0.outC = 17; $0.bias = true; $0.residual = .inPlace
                                 $0.relu = true })
        }
        // The AVX-512 GEMM (where the CPU has it): 12-row tiles over pairs of panels, 14-row tiles over a lone last
        // panel, balanced row tiles (12, 14, 15, 25, 49 rows), with and without a narrow panel after them.
        for (pixels, outC) in [(12, 32), (14, 48), (15, 64), (25, 80), (49, 96), (49, 57), (121, 112)] {
            add(pointwise.with { $0.inW = pixels; $0.inC = 19; $0.outC = outC }.fused)
        }
        // im2col with K past one pass, a residual in place, and rows that span images.
        add(ConvTester().with { $0.batch = 3; $0.inH = 5; $0.inW = 4; $0.inC = 40; $0.outC = 20
                                $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1
                                $0.bias = true; $0.residual = .inPlace; $0.relu = true })
        // Many row blocks (the per-thread im2col path) and few (the shared one).
        add(ConvTester().with { $0.inH = 40; $0.inW = 41; $0.inC = 3; $0.outC = 16; $0.kernelH = 7; $0.kernelW = 7
                                $0.strideH = 2; $0.strideW = 2; $0.padTop = 3; $0.padBottom = 3; $0.padLeft = 3
                                $0.padRight = 3 }.fused)
        add(ConvTester().with { $0.inH = 7; $0.inW = 7; $0.inC = 64; $0.outC = 80
                                $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1 }.fused)
        // A few row blocks per thread, rounded up to a whole number per thread (22 x 23 = 506 rows: 5 blocks, 6
        // on 2 threads), from a stride-2 3x3 as `hoistStrides` makes them.
        add(ConvTester().with { $0.inH = 44; $0.inW = 45; $0.inC = 16; $0.outC = 40; $0.strideH = 2; $0.strideW = 2
                                $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1 }.fused)
        return cases
    }()

    /// Winograd F(2,3) and F(4,3): images smaller than, equal to and just past one tile and many tiles, partial
    /// tiles at the bottom/right, "same", valid and asymmetric pads, batches, channel counts that leave the last
    /// 16-column panel half empty (and channels in multiples of 16, for the 16-lane transforms), every epilogue.
    static let winogradSweep: [ConvTester] = {
        guard ConvAlgorithm.avx2Available else { return [] }
        var cases: [ConvTester] = []
        var seed: UInt64 = 900
        let sizes: [(Int, Int)] = [(1, 1), (2, 3), (4, 4), (5, 7), (6, 6), (7, 7), (9, 13), (14, 14), (17, 5)]
        let pads: [(Int, Int, Int, Int)] = [(1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 1, 0), (2, 2, 2, 2)]
        let channels: [(Int, Int)] = [(8, 8), (16, 24), (24, 40), (64, 16), (32, 48)]
        for (i, (h, w)) in sizes.enumerated() {
            for (j, (t, b, l, r)) in pads.enumerated() where h + t + b >= 3 && w + l + r >= 3 {
                let (inC, outC) = channels[(i + j) % channels.count]
                for tile in [2, 4] {
                    seed += 1
                    let base = ConvTester().with {
                        $0.batch = (i + j) % 3 == 0 ? 3 : 1; $0.inH = h; $0.inW = w; $0.inC = inC; $0.outC = outC
                        $0.padTop = t; $0.padBottom = b; $0.padLeft = l; $0.padRight = r
                        $0.algorithm = .winograd(tile: tile); $0.seed = seed
                    }
                    cases.append((i + j) % 2 == 0 ? base.fused : base.with { $0.bias = true; $0.relu = true })
                }
            }
        }
        for tile in [2, 4] {
            let mid = ConvTester().with {
                $0.batch = 2; $0.inH = 28; $0.inW = 28; $0.inC = 64; $0.outC = 136
                $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1; $0.algorithm = .winograd(tile: tile)
            }
            cases.append(mid.with { $0.bias = true; $0.residual = .inPlace; $0.relu = true; $0.seed = 990 })
            cases.append(mid.with { $0.residual = .separate; $0.seed = 991 })
        }
        return cases
    }()

    /// Fusion and workspace variants on a few geometries: each epilogue combination, a residual accumulated in
    /// place, and workspaces of one row and of 7 rows (chunks that end mid-row and mid-image).
    static let variants: [ConvTester] = {
        let padded = ConvTester().with {
            $0.batch = 3; $0.inH = 7; $0.inW = 6; $0.inC = 5; $0.outC = 17
            $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1
        }
        let pointwise = ConvTester().with {
            $0.batch = 3; $0.inH = 4; $0.inW = 3; $0.inC = 9; $0.outC = 10; $0.kernelH = 1; $0.kernelW = 1
        }
        var cases: [ConvTester] = []
        for g in [padded, pointwise] {
            cases.append(g.with { $0.bias = true })
            cases.append(g.with { $0.relu = true })
            cases.append(g.with { $0.residual = .separate })
            cases.append(g.with { $0.bias = true; $0.relu = true })
            cases.append(g.with { $0.residual = .inPlace })
            cases.append(g.with { $0.residual = .inPlace; $0.bias = true; $0.relu = true })
        }
        // Smaller workspaces than recommended (the portable im2col path only).
        for rows in [1, 7] {
            cases.append(padded.with { $0.workspace = .rows(rows); $0.algorithm = .portable })
            cases.append(padded.fused.with { $0.workspace = .rows(rows); $0.algorithm = .portable })
            cases.append(padded.with { $0.residual = .inPlace; $0.bias = true; $0.relu = true; $0.workspace = .rows(rows)
                                       $0.algorithm = .portable })
        }
        // A mid-sized layer (28×28×64 → 64, 3×3), big enough for OpenBLAS's real blocking, in uneven chunks.
        let mid = ConvTester().with {
            $0.inH = 28; $0.inW = 28; $0.inC = 64; $0.outC = 64
            $0.padTop = 1; $0.padBottom = 1; $0.padLeft = 1; $0.padRight = 1
        }
        cases += mid.fused.everyAlgorithm
        cases.append(mid.with { $0.workspace = .rows(100); $0.algorithm = .portable })
        return cases
    }()
}

@Suite("conv2d: fast against reference")
struct ConvFastTests {
    @Test(arguments: ConvTester.sweep)
    func sweep(_ tester: ConvTester) throws {
        try tester.test()
    }

    @Test(arguments: ConvTester.variants)
    func fusionAndWorkspace(_ tester: ConvTester) throws {
        try tester.test()
    }

    @Test(arguments: ConvTester.gemmEdges)
    func gemmEdges(_ tester: ConvTester) throws {
        try tester.test()
    }

    @Test(arguments: ConvTester.winogradSweep)
    func winograd(_ tester: ConvTester) throws {
        try tester.test()
    }

    @Test("OIHW and HWIO packers agree, and so do convolutions with either")
    func packersAgree() throws {
        let g = try ConvGeometry(batch: 2, inH: 5, inW: 4, inC: 3, outC: 7, kernelH: 3, kernelW: 2,
                                 padTop: 1, padBottom: 1, padLeft: 0, padRight: 1)
        var rng = SplitMix64(seed: 42)
        let hwio = Buffer.random(count: g.weightCount, using: &rng)
        // OIHW[o][i][y][x] = HWIO[y][x][i][o]
        let oihw = Buffer(count: g.weightCount)
        for y in 0..<g.kernelH {
            for x in 0..<g.kernelW {
                for i in 0..<g.inC {
                    for o in 0..<g.outC {
                        oihw.pointer[((o * g.inC + i) * g.kernelH + y) * g.kernelW + x] =
                            hwio.pointer[((y * g.kernelW + x) * g.inC + i) * g.outC + o]
                    }
                }
            }
        }
        let a = packConvWeightsHWIO(hwio.readOnly, kernelH: 3, kernelW: 2, inC: 3, outC: 7)
        let b = packConvWeightsOIHW(oihw.readOnly, kernelH: 3, kernelW: 2, inC: 3, outC: 7)
        #expect(a.algorithm == b.algorithm)
        // Panels pad each row to 16 columns; the portable layout is HWIO as is.
        #expect(a.count == b.count && a.count >= g.weightCount)
        if a.algorithm == .portable { #expect(a.count == g.weightCount) }
        #expect(Array(UnsafeBufferPointer(start: a.values, count: a.count))
                == Array(UnsafeBufferPointer(start: b.values, count: b.count)))
        #expect(Int(bitPattern: a.values) % 64 == 0)

        let input = Buffer.random(count: g.inputCount, using: &rng)
        let expected = Buffer(count: g.outputCount)
        ReferenceKernels.conv2d(input: input.readOnly, weightsHWIO: hwio.readOnly, bias: nil, residual: nil,
                                output: expected.pointer, geometry: g, activation: .none)
        let scratch = Buffer(count: FastKernels.convWorkspaceFloats(for: g, algorithm: b.algorithm))
        let actual = Buffer(count: g.outputCount)
        FastKernels.conv2d(input: input.readOnly, weights: b, bias: nil, residual: nil, output: actual.pointer,
                           geometry: g, activation: .none, workspace: scratch.bufferPointer)
        expectClose(actual, expected, shape: [2, g.outH, g.outW, 7], relativeTolerance: 1e-5, "OIHW-packed conv")
    }

    @Test("algorithm policy: load-time choice by channels; larger batches switch direct layers to F(2,3) from 64 tiles on, never to F(4,3)")
    func algorithmPolicy() throws {
        guard ConvAlgorithm.avx2Available else { return }
        func choose(_ inC: Int, _ outC: Int, k: Int = 3, stride: Int = 1) -> ConvAlgorithm {
            ConvAlgorithm.choose(kernelH: k, kernelW: k, inC: inC, outC: outC, strideH: stride, strideW: stride,
                                 dilationH: 1, dilationW: 1)
        }
        #expect(choose(64, 64) == .winograd(tile: 4))
        #expect(choose(128, 128) == .winograd(tile: 2))  // F(4,3) there costs accuracy (see `choose`)
        #expect(choose(256, 256) == .winograd(tile: 2))
        #expect(choose(512, 512) == .gemm)
        #expect(choose(128, 128, stride: 2) == .gemm)
        #expect(choose(64, 64, k: 1) == .gemm)
        #expect(choose(12, 12) == .gemm)  // not multiples of 8
        func larger(_ current: ConvAlgorithm, batch: Int, size: Int, channels: Int = 256, stride: Int = 1,
                    kernel: Int = 3) throws -> ConvAlgorithm? {
            let g = try ConvGeometry(batch: batch, inH: size, inW: size, inC: channels, outC: channels,
                                     kernelH: kernel, kernelW: kernel, strideH: stride, strideW: stride,
                                     padTop: kernel / 2, padBottom: kernel / 2, padLeft: kernel / 2, padRight: kernel / 2)
            return ConvAlgorithm.forLargerBatch(current, geometry: g)
        }
        // ResNet-50's 14² stage stays F(2,3) at any batch (F(4,3) there costs accuracy); the 7² stage: 16 F(2,3)
        // tiles per image, so F(2,3) from batch 4 on.
        #expect(try larger(.winograd(tile: 2), batch: 1, size: 14) == nil)
        #expect(try larger(.winograd(tile: 2), batch: 64, size: 14) == nil)
        #expect(try larger(.gemm, batch: 1, size: 7, channels: 512) == nil)
        #expect(try larger(.gemm, batch: 4, size: 7, channels: 512) == .winograd(tile: 2))
        #expect(try larger(.gemm, batch: 8, size: 28, channels: 512, stride: 2) == nil)
        #expect(try larger(.gemm, batch: 8, size: 28, channels: 512, kernel: 1) == nil)
        #expect(try larger(.winograd(tile: 4), batch: 64, size: 56) == nil)
    }

    @Test("portable workspace sizing: none for pointwise, whole im2col rows within the budget otherwise")
    func workspaceSizing() throws {
        func floats(_ g: ConvGeometry) -> Int { FastKernels.convWorkspaceFloats(for: g, algorithm: .portable) }
        let pointwise = try ConvGeometry(batch: 1, inH: 56, inW: 56, inC: 64, outC: 256, kernelH: 1, kernelW: 1)
        #expect(floats(pointwise) == 0)
        if ConvAlgorithm.avx2Available {
            #expect(FastKernels.convWorkspaceFloats(for: pointwise, algorithm: .gemm) == 0)
        }

        // ResNet-50 stage 1 3×3 (K = 576): the 512 Ki-float budget holds 910 of its 3136 rows.
        let stage1 = try ConvGeometry(batch: 1, inH: 56, inW: 56, inC: 64, outC: 64, kernelH: 3, kernelW: 3,
                                      padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        #expect(floats(stage1) == 910 * 576)

        // A small layer gets all of its rows: 7×7 output, K = 4608 (the budget would hold 113).
        let small = try ConvGeometry(batch: 1, inH: 7, inW: 7, inC: 512, outC: 512, kernelH: 3, kernelW: 3,
                                     padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        #expect(floats(small) == 49 * 4608)

        // A deep 3×3 (K = 18432): the budget holds only 28 rows, so the 64-row floor wins.
        let deep = try ConvGeometry(batch: 8, inH: 7, inW: 7, inC: 2048, outC: 512, kernelH: 3, kernelW: 3,
                                    padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        #expect(floats(deep) == 64 * 18432)

        // A huge K still gets 64 rows (or all of them, when fewer).
        let huge = try ConvGeometry(batch: 1, inH: 9, inW: 9, inC: 8192, outC: 1, kernelH: 7, kernelW: 7)
        #expect(floats(huge) == 9 * 7 * 7 * 8192)
    }

    @Test("concurrent calls with shared packed weights and distinct outputs give the reference result")
    func concurrentCalls() async throws {
        let algorithms = ConvTester().with { $0.inC = 16; $0.outC = 24 }.algorithms
        let g = try ConvGeometry(batch: 2, inH: 12, inW: 12, inC: 16, outC: 24, kernelH: 3, kernelW: 3,
                                 strideH: 1, strideW: 1, padTop: 1, padBottom: 1, padLeft: 1, padRight: 1)
        var rng = SplitMix64(seed: 7)
        let weights = Buffer.random(count: g.weightCount, using: &rng)
        let bias = Buffer.random(count: g.outC, using: &rng)
        let inputs = (0..<8).map { _ in Buffer.random(count: g.inputCount, using: &rng) }
        let expected = inputs.map { input in
            let out = Buffer(count: g.outputCount)
            ReferenceKernels.conv2d(input: input.readOnly, weightsHWIO: weights.readOnly, bias: bias.readOnly,
                                    residual: nil, output: out.pointer, geometry: g, activation: .relu)
            return out
        }
        for algorithm in algorithms {
            let packed = packConvWeightsHWIO(weights.readOnly, kernelH: 3, kernelW: 3, inC: 16, outC: 24,
                                             algorithm: algorithm)
            // The portable path gets 5 rows (many chunks, many GEMM calls); the others what they need.
            let floats = algorithm == .portable ? 9 * 16 * 5 : FastKernels.convWorkspaceFloats(for: g, algorithm: algorithm)
            let outputs = (0..<8).map { _ in Buffer(count: g.outputCount) }
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<8 {
                    let input = inputs[i], output = outputs[i]
                    group.addTask {
                        let scratch = Buffer(count: floats)
                        for _ in 0..<20 {
                            FastKernels.conv2d(input: input.readOnly, weights: packed, bias: bias.readOnly, residual: nil,
                                               output: output.pointer, geometry: g, activation: .relu,
                                               workspace: scratch.bufferPointer)
                        }
                    }
                }
            }
            let tolerance: Float = algorithm == .winograd(tile: 4) ? 1e-4 : (algorithm == .winograd(tile: 2) ? 3e-5 : 1e-5)
            for i in 0..<8 {
                expectClose(outputs[i], expected[i], shape: [2, 12, 12, 24], relativeTolerance: tolerance,
                            "\(algorithm) task \(i)")
            }
        }
    }
}
