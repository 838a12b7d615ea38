import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnRuntime

/// Loads a model source into the IR: an existing `.kiln` bundle (lifted back), or anything
/// `importSource` reads.
func loadGraph(path: String, config: String?, topology: String? = nil) throws -> Graph {
    if let handle = FileHandle(forReadingAtPath: path) {
        let head = handle.readData(ofLength: 8)
        try? handle.close()
        if [UInt8](head) == BundleLayout.magic {
            // The model's tensors point into the mapping: keep the bundle alive while they are copied.
            let bundle = try Bundle(contentsOf: path)
            return try withExtendedLifetime(bundle) { try Graph(frozen: bundle.model) }
        }
    }
    return try importSource(path: path, config: config, topology: topology)
}

/// A failure that is not a usage error: printed as one line, exit status 1. Every one is the caller's
/// (a file or argument it gave), so `.badInput` at each throw today; the kind is said there all the same.
struct CLIError: KindedError {
    var kind: ErrorKind
    var description: String
    init(_ kind: ErrorKind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// Image resizing recorded in a bundle for `kiln-run` on image files.
enum ResizeMethod: String, ExpressibleByArgument, CaseIterable {
    case kerasNearest = "keras-nearest"
    case kerasBilinear = "keras-bilinear"
    case torchvision
}

extension Preprocessing: ExpressibleByArgument {}

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

    @OptionGroup var backboneOptions: BackboneOptions

    @Option(name: .long, help: "Class names, one per line, or 'imagenet' for the 1000 ImageNet classes.")
    var labels: String?

    @OptionGroup var storage: StorageOptions

    @Option(name: .long, help: "Model config JSON for a weights-only backbone.")
    var backboneConfig: String?

    @Option(name: .long, help: "Model config JSON for a weights-only head.")
    var headConfig: String?

    func run() throws {
        let backboneName = (backbone as NSString).lastPathComponent
        let headName = (head as NSString).lastPathComponent
        let backboneGraph = try loadGraph(path: backbone, config: backboneConfig, topology: backboneOptions.topology)
        let headGraph = try loadGraph(path: head, config: headConfig)
        try refuseBaselineHead(headPath: head)
        let cutName = try backboneOptions.cutName(in: backboneGraph)
        var graph = try backboneGraph.attachingHead(headGraph, cut: cutName, backboneName: backboneName, headName: headName)
        // Images arrive NHWC: an NCHW (ONNX) backbone's leading transpose goes.
        if graph.takingNHWCInput() { note("input: \(backboneName) takes NCHW; the fused bundle takes NHWC (its transpose is dropped)") }
        // Cut, preprocessing, image size and resizing: resolved as `kiln features` resolves them.
        let input = try backboneOptions.resolve(backbone: backboneGraph, name: backboneName, cut: cutName, entering: graph,
                                                note: note)
        try graph.prependPreprocessing(input.preprocessing)
        // A head from `kiln train-head` records the backbone its features came from.
        try checkHeadBackbone(headPath: head) { try input.identity(ofFile: backbone) }

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
                    throw CLIError(.badInput, "\(labels): cannot read the labels file")
                }
                names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            let columns = frozen.outputs.first.flatMap { $0.shape.last }.map(Int.init) ?? -1
            guard names.count == columns else {
                throw CLIError(.badInput, "\((labels as NSString).lastPathComponent) has \(names.count) class names but the head \(headName) has \(columns) outputs")
            }
            frozen.metadata[.labelNames] = .strings(names)
        }
        frozen.metadata[.converterVersion] = .string(KilnVersion.string)
        frozen.metadata[.inputLayout] = .string("NHWC")
        frozen.metadata[.inputPreprocessing] = .string(input.recordedPreprocessing)
        frozen.metadata[.inputColor] = .string(input.preprocessing == .none && !input.alreadyFolded ? "as the source model" : "RGB 0-255")
        frozen.metadata[.inputHeight] = .int(Int64(input.height))
        frozen.metadata[.inputWidth] = .int(Int64(input.width))
        frozen.metadata[.inputResize] = .string(input.resize.rawValue)
        if let shorter = input.resizeShorter {
            frozen.metadata[.inputResizeShorter] = .int(Int64(shorter))
        }
        frozen.metadata[.fuseBackbone] = .string(backboneName)
        frozen.metadata[.fuseHead] = .string(headName)
        frozen.metadata[.fuseHeadParameters] = .int(Int64(headParameters))
        frozen.metadata[.fuseBackboneParameters] = .int(Int64(total - headParameters))
        try storage.write(frozen, to: output)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("wrote \(output): \(frozen.ops.count) ops, \(total) parameters (backbone \(total - headParameters), head \(headParameters)), \(bytes) bytes; cut at '\(cutName)', preprocessing \(input.preprocessing.rawValue)")
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
