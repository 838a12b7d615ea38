import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnImage
import KilnRuntime

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a bundle against its source: the unfused source graph on the reference kernels vs the bundle on the runtime.",
        discussion: """
            Runs the source (and head) as written — batch norms, padding and preprocessing unfolded — with the naive
            reference kernels, and the bundle with the fast runtime, on the same inputs (--input and seeded random
            ones), and prints the largest difference of each output relative to the reference's largest value.
            Exit status 1 when any exceeds --tolerance or a top-1 class differs.
            """)

    @Argument(help: "The bundle to check.")
    var bundle: String

    @Option(name: .long, help: "The source model the bundle was made from.")
    var against: String

    @Argument(help: "The head, when the bundle was fused.")
    var head: String?

    @Option(name: .long, help: "The cut layer used by `kiln fuse` (default: the global average pool).")
    var cut: String?

    @Option(name: .long, help: "Model config JSON for a weights-only source.")
    var config: String?

    @Option(name: .long, help: "Built-in topology of a weights-only source without --config: \(builtinTopologyNames) (default: the one its layers match).")
    var topology: String?

    @Option(name: .long, help: "An input tensor (.npy, NHWC) to check besides the random ones.")
    var input: String?

    @Option(name: .long, help: "How many seeded random inputs (batch 1 each).")
    var samples: Int = 2

    @Option(name: .long, help: "Size of the random inputs, HxW (default: the bundle's input.height/width, else 64x64).")
    var inputSize: String?

    @Option(name: .long, help: "Largest allowed max|Δ| / max|reference|.")
    var tolerance: Double = 1e-4

    func run() throws {
        let model = try Model(contentsOf: bundle)
        // Loading checks only the PACK entries it uses; here every one is read.
        if let layouts = model.bundle.packedLayouts {
            for e in layouts.entries where !e.verify() {
                throw CLIError(.badBundle, "\(bundle): section PACK: the entry for tensor '\(model.frozen.tensors[e.tensor].name)' (layout \(e.layout)) fails its checksum (damaged)")
            }
        }
        let frozen = model.frozen
        let bundleName = (bundle as NSString).lastPathComponent
        // A fused bundle is its backbone and its head: checked against the backbone alone, every output would differ.
        if head == nil, case .string(let fusedHead)? = frozen.metadata[.fuseHead] {
            throw CLIError(.badInput, "\(bundleName) was fused with a head (\(MetadataKey.fuseHead) \(fusedHead)): give it after the bundle, " +
                           "kiln verify \(bundle) HEAD --against \(against)")
        }
        var graph = try loadGraph(path: against, config: config, topology: topology)
        if let head {
            let headGraph = try loadGraph(path: head, config: nil)
            graph = try graph.attachingHead(headGraph, cut: try cut ?? graph.defaultCut(),
                                            backboneName: (against as NSString).lastPathComponent, headName: (head as NSString).lastPathComponent)
        }
        let sourceFolded: Bool = { if case .string(let p)? = graph.metadata[.inputPreprocessing], p != "none" { return true }; return false }()
        var preprocessing = Preprocessing.none
        if !sourceFolded, case .string(let p)? = frozen.metadata[.inputPreprocessing], let known = Preprocessing(rawValue: p) {
            preprocessing = known
        }
        try graph.prependPreprocessing(preprocessing)
        // The source's outputs, matched to the bundle's by port name (or position).
        for port in frozen.outputs where !graph.outputs.contains(where: { $0.port == port.name }) {
            if graph.node(named: port.name) != nil { try graph.addOutput(node: port.name) }
        }

        var size = (64, 64)
        if case .int(let h)? = frozen.metadata[.inputHeight], case .int(let w)? = frozen.metadata[.inputWidth] { size = (Int(h), Int(w)) }
        if let inputSize {
            guard let s = parseImageSize(inputSize) else { throw ValidationError("--input-size '\(inputSize)' is not HxW (each side 1...65536)") }
            size = s
        }
        let declared = frozen.inputs[0].shape
        let channels = declared.count == 4 && declared[3] > 0 ? Int(declared[3]) : 3
        let h = declared.count == 4 && declared[1] > 0 ? Int(declared[1]) : size.0
        let w = declared.count == 4 && declared[2] > 0 ? Int(declared[2]) : size.1
        let raw = preprocessing != .none || sourceFolded
        var inputs: [(String, Tensor)] = []
        if let input { inputs.append((input, try NPY.read(path: input))) }
        var state: UInt64 = 0x4B49_4C4E
        for i in 0..<samples {
            let count = h * w * channels
            let values = (0..<count).map { _ -> Float in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let u = Float(state >> 40) / Float(1 << 24)
                return raw ? (u * 255).rounded() : u * 256 - 128
            }
            inputs.append(("random \(i + 1) [1, \(h), \(w), \(channels)]", Tensor(shape: [1, h, w, channels], values: values)))
        }

        var worst = 0.0
        var allAgree = true
        let sourceName = (against as NSString).lastPathComponent
        for (label, x) in inputs {
            try checkInputShape(x.shape, name: label, bundle: bundleName, declared: declared, graph: graph)
            let reference = try graph.evaluateReference(input: x.values, shape: x.shape)
            let got = try model.run(x)
            // Every output of the bundle has its counterpart in the source, of the same shape: checked before any line
            // is printed, so a mismatch is one line (and exit 1), not a comparison of unrelated numbers.
            var pairs: [(port: PortRecord, want: (shape: [Int], values: [Float]), got: Tensor)] = []
            for (i, port) in frozen.outputs.enumerated() {
                let sourcePort = reference[port.name] != nil ? port.name : (i < graph.outputs.count ? graph.outputs[i].port : nil)
                guard let sourcePort, let want = reference[sourcePort] else {
                    throw CLIError(.badInput, "\(sourceName) has no output for \(bundleName)'s '\(port.name)' " +
                                   "(its outputs: \(graph.outputs.map(\.port).joined(separator: ", ")))")
                }
                guard want.shape == got[i].shape else {
                    let hint = head == nil ? "" : " (is it the head the bundle was fused with?)"
                    throw CLIError(.badInput, "\(bundleName)'s output '\(port.name)' is \(got[i].shape) but \(sourceName)'s '\(sourcePort)' " +
                                   "is \(want.shape) for \(label): not the model the bundle was made from\(hint)")
                }
                pairs.append((port, want, got[i]))
            }
            for (port, want, result) in pairs {
                let scale = Double(want.values.map(abs).max() ?? 0)
                let diff = Double(zip(want.values, result.values).map { abs($0 - $1) }.max() ?? .infinity)
                let rel = scale > 0 ? diff / scale : diff
                worst = max(worst, rel)
                var agreement = ""
                if want.shape.count == 2, let c = want.shape.last, c > 1 {
                    let rows = want.shape[0]
                    func argmax(_ v: [Float], _ r: Int) -> Int {
                        let row = v[r * c..<(r + 1) * c]
                        return row.indices.max { row[$0] < row[$1] } ?? 0
                    }
                    let same = (0..<rows).filter { argmax(want.values, $0) == argmax(result.values, $0) }.count
                    allAgree = allAgree && same == rows
                    agreement = ", top-1 \(same)/\(rows)"
                }
                print(String(format: "%@ · %@: max|Δ| = %.3g, max|Δ|/max|ref| = %.3g%@", label, port.name, diff, rel, agreement))
            }
        }
        print(String(format: "largest relative difference %.3g (tolerance %.1g)", worst, tolerance))
        if worst > tolerance || !allAgree { throw ExitCode(1) }
    }

    /// An input's shape (`name`: the --input file or the random input) against the bundle's input (rank, every fixed
    /// dimension) and the source's declared input: the reference kernels trust the shapes they are given.
    func checkInputShape(_ shape: [Int], name: String, bundle: String, declared: [Int64], graph: Graph) throws {
        let fits = shape.count == declared.count && zip(shape, declared).allSatisfy { $1 < 0 || Int64($0) == $1 } && !shape.contains(0)
        guard fits else {
            throw CLIError(.badInput, "\(name) has shape \(shape) but \(bundle) takes [\(declared.map { $0 < 0 ? "N" : String($0) }.joined(separator: ", "))]")
        }
        if let first = graph.nodes.first, case .input(let sourceShape) = first.op {
            let agrees = sourceShape.count == shape.count && zip(shape, sourceShape).allSatisfy { $1 == nil || $1 == $0 }
            guard agrees else {
                throw CLIError(.badInput, "\(name) has shape \(shape) but \((against as NSString).lastPathComponent) takes " +
                               "[\(sourceShape.map { $0.map(String.init) ?? "N" }.joined(separator: ", "))]")
            }
        }
    }
}
