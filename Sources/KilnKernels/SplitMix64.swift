/// SplitMix64 (Steele, Lea and Flood): small, fast, and the same sequence on every platform, so every seeded
/// choice (splits, initial weights, shuffles, test inputs) is reproducible from its seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) (the top 53 bits).
    public mutating func nextUniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// In 0..<n (`n` ≥ 1; modulo, so slightly biased for huge n, and the same on every platform).
    public mutating func next(below n: Int) -> Int { Int(next() % UInt64(n)) }

    /// Fisher–Yates with `next(below:)` (unlike the standard library's shuffle, the same order on every platform).
    public mutating func shuffle<T>(_ a: inout [T]) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, next(below: i + 1)) }
    }
}
