// The AVX2 + FMA GEMM: a 6x16 register-tile microkernel over B packed in 16-column panels, blocked for the
// caches (a 256 x 16 slice of a B panel stays in L1 while a block of A rows streams from L2), with the
// convolution's epilogue (bias, residual, relu) applied to the register tile before it is stored. B is packed
// once, at load: read in place, its rows are n floats apart, the hardware prefetcher does not follow them, and
// for n of 512 and more one slice's rows crowd into a few L1 sets; packed, a slice is 16 KiB in a row, which
// matters at batch 1, where these layers stream their weights from memory (`make bench` measures it).
#include "kiln_internal.h"

#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

// A 6 x 16 tile of C: `rows` (1...6) rows of A (row stride lda) times a kc x 16 slice of a packed B panel.
// first: start from bias (+ residual) instead of C; last: apply relu. Every C row is read (when !first) before
// it is written, and the residual row before the output row, so residual may be exactly C.
#define KILN_INLINE static inline __attribute__((always_inline))

KILN_INLINE void microkernel(const int rows, size_t kc, const float *restrict a, size_t lda, const float *restrict b,
                             float *c, size_t ldc, const kiln_tile_epilogue *e) {
    __m256 lo[6], hi[6];
    if (e->first) {
        const __m256 bias_lo = e->bias ? _mm256_loadu_ps(e->bias) : _mm256_setzero_ps();
        const __m256 bias_hi = e->bias ? _mm256_loadu_ps(e->bias + 8) : _mm256_setzero_ps();
        KILN_UNROLL
        for (int i = 0; i < rows; i++) {
            lo[i] = bias_lo;
            hi[i] = bias_hi;
        }
        if (e->residual) {
            KILN_UNROLL
            for (int i = 0; i < rows; i++) {
                lo[i] = _mm256_add_ps(lo[i], _mm256_loadu_ps(e->residual + i * e->ldr));
                hi[i] = _mm256_add_ps(hi[i], _mm256_loadu_ps(e->residual + i * e->ldr + 8));
            }
        }
    } else {
        KILN_UNROLL
        for (int i = 0; i < rows; i++) {
            lo[i] = _mm256_loadu_ps(c + i * ldc);
            hi[i] = _mm256_loadu_ps(c + i * ldc + 8);
        }
    }
    const float *ar[6];
    KILN_UNROLL
    for (int i = 0; i < 6; i++) ar[i] = a + (i < rows ? i : 0) * lda;
    for (size_t k = 0; k < kc; k++) {
        const __m256 b_lo = _mm256_load_ps(b);
        const __m256 b_hi = _mm256_load_ps(b + 8);
        b += KILN_GEMM_NR;
        KILN_UNROLL
        for (int i = 0; i < rows; i++) {
            const __m256 x = _mm256_broadcast_ss(ar[i] + k);
            lo[i] = _mm256_fmadd_ps(x, b_lo, lo[i]);
            hi[i] = _mm256_fmadd_ps(x, b_hi, hi[i]);
        }
    }
    if (e->last && e->relu) {
        const __m256 zero = _mm256_setzero_ps();
        KILN_UNROLL
        for (int i = 0; i < rows; i++) {
            lo[i] = _mm256_max_ps(lo[i], zero);
            hi[i] = _mm256_max_ps(hi[i], zero);
        }
    }
    if (e->last && e->has_max) {
        const __m256 top = _mm256_set1_ps(e->max);
        KILN_UNROLL
        for (int i = 0; i < rows; i++) {
            lo[i] = _mm256_min_ps(lo[i], top);
            hi[i] = _mm256_min_ps(hi[i], top);
        }
    }
    KILN_UNROLL
    for (int i = 0; i < rows; i++) {
        _mm256_storeu_ps(c + i * ldc, lo[i]);
        _mm256_storeu_ps(c + i * ldc + 8, hi[i]);
    }
}

static void tile(int rows, size_t kc, const float *a, size_t lda, const float *b, float *c, size_t ldc,
                 const kiln_tile_epilogue *e) {
    switch (rows) {
    case 6: microkernel(6, kc, a, lda, b, c, ldc, e); break;
    case 5: microkernel(5, kc, a, lda, b, c, ldc, e); break;
    case 4: microkernel(4, kc, a, lda, b, c, ldc, e); break;
    case 3: microkernel(3, kc, a, lda, b, c, ldc, e); break;
    case 2: microkernel(2, kc, a, lda, b, c, ldc, e); break;
    default: microkernel(1, kc, a, lda, b, c, ldc, e); break;
    }
}

// A tile whose panel is narrower than 16 columns (the last one when n is not a multiple of 16): computed on
// 16-wide copies, then the real columns are written back.
static void narrow_tile(int rows, int width, size_t kc, const float *a, size_t lda, const float *b, float *c,
                        size_t ldc, const kiln_tile_epilogue *e) {
    float ct[6 * KILN_GEMM_NR] = {0}, bias[KILN_GEMM_NR] = {0}, residual[6 * KILN_GEMM_NR] = {0};
    kiln_tile_epilogue local = *e;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < width; j++) {
            if (!e->first) ct[i * KILN_GEMM_NR + j] = c[i * ldc + j];
            if (e->residual) residual[i * KILN_GEMM_NR + j] = e->residual[i * e->ldr + j];
        }
    if (e->bias)
        for (int j = 0; j < width; j++) bias[j] = e->bias[j];
    local.bias = e->bias ? bias : 0;
    local.residual = e->residual ? residual : 0;
    local.ldr = KILN_GEMM_NR;
    tile(rows, kc, a, lda, b, ct, KILN_GEMM_NR, &local);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < width; j++) c[i * ldc + j] = ct[i * KILN_GEMM_NR + j];
}

// Copies B[0 ..< kc][0 ..< width] (row stride ldb) into a kc x 16 panel, zero past width.
static void pack_b_slice(const float *b, size_t ldb, size_t kc, int width, float *restrict slice) {
    if (width == KILN_GEMM_NR) {
        for (size_t r = 0; r < kc; r++) {
            const float *row = b + r * ldb;
            _mm256_store_ps(slice + r * KILN_GEMM_NR, _mm256_loadu_ps(row));
            _mm256_store_ps(slice + r * KILN_GEMM_NR + 8, _mm256_loadu_ps(row + 8));
        }
        return;
    }
    for (size_t r = 0; r < kc; r++)
        for (int j = 0; j < KILN_GEMM_NR; j++) slice[r * KILN_GEMM_NR + j] = j < width ? b[r * ldb + j] : 0;
}

void kiln_gemm_rows(const kiln_gemm *g, const float *a, size_t lda, size_t row0, size_t rows, size_t p0, size_t p1) {
    if (kiln_cpu_has_avx512()) {
        p0 = kiln_gemm_rows_avx512(g, a, lda, row0, rows, p0, p1);
        if (p0 >= p1) return;
    }
    for (size_t k0 = 0; k0 < g->k; k0 += KILN_GEMM_KC) {
        const size_t kc = g->k - k0 < KILN_GEMM_KC ? g->k - k0 : KILN_GEMM_KC;
        // The A block is about to be read once per panel: ask for all of it now (into L2), so that the first
        // panel's tiles do not each wait on memory for their six rows.
        for (size_t i = 0; i < rows; i++) {
            const char *row = (const char *)(a + i * lda + k0);
            for (size_t byte = 0; byte < kc * sizeof(float); byte += 64) _mm_prefetch(row + byte, _MM_HINT_T1);
        }
        kiln_tile_epilogue e = {.ldr = g->ldr, .first = k0 == 0, .last = k0 + kc == g->k, .relu = g->relu,
                                .has_max = g->has_max, .max = g->max};
        for (size_t p = p0; p < p1; p++) {
            const size_t j0 = p * KILN_GEMM_NR;
            const int width = g->n - j0 < KILN_GEMM_NR ? (int)(g->n - j0) : KILN_GEMM_NR;
            const float *bp = g->b + j0 * g->k + k0 * KILN_GEMM_NR;  // a 16 KiB slice, front to back
            e.bias = g->bias ? g->bias + j0 : 0;
            // The next slice of weights, a share of its lines before each row tile.
            const char *ahead = kiln_gemm_next_slice(g, p, 1, p0, p1, k0, kc);
            const size_t tiles = kiln_div_up(rows, 6);
            for (size_t i = 0; i < rows; i += 6) {
                const int mr = rows - i < 6 ? (int)(rows - i) : 6;
                if (ahead) {
                    const size_t t = i / 6;
                    for (size_t line = kc * t / tiles; line < kc * (t + 1) / tiles; line++)
                        _mm_prefetch(ahead + 64 * line, _MM_HINT_T1);
                }
                float *c = g->c + (row0 + i) * g->ldc + j0;
                e.residual = g->residual ? g->residual + (row0 + i) * g->ldr + j0 : 0;
                const float *ap = a + i * lda + k0;
                if (width == KILN_GEMM_NR)
                    tile(mr, kc, ap, lda, bp, c, g->ldc, &e);
                else
                    narrow_tile(mr, width, kc, ap, lda, bp, c, g->ldc, &e);
            }
        }
    }
}

// MARK: - Packing

void kiln_gemm_pack_b(const float *b, size_t k, size_t n, size_t ldb, size_t p0, size_t p1, float *packed) {
    for (size_t p = p0; p < p1; p++) {
        const size_t j0 = p * KILN_GEMM_NR;
        const int width = n - j0 < KILN_GEMM_NR ? (int)(n - j0) : KILN_GEMM_NR;
        pack_b_slice(b + j0, ldb, k, width, packed + j0 * k);
    }
}

#pragma clang attribute pop
