import Foundation
import Testing
import KilnRuntime
@testable import KilnTrain

/// The fixtures of scripts/fixtures-train (KILN_TRAIN_FIXTURES): features, a split, and the validation
/// accuracies of Keras and scikit-learn; KILN_PYTHON runs Keras on kiln's written head. `make test` sets both
/// and KILN_REQUIRE_FIXTURES=1, which turns missing fixtures into failures.
enum TrainFixtures {
    static let env = ProcessInfo.processInfo.environment
    static var folder: String? { env["KILN_TRAIN_FIXTURES"].flatMap { $0.isEmpty ? nil : $0 } }
    static var python: String? { env["KILN_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } }
    static var required: Bool { env["KILN_REQUIRE_FIXTURES"] == "1" }
    static var enabled: Bool { folder != nil || required }
    static var repoRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    struct Results: Decodable {
        struct Settings: Decodable { var epochs: Int; var batch: Int; var lr: Double; var l2: Double; var seed: Int }
        struct SetResult: Decodable { var settings: Settings; var keras_val_accuracy: Double; var sklearn_val_accuracy: Double; var validation_rows: Int }
        var sets: [String: SetResult]
    }

    static func results() throws -> Results {
        let dir = try #require(folder, "KILN_TRAIN_FIXTURES is not set (make test sets it)")
        return try JSONDecoder().decode(Results.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/results.json")))
    }

    static func settings(_ r: Results, _ set: String) -> HeadSettings {
        let x = r.sets[set]!.settings
        var s = HeadSettings()
        s.epochs = x.epochs
        s.batch = x.batch
        s.learningRate = x.lr
        s.l2 = x.l2
        s.seed = UInt64(x.seed)
        s.patience = nil  // every epoch, the best validation loss kept: what the fixture's Keras run does
        return s
    }
}

@Suite(.enabled(if: TrainFixtures.enabled, "needs KILN_TRAIN_FIXTURES (make test)"), .serialized)
struct PeerTests {
    func train(_ set: String) throws -> (FeatureSet, TrainingResult, [Int]) {
        let r = try TrainFixtures.results()
        let fs = try FeatureSet.read(path: TrainFixtures.folder! + "/\(set).npz")
        let split = try #require(fs.split)
        let train = split.indices.filter { split[$0] == 0 }, val = split.indices.filter { split[$0] == 1 }
        let result = try HeadTrainer.train(x: fs.features, inputs: fs.featureCount, labels: fs.labels, classCount: fs.classNames.count,
                                           train: train, validation: val, settings: TrainFixtures.settings(r, set))
        return (fs, result, val)
    }

    /// Bar: on the same features and split, kiln's validation accuracy is within 2 points of Keras training the
    /// same head with the same settings, and of scikit-learn's multinomial logistic regression with the same L2.
    @Test(arguments: ["pixels", "mini"]) func validationAccuracyMatchesPeers(set: String) throws {
        let r = try TrainFixtures.results()
        let peers = try #require(r.sets[set])
        let (fs, result, val) = try train(set)
        let (_, accuracy) = HeadTrainer.evaluate(result.head, x: fs.features, inputs: fs.featureCount, labels: fs.labels, rows: val)
        print(String(format: "parity train-head %@: kiln %.4f, Keras %.4f, scikit-learn %.4f (%d validation rows, kept epoch %d)",
                     set, accuracy, peers.keras_val_accuracy, peers.sklearn_val_accuracy, val.count, result.bestEpoch))
        #expect(val.count == peers.validation_rows)
        #expect(abs(accuracy - peers.keras_val_accuracy) <= 0.02)
        #expect(abs(accuracy - peers.sklearn_val_accuracy) <= 0.02)
    }

    /// Bar: Keras loads the written .h5 and its predictions equal kiln's within 1e-5 relative.
    @Test(arguments: [("pixels", nil as Int?, 0.0, true), ("mini", 32, 0.3, false)])
    func kerasLoadsTheHead(set: String, hidden: Int?, dropout: Double, standardize: Bool) throws {
        let python = try #require(TrainFixtures.python, "KILN_PYTHON is not set (make test sets it)")
        let r = try TrainFixtures.results()
        let fs = try FeatureSet.read(path: TrainFixtures.folder! + "/\(set).npz")
        var s = TrainFixtures.settings(r, set)
        s.hidden = hidden
        s.dropout = dropout
        s.standardize = standardize
        s.epochs = 5
        let result = try HeadTrainer.train(x: fs.features, inputs: fs.featureCount, labels: fs.labels, classCount: 10,
                                           train: Array(0..<fs.count), validation: [], settings: s)
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try KerasHeadExport.write(result.head, to: dir + "/head.h5", backbone: fs.backbone)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [TrainFixtures.repoRoot + "/scripts/make_train_fixtures.py", "predict", dir + "/head.h5",
                       TrainFixtures.folder! + "/\(set).npz", dir + "/keras.npy"]
        var environment = ProcessInfo.processInfo.environment
        environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
        p.environment = environment
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let keras = try NPY.read(path: dir + "/keras.npy")
        let mine = result.head.predict(fs.features, rows: fs.count)
        #expect(keras.shape == [fs.count, 10])
        let maxRef = keras.values.map(abs).max()!
        let maxDiff = zip(keras.values, mine).map { abs($0 - $1) }.max()!
        print(String(format: "parity keras-load %@%@%@: max|Δ|/max|ref| = %.2e over %d rows", set, hidden.map { " hidden \($0)" } ?? "", standardize ? " standardized" : "", Double(maxDiff / maxRef), fs.count))
        #expect(maxDiff / maxRef <= 1e-5)
    }
}

@Suite(.enabled(if: TrainFixtures.enabled && KilnBinary.enabled, "needs KILN_TRAIN_FIXTURES and the kiln binary (make test)"))
struct FeatureParityTests {
    /// `kiln features` on the committed digit PNGs (32×32, resized to 64×64 keras-nearest, caffe folded in)
    /// gives the features Keras computes for the same digits (8×8 upscaled 8× nearest, `preprocess_input`,
    /// the same mini backbone): the images really go through the bundle's own resizing and preprocessing.
    @Test func featuresMatchKeras() throws {
        let folder = try #require(TrainFixtures.folder)
        let keras = try NPY.read(path: folder + "/mini_raw.npy")
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try KilnBinary.run(["features", TrainFixtures.repoRoot + "/samples/mini/mini_notop_k3.h5",
                                    TrainFixtures.repoRoot + "/samples/digits/train", "-o", dir + "/f.npz", "--input-size", "64x64"])
        #expect(r.status == 0, "\(r.stderr)")
        let set = try FeatureSet.read(path: dir + "/f.npz")
        #expect(set.count == 296 && set.featureCount == 128)
        var maxDiff: Float = 0, maxRef: Float = 0
        for (i, file) in set.files.enumerated() {
            // <class>/<index>.png: the row of load_digits().
            let index = try #require(Int((file as NSString).lastPathComponent.dropLast(4)))
            for j in 0..<128 {
                let a = set.features[i * 128 + j], b = keras.values[index * 128 + j]
                maxDiff = max(maxDiff, abs(a - b))
                maxRef = max(maxRef, abs(b))
            }
        }
        print(String(format: "parity features: kiln features vs Keras on 296 digit PNGs: max|Δ|/max|ref| = %.2e", Double(maxDiff / maxRef)))
        #expect(maxDiff / maxRef <= 1e-4)
    }
}
