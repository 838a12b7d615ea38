import KilnFormat
import KilnImage

/// How the model's image input lays out a batch.
public enum InputLayout: String, Sendable, Equatable {
    /// `[N, H, W, 3]`, what Keras sources and every `kiln fuse` bundle take.
    case nhwc = "NHWC"
    /// `[N, 3, H, W]`, kept for ONNX sources converted without a transpose.
    case nchw = "NCHW"
}

/// What the chosen output's numbers are, decided from the op that produces it.
public enum OutputScores: String, Sendable, Equatable {
    /// Probabilities: a softmax's output (a Softmax op, or a Dense with the softmax fused), or any output whose
    /// `output.kind` is recorded (the predictions turn logits and binary units into probabilities).
    case probabilities = "probability"
    /// Anything else on a bundle without `output.kind`: logits, features, raw scores.
    case scores = "score"
}

/// What a bundle says about its input and its output, read once from its metadata (`MetadataKey`) and its
/// ports: what every front end needs to turn images into the model's input and its output into classes.
public struct InputSpec: Sendable, Equatable {
    /// The bundle's name in messages (its path, for a bundle read from a file).
    public var bundle: String
    /// The first input: its name and shape as recorded (-1 for a free dimension).
    public var inputName: String
    public var inputShape: [Int64]
    public var layout: InputLayout
    /// The image size the model takes (`input.height`, `input.width`); nil when it is free.
    public var height: Int?
    public var width: Int?
    /// The resize mode name (`input.resize`): nil for a bundle that takes tensors, not images.
    public var resize: String?
    /// torchvision only: the shorter side before the crop (`input.resize_shorter`).
    public var resizeShorter: Int?
    /// The preprocessing folded into the graph (`input.preprocessing`), and the colour the input is in.
    public var preprocessing: String?
    public var color: String?
    /// Class names, one per column of the output (`labels.names`).
    public var labels: [String]?
    /// The output used for classes: its position in the bundle's outputs, name, shape, and what it holds.
    public var outputIndex: Int
    public var outputName: String
    public var outputShape: [Int64]
    public var scores: OutputScores
    /// What the first output holds, as recorded (`output.kind`); nil for bundles that do not say.
    public var outputKind: ClassifierOutputKind?

    /// Reads the spec of `model`; `output` chooses the output by name (default: the first).
    public init(_ model: FrozenModel, bundle: String, output: String? = nil) throws(ClassifyError) {
        let meta = model.metadata
        func string(_ key: MetadataKey) -> String? { if case .string(let s)? = meta[key] { return s }; return nil }
        func int(_ key: MetadataKey) -> Int? { if case .int(let v)? = meta[key] { return Int(exactly: v) }; return nil }
        self.bundle = bundle
        let ports = model.outputs
        if let output {
            guard let i = ports.firstIndex(where: { $0.name == output }) else {
                throw ClassifyError(.badInput, "no output named '\(output)' (outputs: \(ports.map(\.name).joined(separator: ", ")))")
            }
            outputIndex = i
        } else {
            outputIndex = 0
        }
        guard let first = model.inputs.first, ports.indices.contains(outputIndex) else {
            throw ClassifyError(.badBundle, file: bundle, "the bundle has no input or no output")
        }
        inputName = first.name
        inputShape = first.shape
        layout = string(.inputLayout) == InputLayout.nchw.rawValue ? .nchw : .nhwc
        if let h = int(.inputHeight), let w = int(.inputWidth) {
            height = h
            width = w
        }
        resize = string(.inputResize)
        resizeShorter = int(.inputResizeShorter)
        preprocessing = string(.inputPreprocessing)
        color = string(.inputColor)
        if case .strings(let names)? = meta[.labelNames] { labels = names }
        let port = ports[outputIndex]
        outputName = port.name
        outputShape = port.shape
        // The kind describes the first output; another chosen output is read as before.
        outputKind = outputIndex == 0 ? string(.outputKind).flatMap(ClassifierOutputKind.init(rawValue:)) : nil
        if let kind = string(.outputKind), outputIndex == 0, outputKind == nil {
            throw ClassifyError(.badBundle, file: bundle, "\(MetadataKey.outputKind) '\(kind)' is not one of " +
                                ClassifierOutputKind.allCases.map(\.rawValue).joined(separator: ", "))
        }
        scores = outputKind != nil || Self.producedBySoftmax(model, value: port.value) ? .probabilities : .scores
    }

    /// The class names the output needs: `outputKind`'s class count for `columns` columns (2 for a binary unit).
    public func classCount(columns: Int) -> Int { outputKind?.classCount(columns: columns) ?? columns }

    /// Whether the bundle takes images (it records how to resize them).
    public var takesImages: Bool { resize != nil }

    /// The image size: the bundle's, or `size` when the bundle leaves it free; nil when neither says.
    /// A `size` that differs from the bundle's is refused.
    public func imageSize(_ size: (height: Int, width: Int)?) throws(ClassifyError) -> (height: Int, width: Int)? {
        if let height, let width {
            if let size, (size.height, size.width) != (height, width) {
                throw ClassifyError(.badInput, "size \(size.height)x\(size.width) differs from the bundle's input size \(height)x\(width)")
            }
            return (height, width)
        }
        return size
    }

    /// How images become this model's input: the recorded resizing at `size` (see `imageSize`), checked
    /// against the input port (`[N, H, W, 3]`, or `[N, 3, H, W]` for NCHW). The messages say what is missing;
    /// a front end adds how its caller gives it (kiln-run: `--input X.npy`, `--size HxW`).
    public func imageResize(size: (height: Int, width: Int)? = nil) throws(ClassifyError) -> InputResize {
        guard let resize else {
            throw ClassifyError(.badInput, file: bundle, "the bundle records no \(MetadataKey.inputResize), so it takes tensors, not images " +
                                "(bundles from `kiln fuse` take images)")
        }
        guard let (height, width) = try imageSize(size) else {
            throw ClassifyError(.badInput, file: bundle, "the bundle records no \(MetadataKey.inputHeight)/\(MetadataKey.inputWidth) " +
                                "(its input size is free)")
        }
        if resize == "torchvision", resizeShorter == nil {
            throw ClassifyError(.badBundle, file: bundle, "\(MetadataKey.inputResize) 'torchvision' needs \(MetadataKey.inputResizeShorter)")
        }
        let made: InputResize
        do {
            made = try InputResize(name: resize, height: height, width: width, shorter: resizeShorter)
        } catch {
            throw ClassifyError(error)
        }
        guard inputShape.count == 4 else {
            throw ClassifyError(.unsupported, file: bundle, "the model input is not an \(layout.rawValue) image")
        }
        let expected = batchShape(1, height: height, width: width).map(Int64.init)
        for axis in 1..<4 where inputShape[axis] != -1 && inputShape[axis] != expected[axis] {
            let dims = layout == .nhwc ? "[N, \(height), \(width), 3]" : "[N, 3, \(height), \(width)]"
            throw ClassifyError(.badBundle, file: bundle, "input '\(inputName)' has shape \(inputShape), images give \(dims)")
        }
        return made
    }

    /// The input shape of `count` images of `height` × `width` in this layout.
    public func batchShape(_ count: Int, height: Int, width: Int) -> [Int] {
        layout == .nhwc ? [count, height, width, 3] : [count, 3, height, width]
    }

    /// The name of a column of the output: its label, or its index when there is none.
    public func label(_ column: Int) -> String {
        labels.flatMap { column < $0.count ? $0[column] : nil } ?? String(column)
    }

    /// The resizing for images given on a command line with an optional `--size` (`requested`): it must agree
    /// with a size the bundle records, and the errors name the option that would help (`--input X.npy` for a
    /// bundle that takes tensors, `--size HxW` for one whose input size is free).
    public func commandLineImageResize(requested: (height: Int, width: Int)?) throws(ClassifyError) -> InputResize {
        if let requested, let height, let width, (height, width) != requested {
            throw ClassifyError(.badInput, "--size \(requested.height)x\(requested.width) differs from the bundle's input size \(height)x\(width)")
        }
        do {
            return try imageResize(size: requested)
        } catch {
            var e = error
            if !takesImages { e.message += "; use --input X.npy" } else if requested == nil, height == nil { e.message += "; give --size HxW" }
            throw e
        }
    }

    /// Whether `value` is a softmax's output (a Softmax op or a Dense with a fused softmax).
    static func producedBySoftmax(_ model: FrozenModel, value: Int) -> Bool {
        guard let op = model.ops.last(where: { $0.output == value }) else { return false }
        if op.opcode == .softmax { return true }
        if op.opcode == .dense, let a = try? DenseAttributes(decoding: op.attributes) { return a.softmax }
        return false
    }
}
