import Foundation
import Testing
import KilnFormat
import KilnGraph
@testable import KilnKeras

/// The model's own preprocessing as Keras writes it into configs (the JSON below is what Keras 3.15 and tf-keras 2.21
/// write for `preprocess_input` on a symbolic tensor, trimmed to the fields the importer reads), recognised without
/// any weights file. The real files are checked against Keras' outputs in EndToEndTests.TutorialClassifierTests.
@Suite struct OwnPreprocessingTests {
    /// A weights source for layers without weights.
    struct NoWeights: KerasWeightSource {
        var layoutName: String { "test" }
        func variables(of layer: KerasLayer) throws(KerasImportError) -> [String: WeightTensor] { [:] }
    }

    static let input3 = #"{"class_name": "InputLayer", "config": {"batch_shape": [null, 8, 8, 3], "name": "in"}, "name": "in", "inbound_nodes": []}"#

    static func tensor(_ name: String, _ shape: String = "[null, 8, 8, 3]") -> String {
        #"{"class_name": "__keras_tensor__", "config": {"shape": \#(shape), "dtype": "float32", "keras_history": ["\#(name)", 0, 0]}}"#
    }

    /// A functional model of `layers` (JSON objects) after the input, ending in a global average pool of `last`.
    static func model(_ layers: [String], last: String, kerasMajor: Int = 3) -> String {
        let pool = kerasMajor == 3
            ? #"{"class_name": "GlobalAveragePooling2D", "module": "keras.layers", "config": {"name": "gap"}, "name": "gap", "inbound_nodes": [{"args": [\#(tensor(last))], "kwargs": {}}]}"#
            : #"{"class_name": "GlobalAveragePooling2D", "config": {"name": "gap"}, "name": "gap", "inbound_nodes": [[["\#(last)", 0, 0, {}]]]}"#
        let input = kerasMajor == 3 ? input3
            : #"{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 8, 8, 3], "name": "in"}, "name": "in", "inbound_nodes": []}"#
        return #"{"class_name": "Functional", "config": {"name": "m", "layers": [\#(([input] + layers + [pool]).joined(separator: ", "))], "input_layers": [["in", 0, 0]], "output_layers": [["gap", 0, 0]]}}"#
    }

    static func importGraph(_ json: String, layout: KerasLayout = .kerasZip) throws -> Graph {
        let parsed = try JSONSerialization.jsonObject(with: Data(json.utf8))
        let topology = try KerasTopology.parse(parsed, file: "m.keras")
        return try KerasImporter.build(topology, weights: NoWeights(), file: "m.keras", layout: layout, metadata: [:])
    }

    static func recorded(_ g: Graph) -> String? {
        if case .string(let s)? = g.metadata[.inputPreprocessing] { return s }
        return nil
    }

    static func opLayer(_ cls: String, _ name: String, args: String) -> String {
        #"{"module": "keras.src.ops.numpy", "class_name": "\#(cls)", "config": {"name": "\#(name)"}, "name": "\#(name)", "inbound_nodes": [{"args": \#(args), "kwargs": {}}]}"#
    }

    @Test func keras3CaffeOpLayers() throws {
        let e = #"{"class_name": "__ellipsis__", "config": {}}"#
        let layers = [
            Self.opLayer("GetItem", "get_item", args: "[\(Self.tensor("in")), [\(e), 2]]"),
            Self.opLayer("GetItem", "get_item_1", args: "[\(Self.tensor("in")), [\(e), 1]]"),
            Self.opLayer("GetItem", "get_item_2", args: "[\(Self.tensor("in")), [\(e), 0]]"),
            #"{"module": "keras.src.ops.numpy", "class_name": "Stack", "config": {"name": "stack", "axis": -1}, "name": "stack", "inbound_nodes": [{"args": [[\#(Self.tensor("get_item", "[null, 8, 8]")), \#(Self.tensor("get_item_1", "[null, 8, 8]")), \#(Self.tensor("get_item_2", "[null, 8, 8]"))]], "kwargs": {}}]}"#,
            Self.opLayer("Add", "add", args: #"[\#(Self.tensor("stack")), {"class_name": "__tensor__", "config": {"value": [[[[-103.93900299072266, -116.77899932861328, -123.68000030517578]]]], "dtype": "float32"}}]"#),
        ]
        let g = try Self.importGraph(Self.model(layers, last: "add"))
        #expect(Self.recorded(g) == "caffe")
    }

    @Test func keras3TfAndTorchModes() throws {
        let tf = [Self.opLayer("TrueDivide", "true_divide", args: "[\(Self.tensor("in")), 127.5]"),
                  Self.opLayer("Subtract", "subtract", args: "[\(Self.tensor("true_divide")), 1.0]")]
        #expect(Self.recorded(try Self.importGraph(Self.model(tf, last: "subtract"))) == "tf")
        let torch = [Self.opLayer("TrueDivide", "d1", args: "[\(Self.tensor("in")), 255.0]"),
                     Self.opLayer("Add", "a1", args: #"[\#(Self.tensor("d1")), {"class_name": "__tensor__", "config": {"value": [[[[-0.485, -0.456, -0.406]]]]}}]"#),
                     Self.opLayer("TrueDivide", "d2", args: #"[\#(Self.tensor("a1")), {"class_name": "__tensor__", "config": {"value": [0.229, 0.224, 0.225]}}]"#)]
        #expect(Self.recorded(try Self.importGraph(Self.model(torch, last: "d2"))) == "torch")
    }

    @Test func tfKerasOpLambdas() throws {
        let layers = [
            #"{"class_name": "SlicingOpLambda", "config": {"name": "tf.__operators__.getitem", "function": "__operators__.getitem"}, "name": "tf.__operators__.getitem", "inbound_nodes": [["in", 0, 0, {"slice_spec": [{"class_name": "__ellipsis__"}, {"start": null, "stop": null, "step": -1}]}]]}"#,
            #"{"class_name": "TFOpLambda", "config": {"name": "tf.nn.bias_add", "function": "nn.bias_add"}, "name": "tf.nn.bias_add", "inbound_nodes": [["tf.__operators__.getitem", 0, 0, {"bias": [-103.939, -116.779, -123.68], "data_format": "NHWC"}]]}"#,
        ]
        let g = try Self.importGraph(Self.model(layers, last: "tf.nn.bias_add", kerasMajor: 2), layout: .keras2H5)
        #expect(Self.recorded(g) == "caffe")
    }

    /// Rescaling(1/255) is the model's own, but none of the named modes.
    @Test func rescalingIsTheModelsOwn() throws {
        let layers = [#"{"class_name": "Rescaling", "module": "keras.layers", "config": {"name": "r", "scale": 0.00392156862745098, "offset": 0.0}, "name": "r", "inbound_nodes": [{"args": [\#(Self.tensor("in"))], "kwargs": {}}]}"#]
        #expect(Self.recorded(try Self.importGraph(Self.model(layers, last: "r"))) == "model")
    }

    /// An op lambda that is not per-channel arithmetic is refused naming the file, the layer and its class.
    @Test func unknownOpLambdaIsNamed() throws {
        let layers = [#"{"class_name": "TFOpLambda", "config": {"name": "tf.math.sqrt", "function": "math.sqrt"}, "name": "tf.math.sqrt", "inbound_nodes": [["in", 0, 0, {}]]}"#]
        #expect {
            _ = try Self.importGraph(Self.model(layers, last: "tf.math.sqrt", kerasMajor: 2), layout: .keras2H5)
        } throws: { error in
            "\(error)".hasPrefix("m.keras: layer 'tf.math.sqrt' (TFOpLambda): tf.math.sqrt is not supported")
        }
    }

    /// Division of a constant by the tensor is no affine: refused naming the layer.
    @Test func constantDividedByTensorIsRefused() throws {
        let layers = [Self.opLayer("TrueDivide", "inv", args: "[2.0, \(Self.tensor("in"))]")]
        #expect {
            _ = try Self.importGraph(Self.model(layers, last: "inv"))
        } throws: { error in
            "\(error)".contains("layer 'inv' (TrueDivide)") && "\(error)".contains("not a per-channel scale and shift")
        }
    }
}
