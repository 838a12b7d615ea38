import Testing
import KilnFormat
@testable import KilnRuntime

/// The datatype seam: values' element types travel through the bundle (1.2's graph-section trailer), and the
/// runtime, whose kernels are all float32 today, refuses other types by name instead of misreading them.
@Suite struct ValueTypeTests {
    /// x [N, 4] → ReLU → y.
    static func model(valueTypes: [ElementType]?) -> FrozenModel {
        FrozenModel(valueNames: ["x", "y"], inputs: [PortRecord(name: "x", value: 0, shape: [-1, 4])],
                    outputs: [PortRecord(name: "y", value: 1, shape: [-1, 4])],
                    ops: [OpRecord(opcode: .relu, name: "relu", inputs: [0], output: 1)], tensors: [], valueTypes: valueTypes)
    }

    @Test func float32ValuesWriteNoTrailerAndStayVersion1_0() throws {
        let bundle = try Bundle(bytes: try BundleWriter.serialize(Self.model(valueTypes: nil)))
        #expect(bundle.versionMinor == 0)
        #expect(bundle.model.valueTypes == [.float32, .float32])
        let out = try Model(bundle: bundle).run(Tensor(shape: [1, 4], values: [-1, 2, -3, 4]))
        #expect(out[0].values == [0, 2, 0, 4])
    }

    @Test func otherTypesRoundTripAndAreRefusedByName() throws {
        let bytes = try BundleWriter.serialize(Self.model(valueTypes: [.float32, .float16]))
        let bundle = try Bundle(bytes: bytes)
        #expect(bundle.versionMinor == 2)
        #expect(bundle.model.valueTypes == [.float32, .float16])
        do {
            _ = try Model(bundle: bundle)
            Issue.record("a float16 value was accepted")
        } catch {
            #expect(error.kind == .unsupported)
            #expect("\(error)" == "value 'y' is f16: this runtime computes float32 values only")
        }
    }

    @Test func aPlanRefusesTypesItsKernelsDoNotTake() throws {
        let op = try UnaryOp(OpRecord(opcode: .relu, name: "relu", inputs: [0], output: 1), tensors: [])
        let context = PlanContext(.relu, inputs: [[4]], output: [4], kernels: .fast, inputTypes: [.bfloat16])
        #expect(throws: RuntimeError.self) { _ = try op.plan(context) }
        do { _ = try op.plan(context) } catch {
            #expect(error.message == "ReLU has no kernels for bf16 values")
        }
    }
}
