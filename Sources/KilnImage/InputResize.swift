/// How an image becomes the model's input size: the resizing of the framework the model was trained with,
/// as recorded in a bundle's `input.resize` (with `input.height`, `input.width`, `input.resize_shorter`).
public struct InputResize: Sendable, Equatable, CustomStringConvertible {
    public enum Mode: Sendable, Equatable {
        /// Keras `load_img(path, target_size=(height, width))`: PIL NEAREST resize to exactly that size
        /// (the aspect ratio is not kept). Metadata value `keras-nearest`.
        case kerasNearest
        /// The same with `interpolation="bilinear"`. Metadata value `keras-bilinear`.
        case kerasBilinear
        /// torchvision `Resize(shorter)` then `CenterCrop((height, width))` on a PIL image: PIL BILINEAR
        /// resize of the shorter side to `shorter` (the longer side `Int(shorter · long / short)`,
        /// truncated), then a centre crop at `round((H − height) / 2)`, `round((W − width) / 2)` (Python's
        /// round, half to even), zero-padded first when the crop is larger. Metadata value `torchvision`.
        case torchvision(shorter: Int)
    }

    public var mode: Mode
    /// The image size the model takes.
    public var height: Int
    public var width: Int

    public init(mode: Mode, height: Int, width: Int) throws(ImageError) {
        guard height >= 1, width >= 1, height <= 1 << 16, width <= 1 << 16 else {
            throw ImageError(file: "<input>", kind: .invalidArgument, "input size \(height)×\(width) must be within 1…65536")
        }
        guard height * width <= ImageLimits.standard.maximumPixels else {
            throw ImageError(file: "<input>", kind: .invalidArgument,
                             "input size \(height)×\(width) is over \(formatCount(ImageLimits.standard.maximumPixels)) pixels")
        }
        if case .torchvision(let s) = mode, !(1...(1 << 16)).contains(s) {
            throw ImageError(file: "<input>", kind: .invalidArgument, "resize_shorter \(s) must be within 1…65536")
        }
        self.mode = mode
        self.height = height
        self.width = width
    }

    /// From the metadata values: `name` is `keras-nearest`, `keras-bilinear` or `torchvision` (which needs
    /// `shorter`).
    public init(name: String, height: Int, width: Int, shorter: Int? = nil) throws(ImageError) {
        switch name {
        case "keras-nearest": try self.init(mode: .kerasNearest, height: height, width: width)
        case "keras-bilinear": try self.init(mode: .kerasBilinear, height: height, width: width)
        case "torchvision":
            guard let shorter else {
                throw ImageError(file: "<input>", kind: .invalidArgument, "resize mode 'torchvision' needs the shorter side")
            }
            try self.init(mode: .torchvision(shorter: shorter), height: height, width: width)
        default:
            throw ImageError(file: "<input>", kind: .invalidArgument,
                             "unknown resize mode '\(name)' (known: keras-nearest, keras-bilinear, torchvision)")
        }
    }

    public var name: String {
        switch mode {
        case .kerasNearest: return "keras-nearest"
        case .kerasBilinear: return "keras-bilinear"
        case .torchvision: return "torchvision"
        }
    }

    public var description: String {
        switch mode {
        case .kerasNearest, .kerasBilinear: return "\(name) \(height)x\(width)"
        case .torchvision(let s): return "torchvision shorter \(s), crop \(height)x\(width)"
        }
    }

    /// The image at the model's input size. `file` names the image in the one error: torchvision's
    /// intermediate image (shorter side → `shorter`) over `limits.maximumPixels`, which only an extreme
    /// aspect ratio reaches.
    public func apply(_ image: RGBImage, file: String = "<image>", limits: ImageLimits = .standard) throws(ImageError) -> RGBImage {
        switch mode {
        case .kerasNearest: return image.resized(width: width, height: height, filter: .nearest) ?? image
        case .kerasBilinear: return image.resized(width: width, height: height, filter: .bilinear) ?? image
        case .torchvision(let shorter):
            let (h, w) = Self.torchvisionResizedSize(height: image.height, width: image.width, shorter: shorter)
            let (pixels, overflow) = h.multipliedReportingOverflow(by: w)
            guard !overflow, pixels <= limits.maximumPixels else {
                throw ImageError(file: file, kind: .tooLarge, "resizing \(image.width)×\(image.height) to shorter side \(shorter) " +
                                 "gives \(w)×\(h), over the limit of \(formatCount(limits.maximumPixels)) pixels")
            }
            let resized = image.resized(width: w, height: h, filter: .bilinear) ?? image
            return Self.centerCrop(resized, height: height, width: width)
        }
    }

    /// torchvision's `_compute_resized_output_size` for an int size: the shorter side becomes `shorter`, the
    /// longer `int(shorter * long / short)` (a float division, truncated).
    public static func torchvisionResizedSize(height: Int, width: Int, shorter: Int) -> (height: Int, width: Int) {
        let short = min(height, width), long = max(height, width)
        let newLong = max(Int(min(Double(shorter) * Double(long) / Double(short), 1e15)), 1)
        return width <= height ? (newLong, shorter) : (shorter, newLong)
    }

    /// torchvision's `center_crop` on a PIL image: zero padding (left/top get the smaller half) when the crop
    /// is larger, then the offset `int(round(diff / 2.0))` with Python's half-to-even rounding.
    public static func centerCrop(_ image: RGBImage, height: Int, width: Int) -> RGBImage {
        var top = 0, left = 0
        var imageH = image.height, imageW = image.width
        if width > imageW || height > imageH {
            let padLeft = width > imageW ? (width - imageW) / 2 : 0
            let padTop = height > imageH ? (height - imageH) / 2 : 0
            let padRight = width > imageW ? (width - imageW + 1) / 2 : 0
            let padBottom = height > imageH ? (height - imageH + 1) / 2 : 0
            top -= padTop
            left -= padLeft
            imageH += padTop + padBottom
            imageW += padLeft + padRight
        }
        top += roundHalfEven(imageH - height)
        left += roundHalfEven(imageW - width)
        return image.cropped(top: top, left: left, height: height, width: width) ?? image
    }

    /// Python's `int(round(d / 2.0))` for an integer d ≥ 0.
    static func roundHalfEven(_ d: Int) -> Int {
        let half = d / 2
        guard d % 2 != 0 else { return half }
        return half % 2 == 0 ? half : half + 1
    }
}
