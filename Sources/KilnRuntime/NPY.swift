#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KilnFormat

/// NumPy `.npy` files (format versions 1.0–3.0), C order, little-endian float32 or float64 (read as float32).
public enum NPY {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"
    public static let maximumElements = 1 << 31
    /// The longest header read (NumPy itself writes a few hundred bytes).
    public static let maximumHeader = 1 << 16
    /// The largest file read: the largest header and `maximumElements` float64 values.
    public static let maximumFileSize = 12 + maximumHeader + 8 * maximumElements

    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public var file: String
        public var message: String
        public var description: String { "\(file): \(message)" }
    }

    /// An `.npy` header: the dtype string, the shape (C order) and where the data starts.
    public struct Header: Sendable, Equatable {
        public var descr: String
        public var shape: [Int]
        public var elementCount: Int
        public var dataStart: Int
    }

    /// Reads and checks the header of an `.npy` image: magic, version 1.0–3.0, the header's length and text,
    /// `descr`, C order, and a shape of at most `BundleLayout.maximumRank` dims and `maximumElements` elements.
    /// The dtype is the caller's to check (`parse` takes float32/float64; the `.npz` codec more).
    public static func parseHeader(_ bytes: [UInt8], file: String) throws(FormatError) -> Header {
        func fail(_ m: String) -> FormatError { FormatError(file: file, message: m) }
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw fail("not a NumPy .npy file (bad magic)") }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw fail("unsupported .npy version \(major)")
        }
        guard headerLength <= maximumHeader else {
            throw fail("header of \(headerLength) bytes exceeds the limit \(maximumHeader)")
        }
        guard headerStart + headerLength <= bytes.count else {
            throw fail("header of \(headerLength) bytes runs past the end of the file")
        }
        guard let header = String(validating: bytes[headerStart..<headerStart + headerLength], as: UTF8.self) else {
            throw fail("header is not text")
        }
        guard let descr = field(header, "descr").map(stripQuotes) else { throw fail("header has no 'descr'") }
        if let fortran = field(header, "fortran_order"), fortran.hasPrefix("True") {
            throw fail("Fortran-ordered arrays are not supported (use np.ascontiguousarray)")
        }
        guard let shapeText = field(header, "shape") else { throw fail("header has no 'shape'") }
        var shape: [Int] = []
        let inner = shapeText.drop { $0 != "(" }.dropFirst().prefix { $0 != ")" }
        for part in inner.split(separator: ",") {
            let t = part.trimmingCharacters(in: " ")
            if t.isEmpty { continue }
            guard let d = Int(t), d >= 0 else {
                let shown = shapeText.firstIndex(of: ")").map { String(shapeText[...$0]) } ?? String(shapeText.prefix(40))
                throw fail("shape \(shown.filter { !$0.isNewline }) is not understood")
            }
            shape.append(d)
        }
        guard shape.count <= BundleLayout.maximumRank else { throw fail("\(shape.count) dims > \(BundleLayout.maximumRank)") }
        var count = 1
        for d in shape {
            let (p, o) = count.multipliedReportingOverflow(by: d)
            guard !o, p <= maximumElements else { throw fail("shape \(shape) has more than \(maximumElements) elements") }
            count = p
        }
        return Header(descr: descr, shape: shape, elementCount: count, dataStart: headerStart + headerLength)
    }

    /// The bytes before the data of an array of `descr` and `shape`: version 1.0 (2.0 when the header needs
    /// more than 65535 bytes), padded with spaces so that the data starts at a multiple of 64.
    public static func encodeHeader(descr: String, shape: [Int]) -> [UInt8] {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(dims)), }"
        let v1 = header.utf8.count + 1 + 10 <= 65535
        let total = (v1 ? 10 : 12) + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        var out = magic + [v1 ? 1 : 2, 0]
        let n = header.utf8.count
        out += v1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)]
        out += Array(header.utf8)
        return out
    }

    /// Parses an `.npy` image held in memory.
    public static func parse(_ bytes: [UInt8], file: String = "<memory>") throws(FormatError) -> Tensor {
        func fail(_ m: String) -> FormatError { FormatError(file: file, message: m) }
        let h = try parseHeader(bytes, file: file)
        let (descr, shape, count, dataStart) = (h.descr, h.shape, h.elementCount, h.dataStart)
        let width: Int
        switch descr {
        case "<f4", "=f4": width = 4
        case "<f8", "=f8": width = 8
        default: throw fail("dtype '\(descr)' is not supported (float32 or float64, little-endian)")
        }
        guard bytes.count - dataStart == count * width else {
            throw fail("shape \(shape) needs \(count * width) data bytes, the file has \(bytes.count - dataStart)")
        }
        var values = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            for i in 0..<count {
                if width == 4 {
                    values[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: dataStart + 4 * i, as: UInt32.self)))
                } else {
                    values[i] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: dataStart + 8 * i, as: UInt64.self))))
                }
            }
        }
        return Tensor(shape: shape, values: values)
    }

    /// Reads an `.npy` file.
    public static func read(path: String) throws(FormatError) -> Tensor {
        var st = stat()
        if stat(path, &st) == 0, Int(st.st_size) > maximumFileSize {
            throw FormatError(file: path, message: "file of \(st.st_size) bytes exceeds the limit \(maximumFileSize) (\(maximumElements) float64 values)")
        }
        guard let bytes = readFile(path) else {
            throw FormatError(file: path, message: "cannot read: \(String(cString: strerror(errno)))")
        }
        return try parse(bytes, file: path)
    }

    /// The `.npy` (version 1.0, `<f4`) bytes of a tensor.
    public static func serialize(_ t: Tensor) -> [UInt8] {
        var out = encodeHeader(descr: "<f4", shape: t.shape)
        t.values.withUnsafeBytes { raw in
            #if _endian(little)
            out.append(contentsOf: raw)
            #else
            for v in t.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
            #endif
        }
        return out
    }

    /// Writes an `.npy` file atomically.
    public static func write(_ t: Tensor, to path: String) throws(BundleError) {
        try BundleWriter.writeAtomically(serialize(t), to: path)
    }

    static func field(_ header: String, _ key: String) -> String? {
        let needle = Array("'\(key)':".utf8)
        let text = Array(header.utf8)
        guard needle.count <= text.count else { return nil }
        for start in 0...(text.count - needle.count) where Array(text[start..<start + needle.count]) == needle {
            return String(decoding: text[(start + needle.count)...], as: UTF8.self).trimmingCharacters(in: " ")
        }
        return nil
    }

    static func stripQuotes(_ s: String) -> String {
        let t = s.drop { $0 == "'" || $0 == "\"" }
        return String(t.prefix { $0 != "'" && $0 != "\"" })
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: Character) -> String {
        String(drop { $0 == set }.reversed().drop { $0 == set }.reversed())
    }
}

/// Reads a whole file; nil on error (errno set).
public func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { return nil }
    var out = [UInt8](repeating: 0, count: Int(st.st_size))
    var done = 0
    while done < out.count {
        let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 { if errno == EINTR { continue }; return nil }
        if n == 0 { break }
        done += n
    }
    return done == out.count ? out : nil
}
