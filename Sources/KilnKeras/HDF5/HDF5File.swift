import CHDF5
import Foundation

/// An HDF5 file opened read-only. Groups and datasets opened from it keep it open.
public final class HDF5File {
    /// The path on disk.
    public let path: String
    /// The name used in error messages (the path, or `model.keras::model.weights.h5`).
    public let displayName: String
    /// The root group `/`; its attributes are the file's attributes.
    public let root: HDF5Group

    /// Opens `path` read-only. A file that is missing, not HDF5 or truncated gives an error naming it.
    public init(path: String, displayName: String? = nil) throws(KerasImportError) {
        let name = displayName ?? path
        self.path = path
        self.displayName = name
        switch try KerasFileKind.detect(path: path, displayName: name) {
        case .hdf5: break
        case .zip:
            throw KerasImportError(file: name, "not an HDF5 file: it is a zip archive (a Keras 3 .keras file?)")
        case .unknown:
            throw KerasImportError(file: name, "not an HDF5 file (no HDF5 signature at offset 0, 512, 1024, …)")
        }
        let file = try HDF5Library.withLock { () throws(KerasImportError) -> HDF5Handle in
            let id = H5Fopen(path, HDF5Library.readOnly, HDF5Library.propertiesDefault)
            guard id >= 0 else {
                throw KerasImportError(file: name, "cannot open as HDF5, damaged or truncated?"
                    + HDF5Library.errorSuffix())
            }
            return HDF5Handle(id) { H5Fclose($0) }
        }
        root = try HDF5Group(file: FileContext(handle: file, displayName: name), at: "/", from: file.id,
                             absolutePath: "/")
    }

    /// The group at `path` (absolute, or relative to the root).
    public func group(at path: String) throws(KerasImportError) -> HDF5Group { try root.group(at: path) }
    /// The dataset at `path` (absolute, or relative to the root).
    public func dataset(at path: String) throws(KerasImportError) -> HDF5Dataset { try root.dataset(at: path) }
    /// Whether a group or dataset exists at `path`.
    public func exists(_ path: String) -> Bool { root.exists(path) }
    /// Whether `path` names a dataset.
    public func isDataset(_ path: String) -> Bool { root.isDataset(path) }
    /// Whether `path` names a group.
    public func isGroup(_ path: String) -> Bool { root.isGroup(path) }
    /// A string attribute of the root group; see `HDF5Group.stringAttribute(_:)`.
    public func stringAttribute(_ name: String) throws(KerasImportError) -> String? {
        try root.stringAttribute(name)
    }
    /// A string-list attribute of the root group; see `HDF5Group.stringArrayAttribute(_:)`.
    public func stringArrayAttribute(_ name: String) throws(KerasImportError) -> [String]? {
        try root.stringArrayAttribute(name)
    }
}

/// The open file shared by everything opened from it; closing waits for the last of them.
final class FileContext {
    let handle: HDF5Handle
    let displayName: String

    init(handle: HDF5Handle, displayName: String) {
        self.handle = handle
        self.displayName = displayName
    }
}

/// What kind of object a link in a group leads to.
enum HDF5ObjectKind {
    case group, dataset, other
}

extension FileContext {
    /// Opens the object at `path` below `location`, or nil if there is none (missing links, dangling links).
    /// Call inside `withLock`.
    func openObject(at path: HDF5Path, from location: hid_t) -> (HDF5Handle, HDF5ObjectKind)? {
        // H5Lexists fails rather than answering false when an intermediate group is missing: walk the path.
        var prefix: [String] = []
        for component in path.components {
            prefix.append(component)
            let partial = HDF5Path((path.isAbsolute ? "/" : "") + prefix.joined(separator: "/"))
            guard H5Lexists(location, partial.hdf5Name, HDF5Library.propertiesDefault) > 0 else { return nil }
        }
        let id = H5Oopen(location, path.hdf5Name, HDF5Library.propertiesDefault)
        guard id >= 0 else { return nil }
        let handle = HDF5Handle(id) { H5Oclose($0) }
        switch H5Iget_type(id) {
        case H5I_GROUP: return (handle, .group)
        case H5I_DATASET: return (handle, .dataset)
        default: return (handle, .other)
        }
    }
}

/// A group in an open HDF5 file: its links (children) and its attributes.
public final class HDF5Group {
    let file: FileContext
    let handle: HDF5Handle
    /// The absolute path in the file ("/" for the root).
    public let path: String
    /// The file's name for error messages.
    public var fileName: String { file.displayName }

    /// Opens the group at `relativePath` below `location`.
    init(file: FileContext, at relativePath: String, from location: hid_t, absolutePath: String)
        throws(KerasImportError)
    {
        self.file = file
        self.path = absolutePath
        let opened = HDF5Library.withLock { file.openObject(at: HDF5Path(relativePath), from: location) }
        guard let opened else {
            throw KerasImportError(file: file.displayName, "no group '\(absolutePath)'")
        }
        let (handle, kind) = opened
        guard kind == .group else {
            let what = kind == .dataset ? "dataset" : "named type"
            throw KerasImportError(file: file.displayName, "'\(absolutePath)' is a \(what), not a group")
        }
        self.handle = handle
    }

    /// The names of the links in this group (groups and datasets), sorted by name.
    public var childNames: [String] {
        get throws(KerasImportError) {
            try HDF5Library.withLock { () throws(KerasImportError) -> [String] in
                var info = H5G_info_t()
                guard H5Gget_info(handle.id, &info) >= 0 else {
                    throw KerasImportError(file: fileName, "cannot list group '\(path)'" + HDF5Library.errorSuffix())
                }
                guard info.nlinks <= 10_000_000 else {
                    throw KerasImportError(file: fileName, "group '\(path)' claims \(info.nlinks) children")
                }
                var names: [String] = []
                names.reserveCapacity(Int(info.nlinks))
                for index in 0..<info.nlinks {
                    let length = H5Lget_name_by_idx(handle.id, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0,
                                                    HDF5Library.propertiesDefault)
                    guard length >= 0 else {
                        throw KerasImportError(file: fileName, "cannot read the name of child \(index) of '\(path)'"
                            + HDF5Library.errorSuffix())
                    }
                    var buffer = [CChar](repeating: 0, count: length + 1)
                    _ = H5Lget_name_by_idx(handle.id, ".", H5_INDEX_NAME, H5_ITER_INC, index, &buffer, length + 1,
                                           HDF5Library.propertiesDefault)
                    names.append(String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self))
                }
                return names.sorted()
            }
        }
    }

    /// The group at `path`, relative to this group (or absolute when it starts with "/").
    public func group(at path: String) throws(KerasImportError) -> HDF5Group {
        try HDF5Group(file: file, at: path, from: handle.id, absolutePath: HDF5Path(path).resolved(from: self.path))
    }

    /// The dataset at `path`, relative to this group (or absolute when it starts with "/").
    public func dataset(at path: String) throws(KerasImportError) -> HDF5Dataset {
        try HDF5Dataset(file: file, at: path, from: handle.id, absolutePath: HDF5Path(path).resolved(from: self.path))
    }

    /// Whether a group or dataset exists at `path`, relative to this group.
    public func exists(_ path: String) -> Bool { kind(at: path) != nil }

    /// Whether `path`, relative to this group, names a dataset.
    public func isDataset(_ path: String) -> Bool { kind(at: path) == .dataset }

    /// Whether `path`, relative to this group, names a group.
    public func isGroup(_ path: String) -> Bool { kind(at: path) == .group }

    private func kind(at path: String) -> HDF5ObjectKind? {
        HDF5Library.withLock { file.openObject(at: HDF5Path(path), from: handle.id)?.1 }
    }
}
