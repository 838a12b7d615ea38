import Foundation
import Testing
@testable import KilnFormat

/// A small model touching every section: metadata of each type, two ops, two tensors.
func tinyModel() -> FrozenModel {
    let conv = Conv2DAttributes(kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padding: .explicit(top: 1, bottom: 1, left: 1, right: 1),
                                activation: .relu)
    return FrozenModel(
        metadata: ["source.file": .string("tiny.h5"), "kiln.n": .int(-3), "kiln.eps": .float(1.001e-5),
                   "labels.names": .strings(["cat", "dog"]), "input.mean": .floats([103.939, 116.779, 123.68])],
        valueNames: ["input", "conv", "pool"],
        inputs: [PortRecord(name: "input", value: 0, shape: [-1, 4, 4, 2])],
        outputs: [PortRecord(name: "pool", value: 2, shape: [-1, 2])],
        ops: [OpRecord(opcode: .conv2d, name: "conv", inputs: [0], output: 1, attributes: conv.encoded, tensors: [0, 1]),
              OpRecord(opcode: .globalAvgPool, name: "pool", inputs: [1], output: 2)],
        tensors: [TensorRecord(name: "conv/kernel", shape: [3, 3, 2, 2], floats: (0..<36).map { Float($0) * 0.25 - 4 }),
                  TensorRecord(name: "conv/bias", shape: [2], floats: [0.5, -0.5])])
}

@Suite struct XXH64Tests {
    // Reference values from the xxHash project's own implementation (python-xxhash 3.5.0, xxh64, seed 0).
    @Test(arguments: [
        ([UInt8](), UInt64(0xEF46_DB37_51D8_E999)),
        (Array("a".utf8), UInt64(0xD24E_C4F1_A98C_6E5B)),
        (Array("abc".utf8), UInt64(0x44BC_2CF5_AD77_0999)),
        (Array((0..<768).map { UInt8($0 % 256) }), UInt64(0x8E03_C838_C596_036F)),
    ])
    func knownValues(input: [UInt8], expected: UInt64) {
        #expect(XXH64.hash(input) == expected)
    }
}

@Suite struct BundleRoundTripTests {
    @Test func roundTripKeepsEverything() throws {
        let model = tinyModel()
        let bytes = try BundleWriter.serialize(model)
        let bundle = try Bundle(bytes: bytes)
        let back = bundle.model
        #expect(back.metadata == model.metadata)
        #expect(back.valueNames == model.valueNames)
        #expect(back.inputs == model.inputs)
        #expect(back.outputs == model.outputs)
        #expect(back.ops == model.ops)
        #expect(back.tensors.map(\.name) == model.tensors.map(\.name))
        #expect(back.tensors.map(\.shape) == model.tensors.map(\.shape))
        #expect(back.tensors.map(\.payload.floats) == model.tensors.map(\.payload.floats))
        #expect(bundle.sections.map(\.kind) == Array(SectionKind.order.prefix(SectionKind.requiredCount)))
    }

    @Test func layoutIsAlignedAndSized() throws {
        let bytes = try BundleWriter.serialize(tinyModel())
        #expect(bytes.count % BundleLayout.alignment == 0)
        #expect(Array(bytes[0..<8]) == [0x4B, 0x49, 0x4C, 0x4E, 0x0D, 0x0A, 0x1A, 0x0A])
        let bundle = try Bundle(bytes: bytes)
        for s in bundle.sections { #expect(s.offset % 64 == 0) }
        // Tensor payloads are 64-byte aligned inside the mapping.
        for t in bundle.model.tensors {
            guard case .mapped(let raw) = t.payload else { Issue.record("tensor not mapped"); continue }
            #expect(Int(bitPattern: raw.baseAddress) % 64 == 0)
        }
    }

    @Test func serialisationIsDeterministic() throws {
        let a = try BundleWriter.serialize(tinyModel())
        var shuffled = tinyModel()
        // Insertion order of metadata must not matter.
        shuffled.metadata = Dictionary(uniqueKeysWithValues: shuffled.metadata.reversed().map { ($0.key, $0.value) })
        let b = try BundleWriter.serialize(shuffled)
        #expect(a == b)
    }
}

@Suite struct BundleDamageTests {
    /// Every single changed byte must make loading fail, and the error must name a section.
    @Test func everyFlippedByteIsCaught() throws {
        let bytes = try BundleWriter.serialize(tinyModel())
        let sectionNames = ["header", "section table", "META", "GRPH", "TNSR", "DATA"]
        var failures: [Int] = []
        for i in 0..<bytes.count {
            var damaged = bytes
            damaged[i] ^= 0x40
            do {
                _ = try Bundle(bytes: damaged)
                failures.append(i)
            } catch {
                let named = error.section.map { s in sectionNames.contains { s == $0 } } ?? false
                if !named { Issue.record("byte \(i): error names no section: \(error)") }
            }
        }
        #expect(failures.isEmpty, "bytes accepted after damage: \(failures.prefix(10))")
    }

    @Test func everyTruncationIsCaught() throws {
        let bytes = try BundleWriter.serialize(tinyModel())
        for n in stride(from: 0, to: bytes.count, by: 7) {
            #expect(throws: BundleError.self) { _ = try Bundle(bytes: Array(bytes[0..<n])) }
        }
    }

    @Test func versionFromTheFutureIsRefused() throws {
        var bytes = try BundleWriter.serialize(tinyModel())
        bytes[8] = 2
        #expect {
            _ = try Bundle(bytes: bytes)
        } throws: { error in
            "\(error)".contains("version 2.0 is not supported")
        }
    }

    @Test func notABundle() {
        #expect {
            _ = try Bundle(bytes: Array("hello world, this is not a bundle at all; padding to sixty-four bytes...".utf8))
        } throws: { error in
            "\(error)" == "section header: not a Kiln bundle (bad magic bytes)"
        }
    }

    /// A well-checksummed bundle whose graph is inconsistent is refused by the structural checks.
    @Test func writerRefusesInconsistentGraphs() {
        var model = tinyModel()
        model.ops[1].inputs = [7]
        #expect(throws: BundleError.self) { _ = try BundleWriter.serialize(model) }
        var model2 = tinyModel()
        model2.tensors[0] = TensorRecord(name: "conv/kernel", shape: [3, 3, 2, 2], floats: [1, 2, 3])
        #expect(throws: BundleError.self) { _ = try BundleWriter.serialize(model2) }
    }
}

@Suite struct AtomicWriteTests {
    @Test func writesAndReplacesWithoutLeftovers() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-atomic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.kiln").path
        try BundleWriter.write(tinyModel(), to: path)
        let first = try Data(contentsOf: URL(fileURLWithPath: path))
        try BundleWriter.write(tinyModel(), to: path)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == first)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["m.kiln"])
        _ = try Bundle(contentsOf: path)
    }

    @Test func missingFolderFailsCleanly() {
        #expect(throws: BundleError.self) {
            try BundleWriter.write(tinyModel(), to: "/nonexistent-kiln-dir/m.kiln")
        }
    }
}

@Suite struct ShapeOpAttributeTests {
    /// Reshape: 0 copies the input's dim, -1 is what the rest leave; sizes that do not fit are refused.
    @Test func reshapeShapes() throws {
        #expect(try ReshapeAttributes(dims: [0, -1]).outputShape([3, 4, 5]).get() == [3, 20])
        #expect(try ReshapeAttributes(dims: [0, 7, 1, 1]).outputShape([2, 7]).get() == [2, 7, 1, 1])
        #expect((try? ReshapeAttributes(dims: [0, 6]).outputShape([2, 7]).get()) == nil)
        #expect((try? ReshapeAttributes(decoding: [-1, -1])) == nil)
        #expect((try? ReshapeAttributes(decoding: [])) == nil)
        #expect((try? ReshapeAttributes(decoding: [2, -2])) == nil)
    }

    /// Reduce: `[function, keepdims, axes…]`, axes distinct and ascending; the minor version becomes 3.
    @Test func reduceAttributesAndVersion() throws {
        let r = try ReduceAttributes(decoding: [1, 0, 0, 2])
        #expect(r.function == .sum && !r.keepDims && r.axes == [0, 2])
        #expect(r.outputShape([2, 3, 4]) == [3])
        #expect(ReduceAttributes(function: .mean, keepDims: true, axes: [2, 1]).outputShape([2, 3, 4]) == [2, 1, 1])
        for bad: [Int64] in [[2, 0, 1], [0, 2, 1], [0, 1, 2, 1], [0, 1, 1, 1], [0, 1], [0, 0, -1]] {
            #expect((try? ReduceAttributes(decoding: bad)) == nil, "\(bad)")
        }
        var model = tinyModel()
        model.ops.append(OpRecord(opcode: .reduce, name: "mean", inputs: [2], output: model.valueNames.count, attributes: r.encoded))
        model.valueNames.append("mean")
        model.outputs = [PortRecord(name: "mean", value: model.valueNames.count - 1, shape: [-1])]
        let bundle = try Bundle(bytes: try BundleWriter.serialize(model))
        #expect(bundle.versionMinor == 3)
        #expect(bundle.model.ops.last?.attributes == [1, 0, 0, 2])
    }
}
