@preconcurrency import CHDF5
import Foundation

/// Writes small HDF5 files (groups, float32 datasets, string and empty attributes) the way h5py does for
/// Keras: variable-length UTF-8 strings, contiguous little-endian float32 datasets. Used to save trained
/// heads as Keras legacy `.h5` files. The file is written to a temporary name beside `path` and renamed
/// into place when it is complete, so `path` holds the old file or the new one, never half of one.
public final class HDF5Writer {
    public let path: String
    private let temporaryPath: String
    private var file: hid_t = -1
    private var finished = false

    public struct WriteError: Error, CustomStringConvertible, Sendable {
        public var file: String
        public var message: String
        public var description: String { "\(file): \(message)" }
    }

    public init(path: String) throws(WriteError) {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent
        temporaryPath = (dir.isEmpty ? "" : dir + "/") + ".\(base).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let tmp = temporaryPath
        file = HDF5Library.withLock { H5Fcreate(tmp, UInt32(0x0002) /* H5F_ACC_TRUNC */, HDF5Library.propertiesDefault, HDF5Library.propertiesDefault) }
        if file < 0 { throw WriteError(file: path, message: "cannot create the file" + HDF5Library.withLock { HDF5Library.errorSuffix() }) }
    }

    deinit {
        if file >= 0 {
            let f = file
            HDF5Library.withLock { _ = H5Fclose(f) }
        }
        if !finished { unlink(temporaryPath) }
    }

    private func fail(_ message: String) -> WriteError {
        WriteError(file: path, message: message + HDF5Library.errorSuffix())
    }

    /// Creates the group at `groupPath` (absolute, parents must exist).
    public func createGroup(_ groupPath: String) throws(WriteError) {
        try HDF5Library.withLock { () throws(WriteError) in
            let g = H5Gcreate2(file, groupPath, HDF5Library.propertiesDefault, HDF5Library.propertiesDefault, HDF5Library.propertiesDefault)
            guard g >= 0 else { throw fail("cannot create group \(groupPath)") }
            _ = H5Gclose(g)
        }
    }

    /// Writes a float32 dataset (C order).
    public func writeDataset(_ datasetPath: String, shape: [Int], values: [Float]) throws(WriteError) {
        precondition(shape.reduce(1, *) == values.count)
        try HDF5Library.withLock { () throws(WriteError) in
            let dims = shape.map { hsize_t($0) }
            let space = H5Screate_simple(Int32(dims.count), dims, nil)
            guard space >= 0 else { throw fail("cannot make the dataspace of \(datasetPath)") }
            defer { _ = H5Sclose(space) }
            let ds = H5Dcreate2(file, datasetPath, H5T_IEEE_F32LE_g, space, HDF5Library.propertiesDefault, HDF5Library.propertiesDefault, HDF5Library.propertiesDefault)
            guard ds >= 0 else { throw fail("cannot create dataset \(datasetPath)") }
            defer { _ = H5Dclose(ds) }
            let status = values.withUnsafeBufferPointer { H5Dwrite(ds, H5T_NATIVE_FLOAT_g, HDF5Library.selectAll, HDF5Library.selectAll, HDF5Library.propertiesDefault, $0.baseAddress) }
            guard status >= 0 else { throw fail("cannot write dataset \(datasetPath)") }
        }
    }

    /// A scalar variable-length UTF-8 string attribute (h5py's `attrs[name] = "text"`).
    public func writeStringAttribute(on objectPath: String, name: String, value: String) throws(WriteError) {
        try writeStrings(on: objectPath, name: name, values: [value], scalar: true)
    }

    /// A 1-D variable-length UTF-8 string array attribute (h5py's `attrs[name] = [b"a", b"b"]` as Keras writes it).
    public func writeStringArrayAttribute(on objectPath: String, name: String, values: [String]) throws(WriteError) {
        if values.isEmpty {
            try writeEmptyAttribute(on: objectPath, name: name)
        } else {
            try writeStrings(on: objectPath, name: name, values: values, scalar: false)
        }
    }

    /// An empty 1-D float64 attribute: what h5py writes for an empty Python list (Keras' `weight_names` of a
    /// layer without weights).
    public func writeEmptyAttribute(on objectPath: String, name: String) throws(WriteError) {
        try HDF5Library.withLock { () throws(WriteError) in
            let obj = H5Oopen(file, objectPath, HDF5Library.propertiesDefault)
            guard obj >= 0 else { throw fail("cannot open \(objectPath)") }
            defer { _ = H5Oclose(obj) }
            let dims: [hsize_t] = [0]
            let space = H5Screate_simple(1, dims, nil)
            guard space >= 0 else { throw fail("cannot make an empty dataspace") }
            defer { _ = H5Sclose(space) }
            let attr = H5Acreate2(obj, name, H5T_IEEE_F64LE_g, space, HDF5Library.propertiesDefault, HDF5Library.propertiesDefault)
            guard attr >= 0 else { throw fail("cannot create attribute \(name) on \(objectPath)") }
            _ = H5Aclose(attr)
        }
    }

    private func writeStrings(on objectPath: String, name: String, values: [String], scalar: Bool) throws(WriteError) {
        try HDF5Library.withLock { () throws(WriteError) in
            let obj = H5Oopen(file, objectPath, HDF5Library.propertiesDefault)
            guard obj >= 0 else { throw fail("cannot open \(objectPath)") }
            defer { _ = H5Oclose(obj) }
            let type = H5Tcopy(H5T_C_S1_g)
            defer { _ = H5Tclose(type) }
            _ = H5Tset_size(type, HDF5Library.variableSize)
            _ = H5Tset_cset(type, H5T_CSET_UTF8)
            let space: hid_t
            if scalar {
                space = H5Screate(H5S_SCALAR)
            } else {
                let dims: [hsize_t] = [hsize_t(values.count)]
                space = H5Screate_simple(1, dims, nil)
            }
            guard space >= 0 else { throw fail("cannot make the dataspace of attribute \(name)") }
            defer { _ = H5Sclose(space) }
            let attr = H5Acreate2(obj, name, type, space, HDF5Library.propertiesDefault, HDF5Library.propertiesDefault)
            guard attr >= 0 else { throw fail("cannot create attribute \(name) on \(objectPath)") }
            defer { _ = H5Aclose(attr) }
            let cStrings: [UnsafeMutablePointer<CChar>?] = values.map { strdup($0) }
            defer { cStrings.forEach { free($0) } }
            let status = cStrings.withUnsafeBufferPointer { H5Awrite(attr, type, $0.baseAddress) }
            guard status >= 0 else { throw fail("cannot write attribute \(name) on \(objectPath)") }
        }
    }

    /// Closes the file and renames it into place.
    public func finish() throws(WriteError) {
        let f = file
        file = -1
        let status = HDF5Library.withLock { H5Fclose(f) }
        guard status >= 0 else { throw WriteError(file: path, message: "cannot close the file") }
        guard rename(temporaryPath, path) == 0 else {
            throw WriteError(file: path, message: "cannot rename the temporary file into place: \(String(cString: strerror(errno)))")
        }
        finished = true
    }
}
