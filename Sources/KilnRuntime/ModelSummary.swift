import KilnFormat

/// A per-op account of a loaded bundle for one input shape: output shapes, parameters and FLOPs
/// (2 per multiply-add), as `kiln inspect` prints them.
public struct ModelSummary: Sendable {
    public struct Row: Sendable {
        public var name: String
        public var op: String
        public var outputShape: [Int]
        public var parameters: Int
        public var flops: Int
        public var detail: String
    }

    public var inputShape: [Int]
    public var rows: [Row]
    public var totalParameters: Int { rows.reduce(0) { $0 + $1.parameters } }
    public var totalFlops: Int { rows.reduce(0) { $0 + $1.flops } }

    public init(model: Model, inputShape: [Int]) throws(RuntimeError) {
        let shapes = try model.plan(inputShape: inputShape)
        self.inputShape = inputShape
        var rows: [Row] = []
        for step in model.steps {
            let op = step.record
            let out = shapes[op.output] ?? []
            let outCount = out.reduce(1, *)
            let params = op.tensors.reduce(0) { $0 + model.frozen.tensors[$1].elementCount }
            var flops = 0
            var detail = ""
            switch step.kind {
            case let .conv(a, _, _, _, ks):
                flops = 2 * outCount * ks[0] * ks[1] * ks[2] + (op.inputs.count == 2 ? outCount : 0)
                detail = "\(ks[0])x\(ks[1])/\(a.strideH)"
                if case let .explicit(t, b, l, r) = a.padding, t + b + l + r > 0 { detail += " pad \(t),\(b),\(l),\(r)" }
                if case .same = a.padding { detail += " same" }
                if a.activation == .relu { detail += " +relu" }
                if op.inputs.count == 2 { detail += " +residual" }
            case let .dense(act, _, _, inF, _):
                flops = 2 * outCount * inF
                if act != .none { detail = "+\(act)" }
            case .add(let act):
                flops = outCount
                if act == .relu { detail = "+relu" }
            case .maxPool(let a), .avgPool(let a):
                flops = outCount * a.kernelH * a.kernelW
                detail = "\(a.kernelH)x\(a.kernelW)/\(a.strideH)"
                if case let .explicit(t, b, l, r) = a.padding, t + b + l + r > 0 { detail += " pad \(t),\(b),\(l),\(r)" }
            case .globalAvgPool:
                flops = (shapes[op.inputs[0]] ?? []).reduce(1, *)
            case .softmax:
                flops = 3 * outCount
            default:
                break
            }
            rows.append(Row(name: op.name, op: "\(op.opcode)", outputShape: out, parameters: params, flops: flops, detail: detail))
        }
        self.rows = rows
    }
}
