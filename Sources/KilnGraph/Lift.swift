import KilnFormat

extension Graph {
    /// Lifts a frozen bundle back into the conversion IR (to use an existing `.kiln` as a fuse backbone).
    public init(frozen model: FrozenModel) throws(GraphError) {
        var nodes: [GraphNode] = []
        let name = model.valueNames
        func tensor(_ op: OpRecord, _ i: Int) throws(GraphError) -> WeightTensor {
            guard i < op.tensors.count, op.tensors[i] < model.tensors.count else {
                throw GraphError(layer: op.name, message: "tensor \(i) is missing")
            }
            let t = model.tensors[op.tensors[i]]
            guard t.elementType == .float32 else { throw GraphError(layer: op.name, message: "tensor '\(t.name)' is not float32") }
            return WeightTensor(shape: t.shape, values: t.payload.floats)
        }
        func attributes<T>(_ op: OpRecord, _ body: () throws(AttributeError) -> T) throws(GraphError) -> T {
            do { return try body() } catch { throw GraphError(layer: op.name, message: error.message) }
        }
        for port in model.inputs {
            nodes.append(GraphNode(name: name[port.value], op: .input(shape: port.shape.map { $0 < 0 ? nil : Int($0) }), inputs: [],
                                   elementType: model.valueType(port.value)))
        }
        for op in model.ops {
            let graphOp: GraphOp
            switch op.opcode {
            case .conv2d:
                let a = try attributes(op) { () throws(AttributeError) in try Conv2DAttributes(decoding: op.attributes) }
                graphOp = .conv2d(ConvSpec(kernel: try tensor(op, 0), bias: try tensor(op, 1), strideH: a.strideH, strideW: a.strideW,
                                           dilationH: a.dilationH, dilationW: a.dilationW, padding: a.padding, activation: a.activation,
                                           hasResidual: op.inputs.count == 2, groups: a.groups))
            case .add:
                graphOp = .add(activation: try attributes(op) { () throws(AttributeError) in
                    try ActivationAttributes(decoding: op.attributes, op: .add).activation
                })
            case .unary:
                graphOp = .activation(try attributes(op) { () throws(AttributeError) in
                    try ActivationAttributes(decoding: op.attributes, op: .unary).activation
                })
            case .maxPool2d, .avgPool2d:
                let a = try attributes(op) { () throws(AttributeError) in try Pool2DAttributes(decoding: op.attributes) }
                graphOp = op.opcode == .maxPool2d ? .maxPool(a) : .avgPool(a)
            case .globalAvgPool: graphOp = .globalAvgPool
            case .globalMaxPool: graphOp = .globalMaxPool
            case .scaleShift:
                let a = try attributes(op) { () throws(AttributeError) in
                    try ActivationAttributes(decoding: op.attributes, op: .scaleShift).activation
                }
                let scale = try tensor(op, 0).values.map(Double.init), shift = try tensor(op, 1).values.map(Double.init)
                graphOp = .channelAffine(ChannelAffine(perm: Array(0..<scale.count), scale: scale, shift: shift, activation: a))
            case .dense:
                let a = try attributes(op) { () throws(AttributeError) in try DenseAttributes(decoding: op.attributes) }
                graphOp = .dense(DenseSpec(kernel: try tensor(op, 0), bias: try tensor(op, 1), activation: a.activation, softmax: a.softmax))
            case .softmax: graphOp = .softmax
            case .relu: graphOp = .activation(.relu)
            case .flatten: graphOp = .flatten
            case .concat: graphOp = .concat
            case .transpose:
                graphOp = .transpose(perm: try attributes(op) { () throws(AttributeError) in try decodePermutation(op.attributes) })
            case .reshape:
                graphOp = .reshape(try attributes(op) { () throws(AttributeError) in try ReshapeAttributes(decoding: op.attributes) })
            case .reduce:
                graphOp = .reduce(try attributes(op) { () throws(AttributeError) in try ReduceAttributes(decoding: op.attributes) })
            case .pad:
                let p = try attributes(op) { () throws(AttributeError) in try PadAttributes(decoding: op.attributes) }
                if op.tensors.isEmpty {
                    graphOp = .zeroPad(top: p.top, bottom: p.bottom, left: p.left, right: p.right)
                } else {
                    graphOp = .constantPad(top: p.top, bottom: p.bottom, left: p.left, right: p.right, values: try tensor(op, 0).values)
                }
            }
            nodes.append(GraphNode(name: name[op.output], op: graphOp, inputs: op.inputs.map { name[$0] },
                                   elementType: model.valueType(op.output)))
        }
        self.init(nodes: nodes, outputs: model.outputs.map { GraphOutput(port: $0.name, node: name[$0.value]) }, metadata: model.metadata)
    }
}
