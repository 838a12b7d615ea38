// Fuzz target `npy`: the bytes as a NumPy `.npy` file through `NPY.parse`. What it accepts must write back
// (`NPY.serialize`, version 1.0 `<f4`) and read back to the same shape and the same float32 bit patterns.
#if canImport(Glibc)
import Glibc
#endif
import KilnRuntime

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNPY(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let tensor: Tensor
    do { tensor = try NPY.parse(bytes, file: "fuzz.npy") } catch { return 0 }
    guard tensor.values.count == tensor.shape.reduce(1, *) else {
        fuzzFailure("shape \(tensor.shape) with \(tensor.values.count) values")
    }
    let again: Tensor
    do { again = try NPY.parse(NPY.serialize(tensor), file: "again.npy") } catch {
        fuzzFailure("an accepted array does not read back after writing: \(error)")
    }
    guard again.shape == tensor.shape,
          again.values.map(\.bitPattern) == tensor.values.map(\.bitPattern) else {
        fuzzFailure("array of shape \(tensor.shape) changed in a write and read back")
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initializeNPY(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutableRawPointer?) -> CInt {
    guard let dir = seedDirectoryRequested() else { return 0 }
    // Version 1.0 `<f4` of several ranks (as NPY.serialize writes them), and hand-made f8, version 2.0 and 3.0 headers.
    let shapes: [[Int]] = [[], [3], [2, 3], [1, 2, 2, 3], [2, 1, 1, 1, 1]]
    for shape in shapes {
        let t = Tensor(shape: shape, values: pseudoRandomFloats(shape.reduce(1, *)))
        writeSeed(NPY.serialize(t), directory: dir, name: "f4_rank\(shape.count).npy")
    }
    func handMade(major: UInt8, descr: String, shape: String, payload: [UInt8]) -> [UInt8] {
        var header = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }".utf8)
        let prefix = major == 1 ? 10 : 12
        while (prefix + header.count + 1) % 64 != 0 { header.append(0x20) }
        header.append(0x0A)
        var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, major, 0]
        let n = header.count
        out += major == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), 0, 0]
        return out + header + payload
    }
    let doubles: [Double] = [1.5, -2.25, 1e300, 0]
    let f8 = doubles.flatMap { d in (0..<8).map { UInt8(truncatingIfNeeded: d.bitPattern >> (8 * $0)) } }
    writeSeed(handMade(major: 1, descr: "<f8", shape: "(2, 2)", payload: f8), directory: dir, name: "f8.npy")
    let f4 = [Float(1), -1, 0.5].flatMap { f in (0..<4).map { UInt8(truncatingIfNeeded: f.bitPattern >> (8 * $0)) } }
    writeSeed(handMade(major: 2, descr: "<f4", shape: "(3,)", payload: f4), directory: dir, name: "v2.npy")
    writeSeed(handMade(major: 3, descr: "=f4", shape: "(1, 3)", payload: f4), directory: dir, name: "v3.npy")
    writeSeed(handMade(major: 1, descr: "<f4", shape: "(0, 4)", payload: []), directory: dir, name: "empty.npy")
    exit(0)
}
