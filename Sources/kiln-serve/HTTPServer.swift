import Foundation
import KilnKernels
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Server state

/// What every front end shares: the models, the decode pool, ready/draining, and the open HTTP connections
/// (so that a drain can close the idle ones and wait for the busy ones).
final class ServerState: @unchecked Sendable {  // mutable state under `lock`
    let maxRequestBytes: Int
    /// Request preparation, image decoding and response building (`--threads` threads).
    let pool: NIOThreadPool
    let prepareThreads: Int
    private let lock = NSLock()
    private var _draining = false
    private var _loading = true
    private var _models: [String: ServedModel] = [:]
    private var _inFlight = 0
    private var connections: [ObjectIdentifier: (channel: any Channel, busy: Bool)] = [:]

    init(maxRequestBytes: Int, pool: NIOThreadPool, prepareThreads: Int) {
        self.maxRequestBytes = maxRequestBytes
        self.pool = pool
        self.prepareThreads = prepareThreads
    }

    var draining: Bool { lock.withLock { _draining } }
    /// Ready: loaded and not draining.
    var ready: Bool { lock.withLock { !_loading && !_draining } }
    var models: [String: ServedModel] { lock.withLock { _models } }
    func loaded(_ models: [String: ServedModel]) { lock.withLock { _models = models; _loading = false } }
    func startDraining() { lock.withLock { _draining = true } }

    /// Inference requests being answered, over every protocol.
    var inFlight: Int { lock.withLock { _inFlight } }
    func begin() { lock.withLock { _inFlight += 1 } }
    func end() { lock.withLock { _inFlight -= 1 } }

    func opened(_ channel: any Channel) { lock.withLock { connections[ObjectIdentifier(channel)] = (channel, false) } }
    func closed(_ channel: any Channel) { _ = lock.withLock { connections.removeValue(forKey: ObjectIdentifier(channel)) } }
    func setBusy(_ channel: any Channel, _ busy: Bool) {
        lock.withLock { if connections[ObjectIdentifier(channel)] != nil { connections[ObjectIdentifier(channel)]?.busy = busy } }
    }
    var openConnections: Int { lock.withLock { connections.count } }
    /// Closes every connection that has no request in hand (a drain's last step for keep-alive clients).
    func closeIdleConnections() {
        let idle = lock.withLock { connections.values.filter { !$0.busy }.map(\.channel) }
        for channel in idle { channel.close(promise: nil) }
    }
}

// MARK: - Listening

/// A listening TCP socket that this process owns, so that a drain can read how many connections still wait in
/// its accept queue (TCP_INFO's `tcpi_unacked` of a listening socket) before it stops accepting.
struct ListeningSocket {
    let descriptor: CInt

    /// socket + SO_REUSEADDR + bind + listen on `host:port`.
    init(host: String, port: Int, backlog: Int32) throws(ServeError) {
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else {
            throw ServeError(.internalError, "cannot resolve '\(host)'")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServeError(.internalError, "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0, listen(fd, backlog) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw ServeError(.internalError, "cannot listen on \(host):\(port): \(message)")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        descriptor = fd
    }

    /// Connections the kernel has completed that nobody has accepted yet (0 if it cannot tell).
    var waitingConnections: Int {
        var info = tcp_info()
        var length = socklen_t(MemoryLayout<tcp_info>.size)
        guard getsockopt(descriptor, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0 else { return 0 }
        return Int(info.tcpi_unacked)
    }
}

// MARK: - HTTP

struct Response {
    var status: HTTPResponseStatus
    var body: [UInt8]
    var headers: [(String, String)] = [("Content-Type", "application/json")]
}

func jsonResponse<T: Encodable>(_ status: HTTPResponseStatus, _ value: T) -> Response {
    Response(status: status, body: encodeJSON(value))
}

func errorResponse(_ error: ServeError) -> Response {
    let status: HTTPResponseStatus
    switch error.reason {
    case .badRequest: status = .badRequest
    case .notFound: status = .notFound
    case .tooLarge: status = .payloadTooLarge
    case .unavailable: status = .serviceUnavailable
    case .internalError: status = .internalServerError
    }
    var response = jsonResponse(status, RESTError(error: error.message))
    if error.reason == .unavailable { response.headers.append(("Retry-After", "1")) }
    return response
}

/// One HTTP/1.1 connection: reads a request (refusing one over --max-request-bytes before its body), answers
/// GETs on the event loop, and hands inference to the model (decode pool + batcher), writing the answer back
/// on the event loop. While the server drains, each answer closes its connection.
final class HTTPHandler: ChannelInboundHandler, @unchecked Sendable {  // event-loop confined
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let state: ServerState
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var refused = false

    init(state: ServerState) { self.state = state }

    func channelActive(context: ChannelHandlerContext) {
        state.opened(context.channel)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.closed(context.channel)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = nil
            refused = false
            state.setBusy(context.channel, true)
            if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > state.maxRequestBytes {
                // Refused before the body is read: answer now and close.
                refuse(context: context, "the request has \(length) bytes, at most \(state.maxRequestBytes) are taken")
            }
        case .body(var chunk):
            guard !refused else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > state.maxRequestBytes {
                refuse(context: context, "the request is larger than \(state.maxRequestBytes) bytes")
                return
            }
            if body == nil { body = chunk } else { body?.writeBuffer(&chunk) }
        case .end:
            guard !refused, let head else { return }
            let body = self.body ?? ByteBuffer()
            self.head = nil
            self.body = nil
            let keepAlive = head.isKeepAlive
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            if head.method == .POST, let (model, infer) = inferenceRoute(path) {
                guard infer else { return write(context: context, errorResponse(ServeError(.notFound, "no route POST \(path)")), keepAlive: keepAlive) }
                guard let model = state.models[model] else {
                    return write(context: context, errorResponse(ServeError(.notFound, "unknown model '\(model)'")), keepAlive: keepAlive)
                }
                startInference(context: context, model: model, head: head, body: body, keepAlive: keepAlive)
            } else {
                write(context: context, route(state: state, method: head.method, path: path), keepAlive: keepAlive)
            }
        }
    }

    private func refuse(context: ChannelHandlerContext, _ message: String) {
        refused = true
        write(context: context, errorResponse(ServeError(.tooLarge, message)), keepAlive: false)
    }

    private func startInference(context: ChannelHandlerContext, model: ServedModel, head: HTTPRequestHead, body: ByteBuffer, keepAlive: Bool) {
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let state = self.state
        let headerText = head.headers.first(name: "Inference-Header-Content-Length")
        state.begin()
        let answer: @Sendable (Response) -> Void = { response in
            loop.execute {
                let (handler, context) = bound.value
                handler.write(context: context, response, keepAlive: keepAlive)
                state.end()
            }
        }
        state.pool.submit { _ in
            let request: InferRequest
            do throws(ServeError) {
                var headerLength = body.readableBytes
                if let headerText {
                    guard let n = Int(headerText), n >= 0 else {
                        throw ServeError(.badRequest, "Inference-Header-Content-Length '\(headerText)' is not a count of bytes")
                    }
                    headerLength = n
                }
                request = try decodeRESTInferRequest(body, headerLength: headerLength)
            } catch {
                model.metrics.finished(success: false, microseconds: 0)
                return answer(errorResponse(error))
            }
            model.infer(request, pool: state.pool) { result in
                switch result {
                case .failure(let error): answer(errorResponse(error))
                case .success(let response):
                    let (header, binary) = encodeRESTInferResponse(response)
                    if binary.isEmpty { return answer(Response(status: .ok, body: header)) }
                    answer(Response(status: .ok, body: header + binary,
                                    headers: [("Content-Type", "application/octet-stream"),
                                              ("Inference-Header-Content-Length", "\(header.count)")]))
                }
            }
        }
    }

    func write(context: ChannelHandlerContext, _ response: Response, keepAlive: Bool) {
        let keepAlive = keepAlive && !state.draining
        var headers = HTTPHeaders(response.headers)
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let channel = context.channel
        let state = self.state
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            state.setBusy(channel, false)
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}

/// `/v2/models/{m}[/versions/{v}]/infer` → (m, true); another path under a model → (m, false); else nil.
func inferenceRoute(_ path: String) -> (model: String, infer: Bool)? {
    let parts = path.split(separator: "/").map(String.init)
    guard parts.count >= 3, parts[0] == "v2", parts[1] == "models" else { return nil }
    var tail = Array(parts.dropFirst(3))
    if tail.count >= 2, tail[0] == "versions" { tail.removeFirst(2) }
    return (parts[2], tail == ["infer"])
}

/// Every route but inference: health, server and model metadata, model ready, /metrics.
func route(state: ServerState, method: HTTPMethod, path: String) -> Response {
    if path == "/metrics", method == .GET {
        let models = state.models
        return Response(status: .ok, body: Array(prometheusText(models.keys.sorted().compactMap { models[$0] },
                                                                          kernelThreads: kernelThreads(), prepareThreads: state.prepareThreads).utf8),
                        headers: [("Content-Type", "text/plain; version=0.0.4")])
    }
    let parts = path.split(separator: "/").map(String.init)
    guard method == .GET else { return errorResponse(ServeError(.notFound, "no route \(method) \(path)")) }
    switch parts {
    case ["v2"]:
        return jsonResponse(.ok, ServerMetadataBody(name: "kiln-serve", version: "0.1", extensions: ["binary_tensor_data", "classification"]))
    case ["v2", "health", "live"]:
        return jsonResponse(.ok, LiveBody(live: true))
    case ["v2", "health", "ready"]:
        let ready = state.ready
        return jsonResponse(ready ? .ok : .serviceUnavailable, ReadyBody(ready: ready))
    default:
        break
    }
    guard parts.count >= 3, parts[0] == "v2", parts[1] == "models" else { return errorResponse(ServeError(.notFound, "no route \(path)")) }
    guard let model = state.models[parts[2]] else { return errorResponse(ServeError(.notFound, "unknown model '\(parts[2])'")) }
    var tail = Array(parts.dropFirst(3))
    if tail.count >= 2, tail[0] == "versions" { tail.removeFirst(2) }
    switch tail {
    case []:
        return jsonResponse(.ok, model.metadata)
    case ["ready"]:
        let ready = state.ready
        return jsonResponse(ready ? .ok : .serviceUnavailable, ModelReadyBody(name: model.name, ready: ready))
    default:
        return errorResponse(ServeError(.notFound, "no route \(method) \(path)"))
    }
}
