import Testing
@testable import KilnKernels

@Suite("kernels' thread pool")
struct ThreadPoolTests {
    /// How often each index ran: each index owns its slot, so tasks on different threads never share one.
    final class Hits: @unchecked Sendable {
        let slots: UnsafeMutablePointer<Int>
        let count: Int
        init(_ count: Int) {
            self.count = count
            slots = .allocate(capacity: max(count, 1))
            slots.initialize(repeating: 0, count: max(count, 1))
        }
        deinit { slots.deallocate() }
        var all: [Int] { Array(UnsafeBufferPointer(start: slots, count: count)) }
    }

    @Test("parallelFor runs every index exactly once", arguments: [0, 1, 2, 3, 7, 64, 1000])
    func everyIndexOnce(count: Int) {
        let hits = Hits(count)
        parallelFor(count) { i in hits.slots[i] += 1 }
        #expect(hits.all == [Int](repeating: 1, count: count))
    }

    @Test("callers on several threads take turns and each gets all of its indices")
    func concurrentCallers() async {
        await withTaskGroup(of: Bool.self) { group in
            for caller in 0..<6 {
                group.addTask {
                    let count = 50 + caller * 13
                    for _ in 0..<40 {
                        let hits = Hits(count)
                        parallelFor(count) { i in hits.slots[i] += 1 }
                        if hits.all != [Int](repeating: 1, count: count) { return false }
                    }
                    return true
                }
            }
            for await ok in group { #expect(ok) }
        }
    }
}
