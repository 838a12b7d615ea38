import CHDF5
import Foundation

// Attributes: strings as Keras and h5py write them, and plain numbers.
//
// h5py stores a Python `str` as a variable-length UTF-8 string and `bytes` / numpy `S` arrays as
// fixed-length, null-padded ASCII strings; other writers use space padding or null termination. Keras
// splits attributes too large for an object header into `name0`, `name1`, … (`save_attributes_to_hdf5_group`),
// and reads them back by concatenating until the first missing number (`load_attributes_from_hdf5_group`).

extension HDF5Group {
    /// Whether the attribute `name` exists (the split form `name0`, … is not looked at).
    public func hasAttribute(_ name: String) -> Bool {
        HDF5Library.withLock { H5Aexists(handle.id, name) > 0 }
    }

    /// A string attribute: a scalar string, a one-element string array, or the Keras split form
    /// `name0`, `name1`, … (whose strings are concatenated). Nil when absent.
    public func stringAttribute(_ name: String) throws(KerasImportError) -> String? {
        try HDF5Library.withLock { () throws(KerasImportError) -> String? in
            if let strings = try readStrings(name) {
                guard strings.count <= 1 else {
                    throw attributeError(name, "holds \(strings.count) strings, expected one")
                }
                return strings.first ?? ""
            }
            guard let pieces = try readSplitStrings(name) else { return nil }
            return pieces.joined()
        }
    }

    /// A list-of-strings attribute: scalar (a list of one) or 1-D, or the Keras split form `name0`,
    /// `name1`, … concatenated in numeric order. Nil when absent.
    public func stringArrayAttribute(_ name: String) throws(KerasImportError) -> [String]? {
        try HDF5Library.withLock { () throws(KerasImportError) -> [String]? in
            if let strings = try readStrings(name) { return strings }
            return try readSplitStrings(name)
        }
    }

    /// A numeric (integer or float) attribute, scalar or array, converted to Double. Nil when absent.
    public func numberArrayAttribute(_ name: String) throws(KerasImportError) -> [Double]? {
        try HDF5Library.withLock { () throws(KerasImportError) -> [Double]? in
            guard let attribute = try openAttribute(name) else { return nil }
            let type = HDF5Handle(H5Aget_type(attribute.id)) { H5Tclose($0) }
            guard type.id >= 0 else { throw attributeError(name, "has an unreadable type" + HDF5Library.errorSuffix()) }
            let typeClass = H5Tget_class(type.id)
            guard typeClass == H5T_INTEGER || typeClass == H5T_FLOAT else {
                throw attributeError(name, "is \(HDF5ElementClass(type: type.id)), not a number")
            }
            let count = try elementCount(of: attribute, name)
            var values = [Double](repeating: 0, count: count)
            if count > 0 {
                let status = values.withUnsafeMutableBytes {
                    H5Aread(attribute.id, HDF5Library.nativeDouble, $0.baseAddress)
                }
                guard status >= 0 else { throw attributeError(name, "cannot be read" + HDF5Library.errorSuffix()) }
            }
            return values
        }
    }

    // MARK: Reading (inside withLock)

    /// Limit on the number of strings or numbers in one attribute, checked before allocating.
    static let maxAttributeElements = 1 << 24
    /// Limit on the bytes of one fixed-length string attribute, checked before allocating.
    static let maxAttributeBytes = 1 << 30

    private func attributeError(_ name: String, _ message: String) -> KerasImportError {
        KerasImportError(file: fileName, "attribute '\(name)' of '\(path)' \(message)")
    }

    private func openAttribute(_ name: String) throws(KerasImportError) -> HDF5Handle? {
        let exists = H5Aexists(handle.id, name)
        guard exists >= 0 else { throw attributeError(name, "cannot be looked up" + HDF5Library.errorSuffix()) }
        guard exists > 0 else { return nil }
        let id = H5Aopen(handle.id, name, HDF5Library.propertiesDefault)
        guard id >= 0 else { throw attributeError(name, "cannot be opened" + HDF5Library.errorSuffix()) }
        return HDF5Handle(id) { H5Aclose($0) }
    }

    private func elementCount(of attribute: HDF5Handle, _ name: String) throws(KerasImportError) -> Int {
        let space = HDF5Handle(H5Aget_space(attribute.id)) { H5Sclose($0) }
        let count = H5Sget_simple_extent_npoints(space.id)  // scalar: 1, null: 0
        guard count >= 0 else { throw attributeError(name, "has an unreadable dataspace" + HDF5Library.errorSuffix()) }
        guard count <= Self.maxAttributeElements else {
            throw attributeError(name, "has \(count) elements, more than the limit \(Self.maxAttributeElements)")
        }
        return Int(count)
    }

    /// The Keras split form: `name0`, `name1`, … until the first missing one; nil when `name0` is absent.
    private func readSplitStrings(_ name: String) throws(KerasImportError) -> [String]? {
        var result: [String]?
        var chunk = 0
        while let strings = try readStrings("\(name)\(chunk)") {
            result = (result ?? []) + strings
            chunk += 1
        }
        return result
    }

    /// All strings of attribute `name`, in order; nil when absent.
    private func readStrings(_ name: String) throws(KerasImportError) -> [String]? {
        guard let attribute = try openAttribute(name) else { return nil }
        let fileType = HDF5Handle(H5Aget_type(attribute.id)) { H5Tclose($0) }
        guard fileType.id >= 0 else { throw attributeError(name, "has an unreadable type" + HDF5Library.errorSuffix()) }
        let count = try elementCount(of: attribute, name)
        // An empty list is written by h5py as an empty float64 array (Keras' `weight_names` of a layer
        // without weights): no strings, whatever the type.
        guard count > 0 else { return [] }
        guard H5Tget_class(fileType.id) == H5T_STRING else {
            throw attributeError(name, "is \(HDF5ElementClass(type: fileType.id)), not a string")
        }
        var bytes: [[UInt8]] = []
        bytes.reserveCapacity(count)

        if H5Tis_variable_str(fileType.id) > 0 {
            // Read as C strings the library allocates; we free each one.
            let memoryType = HDF5Handle(H5Tcopy(HDF5Library.cString)) { H5Tclose($0) }
            _ = H5Tset_size(memoryType.id, HDF5Library.variableSize)
            _ = H5Tset_cset(memoryType.id, H5Tget_cset(fileType.id))
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
            let status = pointers.withUnsafeMutableBytes { H5Aread(attribute.id, memoryType.id, $0.baseAddress) }
            defer { for pointer in pointers where pointer != nil { _ = H5free_memory(pointer) } }
            guard status >= 0 else { throw attributeError(name, "cannot be read" + HDF5Library.errorSuffix()) }
            for pointer in pointers {
                guard let pointer else { bytes.append([]); continue }
                let text = UnsafeRawBufferPointer(start: pointer, count: strlen(pointer))
                bytes.append(Array(text))
            }
        } else {
            // Fixed length: `size` bytes per string, padded as the type says.
            let size = H5Tget_size(fileType.id)
            guard size > 0, size <= Self.maxAttributeBytes / count else {
                throw attributeError(name, "has \(count) strings of \(size) bytes, "
                    + "more than the limit \(Self.maxAttributeBytes) bytes")
            }
            let memoryType = HDF5Handle(H5Tcopy(fileType.id)) { H5Tclose($0) }
            var buffer = [UInt8](repeating: 0, count: count * size)
            let status = buffer.withUnsafeMutableBytes { H5Aread(attribute.id, memoryType.id, $0.baseAddress) }
            guard status >= 0 else { throw attributeError(name, "cannot be read" + HDF5Library.errorSuffix()) }
            let spacePadded = H5Tget_strpad(fileType.id) == H5T_STR_SPACEPAD
            for index in 0..<count {
                var string = buffer[(index * size)..<((index + 1) * size)]
                if let nul = string.firstIndex(of: 0) { string = string[..<nul] }
                if spacePadded { while string.last == UInt8(ascii: " ") { string = string.dropLast() } }
                bytes.append(Array(string))
            }
        }
        var strings: [String] = []
        strings.reserveCapacity(count)
        for (index, utf8) in bytes.enumerated() {
            guard let string = String(validating: utf8, as: UTF8.self) else {
                throw attributeError(name, "string \(index) is not valid UTF-8")
            }
            strings.append(string)
        }
        return strings
    }
}
