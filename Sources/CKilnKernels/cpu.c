// Run-time CPU feature detection: the AVX2 + FMA kernels are only called where this says yes.
// KILN_CPU=portable in the environment says no on any CPU (to run, and test, the portable path); KILN_CPU=avx2
// keeps the AVX2 kernels but turns the AVX-512 GEMM off.
#include "CKilnKernels.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static int detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const unsigned fma = 1u << 12, osxsave = 1u << 27, avx = 1u << 28;
    if ((c & fma) == 0 || (c & osxsave) == 0 || (c & avx) == 0) return 0;
    // The OS must save the YMM state (XCR0 bits 1 and 2), else AVX registers are not usable.
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6u) != 6u) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const unsigned avx2 = 1u << 5;
    return (b & avx2) != 0;
}

static int detect512(void) {
    unsigned a, b, c, d;
    if (!detect()) return 0;
    // XCR0: opmask, upper halves of zmm0-15, and zmm16-31 (bits 5, 6, 7) saved by the OS.
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const unsigned avx512f = 1u << 16;
    return (b & avx512f) != 0;
}
#else
static int detect(void) { return 0; }
static int detect512(void) { return 0; }
#endif

int kiln_cpu_has_avx2_fma(void) {
    static int cached = -1;  // a benign race: every thread computes the same value
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *forced = getenv("KILN_CPU");
        v = forced && strcmp(forced, "portable") == 0 ? 0 : detect();
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

int kiln_cpu_has_avx512(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *forced = getenv("KILN_CPU");
        v = forced && (strcmp(forced, "portable") == 0 || strcmp(forced, "avx2") == 0) ? 0 : detect512();
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

// MARK: - Denormals

#if defined(__x86_64__)
#include <xmmintrin.h>
// MXCSR bits: flush-to-zero (results) and denormals-are-zero (inputs).
#define KILN_MXCSR_FTZ (1u << 15)
#define KILN_MXCSR_DAZ (1u << 6)

unsigned kiln_flush_denormals(void) {
    const unsigned previous = _mm_getcsr();
    _mm_setcsr(previous | KILN_MXCSR_FTZ | KILN_MXCSR_DAZ);
    return previous;
}

void kiln_restore_float_mode(unsigned mode) { _mm_setcsr(mode); }

unsigned kiln_float_mode(void) { return _mm_getcsr(); }
#else
unsigned kiln_flush_denormals(void) { return 0; }
void kiln_restore_float_mode(unsigned mode) { (void)mode; }
unsigned kiln_float_mode(void) { return 0; }
#endif
