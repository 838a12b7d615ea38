import CHDF5

/// The stored element type of a dataset or attribute.
public enum HDF5ElementClass: Equatable, Sendable, CustomStringConvertible {
    /// IEEE-like float of `bits` width (16, 32, 64; h5py's float16 is a custom 16-bit float type).
    case float(bits: Int)
    case integer(bits: Int, signed: Bool)
    case string
    /// Anything else (compound, enum, reference, …), named.
    case other(String)

    public var description: String {
        switch self {
        case .float(let bits): "float\(bits)"
        case .integer(let bits, let signed): "\(signed ? "int" : "uint")\(bits)"
        case .string: "string"
        case .other(let name): name
        }
    }

    /// Classifies an HDF5 datatype. Call inside `withLock`.
    init(type: hid_t) {
        let bits = H5Tget_size(type) * 8
        switch H5Tget_class(type) {
        case H5T_FLOAT: self = .float(bits: bits)
        case H5T_INTEGER: self = .integer(bits: bits, signed: H5Tget_sign(type) == H5T_SGN_2)
        case H5T_STRING: self = .string
        case H5T_COMPOUND: self = .other("compound")
        case H5T_ENUM: self = .other("enum")
        case H5T_ARRAY: self = .other("array")
        case H5T_VLEN: self = .other("variable-length sequence")
        case H5T_REFERENCE: self = .other("reference")
        case H5T_OPAQUE: self = .other("opaque")
        case H5T_BITFIELD: self = .other("bitfield")
        case H5T_TIME: self = .other("time")
        default: self = .other("unknown type")
        }
    }
}

/// A dataset in an open HDF5 file: its shape, its element type, and its values as Float32.
public final class HDF5Dataset {
    let file: FileContext
    let handle: HDF5Handle
    /// The absolute path in the file.
    public let path: String
    /// The dimensions, slowest-varying first (HDF5 and numpy order); [] for a scalar.
    public let shape: [Int]
    /// The element type as stored.
    public let elementClass: HDF5ElementClass
    /// The number of elements (the product of `shape`), or nil when it overflows `Int`.
    public let elementCount: Int?
    /// The file's name for error messages.
    public var fileName: String { file.displayName }

    /// Default limit on the elements `readFloats` allocates: 2^28 floats, 1 GiB (VGG16's fc1 is 2^26.6).
    public static let defaultMaxElements = 1 << 28

    init(file: FileContext, at relativePath: String, from location: hid_t, absolutePath: String)
        throws(KerasImportError)
    {
        self.file = file
        self.path = absolutePath
        let opened = HDF5Library.withLock { file.openObject(at: HDF5Path(relativePath), from: location) }
        guard let opened else {
            throw KerasImportError(file: file.displayName, tensor: absolutePath, "no such dataset")
        }
        let (handle, kind) = opened
        guard kind == .dataset else {
            throw KerasImportError(file: file.displayName, tensor: absolutePath,
                                   "is a \(kind == .group ? "group" : "named type"), not a dataset")
        }
        self.handle = handle
        let description = try HDF5Library.withLock { () throws(KerasImportError) -> ([Int], HDF5ElementClass) in
            let type = HDF5Handle(H5Dget_type(handle.id)) { H5Tclose($0) }
            let space = HDF5Handle(H5Dget_space(handle.id)) { H5Sclose($0) }
            guard type.id >= 0, space.id >= 0 else {
                throw KerasImportError(file: file.displayName, tensor: absolutePath,
                                       "cannot read its type or shape" + HDF5Library.errorSuffix())
            }
            if H5Sget_simple_extent_type(space.id) == H5S_NULL {
                throw KerasImportError(file: file.displayName, tensor: absolutePath, "has no dataspace (H5S_NULL)")
            }
            let rank = H5Sget_simple_extent_ndims(space.id)
            guard rank >= 0, rank <= 32 else {
                throw KerasImportError(file: file.displayName, tensor: absolutePath, "has rank \(rank)")
            }
            var dims = [hsize_t](repeating: 0, count: Int(rank))
            if rank > 0 { _ = H5Sget_simple_extent_dims(space.id, &dims, nil) }
            let shape = dims.compactMap { Int(exactly: $0) }
            guard shape.count == dims.count else {
                throw KerasImportError(file: file.displayName, tensor: absolutePath, "has dimensions \(dims)")
            }
            return (shape, HDF5ElementClass(type: type.id))
        }
        (shape, elementClass) = description
        var count: Int? = 1
        for dimension in shape {
            guard let product = count else { break }
            let (result, overflow) = product.multipliedReportingOverflow(by: dimension)
            count = overflow ? nil : result
        }
        elementCount = count
    }

    /// The values in row-major order, converted to Float32 from float16, float32 or float64.
    /// Refuses non-float data and more than `maxElements` values (checked before allocating).
    public func readFloats(maxElements: Int = HDF5Dataset.defaultMaxElements) throws(KerasImportError) -> [Float] {
        guard case .float = elementClass else {
            throw error("shape \(shape): elements are \(elementClass), not float")
        }
        guard let count = elementCount, count <= maxElements else {
            let size = elementCount.map(String.init) ?? "too many to count"
            throw error("shape \(shape) has \(size) elements, more than the limit \(maxElements)")
        }
        var values = [Float](repeating: 0, count: count)
        guard count > 0 else { return values }
        try HDF5Library.withLock { () throws(KerasImportError) in
            let status = values.withUnsafeMutableBytes {
                H5Dread(handle.id, HDF5Library.nativeFloat, HDF5Library.selectAll, HDF5Library.selectAll,
                        HDF5Library.propertiesDefault, $0.baseAddress)
            }
            guard status >= 0 else {
                throw error("shape \(shape): cannot read the \(elementClass) data" + HDF5Library.errorSuffix())
            }
        }
        return values
    }

    private func error(_ message: String) -> KerasImportError {
        KerasImportError(file: fileName, tensor: path, message)
    }
}
