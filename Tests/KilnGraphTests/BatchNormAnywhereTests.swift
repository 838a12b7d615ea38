import Testing
import KilnFormat
import KilnKernels
@testable import KilnGraph
@testable import KilnRuntime

/// Batch norms that follow no convolution, per-channel maps and channel arithmetic: the optimised bundle on the fast
/// and the reference kernels equals the graph as written on the reference interpreter (BN by its formula in Float64).
@Suite struct BatchNormAnywhereTests {
    func check(_ g: Graph, _ shape: [Int], expectOps: Set<OpCode>? = nil, tolerance: Float = 1e-5,
               sourceLocation: SourceLocation = #_sourceLocation) throws {
        var r = SeededRandom(state: 99)
        let input = (0..<shape.reduce(1, *)).map { _ in r.uniform(0, 255) }
        guard let port = g.outputs.first?.port, let want = try g.evaluateReference(input: input, shape: shape)[port] else {
            Issue.record("no reference output", sourceLocation: sourceLocation); return
        }
        var optimised = g
        try optimised.optimizeForInference()
        let frozen = try optimised.lower()
        if let expectOps { #expect(Set(frozen.ops.map(\.opcode)) == expectOps, "\(frozen.ops.map(\.opcode))", sourceLocation: sourceLocation) }
        for kernels in [KernelChoice.fast, .reference] {
            let got = try runThroughBundle(g, input: input, shape: shape, kernels: kernels)[0]
            let err = relativeMaxError(want.values, got.values)
            #expect(err <= tolerance, "\(kernels): max|Δ|/max|ref| = \(err)", sourceLocation: sourceLocation)
        }
    }

    func conv(_ r: inout SeededRandom, _ cin: Int, _ cout: Int, stride: Int = 1, padding: WindowPadding = .same, relu: Bool = false) -> GraphOp {
        .conv2d(ConvSpec(kernel: r.tensor([3, 3, cin, cout], -0.3, 0.3), bias: r.tensor([cout]), strideH: stride, strideW: stride,
                         padding: padding, activation: relu ? .relu : .none))
    }

    /// BN on the input, after a ReLU (before a 'same' stride-2 conv: folded with a constant pad of −shift/scale),
    /// after an Add (its ReLU fused: a ScaleShift with an activation), and in the head (GAP → BN → Dense: folded into the Dense).
    @Test func batchNormsEverywhere() throws {
        var r = SeededRandom(state: 3)
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 9, 9, 3]), inputs: []),
            GraphNode(name: "rescale", op: .broadcastAffine(scale: [1.0 / 255], shift: [0]), inputs: ["in"]),
            GraphNode(name: "input_bn", op: r.bn(3, epsilon: 1e-3), inputs: ["rescale"]),
            GraphNode(name: "conv1", op: conv(&r, 3, 8, relu: true), inputs: ["input_bn"]),
            GraphNode(name: "bn_after_relu", op: r.bn(8, epsilon: 1e-3), inputs: ["conv1"]),
            GraphNode(name: "conv2", op: conv(&r, 8, 8, stride: 2), inputs: ["bn_after_relu"]),
            GraphNode(name: "conv3", op: conv(&r, 8, 8, stride: 2), inputs: ["bn_after_relu"]),
            GraphNode(name: "add", op: .add(activation: .none), inputs: ["conv2", "conv3"]),
            GraphNode(name: "bn_after_add", op: r.bn(8, epsilon: 1e-5), inputs: ["add"]),
            GraphNode(name: "relu", op: .activation(.relu), inputs: ["bn_after_add"]),
            GraphNode(name: "gmp", op: .globalMaxPool, inputs: ["relu"]),
            GraphNode(name: "head_bn", op: r.bn(8, epsilon: 1e-3), inputs: ["gmp"]),
            GraphNode(name: "dense", op: .dense(DenseSpec(kernel: r.tensor([8, 4]), bias: r.tensor([4]), softmax: true)), inputs: ["head_bn"]),
        ], outputs: [GraphOutput(port: "dense", node: "dense")])
        try check(g, [2, 9, 9, 3], expectOps: [.pad, .conv2d, .scaleShift, .globalMaxPool, .dense, .softmax])
    }

    /// A batch norm after a Dense folds into it (no op of its own); one after an activation stays a ScaleShift.
    @Test func batchNormAfterDense() throws {
        var r = SeededRandom(state: 4)
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 6]), inputs: []),
            GraphNode(name: "dense", op: .dense(DenseSpec(kernel: r.tensor([6, 5]), bias: r.tensor([5]))), inputs: ["in"]),
            GraphNode(name: "bn", op: r.bn(5, epsilon: 1e-3), inputs: ["dense"]),
            GraphNode(name: "act", op: .activation(Activation(.tanh)), inputs: ["bn"]),
            GraphNode(name: "bn2", op: r.bn(5, epsilon: 1e-3), inputs: ["act"]),
        ], outputs: [GraphOutput(port: "bn2", node: "bn2")])
        try check(g, [3, 6], expectOps: [.dense, .scaleShift])
    }

    /// Keras 3's caffe preprocess_input written on the symbolic tensor (GetItem 2, 1, 0, Stack, Add of the negated
    /// means) resolves to the caffe map, and folds into the first convolution like `--preprocess caffe`.
    @Test func symbolicCaffePreprocessingIsRecognisedAndFolded() throws {
        var r = SeededRandom(state: 5)
        var g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 8, 8, 3]), inputs: []),
            GraphNode(name: "flip", op: .dropout, inputs: ["in"]),
            GraphNode(name: "b", op: .channelGather(.index(2)), inputs: ["flip"]),
            GraphNode(name: "g", op: .channelGather(.index(1)), inputs: ["flip"]),
            GraphNode(name: "r", op: .channelGather(.index(-3)), inputs: ["flip"]),
            GraphNode(name: "bgr", op: .channelStack, inputs: ["b", "g", "r"]),
            GraphNode(name: "mean", op: .broadcastAffine(scale: [1, 1, 1], shift: [-103.939, -116.779, -123.68]), inputs: ["bgr"]),
            GraphNode(name: "conv", op: conv(&r, 3, 4, stride: 2), inputs: ["mean"]),
            GraphNode(name: "gap", op: .globalAvgPool, inputs: ["conv"]),
        ], outputs: [GraphOutput(port: "gap", node: "gap")])
        try check(g, [1, 8, 8, 3], expectOps: [.pad, .conv2d, .globalAvgPool], tolerance: 2e-6)
        let own = try g.ownPreprocessing()
        #expect(own?.name == "caffe")
    }

    /// tf.keras' caffe form: x[..., ::-1] then bias_add of the negated means.
    @Test func reversedSliceIsTheCaffeMap() throws {
        var g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 4, 4, 3]), inputs: []),
            GraphNode(name: "rev", op: .channelGather(.slice(start: nil, stop: nil, step: -1)), inputs: ["in"]),
            GraphNode(name: "bias", op: .broadcastAffine(scale: [1], shift: [-103.939, -116.779, -123.68]), inputs: ["rev"]),
            GraphNode(name: "pool", op: .globalAvgPool, inputs: ["bias"]),
        ], outputs: [GraphOutput(port: "pool", node: "pool")])
        #expect(try g.ownPreprocessing()?.name == "caffe")
    }

    /// Rescaling then Normalization merge into one map, which folds into the convolution.
    @Test func consecutiveMapsMerge() throws {
        var r = SeededRandom(state: 6)
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 7, 7, 3]), inputs: []),
            GraphNode(name: "rescale", op: .broadcastAffine(scale: [1.0 / 127.5], shift: [-1]), inputs: ["in"]),
            GraphNode(name: "norm", op: .broadcastAffine(scale: [2, 0.5, 1.5], shift: [0.1, -0.2, 0.3]), inputs: ["rescale"]),
            GraphNode(name: "conv", op: conv(&r, 3, 5, padding: .valid), inputs: ["norm"]),
        ], outputs: [GraphOutput(port: "conv", node: "conv")])
        try check(g, [2, 7, 7, 3], expectOps: [.conv2d], tolerance: 2e-6)
    }
}
