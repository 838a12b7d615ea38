import Foundation
import Testing
import KilnFormat
import KilnImage
import KilnRuntime
import KilnTestSupport
import KilnClassify

/// Every failure reaching a front end carries one `ErrorKind`, from whichever layer it came.
@Suite struct ErrorKindTests {
    @Test(arguments: ImageError.Kind.allCases)
    func imageKinds(kind: ImageError.Kind) {
        let e = ClassifyError(ImageError(file: "f.png", kind: kind, "what"))
        #expect(e.kind == (kind == .unsupported ? .unsupported : .badInput))
        #expect(e.imageKind == kind && e.description == "f.png: what")
        #expect(ClassifyError(ImageError(file: "f.png", kind: kind, "what") as any Error) == e)
    }

    @Test func runtimeBundleAndNPYErrors() throws {
        let runtime = ClassifyError(RuntimeError(.unsupported, op: "conv1", "groups 2"))
        #expect(runtime.kind == .unsupported && runtime.description == "op 'conv1': groups 2")
        let dir = try makeTemporaryDirectory(prefix: "kiln-classify")
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let missing = try #require(throws: ClassifyError.self) { try Classifier(contentsOf: "\(dir)/none.kiln") }
        #expect(missing.kind == .badInput && missing.description.contains("none.kiln"), "\(missing)")

        var bytes = try BundleWriter.serialize(rgbClassifier())
        bytes[bytes.count / 2] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/damaged.kiln"))
        let damaged = try #require(throws: ClassifyError.self) { try Classifier(contentsOf: "\(dir)/damaged.kiln") }
        #expect(damaged.kind == .badBundle && damaged.description.contains("damaged.kiln") && damaged.description.contains("checksum"), "\(damaged)")
        #expect(damaged.description == String(describing: try #require(throws: BundleError.self) { try Bundle(contentsOf: "\(dir)/damaged.kiln") }))

        try Data("not numpy".utf8).write(to: URL(fileURLWithPath: "\(dir)/x.npy"))
        let npy = ClassifyError(try #require(throws: NPY.FormatError.self) { try NPY.read(path: "\(dir)/x.npy") })
        #expect(npy.kind == .badInput && npy.file == "\(dir)/x.npy")

        let c = try classifier(rgbClassifier())
        let shape = try #require(throws: ClassifyError.self) { try c.run(Tensor(shape: [1, 2, 2, 5], values: .init(repeating: 0, count: 20))) }
        #expect(shape.kind == .badInput, "\(shape)")
        struct Strange: Error {}
        #expect(ClassifyError(Strange()).kind == .internal)
    }
}
