// Elementwise activations y = clamp(f(x), min, max) on AVX2 + FMA (KilnFormat's `Activation`; the function codes
// are `UnaryFunction`'s raw values). The reference is the Double formula in KilnFormat/Activation.swift; the op-test
// driver holds each function here against it.
#include "kiln_internal.h"

#include <math.h>
#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

// y = f(x) for one vector; each case is a function code of KilnFormat's UnaryFunction.
static inline __m256 function_ps(int function, __m256 x, __m256 alpha, __m256 beta) {
    switch (function) {
    case 0:  // linear
        return _mm256_fmadd_ps(alpha, x, beta);
    default:
        return x;  // unreachable: kiln_activate checks the code first
    }
}

static inline float function_scalar(int function, float x, float alpha, float beta) {
    switch (function) {
    case 0: return alpha * x + beta;
    default: return x;
    }
}

int kiln_activation_supported(int function) {
    switch (function) {
    case 0: return 1;
    default: return 0;
    }
}

typedef struct activate_job {
    const float *x;
    float *y;
    size_t count, per_task;
    int function;
    float alpha, beta, min, max;
} activate_job;

static void activate_range(const activate_job *j, size_t i0, size_t i1) {
    const __m256 alpha = _mm256_set1_ps(j->alpha), beta = _mm256_set1_ps(j->beta);
    const __m256 lo = _mm256_set1_ps(j->min), hi = _mm256_set1_ps(j->max);
    // A finite bound replaces NaN (max/min return their second operand then); an infinite one is skipped.
    const int has_lo = j->min > -INFINITY, has_hi = j->max < INFINITY;
    size_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        __m256 v = function_ps(j->function, _mm256_loadu_ps(j->x + i), alpha, beta);
        if (has_lo) v = _mm256_max_ps(v, lo);
        if (has_hi) v = _mm256_min_ps(v, hi);
        _mm256_storeu_ps(j->y + i, v);
    }
    for (; i < i1; i++) {
        float v = function_scalar(j->function, j->x[i], j->alpha, j->beta);
        if (has_lo) v = v > j->min ? v : j->min;
        if (has_hi) v = v < j->max ? v : j->max;
        j->y[i] = v;
    }
}

static void activate_task(void *context, size_t index, int thread) {
    (void)thread;
    const activate_job *j = context;
    const size_t i0 = index * j->per_task;
    activate_range(j, i0, kiln_min(j->count, i0 + j->per_task));
}

void kiln_activate(const float *x, float *y, size_t count, int function, float alpha, float beta, float min,
                   float max) {
    // 64 Ki elements per task: below that the pool's hand-off costs more than the arithmetic.
    const size_t per_task = 64 * 1024;
    activate_job j = {.x = x, .y = y, .count = count, .per_task = per_task, .function = function,
                      .alpha = alpha, .beta = beta, .min = min, .max = max};
    const size_t tasks = kiln_div_up(count, per_task);
    if (tasks <= 1) {
        activate_range(&j, 0, count);
        return;
    }
    kiln_parallel_for(tasks, activate_task, &j);
}

#pragma clang attribute pop
