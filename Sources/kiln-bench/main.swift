import ArgumentParser
import KilnFormat
import KilnKernels
import KilnRuntime
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The kiln side of `make bench` (driven by scripts/bench_peers.py): loads a bundle, plans one batch size,
/// and times warm runs. Prints one JSON line; with --profile, a per-op table on stderr.
struct KilnBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln-bench",
        abstract: "Time a .kiln bundle: load, first run, then warm runs of one batch size.")

    @Argument(help: "The .kiln bundle.")
    var bundle: String

    @Option(name: .long, help: "Input tensor (.npy, float32 NHWC); its rows are repeated or cut to --batch.")
    var input: String

    @Option(name: .long, help: "Batch size.")
    var batch: Int = 1

    @Option(name: .long, help: "Untimed runs after the first.")
    var warmup: Int = 2

    @Option(name: .long, help: "Timed runs.")
    var iterations: Int = 10

    @Option(name: .long, help: "Threads for the kernels.")
    var threads: Int = 2

    @Option(name: .long, help: "Write the outputs of the last run to this .npy file (output i > 0: name.i.npy).")
    var output: String?

    @Flag(name: .long, help: "Print the time per op (over the timed runs) on stderr.")
    var profile = false

    @Flag(name: .long, help: "No Winograd: every convolution direct (GEMM), as kiln-run --exact.")
    var exact = false

    func validate() throws {
        guard batch >= 1, warmup >= 0, iterations >= 1, acceptedKernelThreadCounts.contains(threads) else {
            throw ValidationError("--batch, --iterations and --threads must be positive, --warmup not negative")
        }
    }

    func run() throws {
        let start = monotonicSeconds()
        // CPU seconds of the whole process (all threads) at each phase's end, beside the wall clock: on a shared
        // machine the wall clock of a phase includes the time other processes had the cores.
        var cpu = [cpuSeconds()]
        setKernelThreads(threads)
        let mapped = try Bundle(contentsOf: bundle)
        let validated = monotonicSeconds()
        cpu.append(cpuSeconds())
        let model = try Model(bundle: mapped, winograd: !exact)
        let loaded = monotonicSeconds()
        cpu.append(cpuSeconds())
        for note in model.notes {
            var bytes = Array("kiln-bench: \(note)\n".utf8)
            _ = write(2, &bytes, bytes.count)
        }

        let source = try NPY.read(path: input)
        guard let rows = source.shape.first, rows >= 1 else { throw ValidationError("input has no rows") }
        let rowCount = source.values.count / rows
        var values = [Float](repeating: 0, count: batch * rowCount)
        for b in 0..<batch {
            let r = b % rows
            values.replaceSubrange(b * rowCount..<(b + 1) * rowCount, with: source.values[r * rowCount..<(r + 1) * rowCount])
        }
        let shape = [batch] + source.shape.dropFirst()
        let plan = try ExecutionPlan(model: model, inputShape: shape, kernels: .fast)
        let planned = monotonicSeconds()
        cpu.append(cpuSeconds())

        var outputs: [UnsafeBufferPointer<Float>] = []
        try values.withUnsafeBufferPointer { x in
            outputs = try plan.run(input: x)
            let first = monotonicSeconds()
            cpu.append(cpuSeconds())
            // Wall-clock time of the first prediction, for the driver's cold start (process start → first
            // prediction), measured exactly as for the peers' workers.
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            let firstWall = Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
            for _ in 0..<warmup { _ = try plan.run(input: x) }
            plan.profiling = profile
            let cpuBefore = cpuSeconds()
            var samples: [Double] = []
            // Per timed run, the seconds each op took (with --profile).
            var perRun: [[Double]] = []
            var previous = plan.opSeconds
            for _ in 0..<iterations {
                let t = monotonicSeconds()
                outputs = try plan.run(input: x)
                samples.append(monotonicSeconds() - t)
                if profile {
                    perRun.append(plan.opSeconds.indices.map { plan.opSeconds[$0] - previous[$0] })
                    previous = plan.opSeconds
                }
            }
            let cpuPerRun = (cpuSeconds() - cpuBefore) / Double(iterations)
            let sorted = samples.sorted()
            let median = sorted[sorted.count / 2]
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let list = samples.map { fixed($0, 6) }.joined(separator: ",")
            let arenaMB = Double(plan.arenaBytes + plan.workspaceFloats * 4) / 1048576
            var fields: [String] = []
            fields.append("\"runtime\": \"kiln\"")
            fields.append("\"batch\": \(batch)")
            fields.append("\"threads\": \(threads)")
            fields.append("\"load_s\": " + fixed(loaded - start, 4))
            fields.append("\"bundle_s\": " + fixed(validated - start, 4))
            fields.append("\"plan_s\": " + fixed(planned - loaded, 4))
            fields.append("\"first_s\": " + fixed(first - planned, 4))
            fields.append("\"first_wall\": " + fixed(firstWall, 6))
            // CPU seconds (all threads) of: process start to main, bundle (map + checksums + parse), model (widen,
            // pack or borrow packed weights), plan, first run.
            let phases = [cpu[0]] + (1..<cpu.count).map { cpu[$0] - cpu[$0 - 1] }
            fields.append("\"phases_cpu_s\": [" + phases.map { fixed($0, 4) }.joined(separator: ",") + "]")
            fields.append("\"median_s\": " + fixed(median, 6))
            fields.append("\"cpu_s_per_run\": " + fixed(cpuPerRun, 6))
            fields.append("\"arena_mb\": " + fixed(arenaMB, 1))
            fields.append("\"maxrss_kb\": \(usage.ru_maxrss)")
            fields.append("\"samples_s\": [" + list + "]")
            print("{" + fields.joined(separator: ", ") + "}")
            if profile {
                // Per op, the fastest of the timed runs (robust to the odd preemption on a busy machine) and the
                // median: far above the fastest where the op is at the mercy of the machine (a stalled thread,
                // cold caches).
                let perOp = plan.opSeconds.indices.map { i in perRun.map { $0[i] }.sorted() }
                let fastest = perOp.map { $0[0] }
                let medians = perOp.map { $0[$0.count / 2] }
                let total = fastest.reduce(0, +)
                var line = "op (of \(iterations) runs)       fastest     median   share\n"
                for (i, name) in plan.opNames.enumerated() {
                    line += name + String(repeating: " ", count: max(1, 22 - name.count))
                        + fixed(fastest[i] * 1000, 3).leftPadded(8) + " ms " + fixed(medians[i] * 1000, 3).leftPadded(8)
                        + " ms " + fixed(fastest[i] / total * 100, 1).leftPadded(5) + "%\n"
                }
                line += "sum of fastest " + fixed(total * 1000, 3) + " ms, of medians "
                    + fixed(medians.reduce(0, +) * 1000, 3) + " ms\n"
                var bytes = Array(line.utf8)
                _ = write(2, &bytes, bytes.count)
            }
        }
        if let output {
            for (i, port) in model.frozen.outputs.enumerated() {
                let shape = plan.shapes[port.value] ?? []
                let path = i == 0 ? output : String(output.dropLast(4)) + ".\(i).npy"
                try NPY.write(Tensor(shape: shape, values: Array(outputs[i])), to: path)
            }
        }
    }

    /// User + system CPU time of the whole process (all threads), in seconds.
    func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) * 1e-6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) * 1e-6
    }
}

/// `value` with `digits` decimals (no Foundation in the lean binaries).
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let negative = value < 0
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e15 else { return String(value) }
    let whole = Int(scaled) / Int(scale), fraction = Int(scaled) % Int(scale)
    var text = String(fraction)
    while text.count < digits { text = "0" + text }
    return (negative ? "-" : "") + String(whole) + (digits > 0 ? "." + text : "")
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

KilnBench.main()
