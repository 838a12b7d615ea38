import Foundation
import ZIPFoundation

/// A Keras 3 `.keras` file: a zip holding `config.json`, `metadata.json` and `model.weights.h5`.
public struct KerasArchive: Sendable {
    /// The archive's path.
    public let path: String
    /// `config.json`: the model's architecture.
    public let configJSON: Data
    /// `metadata.json` (`keras_version`, `date_saved`), when present.
    public let metadataJSON: Data?

    static let configEntry = "config.json"
    static let metadataEntry = "metadata.json"
    static let weightsEntry = "model.weights.h5"
    /// Limit on the JSON entries read into memory, checked before extracting.
    static let maxJSONBytes: UInt64 = 256 << 20

    /// Opens the archive at `path` and reads its JSON entries; checks the weights entry is there.
    public static func open(path: String) throws(KerasImportError) -> KerasArchive {
        let archive = try openZip(path)
        guard let config = archive[configEntry] else {
            throw KerasImportError(file: path, "not a Keras 3 archive: no '\(configEntry)' in the zip")
        }
        guard archive[weightsEntry] != nil else {
            throw KerasImportError(file: path, "not a Keras 3 archive: no '\(weightsEntry)' in the zip")
        }
        let configJSON = try read(config, from: archive, path: path)
        let metadataJSON = try archive[metadataEntry].map { entry throws(KerasImportError) in
            try read(entry, from: archive, path: path)
        }
        return KerasArchive(path: path, configJSON: configJSON, metadataJSON: metadataJSON)
    }

    /// Extracts `model.weights.h5` to a private temporary directory, opens it, runs `body`, and removes
    /// the temporary file afterwards, also when extracting, opening or `body` fails.
    public func withWeightsFile<R>(_ body: (HDF5File) throws -> R) throws -> R {
        let displayName = "\(path)::\(Self.weightsEntry)"
        let archive = try Self.openZip(path)
        guard let entry = archive[Self.weightsEntry], entry.type == .file else {
            throw KerasImportError(file: path, "not a Keras 3 archive: no '\(Self.weightsEntry)' in the zip")
        }
        let directory = try Self.makePrivateDirectory(for: path)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let weightsPath = directory + "/" + Self.weightsEntry
        do {
            _ = try archive.extract(entry, to: URL(fileURLWithPath: weightsPath))
        } catch {
            throw KerasImportError(file: displayName, "cannot extract from the zip: \(error)")
        }
        let file = try HDF5File(path: weightsPath, displayName: displayName)
        return try body(file)
    }

    // MARK: Helpers

    private static func openZip(_ path: String) throws(KerasImportError) -> Archive {
        switch try KerasFileKind.detect(path: path) {
        case .zip: break
        case .hdf5: throw KerasImportError(file: path, "not a .keras archive (a zip): it is an HDF5 file")
        case .unknown: throw KerasImportError(file: path, "not a .keras archive: not a zip file")
        }
        do {
            // ZIPFoundation 0.9.20: the throwing init (the failable one is deprecated).
            return try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
        } catch {
            throw KerasImportError(file: path, "cannot read the zip archive: \(error)")
        }
    }

    private static func read(_ entry: Entry, from archive: Archive, path: String) throws(KerasImportError) -> Data {
        guard entry.type == .file else {
            throw KerasImportError(file: path, "zip entry '\(entry.path)' is not a file")
        }
        guard entry.uncompressedSize <= maxJSONBytes else {
            throw KerasImportError(file: path, "zip entry '\(entry.path)' is \(entry.uncompressedSize) bytes, "
                + "more than the limit \(maxJSONBytes)")
        }
        var data = Data()
        do {
            _ = try archive.extract(entry) { data.append($0) }
        } catch {
            throw KerasImportError(file: path, "cannot extract '\(entry.path)' from the zip: \(error)")
        }
        return data
    }

    /// A new directory only we can read (mkdtemp: mode 0700, unique name).
    private static func makePrivateDirectory(for path: String) throws(KerasImportError) -> String {
        var template = Array((FileManager.default.temporaryDirectory.path + "/kiln-keras-XXXXXX").utf8CString)
        guard let created = template.withUnsafeMutableBufferPointer({ $0.baseAddress.flatMap { mkdtemp($0) } }) else {
            let reason = String(cString: strerror(errno))
            throw KerasImportError(file: path, "cannot create a temporary directory: \(reason)")
        }
        return String(cString: created)
    }
}
