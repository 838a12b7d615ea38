// The functions of include/kiln.h. Each checks every argument, turns every failure into a code and a message
// (`fail`), and lets no Swift error cross: the bodies catch everything as `ClassifyError`.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CKilnAPI
import KilnClassify
import KilnFormat
import KilnKernels
import KilnRuntime

/// The Kiln release (the `kiln` CLI's `--version`) and the API version of include/kiln.h.
enum KilnCVersion {
    static let release: StaticString = "0.1.0"
    static let api: Int32 = 10000
}

public typealias ErrorBuffer = UnsafeMutablePointer<CChar>?

// MARK: - Errors and versions

@_cdecl("kiln_error_name")
public func kilnErrorName(_ code: Int32) -> UnsafePointer<CChar> {
    let name: StaticString
    switch code {
    case KILN_OK.rawValue: name = "ok"
    case KILN_ERR_BAD_INPUT.rawValue: name = "bad-input"
    case KILN_ERR_BAD_BUNDLE.rawValue: name = "bad-bundle"
    case KILN_ERR_UNSUPPORTED.rawValue: name = "unsupported"
    case KILN_ERR_INTERNAL.rawValue: name = "internal"
    default: name = "unknown"
    }
    return UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("kiln_version")
public func kilnVersion() -> UnsafePointer<CChar> {
    UnsafeRawPointer(KilnCVersion.release.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("kiln_api_version")
public func kilnAPIVersion() -> Int32 { KilnCVersion.api }

// MARK: - Models

@_cdecl("kiln_model_open")
public func kilnModelOpen(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                          _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    guard let path else { return fail(badArgument("kiln_model_open", "path is NULL"), err, errLength) }
    guard let out else { return fail(badArgument("kiln_model_open", "out is NULL"), err, errLength) }
    do throws(ClassifyError) {
        let handle = try ModelHandle(path: String(cString: path))
        out.pointee = retainedHandle(handle)
        return 0
    } catch {
        return fail(error, err, errLength)
    }
}

@_cdecl("kiln_model_close")
public func kilnModelClose(_ model: OpaquePointer?) {
    release(model, as: ModelHandle.self)
}

@_cdecl("kiln_model_input_count")
public func kilnModelInputCount(_ model: OpaquePointer?) -> Int {
    object(model, as: ModelHandle.self)?.inputNames.count ?? 0
}

@_cdecl("kiln_model_output_count")
public func kilnModelOutputCount(_ model: OpaquePointer?) -> Int {
    object(model, as: ModelHandle.self)?.outputNames.count ?? 0
}

@_cdecl("kiln_model_input_name")
public func kilnModelInputName(_ model: OpaquePointer?, _ index: Int) -> UnsafePointer<CChar>? {
    guard let m = object(model, as: ModelHandle.self), m.inputNames.indices.contains(index) else { return nil }
    return m.inputNames[index]
}

@_cdecl("kiln_model_output_name")
public func kilnModelOutputName(_ model: OpaquePointer?, _ index: Int) -> UnsafePointer<CChar>? {
    guard let m = object(model, as: ModelHandle.self), m.outputNames.indices.contains(index) else { return nil }
    return m.outputNames[index]
}

/// The shape of port `index` of `ports` into the caller's buffers (see kiln_model_input_shape).
private func portShape(_ function: String, _ model: OpaquePointer?, _ ports: (FrozenModel) -> [PortRecord], _ index: Int,
                       _ dims: UnsafeMutablePointer<Int64>?, _ capacity: Int, _ rank: UnsafeMutablePointer<Int>?,
                       _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    guard let m = object(model, as: ModelHandle.self) else { return fail(badArgument(function, "model is NULL"), err, errLength) }
    guard let rank else { return fail(badArgument(function, "rank is NULL"), err, errLength) }
    guard capacity >= 0 else { return fail(badArgument(function, "capacity is beyond any buffer"), err, errLength) }
    guard capacity == 0 || dims != nil else { return fail(badArgument(function, "dims is NULL with capacity \(capacity)"), err, errLength) }
    let all = ports(m.model.frozen)
    guard all.indices.contains(index) else {
        return fail(badArgument(function, "index \(index) is out of range (the model has \(all.count))"), err, errLength)
    }
    let shape = all[index].shape
    if let dims {
        for i in 0..<min(capacity, shape.count) { dims[i] = shape[i] }
    }
    rank.pointee = shape.count
    return 0
}

@_cdecl("kiln_model_input_shape")
public func kilnModelInputShape(_ model: OpaquePointer?, _ index: Int, _ dims: UnsafeMutablePointer<Int64>?, _ capacity: Int,
                                _ rank: UnsafeMutablePointer<Int>?, _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    portShape("kiln_model_input_shape", model, \.inputs, index, dims, capacity, rank, err, errLength)
}

@_cdecl("kiln_model_output_shape")
public func kilnModelOutputShape(_ model: OpaquePointer?, _ index: Int, _ dims: UnsafeMutablePointer<Int64>?, _ capacity: Int,
                                 _ rank: UnsafeMutablePointer<Int>?, _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    portShape("kiln_model_output_shape", model, \.outputs, index, dims, capacity, rank, err, errLength)
}

@_cdecl("kiln_model_label_count")
public func kilnModelLabelCount(_ model: OpaquePointer?) -> Int {
    object(model, as: ModelHandle.self)?.labels.count ?? 0
}

@_cdecl("kiln_model_label")
public func kilnModelLabel(_ model: OpaquePointer?, _ index: Int) -> UnsafePointer<CChar>? {
    guard let m = object(model, as: ModelHandle.self), m.labels.indices.contains(index) else { return nil }
    return m.labels[index]
}

@_cdecl("kiln_model_image_input")
public func kilnModelImageInput(_ model: OpaquePointer?, _ info: UnsafeMutablePointer<kiln_image_input>?,
                                _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    let function = "kiln_model_image_input"
    guard let m = object(model, as: ModelHandle.self) else { return fail(badArgument(function, "model is NULL"), err, errLength) }
    guard let info else { return fail(badArgument(function, "info is NULL"), err, errLength) }
    let given = info.pointee.struct_size
    let minimum = MemoryLayout<kiln_image_input>.offset(of: \kiln_image_input.height) ?? MemoryLayout<kiln_image_input>.size
    guard given >= minimum else {
        return fail(badArgument(function, "struct_size \(given) is below \(minimum)"), err, errLength)
    }
    let spec = m.spec
    var full = kiln_image_input()
    full.struct_size = given
    full.takes_images = spec.takesImages ? 1 : 0
    full.height = Int32(clamping: spec.height ?? 0)
    full.width = Int32(clamping: spec.width ?? 0)
    full.layout = m.layout
    full.resize = m.resize
    full.resize_shorter = Int32(clamping: spec.resizeShorter ?? 0)
    full.preprocessing = m.preprocessing
    full.color = m.color
    full.output_index = spec.outputIndex
    full.scores = m.scores(spec.scores)
    // Only the bytes the caller's struct holds.
    withUnsafeBytes(of: &full) { source in
        UnsafeMutableRawPointer(info).copyMemory(from: source.baseAddress!, byteCount: min(given, source.count))
    }
    return 0
}

// MARK: - Sessions

@_cdecl("kiln_session_options_init")
public func kilnSessionOptionsInit(_ options: UnsafeMutablePointer<kiln_session_options>?) {
    guard let options else { return }
    options.pointee = kiln_session_options(struct_size: MemoryLayout<kiln_session_options>.size, plans_per_shape: 2,
                                           max_shapes: 8, output: -1, reference_kernels: 0, softmax: 0)
}

@_cdecl("kiln_session_new")
public func kilnSessionNew(_ model: OpaquePointer?, _ options: UnsafePointer<kiln_session_options>?,
                           _ out: UnsafeMutablePointer<OpaquePointer?>?, _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    let function = "kiln_session_new"
    guard let m = object(model, as: ModelHandle.self) else { return fail(badArgument(function, "model is NULL"), err, errLength) }
    guard let out else { return fail(badArgument(function, "out is NULL"), err, errLength) }
    var o = kiln_session_options()
    kilnSessionOptionsInit(&o)
    if let options {
        let given = options.pointee.struct_size
        guard given >= MemoryLayout<Int>.size else {
            return fail(badArgument(function, "opts->struct_size \(given) is too small"), err, errLength)
        }
        // Only the fields the caller's struct holds; the rest keep their defaults.
        withUnsafeMutableBytes(of: &o) { target in
            target.baseAddress!.copyMemory(from: UnsafeRawPointer(options), byteCount: min(given, target.count))
        }
    }
    if o.plans_per_shape == 0 { o.plans_per_shape = 2 }
    if o.max_shapes == 0 { o.max_shapes = 8 }
    guard (1...64).contains(o.plans_per_shape) else {
        return fail(badArgument(function, "plans_per_shape \(o.plans_per_shape) is not in 1...64"), err, errLength)
    }
    guard (1...1024).contains(o.max_shapes) else {
        return fail(badArgument(function, "max_shapes \(o.max_shapes) is not in 1...1024"), err, errLength)
    }
    let outputs = m.model.frozen.outputs
    guard o.output == -1 || (o.output >= 0 && Int(o.output) < outputs.count) else {
        return fail(badArgument(function, "output \(o.output) is out of range (the model has \(outputs.count))"), err, errLength)
    }
    do throws(ClassifyError) {
        let classifier = try Classifier(model: m.model, bundle: m.path, output: o.output < 0 ? nil : outputs[Int(o.output)].name,
                                        kernels: o.reference_kernels != 0 ? .reference : .fast,
                                        plansPerShape: Int(o.plans_per_shape), maximumShapes: Int(o.max_shapes))
        out.pointee = retainedHandle(SessionHandle(model: m, classifier: classifier, softmax: o.softmax != 0))
        return 0
    } catch {
        return fail(error, err, errLength)
    }
}

@_cdecl("kiln_session_free")
public func kilnSessionFree(_ session: OpaquePointer?) {
    release(session, as: SessionHandle.self)
}

@_cdecl("kiln_set_threads")
public func kilnSetThreads(_ threads: Int32) -> Int32 {
    guard (1...256).contains(threads) else { return KILN_ERR_BAD_INPUT.rawValue }
    setKernelThreads(Int(threads))
    return 0
}

// MARK: - Tensor runs

@_cdecl("kiln_output_shapes")
public func kilnOutputShapes(_ session: OpaquePointer?, _ shape: UnsafePointer<Int64>?, _ rank: Int, _ outputCount: Int,
                             _ dims: UnsafeMutablePointer<Int64>?, _ maxRank: Int, _ ranks: UnsafeMutablePointer<Int>?,
                             _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    let function = "kiln_output_shapes"
    guard let s = object(session, as: SessionHandle.self) else { return fail(badArgument(function, "session is NULL"), err, errLength) }
    guard let ranks else { return fail(badArgument(function, "ranks is NULL"), err, errLength) }
    guard let dims else { return fail(badArgument(function, "dims is NULL"), err, errLength) }
    let count = s.model.outputNames.count
    guard outputCount == count else {
        return fail(badArgument(function, "output_count is \(outputCount), the model has \(count) outputs"), err, errLength)
    }
    guard maxRank >= 1, maxRank <= 64 else { return fail(badArgument(function, "max_rank \(maxRank) is not in 1...64"), err, errLength) }
    do throws(ClassifyError) {
        let input = try checkedShape(shape, rank: rank, count: nil, in: function)
        let shapes = try s.classifier.outputShapes(input: input)
        for (i, made) in shapes.enumerated() {
            guard let made else {
                throw ClassifyError(.badInput, "\(function): output '\(s.model.model.frozen.outputs[i].name)' has no shape for input \(input)")
            }
            guard made.count <= maxRank else {
                throw badArgument(function, "output \(i) has rank \(made.count) > max_rank \(maxRank)")
            }
            ranks[i] = made.count
            for (j, d) in made.enumerated() { dims[i * maxRank + j] = Int64(d) }
        }
        return 0
    } catch {
        return fail(error, err, errLength)
    }
}

/// The caller's input as a buffer, checked against its shape.
private func inputBuffer(_ function: String, _ input: UnsafePointer<Float>?, _ count: Int, _ shape: UnsafePointer<Int64>?,
                         _ rank: Int) throws(ClassifyError) -> (UnsafeBufferPointer<Float>, [Int]) {
    guard let input else { throw badArgument(function, "input is NULL") }
    let dims = try checkedShape(shape, rank: rank, count: count, in: function)
    return (UnsafeBufferPointer(start: input, count: count), dims)
}

@_cdecl("kiln_run")
public func kilnRun(_ session: OpaquePointer?, _ input: UnsafePointer<Float>?, _ count: Int, _ shape: UnsafePointer<Int64>?,
                    _ rank: Int, _ output: Int, _ out: UnsafeMutablePointer<Float>?, _ outCount: Int,
                    _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    let function = "kiln_run"
    guard let s = object(session, as: SessionHandle.self) else { return fail(badArgument(function, "session is NULL"), err, errLength) }
    guard let out else { return fail(badArgument(function, "out is NULL"), err, errLength) }
    guard s.model.outputNames.indices.contains(output) else {
        return fail(badArgument(function, "output \(output) is out of range (the model has \(s.model.outputNames.count))"), err, errLength)
    }
    do throws(ClassifyError) {
        let (buffer, dims) = try inputBuffer(function, input, count, shape, rank)
        guard outCount >= 0 else { throw badArgument(function, "out_count is negative") }
        try s.classifier.run(input: buffer, shape: dims, output: output, into: UnsafeMutableBufferPointer(start: out, count: outCount))
        return 0
    } catch {
        return fail(error, err, errLength)
    }
}

@_cdecl("kiln_run_outputs")
public func kilnRunOutputs(_ session: OpaquePointer?, _ input: UnsafePointer<Float>?, _ count: Int, _ shape: UnsafePointer<Int64>?,
                           _ rank: Int, _ outputCount: Int, _ outputs: UnsafePointer<UnsafeMutablePointer<Float>?>?,
                           _ outCounts: UnsafePointer<Int>?, _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    let function = "kiln_run_outputs"
    guard let s = object(session, as: SessionHandle.self) else { return fail(badArgument(function, "session is NULL"), err, errLength) }
    guard let outputs else { return fail(badArgument(function, "outputs is NULL"), err, errLength) }
    guard let outCounts else { return fail(badArgument(function, "out_counts is NULL"), err, errLength) }
    let names = s.model.model.frozen.outputs.map(\.name)
    guard outputCount == names.count else {
        return fail(badArgument(function, "output_count is \(outputCount), the model has \(names.count) outputs"), err, errLength)
    }
    do throws(ClassifyError) {
        let (buffer, dims) = try inputBuffer(function, input, count, shape, rank)
        do {
            try s.classifier.withOutputs(input: buffer, shape: dims) { made, shapes in
                for i in 0..<outputCount {
                    guard let destination = outputs[i] else { continue }
                    guard outCounts[i] == made[i].count else {
                        throw badArgument(function, "out_counts[\(i)] is \(outCounts[i]), output '\(names[i])' has \(made[i].count) values (shape \(shapes[i]))")
                    }
                    if let source = made[i].baseAddress { destination.update(from: source, count: made[i].count) }
                }
            }
        } catch {
            throw ClassifyError(error)
        }
        return 0
    } catch {
        return fail(error, err, errLength)
    }
}

/// The non-zero return of a caller's kiln_outputs_fn, carried out of the run.
private struct CallbackFailure: Error {
    var code: Int32
}

@_cdecl("kiln_run_borrowed")
public func kilnRunBorrowed(_ session: OpaquePointer?, _ input: UnsafePointer<Float>?, _ count: Int, _ shape: UnsafePointer<Int64>?,
                            _ rank: Int, _ fn: kiln_outputs_fn?, _ user: UnsafeMutableRawPointer?,
                            _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    let function = "kiln_run_borrowed"
    guard let s = object(session, as: SessionHandle.self) else { return fail(badArgument(function, "session is NULL"), err, errLength) }
    guard let fn else { return fail(badArgument(function, "fn is NULL"), err, errLength) }
    do throws(ClassifyError) {
        let (buffer, dims) = try inputBuffer(function, input, count, shape, rank)
        do {
            try s.classifier.withOutputs(input: buffer, shape: dims) { made, shapes in
                // Every output's shape, one after another, alive through the call.
                let flat = shapes.flatMap { $0.map(Int64.init) }
                let code = flat.withUnsafeBufferPointer { all -> Int32 in
                    var views: [kiln_tensor_view] = []
                    var offset = 0
                    for (i, buffer) in made.enumerated() {
                        views.append(kiln_tensor_view(data: buffer.baseAddress, count: buffer.count,
                                                      shape: all.baseAddress.map { $0 + offset }, rank: shapes[i].count))
                        offset += shapes[i].count
                    }
                    return views.withUnsafeBufferPointer { fn(user, $0.baseAddress, $0.count) }
                }
                if code != 0 { throw CallbackFailure(code: code) }
            }
        } catch let failure as CallbackFailure {
            return failure.code
        } catch {
            throw ClassifyError(error)
        }
        return 0
    } catch {
        return fail(error, err, errLength)
    }
}

// MARK: - Classification

/// Checks `top_k` against the classes the session's output has, when its width is recorded.
private func checkTopK(_ function: String, _ s: SessionHandle, _ topK: Int32) throws(ClassifyError) {
    guard topK >= 1 else { throw badArgument(function, "top_k \(topK) is below 1") }
    if let columns = s.classifier.spec.outputShape.last, columns > 0, Int64(topK) > columns {
        throw badArgument(function, "top_k \(topK) is more than the \(columns) classes")
    }
}

/// Writes `predictions` (top_k of them) as `kiln_class` values at `out`.
private func write(_ predictions: [Prediction], topK: Int, model: ModelHandle, to out: UnsafeMutablePointer<kiln_class>) {
    for (i, p) in predictions.prefix(topK).enumerated() {
        out[i] = kiln_class(index: Int32(clamping: p.index), score: p.score, label: model.label(p.index))
    }
}

@_cdecl("kiln_classify_image_bytes")
public func kilnClassifyImageBytes(_ session: OpaquePointer?, _ bytes: UnsafePointer<UInt8>?, _ length: Int, _ topK: Int32,
                                   _ out: UnsafeMutablePointer<kiln_class>?, _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    let function = "kiln_classify_image_bytes"
    guard let s = object(session, as: SessionHandle.self) else { return fail(badArgument(function, "session is NULL"), err, errLength) }
    guard let bytes else { return fail(badArgument(function, "bytes is NULL"), err, errLength) }
    guard let out else { return fail(badArgument(function, "out is NULL"), err, errLength) }
    guard length > 0 else { return fail(badArgument(function, length == 0 ? "len is 0" : "len is beyond any buffer"), err, errLength) }
    do throws(ClassifyError) {
        try checkTopK(function, s, topK)
        let image = Array(UnsafeBufferPointer(start: bytes, count: length))
        let results = try s.classifier.classify([.bytes(image, name: "image")], top: Int(topK), softmax: s.softmax)
        guard let result = results.first else { throw ClassifyError(.internal, "\(function): no result") }
        let predictions = try result.get()
        guard predictions.count == Int(topK) else {
            throw badArgument(function, "top_k \(topK) is more than the \(predictions.count) classes")
        }
        write(predictions, topK: Int(topK), model: s.model, to: out)
        return 0
    } catch {
        return fail(error, err, errLength)
    }
}

@_cdecl("kiln_classify_images")
public func kilnClassifyImages(_ session: OpaquePointer?, _ images: UnsafePointer<UnsafePointer<UInt8>?>?,
                               _ lengths: UnsafePointer<Int>?, _ count: Int, _ batch: Int, _ topK: Int32,
                               _ out: UnsafeMutablePointer<kiln_class>?, _ codes: UnsafeMutablePointer<Int32>?,
                               _ err: ErrorBuffer, _ errLength: Int) -> Int32 {
    let function = "kiln_classify_images"
    guard let s = object(session, as: SessionHandle.self) else { return fail(badArgument(function, "session is NULL"), err, errLength) }
    guard count >= 0 else { return fail(badArgument(function, "count is negative"), err, errLength) }
    if count == 0 { return 0 }
    guard let images else { return fail(badArgument(function, "images is NULL"), err, errLength) }
    guard let lengths else { return fail(badArgument(function, "lens is NULL"), err, errLength) }
    guard let out else { return fail(badArgument(function, "out is NULL"), err, errLength) }
    guard let codes else { return fail(badArgument(function, "codes is NULL"), err, errLength) }
    do throws(ClassifyError) {
        try checkTopK(function, s, topK)
        let k = Int(topK)
        guard count.multipliedReportingOverflow(by: k).overflow == false else { throw badArgument(function, "count × top_k overflows") }
        let step = batch <= 0 ? count : batch
        var start = 0
        while start < count {
            let end = min(start + step, count)
            // Images with a NULL pointer or no bytes fail alone, as any unreadable image does.
            var sources: [ImageSource] = []
            var positions: [Int] = []
            for i in start..<end {
                for j in 0..<k { out[i * k + j] = kiln_class(index: 0, score: 0, label: nil) }
                guard let pointer = images[i], lengths[i] > 0 else {
                    codes[i] = KILN_ERR_BAD_INPUT.rawValue
                    continue
                }
                sources.append(.bytes(Array(UnsafeBufferPointer(start: pointer, count: lengths[i])), name: "image \(i)"))
                positions.append(i)
            }
            let results = try s.classifier.classify(sources, top: k, softmax: s.softmax)
            for (position, result) in zip(positions, results) {
                switch result {
                case .success(let predictions) where predictions.count == k:
                    write(predictions, topK: k, model: s.model, to: out + position * k)
                    codes[position] = 0
                case .success(let predictions):
                    throw badArgument(function, "top_k \(topK) is more than the \(predictions.count) classes")
                case .failure(let error):
                    codes[position] = error.kind.code
                }
            }
            start = end
        }
        return 0
    } catch {
        return fail(error, err, errLength)
    }
}
