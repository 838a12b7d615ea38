import Foundation

/// What a model file is, by its magic bytes (never by its extension).
public enum KerasFileKind: Sendable, Equatable {
    /// HDF5: `\x89HDF\r\n\x1a\n` at offset 0, 512, 1024, 2048, … (a user block may precede it).
    case hdf5
    /// A zip archive (`PK\x03\x04`, or `PK\x05\x06` when empty): a Keras 3 `.keras` file.
    case zip
    case unknown

    static let hdf5Signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Reads the magic bytes of the file at `path`. Errors (missing file, a directory) name `displayName`.
    public static func detect(path: String, displayName: String? = nil) throws(KerasImportError) -> KerasFileKind {
        let name = displayName ?? path
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else {
            throw KerasImportError(file: name, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw KerasImportError(file: name, "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw KerasImportError(file: name, "not a regular file")
        }
        let size = Int(status.st_size)

        func bytes(at offset: Int, count: Int) -> [UInt8] {
            guard offset + count <= size else { return [] }
            var buffer = [UInt8](repeating: 0, count: count)
            let read = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, off_t(offset)) }
            return read == count ? buffer : []
        }

        let head = bytes(at: 0, count: 4)
        if head == [0x50, 0x4B, 0x03, 0x04] || head == [0x50, 0x4B, 0x05, 0x06] { return .zip }
        var offset = 0
        while offset + hdf5Signature.count <= size {
            if bytes(at: offset, count: hdf5Signature.count) == hdf5Signature { return .hdf5 }
            offset = offset == 0 ? 512 : offset * 2
        }
        return .unknown
    }
}
