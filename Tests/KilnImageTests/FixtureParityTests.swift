import Foundation
import Testing
@testable import KilnImage

/// Decoded and resized pixels against PIL's (and Keras' load_img, which the generator checked equal to
/// PIL) for every fixture image: identical for PNG; for JPEG identical or at most 1 level apart on at most
/// 0.1% of the values.
@discardableResult
func checkAgainstPIL(_ folder: String, _ image: ImageFixtures.Image, sourceLocation: SourceLocation = #_sourceLocation) throws -> ParityStats {
    var stats = ParityStats()
    let path = "\(folder)/\(image.file)"
    let decoded = try ImageDecoder.decode(contentsOf: path)
    #expect(decoded.width == image.width && decoded.height == image.height, "\(image.file) size", sourceLocation: sourceLocation)
    let want = try readNPYBytes("\(folder)/\(image.decoded)")
    #expect(want.shape == [image.height, image.width, 3], sourceLocation: sourceLocation)
    let d = PixelDifference(decoded.pixels, want.values)
    #expect(d.meetsBar(jpeg: image.isJPEG), "\(image.file) (\(image.encoding)) decoded: \(d)", sourceLocation: sourceLocation)
    stats.add(decoded: d, jpeg: image.isJPEG)
    for r in image.resized {
        let resize = try InputResize(name: r.resize, height: r.height, width: r.width, shorter: r.resize_shorter)
        let got = try resize.apply(decoded)
        let expected = try readNPYBytes("\(folder)/\(r.expected)")
        #expect(expected.shape == [r.height, r.width, 3] && got.height == r.height && got.width == r.width, sourceLocation: sourceLocation)
        let dr = PixelDifference(got.pixels, expected.values)
        #expect(dr.meetsBar(jpeg: image.isJPEG), "\(image.file) \(resize): \(dr)", sourceLocation: sourceLocation)
        stats.add(resized: dr)
        // PIL's resize of PIL's own decode: the resize alone must be exact whatever the decoder.
        if let pilDecoded = RGBImage(width: image.width, height: image.height, pixels: want.values) {
            let exact = PixelDifference(try resize.apply(pilDecoded).pixels, expected.values)
            #expect(exact.differing == 0, "\(image.file) \(resize) on PIL's decode: \(exact)", sourceLocation: sourceLocation)
        }
    }
    return stats
}

/// Totals over images, printed for the record (the per-image expectations hold the bar).
struct ParityStats: CustomStringConvertible {
    var images = 0, jpegs = 0, decodedIdentical = 0, jpegDiffering = 0, jpegValues = 0
    var resized = 0, resizedIdentical = 0, maxDifference = 0

    mutating func add(decoded d: PixelDifference, jpeg: Bool) {
        images += 1
        if jpeg { jpegs += 1; jpegDiffering += d.differing; jpegValues += d.count }
        if d.differing == 0 { decodedIdentical += 1 }
        maxDifference = max(maxDifference, d.maxDifference)
    }

    mutating func add(resized d: PixelDifference) {
        resized += 1
        if d.differing == 0 { resizedIdentical += 1 }
        maxDifference = max(maxDifference, d.maxDifference)
    }

    mutating func add(_ o: ParityStats) {
        images += o.images; jpegs += o.jpegs; decodedIdentical += o.decodedIdentical
        jpegDiffering += o.jpegDiffering; jpegValues += o.jpegValues
        resized += o.resized; resizedIdentical += o.resizedIdentical; maxDifference = max(maxDifference, o.maxDifference)
    }

    var description: String {
        "\(images) images (\(jpegs) JPEG): decoded identical to PIL \(decodedIdentical)/\(images), JPEG values differing " +
            "\(jpegDiffering)/\(jpegValues); resized identical \(resizedIdentical)/\(resized); max difference \(maxDifference)"
    }
}

@Suite struct SampleImageParityTests {
    @Test func manifestIsPresent() throws {
        let m = try #require(ImageFixtures.sampleManifest, "samples/images/manifest.json")
        #expect(m.images.count >= 20)
        #expect(Set(m.images.map(\.pil_mode)).isSuperset(of: ["RGB", "RGBA", "L", "P", "I;16", "1", "LA", "CMYK"]))
        #expect(m.broken.count >= 6)
    }

    @Test(arguments: ImageFixtures.sampleManifest?.images ?? [])
    func decodedAndResizedMatchPIL(_ image: ImageFixtures.Image) throws {
        try checkAgainstPIL(ImageFixtures.samples, image)
    }

    @Test(arguments: ImageFixtures.sampleManifest?.broken ?? [])
    func brokenFileIsRefused(_ broken: ImageFixtures.Broken) {
        let path = "\(ImageFixtures.samples)/\(broken.file)"
        do {
            let image = try ImageDecoder.decode(contentsOf: path)
            Issue.record("\(broken.file) (\(broken.note)) decoded to \(image.width)×\(image.height)")
        } catch {
            #expect(error.kind.rawValue == broken.kind, "\(broken.file): \(error)")
            #expect(error.description.hasPrefix(path + ": "))
            #expect(!error.description.contains("\n"))
        }
    }
}

/// The full-size set from scripts/fixtures-images (`make test` sets KILN_IMAGE_FIXTURES): every image in
/// one test (they are large; the summary line is the figure to report).
@Suite(.enabled(if: ImageFixtures.fullEnabled)) struct FullImageParityTests {
    @Test func everyImageMatchesPIL() throws {
        let m = try #require(ImageFixtures.fullManifest, "\(ImageFixtures.full)/manifest.json (scripts/fixtures-images)")
        #expect(m.images.count >= 40)
        var total = ParityStats()
        for image in m.images { total.add(try checkAgainstPIL(ImageFixtures.full, image)) }
        print("image parity, \(ImageFixtures.full): \(total)")
    }

    @Test func brokenFilesAreRefused() throws {
        let m = try #require(ImageFixtures.fullManifest)
        for broken in m.broken {
            #expect(throws: ImageError.self, "\(broken.file)") { try ImageDecoder.decode(contentsOf: "\(ImageFixtures.full)/\(broken.file)") }
        }
    }
}

@Suite struct SampleParitySummary {
    @Test func samples() throws {
        let m = try #require(ImageFixtures.sampleManifest)
        var total = ParityStats()
        for image in m.images { total.add(try checkAgainstPIL(ImageFixtures.samples, image)) }
        print("image parity, samples/images: \(total)")
    }
}
