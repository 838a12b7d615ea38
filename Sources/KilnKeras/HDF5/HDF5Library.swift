// @preconcurrency: the `_g` globals below are C `var`s, which Swift 6 otherwise rejects as shared mutable
// state; they are written once by H5open and only read under the lock.
@preconcurrency import CHDF5
import Foundation

// The HDF5 C library, as the rest of this folder sees it: one lock, the constants that C spells as
// macros, and the error stack turned into text.
//
// Traps:
// - HDF5 is not safe to call from several threads unless built with --enable-threadsafe (Debian's serial
//   build is; others are not), and Swift Testing runs tests in parallel. Every call into the library,
//   closes in deinit included, goes through `HDF5Library.withLock`.
// - In a thread-safe build the error stack and its auto-print setting are per thread, so switching off
//   HDF5's printing to stderr once is not enough: `withLock` does it on every entry (cheap).
// - `H5T_NATIVE_FLOAT`, `H5P_DEFAULT`, `H5F_ACC_RDONLY`, … are C macros Swift cannot import; the `_g`
//   globals they expand to are valid only after `H5open()`, which `withLock` also calls.

enum HDF5Library {
    /// Recursive, because a Swift object released inside a locked region closes its handle in `deinit`.
    private static let lock = NSRecursiveLock()

    /// Runs `body` holding the library lock, with HDF5 initialised and its error printing off.
    static func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        lock.lock()
        defer { lock.unlock() }
        _ = H5open()
        _ = H5Eset_auto2(hid_t(H5E_DEFAULT), nil, nil)
        return try body()
    }

    // MARK: Macros, spelled out
    static let propertiesDefault = hid_t(0)  // H5P_DEFAULT
    static let selectAll = hid_t(0)  // H5S_ALL
    static let readOnly = UInt32(0)  // H5F_ACC_RDONLY
    static let variableSize = -1  // H5T_VARIABLE is (size_t)(-1), and Swift imports size_t as Int
    /// Call inside `withLock` only (the value is set by `H5open`).
    static var nativeFloat: hid_t { H5T_NATIVE_FLOAT_g }
    static var nativeDouble: hid_t { H5T_NATIVE_DOUBLE_g }
    static var cString: hid_t { H5T_C_S1_g }

    /// The messages on this thread's HDF5 error stack, most specific first ("truncated file: eof = …").
    /// Call inside `withLock`, right after the failing call: the next API call clears the stack.
    static func errorStackMessages() -> [String] {
        var messages: [String] = []
        let collect: H5E_walk2_t = { _, entry, context in
            guard let entry, let context, let text = entry.pointee.desc else { return 0 }
            context.assumingMemoryBound(to: [String].self).pointee.append(String(cString: text))
            return 0
        }
        withUnsafeMutablePointer(to: &messages) { pointer in
            _ = H5Ewalk2(hid_t(H5E_DEFAULT), H5E_WALK_UPWARD, collect, pointer)
        }
        return messages.filter { !$0.isEmpty }
    }

    /// `" (HDF5: <most specific message>)"`, or "" when the stack is empty. Call as `errorStackMessages`.
    static func errorSuffix() -> String {
        guard let first = errorStackMessages().first else { return "" }
        return " (HDF5: \(first))"
    }
}

/// An HDF5 identifier owned by exactly one Swift object, closed in `deinit`.
final class HDF5Handle {
    let id: hid_t
    private let close: (hid_t) -> herr_t

    /// Takes ownership of `id`; a failed call's negative id is kept (callers check it) but never closed.
    init(_ id: hid_t, close: @escaping (hid_t) -> herr_t) {
        self.id = id
        self.close = close
    }

    deinit {
        guard id >= 0 else { return }
        let (id, close) = (self.id, self.close)
        HDF5Library.withLock { _ = close(id) }
    }
}

/// A path inside an HDF5 file, split into link names; "" and "/" are the starting group itself.
struct HDF5Path {
    let components: [String]
    let isAbsolute: Bool

    init(_ text: String) {
        isAbsolute = text.hasPrefix("/")
        components = text.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
    }

    /// The path as HDF5 takes it ("." for the starting group).
    var hdf5Name: String {
        if components.isEmpty { return isAbsolute ? "/" : "." }
        return (isAbsolute ? "/" : "") + components.joined(separator: "/")
    }

    /// The absolute path of this path when resolved from the group at `base`, for messages.
    func resolved(from base: String) -> String {
        let prefix = isAbsolute ? [] : HDF5Path(base).components
        return "/" + (prefix + components).joined(separator: "/")
    }
}
