/*
 * pool.c - 2-D pooling (PyTorch's max_pool2d, avg_pool2d, adaptive average pooling to 1x1) and flatten.
 *
 *   max_pool2d  an op: the backend's max_pool2d kernel gives each window's maximum and its position
 *               (PyTorch's tie rule), the node saves the positions, the gradient is scattered back to them
 *               (the max_pool2d_grad kernel, or, for higher orders, a recorded scatter_add over each plane:
 *               the gradient of a gather, differentiable again)
 * The others are made of recorded ops, so gradients of every order come with them:
 *   avg_pool2d  a depthwise convolution with the constant kernel 1 / (kH kW) (count_include_pad, as PyTorch's
 *               default: the padding counts in the divisor)
 *   global_avg_pool2d  the mean over H and W, keeping them as size 1
 *   flatten     a reshape
 */
#include "../core/internal.h"

/* The window geometry of a pooling of x (N, C, H, W) with kernel (kH, kW): stride 0 is the kernel size,
   dilation 0 is 1; padding at most half the (dilated) kernel and an output of at least one position, as
   PyTorch requires. Errors under fn name the values. */
static bool pool_geometry(const char *fn, const nb_tensor *x, const int kernel[2], nb_conv2d_opts o, nbi_conv *cv) {
    if (x->rank != 4) return nbi_err(fn, "x must have rank 4 (N, C, H, W), not %s", NBI_SHAPE(x)), false;
    if (!kernel) return nbi_err(fn, "kernel is NULL"), false;
    if (kernel[0] < 1 || kernel[1] < 1)
        return nbi_err(fn, "the kernel (%d, %d) must be positive", kernel[0], kernel[1]), false;
    for (int i = 0; i < 2; i++)
        if (o.stride[i] < 0 || o.padding[i] < 0 || o.dilation[i] < 0)
            return nbi_err(fn, "stride (%d, %d), padding (%d, %d) and dilation (%d, %d) must not be negative",
                           o.stride[0], o.stride[1], o.padding[0], o.padding[1], o.dilation[0], o.dilation[1]),
                   false;
    *cv = (nbi_conv){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .O = x->shape[1],
                     .G = 1, .KH = kernel[0], .KW = kernel[1],
                     .sh = o.stride[0] ? o.stride[0] : kernel[0], .sw = o.stride[1] ? o.stride[1] : kernel[1],
                     .ph = o.padding[0], .pw = o.padding[1],
                     .dh = o.dilation[0] ? o.dilation[0] : 1, .dw = o.dilation[1] ? o.dilation[1] : 1};
    int64_t eh = cv->dh * (cv->KH - 1) + 1, ew = cv->dw * (cv->KW - 1) + 1;
    if (2 * cv->ph > eh || 2 * cv->pw > ew)
        return nbi_err(fn, "the padding (%lld, %lld) must be at most half the kernel (%lld, %lld) (dilated: %lld, %lld)",
                       (long long)cv->ph, (long long)cv->pw, (long long)cv->KH, (long long)cv->KW, (long long)eh,
                       (long long)ew),
               false;
    int64_t hp = cv->H + 2 * cv->ph, wp = cv->W + 2 * cv->pw;
    if (eh > hp || ew > wp)
        return nbi_err(fn, "the kernel (%lld, %lld) (dilated: %lld, %lld) is larger than the padded input %lldx%lld "
                           "of x %s",
                       (long long)cv->KH, (long long)cv->KW, (long long)eh, (long long)ew, (long long)hp,
                       (long long)wp, NBI_SHAPE(x)),
               false;
    cv->OH = (hp - eh) / cv->sh + 1, cv->OW = (wp - ew) / cv->sw + 1;
    return true;
}

/* Node parameters: kernel, stride, padding, dilation (as resolved). */
static void put_pool(nb_tensor *out, const nbi_conv *cv) {
    int32_t *ip = out->node.ip;
    ip[0] = (int32_t)cv->KH, ip[1] = (int32_t)cv->KW, ip[2] = (int32_t)cv->sh, ip[3] = (int32_t)cv->sw;
    ip[4] = (int32_t)cv->ph, ip[5] = (int32_t)cv->pw, ip[6] = (int32_t)cv->dh, ip[7] = (int32_t)cv->dw;
}

nb_tensor *nb_max_pool2d_with_indices(nb_tensor *x, const int kernel[2], nb_conv2d_opts o, nb_tensor **indices) {
    const char *fn = "nb_max_pool2d";
    if (!nbi_check_float(fn, x, 1)) return NULL;
    nbi_conv cv;
    if (!pool_geometry(fn, x, kernel, o, &cv)) return NULL;
    const int64_t v[] = {cv.KH, cv.KW, cv.sh, cv.sw, cv.ph, cv.pw, cv.dh, cv.dw};
    for (int i = 0; i < 8; i++)
        if (v[i] > INT32_MAX) return nbi_err(fn, "a kernel size or option of %lld is too large", (long long)v[i]);
    const nbi_backend *be = nbi_be(x);
    if (!nbi_has_kernel(be, max_pool2d)) return nbi_no_kernel(fn, x, "max_pool2d");
    int64_t shape[4] = {cv.N, cv.C, cv.OH, cv.OW};
    nb_tensor *cx = nbi_contiguous_input(fn, x);
    nb_tensor *idx = cx ? nbi_empty_like_be(fn, x, NB_I64, 4, shape) : NULL;
    nb_tensor *y = idx ? nbi_empty_like_be(fn, x, x->dtype, 4, shape) : NULL;
    if (y && cv.N * cv.C * cv.OH * cv.OW > 0) {
        nbi_arr ya = nbi_arr_of(y), ia = nbi_arr_of(idx), xa = nbi_arr_of(cx);
        be->max_pool2d(x->dtype, ya.data, (int64_t *)(void *)ia.data, xa.data, &cv);
    }
    if (cx && cx != x) nb_free(cx);
    if (!y) {
        nb_free(idx);
        return NULL;
    }
    if (nbi_needs_grad(1, &x)) {
        if (!(y = nbi_record(y, NBI_OP_MAX_POOL2D, 1, &x, 0u, false))) {
            nb_free(idx);
            return NULL;
        }
        put_pool(y, &cv);
        if (nbi_save(y, 1, &idx) != 0) {
            nb_free(y), nb_free(idx);
            return NULL;
        }
    }
    if (indices) *indices = idx; /* the caller's handle (the node holds its own) */
    else nb_free(idx);
    return y;
}

/* dx: the gradient scattered to the picked positions; the fused kernel, or, when a graph of the gradient is
   being built, a recorded scatter_add over each flattened plane (the gradient of gather), differentiable again. */
int nbi_bw_max_pool2d(nb_tensor *out, nb_tensor *g, nb_tensor **gin) {
    const char *fn = "max_pool2d backward";
    nb_tensor *x = out->node.in[0], *idx = nbi_saved(fn, out, 0);
    if (!idx) return -1;
    const int32_t *ip = out->node.ip;
    nbi_conv cv = {.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .O = x->shape[1], .G = 1,
                   .KH = ip[0], .KW = ip[1], .OH = out->shape[2], .OW = out->shape[3], .sh = ip[2], .sw = ip[3],
                   .ph = ip[4], .pw = ip[5], .dh = ip[6], .dw = ip[7]};
    const nbi_backend *be = nbi_be(x);
    if (nb_grad_enabled() || !nbi_has_kernel(be, max_pool2d_grad) || g->dtype != x->dtype) {
        int64_t S = cv.OH * cv.OW, sh3[3] = {cv.N, cv.C, S}, xs3[3] = {cv.N, cv.C, cv.H * cv.W};
        nb_tensor *g3 = nb_reshape(g, 3, sh3), *i3 = g3 ? nb_reshape(idx, 3, sh3) : NULL;
        nb_tensor *d3 = i3 ? nbi_scatter_add(g3, i3, 2, 3, xs3) : NULL;
        gin[0] = d3 ? nb_reshape(d3, 4, x->shape) : NULL;
        return gin[0] ? 0 : -1;
    }
    nb_tensor *cg = nbi_contiguous_input(fn, g);
    nb_tensor *dx = cg ? nbi_empty_like_be(fn, x, x->dtype, 4, x->shape) : NULL;
    if (dx) {
        nbi_arr da = nbi_arr_of(dx), ga = nbi_arr_of(cg), ia = nbi_arr_of(idx);
        if (cv.N * cv.C > 0) be->max_pool2d_grad(x->dtype, da.data, ga.data, (const int64_t *)(void *)ia.data, &cv);
    }
    if (cg && cg != g) nb_free(cg);
    return (gin[0] = dx) ? 0 : -1;
}

nb_tensor *nb_max_pool2d(nb_tensor *x, const int kernel[2], nb_conv2d_opts o) {
    return nb_max_pool2d_with_indices(x, kernel, o, NULL);
}

nb_tensor *nb_avg_pool2d(nb_tensor *x, const int kernel[2], nb_conv2d_opts o) {
    const char *fn = "nb_avg_pool2d";
    if (!nbi_check_float(fn, x, 1)) return NULL;
    if ((o.dilation[0] && o.dilation[0] != 1) || (o.dilation[1] && o.dilation[1] != 1))
        return nbi_err(fn, "average pooling has no dilation (given (%d, %d))", o.dilation[0], o.dilation[1]);
    nbi_conv cv;
    if (!pool_geometry(fn, x, kernel, o, &cv)) return NULL;
    nb_tensor *w = nbi_empty_like_be(fn, x, x->dtype, 4, (int64_t[]){1, 1, cv.KH, cv.KW});
    if (!w) return NULL;
    for (int64_t i = 0; i < cv.KH * cv.KW; i++) nbi_set_at(w, i, 1.0 / (double)(cv.KH * cv.KW));
    nb_conv2d_opts co = {{(int)cv.sh, (int)cv.sw}, {(int)cv.ph, (int)cv.pw}, {1, 1}, 1};
    nb_tensor *planes = nb_reshape(x, 4, (int64_t[]){cv.N * cv.C, 1, cv.H, cv.W});
    nb_tensor *y = planes ? nb_conv2d(planes, w, NULL, co) : NULL;
    nb_tensor *r = y ? nb_reshape(y, 4, (int64_t[]){cv.N, cv.C, cv.OH, cv.OW}) : NULL;
    if (planes && planes != x) nb_free(planes);
    if (y && y != r) nb_free(y);
    nb_free(w);
    return r;
}

nb_tensor *nb_global_avg_pool2d(nb_tensor *x) {
    const char *fn = "nb_global_avg_pool2d";
    if (!nbi_check_float(fn, x, 1)) return NULL;
    if (x->rank != 4) return nbi_err(fn, "x must have rank 4 (N, C, H, W), not %s", NBI_SHAPE(x));
    return nb_mean_axes(x, 2, (int[]){2, 3}, true);
}

nb_tensor *nb_flatten(nb_tensor *x, int start, int end) {
    const char *fn = "nb_flatten";
    if (!nbi_check(fn, x, 1)) return NULL;
    int r = x->rank ? x->rank : 1, s, e;
    if (!nbi_axis(start, r, &s) || !nbi_axis(end, r, &e) || s > e)
        return nbi_err(fn, "axes %d to %d do not name a range of the axes of %s", start, end, NBI_SHAPE(x));
    if (x->rank == 0) return nb_reshape(x, 1, (int64_t[]){1});
    int64_t shape[NB_MAX_RANK], n = 1;
    int k = 0;
    for (int i = 0; i < s; i++) shape[k++] = x->shape[i];
    for (int i = s; i <= e; i++) n *= x->shape[i];
    shape[k++] = n;
    for (int i = e + 1; i < x->rank; i++) shape[k++] = x->shape[i];
    return nb_reshape(x, k, shape);
}
