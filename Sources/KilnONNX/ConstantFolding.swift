/// Ops evaluated at import on constants: weight producers (Constant, ConstantOfShape) and the shape
/// arithmetic exporters emit (Shape → Gather → Unsqueeze → Concat → Reshape), where sizes known only at run
/// time travel as symbols.
extension Converter {
    /// Constant (opset 12: value_float(s), value_int(s)).
    func constant(_ n: ONNXNodeProto) throws(ONNXImportError) -> ConstantTensor {
        if let t = try tensor(n, "value") { return try decodeAttribute(t) }
        if let a = attribute(n, "value_float") {
            try checkType(a, 1, "FLOAT")
            return ConstantTensor(shape: [], floats: [a.f ?? 0])
        }
        if let v = try floats(n, "value_floats") { return ConstantTensor(shape: [v.count], floats: v) }
        if let v = try optionalInt(n, "value_int") { return ConstantTensor(shape: [], ints: [v]) }
        if let v = try ints(n, "value_ints") { return ConstantTensor(shape: [v.count], ints: v) }
        throw fail("Constant has no value attribute that the importer reads (value, value_float(s), value_int(s))")
    }

    func decodeAttribute(_ t: ONNXTensorProto) throws(ONNXImportError) -> ConstantTensor {
        do {
            return try decoder.decode(t)
        } catch {
            throw fail(error.message, tensor: error.tensor)
        }
    }

    /// ConstantOfShape (opset 9): a tensor of the given shape filled with `value` (default float 0).
    mutating func constantOfShape(_ n: ONNXNodeProto) throws(ONNXImportError) -> ConstantTensor {
        let shape = try intsInput(n, 0, "input")
        guard let count = elementCount(shape, limit: 1 << 28) else { throw fail("shape \(shape) is invalid or too large") }
        guard let t = try tensor(n, "value") else { return ConstantTensor(shape: shape, floats: [Float](repeating: 0, count: count)) }
        let fill = try decodeAttribute(t)
        guard fill.count == 1 else { throw fail("value must hold one element, it holds \(fill.count)") }
        switch fill.elements {
        case .float(let v): return ConstantTensor(shape: shape, floats: [Float](repeating: v[0], count: count))
        case .int(let v): return ConstantTensor(shape: shape, ints: [Dim](repeating: v[0], count: count))
        }
    }

    /// Shape (opset 15: start, end): the sizes of a tensor, run-time ones as symbols.
    mutating func shape(_ n: ONNXNodeProto) throws(ONNXImportError) -> ConstantTensor {
        guard let x = try input(n, 0) else { throw fail("input 0 is missing") }
        let dims: [Dim]
        switch x {
        case .constant(let c): dims = c.shape.map { .known($0) }
        case .runtime(let t): dims = t.shape
        }
        let r = dims.count
        func clamp(_ v: Int) -> Int { min(max(v < 0 ? v + r : v, 0), r) }
        let start = opset >= 15 ? clamp(try int(n, "start", default: 0)) : 0
        let end = opset >= 15 ? clamp(try int(n, "end", default: r)) : r
        let slice = start < end ? Array(dims[start..<end]) : []
        return ConstantTensor(shape: [slice.count], ints: slice)
    }

    /// Gather on constants (numpy `take` along `axis`).
    mutating func gather(_ n: ONNXNodeProto) throws(ONNXImportError) -> ConstantTensor {
        let data = try constantInput(n, 0, "data")
        let indices = try intsInput(n, 1, "indices")
        let indexShape = try constantInput(n, 1, "indices").shape
        let rank = data.shape.count
        guard rank > 0 else { throw fail("Gather on a scalar") }
        let a = try axis(try int(n, "axis", default: 0), rank: rank, "axis")
        let size = data.shape[a]
        var picks: [Int] = []
        for i in indices {
            let k = i < 0 ? i + size : i
            guard k >= 0, k < size else { throw fail("index \(i) is out of range for a dimension of \(size)") }
            picks.append(k)
        }
        let shape = Array(data.shape[..<a]) + indexShape + Array(data.shape[(a + 1)...])
        guard elementCount(shape, limit: 1 << 28) != nil else { throw fail("the result \(shape) is too large") }
        let outer = data.shape[..<a].reduce(1, *), inner = data.shape[(a + 1)...].reduce(1, *)
        var order: [Int] = []
        order.reserveCapacity(outer * picks.count * inner)
        for o in 0..<outer { for k in picks { for i in 0..<inner { order.append((o * size + k) * inner + i) } } }
        return pick(data, order, shape)
    }

    /// Concat of constants along `axis`.
    mutating func concat(_ n: ONNXNodeProto) throws(ONNXImportError) -> ConstantTensor {
        var parts: [ConstantTensor] = []
        for i in n.inputs.indices where !n.inputs[i].isEmpty {
            switch try input(n, i) {
            case .constant(let c)?: parts.append(c)
            case .runtime?: throw fail("concatenating computed tensors is not supported")
            case nil: continue
            }
        }
        guard let first = parts.first else { throw fail("Concat has no inputs") }
        let rank = first.shape.count
        let a = try axis(try optionalInt(n, "axis") ?? (opset < 4 ? 1 : 0), rank: max(rank, 1), "axis")
        for p in parts where p.shape.count != rank || p.isFloat != first.isFloat
            || p.shape.enumerated().contains(where: { $0.offset != a && $0.element != first.shape[$0.offset] }) {
            throw fail("cannot concatenate \(first.shape) and \(p.shape) along axis \(a)")
        }
        let outer = first.shape[..<a].reduce(1, *)
        var floats: [Float] = [], ints: [Dim] = []
        for o in 0..<outer {
            for p in parts {
                let chunk = p.shape[a...].reduce(1, *)
                switch p.elements {
                case .float(let v): floats += v[(o * chunk)..<((o + 1) * chunk)]
                case .int(let v): ints += v[(o * chunk)..<((o + 1) * chunk)]
                }
            }
        }
        var shape = first.shape
        shape[a] = parts.reduce(0) { $0 + $1.shape[a] }
        return first.isFloat ? ConstantTensor(shape: shape, floats: floats) : ConstantTensor(shape: shape, ints: ints)
    }

    /// Slice of a constant (opset 10: starts, ends, axes, steps are inputs; before: attributes, step 1).
    mutating func slice(_ n: ONNXNodeProto) throws(ONNXImportError) -> ConstantTensor {
        let data = try constantInput(n, 0, "data")
        let rank = data.shape.count
        let starts: [Int], ends: [Int], axesGiven: [Int]?, stepsGiven: [Int]?
        if opset >= 10 {
            starts = try intsInput(n, 1, "starts")
            ends = try intsInput(n, 2, "ends")
            axesGiven = n.inputs.count > 3 && !n.inputs[3].isEmpty ? try intsInput(n, 3, "axes") : nil
            stepsGiven = n.inputs.count > 4 && !n.inputs[4].isEmpty ? try intsInput(n, 4, "steps") : nil
        } else {
            starts = try ints(n, "starts") ?? []
            ends = try ints(n, "ends") ?? []
            axesGiven = try ints(n, "axes")
            stepsGiven = nil
        }
        let axes = try (axesGiven ?? Array(0..<starts.count)).map { a throws(ONNXImportError) in try axis(a, rank: rank, "axis") }
        let steps = stepsGiven ?? [Int](repeating: 1, count: starts.count)
        guard ends.count == starts.count, axes.count == starts.count, steps.count == starts.count else {
            throw fail("starts, ends, axes and steps differ in length")
        }
        var ranges = data.shape.map { Array(0..<$0) }
        for (k, a) in axes.enumerated() {
            let size = data.shape[a], step = steps[k]
            guard step != 0 else { throw fail("step 0") }
            func clampIndex(_ v: Int, low: Int, high: Int) -> Int { min(max(v < 0 ? v + size : v, low), high) }
            var picked: [Int] = []
            if step > 0 {
                var i = clampIndex(starts[k], low: 0, high: size)
                let e = clampIndex(ends[k], low: 0, high: size)
                while i < e { picked.append(i); i += step }
            } else {
                var i = clampIndex(starts[k], low: 0, high: size - 1)
                let e = clampIndex(ends[k], low: -1, high: size - 1)
                while i > e { picked.append(i); i += step }
            }
            ranges[a] = picked
        }
        let strides = rowMajorStrides(data.shape)
        var order: [Int] = [0]
        for (a, r) in ranges.enumerated() {
            order = order.flatMap { base in r.map { base + $0 * strides[a] } }
        }
        return pick(data, order, ranges.map(\.count))
    }

    /// Elementwise Add/Sub/Mul/Div of two constants with numpy broadcasting.
    func fold(_ op: String, _ a: ConstantTensor, _ b: ConstantTensor) throws(ONNXImportError) -> ConstantTensor {
        let rank = max(a.shape.count, b.shape.count)
        let sa = [Int](repeating: 1, count: rank - a.shape.count) + a.shape
        let sb = [Int](repeating: 1, count: rank - b.shape.count) + b.shape
        var shape: [Int] = []
        for (x, y) in zip(sa, sb) {
            guard x == y || x == 1 || y == 1 else { throw fail("cannot broadcast \(a.shape) with \(b.shape)") }
            shape.append(x == 1 ? y : x)
        }
        guard let count = elementCount(shape, limit: 1 << 28) else { throw fail("result \(shape) is too large") }
        let stridesA = broadcastStrides(sa, shape), stridesB = broadcastStrides(sb, shape)
        let out = rowMajorStrides(shape)
        func index(_ i: Int, _ strides: [Int]) -> Int {
            var rem = i, k = 0
            for d in 0..<rank {
                k += (rem / out[d]) * strides[d]
                rem %= out[d]
            }
            return k
        }
        if a.isFloat || b.isFloat {
            guard let x = a.floats, let y = b.floats else { throw fail("arithmetic on sizes known only at run time") }
            let f: (Double, Double) -> Double
            switch op {
            case "Add": f = { $0 + $1 }
            case "Sub": f = { $0 - $1 }
            case "Mul": f = { $0 * $1 }
            default: f = { $0 / $1 }
            }
            return ConstantTensor(shape: shape, floats: (0..<count).map { Float(f(Double(x[index($0, stridesA)]), Double(y[index($0, stridesB)]))) })
        }
        let x = a.dims, y = b.dims
        var result: [Dim] = []
        result.reserveCapacity(count)
        for i in 0..<count {
            let (p, q) = (x[index(i, stridesA)], y[index(i, stridesB)])
            switch (op, p, q) {
            case let (_, .known(u), .known(v)):
                switch op {
                case "Add": result.append(.known(u &+ v))
                case "Sub": result.append(.known(u &- v))
                case "Mul": result.append(.known(u &* v))
                default:
                    let (quotient, overflow) = u.dividedReportingOverflow(by: v)
                    guard v != 0, !overflow else { throw fail("integer division \(u) / \(v)") }
                    result.append(.known(quotient))
                }
            case ("Mul", _, .known(1)), ("Div", _, .known(1)), ("Add", _, .known(0)), ("Sub", _, .known(0)): result.append(p)
            case ("Mul", .known(1), _), ("Add", .known(0), _): result.append(q)
            default: throw fail("\(op) of sizes known only at run time (\(p), \(q)) is not supported")
            }
        }
        return ConstantTensor(shape: shape, ints: result)
    }

    /// Expand (opset 8) of a constant: broadcast (numpy rules) to the given shape, which may also be broadcast by it.
    /// What torch.onnx.export's unoptimised graphs make a zero bias from.
    mutating func expand(_ n: ONNXNodeProto) throws(ONNXImportError) -> ConstantTensor {
        let data = try constantInput(n, 0, "input")
        let given = try intsInput(n, 1, "shape")
        let rank = max(data.shape.count, given.count)
        let sa = [Int](repeating: 1, count: rank - data.shape.count) + data.shape
        let sb = [Int](repeating: 1, count: rank - given.count) + given
        var shape: [Int] = []
        for (x, y) in zip(sa, sb) {
            guard x == y || x == 1 || y == 1, y >= 0 else { throw fail("cannot expand \(data.shape) to \(given)") }
            shape.append(x == 1 ? y : x)
        }
        guard let count = elementCount(shape, limit: 1 << 28) else { throw fail("the result \(shape) is too large") }
        let strides = broadcastStrides(sa, shape), out = rowMajorStrides(shape)
        let order = (0..<count).map { i in
            var rem = i, k = 0
            for d in 0..<rank {
                k += (rem / out[d]) * strides[d]
                rem %= out[d]
            }
            return k
        }
        return pick(data, order, shape)
    }

    /// CastLike (opset 15): Cast to the element type of input 1. Computed tensors are float, so a constant cast like
    /// one becomes float, and a computed tensor cast like a float stays as it is.
    mutating func castLike(_ n: ONNXNodeProto) throws(ONNXImportError) -> Value {
        guard let x = try input(n, 0), let target = try input(n, 1) else { throw fail("CastLike needs two inputs") }
        let toFloat: Bool
        switch target {
        case .runtime: toFloat = true
        case .constant(let c): toFloat = c.isFloat
        }
        switch x {
        case .runtime:
            guard toFloat else { throw fail("casting a computed tensor to integers is not supported") }
            return x
        case .constant(let c):
            if toFloat {
                guard let f = c.floats else { throw fail("casting sizes known only at run time to floats") }
                return .constant(ConstantTensor(shape: c.shape, floats: f))
            }
            return .constant(ConstantTensor(shape: c.shape, ints: c.dims))
        }
    }

    /// A constant's elements in the order of flat indices `order`, as a tensor of `shape`.
    func pick(_ c: ConstantTensor, _ order: [Int], _ shape: [Int]) -> ConstantTensor {
        switch c.elements {
        case .float(let v): return ConstantTensor(shape: shape, floats: order.map { v[$0] })
        case .int(let v): return ConstantTensor(shape: shape, ints: order.map { v[$0] })
        }
    }

    /// Output axis i is input axis perm[i].
    func transposed(_ c: ConstantTensor, _ perm: [Int]) -> ConstantTensor {
        let strides = rowMajorStrides(c.shape)
        let shape = perm.map { c.shape[$0] }
        var order: [Int] = [0]
        for a in perm {
            order = order.flatMap { base in (0..<c.shape[a]).map { base + $0 * strides[a] } }
        }
        return pick(c, order, shape)
    }
}

func rowMajorStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var s = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[i] = s
        s *= shape[i]
    }
    return strides
}

/// Strides of `shape` read as `target` with numpy broadcasting (0 along broadcast axes).
func broadcastStrides(_ shape: [Int], _ target: [Int]) -> [Int] {
    let s = rowMajorStrides(shape)
    return shape.indices.map { shape[$0] == 1 && target[$0] != 1 ? 0 : s[$0] }
}
