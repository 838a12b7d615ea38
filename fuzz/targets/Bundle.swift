// Fuzz target `bundle`: the bytes as a `.kiln` bundle through the reader and validator (`Bundle(bytes:)`), the
// runtime's load checks (`Model(bundle:)`) and a run on a small input.
//
// Each input is tried twice: as it is, and resealed (file size and every checksum recomputed, as a writer
// would), so that mutations get past the checksums to the structural checks behind them. What the reader
// accepts must also hold up: it writes back and reads back equal, and a run on the fast kernels agrees with
// the naive reference kernels and with the conversion side's reference interpreter on the lifted graph.
#if canImport(Glibc)
import Glibc
#endif
import KilnFormat
import KilnGraph
import KilnKernels
import KilnRuntime

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBundle(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let sealed = resealed(bytes)
    exercise(bytes)
    if sealed != bytes { exercise(sealed) }
    return 0
}


@_cdecl("LLVMFuzzerInitialize")
public func initializeBundle(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutableRawPointer?) -> CInt {
    setKernelThreads(1)
    if let dir = seedDirectoryRequested() {
        writeBundleSeeds(into: dir)
        exit(0)
    }
    return 0
}

// MARK: - Resealing (formats/kiln-bundle.md: header fields, 48-byte section entries)

func le32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
func le64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * $1) } }
func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) { for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }

/// The bytes with `file_size`, each in-bounds section's checksum and the header checksum recomputed.
func resealed(_ input: [UInt8]) -> [UInt8] {
    var b = input
    guard b.count >= 64, Array(b[0..<8]) == BundleLayout.magic else { return b }
    put64(&b, 24, UInt64(b.count))
    let count = Int(le32(b, 16))
    guard count <= BundleLayout.maximumSections, 64 + 48 * count <= b.count else { return b }
    let tableEnd = 64 + 48 * count
    for i in 0..<count {
        let entry = 64 + 48 * i
        let offset = le64(b, entry + 8), length = le64(b, entry + 16)
        guard offset <= UInt64(b.count), length <= UInt64(b.count) - offset else { continue }
        put64(&b, entry + 24, XXH64.hash(Array(b[Int(offset)..<Int(offset + length)])))
    }
    put64(&b, 40, XXH64.hash(Array(b[0..<40]) + Array(b[64..<tableEnd])))
    return b
}

// MARK: - What an accepted bundle must satisfy

func exercise(_ bytes: [UInt8]) {
    let bundle: Bundle
    do { bundle = try Bundle(bytes: bytes) } catch {
        if error.section == nil { fuzzFailure("a reader error names no section: \(error)") }
        return
    }
    roundTrip(bundle.model)
    guard let model = try? Model(bundle: bundle) else { return }
    guard let shape = smallInputShape(model.frozen.inputs[0].shape) else { return }
    let input = Tensor(shape: shape, values: pseudoRandomFloats(shape.reduce(1, *)))
    let fast: [Tensor]
    do { fast = try model.run(input, kernels: .fast) } catch { return }
    let reference: [Tensor]
    do { reference = try model.run(input, kernels: .reference) } catch {
        fuzzFailure("the fast kernels ran but the reference kernels failed: \(error)")
    }
    guard fast.map(\.shape) == reference.map(\.shape) else {
        fuzzFailure("output shapes differ: fast \(fast.map(\.shape)), reference \(reference.map(\.shape))")
    }
    // NaN and infinite weights run (the reader does not refuse them), but kernels may propagate NaN differently
    // (max and ReLU), so the outputs are compared only for finite weights.
    guard model.frozen.tensors.allSatisfy({ $0.decodedFloats().allSatisfy(\.isFinite) }) else { return }
    compare(fast, reference, what: "fast vs reference kernels")
    compareWithInterpreter(model.frozen, input: input, runtime: reference)
}

/// Writes the accepted model back and reads it again: everything must survive.
func roundTrip(_ model: FrozenModel) {
    let again: Bundle
    do { again = try Bundle(bytes: try BundleWriter.serialize(model)) } catch {
        fuzzFailure("the reader accepted a model that does not write back and read back: \(error)")
    }
    let m = again.model
    // Metadata compared bit for bit (a NaN float is kept exactly, and NaN == NaN is false).
    func bits(_ v: MetadataValue) -> String {
        switch v {
        case .int(let i): return "i\(i)"
        case .float(let d): return "f\(d.bitPattern)"
        case .string(let t): return "s\(t)"
        case .strings(let l): return "S\(l)"
        case .floats(let l): return "F\(l.map(\.bitPattern))"
        }
    }
    let changed = [("metadata", m.metadata.mapValues(bits) == model.metadata.mapValues(bits)), ("value names", m.valueNames == model.valueNames),
                   ("inputs", m.inputs == model.inputs), ("outputs", m.outputs == model.outputs), ("ops", m.ops == model.ops),
                   ("tensor count", m.tensors.count == model.tensors.count)].filter { !$0.1 }.map(\.0)
    guard changed.isEmpty else {
        fuzzFailure("the model changed in a write and read back: \(changed.joined(separator: ", "))")
    }
    for (a, b) in zip(m.tensors, model.tensors) {
        let same = a.name == b.name && a.elementType == b.elementType && a.shape == b.shape
            && a.payload.withStoredBytes { x in b.payload.withStoredBytes { y in x.elementsEqual(y) } }
        if !same { fuzzFailure("tensor '\(b.name)' changed in a write and read back") }
    }
}

/// The declared input shape with free sizes chosen small; nil when the input would be large.
func smallInputShape(_ declared: [Int64]) -> [Int]? {
    let free: [Int] = declared.count == 4 ? [2, 5, 6, 3] : [2, 4, 3, 3, 3, 3, 3, 3]
    let shape = declared.enumerated().map { i, d in d < 0 ? free[min(i, free.count - 1)] : Int(d) }
    var n = 1
    for d in shape {
        let (p, o) = n.multipliedReportingOverflow(by: d)
        guard !o, p <= 1 << 14 else { return nil }
        n = p
    }
    return shape
}

/// Outputs agree when every value is finite on both sides: |a − b| ≤ 1e-3 · max(1, max|b|).
func compare(_ got: [Tensor], _ want: [Tensor], what: String) {
    for (g, w) in zip(got, want) {
        guard g.values.count == w.values.count else { fuzzFailure("\(what): \(g.values.count) vs \(w.values.count) values") }
        guard g.values.allSatisfy(\.isFinite), w.values.allSatisfy(\.isFinite) else { continue }
        let scale = max(1, w.values.map(abs).max() ?? 0)
        guard scale < 1e6 else { continue }
        for (i, (a, b)) in zip(g.values, w.values).enumerated() where abs(a - b) > 1e-3 * scale {
            fuzzFailure("\(what): value \(i) of shape \(w.shape) is \(a), expected \(b)")
        }
    }
}

/// The conversion side's reference interpreter on the lifted graph, for bundles whose names are unique and whose
/// weights are moderate (so that both sides round alike).
func compareWithInterpreter(_ frozen: FrozenModel, input: Tensor, runtime: [Tensor]) {
    guard Set(frozen.valueNames).count == frozen.valueNames.count,
          Set(frozen.outputs.map(\.name)).count == frozen.outputs.count else { return }
    var widened = frozen
    for i in widened.tensors.indices {
        let t = widened.tensors[i]
        let values = t.decodedFloats()
        guard values.allSatisfy({ $0.isFinite && abs($0) <= 100 }) else { return }
        widened.tensors[i] = TensorRecord(name: t.name, shape: t.shape, floats: values)
    }
    guard let graph = try? Graph(frozen: widened) else { return }
    let evaluated: [String: (shape: [Int], values: [Float])]
    do { evaluated = try graph.evaluateReference(input: input.values, shape: input.shape) } catch {
        fuzzFailure("the runtime ran the bundle but the reference interpreter failed on the lifted graph: \(error)")
    }
    var expected: [Tensor] = []
    for port in frozen.outputs {
        guard let v = evaluated[port.name] else { fuzzFailure("the interpreter did not compute output '\(port.name)'") }
        expected.append(Tensor(shape: v.shape, values: v.values))
    }
    guard expected.map(\.shape) == runtime.map(\.shape) else {
        fuzzFailure("output shapes differ: runtime \(runtime.map(\.shape)), interpreter \(expected.map(\.shape))")
    }
    compare(runtime, expected, what: "runtime vs interpreter")
}

// MARK: - Seeds: small bundles touching every op, element type and the compressed DATA section

func writeBundleSeeds(into dir: String) {
    func weights(_ shape: [Int], seed: UInt64) -> [Float] { pseudoRandomFloats(shape.reduce(1, *), seed: seed).map { $0 * 0.5 } }
    let same = WindowPadding.same
    let conv = Conv2DAttributes(kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padding: same, activation: .relu)
    let conv1 = Conv2DAttributes(kernelH: 1, kernelW: 1, strideH: 2, strideW: 2, padding: .valid, activation: .none)
    let pool = Pool2DAttributes(kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padding: same)
    let avg = Pool2DAttributes(kernelH: 2, kernelW: 2, strideH: 1, strideW: 1, padding: .explicit(top: 1, bottom: 0, left: 0, right: 1))

    // A small ResNet-like classifier: conv, max pool, residual conv, avg pool, global pool, dense + softmax.
    let classifier = FrozenModel(
        metadata: ["kiln.converter_version": .string("fuzz"), "labels.names": .strings(["a", "b", "c"]),
                   "input.height": .int(5), "fuse.mean": .floats([1, 2, 3])],
        valueNames: ["input", "conv1", "pool1", "proj", "res", "avg", "gap", "logits"],
        inputs: [PortRecord(name: "input", value: 0, shape: [-1, -1, -1, 3])],
        outputs: [PortRecord(name: "logits", value: 7, shape: [-1, 3]), PortRecord(name: "gap", value: 6, shape: [-1, 4])],
        ops: [OpRecord(opcode: .conv2d, name: "conv1", inputs: [0], output: 1, attributes: conv.encoded, tensors: [0, 1]),
              OpRecord(opcode: .maxPool2d, name: "pool1", inputs: [1], output: 2, attributes: pool.encoded),
              OpRecord(opcode: .conv2d, name: "proj", inputs: [0], output: 3, attributes: conv1.encoded, tensors: [2, 3]),
              OpRecord(opcode: .conv2d, name: "res", inputs: [2, 3], output: 4,
                       attributes: Conv2DAttributes(kernelH: 1, kernelW: 1, strideH: 1, strideW: 1, padding: .valid, activation: .relu).encoded,
                       tensors: [4, 1]),
              OpRecord(opcode: .avgPool2d, name: "avg", inputs: [4], output: 5, attributes: avg.encoded),
              OpRecord(opcode: .globalAvgPool, name: "gap", inputs: [5], output: 6),
              OpRecord(opcode: .dense, name: "logits", inputs: [6], output: 7, attributes: [Activation.softmax.rawValue], tensors: [5, 6])],
        tensors: [TensorRecord(name: "conv1/kernel", shape: [3, 3, 3, 4], floats: weights([3, 3, 3, 4], seed: 1)),
                  TensorRecord(name: "conv1/bias", shape: [4], floats: weights([4], seed: 2)),
                  TensorRecord(name: "proj/kernel", shape: [1, 1, 3, 4], floats: weights([1, 1, 3, 4], seed: 3)),
                  TensorRecord(name: "proj/bias", shape: [4], floats: weights([4], seed: 4)),
                  TensorRecord(name: "res/kernel", shape: [1, 1, 4, 4], floats: weights([1, 1, 4, 4], seed: 5)),
                  TensorRecord(name: "logits/kernel", shape: [4, 3], floats: weights([4, 3], seed: 6)),
                  TensorRecord(name: "logits/bias", shape: [3], floats: weights([3], seed: 7))])

    // The remaining ops: pad (with per-channel values and without), add, relu, transpose, flatten, softmax.
    let others = FrozenModel(
        metadata: [:],
        valueNames: ["x", "padded", "zpad", "sum", "relu", "nchw", "flat", "prob"],
        inputs: [PortRecord(name: "x", value: 0, shape: [1, 3, 4, 2])],
        outputs: [PortRecord(name: "prob", value: 7, shape: [1, 50])],
        ops: [OpRecord(opcode: .pad, name: "padded", inputs: [0], output: 1, attributes: PadAttributes(top: 1, bottom: 1, left: 0, right: 1).encoded, tensors: [0]),
              OpRecord(opcode: .pad, name: "zpad", inputs: [0], output: 2, attributes: PadAttributes(top: 0, bottom: 2, left: 1, right: 0).encoded),
              OpRecord(opcode: .add, name: "sum", inputs: [1, 2], output: 3, attributes: [Activation.none.rawValue]),
              OpRecord(opcode: .relu, name: "relu", inputs: [3], output: 4),
              OpRecord(opcode: .transpose, name: "nchw", inputs: [4], output: 5, attributes: [0, 3, 1, 2]),
              OpRecord(opcode: .flatten, name: "flat", inputs: [5], output: 6),
              OpRecord(opcode: .softmax, name: "prob", inputs: [6], output: 7)],
        tensors: [TensorRecord(name: "padded/values", shape: [2], floats: [0.5, -1])])

    // Features in, classes out: a rank-2 input, a hidden dense layer with relu.
    let head = FrozenModel(
        metadata: ["source.file": .string("head.h5")],
        valueNames: ["features", "hidden", "out"],
        inputs: [PortRecord(name: "features", value: 0, shape: [-1, 6])],
        outputs: [PortRecord(name: "out", value: 2, shape: [-1, 2])],
        ops: [OpRecord(opcode: .dense, name: "hidden", inputs: [0], output: 1, attributes: [Activation.relu.rawValue], tensors: [0, 1]),
              OpRecord(opcode: .dense, name: "out", inputs: [1], output: 2, attributes: [Activation.none.rawValue], tensors: [2, 3])],
        tensors: [TensorRecord(name: "hidden/kernel", shape: [6, 5], floats: weights([6, 5], seed: 8)),
                  TensorRecord(name: "hidden/bias", shape: [5], floats: weights([5], seed: 9)),
                  TensorRecord(name: "out/kernel", shape: [5, 2], floats: weights([5, 2], seed: 10)),
                  TensorRecord(name: "out/bias", shape: [2], floats: weights([2], seed: 11))])

    var seeds: [(String, [UInt8])] = []
    do {
        for (name, model) in [("classifier", classifier), ("others", others), ("head", head)] {
            seeds.append(("\(name).kiln", try BundleWriter.serialize(model)))
        }
        for storage in [WeightStorage.f16, .bf16, .int8] {
            seeds.append(("classifier_\(storage.rawValue).kiln", try BundleWriter.serialize(classifier.storingWeights(as: storage))))
        }
        seeds.append(("classifier_zstd.kiln", try BundleWriter.serialize(classifier, compression: .zstd(level: 3))))
        seeds.append(("classifier_int8_zstd.kiln", try BundleWriter.serialize(classifier.storingWeights(as: .int8), compression: .zstd(level: 3))))
        seeds.append(("head_zstd.kiln", try BundleWriter.serialize(head, compression: .zstd(level: 1))))
    } catch {
        fuzzFailure("cannot write the seed bundles: \(error)")
    }
    for (name, bytes) in seeds {
        // Every seed must load and run, or the corpus starts from nothing useful.
        guard let b = try? Bundle(bytes: bytes), let m = try? Model(bundle: b),
              let shape = smallInputShape(m.frozen.inputs[0].shape),
              (try? m.run(Tensor(shape: shape, values: pseudoRandomFloats(shape.reduce(1, *))))) != nil else {
            fuzzFailure("seed \(name) does not load and run")
        }
        writeSeed(bytes, directory: dir, name: name)
    }
}
