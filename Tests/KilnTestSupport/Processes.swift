import Foundation

/// What a finished child process said: its exit status (128 + the signal when a signal killed it), stdout, stderr.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }

    /// The non-empty lines of stdout.
    public var lines: [String] { stdout.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
}

/// Runs `executable` with `arguments` to completion, both pipes read to the end.
public func runProcess(_ executable: String, _ arguments: [String]) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let status = p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
    return ProcessResult(status: status, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// A new, empty directory under the system's temporary directory, named `prefix-UUID`.
public func makeTemporaryDirectory(prefix: String) throws -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

/// What the tests' colour classifier (global average pool of raw RGB, then Dense with 1/16 on the diagonal and
/// a softmax) gives for interleaved RGB `pixels`, in Float64: softmax(mean per channel / 16).
public func colourSoftmax(_ pixels: [UInt8]) -> [Float] {
    var sums = [Double](repeating: 0, count: 3)
    for (i, v) in pixels.enumerated() { sums[i % 3] += Double(v) }
    let logits = sums.map { $0 / Double(pixels.count / 3) / 16 }
    let m = logits.max() ?? 0
    let e = logits.map { exp($0 - m) }
    return e.map { Float($0 / e.reduce(0, +)) }
}
