import Foundation
import Testing
import KilnFormat
import KilnRuntime
import KilnTestSupport

/// The head fixtures (scripts/fixtures-heads, KILN_HEAD_FIXTURES): a small Keras backbone, the tutorials' heads as
/// head files and whole models, Keras' outputs on image_dataset_from_directory's pixels of a few photos.
enum HeadFixtures {
    struct Head: Decodable, Sendable, CustomStringConvertible {
        var name: String
        var kind: String
        var units: Int
        var labels: String
        var head: String
        var whole: String
        var expected: String
        var description: String { name }
    }

    struct Manifest: Decodable, Sendable {
        var photos: [String]
        var heads: [Head]
    }

    static let env = ProcessInfo.processInfo.environment
    static let folder = env["KILN_HEAD_FIXTURES"] ?? ""
    static let manifest: Manifest? = {
        guard !folder.isEmpty, let data = FileManager.default.contents(atPath: "\(folder)/manifest.json") else { return nil }
        return try? JSONDecoder().decode(Manifest.self, from: data)
    }()
    static let required = env["KILN_REQUIRE_FIXTURES"] == "1"
    static var heads: [Head] { manifest?.heads ?? [] }

    /// The kiln and kiln-run binaries: the release ones of `make test` (KILN_BIN), else those beside the tests.
    static let bin: String = {
        if let bin = env["KILN_BIN"], !bin.isEmpty { return bin }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    }()
    static var enabled: Bool {
        (manifest != nil && FileManager.default.isExecutableFile(atPath: "\(bin)/kiln")) || required
    }

    static func run(_ tool: String, _ args: [String]) throws -> ProcessResult { try runProcess("\(bin)/\(tool)", args) }

    static func labels(_ head: Head) throws -> [String] {
        try String(contentsOfFile: "\(folder)/\(head.labels)", encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// What Keras' output row means, by the head's kind: the probability of every class (binary: both), computed
    /// here in Float64 from Keras' values (sigmoid of a logit, 1 − p, softmax of logits).
    static func probabilities(_ y: ArraySlice<Float>, kind: String) -> [Double] {
        let v = y.map(Double.init)
        func sigmoid(_ z: Double) -> Double { 1 / (1 + exp(-z)) }
        switch kind {
        case "binary-logit": return [sigmoid(-v[0]), sigmoid(v[0])]
        case "binary-probability": return [1 - v[0], v[0]]
        case "logits":
            let m = v.max() ?? 0
            let e = v.map { exp($0 - m) }
            return e.map { $0 / e.reduce(0, +) }
        default: return v
        }
    }
}

@Suite(.enabled(if: HeadFixtures.enabled, "KILN_HEAD_FIXTURES (make fixtures-heads) and the kiln binaries"), .serialized)
struct HeadKindTests {
    /// `kiln convert` of each whole Keras model records the head's kind; `kiln-run --input --output` writes Keras' own
    /// output values (1e-4 relative), and its printed classes are the probabilities Keras' values mean (1e-5), for
    /// multi-label only those at or over --threshold.
    @Test(arguments: HeadFixtures.heads)
    func convertRecordsKindAndKilnRunMatchesKeras(_ head: HeadFixtures.Head) throws {
        let folder = HeadFixtures.folder
        let dir = try makeTemporaryDirectory(prefix: "kiln-heads")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/\(head.name).kiln"
        let converted = try HeadFixtures.run("kiln", ["convert", "\(folder)/\(head.whole)", "-o", bundle])
        #expect(converted.status == 0, "\(converted.stderr)")
        let model = try Model(contentsOf: bundle)
        #expect(model.frozen.metadata[.outputKind] == .string(head.kind), "\(head)")

        let y = try HeadFixtures.run("kiln-run", [bundle, "--input", "\(folder)/x.npy", "--output", "\(dir)/y.npy"])
        #expect(y.status == 0, "\(y.stderr)")
        let got = try NPY.read(path: "\(dir)/y.npy"), want = try NPY.read(path: "\(folder)/\(head.expected)")
        #expect(got.shape == want.shape, "\(head)")
        let scale = want.values.map { abs($0) }.max() ?? 1
        let worst = zip(got.values, want.values).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst / scale <= 1e-4, "\(head): --output differs from Keras by \(worst) (scale \(scale))")

        for threshold in ["0.5", "0.3"] {
            let printed = try HeadFixtures.run("kiln-run", [bundle, "--input", "\(folder)/x.npy", "--top", "4", "--threshold", threshold])
            #expect(printed.status == 0, "\(printed.stderr)")
            let rows = printed.lines
            #expect(rows.count == want.shape[0], "\(head): \(printed.stdout)")
            for (r, line) in rows.enumerated() {
                let p = HeadFixtures.probabilities(want.values[(r * head.units)..<((r + 1) * head.units)], kind: head.kind)
                let shown = line.split(separator: ":", maxSplits: 1).last.map { $0.split(separator: " ") } ?? []
                var seen: [Int] = []
                for item in shown {
                    let parts = item.split(separator: "=")
                    let index = try #require(Int(parts[0])), score = try #require(Double(parts[1]))
                    seen.append(index)
                    #expect(abs(score - p[index]) <= 1e-5, "\(head) row \(r) class \(index): \(score) vs Keras \(p[index])")
                }
                let expectedClasses = head.kind == "multi-label"
                    ? p.indices.filter { p[$0] >= Double(threshold)! }.sorted { p[$0] > p[$1] }
                    : Array(p.indices.sorted { p[$0] > p[$1] }.prefix(4))
                #expect(seen == expectedClasses, "\(head) row \(r) threshold \(threshold): \(line)")
            }
        }
    }

    /// `kiln fuse` of the backbone and each head file, `--resize tf-bilinear --input-size 32x32 --labels`: kiln-run's
    /// JSON on the photo folder gives per photo the class names and the probabilities Keras gives on the pixels
    /// image_dataset_from_directory makes (1e-3).
    @Test(arguments: HeadFixtures.heads)
    func fuseRecordsKindAndKilnRunJSONMatchesKeras(_ head: HeadFixtures.Head) throws {
        let folder = HeadFixtures.folder
        let m = try #require(HeadFixtures.manifest)
        let dir = try makeTemporaryDirectory(prefix: "kiln-heads")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/\(head.name).kiln"
        let fused = try HeadFixtures.run("kiln", ["fuse", "\(folder)/backbone.h5", "\(folder)/\(head.head)", "--labels", "\(folder)/\(head.labels)",
                                                  "--resize", "tf-bilinear", "--input-size", "32x32", "-o", bundle])
        #expect(fused.status == 0, "\(fused.stderr)")
        #expect(try Model(contentsOf: bundle).frozen.metadata[.outputKind] == .string(head.kind))
        let names = try HeadFixtures.labels(head)
        let r = try HeadFixtures.run("kiln-run", [bundle, "\(folder)/photos", "--format", "json", "--top", "4"])
        #expect(r.status == 0, "\(r.stderr)")
        let want = try NPY.read(path: "\(folder)/\(head.expected)")
        struct Line: Decodable { struct P: Decodable { var index: Int; var label: String; var probability: Double }; var file: String; var predictions: [P] }
        let lines = try r.lines.map { try JSONDecoder().decode(Line.self, from: Data($0.utf8)) }
        #expect(lines.map { ($0.file as NSString).lastPathComponent } == m.photos.map { ($0 as NSString).lastPathComponent })
        for (row, line) in lines.enumerated() {
            let p = HeadFixtures.probabilities(want.values[(row * head.units)..<((row + 1) * head.units)], kind: head.kind)
            let classes = head.kind == "multi-label" ? p.indices.filter { p[$0] >= 0.5 }.count : min(p.count, 4)
            #expect(line.predictions.count == classes, "\(head) \(line.file)")
            for q in line.predictions {
                #expect(q.label == names[q.index])
                #expect(abs(q.probability - p[q.index]) <= 1e-3, "\(head) \(line.file) \(q.label): \(q.probability) vs Keras \(p[q.index])")
            }
        }
    }

    /// A binary head takes two class names (the first for output 0); one, or four, are refused in one line.
    @Test func binaryHeadNeedsTwoNames() throws {
        let folder = HeadFixtures.folder
        let dir = try makeTemporaryDirectory(prefix: "kiln-heads")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try HeadFixtures.run("kiln", ["fuse", "\(folder)/backbone.h5", "\(folder)/head_binary_logit.h5", "--labels", "\(folder)/labels4.txt",
                                              "--input-size", "32x32", "-o", "\(dir)/b.kiln"])
        #expect(r.status == 1)
        #expect(r.stderr.hasSuffix("labels4.txt has 4 class names but the head head_binary_logit.h5 is a binary classifier (one binary-logit unit): give 2 names, the first for output 0\n"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/b.kiln"))
    }

    /// A bundle without `output.kind` (written before it existed) reads as before: a linear Dense(4)'s values are
    /// printed as they are, not through a softmax.
    @Test func bundleWithoutKindBehavesAsBefore() throws {
        let folder = HeadFixtures.folder
        let dir = try makeTemporaryDirectory(prefix: "kiln-heads")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/logits.kiln", old = "\(dir)/old.kiln"
        #expect(try HeadFixtures.run("kiln", ["convert", "\(folder)/whole_logits.h5", "-o", bundle]).status == 0)
        // The model's tensors point into its mapping: keep it alive while they are written.
        let model = try Model(contentsOf: bundle)
        try withExtendedLifetime(model) {
            var frozen = model.frozen
            frozen.metadata[.outputKind] = nil
            try BundleWriter.write(frozen, to: old)
        }
        let r = try HeadFixtures.run("kiln-run", [old, "--input", "\(folder)/x.npy", "--top", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let want = try NPY.read(path: "\(folder)/y_logits.npy")
        let first = try #require(r.lines.first?.split(separator: " ").last?.split(separator: "="))
        let row0 = Array(want.values[0..<4])
        let top = try #require(row0.indices.max { row0[$0] < row0[$1] })
        #expect(Int(first[0]) == top)
        #expect(abs(try #require(Double(first[1])) - Double(row0[top])) <= 1e-4, "raw logit expected: \(r.stdout)")
    }
}
