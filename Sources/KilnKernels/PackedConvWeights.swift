import CKilnKernels

/// How a convolution is computed, fixed when its weights are packed.
public enum ConvAlgorithm: Sendable, Equatable, CustomStringConvertible {
    /// im2col + OpenBLAS sgemm on HWIO weights: any CPU, any geometry.
    case portable
    /// AVX2 + FMA: a pointwise convolution is one GEMM on the NHWC rows, anything else im2col blocks + GEMM;
    /// weights in 16-column panels. Any geometry. The GEMM runs on AVX-512 registers where the CPU has them
    /// (same panels; checked at run time, `KILN_CPU=avx2` turns it off).
    case gemm
    /// AVX2 + FMA: Winograd F(tile×tile, 3×3) with tile 2 or 4 (16 or 36 GEMMs on transformed tiles). Only for
    /// 3×3 kernels at stride 1 and dilation 1 with input and output channels multiples of 8.
    case winograd(tile: Int)

    public var description: String {
        switch self {
        case .portable: return "portable"
        case .gemm: return "gemm"
        case .winograd(let tile): return "winograd F(\(tile)x\(tile),3x3)"
        }
    }

    /// False while a model is loaded with Winograd turned off (`Model(bundle:winograd: false)`, `--exact`): every
    /// layer then gets `.gemm` (direct convolution), for comparing rounding or when the transforms' error matters.
    /// A task-local value, so loads on other threads keep their own choice.
    @TaskLocal public static var winogradAllowed = true

    /// True when the AVX2 + FMA kernels may run on this CPU (checked once, at run time).
    public static var avx2Available: Bool { kiln_cpu_has_avx2_fma() != 0 }

    /// The algorithm for a convolution when only its kernel is known: `.gemm` where AVX2 + FMA are available,
    /// else `.portable`.
    public static var defaultWithoutGeometry: ConvAlgorithm { avx2Available ? .gemm : .portable }

    /// The policy: which algorithm a convolution layer gets, from what is known at load time (the kernel, the
    /// channels, stride and dilation; not the image size, which may change per call).
    ///
    /// Winograd trades weight memory (and some precision) for arithmetic: F(4,3) does a 3×3 layer in 1/4 of the
    /// multiplies with 4× the weights, F(2,3) in 1/2.25 with 16/9×. F(4,3)'s transforms have larger coefficients, so
    /// its rounding error grows with the channels it sums: on ResNet-50's parity fixture (max|Δ|/max|float64 Keras|
    /// over both images, `make bench`'s † row) F(4,3) in the 28² stage (128×128 channels) and in the 14² stage
    /// (256×256) put the outputs 5.0e-6 to 7.0e-6 from the float64 answer, F(2,3) there 1.3e-6 to 1.7e-6 (direct
    /// convolution: 5.6e-6), for 1-3% more time at batch 1 and about 5% at batch 8. So: F(4,3) up to 64×64 channels
    /// (the 56² stage), F(2,3) up to 256×256 (the 28² and 14² stages), direct above (512×512, the 7² stage: a 7×7
    /// output wastes a quarter of its tiles on padding, and these layers hold most of a ResNet's 3×3 weights).
    /// Load-time choices keep a batch-1 model within 1.5× its weight bytes; `forLargerBatch` trades more memory
    /// for arithmetic where a plan has many rows.
    public static func choose(kernelH: Int, kernelW: Int, inC: Int, outC: Int,
                              strideH: Int, strideW: Int, dilationH: Int, dilationW: Int) -> ConvAlgorithm {
        guard avx2Available else { return .portable }
        guard kernelH == 3, kernelW == 3, strideH == 1, strideW == 1, dilationH == 1, dilationW == 1,
              inC % 8 == 0, outC % 8 == 0, winogradAllowed else { return .gemm }
        let size = inC * outC
        if size <= 64 * 64 { return .winograd(tile: 4) }
        if size <= 256 * 256 { return .winograd(tile: 2) }
        return .gemm
    }

    /// For a plan with many output rows: the algorithm that does a layer packed for `current` in fewer multiplies,
    /// at the cost of more weight memory, or nil to keep `current`. Winograd reads each transformed weight matrix
    /// once per block of tiles: with fewer than 64 tiles it streams from memory faster than it is used, so a direct
    /// layer moves to F(2,3) from 64 tiles on (ResNet-50's 7² stage from batch 4 on). Never to F(4,3): above 64×64
    /// channels its rounding error is what `choose` avoids (see there), and F(4,3) layers stay F(4,3).
    public static func forLargerBatch(_ current: ConvAlgorithm, geometry g: ConvGeometry) -> ConvAlgorithm? {
        guard avx2Available, g.kernelH == 3, g.kernelW == 3, g.strideH == 1, g.strideW == 1, g.dilationH == 1,
              g.dilationW == 1, g.inC % 8 == 0, g.outC % 8 == 0 else { return nil }
        func tiles(_ m: Int) -> Int { g.batch * ((g.outH + m - 1) / m) * ((g.outW + m - 1) / m) }
        switch current {
        case .gemm: return tiles(2) >= 64 ? .winograd(tile: 2) : nil
        default: return nil
        }
    }
}

/// Convolution weights in the layout their algorithm reads, made once by an explicit packer
/// (`packConvWeightsHWIO`, `packConvWeightsOIHW`) and owned (or borrowed, see below) for the life of the model.
///
/// Layouts, by `algorithm`:
/// - `.portable`: HWIO flattened, a row-major `[kernelH * kernelW * inC, outC]` matrix with rows ordered
///   (ky, kx, ci): the B operand of `im2col(input) [pixels, kH·kW·inC] × B`.
/// - `.gemm`: the same matrix cut into panels of 16 columns, each `[kH·kW·inC][16]` (the last zero-padded): the
///   AVX2 microkernel reads a panel front to back.
/// - `.winograd(tile: m)`: `(m+2)²` matrices `U[ξ] = (G g Gᵀ)[ξ]` of `[inC, outC]`, each packed like `.gemm`.
///
/// `.portable` weights that lie in a read-only file mapping (a bundle's tensors) are *borrowed*, not copied:
/// `values` then points into the mapping, which must stay mapped while they are used (a `Model` keeps its
/// `Bundle`). Everything else is packed into 64-byte-aligned storage owned here, and a mapped source's pages are
/// handed back to the OS once packed (they stay readable: the next read faults them in from the file again), so
/// that a loaded model holds one copy of its weights. Immutable after packing, so one instance may be read by
/// any number of concurrent kernel calls.
public final class PackedConvWeights: @unchecked Sendable {
    public let kernelH: Int, kernelW: Int, inC: Int, outC: Int
    public let algorithm: ConvAlgorithm
    /// Rows of the unpacked matrix: `kernelH * kernelW * inC`.
    public var rows: Int { kernelH * kernelW * inC }
    /// Number of floats in `values`.
    public let count: Int
    /// True when `values` points into the source mapping rather than into storage of its own.
    public let isBorrowed: Bool
    private let storage: AlignedFloatBuffer?
    private let borrowed: UnsafePointer<Float>?

    /// The packed values, laid out for `algorithm`.
    public var values: UnsafePointer<Float> { borrowed ?? UnsafePointer(storage!.floats) }

    /// Weights packed beforehand (a bundle's PACK section), borrowed in place: `packed` must hold exactly the
    /// floats `algorithm` packs `[kernelH, kernelW, inC, outC]` into, and stay mapped while these are used.
    fileprivate init(prepacked packed: UnsafePointer<Float>, kernelH: Int, kernelW: Int, inC: Int, outC: Int,
                     algorithm: ConvAlgorithm, count: Int) {
        self.kernelH = kernelH; self.kernelW = kernelW; self.inC = inC; self.outC = outC
        self.algorithm = algorithm
        self.count = count
        isBorrowed = true
        borrowed = packed
        storage = nil
    }

    /// The number of floats `algorithm` packs `[kernelH, kernelW, inC, outC]` into.
    public static func packedFloats(kernelH: Int, kernelW: Int, inC: Int, outC: Int, algorithm: ConvAlgorithm) -> Int {
        let rows = kernelH * kernelW * inC
        switch algorithm {
        case .portable: return rows * outC
        case .gemm: return kiln_gemm_packed_floats(rows, outC)
        case .winograd(let tile): return kiln_winograd_packed_floats(Int32(tile), inC, outC)
        }
    }

    fileprivate init(source: UnsafePointer<Float>, kernelH: Int, kernelW: Int, inC: Int, outC: Int,
                     algorithm: ConvAlgorithm) {
        precondition(kernelH > 0 && kernelW > 0 && inC > 0 && outC > 0,
                     "conv weights need positive sizes, got [\(kernelH), \(kernelW), \(inC), \(outC)]")
        let (partial, o1) = kernelH.multipliedReportingOverflow(by: kernelW)
        let (rows, o2) = partial.multipliedReportingOverflow(by: inC)
        let (plain, o3) = rows.multipliedReportingOverflow(by: outC)
        precondition(!o1 && !o2 && !o3 && plain <= Int.max / 64,
                     "conv weights [\(kernelH), \(kernelW), \(inC), \(outC)] are too large")
        self.kernelH = kernelH; self.kernelW = kernelW; self.inC = inC; self.outC = outC
        self.algorithm = algorithm
        let sourceBytes = plain * MemoryLayout<Float>.stride
        switch algorithm {
        case .portable:
            count = plain
            if kiln_is_readonly_file_mapping(source, sourceBytes) != 0 {
                isBorrowed = true
                borrowed = source
                storage = nil
            } else {
                isBorrowed = false
                borrowed = nil
                let copy = AlignedFloatBuffer(floats: plain)
                copy.floats.update(from: source, count: plain)
                storage = copy
            }
            return
        case .gemm:
            precondition(ConvAlgorithm.avx2Available, "the .gemm algorithm needs AVX2 and FMA")
            count = kiln_gemm_packed_floats(rows, outC)
            isBorrowed = false
            borrowed = nil
            let packed = AlignedFloatBuffer(floats: count)
            packGEMMPanels(source, rows: rows, outC: outC, into: packed.floats)
            storage = packed
        case .winograd(let tile):
            precondition(kernelH == 3 && kernelW == 3 && (tile == 2 || tile == 4) && inC % 8 == 0 && outC % 8 == 0
                            && ConvAlgorithm.avx2Available,
                         "Winograd F(\(tile),3) does not fit weights [\(kernelH), \(kernelW), \(inC), \(outC)] on this CPU")
            count = kiln_winograd_packed_floats(Int32(tile), inC, outC)
            isBorrowed = false
            borrowed = nil
            let transformed = AlignedFloatBuffer(floats: count)
            packWinograd(source, inC: inC, outC: outC, tile: tile, into: transformed.floats)
            storage = transformed
        }
        // The source is not needed any more: a bundle's pages go back to the OS (they stay readable).
        _ = kiln_release_file_pages(source, sourceBytes)
    }

    /// True when these weights fit `geometry` (same kernel size and channel counts, and for Winograd stride 1
    /// and dilation 1).
    public func matches(_ geometry: ConvGeometry) -> Bool {
        guard kernelH == geometry.kernelH && kernelW == geometry.kernelW && inC == geometry.inC
                && outC == geometry.outC else { return false }
        if case .winograd = algorithm {
            return geometry.strideH == 1 && geometry.strideW == 1 && geometry.dilationH == 1 && geometry.dilationW == 1
        }
        return true
    }
}

/// Packs convolution weights stored HWIO `[kernelH, kernelW, inC, outC]` (Keras/TensorFlow, and the `.kiln`
/// bundle) for `algorithm` (default: `.gemm` where AVX2 + FMA are available, else `.portable`). `weights` must hold
/// `kernelH * kernelW * inC * outC` floats. A source in a read-only file mapping is borrowed (`.portable`) or has
/// its pages handed back once packed (the others); see `PackedConvWeights`.
///
/// Where `PrepackedConvWeights.current` holds these weights packed for `algorithm` already (a bundle's PACK
/// section), they are borrowed from there instead, and the source is not read.
public func packConvWeightsHWIO(_ weights: UnsafePointer<Float>, kernelH: Int, kernelW: Int, inC: Int, outC: Int,
                                algorithm: ConvAlgorithm = .defaultWithoutGeometry) -> PackedConvWeights {
    if let prepacked = PrepackedConvWeights.current,
       let floats = prepacked.lookup(source: UnsafeRawPointer(weights), algorithm: algorithm) {
        let count = PackedConvWeights.packedFloats(kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC, algorithm: algorithm)
        if floats.count == count, let base = floats.baseAddress {
            // The source is not needed: its pages go back to the OS as after packing.
            _ = kiln_release_file_pages(weights, kernelH * kernelW * inC * outC * MemoryLayout<Float>.stride)
            return PackedConvWeights(prepacked: base, kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC,
                                     algorithm: algorithm, count: count)
        }
    }
    return PackedConvWeights(source: weights, kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC, algorithm: algorithm)
}

/// Convolution weights packed beforehand (by `kiln convert --pack`, stored in the bundle's PACK section), by the
/// address of their HWIO source: the packers above borrow them instead of packing. Set (task-locally) by the
/// runtime while it loads a model whose PACK section carries this build's `layoutKey`.
public struct PrepackedConvWeights: @unchecked Sendable {
    /// The instruction set and layout version of the packed layouts this build's kernels read, or nil when the
    /// CPU runs the portable kernels (nothing packed). Includes the GEMM panel width; bump `layoutVersion` when a
    /// packer or the Winograd transforms change what they write.
    public static var layoutKey: String? {
        ConvAlgorithm.avx2Available ? "x86_64-avx2-fma/conv-\(layoutVersion)-nr\(KILN_GEMM_NR)" : nil
    }
    public static let layoutVersion = 1

    /// The layout code of `algorithm`'s packing in a PACK section: 1 GEMM panels, 2 and 4 Winograd F(2,3), F(4,3);
    /// nil for `.portable` (the DATA section's own layout).
    public static func layoutCode(_ algorithm: ConvAlgorithm) -> UInt32? {
        switch algorithm {
        case .portable: return nil
        case .gemm: return 1
        case .winograd(let tile): return tile == 2 ? 2 : tile == 4 ? 4 : nil
        }
    }

    private var table: [UnsafeRawPointer: [UInt32: (floats: UnsafeBufferPointer<Float>, check: (@Sendable () -> Bool)?)]] = [:]

    public init() {}

    /// Registers `packed` (laid out as layout `code`) for the source at `source`. `check`, when given, runs before
    /// the weights are first borrowed (a checksum not verified yet); they are not used when it fails.
    public mutating func add(source: UnsafeRawPointer, code: UInt32, packed: UnsafeRawBufferPointer,
                             check: (@Sendable () -> Bool)? = nil) {
        guard let base = packed.baseAddress, Int(bitPattern: base) % 64 == 0 else { return }
        table[source, default: [:]][code] = (UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self),
                                                                count: packed.count / MemoryLayout<Float>.stride), check)
    }

    public var isEmpty: Bool { table.isEmpty }

    /// The packed floats for `source` in `algorithm`'s layout, if registered.
    public func lookup(source: UnsafeRawPointer, algorithm: ConvAlgorithm) -> UnsafeBufferPointer<Float>? {
        guard let code = Self.layoutCode(algorithm), let found = table[source]?[code] else { return nil }
        if let check = found.check, !check() { return nil }
        return found.floats
    }

    /// The prepacked weights the packers consult (task-local: a load on another thread keeps its own).
    @TaskLocal public static var current: PrepackedConvWeights?
}

/// Packs convolution weights stored HWIO for the algorithm `ConvAlgorithm.choose` picks for this layer's kernel,
/// channels, stride and dilation (see there), as the packer above.
public func packConvWeightsHWIO(_ weights: UnsafePointer<Float>, kernelH: Int, kernelW: Int, inC: Int, outC: Int,
                                strideH: Int, strideW: Int, dilationH: Int, dilationW: Int) -> PackedConvWeights {
    let algorithm = ConvAlgorithm.choose(kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC, strideH: strideH,
                                         strideW: strideW, dilationH: dilationH, dilationW: dilationW)
    return packConvWeightsHWIO(weights, kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC, algorithm: algorithm)
}

/// Packs convolution weights stored OIHW `[outC, inC, kernelH, kernelW]` (ONNX, PyTorch) for `algorithm`.
/// `weights` must hold `outC * inC * kernelH * kernelW` floats; they are always copied.
public func packConvWeightsOIHW(_ weights: UnsafePointer<Float>, kernelH: Int, kernelW: Int, inC: Int, outC: Int,
                                algorithm: ConvAlgorithm = .defaultWithoutGeometry) -> PackedConvWeights {
    let count = kernelH * kernelW * inC * outC
    let hwio = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    defer { hwio.deallocate() }
    for o in 0..<outC {
        for i in 0..<inC {
            for ky in 0..<kernelH {
                for kx in 0..<kernelW {
                    hwio[((ky * kernelW + kx) * inC + i) * outC + o] = weights[((o * inC + i) * kernelH + ky) * kernelW + kx]
                }
            }
        }
    }
    return packConvWeightsHWIO(hwio, kernelH: kernelH, kernelW: kernelW, inC: inC, outC: outC, algorithm: algorithm)
}

/// `[rows, outC]` row-major into 16-column panels, on the kernels' threads (split over panels).
private func packGEMMPanels(_ weights: UnsafePointer<Float>, rows: Int, outC: Int,
                            into packed: UnsafeMutablePointer<Float>) {
    let panels = (outC + Int(KILN_GEMM_NR) - 1) / Int(KILN_GEMM_NR)
    // At least 64 Ki floats per task: a small layer is not worth a handoff.
    let perTask = max(1, min(panels, (1 << 16) / max(rows * Int(KILN_GEMM_NR), 1)))
    let tasks = (panels + perTask - 1) / perTask
    parallelFor(tasks) { task in
        let first = task * perTask, last = min(panels, first + perTask)
        kiln_gemm_pack_b(weights, rows, outC, outC, first, last, packed)
    }
}

/// 3×3 HWIO into the Winograd matrices, on the kernels' threads (split over input channels).
private func packWinograd(_ weights: UnsafePointer<Float>, inC: Int, outC: Int, tile: Int,
                          into packed: UnsafeMutablePointer<Float>) {
    let perTask = max(8, inC / 16)
    let tasks = (inC + perTask - 1) / perTask
    parallelFor(tasks) { task in
        let first = task * perTask, last = min(inC, first + perTask)
        kiln_winograd_pack_weights(weights, inC, outC, Int32(tile), first, last, packed)
    }
}

/// 64-byte-aligned float storage, freed on deinit, for packed weights, arenas and workspaces. Buffers of 4 MiB
/// and more are mapped on a 2 MiB boundary and marked for transparent huge pages (fewer page faults when first
/// written, fewer TLB misses when read). Contents start undefined.
public final class AlignedFloatBuffer: @unchecked Sendable {
    public let floats: UnsafeMutablePointer<Float>
    public let count: Int
    private let byteCount: Int

    public init(floats count: Int) {
        precondition(count >= 0 && count <= Int.max / 8, "buffer of \(count) floats is out of range")
        self.count = count
        byteCount = max(count, 1) * MemoryLayout<Float>.stride
        guard let raw = kiln_large_alloc(byteCount) else {
            preconditionFailure("out of memory allocating \(byteCount) bytes")
        }
        floats = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    /// Writes every page now (zeros), so that the first run that uses the buffer does not stop in page faults:
    /// a fresh mapping's pages are made on first touch, transparent huge pages perhaps by compacting memory
    /// first, and a kernel thread waiting there for milliseconds looks to the pool like a preempted one.
    public func prefault() {
        floats.update(repeating: 0, count: max(count, 1))
    }

    deinit { kiln_large_free(floats, byteCount) }
}
