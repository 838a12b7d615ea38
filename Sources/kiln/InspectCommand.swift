import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnKeras
import KilnKernels
import KilnRuntime

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
