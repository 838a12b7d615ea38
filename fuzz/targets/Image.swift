// Fuzz target `image`: the bytes as an image file through `ImageDecoder.decode` (format sniffing, JPEG via
// libjpeg-turbo, PNG via libpng, the size limits) and every resizing a bundle can ask for (`InputResize`).
// A decoded image must hold exactly height · width · 3 bytes, and so must each resized one at its target size.
import KilnImage

/// A 1-megapixel cap keeps each run well under the timeout (a 324-byte progressive JPEG can declare 80x32716
/// pixels; its decode and four resizes took 17 s of a loaded machine under ASan); the limit check itself is
/// what is exercised.
let fuzzLimits = ImageLimits(maximumPixels: 1 << 20, maximumFileBytes: 1 << 24)

let resizes: [InputResize] = {
    do {
        return [try InputResize(name: "keras-nearest", height: 7, width: 9),
                try InputResize(name: "keras-bilinear", height: 9, width: 7),
                try InputResize(name: "torchvision", height: 6, width: 6, shorter: 8),
                try InputResize(name: "torchvision", height: 11, width: 5, shorter: 3)]
    } catch {
        fuzzFailure("resize settings refused: \(error)")
    }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let image: RGBImage
    do { image = try ImageDecoder.decode(bytes, file: "fuzz", limits: fuzzLimits) } catch { return 0 }
    guard image.width >= 1, image.height >= 1, image.pixels.count == image.width * image.height * 3 else {
        fuzzFailure("decoded \(image.width)x\(image.height) with \(image.pixels.count) bytes")
    }
    for resize in resizes {
        let out: RGBImage
        do { out = try resize.apply(image) } catch { continue }   // a resize over the pixel limit is refused
        guard out.width == resize.width, out.height == resize.height, out.pixels.count == out.width * out.height * 3 else {
            fuzzFailure("\(resize) of \(image.width)x\(image.height) gave \(out.width)x\(out.height) with \(out.pixels.count) bytes")
        }
    }
    return 0
}
