// Fuzz target `onnx`: the bytes as an ONNX model (`ONNXImporter.importModel(data:)`, external data refused),
// then what `kiln convert` does with the graph (Convert.swift).
import Foundation
import KilnGraph
import KilnKernels
import KilnONNX

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzONNX(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let graph: Graph
    do { graph = try ONNXImporter.importModel(data: Data(bytes), fileName: "fuzz.onnx", folder: nil) } catch { return 0 }
    convertAndLoad(graph)
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initializeONNX(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutableRawPointer?) -> CInt {
    setKernelThreads(1)
    return 0
}
