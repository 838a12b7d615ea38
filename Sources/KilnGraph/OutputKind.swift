import KilnFormat

extension FrozenModel {
    /// What the first output holds when it is a classifier's (`ClassifierOutputKind`), from the op that makes it:
    /// a Dense with a linear activation (`binaryLogit` for one unit, `logits` for more), with a sigmoid
    /// (`binaryProbability` / `multiLabel`), with a fused softmax or followed by a Softmax (`probabilities`),
    /// or a Dense followed by a sigmoid Unary (as a separate `Activation("sigmoid")` lowers). Nil for anything
    /// else (features, a Dense with another activation, an output of unknown width).
    public var classifierOutputKind: ClassifierOutputKind? {
        guard let port = outputs.first, let last = port.shape.last, last >= 1 else { return nil }
        let columns = Int(last)
        func producer(_ value: Int) -> OpRecord? { ops.last { $0.output == value } }
        func isSigmoid(_ a: Activation) -> Bool { a == Activation(.sigmoid) }
        func fromDense(_ op: OpRecord, sigmoidAfter: Bool) -> ClassifierOutputKind? {
            guard op.opcode == .dense, let a = try? DenseAttributes(decoding: op.attributes) else { return nil }
            if a.softmax { return sigmoidAfter ? nil : .probabilities }
            let sigmoid: Bool
            if a.activation.isIdentity { sigmoid = sigmoidAfter } else if isSigmoid(a.activation), !sigmoidAfter { sigmoid = true } else { return nil }
            if sigmoid { return columns == 1 ? .binaryProbability : .multiLabel }
            return columns == 1 ? .binaryLogit : .logits
        }
        guard let op = producer(port.value) else { return nil }
        switch op.opcode {
        case .dense: return fromDense(op, sigmoidAfter: false)
        case .softmax: return .probabilities
        case .unary:
            guard let a = try? ActivationAttributes(decoding: op.attributes, op: .unary), isSigmoid(a.activation),
                  let input = op.inputs.first, let dense = producer(input) else { return nil }
            return fromDense(dense, sigmoidAfter: true)
        default: return nil
        }
    }

    /// Records `classifierOutputKind` under `output.kind` (removes a stale one when there is none).
    public mutating func recordClassifierOutputKind() {
        metadata[.outputKind] = classifierOutputKind.map { .string($0.rawValue) }
    }
}
