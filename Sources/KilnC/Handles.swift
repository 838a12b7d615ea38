#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CKilnAPI
import KilnClassify
import KilnFormat
import KilnRuntime
import Synchronization

/// A NUL-terminated copy of `string` in C memory, freed by `CStrings.deinit`.
private func duplicate(_ string: String) -> UnsafeMutablePointer<CChar> {
    if let copy = strdup(string) { return copy }
    // Out of memory: an empty string that `free` takes (malloc(1) failing too is beyond rescue).
    let empty = malloc(1)!.assumingMemoryBound(to: CChar.self)
    empty.pointee = 0
    return empty
}

/// C strings owned by one object, freed with it.
final class CStrings: @unchecked Sendable {
    private(set) var pointers: [UnsafeMutablePointer<CChar>] = []

    func make(_ string: String) -> UnsafePointer<CChar> {
        let p = duplicate(string)
        pointers.append(p)
        return UnsafePointer(p)
    }

    func make(_ string: String?) -> UnsafePointer<CChar>? { string.map { make($0) } }

    deinit { for p in pointers { free(p) } }
}

/// What `kiln_model *` points at: the loaded bundle, its default spec, and every string the model hands to C
/// (names, labels, metadata), made once at open so that the pointers stay put.
final class ModelHandle: @unchecked Sendable {
    let model: Model
    let path: String
    /// The spec of the default output (the first).
    let spec: InputSpec
    let inputNames: [UnsafePointer<CChar>]
    let outputNames: [UnsafePointer<CChar>]
    /// `labels.names`, in column order.
    let labels: [UnsafePointer<CChar>]
    let layout: UnsafePointer<CChar>
    let resize: UnsafePointer<CChar>?
    let preprocessing: UnsafePointer<CChar>?
    let color: UnsafePointer<CChar>?
    let scoresProbability: UnsafePointer<CChar>
    let scoresScore: UnsafePointer<CChar>
    private let strings: CStrings
    /// Column numbers as text, for `kiln_class.label` of columns without a label; made on first use.
    private let columnNames: Mutex<(strings: CStrings, byColumn: [Int: UnsafePointer<CChar>])>

    init(path: String) throws(ClassifyError) {
        let model: Model
        do { model = try Model(contentsOf: path) } catch { throw ClassifyError(error) }
        let spec = try InputSpec(model.frozen, bundle: path)
        let strings = CStrings()
        self.model = model
        self.path = path
        self.spec = spec
        inputNames = model.frozen.inputs.map { strings.make($0.name) }
        outputNames = model.frozen.outputs.map { strings.make($0.name) }
        labels = (spec.labels ?? []).map { strings.make($0) }
        layout = strings.make(spec.layout.rawValue)
        resize = strings.make(spec.resize)
        preprocessing = strings.make(spec.preprocessing)
        color = strings.make(spec.color)
        scoresProbability = strings.make(OutputScores.probabilities.rawValue)
        scoresScore = strings.make(OutputScores.scores.rawValue)
        self.strings = strings
        columnNames = Mutex((CStrings(), [:]))
    }

    func scores(_ scores: OutputScores) -> UnsafePointer<CChar> {
        scores == .probabilities ? scoresProbability : scoresScore
    }

    /// The label of output column `column`: the bundle's, or the column number as text.
    func label(_ column: Int) -> UnsafePointer<CChar> {
        if labels.indices.contains(column) { return labels[column] }
        // The address crosses the lock as a number: the string itself never moves or changes.
        let address = columnNames.withLock { state -> UInt in
            if let p = state.byColumn[column] { return UInt(bitPattern: p) }
            let p = state.strings.make(String(column))
            state.byColumn[column] = p
            return UInt(bitPattern: p)
        }
        return UnsafePointer(bitPattern: address)!
    }
}

/// What `kiln_session *` points at: a classifier (its own plans) over a model, and the session's options.
final class SessionHandle: Sendable {
    let model: ModelHandle
    let classifier: Classifier
    let softmax: Bool

    init(model: ModelHandle, classifier: Classifier, softmax: Bool) {
        self.model = model
        self.classifier = classifier
        self.softmax = softmax
    }
}

// MARK: - Handles across the boundary

/// A handle's object: the caller's pointer back to the object it was made from (no reference taken).
func object<T: AnyObject>(_ pointer: OpaquePointer?, as: T.Type) -> T? {
    guard let pointer else { return nil }
    return Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
}

/// A new handle holding one reference to `object`, released by `release`.
func retainedHandle<T: AnyObject>(_ object: T) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

func release<T: AnyObject>(_ pointer: OpaquePointer?, as: T.Type) {
    guard let pointer else { return }
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).release()
}

// MARK: - Errors across the boundary

extension ErrorKind {
    /// The C API's code of this kind (kiln.h, `kiln_error`).
    var code: Int32 {
        switch self {
        case .badInput: return KILN_ERR_BAD_INPUT.rawValue
        case .badBundle: return KILN_ERR_BAD_BUNDLE.rawValue
        case .unsupported: return KILN_ERR_UNSUPPORTED.rawValue
        case .internal: return KILN_ERR_INTERNAL.rawValue
        }
    }
}

/// Writes `message` into the caller's `err` buffer of `length` bytes, NUL-terminated, cut at a character
/// boundary when it does not fit; nothing when `err` is NULL or `length` is 0.
func writeMessage(_ message: String, to err: UnsafeMutablePointer<CChar>?, length: Int) {
    guard let err, length > 0 else { return }
    var bytes = Array(message.utf8)
    if bytes.count > length - 1 {
        var cut = length - 1
        // Back off over UTF-8 continuation bytes (10xxxxxx) so that no character is split.
        while cut > 0, bytes[cut] & 0xC0 == 0x80 { cut -= 1 }
        bytes.removeSubrange(cut...)
    }
    for (i, b) in bytes.enumerated() { err[i] = CChar(bitPattern: b) }
    err[bytes.count] = 0
}

/// Reports `error` to the caller: its message into `err`, its kind's code as the return value.
func fail(_ error: ClassifyError, _ err: UnsafeMutablePointer<CChar>?, _ length: Int) -> Int32 {
    writeMessage(error.description, to: err, length: length)
    return error.kind.code
}

/// A bad argument (a `badInput`), named after the function it was given to.
func badArgument(_ function: String, _ message: String) -> ClassifyError {
    ClassifyError(.badInput, "\(function): \(message)")
}

/// A caller's shape as `[Int]`, checked: `rank` 1...8, each dimension ≥ 1, the product within the runtime's
/// limit and equal to `count` when given.
func checkedShape(_ shape: UnsafePointer<Int64>?, rank: Int, count: Int?, in function: String) throws(ClassifyError) -> [Int] {
    guard let shape else { throw badArgument(function, "shape is NULL") }
    guard (1...8).contains(rank) else { throw badArgument(function, "rank \(rank) is not in 1...8") }
    var dims: [Int] = []
    var product = 1
    for i in 0..<rank {
        let d = shape[i]
        guard d >= 1, d <= Int64(Model.maximumValueElements) else {
            throw badArgument(function, "dimension \(i) is \(d)")
        }
        let (p, overflow) = product.multipliedReportingOverflow(by: Int(d))
        guard !overflow, p <= Model.maximumValueElements else {
            throw badArgument(function, "the shape has more than \(Model.maximumValueElements) elements")
        }
        product = p
        dims.append(Int(d))
    }
    if let count, count != product {
        throw badArgument(function, "input has \(count) values for shape \(dims) (\(product))")
    }
    return dims
}
