// The AVX-512 GEMM: same packed B (16-column panels), same blocking and epilogue as gemm_avx2.c, with one
// 16-float zmm register per panel row. Only called where kiln_cpu_has_avx512() says so (cpuid + xgetbv at run
// time); panels narrower than 16 columns go to the AVX2 code.
#include "kiln_internal.h"

#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)

#define KILN_INLINE static inline __attribute__((always_inline))

// rows x (16 * np) tile: rows rows of A times a kc x 16 slice of np adjacent packed panels (b0, b0 + panel).
KILN_INLINE void micro512(const int rows, const int np, size_t kc, const float *restrict a, size_t lda,
                          const float *restrict b0, size_t panel, float *c, size_t ldc, const kiln_tile_epilogue *e,
                          const char *prefetch, size_t prefetch_panel) {
    __m512 acc[28];
    if (e->first) {
        __m512 bias[2];
        KILN_UNROLL
        for (int p = 0; p < np; p++) bias[p] = e->bias ? _mm512_loadu_ps(e->bias + 16 * p) : _mm512_setzero_ps();
        KILN_UNROLL
        for (int i = 0; i < rows; i++)
            KILN_UNROLL
            for (int p = 0; p < np; p++) {
                acc[i * np + p] = bias[p];
                if (e->residual)
                    acc[i * np + p] = _mm512_add_ps(acc[i * np + p], _mm512_loadu_ps(e->residual + i * e->ldr + 16 * p));
            }
    } else {
        KILN_UNROLL
        for (int i = 0; i < rows; i++)
            KILN_UNROLL
            for (int p = 0; p < np; p++) acc[i * np + p] = _mm512_loadu_ps(c + i * ldc + 16 * p);
    }
    const float *ar[14];
    KILN_UNROLL
    for (int i = 0; i < rows; i++) ar[i] = a + i * lda;
    const float *b1 = b0 + panel;
    for (size_t k = 0; k < kc; k++) {
        if (prefetch) {
            // The next slice of B, one line per panel per k: on its way from memory while this one is used.
            _mm_prefetch(prefetch + 64 * k, _MM_HINT_T1);
            if (np == 2) _mm_prefetch(prefetch + prefetch_panel + 64 * k, _MM_HINT_T1);
        }
        const __m512 x0 = _mm512_load_ps(b0);
        b0 += KILN_GEMM_NR;
        __m512 x1 = x0;
        if (np == 2) { x1 = _mm512_load_ps(b1); b1 += KILN_GEMM_NR; }
        KILN_UNROLL
        for (int i = 0; i < rows; i++) {
            const __m512 s = _mm512_set1_ps(ar[i][k]);
            acc[i * np] = _mm512_fmadd_ps(s, x0, acc[i * np]);
            if (np == 2) acc[i * np + 1] = _mm512_fmadd_ps(s, x1, acc[i * np + 1]);
        }
    }
    if (e->last && e->relu) {
        const __m512 zero = _mm512_setzero_ps();
        KILN_UNROLL
        for (int i = 0; i < rows * np; i++) acc[i] = _mm512_max_ps(acc[i], zero);
    }
    if (e->last && e->has_max) {
        const __m512 top = _mm512_set1_ps(e->max);
        KILN_UNROLL
        for (int i = 0; i < rows * np; i++) acc[i] = _mm512_min_ps(acc[i], top);
    }
    KILN_UNROLL
    for (int i = 0; i < rows; i++)
        KILN_UNROLL
        for (int p = 0; p < np; p++) _mm512_storeu_ps(c + i * ldc + 16 * p, acc[i * np + p]);
}

#define R2 12
#define R1 14
static void tile2(int rows, size_t kc, const float *a, size_t lda, const float *b, size_t panel, float *c, size_t ldc,
                  const kiln_tile_epilogue *e, const char *prefetch) {
    if (prefetch) {
        switch (rows) {
#define CASE(r) case r: micro512(r, 2, kc, a, lda, b, panel, c, ldc, e, prefetch, panel * sizeof(float)); break;
        CASE(12) CASE(11) CASE(10) CASE(9) CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2)
        default: micro512(1, 2, kc, a, lda, b, panel, c, ldc, e, prefetch, panel * sizeof(float)); break;
#undef CASE
        }
        return;
    }
    switch (rows) {
#define CASE(r) case r: micro512(r, 2, kc, a, lda, b, panel, c, ldc, e, 0, 0); break;
    CASE(12) CASE(11) CASE(10) CASE(9) CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2)
    default: micro512(1, 2, kc, a, lda, b, panel, c, ldc, e, 0, 0); break;
#undef CASE
    }
}

static void tile1(int rows, size_t kc, const float *a, size_t lda, const float *b, float *c, size_t ldc,
                  const kiln_tile_epilogue *e) {
    switch (rows) {
#define CASE(r) case r: micro512(r, 1, kc, a, lda, b, 0, c, ldc, e, 0, 0); break;
    CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9) CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2)
    default: micro512(1, 1, kc, a, lda, b, 0, c, ldc, e, 0, 0); break;
#undef CASE
    }
}

size_t kiln_gemm_rows_avx512(const kiln_gemm *g, const float *a, size_t lda, size_t row0, size_t rows, size_t p0,
                             size_t p1) {
    const size_t full = g->n / KILN_GEMM_NR;  // panels of 16 real columns
    const size_t end = p1 < full ? p1 : full;
    if (end <= p0) return p0;
    for (size_t k0 = 0; k0 < g->k; k0 += KILN_GEMM_KC) {
        const size_t kc = g->k - k0 < KILN_GEMM_KC ? g->k - k0 : KILN_GEMM_KC;
        for (size_t i = 0; i < rows; i++) {
            const char *row = (const char *)(a + i * lda + k0);
            for (size_t byte = 0; byte < kc * sizeof(float); byte += 64) _mm_prefetch(row + byte, _MM_HINT_T1);
        }
        kiln_tile_epilogue e = {.ldr = g->ldr, .first = k0 == 0, .last = k0 + kc == g->k, .relu = g->relu,
                                .has_max = g->has_max, .max = g->max};
        const size_t panel = KILN_GEMM_NR * g->k;
        for (size_t p = p0; p < end; p += 2) {
            const int pair = p + 1 < end;
            const size_t j0 = p * KILN_GEMM_NR;
            const float *bp = g->b + j0 * g->k + k0 * KILN_GEMM_NR;
            e.bias = g->bias ? g->bias + j0 : 0;
            // Balanced tiles (49 rows: 10+10+10+10+9, not 12+12+12+12+1, whose last tile loads B for one row).
            const size_t most = pair ? R2 : R1, step = kiln_div_up(rows, kiln_div_up(rows, most));
            for (size_t i = 0; i < rows; i += step) {
                const int mr = rows - i < step ? (int)(rows - i) : (int)step;
                float *c = g->c + (row0 + i) * g->ldc + j0;
                e.residual = g->residual ? g->residual + (row0 + i) * g->ldr + j0 : 0;
                const float *ap = a + i * lda + k0;
                // The first tile of a pair fetches the next pair's slice of weights.
                const char *ahead = i == 0 && pair ? kiln_gemm_next_slice(g, p, 2, p0, end, k0, kc) : 0;
                if (e.first && g->residual) {
                    // The next tile's residual rows and output rows, on their way while this tile computes: at
                    // 56x56 they are 3 MiB each, out of the caches since they were written.
                    const size_t ni = i + step < rows ? i + step : 0, nj = i + step < rows ? j0 : j0 + 2 * KILN_GEMM_NR;
                    if (ni != 0 || p + 2 < end) {
                        const size_t nr = rows - ni < step ? rows - ni : step;
                        for (size_t r = 0; r < nr; r++) {
                            const char *cr = (const char *)(g->c + (row0 + ni + r) * g->ldc + nj);
                            _mm_prefetch(cr, _MM_HINT_ET0);
                            _mm_prefetch(cr + 64, _MM_HINT_ET0);
                            const char *rr = (const char *)(g->residual + (row0 + ni + r) * g->ldr + nj);
                            _mm_prefetch(rr, _MM_HINT_T0);
                            _mm_prefetch(rr + 64, _MM_HINT_T0);
                        }
                    }
                }
                if (pair)
                    tile2(mr, kc, ap, lda, bp, panel, c, g->ldc, &e, ahead);
                else
                    tile1(mr, kc, ap, lda, bp, c, g->ldc, &e);
            }
        }
    }
    return end;
}

#pragma clang attribute pop
