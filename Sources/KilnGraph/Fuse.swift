import KilnFormat

extension Graph {
    /// The node a head attaches to by default: the last global average pool.
    public func defaultCut() throws(GraphError) -> String {
        guard let node = nodes.last(where: { if case .globalAvgPool = $0.op { return true } else { return false } }) else {
            throw GraphError(message: "the backbone has no global average pool; name the layer whose output feeds the head with --cut")
        }
        return node.name
    }

    /// Cuts the backbone at `cut` and attaches `head` to it: the head's input becomes the cut's output,
    /// the head's outputs become the graph's, and everything the head does not need (the ImageNet
    /// classifier) is dropped. Head layers whose names collide with backbone layers get a `head/` prefix.
    /// `backboneName` and `headName` name the two sides in errors.
    public func attachingHead(_ head: Graph, cut: String, backboneName: String, headName: String) throws(GraphError) -> Graph {
        let cutNode = node(named: cut) ?? outputs.first(where: { $0.port == cut }).flatMap { node(named: $0.node) }
        guard let cutNode else {
            let candidates = nodes.filter {
                switch $0.op { case .globalAvgPool, .flatten: return true; default: return false }
            }.map(\.name)
            throw GraphError(message: "\(backboneName): no layer '\(cut)' to cut at" + (candidates.isEmpty ? "" : " (pooling layers: \(candidates.joined(separator: ", ")))"))
        }
        let backboneShapes = try inferShapes()
        let cutShape = backboneShapes[cutNode.name] ?? []
        guard let headInput = head.nodes.first(where: { if case .input = $0.op { return true } else { return false } }),
              case .input(let headShape) = headInput.op else {
            throw GraphError(message: "\(headName): the head has no input layer")
        }
        let cutFeatures = Array(cutShape.dropFirst()), headFeatures = Array(headShape.dropFirst())
        let compatible = cutFeatures.count == headFeatures.count && zip(cutFeatures, headFeatures).allSatisfy { a, b in a == nil || b == nil || a == b }
        guard compatible else {
            throw GraphError(message: "\(headName): the head takes \(describe(headFeatures)) but the backbone's '\(cutNode.name)' in \(backboneName) gives \(describe(cutFeatures))")
        }

        var merged = self
        merged.outputs = []
        merged.eliminateDeadNodesKeeping(cutNode.name)
        let taken = Set(merged.nodes.map(\.name))
        var rename: [String: String] = [headInput.name: cutNode.name]
        for n in head.nodes where n.name != headInput.name {
            rename[n.name] = taken.contains(n.name) ? "head/\(n.name)" : n.name
        }
        for n in head.nodes where n.name != headInput.name {
            var copy = n
            copy.name = rename[n.name] ?? n.name
            copy.inputs = n.inputs.map { rename[$0] ?? $0 }
            merged.nodes.append(copy)
        }
        merged.outputs = head.outputs.map { GraphOutput(port: $0.port, node: rename[$0.node] ?? $0.node) }
        for (k, v) in head.metadata {
            if let key = MetadataKey(rawValue: k).headKeyForSource { merged.metadata[key] = v }
        }
        merged.metadata[.fuseCut] = .string(cutNode.name)
        _ = try merged.inferShapes()
        return merged
    }

    /// Dead-code elimination that keeps `name` and what it needs, whatever the outputs are.
    mutating func eliminateDeadNodesKeeping(_ name: String) {
        var live: Set<String> = [name]
        live.formUnion(outputs.map(\.node))
        for node in nodes.reversed() where live.contains(node.name) { live.formUnion(node.inputs) }
        nodes.removeAll { !live.contains($0.name) }
    }
}
