import Testing
import KilnFormat
import KilnKernels
@testable import KilnRuntime

// The op-test driver: every op of the bundle's op set, through its one definition (`OpCode.definition`), planned
// with the fast kernels and with the reference kernels on the same inputs, on awkward sizes. Every buffer —
// inputs, output, workspace — sits between guard zones of a sentinel bit pattern that must come back unchanged;
// the output starts as NaN, so an element a kernel forgets fails; inputs must come back unchanged too. A failure
// names the case, the element's index and coordinates, both values and the shape. Ops that may write over an
// input (`inPlaceInputs`) run in place as well.
//
// `OpCases.cases(for:)` switches over every op code without a default: a new op does not compile until it has
// cases here. Every `UnaryFunction` is run through the Unary op.

/// One case: an op's record (inputs are values 0..<n, the output n), its tensors and its input shapes.
struct OpCase: Sendable, CustomTestStringConvertible {
    var name: String
    var record: OpRecord
    var tensors: [TensorRecord] = []
    var inputShapes: [[Int]]
    /// Allowed |fast − reference| as a fraction of max|reference|.
    var tolerance: Float
    var inputRange: ClosedRange<Float> = -1...1

    var testDescription: String { "\(record.opcode) \(name)" }

    init(_ name: String, _ opcode: OpCode, attributes: [Int64] = [], tensors: [TensorRecord] = [],
         inputs: [[Int]], tolerance: Float, inputRange: ClosedRange<Float> = -1...1) {
        self.name = name
        record = OpRecord(opcode: opcode, name: name, inputs: Array(inputs.indices), output: inputs.count,
                          attributes: attributes, tensors: Array(tensors.indices))
        self.tensors = tensors
        inputShapes = inputs
        self.tolerance = tolerance
        self.inputRange = inputRange
    }
}

/// A float buffer between two guard zones of `GuardedBuffer.sentinel`.
final class GuardedBuffer: @unchecked Sendable {
    static let guardFloats = 64
    /// A signalling-NaN bit pattern no kernel computes; compared bit for bit.
    static let sentinel: UInt32 = 0x7FA5_A5A5

    let count: Int
    private let base: UnsafeMutablePointer<Float>

    init(count: Int, fill: Float = .nan) {
        self.count = count
        base = .allocate(capacity: count + 2 * Self.guardFloats)
        base.initialize(repeating: Float(bitPattern: Self.sentinel), count: count + 2 * Self.guardFloats)
        pointer.update(repeating: fill, count: count)
    }

    deinit { base.deallocate() }

    var pointer: UnsafeMutablePointer<Float> { base + Self.guardFloats }
    var values: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    /// The first guard element that was overwritten, as an offset from the buffer (negative: before it).
    func damagedGuard() -> Int? {
        for i in 0..<Self.guardFloats where base[i].bitPattern != Self.sentinel { return i - Self.guardFloats }
        for i in 0..<Self.guardFloats where pointer[count + i].bitPattern != Self.sentinel { return count + i }
        return nil
    }
}

/// Row-major coordinates of `index` in `shape`.
func coordinates(of index: Int, in shape: [Int]) -> [Int] {
    var rest = index
    var out = [Int](repeating: 0, count: shape.count)
    for axis in shape.indices.reversed() where shape[axis] > 0 {
        out[axis] = rest % shape[axis]
        rest /= shape[axis]
    }
    return out
}

/// Runs a case's fast and reference plans; returns the first problem found, or nil.
func runCase(_ c: OpCase) throws -> String? {
    let op = try c.record.opcode.definition.init(c.record, tensors: c.tensors)
    let outShape = try op.outputShape(c.inputShapes)
    let outCount = outShape.reduce(1, *)
    var rng = SplitMix64(seed: UInt64(truncatingIfNeeded: c.name.utf8.reduce(5381) { ($0 &* 33) &+ Int($1) }))
    let inputs = c.inputShapes.map { shape -> GuardedBuffer in
        let b = GuardedBuffer(count: shape.reduce(1, *))
        for i in 0..<b.count { b.pointer[i] = Float.random(in: c.inputRange, using: &rng) }
        return b
    }
    let saved = inputs.map(\.values)

    func run(_ kernels: KernelChoice, inPlace: Int? = nil) throws -> (GuardedBuffer, String?) {
        let plan = try op.plan(PlanContext(c.record.opcode, inputs: c.inputShapes, output: outShape, kernels: kernels))
        let out = GuardedBuffer(count: outCount)
        if let p = inPlace { out.pointer.update(from: inputs[p].pointer, count: outCount) }
        let workspace = GuardedBuffer(count: plan.workspaceFloats(), fill: 0)
        plan.run(OpBuffers(rawInput: { UnsafeRawPointer($0 == inPlace ? out.pointer : inputs[$0].pointer) },
                           rawOutput: UnsafeMutableRawPointer(out.pointer),
                           workspace: UnsafeMutableBufferPointer(start: workspace.pointer, count: workspace.count)))
        let label = "\(kernels)\(inPlace.map { " in place over input \($0)" } ?? "")"
        if let g = out.damagedGuard() { return (out, "\(label): wrote outside its output, at offset \(g) of \(outCount)") }
        if let g = workspace.damagedGuard() { return (out, "\(label): wrote outside its workspace, at offset \(g) of \(workspace.count)") }
        for (k, b) in inputs.enumerated() where k != inPlace {
            if let g = b.damagedGuard() { return (out, "\(label): wrote outside input \(k), at offset \(g)") }
            if b.values.map(\.bitPattern) != saved[k].map(\.bitPattern) { return (out, "\(label): changed input \(k)") }
        }
        return (out, nil)
    }

    let (expected, referenceProblem) = try run(.reference)
    if let referenceProblem { return referenceProblem }
    var runs = [(label: "fast", result: try run(.fast))]
    for p in op.inPlaceInputs(c.record) where c.inputShapes[p] == outShape {
        runs.append(("fast in place over input \(p)", try run(.fast, inPlace: p)))
        for (k, b) in inputs.enumerated() { b.pointer.update(from: saved[k], count: b.count) }
    }
    let largest = expected.values.reduce(Float(0)) { max($0, abs($1)) }
    let limit = c.tolerance * largest
    for (label, (actual, problem)) in runs {
        if let problem { return problem }
        for i in 0..<outCount {
            let a = actual.pointer[i], e = expected.pointer[i]
            if !(abs(a - e) <= limit) && !(a.isNaN && e.isNaN) && a != e {
                return "\(label): element \(i) \(coordinates(of: i, in: outShape)) of shape \(outShape): fast \(a), "
                    + "reference \(e), |difference| \(abs(a - e)) > \(limit) (\(c.tolerance) × max|reference| \(largest))"
            }
        }
    }
    return nil
}

enum OpCases {
    static func tensor(_ name: String, _ shape: [Int], seed: UInt64, in range: ClosedRange<Float> = -1...1) -> TensorRecord {
        var rng = SplitMix64(seed: seed)
        return TensorRecord(name: name, shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in Float.random(in: range, using: &rng) })
    }

    static let clamp6 = Activation(.linear, minimum: 0, maximum: 6)
    static let hardSigmoid = Activation(.linear, alpha: 1.0 / 6, beta: 0.5, minimum: 0, maximum: 1)

    /// Every op code's cases. No default: a new op code must get cases here.
    static func cases(for code: OpCode) -> [OpCase] {
        switch code {
        case .conv2d:
            func conv(_ name: String, n: Int = 1, h: Int, w: Int, cin: Int, cout: Int, k: Int, stride: Int = 1,
                      padding: WindowPadding = .valid, dilation: Int = 1, activation: Activation = .none,
                      residual: Bool = false, groups: Int = 1, tolerance: Float = 1e-5) -> OpCase {
                let a = Conv2DAttributes(kernelH: k, kernelW: k, strideH: stride, strideW: stride, padding: padding,
                                         activation: activation, dilationH: dilation, dilationW: dilation, groups: groups)
                let eff = (k - 1) * dilation + 1
                let (t, b) = padding.amounts(size: h, kernel: k, stride: stride, dilation: dilation, vertical: true)
                let (l, r) = padding.amounts(size: w, kernel: k, stride: stride, dilation: dilation, vertical: false)
                let out = [n, (h + t + b - eff) / stride + 1, (w + l + r - eff) / stride + 1, cout]
                return OpCase(name, .conv2d, attributes: a.encoded,
                              tensors: [tensor("w", [k, k, cin / groups, cout], seed: UInt64(cin * 100 + cout)),
                                        tensor("b", [cout], seed: UInt64(cout))],
                              inputs: residual ? [[n, h, w, cin], out] : [[n, h, w, cin]], tolerance: tolerance)
            }
            return [
                conv("1x1 pointwise", n: 2, h: 5, w: 5, cin: 8, cout: 16, k: 1),
                conv("3x3 same winograd relu", h: 9, w: 9, cin: 8, cout: 8, k: 3, padding: .same, activation: .relu, tolerance: 1e-4),
                conv("3x3 stride 2 clamp6", h: 11, w: 10, cin: 3, cout: 5, k: 3, stride: 2,
                     padding: .explicit(top: 1, bottom: 1, left: 1, right: 1), activation: clamp6),
                conv("7x7 stride 2 residual relu", h: 16, w: 16, cin: 3, cout: 17, k: 7, stride: 2,
                     padding: .explicit(top: 3, bottom: 3, left: 3, right: 3), activation: .relu, residual: true),
                conv("3x3 dilation 2 hard-sigmoid", h: 9, w: 9, cin: 4, cout: 9, k: 3, dilation: 2, activation: hardSigmoid),
                conv("1x1 residual relu batch 3", n: 3, h: 7, w: 7, cin: 16, cout: 16, k: 1, activation: .relu, residual: true),
                // ReLU6-like clamps in the GEMM tiles (AVX2 and AVX-512, K over one 256-row pass) and in the
                // Winograd output transform.
                conv("1x1 clamp6 300 inputs", h: 4, w: 5, cin: 300, cout: 40, k: 1, activation: clamp6, tolerance: 1e-4),
                conv("3x3 same winograd clamp6 residual", h: 9, w: 7, cin: 16, cout: 16, k: 3, padding: .same,
                     activation: Activation(.linear, minimum: 0, maximum: 0.5), residual: true, tolerance: 1e-4),
                conv("3x3 clamp at 0.25 only", h: 6, w: 6, cin: 5, cout: 21, k: 3, activation: Activation(.linear, maximum: 0.25)),
                // Depthwise (groups = channels): odd channel counts leave a tail in the 16- and the 8-lane vectors;
                // rows of 11 and 23 pixels mix groups of 4 with border pixels.
                conv("depthwise 3x3 same clamp6 37 channels", h: 9, w: 11, cin: 37, cout: 37, k: 3, padding: .same,
                     activation: clamp6, groups: 37),
                conv("depthwise 3x3 stride 2 pad 0,1,0,1 (correct_pad)", h: 10, w: 12, cin: 32, cout: 32, k: 3, stride: 2,
                     padding: .explicit(top: 0, bottom: 1, left: 0, right: 1), activation: .relu, groups: 32),
                conv("depthwise 3x3 stride 2 same odd size", n: 2, h: 13, w: 7, cin: 24, cout: 24, k: 3, stride: 2,
                     padding: .same, groups: 24),
                conv("depthwise 5x5 dilation 2 hard-sigmoid 19 channels", h: 14, w: 23, cin: 19, cout: 19, k: 5,
                     padding: .explicit(top: 4, bottom: 3, left: 2, right: 5), dilation: 2, activation: hardSigmoid, groups: 19),
                conv("depthwise 3x3 sigmoid batch 2", n: 2, h: 6, w: 9, cin: 8, cout: 8, k: 3, padding: .same,
                     activation: Activation(.sigmoid), groups: 8),
                conv("depthwise 3x3 residual relu 48 channels", n: 2, h: 8, w: 23, cin: 48, cout: 48, k: 3, padding: .same,
                     activation: .relu, residual: true, groups: 48),
                conv("depthwise 7x7 2 channels", h: 9, w: 9, cin: 2, cout: 2, k: 7, padding: .same, groups: 2),
                conv("depthwise 1x1 3 channels", h: 2, w: 3, cin: 3, cout: 3, k: 1, groups: 3),
                // Other groupings: a GEMM per group.
                conv("depthwise multiplier 2", h: 7, w: 8, cin: 5, cout: 10, k: 3, padding: .same, groups: 5),
                conv("depthwise multiplier 3 stride 2 residual hard-sigmoid", n: 2, h: 7, w: 9, cin: 7, cout: 21, k: 3,
                     stride: 2, padding: .same, activation: hardSigmoid, residual: true, groups: 7),
                conv("depthwise multiplier 2 clamp6 48 channels", h: 6, w: 10, cin: 48, cout: 96, k: 3,
                     padding: .explicit(top: 0, bottom: 1, left: 0, right: 1), activation: clamp6, groups: 48),
                // Small groups (AVX-512: groups of 2, 4, 8, 16 channels, channels a multiple of 16), ResNeXt's.
                conv("grouped 3x3 groups of 4 same relu", n: 2, h: 9, w: 11, cin: 32, cout: 32, k: 3, padding: .same,
                     activation: .relu, groups: 8),
                conv("grouped 3x3 groups of 8 stride 2 clamp6 residual", h: 10, w: 9, cin: 48, cout: 48, k: 3, stride: 2,
                     padding: .explicit(top: 1, bottom: 1, left: 1, right: 1), activation: clamp6, residual: true, groups: 6),
                conv("grouped 3x3 groups of 16 dilation 2 sigmoid", h: 9, w: 13, cin: 32, cout: 32, k: 3, padding: .same,
                     dilation: 2, activation: Activation(.sigmoid), groups: 2),
                conv("grouped 3x3 groups of 2", h: 5, w: 6, cin: 16, cout: 16, k: 3, padding: .same, groups: 8),
                conv("grouped 3x3 stride 2 32 groups", h: 9, w: 9, cin: 64, cout: 64, k: 3, stride: 2,
                     padding: .explicit(top: 1, bottom: 1, left: 1, right: 1), activation: .relu, groups: 32),
                conv("grouped 1x1 4 groups residual", h: 5, w: 6, cin: 12, cout: 20, k: 1, residual: true, groups: 4),
                conv("grouped 3x3 2 groups of 17 to 18 relu batch 3", n: 3, h: 6, w: 5, cin: 34, cout: 36, k: 3,
                     padding: .same, activation: .relu, groups: 2),
                conv("grouped 3x3 dilation 2 clamp6", h: 11, w: 10, cin: 6, cout: 9, k: 3, dilation: 2, activation: clamp6, groups: 3),
            ]
        case .dense:
            func dense(_ name: String, n: Int, inF: Int, outF: Int, _ a: DenseAttributes, tolerance: Float = 1e-5) -> OpCase {
                OpCase(name, .dense, attributes: a.encoded,
                       tensors: [tensor("w", [inF, outF], seed: UInt64(inF)), tensor("b", [outF], seed: UInt64(outF))],
                       inputs: [[n, inF]], tolerance: tolerance)
            }
            return [
                dense("1 17→5", n: 1, inF: 17, outF: 5, DenseAttributes(activation: .none)),
                dense("3 2048→1000 relu", n: 3, inF: 2048, outF: 1000, DenseAttributes(activation: .relu)),
                dense("2 63→9 fused softmax (1.0)", n: 2, inF: 63, outF: 9, DenseAttributes(activation: .none, softmax: true)),
                dense("7 64→65 clamp", n: 7, inF: 64, outF: 65, DenseAttributes(activation: Activation(.linear, minimum: -0.5, maximum: 0.5))),
                dense("2 257→30", n: 2, inF: 257, outF: 30, DenseAttributes(activation: .none)),
            ]
        case .add:
            return [(1, Activation.none), (7, .relu), (8, clamp6), (9, .none), (1001, .relu), (70_001, hardSigmoid)].map { count, a in
                OpCase("\(count) \(a)", .add, attributes: ActivationAttributes(a).encoded, inputs: [[count], [count]],
                       tolerance: 1e-6, inputRange: -4...4)
            }
        case .maxPool2d, .avgPool2d:
            // (shape, kernel, stride, pads top, bottom, left, right)
            let windows: [([Int], (Int, Int), (Int, Int), (Int, Int, Int, Int))] = [
                ([1, 1, 1, 1], (1, 1), (1, 1), (0, 0, 0, 0)),
                ([1, 12, 12, 17], (3, 3), (2, 2), (1, 1, 1, 1)),
                ([3, 7, 5, 4], (3, 3), (1, 1), (1, 1, 1, 1)),
                ([1, 7, 9, 3], (2, 2), (2, 2), (0, 1, 0, 1)),
                ([3, 11, 13, 5], (2, 3), (3, 2), (1, 0, 0, 2)),
                ([1, 7, 7, 64], (7, 7), (1, 1), (0, 0, 0, 0)),
                ([3, 2, 3, 1], (3, 4), (1, 1), (1, 2, 3, 3)),
                ([2, 9, 9, 16], (3, 3), (2, 2), (1, 1, 1, 1)),
            ]
            return windows.map { shape, k, s, p in
                let a = Pool2DAttributes(kernelH: k.0, kernelW: k.1, strideH: s.0, strideW: s.1,
                                         padding: .explicit(top: p.0, bottom: p.1, left: p.2, right: p.3))
                // Mostly negative, so a padded cell read as zero would win a max or shift a mean.
                return OpCase("\(shape) k\(k) s\(s) pad \(p)", code, attributes: a.encoded, inputs: [shape],
                              tolerance: code == .maxPool2d ? 0 : 1e-6, inputRange: -2...0.5)
            }
        case .globalAvgPool:
            return [[1, 1, 1, 1], [1, 7, 7, 64], [3, 5, 3, 17], [3, 1, 9, 2]].map {
                OpCase("\($0)", .globalAvgPool, inputs: [$0], tolerance: 1e-6)
            }
        case .softmax:
            return [([1, 1], Float(1)), ([1, 2], 1), ([3, 17], 1), ([2, 1000], 1), ([3, 10], 1000), ([2, 3, 5], 1)].map { shape, scale in
                OpCase("\(shape) scale \(scale)", .softmax, inputs: [shape], tolerance: 1e-5, inputRange: -scale...scale)
            }
        case .relu:
            return [[1], [9], [3, 1000]].map { OpCase("\($0)", .relu, inputs: [$0], tolerance: 0) }
        case .unary:
            var cases: [OpCase] = []
            for function in UnaryFunction.allCases {
                let p = function.defaultParameters
                for (label, a) in [("", Activation(function)), (" clamp6", Activation(function, minimum: 0, maximum: 6)),
                                   (" (x/6+1/2)[0,1]", Activation(function, alpha: 1.0 / 6, beta: 0.5, minimum: 0, maximum: 1)),
                                   (" default (\(p.alpha), \(p.beta))", Activation.plain(function)),
                                   (" (1.67, 1.05)", Activation(function, alpha: 1.6732632, beta: 1.0507009, maximum: 2))] {
                    for shape in [[13], [2, 70_001]] {
                        cases.append(OpCase("\(function)\(label) \(shape)", .unary, attributes: ActivationAttributes(a).encoded,
                                            inputs: [shape], tolerance: 2e-6, inputRange: -8...8))
                    }
                }
            }
            return cases
        case .globalMaxPool:
            return [[1, 1, 1, 1], [2, 7, 5, 3], [1, 3, 3, 17], [3, 2, 9, 64]].map {
                OpCase("\($0)", .globalMaxPool, inputs: [$0], tolerance: 0)
            }
        case .scaleShift:
            func scaleShift(_ shape: [Int], _ a: Activation) -> OpCase {
                let c = shape[shape.count - 1]
                return OpCase("\(shape) \(a)", .scaleShift, attributes: ActivationAttributes(a).encoded,
                              tensors: [tensor("scale", [c], seed: 21, in: -2...2), tensor("shift", [c], seed: 22)],
                              inputs: [shape], tolerance: 1e-6, inputRange: -4...4)
            }
            return [scaleShift([1], .none), scaleShift([2, 7], .relu), scaleShift([2, 5, 3, 17], Activation.plain(.elu)),
                    scaleShift([1, 9, 9, 64], Activation(.linear, minimum: 0, maximum: 6)), scaleShift([3, 1, 1, 1], Activation.plain(.tanh))]
        case .pad:
            func pad(_ shape: [Int], _ p: PadAttributes, values: Bool) -> OpCase {
                OpCase("\(shape) \(p.encoded)\(values ? " values" : "")", .pad, attributes: p.encoded,
                       tensors: values ? [tensor("v", [shape[3]], seed: 9)] : [], inputs: [shape], tolerance: 0)
            }
            return [
                pad([1, 1, 1, 1], PadAttributes(top: 0, bottom: 0, left: 0, right: 0), values: false),
                pad([1, 1, 1, 1], PadAttributes(top: 1, bottom: 1, left: 1, right: 1), values: false),
                pad([3, 5, 4, 3], PadAttributes(top: 3, bottom: 0, left: 1, right: 2), values: true),
                pad([3, 5, 4, 3], PadAttributes(top: 0, bottom: 2, left: 3, right: 0), values: false),
                pad([1, 7, 7, 17], PadAttributes(top: 3, bottom: 3, left: 3, right: 3), values: true),
            ]
        case .flatten:
            return [[2, 3, 4, 5], [1, 7], [3, 1, 1, 9]].map { OpCase("\($0)", .flatten, inputs: [$0], tolerance: 0) }
        case .concat:
            return [[[2, 3, 4, 5], [2, 3, 4, 7]], [[1, 5, 5, 1], [1, 5, 5, 16], [1, 5, 5, 3]], [[3, 4], [3, 9]],
                    [[1, 2, 2, 32], [1, 2, 2, 32]]].map {
                OpCase("\($0)", .concat, inputs: $0, tolerance: 0)
            }
        case .transpose:
            return [([2, 3, 4, 5], [0, 2, 3, 1]), ([2, 5, 4, 3], [0, 3, 1, 2]), ([3, 7], [1, 0]), ([2, 3, 5], [2, 0, 1]), ([5], [0])].map {
                OpCase("\($0.0) perm \($0.1)", .transpose, attributes: $0.1.map(Int64.init), inputs: [$0.0], tolerance: 0)
            }
        case .reshape:
            return [([2, 1, 1, 7], [0, 7, 1, 1]), ([3, 4, 5, 2], [0, -1]), ([2, 12], [0, 3, 4, 1]), ([1, 5], [5])].map {
                OpCase("\($0.0) to \($0.1)", .reshape, attributes: $0.1.map(Int64.init), inputs: [$0.0], tolerance: 0)
            }
        case .reduce:
            // [function, keepdims, axes…]: H and W of NHWC (the pooling run), one axis, two runs, everything, batch 1-3.
            return [([2, 5, 7, 3], [0, 1, 1, 2]), ([3, 4, 6, 17], [1, 0, 1, 2]), ([2, 3, 4, 5], [0, 1, 3]), ([1, 9], [0, 0, 1]),
                    ([2, 3, 4, 5], [0, 0, 1, 3]), ([3, 2, 5, 4], [1, 1, 0, 2]), ([2, 3, 1, 5], [0, 1, 1, 2, 3]), ([7, 1], [0, 1, 1])].map {
                OpCase("\($0.0) \($0.1)", .reduce, attributes: $0.1.map(Int64.init), inputs: [$0.0], tolerance: 1e-6)
            }
        }
    }

    static let all: [OpCase] = OpCode.allCases.flatMap(cases(for:))
}

@Suite("op-test driver: every op, fast against reference, guarded")
struct OpDriverTests {
    @Test(arguments: OpCases.all)
    func fastMatchesReference(_ c: OpCase) throws {
        if let problem = try runCase(c) { Issue.record("\(c.testDescription): \(problem)") }
    }

    @Test func everyOpHasCases() {
        for code in OpCode.allCases {
            #expect(!OpCases.cases(for: code).isEmpty, "no op-test cases for \(code)")
        }
        // The count the README quotes.
        #expect(OpCode.allCases.count == 17)
    }

    /// The driver catches a kernel that writes past its output: a plan whose output is one element short.
    @Test func guardsCatchAnOverrun() throws {
        let b = GuardedBuffer(count: 4)
        b.pointer[4] = 1
        #expect(b.damagedGuard() == 4)
        let c = GuardedBuffer(count: 4)
        (c.pointer - 1).pointee = 0
        #expect(c.damagedGuard() == -1)
    }
}
