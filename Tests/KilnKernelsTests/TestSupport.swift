import Testing
@testable import KilnKernels

/// SplitMix64: a tiny seeded generator, so every test input is reproducible from its seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A test tensor: float storage with a stable address, freed on deinit. New buffers hold NaN, so an element a
/// kernel forgets to write fails the comparison.
final class Buffer: @unchecked Sendable {
    let count: Int
    let pointer: UnsafeMutablePointer<Float>

    init(count: Int, repeating value: Float = .nan) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: value, count: max(count, 1))
    }

    convenience init(_ values: [Float]) {
        self.init(count: values.count)
        for (i, v) in values.enumerated() { pointer[i] = v }
    }

    /// Uniform values in `range`.
    static func random(count: Int, in range: ClosedRange<Float> = -1...1, using rng: inout SplitMix64) -> Buffer {
        let b = Buffer(count: count)
        for i in 0..<count { b.pointer[i] = Float.random(in: range, using: &rng) }
        return b
    }

    deinit { pointer.deallocate() }

    var readOnly: UnsafePointer<Float> { UnsafePointer(pointer) }
    var bufferPointer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    func copy(from other: Buffer) {
        precondition(other.count == count)
        pointer.update(from: other.pointer, count: count)
    }
}

/// Row-major coordinates of flat `index` in `shape`, e.g. `[0, 3, 1, 7]`.
func coordinates(of index: Int, in shape: [Int]) -> [Int] {
    var rest = index
    var result = [Int](repeating: 0, count: shape.count)
    for axis in shape.indices.reversed() {
        result[axis] = rest % shape[axis]
        rest /= shape[axis]
    }
    return result
}

/// Records an issue at the first element where `actual` and `expected` differ by more than
/// `relativeTolerance × max|expected|`, naming the index, its coordinates, both values and the shape.
/// NaN anywhere (an unwritten output) always fails.
func expectClose(_ actual: Buffer, _ expected: Buffer, shape: [Int], relativeTolerance: Float, _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    let count = shape.reduce(1, *)
    #expect(actual.count >= count && expected.count >= count, sourceLocation: sourceLocation)
    var largest: Float = 0
    for i in 0..<count { largest = max(largest, abs(expected.pointer[i])) }
    let limit = relativeTolerance * largest
    for i in 0..<count {
        let a = actual.pointer[i], e = expected.pointer[i]
        if !(abs(a - e) <= limit) {
            Issue.record("""
                \(what): element \(i) \(coordinates(of: i, in: shape)) of shape \(shape): \
                fast \(a), reference \(e), |difference| \(abs(a - e)) > \(limit) \
                (\(relativeTolerance) × max|reference| \(largest))
                """, sourceLocation: sourceLocation)
            return
        }
    }
}

/// Records an issue unless `actual` equals `expected` within `tolerance` (absolute), element by element.
func expectValues(_ actual: [Float], _ expected: [Float], tolerance: Float = 1e-6, _ what: String,
                  sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual.count == expected.count else {
        Issue.record("\(what): \(actual.count) values, expected \(expected.count)", sourceLocation: sourceLocation)
        return
    }
    for i in actual.indices where !(abs(actual[i] - expected[i]) <= tolerance) {
        Issue.record("\(what): element \(i) is \(actual[i]), expected \(expected[i]); all: \(actual)",
                     sourceLocation: sourceLocation)
        return
    }
}
