import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnKeras
import KilnKernels
import KilnRuntime

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a Keras model (.h5, .keras, .weights.h5, applications weights) into a .kiln bundle.",
        discussion: """
            Batch norms are folded into their convolutions, dropout removed, zero padding folded, ReLUs and
            residual adds fused. The bundle is written atomically: OUT holds the old file or the new one.
            A weights-only file without --config is read with a built-in topology: --topology, else the one
            whose layer names the file holds (today the Keras ResNet-50; without the classifier it ends at
            avg_pool, as ResNet50(include_top=False, pooling="avg")).
            With --labels, --resize, --input-size or --preprocess, or when the model preprocesses its input itself
            (Rescaling, Normalization, preprocess_input on the symbolic tensor), the bundle takes images: it records
            the labels, resizing and input size as `kiln fuse` does, the model's own preprocessing is folded into its
            first convolution (the bundle takes raw RGB 0-255), and a --preprocess that would add another is refused.
            """)

    @Argument(help: "The source model file.")
    var source: String

    @Option(name: .shortAndLong, help: "The bundle to write.")
    var output: String

    @Option(name: .long, help: "Model config JSON (model.to_json() or config.json) for a weights-only file.")
    var config: String?

    @Option(name: .customLong("extra-output"), help: "Also expose this layer's output (repeatable), e.g. avg_pool.")
    var extraOutputs: [String] = []

    @OptionGroup var image: BackboneOptions

    @Option(name: .long, help: "Class names, one per line (two for a one-unit binary head, the first for output 0), or 'imagenet'.")
    var labels: String?

    @OptionGroup var storage: StorageOptions

    func run() throws {
        try BundleWriter.checkWritable(output)     // before the import, not after it
        let name = (source as NSString).lastPathComponent
        if image.cut != nil { throw ValidationError("--cut applies to kiln fuse and kiln features; convert keeps the whole model") }
        var graph = try importSource(path: source, config: config, topology: image.topology)
        for name in extraOutputs {
            try graph.addOutput(node: name)
        }
        let ownPreprocessing = graph.metadata[.inputPreprocessing] != nil
        let takesImages = ownPreprocessing || labels != nil || image.preprocess != nil || image.resize != nil || image.inputSize != nil
        var input: BackboneInput?
        if takesImages {
            if graph.takingNHWCInput() { note("input: \(name) takes NCHW; the bundle takes NHWC images (its transpose is dropped)") }
            let resolved = try image.resolve(backbone: graph, name: name, cut: "", entering: graph, note: note)
            try graph.prependPreprocessing(resolved.preprocessing)
            input = resolved
        }
        var frozen: FrozenModel
        do {
            frozen = try optimizedAndLowered(&graph)
        } catch {
            throw CLIError(.unsupported, "\(name): \(error)")  // a graph error names the layer; this names the file
        }
        do {
            try Model.checkRunnable(frozen)
        } catch {
            throw CLIError(error.kind, "\(name): kiln-run could not run this model, so no bundle is written: \(error.message)")
        }
        frozen.metadata[.converterVersion] = .string(KilnVersion.string)
        frozen.recordClassifierOutputKind()
        if let input {
            if let labels { frozen.metadata[.labelNames] = .strings(try classNames(labels, for: frozen, model: name)) }
            frozen.metadata[.inputLayout] = .string("NHWC")
            frozen.metadata[.inputPreprocessing] = .string(input.recordedPreprocessing)
            frozen.metadata[.inputColor] = .string(input.preprocessing == .none && !input.alreadyFolded ? "as the source model" : "RGB 0-255")
            frozen.metadata[.inputHeight] = .int(Int64(input.height))
            frozen.metadata[.inputWidth] = .int(Int64(input.width))
            frozen.metadata[.inputResize] = .string(input.resize.rawValue)
            if let shorter = input.resizeShorter { frozen.metadata[.inputResizeShorter] = .int(Int64(shorter)) }
        } else {
            if frozen.metadata[.inputLayout] == nil { frozen.metadata[.inputLayout] = .string("NHWC") }  // ONNX importers record NCHW
            frozen.metadata[.inputPreprocessing] = .string("none: the input is what the source model's first layer takes")
        }
        try storage.write(frozen, to: output)
        let params = frozen.tensors.reduce(0) { $0 + $1.elementCount }
        let size = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print("wrote \(output): \(frozen.ops.count) ops, \(params) parameters, \(size) bytes"
              + (input.map { ", takes \($0.height)x\($0.width) images (\($0.resize.rawValue), preprocessing \($0.recordedPreprocessing))" } ?? ""))
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("kiln convert: \(text)\n".utf8))
    }
}

/// Runs the inference passes and lowers to the bundle's op set.
func optimizedAndLowered(_ graph: inout Graph) throws(GraphError) -> FrozenModel {
    try graph.optimizeForInference()
    return try graph.lower()
}

/// The class names of `--labels` (a file, one per line, or `imagenet`) for the first output of `model`: one per output
/// column, or two for a single-unit (binary) head, the first for output 0.
func classNames(_ labels: String, for model: FrozenModel, model name: String) throws -> [String] {
    let names: [String]
    if labels == "imagenet" {
        names = ImageNetClasses.all.map(\.name)
    } else {
        guard let text = try? String(contentsOfFile: labels, encoding: .utf8) else {
            throw CLIError(.badInput, "\(labels): cannot read the labels file")
        }
        names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
    let columns = model.outputs.first.flatMap { $0.shape.last }.map(Int.init) ?? -1
    guard names.count == columns || (columns == 1 && names.count == 2) else {
        throw CLIError(.badInput, "\((labels as NSString).lastPathComponent) has \(names.count) class names but \(name) has \(columns) outputs"
                       + (columns == 1 ? " (a one-unit binary head takes two names)" : ""))
    }
    return names
}

/// `--weights` and `--compress`, shared by convert and fuse.
struct StorageOptions: ParsableArguments {
    @Option(name: .long, help: "Weight storage: f32, f16, bf16 (round to nearest even) or int8 (symmetric, per output channel).")
    var weights: WeightStorage = .f32

    @Option(name: .long, help: "Compress the weights section: zstd or zstd:LEVEL (1-22).", transform: { text in
        guard let c = Compression(argument: text) else { throw ValidationError("--compress '\(text)' is not zstd or zstd:LEVEL (1-22)") }
        return c
    })
    var compress: Compression?

    @Flag(name: .long, help: "Also store the convolution weights as this machine's kernels pack them (a PACK section: faster start, about 2.3x the file).")
    var pack = false

    var compression: Compression? { compress }

    /// Writes `model` as these options say (atomically), noting on stderr what `--pack` could not do.
    func write(_ model: FrozenModel, to path: String) throws {
        if let note = try writeBundle(model.storingWeights(as: weights), to: path, compression: compression, pack: pack) {
            FileHandle.standardError.write(Data("kiln: \(note)\n".utf8))
        }
    }
}

extension WeightStorage: ExpressibleByArgument {}
