/// An error from the Keras importer, with enough context to find the bad spot in the input.
///
/// Prints as one line, fields omitted when nil:
/// `model.h5: layer 'conv1_bn' (BatchNormalization): tensor 'moving_variance': shape [32] but the layer has 64 channels`
public struct KerasImportError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file as the user named it (for a `.keras` archive's weights: `model.keras::model.weights.h5`).
    public var file: String
    /// The Keras layer name, when the error concerns one layer.
    public var layer: String?
    /// The Keras layer class (`BatchNormalization`), printed after the layer name.
    public var layerClass: String?
    /// The tensor: a weight name (`moving_variance`) or an HDF5 dataset path.
    public var tensor: String?
    /// What is wrong, in words, naming the bad value.
    public var message: String

    public init(file: String, layer: String? = nil, layerClass: String? = nil, tensor: String? = nil,
                _ message: String) {
        self.file = file
        self.layer = layer
        self.layerClass = layerClass
        self.tensor = tensor
        self.message = message
    }

    public var description: String {
        var parts = [file]
        if let layer {
            parts.append(layerClass.map { "layer '\(layer)' (\($0))" } ?? "layer '\(layer)'")
        } else if let layerClass {
            parts.append("layer of class \(layerClass)")
        }
        if let tensor { parts.append("tensor '\(tensor)'") }
        parts.append(message)
        return parts.joined(separator: ": ")
    }
}
