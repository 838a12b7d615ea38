#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An elementwise function, the data half of an activation (see `Activation`). Each case is defined here once:
/// its bundle code, its name and its formula. The formula, in Double, is the reference every fast kernel is
/// tested against (`ReferenceKernels.activate`); the fast kernels switch on `code` (`kiln_activate` in
/// CKilnKernels).
///
/// Adding a function: a case here (code, name, `referenceValue`, `flopsPerElement`), its vector loop in
/// `Sources/CKilnKernels/activations.c`, and the importers' names for it. The op-test driver runs every case.
public enum UnaryFunction: Int64, Sendable, CaseIterable, CustomStringConvertible {
    /// f(x) = alpha · x + beta (alpha 1, beta 0: the identity). With a clamp it is ReLU, ReLU6, hard-sigmoid.
    case linear = 0
    /// f(x) = 1 / (1 + e^−x).
    case sigmoid = 1
    /// f(x) = tanh(x).
    case tanh = 2
    /// f(x) = beta · (x > 0 ? x : alpha · (e^x − 1)). ELU: beta 1; SELU: alpha 1.6732632…, beta 1.0507009…
    case elu = 3
    /// f(x) = x/2 · (1 + erf(x/√2)): GELU, exact form (Keras' `gelu`, approximate=False).
    case gelu = 4
    /// f(x) = x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³))): GELU, tanh approximation.
    case geluTanh = 5
    /// f(x) = x / (1 + e^(−alpha·x)): swish / SiLU with alpha 1.
    case swish = 6
    /// f(x) = ln(1 + e^x).
    case softplus = 7
    /// f(x) = x ≥ beta ? x : alpha · (x − beta): LeakyReLU (beta 0), Keras' ReLU(threshold, negative_slope);
    /// a clamp above gives ReLU's max_value.
    case leakyReLU = 8

    public var description: String {
        switch self {
        case .linear: return "linear"
        case .sigmoid: return "sigmoid"
        case .tanh: return "tanh"
        case .elu: return "elu"
        case .gelu: return "gelu"
        case .geluTanh: return "gelu_tanh"
        case .swish: return "swish"
        case .softplus: return "softplus"
        case .leakyReLU: return "leaky_relu"
        }
    }

    /// f(x) in Double, from the definition.
    public func referenceValue(_ x: Double, alpha: Double, beta: Double) -> Double {
        switch self {
        case .linear: return alpha * x + beta
        case .sigmoid: return 1 / (1 + exp(-x))
        case .tanh: return libmTanh(x)
        case .elu: return beta * (x > 0 ? x : alpha * expm1(x))
        case .gelu: return 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
        case .geluTanh: return 0.5 * x * (1 + libmTanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
        case .swish: return x / (1 + exp(-alpha * x))
        case .softplus: return x > 30 ? x : log1p(exp(x))
        case .leakyReLU: return x >= beta ? x : alpha * (x - beta)
        }
    }

    /// The (alpha, beta) a function takes when nothing else is said: (1, 0), except ELU's beta 1.
    public var defaultParameters: (alpha: Float, beta: Float) {
        switch self {
        case .elu: return (1, 1)
        case .leakyReLU: return (0.3, 0)
        default: return (1, 0)
        }
    }

    /// Floating-point operations per element, for `kiln inspect` (an exponential, erf or tanh counts as one).
    public var flopsPerElement: Int {
        switch self {
        case .linear: return 2
        case .sigmoid: return 3
        case .tanh: return 1
        case .elu: return 4
        case .gelu: return 5
        case .geluTanh: return 9
        case .swish: return 4
        case .softplus: return 3
        case .leakyReLU: return 3
        }
    }
}

/// libm's tanh (the case `tanh` shadows the name inside `UnaryFunction`).
@inline(__always) func libmTanh(_ x: Double) -> Double { tanh(x) }

/// What an op applies to each element of its result: y = min(max(f(x), minimum), maximum) with f a
/// `UnaryFunction` of parameters alpha and beta. Activations are data, not kernels: ReLU is the identity clamped
/// at 0, ReLU6 clamped to [0, 6], hard-sigmoid linear(1/6, 1/2) clamped to [0, 1] (XNNPACK's output_min and
/// output_max). Softmax is not an activation: it reads a whole row, so it is an op of its own.
public struct Activation: Sendable, Hashable, CustomStringConvertible {
    public var function: UnaryFunction
    public var alpha: Float
    public var beta: Float
    public var minimum: Float
    public var maximum: Float

    public init(_ function: UnaryFunction, alpha: Float = 1, beta: Float = 0,
                minimum: Float = -.infinity, maximum: Float = .infinity) {
        self.function = function
        self.alpha = alpha
        self.beta = beta
        self.minimum = minimum
        self.maximum = maximum
    }

    /// The identity.
    public static let none = Activation(.linear)
    /// max(x, 0).
    public static let relu = Activation(.linear, minimum: 0)
    /// `function` with its default parameters (ELU's beta 1), unbounded.
    public static func plain(_ function: UnaryFunction) -> Activation {
        let p = function.defaultParameters
        return Activation(function, alpha: p.alpha, beta: p.beta)
    }

    /// True for the identity.
    public var isIdentity: Bool { self == .none }
    /// True when the activation is exactly max(x, 0), which the GEMM kernels apply in their register tiles.
    public var isReLU: Bool { self == .relu }
    /// True when no output can be negative.
    public var isNonNegative: Bool { minimum >= 0 }

    /// y in Double: the reference.
    public func referenceValue(_ x: Double) -> Double {
        var y = function.referenceValue(x, alpha: Double(alpha), beta: Double(beta))
        // A finite bound replaces NaN (as max(x, 0) does in the GEMM tiles); an infinite one is no bound at all.
        if minimum > -.infinity { y = y > Double(minimum) ? y : Double(minimum) }
        if maximum < .infinity { y = y < Double(maximum) ? y : Double(maximum) }
        return y
    }

    public var flopsPerElement: Int {
        (isIdentity ? 0 : function.flopsPerElement) + (minimum > -.infinity ? 1 : 0) + (maximum < .infinity ? 1 : 0)
    }

    public var description: String {
        if isIdentity { return "linear" }
        if isReLU { return "relu" }
        var text = function == .linear && alpha == 1 && beta == 0 ? "clamp" : "\(function)"
        if function == .linear, alpha != 1 || beta != 0 { text += "(\(alpha)x+\(beta))" }
        if minimum > -.infinity || maximum < .infinity { text += "[\(minimum), \(maximum)]" }
        return text
    }

    // MARK: Bundle encoding

    /// Version 1.0 codes: 0 none, 1 relu (and 2, a softmax fused into Dense: see `DenseAttributes`).
    static let legacyNone: Int64 = 0
    static let legacyReLU: Int64 = 1

    /// The attribute words: one legacy code where it suffices (so that 1.0 readers still read the bundle), else
    /// five: [function code + 16, alpha, beta, minimum, maximum], the floats as their binary32 bit patterns.
    var encoded: [Int64] {
        if isIdentity { return [Self.legacyNone] }
        if isReLU { return [Self.legacyReLU] }
        return [Self.extendedBase + function.rawValue] + [alpha, beta, minimum, maximum].map { Int64($0.bitPattern) }
    }

    /// Whether a bundle that holds this activation needs format 1.2.
    var needsVersion1_2: Bool { encoded.count > 1 }

    /// Extended codes start here (1.2); below it are the legacy codes.
    static let extendedBase: Int64 = 16

    /// Decodes the words at the start of `a`; returns the activation and the number of words it took.
    static func decode(_ a: ArraySlice<Int64>, op: String) throws(AttributeError) -> (Activation, Int) {
        guard let code = a.first else { throw AttributeError(message: "\(op) has no activation attribute") }
        switch code {
        case legacyNone: return (.none, 1)
        case legacyReLU: return (.relu, 1)
        case extendedBase...:
            guard let function = UnaryFunction(rawValue: code - extendedBase) else {
                throw AttributeError(message: "\(op) activation function code \(code - extendedBase) is unknown")
            }
            guard a.count >= 5 else { throw AttributeError(message: "\(op) activation needs 5 attributes, has \(a.count)") }
            var floats: [Float] = []
            for word in a.dropFirst().prefix(4) {
                guard let bits = UInt32(exactly: word) else {
                    throw AttributeError(message: "\(op) activation parameter \(word) is not a binary32 bit pattern")
                }
                floats.append(Float(bitPattern: bits))
            }
            guard floats.allSatisfy({ !$0.isNaN }), floats[0].isFinite, floats[1].isFinite, floats[2] <= floats[3] else {
                throw AttributeError(message: "\(op) activation parameters \(floats) are not finite with minimum ≤ maximum")
            }
            return (Activation(function, alpha: floats[0], beta: floats[1], minimum: floats[2], maximum: floats[3]), 5)
        default:
            throw AttributeError(message: "\(op) activation code \(code) is not an elementwise activation")
        }
    }
}
