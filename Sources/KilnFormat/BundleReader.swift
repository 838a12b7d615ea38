#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A damaged, truncated or unsupported bundle. One line: the file, the section, what is wrong.
public struct BundleError: KindedError, Sendable, Equatable {
    public var file: String?
    public var section: String?
    public var message: String
    /// `.badBundle` for damaged files, `.unsupported` for a version or feature from the future, `.badInput`
    /// when the path cannot be opened.
    public var kind: ErrorKind

    public init(file: String? = nil, section: String? = nil, message: String, kind: ErrorKind = .badBundle) {
        self.file = file
        self.section = section
        self.message = message
        self.kind = kind
    }

    public var description: String {
        var parts: [String] = []
        if let file { parts.append(file) }
        if let section { parts.append("section \(section)") }
        parts.append(message)
        return parts.joined(separator: ": ")
    }
}

/// A loaded, fully validated bundle. Uncompressed tensor data stays in the mapping: the `FrozenModel`'s
/// payloads point into it, so keep the `Bundle` alive while the model is used.
public final class Bundle: @unchecked Sendable {
    public let path: String?
    public let model: FrozenModel
    public let versionMinor: UInt16
    /// Kind, offset, size and checksum of each section, for `inspect`.
    public let sections: [SectionInfo]
    public let fileSize: Int
    /// The optional PACK section (version 1.4): tensors in one family of kernels' layouts, for the runtime to
    /// use in place of packing them when `key` is its own. Points into the mapping, like the tensors.
    public let packedLayouts: PackedLayouts?

    private let base: UnsafeRawPointer
    private let release: @Sendable (UnsafeRawPointer, Int) -> Void

    public struct SectionInfo: Sendable {
        public var kind: SectionKind
        public var offset: Int
        /// Stored bytes.
        public var size: Int
        public var checksum: UInt64
        /// Shuffled and zstd-compressed (version 1.1); `uncompressedSize` is then the content's size.
        public var compressed: Bool = false
        public var uncompressedSize: Int
    }

    /// Decompressed DATA, when the file's is compressed (64-byte aligned, owned).
    private let decompressed: UnsafeMutableRawBufferPointer?

    /// Maps and validates the file at `path`.
    public convenience init(contentsOf path: String) throws(BundleError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BundleError(file: path, message: "cannot open: \(errnoText())", kind: .badInput) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw BundleError(file: path, message: "cannot stat: \(errnoText())", kind: .badInput) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw BundleError(file: path, message: "not a regular file", kind: .badInput) }
        let size = Int(st.st_size)
        guard size >= BundleLayout.headerSize else {
            throw BundleError(file: path, message: "file is \(size) bytes, shorter than the \(BundleLayout.headerSize)-byte header")
        }
        let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else { throw BundleError(file: path, message: "cannot map: \(errnoText())", kind: .badInput) }
        try self.init(base: UnsafeRawPointer(mapped), size: size, path: path, fileMapped: true) { p, n in
            munmap(UnsafeMutableRawPointer(mutating: p), n)
        }
    }

    /// Validates a bundle held in memory (copied into 64-byte-aligned storage).
    public convenience init(bytes: [UInt8], path: String? = nil) throws(BundleError) {
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: BundleLayout.alignment)
        bytes.withUnsafeBytes { raw in
            if let src = raw.baseAddress { storage.copyMemory(from: src, byteCount: raw.count) }
        }
        try self.init(base: UnsafeRawPointer(storage), size: bytes.count, path: path) { p, _ in
            UnsafeMutableRawPointer(mutating: p).deallocate()
        }
    }

    private init(base: UnsafeRawPointer, size: Int, path: String?, fileMapped: Bool = false,
                 release: @escaping @Sendable (UnsafeRawPointer, Int) -> Void) throws(BundleError) {
        self.base = base
        self.release = release
        self.path = path
        self.fileSize = size
        do {
            let parsed = try BundleParser(base: base, size: size, fileMapped: fileMapped).parse()
            self.model = parsed.model
            self.sections = parsed.sections
            self.versionMinor = parsed.versionMinor
            self.decompressed = parsed.decompressed
            self.packedLayouts = parsed.packed
        } catch var error {
            release(base, size)
            error.file = path
            throw error
        }
    }

    deinit {
        release(base, fileSize)
        decompressed?.deallocate()
    }
}

/// Reads and checks every byte of a bundle image before anything is trusted.
struct BundleParser {
    let base: UnsafeRawPointer
    let size: Int
    /// The bytes are a read-only file mapping (pages handed back to the OS stay readable from the file).
    var fileMapped = false

    struct Parsed {
        var model: FrozenModel
        var sections: [Bundle.SectionInfo]
        var versionMinor: UInt16
        var decompressed: UnsafeMutableRawBufferPointer?
        var packed: PackedLayouts?
    }

    func parse() throws(BundleError) -> Parsed {
        let whole = UnsafeRawBufferPointer(start: base, count: size)
        guard size >= BundleLayout.headerSize else {
            throw BundleError(section: "header", message: "file is \(size) bytes, shorter than the header")
        }
        guard Array(whole[0..<8]) == BundleLayout.magic else {
            throw BundleError(section: "header", message: "not a Kiln bundle (bad magic bytes)")
        }
        var h = Cursor(whole, section: "header", start: 8, end: BundleLayout.headerSize)
        let major = try h.u16()
        let minor = try h.u16()
        guard major == BundleLayout.versionMajor else {
            throw BundleError(section: "header", message: "bundle version \(major).\(minor) is not supported by this reader (version \(BundleLayout.versionMajor).x)", kind: .unsupported)
        }
        let headerSize = try h.u32()
        let sectionCount = Int(try h.u32())
        let flags = try h.u32()
        let fileSize = try h.u64()
        let tableOffset = try h.u64()
        let checksum = try h.u64()
        guard headerSize == UInt32(BundleLayout.headerSize) else {
            throw BundleError(section: "header", message: "header size \(headerSize), expected \(BundleLayout.headerSize)")
        }
        guard flags == 0 else { throw BundleError(section: "header", message: "unknown flags 0x\(String(flags, radix: 16))") }
        guard fileSize == UInt64(size) else {
            throw BundleError(section: "header", message: "file is \(size) bytes but the header says \(fileSize) (truncated or extended)")
        }
        guard (1...BundleLayout.maximumSections).contains(sectionCount) else {
            throw BundleError(section: "header", message: "section count \(sectionCount) is outside 1...\(BundleLayout.maximumSections)")
        }
        guard tableOffset == UInt64(BundleLayout.headerSize) else {
            throw BundleError(section: "header", message: "section table at offset \(tableOffset), expected \(BundleLayout.headerSize)")
        }
        let tableEnd = BundleLayout.headerSize + sectionCount * BundleLayout.sectionEntrySize
        guard tableEnd <= size else { throw BundleError(section: "header", message: "section table runs past the end of the file") }
        for i in 48..<BundleLayout.headerSize where whole[i] != 0 {
            throw BundleError(section: "header", message: "reserved header byte \(i) is not zero")
        }
        var hashed = Array(whole[0..<40])
        hashed.append(contentsOf: whole[BundleLayout.headerSize..<tableEnd])
        guard XXH64.hash(hashed) == checksum else {
            throw BundleError(section: "header", message: "checksum mismatch in the header or section table (damaged file)")
        }

        // Section table: known kinds, in order, each in bounds, aligned, not overlapping.
        var table = Cursor(whole, section: "section table", start: BundleLayout.headerSize, end: tableEnd)
        var sections: [Bundle.SectionInfo] = []
        var previousEnd = tableEnd
        var dataHash: UInt64 = 0
        var packIndexSize = 0
        var deferredData: (start: Int, count: Int, sum: UInt64)?
        // With a PACK section the runtime reads few of DATA's bytes: its pages go back to the OS as they are checked
        // (a file mapping's pages stay readable), so that checking both sections does not hold both in memory.
        let releaseDataPages = fileMapped && sectionCount > SectionKind.requiredCount
        for index in 0..<sectionCount {
            let raw = try table.u32()
            guard let kind = SectionKind(rawValue: raw) else {
                throw BundleError(section: "section table", message: "entry \(index) has unknown kind 0x\(String(raw, radix: 16))")
            }
            let entryFlags = try table.u32()
            let offset = try table.u64()
            let length = try table.u64()
            let sum = try table.u64()
            let r1 = try table.u64(), r2 = try table.u64()
            let compressed = kind == .data && entryFlags == sectionFlagShuffledZstd
            let perEntry = kind == .pack && entryFlags == sectionFlagChecksumPerEntry && r2 == 0 && r1 <= length
            if kind == .pack, !perEntry {
                throw BundleError(section: "\(kind)", message: "flags 0x\(String(entryFlags, radix: 16)) (expected 2) or an index size \(r1) past the section's \(length) bytes")
            }
            guard compressed || perEntry || (entryFlags == 0 && r1 == 0 && r2 == 0) else {
                throw BundleError(section: "\(kind)", message: "unknown flags 0x\(String(entryFlags, radix: 16)) or reserved fields set in the section table")
            }
            if compressed, r1 > UInt64(BundleLayout.maximumElements) {
                throw BundleError(section: "\(kind)", message: "uncompressed size \(r1) exceeds the limit \(BundleLayout.maximumElements)")
            }
            // A zstd block (at least 4 bytes) never expands past 128 KiB, so the stored bytes bound what they can
            // hold: checked before the buffer for the content is allocated.
            if compressed, length <= UInt64(BundleLayout.maximumElements), r1 > length * 32768 {
                throw BundleError(section: "\(kind)", message: "uncompressed size \(r1) exceeds the limit \(length * 32768) that \(length) bytes of zstd can hold")
            }
            guard offset <= UInt64(size), length <= UInt64(size) - offset else {
                throw BundleError(section: "\(kind)", message: "offset \(offset) + size \(length) runs past the end of the file (\(size) bytes)")
            }
            let start = Int(offset), count = Int(length)
            guard start % BundleLayout.alignment == 0, start >= alignUp(previousEnd) else {
                throw BundleError(section: "\(kind)", message: "offset \(start) is misaligned or overlaps the previous section")
            }
            guard index < SectionKind.order.count, SectionKind.order[index] == kind else {
                throw BundleError(section: "\(kind)", message: "section out of order at position \(index)")
            }
            try requireZeroPadding(whole, from: previousEnd, to: start, after: sections.last.map { "\($0.kind)" } ?? "section table")
            let hashed = perEntry ? Int(r1) : count
            // With a PACK section, an uncompressed DATA is checked at the end, beside PACK's load-time entries.
            let deferred = kind == .data && !compressed && sectionCount > SectionKind.requiredCount
            if deferred { deferredData = (start, count, sum) }
            let actual = deferred ? sum : XXH64.hash(UnsafeRawBufferPointer(rebasing: whole[start..<start + hashed]))
            guard actual == sum else {
                throw BundleError(section: "\(kind)", message: "checksum mismatch (stored \(hex(sum)), computed \(hex(actual))): the section is damaged")
            }
            sections.append(.init(kind: kind, offset: start, size: count, checksum: sum, compressed: compressed,
                                  uncompressedSize: compressed ? Int(r1) : count))
            if perEntry { packIndexSize = Int(r1) }
            if compressed { dataHash = r2 }
            previousEnd = start + count
        }
        guard sections.count >= SectionKind.requiredCount else {
            throw BundleError(section: "section table", message: "\(sections.count) sections, expected \(SectionKind.requiredCount) (META, GRPH, TNSR, DATA) and an optional PACK")
        }
        try requireZeroPadding(whole, from: previousEnd, to: size, after: "\(sections.last!.kind)")
        guard alignUp(previousEnd) == size else {
            if size < alignUp(previousEnd) {
                throw BundleError(section: "\(sections.last!.kind)", message: "truncated: the file ends \(size - previousEnd) bytes into the \(alignUp(previousEnd) - previousEnd)-byte padding after the last section")
            }
            throw BundleError(section: "\(sections.last!.kind)", message: "\(size - alignUp(previousEnd)) unexpected bytes after the padding of the last section")
        }

        func cursor(_ kind: SectionKind) -> Cursor {
            let s = sections.first { $0.kind == kind }!
            return Cursor(whole, section: "\(kind)", start: s.offset, end: s.offset + s.size)
        }
        let metadata = try parseMetadata(cursor(.metadata))
        let dataSection = sections[3]
        let stored = UnsafeRawBufferPointer(rebasing: whole[dataSection.offset..<dataSection.offset + dataSection.size])
        var decompressed: UnsafeMutableRawBufferPointer?
        var data = stored
        if dataSection.compressed {
            // Streamed into 64-byte-aligned memory, then each tensor's byte planes put back, then checked.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(dataSection.uncompressedSize, 1), alignment: BundleLayout.alignment)
            let content = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<dataSection.uncompressedSize])
            decompressed = buffer
            data = UnsafeRawBufferPointer(content)
        }
        do throws(BundleError) {
            if let buffer = decompressed {
                let content = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<dataSection.uncompressedSize])
                try zstdDecompress(stored, into: content, section: "DATA")
            }
            let tensors = try parseTensors(cursor(.tensors), data: data)
            if let buffer = decompressed {
                let content = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<dataSection.uncompressedSize])
                var layout: [(offset: Int, count: Int, width: Int)] = []
                for t in tensors {
                    guard case .mapped(let raw) = t.payload, let start = raw.baseAddress, let origin = data.baseAddress else { continue }
                    layout.append((start - origin, raw.count, t.elementType.planeWidth))
                }
                transformTensors(content, tensors: layout, unshufflePlanes)
                guard XXH64.hash(UnsafeRawBufferPointer(content)) == dataHash else {
                    throw BundleError(section: "DATA", message: "checksum mismatch after decompression: the section is damaged")
                }
            }
            let model = try parseGraph(cursor(.graph), metadata: metadata, tensors: tensors, versionMinor: minor)
            var packed: PackedLayouts?
            if sections.contains(where: { $0.kind == .pack }) {
                packed = try PackedLayouts.parse(cursor(.pack), indexSize: packIndexSize, tensorCount: tensors.count)
            }
            if let (start, count, sum) = deferredData {
                // DATA on this thread, PACK's entries used at load on another: nothing has read either yet, and
                // neither is returned unless both pass. (Entries for larger batches are checked when first used.)
                let bytes = UnsafeRawBufferPointer(rebasing: whole[start..<start + count])
                var actual: UInt64 = 0
                var intact: [Bool] = []
                let entries = packed?.entries ?? []
                runSideBySide({
                    intact = entries.map { $0.use == 0 ? $0.verify() : false }
                }, {
                    actual = XXH64.hash(bytes, releasingPages: releaseDataPages)
                })
                guard actual == sum else {
                    throw BundleError(section: "DATA", message: "checksum mismatch (stored \(hex(sum)), computed \(hex(actual))): the section is damaged")
                }
                for i in intact.indices where intact[i] { packed?.entries[i].checked = true }
            }
            return Parsed(model: model, sections: sections, versionMinor: minor, decompressed: decompressed, packed: packed)
        } catch {
            decompressed?.deallocate()
            throw error
        }
    }

    func requireZeroPadding(_ whole: UnsafeRawBufferPointer, from: Int, to: Int, after: String) throws(BundleError) {
        guard from <= to else { return }
        for i in from..<to where whole[i] != 0 {
            throw BundleError(section: after, message: "padding byte at offset \(i) after the section is not zero (damaged file)")
        }
    }

    func parseMetadata(_ cIn: Cursor) throws(BundleError) -> [String: MetadataValue] {
        var c = cIn
        let count = try c.count(minimumBytesEach: 5)
        var out: [String: MetadataValue] = [:]
        var previous: String?
        for _ in 0..<count {
            let key = try c.string()
            if let previous, previous >= key {
                throw c.error("keys are not strictly sorted ('\(previous)' then '\(key)')")
            }
            previous = key
            let rawTag = try c.u8()
            guard let tag = MetadataTag(rawValue: rawTag) else { throw c.error("key '\(key)' has unknown type tag \(rawTag)") }
            switch tag {
            case .int: out[key] = .int(Int64(bitPattern: try c.u64()))
            case .float: out[key] = .float(Double(bitPattern: try c.u64()))
            case .string: out[key] = .string(try c.string())
            case .strings:
                let n = try c.count(minimumBytesEach: 4)
                var list: [String] = []
                list.reserveCapacity(n)
                for _ in 0..<n { list.append(try c.string()) }
                out[key] = .strings(list)
            case .floats:
                let n = try c.count(minimumBytesEach: 8)
                var list: [Double] = []
                list.reserveCapacity(n)
                for _ in 0..<n { list.append(Double(bitPattern: try c.u64())) }
                out[key] = .floats(list)
            }
        }
        try c.requireEnd()
        return out
    }

    func parseTensors(_ cIn: Cursor, data: UnsafeRawBufferPointer) throws(BundleError) -> [TensorRecord] {
        var c = cIn
        let count = try c.count(minimumBytesEach: 32)
        var out: [TensorRecord] = []
        out.reserveCapacity(count)
        var previousEnd = 0
        for index in 0..<count {
            let name = try c.string()
            let rawType = try c.u32()
            guard let type = ElementType(rawValue: rawType) else {
                throw c.error("tensor '\(name)' has unknown element type \(rawType)")
            }
            let rank = Int(try c.u32())
            guard rank <= BundleLayout.maximumRank else {
                throw c.error("tensor '\(name)' has \(rank) dims > \(BundleLayout.maximumRank)")
            }
            var shape: [Int] = []
            var elements: UInt64 = 1
            for _ in 0..<rank {
                let d = try c.u64()
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow, d <= UInt64(BundleLayout.maximumElements), product <= UInt64(BundleLayout.maximumElements) else {
                    throw c.error("tensor '\(name)' shape overflows (dim \(d))")
                }
                elements = product
                shape.append(Int(d))
            }
            let offset = try c.u64()
            let byteCount = try c.u64()
            let needed = UInt64(type.storedByteCount(shape: shape))
            guard byteCount == needed else {
                throw c.error("tensor '\(name)' has \(byteCount) bytes, shape \(shape) as \(type) needs \(needed)")
            }
            guard offset % UInt64(BundleLayout.alignment) == 0 else {
                throw c.error("tensor '\(name)' data offset \(offset) is not \(BundleLayout.alignment)-byte aligned")
            }
            guard offset <= UInt64(data.count), byteCount <= UInt64(data.count) - offset else {
                throw c.error("tensor '\(name)' data [\(offset), +\(byteCount)) runs past the DATA section (\(data.count) bytes)")
            }
            guard Int(offset) >= previousEnd else {
                throw c.error("tensor '\(name)' (index \(index)) overlaps the previous tensor's data")
            }
            previousEnd = Int(offset + byteCount)
            let bytes = UnsafeRawBufferPointer(rebasing: data[Int(offset)..<Int(offset + byteCount)])
            out.append(TensorRecord(name: name, elementType: type, shape: shape, payload: .mapped(bytes)))
        }
        try c.requireEnd()
        return out
    }

    func parseGraph(_ cIn: Cursor, metadata: [String: MetadataValue], tensors: [TensorRecord],
                    versionMinor: UInt16) throws(BundleError) -> FrozenModel {
        var c = cIn
        let valueCount = try c.count(minimumBytesEach: 4)
        var names: [String] = []
        names.reserveCapacity(valueCount)
        for _ in 0..<valueCount { names.append(try c.string()) }

        func ports(_ what: String) throws(BundleError) -> [PortRecord] {
            let n = try c.count(minimumBytesEach: 12)
            var list: [PortRecord] = []
            for _ in 0..<n {
                let name = try c.string()
                let value = Int(try c.u32())
                guard value < valueCount else { throw c.error("\(what) '\(name)' names value \(value) of \(valueCount)") }
                let rank = Int(try c.u32())
                guard rank <= BundleLayout.maximumRank else { throw c.error("\(what) '\(name)' has \(rank) dims > \(BundleLayout.maximumRank)") }
                var shape: [Int64] = []
                for _ in 0..<rank {
                    let d = Int64(bitPattern: try c.u64())
                    guard d == -1 || (1...Int64(BundleLayout.maximumCount)).contains(d) else {
                        throw c.error("\(what) '\(name)' has dim \(d)")
                    }
                    shape.append(d)
                }
                list.append(PortRecord(name: name, value: value, shape: shape))
            }
            return list
        }
        let inputs = try ports("input")
        let outputs = try ports("output")
        guard !inputs.isEmpty else { throw c.error("the graph has no inputs") }
        guard !outputs.isEmpty else { throw c.error("the graph has no outputs") }

        var defined = [Bool](repeating: false, count: valueCount)
        for p in inputs {
            guard !defined[p.value] else { throw c.error("input '\(p.name)' reuses value \(p.value)") }
            defined[p.value] = true
        }
        let opCount = try c.count(minimumBytesEach: 24)
        var ops: [OpRecord] = []
        ops.reserveCapacity(opCount)
        for index in 0..<opCount {
            let raw = try c.u32()
            let name = try c.string()
            guard let opcode = OpCode(rawValue: raw) else {
                throw c.error("op \(index) '\(name)' has unknown op code \(raw)")
            }
            let nIn = try c.count(minimumBytesEach: 4)
            var opInputs: [Int] = []
            for _ in 0..<nIn {
                let v = Int(try c.u32())
                guard v < valueCount, defined[v] else {
                    throw c.error("op '\(name)' reads value \(v), which is not written before it")
                }
                opInputs.append(v)
            }
            let out = Int(try c.u32())
            guard out < valueCount, !defined[out] else {
                throw c.error("op '\(name)' writes value \(out), which is out of range or already written")
            }
            defined[out] = true
            let nAttr = try c.count(minimumBytesEach: 8)
            var attrs: [Int64] = []
            for _ in 0..<nAttr { attrs.append(Int64(bitPattern: try c.u64())) }
            let nTensors = try c.count(minimumBytesEach: 4)
            var ids: [Int] = []
            for _ in 0..<nTensors {
                let t = Int(try c.u32())
                guard t < tensors.count else { throw c.error("op '\(name)' uses tensor \(t) of \(tensors.count)") }
                ids.append(t)
            }
            ops.append(OpRecord(opcode: opcode, name: name, inputs: opInputs, output: out, attributes: attrs, tensors: ids))
        }
        for p in outputs where !defined[p.value] {
            throw c.error("output '\(p.name)' is never written")
        }
        // 1.2: the values' element types follow the ops when one is not float32.
        var types: [ElementType]? = nil
        if versionMinor >= 2, !c.atEnd {
            var list: [ElementType] = []
            list.reserveCapacity(valueCount)
            for v in 0..<valueCount {
                let raw = try c.u32()
                guard let t = ElementType(rawValue: raw) else {
                    throw c.error("value \(v) '\(names[v])' has unknown element type \(raw)")
                }
                list.append(t)
            }
            types = list
        }
        try c.requireEnd()
        return FrozenModel(metadata: metadata, valueNames: names, inputs: inputs, outputs: outputs, ops: ops,
                           tensors: tensors, valueTypes: types)
    }
}

/// A bounds-checked little-endian reader over one section.
struct Cursor {
    let bytes: UnsafeRawBufferPointer
    let section: String
    var position: Int
    let end: Int

    init(_ bytes: UnsafeRawBufferPointer, section: String, start: Int, end: Int) {
        self.bytes = bytes
        self.section = section
        self.position = start
        self.end = end
    }

    func error(_ message: String) -> BundleError { BundleError(section: section, message: message) }

    mutating func take(_ n: Int) throws(BundleError) -> Int {
        guard n >= 0, n <= end - position else {
            throw error("needs \(n) bytes at offset \(position) but the section ends at \(end) (truncated or corrupt)")
        }
        defer { position += n }
        return position
    }

    mutating func u8() throws(BundleError) -> UInt8 { bytes[try take(1)] }
    mutating func u16() throws(BundleError) -> UInt16 {
        UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(2), as: UInt16.self))
    }
    mutating func u32() throws(BundleError) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(4), as: UInt32.self))
    }
    mutating func u64() throws(BundleError) -> UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self))
    }

    /// A count of items, each at least `minimumBytesEach` long, checked against the bytes left.
    mutating func count(minimumBytesEach: Int) throws(BundleError) -> Int {
        let at = position
        let n = Int(try u32())
        guard n <= BundleLayout.maximumCount, n * minimumBytesEach <= end - position else {
            throw error("count \(n) at offset \(at) exceeds what the section can hold")
        }
        return n
    }

    mutating func string() throws(BundleError) -> String {
        let at = position
        let n = Int(try u32())
        guard n <= BundleLayout.maximumStringBytes else { throw error("string of \(n) bytes at offset \(at) is too long") }
        let start = try take(n)
        guard let s = String(validating: UnsafeRawBufferPointer(rebasing: bytes[start..<start + n]), as: UTF8.self) else {
            throw error("string at offset \(at) is not valid UTF-8")
        }
        return s
    }

    var atEnd: Bool { position == end }

    func requireEnd() throws(BundleError) {
        guard position == end else { throw error("\(end - position) unexpected bytes at the end of the section") }
    }
}

func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 16 - s.count)) + s
}

/// Runs `first` on a new thread and `second` on this one, and returns when both have finished (`first` on this
/// thread too when no thread can be made).
func runSideBySide(_ first: () -> Void, _ second: () -> Void) {
    withoutActuallyEscaping(first) { first in
        let task = Unmanaged.passRetained(SideBySideTask(first))
        var thread = pthread_t()
        let made = pthread_create(&thread, nil, { raw in
            if let raw { Unmanaged<SideBySideTask>.fromOpaque(raw).takeUnretainedValue().body() }
            return nil
        }, task.toOpaque()) == 0
        second()
        if made { pthread_join(thread, nil) } else { first() }
        task.release()
    }
}

private final class SideBySideTask {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}
