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
    size_t piece;       // rows per task of the shared im2col: about m / (4 threads), a 7x7 layer being one block
} gemm_plan;

static gemm_plan plan_gemm(const kiln_conv_shape *s, int threads) {
    gemm_plan p;
    p.m = (size_t)s->batch * s->out_h * s->out_w;
    p.k = (size_t)s->kernel_h * s->kernel_w * s->in_c;
    p.panels = kiln_div_up((size_t)s->out_c, KILN_GEMM_NR);
    size_t blocks = kiln_div_up(p.m, KILN_GEMM_MC);
    // A whole number of blocks per thread where there are a few per thread: each then packs its own im2col rows
    // (kept in its cache) rather than sharing rows another thread wrote.
    if (threads > 1 && blocks >= (size_t)threads * 2 && blocks < (size_t)threads * 8)
        blocks = kiln_round_up(blocks, (size_t)threads);
    p.mc = kiln_round_up(kiln_div_up(p.m, blocks), 6);
    p.mblocks = kiln_div_up(p.m, p.mc);
    const size_t wanted = threads > 1 ? (size_t)threads * 4 : 1;
    size_t chunks = p.mblocks >= wanted ? 1 : kiln_min(p.panels, kiln_div_up(wanted, p.mblocks));
    p.ppc = kiln_div_up(p.panels, chunks);
    p.pchunks = kiln_div_up(p.panels, p.ppc);
    p.shared_im2col = !is_pointwise(s) && p.pchunks > 1;
    p.piece = kiln_div_up(p.m, kiln_min(p.m, wanted));
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
    const size_t row0 = index * j->p.piece, rows = kiln_min(j->p.piece, j->p.m - row0);
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
                      .ldc = s->out_stride > 0 ? (size_t)s->out_stride : (size_t)s->out_c, .bias = bias, .residual = residual, .ldr = (size_t)s->out_c,
                      .relu = s->relu, .has_max = s->has_max, .max = s->max_value};
    if (j.p.shared_im2col) kiln_parallel_for(kiln_div_up(j.p.m, j.p.piece), conv_gemm_im2col_task, &j);
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
    // A block's V and M fill about 2 MiB, or as much as the transformed weights where those are larger: every
    // block streams all of U from memory, so that past that size, more blocks cost more than the caches save
    // (F(4,3) on 256 channels at batch 8: 5 blocks read U's 9.4 MB five times).
    const size_t weights = (size_t)p.alpha * p.alpha * (size_t)s->in_c * p.npad;
    const size_t target = weights > KILN_WINOGRAD_BLOCK_FLOATS ? weights : KILN_WINOGRAD_BLOCK_FLOATS;
    size_t block = kiln_round_up(target / per_tile + 1, 6);
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
    int wide;             // transforms on 16 channels (AVX-512; in_c and out_c multiples of 16)
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

static inline void tile_origin(const wino_job *j, size_t t, size_t *b, long *y0, long *x0) {
    const size_t per_image = j->p.tiles_h * j->p.tiles_w;
    *b = t / per_image;
    const size_t r = t % per_image;
    *y0 = (long)(r / j->p.tiles_w) * j->p.m;
    *x0 = (long)(r % j->p.tiles_w) * j->p.m;
}

// The transforms on 8 channels at a time (any CPU with AVX2 + FMA).
#define VEC __m256
#define VLANES 8
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VFMADD _mm256_fmadd_ps
#define VFNMADD _mm256_fnmadd_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VMAX _mm256_max_ps
#define VMIN _mm256_min_ps
#define WINOGRAD_NAME(name) name##_8
#include "winograd_transforms.h"

// And on 16 channels at a time, where the CPU has AVX-512 and the channels are multiples of 16: half the
// instructions, the same arithmetic in the same order per channel (so the same results, bit for bit).
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#define VEC __m512
#define VLANES 16
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VFMADD _mm512_fmadd_ps
#define VFNMADD _mm512_fnmadd_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VMAX _mm512_max_ps
#define VMIN _mm512_min_ps
#define WINOGRAD_NAME(name) name##_16
#include "winograd_transforms.h"
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

// 16 channels at a time where the plan says so.
static void winograd_input(const wino_job *j, size_t first, size_t last) {
    if (j->wide)
        winograd_input_16(j, first, last);
    else
        winograd_input_8(j, first, last);
}

static void winograd_output(const wino_job *j, size_t first, size_t last) {
    if (j->wide)
        winograd_output_16(j, first, last);
    else
        winograd_output_8(j, first, last);
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
                  .residual = residual, .output = output,
                  .wide = kiln_cpu_has_avx512() && s->in_c % 16 == 0 && s->out_c % 16 == 0};
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
