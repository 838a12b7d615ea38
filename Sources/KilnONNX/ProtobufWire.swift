/// Walks protobuf wire format without decoding it: to recognise an ONNX file by its first bytes, and to
/// say where a file that libprotobuf-c refuses is broken (libprotobuf-c only answers "no").
enum ProtobufWire {
    struct Field {
        var number: Int
        var wireType: Int
        /// Offset of the tag, and of the payload (after the length for wire type 2), and the end.
        var start: Int, payloadStart: Int, end: Int
    }

    /// The fields of the message in `bytes[range]`, or the first framing problem (offsets are absolute).
    static func fields(_ bytes: UnsafeRawBufferPointer, in range: Range<Int>) -> (fields: [Field], problem: String?) {
        var fields: [Field] = []
        var p = range.lowerBound
        while p < range.upperBound {
            let start = p
            guard let tag = varint(bytes, &p, limit: range.upperBound) else {
                return (fields, "byte \(start): the field tag is cut off")
            }
            let number = Int(truncatingIfNeeded: tag >> 3), wire = Int(tag & 7)
            guard number > 0 else { return (fields, "byte \(start): field number 0 is invalid") }
            switch wire {
            case 0:
                guard varint(bytes, &p, limit: range.upperBound) != nil else {
                    return (fields, "byte \(start): field \(number)'s number is cut off")
                }
            case 1, 5:
                let size = wire == 1 ? 8 : 4
                guard range.upperBound - p >= size else {
                    return (fields, "byte \(start): field \(number) needs \(size) bytes, \(range.upperBound - p) left")
                }
                p += size
            case 2:
                guard let length = varint(bytes, &p, limit: range.upperBound) else {
                    return (fields, "byte \(start): field \(number)'s length is cut off")
                }
                guard length <= UInt64(range.upperBound - p) else {
                    return (fields, "byte \(start): field \(number) claims \(length) bytes but \(range.upperBound - p) are left")
                }
                fields.append(Field(number: number, wireType: wire, start: start, payloadStart: p, end: p + Int(length)))
                p += Int(length)
                continue
            default:
                return (fields, "byte \(start): field \(number) has wire type \(wire), which ONNX never uses")
            }
            fields.append(Field(number: number, wireType: wire, start: start, payloadStart: p, end: p))
        }
        return (fields, nil)
    }

    static func varint(_ bytes: UnsafeRawBufferPointer, _ p: inout Int, limit: Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while p < limit, shift < 64 {
            let b = bytes[p]
            p += 1
            value |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }

    /// ModelProto's field numbers and their wire types (onnx.proto).
    static let modelFields: [Int: Int] = [1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2]

    /// True when the bytes start like a serialized ModelProto: the first field is one of ModelProto's,
    /// with its wire type. (HDF5, zip, JSON and text files all fail this on their first byte.)
    static func looksLikeModel(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var p = 0
        guard let tag = varint(bytes, &p, limit: min(bytes.count, 10)) else { return false }
        return modelFields[Int(truncatingIfNeeded: tag >> 3)] == Int(tag & 7)
    }

    /// Where a ModelProto that failed to unpack is broken: the model's own fields, then the graph's, then
    /// each node and initializer in the graph. Nil when the framing is sound (the damage is elsewhere).
    static func diagnoseModel(_ bytes: UnsafeRawBufferPointer) -> String? {
        let top = fields(bytes, in: 0..<bytes.count)
        if let problem = top.problem { return "model: \(problem)" }
        for f in top.fields where modelFields[f.number].map({ $0 != f.wireType }) ?? false {
            return "model: byte \(f.start): field \(f.number) has wire type \(f.wireType), onnx.proto says \(modelFields[f.number] ?? 0)"
        }
        guard let graph = top.fields.last(where: { $0.number == 7 && $0.wireType == 2 }) else { return nil }
        let inner = fields(bytes, in: graph.payloadStart..<graph.end)
        if let problem = inner.problem { return "graph: \(problem)" }
        let kinds = [1: "node", 5: "initializer", 11: "input", 12: "output", 13: "value_info"]
        var counts: [Int: Int] = [:]
        for f in inner.fields {
            guard let kind = kinds[f.number] else { continue }
            let index = counts[f.number, default: 0]
            counts[f.number] = index + 1
            guard f.wireType == 2 else { return "graph: \(kind) \(index) at byte \(f.start) has wire type \(f.wireType)" }
            if let problem = fields(bytes, in: f.payloadStart..<f.end).problem {
                return "graph: \(kind) \(index): \(problem)"
            }
        }
        return nil
    }
}
