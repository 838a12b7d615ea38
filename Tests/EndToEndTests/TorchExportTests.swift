import Foundation
import Testing
import KilnFormat
import KilnRuntime
import KilnTrain

/// End to end through the release binaries on the PyTorch export fixtures (scripts/fixtures-torchvision):
/// torchvision ResNets with replaced heads as `torch.onnx.export` writes them, against torch's own outputs, and
/// tiny onnx.helper models against onnxruntime's. `make test` sets KILN_FIXTURES_TORCH (and KILN_BIN,
/// KILN_REQUIRE_FIXTURES=1): then missing fixtures or binaries fail the suite.
enum TorchE2E {
    static let fixtures = ProcessInfo.processInfo.environment["KILN_FIXTURES_TORCH"] ?? ""
    static var available: Bool {
        FileManager.default.fileExists(atPath: "\(fixtures)/manifest.json") && FileManager.default.isExecutableFile(atPath: "\(E2E.bin)/kiln")
    }
    static var enabled: Bool { available || E2E.required }

    struct Case: Decodable, Sendable, CustomStringConvertible {
        var model: String
        var kind: String
        var input: String?
        var expected: [String]?
        var outputs: [String]
        /// The output shapes the model declares, -1 for the batch.
        var declared: [[Int]]?
        /// onnxruntime's output shape on the fixture input (the op cases).
        var expected_shape: [Int]?
        var top1: [Int]?
        var layout: String
        var opset: Int
        var external_data: Bool?
        /// What `kiln convert` must say when it refuses the model.
        var refuse: String?
        /// Photos of samples/images/photos whose torch features `expected` holds (the photo-features case).
        var photos: [String]?
        var onnxruntime_vs_torch: Double?
        var description: String { model }
    }

    static let cases: [Case] = {
        guard let data = FileManager.default.contents(atPath: "\(fixtures)/manifest.json"),
              let list = try? JSONDecoder().decode([Case].self, from: data) else {
            return E2E.required ? [Case(model: "<missing \(fixtures)/manifest.json>", kind: "missing", outputs: [], layout: "", opset: 0)] : []
        }
        return list
    }()

    static var exports: [Case] { cases.filter { $0.kind.hasPrefix("torch-") || $0.kind == "missing" } }
    static var opCases: [Case] { cases.filter { ["softmax", "reduce", "shape"].contains($0.kind) } }
    static var refusals: [Case] { cases.filter { $0.kind == "refuse" } }

    /// `kiln convert` then `kiln-run --input`; every process checked to end by itself (no signal).
    static func convertAndRun(_ c: Case, in dir: String) throws -> (bundle: String, output: Tensor)? {
        let bundle = "\(dir)/\((c.model as NSString).lastPathComponent).kiln"
        let convert = try E2E.run("kiln", ["convert", "\(fixtures)/\(c.model)", "-o", bundle])
        #expect(convert.status == 0, "kiln convert \(c): \(convert.stderr)")
        guard convert.status == 0, let input = c.input else { return nil }
        let run = try E2E.run("kiln-run", [bundle, "--input", "\(fixtures)/\(input)", "--output", "\(dir)/y.npy"])
        #expect(run.status == 0, "kiln-run \(c): \(run.stderr)")
        guard run.status == 0 else { return nil }
        return (bundle, try NPY.read(path: "\(dir)/y.npy"))
    }
}

@Suite(.enabled(if: TorchE2E.enabled, "PyTorch export fixtures: run `make test` (or set KILN_FIXTURES_TORCH and KILN_BIN)"), .serialized)
struct TorchExportTests {
    /// Every export (dynamo by default, one file, opset 18, unoptimised; TorchScript) → bundle → kiln-run on the
    /// normalised NCHW input equals torch: max|Δ|/max|ref| ≤ 1e-4, top-1 equal, the declared output shape.
    @Test(arguments: TorchE2E.exports)
    func convertAndRunMatchesTorch(_ c: TorchE2E.Case) throws {
        #expect(TorchE2E.available, "fixtures or binaries missing: KILN_FIXTURES_TORCH=\(TorchE2E.fixtures) KILN_BIN=\(E2E.bin)")
        guard TorchE2E.available, let file = c.expected?.first else { return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let (bundle, got) = try TorchE2E.convertAndRun(c, in: dir) else { return }
        let want = try NPY.read(path: "\(TorchE2E.fixtures)/\(file)")
        #expect(got.shape == want.shape, "\(c): kiln-run gives \(got.shape), torch \(want.shape)")
        let err = relativeMaxError(want.values, got.values)
        #expect(err <= 1e-4, "\(c): max|Δ|/max|ref| = \(err)")
        #expect(argmaxRows(got) == c.top1, "\(c): top-1 \(argmaxRows(got)) vs torch \(c.top1 ?? [])")
        print("torch parity \(c) (opset \(c.opset)\(c.external_data == true ? ", external data" : "")): max|Δ|/max|ref| = \(err); onnxruntime vs torch \(c.onnxruntime_vs_torch ?? .nan)")
        let meta = try ONNXE2E.inspectMetadata(bundle)
        #expect(meta["source.onnx_opset"] as? Int == c.opset)
        #expect(meta["input.layout"] as? String == "NCHW")
        #expect((meta["source.producer"] as? String)?.hasPrefix("pytorch") == true)
    }

    /// Softmax at opsets 11-13 over every axis, ReduceMean/ReduceSum with axes as attribute or input, declared
    /// output shapes: kiln-run equals onnxruntime (1e-5) in onnxruntime's shape. Opset ≤ 12 Softmax over axis 0
    /// of a 2-D tensor is one softmax over all its elements (per row, the error was 1.4-2.6).
    @Test(arguments: TorchE2E.opCases)
    func opMatchesOnnxRuntime(_ c: TorchE2E.Case) throws {
        guard TorchE2E.available, let file = c.expected?.first else { #expect(TorchE2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let (_, got) = try TorchE2E.convertAndRun(c, in: dir) else { return }
        let want = try NPY.read(path: "\(TorchE2E.fixtures)/\(file)")
        #expect(got.shape == want.shape, "\(c): kiln-run gives \(got.shape), onnxruntime \(want.shape)")
        #expect(got.shape == c.expected_shape)
        if let declared = c.declared?.first {
            #expect(declared.count == got.shape.count && zip(declared, got.shape).allSatisfy { $0 == -1 || $0 == $1 },
                    "\(c): declared \(declared), got \(got.shape)")
        }
        let err = relativeMaxError(want.values, got.values)
        #expect(err <= 1e-5, "\(c): max|Δ|/max|ref| = \(err)")
    }

    /// Models the runtime cannot run (two inputs; inputs of rank 1, 3, 6): kiln convert exits 1 with one line
    /// naming the file and the reason, and writes nothing.
    @Test(arguments: TorchE2E.refusals)
    func convertRefusesWhatTheRuntimeCannotRun(_ c: TorchE2E.Case) throws {
        guard TorchE2E.available else { #expect(TorchE2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try E2E.run("kiln", ["convert", "\(TorchE2E.fixtures)/\(c.model)", "-o", "\(dir)/out.kiln"])
        #expect(r.status == 1, "\(c): status \(r.status): \(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains((c.model as NSString).lastPathComponent), "\(r.stderr)")
        #expect(r.stderr.contains(c.refuse ?? "?"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/out.kiln"))
    }

    /// `kiln inspect` of an NCHW bundle whose H and W are free counts shapes and FLOPs for [1, 3, 224, 224].
    @Test func inspectCountsNCHWFreeSizesAt224() throws {
        guard TorchE2E.available else { #expect(TorchE2E.available); return }
        let c = try #require(TorchE2E.opCases.first { $0.model.contains("conv_free_size") })
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/free.kiln"
        #expect(try E2E.run("kiln", ["convert", "\(TorchE2E.fixtures)/\(c.model)", "-o", bundle]).status == 0)
        let r = try E2E.run("kiln", ["inspect", bundle, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(json["input_shape_for_counts"] as? [Int] == [1, 3, 224, 224])
        let layers = json["layers"] as? [[String: Any]] ?? []
        #expect(layers.contains { $0["output_shape"] as? [Int] == [1, 224, 224, 4] }, "\(layers.map { $0["output_shape"] ?? "" })")
        let text = try E2E.run("kiln", ["inspect", bundle])
        #expect(text.stdout.contains("FLOPs:") && text.stdout.contains("[1, 3, 224, 224]"), "\(text.stdout)")
    }

    /// `kiln features` with a PyTorch export as the backbone and no options: torch preprocessing and torchvision
    /// resizing by default, said in one line, the cut at the ReduceMean the exporter writes for AdaptiveAvgPool2d;
    /// each photo's features equal torch's through torchvision's own Resize(73) + CenterCrop(64) + ToTensor +
    /// Normalize (max|Δ|/max|ref| ≤ 1e-4).
    @Test func featuresOfAPyTorchBackboneMatchTorchvision() throws {
        guard TorchE2E.available else { #expect(TorchE2E.available); return }
        let c = try #require(TorchE2E.cases.first { $0.kind == "photo-features" })
        let photos = try #require(c.photos), file = try #require(c.expected?.first)
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (k, name) in photos.enumerated() {
            let cls = "\(dir)/data/\(k % 2 == 0 ? "a" : "b")"
            try FileManager.default.createDirectory(atPath: cls, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "\(ONNXE2E.samples)/images/photos/\(name)", toPath: "\(cls)/\(name)")
        }
        let r = try E2E.run("kiln", ["features", "\(TorchE2E.fixtures)/\(c.model)", "\(dir)/data", "-o", "\(dir)/f.npz"])
        #expect(r.status == 0, "\(r.stderr)")
        let notes = r.stderr.split(separator: "\n").filter { $0.contains("preprocessing") }
        #expect(notes.count == 1, "\(r.stderr)")
        #expect(notes.first?.contains("--preprocess torch --resize torchvision") == true, "\(r.stderr)")
        #expect(notes.first?.contains("PyTorch export") == true, "\(r.stderr)")
        guard r.status == 0 else { return }
        let set = try FeatureSet.read(path: "\(dir)/f.npz")
        let want = try NPY.read(path: "\(TorchE2E.fixtures)/\(file)")
        let d = set.featureCount
        #expect(d == want.shape.last, "features \(d) vs torch \(want.shape)")
        var worst: Float = 0
        for (k, name) in photos.enumerated() {
            let row = try #require(set.files.firstIndex { ($0 as NSString).lastPathComponent == name }, "\(name) not in \(set.files)")
            let got = Array(set.features[(row * d)..<((row + 1) * d)])
            let ref = Array(want.values[(k * d)..<((k + 1) * d)])
            let err = relativeMaxError(ref, got)
            worst = max(worst, err)
            #expect(err <= 1e-4, "\(name): kiln features vs torchvision + torch: max|Δ|/max|ref| = \(err)")
        }
        print("kiln features (PyTorch defaults) vs torchvision transforms + torch on \(photos.count) photos: max|Δ|/max|ref| ≤ \(worst)")
    }
}
