import Testing
import KilnFormat
@testable import KilnGraph
@testable import KilnRuntime

@Suite struct PreprocessingFoldTests {
    /// Stems as real models have them: ZeroPadding + valid conv (Keras ResNet), a 'same' conv, a conv with
    /// explicit padding (ONNX), an unpadded conv.
    enum Stem: String, CaseIterable, Sendable { case zeroPadThenValid, same, explicit, unpadded }

    func graph(_ stem: Stem, _ r: inout SeededRandom) -> Graph {
        var nodes = [GraphNode(name: "in", op: .input(shape: [nil, nil, nil, 3]), inputs: [])]
        let kernel = r.tensor([3, 3, 3, 4], -0.5, 0.5), bias = r.tensor([4])
        switch stem {
        case .zeroPadThenValid:
            nodes.append(GraphNode(name: "pad", op: .zeroPad(top: 2, bottom: 1, left: 1, right: 2), inputs: ["in"]))
            nodes.append(GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: kernel, bias: bias, strideH: 2, strideW: 2, padding: .valid)), inputs: ["pad"]))
        case .same:
            nodes.append(GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: kernel, bias: bias, strideH: 1, strideW: 1, padding: .same)), inputs: ["in"]))
        case .explicit:
            nodes.append(GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: kernel, bias: nil, strideH: 1, strideW: 2,
                                                                      padding: .explicit(top: 1, bottom: 1, left: 0, right: 2))), inputs: ["in"]))
        case .unpadded:
            nodes.append(GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: kernel, bias: bias, strideH: 1, strideW: 1, padding: .valid)), inputs: ["in"]))
        }
        nodes.append(GraphNode(name: "relu", op: .activation(.relu), inputs: ["conv"]))
        nodes.append(GraphNode(name: "gap", op: .globalAvgPool, inputs: ["relu"]))
        return Graph(nodes: nodes, outputs: [GraphOutput(port: "conv", node: "conv"), GraphOutput(port: "gap", node: "gap")])
    }

    /// Raw pixels through the folded bundle equal the framework's preprocessing + the unfolded model,
    /// borders included (the conv output itself is compared, not only the pooled value).
    @Test(arguments: Preprocessing.allCases, Stem.allCases)
    func foldedBundleOnRawPixelsEqualsPreprocessingPlusModel(preprocessing: Preprocessing, stem: Stem) throws {
        var r = SeededRandom(state: 11)
        var g = graph(stem, &r)
        try g.prependPreprocessing(preprocessing)
        let shape = [2, 9, 11, 3]
        let raw = (0..<shape.reduce(1, *)).map { _ in r.uniform(0, 255).rounded() }
        let want = try g.evaluateReference(input: raw, shape: shape)
        let got = try runThroughBundle(g, input: raw, shape: shape, kernels: .reference)
        #expect(got[0].shape == want["conv"]!.shape)
        let err = relativeMaxError(want["conv"]!.values, got[0].values)
        #expect(err < 2e-5, "conv output error \(err)")
        #expect(relativeMaxError(want["gap"]!.values, got[1].values) < 2e-5)
    }

    @Test func caffeIsBGRMinusTheImageNetMeans() throws {
        // Independent of our fold: the interpreter applies the affine as Keras' preprocess_input does.
        let g = Graph(nodes: [GraphNode(name: "in", op: .input(shape: [nil, 1, 1, 3]), inputs: [])],
                      outputs: [GraphOutput(port: "in", node: "in")])
        var p = g
        try p.prependPreprocessing(.caffe)
        p.outputs = [GraphOutput(port: "x", node: "preprocess_caffe")]
        let out = try p.evaluateReference(input: [10, 20, 30], shape: [1, 1, 1, 3])["x"]!.values
        let expected: [Float] = [Float(30) - Float(103.939), Float(20) - Float(116.779), Float(10) - Float(123.68)]
        #expect(out == expected)
    }

    @Test func thePadHoldsTheMeanInRawPixelOrder() throws {
        var r = SeededRandom(state: 2)
        var g = graph(.zeroPadThenValid, &r)
        try g.prependPreprocessing(.caffe)
        try g.optimizeForInference()
        guard case let .constantPad(t, b, l, rr, values)? = g.node(named: "pad")?.op else {
            Issue.record("no constant pad: \(g.nodes.map(\.op.kindName))"); return
        }
        #expect([t, b, l, rr] == [2, 1, 1, 2])
        let rgbMeans: [Float] = [123.68, 116.779, 103.939]
        #expect(values == rgbMeans)  // R, G, B
    }

    @Test func preprocessingBeforeSomethingElseIsRefused() throws {
        var g = Graph(nodes: [GraphNode(name: "in", op: .input(shape: [nil, 4, 4, 3]), inputs: []),
                              GraphNode(name: "pool", op: .maxPool(Pool2DAttributes(kernelH: 2, kernelW: 2, strideH: 2, strideW: 2, padding: .valid)), inputs: ["in"])],
                      outputs: [GraphOutput(port: "pool", node: "pool")])
        try g.prependPreprocessing(.caffe)
        #expect {
            try g.optimizeForInference()
        } throws: { error in
            "\(error)".contains("layer 'pool'") && "\(error)".contains("MaxPooling2D")
        }
    }
}

@Suite struct AttachHeadTests {
    func backbone() -> Graph {
        var r = SeededRandom(state: 5)
        return Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 8, 8, 3]), inputs: []),
            GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: r.tensor([3, 3, 3, 6]), bias: r.tensor([6]), strideH: 1, strideW: 1, padding: .same)), inputs: ["in"]),
            GraphNode(name: "avg_pool", op: .globalAvgPool, inputs: ["conv"]),
            GraphNode(name: "predictions", op: .dense(DenseSpec(kernel: r.tensor([6, 10]), bias: r.tensor([10]), softmax: true)), inputs: ["avg_pool"]),
        ], outputs: [GraphOutput(port: "predictions", node: "predictions")])
    }

    func head(features: Int, name: String = "dense") -> Graph {
        var r = SeededRandom(state: 6)
        return Graph(nodes: [
            GraphNode(name: "head_in", op: .input(shape: [nil, features]), inputs: []),
            GraphNode(name: "drop", op: .dropout, inputs: ["head_in"]),
            GraphNode(name: name, op: .dense(DenseSpec(kernel: r.tensor([features, 3]), bias: r.tensor([3]), softmax: true)), inputs: ["drop"]),
        ], outputs: [GraphOutput(port: name, node: name)])
    }

    @Test func headReplacesTheClassifier() throws {
        let fused = try backbone().attachingHead(head(features: 6), cut: try backbone().defaultCut(), backboneName: "b.h5", headName: "h.h5")
        #expect(fused.node(named: "predictions") == nil)
        #expect(fused.outputs == [GraphOutput(port: "dense", node: "dense")])
        #expect(fused.node(named: "drop")?.inputs == ["avg_pool"])
        let x = (0..<(8 * 8 * 3)).map { Float($0 % 17) - 8 }
        // The fused graph equals the head run on the backbone's pooled features.
        let features = try backbone().evaluateReference(input: x, shape: [1, 8, 8, 3])
        var b = backbone()
        b.outputs = [GraphOutput(port: "avg_pool", node: "avg_pool")]
        let pooled = try b.evaluateReference(input: x, shape: [1, 8, 8, 3])["avg_pool"]!.values
        let headOut = try head(features: 6).evaluateReference(input: pooled, shape: [1, 6])["dense"]!.values
        #expect(features["predictions"] != nil)
        #expect(try fused.evaluateReference(input: x, shape: [1, 8, 8, 3])["dense"]!.values == headOut)
    }

    @Test func collidingHeadNamesArePrefixed() throws {
        let fused = try backbone().attachingHead(head(features: 6, name: "conv"), cut: "avg_pool", backboneName: "b", headName: "h")
        #expect(fused.outputs == [GraphOutput(port: "conv", node: "head/conv")])
    }

    @Test func sizeMismatchNamesBothSides() {
        #expect {
            _ = try backbone().attachingHead(head(features: 2048), cut: "avg_pool", backboneName: "backbone.h5", headName: "head.h5")
        } throws: { error in
            "\(error)" == "head.h5: the head takes (2048) but the backbone's 'avg_pool' in backbone.h5 gives (6)"
        }
    }

    @Test func unknownCutListsTheCandidates() {
        #expect {
            _ = try backbone().attachingHead(head(features: 6), cut: "pool5", backboneName: "backbone.h5", headName: "head.h5")
        } throws: { error in
            "\(error)" == "backbone.h5: no layer 'pool5' to cut at (pooling layers: avg_pool)"
        }
    }

    @Test func bundlesLiftBackToTheSameGraph() throws {
        var b = backbone()
        try b.optimizeForInference()
        let frozen = try b.lower()
        let lifted = try Graph(frozen: frozen)
        let x = (0..<(8 * 8 * 3)).map { Float($0 % 5) }
        let a = try b.evaluateReference(input: x, shape: [1, 8, 8, 3])["predictions"]!.values
        let c = try lifted.evaluateReference(input: x, shape: [1, 8, 8, 3])["predictions"]!.values
        #expect(a == c)
    }
}
