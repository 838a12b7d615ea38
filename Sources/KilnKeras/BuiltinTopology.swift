import KilnFormat
import KilnGraph

/// A Keras model topology Kiln knows by name: the layers of a weights-only file that carries no model config
/// (a Keras applications weights file, a bare `.weights.h5`), and the preprocessing its weights were trained
/// with. One entry per topology in `BuiltinTopology.all`; adding one (MobileNet, EfficientNet, …) is its config
/// builder and one entry there.
public struct BuiltinTopology: Sendable {
    /// The name `kiln convert --topology` takes; recorded as `source.topology = builtin:NAME`.
    public let name: String
    /// What it is, for messages ("Keras applications ResNet-50").
    public let summary: String
    /// The preprocessing the weights were trained with (the application's `preprocess_input`), the default
    /// `kiln fuse` and `kiln features` fold in.
    public let preprocessing: Preprocessing
    /// The classifier layer: with its weights in the file the topology keeps its top, else it ends at the
    /// features.
    let classifier: String
    /// Layer names that identify the topology in a model that brings its own config (its saved form).
    let signature: [String]
    /// The topology as a Keras functional config, with or without the classifier.
    let config: @Sendable (_ includeTop: Bool) -> [String: Any]

    /// Every built-in topology; a weights file is matched against each in turn.
    public static let all: [BuiltinTopology] = [
        BuiltinTopology(name: "resnet50", summary: "Keras applications ResNet-50", preprocessing: .caffe,
                        classifier: "predictions", signature: ["conv1_conv", "conv2_block1_3_conv"], config: ResNet50Topology.config),
        BuiltinTopology(name: "mobilenetv2", summary: "Keras applications MobileNetV2", preprocessing: .tf,
                        classifier: "predictions", signature: ["Conv1", "expanded_conv_depthwise"],
                        config: MobileNetV2Topology.config),
        // The larger DenseNets first: a model with its own config is recognised by the first entry whose signature
        // layers it has, and DenseNet201 has every layer DenseNet121 has. Each in Keras 3's names and in Keras 2's
        // (the applications weight files'), which differ in the stem only.
    ] + [(201, [6, 12, 48, 32], "conv4_block48_concat"), (169, [6, 12, 32, 32], "conv5_block32_concat"),
         (121, [6, 12, 24, 16], "conv5_block16_concat")].flatMap { depth, blocks, marker in
        [false, true].map { denseNet(depth, blocks: blocks, marker: marker, keras2Names: $0) }
    }

    /// Keras applications DenseNet`depth` with `blocks` layers per dense block, in Keras 3's layer names or Keras 2's
    /// (`-keras2`: the applications weight files', which differ in the stem only); recognised by the stem and
    /// `marker`, a layer the smaller DenseNets listed after it do not have.
    static func denseNet(_ depth: Int, blocks: [Int], marker: String, keras2Names: Bool) -> BuiltinTopology {
        let name = "densenet\(depth)"
        return BuiltinTopology(name: keras2Names ? "\(name)-keras2" : name,
                               summary: "Keras applications DenseNet\(depth)" + (keras2Names ? " (Keras 2 layer names)" : ""),
                               preprocessing: .torch, classifier: "predictions",
                               signature: [keras2Names ? "conv1/conv" : "conv1_conv", marker],
                               config: { DenseNetTopology.config(blocks: blocks, name: name, keras2Names: keras2Names, includeTop: $0) })
    }

    /// The entry called `name`.
    public static func named(_ name: String) -> BuiltinTopology? { all.first { $0.name == name } }

    /// The value of `source.topology` for this topology read with or without its classifier.
    func recordedName(includeTop: Bool) -> String { includeTop ? "builtin:\(name)" : "builtin:\(name)-notop-avgpool" }

    /// The built-in topology `graph` was imported as: the one its `source.topology` names, else (a Keras model
    /// with its own config) the one whose signature layers it has. Nil for anything else.
    public static func recognizing(_ graph: Graph) -> BuiltinTopology? {
        if case .string(let recorded)? = graph.metadata[.sourceTopology],
           let entry = all.first(where: { recorded == $0.recordedName(includeTop: true) || recorded == $0.recordedName(includeTop: false) }) {
            return entry
        }
        guard case .string("keras")? = graph.metadata[.sourceFramework] else { return nil }
        return all.first { $0.signature.allSatisfy { graph.node(named: $0) != nil } }
    }

    /// The layers of this topology that hold weights (`expectsWeights`), by name and by Keras 3 group path,
    /// the classifier included.
    func weightedLayers(file: String) throws(KerasImportError) -> [KerasLayer] {
        try KerasTopology.parse(config(true), file: file).layers.filter { expectsWeights($0.className) }
    }

    /// Whether the weights-only `file` (in `layout`) holds exactly this topology's weighted layers (the
    /// classifier optional) and no others. Names decide; shapes are the import's to check (filter counts are
    /// taken from the kernels, so narrower models with the same names match).
    func matches(_ file: HDF5File, layout: KerasLayout) throws(KerasImportError) -> Bool {
        let layers = try weightedLayers(file: file.displayName)
        let required = layers.filter { $0.name != classifier }
        switch layout {
        case .legacyWeightsH5:
            let names = try file.root.stringArrayAttribute("layer_names") ?? []
            let listed = Set(names)
            guard required.allSatisfy({ listed.contains($0.name) }) else { return false }
            let known = Set(layers.map(\.name))
            for name in names where !known.contains(name) && file.isGroup("/\(name)") {
                if !(try file.group(at: "/\(name)").stringArrayAttribute("weight_names") ?? []).isEmpty { return false }
            }
            return true
        default:
            for layer in required {
                guard file.isDataset("\(layer.v3Path)/vars/0") else { return false }
                if let stored = try file.group(at: "\(layer.v3Path)/vars").stringAttribute("name"), stored != layer.name { return false }
            }
            let known = Set(layers.map(\.v3Path))
            for child in try file.group(at: "/layers").childNames where !known.contains("layers/\(child)") {
                if file.isDataset("/layers/\(child)/vars/0") { return false }
            }
            return true
        }
    }

    /// The topology for the weights-only `file`: `name` when given, else the one entry its layers match.
    static func resolve(_ name: String?, for file: HDF5File, layout: KerasLayout) throws(KerasImportError) -> BuiltinTopology {
        let known = all.map(\.name).joined(separator: ", ")
        if let name {
            guard let entry = named(name) else {
                throw KerasImportError(file: file.displayName, "no built-in topology '\(name)' (known: \(known))")
            }
            return entry
        }
        for entry in all where try entry.matches(file, layout: layout) { return entry }
        throw KerasImportError(file: file.displayName, "holds weights only (no model config) and its layers match no built-in topology (\(known)); give its config with --config or a topology with --topology")
    }
}
