// Tests of the HDF5 layer and the .keras archive reader. Every fixture is written here through the HDF5
// C API (or ZIPFoundation), and every expected value comes from what was written, never from our reader.
// @preconcurrency: the HDF5 type and property-class constants are C globals (`H5T_IEEE_F32LE_g`, …).
@preconcurrency import CHDF5
import Foundation
import Testing
import ZIPFoundation

@testable import KilnKeras

// MARK: - Fixture writing

/// A failed HDF5 C call while writing a fixture.
struct FixtureError: Error, CustomStringConvertible {
    let description: String
}

@discardableResult
private func check<T: BinaryInteger>(_ value: T, _ what: String) throws -> T {
    guard value >= 0 else {
        throw FixtureError(description: "\(what) failed: \(HDF5Library.errorStackMessages().joined(separator: "; "))")
    }
    return value
}

/// A fresh directory under the system temporary directory, removed when released.
final class FixtureDirectory {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.path + "/kiln-hdf5-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Writes an HDF5 file through the C API, under the importer's library lock (HDF5 may not be thread-safe
/// and Swift Testing runs tests in parallel).
final class FixtureWriter {
    private var file: hid_t = -1

    init(path: String, userBlock: Int = 0) throws {
        file = try HDF5Library.withLock { () throws -> hid_t in
            let creation = try check(H5Pcreate(H5P_CLS_FILE_CREATE_ID_g), "H5Pcreate")
            defer { H5Pclose(creation) }
            if userBlock > 0 { try check(H5Pset_userblock(creation, hsize_t(userBlock)), "H5Pset_userblock") }
            return try check(H5Fcreate(path, 0x0002 /* H5F_ACC_TRUNC */, creation, 0), "H5Fcreate \(path)")
        }
    }

    /// Closes the file; the writer is unusable afterwards.
    func close() throws {
        guard file >= 0 else { return }
        let id = file
        file = -1
        try HDF5Library.withLock { () throws in _ = try check(H5Fclose(id), "H5Fclose") }
    }

    deinit { try? close() }

    /// Creates the group at `path` and any missing groups above it.
    func group(_ path: String) throws {
        try HDF5Library.withLock { () throws in
            var prefix = ""
            for component in path.split(separator: "/") {
                prefix += "/" + component
                if H5Lexists(file, prefix, 0) > 0 { continue }
                H5Gclose(try check(H5Gcreate2(file, prefix, 0, 0, 0), "H5Gcreate2 \(prefix)"))
            }
        }
    }

    /// A fixed-length string attribute: `strings` are the exact bytes stored, `size` each (already padded).
    func fixedStringAttribute(_ name: String, on object: String = "/", size: Int, strings: [[UInt8]],
                              pad: H5T_str_t, scalar: Bool = false, cset: H5T_cset_t = H5T_CSET_ASCII) throws {
        precondition(strings.allSatisfy { $0.count == size })
        try HDF5Library.withLock { () throws in
            let type = try check(H5Tcopy(H5T_C_S1_g), "H5Tcopy")
            defer { H5Tclose(type) }
            try check(H5Tset_size(type, size), "H5Tset_size")
            try check(H5Tset_strpad(type, pad), "H5Tset_strpad")
            try check(H5Tset_cset(type, cset), "H5Tset_cset")
            let bytes = strings.flatMap { $0 }
            try writeAttribute(name, on: object, type: type, count: strings.count, scalar: scalar) { attribute in
                try check(bytes.withUnsafeBytes { H5Awrite(attribute, type, $0.baseAddress) }, "H5Awrite \(name)")
            }
        }
    }

    /// A variable-length string attribute (what h5py writes for a Python `str`).
    func vlenStringAttribute(_ name: String, on object: String = "/", strings: [String], scalar: Bool = false,
                             cset: H5T_cset_t = H5T_CSET_UTF8) throws {
        try HDF5Library.withLock { () throws in
            let type = try check(H5Tcopy(H5T_C_S1_g), "H5Tcopy")
            defer { H5Tclose(type) }
            try check(H5Tset_size(type, -1 /* H5T_VARIABLE; size_t is Int in Swift */), "H5Tset_size")
            try check(H5Tset_cset(type, cset), "H5Tset_cset")
            let pointers = strings.map { strdup($0) }
            defer { pointers.forEach { free($0) } }
            try writeAttribute(name, on: object, type: type, count: strings.count, scalar: scalar) { attribute in
                try check(pointers.withUnsafeBytes { H5Awrite(attribute, type, $0.baseAddress) }, "H5Awrite \(name)")
            }
        }
    }

    /// A float64 attribute (`shape` nil: scalar; `null`: an H5S_NULL dataspace).
    func float64Attribute(_ name: String, on object: String = "/", values: [Double], scalar: Bool = false,
                          null: Bool = false) throws {
        try HDF5Library.withLock { () throws in
            try writeAttribute(name, on: object, type: H5T_IEEE_F64LE_g, count: values.count, scalar: scalar,
                               null: null) { attribute in
                guard !values.isEmpty else { return }
                try check(values.withUnsafeBytes { H5Awrite(attribute, H5T_NATIVE_DOUBLE_g, $0.baseAddress) },
                          "H5Awrite \(name)")
            }
        }
    }

    /// An int32 attribute, 1-D.
    func int32Attribute(_ name: String, on object: String = "/", values: [Int32]) throws {
        try HDF5Library.withLock { () throws in
            try writeAttribute(name, on: object, type: H5T_STD_I32LE_g, count: values.count, scalar: false) {
                attribute in
                try check(values.withUnsafeBytes { H5Awrite(attribute, H5T_NATIVE_INT32_g, $0.baseAddress) },
                          "H5Awrite \(name)")
            }
        }
    }

    private func writeAttribute(_ name: String, on object: String, type: hid_t, count: Int, scalar: Bool,
                                null: Bool = false, write: (hid_t) throws -> Void) throws {
        let target = try check(H5Oopen(file, object, 0), "H5Oopen \(object)")
        defer { H5Oclose(target) }
        let space: hid_t
        if null {
            space = try check(H5Screate(H5S_NULL), "H5Screate")
        } else if scalar {
            precondition(count == 1)
            space = try check(H5Screate(H5S_SCALAR), "H5Screate")
        } else {
            var dims = [hsize_t(count)]
            space = try check(H5Screate_simple(1, &dims, nil), "H5Screate_simple")
        }
        defer { H5Sclose(space) }
        let attribute = try check(H5Acreate2(target, name, type, space, 0, 0), "H5Acreate2 \(name)")
        defer { H5Aclose(attribute) }
        try write(attribute)
    }

    /// A dataset of `fileType` at `path` (parent groups must exist), written from `bytes` in `memoryType`;
    /// `bytes` nil leaves it unwritten; `chunk` makes it chunked (so huge shapes allocate nothing).
    func dataset(_ path: String, fileType: hid_t, memoryType: hid_t, shape: [Int], bytes: [UInt8]?,
                 chunk: [Int]? = nil) throws {
        try HDF5Library.withLock { () throws in
            var dims = shape.map { hsize_t($0) }
            let space = try check(shape.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(shape.count), &dims, nil),
                                  "H5Screate")
            defer { H5Sclose(space) }
            let creation = try check(H5Pcreate(H5P_CLS_DATASET_CREATE_ID_g), "H5Pcreate")
            defer { H5Pclose(creation) }
            if let chunk {
                var chunkDims = chunk.map { hsize_t($0) }
                try check(H5Pset_chunk(creation, Int32(chunk.count), &chunkDims), "H5Pset_chunk")
            }
            let dataset = try check(H5Dcreate2(file, path, fileType, space, 0, creation, 0), "H5Dcreate2 \(path)")
            defer { H5Dclose(dataset) }
            if let bytes {
                try check(bytes.withUnsafeBytes { H5Dwrite(dataset, memoryType, 0, 0, 0, $0.baseAddress) },
                          "H5Dwrite \(path)")
            }
        }
    }

    func float32Dataset(_ path: String, _ values: [Float], shape: [Int], bigEndian: Bool = false) throws {
        let fileType = HDF5Library.withLock { bigEndian ? H5T_IEEE_F32BE_g : H5T_IEEE_F32LE_g }
        try dataset(path, fileType: fileType, memoryType: HDF5Library.withLock { H5T_NATIVE_FLOAT_g }, shape: shape,
                    bytes: values.withUnsafeBytes { Array($0) })
    }

    func float64Dataset(_ path: String, _ values: [Double], shape: [Int]) throws {
        try dataset(path, fileType: HDF5Library.withLock { H5T_IEEE_F64LE_g },
                    memoryType: HDF5Library.withLock { H5T_NATIVE_DOUBLE_g }, shape: shape,
                    bytes: values.withUnsafeBytes { Array($0) })
    }

    func int32Dataset(_ path: String, _ values: [Int32], shape: [Int]) throws {
        try dataset(path, fileType: HDF5Library.withLock { H5T_STD_I32LE_g },
                    memoryType: HDF5Library.withLock { H5T_NATIVE_INT32_g }, shape: shape,
                    bytes: values.withUnsafeBytes { Array($0) })
    }

    /// IEEE half precision stored from raw bit patterns, as h5py defines its float16 type.
    func float16Dataset(_ path: String, bits: [UInt16], shape: [Int]) throws {
        let half = try HDF5Library.withLock { () throws -> hid_t in
            let type = try check(H5Tcopy(H5T_IEEE_F32LE_g), "H5Tcopy")
            try check(H5Tset_fields(type, 15, 10, 5, 0, 10), "H5Tset_fields")
            try check(H5Tset_size(type, 2), "H5Tset_size")
            try check(H5Tset_ebias(type, 15), "H5Tset_ebias")
            return type
        }
        defer { HDF5Library.withLock { _ = H5Tclose(half) } }
        try dataset(path, fileType: half, memoryType: half, shape: shape, bytes: bits.withUnsafeBytes { Array($0) })
    }
}

/// `text`'s UTF-8 bytes followed by `fill` up to `size`.
private func padded(_ text: String, to size: Int, with fill: UInt8) -> [UInt8] {
    let bytes = Array(text.utf8)
    precondition(bytes.count <= size)
    return bytes + [UInt8](repeating: fill, count: size - bytes.count)
}

/// Writes a zip with `entries` (name, contents, deflate?) at `path`.
private func writeZip(_ path: String, _ entries: [(String, Data, Bool)]) throws {
    let archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .create)
    for (name, data, deflate) in entries {
        try archive.addEntry(with: name, type: .file, uncompressedSize: Int64(data.count),
                             compressionMethod: deflate ? .deflate : .none) { position, size in
            data.subdata(in: Int(position)..<(Int(position) + size))
        }
    }
}

// MARK: - Errors

@Suite("KerasImportError")
struct KerasImportErrorTests {
    @Test("prints as one line, fields omitted when nil")
    func description() {
        let full = KerasImportError(file: "model.h5", layer: "conv1_bn", layerClass: "BatchNormalization",
                                    tensor: "moving_variance", "shape [32] but the layer has 64 channels")
        #expect(full.description
            == "model.h5: layer 'conv1_bn' (BatchNormalization): tensor 'moving_variance': shape [32] but the layer has 64 channels")
        #expect(KerasImportError(file: "a.h5", "bad").description == "a.h5: bad")
        #expect(KerasImportError(file: "a.h5", layer: "d", "bad").description == "a.h5: layer 'd': bad")
        #expect(KerasImportError(file: "a.h5", tensor: "/w/k", "bad").description == "a.h5: tensor '/w/k': bad")
    }
}

// MARK: - HDF5

@Suite("HDF5 reader")
struct HDF5ReaderTests {
    @Test("string attributes: fixed-length padded three ways, variable-length, scalar and 1-D")
    func stringAttributes() throws {
        let directory = try FixtureDirectory()
        let path = directory.file("strings.h5")
        let writer = try FixtureWriter(path: path)
        try writer.fixedStringAttribute("backend", size: 12, strings: [padded("tensorflow", to: 12, with: 0)],
                                        pad: H5T_STR_NULLTERM, scalar: true)
        try writer.fixedStringAttribute("keras_version", size: 10, strings: [padded("2.21.0", to: 10, with: 0x20)],
                                        pad: H5T_STR_SPACEPAD, scalar: true)
        // numpy `S10`: null-padded, and a string of exactly 10 bytes has no terminator at all.
        try writer.fixedStringAttribute("layer_names", size: 10,
                                        strings: [padded("input_1", to: 10, with: 0), padded("conv1_pad", to: 10, with: 0),
                                                  padded("conv1_conv", to: 10, with: 0)],
                                        pad: H5T_STR_NULLPAD)
        try writer.fixedStringAttribute("one_name", size: 5, strings: [padded("dense", to: 5, with: 0)],
                                        pad: H5T_STR_NULLPAD)
        try writer.fixedStringAttribute("utf8_fixed", size: 8, strings: [padded("modèle", to: 8, with: 0)],
                                        pad: H5T_STR_NULLPAD, scalar: true, cset: H5T_CSET_UTF8)
        try writer.vlenStringAttribute("model_config", strings: [#"{"name": "modèle ✓", "layers": []}"#], scalar: true)
        try writer.vlenStringAttribute("ascii_vlen", strings: ["plain"], scalar: true, cset: H5T_CSET_ASCII)
        try writer.group("model_weights/conv1_conv")
        try writer.vlenStringAttribute("weight_names", on: "/model_weights/conv1_conv",
                                       strings: ["conv1_conv/kernel", "conv1_conv/bias", ""])
        try writer.close()

        let file = try HDF5File(path: path)
        #expect(try file.stringAttribute("backend") == "tensorflow")
        #expect(try file.stringAttribute("keras_version") == "2.21.0")
        #expect(try file.stringArrayAttribute("layer_names") == ["input_1", "conv1_pad", "conv1_conv"])
        #expect(try file.stringAttribute("one_name") == "dense")
        #expect(try file.stringArrayAttribute("backend") == ["tensorflow"])
        #expect(try file.stringAttribute("utf8_fixed") == "modèle")
        #expect(try file.stringAttribute("model_config") == #"{"name": "modèle ✓", "layers": []}"#)
        #expect(try file.stringAttribute("ascii_vlen") == "plain")
        let layer = try file.group(at: "model_weights/conv1_conv")
        #expect(try layer.stringArrayAttribute("weight_names") == ["conv1_conv/kernel", "conv1_conv/bias", ""])
        #expect(try file.root.stringAttribute("absent") == nil)
        #expect(try file.stringArrayAttribute("absent") == nil)
        #expect(file.root.hasAttribute("backend"))
        #expect(!layer.hasAttribute("backend"))

        let many = #expect(throws: KerasImportError.self) { try file.stringAttribute("layer_names") }
        #expect(many?.description == "\(path): attribute 'layer_names' of '/' holds 3 strings, expected one")
    }

    @Test("the Keras split form name0, name1, … is concatenated in numeric order")
    func splitAttributes() throws {
        let directory = try FixtureDirectory()
        let path = directory.file("split.h5")
        let writer = try FixtureWriter(path: path)
        try writer.group("model_weights")
        let group = "/model_weights"
        try writer.fixedStringAttribute("layer_names0", on: group, size: 4,
                                        strings: [padded("a", to: 4, with: 0), padded("bb", to: 4, with: 0)],
                                        pad: H5T_STR_NULLPAD)
        try writer.vlenStringAttribute("layer_names1", on: group, strings: ["ccc"])
        try writer.fixedStringAttribute("layer_names2", on: group, size: 4,
                                        strings: [padded("dddd", to: 4, with: 0), padded("e", to: 4, with: 0)],
                                        pad: H5T_STR_NULLPAD)
        // After a gap: Keras stops at the first missing number, so this one is not read.
        try writer.vlenStringAttribute("layer_names4", on: group, strings: ["after_gap"])
        try writer.vlenStringAttribute("model_config0", strings: [#"{"class_name": "#], scalar: true)
        try writer.vlenStringAttribute("model_config1", strings: [#""Functional"}"#], scalar: true)
        // When the plain name exists, the numbered ones are not looked at.
        try writer.vlenStringAttribute("names", strings: ["x"])
        try writer.vlenStringAttribute("names0", strings: ["y"])
        try writer.close()

        let file = try HDF5File(path: path)
        #expect(try file.group(at: "model_weights").stringArrayAttribute("layer_names")
            == ["a", "bb", "ccc", "dddd", "e"])
        #expect(try file.stringAttribute("model_config") == #"{"class_name": "Functional"}"#)
        #expect(try file.stringArrayAttribute("names") == ["x"])
    }

    @Test("empty and non-string attributes; numbers")
    func otherAttributes() throws {
        let directory = try FixtureDirectory()
        let path = directory.file("numbers.h5")
        let writer = try FixtureWriter(path: path)
        // h5py writes Keras' empty `weight_names` list as an empty float64 array.
        try writer.float64Attribute("weight_names", values: [])
        try writer.float64Attribute("null_names", values: [], null: true)
        try writer.float64Attribute("epsilon", values: [1.001e-5], scalar: true)
        try writer.int32Attribute("sizes", values: [3, -1, 7])
        try writer.fixedStringAttribute("bad_utf8", size: 2, strings: [[0xFF, 0x41]], pad: H5T_STR_NULLPAD,
                                        scalar: true)
        try writer.close()

        let file = try HDF5File(path: path)
        #expect(try file.stringArrayAttribute("weight_names") == [])
        #expect(try file.stringArrayAttribute("null_names") == [])
        #expect(try file.root.numberArrayAttribute("epsilon") == [1.001e-5])
        #expect(try file.root.numberArrayAttribute("sizes") == [3, -1, 7])
        #expect(try file.root.numberArrayAttribute("absent") == nil)

        let notString = #expect(throws: KerasImportError.self) { try file.stringAttribute("sizes") }
        #expect(notString?.description == "\(path): attribute 'sizes' of '/' is int32, not a string")
        let notNumber = #expect(throws: KerasImportError.self) { try file.root.numberArrayAttribute("bad_utf8") }
        #expect(notNumber?.description == "\(path): attribute 'bad_utf8' of '/' is string, not a number")
        let badText = #expect(throws: KerasImportError.self) { try file.stringAttribute("bad_utf8") }
        #expect(badText?.description == "\(path): attribute 'bad_utf8' of '/' string 0 is not valid UTF-8")
    }

    @Test("groups: sorted children, nested paths, exists and isDataset")
    func groups() throws {
        let directory = try FixtureDirectory()
        let path = directory.file("groups.h5")
        let writer = try FixtureWriter(path: path)
        for name in ["zeta", "c9", "alpha", "c10"] { try writer.group(name) }
        try writer.group("model_weights/conv1_conv/conv1_conv")
        try writer.float32Dataset("/model_weights/conv1_conv/conv1_conv/kernel:0", [1, 2, 3, 4, 5, 6],
                                  shape: [1, 1, 2, 3])
        try writer.float32Dataset("/model_weights/conv1_conv/conv1_conv/bias:0", [0.5, 0.25, 0.125], shape: [3])
        try writer.close()

        let file = try HDF5File(path: path)
        #expect(file.root.path == "/")
        #expect(try file.root.childNames == ["alpha", "c10", "c9", "model_weights", "zeta"])
        #expect(try file.group(at: "zeta").childNames == [])
        let layer = try file.group(at: "/model_weights/conv1_conv")
        #expect(layer.path == "/model_weights/conv1_conv")
        #expect(try layer.childNames == ["conv1_conv"])
        #expect(try layer.group(at: "conv1_conv").childNames == ["bias:0", "kernel:0"])

        #expect(file.exists("model_weights/conv1_conv/conv1_conv/kernel:0"))
        #expect(file.isDataset("/model_weights/conv1_conv/conv1_conv/kernel:0"))
        #expect(!file.isGroup("model_weights/conv1_conv/conv1_conv/kernel:0"))
        #expect(file.isGroup("model_weights/conv1_conv"))
        #expect(!file.isDataset("model_weights/conv1_conv"))
        #expect(layer.isDataset("conv1_conv/bias:0"))
        #expect(layer.exists("/alpha"))  // absolute from a nested group
        #expect(!file.exists("model_weights/conv1_conv/conv1_conv/gamma:0"))
        #expect(!file.exists("no/such/path"))  // a missing intermediate group is "no", not an error
        #expect(!file.isDataset("no/such/path"))

        let bias = try layer.dataset(at: "conv1_conv/bias:0")
        #expect(bias.path == "/model_weights/conv1_conv/conv1_conv/bias:0")
        #expect(try bias.readFloats() == [0.5, 0.25, 0.125])

        let notGroup = #expect(throws: KerasImportError.self) {
            try file.group(at: "model_weights/conv1_conv/conv1_conv/kernel:0")
        }
        #expect(notGroup?.description
            == "\(path): '/model_weights/conv1_conv/conv1_conv/kernel:0' is a dataset, not a group")
        let missingGroup = #expect(throws: KerasImportError.self) { try layer.group(at: "conv1_bn") }
        #expect(missingGroup?.description == "\(path): no group '/model_weights/conv1_conv/conv1_bn'")
        let missingDataset = #expect(throws: KerasImportError.self) { try layer.dataset(at: "conv1_conv/gamma:0") }
        #expect(missingDataset?.description
            == "\(path): tensor '/model_weights/conv1_conv/conv1_conv/gamma:0': no such dataset")
        let notDataset = #expect(throws: KerasImportError.self) { try file.dataset(at: "alpha") }
        #expect(notDataset?.description == "\(path): tensor '/alpha': is a group, not a dataset")
    }

    @Test("a group keeps its file open after the HDF5File is released")
    func groupOutlivesFile() throws {
        let directory = try FixtureDirectory()
        let path = directory.file("lifetime.h5")
        let writer = try FixtureWriter(path: path)
        try writer.group("layers/dense/vars")
        try writer.float32Dataset("/layers/dense/vars/0", [7, 8], shape: [2])
        try writer.close()

        var group: HDF5Group?
        do {
            let file = try HDF5File(path: path)
            group = try file.group(at: "layers/dense")
        }
        let dense = try #require(group)
        #expect(try dense.childNames == ["vars"])
        #expect(try dense.dataset(at: "vars/0").readFloats() == [7, 8])
    }

    @Test("datasets: float16, float32 (both byte orders) and float64 read as Float32")
    func floatDatasets() throws {
        let directory = try FixtureDirectory()
        let path = directory.file("floats.h5")
        let writer = try FixtureWriter(path: path)
        // IEEE half: 0, 1, -1.5, 65504 (max), 2^-14 (min normal), 2^-24 (min subnormal), 0x3555, -inf.
        try writer.float16Dataset("/half", bits: [0x0000, 0x3C00, 0xBE00, 0x7BFF, 0x0400, 0x0001, 0x3555, 0xFC00],
                                  shape: [2, 4])
        let doubles: [Double] = [0.1, -2.5, 1e-3, 3.141592653589793, 1e30, -0.0]
        try writer.float64Dataset("/double", doubles, shape: [2, 3])
        let floats: [Float] = [1.5, -0.25, 1e-7, 123456.79]
        try writer.float32Dataset("/little", floats, shape: [4])
        try writer.float32Dataset("/big", floats, shape: [2, 2], bigEndian: true)
        try writer.float32Dataset("/scalar", [42.5], shape: [])
        try writer.close()

        let file = try HDF5File(path: path)
        let half = try file.dataset(at: "half")
        #expect(half.shape == [2, 4])
        #expect(half.elementClass == .float(bits: 16))
        #expect(half.elementCount == 8)
        #expect(try half.readFloats() == [0, 1, -1.5, 65504, 0.00006103515625, 0.000000059604644775390625,
                                          0.333251953125, -.infinity])

        let double = try file.dataset(at: "/double")
        #expect(double.shape == [2, 3])
        #expect(double.elementClass == .float(bits: 64))
        let fromDoubles = try double.readFloats()
        #expect(fromDoubles == doubles.map { Float($0) })
        #expect(fromDoubles[5].sign == .minus)

        #expect(try file.dataset(at: "little").readFloats() == floats)
        let big = try file.dataset(at: "big")
        #expect(big.elementClass == .float(bits: 32))
        #expect(try big.readFloats() == floats)

        let scalar = try file.dataset(at: "scalar")
        #expect(scalar.shape == [])
        #expect(scalar.elementCount == 1)
        #expect(try scalar.readFloats() == [42.5])
    }

    @Test("datasets: non-float and oversized reads are refused, naming the file, dataset and shape")
    func refusedDatasets() throws {
        let directory = try FixtureDirectory()
        let path = directory.file("refused.h5")
        let writer = try FixtureWriter(path: path)
        try writer.group("w")
        try writer.int32Dataset("/w/steps", [1, 2, 3], shape: [3])
        try writer.float32Dataset("/w/kernel", [Float](repeating: 1, count: 200), shape: [10, 20])
        // 2^60 elements, chunked so that nothing is allocated.
        let huge = HDF5Library.withLock { (H5T_IEEE_F32LE_g, H5T_NATIVE_FLOAT_g) }
        try writer.dataset("/w/huge", fileType: huge.0, memoryType: huge.1, shape: [1 << 20, 1 << 20, 1 << 20],
                           bytes: nil, chunk: [1, 1, 16])
        try writer.close()

        let file = try HDF5File(path: path)
        let steps = try file.dataset(at: "w/steps")
        #expect(steps.elementClass == .integer(bits: 32, signed: true))
        let notFloat = #expect(throws: KerasImportError.self) { try steps.readFloats() }
        #expect(notFloat?.description == "\(path): tensor '/w/steps': shape [3]: elements are int32, not float")

        let kernel = try file.dataset(at: "w/kernel")
        #expect(try kernel.readFloats(maxElements: 200).count == 200)
        let tooMany = #expect(throws: KerasImportError.self) { try kernel.readFloats(maxElements: 199) }
        #expect(tooMany?.description
            == "\(path): tensor '/w/kernel': shape [10, 20] has 200 elements, more than the limit 199")

        let hugeDataset = try file.dataset(at: "w/huge")
        #expect(hugeDataset.shape == [1 << 20, 1 << 20, 1 << 20])
        let absurd = #expect(throws: KerasImportError.self) { try hugeDataset.readFloats() }
        #expect(absurd?.description == "\(path): tensor '/w/huge': shape [1048576, 1048576, 1048576] has "
            + "1152921504606846976 elements, more than the limit \(HDF5Dataset.defaultMaxElements)")
    }

    @Test("files that are not HDF5, truncated, or missing give errors naming the file")
    func badFiles() throws {
        let directory = try FixtureDirectory()
        let good = directory.file("good.h5")
        let writer = try FixtureWriter(path: good)
        try writer.vlenStringAttribute("backend", strings: ["tensorflow"], scalar: true)
        try writer.float32Dataset("/weights", [Float](repeating: 0.5, count: 4096), shape: [64, 64])
        try writer.close()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        #expect(bytes.count > 16384)

        let truncated = directory.file("truncated.h5")
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: truncated))
        let cut = #expect(throws: KerasImportError.self) { try HDF5File(path: truncated) }
        #expect(cut?.file == truncated)
        #expect(cut?.description.hasPrefix("\(truncated): cannot open as HDF5, damaged or truncated?") == true)

        let stub = directory.file("stub.h5")
        try bytes.prefix(100).write(to: URL(fileURLWithPath: stub))
        let tiny = #expect(throws: KerasImportError.self) { try HDF5File(path: stub) }
        #expect(tiny?.description.hasPrefix("\(stub): cannot open as HDF5") == true)

        let text = directory.file("notes.h5")
        try Data("not an HDF5 file at all\n".utf8).write(to: URL(fileURLWithPath: text))
        let notHDF5 = #expect(throws: KerasImportError.self) { try HDF5File(path: text) }
        #expect(notHDF5?.description
            == "\(text): not an HDF5 file (no HDF5 signature at offset 0, 512, 1024, …)")

        let missing = directory.file("missing.h5")
        let absent = #expect(throws: KerasImportError.self) { try HDF5File(path: missing) }
        #expect(absent?.description == "\(missing): cannot open: No such file or directory")

        let named = #expect(throws: KerasImportError.self) { try HDF5File(path: text, displayName: "shown.h5") }
        #expect(named?.file == "shown.h5")
    }

    @Test("file kinds by magic bytes, including HDF5 after a 512-byte user block")
    func fileKinds() throws {
        let directory = try FixtureDirectory()
        let plain = directory.file("plain.h5")
        try FixtureWriter(path: plain).close()
        let offset = directory.file("userblock.h5")
        let writer = try FixtureWriter(path: offset, userBlock: 512)
        try writer.vlenStringAttribute("backend", strings: ["jax"], scalar: true)
        try writer.close()
        let zip = directory.file("a.keras")
        try writeZip(zip, [("config.json", Data("{}".utf8), false)])
        let empty = directory.file("empty")
        try Data().write(to: URL(fileURLWithPath: empty))
        let text = directory.file("text")
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))

        #expect(try KerasFileKind.detect(path: plain) == .hdf5)
        #expect(try KerasFileKind.detect(path: offset) == .hdf5)
        #expect(try KerasFileKind.detect(path: zip) == .zip)
        #expect(try KerasFileKind.detect(path: empty) == .unknown)
        #expect(try KerasFileKind.detect(path: text) == .unknown)
        let folder = #expect(throws: KerasImportError.self) { try KerasFileKind.detect(path: directory.path) }
        #expect(folder?.description == "\(directory.path): not a regular file")

        #expect(try HDF5File(path: offset).stringAttribute("backend") == "jax")
        let zipAsHDF5 = #expect(throws: KerasImportError.self) { try HDF5File(path: zip) }
        #expect(zipAsHDF5?.description == "\(zip): not an HDF5 file: it is a zip archive (a Keras 3 .keras file?)")
    }
}

// MARK: - .keras archives

@Suite("Keras archive")
struct KerasArchiveTests {
    static let config = Data(#"{"class_name": "Sequential", "config": {"name": "sequential"}}"#.utf8)
    static let metadata = Data(#"{"keras_version": "3.15.1", "date_saved": "2026-11-29@13:49:06"}"#.utf8)

    /// A `model.weights.h5` with one Dense layer's kernel [2, 3] and bias [3].
    static func weightsFile(in directory: FixtureDirectory) throws -> Data {
        let path = directory.file("model.weights.h5")
        let writer = try FixtureWriter(path: path)
        try writer.group("layers/dense/vars")
        try writer.vlenStringAttribute("name", on: "/layers/dense/vars", strings: ["predictions"], scalar: true)
        try writer.float32Dataset("/layers/dense/vars/0", [1, 2, 3, 4, 5, 6], shape: [2, 3])
        try writer.float32Dataset("/layers/dense/vars/1", [-1, 0, 1], shape: [3])
        try writer.close()
        return try Data(contentsOf: URL(fileURLWithPath: path))
    }

    @Test("reads config.json and metadata.json, and opens model.weights.h5 from a private temporary file")
    func readsArchive() throws {
        let directory = try FixtureDirectory()
        let path = directory.file("head.keras")
        try writeZip(path, [("metadata.json", Self.metadata, false), ("config.json", Self.config, true),
                            ("model.weights.h5", try Self.weightsFile(in: directory), false)])

        let archive = try KerasArchive.open(path: path)
        #expect(archive.configJSON == Self.config)
        #expect(archive.metadataJSON == Self.metadata)

        var temporary = ""
        let (kernel, bias, name) = try archive.withWeightsFile { file in
            temporary = file.path
            #expect(file.displayName == "\(path)::model.weights.h5")
            #expect(FileManager.default.fileExists(atPath: file.path))
            let vars = try file.group(at: "layers/dense/vars")
            return (try vars.dataset(at: "0").readFloats(), try vars.dataset(at: "1").readFloats(),
                    try vars.stringAttribute("name"))
        }
        #expect(kernel == [1, 2, 3, 4, 5, 6])
        #expect(bias == [-1, 0, 1])
        #expect(name == "predictions")
        #expect(!temporary.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: temporary))
        #expect(!FileManager.default.fileExists(atPath: (temporary as NSString).deletingLastPathComponent))
    }

    @Test("the temporary weights file is removed when the body throws")
    func removesTemporaryOnError() throws {
        struct Stop: Error {}
        let directory = try FixtureDirectory()
        let path = directory.file("head.keras")
        try writeZip(path, [("config.json", Self.config, false),
                            ("model.weights.h5", try Self.weightsFile(in: directory), true)])
        let archive = try KerasArchive.open(path: path)
        #expect(archive.metadataJSON == nil)

        var temporary = ""
        #expect(throws: Stop.self) {
            try archive.withWeightsFile { file in
                temporary = file.path
                throw Stop()
            }
        }
        #expect(!temporary.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: temporary))
    }

    @Test("missing entries, a non-zip, an HDF5 file and broken weights give errors naming the file")
    func badArchives() throws {
        let directory = try FixtureDirectory()
        let noConfig = directory.file("no-config.keras")
        try writeZip(noConfig, [("metadata.json", Self.metadata, false),
                                ("model.weights.h5", try Self.weightsFile(in: directory), false)])
        let missingConfig = #expect(throws: KerasImportError.self) { try KerasArchive.open(path: noConfig) }
        #expect(missingConfig?.description == "\(noConfig): not a Keras 3 archive: no 'config.json' in the zip")

        let noWeights = directory.file("no-weights.keras")
        try writeZip(noWeights, [("config.json", Self.config, false)])
        let missingWeights = #expect(throws: KerasImportError.self) { try KerasArchive.open(path: noWeights) }
        #expect(missingWeights?.description
            == "\(noWeights): not a Keras 3 archive: no 'model.weights.h5' in the zip")

        let text = directory.file("text.keras")
        try Data("just text".utf8).write(to: URL(fileURLWithPath: text))
        let notZip = #expect(throws: KerasImportError.self) { try KerasArchive.open(path: text) }
        #expect(notZip?.description == "\(text): not a .keras archive: not a zip file")

        let hdf5 = directory.file("model.h5")
        try FixtureWriter(path: hdf5).close()
        let isHDF5 = #expect(throws: KerasImportError.self) { try KerasArchive.open(path: hdf5) }
        #expect(isHDF5?.description == "\(hdf5): not a .keras archive (a zip): it is an HDF5 file")

        let brokenWeights = directory.file("broken.keras")
        try writeZip(brokenWeights, [("config.json", Self.config, false),
                                     ("model.weights.h5", Data("garbage".utf8), false)])
        let archive = try KerasArchive.open(path: brokenWeights)
        var ran = false
        let error = #expect(throws: KerasImportError.self) {
            try archive.withWeightsFile { _ in ran = true }
        }
        #expect(!ran)
        #expect(error?.description
            == "\(brokenWeights)::model.weights.h5: not an HDF5 file (no HDF5 signature at offset 0, 512, 1024, …)")
    }
}
