import Foundation
import Testing
import KilnFormat
import KilnRuntime
import KilnClassify

/// Thread-safe box for what concurrent runs saw.
final class Seen: @unchecked Sendable {
    private let lock = NSLock()
    private var plans: Set<ObjectIdentifier> = []
    private var failures: [String] = []
    private var holding = 0, mostHeld = 0
    func add(_ plan: ExecutionPlan) { lock.withLock { _ = plans.insert(ObjectIdentifier(plan)) } }
    func enter() { lock.withLock { holding += 1; mostHeld = max(mostHeld, holding) } }
    func leave() { lock.withLock { holding -= 1 } }
    var mostHeldAtOnce: Int { lock.withLock { mostHeld } }
    func fail(_ s: String) { lock.withLock { failures.append(s) } }
    var planCount: Int { lock.withLock { plans.count } }
    var failureList: [String] { lock.withLock { failures } }
}

@Suite struct PlanPoolTests {
    @Test func samePlanForTheSameShape() throws {
        let c = try classifier(rgbClassifier())
        var first: ExecutionPlan?, second: ExecutionPlan?, other: ExecutionPlan?
        try c.plans.withPlan(for: [2, 40, 56, 3]) { first = $0 }
        try c.plans.withPlan(for: [2, 40, 56, 3]) { second = $0 }
        try c.plans.withPlan(for: [1, 40, 56, 3]) { other = $0 }
        #expect(first != nil && first === second, "the plan of a shape is reused")
        #expect(other !== first && other?.inputShape == [1, 40, 56, 3])
        #expect(c.plans.planCounts == [[2, 40, 56, 3]: 1, [1, 40, 56, 3]: 1])
        // Runs through the classifier use the pool too: no new plan for a shape already seen.
        let x = [Float](repeating: 16, count: 2 * 40 * 56 * 3)
        for _ in 0..<3 { _ = try c.run(Tensor(shape: [2, 40, 56, 3], values: x)) }
        #expect(c.plans.planCounts[[2, 40, 56, 3]] == 1)
    }

    /// 8 threads × 10 runs of one shape with 2 plans per shape, each holding its plan 2 ms: both plans in use
    /// at once, never a third (the others wait), each run's output right.
    @Test func boundedPoolUnderConcurrentUse() throws {
        let c = try classifier(rgbClassifier(logits: true), plansPerShape: 2)
        let seen = Seen()
        @Sendable func work(_ thread: Int) {
            for k in 0..<10 {
                let v = Float(16 * (thread + k))
                let x = [Float](repeating: v, count: 40 * 56 * 3)
                do {
                    try x.withUnsafeBufferPointer { input in
                        try c.plans.withPlan(for: [1, 40, 56, 3]) { plan in
                            seen.enter()
                            defer { seen.leave() }
                            seen.add(plan)
                            usleep(2000)
                            let out = try plan.run(input: input).first.map(Array.init) ?? []
                            if out != [v / 16, v / 16, v / 16] { seen.fail("thread \(thread) run \(k): \(out)") }
                        }
                    }
                } catch {
                    seen.fail("\(error)")
                }
            }
        }
        let group = DispatchGroup()
        for thread in 0..<8 {
            group.enter()
            Thread {
                defer { group.leave() }
                work(thread)
            }.start()
        }
        group.wait()
        #expect(seen.failureList.isEmpty, "\(seen.failureList.prefix(3))")
        #expect(seen.planCount == 2 && seen.mostHeldAtOnce == 2 && c.plans.planCounts == [[1, 40, 56, 3]: 2], "\(c.plans.planCounts)")
    }

    /// At most `maximumShapes` shapes are kept; the least recently used idle shape goes first.
    @Test func shapesAreBounded() throws {
        let c = try classifier(rgbClassifier(height: nil, width: nil), maximumShapes: 2)
        for shape in [[1, 8, 8, 3], [1, 9, 9, 3], [1, 8, 8, 3], [1, 10, 10, 3]] {
            try c.plans.withPlan(for: shape) { _ in }
        }
        #expect(Set(c.plans.planCounts.keys) == [[1, 8, 8, 3], [1, 10, 10, 3]])
        // While both kept shapes are busy, a third still runs, on a plan that is not kept.
        try c.plans.withPlan(for: [1, 8, 8, 3]) { _ in
            try c.plans.withPlan(for: [1, 10, 10, 3]) { _ in
                try c.plans.withPlan(for: [1, 11, 11, 3]) { plan in #expect(plan.inputShape == [1, 11, 11, 3]) }
            }
        }
        #expect(Set(c.plans.planCounts.keys) == [[1, 8, 8, 3], [1, 10, 10, 3]])
    }

    /// A shape the model cannot take: the runtime's error, and no slot kept for it.
    @Test func badShapeKeepsNothing() throws {
        let c = try classifier(rgbClassifier())
        let e = try #require(throws: ClassifyError.self) { try c.plans.withPlan(for: [1, 40, 56, 4]) { _ in } }
        #expect(e.kind == .badInput, "\(e)")
        #expect(c.plans.planCounts.isEmpty)
    }
}
