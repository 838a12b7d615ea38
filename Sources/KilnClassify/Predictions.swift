#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One class of one input: the output column, its label (or the column number), and its score.
public struct Prediction: Sendable, Equatable, Codable {
    public var index: Int
    public var label: String
    public var score: Float

    public init(index: Int, label: String, score: Float) {
        self.index = index
        self.label = label
        self.score = score
    }
}

/// The `k` best columns of `row`, highest first; ties go to the lower column. Labels name the columns
/// (`label(column)`).
public func topK(_ row: UnsafeBufferPointer<Float>, k: Int, label: (Int) -> String) -> [Prediction] {
    let order = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(max(k, 0))
    return order.map { Prediction(index: $0, label: label($0), score: row[$0]) }
}

/// The same on an array.
public func topK(_ row: [Float], k: Int, label: (Int) -> String) -> [Prediction] {
    row.withUnsafeBufferPointer { topK($0, k: k, label: label) }
}

/// Softmax of `row` in place (max subtracted, in Float64): probabilities for presenting logits.
public func softmax(_ row: UnsafeMutableBufferPointer<Float>) {
    guard let m = row.max() else { return }
    let e = row.map { exp(Double($0 - m)) }
    let sum = e.reduce(0, +)
    for i in row.indices { row[i] = Float(e[i] / sum) }
}

/// The classes per row of an output of `shape`: everything after the batch (`[N, C]`, or `[N, C, 1, 1]` as an ONNX
/// model declares a pooled map); the one axis of a rank-1 output.
public func classColumns(_ shape: [Int]) -> Int {
    shape.count > 1 ? shape.dropFirst().reduce(1, *) : (shape.last ?? 1)
}

/// The logistic function 1 / (1 + e^−z), in Float64 (a binary logit's probability of the second class).
public func sigmoid(_ z: Float) -> Float {
    Float(1 / (1 + exp(-Double(z))))
}
