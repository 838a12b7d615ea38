import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnImage
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

/// Image resizing recorded in a bundle for `kiln-run` on image files (`input.resize`): one of KilnImage's
/// `InputResize.names`, which says exactly what each does (the names are defined there, once).
struct ResizeMethod: RawRepresentable, ExpressibleByArgument, Equatable {
    let rawValue: String

    init?(rawValue: String) {
        guard InputResize.names.contains(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    init?(argument: String) { self.init(rawValue: argument) }

    private init(known: String) { rawValue = known }

    static let kerasNearest = ResizeMethod(known: "keras-nearest")
    static let kerasBilinear = ResizeMethod(known: "keras-bilinear")
    static let torchvision = ResizeMethod(known: "torchvision")

    static var allValueStrings: [String] { InputResize.names }
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
            padding with the per-channel mean, so borders stay exact. Without HEAD, BACKBONE is a whole classifier
            made into an image-taking bundle as it is (as `kiln convert` with the image options does).
            """)

    @Argument(help: "The backbone model (.h5, .keras, .weights.h5, .onnx, .kiln).")
    var backbone: String

    @Argument(help: "The trained head (.h5, .keras); without it the backbone is a whole classifier, kept whole.")
    var head: String?

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
        try BundleWriter.checkWritable(output)     // before anything is loaded
        let backboneName = (backbone as NSString).lastPathComponent
        let backboneGraph = try loadGraph(path: backbone, config: backboneConfig, topology: backboneOptions.topology)
        // Without a head: the whole model, no cut (head-optional path).
        let headGraph = try head.map { try loadGraph(path: $0, config: headConfig) }
        let headName = head.map { ($0 as NSString).lastPathComponent } ?? backboneName
        if let head { try refuseBaselineHead(headPath: head) }
        // A head from `kiln train-head` records its backbone settings and class names: adopted where not given.
        var backboneOptions = self.backboneOptions
        var recordedLabels: [String]? = nil
        if let head { recordedLabels = try adoptHeadRecords(headPath: head, backbone: backboneGraph, options: &backboneOptions, note: note) }
        if head == nil, backboneOptions.cut != nil { throw ValidationError("--cut needs a HEAD to join at the cut") }
        let cutName = head == nil ? "" : try backboneOptions.cutName(in: backboneGraph)
        var graph = try headGraph.map { try backboneGraph.attachingHead($0, cut: cutName, backboneName: backboneName, headName: headName) }
            ?? backboneGraph
        // Images arrive NHWC: an NCHW (ONNX) backbone's leading transpose goes.
        if graph.takingNHWCInput() { note("input: \(backboneName) takes NCHW; the fused bundle takes NHWC (its transpose is dropped)") }
        // Cut, preprocessing, image size and resizing: resolved as `kiln features` resolves them.
        let input = try backboneOptions.resolve(backbone: backboneGraph, name: backboneName, cut: cutName, entering: graph,
                                                note: note)
        try graph.prependPreprocessing(input.preprocessing)
        // A head from `kiln train-head` records the backbone its features came from.
        if let head { try checkHeadBackbone(headPath: head, backbonePath: backbone) { input.identity(of: backboneGraph, path: backbone) } }

        let headParameters = headGraph?.parameterCount ?? 0
        try graph.optimizeForInference()
        var frozen = try graph.lower()
        let total = frozen.tensors.reduce(0) { $0 + $1.elementCount }
        frozen.recordClassifierOutputKind()

        // Labels: one per output column of the first output (two for a binary unit): --labels, else the head's own.
        var named: (names: [String], from: String)?
        if let labels {
            named = (try readLabels(labels), (labels as NSString).lastPathComponent)
        } else if let recordedLabels {
            named = (recordedLabels, "\(headName)'s recorded class names")
            note("labels: the \(recordedLabels.count) class names \(headName) records")
        }
        if let (names, from) = named {
            let columns = frozen.outputs.first.flatMap { $0.shape.last }.map(Int.init) ?? -1
            let kind = frozen.classifierOutputKind
            guard names.count == kind?.classCount(columns: columns) ?? columns else {
                let binary = kind == .binaryLogit || kind == .binaryProbability
                throw CLIError(.badInput, "\(from) has \(names.count) class names but \(head == nil ? "" : "the head ")\(headName) " +
                               (binary ? "is a binary classifier (one \(kind?.rawValue ?? "") unit): give 2 names, the first for output 0"
                                       : "has \(columns) outputs"))
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
        if head != nil {
            frozen.metadata[.fuseHead] = .string(headName)
            frozen.metadata[.fuseHeadParameters] = .int(Int64(headParameters))
            frozen.metadata[.fuseBackboneParameters] = .int(Int64(total - headParameters))
        }
        try storage.write(frozen, to: output)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("wrote \(output): \(frozen.ops.count) ops, \(total) parameters (backbone \(total - headParameters), head \(headParameters)), \(bytes) bytes; cut at '\(cutName)', preprocessing \(input.preprocessing.rawValue)")
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("kiln fuse: \(text)\n".utf8))
    }

    /// `--labels`: a file of class names, one per line (blank lines skipped), or `imagenet`.
    func readLabels(_ labels: String) throws -> [String] {
        if labels == "imagenet" { return ImageNetClasses.all.map(\.name) }
        guard let text = try? String(contentsOfFile: labels, encoding: .utf8) else {
            throw CLIError(.badInput, "\(labels): cannot read the labels file")
        }
        return text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
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
