import Foundation
import Testing
@testable import KilnFormat

/// The PACK section's bytes (bundle 1.4): written and read back, its index under the section checksum, each entry
/// under its own.
@Suite struct PackedLayoutsTests {
    static let content = PackedLayoutsContent(key: "test-isa/layout-1", entries: [
        (tensor: 0, layout: 4, use: 0, bytes: (0..<200).map { UInt8($0) }),
        (tensor: 0, layout: 1, use: 1, bytes: [1, 2, 3, 4, 5, 6, 7, 8]),
    ])

    @Test func roundTripsAfterData() throws {
        let bundle = try Bundle(bytes: BundleWriter.serialize(tinyModel(), packed: Self.content))
        #expect(bundle.versionMinor == 4)
        #expect(bundle.sections.map(\.kind) == [.metadata, .graph, .tensors, .data, .pack])
        let layouts = try #require(bundle.packedLayouts)
        #expect(layouts.key == "test-isa/layout-1")
        // Sorted by (tensor, layout).
        #expect(layouts.entries.map(\.layout) == [1, 4])
        #expect(layouts.entries.map(\.use) == [1, 0])
        #expect(layouts.entries.map { Array($0.bytes) } == [[1, 2, 3, 4, 5, 6, 7, 8], (0..<200).map { UInt8($0) }])
        for e in layouts.entries {
            #expect(Int(bitPattern: e.bytes.baseAddress) % 64 == 0)
            #expect(e.verify())
        }
        // The model and its tensors are untouched by the extra section.
        #expect(bundle.model.tensors.map(\.payload.floats) == tinyModel().tensors.map(\.payload.floats))
        #expect(try Bundle(bytes: BundleWriter.serialize(tinyModel())).packedLayouts == nil)
    }

    /// From a file, DATA's pages go back to the OS as they are checked (a PACK section is there): the checksums still
    /// agree and the tensors still read back (from the file again), over DATA several 4 MiB chunks long.
    @Test func aMappedBundleChecksDataWhileReleasingItsPages() throws {
        var model = tinyModel()
        let big = (0..<(3 << 20)).map { Float($0 % 1000) - 500 }
        model.tensors[0] = TensorRecord(name: "conv/kernel", shape: [3, 3, 2, 2], floats: Array(model.tensors[0].payload.floats))
        model.tensors.append(TensorRecord(name: "big", shape: [big.count], floats: big))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-pack-\(getpid()).kiln").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try BundleWriter.write(model, to: path, packed: Self.content)
        let bundle = try Bundle(contentsOf: path)
        #expect(bundle.model.tensors[2].payload.floats == big)
        #expect(bundle.packedLayouts?.entries.allSatisfy { $0.verify() } == true)
    }

    @Test func aBundleWithoutPackStaysAtItsVersion() throws {
        #expect(try Bundle(bytes: BundleWriter.serialize(tinyModel())).versionMinor == 0)
    }

    /// A changed byte in the section's index fails loading naming PACK; one in an entry's bytes loads (the section
    /// checksum covers the index only) but fails that entry's `verify`, so the runtime never uses it.
    @Test func damageIsCaughtInTheIndexAndInEachEntry() throws {
        let bytes = try BundleWriter.serialize(tinyModel(), packed: Self.content)
        let pack = try #require(Bundle(bytes: bytes).sections.last)
        let layouts = try #require(Bundle(bytes: bytes).packedLayouts)
        let indexEnd = (4 + 4 + layouts.key.utf8.count + 7) / 8 * 8 + 2 * PackedLayoutsContent.entrySize
        for i in 0..<indexEnd {
            var damaged = bytes
            damaged[pack.offset + i] ^= 0x20
            do {
                _ = try Bundle(bytes: damaged)
                Issue.record("index byte \(i) changed and accepted")
            } catch {
                #expect(error.section == "PACK" || error.section == "section table", "byte \(i): \(error)")
            }
        }
        var failedEntries: [[Bool]] = []
        for i in indexEnd..<pack.size {
            var damaged = bytes
            damaged[pack.offset + i] ^= 0x20
            // Padding between entries is checked at load; the entries' own bytes by their checksums.
            guard let b = try? Bundle(bytes: damaged), let l = b.packedLayouts else { continue }
            let verdicts = l.entries.map { $0.verify() }
            #expect(verdicts.contains(false), "entry byte \(i) changed and every entry still verifies")
            failedEntries.append(verdicts)
        }
        #expect(failedEntries.count == 208)
    }

    @Test func theSectionTableMustSayPerEntryChecksums() throws {
        var bytes = try BundleWriter.serialize(tinyModel(), packed: Self.content)
        // The PACK entry of the section table is the fifth: its flags word at 64 + 4·48 + 4.
        bytes[64 + 4 * 48 + 4] = 0
        #expect(throws: BundleError.self) { _ = try Bundle(bytes: bytes) }
    }
}
