import KilnGraph
import KilnKeras

/// Reads any model file `kiln` accepts into the conversion IR, choosing the importer by content.
/// (The ONNX importer plugs in here.)
func importSource(path: String, config: String?) throws -> Graph {
    try KerasImporter.importModel(path: path, configPath: config)
}
