import Foundation
import Testing
import KilnFormat
import KilnGraph
import KilnRuntime
@testable import KilnKeras

/// The committed mini ResNet-50 samples (same layer names as Keras' ResNet-50, widths / 16), written by
/// real Keras 2 and Keras 3 with Keras' own outputs beside them (samples/mini/make_mini.py).
enum MiniSamples {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../samples/mini").standardized.path

    struct Case: Decodable, CustomStringConvertible, Sendable {
        var model: String
        var layout: String?
        var config: String?
        var input: String?
        var expected: String?
        var features: String?
        var top1: [Int]?
        var error: String?
        var description: String { "\(model) on \(input ?? "-")" }
    }

    static let cases: [Case] = {
        guard let data = FileManager.default.contents(atPath: "\(folder)/manifest.json"),
              let list = try? JSONDecoder().decode([Case].self, from: data) else { return [] }
        return list
    }()

    static func path(_ name: String) -> String { "\(folder)/\(name)" }
}

func relativeMaxError(_ reference: [Float], _ got: [Float]) -> Float {
    let scale = max(reference.map(abs).max() ?? 0, 1e-30)
    return zip(reference, got).map { abs($0 - $1) }.max().map { $0 / scale } ?? .infinity
}

func argmaxRows(_ t: Tensor) -> [Int] {
    let c = t.shape.last ?? 1
    return (0..<(t.values.count / c)).map { r in
        let row = t.values[r * c..<(r + 1) * c]
        return row.indices.max { row[$0] < row[$1] }! - r * c
    }
}

@Suite struct MiniSampleParityTests {
    @Test func manifestIsPresent() {
        #expect(MiniSamples.cases.count >= 20)
    }

    /// Import, fold, bundle, load, run: outputs and avg_pool features within 1e-4 of Keras, same top-1.
    @Test(arguments: MiniSamples.cases.filter { $0.error == nil })
    func convertedBundleMatchesKeras(_ c: MiniSamples.Case) throws {
        var graph = try KerasImporter.importModel(path: MiniSamples.path(c.model), configPath: c.config.map(MiniSamples.path))
        if c.features != nil { try graph.addOutput(node: "avg_pool") }
        try graph.optimizeForInference()
        let kinds = Set(graph.nodes.map(\.op.kindName))
        #expect(!kinds.contains("BatchNormalization") && !kinds.contains("Dropout"))
        let bundle = try Bundle(bytes: try BundleWriter.serialize(try graph.lower()))
        let model = try Model(bundle: bundle)
        let input = try NPY.read(path: MiniSamples.path(c.input!))
        let outputs = try model.run(input)
        let expected = try NPY.read(path: MiniSamples.path(c.expected!))
        #expect(outputs[0].shape == expected.shape)
        let err = relativeMaxError(expected.values, outputs[0].values)
        #expect(err <= 1e-4, "output relative error \(err)")
        if let top1 = c.top1 { #expect(argmaxRows(outputs[0]) == top1) }
        if let f = c.features {
            let want = try NPY.read(path: MiniSamples.path(f))
            let port = model.frozen.outputs.firstIndex { $0.name == "avg_pool" }!
            let ferr = relativeMaxError(want.values, outputs[port].values)
            #expect(outputs[port].shape == want.shape)
            #expect(ferr <= 1e-4, "avg_pool relative error \(ferr)")
        }
    }

    /// Layouts of the same weights give the same bundle contents (the weights are resolved by name).
    @Test func layoutsAgreeOnWeights() throws {
        func tensors(_ file: String, config: String? = nil) throws -> [String: [Float]] {
            var g = try KerasImporter.importModel(path: MiniSamples.path(file), configPath: config.map(MiniSamples.path))
            try g.optimizeForInference()
            return Dictionary(uniqueKeysWithValues: try g.lower().tensors.map { ($0.name, $0.payload.floats) })
        }
        let k3 = try tensors("mini_k3.h5")
        #expect(k3.count == 108)
        for (file, config) in [("mini_k2.h5", nil), ("mini.keras", nil), ("mini.weights.h5", "mini_config.json"),
                               ("mini.weights.h5", nil), ("mini_applications.h5", nil), ("mini_k2_vlen_split.h5", nil)] as [(String, String?)] {
            #expect(try tensors(file, config: config) == k3, "\(file)")
        }
    }
}

@Suite struct KerasFileErrorTests {
    func importError(_ path: String) -> String {
        do {
            _ = try KerasImporter.importModel(path: path)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func unsupportedLayerNamesFileLayerAndClass() {
        #expect(importError(MiniSamples.path("unsupported_k3.h5"))
            .hasPrefix("unsupported_k3.h5: layer 'layer_norm' (LayerNormalization): layer class 'LayerNormalization' is not supported"))
    }

    @Test func notAKerasFile() {
        #expect(importError(MiniSamples.path("not_keras.h5"))
            == "not_keras.h5: not a Keras model or weights file: no 'model_config' or 'layer_names' attribute and no 'layers' group")
        #expect(importError(MiniSamples.path("manifest.json")).hasSuffix("not a Keras model: neither HDF5 nor a .keras zip archive"))
    }

    @Test(arguments: [0.5, 0.9, 0.99])
    func truncatedFileFailsCleanly(fraction: Double) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: MiniSamples.path("mini_k3.h5")))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-trunc-\(UUID().uuidString).h5").path
        try data.prefix(Int(Double(data.count) * fraction)).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let message = importError(path)
        #expect(message != "no error")
        #expect(message.hasPrefix((path as NSString).lastPathComponent + ":"), "\(message)")
        #expect(!message.contains("\n"))
    }

    @Test func weightsThatDoNotMatchTheConfig() throws {
        // The ops model's config with the mini ResNet's weights: the first conv's group belongs to another layer.
        let message: String
        do {
            _ = try KerasImporter.importModel(path: MiniSamples.path("mini.weights.h5"), configPath: MiniSamples.path("manifest.json"))
            message = "no error"
        } catch {
            message = "\(error)"
        }
        #expect(message.hasPrefix("manifest.json: "))
    }
}

@Suite struct SnakeCaseTests {
    // Names Keras 3 gives weight groups (as seen in real .weights.h5 files).
    @Test(arguments: [("Conv2D", "conv2d"), ("BatchNormalization", "batch_normalization"), ("ReLU", "re_lu"),
                      ("ZeroPadding2D", "zero_padding2d"), ("GlobalAveragePooling2D", "global_average_pooling2d"),
                      ("InputLayer", "input_layer"), ("MaxPooling2D", "max_pooling2d"), ("Dense", "dense")])
    func kerasNames(cls: String, expected: String) {
        #expect(snakeCase(cls) == expected)
    }
}
