import ArgumentParser
import KilnClassify
import KilnFormat
import KilnImage
import KilnKernels
import KilnRuntime

/// The standalone deployment binary: a bundle and images (or an input tensor) in, classes (or the model's
/// outputs) out. A thin shell over KilnClassify: the arguments, then calls.
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
            Keras load_img nearest or bilinear, torchvision's resize + centre crop, or Keras' \
            image_dataset_from_directory: TensorFlow's decode and tf.image.resize, tf-bilinear and the \
            other tf-* modes), then classified; a \
            bundle made by `kiln fuse` takes raw RGB and does its own preprocessing. EXIF orientation is not \
            applied (Keras does not apply it either). A file that cannot be read is reported in the output and \
            the others are still classified; the exit status is then 1.

            Classes: by what the bundle records its output holds (output.kind): probabilities as they are; \
            logits through a softmax; a binary unit (Dense(1), a logit or a sigmoid) as its two classes, the \
            labels' first for output 0; multi-label (Dense(N, sigmoid)) each class on its own, those scoring at \
            least --threshold.

            Tensors: --input takes a NumPy .npy float32 array, NHWC ([batch, height, width, channels]), \
            already in the form the model's first input expects; --output Y.npy holds the model's own output \
            values (logits stay logits).

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

    @Option(name: .long, help: "Multi-label bundles (output.kind multi-label): report the classes scoring at least this (0...1).")
    var threshold: Float = 0.5

    @Option(name: .long, help: "Images per model run.")
    var batch: Int = 8

    @Option(name: .long, help: "Image results as: text (an aligned table), json (JSON Lines) or csv.")
    var format: ResultFormat = .text

    @Option(name: .long, help: "Image size HxW for a bundle that does not record input.height/width.")
    var size: String?

    @Flag(name: .long, help: "Run the naive reference kernels (slow; the test oracle).")
    var reference = false
    @Flag(name: .long, help: "No Winograd: every convolution direct (GEMM); slower on 3x3 layers.")
    var exact = false

    func validate() throws {
        guard acceptedKernelThreadCounts.contains(threads) else { throw ValidationError("--threads must be in \(acceptedKernelThreadCounts)") }
        guard top >= 1 else { throw ValidationError("--top must be positive") }
        guard batch >= 1, batch <= 4096 else { throw ValidationError("--batch must be in 1...4096") }
        guard threshold >= 0, threshold <= 1 else { throw ValidationError("--threshold must be in 0...1") }
        if input != nil, !images.isEmpty {
            throw ValidationError("give either image files and directories or --input X.npy, not both")
        }
        if input == nil {
            guard !images.isEmpty else { throw ValidationError("give image files or directories to classify, or --input X.npy") }
            guard output == nil else { throw ValidationError("--output writes a tensor: it goes with --input") }
        }
        if let size, parseImageSize(size) == nil { throw ValidationError("--size must be HxW (for example 224x224), got '\(size)'") }
    }

    func run() throws {
        if let output { try BundleWriter.checkWritable(output) }    // before the bundle is loaded and run
        setKernelThreads(threads)
        let classifier = try Classifier(contentsOf: bundle, output: outputName, kernels: reference ? .reference : .fast,
                                        plansPerShape: 1, winograd: !exact)
        for note in classifier.model.notes { writeStandardError("kiln-run: note: \(note)\n") }
        if let input {
            try runTensor(classifier, input: input)
        } else if try classifyImages(classifier) > 0 {
            throw ExitCode(1)
        }
    }

    /// `--input X.npy`: the chosen output, written to --output or printed as top classes per row.
    func runTensor(_ classifier: Classifier, input: String) throws {
        let tensor: Tensor
        do { tensor = try NPY.read(path: input) } catch { throw ClassifyError(error) }
        let spec = classifier.spec
        let result = try classifier.run(tensor)[spec.outputIndex]
        if let output {
            try NPY.write(result, to: output)
            print("\(spec.outputName) \(result.shape) -> \(output)")
            return
        }
        let rows = result.values.withUnsafeBufferPointer {
            classifier.predictions($0, columns: classColumns(result.shape), top: top, threshold: threshold)
        }
        for (row, predictions) in rows.enumerated() {
            print("\(row): " + predictions.map { "\($0.label)=\($0.score)" }.joined(separator: "  "))
        }
    }

    /// Classifies every image, printing each batch's results in file order as it finishes; returns how many failed.
    func classifyImages(_ classifier: Classifier) throws -> Int {
        let spec = classifier.spec
        let resize = try spec.commandLineImageResize(requested: size.flatMap(parseImageSize))
        let files = collectImageFiles(images)
        let writer = ResultWriter(format: format, scores: spec.scores, fileWidth: files.map(\.path.count).max() ?? 4)
        if let header = writer.header() { print(header) }
        var progress = ProgressBar(total: files.count)
        var failures = 0, done = 0
        try classifier.classify(files: files, batch: batch, resize: resize, top: top, threshold: threshold) { results in
            progress.pause()
            for (file, result) in results {
                if case .failure = result { failures += 1 }
                for line in writer.lines(file: file.path, result) { print(line) }
            }
            flushStandardStreams()
            done += results.count
            progress.update(done: done)
        }
        progress.finish()
        if failures > 0 {
            writeStandardError("kiln-run: \(failures) of \(files.count) file\(files.count == 1 ? "" : "s") could not be classified\n")
        }
        return failures
    }
}

extension ResultFormat: ExpressibleByArgument {}

KilnRun.main()
