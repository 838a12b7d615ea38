import ArgumentParser
import Foundation
import KilnFormat
import KilnRuntime
import KilnTrain

enum ClassWeightChoice: String, ExpressibleByArgument {
    case none, balanced
}

struct TrainHead: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-head",
        abstract: "Train a softmax head on features from `kiln features` and save it as a Keras .h5.",
        discussion: """
            The head is [Dense(hidden, relu)] → [Dropout] → Dense(classes, softmax), trained with Adam on \
            cross-entropy (+ l2·Σw² over the kernels, as a Keras l2 regularizer) on a stratified train/validation \
            split, with early stopping on the validation loss; the weights of the best epoch are kept. The same \
            seed gives the same head. Prints a per-epoch table, then per-class precision/recall and the confusion \
            matrix on the validation set. Writes HEAD (Keras 3 legacy .h5: keras.models.load_model opens it, \
            kiln fuse takes it and checks that the backbone is the one the features came from), and beside it \
            <HEAD>.history.csv, <HEAD>.curves.svg and <HEAD>.confusion.svg. A features file with a 'split' array \
            (0 train, 1 validation) imposes that split. --baseline trains the same head on the images' \
            downscaled raw pixels instead, to show what the backbone's features buy.
            """)

    @Argument(help: "The features file (.npz from kiln features).")
    var features: String

    @Option(name: .shortAndLong, help: "The head to write (.h5).")
    var output: String

    @Option(name: .long, help: "Units of a hidden ReLU layer (default: none, a plain softmax head).")
    var hidden: Int?

    @Option(name: .long, help: "Epochs at most.")
    var epochs: Int = 50

    @Option(name: .long, help: "Mini-batch size.")
    var batch: Int = 32

    @Option(name: .long, help: "Adam learning rate.")
    var lr: Double = 1e-3

    @Option(name: .long, help: "L2 penalty: l2·Σw² over the kernels is added to the loss.")
    var l2: Double = 0

    @Option(name: .long, help: "Dropout rate before the output layer.")
    var dropout: Double = 0

    @Option(name: .long, help: "Class weights: none or balanced (n / (classes · count)).")
    var classWeight: ClassWeightChoice = .none

    @Option(name: .long, help: "Fraction of each class held out for validation.")
    var valSplit: Double = 0.2

    @Option(name: .long, help: "Seed of the split, the initial weights, the shuffling and dropout.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Stop after this many epochs without a lower validation loss (0: never stop early).")
    var patience: Int = 10

    @Flag(name: .long, help: "Standardize each feature (training rows' mean and std) while training; folded into the saved head's first layer.")
    var standardize = false

    @Flag(name: .long, help: "Train on the images' downscaled raw pixels instead of the features.")
    var baseline = false

    @Option(name: .long, help: "Also write the head's class probabilities for every row of FEATURES (.npy).")
    var predictions: String?

    @Flag(name: .long, help: "Print only the summary, not the per-epoch table.")
    var quiet = false

    func validate() throws {
        if let hidden { guard hidden >= 1, hidden <= 65536 else { throw ValidationError("--hidden must be in 1...65536") } }
        guard epochs >= 1, epochs <= 100_000 else { throw ValidationError("--epochs must be in 1...100000") }
        guard batch >= 1 else { throw ValidationError("--batch must be positive") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive") }
        guard l2 >= 0, l2.isFinite else { throw ValidationError("--l2 must be 0 or more") }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout must be in [0, 1)") }
        guard valSplit >= 0, valSplit < 1 else { throw ValidationError("--val-split must be in [0, 1)") }
        guard patience >= 0 else { throw ValidationError("--patience must be 0 or more") }
        guard output.lowercased().hasSuffix(".h5") else { throw ValidationError("-o must name a .h5 file (Keras legacy HDF5)") }
    }

    func run() throws {
        // Every file it writes, before training: the head, its reports beside it, the predictions.
        try BundleWriter.checkWritable(output)
        if let predictions { try BundleWriter.checkWritable(predictions) }
        let set = try FeatureSet.read(path: features)
        let name = (features as NSString).lastPathComponent
        let classes = set.classNames.count
        var present = [Int](repeating: 0, count: classes)
        for l in set.labels { present[l] += 1 }
        guard set.count > 0 else { throw CLIError(.badInput, "\(name): no rows") }
        let used = present.filter { $0 > 0 }.count
        guard classes >= 2, used >= 2 else {
            throw CLIError(.badInput, "\(name): only one class (\(set.classNames.first ?? "?")) has examples; a classifier needs at least two")
        }
        if let empty = present.firstIndex(of: 0) {
            throw CLIError(.badInput, "\(name): class '\(set.classNames[empty])' has no examples")
        }
        let x: [Float], inputs: Int, identity: String?
        if baseline {
            guard set.pixelCount > 0 else { throw CLIError(.badInput, "\(name): no 'pixels' array for --baseline (features not written by kiln features)") }
            x = set.pixels
            inputs = set.pixelCount
            let side = Int((Double(inputs / 3)).squareRoot())
            identity = "baseline raw pixels \(side)x\(side) RGB / 255"
        } else {
            x = set.features
            inputs = set.featureCount
            identity = set.backbone
        }
        if let bad = x.firstIndex(where: { !$0.isFinite }) {
            throw CLIError(.badInput, "\(name): row \(bad / max(inputs, 1)) (\(set.files[bad / max(inputs, 1)])) holds a non-finite value")
        }
        let train: [Int], val: [Int]
        if let split = set.split {
            train = split.indices.filter { split[$0] == 0 }
            val = split.indices.filter { split[$0] == 1 }
            print("split: imposed by \(name)'s 'split' array: \(train.count) train, \(val.count) validation")
        } else {
            (train, val) = stratifiedSplit(labels: set.labels, classCount: classes, fraction: valSplit, seed: seed)
            print("split: stratified, seed \(seed): \(train.count) train, \(val.count) validation")
        }
        var s = HeadSettings()
        s.hidden = hidden
        s.epochs = epochs
        s.batch = batch
        s.learningRate = lr
        s.l2 = l2
        s.dropout = dropout
        s.balanced = classWeight == .balanced
        s.validationFraction = valSplit
        s.seed = seed
        s.patience = patience == 0 ? nil : patience
        s.standardize = standardize
        print("head: \(inputs) \(baseline ? "pixels" : "features") → \(hidden.map { "Dense(\($0), relu) → " } ?? "")\(dropout > 0 ? "Dropout(\(dropout)) → " : "")Dense(\(classes), softmax)\(standardize ? " on standardized inputs (folded into the saved head)" : ""); Adam lr \(lr), batch \(batch), l2 \(l2), class weights \(classWeight.rawValue)")
        if !quiet { print("epoch      loss  accuracy  val_loss  val_accuracy") }
        let started = Date()
        let result = try HeadTrainer.train(x: x, inputs: inputs, labels: set.labels, classCount: classes, train: train, validation: val,
                                           settings: s) { r in
            guard !quiet else { return }
            let vl = r.validationLoss.map { String(format: "%9.4f", $0) } ?? "        -"
            let va = r.validationAccuracy.map { String(format: "%13.4f", $0) } ?? "            -"
            print(String(format: "%5d  %8.4f  %8.4f", r.epoch, r.loss, r.accuracy) + " \(vl) \(va)")
        }
        let seconds = Date().timeIntervalSince(started)
        let kept = result.history[result.bestEpoch - 1]
        print(String(format: "trained %d epochs in %.2f s%@; kept epoch %d", result.history.count, seconds,
                     result.stoppedEarly ? " (early stop: no better val_loss for \(patience) epochs)" : "", result.bestEpoch) +
              (kept.validationLoss.map { String(format: " (val_loss %.4f, val_accuracy %.4f)", $0, kept.validationAccuracy ?? 0) } ?? ""))

        // Metrics on the validation rows (the training rows if there is no validation set).
        let rows = val.isEmpty ? train : val
        let probs = HeadTrainer.predictRows(result.head, x: x, inputs: inputs, rows: rows)
        let predicted = rows.indices.map { argmax(probs, row: $0, columns: classes) }
        let report = ClassificationReport(truth: rows.map { set.labels[$0] }, predicted: predicted, classCount: classes)
        printReport(report, classNames: set.classNames, on: val.isEmpty ? "training" : "validation")

        // Outputs: the head first, then its companions, each written atomically.
        try KerasHeadExport.write(result.head, to: output, backbone: identity, classNames: set.classNames)
        let stem = output.lowercased().hasSuffix(".h5") ? String(output.dropLast(3)) : output
        try writeText(Reports.historyCSV(result.history), stem + ".history.csv")
        let title = "\(name)\(baseline ? " (baseline: raw pixels)" : ""): kept epoch \(result.bestEpoch)"
        try writeText(Reports.learningCurvesSVG(result.history, bestEpoch: result.bestEpoch, title: title), stem + ".curves.svg")
        try writeText(Reports.confusionSVG(report, classNames: set.classNames, title: "\(name): confusion matrix (\(val.isEmpty ? "training" : "validation") rows)"), stem + ".confusion.svg")
        if let predictions {
            let all = result.head.predict(x, rows: set.count)
            try NPY.write(Tensor(shape: [set.count, classes], values: all), to: predictions)
        }
        print("wrote \(output) (Keras .h5\(identity.map { _ in ", backbone recorded" } ?? "")), \(stem).history.csv, \(stem).curves.svg, \(stem).confusion.svg")
        if identity == nil { note("\(name) records no backbone identity: kiln fuse cannot check that the backbone matches") }
    }

    func writeText(_ text: String, _ path: String) throws {
        let tmp = path + ".tmp-\(getpid())"
        do {
            try text.write(toFile: tmp, atomically: false, encoding: .utf8)
            guard rename(tmp, path) == 0 else { throw CLIError(.badInput, "\(path): cannot rename into place") }
        } catch {
            unlink(tmp)
            throw CLIError(.badInput, "\(path): cannot write (\(error))")
        }
    }

    func printReport(_ r: ClassificationReport, classNames: [String], on what: String) {
        let w = max(5, classNames.map(\.count).max() ?? 5)
        print("")
        print(String(format: "%@ accuracy %.2f%% (%d rows)", what, 100 * r.accuracy, r.confusion.reduce(0) { $0 + $1.reduce(0, +) }))
        print("class".padding(toLength: w, withPad: " ", startingAt: 0) + "  precision  recall  support")
        for (c, n) in classNames.enumerated() {
            let p = r.precision[c].map { String(format: "%9.3f", $0) } ?? "        -"
            let rc = r.recall[c].map { String(format: "%6.3f", $0) } ?? "     -"
            print(n.padding(toLength: w, withPad: " ", startingAt: 0) + "  \(p)  \(rc)  \(String(r.confusion[c].reduce(0, +)).leftPaddedSpaces(7))")
        }
        print("")
        print("confusion matrix (rows: true class, columns: predicted, in class order)")
        let cw = max(3, String(r.confusion.flatMap { $0 }.max() ?? 0).count + 1)
        print("".padding(toLength: w, withPad: " ", startingAt: 0) + " " + (0..<classNames.count).map { String($0).leftPaddedSpaces(cw) }.joined())
        for (c, n) in classNames.enumerated() {
            print(n.padding(toLength: w, withPad: " ", startingAt: 0) + " " + r.confusion[c].map { String($0).leftPaddedSpaces(cw) }.joined())
        }
        print("")
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("kiln train-head: \(text)\n".utf8))
    }
}
