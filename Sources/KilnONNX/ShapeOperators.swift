import KilnFormat
import KilnGraph

/// The ops that change a tensor's shape or layout (mostly bookkeeping on the IR side), padding and casts.
extension Converter {
    /// Flatten, Reshape, Squeeze, Unsqueeze: folded on constants; on tensors, a flatten or bookkeeping.
    mutating func reshape(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        guard let data = try input(n, 0) else { throw fail("input 0 is missing") }
        let shape: [Dim]
        switch data {
        case .constant(let c): shape = c.shape.map { Dim.known($0) }
        case .runtime(let t): shape = t.shape
        }
        let target = try reshapeTarget(n, shape)
        switch data {
        case .constant(let c):
            let s = target.compactMap(\.value)
            guard s.count == target.count else { throw fail("reshaping a constant to \(describe(target))") }
            guard elementCount(s) == c.count else { throw fail("cannot reshape \(c.shape) to \(s)") }
            return .constant(c.reshaped(s))
        case .runtime(let t):
            return .runtime(try reshaped(t, to: target, as: n.outputs[0], for: n.opType))
        }
    }

    /// The output shape of Flatten / Reshape / Squeeze / Unsqueeze.
    mutating func reshapeTarget(_ n: ONNXNodeProto, _ shape: [Dim]) throws(ONNXImportError) -> [Dim] {
        let rank = shape.count
        switch n.opType {
        case "Flatten":
            // Opset 9: any rank; 11: negative axis.
            let a = try int(n, "axis", default: 1)
            let k = a < 0 ? a + rank : a
            guard k >= 0, k <= rank else { throw fail("axis \(a) is out of range for rank \(rank)") }
            let head = product(Array(shape[..<k])) ?? freshSymbol(n.outputs[0])
            let tail = product(Array(shape[k...])) ?? freshSymbol(n.outputs[0])
            return [head, tail]
        case "Squeeze", "Unsqueeze":
            // Opset 13: axes is an input instead of an attribute.
            let given: [Int]? = opset >= 13 ? (n.inputs.count > 1 && !n.inputs[1].isEmpty ? try intsInput(n, 1, "axes") : nil)
                                            : try ints(n, "axes")
            if n.opType == "Squeeze" {
                let axes = try (given ?? shape.indices.filter { shape[$0] == .known(1) }).map { a throws(ONNXImportError) in try axis(a, rank: rank, "axis") }
                for a in axes where shape[a].value.map({ $0 != 1 }) ?? false {
                    throw fail("axis \(a) of \(describe(shape)) is not of size 1")
                }
                return shape.indices.filter { !axes.contains($0) }.map { shape[$0] }
            }
            guard let given else { throw fail("Unsqueeze needs axes") }
            let outRank = rank + given.count
            let axes = try given.map { a throws(ONNXImportError) in try axis(a, rank: outRank, "axis") }
            var out: [Dim] = []
            var source = shape.makeIterator()
            for i in 0..<outRank {
                if axes.contains(i) { out.append(.known(1)) } else if let d = source.next() { out.append(d) }
            }
            return out
        default:
            // Reshape: opset 5 takes the shape as an input (before: an attribute); 14 adds allowzero.
            let spec: [Dim]
            if opset >= 5 {
                let c = try constantInput(n, 1, "shape")
                guard c.shape.count == 1, !c.isFloat else { throw fail("shape must be a 1-D integer tensor") }
                spec = c.dims
            } else {
                spec = (try ints(n, "shape") ?? []).map { Dim.known($0) }
            }
            let allowZero = opset >= 14 ? try int(n, "allowzero", default: 0) != 0 : false
            var out: [Dim] = []
            var inferred: Int?
            for (i, d) in spec.enumerated() {
                switch d {
                case .known(0) where !allowZero:
                    guard i < rank else { throw fail("shape entry \(i) copies a dimension the input \(describe(shape)) does not have") }
                    out.append(shape[i])
                case .known(-1):
                    guard inferred == nil else { throw fail("shape \(describe(spec)) has more than one -1") }
                    inferred = i
                    out.append(.known(1))
                case .known(let v):
                    guard v >= 0 else { throw fail("shape entry \(v) is invalid") }
                    out.append(d)
                case .symbol:
                    out.append(d)
                }
            }
            if let i = inferred { out[i] = try inferDimension(total: shape, given: out, at: i, n) }
            return out
        }
    }

    /// The size a -1 stands for: the input's elements over the others, with run-time sizes cancelling out.
    mutating func inferDimension(total: [Dim], given: [Dim], at index: Int, _ n: ONNXNodeProto) throws(ONNXImportError) -> Dim {
        var symbols = total.compactMap { d -> String? in if case .symbol(let s) = d { return s } else { return nil } }
        guard var known = elementCount(total.compactMap(\.value), limit: Int.max >> 1) else {
            throw fail("the input \(describe(total)) has too many elements")
        }
        var rest = 1
        for (i, d) in given.enumerated() where i != index {
            switch d {
            case .known(let v):
                let (p, overflow) = rest.multipliedReportingOverflow(by: v)
                guard !overflow else { throw fail("shape \(describe(given)) is too large") }
                rest = p
            case .symbol(let s):
                if let k = symbols.firstIndex(of: s) { symbols.remove(at: k) } else { return freshSymbol(n.outputs[0]) }
            }
        }
        guard rest > 0 else { throw fail("cannot infer -1 next to a 0 in the shape") }
        if symbols.isEmpty {
            guard known % rest == 0 else { throw fail("cannot reshape \(describe(total)) to \(describe(given))") }
            known /= rest
            return .known(known)
        }
        if symbols.count == 1, known == rest { return .symbol(symbols[0]) }
        return freshSymbol(n.outputs[0])
    }

    /// Transpose: folded on constants; on tensors only the bookkeeping changes (tf2onnx's leading
    /// NHWC → NCHW transpose costs nothing).
    mutating func transpose(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        guard let data = try input(n, 0) else { throw fail("input 0 is missing") }
        let rank: Int
        switch data {
        case .constant(let c): rank = c.shape.count
        case .runtime(let t): rank = t.shape.count
        }
        let p = try ints(n, "perm") ?? Array((0..<rank).reversed())
        guard p.count == rank, Set(p) == Set(0..<rank) else { throw fail("perm \(p) is not a permutation of 0..<\(rank)") }
        switch data {
        case .constant(let c):
            return .constant(transposed(c, p))
        case .runtime(let t):
            let shape = p.map { t.shape[$0] }
            if let cur = t.effectivePerm {
                let pinv = inverse(p)
                return .runtime(RuntimeTensor(node: t.node, shape: shape, irShape: t.irShape, perm: cur.map { pinv[$0] }))
            }
            let moving = p.filter { t.shape[$0] != .known(1) }
            guard moving == moving.sorted() else {
                throw fail("transposing \(describe(t.shape)), held as \(describe(t.irShape)), is not supported")
            }
            return .runtime(RuntimeTensor(node: t.node, shape: shape, irShape: t.irShape, perm: nil))
        }
    }

    /// Pad (opset 2: pads/value attributes; 11: inputs; 18: axes): constant zero padding of H and W.
    mutating func pad(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        let x = try runtimeInput(n, 0, "data")
        let mode = try string(n, "mode", default: "constant")
        guard mode == "constant" else { throw fail("mode '\(mode)' is not supported (only constant)") }
        var pads: [Int]
        var value: Float = 0
        if opset >= 11 {
            pads = try intsInput(n, 1, "pads")
            if let c = try optionalConstant(n, 2, "constant_value") {
                guard let v = c.floats, v.count == 1 else { throw fail("constant_value must be one value") }
                value = v[0]
            }
            if let axes = try optionalConstant(n, 3, "axes") {
                guard let list = axes.ints, pads.count == 2 * list.count else { throw fail("axes and pads do not match") }
                var full = [Int](repeating: 0, count: 2 * x.shape.count)
                for (k, a) in list.enumerated() {
                    let ax = try axis(a, rank: x.shape.count, "axis")
                    full[ax] = pads[k]
                    full[ax + x.shape.count] = pads[k + list.count]
                }
                pads = full
            }
        } else {
            pads = try ints(n, opset >= 2 ? "pads" : "paddings") ?? []
            value = try float(n, "value", default: 0)
        }
        guard x.shape.count == 4, pads.count == 8 else { throw fail("only padding of 4-D NCHW tensors is supported") }
        guard value == 0 else { throw fail("padding with \(value) is not supported (only zeros)") }
        guard pads[0] == 0, pads[1] == 0, pads[4] == 0, pads[5] == 0 else {
            throw fail("pads \(pads) pad the batch or channel axis; only H and W can be padded")
        }
        guard pads.allSatisfy({ $0 >= 0 && $0 <= 65536 }) else { throw fail("pads \(pads) must be between 0 and 65536") }
        let node = emit(n.outputs[0], .zeroPad(top: pads[2], bottom: pads[6], left: pads[3], right: pads[7]),
                        inputs: [try layout(x, nhwc, for: "Pad")])
        let h = x.shape[2].value.map { Dim.known($0 + pads[2] + pads[6]) } ?? freshSymbol(n.outputs[0])
        let w = x.shape[3].value.map { Dim.known($0 + pads[3] + pads[7]) } ?? freshSymbol(n.outputs[0])
        return .runtime(RuntimeTensor(node: node, shape: [x.shape[0], x.shape[1], h, w], irShape: [x.shape[0], h, w, x.shape[1]], perm: nhwc))
    }

    /// Cast: folded on constants; float to float on tensors is the identity.
    mutating func cast(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        guard let x = try input(n, 0) else { throw fail("input 0 is missing") }
        let to = try int(n, "to", default: 0)
        let toFloat = [1, 10, 11].contains(to)
        switch x {
        case .runtime:
            guard to == ONNXDataType.float.rawValue else { throw fail("casting a computed tensor to \(ONNXDataType.name(to)) is not supported") }
            return x
        case .constant(let c):
            if toFloat {
                guard let f = c.floats else { throw fail("casting sizes known only at run time to floats") }
                return .constant(ConstantTensor(shape: c.shape, floats: f))
            }
            if to == ONNXDataType.bool.rawValue, let f = c.floats {
                return .constant(ConstantTensor(shape: c.shape, ints: f.map { $0 != 0 ? 1 : 0 }))
            }
            guard ONNXDataType(rawValue: to) != nil, to != ONNXDataType.string.rawValue else { throw fail("cast to \(ONNXDataType.name(to)) is not supported") }
            return .constant(ConstantTensor(shape: c.shape, ints: c.dims))
        }
    }
}
