// kiln-serve: bundles behind the Open Inference Protocol (KServe v2 REST), over KilnClassify.
// Networking lives only in this product; kiln-run stays free of it.
import Foundation
import KilnClassify
import KilnFormat
import KilnImage
import KilnRuntime
import NIOCore
import NIOHTTP1
import NIOPosix

// MARK: - Options

struct Options {
    var bundles: [String] = []
    var name: String?
    var host = "127.0.0.1"
    var httpPort = 8000
    var maxRequestBytes = 64 << 20
    var threads = 2
    var metricsPort = 8002
    var maxBatch = 8
    var maxQueueDelayMicroseconds = 2000
    var maxQueue = 256
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("kiln-serve: \(message)\n".utf8))
    exit(1)
}

func parseOptions(_ arguments: [String]) -> Options {
    var options = Options()
    var index = 0
    func value(_ flag: String) -> String {
        index += 1
        guard index < arguments.count else { fail("\(flag) needs a value") }
        return arguments[index]
    }
    func number(_ flag: String) -> Int {
        let text = value(flag)
        guard let n = Int(text), n >= 0 else { fail("\(flag): '\(text)' is not a number") }
        return n
    }
    while index < arguments.count {
        let argument = arguments[index]
        switch argument {
        case "--name": options.name = value(argument)
        case "--host": options.host = value(argument)
        case "--http-port": options.httpPort = number(argument)
        case "--max-request-bytes": options.maxRequestBytes = number(argument)
        case "--threads": options.threads = max(1, number(argument))
        case "--max-batch": options.maxBatch = max(1, number(argument))
        case "--max-queue-delay-us": options.maxQueueDelayMicroseconds = number(argument)
        case "--max-queue": options.maxQueue = max(1, number(argument))
        case "--metrics-port": options.metricsPort = number(argument)
        case "--grpc-port":
            _ = number(argument)  // accepted; not implemented yet (see the README)
        case "-h", "--help":
            print("usage: kiln-serve MODEL.kiln [MORE.kiln …] [--name NAME] [--host 127.0.0.1] [--http-port 8000] " +
                  "[--threads N] [--max-request-bytes N]")
            exit(0)
        default:
            if argument.hasPrefix("-") { fail("unknown option \(argument)") }
            options.bundles.append(argument)
        }
        index += 1
    }
    if options.bundles.isEmpty { fail("give at least one MODEL.kiln") }
    return options
}

// MARK: - Models

/// An error answered to the client: its HTTP status and message.
struct ServeError: Error {
    var status: HTTPResponseStatus
    var message: String
    init(_ status: HTTPResponseStatus, _ message: String) { self.status = status; self.message = message }
    init(_ error: any Error) {
        if let kinded = error as? any KindedError {
            switch kinded.kind {
            case .badInput, .unsupported: status = .badRequest
            case .badBundle, .internal: status = .internalServerError
            }
            message = kinded.description
        } else if let serve = error as? ServeError {
            self = serve
            return
        } else {
            status = .internalServerError
            message = "\(error)"
        }
    }
}

final class ServedModel: @unchecked Sendable {  // counters under `lock`
    let name: String
    let classifier: Classifier
    let outputNames: [String]
    let batcher: Batcher
    private let lock = NSLock()
    private var successes = 0, failures = 0, requestMicroseconds = 0.0

    func record(success: Bool, microseconds: Double) {
        lock.withLock {
            if success { successes += 1 } else { failures += 1 }
            requestMicroseconds += microseconds
        }
    }

    /// Prometheus text lines for this model, with Triton's metric names.
    func metrics() -> [(String, String)] {
        let (ok, bad, micros) = lock.withLock { (successes, failures, requestMicroseconds) }
        let stats = batcher.stats
        let label = "{model=\"\(name)\",version=\"1\"}"
        return [("nv_inference_request_success", "\(label) \(ok)"),
                ("nv_inference_request_failure", "\(label) \(bad)"),
                ("nv_inference_count", "\(label) \(stats.rows)"),
                ("nv_inference_exec_count", "\(label) \(stats.runs)"),
                ("nv_inference_request_duration_us", "\(label) \(Int(micros))"),
                ("nv_inference_compute_infer_duration_us", "\(label) \(Int(stats.computeMicroseconds))"),
                ("nv_inference_pending_request_count", "\(label) \(stats.queued)")]
    }

    init(name: String, path: String, options: Options) throws {
        classifier = try Classifier(contentsOf: path)
        batcher = Batcher(classifier: classifier, maxBatch: options.maxBatch,
                          maxDelayMicroseconds: options.maxQueueDelayMicroseconds, maxQueue: options.maxQueue)
        self.name = name
        outputNames = classifier.model.frozen.outputs.map(\.name)
    }

    var metadata: [String: Any] {
        let spec = classifier.spec
        let outputs: [[String: Any]] = outputNames.enumerated().map { index, name in
            ["name": name, "datatype": "FP32",
             "shape": index == spec.outputIndex ? spec.outputShape.map { $0 < 0 ? -1 : Int($0) } : [-1]]
        }
        var inputs: [[String: Any]] = [["name": spec.inputName, "datatype": "FP32",
                                        "shape": spec.inputShape.map { $0 < 0 ? -1 : Int($0) }]]
        if classifier.imageResize != nil { inputs.append(["name": "image", "datatype": "BYTES", "shape": [-1]]) }
        return ["name": name, "versions": ["1"], "platform": "kiln", "inputs": inputs, "outputs": outputs]
    }

    /// Runs a KServe v2 inference request: `header` is the JSON part, `binary` the bytes after it.
    func infer(header: [String: Any], binary: ByteBuffer) throws -> (json: [String: Any], binary: [UInt8]) {
        let spec = classifier.spec
        guard let inputs = header["inputs"] as? [[String: Any]], !inputs.isEmpty else {
            throw ServeError(.badRequest, "the request has no 'inputs'")
        }
        guard inputs.count == 1, let input = inputs.first else {
            throw ServeError(.badRequest, "model '\(name)' takes one input, the request gives \(inputs.count)")
        }
        let inputName = input["name"] as? String ?? ""
        if inputName == "image", let resize = classifier.imageResize {
            return try inferImages(input: input, header: header, binary: binary, resize: resize)
        }
        guard inputName == spec.inputName else {
            throw ServeError(.badRequest, "model '\(name)' has no input '\(inputName)' (its input is '\(spec.inputName)')")
        }
        let datatype = input["datatype"] as? String ?? ""
        guard datatype == "FP32" else {
            throw ServeError(.badRequest, "input '\(inputName)' is FP32, the request gives '\(datatype)'")
        }
        guard let shapeValues = input["shape"] as? [Any], !shapeValues.isEmpty else {
            throw ServeError(.badRequest, "input '\(inputName)' has no shape")
        }
        var shape: [Int] = []
        for value in shapeValues {
            guard let n = (value as? NSNumber)?.intValue, n > 0, n <= 1 << 30 else {
                throw ServeError(.badRequest, "input '\(inputName)': bad shape \(shapeValues)")
            }
            shape.append(n)
        }
        let (count, overflow) = shape.reduce((1, false)) { acc, n in
            let (p, o) = acc.0.multipliedReportingOverflow(by: n); return (p, acc.1 || o)
        }
        guard !overflow, count <= 1 << 28 else { throw ServeError(.badRequest, "input '\(inputName)': shape \(shape) is too large") }
        let expected = spec.inputShape
        guard expected.count == shape.count,
              zip(expected, shape).allSatisfy({ $0 < 0 || Int($0) == $1 }) else {
            throw ServeError(.badRequest, "input '\(inputName)' has shape \(expected.map { $0 < 0 ? -1 : Int($0) }), " +
                             "the request gives \(shape)")
        }
        var values = [Float]()
        values.reserveCapacity(count)
        let parameters = input["parameters"] as? [String: Any]
        if let size = (parameters?["binary_data_size"] as? NSNumber)?.intValue {
            guard size == count * 4 else {
                throw ServeError(.badRequest, "input '\(inputName)': binary_data_size \(size), the shape needs \(count * 4) bytes")
            }
            guard binary.readableBytes >= size else {
                throw ServeError(.badRequest, "input '\(inputName)': the body has \(binary.readableBytes) binary bytes, \(size) declared")
            }
            // The binary part may start at any offset: copy the bytes (little-endian on every machine Kiln runs on).
            values = [Float](repeating: 0, count: count)
            binary.withUnsafeReadableBytes { raw in
                values.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[0..<size])) }
            }
        } else {
            guard let data = input["data"] else { throw ServeError(.badRequest, "input '\(inputName)' has no 'data'") }
            func flatten(_ any: Any) throws {
                if let array = any as? [Any] {
                    for element in array { try flatten(element) }
                } else if type(of: any) != Bool.self, let number = any as? NSNumber {
                    values.append(number.floatValue)
                } else {
                    throw ServeError(.badRequest, "input '\(inputName)': data holds a value that is not a number")
                }
            }
            try flatten(data)
            guard values.count == count else {
                throw ServeError(.badRequest, "input '\(inputName)': \(values.count) values for shape \(shape)")
            }
        }
        return try respond(header: header, tensor: Tensor(shape: shape, values: values))
    }

    /// The BYTES `image` input: each element one JPEG or PNG file, decoded and resized as the bundle records.
    func inferImages(input: [String: Any], header: [String: Any], binary: ByteBuffer, resize: InputResize) throws -> (json: [String: Any], binary: [UInt8]) {
        guard (input["datatype"] as? String) == "BYTES" else {
            throw ServeError(.badRequest, "input 'image' is BYTES, the request gives '\(input["datatype"] as? String ?? "")'")
        }
        var images: [[UInt8]] = []
        let parameters = input["parameters"] as? [String: Any]
        if let size = (parameters?["binary_data_size"] as? NSNumber)?.intValue {
            guard size >= 0, binary.readableBytes >= size else {
                throw ServeError(.badRequest, "input 'image': the body has \(binary.readableBytes) binary bytes, \(size) declared")
            }
            var part = binary.getSlice(at: binary.readerIndex, length: size)!
            while part.readableBytes > 0 {
                guard let length = part.readInteger(endianness: .little, as: UInt32.self),
                      let bytes = part.readBytes(length: Int(length)) else {
                    throw ServeError(.badRequest, "input 'image': a BYTES element runs past binary_data_size")
                }
                images.append(bytes)
            }
        } else if let data = input["data"] as? [Any] {
            for element in data {
                guard let text = element as? String else { throw ServeError(.badRequest, "input 'image': data holds a value that is not a string") }
                images.append(Array(text.utf8))
            }
        } else {
            throw ServeError(.badRequest, "input 'image' has no 'data'")
        }
        guard !images.isEmpty else { throw ServeError(.badRequest, "input 'image' holds no images") }
        if let shape = input["shape"] as? [Any], shape.count == 1, let n = (shape[0] as? NSNumber)?.intValue, n != images.count {
            throw ServeError(.badRequest, "input 'image' has shape [\(n)], the request holds \(images.count) images")
        }
        let sources = images.enumerated().map { ImageSource.bytes($1, name: "image[\($0)]") }
        let decoded = classifier.imageBatch(sources, resize: resize)
        if let first = decoded.failures.first { throw ServeError(first.error) }
        return try respond(header: header, tensor: decoded.tensor)
    }

    /// Runs `tensor` and answers the requested outputs (binary or JSON; the classification extension).
    func respond(header: [String: Any], tensor input: Tensor) throws -> (json: [String: Any], binary: [UInt8]) {
        let outputs: [Tensor]
        do { outputs = try batcher.run(input) } catch is Batcher.QueueFull {
            throw ServeError(.serviceUnavailable, "the queue of model '\(name)' is full")
        } catch { throw ServeError(error) }

        // Which outputs, and in which form.
        let requestParameters = header["parameters"] as? [String: Any]
        let binaryDefault = (requestParameters?["binary_data_output"] as? Bool) ?? false
        var wanted: [(index: Int, binary: Bool, classes: Int)] = []
        if let requested = header["outputs"] as? [[String: Any]], !requested.isEmpty {
            for output in requested {
                let outName = output["name"] as? String ?? ""
                guard let index = outputNames.firstIndex(of: outName) else {
                    throw ServeError(.badRequest, "model '\(name)' has no output '\(outName)'")
                }
                let p = output["parameters"] as? [String: Any]
                var classes = 0
                if let k = p?["classification"] {
                    guard let n = (k as? NSNumber)?.intValue, n > 0 else {
                        throw ServeError(.badRequest, "output '\(outName)': classification must be a positive count")
                    }
                    classes = n
                }
                wanted.append((index, (p?["binary_data"] as? Bool) ?? binaryDefault, classes))
            }
        } else {
            wanted = outputNames.indices.map { ($0, binaryDefault, 0) }
        }
        var bytes: [UInt8] = []
        var jsonOutputs: [[String: Any]] = []
        for (index, asBinary, classes) in wanted {
            let tensor = outputs[index]
            if classes > 0 {
                // Triton's classification extension: BYTES "score:index:label", best first, per row.
                let columns = tensor.shape.last ?? 1
                let k = min(classes, columns)
                let rows = tensor.values.withUnsafeBufferPointer { classifier.predictions($0, columns: columns, top: k) }
                let strings = rows.flatMap { $0.map { "\($0.score):\($0.index):\($0.label)" } }
                var entry: [String: Any] = ["name": outputNames[index], "datatype": "BYTES",
                                            "shape": Array(tensor.shape.dropLast()) + [k]]
                if asBinary {
                    var size = 0
                    for string in strings {
                        let utf8 = Array(string.utf8)
                        withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
                        bytes.append(contentsOf: utf8)
                        size += 4 + utf8.count
                    }
                    entry["parameters"] = ["binary_data_size": size]
                } else {
                    entry["data"] = strings
                }
                jsonOutputs.append(entry)
                continue
            }
            var entry: [String: Any] = ["name": outputNames[index], "datatype": "FP32", "shape": tensor.shape]
            if asBinary {
                tensor.values.withUnsafeBytes { bytes.append(contentsOf: $0) }
                entry["parameters"] = ["binary_data_size": tensor.values.count * 4]
            } else {
                entry["data"] = tensor.values.map { Double($0) }
            }
            jsonOutputs.append(entry)
        }
        var json: [String: Any] = ["model_name": name, "model_version": "1", "outputs": jsonOutputs]
        if let id = header["id"] as? String { json["id"] = id }
        return (json, bytes)
    }
}

// MARK: - Server state

final class ServerState: @unchecked Sendable {
    let maxRequestBytes: Int
    let work: DispatchQueue
    private let lock = NSLock()
    private var _draining = false
    private var _loading = true
    private var _inFlight = 0

    init(maxRequestBytes: Int, threads: Int) {
        self.maxRequestBytes = maxRequestBytes
        work = DispatchQueue(label: "kiln-serve.work", attributes: .concurrent)
    }
    var draining: Bool { lock.withLock { _draining } }
    /// Ready: loaded and not draining.
    var ready: Bool { lock.withLock { !_loading && !_draining } }
    func loaded(_ models: [String: ServedModel]) { lock.withLock { _models = models; _loading = false } }
    private var _models: [String: ServedModel] = [:]
    var models: [String: ServedModel] { lock.withLock { _models } }
    func startDraining() { lock.withLock { _draining = true } }
    func begin() { lock.withLock { _inFlight += 1 } }
    func end() { lock.withLock { _inFlight -= 1 } }
    var inFlight: Int { lock.withLock { _inFlight } }
}

// MARK: - HTTP

struct Response {
    var status: HTTPResponseStatus
    var body: [UInt8]
    var headers: [(String, String)] = [("Content-Type", "application/json")]
}

func jsonResponse(_ status: HTTPResponseStatus, _ object: Any) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8)
    return Response(status: status, body: Array(data))
}

func errorResponse(_ error: ServeError) -> Response {
    var response = jsonResponse(error.status, ["error": error.message])
    if error.status == .serviceUnavailable { response.headers.append(("Retry-After", "1")) }
    return response
}

final class HTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let state: ServerState
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var refused: Response?

    init(state: ServerState) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = context.channel.allocator.buffer(capacity: 0)
            refused = nil
            if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > state.maxRequestBytes {
                // Refused before the body is read: answer now and close.
                refused = errorResponse(ServeError(.payloadTooLarge, "the request has \(length) bytes, at most \(state.maxRequestBytes) are taken"))
                write(context: context, refused!, keepAlive: false)
            }
        case .body(var chunk):
            guard refused == nil else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > state.maxRequestBytes {
                refused = errorResponse(ServeError(.payloadTooLarge, "the request is larger than \(state.maxRequestBytes) bytes"))
                write(context: context, refused!, keepAlive: false)
                return
            }
            body?.writeBuffer(&chunk)
        case .end:
            guard refused == nil, let head else { return }
            let body = self.body ?? ByteBuffer()
            self.head = nil
            self.body = nil
            let keepAlive = head.isKeepAlive
            let loop = context.eventLoop
            let bound = NIOLoopBound(context, eventLoop: loop)
            let state = self.state
            if head.method == .POST {
                state.begin()
                state.work.async {
                    let response = route(state: state, head: head, body: body)
                    loop.execute {
                        self.write(context: bound.value, response, keepAlive: keepAlive)
                        state.end()
                    }
                }
            } else {
                write(context: context, route(state: state, head: head, body: body), keepAlive: keepAlive)
            }
        }
    }

    func write(context: ChannelHandlerContext, _ response: Response, keepAlive: Bool) {
        var headers = HTTPHeaders(response.headers)
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}

func route(state: ServerState, head: HTTPRequestHead, body: ByteBuffer) -> Response {
    let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
    if path == "/metrics", head.method == .GET { return metricsText(state) }
    let parts = path.split(separator: "/").map(String.init)
    guard parts.first == "v2" else { return errorResponse(ServeError(.notFound, "no route \(path)")) }
    let rest = Array(parts.dropFirst())
    switch (head.method, rest.count) {
    case (.GET, 0):
        return jsonResponse(.ok, ["name": "kiln-serve", "version": "0.1", "extensions": ["binary_tensor_data"]])
    case (.GET, 2) where rest[0] == "health" && rest[1] == "live":
        return jsonResponse(.ok, ["live": true])
    case (.GET, 2) where rest[0] == "health" && rest[1] == "ready":
        return jsonResponse(state.ready ? .ok : .serviceUnavailable, ["ready": state.ready])
    default: break
    }
    guard rest.count >= 2, rest[0] == "models" else { return errorResponse(ServeError(.notFound, "no route \(path)")) }
    guard let model = state.models[rest[1]] else {
        return errorResponse(ServeError(.notFound, "unknown model '\(rest[1])'"))
    }
    var tail = Array(rest.dropFirst(2))
    if tail.count >= 2, tail[0] == "versions" { tail.removeFirst(2) }
    switch (head.method, tail) {
    case (.GET, []):
        return jsonResponse(.ok, model.metadata)
    case (.GET, ["ready"]):
        return jsonResponse(state.ready ? .ok : .serviceUnavailable, ["name": model.name, "ready": state.ready])
    case (.POST, ["infer"]):
        if state.draining { return errorResponse(ServeError(.serviceUnavailable, "the server is draining")) }
        return infer(model: model, head: head, body: body)
    default:
        return errorResponse(ServeError(.notFound, "no route \(head.method) \(path)"))
    }
}

func infer(model: ServedModel, head: HTTPRequestHead, body: ByteBuffer) -> Response {
    var body = body
    let headerLength: Int
    if let text = head.headers.first(name: "Inference-Header-Content-Length") {
        guard let n = Int(text), n >= 0, n <= body.readableBytes else {
            return errorResponse(ServeError(.badRequest, "Inference-Header-Content-Length \(text) for a body of \(body.readableBytes) bytes"))
        }
        headerLength = n
    } else {
        headerLength = body.readableBytes
    }
    let headerBytes = body.readBytes(length: headerLength) ?? []
    guard let object = try? JSONSerialization.jsonObject(with: Data(headerBytes)), let header = object as? [String: Any] else {
        return errorResponse(ServeError(.badRequest, "the request is not a JSON object"))
    }
    let started = DispatchTime.now().uptimeNanoseconds
    func elapsed() -> Double { Double(DispatchTime.now().uptimeNanoseconds - started) / 1000 }
    do {
        let (json, binary) = try model.infer(header: header, binary: body)
        model.record(success: true, microseconds: elapsed())
        let data = Array((try? JSONSerialization.data(withJSONObject: json)) ?? Data("{}".utf8))
        if binary.isEmpty { return Response(status: .ok, body: data) }
        return Response(status: .ok, body: data + binary,
                        headers: [("Content-Type", "application/octet-stream"),
                                  ("Inference-Header-Content-Length", "\(data.count)")])
    } catch {
        model.record(success: false, microseconds: elapsed())
        return errorResponse(ServeError(error))
    }
}

func metricsText(_ state: ServerState) -> Response {
    var groups: [String: [String]] = [:]
    var order: [String] = []
    for model in state.models.keys.sorted().compactMap({ state.models[$0] }) {
        for (name, line) in model.metrics() {
            if groups[name] == nil { order.append(name) }
            groups[name, default: []].append(name + line)
        }
    }
    var text = ""
    for name in order {
        text += "# TYPE \(name) \(name == "nv_inference_pending_request_count" ? "gauge" : "counter")\n"
        text += groups[name]!.joined(separator: "\n") + "\n"
    }
    return Response(status: .ok, body: Array(text.utf8), headers: [("Content-Type", "text/plain; version=0.0.4")])
}

// MARK: - Main

let options = parseOptions(Array(CommandLine.arguments.dropFirst()))
let state = ServerState(maxRequestBytes: options.maxRequestBytes, threads: options.threads)
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 256)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline()
            try channel.pipeline.syncOperations.addHandler(HTTPHandler(state: state))
        }
    }
let server: Channel
do { server = try bootstrap.bind(host: options.host, port: options.httpPort).wait() } catch {
    fail("cannot listen on \(options.host):\(options.httpPort): \(error)")
}
// Prometheus text on the metrics port (the same handler; only /metrics is asked of it).
let metricsServer: Channel?
if options.metricsPort > 0 {
    do { metricsServer = try bootstrap.bind(host: options.host, port: options.metricsPort).wait() } catch {
        fail("cannot listen on \(options.host):\(options.metricsPort): \(error)")
    }
} else {
    metricsServer = nil
}
// Listening already (ready false), the bundles load and validate; a bad one stops the start.
var models: [String: ServedModel] = [:]
for (index, path) in options.bundles.enumerated() {
    let base = URL(fileURLWithPath: path).lastPathComponent
    let name = index == 0 ? (options.name ?? String(base.dropLast(base.hasSuffix(".kiln") ? 5 : 0)))
                          : String(base.dropLast(base.hasSuffix(".kiln") ? 5 : 0))
    do { models[name] = try ServedModel(name: name, path: path, options: options) } catch {
        fail("\(error)".split(separator: "\n").first.map(String.init) ?? "cannot load \(path)")
    }
}
state.loaded(models)
FileHandle.standardError.write(Data("kiln-serve: \(models.keys.sorted().joined(separator: ", ")) on http://\(options.host):\(options.httpPort)\n".utf8))

// SIGTERM: refuse new work, close the listener, answer what is in flight, exit 0.
signal(SIGTERM, SIG_IGN)
let term = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
term.setEventHandler {
    state.startDraining()
    server.close(promise: nil)
    metricsServer?.close(promise: nil)
    let deadline = Date().addingTimeInterval(25)
    while state.inFlight > 0 && Date() < deadline { usleep(10_000) }
    usleep(50_000)
    exit(0)
}
term.resume()
try? server.closeFuture.wait()
while true { sleep(60) }
