/// Byte-level constants of the `.kiln` bundle, version 1. `formats/kiln-bundle.md` is the specification;
/// keep the two in step.

public enum BundleLayout {
    /// "KILN\r\n\u{1A}\n": the CR-LF and the ^Z catch files damaged by text-mode transfers (as PNG does).
    public static let magic: [UInt8] = [0x4B, 0x49, 0x4C, 0x4E, 0x0D, 0x0A, 0x1A, 0x0A]
    public static let versionMajor: UInt16 = 1
    public static let versionMinor: UInt16 = 0
    public static let headerSize = 64
    public static let sectionEntrySize = 48
    /// Every section and every tensor inside DATA starts on this boundary (a cache line, and enough for
    /// any SIMD load), so the runtime can use mapped weights in place.
    public static let alignment = 64

    /// Offsets inside the 64-byte header.
    enum HeaderField {
        static let magic = 0            // [8]u8
        static let versionMajor = 8     // u16
        static let versionMinor = 10    // u16
        static let headerSize = 12      // u32
        static let sectionCount = 16    // u32
        static let flags = 20           // u32
        static let fileSize = 24        // u64
        static let sectionTable = 32    // u64
        static let checksum = 40        // u64: XXH64 of header bytes [0, 40) ++ the section table
        // [48, 64): zero
    }

    /// Limits checked before anything is allocated.
    public static let maximumSections = 16
    public static let maximumRank = 8
    public static let maximumStringBytes = 1 << 20
    public static let maximumCount = 1 << 24
    public static let maximumElements = 1 << 34
}

/// The kind of a section, stored as four ASCII bytes.
public enum SectionKind: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// Typed, namespaced key/value metadata.
    case metadata = 0x4154_454D   // "META"
    /// Values, ports and the op table.
    case graph = 0x4850_5247      // "GRPH"
    /// Tensor table: name, type, shape, offset and size inside DATA.
    case tensors = 0x5253_4E54    // "TNSR"
    /// Tensor bytes, each tensor 64-byte aligned.
    case data = 0x4154_4144       // "DATA"
    /// Optional (version 1.4): tensors in the layout one family of kernels reads (`PackedLayouts`).
    case pack = 0x4B43_4150       // "PACK"

    public var description: String {
        withUnsafeBytes(of: rawValue.littleEndian) { String(decoding: $0, as: UTF8.self) }
    }

    /// The order in which the writer lays sections out, and the reader expects them.
    /// PACK, the only optional one, comes last when present.
    public static let order: [SectionKind] = [.metadata, .graph, .tensors, .data, .pack]
    /// The sections every bundle has.
    public static let requiredCount = 4
}

/// Metadata value type tags.
enum MetadataTag: UInt8 {
    case int = 1, float = 2, string = 3, strings = 4, floats = 5
}

@inline(__always) func alignUp(_ value: Int, _ alignment: Int = BundleLayout.alignment) -> Int {
    (value + alignment - 1) / alignment * alignment
}
