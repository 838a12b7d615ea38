#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KilnRuntime

/// Execution plans of one model kept per input shape and reused: planning, the arena and its prefault happen
/// once per shape, not once per batch.
///
/// A plan is not for concurrent use, so each shape has a small pool: a caller checks a plan out, runs it and
/// checks it in. At most `plansPerShape` plans exist per shape (a caller waits while all are out), and at most
/// `maximumShapes` shapes are kept: a new shape evicts the least recently used shape whose plans are all idle,
/// and when every kept shape is busy it gets a plan of its own that is dropped after the run. Memory is
/// bounded either way.
public final class PlanPool: @unchecked Sendable {
    public let model: Model
    public let kernels: KernelChoice
    public let plansPerShape: Int
    public let maximumShapes: Int

    private struct Entry {
        var idle: [ExecutionPlan] = []
        /// Plans of this shape that exist (idle or checked out, or being made).
        var made = 0
        var lastUse: UInt64 = 0
    }

    // Guarded by `mutex`; `condition` is signalled when a plan is checked in or a slot frees up.
    private var entries: [[Int]: Entry] = [:]
    private var clock: UInt64 = 0
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init(model: Model, kernels: KernelChoice = .fast, plansPerShape: Int = 2, maximumShapes: Int = 8) {
        self.model = model
        self.kernels = kernels
        self.plansPerShape = max(plansPerShape, 1)
        self.maximumShapes = max(maximumShapes, 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Runs `body` with a plan for `shape` checked out for it alone; blocks while every plan of that shape is
    /// in use. The plan's output buffers are valid only inside `body`. Throws a `ClassifyError` when no plan
    /// can be made for `shape`, or what `body` throws.
    public func withPlan<R>(for shape: [Int], _ body: (ExecutionPlan) throws -> R) throws -> R {
        let (plan, pooled) = try checkOut(shape)
        defer { checkIn(plan, pooled: pooled) }
        return try body(plan)
    }

    /// The shapes kept and how many plans each has made.
    public var planCounts: [[Int]: Int] {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return entries.mapValues(\.made)
    }

    private func checkOut(_ shape: [Int]) throws(ClassifyError) -> (ExecutionPlan, pooled: Bool) {
        pthread_mutex_lock(mutex)
        var pooled = true
        while true {
            clock += 1
            if var entry = entries[shape] {
                entry.lastUse = clock
                if let plan = entry.idle.popLast() {
                    entries[shape] = entry
                    pthread_mutex_unlock(mutex)
                    return (plan, true)
                }
                if entry.made < plansPerShape {
                    entry.made += 1
                    entries[shape] = entry
                    break
                }
                entries[shape] = entry
                pthread_cond_wait(condition, mutex)
                continue
            }
            evictIdleShapes()
            if entries.count < maximumShapes {
                entries[shape] = Entry(made: 1, lastUse: clock)
            } else {
                pooled = false
            }
            break
        }
        pthread_mutex_unlock(mutex)
        // Planning (shapes, arena, prefault) happens outside the lock: other shapes go on meanwhile.
        do {
            return (try ExecutionPlan(model: model, inputShape: shape, kernels: kernels), pooled)
        } catch {
            if pooled { forget(shape) }
            throw ClassifyError(error)
        }
    }

    private func checkIn(_ plan: ExecutionPlan, pooled: Bool) {
        guard pooled else { return }
        pthread_mutex_lock(mutex)
        entries[plan.inputShape]?.idle.append(plan)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// A plan that could not be made: its slot is free again (and a shape no plan could be made for goes).
    private func forget(_ shape: [Int]) {
        pthread_mutex_lock(mutex)
        if var entry = entries[shape] {
            entry.made -= 1
            entries[shape] = entry.made == 0 && entry.idle.isEmpty ? nil : entry
        }
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Drops least recently used shapes whose plans are all idle until there is room for one more. Called
    /// with the mutex held.
    private func evictIdleShapes() {
        while entries.count >= maximumShapes {
            let idle = entries.filter { $0.value.made == $0.value.idle.count }
            guard let oldest = idle.min(by: { $0.value.lastUse < $1.value.lastUse }) else { return }
            entries[oldest.key] = nil
        }
    }
}
