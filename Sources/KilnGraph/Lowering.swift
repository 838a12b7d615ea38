import KilnFormat

extension Graph {
    /// Lowers an optimised graph to the bundle's frozen op set. Fails, naming the layer, on any op the
    /// runtime does not execute (a BatchNormalization that followed no convolution, for example).
    public func lower() throws(GraphError) -> FrozenModel {
        let shapes = try inferShapes()
        // A bundle holds no empty values (its reader refuses a dimension of 0): say which layer makes one.
        for node in nodes {
            if let shape = shapes[node.name], shape.contains(where: { ($0 ?? 1) < 1 }) {
                throw GraphError(layer: node.name, message: "\(node.op.kindName) gives an empty output \(describe(shape)): a dimension of size 0")
            }
        }
        var valueIDs: [String: Int] = [:]
        var valueNames: [String] = []
        var valueTypes: [ElementType] = []
        var definingType = ElementType.float32
        var inputs: [PortRecord] = []
        var ops: [OpRecord] = []
        var tensors: [TensorRecord] = []

        func value(_ name: String) throws(GraphError) -> Int {
            guard let id = valueIDs[name] else { throw GraphError(layer: name, message: "used before it is computed") }
            return id
        }
        func define(_ name: String) -> Int {
            let id = valueNames.count
            valueNames.append(name)
            valueTypes.append(definingType)
            valueIDs[name] = id
            return id
        }
        func addTensor(_ name: String, _ t: WeightTensor) -> Int {
            tensors.append(TensorRecord(name: name, shape: t.shape, floats: t.values))
            return tensors.count - 1
        }

        for node in nodes {
            definingType = node.elementType
            var ins: [Int] = []
            for i in node.inputs { ins.append(try value(i)) }
            func emit(_ code: OpCode, _ attrs: [Int64] = [], _ ts: [Int] = []) {
                ops.append(OpRecord(opcode: code, name: node.name, inputs: ins, output: define(node.name), attributes: attrs, tensors: ts))
            }
            switch node.op {
            case .input(let shape):
                let id = define(node.name)
                inputs.append(PortRecord(name: node.name, value: id, shape: shape.map { Int64($0 ?? -1) }))
            case .conv2d(let c):
                let attrs = Conv2DAttributes(kernelH: c.kernel.shape[0], kernelW: c.kernel.shape[1], strideH: c.strideH,
                                             strideW: c.strideW, padding: c.padding, activation: c.activation,
                                             dilationH: c.dilationH, dilationW: c.dilationW, groups: c.groups)
                let w = addTensor("\(node.name)/kernel", c.kernel)
                let b = addTensor("\(node.name)/bias", c.bias ?? WeightTensor(shape: [c.outChannels], values: [Float](repeating: 0, count: c.outChannels)))
                emit(.conv2d, attrs.encoded, [w, b])
            case .add(let act):
                emit(.add, ActivationAttributes(act).encoded)
            case .maxPool(let p):
                emit(.maxPool2d, p.encoded)
            case .avgPool(let p):
                emit(.avgPool2d, p.encoded)
            case .globalAvgPool:
                emit(.globalAvgPool)
            case .globalMaxPool:
                emit(.globalMaxPool)
            case .channelAffine(let a) where a.keepsOrder:
                let c = a.perm.count
                let scale = addTensor("\(node.name)/scale", WeightTensor(shape: [c], values: a.scale.map { Float($0) }))
                let shift = addTensor("\(node.name)/shift", WeightTensor(shape: [c], values: a.shift.map { Float($0) }))
                emit(.scaleShift, ActivationAttributes(a.activation).encoded, [scale, shift])
            case .flatten:
                emit(.flatten)
            case .transpose(let perm):
                emit(.transpose, perm.map(Int64.init))
            case .reshape(let r):
                emit(.reshape, r.encoded)
            case .reduce(let r):
                emit(.reduce, r.encoded)
            case .concat:
                emit(.concat)
            case .dense(let d):
                let w = addTensor("\(node.name)/kernel", d.kernel)
                let out = d.kernel.shape[1]
                let b = addTensor("\(node.name)/bias", d.bias ?? WeightTensor(shape: [out], values: [Float](repeating: 0, count: out)))
                if d.softmax {
                    // Dense(softmax) = Dense then Softmax: two ops, one value each.
                    let logits = define(node.name + "/logits")
                    ops.append(OpRecord(opcode: .dense, name: node.name + "/logits", inputs: ins, output: logits,
                                        attributes: DenseAttributes(activation: d.activation).encoded, tensors: [w, b]))
                    ops.append(OpRecord(opcode: .softmax, name: node.name, inputs: [logits], output: define(node.name)))
                } else {
                    emit(.dense, DenseAttributes(activation: d.activation).encoded, [w, b])
                }
            case .softmax:
                emit(.softmax)
            case .activation(let a) where a.isReLU:
                emit(.relu)   // the 1.0 op: bundles without the newer activations stay readable by 1.0 readers
            case .activation(let a) where !a.isIdentity:
                emit(.unary, ActivationAttributes(a).encoded)
            case .zeroPad(let t, let b, let l, let r):
                emit(.pad, PadAttributes(top: t, bottom: b, left: l, right: r).encoded)
            case let .constantPad(t, b, l, r, values):
                let v = addTensor("\(node.name)/values", WeightTensor(shape: [values.count], values: values))
                emit(.pad, PadAttributes(top: t, bottom: b, left: l, right: r).encoded, [v])
            case .channelAffine:
                throw GraphError(layer: node.name, message: "a per-channel map that reorders channels (preprocessing) could not be folded into the convolution or dense layer after it; the bundle cannot hold it")
            case .channelGather, .channelStack, .channelConcat, .broadcastAffine:
                throw GraphError(layer: node.name, message: "\(node.op.kindName): channel arithmetic that is not a per-channel scale and shift of one tensor (with its channels possibly reordered) is not supported")
            case .activation, .dropout, .batchNorm:
                throw GraphError(layer: node.name, message: "\(node.op.kindName) could not be folded into a preceding convolution; the bundle cannot hold it")
            }
        }
        var outputs: [PortRecord] = []
        for o in self.outputs {
            outputs.append(PortRecord(name: o.port, value: try value(o.node), shape: (shapes[o.node] ?? []).map { Int64($0 ?? -1) }))
        }
        return FrozenModel(metadata: metadata, valueNames: valueNames, inputs: inputs, outputs: outputs, ops: ops,
                           tensors: tensors, valueTypes: valueTypes)
    }
}
