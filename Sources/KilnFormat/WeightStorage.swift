/// Reduced-precision weight storage (bundle version 1.1): encoding at write time, widening at load.

/// The precision in which a bundle stores its weight kernels. Biases and other vectors stay float32.
public enum WeightStorage: String, Sendable, CaseIterable {
    case f32, f16, bf16, int8

    var elementType: ElementType {
        switch self {
        case .f32: return .float32
        case .f16: return .float16
        case .bf16: return .bfloat16
        case .int8: return .int8PerChannel
        }
    }
}

extension FrozenModel {
    /// The model with every convolution and dense kernel (rank ≥ 2 tensors named `…/kernel`) stored in
    /// `storage`. Encoding is deterministic: f16 and bf16 round to nearest even; int8 is symmetric per
    /// output channel, scale[c] = max|w[..., c]| / 127, q = round(w / scale) (ties away from zero).
    public func storingWeights(as storage: WeightStorage) -> FrozenModel {
        guard storage != .f32 else { return self }
        var copy = self
        for i in copy.tensors.indices {
            let t = copy.tensors[i]
            guard t.elementType == .float32, t.shape.count >= 2, t.name.hasSuffix("/kernel") else { continue }
            let values = t.payload.floats
            copy.tensors[i] = TensorRecord(name: t.name, elementType: storage.elementType, shape: t.shape,
                                           payload: .bytes(encodeElements(values, as: storage.elementType, shape: t.shape)))
        }
        return copy
    }
}

/// float32 → binary16, round to nearest even (Swift's conversion).
@inline(__always) func halfBits(_ x: Float) -> UInt16 { Float16(x).bitPattern }

/// binary16 → float32, exact, without a library call: the 15 exponent+mantissa bits shifted into a float32
/// and multiplied by 2^112 re-bias the exponent (127 − 15) for normal and subnormal halves alike; infinities
/// and NaNs get the all-ones exponent.
@inline(__always) func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let magnitude = UInt32(h & 0x7FFF)
    if magnitude >= 0x7C00 {
        return Float(bitPattern: sign | 0x7F80_0000 | ((magnitude & 0x3FF) << 13))
    }
    let value = Float(bitPattern: magnitude << 13) * 0x1p112
    return sign == 0 ? value : -value
}

/// float32 → bfloat16, round to nearest even; NaN stays a quiet NaN.
@inline(__always) func bfloat16Bits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) }
    let rounding = 0x7FFF + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

func encodeElements(_ values: [Float], as type: ElementType, shape: [Int]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(type.storedByteCount(shape: shape))
    func u16(_ v: UInt16) { out.append(UInt8(v & 0xFF)); out.append(UInt8(v >> 8)) }
    switch type {
    case .float32:
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
    case .float16:
        for v in values { u16(halfBits(v)) }
    case .bfloat16:
        for v in values { u16(bfloat16Bits(v)) }
    case .int8PerChannel:
        let channels = shape.last ?? 1
        var scale = [Float](repeating: 0, count: channels)
        for (i, v) in values.enumerated() { scale[i % channels] = max(scale[i % channels], abs(v)) }
        for c in 0..<channels { scale[c] = scale[c] > 0 ? scale[c] / 127 : 1 }
        for (i, v) in values.enumerated() {
            let q = (v / scale[i % channels]).rounded(.toNearestOrAwayFromZero)
            out.append(UInt8(bitPattern: Int8(max(-127, min(127, q)))))
        }
        while out.count % 4 != 0 { out.append(0) }
        for s in scale { withUnsafeBytes(of: s.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
    }
    return out
}

/// Widens stored elements to float32. `raw` holds exactly `type.storedByteCount(shape:)` bytes.
/// Raw-pointer loops (no per-element bounds or uniqueness checks): this runs over every weight at load.
public func decodeElements(_ raw: UnsafeRawBufferPointer, type: ElementType, shape: [Int]) -> [Float] {
    let n = shape.reduce(1, *)
    guard n > 0, let src = raw.baseAddress else { return [Float](repeating: 0, count: max(n, 0)) }
    precondition(raw.count >= type.storedByteCount(shape: shape), "decodeElements: \(raw.count) bytes for \(type) \(shape)")
    return [Float](unsafeUninitializedCapacity: n) { out, initialized in
        let o = out.baseAddress!
        switch type {
        case .float32:
            for i in 0..<n { o[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .float16:
            for i in 0..<n { o[i] = halfToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .bfloat16:
            for i in 0..<n {
                o[i] = Float(bitPattern: UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
            }
        case .int8PerChannel:
            // Row by row: the channel is the innermost axis (no division per element).
            let channels = max(shape.last ?? 1, 1)
            let scalesAt = (n + 3) / 4 * 4
            let scale = (0..<channels).map { c in
                Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: scalesAt + 4 * c, as: UInt32.self)))
            }
            var i = 0
            while i + channels <= n {
                for c in 0..<channels { o[i + c] = Float(src.load(fromByteOffset: i + c, as: Int8.self)) * scale[c] }
                i += channels
            }
            for k in i..<n { o[k] = 0 }
        }
        initialized = n
    }
}
