import KilnFormat
import KilnGraph

/// Softmax and the reductions (ReduceMean, ReduceSum), and the reshapes that give a tensor exactly its ONNX shape.
extension Converter {
    // MARK: - Reshapes

    /// Reshape dims (`ReshapeAttributes`) that turn a tensor of IR shape `from` into `to`: sizes where known, 0 where
    /// `to` has `from`'s run-time size at the same position, -1 for at most one other run-time size; nil when more
    /// than one size would be left to infer.
    func reshapeDims(from: [Dim], to: [Dim]) -> [Int]? {
        var dims: [Int] = []
        var inferred = false
        for (i, d) in to.enumerated() {
            if let v = d.value {
                dims.append(v)
            } else if i < from.count, from[i] == d {
                dims.append(0)
            } else {
                guard !inferred else { return nil }
                inferred = true
                dims.append(-1)
            }
        }
        return dims
    }

    /// `node` (IR shape `from`) reshaped to `to`: an IR Reshape, or the node itself when the shapes are equal.
    mutating func reshapeNode(_ node: String, from: [Dim], to: [Dim], for what: String) throws(ONNXImportError) -> String {
        if from == to { return node }
        guard let dims = reshapeDims(from: from, to: to) else {
            throw fail("\(what) needs \(describe(from)) as \(describe(to)), which has more than one size known only at run time")
        }
        return emit("\(node)/reshape", .reshape(ReshapeAttributes(dims: dims)), inputs: [node])
    }

    /// `t` held in ONNX order with exactly its ONNX shape (a transpose and a reshape where needed): what a graph
    /// output gives (`[N, C, 1, 1]` after a global pool, not `[N, C]`; NCHW `[N, C, 1, 1]`, not `[N, 1, 1, C]`).
    mutating func materialized(_ t: RuntimeTensor, for what: String) throws(ONNXImportError) -> RuntimeTensor {
        let (node, ir) = try inONNXOrder(t, for: what)
        let out = try reshapeNode(node, from: ir, to: t.shape, for: what)
        return RuntimeTensor(node: out, shape: t.shape, irShape: t.shape, perm: identityPerm(t.shape.count))
    }

    /// `t` with a layout (IR axis i = ONNX axis perm[i]): materialized first when the IR holds it in another shape.
    mutating func permuted(_ t: RuntimeTensor, for what: String) throws(ONNXImportError) -> (RuntimeTensor, [Int]) {
        if let p = t.effectivePerm { return (t, p) }
        let m = try materialized(t, for: what)
        return (m, identityPerm(m.shape.count))
    }

    // MARK: - Softmax

    /// Softmax by the model's opset: from 13, over the one axis `axis` (default -1); before, over all axes from
    /// `axis` on (default 1) flattened into one, so that `axis` 0 of a 2-D tensor is one softmax over everything.
    /// The reduced axes are brought to the end of the IR tensor (a transpose unless they are there), flattened into
    /// one by a reshape when there are several, and the result reshaped back.
    mutating func softmax(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        let x = try runtimeInput(n, 0, "input")
        let rank = x.shape.count
        guard rank >= 1 else { throw fail("Softmax of a scalar") }
        let a = try axis(try int(n, "axis", default: opset >= 13 ? -1 : 1), rank: rank, "axis")
        let reduced = opset >= 13 ? [a] : Array(a..<rank)
        let out = n.outputs[0]
        // The reduced elements already the last IR axis (ONNX order, nothing but unit axes after them).
        let trailingUnits = ((reduced.last ?? a) + 1..<rank).allSatisfy { x.shape[$0] == .known(1) }
        if x.isInONNXOrder, trailingUnits, let length = product(reduced.map { x.shape[$0] }) {
            let (node, ir) = try inONNXOrder(x, for: "Softmax")
            if ir.last == length {
                let y = emit(out, .softmax, inputs: [node])
                return .runtime(RuntimeTensor(node: y, shape: x.shape, irShape: ir, perm: node == x.node ? x.perm : nil))
            }
        }
        var (t, p) = try permuted(x, for: "Softmax")
        let reducedSet = Set(reduced)
        let k = reduced.count
        if Set(p.suffix(k)) != reducedSet {
            p = p.filter { !reducedSet.contains($0) } + reduced
            t = RuntimeTensor(node: try layout(t, p, for: "Softmax"), shape: x.shape, irShape: p.map { x.shape[$0] }, perm: p)
        }
        let ir = t.irShape
        guard k > 1 else {
            let y = emit(out, .softmax, inputs: [t.node])
            return .runtime(RuntimeTensor(node: y, shape: x.shape, irShape: ir, perm: p))
        }
        // Several axes: [lead…, r1…rk] → [lead…, r1·…·rk] → softmax → back.
        let lead = Array(ir.prefix(rank - k))
        let flat = lead + [product(Array(ir.suffix(k))) ?? freshSymbol(out)]
        let flatNode = try reshapeNode(t.node, from: ir, to: flat, for: "Softmax")
        let y = emit("\(out)/flat", .softmax, inputs: [flatNode])
        guard let back = reshapeDims(from: flat, to: ir) else {
            throw fail("softmax over axes \(reduced) of \(describe(x.shape)) with several sizes known only at run time is not supported")
        }
        let node = emit(out, .reshape(ReshapeAttributes(dims: back)), inputs: [y])
        return .runtime(RuntimeTensor(node: node, shape: x.shape, irShape: ir, perm: p))
    }

    // MARK: - Reductions

    /// ReduceMean (opset 18: axes an input; before, an attribute) and ReduceSum (13: axes an input): keepdims
    /// (default 1), all axes when none are given unless `noop_with_empty_axes`. A mean over H and W of an NCHW
    /// tensor is a global average pool (how torch.onnx.export writes AdaptiveAvgPool2d); any other set of axes is
    /// an IR Reduce over the axes that hold them.
    mutating func reduce(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        let isMean = n.opType == "ReduceMean"
        let axesAsInput = opset >= (isMean ? 18 : 13)
        let keepDims = try int(n, "keepdims", default: 1) != 0
        let x: RuntimeTensor
        switch try input(n, 0) {
        case .runtime(let t)?: x = t
        case .constant?: throw fail("\(n.opType) of a constant is not supported")
        case nil: throw fail("input 0 (data) is missing")
        }
        let rank = x.shape.count
        var given: [Int]
        if axesAsInput {
            given = n.inputs.count > 1 && !n.inputs[1].isEmpty ? try intsInput(n, 1, "axes") : []
        } else {
            given = try ints(n, "axes") ?? []
        }
        if given.isEmpty {
            if axesAsInput, try int(n, "noop_with_empty_axes", default: 0) != 0 { return .runtime(x) }
            given = Array(0..<rank)
        }
        var axes: [Int] = []
        for g in given { axes.append(try axis(g, rank: rank, "axes")) }
        guard Set(axes).count == axes.count else { throw fail("axes \(given) name an axis twice") }
        axes.sort()
        let kept = (0..<rank).filter { !axes.contains($0) }
        let shape: [Dim] = keepDims ? x.shape.indices.map { axes.contains($0) ? .known(1) : x.shape[$0] } : kept.map { x.shape[$0] }
        let out = n.outputs[0]
        if isMean, rank == 4, axes == [2, 3] {
            let node = emit(out, .globalAvgPool, inputs: [try layout(x, nhwc, for: n.opType)])
            // [N, C] in the IR: for keepdims the same elements in the same order as [N, C, 1, 1].
            return .runtime(RuntimeTensor(node: node, shape: shape, irShape: [x.shape[0], x.shape[1]], perm: keepDims ? nil : [0, 1]))
        }
        let (t, p) = try permuted(x, for: n.opType)
        let irAxes = p.indices.filter { axes.contains(p[$0]) }
        let node = emit(out, .reduce(ReduceAttributes(function: isMean ? .mean : .sum, keepDims: keepDims, axes: irAxes)), inputs: [t.node])
        if keepDims {
            let ir = t.irShape.indices.map { irAxes.contains($0) ? Dim.known(1) : t.irShape[$0] }
            return .runtime(RuntimeTensor(node: node, shape: shape, irShape: ir, perm: p))
        }
        let keptIR = p.indices.filter { !irAxes.contains($0) }
        // IR axis j of the output holds ONNX input axis p[keptIR[j]], which is output axis kept.firstIndex(of:).
        let perm = keptIR.map { i in kept.firstIndex(of: p[i]) ?? 0 }
        return .runtime(RuntimeTensor(node: node, shape: shape, irShape: keptIR.map { t.irShape[$0] }, perm: perm))
    }
}
