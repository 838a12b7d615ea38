import Foundation
import KilnFormat
import KilnGraph
import KilnRuntime
@testable import KilnONNX

/// The committed ONNX samples (samples/onnx/make_samples.py): micro ResNets in opset and storage variants,
/// an op-coverage graph, a tf2onnx conversion of a Keras model, ONNX's light_resnet50, damaged models;
/// onnxruntime's outputs beside them.
enum ONNXSamples {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../samples/onnx").standardized.path

    struct Case: Decodable, CustomStringConvertible, Sendable {
        var model: String
        var kind: String
        var input: String?
        var expected: [String]?
        var outputs: [String]
        var top1: [Int]?
        var layout: String
        var opset: Int
        var keras_model: String?
        var keras_expected: String?
        var expected_pb: String?
        var rtol: Double?
        var atol: Double?
        var description: String { "\(model) on \(input ?? "arange")" }
    }

    static let cases: [Case] = {
        guard let data = FileManager.default.contents(atPath: "\(folder)/manifest.json"),
              let list = try? JSONDecoder().decode([Case].self, from: data) else { return [] }
        return list
    }()

    static var parityCases: [Case] { cases.filter { $0.expected != nil } }

    static func path(_ name: String) -> String { "\(folder)/\(name)" }
}

/// Import, fold, lower, serialize, load, run: the whole path a `kiln convert` + `kiln-run` takes.
func convertAndRun(_ path: String, input: Tensor) throws -> (model: Model, outputs: [Tensor], graph: Graph) {
    var graph = try ONNXImporter.importModel(path: path)
    let imported = graph
    try graph.optimizeForInference()
    let bundle = try Bundle(bytes: try BundleWriter.serialize(try graph.lower()))
    let model = try Model(bundle: bundle)
    return (model, try model.run(input), imported)
}

func relativeMaxError(_ reference: [Float], _ got: [Float]) -> Float {
    guard reference.count == got.count else { return .infinity }
    let scale = max(reference.map(abs).max() ?? 0, 1e-30)
    return zip(reference, got).map { abs($0 - $1) }.max().map { $0 / scale } ?? .infinity
}

func argmaxRows(_ t: Tensor) -> [Int] {
    let c = t.shape.last ?? 1
    return (0..<(t.values.count / max(c, 1))).map { r in
        let row = Array(t.values[r * c..<(r + 1) * c])
        return row.indices.max { row[$0] < row[$1] } ?? -1
    }
}

/// numpy.testing.assert_allclose's test: |got − want| ≤ atol + rtol·|want| for every element; returns
/// the worst ratio of the difference to the allowance (≤ 1 passes).
func allcloseRatio(_ want: [Float], _ got: [Float], rtol: Double, atol: Double) -> Double {
    guard want.count == got.count else { return .infinity }
    return zip(want, got).map { w, g in abs(Double(g) - Double(w)) / (atol + rtol * abs(Double(w))) }.max() ?? 0
}
