// Grouped convolutions: the depthwise microkernel (one input channel per group, multiplier 1: MobileNet's and
// EfficientNet's 3x3 and 5x5 layers), channels in vector lanes, on AVX-512 or AVX2; and any other grouping
// (ResNeXt's 32 groups, depthwise with a multiplier) as one GEMM per group on the AVX2/AVX-512 GEMM.
#include "kiln_internal.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

// MARK: - Depthwise

size_t kiln_dwconv_packed_floats(size_t cells, size_t channels) {
    return (cells + 1) * kiln_round_up(channels, 16);
}

void kiln_dwconv_pack(const float *weights, const float *bias, size_t cells, size_t channels, float *packed) {
    const size_t cpad = kiln_round_up(channels, 16);
    memset(packed, 0, (cells + 1) * cpad * sizeof(float));
    if (bias) memcpy(packed, bias, channels * sizeof(float));
    for (size_t cell = 0; cell < cells; cell++)
        memcpy(packed + (cell + 1) * cpad, weights + cell * channels, channels * sizeof(float));
}

/// What every pixel of one output row shares.
typedef struct dw_row_context {
    const float *image;     // the row's image in the input
    const float *bias;      // packed: [cpad]
    const float *weights;   // packed: [kh * kw][cpad]
    const float *res_row;   // the residual's row, or NULL
    float *out_row;
    size_t cpad, in_stride, out_stride, res_stride;
    long iy0;               // input row of ky = 0 (may be outside the input)
    int ky0, ky1;           // the kernel rows inside the input
    int affine, has_min, has_max;
} dw_row_context;

static void dw_row_setup(dw_row_context *r, const kiln_dwconv_shape *s, const float *input, const float *packed,
                         const float *residual, float *output, size_t row) {
    const size_t b = row / (size_t)s->out_h, oy = row % (size_t)s->out_h;
    r->cpad = kiln_round_up((size_t)s->channels, 16);
    r->in_stride = (size_t)s->in_pixel_stride;
    r->out_stride = (size_t)s->out_pixel_stride;
    r->res_stride = (size_t)s->residual_pixel_stride;
    r->bias = packed;
    r->weights = packed + r->cpad;
    r->image = input + b * (size_t)s->in_h * s->in_w * r->in_stride;
    r->out_row = output + row * (size_t)s->out_w * r->out_stride;
    r->res_row = residual ? residual + row * (size_t)s->out_w * r->res_stride : 0;
    r->iy0 = (long)oy * s->stride_h - s->pad_top;
    int ky0 = 0, ky1 = s->kernel_h;
    while (ky0 < ky1 && r->iy0 + (long)ky0 * s->dilation_h < 0) ky0++;
    while (ky1 > ky0 && r->iy0 + (long)(ky1 - 1) * s->dilation_h >= s->in_h) ky1--;
    r->ky0 = ky0;
    r->ky1 = ky1;
    r->affine = s->alpha != 1.0f || s->beta != 0.0f;
    r->has_min = s->min > -INFINITY;
    r->has_max = s->max < INFINITY;
}

#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#define DW_NAME(x) dw512_##x
#define DW_LANES 16
#define DW_V __m512
#define DW_MASK __mmask16
#define DW_MASK_FIRST(n) ((__mmask16)((1u << (n)) - 1u))
#define DW_LOAD(p) _mm512_loadu_ps(p)
#define DW_LOAD_TAIL(p) _mm512_maskz_loadu_ps(tail_mask, p)
#define DW_STORE(p, v) _mm512_storeu_ps(p, v)
#define DW_STORE_TAIL(p, v) _mm512_mask_storeu_ps(p, tail_mask, v)
#define DW_FMA _mm512_fmadd_ps
#define DW_ADD _mm512_add_ps
#define DW_MAX _mm512_max_ps
#define DW_MIN _mm512_min_ps
#define DW_SET1 _mm512_set1_ps
#include "dwconv_template.h"
#undef DW_NAME
#undef DW_LANES
#undef DW_V
#undef DW_MASK
#undef DW_MASK_FIRST
#undef DW_LOAD
#undef DW_LOAD_TAIL
#undef DW_STORE
#undef DW_STORE_TAIL
#undef DW_FMA
#undef DW_ADD
#undef DW_MAX
#undef DW_MIN
#undef DW_SET1
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
static inline __m256i dw256_mask_first(int n) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
}
#define DW_NAME(x) dw256_##x
#define DW_LANES 8
#define DW_V __m256
#define DW_MASK __m256i
#define DW_MASK_FIRST(n) dw256_mask_first(n)
#define DW_LOAD(p) _mm256_loadu_ps(p)
#define DW_LOAD_TAIL(p) _mm256_maskload_ps(p, tail_mask)
#define DW_STORE(p, v) _mm256_storeu_ps(p, v)
#define DW_STORE_TAIL(p, v) _mm256_maskstore_ps(p, tail_mask, v)
#define DW_FMA _mm256_fmadd_ps
#define DW_ADD _mm256_add_ps
#define DW_MAX _mm256_max_ps
#define DW_MIN _mm256_min_ps
#define DW_SET1 _mm256_set1_ps
#include "dwconv_template.h"

typedef struct dw_job {
    const kiln_dwconv_shape *s;
    const float *input, *packed, *residual;
    float *output;
    size_t rows, rows_per_task;
    int wide;
} dw_job;

static void dw_task(void *context, size_t index, int thread) {
    (void)thread;
    const dw_job *j = context;
    const size_t r0 = index * j->rows_per_task, r1 = kiln_min(j->rows, r0 + j->rows_per_task);
    for (size_t row = r0; row < r1; row++) {
        if (j->wide)
            dw512_row(j->s, j->input, j->packed, j->residual, j->output, row);
        else
            dw256_row(j->s, j->input, j->packed, j->residual, j->output, row);
    }
}

void kiln_dwconv2d(const kiln_dwconv_shape *s, const float *input, const float *packed, const float *residual,
                   float *output) {
    dw_job j = {.s = s, .input = input, .packed = packed, .residual = residual, .output = output,
                .rows = (size_t)s->batch * s->out_h, .wide = kiln_cpu_has_avx512()};
    // About 64 Ki multiply-adds per task at least: a small row is not worth a hand-off to another thread.
    const size_t row_work = (size_t)s->out_w * s->channels * s->kernel_h * s->kernel_w;
    size_t per_task = kiln_div_up(64 * 1024, row_work ? row_work : 1);
    const size_t threads = (size_t)kiln_threads_get();
    // But enough tasks for every thread to take several (rows differ in cost only at the borders).
    if (threads > 1) per_task = kiln_min(per_task, kiln_div_up(j.rows, threads * 4));
    j.rows_per_task = per_task ? per_task : 1;
    const size_t tasks = kiln_div_up(j.rows, j.rows_per_task);
    if (tasks <= 1)
        dw_task(&j, 0, 0);
    else
        kiln_parallel_for(tasks, dw_task, &j);
}

// MARK: - Grouped GEMM

size_t kiln_grouped_conv_packed_floats(size_t k, size_t group_out, size_t groups) {
    return groups * kiln_gemm_packed_floats(k, group_out);
}

void kiln_grouped_conv_pack(const float *hwio, size_t k, size_t group_out, size_t groups, size_t g0, size_t g1,
                            float *packed) {
    const size_t per_group = kiln_gemm_packed_floats(k, group_out);
    for (size_t g = g0; g < g1; g++)
        kiln_gemm_pack_b(hwio + g * group_out, k, group_out, groups * group_out, 0,
                         kiln_div_up(group_out, KILN_GEMM_NR), packed + g * per_group);
}

/// Output pixels per GEMM block of a grouped convolution (a multiple of the 6-row tile).
#define GROUPED_MC 96

size_t kiln_grouped_conv_workspace_floats(const kiln_conv_shape *s, int groups, int threads) {
    const size_t k = (size_t)s->kernel_h * s->kernel_w * (s->in_c / groups);
    return (size_t)(threads < 1 ? 1 : threads) * GROUPED_MC * k;
}

typedef struct grouped_job {
    const kiln_conv_shape *s;
    const float *input, *weights, *bias, *residual;
    float *output, *workspace;
    size_t groups, gin, gout, k, m, mblocks, per_group;
} grouped_job;

/// im2col rows of group g for output pixels [first, first + count): row r is [kh, kw, gin] flattened (the
/// group's input channels), zeros in the padding.
static void im2col_group(const grouped_job *j, size_t g, size_t first, size_t count, float *dst) {
    const kiln_conv_shape *s = j->s;
    const size_t cin = (size_t)s->in_c, gin = j->gin;
    const size_t image_pixels = (size_t)s->out_h * s->out_w;
    size_t b = first / image_pixels, oy = first % image_pixels / s->out_w, ox = first % s->out_w;
    for (size_t r = 0; r < count; r++) {
        const float *image = j->input + b * s->in_h * s->in_w * cin + g * gin;
        float *row = dst + r * j->k;
        const long x0 = (long)ox * s->stride_w - s->pad_left;
        for (int ky = 0; ky < s->kernel_h; ky++) {
            const long iy = (long)oy * s->stride_h - s->pad_top + (long)ky * s->dilation_h;
            for (int kx = 0; kx < s->kernel_w; kx++) {
                const long ix = x0 + (long)kx * s->dilation_w;
                float *cell = row + ((size_t)ky * s->kernel_w + kx) * gin;
                if (iy < 0 || iy >= s->in_h || ix < 0 || ix >= s->in_w) {
                    memset(cell, 0, gin * sizeof(float));
                } else {
                    const float *src = image + ((size_t)iy * s->in_w + ix) * cin;
                    size_t i = 0;
                    for (; i + 8 <= gin; i += 8) _mm256_storeu_ps(cell + i, _mm256_loadu_ps(src + i));
                    for (; i < gin; i++) cell[i] = src[i];
                }
            }
        }
        if (++ox == (size_t)s->out_w) {
            ox = 0;
            if (++oy == (size_t)s->out_h) {
                oy = 0;
                b++;
            }
        }
    }
}

static void grouped_task(void *context, size_t index, int thread) {
    const grouped_job *j = context;
    const size_t g = index / j->mblocks, mb = index % j->mblocks;
    const size_t row0 = mb * GROUPED_MC, rows = kiln_min(GROUPED_MC, j->m - row0);
    float *a = j->workspace + (size_t)thread * GROUPED_MC * j->k;
    im2col_group(j, g, row0, rows, a);
    const size_t out_c = (size_t)j->s->out_c;
    const size_t ldc = j->s->out_stride > 0 ? (size_t)j->s->out_stride : out_c;
    kiln_gemm gemm = {.m = j->m, .n = j->gout, .k = j->k, .b = j->weights + g * j->per_group,
                      .c = j->output + g * j->gout, .ldc = ldc, .bias = j->bias ? j->bias + g * j->gout : 0,
                      .residual = j->residual ? j->residual + g * j->gout : 0, .ldr = out_c, .relu = j->s->relu,
                      .has_max = j->s->has_max, .max = j->s->max_value};
    kiln_gemm_rows(&gemm, a, j->k, row0, rows, 0, kiln_div_up(j->gout, KILN_GEMM_NR));
}

void kiln_grouped_conv2d(const kiln_conv_shape *s, int groups, const float *input, const float *weights,
                         const float *bias, const float *residual, float *output, float *workspace) {
    grouped_job j = {.s = s, .input = input, .weights = weights, .bias = bias, .residual = residual,
                     .output = output, .workspace = workspace, .groups = (size_t)groups};
    j.gin = (size_t)s->in_c / j.groups;
    j.gout = (size_t)s->out_c / j.groups;
    j.k = (size_t)s->kernel_h * s->kernel_w * j.gin;
    j.m = (size_t)s->batch * s->out_h * s->out_w;
    j.mblocks = kiln_div_up(j.m, GROUPED_MC);
    j.per_group = kiln_gemm_packed_floats(j.k, j.gout);
    kiln_parallel_for(j.groups * j.mblocks, grouped_task, &j);
}
#pragma clang attribute pop

// MARK: - Small groups (AVX-512)

// Groups of g input and g output channels, g dividing 16 (ResNeXt's 32 groups of 4, 8 or 16): output channels in the
// 16 lanes, as in the depthwise kernel. The 16 input channels at the same offset are exactly the groups these 16
// outputs read, so for each of a group's g inputs one permute spreads input i of every group over its g lanes
// (lane l takes channel (l / g) * g + i) and one FMA with the HWIO weights row [i][c0 ..< c0 + 16] accumulates it:
// g FMAs per kernel cell and 16 outputs, no multiply wasted (a GEMM per group would fill 16-wide tiles with g
// columns).
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)

typedef struct small_groups_job {
    const kiln_conv_shape *s;
    const float *input, *weights, *bias, *residual;
    float *output;
    size_t rows, rows_per_task, out_stride;
    int g;
} small_groups_job;

static inline __attribute__((always_inline)) void small_groups_pixels(const int P, const small_groups_job *j,
                                                                      const float *image, long iy0, int ky0, int ky1,
                                                                      size_t row, size_t ox, int kx0, int kx1) {
    const kiln_conv_shape *s = j->s;
    const size_t c_all = (size_t)s->out_c, g = (size_t)j->g;
    const long x0 = (long)ox * s->stride_w - s->pad_left;
    for (size_t c0 = 0; c0 < c_all; c0 += 16) {
        __m512 acc[4];
        const __m512 bias = j->bias ? _mm512_loadu_ps(j->bias + c0) : _mm512_setzero_ps();
        KILN_UNROLL
        for (int p = 0; p < P; p++) acc[p] = bias;
        for (int ky = ky0; ky < ky1; ky++) {
            const float *line = image + (size_t)(iy0 + (long)ky * s->dilation_h) * s->in_w * c_all + c0;
            for (int kx = kx0; kx < kx1; kx++) {
                const float *w = j->weights + ((size_t)ky * s->kernel_w + kx) * g * c_all + c0;
                __m512 xv[4];
                KILN_UNROLL
                for (int p = 0; p < P; p++)
                    xv[p] = _mm512_loadu_ps(line + (size_t)(x0 + (long)p * s->stride_w + (long)kx * s->dilation_w) * c_all);
                for (size_t i = 0; i < g; i++) {
                    const __m512i spread = _mm512_add_epi32(
                        _mm512_mullo_epi32(_mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                             __builtin_ctz((unsigned)g)),
                                           _mm512_set1_epi32((int)g)),
                        _mm512_set1_epi32((int)i));
                    const __m512 wv = _mm512_loadu_ps(w + i * c_all);
                    KILN_UNROLL
                    for (int p = 0; p < P; p++) acc[p] = _mm512_fmadd_ps(_mm512_permutexvar_ps(spread, xv[p]), wv, acc[p]);
                }
            }
        }
        KILN_UNROLL
        for (int p = 0; p < P; p++) {
            const size_t pixel = row * s->out_w + ox + p;
            __m512 v = acc[p];
            if (j->residual) v = _mm512_add_ps(v, _mm512_loadu_ps(j->residual + pixel * c_all + c0));
            if (s->relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
            if (s->has_max) v = _mm512_min_ps(v, _mm512_set1_ps(s->max_value));
            _mm512_storeu_ps(j->output + pixel * j->out_stride + c0, v);
        }
    }
}

static void small_groups_task(void *context, size_t index, int thread) {
    (void)thread;
    const small_groups_job *j = context;
    const kiln_conv_shape *s = j->s;
    const size_t r0 = index * j->rows_per_task, r1 = kiln_min(j->rows, r0 + j->rows_per_task);
    const long reach = (long)(s->kernel_w - 1) * s->dilation_w;
    for (size_t row = r0; row < r1; row++) {
        const size_t b = row / (size_t)s->out_h, oy = row % (size_t)s->out_h;
        const float *image = j->input + b * (size_t)s->in_h * s->in_w * s->in_c;
        const long iy0 = (long)oy * s->stride_h - s->pad_top;
        int ky0 = 0, ky1 = s->kernel_h;
        while (ky0 < ky1 && iy0 + (long)ky0 * s->dilation_h < 0) ky0++;
        while (ky1 > ky0 && iy0 + (long)(ky1 - 1) * s->dilation_h >= s->in_h) ky1--;
        size_t ox = 0;
        while (ox < (size_t)s->out_w) {
            const long x0 = (long)ox * s->stride_w - s->pad_left;
            if (ox + 4 <= (size_t)s->out_w && x0 >= 0 && x0 + 3L * s->stride_w + reach < s->in_w) {
                small_groups_pixels(4, j, image, iy0, ky0, ky1, row, ox, 0, s->kernel_w);
                ox += 4;
                continue;
            }
            int kx0 = 0, kx1 = s->kernel_w;
            while (kx0 < kx1 && x0 + (long)kx0 * s->dilation_w < 0) kx0++;
            while (kx1 > kx0 && x0 + (long)(kx1 - 1) * s->dilation_w >= s->in_w) kx1--;
            small_groups_pixels(1, j, image, iy0, ky0, ky1, row, ox, kx0, kx1);
            ox++;
        }
    }
}

int kiln_small_groups_supported(int in_c, int out_c, int groups) {
    if (!kiln_cpu_has_avx512() || groups < 1 || in_c != out_c || in_c % groups != 0 || in_c % 16 != 0) return 0;
    const int g = in_c / groups;
    return g >= 2 && 16 % g == 0;
}

void kiln_small_groups_conv2d(const kiln_conv_shape *s, int groups, const float *input, const float *hwio,
                              const float *bias, const float *residual, float *output) {
    small_groups_job j = {.s = s, .input = input, .weights = hwio, .bias = bias, .residual = residual, .output = output,
                          .rows = (size_t)s->batch * s->out_h, .g = s->in_c / groups,
                          .out_stride = s->out_stride > 0 ? (size_t)s->out_stride : (size_t)s->out_c};
    const size_t row_work = (size_t)s->out_w * s->out_c * s->kernel_h * s->kernel_w * j.g;
    size_t per_task = kiln_div_up(64 * 1024, row_work ? row_work : 1);
    const size_t threads = (size_t)kiln_threads_get();
    if (threads > 1) per_task = kiln_min(per_task, kiln_div_up(j.rows, threads * 4));
    j.rows_per_task = per_task ? per_task : 1;
    const size_t tasks = kiln_div_up(j.rows, j.rows_per_task);
    if (tasks <= 1)
        small_groups_task(&j, 0, 0);
    else
        kiln_parallel_for(tasks, small_groups_task, &j);
}
#pragma clang attribute pop
