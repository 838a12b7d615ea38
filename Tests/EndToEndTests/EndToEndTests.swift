import Foundation
import Testing
import KilnTestSupport
import KilnFormat
import KilnRuntime

/// End to end through the release binaries (`kiln convert`, `kiln inspect`, `kiln-run`) on the full-size
/// ResNet-50 fixtures that real Keras wrote (scripts/fixtures). `make test` sets KILN_FIXTURES, KILN_BIN and
/// KILN_REQUIRE_FIXTURES=1: then missing fixtures or binaries fail the suite instead of disabling it.
enum E2E {
    static let env = ProcessInfo.processInfo.environment
    static let fixtures = env["KILN_FIXTURES"] ?? ""
    static let bin = env["KILN_BIN"] ?? ""
    static let required = env["KILN_REQUIRE_FIXTURES"] == "1"
    static var available: Bool {
        FileManager.default.fileExists(atPath: "\(fixtures)/manifest.json") && FileManager.default.isExecutableFile(atPath: "\(bin)/kiln")
    }
    static var enabled: Bool { available || required }

    struct Case: Decodable, Sendable, CustomStringConvertible {
        var model: String
        var layout: String?
        var config: String?
        var input: String?
        var expected: String?
        var features: String?
        var top1: [Int]?
        var description: String { "\(model) on \(input ?? "-")" }
    }

    static let cases: [Case] = {
        guard let data = FileManager.default.contents(atPath: "\(fixtures)/manifest.json"),
              let list = try? JSONDecoder().decode([Case].self, from: data) else {
            // One placeholder case so that a required-but-missing fixture set fails loudly.
            return required ? [Case(model: "<missing \(fixtures)/manifest.json>")] : []
        }
        return list.filter { $0.input != nil && $0.expected != nil }
    }()

    typealias Result = ProcessResult

    @discardableResult
    static func run(_ tool: String, _ args: [String]) throws -> Result {
        try runProcess("\(bin)/\(tool)", args)
    }

    static func tempDir() throws -> String { try makeTemporaryDirectory(prefix: "kiln-e2e") }

    /// Converts `model` once per test process, with avg_pool exposed when the model has it.
    static func convert(_ c: Case, into dir: String) throws -> String {
        let out = "\(dir)/\(c.model).kiln"
        var args = ["convert", "\(fixtures)/\(c.model)", "-o", out]
        if let config = c.config { args += ["--config", "\(fixtures)/\(config)"] }
        if c.features != nil { args += ["--extra-output", "avg_pool"] }
        let r = try run("kiln", args)
        #expect(r.status == 0, "kiln \(args.joined(separator: " ")): \(r.stderr)")
        return out
    }
}

func relativeMaxError(_ reference: [Float], _ got: [Float]) -> Float {
    guard reference.count == got.count else { return .infinity }
    let scale = max(reference.map(abs).max() ?? 0, 1e-30)
    return zip(reference, got).map { abs($0 - $1) }.max().map { $0 / scale } ?? .infinity
}

func argmaxRows(_ t: Tensor) -> [Int] {
    let c = t.shape.last ?? 1
    return (0..<(t.values.count / c)).map { r in
        let row = Array(t.values[r * c..<(r + 1) * c])
        return row.indices.max { row[$0] < row[$1] } ?? -1
    }
}

@Suite(.enabled(if: E2E.enabled, "full ResNet-50 fixtures: run `make test` (or set KILN_FIXTURES and KILN_BIN)"), .serialized)
struct ResNet50ParityTests {
    /// `kiln convert` then `kiln-run`, every layout: outputs and avg_pool features within 1e-4 of Keras, same top-1.
    @Test(arguments: E2E.cases)
    func convertAndRunMatchesKeras(_ c: E2E.Case) throws {
        #expect(E2E.available, "fixtures or binaries missing: KILN_FIXTURES=\(E2E.fixtures) KILN_BIN=\(E2E.bin)")
        guard E2E.available, let input = c.input, let expectedFile = c.expected else { return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try E2E.convert(c, into: dir)
        let r = try E2E.run("kiln-run", [bundle, "--input", "\(E2E.fixtures)/\(input)", "--output", "\(dir)/y.npy"])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try NPY.read(path: "\(dir)/y.npy")
        let want = try NPY.read(path: "\(E2E.fixtures)/\(expectedFile)")
        #expect(got.shape == want.shape)
        let err = relativeMaxError(want.values, got.values)
        #expect(err <= 1e-4, "\(c): output relative error \(err)")
        print("parity \(c): output max|Δ|/max|ref| = \(err)")
        if let top1 = c.top1 { #expect(argmaxRows(got) == top1) }
        if let features = c.features {
            let f = try E2E.run("kiln-run", [bundle, "--input", "\(E2E.fixtures)/\(input)", "--output", "\(dir)/f.npy", "--output-name", "avg_pool"])
            #expect(f.status == 0, "\(f.stderr)")
            let gotF = try NPY.read(path: "\(dir)/f.npy")
            let wantF = try NPY.read(path: "\(E2E.fixtures)/\(features)")
            #expect(gotF.shape == wantF.shape)
            let ferr = relativeMaxError(wantF.values, gotF.values)
            #expect(ferr <= 1e-4, "\(c): avg_pool relative error \(ferr)")
            print("parity \(c): avg_pool max|Δ|/max|ref| = \(ferr)")
        }
    }
}

@Suite(.enabled(if: E2E.enabled, "full ResNet-50 fixtures: run `make test`"), .serialized)
struct ResNet50BundleTests {
    let source = "resnet50_k3.h5"

    @Test func inspectShowsOnlyInferenceOpsAndTheSizeIsTheWeights() throws {
        #expect(E2E.available)
        guard E2E.available else { return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/r.kiln"
        #expect(try E2E.run("kiln", ["convert", "\(E2E.fixtures)/\(source)", "-o", bundle]).status == 0)
        let r = try E2E.run("kiln", ["inspect", bundle, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        let ops = json["ops"] as? [String: Int] ?? [:]
        // One max-pool is the stem's; three are the strided copies of the residuals that `hoistStrides` adds where
        // stages 3, 4 and 5 open with a stride-2 1×1 convolution.
        #expect(ops == ["Conv2D": 53, "MaxPool2D": 4, "GlobalAvgPool": 1, "Dense": 1, "Softmax": 1])
        let strided = Set((json["layers"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }.filter { $0.hasSuffix("/residual_stride") })
        #expect(strided == ["conv2_block3_3_conv/residual_stride", "conv3_block4_3_conv/residual_stride", "conv4_block6_3_conv/residual_stride"])
        let layers = json["layers"] as? [[String: Any]] ?? []
        #expect(!layers.contains { ($0["op"] as? String).map { $0.contains("Batch") || $0.contains("Dropout") } ?? true })
        let params = json["total_parameters"] as? Int ?? 0
        #expect(params == 25_530_472)  // Keras' ResNet50 has 25,636,712 of which 53,120 BN params × 2 fold away
        let flops = json["total_flops"] as? Int ?? 0
        // Keras' 7.72 GFLOP less what the hoisted strides save: in the last block of stages 2, 3 and 4 (c = 64, 128,
        // 256 channels, side 56, 28, 14) the 3×3 convolution (2·9·c² per cell) and the 1×1 c → 4c convolution with
        // its residual add ((2c + 1)·4c per cell) run on a quarter of the cells, plus the strided residual copy.
        var saved = 0
        for (c, side) in [(64, 56), (128, 28), (256, 14)] {
            let dropped = side * side - (side / 2) * (side / 2)
            saved += 2 * 9 * c * c * dropped + (2 * c + 1) * 4 * c * dropped - 4 * c * (side / 2) * (side / 2)
        }
        #expect(abs(Double(flops + saved) / 7.72e9 - 1) < 0.01, "FLOPs \(flops)")
        let size = json["size"] as? Int ?? 0
        #expect(size >= params * 4 && Double(size) <= Double(params * 4) * 1.01, "size \(size) for \(params) float32 weights")
        let human = try E2E.run("kiln", ["inspect", bundle])
        #expect(human.status == 0)
        #expect(!human.stdout.contains("BatchNorm") && !human.stdout.contains("Dropout"))
    }

    @Test func convertingTwiceGivesIdenticalBytes() throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["a", "b"] {
            #expect(try E2E.run("kiln", ["convert", "\(E2E.fixtures)/\(source)", "-o", "\(dir)/\(name).kiln"]).status == 0)
        }
        let a = FileManager.default.contents(atPath: "\(dir)/a.kiln")
        #expect(a != nil && a == FileManager.default.contents(atPath: "\(dir)/b.kiln"))
    }

    /// Larger batches run another algorithm for some layers (F(2,3) for the 7² stage:
    /// `ConvAlgorithm.forLargerBatch`): the fixture's two images repeated to batches of 4 and 8 still give Keras'
    /// outputs for them, row for row, within 1e-4, with the same top-1.
    @Test(arguments: [4, 8])
    func largerBatchesMatchKeras(_ batch: Int) throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/r.kiln"
        #expect(try E2E.run("kiln", ["convert", "\(E2E.fixtures)/\(source)", "-o", bundle]).status == 0)
        let images = try NPY.read(path: "\(E2E.fixtures)/input_224.npy")
        let keras = try NPY.read(path: "\(E2E.fixtures)/expected/resnet50_k3.input_224.npy")
        let rows = images.shape[0], imageSize = images.values.count / rows, classes = keras.shape[1]
        let repeated = (0..<batch).flatMap { images.values[($0 % rows) * imageSize..<($0 % rows + 1) * imageSize] }
        try NPY.write(Tensor(shape: [batch] + images.shape.dropFirst(), values: repeated), to: "\(dir)/x.npy")
        let want = (0..<batch).flatMap { keras.values[($0 % rows) * classes..<($0 % rows + 1) * classes] }
        let r = try E2E.run("kiln-run", [bundle, "--input", "\(dir)/x.npy", "--output", "\(dir)/y.npy"])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try NPY.read(path: "\(dir)/y.npy")
        #expect(got.shape == [batch, classes])
        let err = relativeMaxError(want, got.values)
        #expect(err <= 1e-4, "batch \(batch): output relative error \(err)")
        print("parity resnet50_k3.h5 at batch \(batch): output max|Δ|/max|ref| = \(err)")
        let top1 = E2E.cases.first { $0.model == source && $0.input == "input_224.npy" }?.top1 ?? []
        #expect(top1.count == rows && argmaxRows(got) == (0..<batch).map { top1[$0 % rows] })
    }

    /// A changed byte in any section stops loading with the section's name, and nothing is written.
    @Test func damagedBundleNamesTheSection() throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = "\(dir)/good.kiln"
        #expect(try E2E.run("kiln", ["convert", "\(E2E.fixtures)/\(source)", "-o", good]).status == 0)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))
        let bundle = try Bundle(bytes: bytes)
        var probes: [(Int, String)] = [(9, "header"), (70, "header")]
        for s in bundle.sections {
            probes += [(s.offset, "section \(s.kind)"), (s.offset + s.size / 2, "section \(s.kind)"), (s.offset + s.size - 1, "section \(s.kind)")]
        }
        for (offset, section) in probes {
            var damaged = bytes
            damaged[offset] ^= 0x01
            let path = "\(dir)/damaged.kiln"
            try Data(damaged).write(to: URL(fileURLWithPath: path))
            let out = "\(dir)/y.npy"
            let r = try E2E.run("kiln-run", [path, "--input", "\(E2E.fixtures)/input_224.npy", "--output", out])
            #expect(r.status == 1, "offset \(offset): status \(r.status)")
            #expect(r.stderr.contains(section), "offset \(offset): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out))
        }
    }
}

@Suite(.enabled(if: E2E.enabled, "needs the release binaries: run `make test`"), .serialized)
struct CLIErrorTests {
    static let samples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../samples/mini").standardized.path

    /// Bad sources: one line on stderr, exit 1, and an existing output file left exactly as it was.
    @Test(arguments: ["not_keras.h5", "unsupported_k3.h5", "truncated", "manifest.json"])
    func badSourceWritesNothing(_ name: String) throws {
        guard E2E.available else { #expect(E2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var source = "\(Self.samples)/\(name)"
        if name == "truncated" {
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(Self.samples)/mini_k3.h5"))
            source = "\(dir)/truncated.h5"
            try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: source))
        }
        let out = "\(dir)/out.kiln"
        try Data("previous".utf8).write(to: URL(fileURLWithPath: out))
        let r = try E2E.run("kiln", ["convert", source, "-o", out])
        #expect(r.status == 1)
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains((source as NSString).lastPathComponent))
        #expect(FileManager.default.contents(atPath: out) == Data("previous".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == (name == "truncated" ? ["out.kiln", "truncated.h5"] : ["out.kiln"]))
    }

    @Test func usageErrorsExit64AndHelpWorks() throws {
        guard E2E.available else { #expect(E2E.available); return }
        #expect(try E2E.run("kiln", ["convert"]).status == 64)
        #expect(try E2E.run("kiln-run", ["x.kiln"]).status == 64)
        let help = try E2E.run("kiln", ["--help"])
        #expect(help.status == 0 && help.stdout.contains("convert") && help.stdout.contains("inspect"))
        #expect(try E2E.run("kiln-run", ["--help"]).stdout.contains("--input"))
    }
}
