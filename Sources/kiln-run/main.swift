#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import KilnFormat
import KilnImage
import KilnKernels
import KilnRuntime

/// The standalone deployment binary: a bundle and images (or an input tensor) in, classes (or the model's
/// outputs) out. It links only the bundle reader, the kernels, the runtime and the image decoders.
struct KilnRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-run",
        abstract: "Classify images with a .kiln bundle, or run it on an input tensor.",
        usage: """
            kiln-run BUNDLE IMAGE_OR_DIR... [--top K] [--batch N] [--threads N] [--format text|json|csv]
            kiln-run BUNDLE --input X.npy [--output Y.npy] [--output-name NAME] [--top K]
            """,
        discussion: """
            Images: JPEG and PNG files, and directories searched recursively (entries in name order, hidden \
            ones skipped). Each image is decoded and resized exactly as the bundle records (input.resize: \
            Keras load_img nearest or bilinear, or torchvision's resize + centre crop), then classified; a \
            bundle made by `kiln fuse` takes raw RGB and does its own preprocessing. EXIF orientation is not \
            applied (Keras does not apply it either). A file that cannot be read is reported in the output and \
            the others are still classified; the exit status is then 1.

            Tensors: --input takes a NumPy .npy float32 array, NHWC ([batch, height, width, channels]), \
            already in the form the model's first input expects.

            Exit status: 0 success, 1 bad bundle or input (or any image not classified), 64 usage error.
            """)

    @Argument(help: "The .kiln bundle.")
    var bundle: String

    @Argument(help: "Image files (JPEG, PNG) and directories.")
    var images: [String] = []

    @Option(name: .long, help: "Input tensor (.npy, float32 NHWC) instead of images.")
    var input: String?

    @Option(name: .long, help: "With --input: write the output to this .npy file (atomically).")
    var output: String?

    @Option(name: .long, help: "Which output to use (default: the first).")
    var outputName: String?

    @Option(name: .long, help: "Threads for the kernels.")
    var threads: Int = 2

    @Option(name: .long, help: "Top classes to print per input.")
    var top: Int = 5

    @Option(name: .long, help: "Images per model run.")
    var batch: Int = 8

    @Option(name: .long, help: "Image results as: text (an aligned table), json (JSON Lines) or csv.")
    var format: OutputFormat = .text

    @Option(name: .long, help: "Image size HxW for a bundle that does not record input.height/width.")
    var size: String?

    @Flag(name: .long, help: "Run the naive reference kernels (slow; the test oracle).")
    var reference = false

    func validate() throws {
        guard threads >= 1, threads <= 256 else { throw ValidationError("--threads must be in 1...256") }
        guard top >= 1 else { throw ValidationError("--top must be positive") }
        guard batch >= 1, batch <= 4096 else { throw ValidationError("--batch must be in 1...4096") }
        if input != nil, !images.isEmpty {
            throw ValidationError("give either image files and directories or --input X.npy, not both")
        }
        if input == nil {
            guard !images.isEmpty else { throw ValidationError("give image files or directories to classify, or --input X.npy") }
            guard output == nil else { throw ValidationError("--output writes a tensor: it goes with --input") }
        }
        if let size, parseSize(size) == nil { throw ValidationError("--size must be HxW (for example 224x224), got '\(size)'") }
    }

    func run() throws {
        setKernelThreads(threads)
        let model = try Model(contentsOf: bundle)
        if let input {
            try runTensor(model, input: input)
        } else {
            let failures = try classify(model)
            if failures > 0 { throw ExitCode(1) }
        }
    }

    func outputIndex(_ model: Model) throws -> Int {
        let ports = model.frozen.outputs
        guard let outputName else { return 0 }
        guard let i = ports.firstIndex(where: { $0.name == outputName }) else {
            throw RuntimeError(.badInput, "no output named '\(outputName)' (outputs: \(ports.map(\.name).joined(separator: ", ")))")
        }
        return i
    }

    /// `--input X.npy`: the model's output tensor, written or printed as top classes per row.
    func runTensor(_ model: Model, input: String) throws {
        let tensor = try NPY.read(path: input)
        let outputs = try model.run(tensor, kernels: reference ? .reference : .fast)
        let ports = model.frozen.outputs
        let index = try outputIndex(model)
        let result = outputs[index]
        if let output {
            try NPY.write(result, to: output)
            print("\(ports[index].name) \(result.shape) -> \(output)")
            return
        }
        let labels = labelNames(model)
        let columns = result.shape.last ?? 1
        for row in 0..<(result.shape.first ?? 1) {
            let slice = result.values[row * columns..<(row + 1) * columns]
            let best = slice.indices.sorted { slice[$0] > slice[$1] || (slice[$0] == slice[$1] && $0 < $1) }.prefix(top)
            let text = best.map { i -> String in
                let c = i - row * columns
                let name = labels.map { c < $0.count ? $0[c] : "\(c)" } ?? "\(c)"
                return "\(name)=\(slice[i])"
            }
            print("\(row): " + text.joined(separator: "  "))
        }
    }

    // MARK: - Images

    /// Classifies every image, printing one result per file in order; returns how many failed.
    func classify(_ model: Model) throws -> Int {
        let resize = try inputResize(model)
        let index = try outputIndex(model)
        let port = model.frozen.outputs[index]
        let labels = labelNames(model)
        let scoreName = producedBySoftmax(model, value: port.value) ? "probability" : "score"
        let files = collectImageFiles(images)
        let printer = ResultPrinter(format: format, scoreName: scoreName, top: top,
                                    fileWidth: files.map { displayWidth($0.path) }.max() ?? 4)
        printer.header()
        var progress = Progress(total: files.count)
        var failures = 0
        var start = 0
        while start < files.count {
            let chunk = files[start..<min(start + batch, files.count)]
            var results: [(path: String, outcome: Outcome)] = []
            var pixels: [Float] = []
            var decoded: [Int] = []         // positions in `results` that await a model row
            for entry in chunk {
                if let error = entry.error {
                    results.append((entry.path, .failed(error)))
                    continue
                }
                do {
                    let image = try ImageDecoder.decode(contentsOf: entry.path)
                    try resize.apply(image, file: entry.path).appendFloats(to: &pixels)
                    decoded.append(results.count)
                    results.append((entry.path, .pending))
                } catch {
                    results.append((entry.path, .failed(error)))
                }
            }
            if !decoded.isEmpty {
                let tensor = Tensor(shape: [decoded.count, resize.height, resize.width, 3], values: pixels)
                let outputs = try model.run(tensor, kernels: reference ? .reference : .fast)
                let out = outputs[index]
                let columns = out.shape.last ?? 1
                for (row, position) in decoded.enumerated() {
                    let slice = Array(out.values[row * columns..<(row + 1) * columns])
                    results[position].outcome = .classified(topK(slice, k: top, labels: labels))
                }
            }
            progress.pause()
            for r in results {
                if case .failed = r.outcome { failures += 1 }
                printer.print(path: r.path, outcome: r.outcome)
            }
            fflush(nil)   // all streams: stdout (stdout itself is not concurrency-safe to name)
            start += chunk.count
            progress.update(done: start)
        }
        progress.finish()
        if failures > 0 {
            let line = "kiln-run: \(failures) of \(files.count) file\(files.count == 1 ? "" : "s") could not be classified\n"
            writeStderr(line)
        }
        return failures
    }

    /// The resizing recorded in the bundle, with the input size from the bundle or --size.
    func inputResize(_ model: Model) throws -> InputResize {
        let meta = model.frozen.metadata
        guard case .string(let name)? = meta["input.resize"] else {
            throw RuntimeError(.badInput, "\(bundle): the bundle records no input.resize, so it takes tensors, not images " +
                               "(bundles from `kiln fuse` take images); use --input X.npy")
        }
        var height: Int?, width: Int?
        if case .int(let h)? = meta["input.height"], case .int(let w)? = meta["input.width"] {
            height = Int(h)
            width = Int(w)
        }
        if let size, let (h, w) = parseSize(size) {
            if let height, let width, (height, width) != (h, w) {
                throw ValidationError("--size \(h)x\(w) differs from the bundle's input size \(height)x\(width)")
            }
            height = h
            width = w
        }
        guard let height, let width else {
            throw RuntimeError(.badInput, "\(bundle): the bundle records no input.height/input.width (its input size is free); give --size HxW")
        }
        var shorter: Int?
        if case .int(let s)? = meta["input.resize_shorter"] { shorter = Int(s) }
        let resize = try InputResize(name: name, height: height, width: width, shorter: shorter)
        guard let port = model.frozen.inputs.first, port.shape.count == 4 else {
            throw RuntimeError(.unsupported, "\(bundle): the model input is not an NHWC image")
        }
        let expected: [Int64] = [-1, Int64(height), Int64(width), 3]
        for axis in 1..<4 where port.shape[axis] != -1 && port.shape[axis] != expected[axis] {
            throw RuntimeError(.badBundle, "\(bundle): input '\(port.name)' has shape \(port.shape), images give [N, \(height), \(width), 3]")
        }
        return resize
    }

    func labelNames(_ model: Model) -> [String]? {
        if case .strings(let l)? = model.frozen.metadata["labels.names"] { return l }
        return nil
    }

    /// Whether the value is a softmax's output (a Softmax op or a Dense with a fused softmax).
    func producedBySoftmax(_ model: Model, value: Int) -> Bool {
        guard let op = model.frozen.ops.last(where: { $0.output == value }) else { return false }
        if op.opcode == .softmax { return true }
        if op.opcode == .dense, let a = try? DenseAttributes(decoding: op.attributes) { return a.softmax }
        return false
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json, csv
}

/// Parses "HxW" or "N".
func parseSize(_ text: String) -> (Int, Int)? {
    let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
    if parts.count == 1, let n = parts[0], n > 0, n <= 1 << 16 { return (n, n) }
    if parts.count == 2, let h = parts[0], let w = parts[1], h > 0, w > 0, h <= 1 << 16, w <= 1 << 16 { return (h, w) }
    return nil
}

// MARK: - Results

struct Prediction {
    var index: Int
    var label: String
    var score: Float
}

enum Outcome {
    case pending
    case classified([Prediction])
    case failed(Error)
}

/// The k best columns, highest first (ties: lower index first).
func topK(_ row: [Float], k: Int, labels: [String]?) -> [Prediction] {
    let order = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(k)
    return order.map { i in
        let label = labels.flatMap { i < $0.count ? $0[i] : nil } ?? String(i)
        return Prediction(index: i, label: label, score: row[i])
    }
}

/// Writes results to stdout as an aligned table, JSON Lines or CSV.
struct ResultPrinter {
    var format: OutputFormat
    var scoreName: String
    var top: Int
    var fileWidth: Int

    func header() {
        switch format {
        case .text:
            let title = scoreName == "probability" ? "PROB" : "SCORE"
            Swift.print(pad("FILE", fileWidth) + "  RANK  " + padLeft(title, 8) + "  CLASS")
        case .csv:
            Swift.print("file,rank,index,label,\(scoreName),error")
        case .json:
            break
        }
    }

    func print(path: String, outcome: Outcome) {
        switch (format, outcome) {
        case (_, .pending):
            return
        case (.text, .classified(let predictions)):
            for (rank, p) in predictions.enumerated() {
                let file = rank == 0 ? path : ""
                Swift.print(pad(file, fileWidth) + "  " + pad(String(rank + 1), 4) + "  " + padLeft(scoreText(p.score), 8) + "  " + p.label)
            }
        case (.text, .failed(let error)):
            Swift.print(pad(path, fileWidth) + "  error: " + message(error, path: path))
        case (.json, .classified(let predictions)):
            let items = predictions.enumerated().map { rank, p in
                "{\"rank\":\(rank + 1),\"index\":\(p.index),\"label\":\(jsonString(p.label)),\"\(scoreName)\":\(jsonNumber(p.score))}"
            }
            Swift.print("{\"file\":\(jsonString(path)),\"predictions\":[\(items.joined(separator: ","))]}")
        case (.json, .failed(let error)):
            let kind = (error as? ImageError)?.kind.rawValue ?? "error"
            Swift.print("{\"file\":\(jsonString(path)),\"error\":{\"kind\":\(jsonString(kind)),\"message\":\(jsonString(message(error, path: path)))}}")
        case (.csv, .classified(let predictions)):
            for (rank, p) in predictions.enumerated() {
                Swift.print([csvField(path), String(rank + 1), String(p.index), csvField(p.label), "\(p.score)", ""].joined(separator: ","))
            }
        case (.csv, .failed(let error)):
            Swift.print([csvField(path), "", "", "", "", csvField(message(error, path: path))].joined(separator: ","))
        }
    }

    /// Percent for probabilities ("82.34%"), four significant digits for other scores.
    func scoreText(_ v: Float) -> String {
        if scoreName == "probability" {
            let hundredths = Int((Double(v) * 10000).rounded())
            let whole = hundredths / 100, frac = hundredths % 100
            return "\(whole).\(frac < 10 ? "0" : "")\(frac)%"
        }
        return String(v)
    }

    /// The error's message without the file name (the file is in its own column).
    func message(_ error: Error, path: String) -> String {
        if let e = error as? ImageError { return e.message }
        let text = String(describing: error)
        let prefix = path + ": "
        return text.hasPrefix(prefix) ? String(text.dropFirst(prefix.count)) : text
    }
}

func displayWidth(_ s: String) -> Int { s.count }

func pad(_ s: String, _ width: Int) -> String {
    let n = displayWidth(s)
    return n >= width ? s : s + String(repeating: " ", count: width - n)
}

func padLeft(_ s: String, _ width: Int) -> String {
    let n = displayWidth(s)
    return n >= width ? s : String(repeating: " ", count: width - n) + s
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

func jsonNumber(_ v: Float) -> String { v.isFinite ? "\(v)" : "null" }

/// RFC 4180: quoted when it holds a comma, quote or line break.
func csvField(_ s: String) -> String {
    guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
    return "\"" + s.replacingQuotes() + "\""
}

extension String {
    func replacingQuotes() -> String {
        var out = ""
        for c in self { out += c == "\"" ? "\"\"" : String(c) }
        return out
    }
}

// MARK: - Files

struct FileEntry {
    var path: String
    /// Set when the path could not be listed or opened (reported in order with the results).
    var error: Error?
}

struct PathError: Error, CustomStringConvertible {
    var path: String
    var message: String
    var description: String { "\(path): \(message)" }
}

/// Files in argument order; a directory contributes its files recursively, entries sorted by name (byte
/// order), hidden entries (".name") skipped, each directory visited once (symbolic-link loops).
func collectImageFiles(_ arguments: [String]) -> [FileEntry] {
    var out: [FileEntry] = []
    var visited = Set<[UInt64]>()

    func walk(_ dir: String) {
        guard let handle = opendir(dir) else {
            out.append(FileEntry(path: dir, error: PathError(path: dir, message: "cannot list: \(String(cString: strerror(errno)))")))
            return
        }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            names.append(name)
        }
        closedir(handle)
        names.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        for name in names {
            let path = dir.hasSuffix("/") ? dir + name : dir + "/" + name
            visit(path, fromDirectory: true)
        }
    }

    func visit(_ path: String, fromDirectory: Bool) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            out.append(FileEntry(path: path, error: PathError(path: path, message: "cannot open: \(String(cString: strerror(errno)))")))
            return
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            let key = [UInt64(st.st_dev), UInt64(st.st_ino)]
            guard visited.insert(key).inserted else { return }
            walk(path)
        } else if (st.st_mode & S_IFMT) == S_IFREG || !fromDirectory {
            out.append(FileEntry(path: path, error: nil))
        }
    }

    for argument in arguments { visit(argument, fromDirectory: false) }
    return out
}

// MARK: - Progress

/// A progress bar on stderr, drawn only when stderr is a terminal and the work has taken over a second.
struct Progress {
    let total: Int
    let enabled: Bool
    let start: Double
    var done = 0
    var lastDraw = 0.0
    var visible = false

    init(total: Int) {
        self.total = total
        enabled = isatty(STDERR_FILENO) == 1 && total > 1
        start = monotonicSeconds()
    }

    /// Clears the bar before results are printed (stdout may be the same terminal).
    mutating func pause() {
        guard visible else { return }
        writeStderr("\r\u{1B}[K")
        visible = false
    }

    mutating func update(done: Int) {
        self.done = done
        guard enabled, done < total else { return }
        let now = monotonicSeconds()
        guard now - start >= 1.0, now - lastDraw >= 0.1 else { return }
        lastDraw = now
        let width = 30
        let filled = width * done / max(total, 1)
        let rate = Double(done) / max(now - start, 1e-9)
        let eta = rate > 0 ? Int((Double(total - done) / rate).rounded()) : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let rateText = "\(Int(rate * 10) / 10).\(Int(rate * 10) % 10)"
        writeStderr("\r[\(bar)] \(done)/\(total) images, \(rateText)/s, \(eta / 60):\(eta % 60 < 10 ? "0" : "")\(eta % 60) left")
        visible = true
    }

    mutating func finish() { pause() }
}

/// Unbuffered, straight to file descriptor 2.
func writeStderr(_ s: String) {
    var bytes = Array(s.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { raw -> Int in
            guard let base = raw.baseAddress else { return 0 }
            return write(STDERR_FILENO, base + done, raw.count - done)
        }
        if n <= 0 { return }
        done += n
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

KilnRun.main()
