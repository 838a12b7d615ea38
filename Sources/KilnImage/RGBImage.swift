/// An 8-bit RGB image: rows top to bottom, pixels interleaved R, G, B (`[height, width, 3]`, row-major).
///
/// This is what PIL's `Image.open(path).convert("RGB")` holds, and so what Keras' `load_img` resizes.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    /// An image from `height · width · 3` interleaved RGB bytes; nil when the count does not match.
    public init?(width: Int, height: Int, pixels: [UInt8]) {
        guard width >= 1, height >= 1, pixels.count == width * height * 3 else { return nil }
        self.init(unchecked: width, height, pixels)
    }

    init(unchecked width: Int, _ height: Int, _ pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The pixel values as float32 `[height, width, 3]`, 0–255 (Keras' `img_to_array`).
    public var floats: [Float] { pixels.map(Float.init) }

    /// Appends the pixel values as float32 to `buffer` (one image of an NHWC batch).
    public func appendFloats(to buffer: inout [Float]) {
        let start = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: pixels.count))
        buffer.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                for i in 0..<src.count { dst[start + i] = Float(src[i]) }
            }
        }
    }
}

/// What went wrong with an image file; `description` is one line that names the file.
public struct ImageError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// The file cannot be opened or read (missing, a directory, permissions).
        case unreadable
        /// The file has no bytes.
        case empty
        /// Neither JPEG nor PNG, nor another image format we recognise.
        case notAnImage = "not-an-image"
        /// An image format or variant we refuse (GIF, WebP, 12-bit JPEG, …).
        case unsupported
        /// The data ends before the image does.
        case truncated
        /// The decoder found invalid data.
        case corrupt
        /// Over a limit (pixels, file size), refused before allocating the image.
        case tooLarge = "too-large"
        /// An argument outside what the operation accepts (a zero target size, an unknown resize mode).
        case invalidArgument = "invalid-argument"
    }

    public var file: String
    public var kind: Kind
    public var message: String

    public init(file: String, kind: Kind, _ message: String) {
        self.file = file
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
}

/// Limits checked before anything large is allocated.
public struct ImageLimits: Sendable, Equatable {
    /// Most pixels an image may have (width × height), checked against the header before decoding.
    public var maximumPixels: Int
    /// Most bytes an image file may have, checked before it is read.
    public var maximumFileBytes: Int

    public init(maximumPixels: Int = 100_000_000, maximumFileBytes: Int = 1 << 30) {
        self.maximumPixels = maximumPixels
        self.maximumFileBytes = maximumFileBytes
    }

    /// 100 megapixels, 1 GiB files.
    public static let standard = ImageLimits()

    /// Refuses `width × height` over `maximumPixels` (or a non-positive size), naming both.
    func check(width: Int, height: Int, file: String, format: String) throws(ImageError) {
        guard width >= 1, height >= 1 else {
            throw ImageError(file: file, kind: .corrupt, "\(format) header declares an empty image (\(width)×\(height))")
        }
        let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
        guard !overflow, pixels <= maximumPixels else {
            throw ImageError(file: file, kind: .tooLarge,
                             "\(format) header declares \(width)×\(height) pixels, over the limit of \(formatCount(maximumPixels)) pixels")
        }
    }
}

/// 100000000 → "100,000,000".
func formatCount(_ n: Int) -> String {
    let digits = Array(String(n))
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return out
}
