#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file to classify, or a path that could not be listed or opened (reported in its place, in order).
public struct ImageFile: Sendable, Equatable {
    public var path: String
    public var error: ClassifyError?

    public init(path: String, error: ClassifyError? = nil) {
        self.path = path
        self.error = error
    }
}

/// Files in argument order; a directory contributes its files recursively, entries sorted by name (byte
/// order), hidden entries (".name") skipped, each directory visited once (symbolic-link loops).
public func collectImageFiles(_ arguments: [String]) -> [ImageFile] {
    var out: [ImageFile] = []
    var visited = Set<[UInt64]>()

    func failure(_ path: String, _ what: String) -> ImageFile {
        ImageFile(path: path, error: ClassifyError(.badInput, file: path, "\(what): \(String(cString: strerror(errno)))"))
    }

    func walk(_ dir: String) {
        guard let handle = opendir(dir) else {
            out.append(failure(dir, "cannot list"))
            return
        }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            names.append(name)
        }
        closedir(handle)
        names.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        for name in names {
            visit(dir.hasSuffix("/") ? dir + name : dir + "/" + name, fromDirectory: true)
        }
    }

    func visit(_ path: String, fromDirectory: Bool) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            out.append(failure(path, "cannot open"))
            return
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            let key = [UInt64(st.st_dev), UInt64(st.st_ino)]
            guard visited.insert(key).inserted else { return }
            walk(path)
        } else if (st.st_mode & S_IFMT) == S_IFREG || !fromDirectory {
            out.append(ImageFile(path: path))
        }
    }

    for argument in arguments { visit(argument, fromDirectory: false) }
    return out
}
