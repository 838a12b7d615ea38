/// What kind of failure an error is, so that a front end can map it without reading the message:
/// `kiln-serve` to an HTTP or gRPC status, the C API to a negative error code, `kiln-run` to its exit status.
public enum ErrorKind: String, Sendable, CaseIterable, Equatable {
    /// The caller's input is wrong: a tensor of the wrong shape, bytes that are not an image, a bad argument.
    case badInput = "bad-input"
    /// The bundle (or another model file) is damaged or inconsistent.
    case badBundle = "bad-bundle"
    /// Well formed, but beyond what Kiln does: an op, a layout, a format variant.
    case unsupported
    /// An invariant of Kiln's own broke: a bug to report.
    case `internal`
}

/// An error that says which kind of failure it is.
public protocol KindedError: Error, CustomStringConvertible {
    var kind: ErrorKind { get }
}
