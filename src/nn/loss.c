/*
 * loss.c - losses composed from nabla ops (nabla/nn.h): their gradients come
 * from the ops' rules, so they are differentiable to any order.
 */
#include <math.h>
#include <stdio.h>

#include "../../include/nabla/nn.h"

nb_tensor *nb_mse_loss(nb_tensor *pred, nb_tensor *target) {
    nb_tensor *d = nb_sub(pred, target);
    return nb_mean(nb_mul(d, d));
}

nb_tensor *nb_l1_loss(nb_tensor *pred, nb_tensor *target) { return nb_mean(nb_abs(nb_sub(pred, target))); }

/* log clamped below at -100 */
static nb_tensor *clamped_log(nb_tensor *p) { return nb_maximum(nb_log(p), nb_scalar(nb_dtype_of(p), -100.0)); }

nb_tensor *nb_bce_loss(nb_tensor *p, nb_tensor *t) {
    if (!p || !t) return nb_sub(p, t); /* reports the NULL */
    nb_tensor *one_minus_p = nb_add_scalar(nb_neg(p), 1.0), *one_minus_t = nb_add_scalar(nb_neg(t), 1.0);
    nb_tensor *ll = nb_add(nb_mul(t, clamped_log(p)), nb_mul(one_minus_t, clamped_log(one_minus_p)));
    return nb_neg(nb_mean(ll));
}

nb_tensor *nb_bce_with_logits_loss(nb_tensor *x, nb_tensor *t) {
    if (!x || !t) return nb_sub(x, t);
    nb_tensor *zero = nb_scalar(nb_dtype_of(x), 0.0);
    nb_tensor *l = nb_add(nb_sub(nb_maximum(x, zero), nb_mul(x, t)), nb_log1p(nb_exp(nb_neg(nb_abs(x)))));
    return nb_mean(l);
}

nb_tensor *nb_hinge_loss(nb_tensor *s, nb_tensor *y) {
    if (!s || !y) return nb_sub(s, y);
    int64_t n = nb_numel(y);
    for (int64_t i = 0; i < n; i++) {
        int64_t idx[NB_MAX_RANK] = {0}, rem = i;
        const int64_t *sh = nb_shape(y);
        for (int d = nb_rank(y) - 1; d >= 0; d--) {
            idx[d] = rem % sh[d];
            rem /= sh[d];
        }
        double v = nb_get(y, idx);
        if (v != 1 && v != -1) {
            char msg[128];
            snprintf(msg, sizeof msg, "label %g at index %lld is not -1 or +1", v, (long long)i);
            return nb_fail("nb_hinge_loss", msg);
        }
    }
    nb_tensor *m = nb_add_scalar(nb_neg(nb_mul(y, s)), 1.0);
    return nb_mean(nb_relu(m));
}
