import Foundation
import Testing
import KilnFormat
import KilnImage
import KilnRuntime
import KilnTestSupport
import KilnClassify

@Suite struct InputSpecTests {
    /// The committed classifier bundle of the fuzz corpus: labels a, b, c, input.height but no width (so its
    /// size is free), a softmax Dense output and a GlobalAvgPool one; no input.resize (it takes tensors).
    @Test func committedCorpusBundle() throws {
        let path = "\(Paths.root)/fuzz/corpus/bundle/classifier.kiln"
        let c = try Classifier(contentsOf: path)
        let s = c.spec
        #expect(s.bundle == path)
        #expect(s.inputName == "input" && s.inputShape == [-1, -1, -1, 3] && s.layout == .nhwc)
        #expect(s.labels == ["a", "b", "c"])
        #expect(s.height == nil && s.width == nil, "input.height alone does not fix the size")
        #expect(!s.takesImages && s.resize == nil && c.imageResize == nil)
        #expect(s.outputIndex == 0 && s.outputName == "logits" && s.outputShape == [-1, 3] && s.scores == .probabilities)
        #expect(s.label(1) == "b" && s.label(7) == "7")
        let gap = try Classifier(contentsOf: path, output: "gap").spec
        #expect(gap.outputIndex == 1 && gap.outputName == "gap" && gap.scores == .scores)
        #expect(throws: ClassifyError(.badInput, "no output named 'nope' (outputs: logits, gap)")) { try Classifier(contentsOf: path, output: "nope") }
        let e = try #require(throws: ClassifyError.self) { try s.imageResize(size: (224, 224)) }
        #expect(e.kind == .badInput && e.file == path && e.message.contains("no input.resize"), "\(e)")
    }

    /// `kiln fuse` of the committed mini backbone and head (caffe preprocessing folded, keras-nearest at
    /// 40x56): what the fused bundle records is what the spec says.
    @Test(.enabled(if: Paths.kilnEnabled, "needs the kiln binary (swift build, or KILN_BIN)"))
    func fusedMiniBundle() throws {
        let dir = try makeTemporaryDirectory(prefix: "kiln-classify")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fuse = try runProcess("\(Paths.bin)/kiln", ["fuse", "\(Paths.mini)/mini_notop_k3.h5", "\(Paths.mini)/head_k3.h5", "-o", "\(dir)/f.kiln",
                                                       "--preprocess", "caffe", "--input-size", "40x56", "--resize", "keras-nearest"])
        try #require(fuse.status == 0, "\(fuse.stderr)")
        let c = try Classifier(contentsOf: "\(dir)/f.kiln")
        let s = c.spec
        #expect(s.height == 40 && s.width == 56 && s.resize == "keras-nearest" && s.resizeShorter == nil)
        #expect(s.layout == .nhwc && s.inputShape.count == 4 && s.inputShape.last == 3)
        #expect(s.preprocessing == "caffe" && s.color == "RGB 0-255")
        #expect(s.scores == .probabilities, "the head ends in a softmax")
        #expect(s.labels == nil && s.label(3) == "3")
        #expect(c.imageResize == (try InputResize(name: "keras-nearest", height: 40, width: 56)))
    }

    @Test func imageSizeAndResize() throws {
        let fixed = try classifier(rgbClassifier(resize: "torchvision", height: 40, width: 40, extra: [.inputResizeShorter: .int(48)]))
        #expect(fixed.imageResize == (try InputResize(mode: .torchvision(shorter: 48), height: 40, width: 40)))
        #expect(try fixed.spec.imageSize(nil)! == (40, 40))
        #expect(throws: ClassifyError(.badInput, "size 32x32 differs from the bundle's input size 40x40")) { try fixed.spec.imageSize((32, 32)) }

        let free = try classifier(rgbClassifier(height: nil, width: nil))
        #expect(free.imageResize == nil && free.spec.inputShape == [-1, -1, -1, 3])
        let e = try #require(throws: ClassifyError.self) { try free.spec.imageResize() }
        #expect(e.kind == .badInput && e.description == "m.kiln: the bundle records no input.height/input.width (its input size is free)")
        #expect(try free.spec.imageResize(size: (32, 48)) == InputResize(mode: .kerasNearest, height: 32, width: 48))

        let noShorter = try classifier(rgbClassifier(resize: "torchvision"))
        #expect(throws: ClassifyError(.badBundle, file: "m.kiln", "input.resize 'torchvision' needs input.resize_shorter")) { try noShorter.spec.imageResize() }
        let unknown = try #require(throws: ClassifyError.self) { try classifier(rgbClassifier(resize: "lanczos")).spec.imageResize() }
        #expect(unknown.kind == .badInput && unknown.imageKind == .invalidArgument && unknown.message.contains("lanczos"))
    }

    /// A port that disagrees with the recorded size, and one that is not an image.
    @Test func portMustMatchTheImages() throws {
        var model = rgbClassifier()
        model.inputs[0].shape = [-1, 40, 57, 3]
        #expect(throws: ClassifyError(.badBundle, file: "m.kiln", "input 'image' has shape [-1, 40, 57, 3], images give [N, 40, 56, 3]")) {
            try classifier(model).spec.imageResize()
        }
        var nchw = rgbClassifier(extra: [.inputLayout: .string("NCHW")])
        nchw.inputs[0].shape = [-1, 3, 40, 56]
        let s = try classifier(nchw).spec
        #expect(s.layout == .nchw && s.batchShape(2, height: 40, width: 56) == [2, 3, 40, 56])
        #expect(try s.imageResize() == InputResize(mode: .kerasNearest, height: 40, width: 56))
    }

    @Test func logitsAreScores() throws {
        let c = try classifier(rgbClassifier(logits: true))
        #expect(c.spec.scores == .scores && c.scores(softmax: false) == .scores && c.scores(softmax: true) == .probabilities)
    }
}
