import Foundation
import KilnFormat
import KilnImage
import KilnRuntime
import KilnTestSupport
@testable import KilnClassify

enum Paths {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path
    static let photos = "\(root)/samples/images/photos"
    static let broken = "\(root)/samples/images/broken"
    static let mini = "\(root)/samples/mini"
    static let env = ProcessInfo.processInfo.environment
    /// The release binaries of `make test` (KILN_BIN), else the ones `swift test` built beside the tests.
    static let bin: String = {
        if let bin = env["KILN_BIN"], !bin.isEmpty { return bin }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    }()
    static var kilnAvailable: Bool { FileManager.default.isExecutableFile(atPath: "\(bin)/kiln") }
    static var kilnEnabled: Bool { kilnAvailable || env["KILN_REQUIRE_FIXTURES"] == "1" }

    static var photoFiles: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: photos)) ?? []).filter { !$0.hasPrefix(".") }.sorted().map { "\(photos)/\($0)" }
    }
}

/// A tiny image classifier: global average pool of the raw RGB pixels, then Dense(3 → 3) with weights 1/16
/// on the diagonal (softmax fused unless `logits`), so the classes are the dominant colour.
func rgbClassifier(labels: [String]? = ["red", "green", "blue"], resize: String? = "keras-nearest", height: Int? = 40, width: Int? = 56,
                   logits: Bool = false, extra: [MetadataKey: MetadataValue] = [:]) -> FrozenModel {
    var metadata: [String: MetadataValue] = [:]
    if let labels { metadata[.labelNames] = .strings(labels) }
    if let resize { metadata[.inputResize] = .string(resize) }
    if let height, let width {
        metadata[.inputHeight] = .int(Int64(height))
        metadata[.inputWidth] = .int(Int64(width))
    }
    for (k, v) in extra { metadata[k] = v }
    let w: [Float] = [1 / 16, 0, 0, 0, 1 / 16, 0, 0, 0, 1 / 16]
    let dense = DenseAttributes(activation: .none, softmax: !logits)
    return FrozenModel(
        metadata: metadata,
        valueNames: ["image", "pooled", "scores"],
        inputs: [PortRecord(name: "image", value: 0, shape: [-1, Int64(height ?? -1), Int64(width ?? -1), 3])],
        outputs: [PortRecord(name: "scores", value: 2, shape: [-1, 3]), PortRecord(name: "pooled", value: 1, shape: [-1, 3])],
        ops: [OpRecord(opcode: .globalAvgPool, name: "pool", inputs: [0], output: 1),
              OpRecord(opcode: .dense, name: "colour", inputs: [1], output: 2, attributes: dense.encoded, tensors: [0, 1])],
        tensors: [TensorRecord(name: "colour/kernel", shape: [3, 3], floats: w), TensorRecord(name: "colour/bias", shape: [3], floats: [0, 0, 0])])
}

/// A `Classifier` over `model`, serialized and read back as a bundle.
func classifier(_ model: FrozenModel, output: String? = nil, plansPerShape: Int = 2, maximumShapes: Int = 8) throws -> Classifier {
    let loaded = try Model(bundle: Bundle(bytes: try BundleWriter.serialize(model), path: "m.kiln"))
    return try Classifier(model: loaded, bundle: "m.kiln", output: output, plansPerShape: plansPerShape, maximumShapes: maximumShapes)
}

/// What the rgb classifier gives for the image after `resize`, computed with KilnImage directly and the
/// model's arithmetic in Float64 (`colourSoftmax`).
func rgbProbabilities(_ path: String, _ resize: InputResize) throws -> [Float] {
    colourSoftmax(try resize.apply(try ImageDecoder.decode(contentsOf: path)).pixels)
}
