#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import KilnTestSupport
import KilnFormat
import KilnRuntime

// Hardening (issue 7): bad files never crash Kiln, and nothing is lost or half-written.
//
// - In process: structurally valid bundles that the runtime's load checks and shape planning refuse.
// - Through the release binaries (KILN_BIN), each under a virtual-memory cap so that a missing resource limit
//   fails the test instead of exhausting the machine: damaged bundles and lying .npy headers given to
//   `kiln-run`, and the malformed-source corpus of scripts/fixtures-malformed (damaged HDF5, .keras and image
//   files) given to `kiln convert` and `kiln-run`. Each must exit 1 with one line naming what is wrong, and
//   leave no output file.
// - `kiln convert` killed (SIGKILL) at several moments on a full-size fixture: the old output or none remains.

enum Hardening {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path
    static var binaries: Bool {
        ["kiln", "kiln-run"].allSatisfy { FileManager.default.isExecutableFile(atPath: "\(E2E.bin)/\($0)") }
    }
    static var enabled: Bool { binaries || E2E.required }

    /// Runs a release binary under `ulimit -v` (KiB). A crash shows as a status other than 0, 1 and 64.
    @discardableResult
    static func run(_ tool: String, _ args: [String], memoryKB: Int = 8 << 20) throws -> E2E.Result {
        try runProcess("/bin/sh", ["-c", "ulimit -v \(memoryKB); exec \"$0\" \"$@\"", "\(E2E.bin)/\(tool)"] + args)
    }

    /// Expects exit status 1 and exactly one line on stderr containing every fragment.
    static func expectOneLineError(_ r: E2E.Result, _ fragments: [String], _ what: String,
                                   sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 1, "\(what): status \(r.status)\(r.status > 128 ? " (killed by signal \(r.status - 128))" : ""): \(r.stderr.suffix(400))",
                sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == 1, "\(what): \(lines.count) lines on stderr: \(r.stderr.prefix(600))", sourceLocation: sourceLocation)
        for f in fragments {
            #expect(r.stderr.contains(f), "\(what): '\(r.stderr.trimmingCharacters(in: .newlines))' lacks '\(f)'", sourceLocation: sourceLocation)
        }
    }

    // MARK: A small image classifier bundle and surgery on it

    /// [N, 8, 8, 3] raw pixels → 3×3 conv + relu → global average pool → dense + softmax over 3 classes, with
    /// the metadata `kiln-run` needs to classify images (`input.resize`, size, labels).
    static func classifier(metadata extra: [String: MetadataValue] = [:], inputShape: [Int64] = [-1, 8, 8, 3]) -> FrozenModel {
        let conv = Conv2DAttributes(kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padding: .same, activation: .relu)
        var metadata: [String: MetadataValue] = ["input.resize": .string("keras-nearest"), "input.height": .int(8), "input.width": .int(8),
                                                 "labels.names": .strings(["red", "green", "blue"])]
        metadata.merge(extra) { $1 }
        return FrozenModel(
            metadata: metadata,
            valueNames: ["pixels", "conv1", "pool", "probs"],
            inputs: [PortRecord(name: "pixels", value: 0, shape: inputShape)],
            outputs: [PortRecord(name: "probs", value: 3, shape: [-1, 3])],
            ops: [OpRecord(opcode: .conv2d, name: "conv1", inputs: [0], output: 1, attributes: conv.encoded, tensors: [0, 1]),
                  OpRecord(opcode: .globalAvgPool, name: "pool", inputs: [1], output: 2),
                  OpRecord(opcode: .dense, name: "probs", inputs: [2], output: 3, attributes: DenseAttributes(activation: .none, softmax: true).encoded, tensors: [2, 3])],
            tensors: [TensorRecord(name: "conv1/kernel", shape: [3, 3, 3, 4], floats: (0..<108).map { Float($0 % 7) * 0.01 - 0.03 }),
                      TensorRecord(name: "conv1/bias", shape: [4], floats: [0.1, -0.1, 0.2, 0]),
                      TensorRecord(name: "probs/kernel", shape: [4, 3], floats: (0..<12).map { Float($0) * 0.1 - 0.5 }),
                      TensorRecord(name: "probs/bias", shape: [3], floats: [0, 0.5, -0.5])])
    }

    static func le32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
    static func le64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * $1) } }
    static func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) { for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }
    static func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) { for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) } }

    /// file_size, each section checksum and the header checksum recomputed (formats/kiln-bundle.md), so that
    /// the structural checks, not the checksums, meet the damage. (Tests/KilnFormatTests has the full walker.)
    static func resealed(_ input: [UInt8]) -> [UInt8] {
        var b = input
        put64(&b, 24, UInt64(b.count))
        let count = Int(le32(b, 16))
        for i in 0..<count {
            let e = 64 + 48 * i
            let offset = Int(le64(b, e + 8)), size = Int(le64(b, e + 16))
            if offset + size <= b.count { put64(&b, e + 24, XXH64.hash(Array(b[offset..<offset + size]))) }
        }
        put64(&b, 40, XXH64.hash(Array(b[0..<40]) + Array(b[64..<64 + 48 * count])))
        return b
    }

    /// Where the length-prefixed string `name` starts, searching from `from`: fields next to a name are found
    /// from it (an op's code is the u32 before its name; a tensor's type, rank and dims follow its name).
    static func offset(of name: String, in b: [UInt8], from: Int = 0) -> Int {
        let needle = [UInt8(name.utf8.count), 0, 0, 0] + Array(name.utf8)
        for i in from...(b.count - needle.count) where Array(b[i..<i + needle.count]) == needle { return i }
        return -1
    }

    static func section(_ b: [UInt8], _ index: Int) -> (offset: Int, size: Int) {
        (Int(le64(b, 64 + 48 * index + 8)), Int(le64(b, 64 + 48 * index + 16)))
    }

    static func npy(descr: String = "<f4", fortran: String = "False", shape: String, shapeKey: String = "shape", major: UInt8 = 1,
                    payload: [UInt8], headerPadding: Int = 0) -> [UInt8] {
        var header = Array("{'descr': '\(descr)', 'fortran_order': \(fortran), '\(shapeKey)': \(shape), }".utf8)
        header += [UInt8](repeating: 0x20, count: headerPadding)
        let prefix = major == 1 ? 10 : 12
        while (prefix + header.count + 1) % 64 != 0 { header.append(0x20) }
        header.append(0x0A)
        let n = header.count
        var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, major, 0]
        out += major == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF)] : [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 24)]
        return out + header + payload
    }

    static func floats(_ n: Int) -> [UInt8] {
        (0..<n).flatMap { i in withUnsafeBytes(of: (Float(i % 255)).bitPattern.littleEndian) { Array($0) } }
    }

    static func write(_ bytes: [UInt8], _ path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }
}

// MARK: - In process: structurally valid bundles that the runtime refuses

@Suite struct RuntimeLoadCheckTests {
    /// One op of the classifier replaced; the message names the op and the bad value.
    static func edited(_ edit: (inout FrozenModel) -> Void) -> FrozenModel {
        var m = Hardening.classifier()
        edit(&m)
        return m
    }

    static let loadCases: [(String, FrozenModel, String)] = [
        ("conv attribute count", edited { $0.ops[0].attributes.removeLast() }, "op 'conv1': Conv2D has 11 attributes, expected 12, 13, 16 or 17"),
        ("conv stride 0", edited { $0.ops[0].attributes[2] = 0 }, "op 'conv1': Conv2D attribute 2 is 0, expected 1...65536"),
        ("conv dilation 2^20", edited { $0.ops[0].attributes[10] = 1 << 20 }, "op 'conv1': Conv2D attribute 10 is 1048576, expected 1...65536"),
        ("conv softmax", edited { $0.ops[0].attributes[9] = 2 }, "op 'conv1': Conv2D activation code 2 is not an elementwise activation"),
        ("conv padding mode", edited { $0.ops[0].attributes[4] = 5 }, "op 'conv1': padding mode 5 is unknown"),
        ("conv padding amount", edited { $0.ops[0].attributes[5] = 70_000 }, "op 'conv1': padding amount 70000 is outside 0...65536"),
        ("conv negative padding", edited { $0.ops[0].attributes[6] = -1 }, "op 'conv1': padding amount -1 is outside 0...65536"),
        ("conv kernel disagrees", edited { $0.ops[0].attributes[0] = 5 },
         "op 'conv1': kernel 'conv1/kernel' has shape [3, 3, 3, 4], expected [5, 3, Cin, Cout]"),
        ("conv bias length", edited { $0.ops[0].tensors = [0, 3] }, "op 'conv1': bias 'probs/bias' has shape [3], expected [4]"),
        ("conv one tensor", edited { $0.ops[0].tensors = [0] }, "op 'conv1': Conv2D has 1 tensors, expected 2...2"),
        ("conv three inputs", edited { $0.ops[1].inputs = [1]; $0.ops[0].inputs = [0, 0, 0] }, "op 'conv1': Conv2D has 3 inputs, expected 1...2"),
        ("dense kernel rank", edited { $0.ops[2].tensors = [0, 3] }, "op 'probs': kernel 'conv1/kernel' has shape [3, 3, 3, 4], expected [in, out]"),
        ("dense activation", edited { $0.ops[2].attributes = [7] }, "op 'probs': Dense activation code 7 is not an elementwise activation"),
        ("pool attributes", edited { $0.ops[1].attributes = [1] }, "op 'pool': GlobalAvgPool takes no attributes, has 1"),
        ("pool tensor", edited { $0.ops[1].tensors = [3] }, "op 'pool': GlobalAvgPool has 1 tensors, expected 0...0"),
        ("input rank 3", edited { $0.inputs[0].shape = [-1, 8, 3] }, "input 'pixels' has rank 3; rank 2 or 4 (NHWC) expected"),
    ]

    @Test(arguments: loadCases.indices)
    func refusedAtLoad(_ i: Int) throws {
        let (name, model, message) = Self.loadCases[i]
        let bundle = try Bundle(bytes: try BundleWriter.serialize(model))
        #expect(throws: RuntimeError.self, "\(name)") { _ = try Model(bundle: bundle) }
        do { _ = try Model(bundle: bundle) } catch {
            #expect("\(error)" == message, "\(name)")
        }
    }

    static let otherOps: [(String, OpRecord, String)] = [
        ("add of one input", OpRecord(opcode: .add, name: "sum", inputs: [0], output: 1, attributes: [0]), "op 'sum': Add has 1 inputs, expected 2...2"),
        ("add softmax", OpRecord(opcode: .add, name: "sum", inputs: [0, 0], output: 1, attributes: [2]), "op 'sum': Add activation code 2 is not an elementwise activation"),
        ("pool stride 0", OpRecord(opcode: .maxPool2d, name: "mp", inputs: [0], output: 1, attributes: [3, 3, 0, 1, 0, 0, 0, 0, 0]),
         "op 'mp': pool attribute 2 is 0, expected 1...65536"),
        ("pool window 2^17", OpRecord(opcode: .avgPool2d, name: "ap", inputs: [0], output: 1, attributes: [1 << 17, 3, 1, 1, 0, 0, 0, 0, 0]),
         "op 'ap': pool attribute 0 is 131072, expected 1...65536"),
        ("transpose not a permutation", OpRecord(opcode: .transpose, name: "t", inputs: [0], output: 1, attributes: [0, 0, 1, 2]),
         "op 't': Transpose permutation [0, 0, 1, 2] is not a permutation of 0..<4"),
        ("transpose rank 9", OpRecord(opcode: .transpose, name: "t", inputs: [0], output: 1, attributes: (0..<9).map { Int64($0) }),
         "op 't': Transpose permutation [0, 1, 2, 3, 4, 5, 6, 7, 8] is not a permutation of 0..<9"),
        ("relu attribute", OpRecord(opcode: .relu, name: "r", inputs: [0], output: 1, attributes: [1]), "op 'r': ReLU takes no attributes, has 1"),
        ("pad amount", OpRecord(opcode: .pad, name: "p", inputs: [0], output: 1, attributes: [1, 1, 1, 70_000]),
         "op 'p': Pad amount 70000 is outside 0...65536"),
        ("pad values rank 2", OpRecord(opcode: .pad, name: "p", inputs: [0], output: 1, attributes: [1, 1, 1, 1], tensors: [0]),
         "op 'p': pad values 'v' have shape [1, 3], expected [C]"),
    ]

    @Test(arguments: otherOps.indices)
    func otherOpsRefusedAtLoad(_ i: Int) throws {
        let (name, op, message) = Self.otherOps[i]
        let model = FrozenModel(valueNames: ["x", "y"], inputs: [PortRecord(name: "x", value: 0, shape: [-1, 8, 8, 3])],
                                outputs: [PortRecord(name: "y", value: 1, shape: [])], ops: [op],
                                tensors: [TensorRecord(name: "v", shape: [1, 3], floats: [1, 2, 3])])
        let bundle = try Bundle(bytes: try BundleWriter.serialize(model))
        do {
            _ = try Model(bundle: bundle)
            Issue.record("\(name): loaded")
        } catch {
            #expect("\(error)" == message, "\(name)")
        }
    }

    /// Shapes that only the input reveals: refused by the plan, before any work or allocation.
    @Test func planRefusesInputsThatDoNotFit() throws {
        let model = try Model(bundle: Bundle(bytes: BundleWriter.serialize(Hardening.classifier(inputShape: [-1, 8, 8, 3]))))
        let cases: [([Int], String)] = [
            ([1, 9, 8, 3], "input has shape [1, 9, 8, 3], the model expects [?, 8, 8, 3] (dim 1)"),
            ([0, 8, 8, 3], "input has shape [0, 8, 8, 3], the model expects [?, 8, 8, 3] (dim 0)"),
            ([1, 8, 8], "input has shape [1, 8, 8], the model expects rank 4 [?, 8, 8, 3]"),
        ]
        for (shape, message) in cases {
            #expect { _ = try model.plan(inputShape: shape) } throws: { "\($0)" == message }
        }
        let free = try Model(bundle: Bundle(bytes: BundleWriter.serialize(Hardening.classifier(inputShape: [-1, -1, -1, -1]))))
        #expect { _ = try free.plan(inputShape: [1, 8, 8, 5]) } throws: {
            "\($0)" == "op 'conv1': input has 5 channels, the kernel [3, 3, 3, 4] expects 3"
        }
        #expect { _ = try free.plan(inputShape: [1, 8, 8]) } throws: { "\($0)".contains("the model expects rank 4") }
    }

    /// Pads of 65536 on every side, twice: a 1×1 input becomes [1, 262145, 262145, 1], 2^36 floats. The plan
    /// must refuse it with the limit in the message before anything allocates the arena.
    @Test func planRefusesValuesOverTheElementLimit() throws {
        let big = PadAttributes(top: 65536, bottom: 65536, left: 65536, right: 65536)
        let model = FrozenModel(
            valueNames: ["x", "p1", "p2"], inputs: [PortRecord(name: "x", value: 0, shape: [-1, -1, -1, 1])],
            outputs: [PortRecord(name: "p2", value: 2, shape: [-1, -1, -1, 1])],
            ops: [OpRecord(opcode: .pad, name: "p1", inputs: [0], output: 1, attributes: big.encoded),
                  OpRecord(opcode: .pad, name: "p2", inputs: [1], output: 2, attributes: big.encoded)],
            tensors: [])
        let loaded = try Model(bundle: Bundle(bytes: BundleWriter.serialize(model)))
        #expect { _ = try loaded.plan(inputShape: [1, 1, 1, 1]) } throws: { error in
            "\(error)".contains("op 'p") && "\(error)".contains("limit")
        }
    }
}

// MARK: - Through the binaries: damaged bundles and lying .npy files

@Suite(.enabled(if: Hardening.enabled, "needs the release binaries: run `make test` (or set KILN_BIN)"), .serialized)
struct MalformedBundleCLITests {
    /// Damaged variants of the classifier bundle and the words kiln-run's one-line error must hold.
    static func cases() throws -> [(String, [UInt8], [String])] {
        let good = try BundleWriter.serialize(Hardening.classifier())
        var cases: [(String, [UInt8], [String])] = []
        let sections = (0..<4).map { Hardening.section(good, $0) }
        let names = ["META", "GRPH", "TNSR", "DATA"]
        // Truncated at every section boundary, as cut and with the size and checksums made to agree.
        for (i, s) in sections.enumerated() {
            for cut in [s.offset, s.offset + s.size / 2] where cut < good.count {
                cases.append(("cut at \(cut) (\(names[i]))", Array(good[0..<cut]), ["section header", "truncated or extended"]))
                cases.append(("cut at \(cut) (\(names[i])), resealed", Hardening.resealed(Array(good[0..<cut])),
                              ["section \(names[i])", "runs past the end of the file"]))
            }
        }
        cases.append(("cut at 40", Array(good[0..<40]), ["file is 40 bytes, shorter than the 64-byte header"]))
        // A flipped bit in every section.
        for (i, s) in sections.enumerated() {
            var b = good
            b[s.offset + s.size / 3] ^= 0x04
            cases.append(("bit flipped in \(names[i])", b, ["section \(names[i])", "checksum mismatch", "the section is damaged"]))
        }
        var header = good
        header[70] ^= 0x01
        cases.append(("bit flipped in the section table", header, ["section header", "checksum mismatch in the header or section table"]))
        var future = good
        Hardening.put32(&future, 8, 2)
        cases.append(("version from the future", Hardening.resealed(future), ["bundle version 2.0 is not supported by this reader (version 1.x)"]))
        // Structural damage behind valid checksums.
        let graph = sections[1].offset, table = sections[2].offset
        var opcode = good
        let valueName = Hardening.offset(of: "conv1", in: good, from: graph)    // value names come first, then ops
        Hardening.put32(&opcode, Hardening.offset(of: "conv1", in: good, from: valueName + 1) - 4, 99)
        cases.append(("unknown op code", Hardening.resealed(opcode), ["section GRPH", "op 0 'conv1' has unknown op code 99"]))
        let kernel = Hardening.offset(of: "conv1/kernel", in: good, from: table)
        let dims = kernel + 4 + 12 + 8   // after the name: type, rank, then dims
        var overflow = good
        Hardening.put64(&overflow, dims, 1 << 62)
        cases.append(("dims that overflow", Hardening.resealed(overflow), ["section TNSR", "tensor 'conv1/kernel' shape overflows"]))
        var rank = good
        Hardening.put32(&rank, kernel + 4 + 12 + 4, 1000)
        cases.append(("rank 1000", Hardening.resealed(rank), ["section TNSR", "tensor 'conv1/kernel' has 1000 dims > 8"]))
        let bias = Hardening.offset(of: "conv1/bias", in: good, from: table)
        var overlap = good
        Hardening.put64(&overlap, bias + 4 + 10 + 8 + 8, 0)    // data_offset of the bias: the kernel's
        cases.append(("overlapping tensor offsets", Hardening.resealed(overlap), ["section TNSR", "overlaps the previous tensor's data"]))
        var misaligned = good
        Hardening.put64(&misaligned, bias + 4 + 10 + 8 + 8, Hardening.le64(good, bias + 4 + 10 + 8 + 8) + 4)
        cases.append(("misaligned tensor offset", Hardening.resealed(misaligned), ["section TNSR", "is not 64-byte aligned"]))
        var count = good
        Hardening.put32(&count, table, .max)
        cases.append(("tensor count 2^32-1", Hardening.resealed(count), ["section TNSR", "count 4294967295", "exceeds what the section can hold"]))
        return cases
    }

    @Test func damagedBundlesGiveOneLineAndNoOutput() throws {
        guard Hardening.binaries else { #expect(Hardening.binaries, "binaries missing in \(E2E.bin)"); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Hardening.write(NPY.serialize(Tensor(shape: [1, 8, 8, 3], values: [Float](repeating: 0.5, count: 192))), "\(dir)/x.npy")
        let good = "\(dir)/good.kiln"
        Hardening.write(try BundleWriter.serialize(Hardening.classifier()), good)
        #expect(try Hardening.run("kiln-run", [good, "--input", "\(dir)/x.npy", "--output", "\(dir)/y.npy"]).status == 0)
        try FileManager.default.removeItem(atPath: "\(dir)/y.npy")
        for (name, bytes, fragments) in try Self.cases() {
            let path = "\(dir)/damaged.kiln"
            Hardening.write(bytes, path)
            let r = try Hardening.run("kiln-run", [path, "--input", "\(dir)/x.npy", "--output", "\(dir)/y.npy"])
            Hardening.expectOneLineError(r, fragments + ["damaged.kiln"], "kiln-run, \(name)")
            #expect(!FileManager.default.fileExists(atPath: "\(dir)/y.npy"), "\(name): an output was written")
            let i = try Hardening.run("kiln", ["inspect", path])
            Hardening.expectOneLineError(i, fragments, "kiln inspect, \(name)")
        }
    }

    /// Inputs the bundle fuzz target found (fuzz/regressions/bundle), through `kiln inspect` (load, validate, plan)
    /// under a 4 GiB address-space cap: each is refused with one line.
    @Test func fuzzRegressions() throws {
        guard Hardening.binaries else { #expect(Hardening.binaries); return }
        let folder = "\(Hardening.root)/fuzz/regressions/bundle"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
        #expect(!files.isEmpty, "no inputs in \(folder)")
        for name in files {
            let r = try Hardening.run("kiln", ["inspect", "\(folder)/\(name)"], memoryKB: 4 << 20)
            Hardening.expectOneLineError(r, [name], "kiln inspect fuzz/regressions/bundle/\(name)")
        }
    }

    /// Resource limits checked before allocating, with the limit in the message. Each case is a small file that
    /// asks for gigabytes; run under a 4 GiB address-space cap.
    @Test func resourceLimitsComeBeforeAllocation() throws {
        guard Hardening.binaries else { #expect(Hardening.binaries); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cap = 4 << 20

        // A compressed DATA section whose recorded uncompressed size is 12 GiB.
        var compressed = try BundleWriter.serialize(Hardening.classifier(), compression: .zstd(level: 3))
        Hardening.put64(&compressed, 64 + 48 * 3 + 32, 12 << 30)
        Hardening.write(Hardening.resealed(compressed), "\(dir)/zstd-claims-12g.kiln")
        Hardening.write(NPY.serialize(Tensor(shape: [1, 8, 8, 3], values: [Float](repeating: 0.5, count: 192))), "\(dir)/x.npy")
        let z = try Hardening.run("kiln-run", ["\(dir)/zstd-claims-12g.kiln", "--input", "\(dir)/x.npy"], memoryKB: cap)
        Hardening.expectOneLineError(z, ["section DATA", "limit"], "compressed DATA claiming 12 GiB")

        // Two pads of 65536 on every side: a [1, 1, 1, 1] input becomes 2^36 floats.
        let big = PadAttributes(top: 65536, bottom: 65536, left: 65536, right: 65536)
        let pads = FrozenModel(valueNames: ["x", "p1", "p2"], inputs: [PortRecord(name: "x", value: 0, shape: [-1, -1, -1, 1])],
                               outputs: [PortRecord(name: "p2", value: 2, shape: [-1, -1, -1, 1])],
                               ops: [OpRecord(opcode: .pad, name: "p1", inputs: [0], output: 1, attributes: big.encoded),
                                     OpRecord(opcode: .pad, name: "p2", inputs: [1], output: 2, attributes: big.encoded)],
                               tensors: [])
        Hardening.write(try BundleWriter.serialize(pads), "\(dir)/pads.kiln")
        Hardening.write(NPY.serialize(Tensor(shape: [1, 1, 1, 1], values: [1])), "\(dir)/one.npy")
        let p = try Hardening.run("kiln-run", ["\(dir)/pads.kiln", "--input", "\(dir)/one.npy", "--output", "\(dir)/out.npy"], memoryKB: cap)
        Hardening.expectOneLineError(p, ["op 'p", "limit"], "activation of 2^36 floats")

        // 800 pads then a flatten: the flattened size overflows Int (the plan multiplies without a check).
        var ops: [OpRecord] = []
        for k in 0..<800 { ops.append(OpRecord(opcode: .pad, name: "pad\(k)", inputs: [k], output: k + 1, attributes: big.encoded)) }
        ops.append(OpRecord(opcode: .flatten, name: "flat", inputs: [800], output: 801))
        let flat = FrozenModel(valueNames: (0...801).map { "v\($0)" }, inputs: [PortRecord(name: "x", value: 0, shape: [-1, -1, -1, 1024])],
                               outputs: [PortRecord(name: "flat", value: 801, shape: [-1, -1])], ops: ops, tensors: [])
        Hardening.write(try BundleWriter.serialize(flat), "\(dir)/flatten.kiln")
        Hardening.write(NPY.serialize(Tensor(shape: [1, 1, 1, 1024], values: [Float](repeating: 1, count: 1024))), "\(dir)/c1024.npy")
        let f = try Hardening.run("kiln-run", ["\(dir)/flatten.kiln", "--input", "\(dir)/c1024.npy"], memoryKB: cap)
        Hardening.expectOneLineError(f, ["limit"], "flatten of more than 2^63 elements")

        // An image bundle that asks for 65536×65536 images (its input sizes are free).
        let huge = Hardening.classifier(metadata: ["input.height": .int(65536), "input.width": .int(65536)], inputShape: [-1, -1, -1, 3])
        Hardening.write(try BundleWriter.serialize(huge), "\(dir)/huge-images.kiln")
        let png = "\(Hardening.root)/samples/images/photos/camera_gray1.png"
        let h = try Hardening.run("kiln-run", ["\(dir)/huge-images.kiln", png], memoryKB: cap)
        #expect(h.status == 1, "image size 65536x65536: status \(h.status): \(h.stderr.suffix(300))")
        #expect((h.stdout + h.stderr).contains("pixels"), "image size 65536x65536: \(h.stdout.suffix(300)) \(h.stderr.suffix(300))")

        // torchvision resizing of the shorter side to 65536 (a 1-pixel-high image would become 65536 × 2^30).
        let tv = Hardening.classifier(metadata: ["input.resize": .string("torchvision"), "input.resize_shorter": .int(65536)])
        Hardening.write(try BundleWriter.serialize(tv), "\(dir)/torchvision-65536.kiln")
        let t = try Hardening.run("kiln-run", ["\(dir)/torchvision-65536.kiln", png], memoryKB: cap)
        #expect(t.status == 1, "resize_shorter 65536: status \(t.status): \(t.stderr.suffix(300))")
        #expect((t.stdout + t.stderr).contains("pixels"), "resize_shorter 65536: \(t.stdout.suffix(300)) \(t.stderr.suffix(300))")
    }

    /// .npy files whose header lies about the data, through `kiln-run --input` (and `kiln compare`).
    @Test func lyingNPYHeaders() throws {
        guard Hardening.binaries else { #expect(Hardening.binaries); return }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundle = "\(dir)/c.kiln"
        Hardening.write(try BundleWriter.serialize(Hardening.classifier()), bundle)
        let one = Hardening.floats(192)
        var wrongVersion = Hardening.npy(shape: "(1, 8, 8, 3)", payload: one)
        wrongVersion[6] = 9
        var notText = Hardening.npy(shape: "(1, 8, 8, 3)", payload: one)
        notText[20] = 0xFF
        let valid = Hardening.npy(shape: "(1, 8, 8, 3)", payload: one)
        let cases: [(String, [UInt8], [String])] = [
            ("more data claimed", Hardening.npy(shape: "(2, 8, 8, 3)", payload: one), ["shape [2, 8, 8, 3] needs 1536 data bytes, the file has 768"]),
            ("less data claimed", Hardening.npy(shape: "(1, 8, 8, 2)", payload: one), ["shape [1, 8, 8, 2] needs 512 data bytes, the file has 768"]),
            ("big-endian", Hardening.npy(descr: ">f4", shape: "(1, 8, 8, 3)", payload: one), ["dtype '>f4' is not supported (float32 or float64, little-endian)"]),
            ("integers", Hardening.npy(descr: "<i4", shape: "(1, 8, 8, 3)", payload: one), ["dtype '<i4' is not supported"]),
            ("Fortran order", Hardening.npy(fortran: "True", shape: "(1, 8, 8, 3)", payload: one), ["Fortran-ordered arrays are not supported"]),
            ("rank 9", Hardening.npy(shape: "(1, 1, 1, 1, 1, 1, 1, 1, 192)", payload: one), ["9 dims > 8"]),
            ("2^51 elements", Hardening.npy(shape: "(131072, 131072, 131072)", payload: one), ["has more than 2147483648 elements"]),
            ("dims overflow", Hardening.npy(shape: "(9223372036854775807, 4)", payload: one), ["has more than 2147483648 elements"]),
            ("negative dim", Hardening.npy(shape: "(-1, 8, 8, 3)", payload: one), ["shape (-1, 8, 8, 3)", "is not understood"]),
            ("no shape", Hardening.npy(shape: "(1, 8, 8, 3)", shapeKey: "Shape", payload: one), ["header has no 'shape'"]),
            ("version 9", wrongVersion, ["unsupported .npy version 9"]),
            ("header not text", notText, ["header is not text"]),
            ("not npy", Array("PK\u{3}\u{4} this is a zip".utf8), ["not a NumPy .npy file (bad magic)"]),
            ("header past the end", Array(valid.prefix(40)), ["header of \(Int(valid[8]) | Int(valid[9]) << 8) bytes runs past the end of the file"]),
            ("header over the limit", Hardening.npy(shape: "(1, 8, 8, 3)", major: 2, payload: one, headerPadding: 70_000), ["limit 65536"]),
            ("shape for another model", Hardening.npy(shape: "(1, 9, 9, 3)", payload: Hardening.floats(243)),
             ["input has shape [1, 9, 9, 3], the model expects [?, 8, 8, 3]"]),
            ("empty batch", Hardening.npy(shape: "(0, 8, 8, 3)", payload: []), ["input has shape [0, 8, 8, 3]"]),
        ]
        for (name, bytes, fragments) in cases {
            let path = "\(dir)/lying.npy"
            Hardening.write(bytes, path)
            let r = try Hardening.run("kiln-run", [bundle, "--input", path, "--output", "\(dir)/y.npy"])
            Hardening.expectOneLineError(r, fragments, "kiln-run --input, \(name)")
            #expect(!FileManager.default.fileExists(atPath: "\(dir)/y.npy"), "\(name): an output was written")
        }
        // A sparse 1 TiB .npy (valid header, the rest holes): refused from its size, before it is read into memory.
        let sparse = "\(dir)/sparse.npy"
        Hardening.write(Hardening.npy(shape: "(1, 8, 8, 3)", payload: one), sparse)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: sparse))
        try handle.truncate(atOffset: 1 << 40)
        try handle.close()
        let r = try Hardening.run("kiln-run", [bundle, "--input", sparse, "--output", "\(dir)/y.npy"], memoryKB: 4 << 20)
        Hardening.expectOneLineError(r, ["sparse.npy", "limit"], "kiln-run --input, a 1 TiB file")
        try FileManager.default.removeItem(atPath: sparse)

        Hardening.write(Hardening.npy(shape: "(2, 8, 8, 3)", payload: one), "\(dir)/short.npy")
        Hardening.write(Hardening.npy(shape: "(1, 8, 8, 3)", payload: one), "\(dir)/ok.npy")
        let c = try Hardening.run("kiln", ["compare", "\(dir)/ok.npy", "\(dir)/short.npy"])
        Hardening.expectOneLineError(c, ["short.npy", "needs 1536 data bytes"], "kiln compare")
    }
}

// MARK: - Through the binaries: the malformed-source corpus (scripts/fixtures-malformed)

@Suite(.enabled(if: Hardening.enabled, "needs the release binaries: run `make test` (or set KILN_BIN)"), .serialized)
struct MalformedSourceCLITests {
    struct Case: Decodable, Sendable, CustomTestStringConvertible {
        var file: String
        var command: String
        var expected: String
        var note: String
        var testDescription: String { "\(file): \(note)" }
    }

    /// The corpus folder: $KILN_MALFORMED, or made (once, cached) by scripts/fixtures-malformed.
    static let corpus: String? = {
        if let dir = E2E.env["KILN_MALFORMED"] { return dir }
        guard Hardening.enabled else { return nil }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "\(Hardening.root)/scripts/fixtures-malformed")
        let out = Pipe()
        p.standardOutput = out
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    static let cases: [Case] = {
        guard Hardening.enabled else { return [] }
        guard let corpus, let data = FileManager.default.contents(atPath: "\(corpus)/manifest.json"),
              let list = try? JSONDecoder().decode([Case].self, from: data) else {
            return [Case(file: "<no corpus>", command: "missing", expected: "", note: "scripts/fixtures-malformed failed")]
        }
        return list
    }()

    @Test(arguments: cases)
    func malformedSourceGivesItsErrorAndWritesNothing(_ c: Case) throws {
        guard Hardening.binaries, let corpus = Self.corpus else {
            Issue.record("release binaries in '\(E2E.bin)' or the malformed corpus missing (\(c.note))")
            return
        }
        let dir = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = "\(corpus)/\(c.file)"
        switch c.command {
        case "convert":
            // An existing output must survive a failed conversion byte for byte, with no temporary file left.
            let out = "\(dir)/out.kiln"
            try Data("previous".utf8).write(to: URL(fileURLWithPath: out))
            let r = try Hardening.run("kiln", ["convert", source, "-o", out])
            Hardening.expectOneLineError(r, [c.file, c.expected], "kiln convert \(c.file) (\(c.note))")
            #expect(FileManager.default.contents(atPath: out) == Data("previous".utf8), "\(c.file): the old output changed")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["out.kiln"], "\(c.file): stray files")
        case "images", "images-ok":
            let bundle = "\(dir)/images.kiln"
            Hardening.write(try BundleWriter.serialize(Hardening.classifier()), bundle)
            let r = try Hardening.run("kiln-run", [bundle, source])
            if c.command == "images-ok" {
                #expect(r.status == 0, "\(c.file): \(r.stderr)")
                return
            }
            #expect(r.status == 1, "kiln-run \(c.file) (\(c.note)): status \(r.status): \(r.stderr.suffix(300))")
            let line = r.stdout.split(separator: "\n").first { $0.contains(c.file) } ?? ""
            #expect(line.contains("error:") && line.contains(c.expected), "kiln-run \(c.file) (\(c.note)): '\(line)'")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(c.file): \(r.stderr)")
        default:
            Issue.record("\(c.file): \(c.note)")
        }
    }
}

// MARK: - Atomic writes: kill `kiln convert` / `kiln fuse` mid-write

@Suite(.enabled(if: E2E.enabled, "full ResNet-50 fixtures: run `make test`"), .serialized)
struct AtomicWriteKillTests {
    /// The size of the unnamed temporary file (O_TMPFILE: `/proc/PID/fd/N` → `DIR/#INODE (deleted)`) that
    /// process `pid` is writing in `dir`, or nil while it has none open.
    static func temporarySize(pid: Int32, dir: String) -> Int? {
        let fds = "/proc/\(pid)/fd"
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: fds)) ?? [] {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fds)/\(fd)"),
                  target.hasPrefix("\(dir)/"), target.hasSuffix("(deleted)") || target.contains(".tmp-") else { continue }
            var st = stat()
            if stat("\(fds)/\(fd)", &st) == 0 { return Int(st.st_size) }
        }
        return nil
    }

    /// SIGKILL during a full-size `kiln convert` and `kiln fuse`: at random moments of the whole run, and at
    /// random points of the write itself (the temporary file holding a random fraction of the bundle, or all of
    /// it). Afterwards the destination is the old file or the complete new one, never a partial one, and nothing
    /// else is in the folder (the temporary file has no name until it is complete: O_TMPFILE, then link and
    /// rename).
    @Test(arguments: ["convert", "fuse"])
    func killedWriteLeavesTheOldFileOrTheNewOne(_ command: String) throws {
        guard E2E.available else { #expect(E2E.available); return }
        let made = try E2E.tempDir()
        defer { try? FileManager.default.removeItem(atPath: made) }
        let dir = URL(fileURLWithPath: made).resolvingSymlinksInPath().path
        let out = "\(dir)/model.kiln"
        let reference = "\(dir)/reference.kiln"
        func arguments(_ destination: String) -> [String] {
            command == "convert"
                ? ["convert", "\(E2E.fixtures)/resnet50_k3.h5", "-o", destination]
                : ["fuse", "\(E2E.fixtures)/resnet50_notop_k3.h5", "\(E2E.fixtures)/head_k3.h5", "-o", destination, "--preprocess", "caffe"]
        }

        var start = Date()
        let r = try E2E.run("kiln", arguments(reference))
        #expect(r.status == 0, "\(r.stderr)")
        let duration = Date().timeIntervalSince(start)
        let new = try Data(contentsOf: URL(fileURLWithPath: reference))
        try FileManager.default.removeItem(atPath: reference)
        let old = Data(try BundleWriter.serialize(Hardening.classifier()))

        enum Moment { case time(Double), written(Double) }
        var generator = SystemRandomNumberGenerator()
        let moments: [Moment] = (0..<4).map { _ in .time(Double.random(in: 0..<0.9, using: &generator)) }
            + (0..<6).map { _ in .written(Double.random(in: 0..<1, using: &generator)) } + [.written(1), .written(1)]
        var outcomes: [String] = []
        var killedWriting = 0
        for moment in moments {
            try old.write(to: URL(fileURLWithPath: out))
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "\(E2E.bin)/kiln")
            p.arguments = arguments(out)
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            start = Date()
            try p.run()
            var seen: Int? = nil
            switch moment {
            case .time(let fraction):
                while p.isRunning, Date().timeIntervalSince(start) < fraction * duration { usleep(500) }
            case .written(let fraction):
                let needed = Int(fraction * Double(new.count))
                while p.isRunning {
                    if let size = Self.temporarySize(pid: p.processIdentifier, dir: dir) {
                        seen = size
                        if size >= needed { break }
                    }
                    usleep(100)
                }
            }
            let wasRunning = p.isRunning
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            if wasRunning, seen != nil { killedWriting += 1 }
            let now = try Data(contentsOf: URL(fileURLWithPath: out))
            let state = now == old ? "old" : now == new ? "new" : "PARTIAL (\(now.count) bytes)"
            let label: String
            switch moment {
            case .time(let f): label = String(format: "at %.2f of the run", f)
            case .written(let f): label = String(format: "with %.0f%% written", f * 100)
            }
            #expect(now == old || now == new, "\(command) killed \(label): the destination holds neither the old nor the new bundle")
            let left = try FileManager.default.contentsOfDirectory(atPath: dir)
            #expect(left == ["model.kiln"], "\(command) killed \(label): \(left)")
            outcomes.append("\(label): \(wasRunning ? "killed" : "had finished")\(seen.map { " (temporary at \($0) bytes)" } ?? ""), \(state)")
        }
        #expect(killedWriting >= 4, "\(command): only \(killedWriting) runs were killed while writing")
        print("atomic write, kiln \(command) (\(Int(duration * 1000)) ms, \(new.count) bytes) killed " + outcomes.joined(separator: "; "))
    }
}
