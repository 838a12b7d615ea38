import Foundation
import KilnClassify
import KilnRuntime

/// Dynamic batching of one model: requests queue, and one worker thread runs them together, up to `maxBatch`
/// rows or after `maxDelay`, on the classifier's cached plan per batch shape (the kernels use the kernel pool,
/// `--threads`). A request with more rows than `maxBatch` is split into chunks across runs; the queue holds at
/// most `maxQueue` rows (then `submit` refuses). Nothing blocks a caller: each request's completion is called
/// once, on the worker thread, with its own rows of every output.
final class Batcher: @unchecked Sendable {  // all mutable state under `condition`
    struct QueueFull: Error {}

    /// One chunk of a request's rows.
    private final class Item {
        let rowShape: [Int]
        let rows: Int
        let values: ArraySlice<Float>
        let enqueued: UInt64
        let request: Request
        let part: Int
        init(rowShape: [Int], rows: Int, values: ArraySlice<Float>, enqueued: UInt64, request: Request, part: Int) {
            self.rowShape = rowShape; self.rows = rows; self.values = values; self.enqueued = enqueued
            self.request = request; self.part = part
        }
    }

    /// A submitted request: its chunks' results gather here; the last one to arrive calls the completion.
    private final class Request: @unchecked Sendable {  // `parts`/`remaining` under `lock`
        let rows: Int
        let completion: @Sendable (Result<[Tensor], ClassifyError>) -> Void
        private let lock = NSLock()
        private var parts: [[Tensor]?]
        private var remaining: Int
        private var failed = false
        init(rows: Int, parts: Int, completion: @escaping @Sendable (Result<[Tensor], ClassifyError>) -> Void) {
            self.rows = rows; self.completion = completion
            self.parts = Array(repeating: nil, count: parts); remaining = parts
        }
        func finish(part: Int, _ result: Result<[Tensor], ClassifyError>) {
            let outcome: Result<[Tensor], ClassifyError>? = lock.withLock {
                guard !failed else { return nil }
                switch result {
                case .failure(let error):
                    failed = true
                    return .failure(error)
                case .success(let outputs):
                    parts[part] = outputs
                    remaining -= 1
                    guard remaining == 0 else { return nil }
                    let done = parts.compactMap { $0 }
                    if done.count == 1 { return .success(done[0]) }
                    return .success(done[0].indices.map { o in
                        Tensor(shape: [rows] + Array(done[0][o].shape.dropFirst()), values: done.flatMap { $0[o].values })
                    })
                }
            }
            if let outcome { completion(outcome) }
        }
    }

    let classifier: Classifier
    let maxBatch: Int
    let maxDelay: TimeInterval
    let maxQueue: Int
    let metrics: ModelMetrics
    private let condition = NSCondition()
    private var queue: [Item] = []
    private var queuedRows = 0

    var queued: Int { condition.withLock { queuedRows } }

    init(classifier: Classifier, maxBatch: Int, maxDelayMicroseconds: Int, maxQueue: Int, metrics: ModelMetrics) {
        self.classifier = classifier
        self.maxBatch = max(1, maxBatch)
        maxDelay = Double(maxDelayMicroseconds) / 1e6
        self.maxQueue = max(1, maxQueue)
        self.metrics = metrics
        let thread = Thread { [unowned self] in self.work() }
        thread.name = "kiln-serve.batcher"
        thread.start()
    }

    /// Queues `tensor` (batch first) and returns at once; `completion` gets its outputs or the run's error.
    /// Throws `QueueFull` when the queue cannot take its rows now (unless it is empty: a request larger than
    /// the queue still runs, alone).
    func submit(_ tensor: Tensor, completion: @escaping @Sendable (Result<[Tensor], ClassifyError>) -> Void) throws(QueueFull) {
        let rows = tensor.shape.first ?? 0
        let rowShape = Array(tensor.shape.dropFirst())
        let rowSize = rowShape.reduce(1, *)
        let parts = max(1, (rows + maxBatch - 1) / maxBatch)
        let request = Request(rows: rows, parts: parts, completion: completion)
        let now = DispatchTime.now().uptimeNanoseconds
        var items: [Item] = []
        for part in 0..<parts {
            let start = part * maxBatch, n = min(maxBatch, rows - start)
            items.append(Item(rowShape: rowShape, rows: n, values: tensor.values[start * rowSize..<(start + n) * rowSize],
                              enqueued: now, request: request, part: part))
        }
        condition.lock()
        guard queuedRows + rows <= maxQueue || queue.isEmpty else {
            condition.unlock()
            throw QueueFull()
        }
        queue.append(contentsOf: items)
        queuedRows += rows
        condition.signal()
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            while queue.isEmpty { condition.wait() }
            // Wait for more rows up to the delay, unless the batch is already full.
            let deadline = Date().addingTimeInterval(maxDelay)
            while rowsReady() < maxBatch && Date() < deadline {
                _ = condition.wait(until: deadline)
            }
            var batch: [Item] = []
            var rows = 0
            let shape = queue[0].rowShape
            var index = 0
            while index < queue.count, rows < maxBatch {
                let item = queue[index]
                if item.rowShape == shape && rows + item.rows <= maxBatch {
                    batch.append(item)
                    rows += item.rows
                    queue.remove(at: index)
                } else {
                    index += 1
                }
            }
            queuedRows -= rows
            condition.unlock()
            let started = DispatchTime.now().uptimeNanoseconds
            for item in batch { metrics.queue.observe(Double(started &- item.enqueued) / 1000) }
            execute(batch, rows: rows, rowShape: shape)
        }
    }

    private func rowsReady() -> Int {
        guard let shape = queue.first?.rowShape else { return 0 }
        return queue.reduce(0) { $0 + ($1.rowShape == shape ? $1.rows : 0) }
    }

    private func execute(_ batch: [Item], rows: Int, rowShape: [Int]) {
        let input: Tensor
        if batch.count == 1 {
            input = Tensor(shape: [rows] + rowShape, values: Array(batch[0].values))
        } else {
            var values: [Float] = []
            values.reserveCapacity(rows * rowShape.reduce(1, *))
            for item in batch { values.append(contentsOf: item.values) }
            input = Tensor(shape: [rows] + rowShape, values: values)
        }
        let outputs: [Tensor]
        do {
            let started = DispatchTime.now().uptimeNanoseconds
            outputs = try classifier.run(input)
            metrics.executed(rows: rows, microseconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1000)
        } catch {
            // One bad request must not fail its batch mates: run each alone to find it.
            if batch.count > 1 {
                for item in batch { execute([item], rows: item.rows, rowShape: rowShape) }
            } else {
                batch[0].request.finish(part: batch[0].part, .failure(error))
            }
            return
        }
        var offset = 0
        for item in batch {
            item.request.finish(part: item.part, .success(outputs.map { out in
                let rowSize = out.shape.dropFirst().reduce(1, *)
                return Tensor(shape: [item.rows] + Array(out.shape.dropFirst()),
                              values: Array(out.values[offset * rowSize..<(offset + item.rows) * rowSize]))
            }))
            offset += item.rows
        }
    }
}
