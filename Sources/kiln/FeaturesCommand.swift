#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnImage
import KilnKeras
import KilnKernels
import KilnRuntime
import KilnTrain

/// How a backbone turns images into features: everything that must be the same when the head trained on
/// them is fused (`kiln fuse` resolves the same defaults and checks this identity). The backbone is known by its
/// content, the checksum of its weights (`Graph.weightsChecksum`), not by its file: a renamed or re-saved copy
/// of the same weights is the same backbone.
struct BackboneIdentity: Equatable {
    var checksum: String
    var file: String
    var cut: String
    var preprocessing: String
    var height: Int, width: Int
    var resize: String

    /// The recorded form: `kiln-backbone/2 weights=… cut=… preprocessing=… size=HxW resize=… file=…`.
    /// (Version 1, written before, held `xxh64=` of the file's bytes; `checkHeadBackbone` still reads it.)
    var text: String {
        "kiln-backbone/2 weights=\(checksum) cut=\(cut) preprocessing=\(preprocessing) size=\(height)x\(width) resize=\(resize) file=\(file)"
    }

    /// The version-1 form, with the file's checksum, for heads written before version 2.
    func version1(fileChecksum: String) -> String {
        "kiln-backbone/1 xxh64=\(fileChecksum) cut=\(cut) preprocessing=\(preprocessing) size=\(height)x\(width) resize=\(resize) file=\(file)"
    }

    /// The part that must match (the file name may change).
    static func key(_ text: String) -> String {
        text.split(separator: " ").filter { !$0.hasPrefix("file=") }.joined(separator: " ")
    }

    /// The `name=value` fields of a recorded identity (`size`, `resize`, `preprocessing`, `cut`, …).
    static func fields(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for part in text.split(separator: " ") {
            guard let eq = part.firstIndex(of: "=") else { continue }
            out[String(part[..<eq])] = String(part[part.index(after: eq)...])
        }
        return out
    }

    static func checksum(ofFile path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError(.badInput, "\(path): cannot read the file") }
        let h = data.withUnsafeBytes { XXH64.hash($0) }
        return String(h, radix: 16).leftPadded(to: 16)
    }
}

extension BackboneInput {
    /// The identity `kiln features` records and `kiln fuse` checks, for `backbone` (as loaded from `path`).
    func identity(of backbone: Graph, path: String) -> BackboneIdentity {
        BackboneIdentity(checksum: backbone.weightsChecksum, file: (path as NSString).lastPathComponent, cut: cut,
                         preprocessing: recordedPreprocessing, height: height, width: width, resize: resize.rawValue)
    }
}

extension Graph {
    /// XXH64 over every weight the graph holds, in node order: each tensor's shape and float32 bytes, hashed
    /// tensor by tensor and the hashes chained. The same weights give the same checksum whatever the file is
    /// called or which Keras layout holds them.
    var weightsChecksum: String {
        var chain: [UInt64] = []
        func add(_ values: [Float], shape: [Int]) {
            chain.append(UInt64(shape.count))
            chain.append(contentsOf: shape.map { UInt64(truncatingIfNeeded: $0) })
            chain.append(values.withUnsafeBytes { XXH64.hash($0) })
        }
        func add(_ t: WeightTensor?) { if let t { add(t.values, shape: t.shape) } }
        func add(_ values: [Double]) { add(values.map(Float.init), shape: [values.count]) }
        for node in nodes {
            switch node.op {
            case .conv2d(let c): add(c.kernel); add(c.bias)
            case .dense(let d): add(d.kernel); add(d.bias)
            case .batchNorm(let b):
                add(b.mean, shape: [b.mean.count]); add(b.variance, shape: [b.variance.count])
                if let g = b.gamma { add(g, shape: [g.count]) }
                if let v = b.beta { add(v, shape: [v.count]) }
                add([Float(b.epsilon)], shape: [1])
            case .channelAffine(let a): add(a.scale); add(a.shift)
            case .constantPad(_, _, _, _, let values): add(values, shape: [values.count])
            default: break
            }
        }
        let h = chain.withUnsafeBytes { XXH64.hash($0) }
        return String(h, radix: 16).leftPadded(to: 16)
    }
}

extension String {
    func leftPadded(to n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

/// `kiln fuse`'s check: a head written by `kiln train-head` records the backbone its features came from.
/// A head from `kiln train-head --baseline` reads raw pixels, not features: refused before anything is attached.
func refuseBaselineHead(headPath: String) throws {
    guard let recorded = (try? KerasHeadExport.recordedBackbone(path: headPath)) ?? nil, recorded.hasPrefix("baseline") else { return }
    throw CLIError(.badInput, "\((headPath as NSString).lastPathComponent) was trained on raw pixels (--baseline), not on backbone features; it cannot be fused")
}

/// Refuses a head whose recorded backbone identity is not `backbone`'s (the file at `backbonePath`): weights,
/// cut, preprocessing, size and resizing must all be the same; the file name may differ. A version-1 record is
/// compared with the file's checksum, as it was written.
func checkHeadBackbone(headPath: String, backbonePath: String, backbone makeIdentity: () throws -> BackboneIdentity) throws {
    // Only HDF5 heads can carry the record (a .keras zip or another file: nothing to check).
    guard let recorded = (try? KerasHeadExport.recordedBackbone(path: headPath)) ?? nil else { return }
    try refuseBaselineHead(headPath: headPath)
    let backbone = try makeIdentity()
    let current = recorded.hasPrefix("kiln-backbone/1 ")
        ? backbone.version1(fileChecksum: try BackboneIdentity.checksum(ofFile: backbonePath)) : backbone.text
    let headName = (headPath as NSString).lastPathComponent
    if BackboneIdentity.key(recorded) != BackboneIdentity.key(current) {
        throw CLIError(.badInput, "\(headName) was trained on features of another backbone or setting: it records '\(recorded)', this fuse gives '\(current)'; extract features with this backbone and settings (kiln features) and train again, or fuse with the recorded ones")
    }
}

/// What a head from `kiln train-head` records, for `kiln fuse` to adopt: the backbone options its features were
/// made with (cut, input size, resizing, preprocessing: each only where the command line does not give it, and
/// the preprocessing only for a backbone without one folded in) and its class names. Each adopted value is said
/// through `note`. A head without records changes nothing.
func adoptHeadRecords(headPath: String, backbone: Graph, options: inout BackboneOptions, note: (String) -> Void) throws -> [String]? {
    let headName = (headPath as NSString).lastPathComponent
    let names: [String]?
    do {
        names = try KerasHeadExport.recordedClassNames(path: headPath)
    } catch where error.message.contains(KerasHeadExport.classNamesAttribute) {
        throw CLIError(.badInput, "\(error)")     // a record that is there but unreadable
    } catch {
        names = nil                                // not an HDF5 head: nothing recorded
    }
    guard let recorded = (try? KerasHeadExport.recordedBackbone(path: headPath)) ?? nil, recorded.hasPrefix("kiln-backbone/") else { return names }
    let f = BackboneIdentity.fields(recorded)
    var adopted: [String] = []
    if options.cut == nil, let cut = f["cut"] { options.cut = cut; adopted.append("cut \(cut)") }
    if options.inputSize == nil, let size = f["size"], parseImageSize(size) != nil { options.inputSize = size; adopted.append("input size \(size)") }
    if options.resize == nil, let r = f["resize"], let method = ResizeMethod(rawValue: r) { options.resize = method; adopted.append("resize \(r)") }
    let folded: Bool = {
        if case .string(let p)? = backbone.metadata[.inputPreprocessing], let known = Preprocessing(rawValue: p) { return known != .none }
        return false
    }()
    if options.preprocess == nil, !folded, let p = f["preprocessing"], let preprocessing = Preprocessing(rawValue: p) {
        options.preprocess = preprocessing
        adopted.append("preprocessing \(p)")
    }
    if !adopted.isEmpty { note("\(adopted.joined(separator: ", ")): as \(headName) records") }
    return names
}

/// The backbone as a feature extractor: cut, preprocessing folded, resizing chosen, as `kiln fuse` would.
struct ResolvedBackbone {
    var model: Model
    var outputIndex: Int
    var resize: InputResize
    var identity: BackboneIdentity
}

func resolveBackbone(path: String, config: String?, options: BackboneOptions, note: (String) -> Void) throws -> ResolvedBackbone {
    let name = (path as NSString).lastPathComponent
    let backbone = try loadGraph(path: path, config: config, topology: options.topology)
    var graph = backbone
    let cutName = try options.cutName(in: backbone)
    guard backbone.node(named: cutName) != nil else { throw CLIError(.badInput, "\(name): no layer '\(cutName)' to cut at") }
    graph.outputs = [GraphOutput(port: cutName, node: cutName)]
    // Images arrive NHWC: an NCHW (ONNX) backbone's leading transpose goes, as in `kiln fuse`.
    if graph.takingNHWCInput() { note("input: \(name) takes NCHW; images go in NHWC (its transpose is dropped)") }
    let input = try options.resolve(backbone: backbone, name: name, cut: cutName, entering: graph, note: note)
    try graph.prependPreprocessing(input.preprocessing)
    try graph.optimizeForInference()
    let frozen = try graph.lower()
    let model = try Model(bundle: try Bundle(bytes: try BundleWriter.serialize(frozen)))
    guard let index = model.frozen.outputs.firstIndex(where: { $0.name == cutName }) ?? (model.frozen.outputs.count == 1 ? 0 : nil) else {
        throw CLIError(.badInput, "\(name): the cut '\(cutName)' is not an output")
    }
    let resizer = try InputResize(name: input.resize.rawValue, height: input.height, width: input.width,
                                  shorter: input.resizeShorter)
    return ResolvedBackbone(model: model, outputIndex: index, resize: resizer, identity: input.identity(of: backbone, path: path))
}

struct Features: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Extract a backbone's features for a labelled image folder (DATA_DIR/<class>/<image>) into a .npz.",
        discussion: """
            Images are decoded and resized as the fused bundle will do it (the same defaults and options as \
            `kiln fuse`), the backbone's preprocessing is folded in, and each image gives one row of the cut \
            layer's output (default: the last global average pool). Also stored: labels, class names, file \
            names, and the images downscaled to 16x16 RGB for `kiln train-head --baseline`. The class \
            histogram is printed first. Images that cannot be read are listed and skipped. Re-running with the \
            same backbone and settings reuses every row whose file (path, size, modification time) is unchanged. \
            OUT is written atomically; NumPy reads it with np.load.
            """)

    @Argument(help: "The backbone: a Keras or ONNX model, or a .kiln bundle.")
    var backbone: String

    @Argument(help: "The image folder: one sub-folder per class.")
    var dataDir: String

    @Option(name: .shortAndLong, help: "The features file to write (.npz).")
    var output: String

    @OptionGroup var backboneOptions: BackboneOptions

    @Option(name: .long, help: "Model config JSON for a weights-only backbone file.")
    var config: String?

    @Option(name: .long, help: "Images per backbone run.")
    var batch: Int = 16

    @Option(name: .long, help: "Threads for the kernels.")
    var threads: Int = 2

    func validate() throws {
        guard batch >= 1, batch <= 1024 else { throw ValidationError("--batch must be in 1...1024") }
        guard acceptedKernelThreadCounts.contains(threads) else { throw ValidationError("--threads must be in \(acceptedKernelThreadCounts)") }
    }

    func run() throws {
        try BundleWriter.checkWritable(output)     // before a single image is read
        setKernelThreads(threads)
        let folder = try ImageFolder(scanning: dataDir)
        // The histogram first: the imbalance users must see.
        let hist = folder.histogram
        print("\(dataDir): \(folder.classNames.count) classes, \(folder.entries.count) images")
        let width = folder.classNames.map(\.count).max() ?? 5
        let most = hist.max() ?? 1
        for (i, name) in folder.classNames.enumerated() {
            let bar = String(repeating: "█", count: max(1, Int((40.0 * Double(hist[i]) / Double(most)).rounded())))
            print("  \(name.padding(toLength: width, withPad: " ", startingAt: 0))  \(String(hist[i]).leftPaddedSpaces(6))  \(bar)")
        }
        if let lo = hist.min(), let hi = hist.max(), lo > 0, Double(hi) / Double(lo) >= 2 {
            print(String(format: "  imbalance: the largest class has %.1fx the images of the smallest (consider --class-weight balanced)", Double(hi) / Double(lo)))
        }
        fflush(nil)
        let resolved = try resolveBackbone(path: backbone, config: config, options: backboneOptions, note: note)
        var cache: FeatureSet?
        if FileManager.default.fileExists(atPath: output) {
            do {
                var old = try FeatureSet.read(path: output)
                if let recorded = old.backbone, BackboneIdentity.key(recorded) == BackboneIdentity.key(resolved.identity.text) {
                    old.backbone = resolved.identity.text     // the same backbone, perhaps under another file name
                    cache = old
                } else {
                    note("\(output) holds features of another backbone or setting: recomputing every image")
                }
            } catch {
                note("\(output) is not a features file kiln can reuse (\(error)): recomputing every image")
            }
        }
        var extraction = FeatureExtraction(model: resolved.model, outputIndex: resolved.outputIndex, resize: resolved.resize,
                                           backbone: resolved.identity.text)
        extraction.batch = batch
        var bar = ProgressBar()
        let outcome = try extraction.run(folder, cache: cache) { done, total in bar.update(done: done, total: total) }
        bar.finish()
        for s in outcome.skipped {
            print("skipped (unreadable): \(s.file): \(s.reason)")
        }
        try outcome.checkEveryClassHasRows(root: dataDir)
        try outcome.features.write(to: output)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("wrote \(output): \(outcome.features.count) images × \(outcome.features.featureCount) features ('\(resolved.identity.cut)', \(resolved.identity.height)x\(resolved.identity.width) \(resolved.identity.resize), preprocessing \(resolved.identity.preprocessing)); \(outcome.computed) computed, \(outcome.reused) unchanged from the cache\(outcome.skipped.isEmpty ? "" : ", \(outcome.skipped.count) skipped"); \(bytes) bytes")
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("kiln features: \(text)\n".utf8))
    }
}

extension String {
    func leftPaddedSpaces(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

/// A one-line progress bar on stderr: count, rate and time left; redrawn at most 5 times a second on a
/// terminal, else (a log file) one line per tenth of the work.
struct ProgressBar {
    var started = Date()
    var lastDraw = Date.distantPast
    var drawn = false
    let terminal = isatty(2) != 0
    var lastTenth = -1

    mutating func update(done: Int, total: Int) {
        guard total > 0 else { return }
        let now = Date()
        if terminal {
            guard done == total || now.timeIntervalSince(lastDraw) >= 0.2 else { return }
        } else {
            let tenth = 10 * done / total
            guard tenth > lastTenth else { return }
            lastTenth = tenth
        }
        lastDraw = now
        let elapsed = now.timeIntervalSince(started)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let left = rate > 0 ? Double(total - done) / rate : 0
        let filled = Int(30.0 * Double(done) / Double(total))
        let line = String(format: (terminal ? "\r" : "") + "[%@%@] %d/%d images  %.1f img/s  ETA %@ ", String(repeating: "#", count: filled),
                          String(repeating: ".", count: 30 - filled), done, total, rate, done == 0 ? "?" : formatSeconds(left))
        FileHandle.standardError.write(Data((terminal ? line : line + "\n").utf8))
        drawn = true
    }

    mutating func finish() {
        if drawn, terminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    func formatSeconds(_ s: Double) -> String {
        s < 60 ? String(format: "%.0f s", s) : String(format: "%d min %02d s", Int(s) / 60, Int(s) % 60)
    }
}
