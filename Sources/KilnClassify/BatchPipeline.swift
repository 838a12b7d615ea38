#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import KilnImage
import KilnKernels

/// Seconds spent in each stage of a folder's classification: decode, resize and pack in CPU seconds of the
/// threads that did them, summed over images (so that a loaded machine does not inflate them); network,
/// waiting for the decoders and total in wall seconds of the calling thread.
public struct PipelineTimes: Sendable, Equatable {
    /// Reading the file and decoding it to 8-bit RGB.
    public var decode = 0.0
    /// Resizing (and cropping) to the model's input size.
    public var resize = 0.0
    /// Writing the resized pixels as floats into their row of the input tensor.
    public var pack = 0.0
    /// The model's runs and the top-k of their outputs.
    public var network = 0.0
    /// The first batch's run alone (part of `network`: its plan is made and its memory first touched then).
    public var firstRun = 0.0
    /// The calling thread waiting for a batch to be decoded.
    public var waiting = 0.0
    /// From the first decode to the last batch's results.
    public var total = 0.0

    public init() {}

    mutating func add(_ other: PipelineTimes) {
        decode += other.decode
        resize += other.resize
        pack += other.pack
    }

    /// One line, milliseconds.
    public var description: String {
        func ms(_ s: Double) -> String { String(Int((s * 1000).rounded())) + " ms" }
        return "CPU: decode \(ms(decode)), resize \(ms(resize)), pack \(ms(pack)); wall: " +
            "network \(ms(network)) (first run \(ms(firstRun))), waiting for decoders \(ms(waiting)); total \(ms(total))"
    }
}

/// The input tensors of a list of files, batch after batch, decoded by decoder threads and the caller: with
/// `overlap` the decoders run ahead of the model's runs (while batch k runs they fill batch k + 1; `depth`
/// batches in flight, each in its own buffer allocated once); without it they decode only the batch the caller
/// waits for, together with it, so that nothing decodes while a batch runs. Every image is decoded, resized and written straight into its row of its batch's
/// buffer (row = its position in the batch); the rows of images that failed are closed up afterwards, so the
/// tensor holds the readable images in order. With no decoder threads the calling thread decodes each batch
/// itself before its run.
final class BatchPipeline: @unchecked Sendable {
    let classifier: Classifier
    let resize: InputResize
    let files: [ImageFile]
    let batch: Int
    let rowFloats: Int
    let depth: Int
    let buffers: [UnsafeMutableBufferPointer<Float>]
    // Guarded by `mutex`: the next file to decode, images done per batch, batches the caller has finished
    // with (their buffers free again), and each file's error.
    var next = 0
    var done: [Int]
    var released = 0
    var stopping = false
    /// The batch the caller waits for (-1: none): without `overlap`, the only one the decoders take files from,
    /// so that none is still decoding when its run starts.
    var waitingFor = -1
    /// Whether the decoders work while a batch runs (when there are cores beyond the kernel pool's), or only
    /// between runs, alongside the caller (when the kernel pool has every core: a decoder would take turns with
    /// a kernel worker and stall every layer that waits for all of them, and decoding a batch on all the cores
    /// between runs costs the same CPU time at no such risk).
    let overlap: Bool
    var errors: [ClassifyError?]
    var times = PipelineTimes()
    let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init(classifier: Classifier, resize: InputResize, files: [ImageFile], batch: Int, depth: Int = 2, overlap: Bool) {
        self.classifier = classifier
        self.overlap = overlap
        self.resize = resize
        self.files = files
        self.batch = max(batch, 1)
        rowFloats = resize.height * resize.width * 3
        let batches = (files.count + self.batch - 1) / self.batch
        self.depth = max(1, min(depth, batches))
        let floats = max(min(self.batch, files.count) * rowFloats, 1)
        buffers = (0..<self.depth).map { _ in
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: floats)
            b.initialize(repeating: 0)
            return b
        }
        done = [Int](repeating: 0, count: batches)
        errors = files.map(\.error)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(changed, nil)
    }

    deinit {
        for b in buffers { b.deallocate() }
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        changed.deallocate()
    }

    var batchCount: Int { done.count }

    func range(of k: Int) -> Range<Int> { k * batch..<min((k + 1) * batch, files.count) }

    /// Decodes file `index` into its row of its batch's buffer; returns its error, if any.
    func decode(_ index: Int, times: inout PipelineTimes) -> ClassifyError? {
        if let error = files[index].error { return error }
        let k = index / batch
        let row = UnsafeMutableBufferPointer(rebasing: buffers[k % depth][(index - k * batch) * rowFloats..<(index - k * batch + 1) * rowFloats])
        do {
            try classifier.loadRow(.file(files[index].path), resize: resize, into: row, times: &times)
            return nil
        } catch {
            return error
        }
    }

    /// A decoder thread: takes the next file while its batch's buffer is free, until every file is taken.
    func work() {
        var mine = PipelineTimes()
        pthread_mutex_lock(mutex)
        while !stopping, next < files.count {
            let index = next
            guard overlap ? index / batch < released + depth : index / batch == waitingFor else {
                pthread_cond_wait(changed, mutex)
                continue
            }
            next += 1
            pthread_mutex_unlock(mutex)
            let error = decode(index, times: &mine)
            pthread_mutex_lock(mutex)
            errors[index] = error
            done[index / batch] += 1
            pthread_cond_broadcast(changed)
        }
        times.add(mine)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until batch `k` is decoded (decoding it here when there are no decoder threads, helping them when
    /// there are); returns its rows
    /// (the positions of the files that decoded, closed up in order) and every file's error.
    func wait(for k: Int, threaded: Bool) -> (rows: [Int], errors: [ClassifyError?]) {
        let r = range(of: k)
        if !threaded {
            var mine = PipelineTimes()
            for index in r { errors[index] = decode(index, times: &mine) }
            times.add(mine)
        } else {
            // While the batch is not done, the caller decodes its remaining files too rather than wait (the
            // first batch, and any the decoders fall behind on, goes at the speed of decoders + 1).
            var mine = PipelineTimes()
            pthread_mutex_lock(mutex)
            waitingFor = k
            pthread_cond_broadcast(changed)
            while done[k] < r.count {
                if next < r.upperBound {
                    let index = next
                    next += 1
                    pthread_mutex_unlock(mutex)
                    let error = decode(index, times: &mine)
                    pthread_mutex_lock(mutex)
                    errors[index] = error
                    done[k] += 1
                    pthread_cond_broadcast(changed)
                } else {
                    pthread_cond_wait(changed, mutex)
                }
            }
            waitingFor = -1
            times.add(mine)
            pthread_mutex_unlock(mutex)
        }
        pthread_mutex_lock(mutex)
        let mine = Array(errors[r])
        pthread_mutex_unlock(mutex)
        var rows: [Int] = []
        let buffer = buffers[k % depth]
        for (slot, error) in mine.enumerated() where error == nil {
            if slot != rows.count {       // close up over a failed image: only then is a row moved
                let from = buffer.baseAddress! + slot * rowFloats, to = buffer.baseAddress! + rows.count * rowFloats
                to.update(from: from, count: rowFloats)
            }
            rows.append(r.lowerBound + slot)
        }
        return (rows, mine)
    }

    /// The caller is done with batch `k`: its buffer may take batch k + depth.
    func release(_ k: Int) {
        pthread_mutex_lock(mutex)
        released = k + 1
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
    }

    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
    }

    /// Starts `count` decoder threads; returns their handles for `join`.
    func start(_ count: Int) -> [pthread_t] {
        (0..<count).compactMap { _ in
            let context = Unmanaged.passRetained(self).toOpaque()
            #if canImport(Darwin)
            var thread: pthread_t?
            #else
            var thread = pthread_t()
            #endif
            let status = pthread_create(&thread, nil, { raw in
                #if canImport(Darwin)
                let pipeline = Unmanaged<BatchPipeline>.fromOpaque(raw).takeRetainedValue()
                #else
                let pipeline = Unmanaged<BatchPipeline>.fromOpaque(raw!).takeRetainedValue()
                #endif
                pipeline.work()
                return nil
            }, context)
            guard status == 0 else {
                Unmanaged<BatchPipeline>.fromOpaque(context).release()
                return nil
            }
            return thread
        }
    }
}

/// CPU seconds the calling thread has run.
func threadCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// Decoder threads for a folder when the caller does not choose: `KILN_DECODE_THREADS` when set (0…64), else
/// one per logical CPU beyond the first, at least one (they run ahead of the kernel pool and share the CPUs
/// with it).
func defaultDecoderThreads() -> Int {
    if let text = getenv("KILN_DECODE_THREADS"), let n = Int(String(cString: text)), (0...64).contains(n) { return n }
    let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    return max(1, min(cpus - 1, 8))
}

/// Whether decoder threads work while a batch runs: `KILN_DECODE_OVERLAP` (0 or 1) when set, else when the CPUs
/// outnumber the kernel pool's threads.
func defaultDecodeOverlap() -> Bool {
    if let text = getenv("KILN_DECODE_OVERLAP") { return String(cString: text) != "0" }
    return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) > kernelThreads()
}
