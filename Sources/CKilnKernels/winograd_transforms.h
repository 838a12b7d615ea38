// The Winograd input and output transforms, written once for a vector type and included by conv_avx2.c once per
// instruction set (8 lanes of AVX2, 16 of AVX-512), inside that set's target region. The includer defines VEC,
// VLANES, the V* operations and WINOGRAD_NAME (which suffixes the function names: winograd_input_8, ...);
// channel counts must be multiples of VLANES. Everything is undefined again at the end.

// The 1-D input transforms B^T x, on VLANES channels at a time.
#define BT4(x0, x1, x2, x3, x4, x5, y)                                                                         \
    do {                                                                                                       \
        const VEC d31 = VSUB(x3, x1), d42 = VSUB(x4, x2);                                 \
        const VEC half = VSET1(0.5f), three_halves = VSET1(1.5f);                         \
        const VEC two = VSET1(2), five_halves = VSET1(2.5f);                              \
        y[0] = VFMADD(three_halves, d31, VFNMADD(two, x2, VADD(x0, x4)));           \
        y[1] = VFMADD(half, x3, VFNMADD(five_halves, x2, VADD(x1, x4)));            \
        y[2] = VFMADD(five_halves, x3, VFMADD(half, x2, VSUB(x4, x1)));             \
        y[3] = VFMADD(two, d31, d42);                                                                 \
        y[4] = VFNMADD(half, d31, d42);                                                               \
        y[5] = VFMADD(three_halves, d42, VFNMADD(two, x3, VADD(x1, x5)));           \
    } while (0)

#define BT2(x0, x1, x2, x3, y)                                                                                 \
    do {                                                                                                       \
        y[0] = VSUB(x0, x2);                                                                          \
        y[1] = VADD(x1, x2);                                                                          \
        y[2] = VSUB(x2, x1);                                                                          \
        y[3] = VSUB(x1, x3);                                                                          \
    } while (0)

// The 1-D output transforms A^T x.
#define AT4(x0, x1, x2, x3, x4, x5, y)                                                                         \
    do {                                                                                                       \
        const VEC s12 = VADD(x1, x2), d21 = VSUB(x2, x1);                                 \
        y[0] = VADD(VADD(x0, s12), VADD(x3, x4));                                   \
        y[1] = VFMADD(VSET1(0.5f), x3, VFNMADD(VSET1(2), x4, d21));        \
        y[2] = VFMADD(VSET1(0.25f), x3, VFMADD(VSET1(4), x4, s12));        \
        y[3] = VFMADD(VSET1(0.125f), x3,                                                     \
                               VFNMADD(VSET1(8), x4, VADD(d21, x5)));               \
    } while (0)

#define AT2(x0, x1, x2, x3, y)                                                                                 \
    do {                                                                                                       \
        y[0] = VADD(VADD(x0, x1), x2);                                                       \
        y[1] = VSUB(VSUB(x1, x2), x3);                                                       \
    } while (0)

/// V[xi][tl][c ..< c + VLANES] for the tiles [first, last) of the current block (tl counted from the block's start).
static inline __attribute__((always_inline)) void WINOGRAD_NAME(winograd_input_a)(const wino_job *j, size_t first, size_t last,
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
        for (size_t c = 0; c < cin; c += VLANES) {
            VEC d[6][6], t[6][6];
            KILN_UNROLL
            for (int i = 0; i < alpha; i++)
                KILN_UNROLL
                for (int k = 0; k < alpha; k++) {
                    // The address is formed only for taps inside the image (one outside is not a valid pointer).
                    d[i][k] = interior || (rows_ok[i] && cols_ok[k])
                        ? VLOAD(image + ((size_t)(iy0 + i) * s->in_w + (size_t)(ix0 + k)) * cin + c)
                        : VZERO();
                }
            if (alpha == 6) {
                KILN_UNROLL
                for (int k = 0; k < 6; k++) {
                    VEC y[6];
                    BT4(d[0][k], d[1][k], d[2][k], d[3][k], d[4][k], d[5][k], y);
                    KILN_UNROLL
                    for (int i = 0; i < 6; i++) t[i][k] = y[i];
                }
                KILN_UNROLL
                for (int i = 0; i < 6; i++) {
                    VEC y[6];
                    BT4(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], y);
                    KILN_UNROLL
                    for (int k = 0; k < 6; k++) VSTORE(dst + (size_t)(i * 6 + k) * stride + c, y[k]);
                }
            } else {
                KILN_UNROLL
                for (int k = 0; k < 4; k++) {
                    VEC y[4];
                    BT2(d[0][k], d[1][k], d[2][k], d[3][k], y);
                    KILN_UNROLL
                    for (int i = 0; i < 4; i++) t[i][k] = y[i];
                }
                KILN_UNROLL
                for (int i = 0; i < 4; i++) {
                    VEC y[4];
                    BT2(t[i][0], t[i][1], t[i][2], t[i][3], y);
                    KILN_UNROLL
                    for (int k = 0; k < 4; k++) VSTORE(dst + (size_t)(i * 4 + k) * stride + c, y[k]);
                }
            }
        }
    }
}

/// Output tiles [first, last) of the current block: Y = A^T M A + bias (+ residual), relu, clipped to the output.
static inline __attribute__((always_inline)) void WINOGRAD_NAME(winograd_output_a)(const wino_job *j, size_t first, size_t last,
                                                                    const int alpha) {
    const kiln_conv_shape *s = j->s;
    const size_t cout = (size_t)s->out_c, npad = j->p.npad, stride = j->count * npad;
    const size_t out_stride = s->out_stride > 0 ? (size_t)s->out_stride : cout;
    const int m = alpha - 2;
    const VEC zero = VZERO();
    for (size_t tl = first; tl < last; tl++) {
        size_t b;
        long oy, ox;
        tile_origin(j, j->t0 + tl, &b, &oy, &ox);
        const int rows = (long)s->out_h - oy < m ? (int)((long)s->out_h - oy) : m;
        const int cols = (long)s->out_w - ox < m ? (int)((long)s->out_w - ox) : m;
        const size_t pixel0 = (b * s->out_h + (size_t)oy) * s->out_w + (size_t)ox;
        const float *src = j->mm + tl * npad;
        for (size_t c = 0; c < cout; c += VLANES) {
            VEC mv[6][6], t[4][6], y[4][4];
            KILN_UNROLL
            for (int i = 0; i < alpha; i++)
                KILN_UNROLL
                for (int k = 0; k < alpha; k++) mv[i][k] = VLOAD(src + (size_t)(i * alpha + k) * stride + c);
            if (alpha == 6) {
                KILN_UNROLL
                for (int k = 0; k < 6; k++) {
                    VEC r[4];
                    AT4(mv[0][k], mv[1][k], mv[2][k], mv[3][k], mv[4][k], mv[5][k], r);
                    KILN_UNROLL
                    for (int i = 0; i < 4; i++) t[i][k] = r[i];
                }
                KILN_UNROLL
                for (int i = 0; i < 4; i++) {
                    VEC r[4];
                    AT4(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], r);
                    KILN_UNROLL
                    for (int k = 0; k < 4; k++) y[i][k] = r[k];
                }
            } else {
                KILN_UNROLL
                for (int k = 0; k < 4; k++) {
                    VEC r[2];
                    AT2(mv[0][k], mv[1][k], mv[2][k], mv[3][k], r);
                    KILN_UNROLL
                    for (int i = 0; i < 2; i++) t[i][k] = r[i];
                }
                KILN_UNROLL
                for (int i = 0; i < 2; i++) {
                    VEC r[2];
                    AT2(t[i][0], t[i][1], t[i][2], t[i][3], r);
                    KILN_UNROLL
                    for (int k = 0; k < 2; k++) y[i][k] = r[k];
                }
            }
            const VEC bias = j->bias ? VLOAD(j->bias + c) : zero;
            for (int i = 0; i < rows; i++)
                for (int k = 0; k < cols; k++) {
                    const size_t pixel = pixel0 + (size_t)i * s->out_w + (size_t)k;
                    VEC v = VADD(y[i][k], bias);
                    if (j->residual) v = VADD(v, VLOAD(j->residual + pixel * cout + c));
                    if (s->relu) v = VMAX(v, zero);
                    if (s->has_max) v = VMIN(v, VSET1(s->max_value));
                    VSTORE(j->output + pixel * out_stride + c, v);
                }
        }
    }
}

// With alpha a constant (the tile arrays then live in registers).
static void WINOGRAD_NAME(winograd_input)(const wino_job *j, size_t first, size_t last) {
    if (j->p.alpha == 6)
        WINOGRAD_NAME(winograd_input_a)(j, first, last, 6);
    else
        WINOGRAD_NAME(winograd_input_a)(j, first, last, 4);
}

static void WINOGRAD_NAME(winograd_output)(const wino_job *j, size_t first, size_t last) {
    if (j->p.alpha == 6)
        WINOGRAD_NAME(winograd_output_a)(j, first, last, 6);
    else
        WINOGRAD_NAME(winograd_output_a)(j, first, last, 4);
}

#undef BT4
#undef BT2
#undef AT4
#undef AT2
#undef VEC
#undef VLANES
#undef VADD
#undef VSUB
#undef VFMADD
#undef VFNMADD
#undef VSET1
#undef VZERO
#undef VLOAD
#undef VSTORE
#undef VMAX
#undef VMIN
#undef WINOGRAD_NAME
