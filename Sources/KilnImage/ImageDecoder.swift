#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whose decoding an image gets: the framework the model's training data went through. The two differ on
/// JPEG (IDCT method, CMYK conversion) and on 16-bit grayscale PNG; everything else is the same bytes.
public enum DecodeConvention: String, Sendable, Equatable {
    /// PIL's `Image.open(path).convert("RGB")`: Keras' `load_img`, torchvision's `pil_loader`.
    case pil
    /// TensorFlow's `tf.io.decode_image(contents, channels=3)`: Keras' `image_dataset_from_directory`.
    /// JPEG with libjpeg's fast integer IDCT (`JDCT_IFAST`, TensorFlow's default `dct_method=""`) and fancy
    /// upsampling; CMYK/YCCK converted as TensorFlow's `jpeg_mem.cc` does (`r = k·c / 255` when the file has
    /// an Adobe marker, else `(255 − k)(255 − c) / 255`, integer division); PNG as libpng's
    /// `png_set_strip_16` + `png_set_strip_alpha` + palette/gray expansion, so 16-bit gray keeps the high byte.
    case tensorflow
}

/// The image formats Kiln decodes.
public enum ImageFormat: String, Sendable {
    case jpeg = "JPEG"
    case png = "PNG"
}

/// Decodes JPEG and PNG files into 8-bit RGB exactly as PIL's `Image.open(path).convert("RGB")` does,
/// which is what Keras' `load_img` and torchvision's `pil_loader` start from (the default `.pil`
/// convention), or as TensorFlow's `tf.io.decode_image` does (`.tensorflow`, see `DecodeConvention`).
///
/// - The format is found from the file's first bytes, never from its name.
/// - JPEG (libjpeg-turbo, TurboJPEG API): accurate integer IDCT (`JDCT_ISLOW`) and fancy (smooth) chroma
///   upsampling, libjpeg's defaults and what PIL uses; baseline and progressive; grayscale is replicated
///   to R = G = B; CMYK and YCCK are inverted the way PIL assumes (Adobe convention) and converted with
///   PIL's `cmyk2rgb`. 12-bit JPEGs are refused (PIL refuses them too).
/// - PNG (libpng): every bit depth and colour type, interlaced or not. Alpha is dropped, not composited;
///   a palette is expanded (indices past the palette give black, as in PIL); 1/2/4-bit gray is scaled to
///   0–255; 16-bit RGB and gray+alpha keep the high byte; 16-bit gray clips to 255 (PIL opens it as
///   `I;16`, whose RGB conversion clips). tRNS, gAMA, sRGB and iCCP are ignored, as PIL ignores them in
///   `convert("RGB")`.
/// - EXIF orientation is not applied: neither PIL's `open` nor Keras' `load_img` apply it.
/// - Size limits (`ImageLimits`) are checked against the header before the image is allocated.
public enum ImageDecoder {
    /// Reads and decodes the image file at `path`.
    public static func decode(contentsOf path: String, limits: ImageLimits = .standard,
                              convention: DecodeConvention = .pil) throws(ImageError) -> RGBImage {
        let bytes = try readImageFile(path, limits: limits)
        return try decode(bytes, file: path, limits: limits, convention: convention)
    }

    /// Decodes an image held in memory; `file` names it in errors.
    public static func decode(_ bytes: [UInt8], file: String, limits: ImageLimits = .standard,
                              convention: DecodeConvention = .pil) throws(ImageError) -> RGBImage {
        guard !bytes.isEmpty else { throw ImageError(file: file, kind: .empty, "empty file (0 bytes)") }
        switch format(of: bytes) {
        case .jpeg?: return try JPEGDecoder.decode(bytes, file: file, limits: limits, convention: convention)
        case .png?: return try PNGDecoder.decode(bytes, file: file, limits: limits, convention: convention)
        case nil:
            if let other = otherFormat(of: bytes) {
                throw ImageError(file: file, kind: .unsupported, "\(other) images are not supported (JPEG and PNG only)")
            }
            throw ImageError(file: file, kind: .notAnImage, "not a JPEG or PNG image (starts with \(hexPrefix(bytes)))")
        }
    }

    /// The format announced by the first bytes, or nil.
    public static func format(of bytes: [UInt8]) -> ImageFormat? {
        if bytes.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        return nil
    }

    /// Other image formats, recognised only to say so.
    static func otherFormat(of b: [UInt8]) -> String? {
        func ascii(_ s: String, at offset: Int = 0) -> Bool {
            let a = Array(s.utf8)
            return b.count >= offset + a.count && Array(b[offset..<offset + a.count]) == a
        }
        if ascii("GIF87a") || ascii("GIF89a") { return "GIF" }
        if ascii("RIFF"), ascii("WEBP", at: 8) { return "WebP" }
        if b.starts(with: [0x49, 0x49, 0x2A, 0x00]) || b.starts(with: [0x4D, 0x4D, 0x00, 0x2A]) { return "TIFF" }
        if ascii("BM"), b.count >= 26 { return "BMP" }
        if ascii("ftyp", at: 4) {
            if ascii("avif", at: 8) || ascii("avis", at: 8) { return "AVIF" }
            if ascii("heic", at: 8) || ascii("heix", at: 8) || ascii("mif1", at: 8) { return "HEIF" }
        }
        if b.starts(with: [0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20]) || b.starts(with: [0xFF, 0x4F, 0xFF, 0x51]) { return "JPEG 2000" }
        if b.starts(with: [0xFF, 0x0A]) || ascii("JXL ", at: 4) { return "JPEG XL" }
        return nil
    }

    static func hexPrefix(_ bytes: [UInt8]) -> String {
        bytes.prefix(4).map { b in
            let s = String(b, radix: 16, uppercase: true)
            return "0x" + (s.count < 2 ? "0" + s : s)
        }.joined(separator: " ")
    }
}

/// Reads a whole regular file, refusing it before allocating when it is over `limits.maximumFileBytes`.
func readImageFile(_ path: String, limits: ImageLimits) throws(ImageError) -> [UInt8] {
    func failure(_ what: String) -> ImageError {
        ImageError(file: path, kind: .unreadable, "\(what): \(String(cString: strerror(errno)))")
    }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw failure("cannot open") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw failure("cannot stat") }
    if (st.st_mode & S_IFMT) == S_IFDIR { throw ImageError(file: path, kind: .unreadable, "is a directory") }
    guard (st.st_mode & S_IFMT) == S_IFREG else { throw ImageError(file: path, kind: .unreadable, "not a regular file") }
    let size = Int(st.st_size)
    guard size <= limits.maximumFileBytes else {
        throw ImageError(file: path, kind: .tooLarge, "file has \(formatCount(size)) bytes, over the limit of \(formatCount(limits.maximumFileBytes))")
    }
    guard size > 0 else { throw ImageError(file: path, kind: .empty, "empty file (0 bytes)") }
    var out = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
        let n = out.withUnsafeMutableBytes { raw -> Int in
            guard let base = raw.baseAddress else { return 0 }
            return read(fd, base + done, size - done)
        }
        if n < 0 {
            if errno == EINTR { continue }
            throw failure("cannot read")
        }
        if n == 0 { break }
        done += n
    }
    guard done == size else { throw ImageError(file: path, kind: .unreadable, "file shrank while being read (\(done) of \(size) bytes)") }
    return out
}
