// Sizes of packed weights (plain C, any CPU).
#include "CKilnKernels.h"

size_t kiln_gemm_packed_floats(size_t k, size_t n) {
    return (n + KILN_GEMM_NR - 1) / KILN_GEMM_NR * KILN_GEMM_NR * k;
}

size_t kiln_winograd_packed_floats(int m, size_t cin, size_t cout) {
    const size_t alpha = (size_t)m + 2;
    return alpha * alpha * kiln_gemm_packed_floats(cin, cout);
}

