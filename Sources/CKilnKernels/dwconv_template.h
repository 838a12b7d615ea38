// The depthwise convolution row kernel, written once for a vector width and included by conv_grouped.c twice:
// for AVX-512 (16 lanes) and for AVX2 (8 lanes). The includer defines
//   DW_NAME(x)        the function name for this width
//   DW_LANES          floats per vector
//   DW_V              the vector type
//   DW_MASK           the type of a lane mask; DW_MASK_FIRST(n) the mask of the first n lanes
//   DW_LOAD(p)        an unaligned load;  DW_LOAD_TAIL(p)  a load of the lanes of `tail_mask` (others zero)
//   DW_STORE(p, v)    an unaligned store; DW_STORE_TAIL(p, v) a store of the lanes of `tail_mask`
//   DW_FMA, DW_ADD, DW_MAX, DW_MIN, DW_SET1
// Not a header of its own: no include guard, and it uses the includer's static helpers.

// Rows of P output pixels times NC vectors of channels starting at channel c: one accumulator each (P * NC
// independent chains, enough to keep the FMA units busy), every weight vector loaded once for the P pixels.
// The kernel columns [kx0, kx1) are inside the input for all P pixels; tail: the last vector holds fewer lanes.
static inline __attribute__((always_inline)) void DW_NAME(block)(
    const int P, const int NC, const int tail, const kiln_dwconv_shape *s, const dw_row_context *r, size_t ox,
    size_t c, int kx0, int kx1, DW_MASK tail_mask) {
    DW_V acc[4][2];
    KILN_UNROLL
    for (int j = 0; j < NC; j++) {
        const DW_V bias = DW_LOAD(r->bias + c + j * DW_LANES);
        KILN_UNROLL
        for (int p = 0; p < P; p++) acc[p][j] = bias;
    }
    const long x0 = (long)ox * s->stride_w - s->pad_left;
    for (int ky = r->ky0; ky < r->ky1; ky++) {
        const float *line = r->image + (size_t)(r->iy0 + (long)ky * s->dilation_h) * s->in_w * r->in_stride + c;
        const float *wrow = r->weights + (size_t)ky * s->kernel_w * r->cpad + c;
        for (int kx = kx0; kx < kx1; kx++) {
            const float *cell = line + (size_t)(x0 + (long)kx * s->dilation_w) * r->in_stride;
            const float *w = wrow + (size_t)kx * r->cpad;
            KILN_UNROLL
            for (int j = 0; j < NC; j++) {
                const DW_V wv = DW_LOAD(w + j * DW_LANES);
                KILN_UNROLL
                for (int p = 0; p < P; p++) {
                    const float *x = cell + (size_t)p * s->stride_w * r->in_stride + j * DW_LANES;
                    const DW_V xv = (tail && j == NC - 1) ? DW_LOAD_TAIL(x) : DW_LOAD(x);
                    acc[p][j] = DW_FMA(xv, wv, acc[p][j]);
                }
            }
        }
    }
    KILN_UNROLL
    for (int p = 0; p < P; p++) {
        float *o = r->out_row + (ox + p) * r->out_stride + c;
        const float *res = r->res_row ? r->res_row + (ox + p) * r->res_stride + c : 0;
        KILN_UNROLL
        for (int j = 0; j < NC; j++) {
            const int partial = tail && j == NC - 1;
            DW_V v = acc[p][j];
            if (res) v = DW_ADD(v, partial ? DW_LOAD_TAIL(res + j * DW_LANES) : DW_LOAD(res + j * DW_LANES));
            if (r->affine) v = DW_FMA(DW_SET1(s->alpha), v, DW_SET1(s->beta));
            if (r->has_min) v = DW_MAX(v, DW_SET1(s->min));
            if (r->has_max) v = DW_MIN(v, DW_SET1(s->max));
            if (partial)
                DW_STORE_TAIL(o + j * DW_LANES, v);
            else
                DW_STORE(o + j * DW_LANES, v);
        }
    }
}

// Every channel of P pixels at ox.
static inline __attribute__((always_inline)) void DW_NAME(pixels)(const int P, const kiln_dwconv_shape *s,
                                                                 const dw_row_context *r, size_t ox, int kx0,
                                                                 int kx1) {
    const size_t channels = (size_t)s->channels;
    const DW_MASK all = DW_MASK_FIRST(DW_LANES);
    size_t c = 0;
    for (; c + 2 * DW_LANES <= channels; c += 2 * DW_LANES) DW_NAME(block)(P, 2, 0, s, r, ox, c, kx0, kx1, all);
    for (; c + DW_LANES <= channels; c += DW_LANES) DW_NAME(block)(P, 1, 0, s, r, ox, c, kx0, kx1, all);
    if (c < channels) DW_NAME(block)(P, 1, 1, s, r, ox, c, kx0, kx1, DW_MASK_FIRST((int)(channels - c)));
}

// One output row (image b, row oy): groups of 4 pixels whose windows lie inside the input columns, single
// pixels (with their columns clipped) at the borders.
static void DW_NAME(row)(const kiln_dwconv_shape *s, const float *input, const float *packed, const float *residual,
                         float *output, size_t row) {
    dw_row_context r;
    dw_row_setup(&r, s, input, packed, residual, output, row);
    const size_t out_w = (size_t)s->out_w;
    const long reach = (long)(s->kernel_w - 1) * s->dilation_w;
    size_t ox = 0;
    while (ox < out_w) {
        const long x0 = (long)ox * s->stride_w - s->pad_left;
        if (ox + 4 <= out_w && x0 >= 0 && x0 + 3L * s->stride_w + reach < s->in_w) {
            DW_NAME(pixels)(4, s, &r, ox, 0, s->kernel_w);
            ox += 4;
            continue;
        }
        int kx0 = 0, kx1 = s->kernel_w;
        while (kx0 < kx1 && x0 + (long)kx0 * s->dilation_w < 0) kx0++;
        while (kx1 > kx0 && x0 + (long)(kx1 - 1) * s->dilation_w >= s->in_w) kx1--;
        DW_NAME(pixels)(1, s, &r, ox, kx0, kx1);
        ox++;
    }
}
