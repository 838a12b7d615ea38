// swift-tools-version:6.0
// Kiln: a transfer-learned image classifier in one frozen file, run anywhere.
//
// Data flows one way:  importer ──▶ KilnGraph ──passes──▶ KilnFormat (.kiln) ──▶ KilnRuntime.
// The lean side (KilnFormat, KilnKernels, KilnRuntime, kiln-run) never imports the conversion side.
import PackageDescription

/// The static Swift libraries that the toolchain's static link lines leave out but KilnClassify's imports
/// (Synchronization, FoundationEssentials) need.
let staticSwiftLibraries = ["-lswiftSynchronization", "-l_FoundationCollections", "-l_FoundationCShims"]

/// Linker settings of a binary meant to be copied alone to another machine: one static executable. The Swift
/// runtime (with the Foundation pieces and Synchronization it pulls in) and every C library are linked in from
/// their `.a`: libturbojpeg, libpng (+ libz), libzstd, libopenblas (+ its gfortran runtime: libgfortran-12-dev),
/// and glibc. `-static-stdlib` alone would leave the C libraries as shared ones: the pkg-config `-l` flags of the
/// system-library targets come before any flag given here, so only a fully static link makes ld take the `.a`.
/// Release builds only: debug builds (`swift test`, the sanitizer and fuzz builds, which a static link would
/// break) stay dynamic.
let staticDeployment: [LinkerSetting] = [
    .unsafeFlags(["-static-executable"] + staticSwiftLibraries + ["-lz", "-lgfortran", "-lquadmath", "-lm", "-lpthread"],
                 .when(configuration: .release)),
]


let package = Package(
    name: "Kiln",
    products: [
        // The lean deployment pieces.
        .executable(name: "kiln-run", targets: ["kiln-run"]),
        .library(name: "KilnRuntime", targets: ["KilnRuntime"]),
        .library(name: "KilnImage", targets: ["KilnImage"]),
        .library(name: "KilnClassify", targets: ["KilnClassify"]),
        // The C API of include/kiln.h (KilnC), shared and static. SwiftPM cannot name a library "kiln" beside the
        // `kiln` executable, so these are libkiln-shared.so and libkiln-static.a; `make release` adds libkiln.so
        // and libkiln.a beside them (links), the names `cc ... -lkiln` finds.
        .library(name: "kiln-shared", type: .dynamic, targets: ["KilnC"]),
        .library(name: "kiln-static", type: .static, targets: ["KilnC"]),
        // The full toolchain.
        .executable(name: "kiln", targets: ["kiln"]),
        // The kiln side of `make bench`.
        .executable(name: "kiln-bench", targets: ["kiln-bench"]),
        // The Open Inference Protocol (KServe v2) server over KilnClassify: the only networking product.
        .executable(name: "kiln-serve", targets: ["kiln-serve"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // gRPC for kiln-serve only (the lean kiln-run links none of it).
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // MARK: System libraries (module map + shim header, found by pkg-config)
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5", providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),

        // MARK: Lean side
        // The .kiln file: layout, checksums, deterministic atomic writer, bounds-checked mmap reader.
        .target(name: "KilnFormat", dependencies: ["CZstd"]),
        // AVX2+FMA microkernels (each function carries its own target attribute; chosen at run time by cpuid)
        // and the kernels' thread pool.
        .target(name: "CKilnKernels"),
        // CPU kernels (NHWC float32): a naive reference kernel per op, and the fast ones; activations are
        // KilnFormat's `Activation` values.
        .target(name: "KilnKernels", dependencies: ["KilnFormat", "COpenBLAS", "CKilnKernels"]),
        // Loads a bundle, plans shapes and memory, runs batches.
        .target(name: "KilnRuntime", dependencies: ["KilnFormat", "KilnKernels"]),
        // JPEG/PNG decoding and resizing exactly as the training framework did it.
        .target(name: "KilnImage", dependencies: ["CTurboJPEG", "CPNG"]),
        // The classification pipeline of every front end: input spec from the metadata, plans kept per batch
        // shape, images to tensors, top-k with labels, text/JSON/CSV results (no networking, no ArgumentParser).
        .target(name: "KilnClassify", dependencies: ["KilnRuntime", "KilnFormat", "KilnImage", "KilnKernels"]),
        // The standalone deployment binary, a thin shell over KilnClassify: a bundle and images or a tensor in,
        // classes or outputs out. The Swift runtime and the C libraries are linked in (`staticDeployment`):
        // it runs on a machine without Swift.
        .executableTarget(name: "kiln-run", dependencies: [
            "KilnClassify", "KilnRuntime", "KilnKernels", "KilnImage",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], linkerSettings: staticDeployment),
        // The declarations of include/kiln.h as a module, so that KilnC implements them on the header's own types.
        .systemLibrary(name: "CKilnAPI", path: "include"),
        // The C API (include/kiln.h) over KilnClassify: opaque handles, codes by ErrorKind, nothing Swift crosses.
        // The release libkiln-shared.so carries the Swift runtime inside it, its symbols hidden.
        .target(name: "KilnC", dependencies: ["CKilnAPI", "KilnClassify", "KilnRuntime", "KilnFormat", "KilnKernels"],
                linkerSettings: [.unsafeFlags(["-static-stdlib"] + staticSwiftLibraries + [
                    "-Xlinker", "--exclude-libs=ALL", "-Xlinker", "--no-undefined"], .when(configuration: .release))]),

        // Times a bundle for `make bench` (scripts/bench): load, plan, warm runs, per-op profile.
        .executableTarget(name: "kiln-bench", dependencies: [
            "KilnRuntime", "KilnFormat", "KilnKernels",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // KServe v2 REST (SwiftNIO HTTP/1.1) and gRPC (grpc-swift-2; messages and service generated once from
        // proto/grpc_service.proto into Sources/kiln-serve/Generated) over KilnClassify; networking lives only here.
        .executableTarget(name: "kiln-serve", dependencies: [
            "KilnClassify", "KilnRuntime", "KilnFormat", "KilnImage", "KilnKernels",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ]),

        // MARK: Conversion side
        // The conversion IR (training-time ops allowed), shape inference, the folding passes, and a reference
        // interpreter of the unfolded graph (the oracle of `verify` and of the pass tests).
        .target(name: "KilnGraph", dependencies: ["KilnFormat", "KilnKernels"]),
        // Keras HDF5 importer: legacy .h5 (Keras 2 and 3), .keras, .weights.h5, applications weight files.
        .target(name: "KilnKeras", dependencies: [
            "CHDF5", "KilnGraph",
            .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ]),
        // C code generated by protoc-c from formats/onnx/onnx.proto (generated once, committed).
        .target(name: "CONNX", dependencies: ["CProtobufC"]),
        // ONNX importer: protobuf through libprotobuf-c, NCHW graphs into the NHWC IR.
        .target(name: "KilnONNX", dependencies: ["CONNX", "CProtobufC", "KilnGraph"]),
        // Transfer learning without Python: image folders → features (.npz, cached), a softmax head trained
        // with Adam through OpenBLAS, metrics and plots, and the head saved as a Keras-loadable .h5.
        .target(name: "KilnTrain", dependencies: ["KilnKeras", "KilnRuntime", "KilnKernels", "KilnImage", "COpenBLAS"]),
        // Benchmark of the head trainer (4,000 × 2048 features, 50 epochs).
        .executableTarget(name: "kiln-train-bench", dependencies: ["KilnTrain", "KilnKernels"]),
        // The toolchain CLI: convert, fuse, inspect, verify, compare, features, train-head.
        .executableTarget(name: "kiln", dependencies: [
            "KilnKeras", "KilnONNX", "KilnGraph", "KilnFormat", "KilnRuntime", "KilnTrain", "KilnImage",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Tests (one target per module, plus end to end)
        .testTarget(name: "SystemLibraryTests", dependencies: ["CHDF5", "COpenBLAS", "CZstd", "CProtobufC"]),
        .testTarget(name: "KilnFormatTests", dependencies: ["KilnFormat"]),
        .testTarget(name: "KilnKernelsTests", dependencies: ["KilnKernels", "KilnFormat"]),
        // The op-test driver: every op's fast plan against its reference plan, guarded buffers.
        .testTarget(name: "KilnRuntimeTests", dependencies: ["KilnRuntime", "KilnFormat", "KilnKernels"]),
        .testTarget(name: "KilnGraphTests", dependencies: ["KilnGraph", "KilnFormat", "KilnRuntime", "KilnKernels"]),
        .testTarget(name: "KilnKerasTests", dependencies: [
            "KilnKeras", "KilnGraph", "KilnFormat", "KilnRuntime", "CHDF5",
            .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ]),
        .testTarget(name: "KilnONNXTests", dependencies: ["KilnONNX", "KilnGraph", "KilnFormat", "KilnRuntime", "KilnKernels"]),
        .testTarget(name: "KilnImageTests", dependencies: ["KilnImage", "KilnFormat", "KilnRuntime", "KilnTestSupport"]),
        .testTarget(name: "KilnTrainTests", dependencies: ["KilnTrain", "KilnKeras", "KilnRuntime", "KilnKernels", "KilnTestSupport"]),
        .testTarget(name: "KilnClassifyTests", dependencies: ["KilnClassify", "KilnFormat", "KilnRuntime", "KilnImage", "KilnTestSupport"]),
        .testTarget(name: "EndToEndTests", dependencies: ["KilnFormat", "KilnRuntime", "KilnTrain", "KilnTestSupport"]),
        // Helpers the test targets share (running the release binaries, temporary directories).
        .target(name: "KilnTestSupport", path: "Tests/KilnTestSupport"),
    ]
)
