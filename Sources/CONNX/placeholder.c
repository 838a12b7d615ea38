// placeholder until the generated ONNX code lands
