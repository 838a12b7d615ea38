import Foundation
import Testing
import KilnFormat

// The malformed-bundle corpus: damaged variants of `tinyModel()` (and of its compressed form), each with the
// section and the words its one-line error must carry. Most variants are resealed — file size and checksums
// recomputed as a writer would — so that the structural checks behind the checksums are what refuses them.

/// A bundle's bytes taken apart along formats/kiln-bundle.md, independently of the reader: header fields,
/// section entries, and where each field of META, GRPH and TNSR sits, so that a test can change one field,
/// splice a section, and reseal.
struct BundleImage {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
    func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) } }
    mutating func set16(_ at: Int, _ v: UInt16) { bytes[at] = UInt8(v & 0xFF); bytes[at + 1] = UInt8(v >> 8) }
    mutating func set32(_ at: Int, _ v: UInt32) { for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    mutating func set64(_ at: Int, _ v: UInt64) { for i in 0..<8 { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }

    // Header: magic [0,8), major 8, minor 10, header_size 12, section_count 16, flags 20, file_size 24,
    // table offset 32, checksum 40, reserved [48,64). Section entry (48 bytes at 64 + 48 i): kind 0, flags 4,
    // offset 8, size 16, checksum 24, reserved 32 and 40.
    var sectionCount: Int { Int(u32(16)) }
    static func entry(_ index: Int) -> Int { 64 + 48 * index }
    static let kinds = ["META", "GRPH", "TNSR", "DATA"]

    /// The entry index, offset and size of section `kind` ("META", "GRPH", "TNSR", "DATA").
    func section(_ kind: String) -> (entry: Int, offset: Int, size: Int) {
        let i = Self.kinds.firstIndex(of: kind)!
        return (Self.entry(i), Int(u64(Self.entry(i) + 8)), Int(u64(Self.entry(i) + 16)))
    }

    /// Recomputes what a writer would: file_size, every in-bounds section's checksum, the header checksum.
    mutating func reseal() {
        set64(24, UInt64(bytes.count))
        let count = min(sectionCount, 16)
        let tableEnd = min(64 + 48 * count, bytes.count)
        for i in 0..<count where Self.entry(i) + 48 <= bytes.count {
            let e = Self.entry(i)
            let offset = u64(e + 8), size = u64(e + 16)
            if offset <= UInt64(bytes.count), size <= UInt64(bytes.count) - offset {
                set64(e + 24, XXH64.hash(Array(bytes[Int(offset)..<Int(offset + size)])))
            }
        }
        set64(40, XXH64.hash(Array(bytes[0..<40]) + Array(bytes[64..<max(64, tableEnd)])))
    }

    func resealed() -> [UInt8] {
        var copy = self
        copy.reseal()
        return copy.bytes
    }

    /// Replaces `range` of section `kind`'s content with `new`, lays the four sections out again (64-byte
    /// aligned, zero padding, entries updated) and reseals.
    mutating func splice(_ kind: String, _ range: Range<Int>, with new: [UInt8]) {
        var contents = Self.kinds.map { k -> [UInt8] in
            let s = section(k)
            return Array(bytes[s.offset..<s.offset + s.size])
        }
        let index = Self.kinds.firstIndex(of: kind)!
        contents[index].replaceSubrange(range, with: new)
        let align = { (n: Int) in (n + 63) / 64 * 64 }
        var out = Array(bytes[0..<(64 + 48 * 4)])
        out += [UInt8](repeating: 0, count: align(out.count) - out.count)
        for (i, content) in contents.enumerated() {
            let e = Self.entry(i)
            withUnsafeBytes(of: UInt64(out.count).littleEndian) { out.replaceSubrange(e + 8..<e + 16, with: $0) }
            withUnsafeBytes(of: UInt64(content.count).littleEndian) { out.replaceSubrange(e + 16..<e + 24, with: $0) }
            out += content
            out += [UInt8](repeating: 0, count: align(out.count) - out.count)
        }
        bytes = out
        reseal()
    }

    // MARK: Field offsets (absolute), walked along the specification

    struct Port { var name = 0, value = 0, rank = 0, dims: [Int] = [], end = 0 }
    struct Op { var start = 0, opcode = 0, name = 0, inputCount = 0, inputs: [Int] = [], output = 0, attributeCount = 0,
                attributes: [Int] = [], tensorCount = 0, tensors: [Int] = [], end = 0 }
    struct Tensor { var name = 0, elementType = 0, rank = 0, dims: [Int] = [], dataOffset = 0, byteSize = 0 }
    struct Fields {
        var metaCount = 0, metaKeys: [Int] = [], metaTags: [Int] = [], metaListCounts: [Int] = []
        var valueCount = 0, valueNames: [Int] = []
        var inputCount = 0, inputs: [Port] = [], outputCount = 0, outputs: [Port] = []
        var opCount = 0, ops: [Op] = []
        var tensorCount = 0, tensors: [Tensor] = []
    }

    var fields: Fields {
        var f = Fields()
        var at = 0
        func u32() -> Int { defer { at += 4 }; return Int(self.u32(at)) }
        func string() -> Int { let start = at; at += 4 + Int(self.u32(at)); return start }

        at = section("META").offset
        f.metaCount = at
        for _ in 0..<u32() {
            f.metaKeys.append(string())
            f.metaTags.append(at)
            let tag = bytes[at]
            at += 1
            switch tag {
            case 1, 2: at += 8
            case 3: _ = string()
            case 4: f.metaListCounts.append(at); for _ in 0..<u32() { _ = string() }
            default: f.metaListCounts.append(at); at += 8 * u32()
            }
        }
        at = section("GRPH").offset
        f.valueCount = at
        for _ in 0..<u32() { f.valueNames.append(string()) }
        func ports() -> [Port] {
            (0..<u32()).map { _ in
                var p = Port()
                p.name = string(); p.value = at; at += 4; p.rank = at
                p.dims = (0..<u32()).map { _ in defer { at += 8 }; return at }
                p.end = at
                return p
            }
        }
        f.inputCount = at
        f.inputs = ports()
        f.outputCount = at
        f.outputs = ports()
        f.opCount = at
        for _ in 0..<u32() {
            var op = Op()
            op.start = at; op.opcode = at; at += 4; op.name = string()
            op.inputCount = at; op.inputs = (0..<u32()).map { _ in defer { at += 4 }; return at }
            op.output = at; at += 4
            op.attributeCount = at; op.attributes = (0..<u32()).map { _ in defer { at += 8 }; return at }
            op.tensorCount = at; op.tensors = (0..<u32()).map { _ in defer { at += 4 }; return at }
            op.end = at
            f.ops.append(op)
        }
        at = section("TNSR").offset
        f.tensorCount = at
        for _ in 0..<u32() {
            var t = Tensor()
            t.name = string(); t.elementType = at; at += 4; t.rank = at
            t.dims = (0..<u32()).map { _ in defer { at += 8 }; return at }
            t.dataOffset = at; t.byteSize = at + 8; at += 16
            f.tensors.append(t)
        }
        return f
    }
}

/// One damaged bundle and the error it must give.
struct MalformedBundle: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    /// The section the error names ("header", "section table", "META", …).
    var section: String
    /// Words the message must contain.
    var message: [String]
    var testDescription: String { name }
}

enum MalformedBundles {
    static let plain: [UInt8] = (try? BundleWriter.serialize(tinyModel())) ?? []
    static let compressed: [UInt8] = (try? BundleWriter.serialize(tinyModel(), compression: .zstd(level: 3))) ?? []

    /// `edit` applied to the tiny bundle (or `base`), then resealed unless `seal` is false.
    static func variant(_ name: String, _ section: String, _ message: [String], base: [UInt8] = plain, seal: Bool = true,
                        _ edit: (inout BundleImage, BundleImage.Fields) -> Void) -> MalformedBundle {
        var image = BundleImage(base)
        edit(&image, image.fields)
        if seal { image.reseal() }
        return MalformedBundle(name: name, bytes: image.bytes, section: section, message: message)
    }

    static let header: [MalformedBundle] = [
        variant("version from the future", "header", ["bundle version 2.0 is not supported by this reader (version 1.x)"]) { b, _ in b.set16(8, 2) },
        variant("version 0", "header", ["bundle version 0.0 is not supported"]) { b, _ in b.set16(8, 0) },
        variant("major version 2, unsealed", "header", ["bundle version 2.0 is not supported"], seal: false) { b, _ in b.set16(8, 2) },
        variant("bad magic", "header", ["not a Kiln bundle (bad magic bytes)"]) { b, _ in b.bytes[4] = 0x0A },
        variant("text-mode damage (CR LF → LF)", "header", ["not a Kiln bundle"]) { b, _ in b.bytes.remove(at: 4) },
        variant("header size 65", "header", ["header size 65, expected 64"]) { b, _ in b.set32(12, 65) },
        variant("unknown header flags", "header", ["unknown flags 0x1"]) { b, _ in b.set32(20, 1) },
        variant("section count 0", "header", ["section count 0 is outside 1...16"]) { b, _ in b.set32(16, 0) },
        variant("section count 17", "header", ["section count 17 is outside 1...16"]) { b, _ in b.set32(16, 17) },
        variant("section count 2^32-1", "header", ["section count 4294967295 is outside 1...16"]) { b, _ in b.set32(16, .max) },
        variant("section count 3", "section table", ["padding byte at offset 208", "is not zero"]) { b, _ in b.set32(16, 3) },
        variant("section count 5", "META", ["offset 256 is misaligned or overlaps the previous section"]) { b, _ in b.set32(16, 5) },
        variant("section table elsewhere", "header", ["section table at offset 128, expected 64"]) { b, _ in b.set64(32, 128) },
        variant("reserved header byte", "header", ["reserved header byte 50 is not zero"]) { b, _ in b.bytes[50] = 1 },
        variant("header checksum", "header", ["checksum mismatch in the header or section table"], seal: false) { b, _ in b.bytes[41] ^= 1 },
        variant("section entry changed, unsealed", "header", ["checksum mismatch in the header or section table"], seal: false) { b, _ in
            b.bytes[BundleImage.entry(2) + 20] ^= 0x10
        },
        variant("file size says more", "header", ["but the header says", "(truncated or extended)"], seal: false) { b, _ in
            b.set64(24, b.u64(24) + 64)
        },
    ]

    static let sectionTable: [MalformedBundle] = [
        variant("unknown section kind", "section table", ["entry 0 has unknown kind 0x58585858"]) { b, _ in b.set32(64, 0x5858_5858) },
        variant("sections out of order", "GRPH", ["section out of order at position 0"]) { b, _ in
            let meta = b.u32(BundleImage.entry(0)), graph = b.u32(BundleImage.entry(1))
            b.set32(BundleImage.entry(0), graph)
            b.set32(BundleImage.entry(1), meta)
        },
        variant("section flags", "META", ["unknown flags 0x1 or reserved fields set"]) { b, _ in b.set32(BundleImage.entry(0) + 4, 1) },
        variant("section reserved field", "TNSR", ["unknown flags 0x0 or reserved fields set"]) { b, _ in b.set64(BundleImage.entry(2) + 40, 1) },
        variant("DATA flags 2", "DATA", ["unknown flags 0x2 or reserved fields set"]) { b, _ in b.set32(BundleImage.entry(3) + 4, 2) },
        variant("misaligned section", "GRPH", ["is misaligned or overlaps the previous section"]) { b, _ in
            let e = BundleImage.entry(1)
            b.set64(e + 8, b.u64(e + 8) + 4)
        },
        variant("overlapping sections", "GRPH", ["offset 256 is misaligned or overlaps the previous section"]) { b, _ in
            b.set64(BundleImage.entry(1) + 8, b.u64(BundleImage.entry(0) + 8))
        },
        variant("section past the end", "TNSR", ["runs past the end of the file"]) { b, _ in
            b.set64(BundleImage.entry(2) + 16, UInt64(b.bytes.count))
        },
        variant("section size 2^64-1", "META", ["size 18446744073709551615 runs past the end of the file"]) { b, _ in
            b.set64(BundleImage.entry(0) + 16, .max)
        },
        variant("section offset 2^64-64", "DATA", ["offset 18446744073709551552", "runs past the end of the file"]) { b, _ in
            b.set64(BundleImage.entry(3) + 8, UInt64.max - 63)
        },
        variant("damaged section, unsealed", "GRPH", ["checksum mismatch (stored", "the section is damaged"], seal: false) { b, _ in
            b.bytes[b.section("GRPH").offset + 5] ^= 0x20
        },
        variant("damaged DATA, unsealed", "DATA", ["checksum mismatch"], seal: false) { b, _ in
            b.bytes[b.section("DATA").offset + 3] ^= 0x01
        },
        variant("padding after META", "META", ["padding byte at offset", "after the section is not zero"]) { b, _ in
            let s = b.section("META")
            b.bytes[s.offset + s.size] = 7
        },
        variant("padding at the end", "DATA", ["padding byte at offset", "is not zero"]) { b, _ in b.bytes[b.bytes.count - 1] = 1 },
        variant("64 bytes appended", "DATA", ["64 unexpected bytes after the padding of the last section"]) { b, _ in
            b.bytes += [UInt8](repeating: 0, count: 64)
        },
    ]

    static let metadata: [MalformedBundle] = [
        variant("metadata count 2^32-1", "META", ["count 4294967295 at offset 256 exceeds what the section can hold"]) { b, f in
            b.set32(f.metaCount, .max)
        },
        variant("key length 2^32-1", "META", ["string of 4294967295 bytes at offset 260 is too long"]) { b, f in b.set32(f.metaKeys[0], .max) },
        variant("key length 1 MiB + 1", "META", ["string of 1048577 bytes at offset 260 is too long"]) { b, f in
            b.set32(f.metaKeys[0], 1 << 20 + 1)
        },
        variant("key longer than the section", "META", ["needs 100000 bytes at offset 264 but the section ends at", "(truncated or corrupt)"]) { b, f in
            b.set32(f.metaKeys[0], 100_000)
        },
        variant("key not UTF-8", "META", ["string at offset 260 is not valid UTF-8"]) { b, f in b.bytes[f.metaKeys[0] + 4] = 0xFF },
        variant("keys out of order", "META", ["keys are not strictly sorted ('znput.mean' then 'kiln.eps')"]) { b, f in
            b.bytes[f.metaKeys[0] + 4] = UInt8(ascii: "z")
        },
        variant("unknown metadata type", "META", ["key 'input.mean' has unknown type tag 9"]) { b, f in b.bytes[f.metaTags[0]] = 9 },
        variant("list count 2^32-1", "META", ["count 4294967295 at offset", "exceeds what the section can hold"]) { b, f in
            b.set32(f.metaListCounts[0], .max)
        },
        variant("bytes after the metadata", "META", ["3 unexpected bytes at the end of the section"]) { b, _ in
            let s = b.section("META")
            b.splice("META", s.size..<s.size, with: [1, 2, 3])
        },
    ]

    static let graph: [MalformedBundle] = [
        variant("value count 2^32-1", "GRPH", ["count 4294967295 at offset", "exceeds what the section can hold"]) { b, f in b.set32(f.valueCount, .max) },
        variant("value name not UTF-8", "GRPH", ["is not valid UTF-8"]) { b, f in b.bytes[f.valueNames[1] + 4] = 0xC0 },
        variant("input names value 9", "GRPH", ["input 'input' names value 9 of 3"]) { b, f in b.set32(f.inputs[0].value, 9) },
        variant("input rank 9", "GRPH", ["input 'input' has 9 dims > 8"]) { b, f in b.set32(f.inputs[0].rank, 9) },
        variant("input rank 2^32-1", "GRPH", ["input 'input' has 4294967295 dims > 8"]) { b, f in b.set32(f.inputs[0].rank, .max) },
        variant("input dim 0", "GRPH", ["input 'input' has dim 0"]) { b, f in b.set64(f.inputs[0].dims[1], 0) },
        variant("input dim -2", "GRPH", ["input 'input' has dim -2"]) { b, f in b.set64(f.inputs[0].dims[1], UInt64(bitPattern: -2)) },
        variant("input dim 2^24+1", "GRPH", ["input 'input' has dim 16777217"]) { b, f in b.set64(f.inputs[0].dims[1], 1 << 24 + 1) },
        variant("output rank 9", "GRPH", ["output 'pool' has 9 dims > 8"]) { b, f in b.set32(f.outputs[0].rank, 9) },
        variant("no inputs", "GRPH", ["the graph has no inputs"]) { b, f in
            let g = b.section("GRPH").offset
            b.splice("GRPH", f.inputCount - g..<f.inputs[0].end - g, with: [0, 0, 0, 0])
        },
        variant("no outputs", "GRPH", ["the graph has no outputs"]) { b, f in
            let g = b.section("GRPH").offset
            b.splice("GRPH", f.outputCount - g..<f.outputs[0].end - g, with: [0, 0, 0, 0])
        },
        variant("op code 99", "GRPH", ["op 0 'conv' has unknown op code 99"]) { b, f in b.set32(f.ops[0].opcode, 99) },
        variant("op code 0", "GRPH", ["op 1 'pool' has unknown op code 0"]) { b, f in b.set32(f.ops[1].opcode, 0) },
        variant("op code of a later minor version", "GRPH", ["op 0 'conv' has unknown op code \(nextOpCode)"]) { b, f in
            b.set16(10, 9)
            b.set32(f.ops[0].opcode, nextOpCode)
        },
        variant("op reads an unwritten value", "GRPH", ["op 'pool' reads value 2, which is not written before it"]) { b, f in
            b.set32(f.ops[1].inputs[0], 2)
        },
        variant("op reads value 7 of 3", "GRPH", ["op 'conv' reads value 7, which is not written before it"]) { b, f in
            b.set32(f.ops[0].inputs[0], 7)
        },
        variant("op overwrites the input", "GRPH", ["op 'conv' writes value 0, which is out of range or already written"]) { b, f in
            b.set32(f.ops[0].output, 0)
        },
        variant("value written twice", "GRPH", ["op 'pool' writes value 1, which is out of range or already written"]) { b, f in
            b.set32(f.ops[1].output, 1)
        },
        variant("op writes value 2^32-1", "GRPH", ["op 'conv' writes value 4294967295"]) { b, f in b.set32(f.ops[0].output, .max) },
        variant("tensor index out of range", "GRPH", ["op 'conv' uses tensor 5 of 2"]) { b, f in b.set32(f.ops[0].tensors[1], 5) },
        variant("op input count 2^32-1", "GRPH", ["count 4294967295 at offset", "exceeds"]) { b, f in b.set32(f.ops[0].inputCount, .max) },
        variant("attribute count 1000", "GRPH", ["count 1000 at offset", "exceeds what the section can hold"]) { b, f in
            b.set32(f.ops[0].attributeCount, 1000)
        },
        variant("op count 2^32-1", "GRPH", ["count 4294967295 at offset", "exceeds"]) { b, f in b.set32(f.opCount, .max) },
        variant("output never written", "GRPH", ["output 'pool' is never written"]) { b, f in
            let g = b.section("GRPH").offset
            b.splice("GRPH", f.opCount - g..<f.ops[1].end - g, with: [1, 0, 0, 0] + Array(b.bytes[f.ops[0].start..<f.ops[0].end]))
        },
        variant("bytes after the graph", "GRPH", ["4 unexpected bytes at the end of the section"]) { b, _ in
            let s = b.section("GRPH")
            b.splice("GRPH", s.size..<s.size, with: [0, 0, 0, 0])
        },
    ]

    static let tensors: [MalformedBundle] = [
        variant("tensor count 2^32-1", "TNSR", ["count 4294967295 at offset", "exceeds what the section can hold"]) { b, f in
            b.set32(f.tensorCount, .max)
        },
        variant("element type 9", "TNSR", ["tensor 'conv/kernel' has unknown element type 9"]) { b, f in b.set32(f.tensors[0].elementType, 9) },
        variant("element type 0", "TNSR", ["tensor 'conv/bias' has unknown element type 0"]) { b, f in b.set32(f.tensors[1].elementType, 0) },
        variant("wrong element type for the size", "TNSR", ["tensor 'conv/kernel' has 144 bytes, shape [3, 3, 2, 2] as f16 needs 72"]) { b, f in
            b.set32(f.tensors[0].elementType, 2)
        },
        variant("tensor rank 9", "TNSR", ["tensor 'conv/kernel' has 9 dims > 8"]) { b, f in b.set32(f.tensors[0].rank, 9) },
        variant("tensor rank 2^32-1", "TNSR", ["tensor 'conv/kernel' has 4294967295 dims > 8"]) { b, f in b.set32(f.tensors[0].rank, .max) },
        variant("dim 2^40", "TNSR", ["tensor 'conv/kernel' shape overflows (dim 1099511627776)"]) { b, f in b.set64(f.tensors[0].dims[0], 1 << 40) },
        variant("elements over 2^34", "TNSR", ["tensor 'conv/kernel' shape overflows (dim 1048576)"]) { b, f in
            b.set64(f.tensors[0].dims[0], 1 << 20)
            b.set64(f.tensors[0].dims[1], 1 << 20)
        },
        variant("element count overflows 64 bits", "TNSR", ["tensor 'conv/kernel' shape overflows (dim 17179869184)"]) { b, f in
            for d in f.tensors[0].dims { b.set64(d, 1 << 34) }
        },
        variant("2^34 elements in a 200-byte DATA", "TNSR", ["tensor 'conv/kernel' data [0, +68719476736) runs past the DATA section (200 bytes)"]) { b, f in
            b.set64(f.tensors[0].dims[0], 1 << 16)
            b.set64(f.tensors[0].dims[1], 1 << 16)
            b.set64(f.tensors[0].byteSize, 1 << 36)
        },
        variant("byte size disagrees with the shape", "TNSR", ["tensor 'conv/kernel' has 145 bytes, shape [3, 3, 2, 2] as f32 needs 144"]) { b, f in
            b.set64(f.tensors[0].byteSize, 145)
        },
        variant("misaligned tensor", "TNSR", ["tensor 'conv/bias' data offset 196 is not 64-byte aligned"]) { b, f in
            b.set64(f.tensors[1].dataOffset, 196)
        },
        variant("overlapping tensors", "TNSR", ["tensor 'conv/bias' (index 1) overlaps the previous tensor's data"]) { b, f in
            b.set64(f.tensors[1].dataOffset, 128)
        },
        variant("same data twice", "TNSR", ["tensor 'conv/bias' (index 1) overlaps the previous tensor's data"]) { b, f in
            b.set64(f.tensors[1].dataOffset, 0)
        },
        variant("tensor past DATA", "TNSR", ["tensor 'conv/bias' data [1048576, +8) runs past the DATA section (200 bytes)"]) { b, f in
            b.set64(f.tensors[1].dataOffset, 1 << 20)
        },
        variant("tensor offset 2^64-64", "TNSR", ["tensor 'conv/bias' data [18446744073709551552, +8) runs past the DATA section"]) { b, f in
            b.set64(f.tensors[1].dataOffset, UInt64.max - 63)
        },
    ]

    static let data: [MalformedBundle] = [
        variant("uncompressed DATA flagged compressed", "DATA", ["zstd data is corrupt"]) { b, _ in
            let s = b.section("DATA")
            b.set32(s.entry + 4, 1)
            b.set64(s.entry + 32, UInt64(s.size))
            b.set64(s.entry + 40, XXH64.hash(Array(b.bytes[s.offset..<s.offset + s.size])))
        },
        variant("decompressed checksum", "DATA", ["checksum mismatch after decompression: the section is damaged"], base: compressed) { b, _ in
            b.bytes[b.section("DATA").entry + 40] ^= 1
        },
        variant("uncompressed size too small", "DATA", ["decompresses to more than the recorded"], base: compressed) { b, _ in
            let e = b.section("DATA").entry
            b.set64(e + 32, b.u64(e + 32) - 64)
        },
        variant("uncompressed size too large", "DATA", ["decompresses to", "recorded"], base: compressed) { b, _ in
            let e = b.section("DATA").entry
            b.set64(e + 32, b.u64(e + 32) + 64)
        },
        variant("uncompressed size over the limit", "DATA", ["uncompressed size 17179869185 exceeds the limit"], base: compressed) { b, _ in
            b.set64(b.section("DATA").entry + 32, 1 << 34 + 1)
        },
        variant("damaged zstd frame", "DATA", [], base: compressed) { b, _ in
            let s = b.section("DATA")
            for i in 0..<8 { b.bytes[s.offset + s.size / 2 + i] ^= 0x5A }
        },
    ]

    static let all = header + sectionTable + metadata + graph + tensors + data

    /// The tiny bundle cut at every section boundary (and around them), as it is and resealed.
    static let truncations: [MalformedBundle] = {
        let image = BundleImage(plain)
        var cuts: Set<Int> = [0, 1, 8, 12, 40, 63, 64, 65, 112, 255]
        for k in BundleImage.kinds {
            let s = image.section(k)
            cuts.formUnion([s.offset - 1, s.offset, s.offset + 1, s.offset + s.size / 2, s.offset + s.size - 1, s.offset + s.size])
        }
        cuts.insert(plain.count - 1)
        var cases: [MalformedBundle] = []
        for n in cuts.sorted() where n < plain.count {
            let cut = Array(plain[0..<n])
            if n < 64 {
                cases.append(MalformedBundle(name: "cut at \(n)", bytes: cut, section: "header", message: ["file is \(n) bytes, shorter than the header"]))
                continue
            }
            cases.append(MalformedBundle(name: "cut at \(n)", bytes: cut, section: "header", message: ["file is \(n) bytes but the header says \(plain.count)"]))
            // Resealed: the file size agrees, so the section bounds must catch it.
            let sealed = BundleImage(cut).resealed()
            if n < 64 + 4 * 48 {
                cases.append(MalformedBundle(name: "cut at \(n), resealed", bytes: sealed, section: "header", message: ["section table runs past the end of the file"]))
                continue
            }
            let inside = BundleImage.kinds.first { k in let s = image.section(k); return s.offset + s.size > n }
            if let inside {
                cases.append(MalformedBundle(name: "cut at \(n), resealed", bytes: sealed, section: inside, message: ["runs past the end of the file (\(n) bytes)"]))
            } else {
                // Every section is whole; the padding after DATA is not.
                cases.append(MalformedBundle(name: "cut at \(n), resealed", bytes: sealed, section: "DATA", message: ["truncated"]))
            }
        }
        return cases
    }()
}

/// The first op code this reader does not know.
let nextOpCode = (OpCode.allCases.map(\.rawValue).max() ?? 0) + 1

@Suite struct MalformedBundleTests {
    @Test(arguments: MalformedBundles.all)
    func refusedWithItsError(_ c: MalformedBundle) {
        expectRefused(c)
    }

    @Test(arguments: MalformedBundles.truncations)
    func truncatedAtEverySectionBoundary(_ c: MalformedBundle) {
        expectRefused(c)
    }

    func expectRefused(_ c: MalformedBundle, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try Bundle(bytes: c.bytes)
            Issue.record("\(c.name): accepted", sourceLocation: sourceLocation)
        } catch {
            #expect(error.section == c.section, "\(c.name): \(error)", sourceLocation: sourceLocation)
            for words in c.message {
                #expect(error.message.contains(words), "\(c.name): '\(error.message)' lacks '\(words)'", sourceLocation: sourceLocation)
            }
            #expect(!error.description.contains("\n"), "\(c.name): more than one line", sourceLocation: sourceLocation)
        }
    }

    /// Every single bit of the tiny bundle (plain and compressed) flipped, then resealed: the reader refuses
    /// it naming a section, or accepts a bundle that writes back and reads back the same. Nothing crashes.
    @Test(arguments: [("plain", MalformedBundles.plain), ("compressed", MalformedBundles.compressed)])
    func everyFlippedBitResealed(_ name: String, _ bytes: [UInt8]) throws {
        let sections = ["header", "section table", "META", "GRPH", "TNSR", "DATA"]
        var accepted = 0, refused = 0
        for i in 0..<bytes.count * 8 {
            var image = BundleImage(bytes)
            image.bytes[i / 8] ^= 1 << (i % 8)
            image.reseal()
            do {
                let bundle = try Bundle(bytes: image.bytes)
                accepted += 1
                let again = try Bundle(bytes: try BundleWriter.serialize(bundle.model)).model
                #expect(again.ops == bundle.model.ops && again.metadata == bundle.model.metadata, "bit \(i)")
            } catch {
                refused += 1
                #expect(error.section.map(sections.contains) ?? false, "bit \(i): \(error)")
            }
        }
        #expect(accepted + refused == bytes.count * 8)
        print("\(name): \(bytes.count * 8) bits flipped and resealed: \(refused) refused, \(accepted) still valid bundles")
    }

    /// A later minor version whose content this reader knows loads (the version policy: minor versions add
    /// things an old reader refuses by name).
    @Test func laterMinorVersionWithKnownContentLoads() throws {
        var image = BundleImage(MalformedBundles.plain)
        image.set16(10, 9)
        image.reseal()
        #expect(try Bundle(bytes: image.bytes).versionMinor == 9)
    }

    /// The file-level checks of `Bundle(contentsOf:)`: missing, a directory, empty, shorter than the header.
    @Test func fileLevelRefusals() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-malformed-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: "\(dir)/empty.kiln", contents: Data())
        _ = FileManager.default.createFile(atPath: "\(dir)/short.kiln", contents: Data(MalformedBundles.plain.prefix(40)))
        let cases: [(String, String)] = [
            ("\(dir)/missing.kiln", "cannot open: No such file or directory"),
            (dir, "not a regular file"),
            ("\(dir)/empty.kiln", "file is 0 bytes, shorter than the 64-byte header"),
            ("\(dir)/short.kiln", "file is 40 bytes, shorter than the 64-byte header"),
        ]
        for (path, words) in cases {
            #expect { _ = try Bundle(contentsOf: path) } throws: { error in
                "\(error)".contains(words) && "\(error)".hasPrefix(path)
            }
        }
    }
}
