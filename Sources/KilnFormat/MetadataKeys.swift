/// A key of the bundle's metadata (META, formats/kiln-bundle.md): namespaced, `kiln.`, `source.`, `input.`,
/// `labels.`, `output.`, `fuse.`, `head.`. The standard keys are the static members, each spelled once, here; code
/// everywhere else names them (`metadata[.inputResize]`), so a misspelt key does not compile.
public struct MetadataKey: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    // MARK: kiln.
    /// string: version of the `kiln` that wrote the bundle.
    public static let converterVersion = MetadataKey(rawValue: "kiln.converter_version")

    // MARK: source.
    /// string: base name of the source model file.
    public static let sourceFile = MetadataKey(rawValue: "source.file")
    /// string: the source's layout (`keras2-h5`, `keras3-h5`, `keras-zip`, …, `onnx`).
    public static let sourceFormat = MetadataKey(rawValue: "source.format")
    /// string: `keras` or `onnx`.
    public static let sourceFramework = MetadataKey(rawValue: "source.framework")
    /// string: the Keras version recorded by the source file.
    public static let sourceKerasVersion = MetadataKey(rawValue: "source.keras_version")
    /// string: the Keras backend recorded by the source file.
    public static let sourceKerasBackend = MetadataKey(rawValue: "source.keras_backend")
    /// string: the source model's (or ONNX graph's) name.
    public static let sourceModelName = MetadataKey(rawValue: "source.model_name")
    /// string: `builtin:NAME` / `builtin:NAME-notop-avgpool` (KilnKeras `BuiltinTopology`, e.g. `builtin:resnet50`)
    /// when the file had no config.
    public static let sourceTopology = MetadataKey(rawValue: "source.topology")
    /// string: the config file used for a weights-only source.
    public static let sourceConfig = MetadataKey(rawValue: "source.config")
    /// string: the ONNX producer name and version.
    public static let sourceProducer = MetadataKey(rawValue: "source.producer")
    /// int: the ONNX default-domain opset.
    public static let sourceONNXOpset = MetadataKey(rawValue: "source.onnx_opset")
    /// int: the ONNX IR version.
    public static let sourceONNXIRVersion = MetadataKey(rawValue: "source.onnx_ir_version")

    // MARK: input.
    /// string: `NHWC`, or `NCHW` for ONNX sources whose input the bundle keeps in that layout.
    public static let inputLayout = MetadataKey(rawValue: "input.layout")
    /// string: `caffe`, `torch`, `tf` when folded into the graph (the input is raw RGB 0–255); `none…`/absent otherwise.
    public static let inputPreprocessing = MetadataKey(rawValue: "input.preprocessing")
    /// string: `RGB 0-255` when preprocessing is folded.
    public static let inputColor = MetadataKey(rawValue: "input.color")
    /// int: the image height the model takes.
    public static let inputHeight = MetadataKey(rawValue: "input.height")
    /// int: the image width the model takes.
    public static let inputWidth = MetadataKey(rawValue: "input.width")
    /// string: how images are resized: `keras-nearest`, `keras-bilinear`, `torchvision`, or TensorFlow's `tf-bilinear`,
    /// `tf-nearest`, `tf-bicubic`, `tf-area`, each also with `-crop` (formats/kiln-bundle.md).
    public static let inputResize = MetadataKey(rawValue: "input.resize")
    /// int: torchvision only, the shorter side before the centre crop.
    public static let inputResizeShorter = MetadataKey(rawValue: "input.resize_shorter")

    // MARK: labels.
    /// strings: class names, one per column of the first output.
    public static let labelNames = MetadataKey(rawValue: "labels.names")

    // MARK: output.
    /// string: what the first output of a classifier holds (`ClassifierOutputKind`), decided from the op that
    /// produces it when the bundle is written (`kiln fuse`, `kiln convert`); absent on other bundles and on
    /// bundles written before it existed (their output is then read as probabilities after a softmax, else
    /// as scores).
    public static let outputKind = MetadataKey(rawValue: "output.kind")

    // MARK: fuse. and head.
    /// string: the fused backbone's file.
    public static let fuseBackbone = MetadataKey(rawValue: "fuse.backbone")
    /// string: the fused head's file.
    public static let fuseHead = MetadataKey(rawValue: "fuse.head")
    /// string: the backbone layer the head was joined at.
    public static let fuseCut = MetadataKey(rawValue: "fuse.cut")
    /// int: parameters of the backbone side (after folding).
    public static let fuseBackboneParameters = MetadataKey(rawValue: "fuse.backbone_parameters")
    /// int: parameters of the head side.
    public static let fuseHeadParameters = MetadataKey(rawValue: "fuse.head_parameters")

    /// In a fused bundle, the `head.*` key that keeps the head's `source.*` key; nil for other keys.
    public var headKeyForSource: MetadataKey? {
        let source = "source.", head = "head."
        guard rawValue.hasPrefix(source) else { return nil }
        return MetadataKey(rawValue: head + rawValue.dropFirst(source.count))
    }
}

extension Dictionary where Key == String, Value == MetadataValue {
    /// The value of a standard key.
    public subscript(key: MetadataKey) -> MetadataValue? {
        get { self[key.rawValue] }
        set { self[key.rawValue] = newValue }
    }
}

/// What a classifier's output values are (`MetadataKey.outputKind`), from the head's final op.
public enum ClassifierOutputKind: String, Sendable, CaseIterable {
    /// `Dense(1)`, linear: one logit z of the second class; p(second) = sigmoid(z), p(first) = 1 − that.
    case binaryLogit = "binary-logit"
    /// `Dense(1, sigmoid)`: the probability p of the second class; the first has 1 − p.
    case binaryProbability = "binary-probability"
    /// `Dense(N)`, linear, N > 1: logits of N exclusive classes (a softmax turns them into probabilities
    /// for presentation; the output stays the logits).
    case logits
    /// `Dense(N, softmax)` or a Softmax: probabilities of N exclusive classes.
    case probabilities
    /// `Dense(N, sigmoid)`, N > 1: N independent probabilities, one per class (multi-label).
    case multiLabel = "multi-label"

    /// How many classes (and so class names) an output of `columns` columns stands for: 2 for the binary
    /// heads' single column, else `columns`.
    public func classCount(columns: Int) -> Int {
        switch self {
        case .binaryLogit, .binaryProbability: return 2
        case .logits, .probabilities, .multiLabel: return columns
        }
    }
}
