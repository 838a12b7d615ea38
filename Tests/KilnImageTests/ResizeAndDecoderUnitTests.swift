import Testing
@testable import KilnImage

/// A w×h image whose pixel (x, y) is (x, y, x + y) (mod 256).
func ramp(_ w: Int, _ h: Int) -> RGBImage {
    var p: [UInt8] = []
    for y in 0..<h { for x in 0..<w { p += [UInt8(x & 255), UInt8(y & 255), UInt8((x + y) & 255)] } }
    return RGBImage(width: w, height: h, pixels: p) ?? RGBImage(unchecked: 1, 1, [0, 0, 0])
}

@Suite struct ResizeUnitTests {
    @Test func sameSizeIsIdentity() {
        let img = ramp(7, 5)
        #expect(img.resized(width: 7, height: 5, filter: .nearest) == img)
        #expect(img.resized(width: 7, height: 5, filter: .bilinear) == img)
        #expect(img.resized(width: 0, height: 5, filter: .bilinear) == nil)
    }

    /// NEAREST picks source column `Int(xo)`, xo = a/2 + x·a accumulated one column at a time in Double
    /// (a = in / out), as PIL does: at exact boundaries that differs from Int((x + 0.5)·a) — checked
    /// against Pillow 13: 4 → 10 takes column 2 for x = 7 (7.5 · 0.4 = 3.0000000000000004 would say 3),
    /// 640 → 224 differs from the product at 20 of 224 columns.
    @Test(arguments: [(10, 4), (4, 10), (7, 3), (224, 100), (3, 224), (640, 224)])
    func nearestSourceColumns(inW: Int, outW: Int) throws {
        let out = try #require(ramp(inW, 1).resized(width: outW, height: 1, filter: .nearest))
        let a = Double(inW) / Double(outW)
        var xo = a * 0.5
        for x in 0..<outW {
            #expect(Int(out.pixels[3 * x]) == Int(xo) & 255, "x \(x)")
            xo += a
        }
        if inW == 4, outW == 10 { #expect(out.pixels[3 * 7] == 2) }
    }

    /// Bilinear on a constant image stays constant, up and down, whichever pass runs first.
    @Test(arguments: [(13, 9, 5, 4), (5, 4, 13, 9), (64, 64, 56, 40), (9, 40, 30, 7), (1, 1, 3, 2)])
    func bilinearKeepsConstants(inW: Int, inH: Int, outW: Int, outH: Int) throws {
        let img = try #require(RGBImage(width: inW, height: inH, pixels: [UInt8](repeating: 0, count: inW * inH).flatMap { _ in [17, 128, 250] }))
        let out = try #require(img.resized(width: outW, height: outH, filter: .bilinear))
        #expect(out.width == outW && out.height == outH)
        #expect(out.pixels == [UInt8](repeating: 0, count: outW * outH).flatMap { _ in [17, 128, 250] })
    }

    /// Halving with the triangle filter widened ×2: taps (1, 3, 3, 1)/8 inside, renormalised at the edges.
    @Test func bilinearHalvingWeights() throws {
        let c = PILCoefficients(inSize: 8, outSize: 4)
        #expect(c.bounds.map(\.start) == [0, 1, 3, 5])
        #expect(c.bounds.map(\.count) == [3, 4, 4, 3])
        #expect(c.bounds.map(\.offset) == [0, 3, 7, 11])
        #expect(Array(c.weights[3..<7]) == [524288, 1572864, 1572864, 524288])   // (1, 3, 3, 1)/8 · 2^22
    }

    @Test func torchvisionSizes() {
        // The shorter side becomes N, the longer int(N · long / short), truncated.
        #expect(InputResize.torchvisionResizedSize(height: 427, width: 640, shorter: 256) == (256, 383))
        #expect(InputResize.torchvisionResizedSize(height: 640, width: 427, shorter: 256) == (383, 256))
        #expect(InputResize.torchvisionResizedSize(height: 500, width: 500, shorter: 224) == (224, 224))
        #expect(InputResize.torchvisionResizedSize(height: 3, width: 1000, shorter: 2) == (2, 666))
    }

    /// Python's round() is half to even: a difference of 33 crops at 16, 35 at 18, 34 at 17.
    @Test func centreCropOffsets() throws {
        #expect(InputResize.roundHalfEven(33) == 16)
        #expect(InputResize.roundHalfEven(35) == 18)
        #expect(InputResize.roundHalfEven(34) == 17)
        #expect(InputResize.roundHalfEven(1) == 0)
        #expect(InputResize.roundHalfEven(3) == 2)
        let img = ramp(40, 9)
        let c = InputResize.centerCrop(img, height: 8, width: 5)     // offsets round(1/2)=0, round(35/2)=18
        #expect(c.pixels[0] == 18 && c.pixels[1] == 0)
    }

    /// A crop larger than the image pads with zeros, the smaller half before.
    @Test func centreCropPads() {
        let img = ramp(3, 2)
        let c = InputResize.centerCrop(img, height: 4, width: 6)     // pad left 1, right 2, top 1, bottom 1
        #expect(c.width == 6 && c.height == 4)
        #expect(c.pixels[0..<3] == [0, 0, 0])
        let p = (1 * 6 + 1) * 3                                        // row 1, column 1 = source (0, 0)
        #expect(c.pixels[p..<p + 3] == [0, 0, 0] && c.pixels[p + 3..<p + 6] == [1, 0, 1])
        #expect(c.pixels[(1 * 6 + 4) * 3..<(1 * 6 + 5) * 3] == [0, 0, 0])
    }

    @Test func inputResizeNames() throws {
        #expect(try InputResize(name: "keras-nearest", height: 224, width: 224).mode == .kerasNearest)
        #expect(try InputResize(name: "torchvision", height: 224, width: 224, shorter: 256).mode == .torchvision(shorter: 256))
        #expect(throws: ImageError.self) { try InputResize(name: "torchvision", height: 224, width: 224) }
        #expect(throws: ImageError.self) { try InputResize(name: "lanczos", height: 224, width: 224) }
        #expect(throws: ImageError.self) { try InputResize(name: "keras-nearest", height: 0, width: 224) }
    }
}

@Suite struct DecoderUnitTests {
    static let samples = ImageFixtures.samples

    @Test func emptyAndUnknownBytes() {
        #expect(throws: ImageError(file: "x", kind: .empty, "empty file (0 bytes)")) { try ImageDecoder.decode([], file: "x") }
        do {
            _ = try ImageDecoder.decode(Array("hello".utf8), file: "a.txt")
            Issue.record("decoded text")
        } catch {
            #expect(error.kind == .notAnImage)
            #expect(error.description == "a.txt: not a JPEG or PNG image (starts with 0x68 0x65 0x6C 0x6C)")
        }
        #expect(throws: ImageError.self) { try ImageDecoder.decode(Array("GIF89a....".utf8), file: "g") }
    }

    @Test func missingFileAndDirectory() {
        do { _ = try ImageDecoder.decode(contentsOf: "/nonexistent/x.jpg"); Issue.record("decoded") } catch {
            #expect(error.kind == .unreadable && error.description.hasPrefix("/nonexistent/x.jpg: cannot open: "))
        }
        do { _ = try ImageDecoder.decode(contentsOf: Self.samples); Issue.record("decoded") } catch {
            #expect(error.kind == .unreadable && error.message == "is a directory")
        }
    }

    /// Limits are checked against the header (and the file size) before the pixels are allocated.
    @Test(arguments: ["photos/chelsea_q90.jpg", "photos/chelsea_rgb.png"])
    func limitsAreChecked(_ file: String) throws {
        let path = "\(Self.samples)/\(file)"
        let image = try ImageDecoder.decode(contentsOf: path)
        let tight = ImageLimits(maximumPixels: image.width * image.height - 1)
        do { _ = try ImageDecoder.decode(contentsOf: path, limits: tight); Issue.record("decoded over the limit") } catch {
            #expect(error.kind == .tooLarge)
            #expect(error.message.contains("\(image.width)×\(image.height)") && error.message.contains(formatCount(tight.maximumPixels)))
        }
        #expect(try ImageDecoder.decode(contentsOf: path, limits: ImageLimits(maximumPixels: image.width * image.height)) == image)
        do { _ = try ImageDecoder.decode(contentsOf: path, limits: ImageLimits(maximumFileBytes: 100)); Issue.record("read over the limit") } catch {
            #expect(error.kind == .tooLarge && error.message.contains("over the limit of 100"))
        }
    }

    @Test func hugeHeadersNameTheLimit() {
        for file in ["broken/huge_header.png", "broken/huge_header.jpg"] {
            do { _ = try ImageDecoder.decode(contentsOf: "\(Self.samples)/\(file)"); Issue.record("\(file) decoded") } catch {
                #expect(error.kind == .tooLarge)
                #expect(error.message.contains("over the limit of 100,000,000 pixels"), "\(error)")
            }
        }
    }

    /// PIL's cmyk2rgb on libjpeg's raw (Adobe-inverted) values: white, black, pure cyan, a mid grey.
    @Test func cmykConversion() {
        // raw = 255 − ink: no ink (255, 255, 255, 255) is white; full K (…, 0) is black.
        #expect(JPEGDecoder.cmykToRGB([255, 255, 255, 255], count: 1) == [255, 255, 255])
        #expect(JPEGDecoder.cmykToRGB([255, 255, 255, 0], count: 1) == [0, 0, 0])
        #expect(JPEGDecoder.cmykToRGB([0, 255, 255, 255], count: 1) == [0, 255, 255])
        #expect(JPEGDecoder.cmykToRGB([255, 255, 255, 128], count: 1) == [128, 128, 128])
    }

    @Test func errorsAreOneLine() {
        for kind in ImageError.Kind.allCases {
            let e = ImageError(file: "dir/a b.jpg", kind: kind, "message")
            #expect(e.description == "dir/a b.jpg: message")
        }
    }
}

@Suite struct InputResizeLimitTests {
    /// A 1-pixel-high strip resized "shorter side to 256" would be 256 × 25,600 wide per 100 source
    /// pixels: refused with the sizes named, before allocating.
    @Test func torchvisionIntermediateIsBounded() throws {
        let strip = try #require(RGBImage(width: 100_000, height: 1, pixels: [UInt8](repeating: 7, count: 300_000)))
        let resize = try InputResize(name: "torchvision", height: 224, width: 224, shorter: 256)
        do { _ = try resize.apply(strip, file: "strip.png"); Issue.record("resized") } catch {
            #expect(error.kind == .tooLarge)
            #expect(error.description == "strip.png: resizing 100000×1 to shorter side 256 gives 25600000×256, over the limit of 100,000,000 pixels")
        }
        #expect(throws: ImageError.self) { try InputResize(name: "keras-nearest", height: 60000, width: 60000) }
    }
}
