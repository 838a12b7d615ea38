import Foundation
import KilnClassify
import KilnRuntime

/// Dynamic batching of one model: requests queue, and one worker runs them together, up to `maxBatch` rows
/// or after `maxDelay`, on the classifier's cached plan per batch shape. A request with more rows than
/// `maxBatch` is split into chunks across runs; the queue holds at most `maxQueue` rows (then `submit` refuses).
final class Batcher: @unchecked Sendable {
    struct QueueFull: Error {}

    private final class Item {
        let rowShape: [Int]
        let rows: Int
        let values: ArraySlice<Float>
        var result: Result<[Tensor], ClassifyError>?
        let done = DispatchSemaphore(value: 0)
        init(rowShape: [Int], rows: Int, values: ArraySlice<Float>) { self.rowShape = rowShape; self.rows = rows; self.values = values }
    }

    let classifier: Classifier
    let maxBatch: Int
    let maxDelay: TimeInterval
    let maxQueue: Int
    private let condition = NSCondition()
    private var queue: [Item] = []
    private var queuedRows = 0
    private(set) var runs = 0
    /// Rows run, and the microseconds the runs took (read under the lock by `stats`).
    private var rowsRun = 0
    private var computeMicroseconds = 0.0

    var stats: (runs: Int, rows: Int, computeMicroseconds: Double, queued: Int) {
        condition.lock(); defer { condition.unlock() }
        return (runs, rowsRun, computeMicroseconds, queuedRows)
    }

    init(classifier: Classifier, maxBatch: Int, maxDelayMicroseconds: Int, maxQueue: Int) {
        self.classifier = classifier
        self.maxBatch = max(1, maxBatch)
        maxDelay = Double(maxDelayMicroseconds) / 1e6
        self.maxQueue = max(1, maxQueue)
        let thread = Thread { [unowned self] in self.work() }
        thread.name = "kiln-serve.batcher"
        thread.start()
    }

    /// Runs `tensor` (batch first) through the queue; blocks until its rows are done. Throws `QueueFull`
    /// when the queue cannot take its rows now, or the run's `ClassifyError`.
    func run(_ tensor: Tensor) throws -> [Tensor] {
        let rows = tensor.shape.first ?? 1
        guard rows > 0, tensor.shape.count >= 1 else { return try classifier.run(tensor) }
        let rowShape = Array(tensor.shape.dropFirst())
        let rowSize = rowShape.reduce(1, *)
        var items: [Item] = []
        var start = 0
        while start < rows {
            let n = min(maxBatch, rows - start)
            items.append(Item(rowShape: rowShape, rows: n, values: tensor.values[start * rowSize..<(start + n) * rowSize]))
            start += n
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
        var parts: [[Tensor]] = []
        for item in items {
            item.done.wait()
            switch item.result! {
            case .success(let outputs): parts.append(outputs)
            case .failure(let error): throw error
            }
        }
        guard parts.count > 1 else { return parts[0] }
        return parts[0].indices.map { o in
            Tensor(shape: [rows] + Array(parts[0][o].shape.dropFirst()), values: parts.flatMap { $0[o].values })
        }
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
            while index < queue.count {
                let item = queue[index]
                if item.rowShape == shape && rows + item.rows <= maxBatch {
                    batch.append(item)
                    rows += item.rows
                    queue.remove(at: index)
                } else {
                    index += 1
                }
                if rows == maxBatch { break }
            }
            queuedRows -= rows
            runs += 1
            condition.unlock()
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
        do {
            let started = DispatchTime.now().uptimeNanoseconds
            let outputs = try classifier.run(input)
            let took = Double(DispatchTime.now().uptimeNanoseconds - started) / 1000
            condition.lock(); rowsRun += rows; computeMicroseconds += took; condition.unlock()
            var offset = 0
            for item in batch {
                item.result = .success(outputs.map { out in
                    let rowSize = out.shape.dropFirst().reduce(1, *)
                    return Tensor(shape: [item.rows] + Array(out.shape.dropFirst()),
                                  values: Array(out.values[offset * rowSize..<(offset + item.rows) * rowSize]))
                })
                offset += item.rows
            }
        } catch {
            // One bad request must not fail its batch mates: run each alone to find it.
            if batch.count > 1 {
                for item in batch { execute([item], rows: item.rows, rowShape: rowShape) }
                return
            }
            batch[0].result = .failure(error)
        }
        for item in batch where item.result != nil { item.done.signal() }
    }
}
