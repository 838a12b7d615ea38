import Foundation
import Testing
@testable import KilnTrain

@Suite struct NPZTests {
    @Test func roundTripEveryType() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-npz-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let arrays: [(String, NPYArray)] = [
            ("f", .float32(shape: [2, 3], values: [1, -2, 3.5, 0, .greatestFiniteMagnitude, -0.25])),
            ("d", .float64(shape: [1], values: [1e300])),
            ("i", .int64(shape: [3], values: [0, -1, Int64.max])),
            ("s", .strings(["a", "ünïcode/ß.png", ""])),
        ]
        let path = dir + "/x.npz"
        try NPZ.write(arrays, to: path)
        let back = try NPZ.read(path: path)
        #expect(back.count == 4)
        for (k, v) in arrays { #expect(back[k] == v) }
        // Nothing else left in the folder (atomic write: no temporary file).
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["x.npz"])
    }

    @Test func damagedArchiveIsRejected() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-npz-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/x.npz"
        try NPZ.write([("f", .float32(shape: [4], values: [1, 2, 3, 4]))], to: path)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count / 3] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: NPZError.self) { try NPZ.read(path: path) }
        try Data("hello".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: NPZError(file: "x.npz", message: "not a .npz archive (too short)")) { try NPZ.read(path: path) }
    }
}
