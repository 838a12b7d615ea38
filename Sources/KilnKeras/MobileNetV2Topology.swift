import Foundation

/// The Keras applications MobileNetV2 topology, for weight files that carry no model config
/// (`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_<size>[_no_top].h5`, a bare `.weights.h5`).
///
/// As `keras.applications.MobileNetV2` builds it: `Conv1` (3×3/2 same) + BN + ReLU6, 17 inverted residual blocks
/// (1×1 expand + BN + ReLU6 except in the first, `ZeroPadding2D(((0, 1), (0, 1)))` before each stride-2 3×3
/// depthwise convolution — `correct_pad` for the even sizes the application takes — + BN + ReLU6, 1×1 project + BN,
/// an Add where the block keeps its size and width), `Conv_1` 1×1 + BN + ReLU6, then the global average pool (and
/// the classifier). Filter counts come from the kernels, so every `alpha` reads with it; which blocks add their input
/// does not depend on alpha. Without the top it ends at the global average pool (`pooling="avg"`).
enum MobileNetV2Topology {
    /// (output width at alpha 1, stride, expansion) of blocks 0…16.
    static let blocks: [(filters: Int, stride: Int, expansion: Int)] = [
        (16, 1, 1),
        (24, 2, 6), (24, 1, 6),
        (32, 2, 6), (32, 1, 6), (32, 1, 6),
        (64, 2, 6), (64, 1, 6), (64, 1, 6), (64, 1, 6),
        (96, 1, 6), (96, 1, 6), (96, 1, 6),
        (160, 2, 6), (160, 1, 6), (160, 1, 6),
        (320, 1, 6),
    ]

    static func config(includeTop: Bool) -> [String: Any] {
        var b = KerasFunctionalConfig()
        func conv(_ name: String, _ from: String, kernel: Int, stride: Int = 1) {
            b.add("Conv2D", name, [from], ["kernel_size": [kernel, kernel], "strides": [stride, stride], "padding": "same", "use_bias": false])
        }
        func bn(_ name: String, _ from: String) {
            b.add("BatchNormalization", name, [from], ["axis": -1, "epsilon": 1e-3, "center": true, "scale": true])
        }
        func relu6(_ name: String, _ from: String) { b.add("ReLU", name, [from], ["max_value": 6.0]) }

        b.add("InputLayer", "input_layer", [], ["batch_shape": [NSNull(), NSNull(), NSNull(), 3]])
        conv("Conv1", "input_layer", kernel: 3, stride: 2)
        bn("bn_Conv1", "Conv1")
        relu6("Conv1_relu", "bn_Conv1")
        var previous = "Conv1_relu", width = 32
        for (id, block) in blocks.enumerated() {
            let p = id == 0 ? "expanded_conv_" : "block_\(id)_"
            let input = previous
            var x = input
            if id > 0 {
                conv(p + "expand", x, kernel: 1)
                bn(p + "expand_BN", p + "expand")
                relu6(p + "expand_relu", p + "expand_BN")
                x = p + "expand_relu"
            }
            if block.stride == 2 {
                b.add("ZeroPadding2D", p + "pad", [x], ["padding": [[0, 1], [0, 1]]])
                x = p + "pad"
            }
            b.add("DepthwiseConv2D", p + "depthwise", [x], ["kernel_size": [3, 3], "strides": [block.stride, block.stride],
                                                           "padding": block.stride == 1 ? "same" : "valid", "use_bias": false])
            bn(p + "depthwise_BN", p + "depthwise")
            relu6(p + "depthwise_relu", p + "depthwise_BN")
            conv(p + "project", p + "depthwise_relu", kernel: 1)
            bn(p + "project_BN", p + "project")
            previous = p + "project_BN"
            if width == block.filters && block.stride == 1 {
                b.add("Add", p + "add", [input, previous])
                previous = p + "add"
            }
            width = block.filters
        }
        conv("Conv_1", previous, kernel: 1)
        bn("Conv_1_bn", "Conv_1")
        relu6("out_relu", "Conv_1_bn")
        b.add("GlobalAveragePooling2D", "global_average_pooling2d", ["out_relu"])
        var output = "global_average_pooling2d"
        if includeTop {
            b.add("Dense", "predictions", [output], ["activation": "softmax", "use_bias": true])
            output = "predictions"
        }
        return b.functional(name: "mobilenetv2_1.00", input: "input_layer", output: output)
    }
}

/// A Keras 3 functional model config written layer by layer, for the built-in topologies.
struct KerasFunctionalConfig {
    var layers: [[String: Any]] = []

    /// Appends layer `name` of class `cls` reading `inbound` (one tensor, or a list for merge layers).
    mutating func add(_ cls: String, _ name: String, _ inbound: [String], _ config: [String: Any] = [:]) {
        var cfg = config
        cfg["name"] = name
        func tensor(_ from: String) -> [String: Any] {
            ["class_name": "__keras_tensor__", "config": ["keras_history": [from, 0, 0]]]
        }
        let args: [Any] = inbound.count == 1 ? [tensor(inbound[0])] : [inbound.map(tensor)]
        layers.append(["class_name": cls, "name": name, "config": cfg,
                       "inbound_nodes": inbound.isEmpty ? [] : [["args": args, "kwargs": [String: Any]()]]])
    }

    func functional(name: String, input: String, output: String) -> [String: Any] {
        ["class_name": "Functional",
         "config": ["name": name, "layers": layers, "input_layers": [[input, 0, 0]], "output_layers": [[output, 0, 0]]]]
    }
}

/// The Keras applications DenseNet121/169/201 topologies (`densenet121_weights_tf_dim_ordering_tf_kernels[_notop].h5`,
/// a bare `.weights.h5`), as `keras.applications.DenseNet*` builds them: a 7×7/2 stem after a 3-pixel zero pad,
/// BN + ReLU, a 3×3/2 max pool after a 1-pixel zero pad, then dense blocks of pre-activation layers (BN + ReLU +
/// 1×1 conv, BN + ReLU + 3×3 conv to 32 channels, concatenated onto the block's input) joined by transitions (BN +
/// ReLU + 1×1 conv + 2×2/2 average pool), a final BN + ReLU and the global average pool `avg_pool` (and the
/// classifier). The block sizes tell the variants apart. `keras2Names`: the stem's layers as Keras 2 named them
/// (`conv1/conv`, `conv1/bn`, `conv1/relu`), which the applications weight files keep; Keras 3 names them
/// `conv1_conv`, `conv1_bn`, `conv1_relu`.
enum DenseNetTopology {
    static func config(blocks: [Int], name: String, keras2Names: Bool = false, includeTop: Bool) -> [String: Any] {
        let stem = keras2Names ? ["conv1/conv", "conv1/bn", "conv1/relu"] : ["conv1_conv", "conv1_bn", "conv1_relu"]
        var b = KerasFunctionalConfig()
        func bn(_ name: String, _ from: String) {
            b.add("BatchNormalization", name, [from], ["axis": 3, "epsilon": 1.001e-5, "center": true, "scale": true])
        }
        func relu(_ name: String, _ from: String) { b.add("Activation", name, [from], ["activation": "relu"]) }
        func conv(_ name: String, _ from: String, kernel: Int, stride: Int = 1, padding: String = "valid") {
            b.add("Conv2D", name, [from], ["kernel_size": [kernel, kernel], "strides": [stride, stride], "padding": padding, "use_bias": false])
        }
        b.add("InputLayer", "input_layer", [], ["batch_shape": [NSNull(), NSNull(), NSNull(), 3]])
        b.add("ZeroPadding2D", "zero_padding2d", ["input_layer"], ["padding": [[3, 3], [3, 3]]])
        conv(stem[0], "zero_padding2d", kernel: 7, stride: 2)
        bn(stem[1], stem[0])
        relu(stem[2], stem[1])
        b.add("ZeroPadding2D", "zero_padding2d_1", [stem[2]], ["padding": [[1, 1], [1, 1]]])
        b.add("MaxPooling2D", "pool1", ["zero_padding2d_1"], ["pool_size": [3, 3], "strides": [2, 2], "padding": "valid"])
        var x = "pool1"
        for (stage, count) in blocks.enumerated() {
            for layer in 1...count {
                let p = "conv\(stage + 2)_block\(layer)"
                bn(p + "_0_bn", x)
                relu(p + "_0_relu", p + "_0_bn")
                conv(p + "_1_conv", p + "_0_relu", kernel: 1)
                bn(p + "_1_bn", p + "_1_conv")
                relu(p + "_1_relu", p + "_1_bn")
                conv(p + "_2_conv", p + "_1_relu", kernel: 3, padding: "same")
                b.add("Concatenate", p + "_concat", [x, p + "_2_conv"], ["axis": 3])
                x = p + "_concat"
            }
            if stage < blocks.count - 1 {
                let p = "pool\(stage + 2)"
                bn(p + "_bn", x)
                relu(p + "_relu", p + "_bn")
                conv(p + "_conv", p + "_relu", kernel: 1)
                b.add("AveragePooling2D", p + "_pool", [p + "_conv"], ["pool_size": [2, 2], "strides": [2, 2], "padding": "valid"])
                x = p + "_pool"
            }
        }
        bn("bn", x)
        relu("relu", "bn")
        b.add("GlobalAveragePooling2D", "avg_pool", ["relu"])
        var output = "avg_pool"
        if includeTop {
            b.add("Dense", "predictions", [output], ["activation": "softmax", "use_bias": true])
            output = "predictions"
        }
        return b.functional(name: name, input: "input_layer", output: output)
    }
}
