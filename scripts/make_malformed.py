"""Writes the malformed-source corpus for the hardening tests (Tests/EndToEndTests/MalformedInputTests.swift).

Every case is a damaged copy of a committed sample (samples/mini, samples/images) and one manifest entry:
the command that reads it (`convert` for Keras files, `images` for image files given to kiln-run with an
image bundle), and the text its one-line error must contain. The bundles and .npy cases are made by the
Swift tests themselves (they need the bundle writer); this script covers what needs h5py and zip.

    python make_malformed.py --samples samples --out DIR

Run by scripts/fixtures-malformed with the pinned environment (h5py, numpy).
"""
import argparse
import json
import os
import shutil
import struct
import zipfile
import zlib

import h5py
import numpy as np

CASES = []


def case(name, command, expected, note):
    CASES.append({"file": name, "command": command, "expected": expected, "note": note})


def h5_variant(src, out, name, mutate):
    path = os.path.join(out, name)
    shutil.copyfile(src, path)
    with h5py.File(path, "r+") as f:
        mutate(f)
    return path


def replace(f, path, data):
    attrs = dict(f[path].attrs)
    del f[path]
    f.create_dataset(path, data=data)
    for k, v in attrs.items():
        f[path].attrs[k] = v


def keras_hdf5_cases(samples, out):
    k3 = os.path.join(samples, "mini", "mini_k3.h5")
    k2 = os.path.join(samples, "mini", "mini_k2.h5")
    conv = "model_weights/conv1_conv/conv1_conv"
    bn = "model_weights/conv1_bn/conv1_bn"
    kernel = h5py.File(k3, "r")[f"{conv}/kernel"][()]

    h5_variant(k3, out, "missing_kernel.h5", lambda f: f.__delitem__(f"{conv}/kernel"))
    case("missing_kernel.h5", "convert", "no such dataset", "a dataset listed in weight_names is gone")

    def drop_weight_name(f):
        g = f["model_weights/conv1_conv"]
        g.attrs["weight_names"] = [n for n in g.attrs["weight_names"] if b"kernel" not in (n if isinstance(n, bytes) else n.encode())]
    h5_variant(k3, out, "unlisted_kernel.h5", drop_weight_name)
    case("unlisted_kernel.h5", "convert", "weight 'kernel' is missing from the file", "weight_names does not list the kernel")

    h5_variant(k3, out, "missing_layer_group.h5", lambda f: f.__delitem__("model_weights/conv1_bn"))
    case("missing_layer_group.h5", "convert", "listed in layer_names but group '/model_weights/conv1_bn' is missing",
         "layer_names names a group that is gone")

    h5_variant(k3, out, "no_model_weights.h5", lambda f: f.__delitem__("model_weights"))
    case("no_model_weights.h5", "convert", "has a model_config but no 'model_weights' group", "saved without weights")

    h5_variant(k3, out, "kernel_filters.h5", lambda f: replace(f, f"{conv}/kernel", np.zeros((7, 7, 3, 5), np.float32)))
    case("kernel_filters.h5", "convert", "kernel has shape [7, 7, 3, 5] but filters is 4", "wrong output channels")

    h5_variant(k3, out, "kernel_size.h5", lambda f: replace(f, f"{conv}/kernel", np.zeros((5, 5, 3, 4), np.float32)))
    case("kernel_size.h5", "convert", "kernel has shape [5, 5, 3, 4] but kernel_size is (7, 7)", "wrong kernel size")

    h5_variant(k3, out, "kernel_rank.h5", lambda f: replace(f, f"{conv}/kernel", np.zeros((7, 7, 12), np.float32)))
    case("kernel_rank.h5", "convert", "kernel has shape [7, 7, 12], expected [kH, kW, Cin, Cout]", "wrong rank")

    h5_variant(k3, out, "kernel_scalar.h5", lambda f: replace(f, f"{conv}/kernel", np.float32(1)))
    case("kernel_scalar.h5", "convert", "kernel has shape [1], expected [kH, kW, Cin, Cout]", "a scalar where a kernel belongs")

    h5_variant(k3, out, "bias_shape.h5", lambda f: replace(f, f"{conv}/bias", np.zeros((5,), np.float32)))
    case("bias_shape.h5", "convert", "bias has shape [5], expected [4]", "bias length")

    h5_variant(k3, out, "kernel_int32.h5", lambda f: replace(f, f"{conv}/kernel", kernel.astype(np.int32)))
    case("kernel_int32.h5", "convert", "elements are int32, not float", "integer dtype")

    h5_variant(k3, out, "kernel_string.h5",
               lambda f: replace(f, f"{conv}/kernel", np.array([b"kernel"] * 4, dtype=h5py.string_dtype("ascii", 6))))
    case("kernel_string.h5", "convert", "elements are string, not float", "string dtype")

    def huge(f):
        del f[f"{conv}/kernel"]
        f.create_dataset(f"{conv}/kernel", shape=(7, 7, 3, 1 << 24), dtype=np.float32, chunks=(1, 1, 1, 1024))
    h5_variant(k3, out, "kernel_huge.h5", huge)
    case("kernel_huge.h5", "convert", "more than the limit 268435456", "a 2.5-billion-element kernel in a small file")

    h5_variant(k3, out, "bn_mean_length.h5", lambda f: replace(f, f"{bn}/moving_mean", np.zeros((5,), np.float32)))
    case("bn_mean_length.h5", "convert", "has 4 values but moving_mean has 5", "BatchNorm vectors disagree")

    h5_variant(k3, out, "bn_negative_variance.h5", lambda f: replace(f, f"{bn}/moving_variance", -np.ones((4,), np.float32)))
    case("bn_negative_variance.h5", "convert", "moving_variance has negative values", "impossible statistics")

    h5_variant(k3, out, "bn_nan.h5", lambda f: replace(f, f"{bn}/gamma", np.array([1, np.nan, 1, 1], np.float32)))
    case("bn_nan.h5", "convert", "holds NaN or infinite values", "NaN weight")

    def config(text):
        return lambda f: f.attrs.__setitem__("model_config", text)
    h5_variant(k3, out, "config_not_json.h5", config("{\"class_name\": \"Functional\", "))
    case("config_not_json.h5", "convert", "model config is not valid JSON", "truncated model_config")

    h5_variant(k3, out, "config_no_layers.h5", config(json.dumps({"class_name": "Functional", "config": {"name": "m"}})))
    case("config_no_layers.h5", "convert", "model config has no layer list", "config without layers")

    cfg = json.loads(h5py.File(k3, "r").attrs["model_config"])
    lstm = json.loads(json.dumps(cfg))
    for layer in lstm["config"]["layers"]:
        if layer["class_name"] == "MaxPooling2D":
            layer["class_name"] = "LSTM"
    h5_variant(k3, out, "config_lstm.h5", config(json.dumps(lstm)))
    case("config_lstm.h5", "convert", "layer class 'LSTM' is not supported", "an unsupported layer")

    dangling = json.loads(json.dumps(cfg))
    dangling["config"]["output_layers"] = [["no_such_layer", 0, 0]]
    h5_variant(k3, out, "config_dangling_output.h5", config(json.dumps(dangling)))
    case("config_dangling_output.h5", "convert", "output layer 'no_such_layer' is not a layer of the model", "output names nothing")

    def layer_config(name, **changes):
        edited = json.loads(json.dumps(cfg))
        for layer in edited["config"]["layers"]:
            if layer["config"].get("name") == name:
                layer["config"].update(changes)
        return edited

    def zero_kernel(f):
        replace(f, f"{conv}/kernel", np.zeros((0, 7, 3, 4), np.float32))
        f.attrs["model_config"] = json.dumps(layer_config("conv1_conv", kernel_size=[0, 7]))
    h5_variant(k3, out, "kernel_zero.h5", zero_kernel)
    case("kernel_zero.h5", "convert", "kernel has shape [0, 7, 3, 4]", "an empty kernel that agrees with kernel_size [0, 7]")

    h5_variant(k3, out, "config_pool_stride_zero.h5", config(json.dumps(layer_config("pool1_pool", strides=[0, 0]))))
    case("config_pool_stride_zero.h5", "convert", "pool1_pool", "MaxPooling2D with strides (0, 0)")

    fixed = layer_config("pool1_pool", strides=[0, 0])
    for layer in fixed["config"]["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, 64, 64, 3]
    h5_variant(k3, out, "config_pool_stride_zero_sized.h5", config(json.dumps(fixed)))
    case("config_pool_stride_zero_sized.h5", "convert", "pool1_pool", "strides (0, 0) with a known input size (shape inference divides)")

    h5_variant(k3, out, "config_dilation_huge.h5", config(json.dumps(layer_config("conv2_block1_2_conv", dilation_rate=[1 << 62, 1]))))
    case("config_dilation_huge.h5", "convert", "conv2_block1_2_conv", "dilation 2^62 (the dilated kernel size overflows)")

    h5_variant(k3, out, "config_pad_negative.h5", config(json.dumps(layer_config("conv1_pad", padding=[[-3, -3], [-3, -3]]))))
    case("config_pad_negative.h5", "convert", "conv1_pad", "ZeroPadding2D of -3")

    # Keras 2 names (`:0`), same damage.
    h5_variant(k2, out, "k2_missing_kernel.h5", lambda f: f.__delitem__(f"{conv}/kernel:0"))
    case("k2_missing_kernel.h5", "convert", "no such dataset", "Keras 2 layout, dataset gone")

    # Truncated and foreign files.
    data = open(k3, "rb").read()
    for pct in (1, 10, 50, 90, 99):
        name = f"truncated_{pct}.h5"
        open(os.path.join(out, name), "wb").write(data[: len(data) * pct // 100])
        case(name, "convert", name, f"the first {pct}% of an HDF5 file")
    open(os.path.join(out, "random.h5"), "wb").write(np.random.default_rng(7).bytes(4096))
    case("random.h5", "convert", "not a Keras model: neither HDF5 nor a .keras zip archive", "random bytes")
    open(os.path.join(out, "empty.h5"), "wb").close()
    case("empty.h5", "convert", "empty.h5", "an empty file")


def keras_zip_cases(samples, out):
    src = os.path.join(samples, "mini", "mini.keras")
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}

    def write(name, items):
        with zipfile.ZipFile(os.path.join(out, name), "w") as z:
            for n, b in items.items():
                z.writestr(n, b)

    write("zip_no_config.keras", {n: b for n, b in entries.items() if n != "config.json"})
    case("zip_no_config.keras", "convert", "no 'config.json' in the zip", ".keras without its config")
    write("zip_no_weights.keras", {n: b for n, b in entries.items() if n != "model.weights.h5"})
    case("zip_no_weights.keras", "convert", "no 'model.weights.h5' in the zip", ".keras without its weights")
    write("zip_bad_config.keras", {**entries, "config.json": b"[1, 2"})
    case("zip_bad_config.keras", "convert", "model config is not valid JSON", "config.json is not JSON")
    data = open(src, "rb").read()
    open(os.path.join(out, "zip_truncated.keras"), "wb").write(data[: len(data) // 2])
    case("zip_truncated.keras", "convert", "zip_truncated.keras", "half a zip")


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png(width, height, rows, color_type=2, depth=8):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def image_cases(samples, out):
    row = b"\x00" + bytes(range(24))              # filter byte + 8 RGB pixels
    open(os.path.join(out, "png_ok.png"), "wb").write(png(8, 8, row * 8))
    case("png_ok.png", "images-ok", "png_ok.png", "control: a valid 8x8 PNG")
    open(os.path.join(out, "png_huge_header.png"), "wb").write(png(1 << 20, 1 << 20, row * 8))
    case("png_huge_header.png", "images", "over the limit", "IHDR claims 2^40 pixels, the data holds 64")
    open(os.path.join(out, "png_short_data.png"), "wb").write(png(64, 64, row * 8))
    case("png_short_data.png", "images", "png_short_data.png", "IHDR says 64x64, IDAT holds 8 short rows")
    open(os.path.join(out, "png_zero_width.png"), "wb").write(png(0, 8, row * 8))
    case("png_zero_width.png", "images", "png_zero_width.png", "IHDR width 0")
    open(os.path.join(out, "png_bad_depth.png"), "wb").write(png(8, 8, row * 8, depth=7))
    case("png_bad_depth.png", "images", "png_bad_depth.png", "bit depth 7")
    good = png(8, 8, row * 8)
    bad_crc = bytearray(good)
    bad_crc[29] ^= 0xFF                          # last byte of the IHDR CRC
    open(os.path.join(out, "png_bad_crc.png"), "wb").write(bytes(bad_crc))
    case("png_bad_crc.png", "images", "png_bad_crc.png", "IHDR CRC damaged")

    jpeg = bytearray(open(os.path.join(samples, "images", "photos", "rocket_q90.jpg"), "rb").read())
    sof = next(i for i in range(2, len(jpeg) - 9) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC1, 0xC2))
    huge = bytearray(jpeg)
    huge[sof + 5:sof + 9] = struct.pack(">HH", 65500, 65500)
    open(os.path.join(out, "jpeg_huge_header.jpg"), "wb").write(bytes(huge))
    case("jpeg_huge_header.jpg", "images", "over the limit", "SOF claims 65500x65500")
    zero = bytearray(jpeg)
    zero[sof + 5:sof + 9] = struct.pack(">HH", 0, 0)
    open(os.path.join(out, "jpeg_zero_size.jpg"), "wb").write(bytes(zero))
    case("jpeg_zero_size.jpg", "images", "jpeg_zero_size.jpg", "SOF claims 0x0")
    open(os.path.join(out, "jpeg_truncated.jpg"), "wb").write(bytes(jpeg[: len(jpeg) // 3]))
    case("jpeg_truncated.jpg", "images", "jpeg_truncated.jpg", "a third of a JPEG")
    open(os.path.join(out, "jpeg_header_only.jpg"), "wb").write(bytes(jpeg[:sof + 20]))
    case("jpeg_header_only.jpg", "images", "jpeg_header_only.jpg", "headers, no scan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    keras_hdf5_cases(args.samples, args.out)
    keras_zip_cases(args.samples, args.out)
    image_cases(args.samples, args.out)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(CASES, f, indent=1)
    print(f"{len(CASES)} malformed cases in {args.out}")


if __name__ == "__main__":
    main()
