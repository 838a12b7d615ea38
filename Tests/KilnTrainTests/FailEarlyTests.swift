import Foundation
import Testing
import KilnRuntime
import KilnTestSupport

/// Every command that writes a file checks its destination before any long work (the destination's error comes
/// first even when the inputs do not exist, and nothing is printed or computed before it), and `kiln verify`'s
/// mismatches end in exit 1 and one line, never a signal. On the committed samples, through the binaries.
@Suite(.enabled(if: KilnBinary.enabled, "needs the kiln binaries (swift build, or KILN_BIN)"), .serialized)
struct FailEarlyTests {
    let root = TrainFixtures.repoRoot
    var backbone: String { root + "/samples/mini/mini_notop_k3.h5" }
    var head: String { root + "/samples/mini/head_k3.h5" }

    func expectOneLine(_ r: ProcessResult, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 1, "exit \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr == "Error: \(message)\n", sourceLocation: sourceLocation)
    }

    @Test func everyWriterChecksItsFolderFirst() throws {
        let dir = try makeTemporaryDirectory(prefix: "kiln-fail-early")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let missing = "\(dir)/missing"
        // The inputs do not exist either: the destination is what is checked first.
        expectOneLine(try KilnBinary.run(["convert", "\(dir)/no-model.h5", "-o", "\(missing)/m.kiln"]),
                      "\(missing)/m.kiln: the folder '\(missing)' does not exist")
        expectOneLine(try KilnBinary.run(["fuse", "\(dir)/no-backbone.h5", "\(dir)/no-head.h5", "-o", "\(missing)/f.kiln"]),
                      "\(missing)/f.kiln: the folder '\(missing)' does not exist")
        let data = root + "/samples/digits/train"
        let features = try KilnBinary.run(["features", backbone, data, "-o", "\(missing)/f.npz"])
        expectOneLine(features, "\(missing)/f.npz: the folder '\(missing)' does not exist")
        #expect(features.stdout.isEmpty, "nothing scanned or computed first: \(features.stdout)")
        expectOneLine(try KilnBinary.run(["train-head", "\(dir)/no-features.npz", "-o", "\(missing)/h.h5"]),
                      "\(missing)/h.h5: the folder '\(missing)' does not exist")
        expectOneLine(try KilnBinary.run(["train-head", "\(dir)/no-features.npz", "-o", "\(dir)/h.h5", "--predictions", "\(missing)/p.npy"]),
                      "\(missing)/p.npy: the folder '\(missing)' does not exist")
        expectOneLine(try KilnBinary.run([dir + "/no-bundle.kiln", "--input", "\(dir)/no-x.npy", "--output", "\(missing)/y.npy"], tool: "kiln-run"),
                      "\(missing)/y.npy: the folder '\(missing)' does not exist")
        // A destination that is a folder, and a folder that is a file.
        expectOneLine(try KilnBinary.run(["convert", backbone, "-o", dir]), "\(dir): is a folder, not a file")
        try Data("x".utf8).write(to: URL(fileURLWithPath: "\(dir)/plain"))
        expectOneLine(try KilnBinary.run(["convert", backbone, "-o", "\(dir)/plain/m.kiln"]), "\(dir)/plain/m.kiln: '\(dir)/plain' is not a folder")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["plain"], "no temporary file left behind")
    }

    @Test func verifyMismatchesAreOneLine() throws {
        let dir = try makeTemporaryDirectory(prefix: "kiln-fail-early")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fused = "\(dir)/fused.kiln"
        let made = try KilnBinary.run(["fuse", backbone, head, "-o", fused, "--input-size", "64x64"])
        #expect(made.status == 0, "\(made.stderr)")
        // The head forgotten (a trap, exit 132, before).
        expectOneLine(try KilnBinary.run(["verify", fused, "--against", backbone]),
                      "fused.kiln was fused with a head (fuse.head head_k3.h5): give it after the bundle, kiln verify \(fused) HEAD --against \(backbone)")
        // Another model altogether: the whole mini ResNet with its 10-class predictions against the 3-class fused head.
        let whole = "\(dir)/whole.kiln"
        #expect(try KilnBinary.run(["convert", root + "/samples/mini/mini_k3.h5", "-o", whole]).status == 0)
        expectOneLine(try KilnBinary.run(["verify", whole, "--against", backbone, "--input-size", "64x64"]),
                      "whole.kiln's output 'predictions' is [1, 10] but mini_notop_k3.h5's 'avg_pool' is [1, 128] for random 1 [1, 64, 64, 3]: " +
                      "not the model the bundle was made from")
        // An --input of the wrong rank (the reference kernels trusted it: an index out of range, before).
        let npy = "\(dir)/rows.npy"
        try NPY.write(Tensor(shape: [3, 5], values: [Float](repeating: 1, count: 15)), to: npy)
        expectOneLine(try KilnBinary.run(["verify", fused, head, "--against", backbone, "--input", npy]),
                      "\(npy) has shape [3, 5] but fused.kiln takes [N, N, N, 3]")
        // The right head: passes.
        let right = try KilnBinary.run(["verify", fused, head, "--against", backbone])
        #expect(right.status == 0, "\(right.stdout)\(right.stderr)")
    }
}
