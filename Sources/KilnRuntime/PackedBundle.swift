import KilnFormat
import KilnKernels

extension Model {
    /// This model's convolution weights as this build's kernels pack them, for a bundle's PACK section: each
    /// convolution's load-time layout and, where the bundle's input has a fixed image size, the layouts that plans of
    /// `largerBatch` images switch to (`ConvAlgorithm.forLargerBatch`), so that such a process packs nothing either.
    /// Nil on a CPU without the AVX2 kernels (they read DATA as it is).
    public func packedLayoutsContent(largerBatch: Int? = 8) -> PackedLayoutsContent? {
        guard let key = PrepackedConvWeights.layoutKey else { return nil }
        var seen = Set<[Int]>()
        var entries: [(tensor: Int, layout: UInt32, use: UInt32, bytes: [UInt8])] = []
        func add(_ tensor: Int, _ w: PackedConvWeights, use: UInt32) {
            guard let code = PrepackedConvWeights.layoutCode(w.algorithm), seen.insert([tensor, Int(code)]).inserted else { return }
            entries.append((tensor, code, use, Array(UnsafeRawBufferPointer(start: w.values, count: w.count * MemoryLayout<Float>.stride))))
        }
        for step in steps {
            guard let conv = step.op as? Conv2DOp, let w = conv.plainPacking, let tensor = step.record.tensors.first else { continue }
            add(tensor, w, use: 0)
        }
        if let largerBatch, let port = frozen.inputs.first, port.shape.count == 4, port.shape.dropFirst().allSatisfy({ $0 > 0 }) {
            // A plan at that batch makes the larger-batch packings (kept by the model), read back by step.
            let shape = [largerBatch] + port.shape.dropFirst().map { Int($0) }
            if (try? ExecutionPlan(model: self, inputShape: shape, kernels: .fast)) != nil {
                for (index, step) in steps.enumerated() {
                    guard let tensor = step.record.tensors.first, let w = largerBatchPacking(step: index) else { continue }
                    add(tensor, w, use: 1)
                }
            }
        }
        return PackedLayoutsContent(key: key, entries: entries)
    }
}

/// Writes `model` to `path` atomically (`BundleWriter.write`); with `pack`, with a PACK section of its convolution
/// weights as this build's kernels pack them (see `Model.packedLayoutsContent`). Returns a note when `pack` could
/// not be honoured (no AVX2 kernels on this CPU: the bundle is written without the section).
@discardableResult
public func writeBundle(_ model: FrozenModel, to path: String, compression: Compression? = nil,
                        pack: Bool) throws -> String? {
    guard pack else {
        try BundleWriter.write(model, to: path, compression: compression)
        return nil
    }
    let loaded = try Model(bundle: Bundle(bytes: BundleWriter.serialize(model)))
    guard let content = loaded.packedLayoutsContent() else {
        try BundleWriter.write(model, to: path, compression: compression)
        return "this CPU has no AVX2 + FMA kernels, so no PACK section was written"
    }
    try BundleWriter.write(model, to: path, compression: compression, packed: content)
    return nil
}

extension Conv2DOp {
    /// The packed weights of a plain (ungrouped) convolution, the ones a PACK section holds; nil for a grouped one
    /// (packed at load, with its bias inside).
    var plainPacking: PackedConvWeights? {
        if case .plain(let w) = packing { return w }
        return nil
    }
}
