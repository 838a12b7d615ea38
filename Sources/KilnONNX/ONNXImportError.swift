/// An error from the ONNX importer, with enough context to find the bad spot in the model.
///
/// Prints as one line, fields omitted when nil:
/// `model.onnx: node 'conv1' (Conv, opset 13): tensor 'conv1.weight': 9408 bytes of raw data for shape [64, 3, 7, 7] (37632 expected)`
public struct ONNXImportError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The model file as the user named it (base name).
    public var file: String
    /// The node: its name, or `#index` with its first output when the node has no name.
    public var node: String?
    /// The node's op type, with its domain when not the standard one (`com.microsoft.FusedConv`).
    public var opType: String?
    /// The opset the node was read with (the model's import for the node's domain).
    public var opset: Int?
    /// The tensor or value concerned (an initializer, an attribute's tensor, a graph input).
    public var tensor: String?
    /// What is wrong, in words, naming the bad value.
    public var message: String

    public init(file: String, node: String? = nil, opType: String? = nil, opset: Int? = nil, tensor: String? = nil,
                _ message: String) {
        self.file = file
        self.node = node
        self.opType = opType
        self.opset = opset
        self.tensor = tensor
        self.message = message
    }

    public var description: String {
        var parts = [file]
        var context: [String] = []
        if let opType { context.append(opType) }
        if let opset { context.append("opset \(opset)") }
        let detail = context.isEmpty ? "" : " (\(context.joined(separator: ", ")))"
        if let node {
            parts.append("node \(node)\(detail)")
        } else if !detail.isEmpty {
            parts.append("op\(detail)")
        }
        if let tensor { parts.append("tensor '\(tensor)'") }
        parts.append(message)
        return Self.oneLine(parts.joined(separator: ": "))
    }

    /// Names come from the file: control characters (a damaged name may hold a newline) are escaped, so
    /// the error is always one line.
    static func oneLine(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.properties.generalCategory == .control || scalar == "\u{2028}" || scalar == "\u{2029}" {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
