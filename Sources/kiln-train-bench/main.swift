// Benchmark of `kiln train-head`'s trainer (issue 9's bar: 4,000 × 2048 features, 50 epochs, under 10 s).
//
//     swift build -c release --product kiln-train-bench && .build/release/kiln-train-bench [--hidden N] [--write F.npz]
//
// Synthetic, seeded features shaped like ResNet-50's pooled ones (2048 non-negative values per image, 10
// classes, class-dependent means), a stratified 80/20 split, the default head (Dense(10, softmax)), Adam,
// batch 32, every one of the 50 epochs run (no early stopping), validation evaluated after each epoch.
// Prints the wall time of training (3 runs, the best and the median). --write also saves the features as a
// .npz, to time `kiln train-head` itself on them.
import Foundation
import KilnTrain
import KilnKernels

var hidden: Int?
var writePath: String?
var epochs = 50
var runs = 3
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--hidden": hidden = args.popFirst().flatMap(Int.init)
    case "--write": writePath = args.popFirst()
    case "--epochs": epochs = args.popFirst().flatMap(Int.init) ?? 50
    case "--runs": runs = max(1, args.popFirst().flatMap(Int.init) ?? 3)
    default: FileHandle.standardError.write(Data("usage: kiln-train-bench [--hidden N] [--epochs E] [--runs R] [--write F.npz]\n".utf8)); exit(64)
    }
}

let n = 4000, d = 2048, classes = 10
var rng = SplitMix64(seed: 2048)
let means = (0..<classes * d).map { _ in Float(rng.nextUniform() * 0.6) }
var x = [Float](repeating: 0, count: n * d)
var labels = [Int](repeating: 0, count: n)
for i in 0..<n {
    let c = i % classes
    labels[i] = c
    for j in 0..<d { x[i * d + j] = max(0, means[c * d + j] + Float(rng.nextUniform() - 0.5)) }
}
if let writePath {
    let set = FeatureSet(features: x, featureCount: d, labels: labels, classNames: (0..<classes).map { "class\($0)" },
                         files: (0..<n).map { "synthetic/\($0).png" }, fileSizes: [Int64](repeating: -1, count: n),
                         fileMtimes: [Int64](repeating: -1, count: n), pixels: [], pixelCount: 0, backbone: nil)
    try set.write(to: writePath)
}
let (train, val) = stratifiedSplit(labels: labels, classCount: classes, fraction: 0.2, seed: 0)
var s = HeadSettings()
s.hidden = hidden
s.epochs = epochs
s.batch = 32
s.patience = nil
var times: [Double] = []
var last: TrainingResult?
for _ in 0..<runs {
    let t0 = Date()
    last = try HeadTrainer.train(x: x, inputs: d, labels: labels, classCount: classes, train: train, validation: val, settings: s)
    times.append(Date().timeIntervalSince(t0))
}
times.sort()
let r = last!
print(String(format: "train-head bench: %d × %d features (%d train, %d validation), %@Dense(%d), batch 32, %d epochs: best %.2f s, median %.2f s of %d runs (val_accuracy %.3f)",
             n, d, train.count, val.count, hidden.map { "Dense(\($0), relu) → " } ?? "", classes, epochs, times[0], times[times.count / 2], runs,
             r.history.last!.validationAccuracy ?? 0))
