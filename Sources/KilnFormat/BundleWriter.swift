#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Serialises a `FrozenModel` into the `.kiln` bytes.
///
/// Deterministic: the same model gives the same bytes (metadata sorted by key, no timestamps, zero padding).
/// `write(to:)` is atomic: a temporary file in the destination's folder, fsync, then rename.
public enum BundleWriter {
    /// The complete file image. With `compression`, the DATA section is shuffled and compressed.
    /// With `packed`, a PACK section follows DATA (version 1.4).
    public static func serialize(_ model: FrozenModel, compression: Compression? = nil,
                                 packed: PackedLayoutsContent? = nil) throws(BundleError) -> [UInt8] {
        try validateForWriting(model)
        var sections: [(kind: SectionKind, bytes: [UInt8], flags: UInt32, r0: UInt64, r1: UInt64)] = []
        sections.append((.metadata, encodeMetadata(model.metadata), 0, 0, 0))
        sections.append((.graph, encodeGraph(model), 0, 0, 0))
        let (table, data, layout) = encodeTensors(model.tensors)
        sections.append((.tensors, table, 0, 0, 0))
        if case .zstd(let level)? = compression {
            var shuffled = data
            shuffled.withUnsafeMutableBytes { transformTensors($0, tensors: layout, shufflePlanes) }
            sections.append((.data, try zstdCompress(shuffled, level: level), sectionFlagShuffledZstd, UInt64(data.count), XXH64.hash(data)))
        } else {
            sections.append((.data, data, 0, 0, 0))
        }
        if let packed {
            guard packed.entries.allSatisfy({ $0.tensor < model.tensors.count }) else {
                throw BundleError(section: "PACK", message: "an entry names a tensor past the table's \(model.tensors.count)")
            }
            let (bytes, indexSize) = packed.encode()
            sections.append((.pack, bytes, sectionFlagChecksumPerEntry, UInt64(indexSize), 0))
        }
        // The lowest minor version that holds what the bundle uses, so that plain bundles stay readable by older
        // readers: 1.3 for ops 13-17, grouped convolutions and activation functions 2-8, 1.2 for the Unary op and the 5-word activations,
        // 1.1 for compact tensors and compression.
        let usesMinor1 = compression != nil || model.tensors.contains { $0.elementType != .float32 }
        let usesMinor2 = model.ops.contains(where: \.needsVersion1_2) || model.hasValueTypes
        let usesMinor3 = model.ops.contains(where: \.needsVersion1_3)
        let minor: UInt16 = packed != nil ? 4 : usesMinor3 ? 3 : usesMinor2 ? 2 : usesMinor1 ? 1 : 0

        let tableOffset = BundleLayout.headerSize
        let tableBytes = sections.count * BundleLayout.sectionEntrySize
        var offset = alignUp(tableOffset + tableBytes)
        var entries = ByteSink()
        var placements: [Int] = []
        for section in sections {
            placements.append(offset)
            entries.u32(section.kind.rawValue)
            entries.u32(section.flags)
            entries.u64(UInt64(offset))
            entries.u64(UInt64(section.bytes.count))
            // PACK: the section checksum covers its index; each entry has its own (checked when used).
            let hashed = section.flags == sectionFlagChecksumPerEntry ? Array(section.bytes[0..<Int(section.r0)]) : section.bytes
            entries.u64(XXH64.hash(hashed))
            entries.u64(section.r0)
            entries.u64(section.r1)
            offset = alignUp(offset + section.bytes.count)
        }
        let fileSize = offset

        var header = ByteSink()
        header.bytes(BundleLayout.magic)
        header.u16(BundleLayout.versionMajor)
        header.u16(minor)
        header.u32(UInt32(BundleLayout.headerSize))
        header.u32(UInt32(sections.count))
        header.u32(0)
        header.u64(UInt64(fileSize))
        header.u64(UInt64(tableOffset))
        header.u64(XXH64.hash(header.storage + entries.storage))
        header.zeros(BundleLayout.headerSize - header.storage.count)

        var file = [UInt8](repeating: 0, count: fileSize)
        file.replaceSubrange(0..<header.storage.count, with: header.storage)
        file.replaceSubrange(tableOffset..<tableOffset + entries.storage.count, with: entries.storage)
        for (section, at) in zip(sections, placements) {
            file.replaceSubrange(at..<at + section.bytes.count, with: section.bytes)
        }
        return file
    }

    /// Writes the bundle atomically: the destination holds the old file or the complete new one, never a
    /// partial one.
    public static func write(_ model: FrozenModel, to path: String, compression: Compression? = nil,
                             packed: PackedLayoutsContent? = nil) throws(BundleError) {
        let bytes = try serialize(model, compression: compression, packed: packed)
        try writeAtomically(bytes, to: path)
    }

    /// Checks, before any long work, that `writeAtomically` will be able to write `path`: its folder exists, is a
    /// folder, and takes a new file (one is created there and removed again, as the writer's temporary file
    /// will be), and `path` is not a folder. The error names `path` and what is wrong, in one line.
    public static func checkWritable(_ path: String) throws(BundleError) {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let dir = folder.isEmpty ? "/" : folder
        func fail(_ message: String) -> BundleError { BundleError(file: path, message: message, kind: .badInput) }
        guard !base.isEmpty, base != ".", base != ".." else { throw fail("names a folder, not a file") }
        var st = stat()
        guard stat(dir, &st) == 0 else {
            if errno == ENOENT { throw fail("the folder '\(folder)' does not exist") }
            throw fail("the folder '\(folder)' cannot be reached: \(errnoText())")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw fail("'\(folder)' is not a folder") }
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR { throw fail("is a folder, not a file") }
        var template = Array("\(dir)/.\(base).check-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw fail("cannot create a file in the folder '\(folder)': \(errnoText())") }
        close(fd)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
    }

    /// Writes `bytes` to `path` through a temporary file in the same folder and a rename. Where the file system
    /// allows it the temporary file is unnamed (O_TMPFILE) until it is complete, so a process killed while
    /// writing leaves nothing behind; it is then linked under `.NAME.tmp-XXXXXX` and renamed over `path`.
    /// Elsewhere a named `mkstemp` file is written instead (a kill can leave it behind, never a partial `path`).
    public static func writeAtomically(_ bytes: [UInt8], to path: String) throws(BundleError) {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let dir = folder.isEmpty ? "/" : folder
        var tempPath: String? = nil
        #if os(Linux)
        var fd = open(dir, unnamedTemporary | O_WRONLY | O_CLOEXEC, 0o644)
        #else
        var fd: Int32 = -1
        #endif
        if fd < 0 {
            var template = Array("\(dir)/.\(base).tmp-XXXXXX".utf8CString)
            fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard fd >= 0 else {
                throw BundleError(file: path, message: "cannot create a temporary file in '\(folder)': \(errnoText())", kind: .badInput)
            }
            tempPath = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        var ok = false
        defer {
            if !ok, let tempPath { unlink(tempPath) }
        }
        var written = 0
        let writeFailed: Bool = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return true
                }
                written += n
            }
            return false
        }
        if writeFailed {
            let reason = errnoText()
            close(fd)
            throw BundleError(file: path, message: "write failed after \(written) bytes: \(reason)", kind: .badInput)
        }
        fchmod(fd, 0o644)
        if fsync(fd) != 0 {
            let reason = errnoText()
            close(fd)
            throw BundleError(file: path, message: "fsync failed: \(reason)", kind: .badInput)
        }
        if tempPath == nil {
            // Give the finished file a name next to the destination (a fresh one: linkat never overwrites).
            for _ in 0..<100 {
                let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                let suffix = String((0..<6).map { _ in letters[Int.random(in: 0..<letters.count)] })
                let candidate = "\(dir)/.\(base).tmp-\(suffix)"
                if linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, candidate, AT_SYMLINK_FOLLOW) == 0 {
                    tempPath = candidate
                    break
                }
                if errno != EEXIST { break }
            }
            guard tempPath != nil else {
                let reason = errnoText()
                close(fd)
                throw BundleError(file: path, message: "cannot name the finished temporary file in '\(folder)': \(reason)", kind: .badInput)
            }
        }
        close(fd)
        guard rename(tempPath!, path) == 0 else {
            throw BundleError(file: path, message: "cannot move the finished file into place: \(errnoText())", kind: .badInput)
        }
        ok = true
    }

    #if os(Linux)
    /// Linux O_TMPFILE (`__O_TMPFILE | O_DIRECTORY`; the C macro does not import).
    private static let unnamedTemporary: Int32 = 0o20000000 | O_DIRECTORY
    #endif

    // MARK: - Sections

    static func encodeMetadata(_ metadata: [String: MetadataValue]) -> [UInt8] {
        var s = ByteSink()
        s.u32(UInt32(metadata.count))
        for key in metadata.keys.sorted() {
            s.string(key)
            switch metadata[key]! {
            case .int(let v):
                s.u8(MetadataTag.int.rawValue); s.u64(UInt64(bitPattern: v))
            case .float(let v):
                s.u8(MetadataTag.float.rawValue); s.u64(v.bitPattern)
            case .string(let v):
                s.u8(MetadataTag.string.rawValue); s.string(v)
            case .strings(let v):
                s.u8(MetadataTag.strings.rawValue); s.u32(UInt32(v.count)); v.forEach { s.string($0) }
            case .floats(let v):
                s.u8(MetadataTag.floats.rawValue); s.u32(UInt32(v.count)); v.forEach { s.u64($0.bitPattern) }
            }
        }
        return s.storage
    }

    static func encodeGraph(_ model: FrozenModel) -> [UInt8] {
        var s = ByteSink()
        s.u32(UInt32(model.valueNames.count))
        model.valueNames.forEach { s.string($0) }
        for ports in [model.inputs, model.outputs] {
            s.u32(UInt32(ports.count))
            for port in ports {
                s.string(port.name)
                s.u32(UInt32(port.value))
                s.u32(UInt32(port.shape.count))
                port.shape.forEach { s.u64(UInt64(bitPattern: $0)) }
            }
        }
        s.u32(UInt32(model.ops.count))
        for op in model.ops {
            s.u32(op.opcode.rawValue)
            s.string(op.name)
            s.u32(UInt32(op.inputs.count))
            op.inputs.forEach { s.u32(UInt32($0)) }
            s.u32(UInt32(op.output))
            s.u32(UInt32(op.attributes.count))
            op.attributes.forEach { s.u64(UInt64(bitPattern: $0)) }
            s.u32(UInt32(op.tensors.count))
            op.tensors.forEach { s.u32(UInt32($0)) }
        }
        // 1.2: the values' element types, only when one is not float32 (so that other bundles stay as they were).
        if model.hasValueTypes { model.valueTypes.forEach { s.u32($0.rawValue) } }
        return s.storage
    }

    /// The tensor table, the DATA bytes, and each tensor's (offset, size, plane width) inside DATA.
    static func encodeTensors(_ tensors: [TensorRecord]) -> (table: [UInt8], data: [UInt8], layout: [(offset: Int, count: Int, width: Int)]) {
        var table = ByteSink()
        var data = ByteSink()
        var layout: [(offset: Int, count: Int, width: Int)] = []
        table.u32(UInt32(tensors.count))
        for tensor in tensors {
            data.zeros(alignUp(data.storage.count) - data.storage.count)
            table.string(tensor.name)
            table.u32(tensor.elementType.rawValue)
            table.u32(UInt32(tensor.shape.count))
            tensor.shape.forEach { table.u64(UInt64($0)) }
            table.u64(UInt64(data.storage.count))
            table.u64(UInt64(tensor.byteCount))
            layout.append((data.storage.count, tensor.byteCount, tensor.elementType.planeWidth))
            tensor.payload.withStoredBytes { raw in
                #if _endian(little)
                data.storage.append(contentsOf: raw)
                #else
                #error("big-endian hosts need byte swapping here")
                #endif
            }
        }
        return (table.storage, data.storage, layout)
    }

    /// Structural checks the writer can make without the runtime: ids in range, one writer per value,
    /// operands defined before use, payload sizes matching shapes.
    static func validateForWriting(_ model: FrozenModel) throws(BundleError) {
        let values = model.valueNames.count
        if let v = model.otherValueTypes.keys.first(where: { $0 < 0 || $0 >= values }) {
            throw BundleError(message: "a value type is given for value \(v) of \(values)", kind: .internal)
        }
        var defined = [Bool](repeating: false, count: values)
        for port in model.inputs {
            guard port.value < values else { throw BundleError(message: "input '\(port.name)' names value \(port.value) of \(values)", kind: .internal) }
            defined[port.value] = true
        }
        for op in model.ops {
            for v in op.inputs where v >= values || !defined[v] {
                throw BundleError(message: "op '\(op.name)' reads value \(v) before it is written", kind: .internal)
            }
            guard op.output < values, !defined[op.output] else {
                throw BundleError(message: "op '\(op.name)' writes value \(op.output), which is out of range or already written", kind: .internal)
            }
            defined[op.output] = true
            for t in op.tensors where t >= model.tensors.count {
                throw BundleError(message: "op '\(op.name)' uses tensor \(t) of \(model.tensors.count)", kind: .internal)
            }
        }
        for port in model.outputs where port.value >= values || !defined[port.value] {
            throw BundleError(message: "output '\(port.name)' is never written", kind: .internal)
        }
        for t in model.tensors {
            let count = t.payload.withStoredBytes { $0.count }
            guard count == t.byteCount else {
                throw BundleError(message: "tensor '\(t.name)' has \(count) bytes, its shape \(t.shape) as \(t.elementType) needs \(t.byteCount)", kind: .internal)
            }
        }
    }
}

/// A growable little-endian byte buffer.
struct ByteSink {
    var storage: [UInt8] = []

    mutating func u8(_ v: UInt8) { storage.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { storage.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { storage.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { storage.append(contentsOf: $0) } }
    mutating func bytes(_ b: [UInt8]) { storage.append(contentsOf: b) }
    mutating func zeros(_ n: Int) { if n > 0 { storage.append(contentsOf: repeatElement(0, count: n)) } }
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u32(UInt32(utf8.count))
        storage.append(contentsOf: utf8)
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }
