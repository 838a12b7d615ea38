import CONNX
import CProtobufC
import Foundation

// The ONNX messages as Swift values. `ProtobufMessage` owns the C message that libprotobuf-c unpacks; the
// mirror structs below are copied out of it, after which the C message is freed. Nothing here keeps a
// pointer into C memory, and no C type appears outside this file.

/// The one owner of a message unpacked by libprotobuf-c: frees it (and everything it points to) on deinit.
final class ProtobufMessage<Message> {
    let pointer: UnsafeMutablePointer<Message>
    private let free: (UnsafeMutablePointer<Message>) -> Void

    init(_ pointer: UnsafeMutablePointer<Message>, free: @escaping (UnsafeMutablePointer<Message>) -> Void) {
        self.pointer = pointer
        self.free = free
    }

    deinit { free(pointer) }

    /// Runs `body` on the message while it is alive (ARC could otherwise free it right after the last use
    /// of the owner, while the copied struct's pointers are still being read).
    func withMessage<R>(_ body: (Message) -> R) -> R {
        withExtendedLifetime(self) { body(pointer.pointee) }
    }
}

/// `ModelProto`: the top-level message of a `.onnx` file.
struct ONNXModelProto: Sendable {
    var irVersion: Int64?
    var opsetImports: [(domain: String, version: Int64)]
    var producerName: String
    var producerVersion: String
    var graph: ONNXGraphProto?
    var metadata: [(key: String, value: String)]

    /// Unpacks a serialized ModelProto; nil when the bytes are not a valid one (truncated, damaged).
    static func unpack(_ bytes: UnsafeRawBufferPointer) -> ONNXModelProto? {
        guard let raw = withBase(bytes, { onnx__model_proto__unpack(nil, bytes.count, $0) }) else { return nil }
        let owner = ProtobufMessage(raw) { onnx__model_proto__free_unpacked($0, nil) }
        return owner.withMessage { ONNXModelProto($0) }
    }

    init(_ m: Onnx__ModelProto) {
        irVersion = m.has_ir_version != 0 ? m.ir_version : nil
        opsetImports = messages(m.n_opset_import, m.opset_import) { o in
            (domain: string(o.domain), version: o.has_version != 0 ? o.version : 1)
        }
        producerName = string(m.producer_name)
        producerVersion = string(m.producer_version)
        graph = m.graph.map { ONNXGraphProto($0.pointee) }
        metadata = messages(m.n_metadata_props, m.metadata_props) { (key: string($0.key), value: string($0.value)) }
    }
}

/// `GraphProto`: nodes in topological order, initializers (weights), inputs and outputs.
struct ONNXGraphProto: Sendable {
    var name: String
    var nodes: [ONNXNodeProto]
    var initializers: [ONNXTensorProto]
    var sparseInitializerNames: [String]
    var inputs: [ONNXValueInfo]
    var outputs: [ONNXValueInfo]

    init(_ g: Onnx__GraphProto) {
        name = string(g.name)
        nodes = messages(g.n_node, g.node) { ONNXNodeProto($0) }
        initializers = messages(g.n_initializer, g.initializer) { ONNXTensorProto($0) }
        sparseInitializerNames = messages(g.n_sparse_initializer, g.sparse_initializer) { s in
            s.values.map { string($0.pointee.name) } ?? ""
        }
        inputs = messages(g.n_input, g.input) { ONNXValueInfo($0) }
        outputs = messages(g.n_output, g.output) { ONNXValueInfo($0) }
    }
}

/// `NodeProto`: one op. An empty input or output name is an omitted optional one.
struct ONNXNodeProto: Sendable {
    var name: String
    var opType: String
    var domain: String
    var inputs: [String]
    var outputs: [String]
    var attributes: [ONNXAttribute]

    init(name: String = "", opType: String, domain: String = "", inputs: [String], outputs: [String],
         attributes: [ONNXAttribute] = []) {
        self.name = name
        self.opType = opType
        self.domain = domain
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
    }

    init(_ n: Onnx__NodeProto) {
        name = string(n.name)
        opType = string(n.op_type)
        domain = string(n.domain)
        inputs = strings(n.n_input, n.input)
        outputs = strings(n.n_output, n.output)
        attributes = messages(n.n_attribute, n.attribute) { ONNXAttribute($0) }
    }
}

/// `AttributeProto`. `type` is 0 in files older than IR version 2; the accessors then go by the field
/// that is present.
struct ONNXAttribute: Sendable {
    var name: String
    var type: Int
    var f: Float?
    var i: Int64?
    var s: [UInt8]?
    var t: ONNXTensorProto?
    var floats: [Float]
    var ints: [Int64]
    var strings: [[UInt8]]
    var tensorCount: Int

    init(_ a: Onnx__AttributeProto) {
        name = string(a.name)
        type = a.has_type != 0 ? Int(a.type.rawValue) : 0
        f = a.has_f != 0 ? a.f : nil
        i = a.has_i != 0 ? a.i : nil
        s = a.has_s != 0 ? bytes(a.s) : nil
        t = a.t.map { ONNXTensorProto($0.pointee) }
        floats = array(a.n_floats, a.floats)
        ints = array(a.n_ints, a.ints)
        strings = (0..<a.n_strings).map { bytes(a.strings[$0]) }
        tensorCount = a.n_tensors
    }

    /// The type's name as in onnx.proto (`INTS`), for messages.
    var typeName: String {
        let names = [1: "FLOAT", 2: "INT", 3: "STRING", 4: "TENSOR", 5: "GRAPH", 6: "FLOATS", 7: "INTS", 8: "STRINGS",
                     9: "TENSORS", 10: "GRAPHS", 11: "SPARSE_TENSOR", 12: "SPARSE_TENSORS", 13: "TYPE_PROTO", 14: "TYPE_PROTOS"]
        return names[type] ?? "type \(type)"
    }
}

/// Where a tensor's bytes are, as the file says (checked against the shape when decoded).
enum ONNXTensorPayload: Sendable {
    /// Float32 values, from `float_data` or from little-endian `raw_data` (`rawBytes` set then).
    case floats([Float], rawBytes: Int?)
    case doubles([Double])
    case int64s([Int64])
    /// `int32_data`, which also holds int8/uint8/int16/uint16/bool/float16 values, one per entry.
    case int32s([Int32])
    /// `uint64_data`, which also holds uint32 values.
    case uint64s([UInt64])
    /// `raw_data` of any other element type, or float raw data whose length is not a multiple of 4.
    case raw([UInt8])
    /// `data_location = EXTERNAL`: the keys of `external_data`.
    case external([String: String])
    /// No data at all (valid only for an empty tensor).
    case none
}

/// `TensorProto`: dims, element type and the data.
struct ONNXTensorProto: Sendable {
    var name: String
    var dims: [Int64]
    var dataType: Int
    var payload: ONNXTensorPayload
    /// More than one place holds data (e.g. both raw_data and float_data): refused when decoded.
    var payloadConflict: Bool
    var isSegmented: Bool

    init(name: String, dims: [Int64], dataType: Int, payload: ONNXTensorPayload) {
        self.name = name
        self.dims = dims
        self.dataType = dataType
        self.payload = payload
        payloadConflict = false
        isSegmented = false
    }

    init(_ t: Onnx__TensorProto) {
        name = string(t.name)
        dims = array(t.n_dims, t.dims)
        dataType = t.has_data_type != 0 ? Int(t.data_type) : 0
        isSegmented = t.segment != nil
        var found: [ONNXTensorPayload] = []
        if t.has_data_location != 0, t.data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL {
            var keys: [String: String] = [:]
            for (k, v) in messages(t.n_external_data, t.external_data, { (string($0.key), string($0.value)) }) { keys[k] = v }
            found.append(.external(keys))
        }
        if t.has_raw_data != 0 {
            let data = t.raw_data
            if dataType == ONNXDataType.float.rawValue, data.len % 4 == 0 {
                let count = data.len / 4
                var values = [Float](repeating: 0, count: count)
                if count > 0, let src = data.data {
                    // raw_data is little-endian; so are the machines Swift targets here.
                    values.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: src, count: data.len)) }
                }
                found.append(.floats(values, rawBytes: data.len))
            } else {
                found.append(.raw(bytes(data)))
            }
        }
        if t.n_float_data > 0 { found.append(.floats(array(t.n_float_data, t.float_data), rawBytes: nil)) }
        if t.n_double_data > 0 { found.append(.doubles(array(t.n_double_data, t.double_data))) }
        if t.n_int64_data > 0 { found.append(.int64s(array(t.n_int64_data, t.int64_data))) }
        if t.n_int32_data > 0 { found.append(.int32s(array(t.n_int32_data, t.int32_data))) }
        if t.n_uint64_data > 0 { found.append(.uint64s(array(t.n_uint64_data, t.uint64_data))) }
        payload = found.first ?? .none
        payloadConflict = found.count > 1
    }

    /// Unpacks a serialized TensorProto (the `.pb` files of ONNX's test data).
    static func unpack(_ bytes: UnsafeRawBufferPointer) -> ONNXTensorProto? {
        guard let raw = withBase(bytes, { onnx__tensor_proto__unpack(nil, bytes.count, $0) }) else { return nil }
        let owner = ProtobufMessage(raw) { onnx__tensor_proto__free_unpacked($0, nil) }
        return owner.withMessage { ONNXTensorProto($0) }
    }
}

/// A dimension as declared in a `TensorShapeProto`.
enum ONNXDeclaredDim: Sendable, Equatable {
    case value(Int64)
    case param(String)
    case unknown
}

/// `ValueInfoProto`: a graph input's or output's name, element type and shape.
struct ONNXValueInfo: Sendable {
    var name: String
    /// Nil when the type is not a tensor type (sequence, map, …) or is missing.
    var elementType: Int?
    /// Nil when the shape is not given (rank unknown).
    var shape: [ONNXDeclaredDim]?

    init(name: String, elementType: Int?, shape: [ONNXDeclaredDim]?) {
        self.name = name
        self.elementType = elementType
        self.shape = shape
    }

    init(_ v: Onnx__ValueInfoProto) {
        name = string(v.name)
        elementType = nil
        shape = nil
        guard let type = v.type?.pointee, type.value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE,
              let tensor = type.tensor_type?.pointee else { return }
        elementType = tensor.has_elem_type != 0 ? Int(tensor.elem_type) : 0
        if let s = tensor.shape?.pointee {
            shape = messages(s.n_dim, s.dim) { d -> ONNXDeclaredDim in
                switch d.value_case {
                case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE: return .value(d.dim_value)
                case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM:
                    let p = string(d.dim_param)
                    return p.isEmpty ? .unknown : .param(p)
                default: return .unknown
                }
            }
        }
    }
}

/// ONNX element types (`TensorProto.DataType`) that the importer reads.
enum ONNXDataType: Int, Sendable {
    case float = 1, uint8 = 2, int8 = 3, uint16 = 4, int16 = 5, int32 = 6, int64 = 7, string = 8, bool = 9,
         float16 = 10, double = 11, uint32 = 12, uint64 = 13, bfloat16 = 16

    static func name(_ code: Int) -> String {
        let names = [0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
                     8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
                     15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2",
                     20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0"]
        return names[code] ?? "data type \(code)"
    }

    /// Bytes per element in raw_data.
    var width: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16, .float16, .bfloat16: return 2
        case .float, .int32, .uint32: return 4
        case .int64, .double, .uint64: return 8
        case .string: return 0
        }
    }
}

// MARK: - Copying out of C

/// The bytes' address; libprotobuf-c wants a non-null pointer even for an empty buffer.
private func withBase<R>(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafePointer<UInt8>) -> R) -> R {
    if bytes.count > 0, let base = bytes.baseAddress { return body(base.assumingMemoryBound(to: UInt8.self)) }
    var zero: UInt8 = 0
    return withUnsafePointer(to: &zero) { body($0) }
}

private func string(_ p: UnsafeMutablePointer<CChar>?) -> String {
    guard let p else { return "" }
    return String(cString: p)
}

private func strings(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> [String] {
    guard n > 0, let p else { return [] }
    return (0..<n).map { string(p[$0]) }
}

private func array<T>(_ n: Int, _ p: UnsafeMutablePointer<T>?) -> [T] {
    guard n > 0, let p else { return [] }
    return Array(UnsafeBufferPointer(start: p, count: n))
}

private func bytes(_ b: ProtobufCBinaryData) -> [UInt8] {
    guard b.len > 0, let data = b.data else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: b.len))
}

private func messages<M, T>(_ n: Int, _ p: UnsafeMutablePointer<UnsafeMutablePointer<M>?>?, _ f: (M) -> T) -> [T] {
    guard n > 0, let p else { return [] }
    return (0..<n).compactMap { p[$0].map { f($0.pointee) } }
}
