# Kiln: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
KILN_CACHE ?= $(HOME)/.cache/kiln
export KILN_CACHE

.PHONY: setup build release demo fixtures fixtures-images fixtures-onnx fixtures-torchvision fixtures-compact fixtures-train fixtures-malformed fixtures-tfresize fixtures-heads fixtures-tutorial fixtures-backbones test unit-test bench bench-backbones sanitize fuzz clean serve-test bench-serve

setup:
	@scripts/setup

build: setup
	swift build

# Also names the C library's files as `cc ... -lkiln` finds them: libkiln.so and libkiln.a (links to SwiftPM's
# libkiln-shared.so and libkiln-static.a; SwiftPM cannot name a library "kiln" beside the `kiln` executable).
release: setup
	swift build -c release
	@cd "$$(swift build -c release --show-bin-path)" && ln -sf libkiln-shared.so libkiln.so && ln -sf libkiln-static.a libkiln.a

# Converts the committed sample model and classifies the sample inputs with the lean runtime.
demo: release
	@scripts/demo

# Real Keras files (full ResNet-50 in every layout) written by the pinned Python environment, cached.
fixtures: setup
	@scripts/fixtures

# Real photos re-encoded by PIL, with PIL / Keras load_img / torchvision pixel references and Keras predictions.
fixtures-images: fixtures
	@scripts/fixtures-images

# tf2onnx conversions of the Keras fixtures, model-zoo style NCHW ResNet-50s (opsets 7-26, v1 and v1.5), ONNX's own
# light models, with onnxruntime's outputs.
fixtures-onnx: fixtures
	@scripts/fixtures-onnx

# torchvision resnet18/50 with replaced heads as torch.onnx.export writes them (dynamo by default, one file, opset 18,
# unoptimised; TorchScript), torch's outputs as the truth; tiny onnx.helper models (Softmax per opset, reductions,
# declared output shapes, models kiln must refuse) with onnxruntime's outputs (scripts/pyenv torch, then scripts/pyenv).
fixtures-torchvision: setup
	@scripts/fixtures-torchvision > /dev/null

fixtures-backbones: setup
	@scripts/fixtures-backbones

# A model Keras trains on scikit-learn's digits, with its test set: reduced-precision bundles are judged on it.
fixtures-compact: fixtures
	@scripts/fixtures-compact

# Features of scikit-learn's digits with Keras' and scikit-learn's validation accuracies for the same head.
fixtures-train: setup
	@scripts/fixtures-train

# Photos with TensorFlow's decode and the float pixels keras.utils.image_dataset_from_directory makes of them at every
# tf-* resize mode (scripts/make_tf_resize_fixtures.py), cached in $(KILN_CACHE)/fixtures-tfresize.
fixtures-tfresize: setup
	@scripts/fixtures-tfresize > /dev/null

# A small seeded Keras backbone and the tutorials' classifier heads (Dense(1) logit, Dense(1, sigmoid), Dense(N),
# Dense(N, softmax), Dense(N, sigmoid)), alone and as whole models, with Keras' outputs on a few committed photos
# (scripts/make_head_fixtures.py), cached in $(KILN_CACHE)/fixtures-heads.
fixtures-heads: setup
	@scripts/fixtures-heads > /dev/null

# Damaged copies of the committed samples (HDF5, .keras, PNG/JPEG) and the one-line error each must give
# (scripts/make_malformed.py through the pinned Python environment), cached in $(KILN_CACHE)/malformed.
fixtures-malformed: fixtures
	@scripts/fixtures-malformed > /dev/null

# Whole Keras classifiers as the transfer-learning tutorials build them (augmentation, preprocess_input on the
# symbolic tensor, Rescaling, Normalization, logit/sigmoid/softmax heads), BatchNormalization anywhere and the head
# activations, Keras 3 .keras/.h5 and tf.keras .h5, with Keras' outputs on raw pixels (scripts/fixtures-tutorial).
fixtures-tutorial: setup
	@scripts/fixtures-tutorial > /dev/null

# Unit tests on committed samples, plus the end-to-end parity tests on the full ResNet-50 fixtures
# through the release binaries. Nothing is skipped: missing fixtures fail the end-to-end suite.
# The hardening tests run the malformed corpus and the damaged bundles through the binaries, and kill
# `kiln convert` / `kiln fuse` mid-write. Then the kernel tests again on the AVX2 + FMA kernels alone (what an
# AVX2-only CPU such as Zen 3 runs; on an AVX-512 machine the first pass reaches them only for narrow panels).
test: release fixtures fixtures-images fixtures-onnx fixtures-torchvision fixtures-compact fixtures-train fixtures-malformed \
		fixtures-tfresize fixtures-heads fixtures-tutorial fixtures-backbones
	KILN_FIXTURES="$(KILN_CACHE)/fixtures" KILN_IMAGE_FIXTURES="$(KILN_CACHE)/fixtures-images" \
	KILN_TF_RESIZE_FIXTURES="$(KILN_CACHE)/fixtures-tfresize" KILN_HEAD_FIXTURES="$(KILN_CACHE)/fixtures-heads" \
	KILN_FIXTURES_ONNX="$(KILN_CACHE)/fixtures-onnx" KILN_FIXTURES_TORCH="$(KILN_CACHE)/fixtures-torchvision" \
	KILN_FIXTURES_COMPACT="$(KILN_CACHE)/fixtures-compact" \
	KILN_TRAIN_FIXTURES="$(KILN_CACHE)/fixtures-train" KILN_PYTHON="$$(scripts/pyenv)" \
	KILN_MALFORMED="$(KILN_CACHE)/malformed" KILN_FIXTURES_TUTORIAL="$(KILN_CACHE)/fixtures-tutorial" \
	KILN_FIXTURES_BACKBONES="$(KILN_CACHE)/fixtures-backbones" \
	KILN_BIN="$$(swift build -c release --show-bin-path)" KILN_REQUIRE_FIXTURES=1 \
		swift test
	KILN_CPU=avx2 swift test --skip-build --filter 'KilnKernelsTests|KilnRuntimeTests'
	$(MAKE) serve-test
	$(MAKE) embed-test

# Kiln against OpenVINO, ONNX Runtime and TFLite on the fixture ResNet-50, side by side (scripts/bench):
# prints the table with kiln/peer ratios and writes benchmarks/resnet50.csv. BENCH_ARGS go to the driver.
bench: setup fixtures
	@scripts/bench $(BENCH_ARGS)

# Kiln against the same peers on a backbone of issue 17 (default MobileNetV2 160x160; scripts/bench-backbone).
bench-backbones: setup
	@scripts/bench-backbone $(BENCH_ARGS)

unit-test: setup
	swift test --skip EndToEnd

# The test suite under address sanitizer (Swift and C) with undefined-behaviour sanitizer on the C code, in
# .build-asan, and the concurrent-run tests under thread sanitizer, in .build-tsan (scripts/sanitize).
sanitize: setup
	@scripts/sanitize

# Every libFuzzer target for 1,000,000 runs from its committed corpus, in .build-fuzz (scripts/fuzz, fuzz/README.md).
fuzz: setup
	@scripts/fuzz

clean:
	rm -rf .build

# kiln-serve against the real tritonclient (scripts/pyenv serve), 127.0.0.1 only, one server per module.
serve-test: release fixtures
	KILN_BIN="$$(swift build -c release --show-bin-path)" KILN_FIXTURES="$(KILN_CACHE)/fixtures" \
	"$$(scripts/pyenv serve)" -m pytest -q -p no:cacheprovider Tests/serve

# The C API, the Python package and the Ray example (python/tests, scripts/pyenv embed): C programs built with
# `cc -I include ... -lkiln` against kiln-run's answers, open/run/close under AddressSanitizer, libkiln.a linked
# statically, `pip install ./python` into a fresh venv (8 threads), and a two-node Ray cluster on 127.0.0.1.
.PHONY: embed-test
embed-test: release
	KILN_BIN="$$(swift build -c release --show-bin-path)" \
		timeout 1800 "$$(scripts/pyenv embed)" -m pytest -q -p no:cacheprovider python/tests

# kiln-serve against Triton (pytriton: ONNX Runtime and OpenVINO) and KServe's ModelServer (ONNX Runtime) under the
# same tritonclient load on 127.0.0.1 (scripts/bench-serve): prints the table, writes benchmarks/serve.txt.
# BENCH_ARGS go to the driver (bench_serve.py drive).
bench-serve: setup fixtures fixtures-images
	@scripts/bench-serve $(BENCH_ARGS)
