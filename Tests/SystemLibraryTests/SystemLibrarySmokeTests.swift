// One smoke test per system library wrapper: the module imports, the library links, its version matches
// the header we compiled against, and one real call gives the right answer.
import CHDF5
import COpenBLAS
import CProtobufC
import CZstd
import Testing

@Suite("System libraries")
struct SystemLibrarySmokeTests {
    @Test("CHDF5: library version matches the header")
    func hdf5Version() {
        var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
        #expect(H5get_libversion(&major, &minor, &release) >= 0)
        #expect([major, minor, release] == [UInt32(H5_VERS_MAJOR), UInt32(H5_VERS_MINOR), UInt32(H5_VERS_RELEASE)])
        #expect(major == 1 && minor >= 10)
    }

    @Test("COpenBLAS: a 2×3 by 3×2 sgemm")
    func openBLASSgemm() {
        // C = A·B, row-major: A = [[1, 2, 3], [4, 5, 6]], B = [[7, 8], [9, 10], [11, 12]].
        let a: [Float] = [1, 2, 3, 4, 5, 6]
        let b: [Float] = [7, 8, 9, 10, 11, 12]
        var c = [Float](repeating: 0, count: 4)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 3, 1, a, 3, b, 2, 0, &c, 2)
        #expect(c == [58, 64, 139, 154])
        let config = openblas_get_config().map { String(cString: $0) } ?? ""
        #expect(config.contains("OpenBLAS"))
    }

    @Test("CZstd: version matches the header, and a round trip")
    func zstdRoundTrip() {
        // ZSTD_VERSION_NUMBER is an expression macro Swift cannot import; rebuild it from its parts.
        let header = UInt32(ZSTD_VERSION_MAJOR * 100 * 100 + ZSTD_VERSION_MINOR * 100 + ZSTD_VERSION_RELEASE)
        #expect(ZSTD_versionNumber() == header)
        let input = Array("kiln kiln kiln kiln kiln kiln kiln kiln".utf8)
        var compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let compressedSize = ZSTD_compress(&compressed, compressed.count, input, input.count, 3)
        #expect(ZSTD_isError(compressedSize) == 0)
        #expect(compressedSize < input.count)
        var output = [UInt8](repeating: 0, count: input.count)
        let outputSize = ZSTD_decompress(&output, output.count, compressed, compressedSize)
        #expect(ZSTD_isError(outputSize) == 0)
        #expect(outputSize == input.count)
        #expect(output == input)
    }

    @Test("CProtobufC: library version matches the header")
    func protobufCVersion() {
        #expect(protobuf_c_version_number() == UInt32(PROTOBUF_C_VERSION_NUMBER))
        let text = protobuf_c_version().map { String(cString: $0) } ?? ""
        let number = protobuf_c_version_number()
        #expect(text == "\(number / 1_000_000).\(number / 1000 % 1000).\(number % 1000)")
    }
}
