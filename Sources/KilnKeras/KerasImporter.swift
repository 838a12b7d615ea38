import Foundation
import KilnFormat
import KilnGraph

/// The Keras file layouts Kiln reads.
public enum KerasLayout: String, Sendable {
    /// `model.save("x.h5")` from Keras 2 (tf.keras): root `model_config`, weight names with `:0`.
    case keras2H5 = "keras2-h5"
    /// `model.save("x.h5")` from Keras 3: the same layout, names without `:0`.
    case keras3H5 = "keras3-h5"
    /// Keras 3 `.keras` zip: `config.json` + `model.weights.h5`.
    case kerasZip = "keras-zip"
    /// Keras 3 `.weights.h5` (`layers/<class>_N/vars/i`), with a config or the built-in ResNet-50.
    case weightsH5 = "keras3-weights-h5"
    /// Legacy weights only (`save_weights("x.h5")`, Keras applications files): `layer_names` at the root.
    case legacyWeightsH5 = "keras-legacy-weights-h5"
}

/// Reads every Keras layout into a `Graph`, resolving weights by layer name.
public enum KerasImporter {
    /// Imports `path`. `configPath` (a `model.to_json()` or `config.json`) supplies the topology for a
    /// weights-only file; without it a weights-only file is read with the built-in topology named `topology`,
    /// else with the one `BuiltinTopology.all` entry whose layers the file holds.
    public static func importModel(path: String, configPath: String? = nil, topology builtinName: String? = nil) throws(KerasImportError) -> Graph {
        let display = (path as NSString).lastPathComponent
        switch try KerasFileKind.detect(path: path, displayName: path) {
        case .zip:
            try refuseTopology(builtinName, file: display)
            let archive = try KerasArchive.open(path: path)
            let config = try parseJSON(archive.configJSON, file: "\(display)::config.json")
            var metadata: [String: MetadataValue] = [:]
            if let meta = archive.metadataJSON, let m = try? JSONSerialization.jsonObject(with: meta) as? [String: Any],
               let v = m["keras_version"] as? String {
                metadata[.sourceKerasVersion] = .string(v)
            }
            let topology = try KerasTopology.parse(config, file: display)
            do {
                return try archive.withWeightsFile { (weights: HDF5File) throws -> Graph in
                    try build(topology, weights: KerasV3Weights(file: weights, layoutName: KerasLayout.kerasZip.rawValue),
                              file: display, layout: .kerasZip, metadata: metadata)
                }
            } catch let e as KerasImportError {
                throw e
            } catch {
                throw KerasImportError(file: display, "\(error)")
            }
        case .unknown:
            throw KerasImportError(file: display, "not a Keras model: neither HDF5 nor a .keras zip archive")
        case .hdf5:
            break
        }

        let file = try HDF5File(path: path, displayName: display)
        var metadata: [String: MetadataValue] = [:]
        if let v = try file.stringAttribute("keras_version") { metadata[.sourceKerasVersion] = .string(v) }
        if let b = try file.stringAttribute("backend") { metadata[.sourceKerasBackend] = .string(b) }

        if let configText = try file.stringAttribute("model_config") {
            // A whole model saved in the legacy HDF5 layout.
            try refuseTopology(builtinName, file: display)
            let config = try parseJSON(Data(configText.utf8), file: "\(display): model_config")
            let topology = try KerasTopology.parse(config, file: display)
            guard file.isGroup("/model_weights") else {
                throw KerasImportError(file: display, "has a model_config but no 'model_weights' group (saved without weights?)")
            }
            var version = try file.group(at: "/model_weights").stringAttribute("keras_version") ?? ""
            if version.isEmpty { version = try file.stringAttribute("keras_version") ?? "" }
            let layout: KerasLayout = version.hasPrefix("2.") || version.hasPrefix("1.") ? .keras2H5 : .keras3H5
            let weights = try LegacyH5Weights(file: file, rootPath: "/model_weights", layoutName: layout.rawValue)
            return try build(topology, weights: weights, file: display, layout: layout, metadata: metadata)
        }

        let layout: KerasLayout
        let weights: any KerasWeightSource
        if try file.root.stringArrayAttribute("layer_names") != nil {
            layout = .legacyWeightsH5
            weights = try LegacyH5Weights(file: file, rootPath: "/", layoutName: layout.rawValue)
        } else if file.isGroup("/layers") {
            layout = .weightsH5
            weights = KerasV3Weights(file: file, layoutName: layout.rawValue)
        } else {
            throw KerasImportError(file: display, "not a Keras model or weights file: no 'model_config' or 'layer_names' attribute and no 'layers' group")
        }
        let topology: KerasTopology
        if let configPath {
            let configDisplay = (configPath as NSString).lastPathComponent
            guard let data = FileManager.default.contents(atPath: configPath) else {
                throw KerasImportError(file: configDisplay, "cannot read the config file")
            }
            topology = try KerasTopology.parse(try parseJSON(data, file: configDisplay), file: configDisplay)
            metadata[.sourceConfig] = .string(configDisplay)
        } else {
            let builtin = try BuiltinTopology.resolve(builtinName, for: file, layout: layout)
            let includeTop = try weightsInclude(file: file, layout: layout, layer: builtin.classifier)
            topology = try KerasTopology.parse(builtin.config(includeTop), file: display)
            metadata[.sourceTopology] = .string(builtin.recordedName(includeTop: includeTop))
        }
        return try build(topology, weights: weights, file: display, layout: layout, metadata: metadata)
    }

    /// A built-in topology is for weights-only files: one named for a file with its own config is refused.
    static func refuseTopology(_ name: String?, file: String) throws(KerasImportError) {
        if let name {
            throw KerasImportError(file: file, "has its own model config; a built-in topology ('\(name)') applies to weights-only files")
        }
    }

    /// Whether a weights-only file has weights for `layer` (decides the built-in topology's top).
    static func weightsInclude(file: HDF5File, layout: KerasLayout, layer: String) throws(KerasImportError) -> Bool {
        switch layout {
        case .legacyWeightsH5:
            return (try file.root.stringArrayAttribute("layer_names") ?? []).contains(layer)
        default:
            // A built-in topology has exactly one Dense layer, the classifier.
            return file.isGroup("/layers/dense")
        }
    }

    /// Resizing, CenterCrop and RandomCrop inside the model are the identity where their input already has their
    /// size. Where they read the model's input of free size, the input takes their size (recorded as the bundle's
    /// input size, `input.height`/`input.width`); any other is refused, naming the layer.
    static func settleGeometryLayers(_ topology: KerasTopology, nodes: inout [GraphNode], metadata: inout [String: MetadataValue],
                                     file: String) throws(KerasImportError) {
        for layer in topology.layers where KerasLayerMapping.geometryLayers.contains(layer.className) {
            func fail(_ m: String) -> KerasImportError {
                KerasImportError(file: file, layer: layer.name, layerClass: layer.className, m)
            }
            guard let h = layer.config["height"] as? Int, let w = layer.config["width"] as? Int, h >= 1, w >= 1 else {
                throw fail("config has no height and width")
            }
            let shapes: [String: SymbolicShape]
            do { shapes = try Graph(nodes: nodes, outputs: []).inferShapes() } catch {
                throw KerasImportError(file: file, layer: error.layer, error.message)
            }
            guard let source = layer.inbound.first, let shape = shapes[source], shape.count == 4 else {
                throw fail("needs an NHWC image input")
            }
            if shape[1] == h, shape[2] == w { continue }
            // Free size, reading the model input (through identity layers only): the input takes the layer's size.
            var origin = source
            while let i = nodes.firstIndex(where: { $0.name == origin }), case .dropout = nodes[i].op, let up = nodes[i].inputs.first {
                origin = up
            }
            if shape[1] == nil, shape[2] == nil, let i = nodes.firstIndex(where: { $0.name == origin }), case .input(let s) = nodes[i].op {
                nodes[i].op = .input(shape: [s[0], h, w, s[3]])
                metadata[.inputHeight] = .int(Int64(h))
                metadata[.inputWidth] = .int(Int64(w))
                continue
            }
            throw fail("changes the image size from \(describe(Array(shape[1...2]))) to (\(h), \(w)) inside the model; Kiln runs such a layer only where its input already has its size, or as the model's first layer on an input of free size")
        }
    }

    static func parseJSON(_ data: Data, file: String) throws(KerasImportError) -> Any {
        do {
            return try JSONSerialization.jsonObject(with: data)
        } catch {
            throw KerasImportError(file: file, "model config is not valid JSON")
        }
    }

    /// Builds the graph: one node per layer, weights resolved by name and checked against the config.
    static func build(_ topology: KerasTopology, weights: any KerasWeightSource, file: String, layout: KerasLayout,
                      metadata extra: [String: MetadataValue]) throws(KerasImportError) -> Graph {
        var nodes: [GraphNode] = []
        let kerasMajor = layout == .keras2H5 ? 2 : 3
        for layer in topology.layers {
            let vars = try weights.variables(of: layer)
            nodes += try KerasLayerMapping.nodes(for: layer, variables: vars, file: file, kerasMajor: kerasMajor)
        }
        var metadata = extra
        try settleGeometryLayers(topology, nodes: &nodes, metadata: &metadata, file: file)
        metadata[.sourceFile] = .string(file)
        metadata[.sourceFormat] = .string(layout.rawValue)
        metadata[.sourceFramework] = .string("keras")
        metadata[.sourceModelName] = .string(topology.modelName)
        let outputs = topology.outputs.map { GraphOutput(port: $0, node: $0) }
        var graph = Graph(nodes: nodes, outputs: outputs, metadata: metadata)
        let shapes: [String: SymbolicShape]
        do {
            shapes = try graph.inferShapes()
        } catch {
            let cls = topology.layers.first { $0.nodeName == error.layer }?.className
            throw KerasImportError(file: file, layer: error.layer, layerClass: cls, error.message)
        }
        // The model's own preprocessing (Rescaling, Normalization, preprocess_input on the symbolic tensor): the
        // bundle then takes raw RGB 0-255, and `--preprocess` must not add another.
        var recognised = graph
        do {
            if let own = try recognised.ownPreprocessing() {
                graph = recognised
                graph.metadata[.inputPreprocessing] = .string(own.name)
                graph.metadata[.inputColor] = .string("RGB 0-255")
            }
        } catch {
            let cls = topology.layers.first { $0.nodeName == error.layer }?.className
            throw KerasImportError(file: file, layer: error.layer, layerClass: cls, error.message)
        }
        // A BatchNormalization's axis must be the last one of its input.
        for layer in topology.layers where layer.className == "BatchNormalization" {
            let c = layer.config["axis"]
            let axis = (c as? Int) ?? ((c as? [Any])?.first as? Int) ?? -1
            if let source = layer.inbound.first, let rank = shapes[source]?.count, axis != -1, axis != rank - 1 {
                throw KerasImportError(file: file, layer: layer.name, layerClass: layer.className,
                                       "axis \(axis) is not the channel (last) axis of its rank-\(rank) input")
            }
        }
        return graph
    }
}
