// Shared by every fuzz target (compiled into each). A target fails only by crashing: a trap, a sanitizer
// report, or `fuzzFailure` for a result that is wrong without crashing (a round trip that does not hold).
#if canImport(Glibc)
import Glibc
#endif

/// Stops the run with a message; libFuzzer saves the input as a crash artifact.
func fuzzFailure(_ message: String) -> Never {
    let line = Array("fuzz failure: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    abort()
}

/// The libFuzzer input as an array.
func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// `KILN_FUZZ_WRITE_SEEDS=DIR`: the target writes its generated seeds into DIR and exits (see `scripts/fuzz --seeds`).
func seedDirectoryRequested() -> String? {
    guard let p = getenv("KILN_FUZZ_WRITE_SEEDS") else { return nil }
    return String(cString: p)
}

func writeSeed(_ bytes: [UInt8], directory: String, name: String) {
    let path = "\(directory)/\(name)"
    guard let f = fopen(path, "wb") else { fuzzFailure("cannot write \(path)") }
    _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
    fclose(f)
}

/// Deterministic values in [-1, 1) for inputs the harness makes up (a linear congruential sequence).
func pseudoRandomFloats(_ count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [Float] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
    }
}
