# Kiln: the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
KILN_CACHE ?= $(HOME)/.cache/kiln
export KILN_CACHE

.PHONY: setup build release demo fixtures fixtures-images fixtures-malformed test unit-test sanitize fuzz clean

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

# Damaged copies of the committed samples (HDF5, .keras, PNG/JPEG) and the one-line error each must give
# (scripts/make_malformed.py through the pinned Python environment), cached in $(KILN_CACHE)/malformed.
fixtures-malformed: fixtures
	@scripts/fixtures-malformed > /dev/null

# Unit tests on committed samples, plus the end-to-end parity tests on the full ResNet-50 fixtures
# through the release binaries. Nothing is skipped: missing fixtures fail the end-to-end suite.
# The hardening tests run the malformed corpus and the damaged bundles through the binaries, and kill
# `kiln convert` / `kiln fuse` mid-write.
test: release fixtures fixtures-images fixtures-malformed
	KILN_FIXTURES="$(KILN_CACHE)/fixtures" KILN_IMAGE_FIXTURES="$(KILN_CACHE)/fixtures-images" \
	KILN_MALFORMED="$(KILN_CACHE)/malformed" \
	KILN_BIN="$$(swift build -c release --show-bin-path)" KILN_REQUIRE_FIXTURES=1 \
		swift test

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
