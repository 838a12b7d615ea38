import Foundation
import Testing
import KilnKernels
@testable import KilnONNX

/// Damaged and unsupported models stop the import with a one-line, typed error naming the node, op type
/// and opset or the tensor; never a crash.
@Suite struct ONNXErrorTests {
    func importError(_ path: String) -> ONNXImportError? {
        do {
            _ = try ONNXImporter.importModel(path: path)
            return nil
        } catch {
            return error
        }
    }

    func expectError(_ path: String, _ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        guard let e = importError(path) else {
            Issue.record("\(path) imported without error", sourceLocation: sourceLocation)
            return
        }
        let text = e.description
        #expect(!text.contains("\n"), "more than one line: \(text)", sourceLocation: sourceLocation)
        for f in fragments {
            #expect(text.contains(f), "'\(f)' missing from: \(text)", sourceLocation: sourceLocation)
        }
    }

    static func bad(_ name: String) -> String { ONNXSamples.path("bad/\(name)") }

    @Test func rawDataShorterThanTheShape() {
        expectError(Self.bad("raw_data_short.onnx"),
                    ["raw_data_short.onnx", "node 'conv' (Conv, opset 13)", "tensor 'conv.weight'", "212 bytes", "216"])
    }

    @Test func floatDataShorterThanTheShape() {
        expectError(Self.bad("float_data_short.onnx"), ["tensor 'conv.weight'", "float_data holds 53 values", "needs 54"])
    }

    @Test func weightListedAsInputWithoutItsInitializer() {
        expectError(Self.bad("missing_initializer.onnx"),
                    ["node 'conv' (Conv, opset 7)", "conv.weight", "graph input without an initializer"])
    }

    @Test func inputThatNothingProduces() {
        expectError(Self.bad("missing_tensor.onnx"), ["node 'conv' (Conv, opset 13)", "'conv.weight' is missing"])
    }

    @Test(arguments: [("external_escape.onnx", "leaves the model's folder"), ("external_absolute.onnx", "leaves the model's folder"),
                      ("external_missing.onnx", "cannot open external data file")])
    func externalDataStaysInsideTheModelsFolder(_ file: String, _ message: String) {
        expectError(Self.bad(file), ["tensor 'conv.weight'", message])
    }

    /// A symbolic link beside the model that points outside its folder is refused too.
    @Test func externalDataThroughASymlinkOutsideIsRefused() throws {
        let fm = FileManager.default
        let root = fm.temporaryDirectory.appendingPathComponent("kiln-onnx-\(UUID().uuidString)")
        let inside = root.appendingPathComponent("model"), outside = root.appendingPathComponent("elsewhere")
        try fm.createDirectory(at: inside, withIntermediateDirectories: true)
        try fm.createDirectory(at: outside, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: root) }
        let model = try #require(ONNXSamples.cases.first { $0.model.hasPrefix("micro_v15_opset") && $0.model != "micro_v15_opset13.onnx" }).model
        try fm.copyItem(atPath: ONNXSamples.path(model), toPath: inside.appendingPathComponent(model).path)
        try fm.copyItem(atPath: ONNXSamples.path(model + ".data"), toPath: outside.appendingPathComponent("weights").path)
        try fm.createSymbolicLink(atPath: inside.appendingPathComponent(model + ".data").path,
                                  withDestinationPath: outside.appendingPathComponent("weights").path)
        expectError(inside.appendingPathComponent(model).path, ["leaves the model's folder"])
        // The same files with the data inside the folder import fine.
        try fm.removeItem(at: inside.appendingPathComponent(model + ".data"))
        try fm.copyItem(atPath: ONNXSamples.path(model + ".data"), toPath: inside.appendingPathComponent(model + ".data").path)
        #expect(importError(inside.appendingPathComponent(model).path) == nil)
    }

    @Test func unsupportedOpNamesNodeOpTypeAndOpset() {
        expectError(Self.bad("unsupported_op.onnx"), ["node 'conv' (LRN, opset 13)", "op type 'LRN' is not supported"])
        expectError(Self.bad("unsupported_domain.onnx"), ["node 'conv' (com.microsoft.FusedConv, opset 13)", "domain 'com.microsoft'"])
        expectError(Self.bad("grouped_conv.onnx"), ["node 'conv' (Conv, opset 13)", "group 3"])
    }

    /// Every prefix of a valid model, and damaged bytes, give an error (or, for a few lucky prefixes, a
    /// model); never a crash.
    @Test func truncatedModelsFailCleanly() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: ONNXSamples.path("micro_v15_opset13.onnx")))
        for fraction in [0.0, 0.001, 0.1, 0.5, 0.9, 0.999] {
            let cut = data.prefix(Int(Double(data.count) * fraction))
            do {
                _ = try ONNXImporter.importModel(data: cut, fileName: "cut.onnx", folder: nil)
                Issue.record("a \(cut.count)-byte prefix imported")
            } catch {
                #expect(!error.description.contains("\n"))
                #expect(error.description.hasPrefix("cut.onnx: "))
            }
        }
        do {
            _ = try ONNXImporter.importModel(data: data.prefix(data.count / 2), fileName: "half.onnx", folder: nil)
        } catch {
            #expect(error.description.contains("truncated"), "\(error)")
        }
    }

    @Test func malformedBytesFailCleanly() {
        var rng = SplitMix64(seed: 1)
        for _ in 0..<50 {
            let bytes = Data((0..<Int.random(in: 1...400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            do {
                _ = try ONNXImporter.importModel(data: bytes, fileName: "noise.onnx", folder: nil)
            } catch {
                #expect(!error.description.contains("\n"))
            }
        }
        // A length that runs past the end: the framing walk names the field and the byte.
        let lying = Data([0x08, 0x07, 0x3A, 0xFF, 0x01, 0x0A])
        do {
            _ = try ONNXImporter.importModel(data: lying, fileName: "lying.onnx", folder: nil)
            Issue.record("imported")
        } catch {
            #expect(error.description == "lying.onnx: not a valid ONNX model, truncated or damaged protobuf: model: byte 2: field 7 claims 255 bytes but 1 are left")
        }
    }

    @Test func damagedBytesInsideAValidModelFailCleanly() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: ONNXSamples.path("ops_opset17.onnx")))
        var rng = SplitMix64(seed: 2)
        for _ in 0..<300 {
            var damaged = data
            let i = Int.random(in: 0..<damaged.count, using: &rng)
            damaged[i] ^= UInt8.random(in: 1...255, using: &rng)
            do {
                _ = try ONNXImporter.importModel(data: damaged, fileName: "damaged.onnx", folder: nil)
            } catch {
                #expect(!error.description.contains("\n"))
            }
        }
    }

    @Test func namesFromTheFileCannotBreakTheLine() {
        let e = ONNXImportError(file: "m.onnx", node: "'a\nb'", opType: "Conv", opset: 13, tensor: "w\r", "bad\u{2028}value")
        #expect(e.description == "m.onnx: node 'a\\u{a}b' (Conv, opset 13): tensor 'w\\u{d}': bad\\u{2028}value")
    }

    @Test func missingAndDirectoryPaths() {
        expectError("/nonexistent/model.onnx", ["model.onnx", "no such file"])
        expectError(ONNXSamples.folder, ["is a directory"])
    }
}
