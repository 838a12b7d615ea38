#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// XXH64, the 64-bit xxHash (seed 0), used as the per-section checksum of a bundle.
///
/// Written from the xxHash specification (doc/xxhash_spec.md in the xxHash repository): four lanes of
/// 8-byte stripes over 32-byte blocks, then the lane merge, the tail, and the avalanche.
public enum XXH64 {
    static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always) static func round(_ acc: UInt64, _ lane: UInt64) -> UInt64 {
        var acc = acc &+ lane &* prime2
        acc = (acc << 31) | (acc >> 33)
        return acc &* prime1
    }

    @inline(__always) static func merge(_ acc: UInt64, _ val: UInt64) -> UInt64 {
        let acc = acc ^ round(0, val)
        return acc &* prime1 &+ prime4
    }

    @inline(__always) static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    /// The hash of `bytes`; with `releasingPages` (the bytes lie in a read-only file mapping), the whole pages
    /// behind each hashed 4 MiB chunk are handed back to the OS as it goes (they stay readable from the file).
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0, releasingPages: Bool) -> UInt64 {
        guard releasingPages, let base = bytes.baseAddress, bytes.count >= 32 else { return hash(bytes, seed: seed) }
        let chunk = 4 << 20
        var v = (seed &+ prime1 &+ prime2, seed &+ prime2, seed, seed &- prime1)
        var p = 0
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var released = (Int(bitPattern: base) + page - 1) / page * page - Int(bitPattern: base)
        while bytes.count - p >= 32 {
            let stripes = min(chunk, bytes.count - p) / 32 * 32
            stripesRound(&v, base + p, stripes)
            p += stripes
            // Whole pages now behind `p`.
            let end = (Int(bitPattern: base) + p) / page * page - Int(bitPattern: base)
            if end > released {
                _ = madvise(UnsafeMutableRawPointer(mutating: base + released), end - released, Int32(MADV_DONTNEED))
                released = end
            }
        }
        var h = rotl(v.0, 1) &+ rotl(v.1, 7) &+ rotl(v.2, 12) &+ rotl(v.3, 18)
        h = merge(h, v.0)
        h = merge(h, v.1)
        h = merge(h, v.2)
        h = merge(h, v.3)
        h = h &+ UInt64(bytes.count)
        return finish(h, base: base + p, remaining: bytes.count - p)
    }

    /// The four lanes over `count` bytes (a multiple of 32) at `base`.
    @inline(__always)
    static func stripesRound(_ v: inout (UInt64, UInt64, UInt64, UInt64), _ base: UnsafeRawPointer, _ count: Int) {
        var (v1, v2, v3, v4) = v
        var p = 0
        while p < count {
            v1 = round(v1, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt64.self)))
            v2 = round(v2, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 8, as: UInt64.self)))
            v3 = round(v3, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 16, as: UInt64.self)))
            v4 = round(v4, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 24, as: UInt64.self)))
            p += 32
        }
        v = (v1, v2, v3, v4)
    }

    /// The hash of `bytes`.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let count = bytes.count
        guard let base = bytes.baseAddress else { return finish(seed &+ prime5, base: nil, remaining: 0) }
        var p = 0
        var h: UInt64
        if count >= 32 {
            var v1 = seed &+ prime1 &+ prime2
            var v2 = seed &+ prime2
            var v3 = seed
            var v4 = seed &- prime1
            let limit = count - 32
            while p <= limit {
                v1 = round(v1, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt64.self)))
                v2 = round(v2, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 8, as: UInt64.self)))
                v3 = round(v3, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 16, as: UInt64.self)))
                v4 = round(v4, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 24, as: UInt64.self)))
                p += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1)
            h = merge(h, v2)
            h = merge(h, v3)
            h = merge(h, v4)
        } else {
            h = seed &+ prime5
        }
        h = h &+ UInt64(count)
        return finish(h, base: base + p, remaining: count - p)
    }

    static func finish(_ hIn: UInt64, base: UnsafeRawPointer?, remaining: Int) -> UInt64 {
        var h = hIn
        if let base {
            var p = 0
            while p + 8 <= remaining {
                let k = round(0, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt64.self)))
                h ^= k
                h = rotl(h, 27) &* prime1 &+ prime4
                p += 8
            }
            if p + 4 <= remaining {
                h ^= UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt32.self))) &* prime1
                h = rotl(h, 23) &* prime2 &+ prime3
                p += 4
            }
            while p < remaining {
                h ^= UInt64(base.load(fromByteOffset: p, as: UInt8.self)) &* prime5
                h = rotl(h, 11) &* prime1
                p += 1
            }
        }
        h ^= h >> 33
        h = h &* prime2
        h ^= h >> 29
        h = h &* prime3
        h ^= h >> 32
        return h
    }

    public static func hash(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { hash($0) }
    }
}
