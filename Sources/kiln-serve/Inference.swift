import Foundation
import KilnClassify
import KilnFormat
import NIOCore

// The protocol-neutral form of an Open Inference Protocol request and response: REST (JSON + binary
// extension) and gRPC (protobuf + raw contents) both parse into `InferRequest` and encode `InferResponse`.

/// What went wrong for the client, in protocol-neutral terms; REST maps it to an HTTP status, gRPC to a code.
struct ServeError: Error, CustomStringConvertible {
    enum Reason: Sendable {
        /// The request itself is wrong (400 / INVALID_ARGUMENT).
        case badRequest
        /// No such model or route (404 / NOT_FOUND).
        case notFound
        /// Over --max-request-bytes (413 / RESOURCE_EXHAUSTED).
        case tooLarge
        /// Queue full or draining (503 + Retry-After / UNAVAILABLE).
        case unavailable
        /// The bundle cannot run it, or a bug (500 / INTERNAL).
        case internalError
    }
    var reason: Reason
    var message: String
    var description: String { message }

    init(_ reason: Reason, _ message: String) { self.reason = reason; self.message = message }

    /// An error of the pipeline, by its kind: the client's fault for bad or unsupported input, ours otherwise.
    init(_ error: any Error) {
        if let serve = error as? ServeError {
            self = serve
        } else if let kinded = error as? any KindedError {
            switch kinded.kind {
            case .badInput, .unsupported: reason = .badRequest
            case .badBundle, .internal: reason = .internalError
            }
            message = kinded.description
        } else {
            reason = .internalError
            message = "\(error)"
        }
    }
}

/// Bytes of a tensor as they arrived: a slice of the REST body or a gRPC raw_input_contents entry (no copy).
enum RawBytes: Sendable {
    case buffer(ByteBuffer)
    case data(Data)

    var count: Int {
        switch self {
        case .buffer(let buffer): return buffer.readableBytes
        case .data(let data): return data.count
        }
    }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch self {
        case .buffer(let buffer): return try buffer.withUnsafeReadableBytes(body)
        case .data(let data): return try data.withUnsafeBytes(body)
        }
    }

    /// The BYTES elements: each a 4-byte little-endian length, then that many bytes (Triton's layout).
    func lengthPrefixedElements(input: String) throws(ServeError) -> [[UInt8]] {
        let result: [[UInt8]]? = withUnsafeBytes { raw in
            var elements: [[UInt8]] = []
            var offset = 0
            while offset < raw.count {
                guard raw.count - offset >= 4 else { return nil }
                let length = Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
                offset += 4
                guard raw.count - offset >= length else { return nil }
                elements.append(Array(raw[offset..<offset + length]))
                offset += length
            }
            return elements
        }
        guard let result else { throw ServeError(.badRequest, "input '\(input)': a BYTES element runs past the end of its contents") }
        return result
    }
}

/// An input tensor's values as they arrived.
enum InputContents: Sendable {
    /// Little-endian raw bytes (binary extension / raw_input_contents): FP32 values or length-prefixed BYTES.
    case raw(RawBytes)
    /// Numbers from JSON data or gRPC typed contents, flattened in row-major order.
    case numbers([Float])
    /// BYTES elements from JSON data or gRPC bytes_contents.
    case strings([[UInt8]])
    /// No values given.
    case none
}

struct InferInput: Sendable {
    var name: String
    var datatype: String
    var shape: [Int]
    var contents: InputContents
}

/// An output the client asked for: by name, in binary (REST only), as the top `classes` classes when > 0.
struct RequestedOutput: Sendable {
    var name: String
    var binary: Bool
    var classes: Int
}

struct InferRequest: Sendable {
    var id: String?
    var inputs: [InferInput]
    /// nil: every output, in the form `binaryDefault` says.
    var outputs: [RequestedOutput]?
    var binaryDefault: Bool
}

enum OutputContents: Sendable {
    case fp32([Float])
    /// BYTES elements (the classification extension's "score:index:label").
    case strings([String])
}

struct InferOutput: Sendable {
    var name: String
    var shape: [Int]
    var binary: Bool
    var contents: OutputContents
    var datatype: String {
        switch contents {
        case .fp32: return "FP32"
        case .strings: return "BYTES"
        }
    }
}

struct InferResponse: Sendable {
    var modelName: String
    var id: String?
    var outputs: [InferOutput]
}

/// Appends `strings` as Triton's BYTES layout (4-byte little-endian length, then the bytes) to `bytes`.
func appendLengthPrefixed(_ strings: [String], to bytes: inout [UInt8]) {
    for string in strings {
        let utf8 = Array(string.utf8)
        withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: utf8)
    }
}
