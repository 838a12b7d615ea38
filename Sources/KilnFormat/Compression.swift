import CZstd

/// DATA-section compression (bundle version 1.1): each tensor's bytes are shuffled into byte planes (all
/// first bytes of its values, then all second bytes, …) — the sign/exponent planes of float weights are
/// highly repetitive — and the whole section is compressed with zstd.
public enum Compression: Sendable, Equatable {
    case zstd(level: Int32)

    /// Parses `zstd` or `zstd:LEVEL` (1…22).
    public init?(argument: String) {
        let parts = argument.split(separator: ":", maxSplits: 1)
        guard parts.first == "zstd" else { return nil }
        if parts.count == 1 { self = .zstd(level: 3); return }
        guard let level = Int32(parts[1]), (1...22).contains(level) else { return nil }
        self = .zstd(level: level)
    }
}

/// Section-entry flag: the section is byte-plane shuffled per tensor and zstd-compressed; the entry's
/// reserved[0] holds the uncompressed size and reserved[1] the XXH64 of the uncompressed content.
let sectionFlagShuffledZstd: UInt32 = 1
/// Section flag 2 (PACK only, version 1.4): the checksum covers the section's index (its first
/// `uncompressed_size` bytes); each entry carries its own.
let sectionFlagChecksumPerEntry: UInt32 = 2

/// Bytes [0, count / width · width) regrouped by byte significance; the tail stays as it is.
func shufflePlanes(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer, width: Int) {
    let m = src.count / width
    for p in 0..<width { for i in 0..<m { dst[p * m + i] = src[i * width + p] } }
    for k in (m * width)..<src.count { dst[k] = src[k] }
}

func unshufflePlanes(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer, width: Int) {
    let m = src.count / width
    guard let s = src.baseAddress, let d = dst.baseAddress else { return }
    switch width {
    case 4:
        // One sequential read stream per plane, one 32-bit store per value.
        for i in 0..<m {
            let v = UInt32(s.load(fromByteOffset: i, as: UInt8.self))
                | UInt32(s.load(fromByteOffset: m + i, as: UInt8.self)) << 8
                | UInt32(s.load(fromByteOffset: 2 * m + i, as: UInt8.self)) << 16
                | UInt32(s.load(fromByteOffset: 3 * m + i, as: UInt8.self)) << 24
            d.storeBytes(of: v.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
        }
    case 2:
        for i in 0..<m {
            let v = UInt16(s.load(fromByteOffset: i, as: UInt8.self)) | UInt16(s.load(fromByteOffset: m + i, as: UInt8.self)) << 8
            d.storeBytes(of: v.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
        }
    default:
        for p in 0..<width { for i in 0..<m { dst[i * width + p] = src[p * m + i] } }
    }
    for k in (m * width)..<src.count { dst[k] = src[k] }
}

/// Applies `transform` to each tensor's byte range of `data` in place.
func transformTensors(_ data: UnsafeMutableRawBufferPointer, tensors: [(offset: Int, count: Int, width: Int)],
                      _ transform: (UnsafeRawBufferPointer, UnsafeMutableRawBufferPointer, Int) -> Void) {
    let largest = tensors.lazy.filter { $0.width > 1 }.map(\.count).max() ?? 0
    guard largest > 0, let base = data.baseAddress else { return }
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: largest, alignment: 64)
    defer { scratch.deallocate() }
    for t in tensors where t.width > 1 && t.count > 0 {
        let range = UnsafeMutableRawBufferPointer(start: base + t.offset, count: t.count)
        let copy = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<t.count])
        copy.copyMemory(from: UnsafeRawBufferPointer(range))
        transform(UnsafeRawBufferPointer(copy), range, t.width)
    }
}

func zstdCompress(_ bytes: [UInt8], level: Int32) throws(BundleError) -> [UInt8] {
    let bound = ZSTD_compressBound(bytes.count)
    var out = [UInt8](repeating: 0, count: bound)
    let n = out.withUnsafeMutableBytes { dst in
        bytes.withUnsafeBytes { src in ZSTD_compress(dst.baseAddress, bound, src.baseAddress, src.count, level) }
    }
    if ZSTD_isError(n) != 0 {
        throw BundleError(section: "DATA", message: "zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))")
    }
    return Array(out.prefix(n))
}

/// Streams `compressed` through zstd into `destination`, which must end up exactly full.
func zstdDecompress(_ compressed: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, section: String) throws(BundleError) {
    guard let stream = ZSTD_createDStream() else { throw BundleError(section: section, message: "cannot create a zstd stream") }
    defer { ZSTD_freeDStream(stream) }
    var input = ZSTD_inBuffer(src: compressed.baseAddress, size: compressed.count, pos: 0)
    var output = ZSTD_outBuffer(dst: destination.baseAddress, size: destination.count, pos: 0)
    while true {
        let r = ZSTD_decompressStream(stream, &output, &input)
        if ZSTD_isError(r) != 0 {
            throw BundleError(section: section, message: "zstd data is corrupt: \(String(cString: ZSTD_getErrorName(r)))")
        }
        if r == 0 { break }  // a frame is complete
        if output.pos == output.size {
            // Full, but the frame is not finished: the data decompresses to more than recorded.
            var probe = [UInt8](repeating: 0, count: 1)
            let extra = probe.withUnsafeMutableBytes { p -> Int in
                var o = ZSTD_outBuffer(dst: p.baseAddress, size: 1, pos: 0)
                _ = ZSTD_decompressStream(stream, &o, &input)
                return o.pos
            }
            if extra > 0 {
                throw BundleError(section: section, message: "decompresses to more than the recorded \(destination.count) bytes")
            }
            continue
        }
        if input.pos == input.size {
            throw BundleError(section: section, message: "compressed data ends early: \(output.pos) of \(destination.count) bytes")
        }
    }
    guard output.pos == destination.count, input.pos == input.size else {
        throw BundleError(section: section, message: "decompresses to \(output.pos) bytes, \(destination.count) recorded")
    }
}
