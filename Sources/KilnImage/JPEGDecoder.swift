import CTurboJPEG

/// JPEG through libjpeg-turbo's TurboJPEG API, matching PIL's or TensorFlow's decoding (see `ImageDecoder`).
///
/// Settings that match PIL (which runs libjpeg-turbo with libjpeg's defaults and no draft mode):
/// `TJFLAG_ACCURATEDCT` (JDCT_ISLOW, TurboJPEG's decompression default, made explicit) and no
/// `TJFLAG_FASTUPSAMPLE` (fancy upsampling on, so no merged upsampler), full-size output (no scaling).
/// TensorFlow's `decode_image` differs in the IDCT: its default `dct_method=""` is `JDCT_IFAST` (measured on
/// the 41 fixture photos: `dct_method="INTEGER_FAST"` gives the default's bytes on every one, `INTEGER_ACCURATE`
/// differs by up to 18 levels), so `.tensorflow` sets `TJFLAG_FASTDCT`; it keeps fancy upsampling
/// (`fancy_upscaling=True`; turning it off changes 4:2:0 and 4:2:2 files by up to 57 levels).
/// `TJFLAG_LIMITSCANS` refuses progressive files with more than 500 scans (a denial-of-service shape).
enum JPEGDecoder {
    static func decode(_ bytes: [UInt8], file: String, limits: ImageLimits,
                       convention: DecodeConvention = .pil) throws(ImageError) -> RGBImage {
        let decompressor = try Decompressor(file: file)
        let (width, height, colorspace) = try decompressor.header(bytes)
        try limits.check(width: width, height: height, file: file, format: "JPEG")

        let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let channels = cmyk ? 4 : 3
        let format = cmyk ? TJPF_CMYK : TJPF_RGB
        var pixels = [UInt8](repeating: 0, count: width * height * channels)
        try decompressor.decompress(bytes, into: &pixels, width: width, height: height, format: format,
                                    fastDCT: convention == .tensorflow)
        guard cmyk else { return RGBImage(unchecked: width, height, pixels) }
        switch convention {
        case .pil: return RGBImage(unchecked: width, height, cmykToRGB(pixels, count: width * height))
        case .tensorflow:
            return RGBImage(unchecked: width, height,
                            tensorFlowCMYKToRGB(pixels, count: width * height, adobe: hasAdobeMarker(bytes)))
        }
    }

    /// TensorFlow's CMYK conversion (`jpeg_mem.cc`), on libjpeg's raw values: with an Adobe marker
    /// `r = k·c / 255`, else `r = (255 − k)(255 − c) / 255` (integer division, likewise g from m, b from y).
    static func tensorFlowCMYKToRGB(_ raw: [UInt8], count: Int, adobe: Bool) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count * 3)
        raw.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<count {
                    let k = Int(src[4 * i + 3])
                    for c in 0..<3 {
                        let v = Int(src[4 * i + c])
                        dst[3 * i + c] = UInt8(adobe ? k * v / 255 : (255 - k) * (255 - v) / 255)
                    }
                }
            }
        }
        return out
    }

    /// Whether the markers before the first scan hold an Adobe APP14 segment (libjpeg's `saw_Adobe_marker`:
    /// APP14 with at least 12 bytes of data starting "Adobe"). TurboJPEG does not report it.
    static func hasAdobeMarker(_ b: [UInt8]) -> Bool {
        var i = 2                                        // after SOI
        while i + 3 < b.count {
            guard b[i] == 0xFF else { return false }
            var m = b[i + 1]
            i += 2
            while m == 0xFF, i < b.count { m = b[i]; i += 1 }   // fill bytes
            if m == 0xDA || m == 0xD9 { return false }          // SOS, EOI: no more header markers
            if m == 0x01 || (0xD0...0xD7).contains(m) { continue }
            guard i + 1 < b.count else { return false }
            let length = Int(b[i]) << 8 | Int(b[i + 1])
            guard length >= 2 else { return false }
            if m == 0xEE, length - 2 >= 12, i + 7 <= b.count, Array(b[i + 2..<i + 7]) == Array("Adobe".utf8) { return true }
            i += length
        }
        return false
    }

    /// PIL's CMYK JPEG path: PIL reads every 4-component JPEG as "CMYK;I" (each value inverted, the
    /// Adobe/Photoshop convention), then `convert("RGB")` runs `cmyk2rgb`:
    /// `nk = 255 − K; out = clip(nk − muldiv255(C, nk))` with `muldiv255(a, b) = ((t >> 8) + t) >> 8`,
    /// `t = a·b + 128`. In libjpeg's raw values (c = 255 − C, k = 255 − K): `nk = k`, `C = 255 − c`.
    static func cmykToRGB(_ raw: [UInt8], count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count * 3)
        raw.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<count {
                    let nk = Int(src[4 * i + 3])
                    for c in 0..<3 {
                        let t = (255 - Int(src[4 * i + c])) * nk + 128
                        dst[3 * i + c] = UInt8(clamping: nk - (((t >> 8) + t) >> 8))
                    }
                }
            }
        }
        return out
    }

    /// The one owner of a TurboJPEG decompressor handle.
    final class Decompressor {
        let handle: tjhandle
        let file: String

        init(file: String) throws(ImageError) {
            guard let h = tjInitDecompress() else {
                throw ImageError(file: file, kind: .corrupt, "cannot create a JPEG decompressor")
            }
            handle = h
            self.file = file
        }

        deinit { tjDestroy(handle) }

        var lastMessage: String {
            guard let m = tjGetErrorStr2(handle) else { return "unknown JPEG error" }
            return String(cString: m)
        }

        func failure() -> ImageError {
            let m = lastMessage
            if m.contains("Premature end") || m.contains("truncated") {
                return ImageError(file: file, kind: .truncated, "JPEG data ends early (\(m))")
            }
            if m.contains("Unsupported JPEG data precision") || m.contains("Unsupported color") || m.contains("Could not determine") {
                return ImageError(file: file, kind: .unsupported, "unsupported JPEG: \(m)")
            }
            return ImageError(file: file, kind: .corrupt, "invalid JPEG: \(m)")
        }

        /// Width, height and TJCS colour space from the header.
        func header(_ bytes: [UInt8]) throws(ImageError) -> (Int, Int, Int32) {
            var w: Int32 = 0, h: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
            let status = bytes.withUnsafeBufferPointer { b in
                tjDecompressHeader3(handle, b.baseAddress, UInt(b.count), &w, &h, &subsampling, &colorspace)
            }
            guard status == 0 else { throw failure() }
            return (Int(w), Int(h), colorspace)
        }

        /// Decodes into `pixels` (width · height · channels of `format`). A warning is an error only when
        /// it says the data ended early: PIL refuses truncated files but decodes through other warnings.
        func decompress(_ bytes: [UInt8], into pixels: inout [UInt8], width: Int, height: Int, format: TJPF,
                        fastDCT: Bool = false) throws(ImageError) {
            let flags = (fastDCT ? TJFLAG_FASTDCT : TJFLAG_ACCURATEDCT) | TJFLAG_LIMITSCANS
            let status = bytes.withUnsafeBufferPointer { src in
                pixels.withUnsafeMutableBufferPointer { dst in
                    tjDecompress2(handle, src.baseAddress, UInt(src.count), dst.baseAddress, Int32(width), 0, Int32(height),
                                  Int32(format.rawValue), Int32(flags))
                }
            }
            guard status != 0 else { return }
            if tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue), !lastMessage.contains("Premature end") {
                return
            }
            throw failure()
        }
    }
}
