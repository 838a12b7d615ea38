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
        /// Keras' `image_dataset_from_directory(image_size=(height, width), interpolation=method)`: TensorFlow's
        /// decode (`DecodeConvention.tensorflow`), then `tf.image.resize` (`antialias=False`, float output, the
        /// aspect ratio not kept); with `cropToAspectRatio`, first the centred crop of `smart_resize`
        /// (`crop_to_aspect_ratio=True`). Metadata values `tf-bilinear`, `tf-nearest`, `tf-bicubic`, `tf-area`,
        /// each with the suffix `-crop` for the cropping variant.
        case tensorflow(TensorFlowResizeMethod, cropToAspectRatio: Bool)
    }

    /// Every metadata value `init(name:…)` takes.
    public static let names: [String] = ["keras-nearest", "keras-bilinear", "torchvision"]
        + TensorFlowResizeMethod.allCases.flatMap { ["tf-\($0.rawValue)", "tf-\($0.rawValue)-crop"] }

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

    /// From the metadata values: `name` is one of `names` (`torchvision` needs `shorter`).
    public init(name: String, height: Int, width: Int, shorter: Int? = nil) throws(ImageError) {
        if name.hasPrefix("tf-") {
            let crop = name.hasSuffix("-crop")
            let methodName = String(name.dropFirst(3).dropLast(crop ? 5 : 0))
            if let method = TensorFlowResizeMethod(rawValue: methodName) {
                try self.init(mode: .tensorflow(method, cropToAspectRatio: crop), height: height, width: width)
                return
            }
        }
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
                             "unknown resize mode '\(name)' (known: \(Self.names.joined(separator: ", ")))")
        }
    }

    public var name: String {
        switch mode {
        case .kerasNearest: return "keras-nearest"
        case .kerasBilinear: return "keras-bilinear"
        case .torchvision: return "torchvision"
        case .tensorflow(let method, let crop): return "tf-\(method.rawValue)" + (crop ? "-crop" : "")
        }
    }

    /// How images are decoded for this resizing: TensorFlow's way for the `tf-*` modes, else PIL's.
    public var decoding: DecodeConvention {
        if case .tensorflow = mode { return .tensorflow }
        return .pil
    }

    public var description: String {
        switch mode {
        case .kerasNearest, .kerasBilinear, .tensorflow: return "\(name) \(height)x\(width)"
        case .torchvision(let s): return "torchvision shorter \(s), crop \(height)x\(width)"
        }
    }

    /// The model's input pixels of `image` (decoded with `decoding`): float `[height, width, 3]` on the 0–255
    /// scale. The 8-bit modes give `apply`'s pixels as floats; the `tf-*` modes TensorFlow's float resize.
    public func pixels(_ image: RGBImage, file: String = "<image>", limits: ImageLimits = .standard) throws(ImageError) -> RGBFloatImage {
        guard case .tensorflow(let method, let crop) = mode else { return RGBFloatImage(try apply(image, file: file, limits: limits)) }
        let source = crop ? image.tensorFlowAspectCrop(height: height, width: width) : image
        guard let resized = source.tensorFlowResized(height: height, width: width, method: method) else {
            throw ImageError(file: file, kind: .invalidArgument, "cannot resize to \(height)×\(width)")
        }
        return resized
    }

    /// The image at the model's input size, for the 8-bit modes (the `tf-*` modes give floats: `pixels`).
    /// `file` names the image in the errors: torchvision's intermediate image (shorter side → `shorter`) over
    /// `limits.maximumPixels`, which only an extreme aspect ratio reaches; a `tf-*` mode.
    public func apply(_ image: RGBImage, file: String = "<image>", limits: ImageLimits = .standard) throws(ImageError) -> RGBImage {
        switch mode {
        case .tensorflow:
            throw ImageError(file: file, kind: .invalidArgument, "resize mode '\(name)' gives float pixels, not 8-bit ones")
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
