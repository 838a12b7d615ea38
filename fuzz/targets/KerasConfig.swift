// Fuzz target `keras-config`: the bytes as a Keras model config (`model.to_json()`, `config.json`, the
// `model_config` attribute) through `KerasTopology.parse`, the layer mapping (`KerasLayerMapping.op`) with
// weights that agree with the config, shape inference, the inference passes, lowering, and the written bundle
// through the reader and the runtime's load checks.
//
// `KerasTopology` and `KerasLayerMapping` are internal to KilnKeras, so scripts/fuzz compiles their source
// files into this executable (without the HDF5 and zip layers, which the config path does not touch).
// What the converter accepts must give a bundle that the runtime loads: a bundle that `kiln convert` writes
// and `kiln-run` refuses is a finding too.
import Foundation
import KilnFormat
import KilnGraph
import KilnKernels
import KilnRuntime

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKerasConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    guard let json = try? JSONSerialization.jsonObject(with: Data(bytes)) else { return 0 }
    let file = "fuzz.json"
    let topology: KerasTopology
    do { topology = try KerasTopology.parse(json, file: file) } catch { return 0 }

    var nodes: [GraphNode] = []
    var shapes: [String: SymbolicShape] = [:]
    var budget = 1 << 20   // weight elements the harness makes up per input
    for layer in topology.layers {
        let inputShapes = layer.inbound.map { shapes[$0] }
        guard inputShapes.allSatisfy({ $0 != nil }) else { return 0 }   // the mapping or inference will refuse it
        guard let variables = syntheticVariables(layer, inputs: inputShapes.compactMap { $0 }, budget: &budget) else { return 0 }
        let op: GraphOp
        do { op = try KerasLayerMapping.op(for: layer, variables: variables, file: file) } catch { return 0 }
        let node = GraphNode(name: layer.nodeName, op: op, inputs: layer.inbound)
        // This node's shape from its inputs' shapes, which stand in as graph inputs.
        var standIns = zip(layer.inbound, inputShapes).map { GraphNode(name: $0, op: .input(shape: $1 ?? []), inputs: []) }
        standIns = Dictionary(standIns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }).values.sorted { $0.name < $1.name }
        let local = Graph(nodes: standIns + [node], outputs: [], metadata: [:])
        guard let s = try? local.inferShapes()[node.name] else { return 0 }
        shapes[node.name] = s
        nodes.append(node)
    }
    convertAndLoad(Graph(nodes: nodes, outputs: topology.outputs.map { GraphOutput(port: $0, node: $0) }, metadata: [:]))
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initializeKerasConfig(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutableRawPointer?) -> CInt {
    setKernelThreads(1)
    return 0
}

/// Weights for `layer` shaped as its config and its input say (what a consistent file holds); nil when they
/// would exceed the budget.
func syntheticVariables(_ layer: KerasLayer, inputs: [SymbolicShape], budget: inout Int) -> [String: WeightTensor]? {
    let c = layer.config
    let channels = (inputs.first?.last ?? nil) ?? 3
    func small(_ v: Any?, _ range: ClosedRange<Int>, default d: Int) -> Int {
        if let n = v as? Int, range.contains(n) { return n }
        if let l = v as? [Any], let n = l.first as? Int, range.contains(n) { return n }
        return d
    }
    func pair(_ v: Any?, default d: Int) -> (Int, Int) {
        if let n = v as? Int, (0...9).contains(n) { return (n, n) }
        if let l = v as? [Any], l.count == 2, let a = l[0] as? Int, let b = l[1] as? Int, (0...9).contains(a), (0...9).contains(b) { return (a, b) }
        return (d, d)
    }
    var out: [String: WeightTensor] = [:]
    func make(_ role: String, _ shape: [Int], positive: Bool = false) -> Bool {
        guard shape.allSatisfy({ $0 >= 0 }) else { return false }
        var n = 1
        for d in shape {
            let (p, o) = n.multipliedReportingOverflow(by: d)
            guard !o, p <= budget else { return false }
            n = p
        }
        budget -= n
        let values = pseudoRandomFloats(n, seed: UInt64(role.utf8.reduce(0) { $0 &* 31 &+ Int($1) } & 0xFFFF) &+ UInt64(budget))
        out[role] = WeightTensor(shape: shape, values: positive ? values.map { abs($0) + 0.5 } : values)
        return true
    }
    switch layer.className {
    case "Conv2D":
        let (kh, kw) = pair(c["kernel_size"], default: 1)
        let filters = small(c["filters"], 0...512, default: 4)
        guard make("kernel", [kh, kw, channels, filters]) else { return nil }
        if c["use_bias"] as? Bool ?? true { guard make("bias", [filters]) else { return nil } }
    case "Dense":
        let units = small(c["units"], 0...4096, default: 3)
        guard make("kernel", [channels, units]) else { return nil }
        if c["use_bias"] as? Bool ?? true { guard make("bias", [units]) else { return nil } }
    case "BatchNormalization":
        if c["scale"] as? Bool ?? true { guard make("gamma", [channels]) else { return nil } }
        if c["center"] as? Bool ?? true { guard make("beta", [channels]) else { return nil } }
        guard make("moving_mean", [channels]), make("moving_variance", [channels], positive: true) else { return nil }
    default:
        break
    }
    return out
}
