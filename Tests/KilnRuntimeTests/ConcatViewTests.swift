import Testing
import KilnFormat
import KilnKernels
@testable import KilnRuntime

/// Concat without copies: producers that write into their slice of the Concat's output (a Winograd 3×3, a
/// depthwise and a group-GEMM convolution, and a Concat nested in a Concat) give the same values as the reference
/// plan, which copies every input; the values read elsewhere or that are outputs are copied.
@Suite struct ConcatViewTests {
    /// x [N, H, W, 8] → a = relu(conv3x3 8→8), b = clamp6(depthwise3x3), c = concat(a, b), e = sigmoid(1x1 8→6 in 2
    /// groups), f = concat(c, e, x), g = conv1x1 f→4 (output), h = concat(e2, a2) where a2 is also an output (so
    /// copied), output s = h + h.
    static func model() -> FrozenModel {
        var tensors: [TensorRecord] = []
        func weights(_ name: String, _ shape: [Int], seed: UInt64) -> Int {
            var rng = SplitMix64(seed: seed)
            tensors.append(TensorRecord(name: name, shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -0.5...0.5, using: &rng) }))
            return tensors.count - 1
        }
        func conv(_ name: String, _ x: Int, _ out: Int, k: Int, cin: Int, cout: Int, groups: Int = 1, activation: Activation = .none) -> OpRecord {
            let a = Conv2DAttributes(kernelH: k, kernelW: k, strideH: 1, strideW: 1, padding: .same, activation: activation, groups: groups)
            return OpRecord(opcode: .conv2d, name: name, inputs: [x], output: out, attributes: a.encoded,
                            tensors: [weights("\(name)/w", [k, k, cin / groups, cout], seed: UInt64(out)), weights("\(name)/b", [cout], seed: UInt64(out + 100))])
        }
        let names = ["x", "a", "b", "c", "e", "f", "g", "a2", "e2", "h", "s"]
        let ops = [
            conv("a", 0, 1, k: 3, cin: 8, cout: 8, activation: .relu),
            conv("b", 0, 2, k: 3, cin: 8, cout: 8, groups: 8, activation: Activation(.linear, minimum: 0, maximum: 6)),
            OpRecord(opcode: .concat, name: "c", inputs: [1, 2], output: 3),
            conv("e", 0, 4, k: 1, cin: 8, cout: 6, groups: 2, activation: Activation(.sigmoid)),
            OpRecord(opcode: .concat, name: "f", inputs: [3, 4, 0], output: 5),
            conv("g", 5, 6, k: 1, cin: 30, cout: 4),
            conv("a2", 0, 7, k: 1, cin: 8, cout: 5),
            conv("e2", 0, 8, k: 3, cin: 8, cout: 3, activation: .relu),
            OpRecord(opcode: .concat, name: "h", inputs: [8, 7], output: 9),
            OpRecord(opcode: .add, name: "s", inputs: [9, 9], output: 10, attributes: ActivationAttributes(.none).encoded),
        ]
        return FrozenModel(valueNames: names, inputs: [PortRecord(name: "x", value: 0, shape: [-1, -1, -1, 8])],
                           outputs: [PortRecord(name: "g", value: 6, shape: [-1, -1, -1, 4]), PortRecord(name: "s", value: 10, shape: [-1, -1, -1, 8]),
                                     PortRecord(name: "a2", value: 7, shape: [-1, -1, -1, 5])],
                           ops: ops, tensors: tensors)
    }

    @Test(arguments: [[1, 9, 11, 8], [2, 5, 4, 8]])
    func viewsGiveTheReferenceValues(_ shape: [Int]) throws {
        let bundle = try Bundle(bytes: try BundleWriter.serialize(Self.model()))
        #expect(bundle.versionMinor == 3)
        let model = try Model(bundle: bundle)
        let fast = try ExecutionPlan(model: model, inputShape: shape, kernels: .fast)
        // a and b in c, c and e in f (x is the model input, so copied); e2 in h (a2 is an output: copied).
        let viewed = Set(fast.concatViewValues.map { model.frozen.valueNames[$0] })
        if ConvAlgorithm.avx2Available { #expect(viewed == ["a", "b", "c", "e", "e2"]) }
        let reference = try ExecutionPlan(model: model, inputShape: shape, kernels: .reference)
        #expect(reference.concatViewValues.isEmpty)
        var rng = SplitMix64(seed: 17)
        let x = Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -1...1, using: &rng) })
        for _ in 0..<2 {  // twice: a second run over the same arena
            let got = try fast.run(x), want = try reference.run(x)
            for (g, w) in zip(got, want) {
                let largest = w.values.map(abs).max() ?? 0
                let worst = zip(g.values, w.values).map { abs($0 - $1) }.max() ?? 0
                #expect(worst <= 1e-5 * largest, "fast vs reference: max|Δ| \(worst), max|ref| \(largest)")
            }
        }
    }
}
