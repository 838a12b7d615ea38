#if canImport(Glibc)
import Glibc
#endif
import Testing
import KilnFormat
import KilnKernels
@testable import KilnGraph
@testable import KilnRuntime

/// A seeded generator (SplitMix64) so the random graphs are the same on every run.
struct SeededRandom {
    var generator: SplitMix64
    init(state: UInt64) { generator = SplitMix64(seed: state) }
    mutating func next() -> UInt64 { generator.next() }
    mutating func uniform(_ lo: Float, _ hi: Float) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }
    mutating func tensor(_ shape: [Int], _ lo: Float = -1, _ hi: Float = 1) -> WeightTensor {
        WeightTensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in uniform(lo, hi) })
    }
    mutating func bn(_ c: Int, epsilon: Double, scale: Bool = true, center: Bool = true) -> GraphOp {
        .batchNorm(BatchNormSpec(epsilon: epsilon, gamma: scale ? (0..<c).map { _ in uniform(0.5, 1.5) } : nil,
                                 beta: center ? (0..<c).map { _ in uniform(-0.3, 0.3) } : nil,
                                 mean: (0..<c).map { _ in uniform(-0.2, 0.2) }, variance: (0..<c).map { _ in uniform(0.3, 2) }))
    }
}

/// Runs the optimised graph through the whole lean path: lower, serialise, load, execute.
func runThroughBundle(_ graph: Graph, input: [Float], shape: [Int], kernels: KernelChoice) throws -> [Tensor] {
    var g = graph
    try g.optimizeForInference()
    let bytes = try BundleWriter.serialize(try g.lower())
    let model = try Model(bundle: try Bundle(bytes: bytes))
    return try model.run(Tensor(shape: shape, values: input), kernels: kernels)
}

func relativeMaxError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    let scale = max(a.map(abs).max() ?? 0, 1e-30)
    return zip(a, b).map { abs($0 - $1) }.max().map { $0 / scale } ?? 0
}

@Suite struct BatchNormFoldTests {
    /// Worked by hand: W = 2, b = 1, gamma = 3, beta = 0.5, mean = 1, var = 3, eps = 1:
    /// s = 3 / sqrt(3 + 1) = 1.5, W' = 2 · 1.5 = 3, b' = (1 − 1) · 1.5 + 0.5 = 0.5.
    @Test func foldsByTheFormula() throws {
        var g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 1, 1, 1]), inputs: []),
            GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: WeightTensor(shape: [1, 1, 1, 1], values: [2]),
                                                         bias: WeightTensor(shape: [1], values: [1]), strideH: 1, strideW: 1, padding: .valid)),
                      inputs: ["in"]),
            GraphNode(name: "bn", op: .batchNorm(BatchNormSpec(epsilon: 1, gamma: [3], beta: [0.5], mean: [1], variance: [3])), inputs: ["conv"]),
        ], outputs: [GraphOutput(port: "bn", node: "bn")])
        try g.optimizeForInference()
        #expect(g.nodes.count == 2)
        guard case .conv2d(let c) = g.nodes[1].op else { Issue.record("no conv"); return }
        #expect(c.kernel.values == [3])
        #expect(c.bias?.values == [0.5])
        #expect(g.nodes[1].fusedLayers == ["bn"])
        #expect(g.outputs == [GraphOutput(port: "bn", node: "conv")])
    }

    /// Without a conv bias, with center/scale off, and per-layer epsilon.
    @Test(arguments: [(true, true, 1.001e-5), (false, true, 1e-3), (true, false, 1e-5), (false, false, 0.1)])
    func foldMatchesUnfolded(scale: Bool, center: Bool, epsilon: Double) throws {
        var r = SeededRandom(state: 7)
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 6, 5, 3]), inputs: []),
            GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: r.tensor([3, 3, 3, 4]), bias: scale ? nil : r.tensor([4]),
                                                         strideH: 1, strideW: 1, padding: .same)), inputs: ["in"]),
            GraphNode(name: "bn", op: r.bn(4, epsilon: epsilon, scale: scale, center: center), inputs: ["conv"]),
        ], outputs: [GraphOutput(port: "bn", node: "bn")])
        let x = (0..<(2 * 6 * 5 * 3)).map { _ in r.uniform(-2, 2) }
        let want = try g.evaluateReference(input: x, shape: [2, 6, 5, 3])["bn"]!.values
        for kernels in [KernelChoice.reference, .fast] {
            let got = try runThroughBundle(g, input: x, shape: [2, 6, 5, 3], kernels: kernels)[0].values
            #expect(relativeMaxError(want, got) < 1e-5)
        }
    }
}

@Suite struct WholeGraphPassTests {
    /// Every op and pass at once: padded strided stem, BN variants, pad+maxpool fold, projection and
    /// identity residuals, average pools, dropout, dense layers.
    func resnetLikeGraph() -> Graph {
        var r = SeededRandom(state: 42)
        let nodes: [GraphNode] = [
            GraphNode(name: "in", op: .input(shape: [nil, nil, nil, 3]), inputs: []),
            GraphNode(name: "pad0", op: .zeroPad(top: 1, bottom: 2, left: 0, right: 1), inputs: ["in"]),
            GraphNode(name: "conv0", op: .conv2d(ConvSpec(kernel: r.tensor([3, 3, 3, 8]), bias: nil, strideH: 2, strideW: 2, padding: .valid)), inputs: ["pad0"]),
            GraphNode(name: "bn0", op: r.bn(8, epsilon: 1e-3, center: false), inputs: ["conv0"]),
            GraphNode(name: "relu0", op: .activation(.relu), inputs: ["bn0"]),
            GraphNode(name: "pad1", op: .zeroPad(top: 1, bottom: 1, left: 1, right: 1), inputs: ["relu0"]),
            GraphNode(name: "pool1", op: .maxPool(Pool2DAttributes(kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padding: .valid)), inputs: ["pad1"]),
            GraphNode(name: "a_conv", op: .conv2d(ConvSpec(kernel: r.tensor([3, 3, 8, 8]), bias: r.tensor([8]), strideH: 1, strideW: 1, padding: .same)), inputs: ["pool1"]),
            GraphNode(name: "a_bn", op: r.bn(8, epsilon: 1.001e-5, scale: false), inputs: ["a_conv"]),
            GraphNode(name: "short", op: .conv2d(ConvSpec(kernel: r.tensor([1, 1, 8, 8]), bias: r.tensor([8]), strideH: 1, strideW: 1, padding: .valid)), inputs: ["pool1"]),
            GraphNode(name: "short_bn", op: r.bn(8, epsilon: 1.001e-5), inputs: ["short"]),
            GraphNode(name: "add", op: .add(activation: .none), inputs: ["short_bn", "a_bn"]),
            GraphNode(name: "out", op: .activation(.relu), inputs: ["add"]),
            GraphNode(name: "b_conv", op: .conv2d(ConvSpec(kernel: r.tensor([1, 1, 8, 8]), bias: r.tensor([8]), strideH: 1, strideW: 1, padding: .valid)), inputs: ["out"]),
            GraphNode(name: "b_bn", op: r.bn(8, epsilon: 1e-3), inputs: ["b_conv"]),
            GraphNode(name: "b_add", op: .add(activation: .none), inputs: ["out", "b_bn"]),
            GraphNode(name: "b_out", op: .activation(.relu), inputs: ["b_add"]),
            GraphNode(name: "avg", op: .avgPool(Pool2DAttributes(kernelH: 2, kernelW: 2, strideH: 2, strideW: 2, padding: .same)), inputs: ["b_out"]),
            GraphNode(name: "gap", op: .globalAvgPool, inputs: ["avg"]),
            GraphNode(name: "drop", op: .dropout, inputs: ["gap"]),
            GraphNode(name: "hidden", op: .dense(DenseSpec(kernel: r.tensor([8, 6]), bias: r.tensor([6]), activation: .relu)), inputs: ["drop"]),
            GraphNode(name: "linear", op: .activation(.none), inputs: ["hidden"]),
            GraphNode(name: "predictions", op: .dense(DenseSpec(kernel: r.tensor([6, 5]), bias: r.tensor([5]), softmax: true)), inputs: ["linear"]),
        ]
        return Graph(nodes: nodes, outputs: [GraphOutput(port: "predictions", node: "predictions"), GraphOutput(port: "gap", node: "gap")])
    }

    @Test(arguments: [[1, 17, 15, 3], [3, 12, 20, 3]])
    func optimisedBundleMatchesUnfoldedGraph(shape: [Int]) throws {
        let g = resnetLikeGraph()
        var r = SeededRandom(state: UInt64(shape[1]))
        let x = (0..<shape.reduce(1, *)).map { _ in r.uniform(-3, 3) }
        let want = try g.evaluateReference(input: x, shape: shape)
        for kernels in [KernelChoice.reference, .fast] {
            let got = try runThroughBundle(g, input: x, shape: shape, kernels: kernels)
            #expect(got[0].shape == want["predictions"]!.shape)
            #expect(relativeMaxError(want["predictions"]!.values, got[0].values) < 1e-5)
            #expect(relativeMaxError(want["gap"]!.values, got[1].values) < 1e-5)
        }
    }

    @Test func passesLeaveOnlyInferenceOps() throws {
        var g = resnetLikeGraph()
        try g.optimizeForInference()
        let kinds = g.nodes.map(\.op.kindName)
        #expect(!kinds.contains("BatchNormalization"))
        #expect(!kinds.contains("Dropout"))
        #expect(!kinds.contains("ZeroPadding2D"))
        #expect(!kinds.contains("ReLU"))
        #expect(!kinds.contains("Add"))
        // The add fuses into the operand computed later ('short' comes after 'a_conv' here), whose
        // residual is then ready; the identity block's conv adds the block input 'out'.
        guard let s = g.node(named: "short"), case .conv2d(let sc0) = s.op else { Issue.record("short missing"); return }
        #expect(sc0.hasResidual && sc0.activation == .relu)
        #expect(s.inputs == ["pool1", "a_conv"])
        guard let b = g.node(named: "b_conv"), case .conv2d(let bc) = b.op else { Issue.record("b_conv missing"); return }
        #expect(bc.hasResidual && bc.activation == .relu)
        #expect(b.inputs == ["short", "short"] || b.inputs == ["short", "short"].map { $0 })
        guard let stem = g.node(named: "conv0"), case .conv2d(let sc) = stem.op else { Issue.record("conv0 missing"); return }
        #expect(sc.padding == .explicit(top: 1, bottom: 2, left: 0, right: 1))
        #expect(stem.fusedLayers == ["pad0", "bn0", "relu0"])
        guard let pool = g.node(named: "pool1"), case .maxPool(let p) = pool.op else { Issue.record("pool1 missing"); return }
        #expect(p.padding == .explicit(top: 1, bottom: 1, left: 1, right: 1))
    }

    /// Zero padding before a max-pool of values that may be negative must not be folded.
    @Test func maxPoolPadIsKeptForSignedInput() throws {
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 5, 5, 2]), inputs: []),
            GraphNode(name: "pad", op: .zeroPad(top: 1, bottom: 1, left: 1, right: 1), inputs: ["in"]),
            GraphNode(name: "pool", op: .maxPool(Pool2DAttributes(kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padding: .valid)), inputs: ["pad"]),
        ], outputs: [GraphOutput(port: "pool", node: "pool")])
        var o = g
        try o.optimizeForInference()
        #expect(o.nodes.map(\.name) == ["in", "pad", "pool"])
        let x = (0..<50).map { -Float($0) - 1 }  // all negative: padded zeros win at the borders
        let want = try g.evaluateReference(input: x, shape: [1, 5, 5, 2])["pool"]!.values
        let got = try runThroughBundle(g, input: x, shape: [1, 5, 5, 2], kernels: .fast)[0].values
        #expect(want == got)
        #expect(got.contains(0))
    }

    /// An NCHW input transposed to NHWC and back before a flatten (as NCHW sources do).
    @Test func transposesMatchTheInterpreter() throws {
        var r = SeededRandom(state: 3)
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 3, 5, 4]), inputs: []),
            GraphNode(name: "to_nhwc", op: .transpose(perm: [0, 2, 3, 1]), inputs: ["in"]),
            GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: r.tensor([3, 3, 3, 2]), bias: r.tensor([2]), strideH: 1, strideW: 1, padding: .same)), inputs: ["to_nhwc"]),
            GraphNode(name: "to_nchw", op: .transpose(perm: [0, 3, 1, 2]), inputs: ["conv"]),
            GraphNode(name: "flat", op: .flatten, inputs: ["to_nchw"]),
        ], outputs: [GraphOutput(port: "flat", node: "flat")])
        let x = (0..<(2 * 3 * 5 * 4)).map { _ in r.uniform(-1, 1) }
        let want = try g.evaluateReference(input: x, shape: [2, 3, 5, 4])["flat"]!
        #expect(want.shape == [2, 40])
        // Hand check of the interpreter's transpose: element (n=0, c=1, h=0, w=0) of the input is
        // element (0, 0, 0, 1) of the NHWC tensor.
        let nhwc = referenceTransposed(x, shape: [2, 3, 5, 4], perm: [0, 2, 3, 1])
        #expect(nhwc[1] == x[20])
        let got = try runThroughBundle(g, input: x, shape: [2, 3, 5, 4], kernels: .fast)[0]
        #expect(got.shape == [2, 40])
        #expect(relativeMaxError(want.values, got.values) < 1e-6)
    }

    /// `kiln fuse` on an NCHW (ONNX) backbone: the graph taking NHWC gives, on the NHWC-permuted input,
    /// what the NCHW graph gives on the NCHW input (the interpreter's own transpose, hand-checked above, is
    /// the oracle). A graph that reads its input other than through a transpose to NHWC is left alone.
    @Test func nchwInputBecomesNHWC() throws {
        var r = SeededRandom(state: 5)
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 3, 5, 4]), inputs: []),
            GraphNode(name: "to_nhwc", op: .transpose(perm: [0, 2, 3, 1]), inputs: ["in"]),
            GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: r.tensor([3, 3, 3, 2]), bias: r.tensor([2]), strideH: 1, strideW: 1, padding: .same)), inputs: ["to_nhwc"]),
            GraphNode(name: "gap", op: .globalAvgPool, inputs: ["conv"]),
        ], outputs: [GraphOutput(port: "gap", node: "gap")])
        let x = (0..<(2 * 3 * 5 * 4)).map { _ in r.uniform(-1, 1) }
        let want = try g.evaluateReference(input: x, shape: [2, 3, 5, 4])["gap"]!.values
        var h = g
        let changed = h.takingNHWCInput()
        #expect(changed)
        guard case .input(let shape) = h.nodes[0].op else { Issue.record("no input"); return }
        #expect(shape == [nil, 5, 4, 3])
        let nhwc = referenceTransposed(x, shape: [2, 3, 5, 4], perm: [0, 2, 3, 1])
        let got = try runThroughBundle(h, input: nhwc, shape: [2, 5, 4, 3], kernels: .reference)[0].values
        #expect(relativeMaxError(want, got) < 1e-6)
        try h.optimizeForInference()
        #expect(!h.nodes.contains { if case .transpose = $0.op { return true } else { return false } })

        var nhwcGraph = resnetLikeGraph()
        let before = nhwcGraph.nodes.map(\.name)
        let unchanged = !nhwcGraph.takingNHWCInput()
        #expect(unchanged)
        #expect(nhwcGraph.nodes.map(\.name) == before)
    }

    @Test func deadNodesAreRemoved() throws {
        var g = resnetLikeGraph()
        g.outputs = [GraphOutput(port: "gap", node: "gap")]
        try g.optimizeForInference()
        #expect(g.node(named: "predictions") == nil)
        #expect(g.node(named: "hidden") == nil)
    }

    /// Found by the keras-config fuzz target (fuzz/regressions/keras-config): a Dense with 0 units lowered to a
    /// bundle that its own reader refused. Lowering now names the layer.
    @Test func emptyOutputIsNamedAtLowering() throws {
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 4]), inputs: []),
            GraphNode(name: "classes", op: .dense(DenseSpec(kernel: WeightTensor(shape: [4, 0], values: []), bias: WeightTensor(shape: [0], values: []), softmax: true)), inputs: ["in"]),
        ], outputs: [GraphOutput(port: "classes", node: "classes")])
        #expect {
            _ = try g.lower()
        } throws: { error in
            "\(error)".contains("layer 'classes'") && "\(error)".contains("a dimension of size 0")
        }
    }

    /// A batch norm nothing absorbs (here the graph's output) is the bundle's ScaleShift op, named after it.
    @Test func unfoldableBatchNormBecomesScaleShift() throws {
        var r = SeededRandom(state: 1)
        var g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 4, 4, 2]), inputs: []),
            GraphNode(name: "lonely_bn", op: r.bn(2, epsilon: 1e-3), inputs: ["in"]),
        ], outputs: [GraphOutput(port: "lonely_bn", node: "lonely_bn")])
        try g.optimizeForInference()
        let frozen = try g.lower()
        #expect(frozen.ops.map(\.opcode) == [.scaleShift] && frozen.ops[0].name == "lonely_bn")
    }

    /// Channel arithmetic that is not a reordering of one tensor's channels is refused at lowering, naming the layer.
    @Test func channelArithmeticThatIsNoAffineIsNamed() throws {
        var g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 4, 4, 3]), inputs: []),
            GraphNode(name: "red", op: .channelGather(.index(0)), inputs: ["in"]),
            GraphNode(name: "reds", op: .channelStack, inputs: ["red", "red", "red"]),
        ], outputs: [GraphOutput(port: "reds", node: "reds")])
        #expect {
            try g.optimizeForInference()
        } throws: { error in
            "\(error)".contains("layer 'reds'") && "\(error)".contains("not a reordering")
        }
    }
}

/// `hoistStrides`: the stride of the 1×1 convolutions that open a ResNet stage moves up into the block before.
@Suite struct StrideHoistingTests {
    /// A bottleneck block (1×1, 3×3 "same", 1×1 + residual, ReLU) read by two stride-2 1×1 convolutions (the
    /// next stage's projection and first convolution, whose sum is the output), as in ResNet-50 v1.
    /// `extraReader` adds a stride-1 reader of the block output; `blockStride` makes the 3×3 strided.
    func stageTransition(extraReader: Bool = false) -> Graph {
        var r = SeededRandom(state: 11)
        func conv(_ k: Int, _ cin: Int, _ cout: Int, stride: Int = 1, padding: WindowPadding = .valid) -> GraphOp {
            .conv2d(ConvSpec(kernel: r.tensor([k, k, cin, cout], -0.5, 0.5), bias: r.tensor([cout]), strideH: stride, strideW: stride, padding: padding))
        }
        var nodes: [GraphNode] = [
            GraphNode(name: "in", op: .input(shape: [nil, nil, nil, 5]), inputs: []),
            GraphNode(name: "stem", op: conv(3, 5, 8, padding: .same), inputs: ["in"]),
            GraphNode(name: "stem_bn", op: r.bn(8, epsilon: 1e-3), inputs: ["stem"]),
            GraphNode(name: "stem_out", op: .activation(.relu), inputs: ["stem_bn"]),
            GraphNode(name: "b1", op: conv(1, 8, 4), inputs: ["stem_out"]),
            GraphNode(name: "b1_bn", op: r.bn(4, epsilon: 1e-3), inputs: ["b1"]),
            GraphNode(name: "b1_relu", op: .activation(.relu), inputs: ["b1_bn"]),
            GraphNode(name: "b2", op: conv(3, 4, 4, padding: .same), inputs: ["b1_relu"]),
            GraphNode(name: "b2_bn", op: r.bn(4, epsilon: 1e-3), inputs: ["b2"]),
            GraphNode(name: "b2_relu", op: .activation(.relu), inputs: ["b2_bn"]),
            GraphNode(name: "b3", op: conv(1, 4, 8), inputs: ["b2_relu"]),
            GraphNode(name: "b3_bn", op: r.bn(8, epsilon: 1e-3), inputs: ["b3"]),
            GraphNode(name: "add", op: .add(activation: .none), inputs: ["stem_out", "b3_bn"]),
            GraphNode(name: "out", op: .activation(.relu), inputs: ["add"]),
            GraphNode(name: "next_1", op: conv(1, 8, 6, stride: 2), inputs: ["out"]),
            GraphNode(name: "next_0", op: conv(1, 8, 6, stride: 2), inputs: ["out"]),
            GraphNode(name: "next_add", op: .add(activation: .relu), inputs: ["next_0", "next_1"]),
        ]
        var outputs = [GraphOutput(port: "next_add", node: "next_add")]
        if extraReader {
            nodes.append(GraphNode(name: "side", op: conv(1, 8, 2), inputs: ["out"]))
            outputs.append(GraphOutput(port: "side", node: "side"))
        }
        return Graph(nodes: nodes, outputs: outputs)
    }

    func conv(_ g: Graph, _ name: String) -> ConvSpec? {
        guard let n = g.node(named: name), case .conv2d(let c) = n.op else { return nil }
        return c
    }

    /// Even and odd sizes (the last row and column of a stride-2 reader), batch 1 and 2: the optimised bundle
    /// gives the unoptimised graph's outputs; the 3×3 now has stride 2 with its "same" padding made explicit, the
    /// block's last 1×1 adds a strided copy of its residual, and the readers have stride 1.
    @Test(arguments: [[1, 8, 8, 5], [2, 9, 11, 5], [1, 1, 2, 5]])
    func transitionMatchesTheUnoptimisedGraph(shape: [Int]) throws {
        let g = stageTransition()
        var r = SeededRandom(state: UInt64(shape[2]))
        let x = (0..<shape.reduce(1, *)).map { _ in r.uniform(-2, 2) }
        let want = try g.evaluateReference(input: x, shape: shape)["next_add"]!
        #expect(want.shape == [shape[0], (shape[1] + 1) / 2, (shape[2] + 1) / 2, 6])
        for kernels in [KernelChoice.reference, .fast] {
            let got = try runThroughBundle(g, input: x, shape: shape, kernels: kernels)[0]
            #expect(got.shape == want.shape)
            #expect(relativeMaxError(want.values, got.values) < 1e-5)
        }
        var o = g
        try o.optimizeForInference()
        let b2 = conv(o, "b2"), b3 = conv(o, "b3")
        #expect(b2?.strideH == 2 && b2?.strideW == 2 && b2?.padding == .explicit(top: 1, bottom: 1, left: 1, right: 1))
        #expect(b3?.strideH == 1 && b3?.hasResidual == true)
        #expect(o.node(named: "b3")?.inputs == ["b2", "b3/residual_stride"])
        guard let copy = o.node(named: "b3/residual_stride"), case .maxPool(let p) = copy.op else {
            Issue.record("no strided residual copy"); return
        }
        #expect(p == Pool2DAttributes(kernelH: 1, kernelW: 1, strideH: 2, strideW: 2, padding: .valid))
        #expect(copy.inputs == ["stem"])
        #expect(conv(o, "next_0")?.strideH == 1 && conv(o, "next_1")?.strideW == 1)
        #expect(conv(o, "stem")?.strideH == 1 && conv(o, "b1")?.strideH == 1)
    }

    /// A reader that needs every cell keeps the block at full resolution; the readers keep their stride.
    @Test func aFullResolutionReaderStopsTheStride() throws {
        let g = stageTransition(extraReader: true)
        var o = g
        try o.optimizeForInference()
        #expect(conv(o, "b2")?.strideH == 1 && conv(o, "b3")?.strideH == 1)
        #expect(conv(o, "next_0")?.strideH == 2 && conv(o, "next_1")?.strideH == 2)
        #expect(o.node(named: "b3/residual_stride") == nil)
        var r = SeededRandom(state: 2)
        let x = (0..<(7 * 6 * 5)).map { _ in r.uniform(-2, 2) }
        let want = try g.evaluateReference(input: x, shape: [1, 7, 6, 5])
        let got = try runThroughBundle(g, input: x, shape: [1, 7, 6, 5], kernels: .fast)
        #expect(relativeMaxError(want["next_add"]!.values, got[0].values) < 1e-5)
        #expect(relativeMaxError(want["side"]!.values, got[1].values) < 1e-5)
    }

    /// "same" padding of a strided convolution depends on the input size: it is not moved into. A block output
    /// that is a graph output is not subsampled either.
    @Test func stridedSamePaddingAndOutputsStay() throws {
        var r = SeededRandom(state: 4)
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, nil, nil, 3]), inputs: []),
            GraphNode(name: "down", op: .conv2d(ConvSpec(kernel: r.tensor([3, 3, 3, 4]), bias: nil, strideH: 2, strideW: 2, padding: .same)), inputs: ["in"]),
            GraphNode(name: "pick", op: .conv2d(ConvSpec(kernel: r.tensor([1, 1, 4, 2]), bias: nil, strideH: 2, strideW: 2, padding: .valid)), inputs: ["down"]),
        ], outputs: [GraphOutput(port: "pick", node: "pick")])
        var o = g
        try o.optimizeForInference()
        #expect(conv(o, "down")?.strideH == 2 && conv(o, "down")?.padding == .same && conv(o, "pick")?.strideH == 2)
        let x = (0..<(9 * 10 * 3)).map { _ in r.uniform(-1, 1) }
        let want = try g.evaluateReference(input: x, shape: [1, 9, 10, 3])["pick"]!.values
        #expect(relativeMaxError(want, try runThroughBundle(g, input: x, shape: [1, 9, 10, 3], kernels: .fast)[0].values) < 1e-5)

        var h = stageTransition()
        h.outputs.append(GraphOutput(port: "out", node: "out"))
        try h.optimizeForInference()
        #expect(conv(h, "b3")?.strideH == 1 && conv(h, "next_0")?.strideH == 2)
    }
}

/// `ReferenceKernels.transpose` on an array.
func referenceTransposed(_ v: [Float], shape: [Int], perm: [Int]) -> [Float] {
    var out = v
    v.withUnsafeBufferPointer { x in
        out.withUnsafeMutableBufferPointer { o in
            ReferenceKernels.transpose(input: x.baseAddress!, output: o.baseAddress!, shape: shape, perm: perm)
        }
    }
    return out
}

/// Activations other than ReLU: fused into the layer before them, lowered, run on both kernel sets.
@Suite struct ActivationFusionTests {
    /// A 1×1 identity convolution then sigmoid gives 1 / (1 + e^−x) of the input (worked from the definition),
    /// with the sigmoid fused into the convolution; a Dense then sigmoid (a binary head) likewise.
    @Test func sigmoidIsFusedAndExact() throws {
        var r = SeededRandom(state: 11)
        let g = Graph(nodes: [
            GraphNode(name: "in", op: .input(shape: [nil, 3, 4, 2]), inputs: []),
            GraphNode(name: "conv", op: .conv2d(ConvSpec(kernel: WeightTensor(shape: [1, 1, 2, 2], values: [1, 0, 0, 1]),
                                                         bias: nil, strideH: 1, strideW: 1, padding: .valid)), inputs: ["in"]),
            GraphNode(name: "sig", op: .activation(Activation(.sigmoid)), inputs: ["conv"]),
            GraphNode(name: "gap", op: .globalAvgPool, inputs: ["sig"]),
            GraphNode(name: "logit", op: .dense(DenseSpec(kernel: r.tensor([2, 1]), bias: r.tensor([1]))), inputs: ["gap"]),
            GraphNode(name: "p", op: .activation(Activation(.sigmoid)), inputs: ["logit"]),
        ], outputs: [GraphOutput(port: "sig", node: "sig"), GraphOutput(port: "p", node: "p")])
        var h = g
        try h.optimizeForInference()
        // Both sigmoids are fused (the port "sig" now reads the convolution, which applies it).
        guard case .dense(let d) = h.node(named: "logit")?.op, case .conv2d(let c) = h.node(named: "conv")?.op else {
            Issue.record("no dense or conv"); return
        }
        #expect(d.activation == Activation(.sigmoid))
        #expect(c.activation == Activation(.sigmoid))
        #expect(h.nodes.map(\.name) == ["in", "conv", "gap", "logit"])
        let x = (0..<(2 * 3 * 4 * 2)).map { _ in r.uniform(-6, 6) }
        for kernels in [KernelChoice.fast, .reference] {
            let got = try runThroughBundle(g, input: x, shape: [2, 3, 4, 2], kernels: kernels)
            let want = x.map { Float(1 / (1 + exp(-Double($0)))) }
            #expect(relativeMaxError(want, got[0].values) < 2e-6, "\(kernels)")
            let reference = try g.evaluateReference(input: x, shape: [2, 3, 4, 2])["p"]!.values
            #expect(relativeMaxError(reference, got[1].values) < 1e-6, "\(kernels)")
        }
    }
}
