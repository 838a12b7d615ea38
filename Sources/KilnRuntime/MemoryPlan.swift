/// Where every intermediate value of one run lives: offsets into one arena, decided once per input shape.
///
/// Each value occupies its buffer from the op that writes it to the last op that reads it (model outputs: to the
/// end). Values whose lifetimes do not overlap share bytes. An op may write its output over an input it is the
/// last reader of (a convolution's residual, an add's operand, relu, softmax, flatten) when the kernel allows
/// it; such values form one buffer. Buffers are placed greedily, largest first, each at the lowest offset free
/// for its whole lifetime (TFLite's "greedy by size"), which for ResNet-50 comes to about three of its largest
/// activations.
struct MemoryPlan {
    /// Arena offset in bytes of each value, nil for values that are not in the arena (the model input, values
    /// never written).
    var offsets: [Int?]
    /// Bytes the arena needs.
    var arenaBytes: Int

    /// One value to place.
    struct Value {
        /// Bytes of the value (its element count times its element type's width).
        var bytes: Int
        /// Index of the op that writes it, -1 for the model input.
        var firstStep: Int
        /// Index of the last op that reads it; `steps` (one past the last op) for model outputs.
        var lastStep: Int
        /// The value whose buffer this one reuses (an input of the op that writes it), if any.
        var reuses: Int?
        /// False for values that must not be in the arena (the model input lives in the caller's memory).
        var inArena: Bool
    }

    /// Every offset a multiple of 64 bytes (a cache line; 16 floats).
    static let alignmentBytes = 64

    init(values: [Value]) {
        // Union the values that share a buffer, then give each buffer the union of their lifetimes.
        var root = Array(values.indices)
        func find(_ v: Int) -> Int {
            var v = v
            while root[v] != v { v = root[v] }
            return v
        }
        for (v, value) in values.enumerated() {
            if let r = value.reuses { root[v] = find(r) }
        }
        struct Buffer { var bytes = 0, first = Int.max, last = Int.min, members: [Int] = [] }
        var buffers: [Int: Buffer] = [:]
        for (v, value) in values.enumerated() where value.inArena {
            let r = find(v)
            var b = buffers[r] ?? Buffer()
            b.bytes = max(b.bytes, value.bytes)
            b.first = min(b.first, value.firstStep)
            b.last = max(b.last, value.lastStep)
            b.members.append(v)
            buffers[r] = b
        }
        // Largest first; ties by first use, so that the plan is deterministic.
        let order = buffers.keys.sorted {
            let a = buffers[$0]!, b = buffers[$1]!
            return a.bytes != b.bytes ? a.bytes > b.bytes : (a.first != b.first ? a.first < b.first : $0 < $1)
        }
        struct Placed { var offset: Int, end: Int, first: Int, last: Int }
        var placed: [Placed] = []
        var offsets = [Int?](repeating: nil, count: values.count)
        var arena = 0
        let align = Self.alignmentBytes
        for key in order {
            let b = buffers[key]!
            let size = (b.bytes + align - 1) / align * align
            // Intervals of the arena taken during this buffer's lifetime, by offset.
            let busy = placed.filter { $0.first <= b.last && b.first <= $0.last }.sorted { $0.offset < $1.offset }
            var offset = 0
            for p in busy {
                if offset + size <= p.offset { break }
                offset = max(offset, p.end)
            }
            placed.append(Placed(offset: offset, end: offset + size, first: b.first, last: b.last))
            arena = max(arena, offset + size)
            for m in b.members { offsets[m] = offset }
        }
        self.offsets = offsets
        self.arenaBytes = arena
    }
}
