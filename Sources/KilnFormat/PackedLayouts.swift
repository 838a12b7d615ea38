/// The optional PACK section (version 1.4): tensors again, in the layout one family of kernels reads them
/// (convolution weights cut into GEMM panels, Winograd-transformed), so that a runtime with those kernels maps
/// them instead of packing at load. The section only caches: the portable tensors in DATA are always there, and
/// a reader whose kernels do not match `key` ignores it. `formats/kiln-bundle.md` specifies the bytes.
///
/// The format does not know what a layout means: `key` names the instruction set and the kernels' layout
/// version (the runtime decides whether it is its own), `layout` is a code defined under that key.
public struct PackedLayouts: Sendable {
    /// Instruction set and layout version of the kernels that wrote the section, e.g. `x86_64-avx2-fma/conv-1`.
    public var key: String
    public var entries: [Entry]

    public struct Entry: @unchecked Sendable {
        /// Index of the source tensor in the tensor table.
        public var tensor: Int
        /// The layout's code under `key`.
        public var layout: UInt32
        /// The packed bytes (64-byte aligned, inside the bundle's mapping), not yet checked: see `verify`.
        public var bytes: UnsafeRawBufferPointer
        /// XXH64 of `bytes`, as written.
        public var checksum: UInt64
        /// When the writer's runtime used it: 0 at load, 1 for plans of larger batches (a hint for which entries
        /// to check up front).
        public var use: UInt32
        /// True when the reader checked the entry already (the `use 0` entries of a bundle read from a file).
        public var checked = false

        /// True when `bytes` still have the checksum they were written with. Each entry is checked before it is
        /// used (the section's own checksum covers only its index, so that entries nobody uses are not read).
        public func verify() -> Bool { checked || XXH64.hash(bytes) == checksum }
    }

    /// The entries of `tensor`, by layout code.
    public func entries(tensor: Int) -> [Entry] { entries.filter { $0.tensor == tensor } }
}

/// A PACK section to write: the key and each tensor's packed bytes.
public struct PackedLayoutsContent: Sendable {
    public var key: String
    public var entries: [(tensor: Int, layout: UInt32, use: UInt32, bytes: [UInt8])]

    public init(key: String, entries: [(tensor: Int, layout: UInt32, use: UInt32, bytes: [UInt8])]) {
        self.key = key
        self.entries = entries.sorted { ($0.tensor, $0.layout) < ($1.tensor, $1.layout) }
    }

    static let entrySize = 40

    /// The section's bytes and the size of its index: `u32 entry_count`, the key (string), zero padding to a
    /// multiple of 8, the entries (`u32 tensor, u32 layout, u64 offset, u64 size, u64 checksum, u32 use, u32 0`;
    /// offsets from the start of the section, multiples of 64) — the index — then the packed bytes, each 64-byte
    /// aligned, zero padding between.
    func encode() -> (bytes: [UInt8], indexSize: Int) {
        var head = ByteSink()
        head.u32(UInt32(entries.count))
        head.string(key)
        head.zeros(alignUp(head.storage.count, 8) - head.storage.count)
        var offset = alignUp(head.storage.count + entries.count * Self.entrySize)
        var offsets: [Int] = []
        for e in entries {
            offsets.append(offset)
            head.u32(UInt32(e.tensor))
            head.u32(e.layout)
            head.u64(UInt64(offset))
            head.u64(UInt64(e.bytes.count))
            head.u64(XXH64.hash(e.bytes))
            head.u32(e.use)
            head.u32(0)
            offset = alignUp(offset + e.bytes.count)
        }
        var out = [UInt8](repeating: 0, count: entries.last.map { offsets.last! + $0.bytes.count } ?? head.storage.count)
        out.replaceSubrange(0..<head.storage.count, with: head.storage)
        for (e, at) in zip(entries, offsets) {
            out.replaceSubrange(at..<at + e.bytes.count, with: e.bytes)
        }
        return (out, head.storage.count)
    }
}

extension PackedLayouts {
    /// Parses a PACK section (its checksum already checked): every entry inside the section, aligned, in order of
    /// (tensor, layout) without repeats or overlap, naming a tensor of the table; the padding zero.
    /// `indexSize` (from the section table) must be where the entries end.
    static func parse(_ cIn: Cursor, indexSize: Int, tensorCount: Int) throws(BundleError) -> PackedLayouts {
        var c = cIn
        let start = c.position
        let count = try c.count(minimumBytesEach: PackedLayoutsContent.entrySize)
        let key = try c.string()
        let headEnd = start + alignUp(c.position - start, 8)
        while c.position < headEnd {
            guard try c.u8() == 0 else { throw c.error("padding after the key is not zero") }
        }
        var entries: [Entry] = []
        var previousEnd = c.position + count * PackedLayoutsContent.entrySize
        guard previousEnd - start == indexSize else {
            throw c.error("the index is \(previousEnd - start) bytes, the section table says \(indexSize)")
        }
        var previous: (Int, UInt32)?
        let whole = c.bytes
        for i in 0..<count {
            let tensor = Int(try c.u32()), layout = try c.u32()
            let offset = try c.u64(), size = try c.u64(), checksum = try c.u64()
            let use = try c.u32()
            guard try c.u32() == 0 else { throw c.error("entry \(i): reserved field is not zero") }
            guard tensor < tensorCount else { throw c.error("entry \(i) names tensor \(tensor); the table has \(tensorCount)") }
            if let previous, previous >= (tensor, layout) {
                throw c.error("entry \(i) (tensor \(tensor), layout \(layout)) is out of order or repeated")
            }
            previous = (tensor, layout)
            let sectionSize = c.end - start
            guard offset % UInt64(BundleLayout.alignment) == 0, offset <= UInt64(sectionSize),
                  size <= UInt64(sectionSize) - offset, start + Int(offset) >= alignUp(previousEnd - start) + start else {
                throw c.error("entry \(i) (tensor \(tensor)): offset \(offset) + size \(size) is misaligned, overlaps the previous entry or runs past the section (\(sectionSize) bytes)")
            }
            let from = start + Int(offset)
            for p in previousEnd..<from where whole[p] != 0 {
                throw c.error("padding byte at section offset \(p - start) before entry \(i) is not zero")
            }
            entries.append(Entry(tensor: tensor, layout: layout,
                                 bytes: UnsafeRawBufferPointer(rebasing: whole[from..<from + Int(size)]),
                                 checksum: checksum, use: use))
            previousEnd = from + Int(size)
        }
        guard previousEnd == c.end || (count == 0 && c.position == c.end) else {
            throw c.error("\(c.end - previousEnd) unexpected bytes after the last entry")
        }
        return PackedLayouts(key: key, entries: entries)
    }
}
