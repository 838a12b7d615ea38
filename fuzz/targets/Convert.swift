// Shared by the importer targets (keras-config, onnx): what `kiln convert` does after an importer, with
// the promise that a graph the converter accepts gives a bundle the runtime loads.
import KilnFormat
import KilnGraph
import KilnRuntime

/// Shape inference, the inference passes, lowering, writing, reading back, the runtime's load checks, and a
/// plan for a small input. Refusals before writing are fine; a written bundle that does not load is not.
func convertAndLoad(_ imported: Graph) {
    var graph = imported
    do { _ = try graph.inferShapes() } catch { return }
    do { try graph.optimizeForInference() } catch { return }
    let frozen: FrozenModel
    do { frozen = try graph.lower() } catch { return }
    let bundle: Bundle
    do { bundle = try Bundle(bytes: try BundleWriter.serialize(frozen)) } catch {
        fuzzFailure("a lowered graph does not write and read back: \(error)")
    }
    let model: Model
    do { model = try Model(bundle: bundle) } catch {
        fuzzFailure("the converter wrote a bundle that the runtime refuses: \(error)")
    }
    let declared = model.frozen.inputs[0].shape
    let free = declared.count == 4 ? [1, 7, 9, 3] : [1, 4]
    let shape = declared.enumerated().map { i, d in d < 0 ? free[min(i, free.count - 1)] : Int(d) }
    _ = try? model.plan(inputShape: shape)
}
