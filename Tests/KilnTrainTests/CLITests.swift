import Foundation
import Testing
import KilnTestSupport
import KilnFormat
import KilnKeras
import KilnRuntime
@testable import KilnTrain

/// `kiln features` and `kiln train-head` through the binary: the release one of `make test` (KILN_BIN), else
/// the one `swift build` put beside the test bundle.
enum KilnBinary {
    static let env = ProcessInfo.processInfo.environment
    static let folder: String = {
        if let bin = env["KILN_BIN"], !bin.isEmpty { return bin }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    }()
    static var available: Bool { FileManager.default.isExecutableFile(atPath: "\(folder)/kiln") }
    static var enabled: Bool { available || env["KILN_REQUIRE_FIXTURES"] == "1" }

    typealias Result = ProcessResult

    static func run(_ args: [String], tool: String = "kiln") throws -> Result {
        try runProcess("\(folder)/\(tool)", args)
    }
}

@Suite(.enabled(if: KilnBinary.enabled, "needs the kiln binary (swift build, or KILN_BIN)"), .serialized)
struct CLITests {
    let root = TrainFixtures.repoRoot
    var backbone: String { root + "/samples/mini/mini_notop_k3.h5" }

    /// A small data folder: `perClass` digits of each listed class copied from samples/digits/train.
    func dataFolder(_ dir: String, classes: [String], perClass: Int = 6) throws -> String {
        let data = dir + "/data"
        for c in classes {
            try FileManager.default.createDirectory(atPath: "\(data)/\(c)", withIntermediateDirectories: true)
            let src = "\(root)/samples/digits/train/\(c)"
            for f in try FileManager.default.contentsOfDirectory(atPath: src).sorted().prefix(perClass) {
                try FileManager.default.copyItem(atPath: "\(src)/\(f)", toPath: "\(data)/\(c)/\(f)")
            }
        }
        return data
    }

    @Test func featuresTrainFuseAndCache() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = try dataFolder(dir, classes: ["one", "seven", "zero"])
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: data + "/one/broken.png"))
        try Data("notes".utf8).write(to: URL(fileURLWithPath: data + "/one/README.txt"))  // not an image name: ignored
        let npz = dir + "/f.npz"
        let first = try KilnBinary.run(["features", backbone, data, "-o", npz, "--input-size", "64x64"])
        #expect(first.status == 0, "\(first.stderr)")
        // Histogram first (7 files named like images in 'one', the broken one included), then the skipped file.
        let lines = first.stdout.split(separator: "\n").map(String.init)
        #expect(lines[0] == "\(data): 3 classes, 19 images")
        #expect(lines[1].hasPrefix("  one") && lines[1].contains("     7  "))
        #expect(first.stdout.contains("skipped (unreadable): one/broken.png: "))
        #expect(first.stdout.contains("18 images × 128 features"))
        #expect(first.stdout.contains("18 computed, 0 unchanged"))
        #expect(first.stderr.contains("images/s") || first.stderr.contains("img/s"))
        let set = try FeatureSet.read(path: npz)
        #expect(set.count == 18 && set.featureCount == 128 && set.classNames == ["one", "seven", "zero"])
        #expect(set.pixelCount == 16 * 16 * 3)
        #expect(set.backbone?.hasPrefix("kiln-backbone/2 weights=") == true)
        #expect(set.backbone?.contains("cut=avg_pool preprocessing=caffe size=64x64 resize=keras-nearest") == true)
        // Unchanged images: nothing recomputed; the same features.
        let second = try KilnBinary.run(["features", backbone, data, "-o", npz, "--input-size", "64x64"])
        #expect(second.stdout.contains("0 computed, 18 unchanged"))
        #expect(try FeatureSet.read(path: npz).features == set.features)
        // One image touched: only it is recomputed.
        let touched = data + "/zero/" + (try FileManager.default.contentsOfDirectory(atPath: data + "/zero").sorted()[0])
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 5)], ofItemAtPath: touched)
        let third = try KilnBinary.run(["features", backbone, data, "-o", npz, "--input-size", "64x64"])
        #expect(third.stdout.contains("1 computed, 17 unchanged"))
        // Another setting (size): recomputed from scratch.
        let fourth = try KilnBinary.run(["features", backbone, data, "-o", npz, "--input-size", "32x32"])
        #expect(fourth.stdout.contains("18 computed, 0 unchanged"))
        #expect(fourth.stderr.contains("holds features of another backbone or setting"))
        _ = try KilnBinary.run(["features", backbone, data, "-o", npz, "--input-size", "64x64"])

        let head = dir + "/head.h5"
        let trained = try KilnBinary.run(["train-head", npz, "-o", head, "--epochs", "5", "--hidden", "8", "--dropout", "0.2",
                                          "--class-weight", "balanced", "--val-split", "0.34"])
        #expect(trained.status == 0, "\(trained.stderr)")
        #expect(trained.stdout.contains("epoch      loss  accuracy  val_loss  val_accuracy"))
        #expect(trained.stdout.contains("confusion matrix"))
        for f in ["head.h5", "head.history.csv", "head.curves.svg", "head.confusion.svg"] {
            #expect(FileManager.default.fileExists(atPath: "\(dir)/\(f)"), "\(f)")
        }
        #expect(try String(contentsOfFile: dir + "/head.history.csv", encoding: .utf8).hasPrefix("epoch,loss,accuracy,val_loss,val_accuracy\n1,"))
        // Same seed, same head.
        let again = try KilnBinary.run(["train-head", npz, "-o", dir + "/again.h5", "--epochs", "5", "--hidden", "8", "--dropout", "0.2",
                                        "--class-weight", "balanced", "--val-split", "0.34"])
        #expect(again.status == 0)
        #expect(trained.stdout.split(separator: "\n").filter { $0.hasPrefix("    ") } == again.stdout.split(separator: "\n").filter { $0.hasPrefix("    ") })

        // The baseline trains on pixels and says so.
        let base = try KilnBinary.run(["train-head", npz, "-o", dir + "/baseline.h5", "--baseline", "--epochs", "3"])
        #expect(base.status == 0, "\(base.stderr)")
        #expect(base.stdout.contains("head: 768 pixels → Dense(3, softmax)"))

        // Fuse with the same backbone and settings: accepted; with another backbone file: refused, nothing written.
        let fused = try KilnBinary.run(["fuse", backbone, head, "-o", dir + "/fused.kiln", "--input-size", "64x64"])
        #expect(fused.status == 0, "\(fused.stderr)")
        let other = try KilnBinary.run(["fuse", root + "/samples/mini/mini_k3.h5", head, "-o", dir + "/other.kiln", "--input-size", "64x64"])
        #expect(other.status == 1)
        #expect(other.stderr.contains("head.h5 was trained on features of another backbone or setting"))
        let otherSize = try KilnBinary.run(["fuse", backbone, head, "-o", dir + "/other.kiln", "--input-size", "96x96"])
        #expect(otherSize.status == 1)
        #expect(otherSize.stderr.contains("size=96x96"))
        let pixels = try KilnBinary.run(["fuse", backbone, dir + "/baseline.h5", "-o", dir + "/other.kiln", "--input-size", "64x64"])
        #expect(pixels.status == 1)
        #expect(pixels.stderr.contains("baseline.h5 was trained on raw pixels (--baseline), not on backbone features; it cannot be fused"), "\(pixels.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/other.kiln"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).allSatisfy { !$0.contains(".tmp") })
    }

    /// An NCHW ONNX backbone with a fixed batch of 2 (as model-zoo exports are): `kiln features` drops its input
    /// transpose as `kiln fuse` does (it used to read the NCHW input's C×H as the image size and fail), fills up
    /// the last batch, and a head trained on those features fuses with the same backbone; the fused bundle's
    /// probabilities for each image equal the head's on that image's features.
    @Test func featuresOfAnNCHWOnnxBackboneFuseWithIt() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = try dataFolder(dir, classes: ["one", "seven", "zero"], perClass: 5)  // 15 images: 7 batches of 2 and 1
        let onnx = root + "/samples/onnx/micro_v1_opset7.onnx"
        let npz = dir + "/f.npz"
        let features = try KilnBinary.run(["features", onnx, data, "-o", npz])
        #expect(features.status == 0, "\(features.stderr)")
        #expect(features.stderr.contains("micro_v1_opset7.onnx takes NCHW; images go in NHWC"), "\(features.stderr)")
        #expect(features.stdout.contains("15 images × 28 features ('avgpool', 40x48 keras-nearest, preprocessing none)"), "\(features.stdout)")
        let set = try FeatureSet.read(path: npz)
        let head = dir + "/head.h5"
        #expect(try KilnBinary.run(["train-head", npz, "-o", head, "--epochs", "3"]).status == 0)
        let fused = try KilnBinary.run(["fuse", onnx, head, "-o", dir + "/fused.kiln"])
        #expect(fused.status == 0, "\(fused.stderr)")

        // The head alone on the features, and the fused bundle on the images.
        #expect(try KilnBinary.run(["convert", head, "-o", dir + "/head.kiln"]).status == 0)
        try NPY.write(Tensor(shape: [set.count, set.featureCount], values: set.features), to: dir + "/x.npy")
        let alone = try KilnBinary.run([dir + "/head.kiln", "--input", dir + "/x.npy", "--output", dir + "/p.npy"], tool: "kiln-run")
        #expect(alone.status == 0, "\(alone.stderr)")
        let p = try NPY.read(path: dir + "/p.npy")
        let run = try KilnBinary.run([dir + "/fused.kiln", data, "--format", "csv", "--top", "3"], tool: "kiln-run")
        #expect(run.status == 0, "\(run.stderr)")
        var worst: Float = 0, rows = 0
        for line in run.stdout.split(separator: "\n").dropFirst() {
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 5, let c = Int(f[2]), let prob = Float(f[4]),
                  let r = set.files.firstIndex(where: { f[0].hasSuffix("/" + $0) }) else { continue }
            worst = max(worst, abs(prob - p.values[r * 3 + c]))
            rows += 1
        }
        #expect(rows == 15 * 3)
        #expect(worst <= 1e-5, "fused bundle against head on features: \(worst)")
    }

    @Test func emptyClassFolderIsAnError() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = try dataFolder(dir, classes: ["one", "two"])
        try FileManager.default.createDirectory(atPath: data + "/three", withIntermediateDirectories: true)
        let r = try KilnBinary.run(["features", backbone, data, "-o", dir + "/f.npz"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("\(data)/three: class folder holds no images"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/f.npz"))
    }

    @Test func singleClassIsAnError() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = try dataFolder(dir, classes: ["one"])
        let r = try KilnBinary.run(["features", backbone, data, "-o", dir + "/f.npz"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("only one class folder ('one'); a classifier needs at least two classes"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/f.npz"))
        // A features file with one class (written by hand): train-head refuses, writes nothing.
        let set = FeatureSet(features: [1, 2, 3, 4], featureCount: 2, labels: [0, 0], classNames: ["one"], files: ["a", "b"],
                             fileSizes: [1, 1], fileMtimes: [1, 1], pixels: [], pixelCount: 0, backbone: nil)
        try set.write(to: dir + "/one.npz")
        let t = try KilnBinary.run(["train-head", dir + "/one.npz", "-o", dir + "/h.h5"])
        #expect(t.status == 1)
        #expect(t.stderr.contains("one.npz: only one class (one) has examples; a classifier needs at least two"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/h.h5"))
    }

    @Test func classWithAllImagesUnreadableIsAnError() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = try dataFolder(dir, classes: ["one", "two"])
        try FileManager.default.createDirectory(atPath: data + "/three", withIntermediateDirectories: true)
        try Data([0xFF, 0xD8, 0xFF, 0x00]).write(to: URL(fileURLWithPath: data + "/three/cut.jpg"))
        let r = try KilnBinary.run(["features", backbone, data, "-o", dir + "/f.npz", "--input-size", "32x32"])
        #expect(r.status == 1)
        #expect(r.stdout.contains("skipped (unreadable): three/cut.jpg"))
        #expect(r.stderr.contains("\(data)/three: no readable images in this class folder"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/f.npz"))
    }
    /// Class names and settings travel: `features` stores the class names, `train-head` writes them into head.h5
    /// (an attribute Keras ignores), and `fuse` of a byte-identical copy of the backbone under another name, given
    /// neither --labels nor --input-size nor --resize, adopts what the head records (input size 32x32, tf-bilinear,
    /// caffe) and its names.
    @Test func classNamesAndSettingsTravelToFuse() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let classes = ["one", "seven", "zero"]
        let data = try dataFolder(dir, classes: classes, perClass: 4)
        let npz = dir + "/f.npz"
        let f = try KilnBinary.run(["features", backbone, data, "-o", npz, "--input-size", "32x32", "--resize", "tf-bilinear"])
        #expect(f.status == 0, "\(f.stderr)")
        #expect(try FeatureSet.read(path: npz).classNames == classes)
        let head = dir + "/head.h5"
        #expect(try KilnBinary.run(["train-head", npz, "-o", head, "--epochs", "3"]).status == 0)
        #expect(try KerasHeadExport.recordedClassNames(path: head) == classes)

        let renamed = dir + "/renamed_backbone.h5"
        try FileManager.default.copyItem(atPath: backbone, toPath: renamed)
        let fused = try KilnBinary.run(["fuse", renamed, head, "-o", dir + "/fused.kiln"])
        #expect(fused.status == 0, "\(fused.stderr)")
        #expect(fused.stderr.contains("kiln fuse: cut avg_pool, input size 32x32, resize tf-bilinear, preprocessing caffe: as head.h5 records"), "\(fused.stderr)")
        #expect(fused.stderr.contains("kiln fuse: labels: the 3 class names head.h5 records"), "\(fused.stderr)")
        let model = try Model(contentsOf: dir + "/fused.kiln")
        #expect(model.frozen.metadata["labels.names"] == .strings(classes))
        #expect(model.frozen.metadata["input.height"] == .int(32) && model.frozen.metadata["input.width"] == .int(32))
        #expect(model.frozen.metadata["input.resize"] == .string("tf-bilinear"))
        #expect(model.frozen.metadata["input.preprocessing"] == .string("caffe"))

        // --labels still wins over the recorded names; a setting given that differs from the record is refused.
        try "a\nb\nc\n".write(toFile: dir + "/abc.txt", atomically: true, encoding: .utf8)
        let relabelled = try KilnBinary.run(["fuse", renamed, head, "-o", dir + "/abc.kiln", "--labels", dir + "/abc.txt"])
        #expect(relabelled.status == 0, "\(relabelled.stderr)")
        #expect(try Model(contentsOf: dir + "/abc.kiln").frozen.metadata["labels.names"] == .strings(["a", "b", "c"]))
        let nearest = try KilnBinary.run(["fuse", renamed, head, "-o", dir + "/other.kiln", "--resize", "keras-nearest"])
        #expect(nearest.status == 1)
        #expect(nearest.stderr.contains("head.h5 was trained on features of another backbone or setting") && nearest.stderr.contains("resize=keras-nearest"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/other.kiln"))
    }
    /// A head recorded before identities were the weights' checksum (`kiln-backbone/1`, the backbone file's xxh64) is
    /// checked as it was written: the same file (under any name) fuses, adopting the recorded size; another is refused.
    @Test func version1RecordsAreCheckedByFileChecksum() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bytes = try #require(FileManager.default.contents(atPath: backbone))
        let hex = String(bytes.withUnsafeBytes { XXH64.hash($0) }, radix: 16)
        let checksum = String(repeating: "0", count: 16 - hex.count) + hex
        let record = "kiln-backbone/1 xxh64=\(checksum) cut=avg_pool preprocessing=caffe size=32x32 resize=keras-nearest file=mini_notop_k3.h5"
        let (x, labels) = blobs(perClass: 8, seed: 3)
        let features = (0..<labels.count).flatMap { r in (0..<128).map { x[r * 5 + $0 % 5] } }   // 128 wide, as avg_pool
        var settings = HeadSettings()
        settings.epochs = 2
        let trained = try HeadTrainer.train(x: features, inputs: 128, labels: labels, classCount: 3, train: Array(labels.indices),
                                            validation: [], settings: settings)
        let head = dir + "/old_head.h5"
        try KerasHeadExport.write(trained.head, to: head, backbone: record)
        let renamed = dir + "/copy.h5"
        try FileManager.default.copyItem(atPath: backbone, toPath: renamed)
        let fused = try KilnBinary.run(["fuse", renamed, head, "-o", dir + "/f.kiln"])
        #expect(fused.status == 0, "\(fused.stderr)")
        #expect(fused.stderr.contains("input size 32x32, resize keras-nearest, preprocessing caffe: as old_head.h5 records"), "\(fused.stderr)")
        let other = try KilnBinary.run(["fuse", root + "/samples/mini/mini_k3.h5", head, "-o", dir + "/g.kiln"])
        #expect(other.status == 1)
        #expect(other.stderr.contains("old_head.h5 was trained on features of another backbone or setting"), "\(other.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/g.kiln"))
    }
}
