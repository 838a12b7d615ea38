import KilnFormat
import KilnKernels

extension Model {
    /// Runs the model on one batch and returns its outputs in the bundle's output order.
    ///
    /// Shapes are planned first, so a bad input fails before any work. Each value's buffer is released
    /// after its last reader; the caller's input is never modified. Safe to call concurrently.
    public func run(_ input: Tensor, kernels: KernelChoice = .fast) throws(RuntimeError) -> [Tensor] {
        guard input.values.count == input.shape.reduce(1, *) else {
            throw RuntimeError("input has \(input.values.count) values for shape \(input.shape)")
        }
        let shapes = try plan(inputShape: input.shape)
        let model = frozen
        let outputIDs = Set(model.outputs.map(\.value))

        var lastUse = [Int](repeating: -1, count: model.valueNames.count)
        for (i, step) in steps.enumerated() { for v in step.record.inputs { lastUse[v] = i } }

        var buffers = [UnsafeMutableBufferPointer<Float>?](repeating: nil, count: model.valueNames.count)
        defer { for b in buffers { b?.deallocate() } }
        let inputID = model.inputs[0].value
        let inputBuffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(input.values.count, 1))
        _ = inputBuffer.initialize(from: input.values)
        buffers[inputID] = inputBuffer

        var workspace = UnsafeMutableBufferPointer<Float>.allocate(capacity: 0)
        defer { workspace.deallocate() }

        for (index, step) in steps.enumerated() {
            let op = step.record
            guard let outShape = shapes[op.output] else { throw RuntimeError(op: op.name, "no planned shape") }
            let count = outShape.reduce(1, *)
            let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
            buffers[op.output] = out
            var ins: [UnsafePointer<Float>] = []
            for v in op.inputs {
                guard let b = buffers[v], let p = b.baseAddress else { throw RuntimeError(op: op.name, "input value \(v) is not available") }
                ins.append(UnsafePointer(p))
            }
            let inShapes = op.inputs.map { shapes[$0] ?? [] }
            guard let o = out.baseAddress else { continue }

            switch step.kind {
            case let .conv(a, kernel, packed, bias, ks):
                let g = try convGeometry(a, kernelShape: ks, input: inShapes[0], op: op.name)
                let residual = ins.count == 2 ? ins[1] : nil
                let relu = a.activation == .relu
                bias.withFloats { b in
                    switch kernels {
                    case .reference:
                        kernel.withFloats { w in
                            ReferenceKernels.conv2d(input: ins[0], weightsHWIO: w.baseAddress!, bias: b.baseAddress, residual: residual,
                                                    output: o, geometry: g, relu: relu)
                        }
                    case .fast:
                        let need = FastKernels.convWorkspaceFloats(for: g)
                        if workspace.count < need {
                            workspace.deallocate()
                            workspace = .allocate(capacity: need)
                        }
                        FastKernels.conv2d(input: ins[0], weights: packed, bias: b.baseAddress, residual: residual,
                                           output: o, geometry: g, relu: relu, workspace: workspace)
                    }
                }
            case let .dense(act, kernel, bias, inF, outF):
                let n = inShapes[0][0]
                kernel.withFloats { w in
                    bias.withFloats { b in
                        switch kernels {
                        case .reference:
                            ReferenceKernels.dense(input: ins[0], weights: w.baseAddress!, bias: b.baseAddress, output: o,
                                                   batch: n, inFeatures: inF, outFeatures: outF, relu: act == .relu)
                        case .fast:
                            FastKernels.dense(input: ins[0], weights: w.baseAddress!, bias: b.baseAddress, output: o,
                                              batch: n, inFeatures: inF, outFeatures: outF, relu: act == .relu)
                        }
                    }
                }
                if act == .softmax {
                    FastKernels.softmax(input: o, output: o, rows: n, columns: outF)
                }
            case .add(let act):
                if kernels == .reference {
                    ReferenceKernels.add(ins[0], ins[1], output: o, count: count, relu: act == .relu)
                } else {
                    FastKernels.add(ins[0], ins[1], output: o, count: count, relu: act == .relu)
                }
            case .maxPool(let a):
                let g = try poolGeometry(a, input: inShapes[0], op: op.name)
                if kernels == .reference {
                    ReferenceKernels.maxPool2d(input: ins[0], output: o, geometry: g)
                } else {
                    FastKernels.maxPool2d(input: ins[0], output: o, geometry: g)
                }
            case .avgPool(let a):
                let g = try poolGeometry(a, input: inShapes[0], op: op.name)
                if kernels == .reference {
                    ReferenceKernels.avgPool2d(input: ins[0], output: o, geometry: g)
                } else {
                    FastKernels.avgPool2d(input: ins[0], output: o, geometry: g)
                }
            case .globalAvgPool:
                let s = inShapes[0]
                if kernels == .reference {
                    ReferenceKernels.globalAvgPool(input: ins[0], output: o, batch: s[0], height: s[1], width: s[2], channels: s[3])
                } else {
                    FastKernels.globalAvgPool(input: ins[0], output: o, batch: s[0], height: s[1], width: s[2], channels: s[3])
                }
            case .softmax:
                let columns = outShape.last ?? 1
                let rows = columns == 0 ? 0 : count / columns
                if kernels == .reference {
                    ReferenceKernels.softmax(input: ins[0], output: o, rows: rows, columns: columns)
                } else {
                    FastKernels.softmax(input: ins[0], output: o, rows: rows, columns: columns)
                }
            case .relu:
                FastKernels.relu(input: ins[0], output: o, count: count)
            case .flatten:
                o.update(from: ins[0], count: count)
            case .transpose(let perm):
                transpose(ins[0], shape: inShapes[0], perm: perm, into: o)
            case let .pad(p, values):
                let s = inShapes[0]
                let g: PadGeometry
                do {
                    g = try PadGeometry(batch: s[0], inH: s[1], inW: s[2], channels: s[3], padTop: p.top, padBottom: p.bottom,
                                        padLeft: p.left, padRight: p.right)
                } catch {
                    throw RuntimeError(op: op.name, error.message)
                }
                if let values {
                    values.withFloats { v in FastKernels.pad(input: ins[0], output: o, geometry: g, channelValues: v.baseAddress) }
                } else {
                    FastKernels.pad(input: ins[0], output: o, geometry: g, channelValues: nil)
                }
            }

            // Release values whose last reader this was (never the input or an output).
            for v in op.inputs where lastUse[v] == index && !outputIDs.contains(v) {
                buffers[v]?.deallocate()
                buffers[v] = nil
            }
        }

        var results: [Tensor] = []
        for port in model.outputs {
            guard let b = buffers[port.value], let shape = shapes[port.value] else {
                throw RuntimeError("output '\(port.name)' was not computed")
            }
            results.append(Tensor(shape: shape, values: Array(b.prefix(shape.reduce(1, *)))))
        }
        return results
    }
}

/// Permutes axes: output axis i is input axis perm[i]. Walks the output in order with a carried index.
func transpose(_ input: UnsafePointer<Float>, shape: [Int], perm: [Int], into output: UnsafeMutablePointer<Float>) {
    let rank = shape.count
    var inStrides = [Int](repeating: 1, count: rank)
    for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
    let outShape = perm.map { shape[$0] }
    let step = perm.map { inStrides[$0] }
    let count = shape.reduce(1, *)
    guard count > 0 else { return }
    var index = [Int](repeating: 0, count: rank)
    var src = 0
    for o in 0..<count {
        output[o] = input[src]
        var axis = rank - 1
        while axis >= 0 {
            index[axis] += 1
            src += step[axis]
            if index[axis] < outShape[axis] { break }
            src -= step[axis] * outShape[axis]
            index[axis] = 0
            axis -= 1
        }
    }
}
