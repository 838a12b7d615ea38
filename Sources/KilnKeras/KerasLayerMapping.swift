import Foundation
import KilnFormat
import KilnGraph

/// Maps one Keras layer (class, config, variables) to a graph op, checking what the config says
/// against the weights the file holds.
enum KerasLayerMapping {
    static let supported = ["InputLayer", "ZeroPadding2D", "Conv2D", "BatchNormalization", "Activation", "ReLU", "LeakyReLU",
                            "ELU", "ThresholdedReLU", "Softmax", "Add", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                            "GlobalMaxPooling2D", "Flatten", "Dense", "Rescaling", "Normalization", "Resizing", "CenterCrop", "RandomCrop",
                            "TFOpLambda", "SlicingOpLambda", "Keras 3 op layers (GetItem, Stack, Add, Subtract, Multiply, TrueDivide, …)"]
                            + backboneLayers + identityLayers.sorted()

    /// Layers that are the identity at inference: dropout, noise, regularisation, data augmentation.
    static let identityLayers: Set<String> = ["Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                                              "GaussianNoise", "AlphaDropout", "ActivityRegularization", "RandomFlip", "RandomRotation",
                                              "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness"]

    /// Layers that change the image size; exact (the identity) only where the input already has their size, which
    /// `KerasImporter.build` checks once shapes are known.
    static let geometryLayers: Set<String> = ["Resizing", "CenterCrop", "RandomCrop"]

    /// The graph nodes of one layer: one, except SeparableConv2D, which is a depthwise convolution (node
    /// `<name>/depthwise`) followed by a 1×1 convolution with the bias and the activation (node `<name>`).
    static func nodes(for layer: KerasLayer, variables v: [String: WeightTensor], file: String, kerasMajor: Int = 3) throws(KerasImportError) -> [GraphNode] {
        guard layer.className == "SeparableConv2D" else {
            return [GraphNode(name: layer.nodeName, op: try op(for: layer, variables: v, file: file, kerasMajor: kerasMajor), inputs: layer.inbound)]
        }
        var depthwiseVariables: [String: WeightTensor] = [:], pointwiseVariables: [String: WeightTensor] = [:]
        depthwiseVariables["kernel"] = v["depthwise_kernel"]
        pointwiseVariables["kernel"] = v["pointwise_kernel"]
        pointwiseVariables["bias"] = v["bias"]
        if v["depthwise_kernel"] == nil {
            throw KerasImportError(file: file, layer: layer.name, layerClass: layer.className, tensor: "depthwise_kernel", "weight 'depthwise_kernel' is missing from the file")
        }
        if v["pointwise_kernel"] == nil {
            throw KerasImportError(file: file, layer: layer.name, layerClass: layer.className, tensor: "pointwise_kernel", "weight 'pointwise_kernel' is missing from the file")
        }
        let depthwise = try op(for: layer, variables: depthwiseVariables, file: file, as: "DepthwiseConv2D",
                               overriding: ["use_bias": false, "activation": "linear"])
        let pointwise = try op(for: layer, variables: pointwiseVariables, file: file, as: "Conv2D",
                               overriding: ["kernel_size": [1, 1], "strides": [1, 1], "dilation_rate": [1, 1], "padding": "valid", "groups": 1])
        let depthwiseName = layer.nodeName + "/depthwise"
        return [GraphNode(name: depthwiseName, op: depthwise, inputs: layer.inbound),
                GraphNode(name: layer.nodeName, op: pointwise, inputs: [depthwiseName])]
    }

    /// The layers backbones beyond ResNet-50 need (MobileNet, DenseNet, Xception, ResNeXt).
    static let backboneLayers = ["DepthwiseConv2D", "SeparableConv2D", "Concatenate"]

    /// The op of `layer`, read as class `className` (default: its own) with `overrides` over its config (for the
    /// parts of a layer that is more than one op). `kerasMajor`: 2 for tf.keras files (whose hard_sigmoid is
    /// 0.2·x + 0.5, Keras 3's is x/6 + 1/2).
    static func op(for layer: KerasLayer, variables v: [String: WeightTensor], file: String, kerasMajor: Int = 3,
                   as className: String? = nil, overriding overrides: [String: Any] = [:]) throws(KerasImportError) -> GraphOp {
        let c = layer.config.merging(overrides) { $1 }
        func fail(_ m: String, tensor: String? = nil) -> KerasImportError {
            KerasImportError(file: file, layer: layer.name, layerClass: layer.className, tensor: tensor, m)
        }
        func require(_ role: String) throws(KerasImportError) -> WeightTensor {
            guard let t = v[role] else { throw fail("weight '\(role)' is missing from the file", tensor: role) }
            return t
        }
        func channelsLast() throws(KerasImportError) {
            if let f = c["data_format"] as? String, f != "channels_last" {
                throw fail("data_format '\(f)' is not supported (channels_last only)")
            }
        }
        func pair(_ key: String, default d: (Int, Int)? = nil) throws(KerasImportError) -> (Int, Int) {
            if let n = c[key] as? Int { return (n, n) }
            if let l = c[key] as? [Any], l.count == 2, let a = l[0] as? Int, let b = l[1] as? Int { return (a, b) }
            if let d, c[key] == nil || c[key] is NSNull { return d }
            throw fail("config '\(key)' is \(String(describing: c[key] ?? "missing")), expected an int or a pair")
        }
        /// A window size, stride or dilation: in the bundle's range 1...65536 (checked before any shape arithmetic).
        func window(_ key: String, default d: (Int, Int)? = nil) throws(KerasImportError) -> (Int, Int) {
            let (a, b) = try pair(key, default: d)
            guard (1...65536).contains(a), (1...65536).contains(b) else { throw fail("\(key) (\(a), \(b)) is outside 1...65536") }
            return (a, b)
        }
        func zeroPad(_ t: Int, _ b: Int, _ l: Int, _ r: Int) throws(KerasImportError) -> GraphOp {
            guard [t, b, l, r].allSatisfy({ (0...65536).contains($0) }) else {
                throw fail("padding (\(t), \(b), \(l), \(r)) is outside 0...65536")
            }
            return .zeroPad(top: t, bottom: b, left: l, right: r)
        }
        func padding() throws(KerasImportError) -> WindowPadding {
            switch (c["padding"] as? String ?? "valid").lowercased() {
            case "valid": return .valid
            case "same": return .same
            case let other: throw fail("padding '\(other)' is not supported (valid or same)")
            }
        }
        /// The layer's activation: an elementwise one, or a softmax (which only Dense and Activation take).
        func activation(_ key: String = "activation") throws(KerasImportError) -> (Activation, softmax: Bool) {
            let name: String
            if let s = c[key] as? String {
                name = s
            } else if let d = c[key] as? [String: Any], let s = (d["config"] as? [String: Any])?["name"] as? String ?? d["class_name"] as? String {
                name = s
            } else if c[key] == nil {
                name = "linear"
            } else {
                throw fail("activation \(String(describing: c[key])) is not understood")
            }
            if name == "softmax" { return (.none, true) }
            if name == "hard_sigmoid" {
                // Keras 2: clip(0.2·x + 0.5, 0, 1); Keras 3: relu6(x + 3) / 6 = clip(x/6 + 1/2, 0, 1).
                return (Activation(.linear, alpha: kerasMajor == 2 ? 0.2 : Float(1.0 / 6.0), beta: 0.5, minimum: 0, maximum: 1), false)
            }
            guard let a = kerasActivations[name] else {
                throw fail("activation '\(name)' is not supported (\(kerasActivations.keys.sorted().joined(separator: ", ")), softmax)")
            }
            return (a, false)
        }
        func number(_ key: String) -> Double? { (c[key] as? NSNumber).map(\.doubleValue) }
        /// A number or a list of numbers (one per channel).
        func numbers(_ key: String, default d: Double) throws(KerasImportError) -> [Double] {
            guard let raw = c[key], !(raw is NSNull) else { return [d] }
            guard let values = try KerasOpLayers.constantValues(raw, fail: { fail($0) }) else {
                throw fail("config '\(key)' is \(KerasOpLayers.compact(raw)), expected a number or one per channel")
            }
            return values
        }
        /// Keras' Normalization: y = (x − mean) / max(sqrt(variance), 1e-7) (Keras' epsilon), or its inverse,
        /// mean and variance from the config or, adapted, from the weights.
        func normalization() throws(KerasImportError) -> GraphOp {
            let axes: [Int]
            if let a = c["axis"] as? Int { axes = [a] } else { axes = (c["axis"] as? [Any] ?? [-1]).compactMap { $0 as? Int } }
            guard axes == [-1] || axes == [3] else { throw fail("axis \(axes) is not supported (the channel axis only)") }
            let mean: [Double], variance: [Double]
            if c["mean"] != nil, !(c["mean"] is NSNull) {
                mean = try numbers("mean", default: 0)
                variance = try numbers("variance", default: 1)
            } else {
                mean = try require("mean").values.map(Double.init)
                variance = try require("variance").values.map(Double.init)
            }
            guard mean.count == variance.count || mean.count == 1 || variance.count == 1 else {
                throw fail("mean has \(mean.count) values, variance \(variance.count)")
            }
            if variance.contains(where: { $0 < 0 }) { throw fail("variance has negative values", tensor: "variance") }
            let n = max(mean.count, variance.count)
            let m = (0..<n).map { mean.count == 1 ? mean[0] : mean[$0] }
            let sd = (0..<n).map { max((variance.count == 1 ? variance[0] : variance[$0]).squareRoot(), 1e-7) }
            if c["invert"] as? Bool ?? false {
                // x·sd + mean
                return .broadcastAffine(scale: sd, shift: m)
            }
            return .broadcastAffine(scale: sd.map { 1 / $0 }, shift: zip(m, sd).map { -$0 / $1 })
        }
        func elementwiseActivation() throws(KerasImportError) -> Activation {
            let (a, softmax) = try activation()
            if softmax { throw fail("activation 'softmax' on \(layer.className) is not supported (Dense and Activation take it)") }
            return a
        }

        switch className ?? layer.className {
        case "InputLayer":
            let raw = c["batch_shape"] ?? c["batch_input_shape"]
            guard let dims = raw as? [Any] else { throw fail("input layer has no batch_shape") }
            let shape: [Int?] = [nil] + dims.dropFirst().map { $0 as? Int }
            guard shape.count == 4 || shape.count == 2 else { throw fail("input rank \(shape.count) is not supported (NHWC images or [N, features])") }
            return .input(shape: shape)
        case "ZeroPadding2D":
            try channelsLast()
            if let n = c["padding"] as? Int { return try zeroPad(n, n, n, n) }
            if let l = c["padding"] as? [Any], l.count == 2 {
                if let h = l[0] as? Int, let w = l[1] as? Int { return try zeroPad(h, h, w, w) }
                if let h = l[0] as? [Any], let w = l[1] as? [Any], h.count == 2, w.count == 2,
                   let t = h[0] as? Int, let b = h[1] as? Int, let le = w[0] as? Int, let r = w[1] as? Int {
                    return try zeroPad(t, b, le, r)
                }
            }
            throw fail("padding \(String(describing: c["padding"])) is not understood")
        case "Conv2D":
            try channelsLast()
            let groups = c["groups"] as? Int ?? 1
            let kernel = try require("kernel")
            guard kernel.shape.count == 4 else { throw fail("kernel has shape \(kernel.shape), expected [kH, kW, Cin, Cout]", tensor: "kernel") }
            let (kh, kw) = try pair("kernel_size", default: (kernel.shape[0], kernel.shape[1]))
            guard kh == kernel.shape[0], kw == kernel.shape[1] else {
                throw fail("kernel has shape \(kernel.shape) but kernel_size is (\(kh), \(kw))", tensor: "kernel")
            }
            guard (1...65536).contains(kh), (1...65536).contains(kw), kernel.shape[2] >= 1, kernel.shape[3] >= 1 else {
                throw fail("kernel has shape \(kernel.shape): a window outside 1...65536 or no channels", tensor: "kernel")
            }
            if let filters = c["filters"] as? Int, filters != kernel.shape[3] {
                throw fail("kernel has shape \(kernel.shape) but filters is \(filters)", tensor: "kernel")
            }
            guard groups >= 1, kernel.shape[3] % groups == 0 else {
                throw fail("groups=\(groups) does not divide the \(kernel.shape[3]) filters", tensor: "kernel")
            }
            let useBias = c["use_bias"] as? Bool ?? true
            let bias = useBias ? try require("bias") : nil
            if let bias, bias.shape != [kernel.shape[3]] {
                throw fail("bias has shape \(bias.shape), expected [\(kernel.shape[3])]", tensor: "bias")
            }
            let (sh, sw) = try window("strides", default: (1, 1))
            let (dh, dw) = try window("dilation_rate", default: (1, 1))
            guard (sh == 1 && sw == 1) || (dh == 1 && dw == 1) else { throw fail("strides and dilation > 1 together are not supported") }
            return .conv2d(ConvSpec(kernel: kernel, bias: bias, strideH: sh, strideW: sw, dilationH: dh, dilationW: dw,
                                    padding: try padding(), activation: try elementwiseActivation(), groups: groups))
        case "DepthwiseConv2D":
            // Kernel [kH, kW, Cin, multiplier]: output channel c·multiplier + m reads input channel c, which is the
            // grouped HWIO layout [kH, kW, 1, Cin·multiplier] with Cin groups, element for element.
            try channelsLast()
            guard let kernel = v["kernel"] ?? v["depthwise_kernel"] else { throw fail("weight 'depthwise_kernel' is missing from the file", tensor: "depthwise_kernel") }
            guard kernel.shape.count == 4, kernel.shape.allSatisfy({ $0 >= 1 }) else {
                throw fail("depthwise kernel has shape \(kernel.shape), expected [kH, kW, Cin, multiplier]", tensor: "depthwise_kernel")
            }
            let (kh, kw) = try pair("kernel_size", default: (kernel.shape[0], kernel.shape[1]))
            guard kh == kernel.shape[0], kw == kernel.shape[1], (1...65536).contains(kh), (1...65536).contains(kw) else {
                throw fail("depthwise kernel has shape \(kernel.shape) but kernel_size is (\(kh), \(kw))", tensor: "depthwise_kernel")
            }
            let inC = kernel.shape[2], multiplier = kernel.shape[3]
            if let m = c["depth_multiplier"] as? Int, m != multiplier {
                throw fail("depthwise kernel has shape \(kernel.shape) but depth_multiplier is \(m)", tensor: "depthwise_kernel")
            }
            let useBias = c["use_bias"] as? Bool ?? true
            let bias = useBias ? try require("bias") : nil
            if let bias, bias.shape != [inC * multiplier] {
                throw fail("bias has shape \(bias.shape), expected [\(inC * multiplier)]", tensor: "bias")
            }
            let (sh, sw) = try window("strides", default: (1, 1))
            let (dh, dw) = try window("dilation_rate", default: (1, 1))
            guard (sh == 1 && sw == 1) || (dh == 1 && dw == 1) else { throw fail("strides and dilation > 1 together are not supported") }
            let grouped = WeightTensor(shape: [kh, kw, 1, inC * multiplier], values: kernel.values)
            return .conv2d(ConvSpec(kernel: grouped, bias: bias, strideH: sh, strideW: sw, dilationH: dh, dilationW: dw,
                                    padding: try padding(), activation: try elementwiseActivation(), groups: inC))
        case "Concatenate":
            let axis = c["axis"] as? Int ?? -1
            guard axis == -1 || axis == 3 else { throw fail("concatenation on axis \(axis) is not supported (the channel axis, -1, only)") }
            guard layer.inbound.count >= 2 else { throw fail("Concatenate of \(layer.inbound.count) input is not supported") }
            return .concat
        case "BatchNormalization":
            // The last axis: -1, 3 on images, 1 on [N, C] (tf.keras writes [1] for a BN after a global pool), which
            // `KerasImporter.build` checks against the input's rank.
            if let axis = c["axis"] as? Int, ![-1, 1, 3].contains(axis) { throw fail("axis \(axis) is not the channel axis") }
            if let axes = c["axis"] as? [Any], axes.count != 1 || !((axes[0] as? Int).map { [-1, 1, 3].contains($0) } ?? false) {
                throw fail("axis \(axes) is not the channel axis")
            }
            let epsilon = (c["epsilon"] as? Double) ?? (c["epsilon"] as? Int).map(Double.init) ?? 1e-3
            let scale = c["scale"] as? Bool ?? true
            let center = c["center"] as? Bool ?? true
            let mean = try require("moving_mean"), variance = try require("moving_variance")
            let gamma = scale ? try require("gamma") : nil
            let beta = center ? try require("beta") : nil
            let channels = mean.values.count
            for (role, t) in [("moving_variance", variance), ("gamma", gamma), ("beta", beta)] {
                if let t, t.values.count != channels {
                    throw fail("\(role) has \(t.values.count) values but moving_mean has \(channels)", tensor: role)
                }
            }
            if variance.values.contains(where: { $0 < 0 }) { throw fail("moving_variance has negative values", tensor: "moving_variance") }
            return .batchNorm(BatchNormSpec(epsilon: epsilon, gamma: gamma?.values, beta: beta?.values, mean: mean.values, variance: variance.values))
        case "Activation":
            let (a, softmax) = try activation()
            return softmax ? .softmax : .activation(a)
        case "ReLU":
            // Keras: x ≥ max_value → max_value; threshold ≤ x < max_value → x; x < threshold → negative_slope·(x − threshold).
            let maxValue = number("max_value")
            let slope = number("negative_slope") ?? 0
            let threshold = number("threshold") ?? 0
            if let maxValue, maxValue < threshold { throw fail("max_value \(maxValue) is below threshold \(threshold)") }
            let top = Float(maxValue ?? .infinity)
            if slope == 0, threshold == 0 { return .activation(Activation(.linear, minimum: 0, maximum: top)) }
            return .activation(Activation(.leakyReLU, alpha: Float(slope), beta: Float(threshold), maximum: top))
        case "LeakyReLU":
            let slope = number("negative_slope") ?? number("alpha") ?? 0.3
            return .activation(Activation(.leakyReLU, alpha: Float(slope), beta: 0))
        case "ThresholdedReLU":
            return .activation(Activation(.leakyReLU, alpha: 0, beta: Float(number("theta") ?? 1)))
        case "ELU":
            return .activation(Activation(.elu, alpha: Float(number("alpha") ?? 1), beta: 1))
        case "Softmax":
            if let axis = c["axis"] as? Int, axis != -1 { throw fail("softmax on axis \(axis) is not supported (the last axis only)") }
            return .softmax
        case "GlobalMaxPooling2D":
            try channelsLast()
            if c["keepdims"] as? Bool ?? false { throw fail("keepdims=True is not supported") }
            return .globalMaxPool
        case "Rescaling":
            // y = x·scale + offset, each a number or one per channel.
            let scale = try numbers("scale", default: 1), offset = try numbers("offset", default: 0)
            return .broadcastAffine(scale: scale, shift: offset)
        case "Normalization":
            return try normalization()
        case _ where geometryLayers.contains(layer.className):
            return .dropout
        case "TFOpLambda", "SlicingOpLambda":
            return try KerasOpLayers.op(for: layer) { fail($0) }
        case _ where KerasOpLayers.isKeras3Op(layer):
            return try KerasOpLayers.op(for: layer) { fail($0) }
        case "Add":
            guard layer.inbound.count == 2 else { throw fail("Add of \(layer.inbound.count) inputs is not supported (2 only)") }
            return .add(activation: .none)
        case "MaxPooling2D", "AveragePooling2D":
            try channelsLast()
            let (ph, pw) = try window("pool_size", default: (2, 2))
            let (sh, sw) = try window("strides", default: (ph, pw))
            let spec = Pool2DAttributes(kernelH: ph, kernelW: pw, strideH: sh, strideW: sw, padding: try padding())
            return layer.className == "MaxPooling2D" ? .maxPool(spec) : .avgPool(spec)
        case "GlobalAveragePooling2D":
            try channelsLast()
            if c["keepdims"] as? Bool ?? false { throw fail("keepdims=True is not supported") }
            return .globalAvgPool
        case "Flatten":
            try channelsLast()
            return .flatten
        case "Dense":
            let kernel = try require("kernel")
            guard kernel.shape.count == 2 else { throw fail("kernel has shape \(kernel.shape), expected [in, out]", tensor: "kernel") }
            if let units = c["units"] as? Int, units != kernel.shape[1] {
                throw fail("kernel has shape \(kernel.shape) but units is \(units)", tensor: "kernel")
            }
            let useBias = c["use_bias"] as? Bool ?? true
            let bias = useBias ? try require("bias") : nil
            if let bias, bias.shape != [kernel.shape[1]] {
                throw fail("bias has shape \(bias.shape), expected [\(kernel.shape[1])]", tensor: "bias")
            }
            let (a, softmax) = try activation()
            return .dense(DenseSpec(kernel: kernel, bias: bias, activation: a, softmax: softmax))
        case _ where identityLayers.contains(layer.className):
            return .dropout
        default:
            throw fail("layer class '\(layer.className)' is not supported (supported: \(supported.joined(separator: ", ")))")
        }
    }
}

/// Keras' names for the elementwise activations Kiln executes (`activation="…"` and `Activation` layers);
/// softmax is handled apart (it is an op of its own).
/// hard_sigmoid is apart: its definition depends on the Keras version.
let kerasActivations: [String: Activation] = [
    "linear": .none,
    "None": .none,
    "relu": .relu,
    "relu6": Activation(.linear, minimum: 0, maximum: 6),
    "sigmoid": Activation(.sigmoid),
    "tanh": Activation(.tanh),
    "elu": Activation(.elu, alpha: 1, beta: 1),
    "selu": Activation(.elu, alpha: 1.6732632423543772, beta: 1.0507009873554805),
    "gelu": Activation(.gelu),
    "swish": Activation(.swish),
    "silu": Activation(.swish),
    "softplus": Activation(.softplus),
    "leaky_relu": Activation(.leakyReLU, alpha: 0.2, beta: 0),
]
