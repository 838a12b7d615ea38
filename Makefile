# Kiln: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
KILN_CACHE ?= $(HOME)/.cache/kiln
export KILN_CACHE

.PHONY: setup build release demo fixtures fixtures-images fixtures-onnx fixtures-compact fixtures-train fixtures-malformed test unit-test bench sanitize fuzz clean serve-test bench-serve

setup:
	@scripts/setup

build: setup
	swift build

release: setup
	swift build -c release

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

# A model Keras trains on scikit-learn's digits, with its test set: reduced-precision bundles are judged on it.
fixtures-compact: fixtures
	@scripts/fixtures-compact

# Features of scikit-learn's digits with Keras' and scikit-learn's validation accuracies for the same head.
fixtures-train: setup
	@scripts/fixtures-train

# Damaged copies of the committed samples (HDF5, .keras, PNG/JPEG) and the one-line error each must give
# (scripts/make_malformed.py through the pinned Python environment), cached in $(KILN_CACHE)/malformed.
fixtures-malformed: fixtures
	@scripts/fixtures-malformed > /dev/null

# Unit tests on committed samples, plus the end-to-end parity tests on the full ResNet-50 fixtures
# through the release binaries. Nothing is skipped: missing fixtures fail the end-to-end suite.
# The hardening tests run the malformed corpus and the damaged bundles through the binaries, and kill
# `kiln convert` / `kiln fuse` mid-write. Then the kernel tests again on the AVX2 + FMA kernels alone (what an
# AVX2-only CPU such as Zen 3 runs; on an AVX-512 machine the first pass reaches them only for narrow panels).
test: release fixtures fixtures-images fixtures-onnx fixtures-compact fixtures-train fixtures-malformed
	KILN_FIXTURES="$(KILN_CACHE)/fixtures" KILN_IMAGE_FIXTURES="$(KILN_CACHE)/fixtures-images" \
	KILN_FIXTURES_ONNX="$(KILN_CACHE)/fixtures-onnx" KILN_FIXTURES_COMPACT="$(KILN_CACHE)/fixtures-compact" \
	KILN_TRAIN_FIXTURES="$(KILN_CACHE)/fixtures-train" KILN_PYTHON="$$(scripts/pyenv)" \
	KILN_MALFORMED="$(KILN_CACHE)/malformed" \
	KILN_BIN="$$(swift build -c release --show-bin-path)" KILN_REQUIRE_FIXTURES=1 \
		swift test
	KILN_CPU=avx2 swift test --skip-build --filter 'KilnKernelsTests|KilnRuntimeTests'
	$(MAKE) serve-test

# Kiln against OpenVINO, ONNX Runtime and TFLite on the fixture ResNet-50, side by side (scripts/bench):
# prints the table with kiln/peer ratios and writes benchmarks/resnet50.csv. BENCH_ARGS go to the driver.
bench: setup fixtures
	@scripts/bench $(BENCH_ARGS)

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

# kiln-serve against Triton (pytriton: ONNX Runtime and OpenVINO) and KServe's ModelServer (ONNX Runtime) under the
# same tritonclient load on 127.0.0.1 (scripts/bench-serve): prints the table, writes benchmarks/serve.txt.
# BENCH_ARGS go to the driver (bench_serve.py drive).
bench-serve: setup fixtures fixtures-images
	@scripts/bench-serve $(BENCH_ARGS)
