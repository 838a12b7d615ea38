#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import KilnImage
import KilnRuntime

public struct DatasetError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A labelled image folder in the layout of Keras' `image_dataset_from_directory`: one sub-folder per class
/// (sorted by name: the class index), image files anywhere below it (sorted; hidden entries skipped; files
/// that are not named like images ignored, as Keras does).
public struct ImageFolder: Sendable {
    public struct Entry: Sendable, Equatable {
        public var relativePath: String
        public var label: Int
        public var size: Int64
        public var mtimeNanoseconds: Int64
    }
    public var root: String
    public var classNames: [String]
    public var entries: [Entry]

    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "bmp", "gif"]

    public var histogram: [Int] {
        var h = [Int](repeating: 0, count: classNames.count)
        for e in entries { h[e.label] += 1 }
        return h
    }

    public init(scanning root: String) throws(DatasetError) {
        self.root = root
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw DatasetError("\(root): not a folder (expected one sub-folder per class)")
        }
        let fm = FileManager.default
        let top = ((try? fm.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        let classes = top.filter { var d: ObjCBool = false; return fm.fileExists(atPath: root + "/" + $0, isDirectory: &d) && d.boolValue }
        guard !classes.isEmpty else { throw DatasetError("\(root): no class folders (expected DATA_DIR/<class>/<image>)") }
        guard classes.count >= 2 else {
            throw DatasetError("\(root): only one class folder ('\(classes[0])'); a classifier needs at least two classes")
        }
        classNames = classes
        entries = []
        for (label, name) in classes.enumerated() {
            let files = ImageFolder.imageFiles(under: root + "/" + name, relative: name)
            guard !files.isEmpty else {
                throw DatasetError("\(root)/\(name): class folder holds no images (.jpg, .jpeg, .png); remove it or add images")
            }
            for f in files {
                var st = stat()
                guard stat(root + "/" + f, &st) == 0 else { continue }
                let mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
                entries.append(Entry(relativePath: f, label: label, size: Int64(st.st_size), mtimeNanoseconds: mtime))
            }
        }
    }

    static func imageFiles(under dir: String, relative: String) -> [String] {
        let fm = FileManager.default
        var out: [String] = []
        for name in ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).sorted() where !name.hasPrefix(".") {
            var d: ObjCBool = false
            guard fm.fileExists(atPath: dir + "/" + name, isDirectory: &d) else { continue }
            if d.boolValue {
                out += imageFiles(under: dir + "/" + name, relative: relative + "/" + name)
            } else if imageExtensions.contains((name as NSString).pathExtension.lowercased()) {
                out.append(relative + "/" + name)
            }
        }
        return out
    }
}

/// Runs a backbone bundle over an image folder: every image decoded and resized as the bundle records, one
/// row of the chosen output per image; plus the `--baseline` input (the image downscaled, bilinear, to
/// `pixelSize`² RGB, /255). Rows of an earlier features file whose file, size and modification time are
/// unchanged (and whose backbone identity is the same) are reused, not recomputed.
public struct FeatureExtraction {
    public var model: Model
    public var outputIndex: Int
    public var resize: InputResize
    public var backbone: String
    public var batch = 16
    public var pixelSize = 16

    public init(model: Model, outputIndex: Int, resize: InputResize, backbone: String) {
        self.model = model
        self.outputIndex = outputIndex
        self.resize = resize
        self.backbone = backbone
    }

    public struct Outcome: Sendable {
        public var features: FeatureSet
        public var reused: Int
        public var computed: Int
        /// Files that could not be read or decoded, with the reason; skipped.
        public var skipped: [(file: String, reason: String)]

        /// Throws when a class has no readable image left (after the skipped ones are reported).
        public func checkEveryClassHasRows(root: String) throws(DatasetError) {
            var counts = [Int](repeating: 0, count: features.classNames.count)
            for l in features.labels { counts[l] += 1 }
            if let empty = counts.firstIndex(of: 0) {
                throw DatasetError("\(root)/\(features.classNames[empty]): no readable images in this class folder")
            }
        }
    }

    /// `progress(done, total)` is called after each batch of computed images (`total` counts only those).
    public func run(_ folder: ImageFolder, cache: FeatureSet?, progress: (Int, Int) -> Void = { _, _ in }) throws -> Outcome {
        let baseline = try InputResize(name: "keras-bilinear", height: pixelSize, width: pixelSize)
        let pixelCount = pixelSize * pixelSize * 3
        // The cache: rows keyed by relative path, size and mtime, only under the same backbone.
        var cached: [String: Int] = [:]
        if let cache, cache.backbone == backbone, cache.pixelCount == pixelCount {
            for (i, f) in cache.files.enumerated() where cache.fileSizes[i] >= 0 { cached[f] = i }
        }
        var rows = [(feature: [Float], pixels: [Float])?](repeating: nil, count: folder.entries.count)
        var reused = 0
        var todo: [Int] = []
        for (i, e) in folder.entries.enumerated() {
            if let cache, let c = cached[e.relativePath], cache.fileSizes[c] == e.size, cache.fileMtimes[c] == e.mtimeNanoseconds,
               cache.classNames[cache.labels[c]] == folder.classNames[e.label] {
                let d = cache.featureCount
                rows[i] = (Array(cache.features[c * d..<(c + 1) * d]), Array(cache.pixels[c * pixelCount..<(c + 1) * pixelCount]))
                reused += 1
            } else {
                todo.append(i)
            }
        }
        var skipped: [(String, String)] = []
        var featureCount = cache != nil && reused > 0 ? cache!.featureCount : -1
        var done = 0
        var start = 0
        // A backbone whose batch dimension is fixed (an ONNX export for batches of exactly N) runs N images at a
        // time, the last batch filled up with copies of its last image.
        let fixedBatch = model.frozen.inputs.first?.shape.first.flatMap { $0 > 0 ? Int($0) : nil }
        let step = fixedBatch ?? batch
        let imageFloats = resize.height * resize.width * 3
        progress(0, todo.count)
        while start < todo.count {
            let chunk = todo[start..<min(start + step, todo.count)]
            var input: [Float] = []
            var pixelRows: [[Float]] = []
            var positions: [Int] = []
            for i in chunk {
                let e = folder.entries[i]
                let path = folder.root + "/" + e.relativePath
                do {
                    let image = try ImageDecoder.decode(contentsOf: path, convention: resize.decoding)
                    input += try resize.pixels(image, file: e.relativePath).values
                    pixelRows.append(try baseline.apply(image, file: e.relativePath).pixels.map { Float($0) / 255 })
                    positions.append(i)
                } catch {
                    skipped.append((e.relativePath, "\(error)"))
                }
            }
            if !positions.isEmpty {
                var batchRows = positions.count
                if let fixedBatch, batchRows < fixedBatch {
                    let last = Array(input[(batchRows - 1) * imageFloats..<batchRows * imageFloats])
                    for _ in batchRows..<fixedBatch { input += last }
                    batchRows = fixedBatch
                }
                let tensor = Tensor(shape: [batchRows, resize.height, resize.width, 3], values: input)
                let out = try model.run(tensor)[outputIndex]
                let d = out.values.count / batchRows
                if featureCount < 0 { featureCount = d }
                guard d == featureCount else {
                    throw DatasetError("the backbone gives \(d) features per image, the cached rows have \(featureCount)")
                }
                for (k, i) in positions.enumerated() {
                    rows[i] = (Array(out.values[k * d..<(k + 1) * d]), pixelRows[k])
                }
            }
            done += chunk.count
            start += chunk.count
            progress(done, todo.count)
        }
        var set = FeatureSet(features: [], featureCount: max(featureCount, 0), labels: [], classNames: folder.classNames, files: [],
                             fileSizes: [], fileMtimes: [], pixels: [], pixelCount: pixelCount, backbone: backbone)
        for (i, e) in folder.entries.enumerated() {
            guard let row = rows[i] else { continue }
            set.features += row.feature
            set.pixels += row.pixels
            set.labels.append(e.label)
            set.files.append(e.relativePath)
            set.fileSizes.append(e.size)
            set.fileMtimes.append(e.mtimeNanoseconds)
        }
        return Outcome(features: set, reused: reused, computed: todo.count - skipped.count, skipped: skipped)
    }
}
