import ArgumentParser

/// The Kiln toolchain: convert models into `.kiln` bundles and look inside them.
struct Kiln: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Turn a trained image classifier into one frozen .kiln file.",
        discussion: "Exit status: 0 success, 1 bad input (the message names the file, layer and tensor), 64 usage error.",
        version: KilnVersion.string,
        subcommands: [Convert.self, Fuse.self, Inspect.self, Verify.self, Compare.self, Features.self, TrainHead.self])
}

enum KilnVersion {
    static let string = "0.1.0"
}

Kiln.main()
