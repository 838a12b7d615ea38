import Foundation
import KilnFormat
import KilnRuntime
import Testing
@testable import KilnImage

/// The tf.image.resize fixtures (scripts/fixtures-tfresize, KILN_TF_RESIZE_FIXTURES): photos, TensorFlow's
/// decode of each, and the float pixels `image_dataset_from_directory` makes at every `tf-*` mode.
enum TensorFlowResizeFixtures {
    struct Photo: Decodable, Sendable {
        var file: String
        var note: String
        var height: Int
        var width: Int
        var decoded: String
    }

    struct Case: Decodable, Sendable, CustomStringConvertible {
        var photo: String
        var resize: String
        var height: Int
        var width: Int
        var expected: String
        var description: String { "\(photo) \(resize) \(height)x\(width)" }
    }

    struct Manifest: Decodable, Sendable {
        var tensorflow: String
        var photos: [Photo]
        var cases: [Case]
    }

    static let folder = ProcessInfo.processInfo.environment["KILN_TF_RESIZE_FIXTURES"] ?? ""
    static let manifest: Manifest? = {
        guard !folder.isEmpty, let data = FileManager.default.contents(atPath: "\(folder)/manifest.json") else { return nil }
        return try? JSONDecoder().decode(Manifest.self, from: data)
    }()
    static var enabled: Bool { manifest != nil || ImageFixtures.required }
}

@Suite(.enabled(if: TensorFlowResizeFixtures.enabled, "KILN_TF_RESIZE_FIXTURES (make fixtures-tfresize) not set"))
struct TensorFlowResizeParityTests {
    /// Kiln's `.tensorflow` decode of every photo equals tf.io.decode_image byte for byte (JPEG with the fast
    /// IDCT, CMYK by TensorFlow's formula, 16-bit gray by its high byte).
    @Test func decodeEqualsTensorFlow() throws {
        let m = try #require(TensorFlowResizeFixtures.manifest, "no manifest in KILN_TF_RESIZE_FIXTURES")
        let folder = TensorFlowResizeFixtures.folder
        #expect(m.photos.count >= 19)
        for p in m.photos {
            let got = try ImageDecoder.decode(contentsOf: "\(folder)/\(p.file)", convention: .tensorflow)
            let want = try readNPYBytes("\(folder)/\(p.decoded)")
            #expect(want.shape == [p.height, p.width, 3] && got.height == p.height && got.width == p.width, "\(p.file)")
            let d = PixelDifference(got.pixels, want.values)
            #expect(d.differing == 0, "\(p.file) (\(p.note)): \(d)")
        }
    }

    /// Every case, JPEG and PNG, every tf-* mode: float pixels within 1e-3 of Keras' pipeline, both from the file
    /// (Kiln's decode) and from TensorFlow's own decode (the resize alone).
    @Test func pixelsWithin1e3OfKerasPipeline() throws {
        let m = try #require(TensorFlowResizeFixtures.manifest, "no manifest in KILN_TF_RESIZE_FIXTURES")
        let folder = TensorFlowResizeFixtures.folder
        let modes = Set(m.cases.map(\.resize))
        #expect(modes == Set(InputResize.names.filter { $0.hasPrefix("tf-") }), "modes covered: \(modes.sorted())")
        #expect(m.cases.contains { $0.photo.hasSuffix(".jpg") } && m.cases.contains { $0.photo.hasSuffix(".png") })
        var decodedCache: [String: (RGBImage, RGBImage)] = [:]
        var worst: Float = 0
        for c in m.cases {
            let path = "\(folder)/\(c.photo)"
            let pair: (RGBImage, RGBImage)
            if let p = decodedCache[c.photo] { pair = p } else {
                let photo = try #require(m.photos.first { $0.file == c.photo })
                let tf = try readNPYBytes("\(folder)/\(photo.decoded)")
                let theirs = try #require(RGBImage(width: photo.width, height: photo.height, pixels: tf.values))
                pair = (try ImageDecoder.decode(contentsOf: path, convention: .tensorflow), theirs)
                decodedCache = [c.photo: pair]
            }
            let resize = try InputResize(name: c.resize, height: c.height, width: c.width)
            #expect(resize.decoding == .tensorflow)
            let want = try NPY.read(path: "\(folder)/\(c.expected)")
            #expect(want.shape == [c.height, c.width, 3], "\(c)")
            for (source, image) in [("decoded by Kiln", pair.0), ("decoded by TensorFlow", pair.1)] {
                let got = try resize.pixels(image, file: path)
                #expect(got.height == c.height && got.width == c.width, "\(c)")
                guard got.values.count == want.values.count else { continue }
                var maxError: Float = 0, at = 0
                for i in 0..<want.values.count {
                    let e = abs(got.values[i] - want.values[i])
                    if e > maxError { maxError = e; at = i }
                }
                worst = max(worst, maxError)
                #expect(maxError <= 1e-3, "\(c) \(source): max |Δ| \(maxError) at \(at) (\(got.values[at]) vs \(want.values[at]))")
            }
        }
        print("tf.image.resize parity: \(m.cases.count) cases (TensorFlow \(m.tensorflow)), max |Δ| \(worst)")
    }
}

@Suite struct TensorFlowResizeUnitTests {
    @Test func modeNamesRoundTrip() throws {
        for name in InputResize.names where name != "torchvision" {
            #expect(try InputResize(name: name, height: 8, width: 8).name == name)
        }
        #expect(try InputResize(name: "tf-bicubic-crop", height: 8, width: 8).mode == .tensorflow(.bicubic, cropToAspectRatio: true))
        #expect(throws: ImageError.self) { try InputResize(name: "tf-lanczos3", height: 8, width: 8) }
        #expect(throws: ImageError.self) { try InputResize(name: "tf-bilinear-crop-crop", height: 8, width: 8) }
        #expect(try InputResize(name: "keras-bilinear", height: 8, width: 8).decoding == .pil)
    }

    /// smart_resize's crop box: (340, 500) to (200, 200) keeps the centred 340×340 (Keras' docstring example).
    @Test func aspectCropMatchesKerasExample() throws {
        let image = try #require(RGBImage(width: 500, height: 340, pixels: (0..<(500 * 340 * 3)).map { UInt8($0 % 251) }))
        let c = image.tensorFlowAspectCrop(height: 200, width: 200)
        #expect(c.width == 340 && c.height == 340)
        #expect(c == image.cropped(top: 0, left: 80, height: 340, width: 340))
    }

    /// The 8-bit accessor refuses the float modes in one line instead of rounding their values.
    @Test func applyRefusesFloatModes() throws {
        let image = try #require(RGBImage(width: 4, height: 4, pixels: [UInt8](repeating: 9, count: 48)))
        let r = try InputResize(name: "tf-area", height: 2, width: 2)
        #expect(throws: ImageError.self) { try r.apply(image) }
        #expect(try r.pixels(image).values == [Float](repeating: 9, count: 12))
    }
}

/// kiln-run on a bundle that records a `tf-*` resize: per photo, the probabilities of the colour classifier on the
/// pixels TensorFlow's pipeline made (the fixture arrays), JPEG and PNG, every mode.
@Suite(.enabled(if: TensorFlowResizeFixtures.enabled && KilnRunBinary.enabled, "needs KILN_TF_RESIZE_FIXTURES and kiln-run"))
struct TensorFlowResizeKilnRunTests {
    @Test func kilnRunClassifiesOnTensorFlowPixels() throws {
        let m = try #require(TensorFlowResizeFixtures.manifest, "no manifest in KILN_TF_RESIZE_FIXTURES")
        let folder = TensorFlowResizeFixtures.folder
        let dir = try KilnRunBinary.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let photos = ["photos/china.jpg", "photos/coffee_cmyk_q90.jpg", "photos/rocket.jpg", "photos/camera_gray16.png", "photos/coffee_odd.png"]
        for mode in InputResize.names where mode.hasPrefix("tf-") {
            let bundle = "\(dir)/colour-\(mode).kiln"
            try BundleWriter.write(colourBundle(resize: mode, height: 75, width: 130), to: bundle)
            let r = try KilnRunBinary.run([bundle] + photos.map { "\(folder)/\($0)" } + ["--format", "json", "--top", "3"])
            #expect(r.status == 0, "\(mode): \(r.stderr)")
            let lines = try r.lines.map { try JSONDecoder().decode(JSONLine.self, from: Data($0.utf8)) }
            #expect(lines.count == photos.count)
            for (photo, line) in zip(photos, lines) {
                let c = try #require(m.cases.first { $0.photo == photo && $0.resize == mode && $0.height == 75 && $0.width == 130 })
                let want = colourSoftmax(floats: try NPY.read(path: "\(folder)/\(c.expected)").values)
                let got = line.predictions ?? []
                #expect(got.count == 3, "\(c)")
                for q in got { #expect(abs(q.probability - want[q.index]) <= 1e-5, "\(c): \(q.label) \(q.probability) vs \(want[q.index])") }
            }
        }
    }
}

/// The colour classifier (softmax of the per-channel mean / 16, Float64) on interleaved float RGB values.
func colourSoftmax(floats values: [Float]) -> [Float] {
    var sums = [Double](repeating: 0, count: 3)
    for (i, v) in values.enumerated() { sums[i % 3] += Double(v) }
    let logits = sums.map { $0 / Double(values.count / 3) / 16 }
    let top = logits.max() ?? 0
    let e = logits.map { exp($0 - top) }
    return e.map { Float($0 / e.reduce(0, +)) }
}
