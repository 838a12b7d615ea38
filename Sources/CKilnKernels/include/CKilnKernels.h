// CKilnKernels: the x86-64 AVX2 + FMA microkernels behind KilnKernels.FastKernels, and the thread pool they
// run on. Only KilnKernels calls these; C types never appear in its public API.
//
// Built without any ISA flags: every function that uses AVX2/FMA carries `target("avx2,fma")` itself, so the
// same binary runs everywhere and `kiln_cpu_has_avx2_fma()` decides at run time whether they may be called.
// All tensors are NHWC float32, contiguous, row-major.
#ifndef CKILN_KERNELS_H
#define CKILN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - CPU features

/// 1 when the CPU and the OS support AVX2 and FMA (cpuid + xgetbv), else 0; always 0 when the environment has
/// KILN_CPU=portable. Cached after the first call.
int kiln_cpu_has_avx2_fma(void);
/// 1 when, besides AVX2 + FMA, the CPU and the OS support AVX-512F (zmm and opmask state saved): the GEMM then
/// runs on 16-float registers. 0 when KILN_CPU is `portable` or `avx2`. Cached after the first call.
int kiln_cpu_has_avx512(void);

// MARK: - Floating-point mode

/// Sets flush-to-zero and denormals-are-zero on the calling thread (x86-64 MXCSR; nothing elsewhere) and returns
/// the mode before, for kiln_restore_float_mode. Arithmetic on denormal floats runs a hundred times slower on x86;
/// TensorFlow trains with them flushed too. The pool's workers take the caller's mode for each job.
unsigned kiln_flush_denormals(void);
/// Restores a mode kiln_flush_denormals returned, on the calling thread.
void kiln_restore_float_mode(unsigned mode);
/// The calling thread's floating-point mode (MXCSR on x86-64, else 0).
unsigned kiln_float_mode(void);

// MARK: - Thread pool

/// Sets the number of threads the kernels use (the caller plus count - 1 workers), 1...64. Not during a call.
void kiln_threads_set(int count);
/// The number of threads the kernels use.
int kiln_threads_get(void);
/// Runs `task(context, i, thread)` for every i < count on the pool (the caller takes part) and returns when all
/// are done. `thread` is in 0 ..< kiln_threads_get(). Calls must not nest.
void kiln_parallel_for(size_t count, void (*task)(void *context, size_t index, int thread), void *context);

// MARK: - Weight packing

/// Column panels the GEMM microkernel reads B in.
#define KILN_GEMM_NR 16

/// Floats of a B matrix [k, n] packed into 16-column panels: ceil(n / 16) * 16 * k. Panel j holds columns
/// 16j ..< 16j+16 as [k][16], columns past n zero.
size_t kiln_gemm_packed_floats(size_t k, size_t n);
/// (AVX2 + FMA only.) Packs the panels [p0, p1) of row-major B [k, n] (row stride ldb) into `packed` (the whole
/// packed matrix; each panel at p * 16 * k). The whole is p0 = 0, p1 = ceil(n / 16).
void kiln_gemm_pack_b(const float *b, size_t k, size_t n, size_t ldb, size_t p0, size_t p1, float *packed);

/// Floats of 3x3 weights transformed for Winograd F(m x m, 3 x 3), m = 2 or 4: (m+2)^2 packed [cin, cout] panels.
size_t kiln_winograd_packed_floats(int m, size_t cin, size_t cout);
/// (AVX2 + FMA only.) Transforms HWIO weights [3, 3, cin, cout] (cout a multiple of 8) to U = G g G^T per
/// (cin, cout), in double precision, stored as (m+2)^2 matrices [cin, cout] (one per transformed position), each
/// in 16-column panels (zero past cout). Writes the rows [ci0, ci1) of every matrix, so that callers can split
/// the work; the whole is ci0 = 0, ci1 = cin.
void kiln_winograd_pack_weights(const float *hwio, size_t cin, size_t cout, int m, size_t ci0, size_t ci1,
                                float *packed);

// MARK: - Convolution (AVX2 + FMA only)

enum {
    KILN_CONV_GEMM = 0,        // pointwise: sgemm on the NHWC rows; otherwise im2col blocks + sgemm
    KILN_CONV_WINOGRAD_2 = 2,  // F(2x2, 3x3): 3x3, stride 1, dilation 1, cin and cout multiples of 8
    KILN_CONV_WINOGRAD_4 = 4,  // F(4x4, 3x3): same conditions
};

/// The shape of one convolution call; output size and padding already resolved.
typedef struct kiln_conv_shape {
    int32_t batch, in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
    int32_t algorithm;  // KILN_CONV_*
    int32_t relu;       // 1: max(x, 0) after bias and residual
    int32_t out_stride; // floats from one output pixel to the next (a slice of a wider tensor); 0: out_c. The
                        // residual stays contiguous (out_c apart) and must then not be the output.
    int32_t has_max;    // 1: min(x, max_value) after relu (ReLU6: relu and max_value 6)
    float max_value;
} kiln_conv_shape;

/// Floats of workspace kiln_conv2d needs for `shape` with `threads` threads.
size_t kiln_conv_workspace_floats(const kiln_conv_shape *shape, int threads);
/// output = relu?(conv(input, weights) + bias + residual), then min(x, max_value) when has_max. `weights` packed for shape->algorithm: the HWIO weights
/// seen as [kh*kw*cin, cout] packed by kiln_gemm_pack_b, or kiln_winograd_pack_weights'; bias [out_c] or NULL;
/// residual [batch, out_h, out_w, out_c] or NULL, and may be exactly `output`; workspace of
/// kiln_conv_workspace_floats(shape, kiln_threads_get()) floats, 64-byte aligned. Runs on the pool.
void kiln_conv2d(const kiln_conv_shape *shape, const float *input, const float *weights, const float *bias,
                 const float *residual, float *output, float *workspace);

/// (AVX2 + FMA only.) C [m, n] = op(A) · op(B) + beta · C, all row-major and contiguous: op(A) is A [m, k], or the
/// transpose of A [k, m] when trans_a; op(B) is B [k, n], or the transpose of B [n, k] when trans_b. B is packed
/// (and a transposed operand copied) on every call, into memory allocated for the call; the product runs on the
/// pool as a pointwise convolution does. For the training of small heads, whose operands change every step.
/// Returns 0, or -1 when memory for the copies cannot be had (C untouched).
int kiln_sgemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, const float *a, const float *b, float beta,
               float *c);

/// y = relu?(x · w + bias): x [batch, in], w row-major [in, out] (unpacked), bias [out] or NULL, y [batch, out].
void kiln_dense(const float *x, const float *w, const float *bias, float *y, size_t batch, size_t in, size_t out,
                int relu);

/// Max pooling over NHWC with explicit padding (padded cells never win); runs on the pool.
void kiln_maxpool2d(const float *input, float *output, int32_t batch, int32_t in_h, int32_t in_w, int32_t channels,
                    int32_t out_h, int32_t out_w, int32_t kernel_h, int32_t kernel_w, int32_t stride_h,
                    int32_t stride_w, int32_t pad_top, int32_t pad_left);
/// Mean over H and W: [batch, cells, channels] → [batch, channels].
void kiln_global_avgpool(const float *input, float *output, size_t batch, size_t cells, size_t channels);
/// output[i] = relu?(a[i] + b[i]); output may be a or b.
void kiln_add(const float *a, const float *b, float *output, size_t count, int relu);

/// (AVX2 + FMA only.) y[i] = min(max(f(x[i]), min), max) for i < count, f the function of code `function`
/// (KilnFormat's UnaryFunction raw values) with parameters alpha, beta; y may be exactly x. Large counts run on
/// the pool. Call only for codes kiln_activation_supported accepts.
void kiln_activate(const float *x, float *y, size_t count, int function, float alpha, float beta, float min,
                   float max);
/// 1 when kiln_activate computes the function code (a vector loop, or libm per element for gelu and softplus), else 0.
int kiln_activation_supported(int function);

// MARK: - Grouped and depthwise convolution (conv_grouped.c; AVX2 + FMA only)

/// A depthwise convolution with multiplier 1 (channel c of the output reads channel c of the input only), NHWC
/// with explicit pixel strides, so that the input and the output may be channel slices of wider tensors.
typedef struct kiln_dwconv_shape {
    int32_t batch, in_h, in_w, channels, out_h, out_w;
    int32_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
    int64_t in_pixel_stride, out_pixel_stride, residual_pixel_stride;  // floats from one pixel to the next
    float alpha, beta, min, max;  // y = min(max(alpha * (conv + bias + residual) + beta, min), max)
} kiln_dwconv_shape;

/// Floats of depthwise weights packed by kiln_dwconv_pack: (cells + 1) rows of channels rounded up to 16.
size_t kiln_dwconv_packed_floats(size_t cells, size_t channels);
/// Packs depthwise weights [cells = kh * kw][channels] (HWIO with I = 1) and bias [channels] (or NULL: zero) as
/// [bias; weights], each row `channels` rounded up to 16, zero past the channels.
void kiln_dwconv_pack(const float *weights, const float *bias, size_t cells, size_t channels, float *packed);
/// output = min(max(alpha * (dwconv(input) + bias + residual) + beta, min), max), the weights and bias packed by
/// kiln_dwconv_pack; residual NULL or [batch, out_h, out_w] pixels of its own stride (may be exactly output when
/// the strides agree). AVX-512 where kiln_cpu_has_avx512(), else AVX2. Runs on the pool.
void kiln_dwconv2d(const kiln_dwconv_shape *shape, const float *input, const float *packed, const float *residual,
                   float *output);

/// Floats of grouped-convolution weights packed by kiln_grouped_conv_pack: `groups` GEMM B matrices [k, group_out]
/// (k = kh * kw * in_c / groups) in 16-column panels.
size_t kiln_grouped_conv_packed_floats(size_t k, size_t group_out, size_t groups);
/// Packs the groups [g0, g1) of HWIO weights [kh, kw, in_c / groups, groups * group_out] (seen as [k, out_c]):
/// group g's B is the columns g * group_out ..< (g + 1) * group_out.
void kiln_grouped_conv_pack(const float *hwio, size_t k, size_t group_out, size_t groups, size_t g0, size_t g1,
                            float *packed);
/// Floats of workspace kiln_grouped_conv2d needs with `threads` threads.
size_t kiln_grouped_conv_workspace_floats(const kiln_conv_shape *shape, int groups, int threads);
/// output = relu?(grouped conv(input) + bias + residual): per group, im2col of its input channels and a GEMM
/// into its output columns. shape->algorithm is ignored; residual may be exactly output. Runs on the pool.
void kiln_grouped_conv2d(const kiln_conv_shape *shape, int groups, const float *input, const float *weights,
                         const float *bias, const float *residual, float *output, float *workspace);

/// 1 when kiln_small_groups_conv2d takes this grouping: AVX-512, in_c = out_c a multiple of 16, groups of g
/// channels with 2 <= g dividing 16 (ResNeXt's groups of 4, 8, 16).
int kiln_small_groups_supported(int in_c, int out_c, int groups);
/// The grouped convolution for small groups, output channels in the 16 lanes, on the HWIO weights as stored
/// [kh, kw, g, out_c]; relu and max_value from the shape, residual contiguous (may be exactly output without
/// out_stride). Runs on the pool.
void kiln_small_groups_conv2d(const kiln_conv_shape *shape, int groups, const float *input, const float *hwio,
                              const float *bias, const float *residual, float *output);

// MARK: - Memory

/// `bytes` of 64-byte-aligned memory (zeroed when freshly mapped); buffers of 4 MiB and more are mapped on a
/// 2 MiB boundary and marked for transparent huge pages. NULL when out of memory. Free with kiln_large_free.
void *kiln_large_alloc(size_t bytes);
/// Frees what kiln_large_alloc(bytes) returned.
void kiln_large_free(void *pointer, size_t bytes);

/// 1 when [pointer, pointer + bytes) lies inside one read-only, file-backed mapping (a bundle's weights): memory
/// that cannot change while it stays mapped. 0 otherwise or on any doubt.
int kiln_is_readonly_file_mapping(const void *pointer, size_t bytes);
/// Hands the pages of [pointer, pointer + bytes) back to the OS when, and only when, the range lies in a read-only
/// file mapping (their contents stay valid: a later read maps them again from the page cache). Rounds out to
/// whole 2 MiB pages within the mapping, since the page cache may map the file in 2 MiB folios: neighbouring
/// data in the same mapping may be dropped too, just as harmlessly. Returns 1 when released, 0 when the range is
/// not (entirely) such a mapping or on any doubt.
int kiln_release_file_pages(const void *pointer, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
