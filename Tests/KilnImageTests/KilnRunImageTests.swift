import Foundation
import Testing
import KilnTestSupport
import KilnFormat
import KilnImage
import KilnRuntime

/// `kiln-run` on image files and directories, through the binary: the release one of `make test`
/// (KILN_BIN), else the one `swift test` built beside the test bundle.
enum KilnRunBinary {
    static let env = ProcessInfo.processInfo.environment
    static let folder: String = {
        if let bin = env["KILN_BIN"], !bin.isEmpty { return bin }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    }()
    static var available: Bool { FileManager.default.isExecutableFile(atPath: "\(folder)/kiln-run") }
    static var enabled: Bool { available || ImageFixtures.required }

    typealias Result = ProcessResult

    static func run(_ args: [String], tool: String = "kiln-run") throws -> Result {
        try runProcess("\(folder)/\(tool)", args)
    }

    static func tempDir() throws -> String { try makeTemporaryDirectory(prefix: "kiln-images") }
}

/// A tiny image classifier bundle: global average pool of the raw RGB pixels, then Dense(3 → 3, softmax)
/// with weights 1/16 on the diagonal, so the classes are the dominant colour ("red", "green", "blue").
func colourBundle(resize: String? = "keras-nearest", height: Int? = 40, width: Int? = 56, fixedInput: Bool = true) -> FrozenModel {
    var metadata: [String: MetadataValue] = ["labels.names": .strings(["red", "green", "blue"]), "input.preprocessing": .string("none")]
    if let resize { metadata["input.resize"] = .string(resize) }
    if let height, let width {
        metadata["input.height"] = .int(Int64(height))
        metadata["input.width"] = .int(Int64(width))
    }
    if resize == "torchvision" { metadata["input.resize_shorter"] = .int(Int64(max(height ?? 48, width ?? 48) + 8)) }
    let shape: [Int64] = fixedInput ? [-1, Int64(height ?? -1), Int64(width ?? -1), 3] : [-1, -1, -1, 3]
    let w: [Float] = [1 / 16, 0, 0, 0, 1 / 16, 0, 0, 0, 1 / 16]
    return FrozenModel(
        metadata: metadata,
        valueNames: ["image", "pooled", "probabilities"],
        inputs: [PortRecord(name: "image", value: 0, shape: shape)],
        outputs: [PortRecord(name: "probabilities", value: 2, shape: [-1, 3])],
        ops: [OpRecord(opcode: .globalAvgPool, name: "pool", inputs: [0], output: 1),
              OpRecord(opcode: .dense, name: "colour", inputs: [1], output: 2, attributes: DenseAttributes(activation: .none, softmax: true).encoded, tensors: [0, 1])],
        tensors: [TensorRecord(name: "colour/kernel", shape: [3, 3], floats: w), TensorRecord(name: "colour/bias", shape: [3], floats: [0, 0, 0])])
}

/// What the colour bundle gives for one image file, computed here with KilnImage directly.
func colourProbabilities(_ path: String, _ resize: InputResize) throws -> [Float] {
    colourSoftmax(try resize.apply(try ImageDecoder.decode(contentsOf: path)).pixels)
}

struct JSONLine: Decodable {
    struct P: Decodable { var rank: Int; var index: Int; var label: String; var probability: Float }
    struct E: Decodable { var kind: String; var message: String }
    var file: String
    var predictions: [P]?
    var error: E?
}

@Suite(.enabled(if: KilnRunBinary.enabled, "needs the kiln-run binary (swift build, or KILN_BIN)"), .serialized)
struct KilnRunImageTests {
    static let samples = ImageFixtures.samples

    func writeBundle(_ model: FrozenModel, in dir: String) throws -> String {
        let path = "\(dir)/colour.kiln"
        try BundleWriter.write(model, to: path)
        return path
    }

    /// A directory with good and broken files: every file reported once, in name order, the broken ones as
    /// errors naming their kind, the others classified exactly as KilnImage + the model compute; exit 1.
    @Test func directoryWithBrokenFilesJSON() throws {
        let dir = try KilnRunBinary.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try writeBundle(colourBundle(), in: dir)
        let r = try KilnRunBinary.run([bundle, "\(Self.samples)/photos", "\(Self.samples)/broken", "--format", "json", "--batch", "4", "--top", "3"])
        #expect(r.status == 1, "\(r.stderr)")
        let lines = try r.lines.map { try JSONDecoder().decode(JSONLine.self, from: Data($0.utf8)) }
        let m = try #require(ImageFixtures.sampleManifest)
        let photos = m.images.map { "\(Self.samples)/\($0.file)" }.sorted()
        let broken = m.broken.map { "\(Self.samples)/\($0.file)" }.sorted()
        #expect(lines.map(\.file) == photos + broken)
        let resize = try InputResize(name: "keras-nearest", height: 40, width: 56)
        for line in lines {
            if let b = m.broken.first(where: { line.file.hasSuffix("/" + $0.file) }) {
                #expect(line.error?.kind == b.kind, "\(line.file): \(String(describing: line.error))")
                #expect(line.predictions == nil)
                continue
            }
            let p = try #require(line.predictions, "\(line.file): \(String(describing: line.error))")
            #expect(p.map(\.rank) == [1, 2, 3])
            let want = try colourProbabilities(line.file, resize)
            for q in p {
                #expect(q.label == ["red", "green", "blue"][q.index])
                #expect(abs(q.probability - want[q.index]) <= 1e-5, "\(line.file) \(q.label): \(q.probability) vs \(want[q.index])")
            }
            #expect(p[0].probability >= p[1].probability && p[1].probability >= p[2].probability)
        }
        #expect(r.stderr.contains("\(m.broken.count) of \(lines.count) files could not be classified"), "\(r.stderr)")
    }

    @Test func textTableAndCSV() throws {
        let dir = try KilnRunBinary.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try writeBundle(colourBundle(), in: dir)
        let good = "\(Self.samples)/photos/chelsea_q90.jpg", bad = "\(Self.samples)/broken/truncated.jpg"
        let text = try KilnRunBinary.run([bundle, good, bad, "--top", "2"])
        #expect(text.status == 1)
        let t = text.lines
        #expect(t.count == 4, "\(text.stdout)")
        #expect(t[0].hasPrefix("FILE") && t[0].contains("RANK") && t[0].contains("PROB") && t[0].hasSuffix("CLASS"))
        #expect(t[1].hasPrefix(good) && t[1].contains("%"))
        #expect(t[2].hasPrefix(" ") && t[2].contains("%"))
        #expect(t[3].hasPrefix(bad) && t[3].contains("error: JPEG data ends early"))
        // The columns line up: RANK starts at the same offset on every row.
        let rankColumn = try #require(t[0].range(of: "RANK")).lowerBound.utf16Offset(in: t[0])
        #expect(t[1].dropFirst(rankColumn).hasPrefix("1 ") && t[2].dropFirst(rankColumn).hasPrefix("2 "))

        let csv = try KilnRunBinary.run([bundle, good, bad, "--top", "2", "--format", "csv"])
        #expect(csv.lines.first == "file,rank,index,label,probability,error")
        #expect(csv.lines.count == 4)
        #expect(csv.lines[1].hasPrefix("\(good),1,"))
        #expect(csv.lines[3].hasPrefix("\(bad),,,,,"))
    }

    @Test func everyResizeModeMatchesKilnImage() throws {
        let dir = try KilnRunBinary.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for mode in ["keras-nearest", "keras-bilinear", "torchvision"] {
            let model = colourBundle(resize: mode, height: 40, width: 40)
            let bundle = try writeBundle(model, in: dir)
            let file = "\(Self.samples)/photos/rocket_q90.jpg"
            let r = try KilnRunBinary.run([bundle, file, "--format", "json", "--top", "3"])
            #expect(r.status == 0, "\(mode): \(r.stderr)")
            let line = try JSONDecoder().decode(JSONLine.self, from: Data(r.stdout.utf8))
            let shorter: Int? = mode == "torchvision" ? 48 : nil
            let want = try colourProbabilities(file, try InputResize(name: mode, height: 40, width: 40, shorter: shorter))
            for q in line.predictions ?? [] { #expect(abs(q.probability - want[q.index]) <= 1e-5, "\(mode)") }
        }
    }

    @Test func bundleWithoutResizeRefusesImages() throws {
        let dir = try KilnRunBinary.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try writeBundle(colourBundle(resize: nil), in: dir)
        let r = try KilnRunBinary.run([bundle, "\(Self.samples)/photos/chelsea_q90.jpg"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("no input.resize") && r.stderr.contains("--input"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1)
    }

    @Test func freeInputSizeNeedsSize() throws {
        let dir = try KilnRunBinary.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try writeBundle(colourBundle(height: nil, width: nil, fixedInput: false), in: dir)
        let file = "\(Self.samples)/photos/chelsea_q90.jpg"
        let refused = try KilnRunBinary.run([bundle, file])
        #expect(refused.status == 1 && refused.stderr.contains("--size"), "\(refused.stderr)")
        let r = try KilnRunBinary.run([bundle, file, "--size", "32x48", "--format", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        let line = try JSONDecoder().decode(JSONLine.self, from: Data(r.stdout.utf8))
        let want = try colourProbabilities(file, try InputResize(name: "keras-nearest", height: 32, width: 48))
        for q in line.predictions ?? [] { #expect(abs(q.probability - want[q.index]) <= 1e-5) }
        #expect(try KilnRunBinary.run([bundle, file, "--size", "0x4"]).status == 64)
    }

    /// `--input X.npy` keeps working as before, and cannot be mixed with images.
    @Test func tensorInputStillWorks() throws {
        let dir = try KilnRunBinary.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try writeBundle(colourBundle(), in: dir)
        let image = try ImageDecoder.decode(contentsOf: "\(Self.samples)/photos/chelsea_q90.jpg")
        let resized = try InputResize(name: "keras-nearest", height: 40, width: 56).apply(image)
        try NPY.write(Tensor(shape: [1, 40, 56, 3], values: resized.floats), to: "\(dir)/x.npy")
        let r = try KilnRunBinary.run([bundle, "--input", "\(dir)/x.npy", "--output", "\(dir)/y.npy"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "probabilities [1, 3] -> \(dir)/y.npy\n")
        let y = try NPY.read(path: "\(dir)/y.npy")
        let want = try colourProbabilities("\(Self.samples)/photos/chelsea_q90.jpg", try InputResize(name: "keras-nearest", height: 40, width: 56))
        #expect(zip(y.values, want).allSatisfy { abs($0 - $1) <= 1e-5 })
        let top = try KilnRunBinary.run([bundle, "--input", "\(dir)/x.npy", "--top", "1"])
        #expect(top.stdout.hasPrefix("0: ") && top.stdout.contains("="))
        #expect(try KilnRunBinary.run([bundle, "--input", "\(dir)/x.npy", "\(Self.samples)/photos"]).status == 64)
        #expect(try KilnRunBinary.run([bundle]).status == 64)
    }

    /// A missing path and an empty directory argument: reported, the rest classified.
    @Test func missingPathsAreReported() throws {
        let dir = try KilnRunBinary.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = try writeBundle(colourBundle(), in: dir)
        try FileManager.default.createDirectory(atPath: "\(dir)/empty", withIntermediateDirectories: true)
        let r = try KilnRunBinary.run([bundle, "\(dir)/nope.jpg", "\(dir)/empty", "\(Self.samples)/photos/rocket_q90.jpg", "--format", "csv"])
        #expect(r.status == 1)
        #expect(r.lines.count == 1 + 1 + 3, "\(r.stdout)")
        #expect(r.lines[1].hasPrefix("\(dir)/nope.jpg,,,,,") && r.lines[1].contains("No such file"))
    }
}

/// Keras parity on image files: a backbone + head fused by `kiln fuse` (caffe preprocessing folded,
/// keras-nearest), run by kiln-run on a folder of photos, against Keras' `load_img` + `preprocess_input` +
/// `predict` of the same model (the manifest's `predictions`). Returns the worst max|Δ|/max|ref|.
func kerasParity(folder: String, manifest m: ImageFixtures.Manifest, backbone: String, head: String, extra: [String] = [],
                 bar: Float, sourceLocation: SourceLocation = #_sourceLocation) throws -> Float {
    let predictions = try #require(m.predictions, sourceLocation: sourceLocation)
    let dir = try KilnRunBinary.tempDir()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let fuse = try KilnRunBinary.run(["fuse", backbone, head, "-o", "\(dir)/fused.kiln", "--preprocess", predictions.preprocessing,
                                      "--input-size", "\(predictions.height)x\(predictions.width)", "--resize", predictions.resize],
                                     tool: "kiln")
    try #require(fuse.status == 0, "\(fuse.stderr)", sourceLocation: sourceLocation)
    let want = try NPY.read(path: "\(folder)/\(predictions.expected)")
    let classes = want.shape.last ?? 1
    #expect(want.shape == [m.images.count, classes], sourceLocation: sourceLocation)
    let r = try KilnRunBinary.run(["\(dir)/fused.kiln", "\(folder)/photos", "--format", "json", "--top", "\(classes)", "--batch", "7"] + extra)
    #expect(r.status == 0, "\(r.stderr)", sourceLocation: sourceLocation)
    let lines = try r.lines.map { try JSONDecoder().decode(JSONLine.self, from: Data($0.utf8)) }
    var worst: Float = 0
    for (row, image) in m.images.enumerated() {
        let line = try #require(lines.first { $0.file.hasSuffix("/" + image.file) }, "\(image.file) missing", sourceLocation: sourceLocation)
        let p = try #require(line.predictions, sourceLocation: sourceLocation)
        var got = [Float](repeating: 0, count: classes)
        for q in p { got[q.index] = q.probability }
        let ref = Array(want.values[row * classes..<(row + 1) * classes])
        let scale = ref.map(abs).max() ?? 1
        let err = zip(got, ref).map { abs($0 - $1) }.max().map { $0 / scale } ?? .infinity
        worst = max(worst, err)
        #expect(err <= bar, "\(image.file): max|Δ|/max|ref| \(err)", sourceLocation: sourceLocation)
        #expect(p.first?.index == predictions.top1[row], "\(image.file): top-1", sourceLocation: sourceLocation)
    }
    return worst
}

@Suite(.enabled(if: KilnRunBinary.enabled, "needs the kiln and kiln-run binaries"))
struct KilnRunKerasParityTests {
    /// The committed mini backbone + head on the 25 sample photos (40×56). The reference kernels isolate
    /// the image path and the fused model from the fast kernels' float rounding: the bar (1e-4)
    /// holds there; the fast kernels add their own (reported; ≤ 2e-4 here).
    @Test func fusedMiniMatchesKerasOnSamplePhotos() throws {
        let m = try #require(ImageFixtures.sampleManifest)
        let mini = URL(fileURLWithPath: ImageFixtures.samples).deletingLastPathComponent().appendingPathComponent("mini").path
        for (kernels, bar) in [("reference", Float(1e-4)), ("fast", Float(2e-4))] {
            let worst = try kerasParity(folder: ImageFixtures.samples, manifest: m, backbone: "\(mini)/mini_notop_k3.h5",
                                        head: "\(mini)/head_k3.h5", extra: kernels == "reference" ? ["--reference"] : [], bar: bar)
            print("kiln-run (\(kernels) kernels) on \(m.images.count) sample photos vs Keras load_img + preprocess_input + predict " +
                  "(mini): max|Δ|/max|ref| = \(worst), top-1 equal")
        }
    }

    /// The full-size ResNet-50 + head of scripts/fixtures on the full-size photos (224×224), through the
    /// release binaries of `make test`.
    @Test(.enabled(if: ImageFixtures.fullEnabled && KilnRunBinary.env["KILN_BIN"] != nil, "make test"))
    func fusedResNet50MatchesKerasOnPhotos() throws {
        let m = try #require(ImageFixtures.fullManifest)
        let models = try #require(KilnRunBinary.env["KILN_FIXTURES"], "KILN_FIXTURES (scripts/fixtures)")
        let worst = try kerasParity(folder: ImageFixtures.full, manifest: m, backbone: "\(models)/resnet50_notop_k3.h5",
                                    head: "\(models)/head_k3.h5", bar: 1e-4)
        print("kiln-run on \(m.images.count) full-size photos vs Keras load_img + preprocess_input + predict (ResNet-50 + head): " +
              "max|Δ|/max|ref| = \(worst), top-1 equal")
    }
}

/// The lean binary's dependency closure: no HDF5, no protobuf (the release kiln-run of `make test`). The release
/// kiln-run is one static executable (Package.swift, `staticDeployment`), so the closure is read from its symbols:
/// the image and bundle libraries are inside it, the conversion side's are not, and it needs no shared library.
@Suite struct LeanBinaryTests {
    static var release: String? {
        guard let bin = KilnRunBinary.env["KILN_BIN"], !bin.isEmpty else { return nil }
        return "\(bin)/kiln-run"
    }

    static func output(_ arguments: [String]) throws -> (status: Int32, text: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    @Test(.enabled(if: release != nil || ImageFixtures.required, "needs KILN_BIN (make test)"))
    func kilnRunLinksNoHDF5NorProtobuf() throws {
        let binary = try #require(Self.release)
        let symbols = try Self.output(["nm", "--defined-only", binary])
        #expect(symbols.status == 0, "nm \(binary)")
        let defined = Set(symbols.text.split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) })
        for needed in ["tjInitDecompress", "png_create_read_struct", "ZSTD_decompress", "cblas_sgemm"] {
            #expect(defined.contains(needed), "kiln-run does not contain \(needed)")
        }
        for banned in ["H5Fopen", "protobuf_c_message_unpack"] {
            #expect(!defined.contains(banned), "kiln-run contains \(banned)")
        }
        let ldd = try Self.output(["ldd", binary])
        #expect(ldd.text.contains("not a dynamic executable"), "ldd \(binary):\n\(ldd.text)")
    }
}
