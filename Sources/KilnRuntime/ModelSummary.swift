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
            let params = op.tensors.reduce(0) { $0 + model.frozen.tensors[$1].elementCount }
            let ins = op.inputs.map { shapes[$0] ?? [] }
            let flops = step.op.flops(inputs: ins, output: out)
            let detail = step.op.detail
            rows.append(Row(name: op.name, op: "\(op.opcode)", outputShape: out, parameters: params, flops: flops, detail: detail))
        }
        self.rows = rows
    }
}
