#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KilnFormat
import KilnImage
import KilnKernels
import KilnRuntime

/// An image to classify: a file, encoded bytes held in memory (JPEG or PNG), an image already decoded, or
/// one already at the model's input size (`Classifier.loadImage`, so that requests can decode on their own
/// threads and only the run is batched). `name` names it in errors.
public enum ImageSource: Sendable {
    case file(String)
    case bytes([UInt8], name: String)
    case image(RGBImage, name: String)
    case resized(RGBImage, name: String)

    public var name: String {
        switch self {
        case .file(let path): return path
        case .bytes(_, let name), .image(_, let name), .resized(_, let name): return name
        }
    }
}

/// The classification pipeline over one loaded bundle, shared by kiln-run, kiln-serve and the C API:
/// the bundle's `InputSpec`, images decoded and resized as the bundle records straight into a batch,
/// runs on plans kept per input shape (`PlanPool`), and top-k classes with labels.
///
/// Safe to use from many threads at once: runs of one shape share its small pool of plans, runs of
/// different shapes go on side by side.
public final class Classifier: Sendable {
    public let model: Model
    public let spec: InputSpec
    public let plans: PlanPool
    public let limits: ImageLimits
    /// The resizing at the bundle's own size, when it takes images of a fixed size (else nil: give a size
    /// to `spec.imageResize(size:)`).
    public let imageResize: InputResize?

    /// A classifier over `model`; `bundle` names it in messages, `output` chooses the output (default: the
    /// first). `plansPerShape` plans at most run one input shape at once; `maximumShapes` shapes are kept.
    public init(model: Model, bundle: String, output: String? = nil, kernels: KernelChoice = .fast,
                plansPerShape: Int = 2, maximumShapes: Int = 8, limits: ImageLimits = .standard) throws(ClassifyError) {
        let spec = try InputSpec(model.frozen, bundle: bundle, output: output)
        self.model = model
        self.spec = spec
        plans = PlanPool(model: model, kernels: kernels, plansPerShape: plansPerShape, maximumShapes: maximumShapes)
        self.limits = limits
        imageResize = spec.takesImages && spec.height != nil ? try? spec.imageResize() : nil
    }

    /// Loads and validates the bundle at `path`, then as `init(model:…)`.
    /// `winograd: false` keeps every convolution direct (`Model(bundle:winograd:)`).
    public convenience init(contentsOf path: String, output: String? = nil, kernels: KernelChoice = .fast,
                            plansPerShape: Int = 2, maximumShapes: Int = 8, winograd: Bool = true) throws(ClassifyError) {
        let model: Model
        do { model = try Model(contentsOf: path, winograd: winograd) } catch { throw ClassifyError(error) }
        try self.init(model: model, bundle: path, output: output, kernels: kernels, plansPerShape: plansPerShape, maximumShapes: maximumShapes)
    }

    // MARK: - Tensors

    /// Runs the model on `input` (row-major, `shape`) on a plan of the pool and gives `body` every output
    /// (bundle order) with its shape. The buffers belong to the plan: valid only inside `body`. Throws a
    /// `ClassifyError` when the model cannot run on `input`, or what `body` throws.
    public func withOutputs<R>(input: UnsafeBufferPointer<Float>, shape: [Int],
                               _ body: ([UnsafeBufferPointer<Float>], [[Int]]) throws -> R) throws -> R {
        try plans.withPlan(for: shape) { plan in
            let outputs: [UnsafeBufferPointer<Float>]
            do { outputs = try plan.run(input: input) } catch { throw ClassifyError(error) }
            return try body(outputs, model.frozen.outputs.map { plan.shapes[$0.value] ?? [] })
        }
    }

    /// Runs the model on the caller's `input` and copies output `output` (default: the spec's) into the
    /// caller's `destination`, which must hold it exactly; returns its shape. Nothing else is copied.
    @discardableResult
    public func run(input: UnsafeBufferPointer<Float>, shape: [Int], output: Int? = nil,
                    into destination: UnsafeMutableBufferPointer<Float>) throws(ClassifyError) -> [Int] {
        let index = output ?? spec.outputIndex
        guard model.frozen.outputs.indices.contains(index) else {
            throw ClassifyError(.badInput, "no output \(index) (the bundle has \(model.frozen.outputs.count))")
        }
        do {
            return try withOutputs(input: input, shape: shape) { outputs, shapes in
                let out = outputs[index]
                guard out.count == destination.count else {
                    throw ClassifyError(.badInput, "output '\(model.frozen.outputs[index].name)' has \(out.count) values " +
                                        "(shape \(shapes[index])), the destination holds \(destination.count)")
                }
                _ = destination.initialize(from: out)
                return shapes[index]
            }
        } catch {
            throw ClassifyError(error)
        }
    }

    /// Runs the model on `tensor` and returns copies of every output, in the bundle's order.
    public func run(_ tensor: Tensor) throws(ClassifyError) -> [Tensor] {
        guard tensor.values.count == tensor.shape.reduce(1, *) else {
            throw ClassifyError(.badInput, "input has \(tensor.values.count) values for shape \(tensor.shape)")
        }
        do {
            return try tensor.values.withUnsafeBufferPointer { input in
                try withOutputs(input: input, shape: tensor.shape) { outputs, shapes in
                    zip(outputs, shapes).map { Tensor(shape: $1, values: Array($0)) }
                }
            }
        } catch {
            throw ClassifyError(error)
        }
    }

    /// The output shapes for an input of `shape`, without running (nil for an output that shape cannot make).
    public func outputShapes(input shape: [Int]) throws(ClassifyError) -> [[Int]?] {
        let all: [[Int]?]
        do { all = try model.plan(inputShape: shape) } catch { throw ClassifyError(error) }
        return model.frozen.outputs.map { all[$0.value] }
    }

    /// Top-k classes of every row of an output of `columns` columns, by what the output holds (`spec.outputKind`):
    /// probabilities as they are; logits through a softmax; a binary unit as its two classes (the second with
    /// p = sigmoid(z) for a logit, p = y for a sigmoid unit; the first with 1 − p); multi-label, each class on its
    /// own: the classes whose probability is at least `threshold`, highest first (at most `top`; without a threshold
    /// simply the `top` highest, as Triton's classification extension reports them). A bundle that
    /// records no kind: with `softmax`, a row that is not already probabilities (`spec.scores == .scores`) is
    /// turned into probabilities first, else the values as they are.
    public func predictions(_ output: UnsafeBufferPointer<Float>, columns: Int, top: Int, softmax apply: Bool = false,
                            threshold: Float? = nil) -> [[Prediction]] {
        guard columns > 0 else { return [] }
        let rows = output.count / columns
        let label = spec.label
        switch spec.outputKind {
        case .binaryLogit? where columns == 1, .binaryProbability? where columns == 1:
            let logit = spec.outputKind == .binaryLogit
            return (0..<rows).map { row in
                let z = output[row]
                return topK(logit ? [sigmoid(-z), sigmoid(z)] : [1 - z, z], k: top, label: label)
            }
        case .multiLabel?:
            return (0..<rows).map { row in
                let slice = UnsafeBufferPointer(rebasing: output[row * columns..<(row + 1) * columns])
                guard let threshold else { return topK(slice, k: top, label: label) }
                return topK(slice, k: columns, label: label).filter { $0.score >= threshold }.prefix(max(top, 0)).map { $0 }
            }
        default:
            break
        }
        let convert = spec.outputKind == .logits || (spec.outputKind == nil && apply && spec.scores == .scores)
        var scratch = [Float](repeating: 0, count: convert ? columns : 0)
        return (0..<rows).map { row in
            let slice = UnsafeBufferPointer(rebasing: output[row * columns..<(row + 1) * columns])
            guard convert else { return topK(slice, k: top, label: label) }
            return scratch.withUnsafeMutableBufferPointer { s in
                _ = s.initialize(from: slice)
                softmax(s)
                return topK(UnsafeBufferPointer(s), k: top, label: label)
            }
        }
    }

    /// What the scores of `predictions(…, softmax:)` are.
    public func scores(softmax: Bool) -> OutputScores { softmax ? .probabilities : spec.scores }

    // MARK: - Images

    /// The image decoded and resized to the model's input size (`resize`), for the 8-bit resize modes (a `tf-*`
    /// mode gives float pixels: `loadPixels`); safe to call from many threads.
    public func loadImage(_ source: ImageSource, resize: InputResize) throws(ClassifyError) -> RGBImage {
        if case .resized(let image, let name) = source {
            guard image.height == resize.height, image.width == resize.width else {
                throw ClassifyError(.badInput, file: name, "image is \(image.width)×\(image.height), the model takes \(resize.width)×\(resize.height)")
            }
            return image
        }
        do {
            return try resize.apply(try decoded(source, resize: resize), file: source.name, limits: limits)
        } catch {
            throw ClassifyError(error)
        }
    }

    /// The full-size image of a `.file`, `.bytes` or `.image` source, decoded as `resize.decoding` says.
    private func decoded(_ source: ImageSource, resize: InputResize) throws(ImageError) -> RGBImage {
        switch source {
        case .file(let path): return try ImageDecoder.decode(contentsOf: path, limits: limits, convention: resize.decoding)
        case .bytes(let bytes, let name): return try ImageDecoder.decode(bytes, file: name, limits: limits, convention: resize.decoding)
        case .image(let image, _), .resized(let image, _): return image
        }
    }

    /// The model's input pixels of `source`: decoded as `resize.decoding` says and resized by `resize`, float
    /// `[H, W, 3]` 0–255 (`InputResize.pixels`). An image already decoded is taken as it is; one already at the
    /// input size (`.resized`) goes in as its 8-bit values. Safe to call from many threads.
    public func loadPixels(_ source: ImageSource, resize: InputResize) throws(ClassifyError) -> RGBFloatImage {
        if case .resized = source { return RGBFloatImage(try loadImage(source, resize: resize)) }
        do {
            return try resize.pixels(try decoded(source, resize: resize), file: source.name, limits: limits)
        } catch {
            throw ClassifyError(error)
        }
    }

    /// Classifies `sources` as one batch: every image decoded and resized (`resize`, default the bundle's
    /// `imageResize`) into one input, one run, top-k per image. An image that cannot be read gets its error
    /// in its place and the others still run; a failure of the run itself throws.
    public func classify(_ sources: [ImageSource], resize: InputResize? = nil, top: Int,
                         softmax: Bool = false, threshold: Float? = nil) throws(ClassifyError) -> [Result<[Prediction], ClassifyError>] {
        guard let resize = resize ?? imageResize else {
            return try classify(sources, resize: spec.imageResize(), top: top, softmax: softmax, threshold: threshold)
        }
        var results = [Result<[Prediction], ClassifyError>](repeating: .success([]), count: sources.count)
        let (batch, rows, failures) = imageBatch(sources, resize: resize)
        for (position, error) in failures { results[position] = .failure(error) }
        guard !rows.isEmpty else { return results }
        let index = spec.outputIndex
        let predicted: [[Prediction]]
        do {
            predicted = try batch.values.withUnsafeBufferPointer { all in
                try withOutputs(input: all, shape: batch.shape) { outputs, shapes in
                    predictions(outputs[index], columns: classColumns(shapes[index]), top: top, softmax: softmax, threshold: threshold)
                }
            }
        } catch {
            throw ClassifyError(error)
        }
        for (row, position) in rows.enumerated() where row < predicted.count { results[position] = .success(predicted[row]) }
        return results
    }

    /// The images of `sources` decoded and resized by `resize`, as one input tensor in the bundle's layout: a row per
    /// image that decoded, in order (`rows`: their positions in `sources`), and the errors of the others in order.
    /// The tensor grows by one row as each image decodes, so a failed image costs no memory.
    public func imageBatch(_ sources: [ImageSource], resize: InputResize)
        -> (tensor: Tensor, rows: [Int], failures: [(position: Int, error: ClassifyError)]) {
        let rowFloats = resize.height * resize.width * 3
        var rows: [Int] = []
        var failures: [(position: Int, error: ClassifyError)] = []
        var batch: [Float] = []
        for (position, source) in sources.enumerated() {
            do {
                let image = try loadPixels(source, resize: resize)
                batch.append(contentsOf: repeatElement(0, count: rowFloats))
                batch.withUnsafeMutableBufferPointer { b in
                    writePixels(image, into: b, at: rows.count * rowFloats, layout: spec.layout)
                }
                rows.append(position)
            } catch {
                failures.append((position, error))
            }
        }
        let shape = spec.batchShape(rows.count, height: resize.height, width: resize.width)
        return (Tensor(shape: shape, values: batch), rows, failures)
    }

    /// Classifies `files` in batches of `batch` (in order; the last batch may be smaller) and hands each
    /// batch's results to `body` as they come, the files that could not be listed, opened or decoded in their
    /// places. `decoders` threads (default: one per CPU beyond the first) and the calling thread decode and resize
    /// the images straight into their rows of the input tensor (`BatchPipeline`): the next batch while the current
    /// one runs when the CPUs outnumber the kernel threads, else each batch on all of them just before its run;
    /// with 0 the calling thread decodes each batch alone. With the environment variable `KILN_PIPELINE_TIMES` set, the seconds of
    /// each stage go to stderr at the end (`PipelineTimes`). Returns those times.
    @discardableResult
    public func classify(files: [ImageFile], batch: Int, resize: InputResize? = nil, top: Int, softmax: Bool = false,
                         threshold: Float? = nil, decoders: Int? = nil,
                         _ body: ([(file: ImageFile, result: Result<[Prediction], ClassifyError>)]) -> Void) throws(ClassifyError) -> PipelineTimes {
        guard let resize = resize ?? imageResize else {
            return try classify(files: files, batch: batch, resize: spec.imageResize(), top: top, softmax: softmax,
                                threshold: threshold, decoders: decoders, body)
        }
        guard !files.isEmpty else { return PipelineTimes() }
        let begin = monotonicSeconds()
        let pipeline = BatchPipeline(classifier: self, resize: resize, files: files, batch: batch, overlap: defaultDecodeOverlap())
        let threads = pipeline.start(max(decoders ?? defaultDecoderThreads(), 0))
        var mine = PipelineTimes()
        var failure: ClassifyError?
        let index = spec.outputIndex
        for k in 0..<pipeline.batchCount {
            let t0 = monotonicSeconds()
            let (rows, errors) = pipeline.wait(for: k, threaded: !threads.isEmpty)
            let t1 = monotonicSeconds()
            if !threads.isEmpty { mine.waiting += t1 - t0 }
            let range = pipeline.range(of: k)
            var results: [Result<[Prediction], ClassifyError>] = errors.map {
                .failure($0 ?? ClassifyError(.internal, "no result"))
            }
            if !rows.isEmpty {
                let shape = spec.batchShape(rows.count, height: resize.height, width: resize.width)
                let input = UnsafeBufferPointer(rebasing: pipeline.buffers[k % pipeline.depth][0..<rows.count * pipeline.rowFloats])
                do {
                    let predicted = try withOutputs(input: input, shape: shape) { outputs, shapes in
                        predictions(outputs[index], columns: shapes[index].last ?? 1, top: top, softmax: softmax, threshold: threshold)
                    }
                    for (row, position) in rows.enumerated() where row < predicted.count {
                        results[position - range.lowerBound] = .success(predicted[row])
                    }
                } catch {
                    failure = ClassifyError(error)
                    break
                }
            }
            mine.network += monotonicSeconds() - t1
            if k == 0 { mine.firstRun = mine.network }
            pipeline.release(k)
            body(zip(files[range], results).map { ($0, $1) })
        }
        pipeline.stop()
        for thread in threads { pthread_join(thread, nil) }
        if let failure { throw failure }
        var times = pipeline.times
        times.network = mine.network
        times.waiting = mine.waiting
        times.firstRun = mine.firstRun
        times.total = monotonicSeconds() - begin
        if getenv("KILN_PIPELINE_TIMES") != nil {
            writeStandardError("kiln pipeline (\(files.count) images, batch \(batch), \(threads.count) decoder threads): \(times.description)\n")
        }
        return times
    }

    /// Decodes and resizes `source` as `resize` says straight into `row`, one image of the input tensor in the
    /// bundle's layout (`resize.height · resize.width · 3` floats), adding the CPU seconds of each stage (of the
    /// calling thread) to `times`.
    /// The same values as `loadPixels` then `writePixels`, without the float image between them.
    func loadRow(_ source: ImageSource, resize: InputResize, into row: UnsafeMutableBufferPointer<Float>,
                 times: inout PipelineTimes) throws(ClassifyError) {
        let t0 = threadCPUSeconds()
        let decoded: RGBImage
        do {
            switch source {
            case .file(let path): decoded = try ImageDecoder.decode(contentsOf: path, limits: limits, convention: resize.decoding)
            case .bytes(let bytes, let name): decoded = try ImageDecoder.decode(bytes, file: name, limits: limits, convention: resize.decoding)
            case .image, .resized:
                writePixels(try loadPixels(source, resize: resize), into: row, at: 0, layout: spec.layout)
                return
            }
        } catch {
            throw ClassifyError(error)
        }
        let t1 = threadCPUSeconds()
        times.decode += t1 - t0
        do {
            if case .tensorflow = resize.mode {
                let pixels = try resize.pixels(decoded, file: source.name, limits: limits)
                let t2 = threadCPUSeconds()
                times.resize += t2 - t1
                writePixels(pixels, into: row, at: 0, layout: spec.layout)
                times.pack += threadCPUSeconds() - t2
            } else {
                let image = try resize.apply(decoded, file: source.name, limits: limits)
                let t2 = threadCPUSeconds()
                times.resize += t2 - t1
                writePixels(image, into: row, layout: spec.layout)
                times.pack += threadCPUSeconds() - t2
            }
        } catch {
            throw ClassifyError(error)
        }
    }
}

/// Writes `image`'s 8-bit values as floats (0–255) into `row`, one image of a batch: interleaved (`[H, W, 3]`,
/// NHWC) or as three planes (`[3, H, W]`, NCHW).
func writePixels(_ image: RGBImage, into row: UnsafeMutableBufferPointer<Float>, layout: InputLayout) {
    image.pixels.withUnsafeBufferPointer { src in
        let plane = src.count / 3
        switch layout {
        case .nhwc:
            for i in 0..<src.count { row[i] = Float(src[i]) }
        case .nchw:
            for c in 0..<3 {
                for p in 0..<plane { row[c * plane + p] = Float(src[3 * p + c]) }
            }
        }
    }
}

/// Writes `image`'s values (0–255) at `offset` of a batch: interleaved (`[H, W, 3]`, NHWC) or as three planes
/// (`[3, H, W]`, NCHW).
func writePixels(_ image: RGBFloatImage, into batch: UnsafeMutableBufferPointer<Float>, at offset: Int, layout: InputLayout) {
    image.values.withUnsafeBufferPointer { src in
        let plane = src.count / 3
        switch layout {
        case .nhwc:
            for i in 0..<src.count { batch[offset + i] = src[i] }
        case .nchw:
            for p in 0..<plane {
                for c in 0..<3 { batch[offset + c * plane + p] = src[3 * p + c] }
            }
        }
    }
}
