// Elementwise activations y = clamp(f(x), min, max) on AVX2 + FMA (KilnFormat's `Activation`; the function codes
// are `UnaryFunction`'s raw values). The reference is the Double formula in KilnFormat/Activation.swift; the op-test
// driver holds each function here against it.
#include "kiln_internal.h"

#include <math.h>
#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)

// e^x on 8 lanes, within 2 ulp of expf: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two for an exact r), a
// degree-6 polynomial for e^r (Cephes' coefficients), 2^n put into the exponent bits. Clamped to ±88.37, where
// e^x is still finite.
static inline __m256 exp_ps(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.37626f)), _mm256_set1_ps(88.37626f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// tanh on 8 lanes: sign(x) · (1 − 2 / (e^(2|x|) + 1)); absolute error a few ulp of 1 (near 0 the subtraction
// cancels, which leaves an absolute error of ~1e-7 there, within the op tests' bound).
static inline __m256 tanh_ps(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 e = exp_ps(_mm256_add_ps(ax, ax));
    const __m256 t = _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    return _mm256_or_ps(t, _mm256_and_ps(sign, x));
}

// y = f(x) for one vector; each case is a function code of KilnFormat's UnaryFunction. Codes without a vector form
// here (gelu 4, softplus 7) run the scalar loop of activate_range.
static inline __m256 function_ps(int function, __m256 x, __m256 alpha, __m256 beta) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    switch (function) {
    case 0:  // linear
        return _mm256_fmadd_ps(alpha, x, beta);
    case 1:  // sigmoid
        return _mm256_div_ps(one, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(zero, x))));
    case 2:  // tanh
        return tanh_ps(x);
    case 3: {  // elu: beta · (x > 0 ? x : alpha (e^x − 1))
        const __m256 neg = _mm256_mul_ps(alpha, _mm256_sub_ps(exp_ps(_mm256_min_ps(x, zero)), one));
        return _mm256_mul_ps(beta, _mm256_blendv_ps(neg, x, _mm256_cmp_ps(x, zero, _CMP_GT_OQ)));
    }
    case 5: {  // gelu, tanh form
        const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
        return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, tanh_ps(u)));
    }
    case 6:  // swish: x / (1 + e^(−alpha x))
        return _mm256_div_ps(x, _mm256_add_ps(one, exp_ps(_mm256_mul_ps(_mm256_sub_ps(zero, alpha), x))));
    case 8: {  // leaky relu: x ≥ beta ? x : alpha (x − beta)
        const __m256 below = _mm256_mul_ps(alpha, _mm256_sub_ps(x, beta));
        return _mm256_blendv_ps(below, x, _mm256_cmp_ps(x, beta, _CMP_GE_OQ));
    }
    default:
        return x;  // unreachable: activate_range sends the other codes to the scalar loop
    }
}

static inline int has_vector_form(int function) { return function != 4 && function != 7; }

static inline float function_scalar(int function, float x, float alpha, float beta) {
    switch (function) {
    case 0: return alpha * x + beta;
    case 1: return 1.0f / (1.0f + expf(-x));
    case 2: return tanhf(x);
    case 3: return beta * (x > 0 ? x : alpha * expm1f(x));
    case 4: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case 5: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case 6: return x / (1.0f + expf(-alpha * x));
    case 7: return x > 30.0f ? x : log1pf(expf(x));
    case 8: return x >= beta ? x : alpha * (x - beta);
    default: return x;
    }
}

int kiln_activation_supported(int function) {
    return function >= 0 && function <= 8;
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
    for (; has_vector_form(j->function) && i + 8 <= i1; i += 8) {
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
