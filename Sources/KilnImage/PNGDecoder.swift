import CPNG

/// PNG through libpng, converted to RGB exactly as PIL's PNG plugin + `convert("RGB")` (see `ImageDecoder`).
///
/// libpng only unpacks (1/2/4-bit samples to one byte each) and de-interlaces; every conversion to RGB is
/// done here, so that none of libpng's own (gamma, alpha, 16-bit scaling) can differ from PIL's.
enum PNGDecoder {
    /// PNG colour types (IHDR).
    enum ColorType: Int32 {
        case gray = 0, rgb = 2, palette = 3, grayAlpha = 4, rgba = 6
    }

    static func decode(_ bytes: [UInt8], file: String, limits: ImageLimits, convention: DecodeConvention = .pil) throws(ImageError) -> RGBImage {
        var result: Result<RGBImage, ImageError> = .failure(ImageError(file: file, kind: .corrupt, "PNG not decoded"))
        bytes.withUnsafeBufferPointer { buffer in
            do throws(ImageError) {
                let reader = try Reader(buffer, file: file)
                result = .success(try reader.read(limits: limits, convention: convention))
            } catch {
                result = .failure(error)
            }
        }
        return try result.get()
    }

    /// The one owner of a libpng read struct, its info struct and the source it reads from.
    final class Reader {
        let png: png_structp
        var info: png_infop?
        let source: UnsafeMutablePointer<kiln_png_source>
        let file: String

        init(_ bytes: UnsafeBufferPointer<UInt8>, file: String) throws(ImageError) {
            self.file = file
            source = .allocate(capacity: 1)
            source.initialize(to: kiln_png_source())
            source.pointee.data = bytes.baseAddress
            source.pointee.size = bytes.count
            source.pointee.offset = 0
            guard let p = kiln_png_create_read(source) else {
                source.deallocate()
                throw ImageError(file: file, kind: .corrupt, "cannot create a PNG reader")
            }
            png = p
            info = png_create_info_struct(png)
        }

        deinit {
            var p: png_structp? = png
            png_destroy_read_struct(&p, &info, nil)
            source.deallocate()
        }

        var message: String {
            withUnsafeBytes(of: source.pointee.message) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
        }

        func failure() -> ImageError {
            let m = message.isEmpty ? "libpng error" : message
            if m.contains("truncated") || m.contains("Not enough image data") || m.contains("Read Error") {
                return ImageError(file: file, kind: .truncated, "PNG data ends early (\(m))")
            }
            return ImageError(file: file, kind: .corrupt, "invalid PNG: \(m)")
        }

        func read(limits: ImageLimits, convention: DecodeConvention) throws(ImageError) -> RGBImage {
            guard let info else { throw ImageError(file: file, kind: .corrupt, "cannot create a PNG reader") }
            // Our own limit (below) decides on size, with its message; libpng's 1,000,000 per side would
            // refuse some images first with a less useful one.
            png_set_user_limits(png, 0x7FFF_FFFF, 0x7FFF_FFFF)
            guard kiln_png_read_info(png, info) == 1 else { throw failure() }

            var w: png_uint_32 = 0, h: png_uint_32 = 0
            var depth: Int32 = 0, colorTypeCode: Int32 = 0, interlace: Int32 = 0
            guard png_get_IHDR(png, info, &w, &h, &depth, &colorTypeCode, &interlace, nil, nil) == 1 else { throw failure() }
            let width = Int(w), height = Int(h), bitDepth = Int(depth)
            try limits.check(width: width, height: height, file: file, format: "PNG")
            guard let colorType = ColorType(rawValue: colorTypeCode) else {
                throw ImageError(file: file, kind: .corrupt, "invalid PNG: colour type \(colorTypeCode)")
            }

            if bitDepth < 8 { png_set_packing(png) }   // one byte per sample, value unchanged
            if interlace != 0 { _ = png_set_interlace_handling(png) }
            guard kiln_png_read_update_info(png, info) == 1 else { throw failure() }

            let channels = Int(png_get_channels(png, info))
            let sampleBytes = bitDepth == 16 ? 2 : 1
            let rowBytes = Int(png_get_rowbytes(png, info))
            guard rowBytes == width * channels * sampleBytes else {
                throw ImageError(file: file, kind: .corrupt, "invalid PNG: \(rowBytes) bytes per row for \(width) pixels of \(channels)×\(bitDepth) bits")
            }
            var raw = [UInt8](repeating: 0, count: rowBytes * height)
            let ok = raw.withUnsafeMutableBufferPointer { buffer -> Bool in
                guard let base = buffer.baseAddress else { return false }
                var rows = (0..<height).map { Optional(base + $0 * rowBytes) }
                return rows.withUnsafeMutableBufferPointer { kiln_png_read_image(png, $0.baseAddress) == 1 }
            }
            guard ok else { throw failure() }
            let palette = colorType == .palette ? paletteTable(info) : []
            let rgb = toRGB(raw, count: width * height, colorType: colorType, bitDepth: bitDepth, palette: palette,
                            clipWideGray: convention == .pil)
            return RGBImage(unchecked: width, height, rgb)
        }

        /// 256 RGB entries; those the PLTE chunk does not give are black (PIL's P → RGB does the same).
        func paletteTable(_ info: png_infop) -> [UInt8] {
            var table = [UInt8](repeating: 0, count: 256 * 3)
            var entries: png_colorp?
            var count: Int32 = 0
            guard png_get_PLTE(png, info, &entries, &count) != 0, let entries else { return table }
            for i in 0..<min(Int(count), 256) {
                table[3 * i] = entries[i].red
                table[3 * i + 1] = entries[i].green
                table[3 * i + 2] = entries[i].blue
            }
            return table
        }
    }

    /// PIL's conversions of each PNG pixel layout to RGB. `raw` is unpacked samples, big-endian when 16-bit.
    ///
    /// | PNG | PIL mode (raw mode) | → RGB |
    /// | gray 1/2/4 | "1" / "L" ("L;2", "L;4") | v · 255 / (2^depth − 1), replicated |
    /// | gray 8 | "L" | replicated |
    /// | gray 16 | "I;16" ("I;16B") | v > 255 ? 255 : v (PIL clips, it does not scale), replicated; with
    /// `clipWideGray` false the high byte instead (TensorFlow's `png_set_strip_16`) |
    /// | RGB 8 / 16 | "RGB" ("RGB;16B") | 16-bit: the high byte |
    /// | palette 1/2/4/8 | "P" | table lookup, tRNS ignored |
    /// | gray+alpha 8 / 16 | "LA" / "RGBA" ("LA;16B") | gray (high byte), alpha dropped |
    /// | RGBA 8 / 16 | "RGBA" ("RGBA;16B") | high byte, alpha dropped |
    static func toRGB(_ raw: [UInt8], count: Int, colorType: ColorType, bitDepth: Int, palette: [UInt8],
                      clipWideGray: Bool = true) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count * 3)
        let wide = bitDepth == 16
        raw.withUnsafeBufferPointer { src in
            palette.withUnsafeBufferPointer { table in
                out.withUnsafeMutableBufferPointer { dst in
                    switch colorType {
                    case .gray:
                        let scale = bitDepth == 1 ? 255 : bitDepth == 2 ? 85 : bitDepth == 4 ? 17 : 1
                        for i in 0..<count {
                            let v = wide ? (clipWideGray ? (src[2 * i] != 0 ? 255 : src[2 * i + 1]) : src[2 * i])
                                         : UInt8(truncatingIfNeeded: Int(src[i]) * scale)
                            dst[3 * i] = v; dst[3 * i + 1] = v; dst[3 * i + 2] = v
                        }
                    case .rgb, .rgba:
                        let sample = wide ? 2 : 1
                        let step = (colorType == .rgb ? 3 : 4) * sample
                        for i in 0..<count {
                            dst[3 * i] = src[i * step]
                            dst[3 * i + 1] = src[i * step + sample]
                            dst[3 * i + 2] = src[i * step + 2 * sample]
                        }
                    case .palette:
                        for i in 0..<count {
                            let p = Int(src[i]) * 3
                            dst[3 * i] = table[p]; dst[3 * i + 1] = table[p + 1]; dst[3 * i + 2] = table[p + 2]
                        }
                    case .grayAlpha:
                        let step = wide ? 4 : 2
                        for i in 0..<count {
                            let v = src[i * step]
                            dst[3 * i] = v; dst[3 * i + 1] = v; dst[3 * i + 2] = v
                        }
                    }
                }
            }
        }
        return out
    }
}
