import Foundation
import Testing
import KilnFormat
import KilnRuntime

/// End to end through the release binaries on the backbone fixtures of issue 17 (scripts/fixtures-backbones):
/// every file of every model (Keras 3 `.h5` and `.keras`, tf.keras `.h5`, torch's ONNX exports) through
/// `kiln convert` and `kiln-run --input` against the framework's own output: max|Δ|/max|ref| ≤ 1e-4, top-1 equal.
/// `make test` sets KILN_FIXTURES_BACKBONES (and KILN_BIN, KILN_REQUIRE_FIXTURES=1).
enum BackboneE2E {
    static let fixtures = E2E.env["KILN_FIXTURES_BACKBONES"] ?? ""
    static var available: Bool {
        FileManager.default.fileExists(atPath: "\(fixtures)/manifest.json") && FileManager.default.isExecutableFile(atPath: "\(E2E.bin)/kiln")
    }
    static var enabled: Bool { available || E2E.required }

    struct Model: Decodable, Sendable {
        var files: [String]
        var input: String
        var expected: String
        var top1: [Int]
    }

    struct Case: Sendable, CustomStringConvertible {
        var model: String
        var file: String
        var input: String
        var expected: String
        var top1: [Int]
        var description: String { file }
    }

    static let cases: [Case] = {
        guard let data = FileManager.default.contents(atPath: "\(fixtures)/manifest.json"),
              let manifest = try? JSONDecoder().decode([String: Model].self, from: data) else {
            return E2E.required ? [Case(model: "missing", file: "<missing \(fixtures)/manifest.json>", input: "", expected: "", top1: [])] : []
        }
        return manifest.keys.sorted().flatMap { name in
            let m = manifest[name]!
            return m.files.map { Case(model: name, file: $0, input: m.input, expected: m.expected, top1: m.top1) }
        }
    }()
}

@Suite(.enabled(if: BackboneE2E.enabled, "backbone fixtures: run `make test` (or set KILN_FIXTURES_BACKBONES and KILN_BIN)"), .serialized)
struct BackboneParityTests {
    @Test(arguments: BackboneE2E.cases)
    func convertAndRunMatchesTheFramework(_ c: BackboneE2E.Case) throws {
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f = BackboneE2E.fixtures
        let bundle = "\(dir)/model.kiln", out = "\(dir)/y.npy"
        let convert = try E2E.run("kiln", ["convert", "\(f)/\(c.file)", "-o", bundle])
        try #require(convert.status == 0, "kiln convert \(c.file): \(convert.stderr)")
        let run = try E2E.run("kiln-run", [bundle, "--input", "\(f)/\(c.input)", "--output", out])
        try #require(run.status == 0, "kiln-run \(c.file): \(run.stderr)")
        let got = try NPY.read(path: out), expected = try NPY.read(path: "\(f)/\(c.expected)")
        try #require(got.shape == expected.shape, "\(c.file): output shape \(got.shape), the framework's \(expected.shape)")
        let error = relativeMaxError(expected.values, got.values)
        print("backbone parity \(c.file): max|Δ|/max|ref| = \(error)")
        #expect(error <= 1e-4, "\(c.file): max|Δ|/max|ref| \(error) > 1e-4")
        #expect(argmaxRows(got) == c.top1, "\(c.file): top-1 \(argmaxRows(got)), the framework's \(c.top1)")
    }
}
