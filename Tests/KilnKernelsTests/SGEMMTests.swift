import Testing
@testable import KilnKernels

/// `sgemm` (head training's products) against a float64 reference: every transpose, beta 0, 1 and ½, sizes on
/// both sides of the AVX path's threshold (16 columns, 2^20 multiply-adds) and with ragged panels.
@Suite("sgemm against float64")
struct SGEMMTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var m: Int, n: Int, k: Int
        var testDescription: String { "\(m)×\(k)·\(k)×\(n)" }
    }

    static let cases: [Case] = [
        Case(m: 32, n: 256, k: 2048),   // a Dense(256) forward pass of a batch: the AVX path
        Case(m: 2048, n: 256, k: 32),   // its weight gradient: the AVX path
        Case(m: 33, n: 40, k: 1000),    // ragged rows and a half-empty last panel: the AVX path
        Case(m: 32, n: 10, k: 2048),    // 10 columns: OpenBLAS
        Case(m: 7, n: 24, k: 9),        // small: OpenBLAS
    ]

    @Test(arguments: cases)
    func matchesFloat64(_ c: Case) {
        var rng = SplitMix64(seed: UInt64(c.m * 7 + c.n * 13 + c.k))
        let a = (0..<c.m * c.k).map { _ in Float.random(in: -1...1, using: &rng) }
        let b = (0..<c.k * c.n).map { _ in Float.random(in: -1...1, using: &rng) }
        let c0 = (0..<c.m * c.n).map { _ in Float.random(in: -1...1, using: &rng) }
        func transposed(_ x: [Float], rows: Int, cols: Int) -> [Float] {
            var t = [Float](repeating: 0, count: x.count)
            for r in 0..<rows { for q in 0..<cols { t[q * rows + r] = x[r * cols + q] } }
            return t
        }
        for transA in [false, true] {
            for transB in [false, true] {
                for beta: Float in [0, 1, 0.5] {
                    let aIn = transA ? transposed(a, rows: c.m, cols: c.k) : a
                    let bIn = transB ? transposed(b, rows: c.k, cols: c.n) : b
                    var got = c0
                    aIn.withUnsafeBufferPointer { ap in
                        bIn.withUnsafeBufferPointer { bp in
                            got.withUnsafeMutableBufferPointer { cp in
                                sgemm(transA: transA, transB: transB, m: c.m, n: c.n, k: c.k, a: ap.baseAddress!,
                                      b: bp.baseAddress!, beta: beta, c: cp.baseAddress!)
                            }
                        }
                    }
                    // Errors over √k + 1: the products are of size 1, their sum's rounding grows with √k.
                    let scale = Double(c.k).squareRoot() + 1
                    var worst = 0.0
                    for i in 0..<c.m {
                        for j in 0..<c.n {
                            var sum = Double(beta) * Double(c0[i * c.n + j])
                            for p in 0..<c.k {
                                let x = Double(a[i * c.k + p]), y = Double(b[p * c.n + j])
                                sum += x * y
                            }
                            let error = abs(sum - Double(got[i * c.n + j])) / scale
                            worst = max(worst, error)
                        }
                    }
                    #expect(worst < 1e-5, "transA \(transA) transB \(transB) beta \(beta): \(worst)")
                }
            }
        }
    }

    /// Under `flushDenormals`, denormal inputs count as zero on every thread that computes the product (the
    /// pool's workers take the caller's mode); after `restoreFloatMode`, they count again.
    @Test func denormalsFlushedOnEveryThread() {
        let m = 64, n = 64, k = 256  // the AVX path, in several tasks
        let tiny = Float.leastNormalMagnitude / 4  // a denormal
        let a = [Float](repeating: tiny, count: m * k), b = [Float](repeating: 1, count: k * n)
        func product() -> [Float] {
            var c = [Float](repeating: -1, count: m * n)
            a.withUnsafeBufferPointer { ap in
                b.withUnsafeBufferPointer { bp in
                    c.withUnsafeMutableBufferPointer { cp in
                        sgemm(transA: false, transB: false, m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!,
                              beta: 0, c: cp.baseAddress!)
                    }
                }
            }
            return c
        }
        let mode = flushDenormals()
        let flushed = product()
        restoreFloatMode(mode)
        let kept = product()
        #expect(flushed.allSatisfy { $0 == 0 })
        #expect(kept.allSatisfy { $0 == Float(k) * tiny })
    }
}
