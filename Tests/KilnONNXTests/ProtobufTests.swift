import Foundation
import Testing
import KilnGraph
@testable import KilnONNX

/// A protobuf writer for hand-made models: the encodings other writers use (packed repeated fields as
/// proto3 writers emit them, unpacked as onnx.proto's proto2 writers do).
struct ProtobufWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }

    mutating func int(_ field: Int, _ v: Int64) {
        tag(field, 0)
        varint(UInt64(bitPattern: v))
    }

    mutating func bytes(_ field: Int, _ b: [UInt8]) {
        tag(field, 2)
        varint(UInt64(b.count))
        bytes += b
    }

    mutating func string(_ field: Int, _ s: String) { bytes(field, Array(s.utf8)) }

    mutating func message(_ field: Int, _ build: (inout ProtobufWriter) -> Void) {
        var m = ProtobufWriter()
        build(&m)
        bytes(field, m.bytes)
    }

    mutating func ints(_ field: Int, _ values: [Int64], packed: Bool) {
        if packed {
            var m = ProtobufWriter()
            for v in values { m.varint(UInt64(bitPattern: v)) }
            bytes(field, m.bytes)
        } else {
            for v in values { int(field, v) }
        }
    }

    mutating func floats(_ field: Int, _ values: [Float], packed: Bool) {
        let le = values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        if packed {
            bytes(field, le)
        } else {
            for k in values.indices {
                tag(field, 5)
                bytes += le[(4 * k)..<(4 * k + 4)]
            }
        }
    }
}

/// x [N, 2, 1, 1] → Squeeze(axes [2, 3], opset 11 attribute) → Gemm(B = [[1, 2], [3, 4]] in float_data) → y,
/// with every repeated numeric field packed or not.
func squeezeGemmModel(packed: Bool) -> Data {
    var model = ProtobufWriter()
    model.int(1, 7)                                            // ir_version
    model.message(8) { $0.int(2, 11) }                         // opset_import { version: 11 }
    model.string(2, "hand")                                    // producer_name
    model.message(7) { g in                                    // graph
        g.message(1) { n in                                    // node Squeeze
            n.string(1, "x"); n.string(2, "s"); n.string(3, "squeeze"); n.string(4, "Squeeze")
            n.message(5) { a in a.string(1, "axes"); a.int(20, 7); a.ints(8, [2, 3], packed: packed) }
        }
        g.message(1) { n in                                    // node Gemm
            n.string(1, "s"); n.string(1, "B"); n.string(2, "y"); n.string(3, "gemm"); n.string(4, "Gemm")
        }
        g.string(2, "hand")
        g.message(5) { t in                                    // initializer B
            t.ints(1, [2, 2], packed: packed); t.int(2, 1); t.string(8, "B")
            t.floats(4, [1, 2, 3, 4], packed: packed)
        }
        g.message(11) { v in                                   // input x
            v.string(1, "x")
            v.message(2) { $0.message(1) { tt in
                tt.int(1, 1)
                tt.message(2) { s in
                    s.message(1) { $0.string(2, "N") }
                    s.message(1) { $0.int(1, 2) }
                    s.message(1) { $0.int(1, 1) }
                    s.message(1) { $0.int(1, 1) }
                }
            } }
        }
        g.message(12) { $0.string(1, "y") }                    // output y
    }
    return Data(model.bytes)
}

@Suite struct ONNXProtobufTests {
    /// Packed and unpacked repeated fields read the same (libprotobuf-c accepts both, as protobuf requires).
    @Test(arguments: [false, true])
    func repeatedFieldsReadPackedOrNot(_ packed: Bool) throws {
        let graph = try ONNXImporter.importModel(data: squeezeGemmModel(packed: packed), fileName: "hand.onnx", folder: nil)
        let dense = try #require(graph.nodes.first { $0.name == "y" })
        guard case .dense(let spec) = dense.op else { Issue.record("y is \(dense.op.kindName)"); return }
        #expect(spec.kernel.shape == [2, 2])
        #expect(spec.kernel.values == [1, 2, 3, 4])
        #expect(try graph.inferShapes()["y"] == [nil, 2])
        #expect(graph.metadata["source.producer"] == .string("hand"))
        #expect(graph.metadata["source.onnx_opset"] == .int(11))
    }

    @Test func framingProblemsAreLocated() {
        let model = squeezeGemmModel(packed: true)
        let cut = model.prefix(model.count - 3)
        let message = cut.withUnsafeBytes { ProtobufWire.diagnoseModel($0) }
        #expect(message?.hasPrefix("model: byte ") ?? false, "\(message ?? "nil")")
        #expect(model.withUnsafeBytes { ProtobufWire.diagnoseModel($0) } == nil)
        #expect(model.withUnsafeBytes { ProtobufWire.looksLikeModel($0) })
        #expect(!Data("{\"a\": 1}".utf8).withUnsafeBytes { ProtobufWire.looksLikeModel($0) })
        #expect(!Data([0x89, 0x48, 0x44, 0x46]).withUnsafeBytes { ProtobufWire.looksLikeModel($0) })
    }

    @Test func halfPrecisionDecodes() {
        #expect(halfToFloat(0x3C00) == 1)
        #expect(halfToFloat(0xC000) == -2)
        #expect(halfToFloat(0x0001) == Float(bitPattern: 0x3380_0000))
        #expect(halfToFloat(0x7C00) == .infinity)
        #expect(halfToFloat(0x7BFF) == 65504)
    }
}
