import Foundation

/// A size or integer that may only be known at run time: what `Shape` gives for a symbolic batch.
enum Dim: Hashable, Sendable, CustomStringConvertible {
    case known(Int)
    /// A size chosen at run time; equal symbols are equal sizes.
    case symbol(String)

    var value: Int? {
        if case .known(let v) = self { return v }
        return nil
    }

    var description: String {
        switch self {
        case .known(let v): return "\(v)"
        case .symbol(let s): return s
        }
    }
}

func describe(_ dims: [Dim]) -> String { "[" + dims.map(\.description).joined(separator: ", ") + "]" }

/// A tensor whose value is known at import: weights, and everything computed from them and from shapes.
struct ConstantTensor: Sendable {
    enum Elements: Sendable {
        case float([Float])
        /// Integers (and booleans) of any ONNX integer type; entries may be run-time sizes.
        case int([Dim])
    }

    var shape: [Int]
    var elements: Elements

    init(shape: [Int], floats: [Float]) {
        self.shape = shape
        elements = .float(floats)
    }

    init(shape: [Int], ints: [Dim]) {
        self.shape = shape
        elements = .int(ints)
    }

    init(shape: [Int], ints: [Int]) {
        self.init(shape: shape, ints: ints.map { Dim.known($0) })
    }

    var count: Int {
        switch elements {
        case .float(let v): return v.count
        case .int(let v): return v.count
        }
    }

    var isFloat: Bool {
        if case .float = elements { return true }
        return false
    }

    /// The values as floats; nil when an integer entry is only known at run time.
    var floats: [Float]? {
        switch elements {
        case .float(let v): return v
        case .int(let v):
            var out: [Float] = []
            out.reserveCapacity(v.count)
            for d in v {
                guard let x = d.value else { return nil }
                out.append(Float(x))
            }
            return out
        }
    }

    /// The values as integers, known or not (floats are truncated, as Cast does).
    var dims: [Dim] {
        switch elements {
        case .int(let v): return v
        case .float(let v): return v.map { .known($0.isFinite ? Int(max(min($0, 9.2e18), -9.2e18)) : 0) }
        }
    }

    /// The values as known integers; nil when one is only known at run time.
    var ints: [Int]? {
        let d = dims
        var out: [Int] = []
        out.reserveCapacity(d.count)
        for x in d {
            guard let v = x.value else { return nil }
            out.append(v)
        }
        return out
    }

    /// Same elements, another shape of the same element count.
    func reshaped(_ s: [Int]) -> ConstantTensor {
        var t = self
        t.shape = s
        return t
    }
}

/// Element counts: the product of dims, refusing negatives and anything above `limit`.
func elementCount(_ dims: [Int], limit: Int = 1 << 31) -> Int? {
    var n = 1
    for d in dims {
        guard d >= 0 else { return nil }
        let (p, overflow) = n.multipliedReportingOverflow(by: d)
        guard !overflow, p <= limit else { return nil }
        n = p
    }
    return n
}

/// Turns `TensorProto`s into constants: checks that the data matches the shape and element type, and reads
/// external data from files inside the model's folder only.
struct TensorDecoder {
    /// The model's file name, for errors.
    var file: String
    /// The folder holding the model; external data paths are relative to it and must stay inside it.
    var folder: URL?

    func fail(_ tensor: String, _ message: String) -> ONNXImportError {
        ONNXImportError(file: file, tensor: tensor.isEmpty ? nil : tensor, message)
    }

    func decode(_ t: ONNXTensorProto, name override: String? = nil) throws(ONNXImportError) -> ConstantTensor {
        let name = override ?? t.name
        guard !t.isSegmented else { throw fail(name, "segmented tensors are not supported") }
        guard !t.payloadConflict else { throw fail(name, "holds data in more than one field (raw_data and a typed field, or external data too)") }
        guard t.dims.allSatisfy({ $0 >= 0 && $0 <= Int64(Int32.max) }) else {
            throw fail(name, "has invalid dims \(t.dims)")
        }
        let shape = t.dims.map { Int($0) }
        guard let count = elementCount(shape) else { throw fail(name, "shape \(shape) has too many elements") }
        guard let type = ONNXDataType(rawValue: t.dataType), type != .string, type != .bfloat16 else {
            throw fail(name, "element type \(ONNXDataType.name(t.dataType)) is not supported")
        }
        let typeName = ONNXDataType.name(t.dataType)
        func expect(_ n: Int, _ what: String) throws(ONNXImportError) {
            guard n == count else {
                throw fail(name, "\(what) holds \(n) values but shape \(shape) of \(typeName) needs \(count)")
            }
        }
        func wrongField(_ field: String) -> ONNXImportError {
            fail(name, "\(field) is not the field for element type \(typeName)")
        }
        switch t.payload {
        case .floats(let v, let rawBytes):
            guard type == .float else { throw wrongField("float_data") }
            if let rawBytes, v.count != count {
                throw fail(name, "raw_data holds \(rawBytes) bytes but shape \(shape) of FLOAT needs \(count * 4)")
            }
            try expect(v.count, "float_data")
            return ConstantTensor(shape: shape, floats: v)
        case .doubles(let v):
            guard type == .double else { throw wrongField("double_data") }
            try expect(v.count, "double_data")
            return ConstantTensor(shape: shape, floats: v.map { Float($0) })
        case .int64s(let v):
            guard type == .int64 else { throw wrongField("int64_data") }
            try expect(v.count, "int64_data")
            return ConstantTensor(shape: shape, ints: v.map { Dim.known(Int($0)) })
        case .int32s(let v):
            try expect(v.count, "int32_data")
            switch type {
            case .int32, .int16, .int8, .uint8, .uint16, .bool:
                return ConstantTensor(shape: shape, ints: v.map { Dim.known(Int($0)) })
            case .float16:
                return ConstantTensor(shape: shape, floats: v.map { halfToFloat(UInt16(truncatingIfNeeded: $0)) })
            default: throw wrongField("int32_data")
            }
        case .uint64s(let v):
            guard type == .uint64 || type == .uint32 else { throw wrongField("uint64_data") }
            try expect(v.count, "uint64_data")
            return ConstantTensor(shape: shape, ints: v.map { Dim.known(Int(truncatingIfNeeded: $0)) })
        case .raw(let bytes):
            guard bytes.count == count * type.width else {
                throw fail(name, "raw_data holds \(bytes.count) bytes but shape \(shape) of \(typeName) needs \(count * type.width)")
            }
            return decodeLittleEndian(bytes, type: type, shape: shape)
        case .external(let keys):
            let bytes = try readExternal(keys, tensor: name, byteCount: count * type.width)
            return decodeLittleEndian(bytes, type: type, shape: shape)
        case .none:
            guard count == 0 else { throw fail(name, "has no data but shape \(shape) needs \(count) values") }
            return type == .float || type == .double || type == .float16
                ? ConstantTensor(shape: shape, floats: []) : ConstantTensor(shape: shape, ints: [Dim]())
        }
    }

    func decodeLittleEndian(_ bytes: [UInt8], type: ONNXDataType, shape: [Int]) -> ConstantTensor {
        func load<T: FixedWidthInteger>(_: T.Type) -> [T] {
            bytes.withUnsafeBytes { raw in
                (0..<(bytes.count / MemoryLayout<T>.size)).map {
                    T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self))
                }
            }
        }
        switch type {
        case .float: return ConstantTensor(shape: shape, floats: load(UInt32.self).map { Float(bitPattern: $0) })
        case .double: return ConstantTensor(shape: shape, floats: load(UInt64.self).map { Float(Double(bitPattern: $0)) })
        case .float16: return ConstantTensor(shape: shape, floats: load(UInt16.self).map(halfToFloat))
        case .int64: return ConstantTensor(shape: shape, ints: load(Int64.self).map { Int($0) })
        case .uint64: return ConstantTensor(shape: shape, ints: load(UInt64.self).map { Int(truncatingIfNeeded: $0) })
        case .int32: return ConstantTensor(shape: shape, ints: load(Int32.self).map { Int($0) })
        case .uint32: return ConstantTensor(shape: shape, ints: load(UInt32.self).map { Int($0) })
        case .int16: return ConstantTensor(shape: shape, ints: load(Int16.self).map { Int($0) })
        case .uint16: return ConstantTensor(shape: shape, ints: load(UInt16.self).map { Int($0) })
        case .int8: return ConstantTensor(shape: shape, ints: bytes.map { Int(Int8(bitPattern: $0)) })
        case .uint8, .bool: return ConstantTensor(shape: shape, ints: bytes.map { Int($0) })
        case .string, .bfloat16: return ConstantTensor(shape: shape, ints: [Dim]())
        }
    }

    /// Reads `byteCount` bytes of external data. The location must be a relative path that stays inside the
    /// model's folder, symbolic links included; offset and length must lie inside the file.
    func readExternal(_ keys: [String: String], tensor: String, byteCount: Int) throws(ONNXImportError) -> [UInt8] {
        guard let location = keys["location"], !location.isEmpty else {
            throw fail(tensor, "external data without a 'location'")
        }
        guard let folder else { throw fail(tensor, "external data '\(location)' but the model was not read from a file") }
        let components = location.split(whereSeparator: { $0 == "/" || $0 == "\\" })
        guard !location.hasPrefix("/"), !location.hasPrefix("\\"), !location.contains(":"), !location.contains("\0"),
              !components.contains(where: { $0 == ".." }) else {
            throw fail(tensor, "external data location '\(location)' leaves the model's folder")
        }
        let root = folder.standardizedFileURL.resolvingSymlinksInPath().path
        let path = folder.appendingPathComponent(location).standardizedFileURL.resolvingSymlinksInPath().path
        guard path.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
            throw fail(tensor, "external data location '\(location)' leaves the model's folder (it resolves to \(path))")
        }
        func number(_ key: String) throws(ONNXImportError) -> Int? {
            guard let text = keys[key] else { return nil }
            guard let v = Int(text), v >= 0 else { throw fail(tensor, "external data \(key) '\(text)' is not a byte count") }
            return v
        }
        let offset = try number("offset") ?? 0
        let declaredLength = try number("length")
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw fail(tensor, "cannot open external data file '\(location)': \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
            throw fail(tensor, "external data '\(location)' is not a regular file")
        }
        let size = Int(status.st_size)
        guard offset <= size else {
            throw fail(tensor, "external data offset \(offset) is past the end of '\(location)' (\(size) bytes)")
        }
        let length = declaredLength ?? (size - offset)
        guard length <= size - offset else {
            throw fail(tensor, "external data [\(offset), +\(length)) runs past the end of '\(location)' (\(size) bytes)")
        }
        guard length == byteCount else {
            throw fail(tensor, "external data holds \(length) bytes but the shape needs \(byteCount)")
        }
        var out = [UInt8](repeating: 0, count: length)
        var done = 0
        while done < length {
            let n = out.withUnsafeMutableBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return -1 }
                return pread(descriptor, base + done, length - done, off_t(offset + done))
            }
            guard n > 0 else { throw fail(tensor, "cannot read external data '\(location)' at byte \(offset + done)") }
            done += n
        }
        return out
    }
}

/// IEEE 754 half precision to single precision.
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h >> 15) << 31
    let exponent = Int((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
    if exponent == 0 {
        // Zero or subnormal: mantissa · 2^-24.
        let v = Float(mantissa) * Float(bitPattern: 0x3380_0000)
        return sign == 0 ? v : -v
    }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
}
