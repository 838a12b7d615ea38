import COpenBLAS
import KilnKernels
import Foundation

/// The settings of a head: `[Dense(hidden, relu)] → Dropout(dropout) → Dense(classes, softmax)`, trained with
/// Adam on (class-weighted) cross-entropy plus `l2 · Σ w²` over the kernels, as Keras computes it.
public struct HeadSettings: Sendable, Equatable {
    public var hidden: Int? = nil
    public var epochs = 50
    public var batch = 32
    public var learningRate = 1e-3
    public var l2 = 0.0
    public var dropout = 0.0
    public var balanced = false
    public var validationFraction = 0.2
    public var seed: UInt64 = 0
    /// Stop after this many epochs without a lower validation loss; nil: run every epoch. The weights of the
    /// epoch with the lowest validation loss are kept either way.
    public var patience: Int? = 10
    /// Train on features standardized with the training rows' mean and standard deviation, then fold the
    /// standardization into the first layer, so the saved head still takes the raw features.
    public var standardize = false
    public init() {}
}

public struct EpochRecord: Sendable, Equatable {
    public var epoch: Int
    public var loss: Double
    public var accuracy: Double
    public var validationLoss: Double?
    public var validationAccuracy: Double?
}

/// A dense layer's weights: kernel [inputs, units] row-major (Keras' layout), bias [units].
public struct DenseWeights: Sendable, Equatable {
    public var inputs: Int
    public var units: Int
    public var kernel: [Float]
    public var bias: [Float]
}

/// A trained (or training) head.
public struct Head: Sendable, Equatable {
    public var hidden: DenseWeights?
    public var output: DenseWeights
    public var dropout: Double

    public var inputCount: Int { hidden?.inputs ?? output.inputs }
    public var classCount: Int { output.units }

    /// Class probabilities [rows, classes] for `x` [rows, inputs] (inference: no dropout).
    public func predict(_ x: [Float], rows: Int) -> [Float] {
        var a = x
        var width = inputCount
        if let h = hidden {
            a = denseForward(a, rows: rows, layer: h)
            for i in a.indices where a[i] < 0 { a[i] = 0 }
            width = h.units
        }
        precondition(width == output.inputs)
        var logits = denseForward(a, rows: rows, layer: output)
        softmaxRows(&logits, rows: rows, columns: output.units)
        return logits
    }
}

extension Head {
    /// Makes the head take raw features x where it was trained on (x − mean) / std: the first layer's kernel
    /// rows are divided by std and its bias absorbs −Σ mean·w/std (computed in Double).
    mutating func foldStandardization(mean: [Double], std: [Double]) {
        var layer = hidden ?? output
        for j in 0..<layer.units {
            var shift = 0.0
            for i in 0..<layer.inputs {
                let w = Double(layer.kernel[i * layer.units + j]) / std[i]
                layer.kernel[i * layer.units + j] = Float(w)
                shift += mean[i] * w
            }
            layer.bias[j] = Float(Double(layer.bias[j]) - shift)
        }
        if hidden != nil { hidden = layer } else { output = layer }
    }
}

func denseForward(_ x: [Float], rows: Int, layer: DenseWeights) -> [Float] {
    var out = [Float](repeating: 0, count: rows * layer.units)
    guard rows > 0 else { return out }
    for r in 0..<rows { for j in 0..<layer.units { out[r * layer.units + j] = layer.bias[j] } }
    x.withUnsafeBufferPointer { xp in
        layer.kernel.withUnsafeBufferPointer { wp in
            out.withUnsafeMutableBufferPointer { op in
                sgemm(transA: false, transB: false, m: rows, n: layer.units, k: layer.inputs, a: xp.baseAddress!,
                      b: wp.baseAddress!, beta: 1, c: op.baseAddress!)
            }
        }
    }
    return out
}

func softmaxRows(_ z: inout [Float], rows: Int, columns: Int) {
    for r in 0..<rows {
        let base = r * columns
        var m = -Float.infinity
        for j in 0..<columns { m = max(m, z[base + j]) }
        var s: Float = 0
        for j in 0..<columns { let e = expf(z[base + j] - m); z[base + j] = e; s += e }
        for j in 0..<columns { z[base + j] /= s }
    }
}

public struct TrainingError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The result of training: the head with the lowest validation loss, the history, which epoch that was.
public struct TrainingResult: Sendable {
    public var head: Head
    public var history: [EpochRecord]
    public var bestEpoch: Int
    public var stoppedEarly: Bool
    public var classWeights: [Double]
}

/// Trains a head with Adam (β1 0.9, β2 0.999, ε 1e-7, Keras' defaults) on mini-batches shuffled every epoch.
/// Deterministic for a seed: initialisation (Glorot uniform kernels, zero biases, as Keras), shuffling and
/// dropout masks all come from one SplitMix64 stream.
public enum HeadTrainer {
    public static func train(x: [Float], inputs: Int, labels: [Int], classCount: Int, train trainRows: [Int],
                             validation valRows: [Int], settings s: HeadSettings,
                             onEpoch: (EpochRecord) -> Void = { _ in }) throws(TrainingError) -> TrainingResult {
        guard classCount >= 2 else { throw TrainingError("a classifier needs at least two classes, there is \(classCount)") }
        guard !trainRows.isEmpty else { throw TrainingError("no training rows") }
        guard s.batch >= 1, s.epochs >= 1 else { throw TrainingError("epochs and batch must be positive") }
        if s.standardize {
            let (mean, std) = columnStatistics(x, inputs: inputs, rows: trainRows)
            var z = x
            let n = x.count / inputs
            for r in 0..<n { for j in 0..<inputs { z[r * inputs + j] = Float((Double(x[r * inputs + j]) - mean[j]) / std[j]) } }
            var plain = s
            plain.standardize = false
            var result = try train(x: z, inputs: inputs, labels: labels, classCount: classCount, train: trainRows, validation: valRows,
                                   settings: plain, onEpoch: onEpoch)
            result.head.foldStandardization(mean: mean, std: std)
            return result
        }
        var rng = SplitMix64(seed: s.seed)
        // Denormals flushed, as TensorFlow trains: late in training, tiny gradients and moments otherwise make
        // every step many times slower (kiln-train-bench's Dense(256) head: 113 s for 50 epochs, 15 s flushed).
        let floatMode = flushDenormals()
        defer { restoreFloatMode(floatMode) }
        // The products here are small (a batch of rows × a few thousand features × the classes): those that fall
        // to OpenBLAS (the narrow and small ones, every one on CPUs without AVX2) run faster on one of its threads
        // than on several waking and waiting for each other. Restored on return.
        let blasThreads = openblas_get_num_threads()
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(blasThreads) }

        // Class weights, Keras/scikit-learn "balanced": n / (classes · count[c]) over the training rows.
        var counts = [Int](repeating: 0, count: classCount)
        for r in trainRows { counts[labels[r]] += 1 }
        let present = counts.filter { $0 > 0 }.count
        let classWeights: [Double] = counts.map { c in
            guard s.balanced, c > 0 else { return 1 }
            return Double(trainRows.count) / (Double(present) * Double(c))
        }

        func glorot(_ fanIn: Int, _ fanOut: Int) -> DenseWeights {
            let limit = (6.0 / Double(fanIn + fanOut)).squareRoot()
            let kernel = (0..<fanIn * fanOut).map { _ in Float((rng.nextUniform() * 2 - 1) * limit) }
            return DenseWeights(inputs: fanIn, units: fanOut, kernel: kernel, bias: [Float](repeating: 0, count: fanOut))
        }
        var head: Head
        if let h = s.hidden {
            let hidden = glorot(inputs, h)
            head = Head(hidden: hidden, output: glorot(h, classCount), dropout: s.dropout)
        } else {
            head = Head(hidden: nil, output: glorot(inputs, classCount), dropout: s.dropout)
        }

        // Parameters as flat buffers: [hidden kernel, hidden bias,] output kernel, output bias.
        var adam = AdamState(sizes: paramSizes(head), learningRate: s.learningRate)
        let h = head.hidden?.units ?? 0
        let lastWidth = head.output.inputs
        let maxB = min(s.batch, trainRows.count)
        var xb = [Float](repeating: 0, count: maxB * inputs)
        var z1 = [Float](repeating: 0, count: maxB * h)
        var a = [Float](repeating: 0, count: maxB * lastWidth)  // input of the output layer (after dropout)
        var g = [Float](repeating: 0, count: maxB * classCount)
        var da = [Float](repeating: 0, count: maxB * lastWidth)
        var mask = [Float](repeating: 1, count: maxB * lastWidth)
        var grads = paramSizes(head).map { [Float](repeating: 0, count: $0) }

        var history: [EpochRecord] = []
        var best = head, bestLoss = Double.infinity, bestEpoch = 0, sinceBest = 0, stoppedEarly = false
        var order = trainRows
        let keep = 1 - s.dropout
        for epoch in 1...s.epochs {
            rng.shuffle(&order)
            var lossSum = 0.0, correct = 0
            var start = 0
            while start < order.count {
                let b = min(s.batch, order.count - start)
                // Gather the batch.
                x.withUnsafeBufferPointer { xp in
                    for i in 0..<b {
                        let src = order[start + i] * inputs
                        for j in 0..<inputs { xb[i * inputs + j] = xp[src + j] }
                    }
                }
                // Forward: hidden layer, dropout, output layer, softmax.
                if let hid = head.hidden {
                    fill(&z1, rows: b, bias: hid.bias)
                    gemmInto(xb, hid.kernel, &z1, m: b, n: h, k: inputs, transA: false, transB: false, beta: 1)
                    for i in 0..<b * h { a[i] = max(z1[i], 0) }
                } else {
                    for i in 0..<b * inputs { a[i] = xb[i] }
                }
                if s.dropout > 0 {
                    for i in 0..<b * lastWidth {
                        mask[i] = rng.nextUniform() < s.dropout ? 0 : Float(1 / keep)
                        a[i] *= mask[i]
                    }
                }
                fill(&g, rows: b, bias: head.output.bias)
                gemmInto(a, head.output.kernel, &g, m: b, n: classCount, k: lastWidth, transA: false, transB: false, beta: 1)
                softmaxRows(&g, rows: b, columns: classCount)
                // Loss and the gradient of the logits: w_y (p − onehot) / b.
                for i in 0..<b {
                    let y = labels[order[start + i]]
                    let w = classWeights[y]
                    var argmax = 0
                    for c in 1..<classCount where g[i * classCount + c] > g[i * classCount + argmax] { argmax = c }
                    if argmax == y { correct += 1 }
                    lossSum += -w * log(max(Double(g[i * classCount + y]), 1e-7))
                    for c in 0..<classCount {
                        g[i * classCount + c] = Float(w) * (g[i * classCount + c] - (c == y ? 1 : 0)) / Float(b)
                    }
                }
                // Backward.
                let oK = head.hidden == nil ? 0 : 2
                gemmInto(a, g, &grads[oK], m: lastWidth, n: classCount, k: b, transA: true, transB: false, beta: 0)
                colSums(g, rows: b, columns: classCount, into: &grads[oK + 1])
                if let hid = head.hidden {
                    gemmInto(g, head.output.kernel, &da, m: b, n: h, k: classCount, transA: false, transB: true, beta: 0)
                    for i in 0..<b * h { da[i] = z1[i] > 0 ? da[i] * mask[i] : 0 }
                    gemmInto(xb, da, &grads[0], m: inputs, n: h, k: b, transA: true, transB: false, beta: 0)
                    colSums(da, rows: b, columns: h, into: &grads[1])
                    if s.l2 > 0 { addL2(&grads[0], hid.kernel, s.l2) }
                }
                if s.l2 > 0 { addL2(&grads[oK], head.output.kernel, s.l2) }
                adam.step(head: &head, grads: grads)
                start += b
            }
            let reg = s.l2 * l2Sum(head)
            // Keras reports the mean over batches of the batch losses; with equal batches this is the mean.
            var record = EpochRecord(epoch: epoch, loss: lossSum / Double(order.count) + reg,
                                     accuracy: Double(correct) / Double(order.count), validationLoss: nil, validationAccuracy: nil)
            if !valRows.isEmpty {
                let (vl, va) = evaluate(head, x: x, inputs: inputs, labels: labels, rows: valRows)
                record.validationLoss = vl + reg
                record.validationAccuracy = va
            }
            history.append(record)
            onEpoch(record)
            let monitored = record.validationLoss ?? record.loss
            if monitored < bestLoss {
                bestLoss = monitored; best = head; bestEpoch = epoch; sinceBest = 0
            } else {
                sinceBest += 1
                if let p = s.patience, !valRows.isEmpty, sinceBest >= p { stoppedEarly = true; break }
            }
        }
        if valRows.isEmpty { best = head; bestEpoch = history.count }
        return TrainingResult(head: best, history: history, bestEpoch: bestEpoch, stoppedEarly: stoppedEarly, classWeights: classWeights)
    }

    /// Mean cross-entropy (unweighted) and accuracy of `head` on `rows`.
    public static func evaluate(_ head: Head, x: [Float], inputs: Int, labels: [Int], rows: [Int]) -> (loss: Double, accuracy: Double) {
        let p = predictRows(head, x: x, inputs: inputs, rows: rows)
        let c = head.classCount
        var loss = 0.0, correct = 0
        for (i, r) in rows.enumerated() {
            let y = labels[r]
            loss += -log(max(Double(p[i * c + y]), 1e-7))
            if argmax(p, row: i, columns: c) == y { correct += 1 }
        }
        return (loss / Double(rows.count), Double(correct) / Double(rows.count))
    }

    public static func predictRows(_ head: Head, x: [Float], inputs: Int, rows: [Int]) -> [Float] {
        var sub = [Float](repeating: 0, count: rows.count * inputs)
        for (i, r) in rows.enumerated() { for j in 0..<inputs { sub[i * inputs + j] = x[r * inputs + j] } }
        return head.predict(sub, rows: rows.count)
    }

    /// Per-column mean and standard deviation (population, as numpy's std) over `rows`, in Double; a constant
    /// column gets 1 (it is only centred).
    static func columnStatistics(_ x: [Float], inputs: Int, rows: [Int]) -> ([Double], [Double]) {
        var mean = [Double](repeating: 0, count: inputs), sq = [Double](repeating: 0, count: inputs)
        for r in rows { for j in 0..<inputs { mean[j] += Double(x[r * inputs + j]) } }
        for j in 0..<inputs { mean[j] /= Double(rows.count) }
        for r in rows { for j in 0..<inputs { let d = Double(x[r * inputs + j]) - mean[j]; sq[j] += d * d } }
        let std = sq.map { v -> Double in let sd = (v / Double(rows.count)).squareRoot(); return sd > 1e-12 ? sd : 1 }
        return (mean, std)
    }

    static func paramSizes(_ head: Head) -> [Int] {
        var sizes: [Int] = []
        if let h = head.hidden { sizes += [h.kernel.count, h.bias.count] }
        sizes += [head.output.kernel.count, head.output.bias.count]
        return sizes
    }

    static func l2Sum(_ head: Head) -> Double {
        var s = 0.0
        for w in head.output.kernel { s += Double(w) * Double(w) }
        if let h = head.hidden { for w in h.kernel { s += Double(w) * Double(w) } }
        return s
    }
}

public func argmax(_ p: [Float], row: Int, columns: Int) -> Int {
    var best = 0
    for c in 1..<columns where p[row * columns + c] > p[row * columns + best] { best = c }
    return best
}

private func fill(_ out: inout [Float], rows: Int, bias: [Float]) {
    let n = bias.count
    for r in 0..<rows { for j in 0..<n { out[r * n + j] = bias[j] } }
}

private func gemmInto(_ a: [Float], _ b: [Float], _ c: inout [Float], m: Int, n: Int, k: Int, transA: Bool, transB: Bool, beta: Float) {
    a.withUnsafeBufferPointer { ap in
        b.withUnsafeBufferPointer { bp in
            c.withUnsafeMutableBufferPointer { cp in
                sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!,
                      beta: beta, c: cp.baseAddress!)
            }
        }
    }
}

private func colSums(_ g: [Float], rows: Int, columns: Int, into out: inout [Float]) {
    for j in 0..<columns { out[j] = 0 }
    for r in 0..<rows { for j in 0..<columns { out[j] += g[r * columns + j] } }
}

private func addL2(_ grad: inout [Float], _ w: [Float], _ l2: Double) {
    let f = Float(2 * l2)
    for i in grad.indices { grad[i] += f * w[i] }
}

/// Adam, as Keras 3 computes it: m ← m + (g − m)(1 − β1), v ← v + (g² − v)(1 − β2),
/// w ← w − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε).
struct AdamState {
    var m: [[Float]], v: [[Float]]
    var t = 0
    let lr: Double
    let beta1 = 0.9, beta2 = 0.999, epsilon: Float = 1e-7

    init(sizes: [Int], learningRate: Double) {
        m = sizes.map { [Float](repeating: 0, count: $0) }
        v = m
        lr = learningRate
    }

    mutating func step(head: inout Head, grads: [[Float]]) {
        t += 1
        let alpha = Float(lr * (1 - pow(beta2, Double(t))).squareRoot() / (1 - pow(beta1, Double(t))))
        let b1 = Float(1 - beta1), b2 = Float(1 - beta2), eps = epsilon
        func update(_ w: inout [Float], _ i: Int) {
            let g = grads[i]
            m[i].withUnsafeMutableBufferPointer { mp in
                v[i].withUnsafeMutableBufferPointer { vp in
                    w.withUnsafeMutableBufferPointer { wp in
                        for j in 0..<wp.count {
                            let gj = g[j]
                            mp[j] += (gj - mp[j]) * b1
                            vp[j] += (gj * gj - vp[j]) * b2
                            wp[j] -= alpha * mp[j] / (vp[j].squareRoot() + eps)
                        }
                    }
                }
            }
        }
        var k = 0
        if head.hidden != nil {
            update(&head.hidden!.kernel, 0)
            update(&head.hidden!.bias, 1)
            k = 2
        }
        update(&head.output.kernel, k)
        update(&head.output.bias, k + 1)
    }
}

/// Per-class precision and recall and the confusion matrix (rows: true class, columns: predicted).
public struct ClassificationReport: Sendable {
    public var confusion: [[Int]]
    public var precision: [Double?]
    public var recall: [Double?]
    public var accuracy: Double

    public init(truth: [Int], predicted: [Int], classCount: Int) {
        var m = [[Int]](repeating: [Int](repeating: 0, count: classCount), count: classCount)
        for (t, p) in zip(truth, predicted) { m[t][p] += 1 }
        confusion = m
        precision = (0..<classCount).map { c in
            let col = (0..<classCount).reduce(0) { $0 + m[$1][c] }
            return col == 0 ? nil : Double(m[c][c]) / Double(col)
        }
        recall = (0..<classCount).map { c in
            let row = m[c].reduce(0, +)
            return row == 0 ? nil : Double(m[c][c]) / Double(row)
        }
        accuracy = truth.isEmpty ? 0 : Double(zip(truth, predicted).filter { $0 == $1 }.count) / Double(truth.count)
    }
}
