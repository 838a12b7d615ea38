import Foundation
import Testing
import KilnFormat
import KilnImage
import KilnRuntime
import KilnTestSupport
import KilnClassify

@Suite struct ClassificationTests {
    /// Every committed sample photo in one batch: each image's top-3 is what KilnImage's resize and the
    /// model's arithmetic give (computed here in Float64), ranked highest first, labelled.
    @Test(arguments: ["keras-nearest", "keras-bilinear", "torchvision"])
    func samplePhotosMatchKilnImage(mode: String) throws {
        let shorter: Int? = mode == "torchvision" ? 48 : nil
        let model = rgbClassifier(resize: mode, height: 40, width: 40, extra: shorter.map { [.inputResizeShorter: .int(Int64($0))] } ?? [:])
        let c = try classifier(model)
        let files = Paths.photoFiles
        #expect(files.count == 25)
        let results = try c.classify(files.map { .file($0) }, top: 3)
        let resize = try InputResize(name: mode, height: 40, width: 40, shorter: shorter)
        for (file, result) in zip(files, results) {
            let p = try result.get()
            let want = try rgbProbabilities(file, resize)
            #expect(p.map(\.index).sorted() == [0, 1, 2])
            #expect(p[0].score >= p[1].score && p[1].score >= p[2].score)
            for q in p {
                #expect(q.label == ["red", "green", "blue"][q.index])
                #expect(abs(q.score - want[q.index]) <= 1e-5, "\(mode) \(file) \(q.label): \(q.score) vs \(want[q.index])")
            }
        }
    }

    /// In-memory bytes classify as the file does; broken files keep their decoder kind in place, the rest
    /// still run; `ImageFile` errors (paths that cannot be opened) come back where they were.
    @Test func bytesBrokenFilesAndOrder() throws {
        let c = try classifier(rgbClassifier())
        let good = "\(Paths.photos)/chelsea_q90.jpg"
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: good)))
        let r = try c.classify([.file(good), .bytes(bytes, name: "upload"), .file("\(Paths.broken)/truncated.jpg"),
                                .bytes([0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0, 0], name: "gif")], top: 2)
        #expect(try r[0].get() == r[1].get())
        let resize = try #require(c.imageResize)
        let decoded = try ImageDecoder.decode(contentsOf: good)
        let viaImages = try c.classify([.image(decoded, name: "decoded"), .resized(try c.loadImage(.file(good), resize: resize), name: "resized"),
                                        .resized(decoded, name: "full size")], top: 2)
        #expect(try viaImages[0].get() == r[0].get() && viaImages[1].get() == r[0].get())
        #expect(viaImages[2].failure == ClassifyError(.badInput, file: "full size", "image is \(decoded.width)×\(decoded.height), the model takes 56×40"))
        let truncated = try #require(r[2].failure)
        #expect(truncated.kind == .badInput && truncated.imageKind == .truncated && truncated.file == "\(Paths.broken)/truncated.jpg")
        let gif = try #require(r[3].failure)
        #expect(gif.kind == .unsupported && gif.imageKind == .unsupported && gif.description == "gif: GIF images are not supported (JPEG and PNG only)")

        let files = collectImageFiles([good, "/nonexistent/x.jpg", "\(Paths.broken)/empty.jpg", good])
        var batches: [[String]] = []
        var outcomes: [Result<[Prediction], ClassifyError>] = []
        try c.classify(files: files, batch: 3, top: 1) { results in
            batches.append(results.map(\.file.path))
            outcomes += results.map(\.result)
        }
        #expect(batches == [[good, "/nonexistent/x.jpg", "\(Paths.broken)/empty.jpg"], [good]])
        #expect(outcomes[1].failure == ClassifyError(.badInput, file: "/nonexistent/x.jpg", "cannot open: No such file or directory"))
        #expect(outcomes[2].failure?.imageKind == .empty)
        #expect(try outcomes[0].get() == outcomes[3].get() && outcomes[0].get().count == 1)
        // The first call ran two images; both batches here ran one (the other files failed before the run):
        // one plan per shape.
        #expect(c.plans.planCounts == [[2, 40, 56, 3]: 1, [1, 40, 56, 3]: 1])
    }

    /// Logits shown as probabilities on request (softmax in Float64), as given otherwise.
    @Test func softmaxForPresentation() throws {
        let c = try classifier(rgbClassifier(logits: true))
        let file = "\(Paths.photos)/rocket_q90.jpg"
        let resize = try InputResize(name: "keras-nearest", height: 40, width: 56)
        let want = try rgbProbabilities(file, resize)
        let probabilities = try #require(try c.classify([.file(file)], top: 3, softmax: true).first).get()
        for q in probabilities { #expect(abs(q.score - want[q.index]) <= 1e-5) }
        let raw = try #require(try c.classify([.file(file)], top: 3).first).get()
        #expect(raw.map(\.index) == probabilities.map(\.index) && abs(raw.map(\.score).reduce(0, +) - 1) > 0.01)
    }

    /// An NCHW bundle (input [N, 3, H, W], a Transpose to NHWC first): images are written as planes, and
    /// classify exactly as the NHWC bundle does.
    @Test func nchwInputGetsPlanes() throws {
        var model = rgbClassifier(extra: [.inputLayout: .string("NCHW")])
        model.valueNames = ["image", "nhwc", "pooled", "scores"]
        model.inputs[0].shape = [-1, 3, 40, 56]
        model.outputs = [PortRecord(name: "scores", value: 3, shape: [-1, 3])]
        model.ops = [OpRecord(opcode: .transpose, name: "to_nhwc", inputs: [0], output: 1, attributes: [0, 2, 3, 1]),
                     OpRecord(opcode: .globalAvgPool, name: "pool", inputs: [1], output: 2),
                     OpRecord(opcode: .dense, name: "colour", inputs: [2], output: 3, attributes: DenseAttributes(activation: .none, softmax: true).encoded, tensors: [0, 1])]
        let nchw = try classifier(model), nhwc = try classifier(rgbClassifier())
        #expect(nchw.spec.layout == .nchw)
        let files = Array(Paths.photoFiles.prefix(6)).map { ImageSource.file($0) }
        let a = try nchw.classify(files, top: 3).map { try $0.get() }, b = try nhwc.classify(files, top: 3).map { try $0.get() }
        #expect(a == b)
        #expect(nchw.plans.planCounts == [[6, 3, 40, 56]: 1])
    }

    @Test func topKTiesGoToTheLowerIndex() {
        let p = topK([0.5, 2, 0.5, 2, -1], k: 4, label: { "c\($0)" })
        #expect(p == [Prediction(index: 1, label: "c1", score: 2), Prediction(index: 3, label: "c3", score: 2),
                      Prediction(index: 0, label: "c0", score: 0.5), Prediction(index: 2, label: "c2", score: 0.5)])
        #expect(topK([1, 2], k: 5, label: String.init).count == 2)
    }

    /// A tensor on the caller's buffers: the chosen output lands in the caller's destination, whose size must match.
    @Test func tensorIntoCallerBuffer() throws {
        let c = try classifier(rgbClassifier(logits: true), output: "pooled")
        let perImage = 40 * 56 * 3
        let x: [Float] = (0..<(2 * perImage)).map { i in
            let red: Float = i % 3 == 0 ? 32 : 0
            return red + Float(i / perImage) * 16
        }
        var out = [Float](repeating: -1, count: 6)
        let shape = try x.withUnsafeBufferPointer { input in
            try out.withUnsafeMutableBufferPointer { try c.run(input: input, shape: [2, 40, 56, 3], into: $0) }
        }
        #expect(shape == [2, 3] && out == [32, 0, 0, 48, 16, 16])
        var small = [Float](repeating: 0, count: 5)
        let e = try #require(throws: ClassifyError.self) {
            try x.withUnsafeBufferPointer { input in
                try small.withUnsafeMutableBufferPointer { try c.run(input: input, shape: [2, 40, 56, 3], into: $0) }
            }
        }
        #expect(e.kind == .badInput && e.message.contains("destination holds 5"))
        #expect(try c.outputShapes(input: [4, 40, 56, 3]) == [[4, 3], [4, 3]])
    }

    /// Keras parity through KilnClassify: the committed mini backbone + head fused by `kiln fuse` (caffe folded,
    /// keras-nearest 40x56) on the 25 sample photos, against Keras' predictions in the manifest (reference
    /// kernels: the bar of the kiln-run test, 1e-4 of the largest, and the same top-1).
    @Test(.enabled(if: Paths.kilnEnabled, "needs the kiln binary (swift build, or KILN_BIN)"))
    func fusedMiniMatchesKeras() throws {
        struct Manifest: Decodable {
            struct Image: Decodable { var file: String }
            struct Predictions: Decodable { var expected: String; var top1: [Int] }
            var images: [Image]
            var predictions: Predictions
        }
        let folder = "\(Paths.root)/samples/images"
        let m = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: "\(folder)/manifest.json")))
        let dir = try makeTemporaryDirectory(prefix: "kiln-classify")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fuse = try runProcess("\(Paths.bin)/kiln", ["fuse", "\(Paths.mini)/mini_notop_k3.h5", "\(Paths.mini)/head_k3.h5", "-o", "\(dir)/f.kiln",
                                                       "--preprocess", "caffe", "--input-size", "40x56", "--resize", "keras-nearest"])
        try #require(fuse.status == 0, "\(fuse.stderr)")
        let want = try NPY.read(path: "\(folder)/\(m.predictions.expected)")
        let classes = try #require(want.shape.last)
        let c = try Classifier(contentsOf: "\(dir)/f.kiln", kernels: .reference)
        let results = try c.classify(m.images.map { .file("\(folder)/\($0.file)") }, top: classes)
        for (row, (image, result)) in zip(m.images, results).enumerated() {
            var got = [Float](repeating: 0, count: classes)
            let p = try result.get()
            for q in p { got[q.index] = q.score }
            let ref = Array(want.values[row * classes..<(row + 1) * classes])
            let scale = ref.map(abs).max() ?? 1
            let err = zip(got, ref).map { abs($0 - $1) }.max().map { $0 / scale } ?? .infinity
            #expect(err <= 1e-4, "\(image.file): max|Δ|/max|ref| \(err)")
            #expect(p.first?.index == m.predictions.top1[row], "\(image.file): top-1")
        }
    }
}

extension Result {
    var failure: Failure? { if case .failure(let e) = self { return e }; return nil }
}
