import Foundation

/// One Keras layer of a (possibly nested) model, flattened: nested models are inlined, their layers keep
/// the path of the models that hold them so that weights can be found by name.
struct KerasLayer {
    /// The Keras class name (`Conv2D`, `BatchNormalization`, …).
    let className: String
    /// The layer's name inside its own model.
    let name: String
    /// The layer's config dictionary.
    let config: [String: Any]
    /// Names (node names) of the layers whose outputs it reads.
    var inbound: [String]
    /// The nested-model layers that contain this layer, outermost first (empty at the top level).
    let containers: [String]
    /// The weights-file path of this layer in the Keras 3 (`.keras` / `.weights.h5`) layout.
    let v3Path: String

    /// The node name in the flattened graph: the layer name, or container-qualified when it collides.
    var nodeName: String
    /// The layer's Python module when the config says (`keras.layers`, `keras.src.ops.numpy` for op layers).
    var module: String? = nil
    /// The call as the config records it: Keras 3 `{"args": [...], "kwargs": {...}}`, Keras 2 the inbound entries
    /// `[["name", 0, 0, {kwargs}], ...]`. Op layers keep their constants here.
    var call: Any? = nil
}

/// A flattened Keras model: layers in `model.layers` order (nested models expanded in place), its
/// input layers and output node names.
struct KerasTopology {
    var layers: [KerasLayer]
    var outputs: [String]
    var modelName: String

    static let modelClasses: Set<String> = ["Functional", "Model", "Sequential"]

    /// Parses a Keras 2 or Keras 3 model config (`{"class_name": ..., "config": {...}}`).
    static func parse(_ json: Any, file: String) throws(KerasImportError) -> KerasTopology {
        var builder = Builder(file: file)
        guard let root = json as? [String: Any], let className = root["class_name"] as? String,
              let config = root["config"] as? [String: Any] else {
            throw KerasImportError(file: file, "model config is not a Keras model (no class_name/config)")
        }
        guard modelClasses.contains(className) else {
            throw KerasImportError(file: file, "model class '\(className)' is not Functional, Model or Sequential")
        }
        let outputs = try builder.addModel(className: className, config: config, containers: [], v3Prefix: "", inbound: nil)
        return KerasTopology(layers: builder.layers, outputs: outputs, modelName: config["name"] as? String ?? "model")
    }

    /// Accumulates flattened layers while walking nested configs.
    struct Builder {
        let file: String
        var layers: [KerasLayer] = []
        var usedNames: Set<String> = []

        init(file: String) { self.file = file }

        /// Adds the layers of one model; returns the node names of its outputs. `inbound` is the outer
        /// node feeding a nested model (nil at the top level: its InputLayer stays a graph input).
        mutating func addModel(className: String, config: [String: Any], containers: [String], v3Prefix: String,
                               inbound: [String]?) throws(KerasImportError) -> [String] {
            guard let layerList = config["layers"] as? [[String: Any]] else {
                throw KerasImportError(file: file, layer: config["name"] as? String, layerClass: className, "model config has no layer list")
            }
            // Keras 3 numbers the weight groups per class name inside each container; a Sequential's
            // `layers` skips its InputLayer.
            var classCounters: [String: Int] = [:]
            func v3Name(_ cls: String) -> String {
                let base = snakeCase(cls)
                let n = classCounters[base, default: 0]
                classCounters[base] = n + 1
                return n == 0 ? base : "\(base)_\(n)"
            }
            var localToNode: [String: [String]] = [:]
            var previous: [String]? = inbound
            let sequential = className == "Sequential"

            for entry in layerList {
                guard let cls = entry["class_name"] as? String else {
                    throw KerasImportError(file: file, "a layer entry has no class_name")
                }
                let layerConfig = entry["config"] as? [String: Any] ?? [:]
                guard let name = (layerConfig["name"] as? String) ?? (entry["name"] as? String) else {
                    throw KerasImportError(file: file, layerClass: cls, "a layer has no name")
                }
                if cls == "InputLayer" {
                    if let outer = inbound {
                        localToNode[name] = outer
                        previous = outer
                    } else {
                        let node = uniqueNodeName(name, containers: containers)
                        let path = sequential ? "" : "\(v3Prefix)layers/\(v3Name(cls))"
                        layers.append(KerasLayer(className: cls, name: name, config: layerConfig, inbound: [],
                                                 containers: containers, v3Path: path, nodeName: node))
                        localToNode[name] = [node]
                        previous = [node]
                    }
                    continue
                }
                let path = "\(v3Prefix)layers/\(v3Name(cls))"
                // Which nodes feed this layer.
                var sources: [String]
                if sequential {
                    if let p = previous {
                        sources = p
                    } else {
                        // A Sequential without an InputLayer: synthesise one from the first layer's shape.
                        let shape = (layerConfig["batch_input_shape"] ?? layerConfig["batch_shape"] ?? config["build_input_shape"])
                        let inputName = uniqueNodeName("\(config["name"] as? String ?? "sequential")_input", containers: containers)
                        layers.append(KerasLayer(className: "InputLayer", name: inputName,
                                                 config: ["batch_input_shape": shape ?? NSNull()], inbound: [],
                                                 containers: containers, v3Path: "", nodeName: inputName))
                        sources = [inputName]
                    }
                } else {
                    let inboundNames = try inboundLayerNames(entry, layer: name, cls: cls)
                    sources = []
                    for n in inboundNames {
                        guard let mapped = localToNode[n] else {
                            throw KerasImportError(file: file, layer: name, layerClass: cls, "reads layer '\(n)', which is not defined before it")
                        }
                        sources.append(contentsOf: mapped)
                    }
                }
                if KerasTopology.modelClasses.contains(cls) {
                    let inner = entry["config"] as? [String: Any] ?? [:]
                    let outs = try addModel(className: cls, config: inner, containers: containers + [name],
                                            v3Prefix: "\(path)/", inbound: sources)
                    localToNode[name] = outs
                    previous = outs
                    continue
                }
                let node = uniqueNodeName(name, containers: containers)
                layers.append(KerasLayer(className: cls, name: name, config: layerConfig, inbound: sources,
                                         containers: containers, v3Path: path, nodeName: node,
                                         module: entry["module"] as? String, call: (entry["inbound_nodes"] as? [Any])?.first))
                localToNode[name] = [node]
                previous = [node]
            }

            if sequential {
                return previous ?? []
            }
            var outs: [String] = []
            for n in try portNames(config["output_layers"], what: "output_layers") {
                guard let mapped = localToNode[n] else {
                    throw KerasImportError(file: file, "output layer '\(n)' is not a layer of the model")
                }
                outs.append(contentsOf: mapped)
            }
            return outs
        }

        mutating func uniqueNodeName(_ name: String, containers: [String]) -> String {
            var candidate = name
            if usedNames.contains(candidate) {
                candidate = (containers + [name]).joined(separator: "/")
            }
            var k = 1
            while usedNames.contains(candidate) {
                candidate = "\(name)_\(k)"
                k += 1
            }
            usedNames.insert(candidate)
            return candidate
        }

        /// Inbound layer names of a functional layer, in argument order.
        /// Keras 2: `[[["name", 0, 0, {}], ...]]`; Keras 3: `[{"args": [...keras tensors...], "kwargs": {...}}]`.
        func inboundLayerNames(_ entry: [String: Any], layer: String, cls: String) throws(KerasImportError) -> [String] {
            guard let nodes = entry["inbound_nodes"] as? [Any] else { return [] }
            guard nodes.count <= 1 else {
                throw KerasImportError(file: file, layer: layer, layerClass: cls, "is called \(nodes.count) times (shared layers are not supported)")
            }
            guard let node = nodes.first else { return [] }
            var names: [String] = []
            if let k3 = node as? [String: Any] {
                collectKerasHistory(k3["args"] as Any, into: &names)
            } else if let k2 = node as? [Any] {
                // tf.keras op lambdas write their one inbound entry without the enclosing list: ["name", 0, 0, {kwargs}].
                if let n = k2.first as? String { return [n] }
                for item in k2 {
                    if let ref = item as? [Any], let n = ref.first as? String { names.append(n) }
                }
            }
            return names
        }

        func collectKerasHistory(_ value: Any, into names: inout [String]) {
            if let dict = value as? [String: Any] {
                if let cfg = dict["config"] as? [String: Any], let history = cfg["keras_history"] as? [Any],
                   let n = history.first as? String {
                    names.append(n)
                }
                return
            }
            if let list = value as? [Any] {
                for v in list { collectKerasHistory(v, into: &names) }
            }
        }

        /// `[["name", 0, 0], ...]` or a single `["name", 0, 0]`.
        func portNames(_ value: Any?, what: String) throws(KerasImportError) -> [String] {
            guard let list = value as? [Any], !list.isEmpty else {
                throw KerasImportError(file: file, "model config has no \(what)")
            }
            if let single = list.first as? String { return [single] }
            return list.compactMap { ($0 as? [Any])?.first as? String }
        }
    }
}

/// Keras' `to_snake_case`: `Conv2D` → `conv2d`, `BatchNormalization` → `batch_normalization`,
/// `ReLU` → `re_lu`, `ZeroPadding2D` → `zero_padding2d`.
func snakeCase(_ name: String) -> String {
    // Step 1: "(.)([A-Z][a-z]+)" → "\1_\2"; step 2: "([a-z])([A-Z])" → "\1_\2"; then lower-case.
    let chars = Array(name.filter { $0.isLetter || $0.isNumber || $0 == "_" })
    var step1: [Character] = []
    for (i, c) in chars.enumerated() {
        if i > 0, c.isUppercase, i + 1 < chars.count, chars[i + 1].isLowercase {
            step1.append("_")
        }
        step1.append(c)
    }
    var step2: [Character] = []
    for (i, c) in step1.enumerated() {
        if i > 0, c.isUppercase, step1[i - 1].isLowercase {
            step2.append("_")
        }
        step2.append(c)
    }
    return String(step2).lowercased()
}
