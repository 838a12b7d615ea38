import Testing
@testable import KilnFormat

@Suite struct WeightStorageTests {
    func model(_ kernel: [Float], shape: [Int]) -> FrozenModel {
        var m = tinyModel()
        m.tensors[0] = TensorRecord(name: "conv/kernel", shape: shape, floats: kernel)
        m.ops[0].attributes = Conv2DAttributes(kernelH: shape[0], kernelW: shape[1], strideH: 1, strideW: 1, padding: .valid, activation: .none).encoded
        return m
    }

    func roundTrip(_ values: [Float], shape: [Int], as storage: WeightStorage, compression: Compression? = nil) throws -> [Float] {
        let m = model(values, shape: shape).storingWeights(as: storage)
        let bundle = try Bundle(bytes: try BundleWriter.serialize(m, compression: compression))
        #expect(bundle.versionMinor == (storage == .f32 && compression == nil ? 0 : 1))
        return bundle.model.tensors[0].decodedFloats()
    }

    /// Values worked out by hand from the IEEE formats, not from our encoder.
    @Test func float16RoundsToNearestEven() throws {
        // 1/3 in binary16 is 0x3555 = 0.333251953125; 65504 is the largest finite; 1 + 2^-11 ties to 1.
        let got = try roundTrip([1.0 / 3, 0.5, -2.25, 65504, 1 + 0x1p-11], shape: [1, 1, 1, 5], as: .f16)
        #expect(got == [0.333251953125, 0.5, -2.25, 65504, 1])
    }

    /// Our branch-light widening against Swift's own Float16 conversion, for every one of the 65,536 patterns.
    @Test func halfWideningIsExactForEveryPattern() {
        var mismatches = 0
        for bits in 0...UInt16.max {
            let want = Float(Float16(bitPattern: bits)), got = halfToFloat(bits)
            if !(want == got && want.sign == got.sign) && !(want.isNaN && got.isNaN) { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    /// Unshuffling undoes shuffling for every plane width, tails included.
    @Test(arguments: [1, 2, 4], [0, 1, 7, 64, 67])
    func shuffleRoundTrips(width: Int, count: Int) {
        let original = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        var shuffled = [UInt8](repeating: 0, count: count), back = shuffled
        original.withUnsafeBytes { src in shuffled.withUnsafeMutableBytes { shufflePlanes(src, into: $0, width: width) } }
        shuffled.withUnsafeBytes { src in back.withUnsafeMutableBytes { unshufflePlanes(src, into: $0, width: width) } }
        #expect(back == original)
        if width == 2 && count == 7 { #expect(shuffled == [original[0], original[2], original[4], original[1], original[3], original[5], original[6]]) }
    }

    @Test func bfloat16RoundsToNearestEven() throws {
        // 1/3 = 0x3EAAAAAB: the low half 0xAAAB > 0x8000 rounds up to 0x3EAB = 0.333984375.
        // 1 + 2^-8 = 0x3F808000: a tie with an even upper half (0x3F80) stays 1.
        let got = try roundTrip([1.0 / 3, 1 + 0x1p-8, -3], shape: [1, 1, 1, 3], as: .bf16)
        #expect(got == [0.333984375, 1, -3])
    }

    @Test func int8IsSymmetricPerOutputChannel() throws {
        // Shape [1, 1, 2, 2] (HWIO): channel 0 holds {1, 0.25} → scale 1/127; channel 1 {-0.5, 2} → 2/127.
        // q = round(w / scale): 127, -32 (−31.75), 32 (31.75), 127.
        let got = try roundTrip([1, -0.5, 0.25, 2], shape: [1, 1, 2, 2], as: .int8)
        let s0 = Float(1) / 127, s1 = Float(2) / 127
        #expect(got == [127 * s0, -32 * s1, 32 * s0, 127 * s1])
    }

    @Test(arguments: WeightStorage.allCases)
    func compressedRoundTripIsExact(storage: WeightStorage) throws {
        var r: UInt64 = 9
        let values = (0..<(3 * 3 * 2 * 2)).map { _ -> Float in
            r = r &* 6_364_136_223_846_793_005 &+ 1
            return Float(Int(r >> 40) % 2000 - 1000) / 997
        }
        let plain = try roundTrip(values, shape: [3, 3, 2, 2], as: storage)
        let packed = try roundTrip(values, shape: [3, 3, 2, 2], as: storage, compression: .zstd(level: 3))
        #expect(plain == packed)
    }

    @Test func compressionShrinksRepetitiveWeights() throws {
        let values = [Float](repeating: 0.125, count: 4096)
        var m = model(Array(values.prefix(36)), shape: [3, 3, 2, 2])
        m.tensors.append(TensorRecord(name: "big/kernel", shape: [64, 64], floats: values))
        let plain = try BundleWriter.serialize(m)
        let small = try BundleWriter.serialize(m, compression: .zstd(level: 19))
        #expect(small.count < plain.count / 4)
        let back = try Bundle(bytes: small)
        #expect(back.model.tensors[2].payload.floats == values)
        #expect(back.sections[3].compressed && back.sections[3].uncompressedSize > back.sections[3].size)
    }

    /// A compressed DATA section whose bytes are damaged (checksum re-computed, so the zstd decoder sees it)
    /// or whose recorded size is wrong: an error naming DATA.
    @Test func brokenCompressedSectionNamesTheSection() throws {
        var m = model((0..<36).map { Float($0) }, shape: [3, 3, 2, 2])
        m.tensors.append(TensorRecord(name: "big/kernel", shape: [64, 64], floats: (0..<4096).map { Float($0 % 7) }))
        let good = try BundleWriter.serialize(m, compression: .zstd(level: 3))
        let bundle = try Bundle(bytes: good)
        let data = bundle.sections[3]
        let entry = BundleLayout.headerSize + 3 * BundleLayout.sectionEntrySize

        func rechecksummed(_ bytes: [UInt8]) -> [UInt8] {
            var b = bytes
            let sum = XXH64.hash(Array(b[data.offset..<data.offset + data.size]))
            withUnsafeBytes(of: sum.littleEndian) { b.replaceSubrange((entry + 24)..<(entry + 32), with: $0) }
            let header = XXH64.hash(Array(b[0..<40]) + Array(b[64..<(64 + 4 * BundleLayout.sectionEntrySize)]))
            withUnsafeBytes(of: header.littleEndian) { b.replaceSubrange(40..<48, with: $0) }
            return b
        }
        var corrupt = good
        corrupt[data.offset + data.size / 2] ^= 0xFF
        #expect { _ = try Bundle(bytes: rechecksummed(corrupt)) } throws: { e in
            let s = "\(e)"
            return s.hasPrefix("section DATA: ")
        }
        var wrongSize = good
        let size = UInt64(data.uncompressedSize + 64)
        withUnsafeBytes(of: size.littleEndian) { wrongSize.replaceSubrange((entry + 32)..<(entry + 40), with: $0) }
        #expect { _ = try Bundle(bytes: rechecksummed(wrongSize)) } throws: { e in
            "\(e)".hasPrefix("section DATA: ") && "\(e)".contains("decompress")
        }
    }
}
