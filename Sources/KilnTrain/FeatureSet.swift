import Foundation
import KilnKernels

/// What `kiln features` writes and `kiln train-head` reads: one row per image.
///
/// Stored as `.npz` (NumPy reads it with `np.load(path)`, no pickle):
/// - `features` float32 [N, D]: the backbone's output at the cut layer
/// - `labels` int64 [N]: class index into `class_names`
/// - `class_names` unicode [C]: the class folder names, sorted
/// - `files` unicode [N]: image paths relative to the data folder
/// - `file_sizes` int64 [N], `file_mtimes` int64 [N] (nanoseconds): the cache key of each row
/// - `pixels` float32 [N, P]: the image downscaled to `pixels_size` RGB, divided by 255 (the `--baseline` input)
/// - `backbone` unicode [1]: the backbone's identity (file checksum, cut, preprocessing, size, resize);
///   a head trained on these features records it, and `kiln fuse` refuses another backbone
/// - `split` int64 [N] (optional, never written by kiln): 0 train / 1 validation, to impose a split
public struct FeatureSet: Sendable {
    public var features: [Float]
    public var featureCount: Int
    public var labels: [Int]
    public var classNames: [String]
    public var files: [String]
    public var fileSizes: [Int64]
    public var fileMtimes: [Int64]
    public var pixels: [Float]
    public var pixelCount: Int
    public var backbone: String?
    public var split: [Int]?

    public var count: Int { labels.count }

    public init(features: [Float], featureCount: Int, labels: [Int], classNames: [String], files: [String],
                fileSizes: [Int64], fileMtimes: [Int64], pixels: [Float], pixelCount: Int, backbone: String?, split: [Int]? = nil) {
        self.features = features
        self.featureCount = featureCount
        self.labels = labels
        self.classNames = classNames
        self.files = files
        self.fileSizes = fileSizes
        self.fileMtimes = fileMtimes
        self.pixels = pixels
        self.pixelCount = pixelCount
        self.backbone = backbone
        self.split = split
    }

    public func write(to path: String) throws(NPZError) {
        var arrays: [(String, NPYArray)] = [
            ("features", .float32(shape: [count, featureCount], values: features)),
            ("labels", .int64(shape: [count], values: labels.map(Int64.init))),
            ("class_names", .strings(classNames)),
            ("files", .strings(files)),
            ("file_sizes", .int64(shape: [count], values: fileSizes)),
            ("file_mtimes", .int64(shape: [count], values: fileMtimes)),
            ("pixels", .float32(shape: [count, pixelCount], values: pixels)),
        ]
        if let backbone { arrays.append(("backbone", .strings([backbone]))) }
        if let split { arrays.append(("split", .int64(shape: [count], values: split.map(Int64.init)))) }
        try NPZ.write(arrays, to: path)
    }

    /// Reads a features file; `features`, `labels` and `class_names` are required, the rest optional.
    public static func read(path: String) throws(NPZError) -> FeatureSet {
        let name = (path as NSString).lastPathComponent
        let arrays = try NPZ.read(path: path)
        func fail(_ m: String) -> NPZError { NPZError(file: name, message: m) }
        guard case .float32(let fshape, let features)? = arrays["features"] else {
            throw fail(arrays["features"] == nil ? "no 'features' array (not written by kiln features?)" : "'features' must be float32")
        }
        guard fshape.count == 2 else { throw fail("'features' must be 2-D [images, features], it is \(fshape)") }
        let n = fshape[0], d = fshape[1]
        let labels: [Int]
        switch arrays["labels"] {
        case .int64(let s, let v)? where s == [n]: labels = v.map(Int.init)
        case nil: throw fail("no 'labels' array")
        default: throw fail("'labels' must be int64 [\(n)]")
        }
        guard case .strings(let classNames)? = arrays["class_names"] else { throw fail("no 'class_names' string array") }
        if let bad = labels.first(where: { $0 < 0 || $0 >= classNames.count }) {
            throw fail("label \(bad) is not an index into the \(classNames.count) class names")
        }
        var files: [String] = (0..<n).map { "#\($0)" }
        if case .strings(let f)? = arrays["files"], f.count == n { files = f }
        var sizes = [Int64](repeating: -1, count: n), mtimes = [Int64](repeating: -1, count: n)
        if case .int64(_, let v)? = arrays["file_sizes"], v.count == n { sizes = v }
        if case .int64(_, let v)? = arrays["file_mtimes"], v.count == n { mtimes = v }
        var pixels: [Float] = [], pixelCount = 0
        if case .float32(let s, let v)? = arrays["pixels"], s.count == 2, s[0] == n { pixels = v; pixelCount = s[1] }
        var backbone: String?
        if case .strings(let b)? = arrays["backbone"], let first = b.first { backbone = first }
        var split: [Int]?
        if let s = arrays["split"] {
            guard case .int64(let shape, let v) = s, shape == [n], v.allSatisfy({ $0 == 0 || $0 == 1 }) else {
                throw fail("'split' must be int64 [\(n)] of 0 (train) and 1 (validation)")
            }
            split = v.map(Int.init)
        }
        return FeatureSet(features: features, featureCount: d, labels: labels, classNames: classNames, files: files,
                          fileSizes: sizes, fileMtimes: mtimes, pixels: pixels, pixelCount: pixelCount, backbone: backbone, split: split)
    }
}

/// Stratified train/validation split: per class, a seeded shuffle, then round(n·fraction) rows to validation
/// (at least one and at most n−1 for a class of two or more; a class of one row stays in training).
public func stratifiedSplit(labels: [Int], classCount: Int, fraction: Double, seed: UInt64) -> (train: [Int], validation: [Int]) {
    var rng = SplitMix64(seed: seed)
    var train: [Int] = [], val: [Int] = []
    for c in 0..<classCount {
        var rows = labels.indices.filter { labels[$0] == c }
        rng.shuffle(&rows)
        var k = Int((Double(rows.count) * fraction).rounded())
        if fraction > 0, rows.count >= 2 { k = min(max(k, 1), rows.count - 1) } else if rows.count < 2 { k = 0 }
        val += rows.prefix(k)
        train += rows.dropFirst(k)
    }
    return (train.sorted(), val.sorted())
}
