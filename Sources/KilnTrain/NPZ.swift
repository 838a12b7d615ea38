#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import KilnFormat
import KilnRuntime

/// One array of a NumPy `.npz` archive: float32, float64, int64 or fixed-width unicode strings (`<U`),
/// C order. These are the types `kiln features` stores; NumPy reads them with `np.load` (no pickle).
public enum NPYArray: Equatable, Sendable {
    case float32(shape: [Int], values: [Float])
    case float64(shape: [Int], values: [Double])
    case int64(shape: [Int], values: [Int64])
    case strings([String])

    public var shape: [Int] {
        switch self {
        case .float32(let s, _), .float64(let s, _), .int64(let s, _): return s
        case .strings(let v): return [v.count]
        }
    }
}

public struct NPZError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var message: String
    public init(file: String, message: String) {
        self.file = file
        self.message = message
    }
    public var description: String { "\(file): \(message)" }
}

/// `.npy` encoding and decoding of `NPYArray` (format version 1.0, or 2.0 for long headers).
public enum NPYCodec {
    public static func encode(_ array: NPYArray) -> [UInt8] {
        let descr: String
        var body: [UInt8] = []
        switch array {
        case .float32(_, let v):
            descr = "<f4"
            body.reserveCapacity(v.count * 4)
            v.withUnsafeBytes { body.append(contentsOf: $0) }
        case .float64(_, let v):
            descr = "<f8"
            v.withUnsafeBytes { body.append(contentsOf: $0) }
        case .int64(_, let v):
            descr = "<i8"
            v.withUnsafeBytes { body.append(contentsOf: $0) }
        case .strings(let v):
            let width = max(1, v.map { $0.unicodeScalars.count }.max() ?? 1)
            descr = "<U\(width)"
            body.reserveCapacity(v.count * width * 4)
            for s in v {
                var n = 0
                for u in s.unicodeScalars {
                    withUnsafeBytes(of: u.value.littleEndian) { body.append(contentsOf: $0) }
                    n += 1
                }
                body.append(contentsOf: [UInt8](repeating: 0, count: (width - n) * 4))
            }
        }
        var out = NPY.encodeHeader(descr: descr, shape: array.shape)
        out += body
        return out
    }

    public static func decode(_ bytes: [UInt8], file: String) throws(NPZError) -> NPYArray {
        func fail(_ m: String) -> NPZError { NPZError(file: file, message: m) }
        let header: NPY.Header
        do { header = try NPY.parseHeader(bytes, file: file) } catch { throw fail(error.message) }
        let (descr, shape, count, data) = (header.descr, header.shape, header.elementCount, header.dataStart)
        func need(_ width: Int) throws(NPZError) {
            guard bytes.count - data == count * width else {
                throw fail("shape \(shape) of \(descr) needs \(count * width) data bytes, the array has \(bytes.count - data)")
            }
        }
        switch descr {
        case "<f4":
            try need(4)
            var v = [Float](repeating: 0, count: count)
            v.withUnsafeMutableBytes { dst in bytes.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[data..<data + count * 4])) } }
            return .float32(shape: shape, values: v)
        case "<f8":
            try need(8)
            var v = [Double](repeating: 0, count: count)
            v.withUnsafeMutableBytes { dst in bytes.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[data..<data + count * 8])) } }
            return .float64(shape: shape, values: v)
        case "<i8":
            try need(8)
            var v = [Int64](repeating: 0, count: count)
            v.withUnsafeMutableBytes { dst in bytes.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[data..<data + count * 8])) } }
            return .int64(shape: shape, values: v)
        case let u where u.hasPrefix("<U"):
            guard let width = Int(u.dropFirst(2)), width > 0, shape.count == 1 else { throw fail("string array \(u) of shape \(shape) is not supported") }
            try need(4 * width)
            var out: [String] = []
            out.reserveCapacity(count)
            for i in 0..<count {
                var scalars = String.UnicodeScalarView()
                for j in 0..<width {
                    let o = data + (i * width + j) * 4
                    let code = UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24
                    if code == 0 { break }
                    guard let sc = Unicode.Scalar(code) else { throw fail("string array holds an invalid character") }
                    scalars.append(sc)
                }
                out.append(String(scalars))
            }
            return .strings(out)
        default:
            throw fail("dtype '\(descr)' is not supported (float32, float64, int64, unicode strings)")
        }
    }
}

/// NumPy `.npz`: a zip archive of `.npy` members, stored (not deflated), as `np.savez` writes it.
public enum NPZ {
    /// Writes `arrays` (in the given order) atomically: a temporary file beside `path`, then a rename.
    public static func write(_ arrays: [(String, NPYArray)], to path: String) throws(NPZError) {
        var out: [UInt8] = []
        var central: [UInt8] = []
        for (name, array) in arrays {
            let data = NPYCodec.encode(array)
            let fileName = Array((name + ".npy").utf8)
            guard data.count < Int(UInt32.max), out.count < Int(UInt32.max) else {
                throw NPZError(file: path, message: "array '\(name)' makes the archive larger than 4 GB (zip64 is not written)")
            }
            let crc = CRC32.checksum(data)
            let offset = UInt32(out.count)
            // Local file header.
            out += le32(0x04034b50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0x21)
            out += le32(crc) + le32(UInt32(data.count)) + le32(UInt32(data.count))
            out += le16(UInt16(fileName.count)) + le16(0) + fileName
            out += data
            // Central directory entry.
            central += le32(0x02014b50) + le16(20) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0x21)
            central += le32(crc) + le32(UInt32(data.count)) + le32(UInt32(data.count))
            central += le16(UInt16(fileName.count)) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(offset) + fileName
        }
        let centralOffset = UInt32(out.count)
        out += central
        out += le32(0x06054b50) + le16(0) + le16(0) + le16(UInt16(arrays.count)) + le16(UInt16(arrays.count))
        out += le32(UInt32(central.count)) + le32(centralOffset) + le16(0)
        try writeAtomically(out, to: path)
    }

    /// Reads every member of a stored (uncompressed) `.npz`, as `np.savez` writes it.
    public static func read(path: String) throws(NPZError) -> [String: NPYArray] {
        let name = (path as NSString).lastPathComponent
        guard let data = FileManager.default.contents(atPath: path) else { throw NPZError(file: name, message: "cannot read the file") }
        let bytes = [UInt8](data)
        func fail(_ m: String) -> NPZError { NPZError(file: name, message: m) }
        func u16(_ o: Int) -> Int { Int(bytes[o]) | Int(bytes[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        // End of central directory: the last signature within the final 64 KB + 22 bytes.
        guard bytes.count >= 22 else { throw fail("not a .npz archive (too short)") }
        var eocd = -1
        var i = bytes.count - 22
        while i >= max(0, bytes.count - 22 - 65535) {
            if bytes[i] == 0x50, bytes[i + 1] == 0x4b, bytes[i + 2] == 0x05, bytes[i + 3] == 0x06 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw fail("not a .npz archive (no zip directory)") }
        let entries = u16(eocd + 10)
        var p = u32(eocd + 16)
        var result: [String: NPYArray] = [:]
        for _ in 0..<entries {
            guard p + 46 <= bytes.count, u32(p) == 0x02014b50 else { throw fail("zip directory is damaged at offset \(p)") }
            let method = u16(p + 10), crc = u32(p + 16), csize = u32(p + 20), usize = u32(p + 24)
            let nlen = u16(p + 28), xlen = u16(p + 30), clen = u16(p + 32), local = u32(p + 42)
            guard p + 46 + nlen <= bytes.count, let member = String(bytes: bytes[p + 46..<p + 46 + nlen], encoding: .utf8) else { throw fail("zip directory is damaged at offset \(p)") }
            p += 46 + nlen + xlen + clen
            guard method == 0 else { throw fail("\(member) is compressed (np.savez_compressed); save with np.savez") }
            guard csize == usize, local + 30 <= bytes.count, u32(local) == 0x04034b50 else { throw fail("\(member): damaged zip entry") }
            let start = local + 30 + u16(local + 26) + u16(local + 28)
            guard start + csize <= bytes.count else { throw fail("\(member) runs past the end of the file (truncated?)") }
            let body = Array(bytes[start..<start + csize])
            guard CRC32.checksum(body) == UInt32(crc) else { throw fail("\(member): checksum mismatch (damaged file)") }
            let key = member.hasSuffix(".npy") ? String(member.dropLast(4)) : member
            result[key] = try NPYCodec.decode(body, file: "\(name)/\(member)")
        }
        return result
    }

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    static func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }
}

/// Writes `bytes` atomically (the bundle writer's temporary file, fsync and rename; see
/// `BundleWriter.writeAtomically`).
func writeAtomically(_ bytes: [UInt8], to path: String) throws(NPZError) {
    do {
        try BundleWriter.writeAtomically(bytes, to: path)
    } catch {
        throw NPZError(file: path, message: error.message)
    }
}

/// Writes text atomically.
func writeTextAtomically(_ text: String, to path: String) throws(NPZError) {
    try writeAtomically(Array(text.utf8), to: path)
}

/// CRC-32 (IEEE 802.3, as zip uses it).
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFFFFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFFFFFF
    }
}
