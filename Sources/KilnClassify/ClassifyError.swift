import KilnFormat
import KilnImage
import KilnRuntime

/// Any failure of the classification pipeline, with one `ErrorKind` a front end maps without reading the
/// message (kiln-serve to a status code, the C API to an error code). `description` is one line that names
/// the file (image, tensor or bundle) when there is one, exactly as the underlying error said it.
public struct ClassifyError: KindedError, Sendable, Equatable {
    public var kind: ErrorKind
    /// The image, tensor or bundle the error is about, when it names one.
    public var file: String?
    /// What is wrong, without the file.
    public var message: String
    /// For an image that could not be read, decoded or resized: the decoder's finer kind (`truncated`,
    /// `not-an-image`, …; the `kind` of kiln-run's JSON errors).
    public var imageKind: ImageError.Kind?

    public init(_ kind: ErrorKind, file: String? = nil, _ message: String, imageKind: ImageError.Kind? = nil) {
        self.kind = kind
        self.file = file
        self.message = message
        self.imageKind = imageKind
    }

    public var description: String { file.map { "\($0): \(message)" } ?? message }

    /// An image failure: `unsupported` for formats and variants Kiln refuses, `badInput` for the rest
    /// (unreadable, empty, not an image, truncated, corrupt, over a limit, a bad argument).
    public init(_ error: ImageError) {
        self.init(error.kind == .unsupported ? .unsupported : .badInput, file: error.file, error.message, imageKind: error.kind)
    }

    /// A load, plan or run failure of the runtime, with its own kind (the op stays in the message).
    public init(_ error: RuntimeError) {
        self.init(error.kind, error.description)
    }

    /// A bundle that cannot be opened or read, with its own kind.
    public init(_ error: BundleError) {
        self.init(error.kind, file: error.file, error.section.map { "section \($0): \(error.message)" } ?? error.message)
    }

    /// A `.npy` file that is not a float32 array Kiln reads: the caller's input.
    public init(_ error: NPY.FormatError) {
        self.init(.badInput, file: error.file, error.message)
    }

    /// Whatever a lower layer threw, mapped by its type; an error of no known type is `internal`.
    public init(_ error: any Error) {
        switch error {
        case let e as ClassifyError: self = e
        case let e as ImageError: self.init(e)
        case let e as RuntimeError: self.init(e)
        case let e as BundleError: self.init(e)
        case let e as NPY.FormatError: self.init(e)
        case let e as any KindedError: self.init(e.kind, e.description)
        default: self.init(.internal, String(describing: error))
        }
    }
}
