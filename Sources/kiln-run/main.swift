import ArgumentParser
import KilnFormat
import KilnKernels
import KilnRuntime

/// The standalone deployment binary: a bundle and an input tensor in, the model's outputs out.
/// It links only the bundle reader, the kernels and the runtime.
struct KilnRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-run",
        abstract: "Run a .kiln bundle on an input tensor.",
        discussion: """
            The input is a NumPy .npy float32 array, NHWC ([batch, height, width, channels]), already in the
            form the model's first layer expects. Exit status: 0 success, 1 bad bundle or input, 64 usage error.
            """)

    @Argument(help: "The .kiln bundle.")
    var bundle: String

    @Option(name: .long, help: "Input tensor (.npy, float32 NHWC).")
    var input: String

    @Option(name: .long, help: "Write the output to this .npy file (atomically).")
    var output: String?

    @Option(name: .long, help: "Which output to write (default: the first).")
    var outputName: String?

    @Option(name: .long, help: "Threads for the kernels.")
    var threads: Int = 2

    @Option(name: .long, help: "Top classes to print per input when no --output is given.")
    var top: Int = 5

    @Flag(name: .long, help: "Run the naive reference kernels (slow; the test oracle).")
    var reference = false

    func validate() throws {
        guard threads >= 1, threads <= 256 else { throw ValidationError("--threads must be in 1...256") }
        guard top >= 1 else { throw ValidationError("--top must be positive") }
    }

    func run() throws {
        setKernelThreads(threads)
        let model = try Model(contentsOf: bundle)
        let tensor = try NPY.read(path: input)
        let outputs = try model.run(tensor, kernels: reference ? .reference : .fast)
        let ports = model.frozen.outputs
        var index = 0
        if let outputName {
            guard let i = ports.firstIndex(where: { $0.name == outputName }) else {
                throw RuntimeError("no output named '\(outputName)' (outputs: \(ports.map(\.name).joined(separator: ", ")))")
            }
            index = i
        }
        let result = outputs[index]
        if let output {
            try NPY.write(result, to: output)
            print("\(ports[index].name) \(result.shape) -> \(output)")
            return
        }
        let labels: [String]? = {
            if case .strings(let l)? = model.frozen.metadata["labels.names"] { return l }
            return nil
        }()
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
}

KilnRun.main()
