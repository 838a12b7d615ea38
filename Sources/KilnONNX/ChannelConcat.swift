import KilnFormat
import KilnGraph

extension Converter {
    /// True when every input of a Concat is a constant (a shape computation, folded at import).
    mutating func concatInputsAreConstant(_ n: ONNXNodeProto) throws(ONNXImportError) -> Bool {
        for i in n.inputs.indices where !n.inputs[i].isEmpty {
            if case .runtime? = try input(n, i) { return false }
        }
        return true
    }

    /// Concat of computed tensors (opsets 4, 11, 13: `axis`, negative from 11): only along the channel axis of
    /// 4-D NCHW tensors (DenseNet's, Inception's, ShuffleNet's), which the IR holds NHWC, or the last axis of 2-D
    /// ones; becomes one IR Concatenate.
    mutating func concatChannels(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        var parts: [RuntimeTensor] = []
        for i in n.inputs.indices where !n.inputs[i].isEmpty {
            parts.append(try runtimeInput(n, i, "inputs[\(i)]"))
        }
        guard parts.count >= 2, let first = parts.first else { throw fail("Concat of \(parts.count) computed tensor is not supported") }
        let rank = first.shape.count
        guard rank == 4 || rank == 2 else { throw fail("Concat of rank-\(rank) computed tensors is not supported (4-D NCHW or 2-D)") }
        guard let attribute = try optionalInt(n, "axis") ?? (opset < 4 ? 1 : nil) else { throw fail("Concat has no axis") }
        let a = try axis(attribute, rank: rank, "axis")
        guard a == 1 else { throw fail("Concat of computed tensors along axis \(a) is not supported (the channel axis, 1, only)") }
        let perm = rank == 4 ? nhwc : [0, 1]
        var inputs: [String] = []
        var channels: Dim = .known(0)
        for p in parts {
            guard p.shape.count == rank else { throw fail("Concat operands have ranks \(first.shape.count) and \(p.shape.count)") }
            for axis in 0..<rank where axis != 1 {
                if let x = p.shape[axis].value, let y = first.shape[axis].value, x != y {
                    throw fail("Concat operands \(describe(first.shape)) and \(describe(p.shape)) differ outside the channel axis")
                }
            }
            inputs.append(try layout(p, perm, for: "Concat"))
            if let total = channels.value, let c = p.shape[1].value { channels = .known(total + c) } else { channels = .symbol("\(n.outputs[0]).channels") }
        }
        let node = emit(n.outputs[0], .concat, inputs: inputs)
        var shape = first.shape
        shape[1] = channels
        return .runtime(RuntimeTensor(node: node, shape: shape, irShape: perm.map { shape[$0] }, perm: perm))
    }
}
