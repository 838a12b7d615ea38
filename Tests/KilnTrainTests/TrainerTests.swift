import Foundation
import Testing
import KilnTestSupport
import KilnKeras
import KilnGraph
import KilnKernels
@testable import KilnTrain

/// Three Gaussian blobs in 5 dimensions, seeded.
func blobs(perClass: Int, seed: UInt64, spread: Double = 0.6) -> (x: [Float], labels: [Int]) {
    var rng = SplitMix64(seed: seed)
    func gauss() -> Double {
        let u = max(rng.nextUniform(), 1e-12), v = rng.nextUniform()
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
    }
    let centres: [[Double]] = [[2, 0, 0, 1, 0], [0, 2, 0, -1, 0], [0, 0, 2, 0, 1]]
    var x: [Float] = [], labels: [Int] = []
    for c in 0..<3 {
        for _ in 0..<perClass {
            x += centres[c].map { Float($0 + spread * gauss()) }
            labels.append(c)
        }
    }
    return (x, labels)
}

func tempDir() throws -> String { try makeTemporaryDirectory(prefix: "kiln-train") }

@Suite struct SplitTests {
    @Test func stratifiedKeepsClassProportions() {
        let labels = [Int](repeating: 0, count: 50) + [Int](repeating: 1, count: 10) + [Int](repeating: 2, count: 3) + [2 + 1]
        let (train, val) = stratifiedSplit(labels: labels, classCount: 4, fraction: 0.2, seed: 7)
        #expect(Set(train).isDisjoint(with: val))
        #expect((train + val).sorted() == Array(labels.indices))
        let valCounts = (0..<4).map { c in val.filter { labels[$0] == c }.count }
        #expect(valCounts == [10, 2, 1, 0])  // round(50·0.2), round(10·0.2), at least 1 of 3, a class of one stays in training
        #expect(stratifiedSplit(labels: labels, classCount: 4, fraction: 0.2, seed: 7).validation == val)
        #expect(stratifiedSplit(labels: labels, classCount: 4, fraction: 0.2, seed: 8).validation != val)
    }
}

@Suite struct TrainerTests {
    @Test func deterministicForASeed() throws {
        let (x, labels) = blobs(perClass: 40, seed: 1)
        let (train, val) = stratifiedSplit(labels: labels, classCount: 3, fraction: 0.25, seed: 0)
        var s = HeadSettings()
        s.hidden = 8
        s.dropout = 0.2
        s.epochs = 20
        s.batch = 16
        s.l2 = 1e-3
        s.seed = 3
        let a = try HeadTrainer.train(x: x, inputs: 5, labels: labels, classCount: 3, train: train, validation: val, settings: s)
        let b = try HeadTrainer.train(x: x, inputs: 5, labels: labels, classCount: 3, train: train, validation: val, settings: s)
        #expect(a.head == b.head)
        #expect(a.history == b.history)
        s.seed = 4
        let c = try HeadTrainer.train(x: x, inputs: 5, labels: labels, classCount: 3, train: train, validation: val, settings: s)
        #expect(c.head != a.head)
    }

    /// One Adam step from known weights moves every weight by −lr·sign(g) (the first Adam step's size is lr
    /// for any gradient well above ε); the sign must be that of the true gradient, which is checked here
    /// against central finite differences of the loss computed independently in Double.
    @Test func gradientsMatchFiniteDifferences() throws {
        let (x, labels) = blobs(perClass: 4, seed: 2, spread: 1.5)
        let rows = Array(labels.indices)
        var s = HeadSettings()
        s.hidden = 4
        s.epochs = 1
        s.batch = rows.count  // one step over every row, in any order: the gradient does not depend on it
        s.l2 = 0.05
        s.learningRate = 1e-4
        s.balanced = true
        s.patience = nil
        // The initial weights: what the trainer draws first for this seed (Glorot uniform, one stream).
        let start = try HeadTrainer.train(x: x, inputs: 5, labels: labels, classCount: 3, train: rows, validation: [],
                                          settings: { var t = s; t.learningRate = 1e-30; return t }()).head
        let after = try HeadTrainer.train(x: x, inputs: 5, labels: labels, classCount: 3, train: rows, validation: [], settings: s).head
        // Class weights as balanced: n / (3 · 4) = 1 for equal classes; make the loss in Double.
        func loss(_ h: Head) -> Double {
            var total = 0.0
            for r in rows {
                var a = (0..<5).map { Double(x[r * 5 + $0]) }
                if let hid = h.hidden {
                    a = (0..<hid.units).map { j in max(0, Double(hid.bias[j]) + (0..<5).reduce(0.0) { $0 + a[$1] * Double(hid.kernel[$1 * hid.units + j]) }) }
                }
                let o = h.output
                let z = (0..<3).map { j in Double(o.bias[j]) + (0..<o.inputs).reduce(0.0) { $0 + a[$1] * Double(o.kernel[$1 * 3 + j]) } }
                let m = z.max()!
                let lse = m + log(z.map { exp($0 - m) }.reduce(0, +))
                total += lse - z[labels[r]]
            }
            var reg = 0.0
            for w in h.output.kernel { reg += Double(w) * Double(w) }
            for w in h.hidden!.kernel { reg += Double(w) * Double(w) }
            return total / Double(rows.count) + s.l2 * reg
        }
        var checked = 0
        func check(_ get: (Head) -> [Float], _ set: (inout Head, Int, Float) -> Void) {
            let w0 = get(start), w1 = get(after)
            for i in w0.indices {
                var plus = start, minus = start
                let eps: Float = 1e-3
                set(&plus, i, w0[i] + eps)
                set(&minus, i, w0[i] - eps)
                let g = (loss(plus) - loss(minus)) / (2 * Double(eps))
                guard abs(g) > 1e-3 else { continue }
                let step = Double(w1[i] - w0[i])
                #expect(abs(step + 1e-4 * (g > 0 ? 1 : -1)) < 2e-6, "weight \(i): step \(step), gradient \(g)")
                checked += 1
            }
        }
        check({ $0.hidden!.kernel }, { $0.hidden!.kernel[$1] = $2 })
        check({ $0.hidden!.bias }, { $0.hidden!.bias[$1] = $2 })
        check({ $0.output.kernel }, { $0.output.kernel[$1] = $2 })
        check({ $0.output.bias }, { $0.output.bias[$1] = $2 })
        #expect(checked > 20)
    }

    @Test func earlyStoppingKeepsTheBestEpoch() throws {
        let (x, labels) = blobs(perClass: 30, seed: 5, spread: 2.0)
        let (train, val) = stratifiedSplit(labels: labels, classCount: 3, fraction: 0.3, seed: 0)
        var s = HeadSettings()
        s.hidden = 64
        s.epochs = 300
        s.learningRate = 0.01
        s.patience = 5
        let r = try HeadTrainer.train(x: x, inputs: 5, labels: labels, classCount: 3, train: train, validation: val, settings: s)
        #expect(r.stoppedEarly)
        #expect(r.history.count == r.bestEpoch + 5)
        let best = r.history.map { $0.validationLoss! }.min()!
        #expect(r.history[r.bestEpoch - 1].validationLoss == best)
        // The kept head is that epoch's: its validation loss (+ the L2 term, 0 here) is the recorded one.
        let (vl, va) = HeadTrainer.evaluate(r.head, x: x, inputs: 5, labels: labels, rows: val)
        #expect(abs(vl - best) < 1e-9)
        #expect(va == r.history[r.bestEpoch - 1].validationAccuracy)
    }

    @Test func singleClassIsRejected() {
        #expect(throws: TrainingError("a classifier needs at least two classes, there is 1")) {
            try HeadTrainer.train(x: [1, 2], inputs: 1, labels: [0, 0], classCount: 1, train: [0, 1], validation: [], settings: HeadSettings())
        }
    }

    @Test func classReportCountsAndRatios() {
        let r = ClassificationReport(truth: [0, 0, 1, 1, 1, 2], predicted: [0, 1, 1, 1, 0, 1], classCount: 3)
        #expect(r.confusion == [[1, 1, 0], [1, 2, 0], [0, 1, 0]])
        #expect(r.precision[0] == 0.5 && r.precision[1] == 0.5 && r.precision[2] == nil)
        #expect(r.recall[0] == 0.5 && r.recall[1] == 2.0 / 3 && r.recall[2] == 0)
        #expect(r.accuracy == 0.5)
    }
}

@Suite struct KerasHeadExportTests {
    /// The written file has Keras' legacy layout, and kiln's own Keras importer reads the same weights back.
    @Test(arguments: [false, true]) func writesKerasLegacyLayout(hidden: Bool) throws {
        let (x, labels) = blobs(perClass: 10, seed: 9)
        var s = HeadSettings()
        s.hidden = hidden ? 6 : nil
        s.dropout = hidden ? 0.25 : 0
        s.epochs = 3
        let r = try HeadTrainer.train(x: x, inputs: 5, labels: labels, classCount: 3, train: Array(labels.indices), validation: [], settings: s)
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/head.h5"
        try KerasHeadExport.write(r.head, to: path, backbone: "kiln-backbone/1 test", classNames: ["a", "b, \"c\"", "δ"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["head.h5"])
        let f = try HDF5File(path: path)
        #expect(try f.stringAttribute("keras_version") == "3.15.1")
        #expect(try f.stringAttribute("kiln_backbone") == "kiln-backbone/1 test")
        #expect(try KerasHeadExport.recordedClassNames(path: path) == ["a", "b, \"c\"", "δ"])
        let names = try f.group(at: "model_weights").stringArrayAttribute("layer_names")
        #expect(names == (hidden ? ["hidden", "dropout", "classes"] : ["classes"]))
        #expect(try f.group(at: "model_weights/classes").stringArrayAttribute("weight_names") == ["kiln_head/classes/kernel", "kiln_head/classes/bias"])
        #expect(try f.dataset(at: "model_weights/classes/kiln_head/classes/kernel").shape == [hidden ? 6 : 5, 3])
        let config = try #require(try f.stringAttribute("model_config"))
        #expect(try JSONSerialization.jsonObject(with: Data(config.utf8)) is [String: Any])

        let graph = try KerasImporter.importModel(path: path, configPath: nil)
        let dense = graph.nodes.compactMap { n -> DenseSpec? in if case .dense(let d) = n.op { return d } else { return nil } }
        #expect(dense.count == (hidden ? 2 : 1))
        #expect(dense.last!.kernel.values == r.head.output.kernel)
        #expect(dense.last!.bias!.values == r.head.output.bias)
        if hidden { #expect(dense[0].kernel.values == r.head.hidden!.kernel) }
    }
}

@Suite struct StandardizeTests {
    /// Training with --standardize on features of a wild scale and offset gives the head that training on the
    /// standardized features gives, with the standardization folded into its first layer.
    @Test(arguments: [nil, 6] as [Int?]) func foldedHeadTakesRawFeatures(hidden: Int?) throws {
        let (z0, labels) = blobs(perClass: 30, seed: 11)
        let scale: [Float] = [300, 0.01, 7, 50, 1], offset: [Float] = [1000, -3, 0, 20, 5]
        let x = z0.enumerated().map { i, v in v * scale[i % 5] + offset[i % 5] }
        let (train, val) = stratifiedSplit(labels: labels, classCount: 3, fraction: 0.2, seed: 0)
        var s = HeadSettings()
        s.hidden = hidden
        s.epochs = 15
        s.standardize = true
        let folded = try HeadTrainer.train(x: x, inputs: 5, labels: labels, classCount: 3, train: train, validation: val, settings: s)
        let (mean, std) = HeadTrainer.columnStatistics(x, inputs: 5, rows: train)
        let z = x.enumerated().map { i, v in Float((Double(v) - mean[i % 5]) / std[i % 5]) }
        s.standardize = false
        let plain = try HeadTrainer.train(x: z, inputs: 5, labels: labels, classCount: 3, train: train, validation: val, settings: s)
        #expect(folded.history == plain.history)
        let a = folded.head.predict(x, rows: labels.count), b = plain.head.predict(z, rows: labels.count)
        #expect(zip(a, b).map { abs($0 - $1) }.max()! < 1e-4)
    }
}
