import Testing
@testable import KilnFormat

/// Format 1.3: Conv2D's optional `groups` word and the Concat op.
@Suite struct GroupedConvFormatTests {
    @Test func groupsAreWrittenOnlyWhenNotOne() throws {
        let plain = Conv2DAttributes(kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padding: .same, activation: .relu)
        #expect(plain.encoded.count == 12)
        let clamp = Activation(.linear, minimum: 0, maximum: 6)
        for (activation, words) in [(Activation.relu, 13), (clamp, 17)] {
            let grouped = Conv2DAttributes(kernelH: 3, kernelW: 3, strideH: 2, strideW: 2,
                                           padding: .explicit(top: 0, bottom: 1, left: 0, right: 1), activation: activation, groups: 32)
            #expect(grouped.encoded.count == words)
            #expect(try Conv2DAttributes(decoding: grouped.encoded) == grouped)
        }
        #expect(try Conv2DAttributes(decoding: plain.encoded).groups == 1)
    }

    @Test func badGroupWordsAreRefused() {
        var words = Conv2DAttributes(kernelH: 1, kernelW: 1, strideH: 1, strideW: 1, padding: .valid, activation: .none, groups: 4).encoded
        words[12] = 0
        #expect(throws: AttributeError.self) { try Conv2DAttributes(decoding: words) }
        #expect(throws: AttributeError.self) { try Conv2DAttributes(decoding: words + [1, 1]) }
    }

    /// The lowest version that holds the bundle: 1.3 only with a grouped convolution or a Concat.
    @Test func minorVersionFollowsTheOps() throws {
        func bundle(_ ops: [OpRecord], values: [String]) throws -> Bundle {
            try Bundle(bytes: try BundleWriter.serialize(FrozenModel(
                valueNames: values, inputs: [PortRecord(name: "x", value: 0, shape: [-1, 4])],
                outputs: [PortRecord(name: values.last!, value: values.count - 1, shape: [-1, -1])], ops: ops, tensors: [])))
        }
        let relu = OpRecord(opcode: .relu, name: "r", inputs: [0], output: 1)
        #expect(try bundle([relu], values: ["x", "r"]).versionMinor == 0)
        let concat = OpRecord(opcode: .concat, name: "c", inputs: [0, 1], output: 2)
        let b = try bundle([relu, concat], values: ["x", "r", "c"])
        #expect(b.versionMinor == 3)
        #expect(b.model.ops[1] == concat)
    }
}
