import Foundation
import KilnKeras

/// Saves a head as Keras 3 `model.save("head.h5")` does (the legacy HDF5 layout): root attributes
/// `keras_version`, `backend` and `model_config` (a Sequential: InputLayer, [Dense(relu)], [Dropout], Dense
/// softmax); `model_weights` with `layer_names`, one group per layer with `weight_names`
/// (`<model>/<layer>/kernel`, `…/bias`) and the datasets at those paths; `top_level_model_weights` empty.
/// `keras.models.load_model` opens it, and `kiln fuse` takes it as a head. `backbone` (the features'
/// identity) is stored as the root attribute `kiln_backbone`, which Keras ignores and `kiln fuse` checks; the class
/// names, one per output column, as `kiln_class_names` (a JSON array of strings), which `kiln fuse` uses when it is
/// given no `--labels`.
public enum KerasHeadExport {
    public static let modelName = "kiln_head"
    public static let backboneAttribute = "kiln_backbone"
    public static let classNamesAttribute = "kiln_class_names"

    public static func write(_ head: Head, to path: String, backbone: String?, classNames: [String]? = nil) throws(HDF5Writer.WriteError) {
        let w = try HDF5Writer(path: path)
        try w.writeStringAttribute(on: "/", name: "keras_version", value: "3.15.1")
        try w.writeStringAttribute(on: "/", name: "backend", value: "tensorflow")
        try w.writeStringAttribute(on: "/", name: "model_config", value: modelConfig(head))
        if let backbone { try w.writeStringAttribute(on: "/", name: backboneAttribute, value: backbone) }
        if let classNames, let json = try? JSONEncoder().encode(classNames) {
            try w.writeStringAttribute(on: "/", name: classNamesAttribute, value: String(decoding: json, as: UTF8.self))
        }
        try w.createGroup("/model_weights")
        try w.writeStringAttribute(on: "/model_weights", name: "keras_version", value: "3.15.1")
        try w.writeStringAttribute(on: "/model_weights", name: "backend", value: "tensorflow")
        var layers: [(String, DenseWeights?)] = []
        if let h = head.hidden { layers.append(("hidden", h)) }
        if head.dropout > 0 { layers.append(("dropout", nil)) }
        layers.append(("classes", head.output))
        try w.writeStringArrayAttribute(on: "/model_weights", name: "layer_names", values: layers.map(\.0))
        for (name, weights) in layers {
            let g = "/model_weights/\(name)"
            try w.createGroup(g)
            guard let weights else {
                try w.writeEmptyAttribute(on: g, name: "weight_names")
                continue
            }
            try w.writeStringArrayAttribute(on: g, name: "weight_names", values: ["\(modelName)/\(name)/kernel", "\(modelName)/\(name)/bias"])
            try w.createGroup("\(g)/\(modelName)")
            try w.createGroup("\(g)/\(modelName)/\(name)")
            try w.writeDataset("\(g)/\(modelName)/\(name)/kernel", shape: [weights.inputs, weights.units], values: weights.kernel)
            try w.writeDataset("\(g)/\(modelName)/\(name)/bias", shape: [weights.units], values: weights.bias)
        }
        try w.createGroup("/model_weights/top_level_model_weights")
        try w.writeEmptyAttribute(on: "/model_weights/top_level_model_weights", name: "weight_names")
        try w.finish()
    }

    /// The Sequential config JSON, field for field as Keras 3.15 writes it.
    public static func modelConfig(_ head: Head) -> String {
        let policy = #"{"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null}"#
        func dense(_ name: String, _ units: Int, _ activation: String) -> String {
            #"{"class_name": "Dense", "config": {"name": "\#(name)", "trainable": true, "dtype": \#(policy), "units": \#(units), "activation": "\#(activation)", "use_bias": true, "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null, "input_axes": null, "output_axes": null}, "registered_name": null}, "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": null}, "kernel_regularizer": null, "bias_regularizer": null, "kernel_constraint": null, "bias_constraint": null, "quantization_config": null}}"#
        }
        var layers = [#"{"class_name": "InputLayer", "config": {"batch_shape": [null, \#(head.inputCount)], "dtype": "float32", "sparse": false, "ragged": false, "name": "input_layer", "optional": false}}"#]
        if let h = head.hidden { layers.append(dense("hidden", h.units, "relu")) }
        if head.dropout > 0 {
            layers.append(#"{"class_name": "Dropout", "config": {"name": "dropout", "trainable": true, "dtype": \#(policy), "rate": \#(head.dropout), "seed": null, "noise_shape": null}}"#)
        }
        layers.append(dense("classes", head.classCount, "softmax"))
        return #"{"class_name": "Sequential", "config": {"name": "\#(modelName)", "trainable": true, "dtype": \#(policy), "layers": [\#(layers.joined(separator: ", "))], "build_input_shape": [null, \#(head.inputCount)]}}"#
    }

    /// The backbone identity a head file records, if any (nil for heads not written by kiln).
    public static func recordedBackbone(path: String) throws(KerasImportError) -> String? {
        let file = try HDF5File(path: path)
        return try file.stringAttribute(backboneAttribute)
    }

    /// The class names a head file records, if any (nil for heads not written by kiln, or written before it
    /// recorded them); a record that is not a JSON array of strings is refused naming the file.
    public static func recordedClassNames(path: String) throws(KerasImportError) -> [String]? {
        let file = try HDF5File(path: path)
        guard let text = try file.stringAttribute(classNamesAttribute) else { return nil }
        guard let names = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else {
            throw KerasImportError(file: (path as NSString).lastPathComponent, "attribute '\(classNamesAttribute)' is not a JSON array of class names")
        }
        return names
    }
}
