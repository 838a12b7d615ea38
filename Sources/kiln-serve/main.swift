// kiln-serve: bundles behind the Open Inference Protocol (KServe v2 REST and gRPC), over KilnClassify.
// Networking lives only in this product; kiln-run stays free of it.
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KilnClassify
import KilnKernels
import NIOCore
import NIOHTTP1
import NIOPosix

struct KilnServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-serve",
        abstract: "Serve .kiln bundles over the Open Inference Protocol (KServe v2 REST and gRPC, Triton's clients).",
        discussion: """
            Each MODEL.kiln is served under its file name without .kiln (--name renames the first). REST on \
            --http-port: /v2/health/live, /v2/health/ready, /v2, /v2/models/M, /v2/models/M/ready, \
            POST /v2/models/M[/versions/V]/infer with JSON tensors or the binary tensor data extension; a bundle \
            that takes images also has a BYTES input 'image' (JPEG or PNG files); an output asked with \
            parameters.classification K answers "score:index:label" strings. gRPC inference.GRPCInferenceService \
            on --grpc-port (ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer with \
            raw_input_contents / raw_output_contents; messages up to --max-request-bytes). Prometheus text on \
            --metrics-port (/metrics).

            Threads: one event loop for the connections (HTTP/1.1 and HTTP/2), Swift's cooperative pool for the \
            gRPC handlers (they only wait), one batching thread per model, --threads kernel threads \
            and --threads threads that prepare requests (JSON, image decoding) and build answers.

            Ready turns true once every bundle is loaded, validated and warmed up (each batch size 1...--max-batch \
            planned and run once). SIGTERM drains: ready turns false, connections still waiting in the listen queue are accepted and \
            answered, then the listener closes; gRPC stops taking new calls and finishes those begun; every request received is answered (its connection then closes), \
            and the process exits 0 (at most 25 s after the signal).

            Exit status: 0 after a drain, 1 when a bundle cannot be loaded or a port cannot be listened on, 64 usage error.
            """)

    @Argument(help: "The .kiln bundles to serve.")
    var bundles: [String] = []

    @Option(name: .long, help: "The first model's name (default: its file name without .kiln).")
    var name: String?

    @Option(name: .long, help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .customLong("http-port"), help: "The REST port.")
    var httpPort = 8000

    @Option(name: .customLong("grpc-port"), help: "The gRPC port (0: none).")
    var grpcPort = 8001

    @Option(name: .customLong("metrics-port"), help: "The Prometheus /metrics port (0: none).")
    var metricsPort = 8002

    @Option(name: .long, help: "Kernel threads, and threads preparing requests (1...256).")
    var threads = 2

    @Option(name: .customLong("max-batch"), help: "Most images (rows) one model run takes (1...4096).")
    var maxBatch = 8

    @Option(name: .customLong("max-queue-delay-us"), help: "Longest a request waits for batch mates, in microseconds.")
    var maxQueueDelayMicroseconds = 2000

    @Option(name: .customLong("max-queue"), help: "Most rows queued per model; more are refused with 503 and Retry-After.")
    var maxQueue = 256

    @Option(name: .customLong("max-request-bytes"), help: "Largest request body; a larger one is refused with 413 before it is read.")
    var maxRequestBytes = 64 << 20

    func validate() throws {
        guard !bundles.isEmpty else { throw ValidationError("give at least one MODEL.kiln") }
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be in 1...256, got \(threads)") }
        guard (1...4096).contains(maxBatch) else { throw ValidationError("--max-batch must be in 1...4096, got \(maxBatch)") }
        guard (0...10_000_000).contains(maxQueueDelayMicroseconds) else {
            throw ValidationError("--max-queue-delay-us must be in 0...10000000, got \(maxQueueDelayMicroseconds)")
        }
        guard maxQueue >= 1 else { throw ValidationError("--max-queue must be positive, got \(maxQueue)") }
        guard maxRequestBytes >= 256 else { throw ValidationError("--max-request-bytes must be at least 256, got \(maxRequestBytes)") }
        guard (1...65535).contains(httpPort) else { throw ValidationError("--http-port must be in 1...65535, got \(httpPort)") }
        guard (0...65535).contains(grpcPort) else { throw ValidationError("--grpc-port must be in 0...65535, got \(grpcPort)") }
        guard (0...65535).contains(metricsPort) else { throw ValidationError("--metrics-port must be in 0...65535, got \(metricsPort)") }
        let names = modelNames()
        if let duplicate = Dictionary(grouping: names, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw ValidationError("two bundles would both be served as '\(duplicate)'; give --name for the first")
        }
    }

    func modelNames() -> [String] {
        bundles.enumerated().map { index, path in
            let base = URL(fileURLWithPath: path).lastPathComponent
            let stem = base.hasSuffix(".kiln") ? String(base.dropLast(5)) : base
            return index == 0 ? (name ?? stem) : stem
        }
    }

    func run() throws {
        setKernelThreads(threads)
        let pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        let state = ServerState(maxRequestBytes: maxRequestBytes, pool: pool, prepareThreads: threads)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTPHandler(state: state))
                }
            }
        let listener: ListeningSocket
        let server: any Channel
        let metricsServer: (any Channel)?
        let grpcServer: GRPCServer<HTTP2ServerTransport.Posix>?
        do {
            listener = try ListeningSocket(host: host, port: httpPort, backlog: 1024)
            server = try bootstrap.withBoundSocket(listener.descriptor).wait()
            if metricsPort > 0 {
                let metricsListener = try ListeningSocket(host: host, port: metricsPort, backlog: 64)
                metricsServer = try bootstrap.withBoundSocket(metricsListener.descriptor).wait()
            } else {
                metricsServer = nil
            }
            if grpcPort > 0 {
                let grpcListener = try ListeningSocket(host: host, port: grpcPort, backlog: 1024)
                grpcServer = makeGRPCServer(state: state, listener: grpcListener, group: group, maxRequestBytes: maxRequestBytes)
            } else {
                grpcServer = nil
            }
        } catch {
            writeError("\(error)")
            throw ExitCode(1)
        }

        if let grpcServer {
            Task {
                do { try await grpcServer.serve() } catch {
                    writeError("gRPC on \(host):\(grpcPort): \(error)")
                    Foundation.exit(1)
                }
            }
        }

        // Listening already (ready false), the bundles load and validate; a bad one stops the start.
        var models: [String: ServedModel] = [:]
        for (path, name) in zip(bundles, modelNames()) {
            do {
                models[name] = try ServedModel(name: name, path: path, maxBatch: maxBatch,
                                               maxQueueDelayMicroseconds: maxQueueDelayMicroseconds, maxQueue: maxQueue)
            } catch {
                writeError("\(error)".split(separator: "\n").first.map(String.init) ?? "cannot load \(path)")
                throw ExitCode(1)
            }
        }
        state.loaded(models)
        writeError("\(models.keys.sorted().joined(separator: ", ")) on http://\(host):\(httpPort)" +
                   (grpcPort > 0 ? " and grpc \(host):\(grpcPort)" : ""))

        // SIGTERM: drain (see the discussion), then exit 0.
        signal(SIGTERM, SIG_IGN)
        let term = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        term.setEventHandler {
            let drain = Thread {
                grpcServer?.beginGracefulShutdown()
                drainAndExit(state: state, listener: listener, server: server, metricsServer: metricsServer)
            }
            drain.start()
        }
        term.resume()
        while true { sleep(60) }
    }
}

func writeError(_ message: String) {
    FileHandle.standardError.write(Data("kiln-serve: \(message)\n".utf8))
}

/// The drain after SIGTERM, within 25 s: ready false; accept what waits in the listen queue, then stop
/// listening; close idle connections; wait until every request received is answered; exit 0.
func drainAndExit(state: ServerState, listener: ListeningSocket, server: any Channel, metricsServer: (any Channel)?) -> Never {
    let started = Date()
    let deadline = started.addingTimeInterval(25)
    state.startDraining()
    // The event loop accepts whatever the kernel completed; wait until the queue is empty (at most 2 s).
    while listener.waitingConnections > 0 && Date().timeIntervalSince(started) < 2 { usleep(2_000) }
    usleep(20_000)  // the connections just accepted read their requests
    try? server.close().wait()
    // Connections with no request in hand will get none answered: close them. The busy ones close after
    // their answer (responses while draining carry Connection: close).
    state.closeIdleConnections()
    while (state.inFlight > 0 || state.openConnections > 0) && Date() < deadline {
        usleep(5_000)
        state.closeIdleConnections()
    }
    try? metricsServer?.close().wait()
    exit(0)
}

KilnServe.main()
