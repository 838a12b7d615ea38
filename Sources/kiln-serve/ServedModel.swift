import Foundation
import KilnClassify
import KilnImage
import KilnRuntime
import NIOPosix

/// A tensor's name, datatype and shape as the model metadata gives it (-1 for a variable dimension).
struct TensorMetadata: Codable, Equatable, Sendable {
    var name: String
    var datatype: String
    var shape: [Int]
}

/// `GET /v2/models/{m}` and gRPC ModelMetadata.
struct ModelMetadata: Codable, Sendable {
    var name: String
    var versions: [String]
    var platform: String
    var inputs: [TensorMetadata]
    var outputs: [TensorMetadata]
}

/// One bundle behind the protocol: its classifier, batcher and metrics; turns a protocol-neutral request into
/// a tensor (decoding images on the decode pool), queues it, and answers the requested outputs.
final class ServedModel: Sendable {
    /// Largest tensor a request may give, in values (1 GiB of FP32).
    static let maximumValues = 1 << 28

    let name: String
    let classifier: Classifier
    let outputNames: [String]
    let batcher: Batcher
    let metrics = ModelMetrics()
    let metadata: ModelMetadata

    init(name: String, path: String, maxBatch: Int, maxQueueDelayMicroseconds: Int, maxQueue: Int) throws {
        // One batcher thread runs this model: one plan per batch shape is enough; keep every batch size's.
        let classifier = try Classifier(contentsOf: path, plansPerShape: 1, maximumShapes: maxBatch + 4)
        Self.warmUp(classifier, maxBatch: maxBatch)
        self.classifier = classifier
        self.name = name
        batcher = Batcher(classifier: classifier, maxBatch: maxBatch, maxDelayMicroseconds: maxQueueDelayMicroseconds,
                          maxQueue: maxQueue, metrics: metrics)
        let outputNames = classifier.model.frozen.outputs.map(\.name)
        self.outputNames = outputNames
        let spec = classifier.spec
        var inputs = [TensorMetadata(name: spec.inputName, datatype: "FP32", shape: spec.inputShape.map { $0 < 0 ? -1 : Int($0) })]
        if classifier.imageResize != nil { inputs.append(TensorMetadata(name: "image", datatype: "BYTES", shape: [-1])) }
        let outputs = outputNames.enumerated().map { index, output in
            TensorMetadata(name: output, datatype: "FP32",
                           shape: index == spec.outputIndex ? spec.outputShape.map { $0 < 0 ? -1 : Int($0) } : [-1])
        }
        metadata = ModelMetadata(name: name, versions: ["1"], platform: "kiln", inputs: inputs, outputs: outputs)
    }

    /// Plans (and runs once, on zeros) every batch size 1...maxBatch of the model's input shape, so that no
    /// request pays for planning a batch shape the dynamic batcher makes (Triton's model warm-up, always on).
    /// Skipped when the input has a free dimension besides the batch that the bundle does not record.
    static func warmUp(_ classifier: Classifier, maxBatch: Int) {
        let spec = classifier.spec
        var row = spec.inputShape.dropFirst().map(Int.init)
        if let height = spec.height, let width = spec.width, row.count == 3 {
            if spec.layout == .nhwc { row[0] = row[0] < 0 ? height : row[0]; row[1] = row[1] < 0 ? width : row[1] } else {
                row[1] = row[1] < 0 ? height : row[1]; row[2] = row[2] < 0 ? width : row[2]
            }
        }
        guard !row.isEmpty, row.allSatisfy({ $0 > 0 }) else { return }
        let rowSize = row.reduce(1, *)
        guard rowSize <= maximumValues / max(1, maxBatch) else { return }
        for batch in 1...maxBatch {
            _ = try? classifier.run(Tensor(shape: [batch] + row, values: [Float](repeating: 0, count: batch * rowSize)))
        }
    }

    /// Answers `request`: prepared on `pool` (validation, tensor copy, image decoding), run by the batcher,
    /// answered on `pool`; `completion` is called exactly once, on a pool thread or at once when refused.
    func infer(_ request: InferRequest, pool: NIOThreadPool,
               completion: @escaping @Sendable (Result<InferResponse, ServeError>) -> Void) {
        let started = DispatchTime.now().uptimeNanoseconds
        let metrics = self.metrics
        let finish: @Sendable (Result<InferResponse, ServeError>) -> Void = { result in
            if case .success = result { metrics.finished(success: true, microseconds: elapsed(since: started)) } else {
                metrics.finished(success: false, microseconds: elapsed(since: started))
            }
            completion(result)
        }
        pool.submit { state in
            guard case .active = state else { return finish(.failure(ServeError(.unavailable, "the server is stopping"))) }
            let tensor: Tensor, wanted: [Wanted]
            do throws(ServeError) {
                wanted = try self.wantedOutputs(request)
                tensor = try self.inputTensor(request)
            } catch {
                return finish(.failure(error))
            }
            do {
                try self.batcher.submit(tensor) { result in
                    pool.submit { _ in
                        switch result {
                        case .failure(let error): finish(.failure(ServeError(error)))
                        case .success(let outputs):
                            finish(Result { () throws(ServeError) in try self.response(request, wanted: wanted, outputs: outputs) })
                        }
                    }
                }
            } catch {
                finish(.failure(ServeError(.unavailable, "the queue of model '\(self.name)' is full")))
            }
        }
    }

    /// `infer` for async callers (gRPC).
    func infer(_ request: InferRequest, pool: NIOThreadPool) async throws(ServeError) -> InferResponse {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<InferResponse, ServeError>, Never>) in
            infer(request, pool: pool) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }

    // MARK: - Preparing

    private struct Wanted: Sendable {
        var index: Int
        var binary: Bool
        var classes: Int
    }

    private func wantedOutputs(_ request: InferRequest) throws(ServeError) -> [Wanted] {
        guard let requested = request.outputs, !requested.isEmpty else {
            return outputNames.indices.map { Wanted(index: $0, binary: request.binaryDefault, classes: 0) }
        }
        var wanted: [Wanted] = []
        for output in requested {
            guard let index = outputNames.firstIndex(of: output.name) else {
                throw ServeError(.badRequest, "model '\(name)' has no output '\(output.name)' (its outputs: \(outputNames.joined(separator: ", ")))")
            }
            guard output.classes >= 0 else {
                throw ServeError(.badRequest, "output '\(output.name)': classification must be a positive count")
            }
            wanted.append(Wanted(index: index, binary: output.binary, classes: output.classes))
        }
        return wanted
    }

    /// The request's one input as the tensor to run: FP32 values of the model's input shape, or the BYTES
    /// `image` input decoded and resized as the bundle records.
    private func inputTensor(_ request: InferRequest) throws(ServeError) -> Tensor {
        let spec = classifier.spec
        guard let input = request.inputs.first else { throw ServeError(.badRequest, "the request has no inputs") }
        guard request.inputs.count == 1 else {
            throw ServeError(.badRequest, "model '\(name)' takes one input, the request gives \(request.inputs.count)")
        }
        if input.name == "image", let resize = classifier.imageResize {
            return try imageTensor(input, resize: resize)
        }
        guard input.name == spec.inputName else {
            let image = classifier.imageResize != nil ? " or 'image'" : ""
            throw ServeError(.badRequest, "model '\(name)' has no input '\(input.name)' (its input is '\(spec.inputName)'\(image))")
        }
        guard input.datatype == "FP32" else {
            throw ServeError(.badRequest, "input '\(input.name)' is FP32, the request gives '\(input.datatype)'")
        }
        let shape = input.shape
        guard !shape.isEmpty, shape.allSatisfy({ $0 > 0 && $0 <= 1 << 30 }) else {
            throw ServeError(.badRequest, "input '\(input.name)': bad shape \(shape)")
        }
        let (count, overflow) = shape.reduce((1, false)) { acc, n in
            let (p, o) = acc.0.multipliedReportingOverflow(by: n); return (p, acc.1 || o)
        }
        guard !overflow, count <= Self.maximumValues else {
            throw ServeError(.badRequest, "input '\(input.name)': shape \(shape) is too large")
        }
        let expected = spec.inputShape
        guard expected.count == shape.count, zip(expected, shape).allSatisfy({ $0 < 0 || Int($0) == $1 }) else {
            throw ServeError(.badRequest, "input '\(input.name)' has shape \(expected.map { $0 < 0 ? -1 : Int($0) }), the request gives \(shape)")
        }
        switch input.contents {
        case .raw(let raw):
            guard raw.count == count * 4 else {
                throw ServeError(.badRequest, "input '\(input.name)': \(raw.count) bytes of contents, shape \(shape) needs \(count * 4)")
            }
            // One copy, from the request's bytes into the tensor (little-endian on every machine Kiln runs on).
            let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                raw.withUnsafeBytes { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: $0) }
                initialized = count
            }
            return Tensor(shape: shape, values: values)
        case .numbers(let values):
            guard values.count == count else {
                throw ServeError(.badRequest, "input '\(input.name)': \(values.count) values for shape \(shape)")
            }
            return Tensor(shape: shape, values: values)
        case .strings:
            throw ServeError(.badRequest, "input '\(input.name)': FP32 data holds a value that is not a number")
        case .none:
            throw ServeError(.badRequest, "input '\(input.name)' has no data")
        }
    }

    /// The BYTES `image` input: each element one JPEG or PNG file.
    private func imageTensor(_ input: InferInput, resize: InputResize) throws(ServeError) -> Tensor {
        guard input.datatype == "BYTES" else {
            throw ServeError(.badRequest, "input 'image' is BYTES, the request gives '\(input.datatype)'")
        }
        let images: [[UInt8]]
        switch input.contents {
        case .raw(let raw): images = try raw.lengthPrefixedElements(input: "image")
        case .strings(let strings): images = strings
        case .numbers: throw ServeError(.badRequest, "input 'image': data holds a value that is not a string")
        case .none: throw ServeError(.badRequest, "input 'image' has no data")
        }
        guard !images.isEmpty else { throw ServeError(.badRequest, "input 'image' holds no images") }
        guard input.shape.count == 1, input.shape[0] == images.count else {
            throw ServeError(.badRequest, "input 'image' has shape \(input.shape), the request holds \(images.count) images")
        }
        let sources = images.enumerated().map { ImageSource.bytes($1, name: "image[\($0)]") }
        let decoded = classifier.imageBatch(sources, resize: resize)
        if let first = decoded.failures.first { throw ServeError(first.error) }
        return decoded.tensor
    }

    // MARK: - Answering

    private func response(_ request: InferRequest, wanted: [Wanted], outputs: [Tensor]) throws(ServeError) -> InferResponse {
        var answers: [InferOutput] = []
        for want in wanted {
            let tensor = outputs[want.index]
            guard want.classes > 0 else {
                answers.append(InferOutput(name: outputNames[want.index], shape: tensor.shape, binary: want.binary, contents: .fp32(tensor.values)))
                continue
            }
            // Triton's classification extension: BYTES "score:index:label", best first, per row.
            let columns = tensor.shape.last ?? 1
            let k = min(want.classes, columns)
            let rows = tensor.values.withUnsafeBufferPointer { classifier.predictions($0, columns: columns, top: k) }
            let strings = rows.flatMap { $0.map { "\($0.score):\($0.index):\($0.label)" } }
            answers.append(InferOutput(name: outputNames[want.index], shape: Array(tensor.shape.dropLast()) + [k],
                                       binary: want.binary, contents: .strings(strings)))
        }
        return InferResponse(modelName: name, id: request.id, outputs: answers)
    }
}

func elapsed(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds &- start) / 1000 }
