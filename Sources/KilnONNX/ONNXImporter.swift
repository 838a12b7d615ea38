import Foundation
import KilnFormat
import KilnGraph

/// Reads ONNX models (`.onnx`, protobuf) into the conversion IR.
///
/// NCHW tensors become NHWC in the IR: each tensor remembers how the IR holds it, and a transpose is
/// inserted only where an op needs another layout (the model's NCHW input, a Flatten of a feature map).
/// Per-channel Mul/Add/Sub/Div by constants (how tf2onnx writes a Keras BatchNormalization) and ONNX
/// BatchNormalization become IR batch norms that the passes fold into the convolution before them.
public enum ONNXImporter {
    /// The standard operator set versions the importer reads (attributes are read per version).
    public static let supportedOpsets = 7...28

    /// True when the file starts like a serialized ONNX ModelProto (not HDF5, zip, JSON or text).
    public static func looksLikeONNX(path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 16), !head.isEmpty else { return false }
        return head.withUnsafeBytes { ProtobufWire.looksLikeModel($0) }
    }

    /// Imports the model at `path`; external data is read from files beside it.
    public static func importModel(path: String) throws(ONNXImportError) -> Graph {
        let url = URL(fileURLWithPath: path)
        let display = url.lastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ONNXImportError(file: display, "cannot open: no such file")
        }
        guard !isDirectory.boolValue else { throw ONNXImportError(file: display, "is a directory, not a model file") }
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw ONNXImportError(file: display, "cannot read: \(error.localizedDescription)")
        }
        return try importModel(data: data, fileName: display, folder: url.deletingLastPathComponent())
    }

    /// Imports a serialized model. `folder` is where external data files are looked up (nil: refused).
    public static func importModel(data: Data, fileName: String, folder: URL?) throws(ONNXImportError) -> Graph {
        let parsed = data.withUnsafeBytes { bytes -> (ONNXModelProto?, String?) in
            if let model = ONNXModelProto.unpack(bytes) { return (model, nil) }
            return (nil, ProtobufWire.diagnoseModel(bytes))
        }
        guard let model = parsed.0 else {
            let detail = parsed.1.map { ": \($0)" } ?? " (a field has the wrong type or the data is damaged)"
            throw ONNXImportError(file: fileName, "not a valid ONNX model, truncated or damaged protobuf\(detail)")
        }
        return try ONNXGraphBuilder(model: model, file: fileName, folder: folder).build()
    }

    /// Reads a serialized TensorProto file (as in ONNX's test data, `output_0.pb`): its shape and values
    /// as float32.
    public static func readTensor(path: String) throws(ONNXImportError) -> (shape: [Int], values: [Float]) {
        let url = URL(fileURLWithPath: path)
        let display = url.lastPathComponent
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ONNXImportError(file: display, "cannot read the file")
        }
        guard let proto = data.withUnsafeBytes({ ONNXTensorProto.unpack($0) }) else {
            throw ONNXImportError(file: display, "not a valid TensorProto")
        }
        let tensor = try TensorDecoder(file: display, folder: url.deletingLastPathComponent()).decode(proto)
        guard let values = tensor.floats else { throw ONNXImportError(file: display, "does not hold numbers") }
        return (tensor.shape, values)
    }
}

/// One model's conversion: checks, liveness, the node loop, outputs, clean-up and metadata.
struct ONNXGraphBuilder {
    let model: ONNXModelProto
    let file: String
    let folder: URL?

    func fail(_ message: String, tensor: String? = nil) -> ONNXImportError {
        ONNXImportError(file: file, tensor: tensor, message)
    }

    func build() throws(ONNXImportError) -> Graph {
        guard let graph = model.graph else { throw fail("the model has no graph") }
        let opset = try standardOpset()
        guard !graph.nodes.isEmpty || !graph.outputs.isEmpty else { throw fail("the graph is empty") }

        var initializers: [String: ONNXTensorProto] = [:]
        for t in graph.initializers {
            guard !t.name.isEmpty else { throw fail("an initializer has no name") }
            guard initializers[t.name] == nil else { throw fail("two initializers are named '\(t.name)'", tensor: t.name) }
            initializers[t.name] = t
        }
        var converter = Converter(file: file, opset: opset, decoder: TensorDecoder(file: file, folder: folder),
                                  initializers: initializers)
        let sparse = Set(graph.sparseInitializerNames)

        // Liveness from the outputs back: nodes that no output needs are not converted (dead branches,
        // training outputs), so an unsupported op there does not stop the import.
        guard !graph.outputs.isEmpty else { throw fail("the graph has no outputs") }
        var live = Set(graph.outputs.map(\.name))
        var liveNodes = Set<Int>()
        for (i, n) in graph.nodes.enumerated().reversed() where n.outputs.contains(where: live.contains) {
            liveNodes.insert(i)
            live.formUnion(n.inputs.filter { !$0.isEmpty })
        }
        for (i, n) in graph.nodes.enumerated() where liveNodes.contains(i) {
            for name in n.inputs where !name.isEmpty { converter.readers[name, default: 0] += 1 }
        }
        for o in graph.outputs { converter.readers[o.name, default: 0] += 1 }

        // Graph inputs: an input with an initializer is a weight (older exporters list weights as inputs).
        for input in graph.inputs where initializers[input.name] == nil && live.contains(input.name) {
            try addInput(input, to: &converter)
        }

        var produced = Set(initializers.keys).union(graph.inputs.map(\.name))
        let producedLater = Set(graph.nodes.flatMap(\.outputs))
        for (i, n) in graph.nodes.enumerated() where liveNodes.contains(i) {
            let context = NodeContext(index: i, node: n, opset: opset)
            converter.current = context
            for (k, name) in n.inputs.enumerated() where !name.isEmpty && !produced.contains(name) {
                if sparse.contains(name) { throw converter.fail("input \(k) '\(name)' is a sparse initializer, which is not supported", tensor: name) }
                if producedLater.contains(name) {
                    throw converter.fail("input \(k) '\(name)' is computed by a later node (nodes must be in topological order)", tensor: name)
                }
                throw converter.fail("input \(k) '\(name)' is missing: no initializer, graph input or node output has that name", tensor: name)
            }
            let outs = try converter.convert(n)
            for (k, name) in n.outputs.enumerated() where !name.isEmpty {
                produced.insert(name)
                if k < outs.count, let v = outs[k] { converter.values[name] = v }
            }
        }
        converter.current = nil

        var outputs: [GraphOutput] = []
        for o in graph.outputs {
            guard let v = try converter.value(o.name) else { throw fail("graph output '\(o.name)' is not computed by any node", tensor: o.name) }
            guard case .runtime(let t) = v else {
                throw fail("graph output '\(o.name)' is a constant; a bundle's outputs must be computed from its input", tensor: o.name)
            }
            // Outputs keep ONNX's element order and shape (an NCHW feature map is transposed back; a pooled
            // [N, C, 1, 1] is reshaped from the IR's [N, C]).
            let node = try converter.materialized(t, for: "graph output '\(o.name)'").node
            outputs.append(GraphOutput(port: o.name, node: node))
        }

        var result = Graph(nodes: converter.nodes, outputs: outputs, metadata: metadata(opset: opset, graph: graph))
        do {
            try result.resolvePerChannelAffines()
            _ = try result.inferShapes()
        } catch {
            let source = error.layer.flatMap { converter.sources[$0] }
            throw ONNXImportError(file: file, node: source?.label, opType: source?.opTypeLabel, opset: source?.opset,
                                  error.layer.map { "IR node '\($0)': \(error.message)" } ?? error.message)
        }
        if let layout = inputLayout(result) { result.metadata[.inputLayout] = .string(layout) }
        return result
    }

    /// The model's version of the standard operator set ("" or "ai.onnx").
    func standardOpset() throws(ONNXImportError) -> Int {
        guard let entry = model.opsetImports.first(where: { $0.domain.isEmpty || $0.domain == "ai.onnx" }) else {
            if (model.irVersion ?? 0) < 3 {
                throw fail("IR version \(model.irVersion ?? 0) without opset imports (operator set 1) is older than the importer reads (opsets \(ONNXImporter.supportedOpsets))")
            }
            throw fail("the model imports no version of the standard operator set")
        }
        guard let v = Int(exactly: entry.version), ONNXImporter.supportedOpsets.contains(v) else {
            throw fail("opset \(entry.version) is not supported (opsets \(ONNXImporter.supportedOpsets.lowerBound)…\(ONNXImporter.supportedOpsets.upperBound))")
        }
        return v
    }

    /// A graph input: a float tensor with a known rank; symbolic and unknown sizes are chosen at run time.
    func addInput(_ input: ONNXValueInfo, to converter: inout Converter) throws(ONNXImportError) {
        guard let type = input.elementType else {
            throw fail("graph input '\(input.name)' is not a tensor", tensor: input.name)
        }
        guard type == ONNXDataType.float.rawValue else {
            throw fail("graph input '\(input.name)' has element type \(ONNXDataType.name(type)); only FLOAT inputs are supported", tensor: input.name)
        }
        guard let declared = input.shape, !declared.isEmpty else {
            throw fail("graph input '\(input.name)' has no shape (its rank must be known)", tensor: input.name)
        }
        var dims: [Dim] = []
        for (axis, d) in declared.enumerated() {
            switch d {
            case .value(let v):
                guard v > 0, v <= Int64(Int32.max) else { throw fail("graph input '\(input.name)' has dimension \(v)", tensor: input.name) }
                dims.append(.known(Int(v)))
            case .param(let p): dims.append(.symbol(p))
            case .unknown: dims.append(.symbol("\(input.name):\(axis)"))
            }
        }
        let node = converter.emit(input.name, .input(shape: dims.map(\.value)), inputs: [])
        converter.graphInputs.insert(node)
        converter.values[input.name] = .runtime(RuntimeTensor(node: node, shape: dims, irShape: dims, perm: identityPerm(dims.count)))
    }

    func metadata(opset: Int, graph: ONNXGraphProto) -> [String: MetadataValue] {
        var m: [String: MetadataValue] = [:]
        m[.sourceFile] = .string(file)
        m[.sourceFormat] = .string("onnx")
        m[.sourceFramework] = .string("onnx")
        m[.sourceONNXOpset] = .int(Int64(opset))
        let producer = [model.producerName, model.producerVersion].filter { !$0.isEmpty }.joined(separator: " ")
        if !producer.isEmpty { m[.sourceProducer] = .string(producer) }
        if let ir = model.irVersion { m[.sourceONNXIRVersion] = .int(ir) }
        if !graph.name.isEmpty { m[.sourceModelName] = .string(graph.name) }
        return m
    }

    /// What the bundle's input takes: "NCHW" when a transpose to NHWC reads it, "NHWC" for a 4-D input
    /// read as it is (tf2onnx models, whose first op transposes NHWC to NCHW, which the importer absorbs).
    func inputLayout(_ graph: Graph) -> String? {
        guard let input = graph.nodes.first(where: { if case .input(let s) = $0.op { return s.count == 4 } else { return false } }) else {
            return nil
        }
        let readers = graph.nodes.filter { $0.inputs.contains(input.name) }
        let transposed = readers.contains { if case .transpose(let p) = $0.op { return p == nhwc } else { return false } }
        return transposed ? "NCHW" : "NHWC"
    }
}
