// Shared between the kernel files of CKilnKernels; not part of its interface.
#ifndef KILN_INTERNAL_H
#define KILN_INTERNAL_H

#include "CKilnKernels.h"

// Rows of a packed B panel per pass (a 256 x 16 slice is 16 KiB: it stays in L1 while A rows stream).
#define KILN_GEMM_KC 256
// Largest block of A rows per task (a multiple of the 6-row tile).
#define KILN_GEMM_MC 120

/// What to do with one register tile of C.
typedef struct kiln_tile_epilogue {
    const float *bias;      // 16 values at the tile's first column, or NULL
    const float *residual;  // at the tile's first element, or NULL
    size_t ldr;             // row stride of the residual
    int first;              // start from bias + residual (else from C)
    int last;               // the last pass over k: apply relu and the upper bound
    int relu;
    int has_max;            // then min(x, max) after relu (ReLU6 and other clamps)
    float max;
} kiln_tile_epilogue;

/// C [m, n] (row stride ldc) = relu?(A · B + bias + residual), B [k, n] packed by kiln_gemm_pack_b.
typedef struct kiln_gemm {
    size_t m, n, k;
    const float *b;
    float *c;
    size_t ldc;
    const float *bias;
    const float *residual;
    size_t ldr;
    int relu;
    int has_max;  // min(x, max) after relu
    float max;
} kiln_gemm;

/// The packed B the GEMM reads after the slice of panels [p, p + span) at rows [k0, k0 + kc) of a pass over the
/// panels [p0, end): the next span's slice while a whole span follows, else the first span's next slice, else
/// NULL. The drivers prefetch it while the current slice is used (at batch 1 the weights stream from memory, and
/// each slice is read by only a few row tiles).
static inline const char *kiln_gemm_next_slice(const kiln_gemm *g, size_t p, size_t span, size_t p0, size_t end,
                                               size_t k0, size_t kc) {
    if (p + 2 * span <= end) return (const char *)(g->b + (p + span) * KILN_GEMM_NR * g->k + k0 * KILN_GEMM_NR);
    if (k0 + kc < g->k && p0 + span <= end)
        return (const char *)(g->b + p0 * KILN_GEMM_NR * g->k + (k0 + kc) * KILN_GEMM_NR);
    return 0;
}

/// Rows [row0, row0 + rows) of C for the B panels [p0, p1); `a` points at A's row row0 (row stride lda).
void kiln_gemm_rows(const kiln_gemm *g, const float *a, size_t lda, size_t row0, size_t rows, size_t p0, size_t p1);

/// The AVX-512 version of kiln_gemm_rows for the full-width panels of [p0, p1) (call only where
/// kiln_cpu_has_avx512()); returns the first panel left undone (a narrow last panel), p1 when none.
size_t kiln_gemm_rows_avx512(const kiln_gemm *g, const float *a, size_t lda, size_t row0, size_t rows, size_t p0,
                             size_t p1);

// SwiftPM builds C at -O2, which leaves the register-tile loops rolled (their accumulators then live in memory,
// at half the speed or worse) unless told to unroll them.
#define KILN_UNROLL _Pragma("clang loop unroll(full)")

static inline size_t kiln_min(size_t a, size_t b) { return a < b ? a : b; }
static inline size_t kiln_div_up(size_t a, size_t b) { return (a + b - 1) / b; }
static inline size_t kiln_round_up(size_t a, size_t b) { return kiln_div_up(a, b) * b; }

#endif
