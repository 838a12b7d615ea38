import Foundation
import KilnFormat
import KilnGraph

/// The layers a model's own preprocessing is made of when it is written on the symbolic tensor: Keras 3 op layers
/// (`GetItem`, `Stack`, `Add`, `Subtract`, `Multiply`, `TrueDivide`, … of module `keras.src.ops.numpy`, constants in
/// the call's args) and tf.keras `TFOpLambda` / `SlicingOpLambda` (`__operators__.getitem`, `nn.bias_add`,
/// `math.truediv`, …, constants in the call's kwargs). Each becomes a graph op of channel arithmetic that
/// `Graph.resolveChannelArithmetic` turns into one per-channel affine; what is not such arithmetic is refused.
enum KerasOpLayers {
    /// The Keras 3 op-layer classes mapped here. `Add` and `Concatenate` share their names with layers: the call's
    /// arguments tell them apart (an op layer has a constant operand, or a module of `keras.src.ops`).
    static let keras3Ops: Set<String> = ["GetItem", "Stack", "Add", "Subtract", "Multiply", "TrueDivide", "Divide",
                                         "Negative", "Cast", "Concatenate"]
    /// The tf.keras functions mapped here.
    static let keras2Functions = ["__operators__.getitem", "nn.bias_add", "math.add", "__operators__.add", "math.subtract",
                                  "math.multiply", "math.truediv", "math.divide", "math.negative", "cast", "stack", "concat"]

    /// True when `layer` is a Keras 3 op layer rather than the layer of the same class name.
    static func isKeras3Op(_ layer: KerasLayer) -> Bool {
        guard keras3Ops.contains(layer.className) else { return false }
        if let m = layer.module { return m.hasPrefix("keras.src.ops") }
        if ["GetItem", "Stack", "Subtract", "Multiply", "TrueDivide", "Divide", "Negative", "Cast"].contains(layer.className) {
            // keras.layers.Subtract / Multiply take a list of tensors; the ops take them as separate arguments.
            if ["Subtract", "Multiply"].contains(layer.className) { return constantOperand(layer) != nil }
            return true
        }
        return constantOperand(layer) != nil
    }

    /// The graph op of a Keras 3 op layer or a tf.keras op lambda.
    static func op(for layer: KerasLayer, fail: (String) -> KerasImportError) throws(KerasImportError) -> GraphOp {
        if layer.className == "TFOpLambda" || layer.className == "SlicingOpLambda" {
            return try keras2(layer, fail: fail)
        }
        return try keras3(layer, fail: fail)
    }

    // MARK: Keras 3

    static func keras3(_ layer: KerasLayer, fail: (String) -> KerasImportError) throws(KerasImportError) -> GraphOp {
        let args = (layer.call as? [String: Any])?["args"] as? [Any] ?? []
        let tensorCount = layer.inbound.count
        switch layer.className {
        case "GetItem":
            guard args.count == 2 else { throw fail("GetItem with \(args.count) arguments is not understood") }
            return .channelGather(try lastAxisKey(args[1], fail: fail))
        case "Stack":
            let axis = layer.config["axis"] as? Int ?? 0
            guard axis == -1 else { throw fail("stack on axis \(axis) is not supported (the channel axis, -1, only)") }
            return .channelStack
        case "Concatenate":
            let axis = layer.config["axis"] as? Int ?? 0
            guard axis == -1 else { throw fail("concatenate on axis \(axis) is not supported (the channel axis, -1, only)") }
            return .channelConcat
        case "Cast":
            if let d = layer.config["dtype"] as? String, d != "float32" { throw fail("a cast to \(d) is not supported (float32 only)") }
            return .activation(.none)
        case "Negative":
            return .broadcastAffine(scale: [-1], shift: [0])
        default:
            guard tensorCount == 1, args.count == 2 else {
                if tensorCount == 2, layer.className == "Add" { return .add(activation: .none) }
                throw fail("\(layer.className) of \(tensorCount) tensors and \(args.count) arguments is not supported (one tensor and a constant)")
            }
            let tensorFirst = isKerasTensor(args[0])
            guard let constant = try constantValues(tensorFirst ? args[1] : args[0], fail: fail) else {
                throw fail("\(layer.className): the second operand is neither a tensor nor a constant")
            }
            return try arithmetic(layer.className, constant: constant, tensorFirst: tensorFirst, fail: fail)
        }
    }

    /// y = x ∘ c (or c ∘ x) as an affine, for c one value or one per channel.
    static func arithmetic(_ name: String, constant c: [Double], tensorFirst: Bool,
                           fail: (String) -> KerasImportError) throws(KerasImportError) -> GraphOp {
        let ones = c.map { _ in 1.0 }, zeros = c.map { _ in 0.0 }
        switch (name, tensorFirst) {
        case ("Add", _), ("add", _): return .broadcastAffine(scale: ones, shift: c)
        case ("Subtract", true), ("subtract", true): return .broadcastAffine(scale: ones, shift: c.map { -$0 })
        case ("Subtract", false), ("subtract", false): return .broadcastAffine(scale: c.map { _ in -1 }, shift: c)
        case ("Multiply", _), ("multiply", _): return .broadcastAffine(scale: c, shift: zeros)
        case ("TrueDivide", true), ("Divide", true), ("divide", true):
            guard !c.contains(0) else { throw fail("division by zero") }
            return .broadcastAffine(scale: c.map { 1 / $0 }, shift: zeros)
        default:
            throw fail("\(name) with the constant first is not a per-channel scale and shift")
        }
    }

    /// `[Ellipsis, i]` or `[Ellipsis, slice]`: an index or slice of the last axis.
    static func lastAxisKey(_ key: Any, fail: (String) -> KerasImportError) throws(KerasImportError) -> ChannelGather {
        guard let parts = key as? [Any], parts.count == 2, isEllipsis(parts[0]) else {
            throw fail("indexing \(compact(key)) is not supported (x[..., i] or x[..., start:stop:step] only)")
        }
        if let i = parts[1] as? Int { return .index(i) }
        if let d = parts[1] as? [String: Any] {
            let cfg = (d["config"] as? [String: Any]) ?? d
            func int(_ k: String) -> Int? { cfg[k] as? Int }
            if cfg.keys.contains("step") || cfg.keys.contains("start") || cfg.keys.contains("stop") {
                return .slice(start: int("start"), stop: int("stop"), step: int("step"))
            }
        }
        throw fail("indexing \(compact(key)) is not supported (x[..., i] or x[..., start:stop:step] only)")
    }

    static func isEllipsis(_ v: Any) -> Bool {
        (v as? [String: Any])?["class_name"] as? String == "__ellipsis__"
    }

    static func isKerasTensor(_ v: Any) -> Bool {
        (v as? [String: Any])?["class_name"] as? String == "__keras_tensor__"
    }

    /// The constant operand of a Keras 3 binary op layer, if it has one.
    static func constantOperand(_ layer: KerasLayer) -> Any? {
        guard let args = (layer.call as? [String: Any])?["args"] as? [Any], args.count == 2 else { return nil }
        for a in args where !isKerasTensor(a) {
            if a is NSNumber || (a as? [String: Any])?["class_name"] as? String == "__tensor__" || a is [Any] { return a }
        }
        return nil
    }

    /// A constant: a number, `{"class_name": "__tensor__", "config": {"value": ...}}`, or a nested list; flattened to one
    /// value or one per channel (every axis but the last of size 1). Nil when it is not a constant.
    static func constantValues(_ v: Any, fail: (String) -> KerasImportError) throws(KerasImportError) -> [Double]? {
        var value = v
        if let d = v as? [String: Any] {
            guard d["class_name"] as? String == "__tensor__", let cfg = d["config"] as? [String: Any], let inner = cfg["value"] else { return nil }
            value = inner
        }
        if let n = value as? NSNumber { return [n.doubleValue] }
        guard value is [Any] else { return nil }
        var flat: [Double] = []
        var shape: [Int] = []
        func walk(_ x: Any, depth: Int) -> Bool {
            if let n = x as? NSNumber { flat.append(n.doubleValue); return true }
            guard let list = x as? [Any] else { return false }
            if shape.count <= depth { shape.append(list.count) } else if shape[depth] != list.count { return false }
            return list.allSatisfy { walk($0, depth: depth + 1) }
        }
        guard walk(value, depth: 0), !flat.isEmpty else { throw fail("constant \(compact(value)) is not a list of numbers") }
        guard shape.dropLast().allSatisfy({ $0 == 1 }) else {
            throw fail("constant of shape \(shape) is not one value per channel")
        }
        return flat
    }

    // MARK: Keras 2

    static func keras2(_ layer: KerasLayer, fail: (String) -> KerasImportError) throws(KerasImportError) -> GraphOp {
        let function = layer.config["function"] as? String ?? ""
        // The call's kwargs: the 4th element of the first inbound entry.
        // (an op lambda's node is that one entry, ["name", 0, 0, {kwargs}], or a list of entries).
        var entries = layer.call as? [Any] ?? []
        if entries.first is String { entries = [entries] }
        let kwargs = entries.compactMap { ($0 as? [Any]).flatMap { $0.count > 3 ? $0[3] as? [String: Any] : nil } }.first ?? [:]
        func constant(_ key: String) throws(KerasImportError) -> [Double] {
            guard let v = kwargs[key], let c = try constantValues(v, fail: fail) else {
                throw fail("\(function): argument '\(key)' is not a constant (\(compact(kwargs[key] ?? "missing")))")
            }
            return c
        }
        switch function {
        case "__operators__.getitem":
            guard let spec = kwargs["slice_spec"] else { throw fail("\(function) without slice_spec") }
            return .channelGather(try lastAxisKey(spec, fail: fail))
        case "nn.bias_add":
            if let f = kwargs["data_format"] as? String, f != "NHWC", f != "N...C" { throw fail("bias_add with data_format \(f) is not supported") }
            return try arithmetic("add", constant: try constant("bias"), tensorFirst: true, fail: fail)
        case "math.add", "__operators__.add":
            return try arithmetic("add", constant: try constant("y"), tensorFirst: true, fail: fail)
        case "math.subtract":
            return try arithmetic("subtract", constant: try constant("y"), tensorFirst: true, fail: fail)
        case "math.multiply":
            return try arithmetic("multiply", constant: try constant("y"), tensorFirst: true, fail: fail)
        case "math.truediv", "math.divide":
            return try arithmetic("divide", constant: try constant("y"), tensorFirst: true, fail: fail)
        case "math.negative":
            return .broadcastAffine(scale: [-1], shift: [0])
        case "cast":
            if let d = kwargs["dtype"] as? String, d != "float32" { throw fail("a cast to \(d) is not supported (float32 only)") }
            return .activation(.none)
        case "stack":
            let axis = kwargs["axis"] as? Int ?? 0
            guard axis == -1 else { throw fail("stack on axis \(axis) is not supported (the channel axis, -1, only)") }
            return .channelStack
        case "concat":
            let axis = kwargs["axis"] as? Int ?? 0
            guard axis == -1 || axis == 3 else { throw fail("concat on axis \(axis) is not supported (the channel axis only)") }
            return .channelConcat
        default:
            throw fail("tf.\(function) is not supported (the op lambdas Kiln reads: \(keras2Functions.joined(separator: ", ")))")
        }
    }

    static func compact(_ v: Any) -> String {
        if let data = try? JSONSerialization.data(withJSONObject: v, options: [.fragmentsAllowed]) {
            let text = String(decoding: data, as: UTF8.self)
            return text.count > 80 ? String(text.prefix(77)) + "…" : text
        }
        return String(describing: v)
    }
}
