import Testing
import KilnFormat
import KilnKernels
@testable import KilnRuntime

/// The PACK section (bundle 1.4): convolution weights stored as this build's kernels pack them are borrowed at load
/// instead of packed, give the same outputs bit for bit, and a section for other kernels, a damaged entry or a
/// layout the runtime does not choose is never used (the weights are packed from DATA, with a note).
@Suite struct PackedSectionTests {
    /// x [N, 8, 8, 16] → 3×3 conv 16→16 (Winograd on AVX2) → 1×1 conv 16→24 (GEMM panels) → 3×3/2 conv 24→8 → pool.
    static func model() -> FrozenModel {
        func conv(_ k: Int, _ stride: Int) -> [Int64] {
            Conv2DAttributes(kernelH: k, kernelW: k, strideH: stride, strideW: stride,
                             padding: .explicit(top: k / 2, bottom: k / 2, left: k / 2, right: k / 2), activation: .relu).encoded
        }
        var random = SplitMix64(seed: 20)
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float(random.nextUniform() * 2 - 1) * 0.3 } }
        return FrozenModel(
            valueNames: ["x", "a", "b", "c", "y"],
            inputs: [PortRecord(name: "x", value: 0, shape: [-1, 8, 8, 16])],
            outputs: [PortRecord(name: "y", value: 4, shape: [-1, 8])],
            ops: [OpRecord(opcode: .conv2d, name: "c3", inputs: [0], output: 1, attributes: conv(3, 1), tensors: [0, 1]),
                  OpRecord(opcode: .conv2d, name: "c1", inputs: [1], output: 2, attributes: conv(1, 1), tensors: [2, 3]),
                  OpRecord(opcode: .conv2d, name: "s2", inputs: [2], output: 3, attributes: conv(3, 2), tensors: [4, 5]),
                  OpRecord(opcode: .globalAvgPool, name: "pool", inputs: [3], output: 4)],
            tensors: [TensorRecord(name: "c3/kernel", shape: [3, 3, 16, 16], floats: values(3 * 3 * 16 * 16)),
                      TensorRecord(name: "c3/bias", shape: [16], floats: values(16)),
                      TensorRecord(name: "c1/kernel", shape: [1, 1, 16, 24], floats: values(16 * 24)),
                      TensorRecord(name: "c1/bias", shape: [24], floats: values(24)),
                      TensorRecord(name: "s2/kernel", shape: [3, 3, 24, 8], floats: values(3 * 3 * 24 * 8)),
                      TensorRecord(name: "s2/bias", shape: [8], floats: values(8))])
    }

    static func input() -> Tensor {
        var random = SplitMix64(seed: 7)
        return Tensor(shape: [2, 8, 8, 16], values: (0..<(2 * 8 * 8 * 16)).map { _ in Float(random.nextUniform()) })
    }

    static func packedContent() throws -> PackedLayoutsContent {
        let plain = try Model(bundle: Bundle(bytes: BundleWriter.serialize(model())))
        return try #require(plain.packedLayoutsContent())
    }

    static func borrowed(_ m: Model) -> [Bool] {
        m.steps.compactMap { ($0.op as? Conv2DOp)?.plainPacking?.isBorrowed }
    }

    @Test(.enabled(if: ConvAlgorithm.avx2Available))
    func packedWeightsAreBorrowedAndGiveTheSameOutputs() throws {
        let want = try Model(bundle: Bundle(bytes: BundleWriter.serialize(Self.model()))).run(Self.input())
        let content = try Self.packedContent()
        #expect(content.entries.map(\.layout) == [4, 1, 1])
        let bundle = try Bundle(bytes: BundleWriter.serialize(Self.model(), packed: content))
        #expect(bundle.versionMinor == 4)
        let m = try Model(bundle: bundle)
        #expect(m.notes.isEmpty)
        #expect(Self.borrowed(m) == [true, true, true])
        let got = try m.run(Self.input())
        #expect(got[0].values == want[0].values)
        // --exact (no Winograd) borrows the GEMM entries and packs the 3×3 layer, saying so.
        let exact = try Model(bundle: bundle, winograd: false)
        #expect(Self.borrowed(exact) == [false, true, true])
        #expect(exact.notes == ["1 convolutions were not in the bundle's PACK section in the layout this build chose for them: packed at load"])
    }

    @Test(.enabled(if: ConvAlgorithm.avx2Available), arguments: ["arm64-neon/conv-1-nr16", "x86_64-avx2-fma/conv-0-nr16"])
    func aSectionForOtherKernelsIsIgnoredWithANote(key: String) throws {
        let want = try Model(bundle: Bundle(bytes: BundleWriter.serialize(Self.model()))).run(Self.input())
        let content = try Self.packedContent()
        let foreign = PackedLayoutsContent(key: key, entries: content.entries)
        let m = try Model(bundle: Bundle(bytes: BundleWriter.serialize(Self.model(), packed: foreign)))
        #expect(m.notes == ["the bundle's PACK section is for kernels '\(key)', this build's are '\(PrepackedConvWeights.layoutKey ?? "")': ignored, weights packed at load"])
        #expect(Self.borrowed(m) == [false, false, false])
        #expect(try m.run(Self.input())[0].values == want[0].values)
    }

    @Test(.enabled(if: ConvAlgorithm.avx2Available))
    func aDamagedEntryIsNotUsed() throws {
        let want = try Model(bundle: Bundle(bytes: BundleWriter.serialize(Self.model()))).run(Self.input())
        var bytes = try BundleWriter.serialize(Self.model(), packed: Self.packedContent())
        // One byte inside the first entry (the Winograd matrices of c3); the index and every other section intact.
        let probe = try Bundle(bytes: bytes)
        let pack = try #require(probe.sections.first { $0.kind == .pack })
        bytes[pack.offset + Self.firstEntryOffset(probe) + 100] ^= 0x10
        let m = try Model(bundle: Bundle(bytes: bytes))
        #expect(m.notes == ["the PACK section's entry for tensor 'c3/kernel' (layout 4) fails its checksum (damaged): not used, packed at load",
                            "1 convolutions were not in the bundle's PACK section in the layout this build chose for them: packed at load"])
        #expect(Self.borrowed(m) == [false, true, true])
        #expect(try m.run(Self.input())[0].values == want[0].values)
    }

    /// Where the first entry's bytes start inside the PACK section: after the index (entry count, key, padding to 8,
    /// 40 bytes per entry), on the next multiple of 64 (formats/kiln-bundle.md).
    static func firstEntryOffset(_ b: Bundle) -> Int {
        let layouts = b.packedLayouts!
        let head = (4 + 4 + layouts.key.utf8.count + 7) / 8 * 8 + layouts.entries.count * 40
        return (head + 63) / 64 * 64
    }
}
