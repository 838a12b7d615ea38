import ArgumentParser
import Foundation
import KilnFormat
import KilnGraph
import KilnImage
import KilnKeras

/// The backbone options `kiln features` and `kiln fuse` share. They resolve in one place (`resolve`), so that the
/// features a head is trained on come through exactly the cut, preprocessing, image size and resizing the fused
/// bundle applies, and the identity `kiln features` records is the one `kiln fuse` computes.
struct BackboneOptions: ParsableArguments {
    @Option(name: .long, help: "The backbone layer to cut at: its output is what the head takes (default: the last global average pool).")
    var cut: String?

    @Option(name: .long, help: "Built-in topology of a weights-only backbone without --config: \(builtinTopologyNames) (default: the one its layers match).")
    var topology: String?

    @Option(name: .long, help: "Preprocessing the backbone was trained with, folded in: caffe, torch, tf or none (default: what the source implies).")
    var preprocess: Preprocessing?

    @Option(name: .long, help: "Image size the model takes, HxW (default: the size the backbone records, else its input's fixed size, else 224x224).")
    var inputSize: String?

    @Option(name: .long, help: "How images are resized: keras-nearest (load_img's default), keras-bilinear, torchvision, tf-bilinear (image_dataset_from_directory's default), tf-nearest, tf-bicubic, tf-area, each tf-* also with -crop (crop_to_aspect_ratio=True) (default: what the backbone records; torchvision with --preprocess torch).")
    var resize: ResizeMethod?

    /// The layer to cut at: `--cut`, else the backbone's last global average pool (whether it exists is for the
    /// cutting to say).
    func cutName(in backbone: Graph) throws -> String {
        try cut ?? backbone.defaultCut()
    }

    /// Resolves the options for `backbone` (as loaded; `name` for messages), cut at `cut` (`cutName(in:)`), and
    /// `graph`, the graph images will enter (the cut backbone, or the fused model), whose input must already be
    /// NHWC (`takingNHWCInput`). Defaults are said through `note`.
    func resolve(backbone: Graph, name: String, cut: String, entering graph: Graph, note: (String) -> Void) throws -> BackboneInput {
        func metaString(_ key: MetadataKey) -> String? {
            if case .string(let s)? = backbone.metadata[key] { return s } else { return nil }
        }

        // Preprocessing: explicit, or implied by the source; none where the backbone has it folded in already (a
        // .kiln that records it) or applies it itself (a Keras model whose Rescaling, Normalization or preprocess_input
        // on the symbolic tensor the importer recognised: `caffe`, `tf`, `torch` or `model`).
        let foldedName = metaString(.inputPreprocessing).flatMap { $0.hasPrefix("none") || $0.isEmpty ? nil : $0 }
        let chosen: Preprocessing
        if let preprocess {
            if let foldedName, preprocess != .none, preprocess.rawValue != foldedName {
                throw CLIError(.badInput, "\(name) preprocesses its input itself (\(foldedName == "model" ? "its own Rescaling/Normalization" : foldedName)); --preprocess \(preprocess.rawValue) would apply another: leave --preprocess out (or use none)")
            }
            chosen = foldedName == nil ? preprocess : .none
        } else if let foldedName {
            chosen = .none
            note(metaString(.converterVersion) == nil
                 ? "preprocessing: \(foldedName == "model" ? "the model's own Rescaling/Normalization" : "\(foldedName), in the model itself") (folded into its first layer); images go in as RGB 0-255"
                 : "preprocessing: already folded into \(name)")
        } else if isPyTorchExport(backbone) {
            // torchvision models take RGB / 255 normalised by ImageNet's mean and std, resized as torchvision does.
            chosen = .torch
            let resizeNote = resize == nil && metaString(.inputResize) == nil ? " --resize torchvision" : ""
            note("preprocessing: --preprocess torch\(resizeNote) (\(name) is a PyTorch export; torchvision models take normalised NCHW input); override with --preprocess and --resize")
        } else if let builtin = BuiltinTopology.recognizing(backbone) {
            chosen = builtin.preprocessing
            note("preprocessing: \(chosen.rawValue) (\(builtin.summary)'s preprocess_input); override with --preprocess")
        } else {
            chosen = .none
            note("preprocessing: none (images go in as 0-255 RGB, as \(name)'s first layer takes them); set --preprocess to fold one in")
        }

        // Image size: explicit, recorded by the backbone (a .kiln), the input's fixed size, or 224x224.
        let inputShape: SymbolicShape = {
            if let n = graph.nodes.first, case .input(let s) = n.op { return s }
            return []
        }()
        let fixed: (Int, Int)? = inputShape.count == 4 ? inputShape[1].flatMap { h in inputShape[2].map { (h, $0) } } : nil
        let size: (Int, Int)
        if let inputSize {
            guard let s = parseImageSize(inputSize) else { throw ValidationError("--input-size '\(inputSize)' is not HxW (each side 1...65536)") }
            size = s
        } else if case .int(let h)? = backbone.metadata[.inputHeight], case .int(let w)? = backbone.metadata[.inputWidth] {
            size = (Int(h), Int(w))
        } else if let fixed {
            size = fixed
        } else {
            size = (224, 224)
            note("input size: 224x224 (the input takes any size; set --input-size)")
        }
        if let fixed, fixed != size {
            throw CLIError(.badInput, "--input-size \(size.0)x\(size.1) but \(name) takes \(fixed.0)x\(fixed.1)")
        }
        let method = resize ?? metaString(.inputResize).flatMap(ResizeMethod.init(rawValue:))
            ?? (chosen == .torch ? .torchvision : .kerasNearest)
        return BackboneInput(cut: cut, preprocessing: chosen,
                             recordedPreprocessing: foldedName ?? chosen.rawValue, alreadyFolded: foldedName != nil,
                             height: size.0, width: size.1, resize: method)
    }
}

/// True for an ONNX file written by PyTorch (`torch.onnx.export` records producer "pytorch").
func isPyTorchExport(_ graph: Graph) -> Bool {
    guard case .string("onnx")? = graph.metadata[.sourceFormat], case .string(let producer)? = graph.metadata[.sourceProducer] else {
        return false
    }
    return producer.lowercased().hasPrefix("pytorch")
}

/// What `BackboneOptions` resolve to for one backbone.
struct BackboneInput {
    var cut: String
    /// Folded in front of the graph: none where the backbone has its own folded in already.
    var preprocessing: Preprocessing
    /// The preprocessing images get, as recorded: the folded-in one's name, else `preprocessing`'s.
    var recordedPreprocessing: String
    var alreadyFolded: Bool
    var height: Int, width: Int
    var resize: ResizeMethod

    /// The shorter side torchvision-style resizing scales to first (256 for 224), else nil.
    var resizeShorter: Int? { resize == .torchvision ? Int((Double(min(height, width)) / 0.875).rounded()) : nil }

}

/// The built-in topologies' names, for help texts.
let builtinTopologyNames = BuiltinTopology.all.map(\.name).joined(separator: ", ")
