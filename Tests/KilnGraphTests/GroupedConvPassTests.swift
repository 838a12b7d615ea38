import Testing
import KilnFormat
@testable import KilnGraph
@testable import KilnRuntime

/// The passes on grouped and depthwise convolutions: MobileNet's correct_pad (ZeroPadding2D((0,1),(0,1)) before a
/// valid stride-2 depthwise convolution) becomes the convolution's own padding, the BatchNormalization after it and
/// the ReLU6 after that fold into it, and the result equals the unoptimised graph on the reference interpreter.
@Suite struct GroupedConvPassTests {
    static func mobileNetBlock(channels c: Int, multiplier m: Int, rng: inout SeededRandom) -> Graph {
        Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, nil, nil, c]), inputs: []),
            GraphNode(name: "pad", op: .zeroPad(top: 0, bottom: 1, left: 0, right: 1), inputs: ["in"]),
            GraphNode(name: "dw", op: .conv2d(ConvSpec(kernel: rng.tensor([3, 3, 1, c * m]), bias: nil, strideH: 2, strideW: 2,
                                                       padding: .valid, groups: c)), inputs: ["pad"]),
            GraphNode(name: "dw_bn", op: rng.bn(c * m, epsilon: 1e-3), inputs: ["dw"]),
            GraphNode(name: "dw_relu", op: .activation(Activation(.linear, minimum: 0, maximum: 6)), inputs: ["dw_bn"]),
            GraphNode(name: "grouped", op: .conv2d(ConvSpec(kernel: rng.tensor([1, 1, c * m / 2, 6]), bias: rng.tensor([6]),
                                                            strideH: 1, strideW: 1, padding: .valid, groups: 2)), inputs: ["dw_relu"]),
            GraphNode(name: "cat", op: .concat, inputs: ["grouped", "dw_relu"]),
        ], outputs: [GraphOutput(port: "cat", node: "cat")])
    }

    @Test(arguments: [(6, 1), (3, 2)])
    func padBatchNormAndClampFoldIntoTheDepthwiseConvolution(_ shape: (Int, Int)) throws {
        var rng = SeededRandom(state: 17)
        let graph = Self.mobileNetBlock(channels: shape.0, multiplier: shape.1, rng: &rng)
        var optimized = graph
        try optimized.optimizeForInference()
        #expect(optimized.nodes.map(\.name) == ["in", "dw", "grouped", "cat"])
        guard case .conv2d(let dw)? = optimized.node(named: "dw")?.op else { Issue.record("no depthwise conv"); return }
        #expect(dw.padding == .explicit(top: 0, bottom: 1, left: 0, right: 1))
        #expect(dw.groups == shape.0)
        #expect(dw.activation == Activation(.linear, minimum: 0, maximum: 6))
        #expect(optimized.node(named: "dw")?.fusedLayers == ["pad", "dw_bn", "dw_relu"])

        let inputShape = [2, 10, 8, shape.0]
        let x = (0..<inputShape.reduce(1, *)).map { _ in rng.uniform(-2, 2) }
        let want = try #require(try graph.evaluateReference(input: x, shape: inputShape)["cat"])
        for kernels in [KernelChoice.fast, .reference] {
            let got = try runThroughBundle(graph, input: x, shape: inputShape, kernels: kernels)
            #expect(got[0].shape == want.shape)
            #expect(relativeMaxError(want.values, got[0].values) <= 1e-5, "\(kernels)")
        }
    }
}
