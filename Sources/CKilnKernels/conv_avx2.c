// Convolution drivers on the AVX2 GEMM: pointwise convolutions straight on the NHWC rows, anything else through
// im2col blocks, and stride-1 3x3 convolutions through Winograd F(2x2, 3x3) or F(4x4, 3x3).
#include "kiln_internal.h"

#include <immintrin.h>
#include <string.h>

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

// MARK: - GEMM convolution

static int is_pointwise(const kiln_conv_shape *s) {
    return s->kernel_h == 1 && s->kernel_w == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_top == 0 &&
           s->pad_left == 0 && s->out_h == s->in_h && s->out_w == s->in_w;
}

/// How a GEMM convolution is cut into tasks: blocks of mc output pixels times chunks of B panels.
typedef struct gemm_plan {
    size_t m, k, panels;
    size_t mc, mblocks;
    size_t ppc, pchunks;
    int shared_im2col;  // few row blocks: im2col all rows once (in parallel), then share them
} gemm_plan;

static gemm_plan plan_gemm(const kiln_conv_shape *s, int threads) {
    gemm_plan p;
    p.m = (size_t)s->batch * s->out_h * s->out_w;
    p.k = (size_t)s->kernel_h * s->kernel_w * s->in_c;
    p.panels = kiln_div_up((size_t)s->out_c, KILN_GEMM_NR);
    size_t blocks = kiln_div_up(p.m, KILN_GEMM_MC);
    p.mc = kiln_round_up(kiln_div_up(p.m, blocks), 6);
    p.mblocks = kiln_div_up(p.m, p.mc);
    const size_t wanted = threads > 1 ? (size_t)threads * 4 : 1;
    size_t chunks = p.mblocks >= wanted ? 1 : kiln_min(p.panels, kiln_div_up(wanted, p.mblocks));
    p.ppc = kiln_div_up(p.panels, chunks);
    p.pchunks = kiln_div_up(p.panels, p.ppc);
    p.shared_im2col = !is_pointwise(s) && p.pchunks > 1;
    return p;
}

/// Copies n floats (runs of a few dozen: a kernel row of a small-channel layer, such as the 7x7x3 stem).
static inline void copy_floats(float *restrict dst, const float *restrict src, size_t n) {
    if (n < 8) {
        for (size_t i = 0; i < n; i++) dst[i] = src[i];
        return;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(src + i));
    if (i < n) _mm256_storeu_ps(dst + n - 8, _mm256_loadu_ps(src + n - 8));  // the tail, overlapping
}

/// im2col rows for output pixels [first, first + count) (over the whole batch): row r is [kh, kw, cin]
/// flattened, zeros where the window falls in the padding.
static void im2col(const kiln_conv_shape *s, const float *input, size_t first, size_t count, float *dst) {
    const size_t cin = (size_t)s->in_c, k = (size_t)s->kernel_h * s->kernel_w * cin;
    const size_t image_pixels = (size_t)s->out_h * s->out_w;
    size_t b = first / image_pixels, oy = first % image_pixels / s->out_w, ox = first % s->out_w;
    for (size_t r = 0; r < count; r++) {
        const float *image = input + b * s->in_h * s->in_w * cin;
        float *row = dst + r * k;
        const long x0 = (long)ox * s->stride_w - s->pad_left;
        for (int ky = 0; ky < s->kernel_h; ky++) {
            const long iy = (long)oy * s->stride_h - s->pad_top + (long)ky * s->dilation_h;
            float *out = row + (size_t)ky * s->kernel_w * cin;
            if (iy < 0 || iy >= s->in_h) {
                memset(out, 0, (size_t)s->kernel_w * cin * sizeof(float));
                continue;
            }
            const float *line = image + (size_t)iy * s->in_w * cin;
            if (s->dilation_w == 1 && x0 >= 0 && x0 + s->kernel_w <= s->in_w) {
                copy_floats(out, line + x0 * cin, (size_t)s->kernel_w * cin);
                continue;
            }
            for (int kx = 0; kx < s->kernel_w; kx++) {
                const long ix = x0 + (long)kx * s->dilation_w;
                float *cell = out + (size_t)kx * cin;
                if (ix < 0 || ix >= s->in_w)
                    memset(cell, 0, cin * sizeof(float));
                else
                    copy_floats(cell, line + ix * cin, cin);
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

typedef struct conv_gemm_job {
    const kiln_conv_shape *s;
    const float *input;
    kiln_gemm g;
    gemm_plan p;
    int pointwise;
    float *workspace;  // shared im2col rows [m, k], or one block of mc rows per thread
} conv_gemm_job;

static void conv_gemm_im2col_task(void *context, size_t index, int thread) {
    (void)thread;
    const conv_gemm_job *j = context;
    const size_t row0 = index * j->p.mc, rows = kiln_min(j->p.mc, j->p.m - row0);
    im2col(j->s, j->input, row0, rows, j->workspace + row0 * j->p.k);
}

static void conv_gemm_task(void *context, size_t index, int thread) {
    const conv_gemm_job *j = context;
    const size_t mb = index / j->p.pchunks, pc = index % j->p.pchunks;
    const size_t row0 = mb * j->p.mc, rows = kiln_min(j->p.mc, j->p.m - row0);
    const size_t p0 = pc * j->p.ppc, p1 = kiln_min(j->p.panels, p0 + j->p.ppc);
    const float *a;
    size_t lda = j->p.k;
    if (j->pointwise) {
        a = j->input + row0 * j->p.k;
    } else if (j->p.shared_im2col) {
        a = j->workspace + row0 * j->p.k;
    } else {
        float *rows_buffer = j->workspace + (size_t)thread * j->p.mc * j->p.k;
        im2col(j->s, j->input, row0, rows, rows_buffer);
        a = rows_buffer;
    }
    kiln_gemm_rows(&j->g, a, lda, row0, rows, p0, p1);
}

static size_t gemm_workspace_floats(const kiln_conv_shape *s, int threads) {
    if (is_pointwise(s)) return 0;
    const gemm_plan p = plan_gemm(s, threads);
    return p.shared_im2col ? p.m * p.k : (size_t)threads * p.mc * p.k;
}

static void conv_gemm(const kiln_conv_shape *s, const float *input, const float *weights, const float *bias,
                      const float *residual, float *output, float *workspace) {
    conv_gemm_job j;
    j.s = s;
    j.input = input;
    j.p = plan_gemm(s, kiln_threads_get());
    j.pointwise = is_pointwise(s);
    j.workspace = workspace;
    j.g = (kiln_gemm){.m = j.p.m, .n = (size_t)s->out_c, .k = j.p.k, .b = weights, .c = output,
                      .ldc = (size_t)s->out_c, .bias = bias, .residual = residual, .ldr = (size_t)s->out_c,
                      .relu = s->relu};
    if (j.p.shared_im2col) kiln_parallel_for(j.p.mblocks, conv_gemm_im2col_task, &j);
    kiln_parallel_for(j.p.mblocks * j.p.pchunks, conv_gemm_task, &j);
}

// MARK: - Winograd

// Floats of V plus M per tile a block aims at: about 2 MiB, so a block's transforms stay in the caches.
#ifndef KILN_WINOGRAD_BLOCK_FLOATS
#define KILN_WINOGRAD_BLOCK_FLOATS (512 * 1024)
#endif

typedef struct wino_plan {
    int m, alpha;
    size_t tiles_h, tiles_w, tiles;
    size_t npad;        // out_c rounded up to 16: the row stride of M
    size_t block;       // tiles per block (the largest)
    size_t panels, ppc, pchunks;
} wino_plan;

static wino_plan plan_winograd(const kiln_conv_shape *s, int threads) {
    wino_plan p;
    p.m = s->algorithm;
    p.alpha = p.m + 2;
    p.tiles_h = kiln_div_up((size_t)s->out_h, (size_t)p.m);
    p.tiles_w = kiln_div_up((size_t)s->out_w, (size_t)p.m);
    p.tiles = (size_t)s->batch * p.tiles_h * p.tiles_w;
    p.npad = kiln_round_up((size_t)s->out_c, KILN_GEMM_NR);
    const size_t per_tile = (size_t)p.alpha * p.alpha * ((size_t)s->in_c + p.npad);
    size_t block = kiln_round_up(KILN_WINOGRAD_BLOCK_FLOATS / per_tile + 1, 6);
    if (block < 6) block = 6;
    const size_t blocks = kiln_div_up(p.tiles, block);
    p.block = kiln_div_up(p.tiles, blocks);  // balanced blocks
    p.panels = p.npad / KILN_GEMM_NR;
    // Enough GEMM tasks for every thread: alpha^2 matrices times chunks of panels.
    const size_t matrices = (size_t)p.alpha * p.alpha;
    const size_t wanted = threads > 1 ? (size_t)threads * 8 : 1;
    size_t chunks = matrices >= wanted ? 1 : kiln_min(p.panels, kiln_div_up(wanted, matrices));
    p.ppc = kiln_div_up(p.panels, chunks);
    p.pchunks = kiln_div_up(p.panels, p.ppc);
    return p;
}

static size_t winograd_workspace_floats(const kiln_conv_shape *s, int threads) {
    const wino_plan p = plan_winograd(s, threads);
    return (size_t)p.alpha * p.alpha * p.block * ((size_t)s->in_c + p.npad);
}

typedef struct wino_job {
    const kiln_conv_shape *s;
    wino_plan p;
    const float *input, *weights, *bias, *residual;
    float *output;
    float *v, *mm;        // V [alpha^2][block][in_c], M [alpha^2][block][npad]
    size_t t0, count;     // the current block: tiles [t0, t0 + count)
    size_t tiles_per_task;
} wino_job;

// F(4x4, 3x3) uses the interpolation points 0, -1, 1, 1/2, -2 and infinity rather than Lavin's 0, ±1, ±2: the
// transforms then mix smaller factors, and a layer's error against direct convolution drops by about 2.4×
// (measured in float32 over 256-channel layers of ReLU activations against float64 direct convolution). With
// A^T (4 x 6), G (6 x 3) and B^T (6 x 6):
//   A^T = [1  1 1 1    1  0]   G = [   1     0     0 ]   B^T = [1 -3/2   -2  3/2    1 0]
//         [0 -1 1 1/2 -2  0]       [-1/3   1/3 -1/3 ]         [0    1 -5/2  1/2    1 0]
//         [0  1 1 1/4  4  0]       [ 1/3   1/3  1/3 ]         [0   -1  1/2  5/2    1 0]
//         [0 -1 1 1/8 -8  1]       [-16/15 -8/15 -4/15]       [0   -2   -1    2    1 0]
//                                  [ 1/15 -2/15  4/15]        [0  1/2   -1 -1/2    1 0]
//                                  [   0     0     1 ]         [0    1 -3/2   -2  3/2 1]
// (y = A^T [(G g G^T) ⊙ (B^T d B)] A; B^T solves A^T diag(G g) B^T = the correlation matrix of g exactly.)

// The 1-D input transforms B^T x, on 8 channels at a time.
#define BT4(x0, x1, x2, x3, x4, x5, y)                                                                         \
    do {                                                                                                       \
        const __m256 d31 = _mm256_sub_ps(x3, x1), d42 = _mm256_sub_ps(x4, x2);                                 \
        const __m256 half = _mm256_set1_ps(0.5f), three_halves = _mm256_set1_ps(1.5f);                         \
        const __m256 two = _mm256_set1_ps(2), five_halves = _mm256_set1_ps(2.5f);                              \
        y[0] = _mm256_fmadd_ps(three_halves, d31, _mm256_fnmadd_ps(two, x2, _mm256_add_ps(x0, x4)));           \
        y[1] = _mm256_fmadd_ps(half, x3, _mm256_fnmadd_ps(five_halves, x2, _mm256_add_ps(x1, x4)));            \
        y[2] = _mm256_fmadd_ps(five_halves, x3, _mm256_fmadd_ps(half, x2, _mm256_sub_ps(x4, x1)));             \
        y[3] = _mm256_fmadd_ps(two, d31, d42);                                                                 \
        y[4] = _mm256_fnmadd_ps(half, d31, d42);                                                               \
        y[5] = _mm256_fmadd_ps(three_halves, d42, _mm256_fnmadd_ps(two, x3, _mm256_add_ps(x1, x5)));           \
    } while (0)

#define BT2(x0, x1, x2, x3, y)                                                                                 \
    do {                                                                                                       \
        y[0] = _mm256_sub_ps(x0, x2);                                                                          \
        y[1] = _mm256_add_ps(x1, x2);                                                                          \
        y[2] = _mm256_sub_ps(x2, x1);                                                                          \
        y[3] = _mm256_sub_ps(x1, x3);                                                                          \
    } while (0)

// The 1-D output transforms A^T x.
#define AT4(x0, x1, x2, x3, x4, x5, y)                                                                         \
    do {                                                                                                       \
        const __m256 s12 = _mm256_add_ps(x1, x2), d21 = _mm256_sub_ps(x2, x1);                                 \
        y[0] = _mm256_add_ps(_mm256_add_ps(x0, s12), _mm256_add_ps(x3, x4));                                   \
        y[1] = _mm256_fmadd_ps(_mm256_set1_ps(0.5f), x3, _mm256_fnmadd_ps(_mm256_set1_ps(2), x4, d21));        \
        y[2] = _mm256_fmadd_ps(_mm256_set1_ps(0.25f), x3, _mm256_fmadd_ps(_mm256_set1_ps(4), x4, s12));        \
        y[3] = _mm256_fmadd_ps(_mm256_set1_ps(0.125f), x3,                                                     \
                               _mm256_fnmadd_ps(_mm256_set1_ps(8), x4, _mm256_add_ps(d21, x5)));               \
    } while (0)

#define AT2(x0, x1, x2, x3, y)                                                                                 \
    do {                                                                                                       \
        y[0] = _mm256_add_ps(_mm256_add_ps(x0, x1), x2);                                                       \
        y[1] = _mm256_sub_ps(_mm256_sub_ps(x1, x2), x3);                                                       \
    } while (0)

static inline void tile_origin(const wino_job *j, size_t t, size_t *b, long *y0, long *x0) {
    const size_t per_image = j->p.tiles_h * j->p.tiles_w;
    *b = t / per_image;
    const size_t r = t % per_image;
    *y0 = (long)(r / j->p.tiles_w) * j->p.m;
    *x0 = (long)(r % j->p.tiles_w) * j->p.m;
}

/// V[xi][tl][c..c+8] for the tiles [first, last) of the current block (tl counted from the block's start).
static inline __attribute__((always_inline)) void winograd_input_a(const wino_job *j, size_t first, size_t last,
                                                                   const int alpha) {
    const kiln_conv_shape *s = j->s;
    const size_t cin = (size_t)s->in_c, stride = j->count * cin;  // floats between transformed positions
    for (size_t tl = first; tl < last; tl++) {
        size_t b;
        long oy, ox;
        tile_origin(j, j->t0 + tl, &b, &oy, &ox);
        const long iy0 = oy - s->pad_top, ix0 = ox - s->pad_left;
        const float *image = j->input + b * s->in_h * s->in_w * cin;
        const int interior = iy0 >= 0 && ix0 >= 0 && iy0 + alpha <= s->in_h && ix0 + alpha <= s->in_w;
        int rows_ok[6], cols_ok[6];
        KILN_UNROLL
        for (int i = 0; i < alpha; i++) {
            rows_ok[i] = iy0 + i >= 0 && iy0 + i < s->in_h;
            cols_ok[i] = ix0 + i >= 0 && ix0 + i < s->in_w;
        }
        float *dst = j->v + tl * cin;
        for (size_t c = 0; c < cin; c += 8) {
            __m256 d[6][6], t[6][6];
            KILN_UNROLL
            for (int i = 0; i < alpha; i++)
                KILN_UNROLL
                for (int k = 0; k < alpha; k++) {
                    // The address is formed only for taps inside the image (one outside is not a valid pointer).
                    d[i][k] = interior || (rows_ok[i] && cols_ok[k])
                        ? _mm256_loadu_ps(image + ((size_t)(iy0 + i) * s->in_w + (size_t)(ix0 + k)) * cin + c)
                        : _mm256_setzero_ps();
                }
            if (alpha == 6) {
                KILN_UNROLL
                for (int k = 0; k < 6; k++) {
                    __m256 y[6];
                    BT4(d[0][k], d[1][k], d[2][k], d[3][k], d[4][k], d[5][k], y);
                    KILN_UNROLL
                    for (int i = 0; i < 6; i++) t[i][k] = y[i];
                }
                KILN_UNROLL
                for (int i = 0; i < 6; i++) {
                    __m256 y[6];
                    BT4(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], y);
                    KILN_UNROLL
                    for (int k = 0; k < 6; k++) _mm256_storeu_ps(dst + (size_t)(i * 6 + k) * stride + c, y[k]);
                }
            } else {
                KILN_UNROLL
                for (int k = 0; k < 4; k++) {
                    __m256 y[4];
                    BT2(d[0][k], d[1][k], d[2][k], d[3][k], y);
                    KILN_UNROLL
                    for (int i = 0; i < 4; i++) t[i][k] = y[i];
                }
                KILN_UNROLL
                for (int i = 0; i < 4; i++) {
                    __m256 y[4];
                    BT2(t[i][0], t[i][1], t[i][2], t[i][3], y);
                    KILN_UNROLL
                    for (int k = 0; k < 4; k++) _mm256_storeu_ps(dst + (size_t)(i * 4 + k) * stride + c, y[k]);
                }
            }
        }
    }
}

/// Output tiles [first, last) of the current block: Y = A^T M A + bias (+ residual), relu, clipped to the output.
static inline __attribute__((always_inline)) void winograd_output_a(const wino_job *j, size_t first, size_t last,
                                                                    const int alpha) {
    const kiln_conv_shape *s = j->s;
    const size_t cout = (size_t)s->out_c, npad = j->p.npad, stride = j->count * npad;
    const int m = alpha - 2;
    const __m256 zero = _mm256_setzero_ps();
    for (size_t tl = first; tl < last; tl++) {
        size_t b;
        long oy, ox;
        tile_origin(j, j->t0 + tl, &b, &oy, &ox);
        const int rows = (long)s->out_h - oy < m ? (int)((long)s->out_h - oy) : m;
        const int cols = (long)s->out_w - ox < m ? (int)((long)s->out_w - ox) : m;
        const size_t base = ((b * s->out_h + (size_t)oy) * s->out_w + (size_t)ox) * cout;
        const float *src = j->mm + tl * npad;
        for (size_t c = 0; c < cout; c += 8) {
            __m256 mv[6][6], t[4][6], y[4][4];
            KILN_UNROLL
            for (int i = 0; i < alpha; i++)
                KILN_UNROLL
                for (int k = 0; k < alpha; k++) mv[i][k] = _mm256_loadu_ps(src + (size_t)(i * alpha + k) * stride + c);
            if (alpha == 6) {
                KILN_UNROLL
                for (int k = 0; k < 6; k++) {
                    __m256 r[4];
                    AT4(mv[0][k], mv[1][k], mv[2][k], mv[3][k], mv[4][k], mv[5][k], r);
                    KILN_UNROLL
                    for (int i = 0; i < 4; i++) t[i][k] = r[i];
                }
                KILN_UNROLL
                for (int i = 0; i < 4; i++) {
                    __m256 r[4];
                    AT4(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], r);
                    KILN_UNROLL
                    for (int k = 0; k < 4; k++) y[i][k] = r[k];
                }
            } else {
                KILN_UNROLL
                for (int k = 0; k < 4; k++) {
                    __m256 r[2];
                    AT2(mv[0][k], mv[1][k], mv[2][k], mv[3][k], r);
                    KILN_UNROLL
                    for (int i = 0; i < 2; i++) t[i][k] = r[i];
                }
                KILN_UNROLL
                for (int i = 0; i < 2; i++) {
                    __m256 r[2];
                    AT2(t[i][0], t[i][1], t[i][2], t[i][3], r);
                    KILN_UNROLL
                    for (int k = 0; k < 2; k++) y[i][k] = r[k];
                }
            }
            const __m256 bias = j->bias ? _mm256_loadu_ps(j->bias + c) : zero;
            for (int i = 0; i < rows; i++)
                for (int k = 0; k < cols; k++) {
                    const size_t at = base + ((size_t)i * s->out_w + (size_t)k) * cout + c;
                    __m256 v = _mm256_add_ps(y[i][k], bias);
                    if (j->residual) v = _mm256_add_ps(v, _mm256_loadu_ps(j->residual + at));
                    if (s->relu) v = _mm256_max_ps(v, zero);
                    _mm256_storeu_ps(j->output + at, v);
                }
        }
    }
}

// The transforms with alpha a constant (the tile arrays then live in registers).
static void winograd_input(const wino_job *j, size_t first, size_t last) {
    if (j->p.alpha == 6)
        winograd_input_a(j, first, last, 6);
    else
        winograd_input_a(j, first, last, 4);
}

static void winograd_output(const wino_job *j, size_t first, size_t last) {
    if (j->p.alpha == 6)
        winograd_output_a(j, first, last, 6);
    else
        winograd_output_a(j, first, last, 4);
}

static void winograd_input_task(void *context, size_t index, int thread) {
    (void)thread;
    const wino_job *j = context;
    const size_t first = index * j->tiles_per_task;
    winograd_input(j, first, kiln_min(j->count, first + j->tiles_per_task));
}

static void winograd_output_task(void *context, size_t index, int thread) {
    (void)thread;
    const wino_job *j = context;
    const size_t first = index * j->tiles_per_task;
    winograd_output(j, first, kiln_min(j->count, first + j->tiles_per_task));
}

static void winograd_gemm_task(void *context, size_t index, int thread) {
    (void)thread;
    const wino_job *j = context;
    const size_t xi = index / j->p.pchunks, pc = index % j->p.pchunks;
    const size_t cin = (size_t)j->s->in_c, npad = j->p.npad;
    const kiln_gemm g = {.m = j->count, .n = npad, .k = cin,
                         .b = j->weights + xi * kiln_gemm_packed_floats(cin, npad),
                         .c = j->mm + xi * j->count * npad, .ldc = npad};
    const size_t p0 = pc * j->p.ppc, p1 = kiln_min(j->p.panels, p0 + j->p.ppc);
    kiln_gemm_rows(&g, j->v + xi * j->count * cin, cin, 0, j->count, p0, p1);
}

static void conv_winograd(const kiln_conv_shape *s, const float *input, const float *weights, const float *bias,
                          const float *residual, float *output, float *workspace) {
    const int threads = kiln_threads_get();
    wino_job j = {.s = s, .p = plan_winograd(s, threads), .input = input, .weights = weights, .bias = bias,
                  .residual = residual, .output = output};
    const size_t matrices = (size_t)j.p.alpha * j.p.alpha;
    j.v = workspace;
    j.mm = workspace + matrices * j.p.block * (size_t)s->in_c;
    for (j.t0 = 0; j.t0 < j.p.tiles; j.t0 += j.count) {
        j.count = kiln_min(j.p.block, j.p.tiles - j.t0);
        j.tiles_per_task = kiln_div_up(j.count, (size_t)threads * 4);
        const size_t transform_tasks = kiln_div_up(j.count, j.tiles_per_task);
        kiln_parallel_for(transform_tasks, winograd_input_task, &j);
        kiln_parallel_for(matrices * j.p.pchunks, winograd_gemm_task, &j);
        kiln_parallel_for(transform_tasks, winograd_output_task, &j);
    }
}

// MARK: - Weights

// G for F(2x2, 3x3) (Lavin & Gray) and for F(4x4, 3x3) with the points above; rows = alpha, columns = 3.
static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double G4[6][3] = {
    {1, 0, 0},
    {-1.0 / 3, 1.0 / 3, -1.0 / 3},
    {1.0 / 3, 1.0 / 3, 1.0 / 3},
    {-16.0 / 15, -8.0 / 15, -4.0 / 15},
    {1.0 / 15, -2.0 / 15, 4.0 / 15},
    {0, 0, 1},
};

void kiln_winograd_pack_weights(const float *hwio, size_t cin, size_t cout, int m, size_t ci0, size_t ci1,
                                float *packed) {
    const int alpha = m + 2;
    const double(*G)[3] = m == 2 ? G2 : G4;
    const size_t npad = kiln_round_up(cout, KILN_GEMM_NR);
    const size_t matrix = npad * cin;  // floats per transformed position
    for (size_t ci = ci0; ci < ci1; ci++) {
        // Four output channels at a time, in double: U = (G g) G^T.
        for (size_t co = 0; co < cout; co += 4) {
            __m256d g[3][3], t[6][3];
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++)
                    g[ky][kx] = _mm256_cvtps_pd(_mm_loadu_ps(hwio + ((size_t)(ky * 3 + kx) * cin + ci) * cout + co));
            for (int i = 0; i < alpha; i++)
                for (int kx = 0; kx < 3; kx++)
                    t[i][kx] = _mm256_fmadd_pd(_mm256_set1_pd(G[i][0]), g[0][kx],
                                   _mm256_fmadd_pd(_mm256_set1_pd(G[i][1]), g[1][kx],
                                                   _mm256_mul_pd(_mm256_set1_pd(G[i][2]), g[2][kx])));
            float *panel = packed + co / KILN_GEMM_NR * KILN_GEMM_NR * cin + ci * KILN_GEMM_NR + co % KILN_GEMM_NR;
            for (int i = 0; i < alpha; i++)
                for (int j = 0; j < alpha; j++) {
                    const __m256d u = _mm256_fmadd_pd(t[i][0], _mm256_set1_pd(G[j][0]),
                                          _mm256_fmadd_pd(t[i][1], _mm256_set1_pd(G[j][1]),
                                                          _mm256_mul_pd(t[i][2], _mm256_set1_pd(G[j][2]))));
                    _mm_storeu_ps(panel + (size_t)(i * alpha + j) * matrix, _mm256_cvtpd_ps(u));
                }
        }
        // The last panel's columns past cout read zero.
        for (size_t co = cout; co < npad; co++) {
            float *panel = packed + co / KILN_GEMM_NR * KILN_GEMM_NR * cin + ci * KILN_GEMM_NR + co % KILN_GEMM_NR;
            for (int x = 0; x < alpha * alpha; x++) panel[(size_t)x * matrix] = 0;
        }
    }
}

// MARK: - Entry points

size_t kiln_conv_workspace_floats(const kiln_conv_shape *s, int threads) {
    if (threads < 1) threads = 1;
    return s->algorithm == KILN_CONV_GEMM ? gemm_workspace_floats(s, threads) : winograd_workspace_floats(s, threads);
}

void kiln_conv2d(const kiln_conv_shape *s, const float *input, const float *weights, const float *bias,
                 const float *residual, float *output, float *workspace) {
    if (s->algorithm == KILN_CONV_GEMM)
        conv_gemm(s, input, weights, bias, residual, output, workspace);
    else
        conv_winograd(s, input, weights, bias, residual, output, workspace);
}

#pragma clang attribute pop
