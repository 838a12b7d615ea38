import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnRuntime

/// Loads a model source into the IR: an existing `.kiln` bundle (lifted back), or anything
/// `importSource` reads.
func loadGraph(path: String, config: String?) throws -> Graph {
    if let handle = FileHandle(forReadingAtPath: path) {
        let head = handle.readData(ofLength: 8)
        try? handle.close()
        if [UInt8](head) == BundleLayout.magic {
            // The model's tensors point into the mapping: keep the bundle alive while they are copied.
            let bundle = try Bundle(contentsOf: path)
            return try withExtendedLifetime(bundle) { try Graph(frozen: bundle.model) }
        }
    }
    return try importSource(path: path, config: config)
}

/// A failure that is not a usage error: printed as one line, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Image resizing recorded in a bundle for `kiln-run` on image files.
enum ResizeMethod: String, ExpressibleByArgument, CaseIterable {
    case kerasNearest = "keras-nearest"
    case kerasBilinear = "keras-bilinear"
    case torchvision
}

extension Preprocessing: ExpressibleByArgument {}

/// Parses "HxW" or "N".
func parseSize(_ text: String) -> (Int, Int)? {
    let parts = text.lowercased().split(separator: "x").map { Int($0) }
    if parts.count == 1, let n = parts[0], n > 0 { return (n, n) }
    if parts.count == 2, let h = parts[0], let w = parts[1], h > 0, w > 0 { return (h, w) }
    return nil
}

struct Fuse: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fuse a backbone and a trained head into one deployable bundle, preprocessing and labels inside.",
        discussion: """
            BACKBONE is any model `kiln convert` reads, or an existing .kiln. HEAD is a Keras model (Dense, Dropout,
            Activation, optionally a hidden Dense+ReLU). The backbone is cut at --cut (default: its global
            average pool) and everything after it is dropped. With preprocessing the bundle takes raw RGB pixels
            0–255: the channel order and scale fold into the first convolution, and its zero padding becomes
            padding with the per-channel mean, so borders stay exact.
            """)

    @Argument(help: "The backbone model (.h5, .keras, .weights.h5, .onnx, .kiln).")
    var backbone: String

    @Argument(help: "The trained head (.h5, .keras).")
    var head: String

    @Option(name: .shortAndLong, help: "The bundle to write.")
    var output: String

    @Option(name: .long, help: "The backbone layer whose output feeds the head (default: the global average pool).")
    var cut: String?

    @Option(name: .long, help: "Preprocessing the model was trained with: caffe, torch, tf or none (default: what the source implies).")
    var preprocess: Preprocessing?

    @Option(name: .long, help: "Class names, one per line, or 'imagenet' for the 1000 ImageNet classes.")
    var labels: String?

    @Option(name: .long, help: "Image size the model takes, HxW (default: the input's fixed size, else 224x224).")
    var inputSize: String?

    @Option(name: .long, help: "How kiln-run resizes images: keras-nearest (load_img's default), keras-bilinear, torchvision.")
    var resize: ResizeMethod?

    @OptionGroup var storage: StorageOptions

    @Option(name: .long, help: "Model config JSON for a weights-only backbone.")
    var backboneConfig: String?

    @Option(name: .long, help: "Model config JSON for a weights-only head.")
    var headConfig: String?

    func run() throws {
        let backboneName = (backbone as NSString).lastPathComponent
        let headName = (head as NSString).lastPathComponent
        let backboneGraph = try loadGraph(path: backbone, config: backboneConfig)
        let headGraph = try loadGraph(path: head, config: headConfig)
        try refuseBaselineHead(headPath: head)
        let cutName = try cut ?? backboneGraph.defaultCut()
        var graph = try backboneGraph.attachingHead(headGraph, cut: cutName, backboneName: backboneName, headName: headName)
        // Images arrive NHWC: an NCHW (ONNX) backbone's leading transpose goes.
        if graph.takingNHWCInput() { note("input: \(backboneName) takes NCHW; the fused bundle takes NHWC (its transpose is dropped)") }

        // Preprocessing: explicit, or implied by the source.
        let alreadyFolded: Bool = {
            if case .string(let p)? = backboneGraph.metadata["input.preprocessing"], Preprocessing(rawValue: p) != nil, p != "none" { return true }
            return false
        }()
        let framework: String = { if case .string(let f)? = backboneGraph.metadata["source.framework"] { return f } else { return "" } }()
        let chosen: Preprocessing
        if let preprocess {
            chosen = preprocess
        } else if alreadyFolded {
            chosen = .none
            note("preprocessing: already folded into \(backboneName)")
        } else if framework == "keras", backboneGraph.node(named: "conv1_conv") != nil {
            chosen = .caffe
            note("preprocessing: caffe (Keras applications ResNet-50's preprocess_input); override with --preprocess")
        } else {
            chosen = .none
            note("preprocessing: none (the bundle takes what \(backboneName)'s first layer takes); set --preprocess to fold it")
        }
        if alreadyFolded, chosen != .none {
            throw CLIError("\(backboneName) already has its preprocessing folded in; use --preprocess none")
        }
        try graph.prependPreprocessing(chosen)

        // Image size and resizing, for kiln-run on image files.
        let inputShape: SymbolicShape = {
            if let n = graph.nodes.first, case .input(let s) = n.op { return s }
            return []
        }()
        var size: (Int, Int)
        if let inputSize {
            guard let s = parseSize(inputSize) else { throw ValidationError("--input-size '\(inputSize)' is not HxW") }
            size = s
        } else if inputShape.count == 4, let h = inputShape[1], let w = inputShape[2] {
            size = (h, w)
        } else {
            size = (224, 224)
            note("input size: 224x224 (the input takes any size; set --input-size)")
        }
        if inputShape.count == 4, let h = inputShape[1], let w = inputShape[2], (h, w) != size {
            throw CLIError("--input-size \(size.0)x\(size.1) but \(backboneName) takes \(h)x\(w)")
        }
        let resizeMethod = resize ?? (chosen == .torch ? .torchvision : .kerasNearest)
        try checkHeadBackbone(headPath: head) {  // a head from `kiln train-head` records its features' backbone
            BackboneIdentity(checksum: try BackboneIdentity.checksum(ofFile: backbone), file: backboneName, cut: cutName,
                             preprocessing: alreadyFolded ? (backboneGraph.metadata["input.preprocessing"].flatMap { if case .string(let s) = $0 { return s } else { return nil } } ?? "none") : chosen.rawValue,
                             height: size.0, width: size.1, resize: resizeMethod.rawValue)
        }

        let headParameters = headGraph.parameterCount
        try graph.optimizeForInference()
        var frozen = try graph.lower()
        let total = frozen.tensors.reduce(0) { $0 + $1.elementCount }

        // Labels: one per output column of the first output.
        if let labels {
            let names: [String]
            if labels == "imagenet" {
                names = ImageNetClasses.all.map(\.name)
            } else {
                guard let text = try? String(contentsOfFile: labels, encoding: .utf8) else {
                    throw CLIError("\(labels): cannot read the labels file")
                }
                names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            let columns = frozen.outputs.first.flatMap { $0.shape.last }.map(Int.init) ?? -1
            guard names.count == columns else {
                throw CLIError("\((labels as NSString).lastPathComponent) has \(names.count) class names but the head \(headName) has \(columns) outputs")
            }
            frozen.metadata["labels.names"] = .strings(names)
        }
        frozen.metadata["kiln.converter_version"] = .string(KilnVersion.string)
        frozen.metadata["input.layout"] = .string("NHWC")
        frozen.metadata["input.preprocessing"] = .string(alreadyFolded ? (backboneGraph.metadata["input.preprocessing"].flatMap { if case .string(let s) = $0 { return s } else { return nil } } ?? "none") : chosen.rawValue)
        frozen.metadata["input.color"] = .string(chosen == .none && !alreadyFolded ? "as the source model" : "RGB 0-255")
        frozen.metadata["input.height"] = .int(Int64(size.0))
        frozen.metadata["input.width"] = .int(Int64(size.1))
        frozen.metadata["input.resize"] = .string(resizeMethod.rawValue)
        if resizeMethod == .torchvision {
            frozen.metadata["input.resize_shorter"] = .int(Int64((Double(min(size.0, size.1)) / 0.875).rounded()))
        }
        frozen.metadata["fuse.backbone"] = .string(backboneName)
        frozen.metadata["fuse.head"] = .string(headName)
        frozen.metadata["fuse.head_parameters"] = .int(Int64(headParameters))
        frozen.metadata["fuse.backbone_parameters"] = .int(Int64(total - headParameters))
        try BundleWriter.write(frozen.storingWeights(as: storage.weights), to: output, compression: storage.compression)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("wrote \(output): \(frozen.ops.count) ops, \(total) parameters (backbone \(total - headParameters), head \(headParameters)), \(bytes) bytes; cut at '\(cutName)', preprocessing \(chosen.rawValue)")
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("kiln fuse: \(text)\n".utf8))
    }
}

extension Graph {
    /// Parameters held by the graph's layers (kernels, biases, batch-norm vectors).
    var parameterCount: Int {
        nodes.reduce(0) { sum, node in
            switch node.op {
            case .conv2d(let c): return sum + c.kernel.values.count + (c.bias?.values.count ?? 0)
            case .dense(let d): return sum + d.kernel.values.count + (d.bias?.values.count ?? 0)
            case .batchNorm(let b): return sum + b.mean.count * 2 + (b.gamma?.count ?? 0) + (b.beta?.count ?? 0)
            default: return sum
            }
        }
    }
}
