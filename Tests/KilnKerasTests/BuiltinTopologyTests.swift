import Foundation
import Testing
import KilnFormat
import KilnGraph
@testable import KilnKeras

/// The built-in topologies: a weights-only file is read with the entry its layer names match, or the one named;
/// a file that matches none is refused with its name.
@Suite struct BuiltinTopologyTests {
    func importError(_ body: () throws -> Graph) -> String {
        do { _ = try body(); return "no error" } catch { return "\(error)" }
    }

    @Test func registryHasResNet50WithCaffe() throws {
        let entry = try #require(BuiltinTopology.named("resnet50"))
        #expect(entry.preprocessing == .caffe)
        #expect(BuiltinTopology.named("mobilenet") == nil)
        #expect(Set(BuiltinTopology.all.map(\.name)).count == BuiltinTopology.all.count)
    }

    @Test(arguments: ["mini.weights.h5", "mini_applications.h5", "mini_applications_notop.h5"])
    func weightsOnlyFilesMatchResNet50(file: String) throws {
        let path = MiniSamples.path(file)
        let matched = try KerasImporter.importModel(path: path)
        let named = try KerasImporter.importModel(path: path, topology: "resnet50")
        guard case .string(let recorded)? = matched.metadata[.sourceTopology] else { Issue.record("no source.topology"); return }
        #expect(recorded.hasPrefix("builtin:resnet50"))
        #expect(named.metadata[.sourceTopology] == matched.metadata[.sourceTopology])
        #expect(BuiltinTopology.recognizing(matched)?.name == "resnet50")
    }

    @Test func savedModelIsRecognizedByItsLayerNames() throws {
        let graph = try KerasImporter.importModel(path: MiniSamples.path("mini_k3.h5"))
        #expect(graph.metadata[.sourceTopology] == nil)
        #expect(BuiltinTopology.recognizing(graph)?.preprocessing == .caffe)
        let ops = try KerasImporter.importModel(path: MiniSamples.path("ops_k3.h5"))
        #expect(BuiltinTopology.recognizing(ops) == nil)
    }

    @Test func unknownNameAndOwnConfigAreRefused() {
        #expect(importError { try KerasImporter.importModel(path: MiniSamples.path("mini.weights.h5"), topology: "vgg99") }
            == "mini.weights.h5: no built-in topology 'vgg99' (known: resnet50, mobilenetv2, densenet201, densenet201-keras2, densenet169, densenet169-keras2, densenet121, densenet121-keras2)")
        #expect(importError { try KerasImporter.importModel(path: MiniSamples.path("mini_k3.h5"), topology: "resnet50") }
            .hasPrefix("mini_k3.h5: has its own model config"))
    }

    /// A legacy weights-only file of one Dense layer: no built-in topology has it.
    @Test func weightsOfAnotherModelMatchNone() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/kiln-topology-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/dense_only.h5"
        let writer = try HDF5Writer(path: path)
        try writer.writeStringArrayAttribute(on: "/", name: "layer_names", values: ["dense_1"])
        try writer.createGroup("/dense_1")
        try writer.createGroup("/dense_1/dense_1")
        try writer.writeStringArrayAttribute(on: "/dense_1", name: "weight_names", values: ["dense_1/kernel:0", "dense_1/bias:0"])
        try writer.writeDataset("/dense_1/dense_1/kernel:0", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        try writer.writeDataset("/dense_1/dense_1/bias:0", shape: [3], values: [0, 0, 0])
        try writer.finish()
        #expect(importError { try KerasImporter.importModel(path: path) }
            == "dense_only.h5: holds weights only (no model config) and its layers match no built-in topology (resnet50, mobilenetv2, densenet201, densenet201-keras2, densenet169, densenet169-keras2, densenet121, densenet121-keras2); give its config with --config or a topology with --topology")
    }
}
