import KilnFormat

extension Graph {
    /// Turns each chain of channel arithmetic (`channelGather`, `channelStack`, `channelConcat`, `broadcastAffine`) into
    /// one `channelAffine` of the tensor it starts from, which the later passes fold like preprocessing.
    ///
    /// Each value of a chain is held symbolically as one term per channel, `x[index]·scale + shift` of the chain's
    /// source x (a rank-reduced channel, `x[..., i]`, as one term). Gathers pick terms, stacks and concatenations
    /// join them (all from one source), affines apply to every term (y = t·s + b: index kept, scale·s, shift·s + b),
    /// in Float64. Where a chain's value is read by anything else, it must be a whole tensor whose terms take each
    /// source channel exactly once (a permutation): that node becomes `channelAffine(perm, scale, shift)` of the
    /// source, and the chain's other nodes go. Anything else is refused, naming the node.
    public mutating func resolveChannelArithmetic() throws(GraphError) {
        func isArithmetic(_ op: GraphOp) -> Bool {
            switch op {
            case .channelGather, .channelStack, .channelConcat, .broadcastAffine: return true
            default: return false
            }
        }
        guard nodes.contains(where: { isArithmetic($0.op) }) else { return }
        let shapes = try inferShapes()
        struct Term { var index: Int; var scale: Double; var shift: Double }
        struct Value { var source: String; var terms: [Term]; var reduced: Bool }
        var values: [String: Value] = [:]

        /// The symbolic value of `name`: its own if it is arithmetic, else the identity over its channels.
        func value(of name: String, for node: GraphNode) throws(GraphError) -> Value {
            if let v = values[name] { return v }
            guard let c = shapes[name]?.last ?? nil else {
                throw GraphError(layer: node.name, message: "\(node.op.kindName) of '\(name)', whose channel count is not known")
            }
            return Value(source: name, terms: (0..<c).map { Term(index: $0, scale: 1, shift: 0) }, reduced: false)
        }
        for node in nodes where isArithmetic(node.op) {
            func fail(_ m: String) -> GraphError { GraphError(layer: node.name, message: m) }
            var ins: [Value] = []
            for i in node.inputs { ins.append(try value(of: i, for: node)) }
            guard let first = ins.first else { throw fail("\(node.op.kindName) has no input") }
            guard ins.allSatisfy({ $0.source == first.source }) else {
                throw fail("\(node.op.kindName) combines channels of different tensors ('\(ins.map(\.source).joined(separator: "', '"))')")
            }
            switch node.op {
            case .channelGather(let g):
                guard !first.reduced else { throw fail("indexes a single channel again") }
                guard let taken = g.indices(of: first.terms.count) else { throw fail("\(g) is outside the \(first.terms.count) channels") }
                if case .index = g {
                    values[node.name] = Value(source: first.source, terms: [first.terms[taken[0]]], reduced: true)
                } else {
                    values[node.name] = Value(source: first.source, terms: taken.map { first.terms[$0] }, reduced: false)
                }
            case .channelStack:
                guard ins.allSatisfy(\.reduced) else { throw fail("stacks tensors that are not single channels") }
                values[node.name] = Value(source: first.source, terms: ins.flatMap(\.terms), reduced: false)
            case .channelConcat:
                guard ins.allSatisfy({ !$0.reduced }) else { throw fail("concatenates single channels on their last spatial axis") }
                values[node.name] = Value(source: first.source, terms: ins.flatMap(\.terms), reduced: false)
            case let .broadcastAffine(scale, shift):
                let n = first.terms.count
                for v in [scale, shift] where v.count != 1 && (first.reduced || v.count != n) {
                    throw fail("\(v.count) constants for \(first.reduced ? "a single channel" : "\(n) channels")")
                }
                var terms = first.terms
                for k in terms.indices {
                    let s = scale.count == 1 ? scale[0] : scale[k], b = shift.count == 1 ? shift[0] : shift[k]
                    terms[k].scale *= s
                    terms[k].shift = terms[k].shift * s + b
                }
                values[node.name] = Value(source: first.source, terms: terms, reduced: first.reduced)
            default:
                break
            }
        }
        // The chains' ends: arithmetic read by other nodes or by an output.
        var ends: Set<String> = Set(outputs.map(\.node).filter { values[$0] != nil })
        for node in nodes where !isArithmetic(node.op) {
            for i in node.inputs where values[i] != nil { ends.insert(i) }
        }
        for (i, node) in nodes.enumerated() where isArithmetic(node.op) {
            guard ends.contains(node.name), let v = values[node.name] else { continue }
            let perm = v.terms.map(\.index)
            guard !v.reduced, perm.sorted() == Array(0..<perm.count),
                  let c = shapes[v.source]?.last ?? nil, c == perm.count else {
                throw GraphError(layer: node.name, message: "\(node.op.kindName) gives channels [\(perm.map(String.init).joined(separator: ", "))] of '\(v.source)', not a reordering of all its channels; such channel arithmetic is not supported")
            }
            nodes[i].op = .channelAffine(ChannelAffine(perm: perm, scale: v.terms.map(\.scale), shift: v.terms.map(\.shift)))
            nodes[i].inputs = [v.source]
        }
        let removed = Set(values.keys).subtracting(ends)
        let chainMembers = removed
        for i in nodes.indices where ends.contains(nodes[i].name) {
            nodes[i].fusedLayers.append(contentsOf: nodes.filter { chainMembers.contains($0.name) }.map(\.name))
        }
        nodes.removeAll { removed.contains($0.name) }
    }
}
