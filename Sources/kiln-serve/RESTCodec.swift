import Foundation
import NIOCore

// The KServe v2 REST body, typed: the JSON header decoded with Codable into `RESTInferRequest`, binary tensor
// data (the binary extension) sliced from the bytes after it without copying, and the response encoded back.

/// A `parameters` value: the protocol allows bool, integer, number and string.
enum ParameterValue: Codable, Sendable {
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let bool = try? container.decode(Bool.self) { self = .bool(bool) } else if let int = try? container.decode(Int.self) {
            self = .int(int)
        } else if let double = try? container.decode(Double.self) { self = .double(double) } else {
            self = .string(try container.decode(String.self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        }
    }

    var int: Int? { if case .int(let value) = self { return value }; return nil }
    var bool: Bool? { if case .bool(let value) = self { return value }; return nil }
}

/// A JSON tensor's `data`, flat or nested to any depth, flattened in row-major order: all numbers or all strings.
enum JSONTensorData: Decodable {
    case numbers([Float])
    case strings([String])

    init(from decoder: any Decoder) throws {
        var numbers: [Float] = []
        var strings: [String] = []
        try Self.flatten(decoder: decoder, numbers: &numbers, strings: &strings)
        if !numbers.isEmpty, !strings.isEmpty {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "data mixes numbers and strings"))
        }
        self = strings.isEmpty ? .numbers(numbers) : .strings(strings)
    }

    private static func flatten(decoder: any Decoder, numbers: inout [Float], strings: inout [String]) throws {
        // The common case first: a flat array of numbers.
        if let flat = try? decoder.singleValueContainer().decode([Float].self) {
            numbers.append(contentsOf: flat)
            return
        }
        if let flat = try? decoder.singleValueContainer().decode([String].self) {
            strings.append(contentsOf: flat)
            return
        }
        var array = try decoder.unkeyedContainer()
        while !array.isAtEnd {
            let element = try array.superDecoder()
            if let number = try? element.singleValueContainer().decode(Float.self) {
                numbers.append(number)
            } else if let string = try? element.singleValueContainer().decode(String.self) {
                strings.append(string)
            } else if (try? element.unkeyedContainer()) != nil {
                try flatten(decoder: element, numbers: &numbers, strings: &strings)
            } else {
                throw DecodingError.dataCorrupted(.init(codingPath: element.codingPath, debugDescription: "data holds a value that is neither a number nor a string"))
            }
        }
    }
}

struct RESTInferRequest: Decodable {
    struct Input: Decodable {
        var name: String
        var shape: [Int]
        var datatype: String
        var parameters: [String: ParameterValue]?
        var data: JSONTensorData?
    }
    struct Output: Decodable {
        var name: String
        var parameters: [String: ParameterValue]?
    }
    var id: String?
    var parameters: [String: ParameterValue]?
    var inputs: [Input]
    var outputs: [Output]?
}

/// The inference header (`headerLength` bytes of JSON) and the binary data after it, as an `InferRequest`.
/// An input with `parameters.binary_data_size` takes that many bytes of the binary part, in input order.
func decodeRESTInferRequest(_ body: ByteBuffer, headerLength: Int) throws(ServeError) -> InferRequest {
    guard headerLength <= body.readableBytes else {
        throw ServeError(.badRequest, "Inference-Header-Content-Length \(headerLength) for a body of \(body.readableBytes) bytes")
    }
    var body = body
    guard let headerSlice = body.readSlice(length: headerLength) else {
        throw ServeError(.badRequest, "the body is shorter than its inference header")
    }
    let header: RESTInferRequest
    do {
        // One copy of the (small) JSON header; the binary part stays in the body.
        header = try JSONDecoder().decode(RESTInferRequest.self, from: Data(headerSlice.readableBytesView))
    } catch let error as DecodingError {
        throw ServeError(.badRequest, "the request is not a valid inference request: \(describe(error))")
    } catch {
        throw ServeError(.badRequest, "the request is not a valid inference request: \(error)")
    }
    var inputs: [InferInput] = []
    for input in header.inputs {
        let contents: InputContents
        if let parameter = input.parameters?["binary_data_size"] {
            guard let size = parameter.int, size >= 0 else {
                throw ServeError(.badRequest, "input '\(input.name)': binary_data_size must be a count of bytes")
            }
            guard let slice = body.readSlice(length: size) else {
                throw ServeError(.badRequest, "input '\(input.name)': the body has \(body.readableBytes) binary bytes left, \(size) declared")
            }
            contents = .raw(.buffer(slice))
        } else {
            switch input.data {
            case .numbers(let values)?: contents = .numbers(values)
            case .strings(let values)?: contents = .strings(values.map { Array($0.utf8) })
            case nil: contents = .none
            }
        }
        inputs.append(InferInput(name: input.name, datatype: input.datatype, shape: input.shape, contents: contents))
    }
    let binaryDefault = header.parameters?["binary_data_output"]?.bool ?? false
    let outputs = try header.outputs.map { outputs throws(ServeError) in
        var requested: [RequestedOutput] = []
        for output in outputs {
            var classes = 0
            if let parameter = output.parameters?["classification"] {
                guard let k = parameter.int, k > 0 else {
                    throw ServeError(.badRequest, "output '\(output.name)': classification must be a positive count")
                }
                classes = k
            }
            requested.append(RequestedOutput(name: output.name, binary: output.parameters?["binary_data"]?.bool ?? binaryDefault, classes: classes))
        }
        return requested
    }
    return InferRequest(id: header.id, inputs: inputs, outputs: outputs, binaryDefault: binaryDefault)
}

/// One line for a decoding error: where in the JSON, and what.
func describe(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
        let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return keys.isEmpty ? "" : " at \(keys.hasPrefix(".") ? String(keys.dropFirst()) : keys)"
    }
    switch error {
    case .keyNotFound(let key, let context): return "'\(key.stringValue)' is missing\(path(context))"
    case .typeMismatch(let type, let context): return "expected \(type)\(path(context))"
    case .valueNotFound(let type, let context): return "expected \(type)\(path(context))"
    case .dataCorrupted(let context):
        return context.codingPath.isEmpty ? "not JSON" : "\(context.debugDescription)\(path(context))"
    @unknown default: return "\(error)"
    }
}

// MARK: - Responses

struct RESTOutputTensor: Encodable {
    enum Values: Encodable {
        case numbers([Float])
        case strings([String])
        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .numbers(let values): try container.encode(values)
            case .strings(let values): try container.encode(values)
            }
        }
    }
    var name: String
    var datatype: String
    var shape: [Int]
    var parameters: [String: ParameterValue]?
    var data: Values?
}

struct RESTInferResponse: Encodable {
    var model_name: String
    var model_version: String
    var id: String?
    var outputs: [RESTOutputTensor]
}

struct RESTError: Encodable { var error: String }
struct ServerMetadataBody: Encodable { var name: String; var version: String; var extensions: [String] }
struct LiveBody: Encodable { var live: Bool }
struct ReadyBody: Encodable { var ready: Bool }
struct ModelReadyBody: Encodable { var name: String; var ready: Bool }

let jsonEncoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return encoder
}()

func encodeJSON<T: Encodable>(_ value: T) -> [UInt8] {
    (try? Array(jsonEncoder.encode(value))) ?? Array(#"{"error":"the response could not be encoded"}"#.utf8)
}

/// The response's JSON header and binary part (binary outputs in output order, Triton's BYTES layout for strings).
func encodeRESTInferResponse(_ response: InferResponse) -> (header: [UInt8], binary: [UInt8]) {
    var binary: [UInt8] = []
    var outputs: [RESTOutputTensor] = []
    for output in response.outputs {
        var tensor = RESTOutputTensor(name: output.name, datatype: output.datatype, shape: output.shape)
        if output.binary {
            let before = binary.count
            switch output.contents {
            case .fp32(let values): values.withUnsafeBytes { binary.append(contentsOf: $0) }
            case .strings(let strings): appendLengthPrefixed(strings, to: &binary)
            }
            tensor.parameters = ["binary_data_size": .int(binary.count - before)]
        } else {
            switch output.contents {
            case .fp32(let values): tensor.data = .numbers(values)
            case .strings(let strings): tensor.data = .strings(strings)
            }
        }
        outputs.append(tensor)
    }
    let header = encodeJSON(RESTInferResponse(model_name: response.modelName, model_version: "1", id: response.id, outputs: outputs))
    return (header, binary)
}
