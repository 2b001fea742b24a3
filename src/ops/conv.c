/*
 * conv.c - 2-D convolution (PyTorch's conv2d) and its two gradients as ops of their own:
 *
 *   y  = nb_conv2d(x, w, b)                   x (N, C, H, W), w (O, C/G, KH, KW), y (N, O, OH, OW)
 *   dx = nb_conv2d_input(shape of x, w, g)    the transposed convolution of g (N, O, OH, OW)
 *   dw = nb_conv2d_weight(x, shape of w, g)   the correlation of x with g
 *
 * All three are bilinear and each one's gradient is made of the three (with H the incoming gradient):
 *   conv2d:        dx = conv2d_input(x, w, H),   dw = conv2d_weight(x, w, H),   db = sum of H over N, OH, OW
 *   conv2d_input:  dg = conv2d(H, w),            dw = conv2d_weight(H, w, g)
 *   conv2d_weight: dx = conv2d_input(x, H, g),   dg = conv2d(x, H)
 * so the rules are written with the ops themselves: without a graph being built they run the kernels
 * once and record nothing (the fused first order); with one, they are recorded and differentiate again
 * to any order. The kernels (backend slots conv2d, conv2d_input, conv2d_weight) take contiguous NCHW
 * operands; strided inputs are copied first.
 */
#include "../core/internal.h"

/* The options with PyTorch's defaults for zeros, checked, and the geometry of a convolution of x (N, C, H, W)
   with a kernel (O, C/G, KH, KW). Records an error under fn naming the values when they do not fit. */
static bool geometry(const char *fn, const int64_t *xs, const int64_t *ws, nb_conv2d_opts o, nbi_conv *cv) {
    for (int i = 0; i < 2; i++)
        if (o.stride[i] < 0 || o.padding[i] < 0 || o.dilation[i] < 0)
            return nbi_err(fn, "stride (%d, %d), padding (%d, %d) and dilation (%d, %d) must not be negative",
                           o.stride[0], o.stride[1], o.padding[0], o.padding[1], o.dilation[0], o.dilation[1]),
                   false;
    if (o.groups < 0) return nbi_err(fn, "groups %d is negative", o.groups), false;
    int64_t G = o.groups ? o.groups : 1;
    *cv = (nbi_conv){.N = xs[0], .C = xs[1], .H = xs[2], .W = xs[3], .O = ws[0], .G = G, .KH = ws[2], .KW = ws[3],
                     .sh = o.stride[0] ? o.stride[0] : 1, .sw = o.stride[1] ? o.stride[1] : 1,
                     .ph = o.padding[0], .pw = o.padding[1],
                     .dh = o.dilation[0] ? o.dilation[0] : 1, .dw = o.dilation[1] ? o.dilation[1] : 1};
    if (cv->C % G != 0 || cv->O % G != 0)
        return nbi_err(fn, "groups %lld must divide the input channels %lld and the output channels %lld",
                       (long long)G, (long long)cv->C, (long long)cv->O),
               false;
    if (ws[1] * G != cv->C)
        return nbi_err(fn, "the weight (%lld,%lld,%lld,%lld) expects %lld x %lld groups = %lld input channels, the "
                           "input (%lld,%lld,%lld,%lld) has %lld",
                       (long long)ws[0], (long long)ws[1], (long long)ws[2], (long long)ws[3], (long long)ws[1],
                       (long long)G, (long long)(ws[1] * G), (long long)xs[0], (long long)xs[1], (long long)xs[2],
                       (long long)xs[3], (long long)cv->C),
               false;
    int64_t eh = cv->dh * (cv->KH - 1) + 1, ew = cv->dw * (cv->KW - 1) + 1; /* the dilated kernel */
    int64_t hp = cv->H + 2 * cv->ph, wp = cv->W + 2 * cv->pw;
    if (cv->KH < 1 || cv->KW < 1 || eh > hp || ew > wp)
        return nbi_err(fn, "the kernel %lldx%lld (dilation %lldx%lld) is larger than the padded input %lldx%lld "
                           "(input %lldx%lld, padding %lldx%lld)",
                       (long long)cv->KH, (long long)cv->KW, (long long)cv->dh, (long long)cv->dw, (long long)hp,
                       (long long)wp, (long long)cv->H, (long long)cv->W, (long long)cv->ph, (long long)cv->pw),
               false;
    cv->OH = (hp - eh) / cv->sh + 1, cv->OW = (wp - ew) / cv->sw + 1;
    return true;
}

static bool rank4(const char *fn, const nb_tensor *t, const char *what) {
    if (t->rank == 4) return true;
    return nbi_err(fn, "%s must have rank 4 (%s), not %s", what,
                   what[0] == 'w' ? "out channels, in channels / groups, kH, kW" : "N, C, H, W", NBI_SHAPE(t)),
           false;
}

/* Node parameters: the stride, padding, dilation and groups as given, then two sizes (H, W or KH, KW). */
static void put_opts(nb_tensor *out, const nbi_conv *cv, int64_t a, int64_t b) {
    int32_t *ip = out->node.ip;
    ip[0] = (int32_t)cv->sh, ip[1] = (int32_t)cv->sw, ip[2] = (int32_t)cv->ph, ip[3] = (int32_t)cv->pw;
    ip[4] = (int32_t)cv->dh, ip[5] = (int32_t)cv->dw, ip[6] = (int32_t)cv->G, ip[7] = (int32_t)a, ip[8] = (int32_t)b;
}
static nb_conv2d_opts opts_of(const nb_tensor *out) {
    const int32_t *ip = out->node.ip;
    return (nb_conv2d_opts){{ip[0], ip[1]}, {ip[2], ip[3]}, {ip[4], ip[5]}, ip[6]};
}

/* Sizes kept on nodes as int32: every size and option must fit. */
static bool fits32(const char *fn, const nbi_conv *cv) {
    const int64_t v[] = {cv->H, cv->W, cv->KH, cv->KW, cv->sh, cv->sw, cv->ph, cv->pw, cv->dh, cv->dw, cv->G};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i] > INT32_MAX) return nbi_err(fn, "a size or option of %lld is too large", (long long)v[i]), false;
    return true;
}

/* x, w (and b, g) checked: float, one dtype, one device; the weight of rank 4. */
static bool operands(const char *fn, nb_tensor *a, nb_tensor *w, nb_tensor *b) {
    if (!nbi_check_float(fn, a, 1) || !nbi_check_float(fn, w, 2) || (b && !nbi_check_float(fn, b, 3))) return false;
    if (!nbi_same_device(fn, 3, (nb_tensor *[]){a, w, b})) return false;
    if (w->dtype != a->dtype || (b && b->dtype != a->dtype))
        return nbi_err(fn, "the operands %s, %s%s%s must share one dtype", NBI_SHAPE(a), NBI_SHAPE(w), b ? ", " : "",
                       b ? NBI_SHAPE(b) : ""),
               false;
    return true;
}

/* Runs one of the three kernels on contiguous copies of a and b into a new tensor of shape rshape. */
enum { K_FWD, K_INPUT, K_WEIGHT };
static nb_tensor *run(const char *fn, int which, nb_tensor *a, nb_tensor *b, nb_tensor *bias, const nbi_conv *cv,
                      const int64_t *rshape) {
    const nbi_backend *be = nbi_be(a);
    if (which == K_FWD && !nbi_has_kernel(be, conv2d)) return nbi_no_kernel(fn, a, "conv2d");
    if (which == K_INPUT && !nbi_has_kernel(be, conv2d_input)) return nbi_no_kernel(fn, a, "conv2d_input");
    if (which == K_WEIGHT && !nbi_has_kernel(be, conv2d_weight)) return nbi_no_kernel(fn, a, "conv2d_weight");
    nb_tensor *ca = nbi_contiguous_input(fn, a);
    nb_tensor *cb = ca ? nbi_contiguous_input(fn, b) : NULL;
    nb_tensor *cc = cb && bias ? nbi_contiguous_input(fn, bias) : NULL;
    nb_tensor *out = cb && (!bias || cc) && nbi_shape_ok(fn, nbi_dsize(a->dtype), 4, rshape)
                         ? nbi_empty_like_be(fn, a, a->dtype, 4, rshape)
                         : NULL;
    if (out) {
        nbi_arr oa = nbi_arr_of(out), aa = nbi_arr_of(ca), ba = nbi_arr_of(cb), bb = cc ? nbi_arr_of(cc) : oa;
        int rc = which == K_FWD      ? be->conv2d(a->dtype, oa.data, aa.data, ba.data, cc ? bb.data : NULL, cv)
                 : which == K_INPUT  ? be->conv2d_input(a->dtype, oa.data, aa.data, ba.data, cv)
                                     : be->conv2d_weight(a->dtype, oa.data, aa.data, ba.data, cv);
        if (rc != 0) {
            nb_free(out);
            out = nbi_err(fn, "out of memory for %s and %s", NBI_SHAPE(a), NBI_SHAPE(b));
        }
    }
    if (ca && ca != a) nb_free(ca);
    if (cb && cb != b) nb_free(cb);
    if (cc && cc != bias) nb_free(cc);
    return out;
}

nb_tensor *nb_conv2d(nb_tensor *x, nb_tensor *w, nb_tensor *b, nb_conv2d_opts o) {
    const char *fn = "nb_conv2d";
    if (!operands(fn, x, w, b) || !rank4(fn, x, "x") || !rank4(fn, w, "w")) return NULL;
    nbi_conv cv;
    if (!geometry(fn, x->shape, w->shape, o, &cv) || !fits32(fn, &cv)) return NULL;
    if (b && (b->rank != 1 || b->shape[0] != cv.O))
        return nbi_err(fn, "the bias %s must be (%lld,): one value per output channel of w %s", NBI_SHAPE(b),
                       (long long)cv.O, NBI_SHAPE(w));
    nb_tensor *out = run(fn, K_FWD, x, w, b, &cv, (int64_t[]){cv.N, cv.O, cv.OH, cv.OW});
    nb_tensor *in[3] = {x, w, b};
    int n = b ? 3 : 2;
    if (out && nbi_needs_grad(n, in) && (out = nbi_record(out, NBI_OP_CONV2D, n, in, 3u, false)) != NULL)
        put_opts(out, &cv, 0, 0);
    return out;
}

/* The geometry of a gradient op from the input's shape xs and the weight's ws, with g checked to be the
   output's gradient (N, O, OH, OW). */
static bool grad_geometry(const char *fn, const int64_t *xs, const int64_t *ws, const nb_tensor *g,
                          nb_conv2d_opts o, nbi_conv *cv) {
    for (int i = 0; i < 4; i++)
        if (xs[i] < 0 || ws[i] < 0)
            return nbi_err(fn, "the shapes (%lld,%lld,%lld,%lld) and (%lld,%lld,%lld,%lld) must not be negative",
                           (long long)xs[0], (long long)xs[1], (long long)xs[2], (long long)xs[3], (long long)ws[0],
                           (long long)ws[1], (long long)ws[2], (long long)ws[3]),
                   false;
    if (!geometry(fn, xs, ws, o, cv) || !fits32(fn, cv)) return false;
    if (g->shape[0] != cv->N || g->shape[1] != cv->O || g->shape[2] != cv->OH || g->shape[3] != cv->OW)
        return nbi_err(fn, "the output gradient %s should be (%lld,%lld,%lld,%lld), the output of an input "
                           "(%lld,%lld,%lld,%lld) and a weight (%lld,%lld,%lld,%lld)",
                       NBI_SHAPE(g), (long long)cv->N, (long long)cv->O, (long long)cv->OH, (long long)cv->OW,
                       (long long)xs[0], (long long)xs[1], (long long)xs[2], (long long)xs[3], (long long)ws[0],
                       (long long)ws[1], (long long)ws[2], (long long)ws[3]),
               false;
    return true;
}

nb_tensor *nb_conv2d_input(const int64_t x_shape[4], nb_tensor *w, nb_tensor *g, nb_conv2d_opts o) {
    const char *fn = "nb_conv2d_input";
    if (!x_shape) return nbi_err(fn, "x_shape is NULL");
    if (!operands(fn, g, w, NULL) || !rank4(fn, w, "w") || !rank4(fn, g, "g")) return NULL;
    nbi_conv cv;
    if (!grad_geometry(fn, x_shape, w->shape, g, o, &cv)) return NULL;
    nb_tensor *out = run(fn, K_INPUT, g, w, NULL, &cv, x_shape);
    nb_tensor *in[2] = {g, w};
    if (out && nbi_needs_grad(2, in) && (out = nbi_record(out, NBI_OP_CONV2D_INPUT, 2, in, 3u, false)) != NULL)
        put_opts(out, &cv, cv.H, cv.W);
    return out;
}

nb_tensor *nb_conv2d_weight(nb_tensor *x, const int64_t w_shape[4], nb_tensor *g, nb_conv2d_opts o) {
    const char *fn = "nb_conv2d_weight";
    if (!w_shape) return nbi_err(fn, "w_shape is NULL");
    if (!operands(fn, x, g, NULL) || !rank4(fn, x, "x") || !rank4(fn, g, "g")) return NULL;
    nbi_conv cv;
    if (!grad_geometry(fn, x->shape, w_shape, g, o, &cv)) return NULL;
    nb_tensor *out = run(fn, K_WEIGHT, x, g, NULL, &cv, w_shape);
    nb_tensor *in[2] = {x, g};
    if (out && nbi_needs_grad(2, in) && (out = nbi_record(out, NBI_OP_CONV2D_WEIGHT, 2, in, 3u, false)) != NULL)
        put_opts(out, &cv, cv.KH, cv.KW);
    return out;
}

/* ------------------------------------------------------------ gradients -- */

int nbi_bw_conv2d(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0], *w = out->node.in[1], *b = out->node.nin > 2 ? out->node.in[2] : NULL;
    nb_conv2d_opts o = opts_of(out);
    if (x->requires_grad && !(gin[0] = nb_conv2d_input(x->shape, w, g, o))) return -1;
    if (w->requires_grad && !(gin[1] = nb_conv2d_weight(x, w->shape, g, o))) return -1;
    if (b && b->requires_grad && !(gin[2] = nb_sum_axes(g, 3, (int[]){0, 2, 3}, false))) return -1;
    return 0;
}

int nbi_bw_conv2d_input(nb_tensor *out, nb_tensor *h, nb_tensor **gin) {
    nb_tensor *g = out->node.in[0], *w = out->node.in[1];
    nb_conv2d_opts o = opts_of(out);
    if (g->requires_grad && !(gin[0] = nb_conv2d(h, w, NULL, o))) return -1;
    if (w->requires_grad && !(gin[1] = nb_conv2d_weight(h, w->shape, g, o))) return -1;
    return 0;
}

int nbi_bw_conv2d_weight(nb_tensor *out, nb_tensor *h, nb_tensor **gin) {
    nb_tensor *x = out->node.in[0], *g = out->node.in[1];
    nb_conv2d_opts o = opts_of(out);
    if (x->requires_grad && !(gin[0] = nb_conv2d_input(x->shape, h, g, o))) return -1;
    if (g->requires_grad && !(gin[1] = nb_conv2d(x, h, NULL, o))) return -1;
    return 0;
}
