import Foundation
import Testing
import KilnFormat
import KilnRuntime

/// Whole Keras classifiers as the transfer-learning tutorials build them (scripts/fixtures-tutorial): augmentation,
/// the model's own preprocessing (preprocess_input on the symbolic tensor, Rescaling, Normalization), a base called
/// with training=False, logit / sigmoid / softmax heads; BatchNormalization anywhere; the head activations. Keras 3
/// `.keras` and `.h5`, tf.keras `.h5`. `make test` sets KILN_FIXTURES_TUTORIAL (and KILN_BIN, KILN_REQUIRE_FIXTURES=1):
/// then missing fixtures or binaries fail the suite.
enum TutorialE2E {
    static let fixtures = E2E.env["KILN_FIXTURES_TUTORIAL"] ?? ""
    static var available: Bool {
        FileManager.default.fileExists(atPath: "\(fixtures)/manifest.json") && FileManager.default.isExecutableFile(atPath: "\(E2E.bin)/kiln")
    }
    static var enabled: Bool { available || E2E.required }

    struct Case: Decodable, Sendable, CustomStringConvertible {
        var file: String
        var layout: String
        var expected: String
        var input: String
        var labels: String
        var classes: Int
        var self_preprocessed: Bool
        var preprocessing: String?
        var description: String { file }
        var isResNet50: Bool { file.contains("resnet50") }
    }
    struct Unsupported: Decodable, Sendable {
        var file: String
        var layer: String
        var `class`: String
        var says: String
    }
    struct Manifest: Decodable, Sendable {
        var cases: [Case]
        var unsupported: [Unsupported]
    }

    static let manifest: Manifest? = {
        guard let data = FileManager.default.contents(atPath: "\(fixtures)/manifest.json") else { return nil }
        return try? JSONDecoder().decode(Manifest.self, from: data)
    }()

    static var cases: [Case] {
        manifest?.cases ?? (E2E.required ? [Case(file: "<missing \(fixtures)/manifest.json>", layout: "", expected: "", input: "",
                                                 labels: "", classes: 0, self_preprocessed: false)] : [])
    }

    /// `kiln convert FILE --labels LABELS [extra] -o DIR/FILE.kiln`, then `kiln-run --input` (with `run` options);
    /// the output tensor.
    static func convertAndRun(_ c: Case, in dir: String, convert extra: [String] = [], run options: [String] = []) throws -> Tensor? {
        let bundle = "\(dir)/\(c.file).kiln", out = "\(dir)/\(c.file).y.npy"
        let args = ["convert", "\(fixtures)/\(c.file)", "--labels", "\(fixtures)/\(c.labels)", "-o", bundle] + extra
        let converted = try E2E.run("kiln", args)
        #expect(converted.status == 0, "kiln \(args.joined(separator: " ")): \(converted.stderr)")
        guard converted.status == 0 else { return nil }
        let ran = try E2E.run("kiln-run", [bundle, "--input", "\(fixtures)/\(c.input)", "--output", out] + options)
        #expect(ran.status == 0, "kiln-run \(bundle): \(ran.stderr)")
        guard ran.status == 0 else { return nil }
        return try NPY.read(path: out)
    }

    static func metadata(_ bundle: String) throws -> [String: Any] {
        let r = try E2E.run("kiln", ["inspect", bundle, "--json"])
        guard r.status == 0, let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let meta = object["metadata"] as? [String: Any] else { return [:] }
        return meta
    }
}

@Suite(.enabled(if: TutorialE2E.enabled, "tutorial fixtures: run `make test` (or set KILN_FIXTURES_TUTORIAL and KILN_BIN)"), .serialized)
struct TutorialClassifierTests {
    /// The bar: `kiln convert MODEL --labels FILE --resize … -o B.kiln`, then `kiln-run B.kiln --input raw.npy` (raw
    /// 0..255 RGB, NHWC) equals Keras within 1e-4 relative (max|Δ|/max|ref|), top-1 equal for softmax heads. The
    /// bundle records the labels, the resizing, the input size, and that it takes raw RGB (the model's own
    /// preprocessing folded). The resize mode is keras-bilinear: tf-bilinear (image_dataset_from_directory's) is
    /// added by the image-resizing work of issue 16 item 4.
    ///
    /// The two ResNet-50 fixtures are held to 1e-4 on the reference kernels (measured 3.0e-5 and 4e-5) and to 3e-4
    /// on the fast ones (measured 1.0e-4, 1.2e-4): these random 96x96 ResNet-50s are ill-conditioned (TensorFlow's
    /// own oneDNN and Eigen paths differ by 1.7e-4 on the Keras 3 one), and float32 summation order moves them by ~9e-5
    /// from the Double-accumulating reference (with or without Winograd: `--exact` gives 1.9e-4 and 1.0e-4).
    @Test(arguments: TutorialE2E.cases)
    func convertedClassifierEqualsKeras(_ c: TutorialE2E.Case) throws {
        #expect(TutorialE2E.available, "fixtures or binaries missing: KILN_FIXTURES_TUTORIAL=\(TutorialE2E.fixtures) KILN_BIN=\(E2E.bin)")
        guard TutorialE2E.available else { return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard let got = try TutorialE2E.convertAndRun(c, in: dir, convert: ["--resize", "keras-bilinear"]) else { return }
        let want = try NPY.read(path: "\(TutorialE2E.fixtures)/\(c.expected)")
        #expect(got.shape == want.shape, "\(c): output shape \(got.shape), Keras \(want.shape)")
        let err = relativeMaxError(want.values, got.values)
        #expect(err <= (c.isResNet50 ? 3e-4 : 1e-4), "\(c): max|Δ|/max|ref| = \(err)")
        print("tutorial parity \(c): max|Δ|/max|ref| = \(err)")
        if c.classes > 1 { #expect(argmaxRows(got) == argmaxRows(want), "\(c): top-1 differs") }
        if c.isResNet50 {
            let out = "\(dir)/reference.npy"
            let r = try E2E.run("kiln-run", ["\(dir)/\(c.file).kiln", "--reference", "--input", "\(TutorialE2E.fixtures)/\(c.input)", "--output", out])
            #expect(r.status == 0, "\(r.stderr)")
            let referenceErr = relativeMaxError(want.values, try NPY.read(path: out).values)
            #expect(referenceErr <= 1e-4, "\(c) reference kernels: max|Δ|/max|ref| = \(referenceErr)")
            print("tutorial parity \(c) (reference kernels): max|Δ|/max|ref| = \(referenceErr)")
        }

        let meta = try TutorialE2E.metadata("\(dir)/\(c.file).kiln")
        let names = try String(contentsOfFile: "\(TutorialE2E.fixtures)/\(c.labels)", encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(meta["labels.names"] as? [String] == names)
        #expect(meta["input.resize"] as? String == "keras-bilinear")
        let side = c.isResNet50 ? 96 : 64
        #expect(meta["input.height"] as? Int == side && meta["input.width"] as? Int == side)
        if let p = c.preprocessing, ["caffe", "tf", "torch"].contains(p) {
            #expect(meta["input.preprocessing"] as? String == p, "\(c): input.preprocessing \(meta["input.preprocessing"] ?? "nil")")
        }
        #expect(meta["input.color"] as? String == "RGB 0-255")
    }

    /// Without any option a self-preprocessing model still becomes an image-taking bundle (its own preprocessing is
    /// recognised), and without labels the output is the same.
    @Test func withoutOptionsTheModelStillTakesImages() throws {
        guard TutorialE2E.available, let c = TutorialE2E.cases.first(where: { $0.file == "tutorial_small_caffe_sigmoid_k3.keras" }) else {
            #expect(TutorialE2E.available); return
        }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/b.kiln"
        let r = try E2E.run("kiln", ["convert", "\(TutorialE2E.fixtures)/\(c.file)", "-o", bundle])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("preprocessing: caffe, in the model itself"), "\(r.stderr)")
        let meta = try TutorialE2E.metadata(bundle)
        #expect(meta["input.preprocessing"] as? String == "caffe")
        #expect(meta["input.resize"] as? String == "keras-nearest")
        #expect(meta["labels.names"] == nil)
    }

    /// A --preprocess that would add a second preprocessing to a model that has its own is refused in one line
    /// naming the file; `--preprocess none` and the model's own name are accepted.
    @Test func conflictingPreprocessIsRefused() throws {
        guard TutorialE2E.available else { #expect(TutorialE2E.available); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (file, own, other) in [("tutorial_small_caffe_sigmoid_k3.keras", "caffe", "torch"), ("tutorial_small_tf_sigmoid_k2.h5", "tf", "caffe"),
                                   ("flat_plain_k3.h5", "model", "tf")] {
            let bundle = "\(dir)/\(file).kiln"
            let refused = try E2E.run("kiln", ["convert", "\(TutorialE2E.fixtures)/\(file)", "--preprocess", other, "-o", bundle])
            #expect(refused.status == 1, "\(file) --preprocess \(other): status \(refused.status)")
            let lines = refused.stderr.split(separator: "\n")
            #expect(lines.count == 1 && refused.stderr.contains(file) && refused.stderr.contains("preprocesses its input itself"),
                    "\(file): \(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: bundle))
            #expect(try E2E.run("kiln", ["convert", "\(TutorialE2E.fixtures)/\(file)", "--preprocess", "none", "-o", bundle]).status == 0)
            if own != "model" {
                #expect(try E2E.run("kiln", ["convert", "\(TutorialE2E.fixtures)/\(file)", "--preprocess", own, "-o", bundle]).status == 0)
            }
        }
    }

    /// `kiln fuse MODEL` without a head makes the same image-taking bundle as convert with the image options.
    @Test func fuseWithoutHeadKeepsTheWholeModel() throws {
        guard TutorialE2E.available, let c = TutorialE2E.cases.first(where: { $0.file == "tutorial_small_torch_softmax_k2.h5" }) else {
            #expect(TutorialE2E.available); return
        }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/fused.kiln", out = "\(dir)/y.npy"
        let r = try E2E.run("kiln", ["fuse", "\(TutorialE2E.fixtures)/\(c.file)", "--labels", "\(TutorialE2E.fixtures)/\(c.labels)", "-o", bundle])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try E2E.run("kiln-run", [bundle, "--input", "\(TutorialE2E.fixtures)/\(c.input)", "--output", out]).status == 0)
        let err = relativeMaxError(try NPY.read(path: "\(TutorialE2E.fixtures)/\(c.expected)").values, try NPY.read(path: out).values)
        #expect(err <= 1e-4, "max|Δ|/max|ref| = \(err)")
        let meta = try TutorialE2E.metadata(bundle)
        #expect(meta["input.preprocessing"] as? String == "torch")
        #expect(meta["fuse.head"] == nil)
    }

    /// A layer Kiln does not execute (LayerNormalization; a CenterCrop that changes the size inside the model) is
    /// refused in one line naming the file, the layer and its class; exit 1, no bundle.
    @Test func unsupportedLayerIsRefusedNamingIt() throws {
        let unsupported = TutorialE2E.manifest?.unsupported ?? []
        #expect(TutorialE2E.available && unsupported.count == 2)
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for u in unsupported {
            let r = try E2E.run("kiln", ["convert", "\(TutorialE2E.fixtures)/\(u.file)", "-o", "\(dir)/x.kiln"])
            #expect(r.status == 1, "\(u.file): status \(r.status)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
            #expect(r.stderr.contains(u.file) && r.stderr.contains("layer '\(u.layer)' (\(u.class))") && r.stderr.contains(u.says), "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: "\(dir)/x.kiln"))
        }
    }
}
