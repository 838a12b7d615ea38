import Foundation
import Testing
import KilnFormat
import KilnGraph
import KilnRuntime
@testable import KilnONNX

@Suite struct ONNXSampleParityTests {
    @Test func manifestIsPresent() {
        #expect(ONNXSamples.parityCases.count >= 8)
        #expect(ONNXSamples.cases.contains { $0.kind == "light" })
    }

    /// Every sample → bundle → runtime matches onnxruntime: max|Δ|/max|ref| ≤ 1e-4 on every output, same top-1;
    /// no training-time op survives; the metadata records the source and the input layout.
    @Test(arguments: ONNXSamples.parityCases)
    func bundleMatchesOnnxRuntime(_ c: ONNXSamples.Case) throws {
        let input = try NPY.read(path: ONNXSamples.path(try #require(c.input)))
        let (model, outputs, _) = try convertAndRun(ONNXSamples.path(c.model), input: input)
        let expected = try #require(c.expected)
        #expect(outputs.count == expected.count)
        for (k, file) in expected.enumerated() where k < outputs.count {
            let want = try NPY.read(path: ONNXSamples.path(file))
            #expect(outputs[k].values.count == want.values.count, "\(c.outputs[k]): \(outputs[k].shape) vs \(want.shape)")
            let err = relativeMaxError(want.values, outputs[k].values)
            #expect(err <= 1e-4, "\(c) \(c.outputs[k]): max|Δ|/max|ref| = \(err)")
            print("onnx parity \(c) \(c.outputs[k]): \(err)")
        }
        if let top1 = c.top1 { #expect(argmaxRows(outputs[0]) == top1) }
        let meta = model.frozen.metadata
        #expect(meta["source.format"] == .string("onnx"))
        #expect(meta["source.framework"] == .string("onnx"))
        #expect(meta["source.onnx_opset"] == .int(Int64(c.opset)))
        #expect(meta["input.layout"] == .string(c.layout))
        #expect(meta["source.producer"] != nil)
        let ops = Set(model.frozen.ops.map { "\($0.opcode)" })
        #expect(!ops.contains { $0.contains("Batch") || $0.contains("Dropout") })
    }

    /// The importer's graph, before any pass, run by the reference interpreter (BatchNorm as its formula):
    /// the same outputs. Separates importer mistakes from pass mistakes.
    @Test(arguments: ONNXSamples.parityCases.filter { $0.kind != "tf2onnx" })
    func unfoldedGraphMatchesOnnxRuntime(_ c: ONNXSamples.Case) throws {
        let input = try NPY.read(path: ONNXSamples.path(try #require(c.input)))
        let graph = try ONNXImporter.importModel(path: ONNXSamples.path(c.model))
        let outputs = try graph.evaluateReference(input: input.values, shape: input.shape)
        for (k, file) in (c.expected ?? []).enumerated() {
            let want = try NPY.read(path: ONNXSamples.path(file))
            let got = try #require(outputs[c.outputs[k]] ?? outputs[graph.outputs[k].port])
            let err = relativeMaxError(want.values, got.values)
            #expect(err <= 1e-4, "\(c) \(c.outputs[k]): \(err)")
        }
    }

    /// An NCHW model takes its input through one transpose; a tf2onnx model's leading NHWC → NCHW
    /// Transpose costs nothing; a 2×2 feature map is transposed back before Flatten (NCHW element order).
    @Test func layoutsCostOnlyTheTransposesTheyNeed() throws {
        func transposes(_ file: String) throws -> [String] {
            var g = try ONNXImporter.importModel(path: ONNXSamples.path(file))
            try g.optimizeForInference()
            return g.nodes.compactMap { if case .transpose = $0.op { return $0.name } else { return nil } }
        }
        #expect(try transposes("micro_v15_opset13.onnx") == ["input/nhwc"])
        #expect(try transposes("keras_ops_tf2onnx.onnx").isEmpty)
        #expect(try transposes("ops_opset17.onnx") == ["dv/nchw"])
    }

    /// Symbolic batch and spatial sizes stay free in the bundle; fixed ones are kept.
    @Test func inputShapesFollowTheModel() throws {
        func inputShape(_ file: String) throws -> [Int64] {
            var g = try ONNXImporter.importModel(path: ONNXSamples.path(file))
            try g.optimizeForInference()
            return try g.lower().inputs[0].shape
        }
        #expect(try inputShape("micro_v15_opset13.onnx") == [-1, 3, -1, -1])
        #expect(try inputShape("micro_v1_opset9.onnx") == [2, 3, 40, 48])
        #expect(try inputShape("keras_ops_tf2onnx.onnx") == [-1, 15, 16, 3])
    }

    /// BatchNormalization after a Relu cannot fold into a convolution: it becomes an exact diagonal 1×1
    /// convolution; Sub/Div after a pool likewise (the Div then folds into it); MatMul + Add + Mul is one Dense.
    @Test func perChannelAffinesAreSettled() throws {
        var g = try ONNXImporter.importModel(path: ONNXSamples.path("ops_opset17.onnx"))
        try g.optimizeForInference()
        let kinds = g.nodes.map(\.op.kindName)
        #expect(!kinds.contains("BatchNormalization"))
        #expect(kinds.filter { $0 == "Dense" }.count == 1)
        #expect(kinds.filter { $0 == "Conv2D" }.count == 4)
    }

    /// ONNX's own test model (caffe2's ResNet-50, opset 9, weights from ConstantOfShape) within its shipped
    /// tolerances (rtol 1e-3, atol 1e-7) on the input ONNX's test runner feeds it (arange / n).
    @Test func lightResNet50MatchesItsShippedOutput() throws {
        let c = try #require(ONNXSamples.cases.first { $0.kind == "light" })
        let want = try ONNXImporter.readTensor(path: ONNXSamples.path(try #require(c.expected_pb)))
        var graph = try ONNXImporter.importModel(path: ONNXSamples.path(c.model))
        try graph.optimizeForInference()
        let model = try Model(bundle: try Bundle(bytes: try BundleWriter.serialize(try graph.lower())))
        let shape = model.frozen.inputs[0].shape.map { Int($0) }
        #expect(shape == [1, 3, 224, 224])
        let n = shape.reduce(1, *)
        let input = Tensor(shape: shape, values: (0..<n).map { Float(Double($0) / Double(n)) })
        let got = try model.run(input)[0]
        #expect(got.shape == want.shape)
        let ratio = allcloseRatio(want.values, got.values, rtol: try #require(c.rtol), atol: try #require(c.atol))
        #expect(ratio <= 1, "light_resnet50: worst |Δ| / (atol + rtol·|ref|) = \(ratio)")
        print("light_resnet50: worst |Δ|/(atol + rtol·|ref|) = \(ratio), max|Δ|/max|ref| = \(relativeMaxError(want.values, got.values))")
    }

    @Test func sniffingTellsONNXFromOtherFiles() {
        #expect(ONNXImporter.looksLikeONNX(path: ONNXSamples.path("micro_v1_opset7.onnx")))
        #expect(ONNXImporter.looksLikeONNX(path: ONNXSamples.path("light/light_resnet50.onnx")))
        #expect(ONNXImporter.looksLikeONNX(path: ONNXSamples.path("keras_ops_tf2onnx.onnx")))
        #expect(!ONNXImporter.looksLikeONNX(path: ONNXSamples.path("../mini/mini_k3.h5")))
        #expect(!ONNXImporter.looksLikeONNX(path: ONNXSamples.path("../mini/mini.keras")))
        #expect(!ONNXImporter.looksLikeONNX(path: ONNXSamples.path("manifest.json")))
        #expect(!ONNXImporter.looksLikeONNX(path: ONNXSamples.path("input_ops_nhwc.npy")))
    }
}
