// The small ops on AVX2: dense (on the unpacked [in, out] weights), max pooling, global average pooling, add.
#include "kiln_internal.h"

#include <math.h>
#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

// MARK: - Dense

// Dense reads every weight once per call, in memory order: each task takes a range of weight rows (input
// features) and all output columns, accumulating partial sums for its rows; the partial sums are added up at
// the end. (Splitting the columns instead would read each 4 KB row in slivers, which the hardware prefetcher
// does not follow: at batch 1 this op is a pure stream of the weights.)
#define KILN_DENSE_PARTIAL_FLOATS (32 * 1024)

typedef struct dense_job {
    const float *x, *w;
    float *partial;  // [tasks][batch][out]
    size_t batch, in, out, rows_per_task;
} dense_job;

static void dense_rows_task(void *context, size_t index, int thread) {
    (void)thread;
    const dense_job *j = context;
    const size_t i0 = index * j->rows_per_task, i1 = kiln_min(j->in, i0 + j->rows_per_task);
    float *y = j->partial + index * j->batch * j->out;
    const size_t out = j->out, vector_end = out / 8 * 8;
    for (size_t k = 0; k < j->batch * out; k++) y[k] = 0;
    // Four weight rows per pass over y: y is read and written once per four rows, not once per row (at batch 1
    // those loads and stores, not the weights, had set the pace; the sums keep the same order).
    size_t i = i0;
    for (; i + 4 <= i1; i += 4) {
        const float *r0 = j->w + i * out, *r1 = r0 + out, *r2 = r1 + out, *r3 = r2 + out;
        for (size_t b = 0; b < j->batch; b++) {
            const float *xb = j->x + b * j->in + i;
            const __m256 x0 = _mm256_set1_ps(xb[0]), x1 = _mm256_set1_ps(xb[1]);
            const __m256 x2 = _mm256_set1_ps(xb[2]), x3 = _mm256_set1_ps(xb[3]);
            float *yb = y + b * out;
            size_t c = 0;
            for (; c < vector_end; c += 8) {
                __m256 acc = _mm256_loadu_ps(yb + c);
                acc = _mm256_fmadd_ps(x0, _mm256_loadu_ps(r0 + c), acc);
                acc = _mm256_fmadd_ps(x1, _mm256_loadu_ps(r1 + c), acc);
                acc = _mm256_fmadd_ps(x2, _mm256_loadu_ps(r2 + c), acc);
                acc = _mm256_fmadd_ps(x3, _mm256_loadu_ps(r3 + c), acc);
                _mm256_storeu_ps(yb + c, acc);
            }
            for (; c < out; c++) {
                float v = yb[c];
                v += xb[0] * r0[c];
                v += xb[1] * r1[c];
                v += xb[2] * r2[c];
                v += xb[3] * r3[c];
                yb[c] = v;
            }
        }
    }
    for (; i < i1; i++) {
        const float *row = j->w + i * out;
        for (size_t b = 0; b < j->batch; b++) {
            const float xv = j->x[b * j->in + i];
            const __m256 x = _mm256_set1_ps(xv);
            float *yb = y + b * out;
            size_t c = 0;
            for (; c < vector_end; c += 8)
                _mm256_storeu_ps(yb + c, _mm256_fmadd_ps(x, _mm256_loadu_ps(row + c), _mm256_loadu_ps(yb + c)));
            for (; c < out; c++) yb[c] += xv * row[c];
        }
    }
}

void kiln_dense(const float *x, const float *w, const float *bias, float *y, size_t batch, size_t in, size_t out,
                int relu) {
    // As many row ranges as threads (at least 64 rows each), while their partial sums fit on the stack.
    size_t tasks = kiln_min((size_t)kiln_threads_get(), kiln_div_up(in, 64));
    while (tasks > 1 && tasks * batch * out > KILN_DENSE_PARTIAL_FLOATS) tasks--;
    float stack_partial[KILN_DENSE_PARTIAL_FLOATS] __attribute__((aligned(64)));
    dense_job j = {.x = x, .w = w, .batch = batch, .in = in, .out = out,
                   .rows_per_task = kiln_div_up(in, tasks)};
    tasks = kiln_div_up(in, j.rows_per_task);
    // One task whose sums would not fit on the stack writes straight into y.
    j.partial = tasks * batch * out <= KILN_DENSE_PARTIAL_FLOATS ? stack_partial : y;
    kiln_parallel_for(tasks, dense_rows_task, &j);
    for (size_t b = 0; b < batch; b++)
        for (size_t c = 0; c < out; c++) {
            float v = j.partial[b * out + c];
            for (size_t t = 1; t < tasks; t++) v += j.partial[(t * batch + b) * out + c];
            if (bias) v += bias[c];
            y[b * out + c] = relu ? (v > 0 ? v : 0) : v;
        }
}

// MARK: - Max pooling

typedef struct pool_job {
    const float *input;
    float *output;
    int32_t batch, in_h, in_w, channels, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left;
} pool_job;

static void maxpool_task(void *context, size_t index, int thread) {
    (void)thread;
    const pool_job *j = context;
    const size_t c = (size_t)j->channels, vector_end = c / 8 * 8;
    const long b = (long)index / j->out_h, oy = (long)index % j->out_h;
    const float *image = j->input + (size_t)b * j->in_h * j->in_w * c;
    const long y0 = oy * j->stride_h - j->pad_top;
    const long ya = y0 < 0 ? 0 : y0, yb = y0 + j->kernel_h < j->in_h ? y0 + j->kernel_h : j->in_h;
    for (long ox = 0; ox < j->out_w; ox++) {
        const long x0 = ox * j->stride_w - j->pad_left;
        const long xa = x0 < 0 ? 0 : x0, xb = x0 + j->kernel_w < j->in_w ? x0 + j->kernel_w : j->in_w;
        float *out = j->output + (((size_t)b * j->out_h + (size_t)oy) * j->out_w + (size_t)ox) * c;
        size_t k = 0;
        for (; k < vector_end; k += 8) {
            // Padded cells never win: start from -inf. max(v, best) keeps best where v is NaN, as the reference.
            __m256 best = _mm256_set1_ps(-INFINITY);
            for (long iy = ya; iy < yb; iy++)
                for (long ix = xa; ix < xb; ix++)
                    best = _mm256_max_ps(_mm256_loadu_ps(image + ((size_t)iy * j->in_w + (size_t)ix) * c + k), best);
            _mm256_storeu_ps(out + k, best);
        }
        for (; k < c; k++) {
            float best = -INFINITY;
            for (long iy = ya; iy < yb; iy++)
                for (long ix = xa; ix < xb; ix++) {
                    const float v = image[((size_t)iy * j->in_w + (size_t)ix) * c + k];
                    best = v > best ? v : best;
                }
            out[k] = best;
        }
    }
}

void kiln_maxpool2d(const float *input, float *output, int32_t batch, int32_t in_h, int32_t in_w, int32_t channels,
                    int32_t out_h, int32_t out_w, int32_t kernel_h, int32_t kernel_w, int32_t stride_h,
                    int32_t stride_w, int32_t pad_top, int32_t pad_left) {
    pool_job j = {input, output, batch, in_h, in_w, channels, out_h, out_w, kernel_h, kernel_w,
                  stride_h, stride_w, pad_top, pad_left};
    kiln_parallel_for((size_t)batch * out_h, maxpool_task, &j);
}

// MARK: - Global average pooling, add

void kiln_global_avgpool(const float *input, float *output, size_t batch, size_t cells, size_t channels) {
    const float scale = 1.0f / (float)cells;
    const size_t vector_end = channels / 8 * 8;
    for (size_t b = 0; b < batch; b++) {
        const float *image = input + b * cells * channels;
        float *out = output + b * channels;
        size_t c = 0;
        for (; c < vector_end; c += 8) {
            __m256 sum = _mm256_setzero_ps();
            for (size_t p = 0; p < cells; p++) sum = _mm256_add_ps(sum, _mm256_loadu_ps(image + p * channels + c));
            _mm256_storeu_ps(out + c, _mm256_mul_ps(sum, _mm256_set1_ps(scale)));
        }
        for (; c < channels; c++) {
            float sum = 0;
            for (size_t p = 0; p < cells; p++) sum += image[p * channels + c];
            out[c] = sum * scale;
        }
    }
}

void kiln_add(const float *a, const float *b, float *output, size_t count, int relu) {
    const __m256 zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        if (relu) v = _mm256_max_ps(v, zero);
        _mm256_storeu_ps(output + i, v);
    }
    for (; i < count; i++) {
        const float v = a[i] + b[i];
        output[i] = relu ? (v > 0 ? v : 0) : v;
    }
}

#pragma clang attribute pop
