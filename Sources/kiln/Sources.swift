import ArgumentParser
import Foundation
import KilnGraph
import KilnKeras
import KilnONNX

/// Reads any model file `kiln` accepts into the conversion IR, choosing the importer by content, never by
/// extension alone: HDF5 or zip → Keras; a protobuf that starts like an ONNX ModelProto → ONNX. A file
/// that is neither but is named `.onnx` goes to the ONNX importer, which says why it is not a model.
/// `topology` names a built-in Keras topology for a weights-only file (`--topology`).
func importSource(path: String, config: String?, topology: String? = nil) throws -> Graph {
    if config != nil, topology != nil { throw ValidationError("--config and --topology exclude each other") }
    switch try KerasFileKind.detect(path: path, displayName: (path as NSString).lastPathComponent) {
    case .hdf5, .zip:
        return try KerasImporter.importModel(path: path, configPath: config, topology: topology)
    case .unknown:
        if ONNXImporter.looksLikeONNX(path: path) || path.lowercased().hasSuffix(".onnx") {
            if config != nil {
                throw ValidationError("--config applies to Keras weights files, not to ONNX models")
            }
            if topology != nil {
                throw ValidationError("--topology applies to Keras weights files, not to ONNX models")
            }
            return try ONNXImporter.importModel(path: path)
        }
        return try KerasImporter.importModel(path: path, configPath: config, topology: topology)
    }
}
