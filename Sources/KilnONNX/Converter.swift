import KilnFormat
import KilnGraph

/// A tensor computed at run time: the IR node that computes it and how that node's layout relates to
/// the ONNX tensor. ONNX images are NCHW; the IR's are NHWC, so an NCHW tensor usually lives in the IR
/// transposed (`perm == [0, 2, 3, 1]`), and a transpose is inserted only where an op needs another layout.
struct RuntimeTensor {
    /// The IR node computing it.
    var node: String
    /// The ONNX shape.
    var shape: [Dim]
    /// The IR node's shape.
    var irShape: [Dim]
    /// IR axis i holds ONNX axis perm[i]. Nil: the IR node holds the ONNX elements in row-major order but in
    /// another shape (unit axes dropped, or a reshape the IR does not express).
    var perm: [Int]?

    /// `perm`, or the identity when the IR shape is the ONNX shape.
    var effectivePerm: [Int]? {
        perm ?? (irShape == shape ? Array(0..<shape.count) : nil)
    }

    /// True when the IR node's elements are already in ONNX row-major order: the axes that are not of size
    /// 1 appear in the same order (NHWC [N, 1, 1, C] is NCHW [N, C, 1, 1]).
    var isInONNXOrder: Bool {
        guard let p = effectivePerm else { return true }
        let moving = p.filter { shape[$0] != .known(1) }
        return moving == moving.sorted()
    }
}

/// What a node output is: a constant known at import, or a run-time tensor.
enum Value {
    case constant(ConstantTensor)
    case runtime(RuntimeTensor)
}

/// The node being converted, for error messages.
struct NodeContext {
    var index: Int
    var node: ONNXNodeProto
    var opset: Int

    var label: String {
        node.name.isEmpty ? "#\(index) (output '\(node.outputs.first ?? "")')" : "'\(node.name)'"
    }

    var opTypeLabel: String {
        node.domain.isEmpty || node.domain == "ai.onnx" ? node.opType : "\(node.domain).\(node.opType)"
    }
}

let nhwc = [0, 2, 3, 1]

func identityPerm(_ rank: Int) -> [Int] { Array(0..<rank) }

func inverse(_ p: [Int]) -> [Int] {
    var inv = [Int](repeating: 0, count: p.count)
    for (i, v) in p.enumerated() { inv[v] = i }
    return inv
}

/// Converts one ONNX graph, node by node, into IR nodes.
struct Converter {
    let file: String
    let opset: Int
    let decoder: TensorDecoder
    /// Initializers not yet decoded (decoded on first use).
    var initializers: [String: ONNXTensorProto]
    var values: [String: Value] = [:]
    /// How many times each ONNX value is read (node inputs and graph outputs).
    var readers: [String: Int] = [:]
    var nodes: [GraphNode] = []
    var usedNames: Set<String> = []
    /// IR node → the ONNX node it came from.
    var sources: [String: NodeContext] = [:]
    /// (IR node, permutation) → the transpose already inserted for it.
    var transposes: [String: String] = [:]
    var current: NodeContext?
    var symbolCount = 0
    /// The IR input nodes (graph inputs without initializers).
    var graphInputs: Set<String> = []

    init(file: String, opset: Int, decoder: TensorDecoder, initializers: [String: ONNXTensorProto]) {
        self.file = file
        self.opset = opset
        self.decoder = decoder
        self.initializers = initializers
    }

    // MARK: - Errors

    func fail(_ message: String, tensor: String? = nil) -> ONNXImportError {
        guard let c = current else { return ONNXImportError(file: file, tensor: tensor, message) }
        return ONNXImportError(file: file, node: c.label, opType: c.opTypeLabel, opset: c.opset, tensor: tensor, message)
    }

    // MARK: - Values

    /// The value named `name`, decoding an initializer on first use.
    mutating func value(_ name: String) throws(ONNXImportError) -> Value? {
        if let v = values[name] { return v }
        guard let proto = initializers.removeValue(forKey: name) else { return nil }
        do {
            let v = Value.constant(try decoder.decode(proto, name: name))
            values[name] = v
            return v
        } catch {
            var e = error
            if let c = current { e.node = c.label; e.opType = c.opTypeLabel; e.opset = c.opset }
            throw e
        }
    }

    /// Input `i` of node `n`, nil when omitted (absent or empty name).
    mutating func input(_ n: ONNXNodeProto, _ i: Int) throws(ONNXImportError) -> Value? {
        guard i < n.inputs.count, !n.inputs[i].isEmpty else { return nil }
        guard let v = try value(n.inputs[i]) else {
            throw fail("input \(i) '\(n.inputs[i])' is not computed before this node")
        }
        return v
    }

    mutating func runtimeInput(_ n: ONNXNodeProto, _ i: Int, _ what: String) throws(ONNXImportError) -> RuntimeTensor {
        switch try input(n, i) {
        case .runtime(let t): return t
        case .constant: throw fail("input \(i) (\(what)) is a constant; only a computed tensor is supported there")
        case nil: throw fail("input \(i) (\(what)) is missing")
        }
    }

    mutating func constantInput(_ n: ONNXNodeProto, _ i: Int, _ what: String) throws(ONNXImportError) -> ConstantTensor {
        switch try input(n, i) {
        case .constant(let c): return c
        case .runtime(let t):
            if graphInputs.contains(t.node), t.node == n.inputs[i] {
                throw fail("input \(i) (\(what)) '\(n.inputs[i])' is a graph input without an initializer (missing initializer?); weights must be in the file", tensor: n.inputs[i])
            }
            throw fail("input \(i) (\(what)) '\(n.inputs[i])' must be a constant (an initializer or computed from them), but it is computed at run time", tensor: n.inputs[i])
        case nil: throw fail("input \(i) (\(what)) is missing")
        }
    }

    mutating func optionalConstant(_ n: ONNXNodeProto, _ i: Int, _ what: String) throws(ONNXImportError) -> ConstantTensor? {
        guard i < n.inputs.count, !n.inputs[i].isEmpty else { return nil }
        return try constantInput(n, i, what)
    }

    /// Float values of a constant input.
    mutating func floatInput(_ n: ONNXNodeProto, _ i: Int, _ what: String) throws(ONNXImportError) -> ConstantTensor {
        let c = try constantInput(n, i, what)
        guard c.isFloat, c.floats != nil else {
            throw fail("input \(i) (\(what)) '\(n.inputs[i])' must be a float tensor", tensor: n.inputs[i])
        }
        return c
    }

    /// Known integer values of a constant input.
    mutating func intsInput(_ n: ONNXNodeProto, _ i: Int, _ what: String) throws(ONNXImportError) -> [Int] {
        let c = try constantInput(n, i, what)
        guard !c.isFloat, let v = c.ints else {
            throw fail("input \(i) (\(what)) '\(n.inputs[i])' must be known integers, got \(describe(c.dims))")
        }
        return v
    }

    /// A name for a size computed at run time.
    mutating func freshSymbol(_ hint: String) -> Dim {
        symbolCount += 1
        return .symbol("\(hint)?\(symbolCount)")
    }

    /// Output `k` of the node must not be read by anything (an output the importer does not compute).
    func requireUnused(_ n: ONNXNodeProto, from k: Int, _ what: String) throws(ONNXImportError) {
        for (i, name) in n.outputs.enumerated() where i >= k && !name.isEmpty && readers[name, default: 0] > 0 {
            throw fail("output \(i) ('\(name)', \(what)) is used, which is not supported")
        }
    }

    // MARK: - IR nodes

    mutating func unique(_ base: String) -> String {
        var name = base.isEmpty ? "node" : base
        var k = 2
        while usedNames.contains(name) {
            name = "\(base)#\(k)"
            k += 1
        }
        usedNames.insert(name)
        return name
    }

    @discardableResult
    mutating func emit(_ base: String, _ op: GraphOp, inputs: [String]) -> String {
        let name = unique(base)
        nodes.append(GraphNode(name: name, op: op, inputs: inputs))
        if let current { sources[name] = current }
        return name
    }

    /// The IR node holding `t` with its axes in ONNX order permuted by `perm` (IR axis i = ONNX axis
    /// perm[i]), inserting (once) a transpose when the IR holds it otherwise.
    mutating func layout(_ t: RuntimeTensor, _ perm: [Int], for what: String) throws(ONNXImportError) -> String {
        guard let cur = t.effectivePerm else {
            throw fail("\(what) needs the tensor \(describe(t.shape)) as a \(t.shape.count)-D tensor, but it is held as \(describe(t.irShape)) and the bundle cannot reshape it")
        }
        guard perm.count == cur.count else {
            throw fail("\(what) needs a rank-\(perm.count) tensor, got rank \(cur.count) \(describe(t.shape))")
        }
        if cur == perm { return t.node }
        let inv = inverse(cur)
        let q = perm.map { inv[$0] }
        let key = "\(t.node)|\(q)"
        if let existing = transposes[key] { return existing }
        let suffix = perm == nhwc ? "nhwc" : (perm == identityPerm(perm.count) ? "nchw" : "transpose")
        let name = emit("\(t.node)/\(suffix)", .transpose(perm: q), inputs: [t.node])
        transposes[key] = name
        return name
    }

    /// The IR node holding `t`'s elements in ONNX row-major order, and its IR shape.
    mutating func inONNXOrder(_ t: RuntimeTensor, for what: String) throws(ONNXImportError) -> (node: String, irShape: [Dim]) {
        if t.isInONNXOrder { return (t.node, t.irShape) }
        return (try layout(t, identityPerm(t.shape.count), for: what), t.shape)
    }

    /// `t` reshaped to the ONNX shape `target` (same elements in the same order): Flatten, Reshape,
    /// Squeeze, Unsqueeze. The IR only flattens `[N, …]` to `[N, F]`; any other reshape is bookkeeping,
    /// and the ops after it must accept the IR shape.
    mutating func reshaped(_ t: RuntimeTensor, to target: [Dim], as output: String, for what: String) throws(ONNXImportError) -> RuntimeTensor {
        let (node, ir) = try inONNXOrder(t, for: what)
        if ir == target { return RuntimeTensor(node: node, shape: target, irShape: ir, perm: identityPerm(target.count)) }
        if target.count == 2, ir.count > 2, ir[0] == target[0] {
            let flat = emit(output, .flatten, inputs: [node])
            let flatShape = [ir[0], product(Array(ir.dropFirst())) ?? target[1]]
            return RuntimeTensor(node: flat, shape: target, irShape: flatShape, perm: flatShape == target ? [0, 1] : nil)
        }
        return RuntimeTensor(node: node, shape: target, irShape: ir, perm: nil)
    }

    /// The product of sizes when all are known; a symbol times ones is that symbol.
    func product(_ dims: [Dim]) -> Dim? {
        var known = 1
        var symbols: [Dim] = []
        for d in dims {
            guard let v = d.value else { symbols.append(d); continue }
            let (p, overflow) = known.multipliedReportingOverflow(by: v)
            guard !overflow else { return nil }
            known = p
        }
        if symbols.isEmpty { return .known(known) }
        if symbols.count == 1, known == 1 { return symbols[0] }
        return nil
    }
}
