import Foundation
import Testing
import KilnFormat
import KilnKernels
import KilnRuntime

/// One loaded `Model` serving several threads at once (read-only weights, a plan and workspace per call) gives
/// each caller exactly what a single-threaded run gives. Run it under thread sanitizer with
/// `scripts/sanitize thread` (which also sets KILN_TEST_KERNEL_THREADS so that the kernels' own thread pool is
/// shared by the concurrent calls); in the normal suite the kernels' thread count is left as it is, because it
/// is process-wide and must not change while other suites run.
@Suite struct ConcurrentRunTests {
    /// A small ResNet-like classifier: stem conv, max pool, a bottleneck with a projected residual, average
    /// pool, global pool, dense + softmax; plus the pooled features as a second output.
    static func model() throws -> Model {
        func w(_ shape: [Int], _ seed: Int) -> TensorRecord {
            let n = shape.reduce(1, *)
            var state = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15
            let values = (0..<n).map { _ -> Float in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max) * 0.3
            }
            return TensorRecord(name: "t\(seed)", shape: shape, floats: values)
        }
        func conv(_ k: Int, _ s: Int, _ relu: Bool, _ pad: WindowPadding = .same) -> [Int64] {
            Conv2DAttributes(kernelH: k, kernelW: k, strideH: s, strideW: s, padding: pad, activation: relu ? .relu : .none).encoded
        }
        let frozen = FrozenModel(
            valueNames: ["x", "stem", "pool", "a", "b", "proj", "res", "avg", "gap", "probs"],
            inputs: [PortRecord(name: "x", value: 0, shape: [-1, -1, -1, 3])],
            outputs: [PortRecord(name: "probs", value: 9, shape: [-1, 10]), PortRecord(name: "gap", value: 8, shape: [-1, 32])],
            ops: [OpRecord(opcode: .conv2d, name: "stem", inputs: [0], output: 1, attributes: conv(7, 2, true), tensors: [0, 1]),
                  OpRecord(opcode: .maxPool2d, name: "pool", inputs: [1], output: 2,
                           attributes: Pool2DAttributes(kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padding: .same).encoded),
                  OpRecord(opcode: .conv2d, name: "a", inputs: [2], output: 3, attributes: conv(1, 1, true), tensors: [2, 3]),
                  OpRecord(opcode: .conv2d, name: "b", inputs: [3], output: 4, attributes: conv(3, 1, true), tensors: [4, 5]),
                  OpRecord(opcode: .conv2d, name: "proj", inputs: [2], output: 5, attributes: conv(1, 1, false), tensors: [6, 7]),
                  OpRecord(opcode: .conv2d, name: "res", inputs: [4, 5], output: 6, attributes: conv(1, 1, true), tensors: [8, 7]),
                  OpRecord(opcode: .avgPool2d, name: "avg", inputs: [6], output: 7,
                           attributes: Pool2DAttributes(kernelH: 2, kernelW: 2, strideH: 1, strideW: 1, padding: .same).encoded),
                  OpRecord(opcode: .globalAvgPool, name: "gap", inputs: [7], output: 8),
                  OpRecord(opcode: .dense, name: "probs", inputs: [8], output: 9, attributes: DenseAttributes(activation: .none, softmax: true).encoded, tensors: [9, 10])],
            tensors: [w([7, 7, 3, 16], 1), w([16], 2), w([1, 1, 16, 16], 3), w([16], 4), w([3, 3, 16, 16], 5), w([16], 6),
                      w([1, 1, 16, 32], 7), w([32], 8), w([1, 1, 16, 32], 9), w([32, 10], 10), w([10], 11)])
        return try Model(bundle: Bundle(bytes: BundleWriter.serialize(frozen)))
    }

    static func input(_ k: Int, shape: [Int]) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, values: (0..<n).map { Float(($0 * 7 + k * 13) % 255) / 255 })
    }

    @Test func concurrentRunsMatchASingleThreadedRun() throws {
        if let t = ProcessInfo.processInfo.environment["KILN_TEST_KERNEL_THREADS"], let n = Int(t) {
            setKernelThreads(n)
        }
        let model = try Self.model()
        // Different inputs (and two shapes) per caller, so that a caller reading another's buffers shows.
        let shapes = [[2, 33, 29, 3], [1, 40, 40, 3]]
        let inputs = (0..<8).map { Self.input($0, shape: shapes[$0 % 2]) }
        let expected = try inputs.map { try model.run($0) }

        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var mismatches: [String] = []
            var runs = 0
            func record(_ ok: Bool, _ what: @autoclosure () -> String) {
                lock.lock(); defer { lock.unlock() }
                runs += 1
                if !ok { mismatches.append(what()) }
            }
        }
        let results = Results()
        let rounds = 6
        DispatchQueue.concurrentPerform(iterations: inputs.count) { caller in
            for round in 0..<rounds {
                let k = (caller + round) % inputs.count
                do {
                    let got = try model.run(inputs[k])
                    let same = got.count == expected[k].count && zip(got, expected[k]).allSatisfy { a, b in
                        a.shape == b.shape && a.values.map(\.bitPattern) == b.values.map(\.bitPattern)
                    }
                    results.record(same, "caller \(caller), round \(round), input \(k): outputs differ from the single-threaded run")
                } catch {
                    results.record(false, "caller \(caller), round \(round): \(error)")
                }
            }
        }
        #expect(results.runs == inputs.count * rounds)
        #expect(results.mismatches.isEmpty, "\(results.mismatches.prefix(5))")
        // Plans made and used on different threads while the model is shared.
        let plans = try inputs.map { try ExecutionPlan(model: model, inputShape: $0.shape) }
        DispatchQueue.concurrentPerform(iterations: plans.count) { i in
            let got = try? plans[i].run(inputs[i])
            results.record(got.map { zip($0, expected[i]).allSatisfy { $0.values == $1.values } } ?? false, "plan \(i) differs")
        }
        #expect(results.mismatches.isEmpty, "\(results.mismatches.prefix(5))")
        print("concurrent runs: \(results.runs) runs on \(inputs.count) threads, kernel threads \(kernelThreads()), \(results.mismatches.count) mismatches")
    }

    /// Plans of a larger batch repack a layer's weights for another algorithm (`ConvAlgorithm.forLargerBatch`),
    /// once per model, under a lock: plans made on many threads at once, for batches on both sides of the switch,
    /// all give the reference kernels' result.
    @Test func largerBatchPackingWhilePlanningConcurrently() throws {
        guard ConvAlgorithm.avx2Available else { return }
        // One 3×3 layer of 264 channels (direct at load; F(2,3) from 64 tiles on: batch 4 of 8×8 images).
        var state: UInt64 = 7
        let weights = (0..<(3 * 3 * 264 * 264)).map { _ -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max) * 0.05
        }
        let frozen = FrozenModel(
            valueNames: ["x", "y"],
            inputs: [PortRecord(name: "x", value: 0, shape: [-1, -1, -1, 264])],
            outputs: [PortRecord(name: "y", value: 1, shape: [-1, -1, -1, 264])],
            ops: [OpRecord(opcode: .conv2d, name: "conv", inputs: [0], output: 1,
                           attributes: Conv2DAttributes(kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padding: .same,
                                                        activation: .relu).encoded, tensors: [0, 1])],
            tensors: [TensorRecord(name: "w", shape: [3, 3, 264, 264], floats: weights),
                      TensorRecord(name: "b", shape: [264], floats: (0..<264).map { Float($0 % 7) * 0.01 })])
        let model = try Model(bundle: Bundle(bytes: BundleWriter.serialize(frozen)))
        let batches = [1, 4, 2, 4, 5, 1]
        let inputs = batches.enumerated().map { Self.input($0.offset, shape: [$0.element, 8, 8, 264]) }
        let expected = try inputs.map { try model.run($0, kernels: .reference) }
        final class Errors: @unchecked Sendable {
            let lock = NSLock()
            var worst: [Float]
            init(_ n: Int) { worst = [Float](repeating: .infinity, count: n) }
            func set(_ i: Int, _ e: Float) { lock.lock(); worst[i] = e; lock.unlock() }
        }
        let errors = Errors(inputs.count)
        DispatchQueue.concurrentPerform(iterations: inputs.count) { i in
            guard let got = try? model.run(inputs[i]) else { return }
            let want = expected[i][0].values
            let scale = want.map(abs).max() ?? 1
            errors.set(i, zip(want, got[0].values).map { abs($0 - $1) }.max().map { $0 / scale } ?? .infinity)
        }
        // Winograd's tolerance in the kernel tests (the reference is direct convolution in float32).
        #expect(errors.worst.allSatisfy { $0 <= 1e-4 }, "\(zip(batches, errors.worst).map { "batch \($0): \($1)" })")
    }
}
