import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnKeras
import KilnKernels
import KilnRuntime

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two .npy tensors: largest difference relative to the reference, and top-1 agreement.",
        discussion: "Exit status 0 when max|a−b| / max|a| ≤ --tolerance and (for rank-2 outputs) every row's top-1 agrees, else 1.")

    @Argument(help: "The reference tensor (.npy), e.g. the source framework's output.")
    var reference: String

    @Argument(help: "The tensor to check (.npy).")
    var candidate: String

    @Option(name: .long, help: "Largest allowed max|Δ| / max|reference|.")
    var tolerance: Double = 1e-4

    func run() throws {
        let a = try NPY.read(path: reference)
        let b = try NPY.read(path: candidate)
        guard a.shape == b.shape else {
            throw CLIError(.badInput, "shapes differ: \(a.shape) vs \(b.shape)")
        }
        let scale = Double(a.values.map(abs).max() ?? 0)
        let maxDiff = Double(zip(a.values, b.values).map { abs($0 - $1) }.max() ?? 0)
        let relative = scale > 0 ? maxDiff / scale : maxDiff
        var agree = true
        var top1 = ""
        if a.shape.count == 2, let columns = a.shape.last, columns > 1 {
            func argmax(_ t: Tensor, _ r: Int) -> Int {
                let row = t.values[r * columns..<(r + 1) * columns]
                return (row.indices.max { row[$0] < row[$1] } ?? r * columns) - r * columns
            }
            let rows = a.shape[0]
            let same = (0..<rows).filter { argmax(a, $0) == argmax(b, $0) }.count
            agree = same == rows
            top1 = ", top-1 agrees on \(same)/\(rows)"
        }
        print(String(format: "max|Δ| = %.3g, max|Δ|/max|ref| = %.3g (tolerance %.1g)", maxDiff, relative, tolerance) + top1)
        if relative > tolerance || !agree { throw ExitCode(1) }
    }
}
