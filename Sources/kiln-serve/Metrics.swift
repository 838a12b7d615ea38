import Foundation

/// A Prometheus histogram of durations in microseconds (cumulative buckets, sum, count); thread-safe.
final class LatencyHistogram: @unchecked Sendable {  // under `lock`
    /// Upper bounds in microseconds: 50 µs to 10 s, about three per decade.
    static let bounds: [Double] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
                                   250_000, 500_000, 1_000_000, 2_500_000, 10_000_000]
    private let lock = NSLock()
    private var counts = [Int](repeating: 0, count: LatencyHistogram.bounds.count + 1)
    private var sum = 0.0

    func observe(_ microseconds: Double) {
        let bucket = Self.bounds.firstIndex { microseconds <= $0 } ?? Self.bounds.count
        lock.withLock { counts[bucket] += 1; sum += microseconds }
    }

    var total: (count: Int, sum: Double) {
        lock.lock(); defer { lock.unlock() }
        return (counts.reduce(0, +), sum)
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name` with `labels` (`model="m",version="1"`).
    func lines(_ name: String, labels: String) -> [String] {
        lock.lock()
        let (counts, sum) = (self.counts, self.sum)
        lock.unlock()
        var cumulative = 0
        var lines: [String] = []
        for (index, bound) in Self.bounds.enumerated() {
            cumulative += counts[index]
            lines.append("\(name)_bucket{\(labels),le=\"\(Int(bound))\"} \(cumulative)")
        }
        cumulative += counts[Self.bounds.count]
        lines.append("\(name)_bucket{\(labels),le=\"+Inf\"} \(cumulative)")
        lines.append("\(name)_sum{\(labels)} \(Int(sum.rounded()))")
        lines.append("\(name)_count{\(labels)} \(cumulative)")
        return lines
    }
}

/// One model's counters and histograms, with Triton's metric names where Triton has one.
final class ModelMetrics: @unchecked Sendable {  // counters under `lock`
    let request = LatencyHistogram()
    let queue = LatencyHistogram()
    let compute = LatencyHistogram()
    private let lock = NSLock()
    private var successes = 0, failures = 0, rowsRun = 0, runs = 0
    private var batchSizes: [Int: Int] = [:]

    func finished(success: Bool, microseconds: Double) {
        lock.withLock { if success { successes += 1 } else { failures += 1 } }
        request.observe(microseconds)
    }

    func executed(rows: Int, microseconds: Double) {
        lock.withLock { rowsRun += rows; runs += 1; batchSizes[rows, default: 0] += 1 }
        compute.observe(microseconds)
    }

    /// The Prometheus families of this model as (name, type, lines).
    func families(model: String, pending: Int) -> [(name: String, type: String, lines: [String])] {
        lock.lock()
        let (ok, bad, rows, runs, sizes) = (successes, failures, rowsRun, self.runs, batchSizes)
        lock.unlock()
        let labels = "model=\"\(model)\",version=\"1\""
        func counter(_ name: String, _ value: Int) -> (String, String, [String]) { (name, "counter", ["\(name){\(labels)} \(value)"]) }
        return [
            counter("nv_inference_request_success", ok),
            counter("nv_inference_request_failure", bad),
            counter("nv_inference_count", rows),
            counter("nv_inference_exec_count", runs),
            counter("nv_inference_request_duration_us", Int(request.total.sum.rounded())),
            counter("nv_inference_queue_duration_us", Int(queue.total.sum.rounded())),
            counter("nv_inference_compute_infer_duration_us", Int(compute.total.sum.rounded())),
            ("nv_inference_pending_request_count", "gauge", ["nv_inference_pending_request_count{\(labels)} \(pending)"]),
            ("kiln_request_duration_us", "histogram", request.lines("kiln_request_duration_us", labels: labels)),
            ("kiln_queue_duration_us", "histogram", queue.lines("kiln_queue_duration_us", labels: labels)),
            ("kiln_compute_infer_duration_us", "histogram", compute.lines("kiln_compute_infer_duration_us", labels: labels)),
            ("kiln_batch_size_runs", "counter",
             sizes.keys.sorted().map { "kiln_batch_size_runs{\(labels),batch_size=\"\($0)\"} \(sizes[$0] ?? 0)" }),
        ]
    }
}

/// The Prometheus text exposition of every model (families grouped across models), then the server's threads.
func prometheusText(_ models: [ServedModel], kernelThreads: Int, prepareThreads: Int) -> String {
    var order: [String] = []
    var families: [String: (type: String, lines: [String])] = [:]
    for model in models {
        for family in model.metrics.families(model: model.name, pending: model.batcher.queued) {
            if families[family.name] == nil { order.append(family.name); families[family.name] = (family.type, []) }
            families[family.name]?.lines += family.lines
        }
    }
    var text = ""
    for name in order {
        guard let family = families[name] else { continue }
        text += "# TYPE \(name) \(family.type)\n"
        for line in family.lines { text += line + "\n" }
    }
    text += "# TYPE kiln_kernel_threads gauge\nkiln_kernel_threads \(kernelThreads)\n"
    text += "# TYPE kiln_prepare_threads gauge\nkiln_prepare_threads \(prepareThreads)\n"
    return text
}
