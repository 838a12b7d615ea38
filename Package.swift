// swift-tools-version:6.0
// Kiln: a transfer-learned image classifier in one frozen file, run anywhere.
//
// Data flows one way:  importer ──▶ KilnGraph ──passes──▶ KilnFormat (.kiln) ──▶ KilnRuntime.
// The lean side (KilnFormat, KilnKernels, KilnRuntime, kiln-run) never imports the conversion side.
import PackageDescription

let package = Package(
    name: "Kiln",
    products: [
        // The lean deployment pieces.
        .executable(name: "kiln-run", targets: ["kiln-run"]),
        .library(name: "KilnRuntime", targets: ["KilnRuntime"]),
        // The full toolchain.
        .executable(name: "kiln", targets: ["kiln"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
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
        .target(name: "KilnFormat"),
        // CPU kernels (NHWC float32): a naive reference kernel per op, and the fast ones.
        .target(name: "KilnKernels", dependencies: ["COpenBLAS"]),
        // Loads a bundle, plans shapes and memory, runs batches.
        .target(name: "KilnRuntime", dependencies: ["KilnFormat", "KilnKernels"]),
        // The standalone deployment binary: a bundle and a tensor in, outputs out.
        .executableTarget(name: "kiln-run", dependencies: [
            "KilnRuntime", "KilnFormat",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
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
        // The toolchain CLI: convert, inspect.
        .executableTarget(name: "kiln", dependencies: [
            "KilnKeras", "KilnGraph", "KilnFormat", "KilnRuntime",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Tests (one target per module, plus end to end)
        .testTarget(name: "SystemLibraryTests", dependencies: ["CHDF5", "COpenBLAS", "CZstd", "CProtobufC"]),
        .testTarget(name: "KilnFormatTests", dependencies: ["KilnFormat"]),
        .testTarget(name: "KilnKernelsTests", dependencies: ["KilnKernels"]),
        .testTarget(name: "KilnGraphTests", dependencies: ["KilnGraph", "KilnFormat", "KilnRuntime", "KilnKernels"]),
        .testTarget(name: "KilnKerasTests", dependencies: [
            "KilnKeras", "KilnGraph", "KilnFormat", "KilnRuntime", "CHDF5",
            .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ]),
        .testTarget(name: "EndToEndTests", dependencies: ["KilnFormat", "KilnRuntime"]),
    ]
)
