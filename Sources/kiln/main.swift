import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnKeras
import KilnKernels
import KilnRuntime

/// The Kiln toolchain: convert models into `.kiln` bundles and look inside them.
struct Kiln: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Turn a trained image classifier into one frozen .kiln file.",
        discussion: "Exit status: 0 success, 1 bad input (the message names the file, layer and tensor), 64 usage error.",
        version: KilnVersion.string,
        subcommands: [Convert.self, Fuse.self, Inspect.self, Verify.self, Compare.self, Features.self, TrainHead.self])
}

enum KilnVersion {
    static let string = "0.1.0"
}

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

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a bundle's layers, shapes, parameters, FLOPs, inputs, outputs, metadata and sections.")

    @Argument(help: "The .kiln bundle.")
    var bundle: String

    @Option(name: .long, help: "Input shape for shapes and FLOPs, e.g. 1,224,224,3 (default: the declared shape, 224 for free sizes).")
    var inputShape: String?

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        let model = try Model(contentsOf: bundle)
        let frozen = model.frozen
        let port = frozen.inputs[0]
        var shape: [Int]
        if let inputShape {
            let parts = inputShape.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.allSatisfy({ $0 != nil }) else { throw ValidationError("--input-shape '\(inputShape)' is not a list of integers") }
            shape = parts.compactMap { $0 }
        } else {
            // Free sizes: batch 1, 224 for H and W, 3 channels where the layout puts them (NCHW bundles from ONNX).
            let nchw: Bool = { if case .string("NCHW")? = frozen.metadata[.inputLayout] { return true } else { return false } }()
            let channelAxis = port.shape.count == 4 ? (nchw ? 1 : 3) : -1
            shape = port.shape.enumerated().map { i, d in d > 0 ? Int(d) : (i == 0 ? 1 : (i == channelAxis ? 3 : 224)) }
        }
        let summary = try ModelSummary(model: model, inputShape: shape)
        if json {
            try printJSON(model: model, summary: summary)
            return
        }
        print("Bundle \(bundle): version \(BundleLayout.versionMajor).\(model.bundle.versionMinor), \(model.bundle.fileSize) bytes")
        print("Input:  \(port.name) \(describeShape(port.shape))   (shapes below for \(shape))")
        for o in frozen.outputs { print("Output: \(o.name) \(describeShape(o.shape))") }
        print("")
        let header = ["Layer", "Op", "Output shape", "Params", "MFLOPs", "Detail"]
        var table: [[String]] = [header]
        for r in summary.rows {
            table.append([r.name, r.op, "\(r.outputShape)", "\(r.parameters)", String(format: "%.1f", Double(r.flops) / 1e6), r.detail])
        }
        let widths = (0..<header.count).map { c in table.map { $0[c].count }.max() ?? 0 }
        for (i, row) in table.enumerated() {
            print(row.enumerated().map { c, cell in cell.padding(toLength: widths[c], withPad: " ", startingAt: 0) }.joined(separator: "  "))
            if i == 0 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
        print("")
        let opCounts = Dictionary(grouping: frozen.ops, by: { "\($0.opcode)" }).mapValues(\.count)
        print("Ops: \(frozen.ops.count) (" + opCounts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")")
        print("Total parameters: \(summary.totalParameters)")
        if case .int(let b)? = frozen.metadata[.fuseBackboneParameters], case .int(let h)? = frozen.metadata[.fuseHeadParameters] {
            print("  backbone \(b), head \(h)")
        }
        if case .string(let p)? = frozen.metadata[.inputPreprocessing] {
            var resize = ""
            if case .string(let r)? = frozen.metadata[.inputResize], case .int(let h)? = frozen.metadata[.inputHeight],
               case .int(let w)? = frozen.metadata[.inputWidth] {
                resize = ", images resized \(r) to \(h)x\(w)"
            }
            print("Preprocessing: \(p)\(resize)")
        }
        if case .strings(let labels)? = frozen.metadata[.labelNames] {
            print("Labels: \(labels.count) (\(labels.prefix(5).joined(separator: ", "))\(labels.count > 5 ? ", …" : ""))")
        }
        print(String(format: "FLOPs: %.3f G for input %@", Double(summary.totalFlops) / 1e9, "\(shape)"))
        print("")
        print("Metadata:")
        for key in frozen.metadata.keys.sorted() {
            print("  \(key) = \(describe(frozen.metadata[key]!))")
        }
        print("")
        print("Sections:")
        for s in model.bundle.sections {
            var line = "  \(s.kind)  offset \(s.offset)  size \(s.size)  xxh64 \(String(s.checksum, radix: 16))"
            if s.compressed {
                line += String(format: "  zstd: %d bytes uncompressed, ratio %.3f", s.uncompressedSize, Double(s.size) / Double(max(s.uncompressedSize, 1)))
            }
            print(line)
        }
        let types = Dictionary(grouping: frozen.tensors, by: { "\($0.elementType)" })
        print("Tensors: " + types.sorted { $0.key < $1.key }.map { key, list in
            "\(list.count) \(key) (\(list.reduce(0) { $0 + $1.byteCount }) bytes)"
        }.joined(separator: ", "))
    }

    func printJSON(model: Model, summary: ModelSummary) throws {
        let frozen = model.frozen
        var metadata: [String: Any] = [:]
        for (k, v) in frozen.metadata {
            switch v {
            case .int(let x): metadata[k] = x
            case .float(let x): metadata[k] = x
            case .string(let x): metadata[k] = x
            case .strings(let x): metadata[k] = x
            case .floats(let x): metadata[k] = x
            }
        }
        let object: [String: Any] = [
            "file": bundle,
            "version": "\(BundleLayout.versionMajor).\(model.bundle.versionMinor)",
            "size": model.bundle.fileSize,
            "inputs": frozen.inputs.map { ["name": $0.name, "shape": $0.shape] },
            "outputs": frozen.outputs.map { ["name": $0.name, "shape": $0.shape] },
            "input_shape_for_counts": summary.inputShape,
            "layers": summary.rows.map { ["name": $0.name, "op": $0.op, "output_shape": $0.outputShape,
                                          "parameters": $0.parameters, "flops": $0.flops, "detail": $0.detail] },
            "ops": Dictionary(grouping: frozen.ops, by: { "\($0.opcode)" }).mapValues(\.count),
            "total_parameters": summary.totalParameters,
            "total_flops": summary.totalFlops,
            "metadata": metadata,
            "sections": model.bundle.sections.map { ["kind": "\($0.kind)", "offset": $0.offset, "size": $0.size,
                                                     "uncompressed_size": $0.uncompressedSize, "compressed": $0.compressed,
                                                     "xxh64": String($0.checksum, radix: 16)] },
            "tensor_types": Dictionary(grouping: frozen.tensors, by: { "\($0.elementType)" }).mapValues(\.count),
        ]
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }

    func describeShape(_ s: [Int64]) -> String {
        "[" + s.map { $0 < 0 ? "?" : String($0) }.joined(separator: ", ") + "]"
    }

    func describe(_ v: MetadataValue) -> String {
        switch v {
        case .int(let x): return "\(x)"
        case .float(let x): return "\(x)"
        case .string(let x): return "\"\(x)\""
        case .strings(let x): return x.count > 6 ? "[\(x.prefix(5).joined(separator: ", ")), … (\(x.count))]" : "\(x)"
        case .floats(let x): return "\(x)"
        }
    }
}

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two .npy tensors: largest difference relative to the reference, and top-1 agreement.",
        discussion: "Exit status 0 when max|a−b| / max|a| ≤ --tolerance and (for rank-2 outputs) every row's top-1 agrees, else 1.")

    @Argument(help: "The reference tensor (.npy), e.g. the source framework's output.")
    var reference: String

    @Argument(help: "The tensor to check (.npy).")
    var candidate: String

    @Option(name: .long, help: "Largest allowed max|Δ| / max|reference|.")
    var tolerance: Double = 1e-4

    func run() throws {
        let a = try NPY.read(path: reference)
        let b = try NPY.read(path: candidate)
        guard a.shape == b.shape else {
            throw CLIError(.badInput, "shapes differ: \(a.shape) vs \(b.shape)")
        }
        let scale = Double(a.values.map(abs).max() ?? 0)
        let maxDiff = Double(zip(a.values, b.values).map { abs($0 - $1) }.max() ?? 0)
        let relative = scale > 0 ? maxDiff / scale : maxDiff
        var agree = true
        var top1 = ""
        if a.shape.count == 2, let columns = a.shape.last, columns > 1 {
            func argmax(_ t: Tensor, _ r: Int) -> Int {
                let row = t.values[r * columns..<(r + 1) * columns]
                return (row.indices.max { row[$0] < row[$1] } ?? r * columns) - r * columns
            }
            let rows = a.shape[0]
            let same = (0..<rows).filter { argmax(a, $0) == argmax(b, $0) }.count
            agree = same == rows
            top1 = ", top-1 agrees on \(same)/\(rows)"
        }
        print(String(format: "max|Δ| = %.3g, max|Δ|/max|ref| = %.3g (tolerance %.1g)", maxDiff, relative, tolerance) + top1)
        if relative > tolerance || !agree { throw ExitCode(1) }
    }
}

Kiln.main()
