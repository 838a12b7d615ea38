import Foundation
import Testing
@testable import KilnImage

/// The image fixtures: the committed samples (samples/images) and, when scripts/fixtures-images has made
/// them, the full-size set (KILN_IMAGE_FIXTURES). Both were written by scripts/make_image_fixtures.py.
enum ImageFixtures {
    static let samples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../samples/images").standardized.path
    static let env = ProcessInfo.processInfo.environment
    static let full = env["KILN_IMAGE_FIXTURES"] ?? ""
    static let required = env["KILN_REQUIRE_FIXTURES"] == "1"

    struct Resized: Decodable, Sendable {
        var resize: String
        var height: Int
        var width: Int
        var resize_shorter: Int?
        var expected: String
    }

    struct Image: Decodable, Sendable, CustomStringConvertible {
        var file: String
        var encoding: String
        var pil_mode: String
        var width: Int
        var height: Int
        var decoded: String
        var resized: [Resized]
        var description: String { file }
        var isJPEG: Bool { file.hasSuffix(".jpg") }
    }

    struct Broken: Decodable, Sendable, CustomStringConvertible {
        var file: String
        var kind: String
        var note: String
        var description: String { file }
    }

    struct Predictions: Decodable, Sendable {
        var preprocessing: String
        var model: String
        var resize: String
        var height: Int
        var width: Int
        var expected: String
        var top1: [Int]
    }

    struct Manifest: Decodable, Sendable {
        var images: [Image]
        var broken: [Broken]
        var predictions: Predictions?
    }

    static func manifest(_ folder: String) -> Manifest? {
        guard let data = FileManager.default.contents(atPath: "\(folder)/manifest.json") else { return nil }
        return try? JSONDecoder().decode(Manifest.self, from: data)
    }

    static let sampleManifest = manifest(samples)
    static let fullManifest = full.isEmpty ? nil : manifest(full)
    /// On when the full set is there, or when `make test` requires it (then missing fails).
    static var fullEnabled: Bool { fullManifest != nil || required }
}

/// A `.npy` uint8 array (`|u1`, C order): shape and bytes.
func readNPYBytes(_ path: String) throws -> (shape: [Int], values: [UInt8]) {
    struct Bad: Error, CustomStringConvertible { var description: String }
    guard let data = FileManager.default.contents(atPath: path) else { throw Bad(description: "\(path): cannot read") }
    let b = [UInt8](data)
    guard b.count > 10, b[0] == 0x93, b[1] == 0x4E else { throw Bad(description: "\(path): not .npy") }
    let (len, start) = b[6] == 1 ? (Int(b[8]) | Int(b[9]) << 8, 10)
                                 : (Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24, 12)
    let header = String(decoding: b[start..<start + len], as: UTF8.self)
    guard header.contains("'|u1'") else { throw Bad(description: "\(path): not uint8: \(header)") }
    guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
        throw Bad(description: "\(path): no shape")
    }
    let shape = header[open.upperBound..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    let values = Array(b[(start + len)...])
    guard values.count == shape.reduce(1, *) else { throw Bad(description: "\(path): \(values.count) bytes for \(shape)") }
    return (shape, values)
}

/// How two pixel arrays differ.
struct PixelDifference: CustomStringConvertible {
    var count = 0
    var differing = 0
    var maxDifference = 0
    var first: Int?

    init(_ got: [UInt8], _ want: [UInt8]) {
        count = want.count
        guard got.count == want.count else {
            differing = max(want.count, 1)
            maxDifference = 255
            return
        }
        got.withUnsafeBufferPointer { g in
            want.withUnsafeBufferPointer { w in
                for i in 0..<w.count where g[i] != w[i] {
                    differing += 1
                    maxDifference = max(maxDifference, abs(Int(g[i]) - Int(w[i])))
                    if first == nil { first = i }
                }
            }
        }
    }

    var fraction: Double { count == 0 ? 0 : Double(differing) / Double(count) }

    /// The issue's bar: identical, or (JPEG only) at most 1 level apart on at most 0.1% of the values.
    func meetsBar(jpeg: Bool) -> Bool {
        differing == 0 || (jpeg && maxDifference <= 1 && fraction <= 0.001)
    }

    var description: String {
        differing == 0 ? "identical (\(count) values)"
            : "\(differing) of \(count) values differ (\(String(format: "%.4f", 100 * fraction))%), max \(maxDifference), first at \(first ?? -1)"
    }
}
