#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KilnKernels

/// A progress bar on stderr, drawn only when stderr is a terminal and the work has taken over a second.
public struct ProgressBar {
    public let total: Int
    let enabled: Bool
    let start: Double
    var lastDraw = 0.0
    var visible = false

    public init(total: Int) {
        self.total = total
        enabled = isatty(STDERR_FILENO) == 1 && total > 1
        start = monotonicSeconds()
    }

    /// Clears the bar before results are printed (stdout may be the same terminal).
    public mutating func pause() {
        guard visible else { return }
        writeStandardError("\r\u{1B}[K")
        visible = false
    }

    /// `done` of `total` items are finished.
    public mutating func update(done: Int) {
        guard enabled, done < total else { return }
        let now = monotonicSeconds()
        guard now - start >= 1.0, now - lastDraw >= 0.1 else { return }
        lastDraw = now
        let width = 30
        let filled = width * done / max(total, 1)
        let rate = Double(done) / max(now - start, 1e-9)
        let eta = rate > 0 ? Int((Double(total - done) / rate).rounded()) : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let rateText = "\(Int(rate * 10) / 10).\(Int(rate * 10) % 10)"
        writeStandardError("\r[\(bar)] \(done)/\(total) images, \(rateText)/s, \(eta / 60):\(eta % 60 < 10 ? "0" : "")\(eta % 60) left")
        visible = true
    }

    public mutating func finish() { pause() }
}

/// Flushes every C stdio stream (stdout among them) before other output, such as a progress line, goes out.
/// `fflush(nil)` rather than naming stdout: the global `stdout` is not concurrency-safe to name in Swift 6.
public func flushStandardStreams() {
    fflush(nil)
}

/// Writes `s` unbuffered, straight to file descriptor 2.
public func writeStandardError(_ s: String) {
    let bytes = Array(s.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { raw -> Int in
            guard let base = raw.baseAddress else { return 0 }
            return write(STDERR_FILENO, base + done, raw.count - done)
        }
        if n <= 0 { return }
        done += n
    }
}
