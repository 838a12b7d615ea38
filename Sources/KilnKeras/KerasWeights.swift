import Foundation
import KilnGraph

/// Where a layer's variables live in a weights file. Variables are named by their Keras role
/// (`kernel`, `bias`, `gamma`, `beta`, `moving_mean`, `moving_variance`) and always resolved by name.
protocol KerasWeightSource {
    /// The variables of `layer`, keyed by role; empty for a layer without weights.
    func variables(of layer: KerasLayer) throws(KerasImportError) -> [String: WeightTensor]
    /// A short name of the layout, for metadata and messages.
    var layoutName: String { get }
}

/// Legacy HDF5 layout (Keras 2 and 3 `model.save("x.h5")`, and `save_weights` / Keras applications files):
/// a group per top-level layer with a `weight_names` attribute; names like `conv1_conv/kernel:0` (Keras 2),
/// `conv1_conv/kernel` (Keras 3), `sequential/dense/kernel`, or for a nested model all its sub-layers'
/// weights in one group (trainable first, then non-trainable: order says nothing, names say everything).
struct LegacyH5Weights: KerasWeightSource {
    let file: HDF5File
    let layoutName: String
    /// (top-level group, layer name, role) → dataset path.
    private var index: [String: [String: [String: String]]] = [:]

    init(file: HDF5File, rootPath: String, layoutName: String) throws(KerasImportError) {
        self.file = file
        self.layoutName = layoutName
        let root = try file.group(at: rootPath)
        guard let layerNames = try root.stringArrayAttribute("layer_names") else {
            throw KerasImportError(file: file.displayName, "no 'layer_names' attribute at '\(rootPath)': not a Keras weights group")
        }
        for group in layerNames {
            let groupPath = rootPath == "/" ? "/\(group)" : "\(rootPath)/\(group)"
            guard file.isGroup(groupPath) else {
                throw KerasImportError(file: file.displayName, layer: group, "listed in layer_names but group '\(groupPath)' is missing")
            }
            let g = try file.group(at: groupPath)
            let names = try g.stringArrayAttribute("weight_names") ?? []
            var byLayer: [String: [String: String]] = [:]
            for weightName in names {
                var parts = weightName.split(separator: "/").map(String.init)
                guard var role = parts.popLast() else { continue }
                if let colon = role.firstIndex(of: ":") { role = String(role[..<colon]) }
                let layer = parts.last ?? group
                byLayer[layer, default: [:]][role] = "\(groupPath)/\(weightName)"
            }
            index[group] = byLayer
        }
    }

    func variables(of layer: KerasLayer) throws(KerasImportError) -> [String: WeightTensor] {
        let group = layer.containers.first ?? layer.name
        guard let byLayer = index[group] else {
            if expectsWeights(layer.className) {
                throw KerasImportError(file: file.displayName, layer: layer.name, layerClass: layer.className,
                                       "has no weight group '\(group)' in the file")
            }
            return [:]
        }
        // A top-level layer's group holds its own weights; a nested model's group holds all of its layers'.
        var entries = byLayer[layer.name] ?? [:]
        if entries.isEmpty, layer.containers.isEmpty, byLayer.count == 1, let only = byLayer.first {
            entries = only.value
        }
        var out: [String: WeightTensor] = [:]
        for (role, path) in entries where !unreadRoles.contains(role) {
            out[role] = try readTensor(file, path: path, layer: layer, role: role)
        }
        return out
    }
}

/// Keras 3 layout (`.keras` archives' `model.weights.h5`, and `.weights.h5`): `layers/<class>[_N]/vars/<i>`,
/// numbered per class in `model.layers` order of each container; variables by position in the layer's
/// variable order. Keras 3.15 also stores the layer name as the `name` attribute of each `vars` group:
/// when present it must agree, which catches a topology that does not match the file.
struct KerasV3Weights: KerasWeightSource {
    let file: HDF5File
    let layoutName: String

    func variables(of layer: KerasLayer) throws(KerasImportError) -> [String: WeightTensor] {
        let roles = variableRoles(layer)
        guard !roles.isEmpty else { return [:] }
        let varsPath = "\(layer.v3Path)/vars"
        guard file.isGroup(varsPath) else {
            throw KerasImportError(file: file.displayName, layer: layer.name, layerClass: layer.className,
                                   "weights group '\(varsPath)' is missing (the topology does not match the weights file)")
        }
        let vars = try file.group(at: varsPath)
        if let stored = try vars.stringAttribute("name"), stored != layer.name {
            throw KerasImportError(file: file.displayName, layer: layer.name, layerClass: layer.className,
                                   "weights group '\(varsPath)' belongs to layer '\(stored)' (the topology does not match the weights file)")
        }
        var out: [String: WeightTensor] = [:]
        for (i, role) in roles.enumerated() where !unreadRoles.contains(role) {
            let path = "\(varsPath)/\(i)"
            guard file.isDataset(path) else {
                throw KerasImportError(file: file.displayName, layer: layer.name, layerClass: layer.className, tensor: path,
                                       "variable \(i) (\(role)) is missing")
            }
            out[role] = try readTensor(file, path: path, layer: layer, role: role)
        }
        return out
    }

    /// The order of a layer's variables in Keras 3 (`layer.variables`).
    func variableRoles(_ layer: KerasLayer) -> [String] {
        let c = layer.config
        switch layer.className {
        case "Conv2D", "Dense", "DepthwiseConv2D":
            return (c["use_bias"] as? Bool ?? true) ? ["kernel", "bias"] : ["kernel"]
        case "SeparableConv2D":
            return ["depthwise_kernel", "pointwise_kernel"] + ((c["use_bias"] as? Bool ?? true) ? ["bias"] : [])
        case "BatchNormalization":
            var roles: [String] = []
            if c["scale"] as? Bool ?? true { roles.append("gamma") }
            if c["center"] as? Bool ?? true { roles.append("beta") }
            return roles + ["moving_mean", "moving_variance"]
        case "Normalization":
            // Adapted (no mean in the config): mean, variance, count.
            return c["mean"] == nil || c["mean"] is NSNull ? ["mean", "variance", "count"] : []
        default:
            return []
        }
    }
}

/// Variables no op reads: Normalization's sample count (an int64 scalar).
let unreadRoles: Set<String> = ["count"]

func expectsWeights(_ className: String) -> Bool {
    ["Conv2D", "Dense", "BatchNormalization", "DepthwiseConv2D", "SeparableConv2D"].contains(className)
}

func readTensor(_ file: HDF5File, path: String, layer: KerasLayer, role: String) throws(KerasImportError) -> WeightTensor {
    let ds = try file.dataset(at: path)
    let values: [Float]
    do {
        values = try ds.readFloats()
    } catch {
        var e = error
        e.layer = layer.name
        e.layerClass = layer.className
        throw e
    }
    let shape = ds.shape.isEmpty ? [1] : ds.shape
    guard shape.reduce(1, *) == values.count else {
        throw KerasImportError(file: file.displayName, layer: layer.name, layerClass: layer.className, tensor: role,
                               "dataset '\(path)' has shape \(ds.shape) but \(values.count) values")
    }
    if values.contains(where: { !$0.isFinite }) {
        throw KerasImportError(file: file.displayName, layer: layer.name, layerClass: layer.className, tensor: role,
                               "dataset '\(path)' holds NaN or infinite values")
    }
    return WeightTensor(shape: shape, values: values)
}
