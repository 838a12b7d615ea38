import Foundation

/// The Keras applications ResNet-50 (v1) topology, for weight files that carry no model config
/// (`resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5`, a bare `.weights.h5`).
///
/// It is expressed as a Keras 3 functional config so that it goes through the same parser as a saved
/// model. Filter counts are not written: every convolution takes them from its kernel's shape, so the
/// same topology also serves narrower ResNet-50s with the same layer names. Layer order follows Keras'
/// `model.layers` (which numbers the `.weights.h5` groups): within a block the projection conv `_0_conv`
/// comes after `_2_relu`, and the `_0`/`_3` convs precede both their batch norms.
enum ResNet50Topology {
    /// Without the top, the model ends with `avg_pool` (GlobalAveragePooling2D), as
    /// `ResNet50(include_top=False, pooling="avg")` does: the features a transfer-learning head reads.
    static func config(includeTop: Bool) -> [String: Any] {
        var layers: [[String: Any]] = []
        func add(_ cls: String, _ name: String, _ inbound: [String], _ config: [String: Any] = [:]) {
            var cfg = config
            cfg["name"] = name
            let args: [Any] = inbound.count == 1 ? [tensor(inbound[0])] : [inbound.map(tensor)]
            layers.append(["class_name": cls, "name": name, "config": cfg,
                           "inbound_nodes": inbound.isEmpty ? [] : [["args": args, "kwargs": [String: Any]()]]])
        }
        func tensor(_ from: String) -> [String: Any] {
            ["class_name": "__keras_tensor__", "config": ["keras_history": [from, 0, 0]]]
        }
        func conv(_ name: String, _ from: String, kernel: Int, stride: Int = 1, padding: String = "valid") {
            add("Conv2D", name, [from], ["kernel_size": [kernel, kernel], "strides": [stride, stride], "padding": padding, "use_bias": true])
        }
        func bn(_ name: String, _ from: String) {
            add("BatchNormalization", name, [from], ["axis": 3, "epsilon": 1.001e-5, "center": true, "scale": true])
        }
        func relu(_ name: String, _ from: String) { add("Activation", name, [from], ["activation": "relu"]) }

        add("InputLayer", "input_layer", [], ["batch_shape": [NSNull(), NSNull(), NSNull(), 3]])
        add("ZeroPadding2D", "conv1_pad", ["input_layer"], ["padding": [[3, 3], [3, 3]]])
        conv("conv1_conv", "conv1_pad", kernel: 7, stride: 2)
        bn("conv1_bn", "conv1_conv")
        relu("conv1_relu", "conv1_bn")
        add("ZeroPadding2D", "pool1_pad", ["conv1_relu"], ["padding": [[1, 1], [1, 1]]])
        add("MaxPooling2D", "pool1_pool", ["pool1_pad"], ["pool_size": [3, 3], "strides": [2, 2], "padding": "valid"])

        var previous = "pool1_pool"
        for (stage, blocks) in [(2, 3), (3, 4), (4, 6), (5, 3)] {
            for block in 1...blocks {
                let p = "conv\(stage)_block\(block)"
                let stride = (block == 1 && stage > 2) ? 2 : 1
                conv("\(p)_1_conv", previous, kernel: 1, stride: stride)
                bn("\(p)_1_bn", "\(p)_1_conv")
                relu("\(p)_1_relu", "\(p)_1_bn")
                conv("\(p)_2_conv", "\(p)_1_relu", kernel: 3, padding: "same")
                bn("\(p)_2_bn", "\(p)_2_conv")
                relu("\(p)_2_relu", "\(p)_2_bn")
                let shortcut: String
                if block == 1 {
                    conv("\(p)_0_conv", previous, kernel: 1, stride: stride)
                    conv("\(p)_3_conv", "\(p)_2_relu", kernel: 1)
                    bn("\(p)_0_bn", "\(p)_0_conv")
                    bn("\(p)_3_bn", "\(p)_3_conv")
                    shortcut = "\(p)_0_bn"
                } else {
                    conv("\(p)_3_conv", "\(p)_2_relu", kernel: 1)
                    bn("\(p)_3_bn", "\(p)_3_conv")
                    shortcut = previous
                }
                add("Add", "\(p)_add", [shortcut, "\(p)_3_bn"])
                relu("\(p)_out", "\(p)_add")
                previous = "\(p)_out"
            }
        }
        add("GlobalAveragePooling2D", "avg_pool", [previous])
        var output = "avg_pool"
        if includeTop {
            add("Dense", "predictions", ["avg_pool"], ["activation": "softmax", "use_bias": true])
            output = "predictions"
        }
        return ["class_name": "Functional",
                "config": ["name": "resnet50", "layers": layers, "input_layers": [["input_layer", 0, 0]],
                           "output_layers": [[output, 0, 0]]]]
    }
}
