// A general row-major sgemm on the convolution GEMM (for KilnTrain's head training): transposed operands are
// copied upright, B is packed into 16-column panels, and the product runs as a pointwise convolution, with C as
// its own residual when beta is not 0.
#include "kiln_internal.h"

#include <stdint.h>
#include <stdlib.h>

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

/// dst [cols, rows] = transpose of src [rows, cols], in 32 x 32 blocks.
static void transpose(const float *src, size_t rows, size_t cols, float *dst) {
    for (size_t r0 = 0; r0 < rows; r0 += 32)
        for (size_t c0 = 0; c0 < cols; c0 += 32) {
            const size_t r1 = kiln_min(rows, r0 + 32), c1 = kiln_min(cols, c0 + 32);
            for (size_t r = r0; r < r1; r++)
                for (size_t c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
        }
}

int kiln_sgemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, const float *a, const float *b, float beta,
               float *c) {
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) return -1;
    if (m == 0 || n == 0) return 0;
    if (k == 0) {
        for (size_t i = 0; i < m * n; i++) c[i] = beta == 0 ? 0 : beta * c[i];
        return 0;
    }
    float *upright_a = trans_a ? malloc(m * k * sizeof(float)) : NULL;
    float *upright_b = trans_b ? malloc(k * n * sizeof(float)) : NULL;
    const size_t packed_bytes = kiln_round_up(kiln_gemm_packed_floats(k, n) * sizeof(float), 64);
    float *packed = aligned_alloc(64, packed_bytes);
    if ((trans_a && !upright_a) || (trans_b && !upright_b) || !packed) {
        free(upright_a);
        free(upright_b);
        free(packed);
        return -1;
    }
    if (trans_a) transpose(a, k, m, upright_a);
    if (trans_b) transpose(b, n, k, upright_b);
    kiln_gemm_pack_b(trans_b ? upright_b : b, k, n, n, 0, kiln_div_up(n, KILN_GEMM_NR), packed);
    if (beta != 0 && beta != 1)
        for (size_t i = 0; i < m * n; i++) c[i] *= beta;
    const kiln_conv_shape shape = {
        .batch = 1, .in_h = 1, .in_w = (int32_t)m, .in_c = (int32_t)k, .out_h = 1, .out_w = (int32_t)m,
        .out_c = (int32_t)n, .kernel_h = 1, .kernel_w = 1, .stride_h = 1, .stride_w = 1, .dilation_h = 1,
        .dilation_w = 1, .algorithm = KILN_CONV_GEMM,
    };
    kiln_conv2d(&shape, trans_a ? upright_a : a, packed, NULL, beta != 0 ? c : NULL, c, NULL);
    free(upright_a);
    free(upright_b);
    free(packed);
    return 0;
}

#pragma clang attribute pop
