import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import NIOPosix

/// `inference.GRPCInferenceService` (proto/grpc_service.proto) over the same models, decode pool and batcher
/// as REST: ModelInfer takes raw_input_contents or typed contents, answers raw_output_contents, and takes
/// the BYTES `image` input and the `classification` output parameter as REST does.
struct InferenceService: Inference_GRPCInferenceService.SimpleServiceProtocol {
    let state: ServerState

    func serverLive(request: Inference_ServerLiveRequest, context: ServerContext) async throws -> Inference_ServerLiveResponse {
        .with { $0.live = true }
    }

    func serverReady(request: Inference_ServerReadyRequest, context: ServerContext) async throws -> Inference_ServerReadyResponse {
        .with { $0.ready = state.ready }
    }

    func modelReady(request: Inference_ModelReadyRequest, context: ServerContext) async throws -> Inference_ModelReadyResponse {
        _ = try model(request.name)
        return .with { $0.ready = state.ready }
    }

    func serverMetadata(request: Inference_ServerMetadataRequest, context: ServerContext) async throws -> Inference_ServerMetadataResponse {
        .with {
            $0.name = "kiln-serve"
            $0.version = "0.1"
            $0.extensions = ["binary_tensor_data", "classification"]
        }
    }

    func modelMetadata(request: Inference_ModelMetadataRequest, context: ServerContext) async throws -> Inference_ModelMetadataResponse {
        let metadata = try model(request.name).metadata
        func tensors(_ list: [TensorMetadata]) -> [Inference_ModelMetadataResponse.TensorMetadata] {
            list.map { tensor in .with { $0.name = tensor.name; $0.datatype = tensor.datatype; $0.shape = tensor.shape.map(Int64.init) } }
        }
        return .with {
            $0.name = metadata.name
            $0.versions = metadata.versions
            $0.platform = metadata.platform
            $0.inputs = tensors(metadata.inputs)
            $0.outputs = tensors(metadata.outputs)
        }
    }

    func modelInfer(request: Inference_ModelInferRequest, context: ServerContext) async throws -> Inference_ModelInferResponse {
        let served = try model(request.modelName)
        state.begin()
        defer { state.end() }
        let inferRequest: InferRequest
        do { inferRequest = try Self.inferRequest(request) } catch {
            served.metrics.finished(success: false, microseconds: 0)
            throw RPCError(error)
        }
        do {
            return Self.response(try await served.infer(inferRequest, pool: state.pool))
        } catch {
            throw RPCError(error)
        }
    }

    private func model(_ name: String) throws(RPCError) -> ServedModel {
        guard let model = state.models[name] else { throw RPCError(ServeError(.notFound, "unknown model '\(name)'")) }
        return model
    }

    /// The protobuf request in protocol-neutral form: each input's values from raw_input_contents (one entry
    /// per input, in order) when the request has them, else from its typed contents.
    static func inferRequest(_ request: Inference_ModelInferRequest) throws(ServeError) -> InferRequest {
        let raw = request.rawInputContents
        guard raw.isEmpty || raw.count == request.inputs.count else {
            throw ServeError(.badRequest, "the request has \(request.inputs.count) inputs and \(raw.count) raw_input_contents")
        }
        var inputs: [InferInput] = []
        for (index, input) in request.inputs.enumerated() {
            var shape: [Int] = []
            for n in input.shape {
                guard n > 0, n <= 1 << 30 else { throw ServeError(.badRequest, "input '\(input.name)': bad shape \(input.shape)") }
                shape.append(Int(n))
            }
            let contents: InputContents
            if !raw.isEmpty {
                contents = .raw(.data(raw[index]))
            } else if input.hasContents, !input.contents.fp32Contents.isEmpty {
                contents = .numbers(input.contents.fp32Contents)
            } else if input.hasContents, !input.contents.bytesContents.isEmpty {
                contents = .strings(input.contents.bytesContents.map { Array($0) })
            } else {
                contents = .none
            }
            inputs.append(InferInput(name: input.name, datatype: input.datatype, shape: shape, contents: contents))
        }
        var outputs: [RequestedOutput] = []
        for output in request.outputs {
            var classes = 0
            if let parameter = output.parameters["classification"] {
                guard case .int64Param(let k)? = parameter.parameterChoice, k > 0, k <= Int64(Int32.max) else {
                    throw ServeError(.badRequest, "output '\(output.name)': classification must be a positive count")
                }
                classes = Int(k)
            }
            outputs.append(RequestedOutput(name: output.name, binary: true, classes: classes))
        }
        return InferRequest(id: request.id.isEmpty ? nil : request.id, inputs: inputs, outputs: outputs.isEmpty ? nil : outputs,
                            binaryDefault: true)
    }

    /// Every output's values in raw_output_contents (FP32 little-endian; BYTES length-prefixed), in output order.
    static func response(_ response: InferResponse) -> Inference_ModelInferResponse {
        .with { message in
            message.modelName = response.modelName
            message.modelVersion = "1"
            message.id = response.id ?? ""
            for output in response.outputs {
                message.outputs.append(.with {
                    $0.name = output.name
                    $0.datatype = output.datatype
                    $0.shape = output.shape.map(Int64.init)
                })
                switch output.contents {
                case .fp32(let values): message.rawOutputContents.append(values.withUnsafeBytes { Data($0) })
                case .strings(let strings):
                    var bytes: [UInt8] = []
                    appendLengthPrefixed(strings, to: &bytes)
                    message.rawOutputContents.append(Data(bytes))
                }
            }
        }
    }
}

extension RPCError {
    /// A `ServeError` as a gRPC status: bad request → INVALID_ARGUMENT, unknown model → NOT_FOUND, too large →
    /// RESOURCE_EXHAUSTED, queue full or draining → UNAVAILABLE, the rest → INTERNAL.
    init(_ error: ServeError) {
        let code: RPCError.Code
        switch error.reason {
        case .badRequest: code = .invalidArgument
        case .notFound: code = .notFound
        case .tooLarge: code = .resourceExhausted
        case .unavailable: code = .unavailable
        case .internalError: code = .internalError
        }
        self.init(code: code, message: error.message)
    }
}

/// The gRPC server on `listener`'s socket, sharing `group`'s event loop; requests up to `maxRequestBytes`
/// (a batch of images at --max-request-bytes).
func makeGRPCServer(state: ServerState, listener: ListeningSocket, group: MultiThreadedEventLoopGroup,
                    maxRequestBytes: Int) -> GRPCServer<HTTP2ServerTransport.Posix> {
    let transport = HTTP2ServerTransport.Posix(
        listeningSocketDescriptor: Int(listener.descriptor), transportSecurity: .plaintext,
        config: .defaults { $0.rpc.maxRequestPayloadSize = maxRequestBytes }, eventLoopGroup: group)
    return GRPCServer(transport: transport, services: [InferenceService(state: state)])
}
