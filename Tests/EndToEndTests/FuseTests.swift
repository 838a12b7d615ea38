import Foundation
import Testing
import KilnFormat
import KilnRuntime

/// `kiln fuse` / `kiln verify` through the release binaries on the committed mini samples: the backbone in
/// every Keras layout, the head in every layout, raw pixels in, Keras' own outputs of preprocess_input + the
/// nested model (same weights) as the reference.
@Suite(.enabled(if: E2E.enabled, "needs the release binaries: run `make test`"), .serialized)
struct FuseCLITests {
    static let samples = CLIErrorTests.samples
    static func s(_ name: String) -> String { "\(samples)/\(name)" }

    @Test(arguments: ["mini_notop_k3.h5", "mini_k3.h5", "mini_k2.h5", "mini.keras"], ["head_k3.h5", "head_k2.h5", "head.keras"])
    func fusedBundleOnRawPixelsMatchesKeras(backbone: String, head: String) throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/fused.kiln"
        let labels = "\(dir)/labels.txt"
        try "beans\ncake\npasta\nvinegar\ntea\n".write(toFile: labels, atomically: true, encoding: .utf8)
        let r = try E2E.run("kiln", ["fuse", Self.s(backbone), Self.s(head), "-o", bundle, "--labels", labels])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("preprocessing: caffe"))
        let run = try E2E.run("kiln-run", [bundle, "--input", Self.s("raw_64.npy"), "--output", "\(dir)/y.npy"])
        #expect(run.status == 0, "\(run.stderr)")
        let got = try NPY.read(path: "\(dir)/y.npy")
        let want = try NPY.read(path: Self.s("expected/nested_mini_k3.raw_64.npy"))
        let err = relativeMaxError(want.values, got.values)
        #expect(err <= 1e-4, "\(backbone) + \(head): \(err)")
        #expect(argmaxRows(got) == argmaxRows(want))
        print("fuse \(backbone) + \(head) (caffe, raw pixels): max|Δ|/max|ref| = \(err)")
        // The one file names the classes.
        let top = try E2E.run("kiln-run", [bundle, "--input", Self.s("raw_64.npy"), "--top", "1"])
        let names = ["beans", "cake", "pasta", "vinegar", "tea"]
        #expect(top.stdout.contains(names[argmaxRows(want)[0]]), "\(top.stdout)")
        // The bundle verifies against its unfused sources.
        let v = try E2E.run("kiln", ["verify", bundle, "--against", Self.s(backbone), Self.s(head), "--input", Self.s("raw_64.npy"), "--samples", "1"])
        #expect(v.status == 0, "\(v.stdout)\(v.stderr)")
    }

    @Test func hiddenLayerHeadWithoutPreprocessing() throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/h.kiln"
        #expect(try E2E.run("kiln", ["fuse", Self.s("mini_notop_k3.h5"), Self.s("head_hidden_k3.h5"), "-o", bundle, "--preprocess", "none"]).status == 0)
        #expect(try E2E.run("kiln-run", [bundle, "--input", Self.s("input_64.npy"), "--output", "\(dir)/y.npy"]).status == 0)
        let err = relativeMaxError(try NPY.read(path: Self.s("expected/head_hidden.input_64.npy")).values, try NPY.read(path: "\(dir)/y.npy").values)
        #expect(err <= 1e-4, "\(err)")
    }

    @Test func aBundleAsTheBackbone() throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try E2E.run("kiln", ["convert", Self.s("mini_k3.h5"), "-o", "\(dir)/b.kiln"]).status == 0)
        #expect(try E2E.run("kiln", ["fuse", "\(dir)/b.kiln", Self.s("head_k3.h5"), "-o", "\(dir)/f.kiln", "--preprocess", "caffe"]).status == 0)
        #expect(try E2E.run("kiln-run", ["\(dir)/f.kiln", "--input", Self.s("raw_64.npy"), "--output", "\(dir)/y.npy"]).status == 0)
        let err = relativeMaxError(try NPY.read(path: Self.s("expected/nested_mini_k3.raw_64.npy")).values, try NPY.read(path: "\(dir)/y.npy").values)
        #expect(err <= 1e-4, "\(err)")
    }

    /// Bad combinations: one line naming both sides, exit 1, the output untouched.
    @Test(arguments: [
        (["head_wrong_k3.h5"], "the head takes (64) but the backbone's 'avg_pool' in mini_notop_k3.h5 gives (128)"),
        (["head_k3.h5", "--cut", "pool9"], "mini_notop_k3.h5: no layer 'pool9' to cut at"),
        (["head_k3.h5", "--labels", "imagenet"], "has 1000 class names but the head head_k3.h5 has 5 outputs"),
        (["unsupported_k3.h5"], "unsupported_k3.h5: layer 'layer_norm' (LayerNormalization)"),
    ])
    func badCombinationsWriteNothing(args: [String], message: String) throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = "\(dir)/out.kiln"
        try Data("previous".utf8).write(to: URL(fileURLWithPath: out))
        let r = try E2E.run("kiln", ["fuse", Self.s("mini_notop_k3.h5"), Self.s(args[0])] + args.dropFirst() + ["-o", out])
        #expect(r.status != 0)
        let errorLines = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("kiln fuse:") }
        #expect(errorLines.count == 1, "\(r.stderr)")
        #expect(r.stderr.contains(message), "\(r.stderr)")
        #expect(FileManager.default.contents(atPath: out) == Data("previous".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["out.kiln"])
    }

    @Test func verifyFailsOnTheWrongSource() throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try E2E.run("kiln", ["fuse", Self.s("mini_notop_k3.h5"), Self.s("head_hidden_k3.h5"), "-o", "\(dir)/f.kiln"]).status == 0)
        let v = try E2E.run("kiln", ["verify", "\(dir)/f.kiln", "--against", Self.s("mini_notop_k3.h5"), Self.s("head_k3.h5"), "--samples", "1", "--input", Self.s("raw_64.npy")])
        #expect(v.status == 1, "\(v.stdout)")
    }
}

/// The full-size ResNet-50 backbone in four layouts fused with the trained 25-class head in three, raw
/// 224×224 pixels in; Keras' preprocess_input + the nested model (same weights) as the reference.
@Suite(.enabled(if: E2E.enabled, "full ResNet-50 fixtures: run `make test`"), .serialized)
struct ResNet50FuseTests {
    struct Plan: Decodable {
        var backbones: [String]
        var heads: [String]
        var input: String
        var expected: String
        var top1: [Int]
    }

    static let plan: Plan? = {
        guard let data = FileManager.default.contents(atPath: "\(E2E.fixtures)/fuse.json") else { return nil }
        return try? JSONDecoder().decode(Plan.self, from: data)
    }()

    @Test func everyBackboneWithEveryHead() throws {
        #expect(E2E.available && Self.plan != nil, "fixtures missing fuse.json: \(E2E.fixtures)")
        guard E2E.available, let plan = Self.plan else { return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let want = try NPY.read(path: "\(E2E.fixtures)/\(plan.expected)")
        for backbone in plan.backbones {
            for head in plan.heads {
                let bundle = "\(dir)/fused.kiln"
                let r = try E2E.run("kiln", ["fuse", "\(E2E.fixtures)/\(backbone)", "\(E2E.fixtures)/\(head)", "-o", bundle, "--preprocess", "caffe"])
                #expect(r.status == 0, "\(backbone) + \(head): \(r.stderr)")
                let run = try E2E.run("kiln-run", [bundle, "--input", "\(E2E.fixtures)/\(plan.input)", "--output", "\(dir)/y.npy"])
                #expect(run.status == 0, "\(run.stderr)")
                let got = try NPY.read(path: "\(dir)/y.npy")
                let err = relativeMaxError(want.values, got.values)
                #expect(err <= 1e-4, "\(backbone) + \(head): \(err)")
                #expect(argmaxRows(got) == plan.top1, "\(backbone) + \(head)")
                print("fuse \(backbone) + \(head) (caffe, raw 224x224 pixels): max|Δ|/max|ref| = \(err)")
            }
        }
    }
}
