import Foundation
import Testing
import KilnFormat
import KilnImage
import KilnRuntime
import KilnClassify

/// The folder path (`Classifier.classify(files:…)`): batches decoded ahead of their runs by decoder threads,
/// straight into the input tensor. Whatever the number of decoder threads, the results come back in the
/// files' order, batch by batch, each image's scores what KilnImage's resize and the model's arithmetic give
/// (Float64 oracle), and a file that cannot be read keeps its error in its place while the rest still run.
@Suite struct PipelineTests {
    /// Runs `files` through the folder path; returns the batches (file paths) and the results in order.
    func run(_ c: Classifier, _ files: [ImageFile], batch: Int, decoders: Int) throws
        -> (batches: [[String]], results: [Result<[Prediction], ClassifyError>]) {
        var batches: [[String]] = []
        var results: [Result<[Prediction], ClassifyError>] = []
        try c.classify(files: files, batch: batch, top: 3, decoders: decoders) { done in
            batches.append(done.map(\.file.path))
            results += done.map(\.result)
        }
        return (batches, results)
    }

    /// Every sample photo (25, so several batches and a short last one), each mode of 8-bit and float pixels:
    /// order and values the same with 0 to 3 decoder threads, and each image's scores those of the Float64 oracle.
    @Test(arguments: ["keras-nearest", "keras-bilinear", "tf-bilinear"])
    func orderAndValuesWithAnyDecoderCount(mode: String) throws {
        let c = try classifier(rgbClassifier(resize: mode, height: 40, width: 40))
        let paths = Paths.photoFiles
        #expect(paths.count == 25)
        let files = paths.map { ImageFile(path: $0) }
        let resize = try InputResize(name: mode, height: 40, width: 40)
        let serial = try run(c, files, batch: 4, decoders: 0)
        #expect(serial.batches == stride(from: 0, to: 25, by: 4).map { Array(paths[$0..<min($0 + 4, 25)]) })
        for (path, result) in zip(paths, serial.results) {
            let p = try result.get()
            #expect(p.count == 3 && p[0].score >= p[1].score)
            if mode.hasPrefix("tf-") {
                // The float pixels' oracle: one image through the single-batch path (loadPixels, writePixels).
                let one = try #require(try c.classify([.file(path)], top: 3).first).get()
                #expect(p == one, "\(mode) \(path)")
            } else {
                let want = try rgbProbabilities(path, resize)
                for q in p { #expect(abs(q.score - want[q.index]) <= 1e-5, "\(mode) \(path) \(q.label)") }
            }
        }
        for decoders in 1...3 {
            let overlapped = try run(c, files, batch: 4, decoders: decoders)
            #expect(overlapped.batches == serial.batches, "\(decoders) decoders")
            #expect(overlapped.results.map { try? $0.get() } == serial.results.map { try? $0.get() }, "\(decoders) decoders")
        }
    }

    /// Corrupt, truncated and non-image files in the middle of a batch, and a path that cannot be opened: each
    /// keeps its error in its place, the images after it in the same batch still get their own scores (the rows
    /// closed up over the failures), and the run holds only the readable images.
    @Test(arguments: [0, 1, 2])
    func brokenFilesInTheMiddleOfABatch(decoders: Int) throws {
        let c = try classifier(rgbClassifier())
        let resize = try #require(c.imageResize)
        let photos = Paths.photoFiles.filter { $0.hasSuffix(".jpg") }
        let broken = ["\(Paths.broken)/truncated.jpg", "\(Paths.broken)/not_an_image.jpg", "\(Paths.broken)/empty.jpg"]
        let paths = [photos[0], photos[1], broken[0], photos[2], broken[1], photos[3], photos[4], broken[2],
                     photos[5], "/nonexistent/y.jpg", photos[6]]
        let files = collectImageFiles(paths)
        #expect(files.map(\.path) == paths)
        let out = try run(c, files, batch: 8, decoders: decoders)
        #expect(out.batches == [Array(paths[0..<8]), Array(paths[8...])])
        for (path, result) in zip(paths, out.results) {
            if photos.contains(path) {
                let want = try rgbProbabilities(path, resize)
                for q in try result.get() { #expect(abs(q.score - want[q.index]) <= 1e-5, "\(path) \(q.label)") }
            } else {
                #expect(result.failure?.file == path)
            }
        }
        #expect(out.results[2].failure?.imageKind == .truncated)
        #expect(out.results[4].failure?.imageKind == .notAnImage)
        #expect(out.results[7].failure?.imageKind == .empty)
        #expect(out.results[9].failure == ClassifyError(.badInput, file: "/nonexistent/y.jpg", "cannot open: No such file or directory"))
        // Five of the first eight decoded, two of the last three: a run of each.
        #expect(c.plans.planCounts == [[5, 40, 56, 3]: 1, [2, 40, 56, 3]: 1])
    }

    /// A folder of more than one batch with a corrupt JPEG among its files (a good photo cut in half): the
    /// files in name order, every batch full but the last, the corrupt one failing in its place.
    @Test func folderLargerThanABatch() throws {
        let c = try classifier(rgbClassifier())
        let resize = try #require(c.imageResize)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-pipeline-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let photos = Paths.photoFiles.filter { $0.hasSuffix(".jpg") }
        var names: [String] = []
        for i in 0..<11 {
            let name = String(format: "img_%02d.jpg", i)
            var bytes = try Data(contentsOf: URL(fileURLWithPath: photos[i % photos.count]))
            if i == 5 { bytes = bytes.prefix(bytes.count / 2) }
            try bytes.write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
            names.append(name)
        }
        let files = collectImageFiles([dir])
        #expect(files.map(\.path) == names.map { "\(dir)/\($0)" })
        let out = try run(c, files, batch: 4, decoders: 2)
        #expect(out.batches.map(\.count) == [4, 4, 3])
        #expect(out.batches.flatMap { $0 } == files.map(\.path))
        for (i, result) in out.results.enumerated() {
            if i == 5 {
                #expect(result.failure?.imageKind == .truncated && result.failure?.file == "\(dir)/img_05.jpg")
            } else {
                let want = try rgbProbabilities(photos[i % photos.count], resize)
                for q in try result.get() { #expect(abs(q.score - want[q.index]) <= 1e-5, "img_\(i) \(q.label)") }
            }
        }
    }
}
