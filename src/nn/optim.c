/*
 * optim.c - SGD (momentum, Nesterov, weight decay), Adam and AdamW, gradient
 * clipping and learning-rate schedules (nabla/nn.h).
 *
 * Each update is one fused pass over a contiguous parameter, its gradient and
 * its state (the core's nb_sgd_update_ / nb_adam_update_, in the parameter's
 * precision as torch.optim); nothing is recorded in the graph. State (momentum, moments) is kept in
 * tensors owned by the optimizer, outside every scope.
 *
 * A failed call changes nothing: a step checks every gradient before it
 * updates any parameter and counts itself only once it is done, and loading a
 * state reads the whole file into fresh tensors and checks the step count
 * before it writes into the optimizer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/nabla/io.h"
#include "../../include/nabla/nn.h"

typedef enum { OPT_SGD, OPT_ADAM, OPT_ADAMW } opt_kind;

struct nb_optim {
    opt_kind kind;
    int n;
    nb_tensor **params;
    nb_tensor **m, **v; /* momentum buffer / first moment; second moment */
    double lr, beta1, beta2, eps, wd;
    double *wds; /* per-parameter weight decay (nb_adamw_decay), or NULL: wd for all */
    bool nesterov;
    int64_t steps;
};

typedef struct {
    const nb_tensor *t;
    int i;
} indexed;

static int cmp_indexed(const void *a, const void *b) {
    const indexed *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* True, with an error naming both positions, when a parameter is listed twice (it would be updated twice a
   step); also true when out of memory. A tied parameter appears once in nb_module_params. */
static bool listed_twice(const char *fn, int n, nb_tensor *const *params) {
    indexed *ix = nb_alloc(fn, sizeof *ix * (size_t)n);
    if (!ix) return true;
    for (int i = 0; i < n; i++) ix[i] = (indexed){params[i], i};
    qsort(ix, (size_t)n, sizeof *ix, cmp_indexed);
    bool twice = false;
    for (int i = 1; i < n && !twice; i++)
        if (ix[i].t == ix[i - 1].t) {
            twice = true;
            nb_failf(fn, "parameters %d and %d are the same tensor; list each once", ix[i - 1].i, ix[i].i);
        }
    nb_dealloc(ix);
    return twice;
}

static nb_optim *make(const char *fn, opt_kind kind, int n, nb_tensor *const *params, double lr) {
    if (n <= 0 || !params) return nb_fail(fn, "need at least one parameter");
    for (int i = 0; i < n; i++) {
        if (!params[i] || !nb_requires_grad(params[i]) || !nb_is_leaf(params[i]) || !nb_is_contiguous(params[i])) {
            char msg[128];
            snprintf(msg, sizeof msg, "parameter %d is NULL or not a contiguous leaf that requires grad", i);
            return nb_fail(fn, msg);
        }
    }
    if (!(lr >= 0)) return nb_fail(fn, "learning rate must be >= 0");
    if (listed_twice(fn, n, params)) return NULL;
    nb_optim *o = nb_alloc_zeroed(fn, 1, sizeof *o);
    if (!o) return NULL;
    o->kind = kind;
    o->n = n;
    o->lr = lr;
    o->params = nb_alloc_zeroed(fn, (size_t)n, sizeof *o->params);
    o->m = nb_alloc_zeroed(fn, (size_t)n, sizeof *o->m);
    o->v = nb_alloc_zeroed(fn, (size_t)n, sizeof *o->v);
    if (!o->params || !o->m || !o->v) {
        nb_optim_free(o);
        return NULL;
    }
    memcpy(o->params, params, sizeof *o->params * (size_t)n);
    for (int i = 0; i < n; i++) {
        o->m[i] = nb_full(nb_dtype_of(params[i]), nb_rank(params[i]), nb_shape(params[i]), 0.0);
        if (kind != OPT_SGD) {
            o->v[i] = nb_full(nb_dtype_of(params[i]), nb_rank(params[i]), nb_shape(params[i]), 0.0);
        }
        if (!o->m[i] || (kind != OPT_SGD && !o->v[i])) {
            nb_optim_free(o);
            return NULL;
        }
    }
    return o;
}

/* State tensors must live outside every scope: nb_keep moves one level, so repeat. */
static void unscope(nb_tensor *t) {
    for (int d = nb_scope_depth(); d > 0 && t; d--) nb_keep(t);
}

static nb_optim *finish(nb_optim *o) {
    if (!o) return NULL;
    for (int i = 0; i < o->n; i++) {
        unscope(o->m[i]);
        unscope(o->v[i]);
    }
    return o;
}

nb_optim *nb_sgd(int n, nb_tensor *const *params, double lr, double momentum, double weight_decay, bool nesterov) {
    nb_optim *o = make("nb_sgd", OPT_SGD, n, params, lr);
    if (!o) return NULL;
    o->beta1 = momentum;
    o->wd = weight_decay;
    o->nesterov = nesterov;
    return finish(o);
}

static nb_optim *adam(const char *fn, opt_kind k, int n, nb_tensor *const *params, double lr, double b1, double b2,
                      double eps, double wd) {
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1 && eps >= 0)) return nb_fail(fn, "betas must be in [0, 1) and eps >= 0");
    nb_optim *o = make(fn, k, n, params, lr);
    if (!o) return NULL;
    o->beta1 = b1;
    o->beta2 = b2;
    o->eps = eps;
    o->wd = wd;
    return finish(o);
}

nb_optim *nb_adam(int n, nb_tensor *const *p, double lr, double b1, double b2, double eps, double wd) {
    return adam("nb_adam", OPT_ADAM, n, p, lr, b1, b2, eps, wd);
}
nb_optim *nb_adamw(int n, nb_tensor *const *p, double lr, double b1, double b2, double eps, double wd) {
    return adam("nb_adamw", OPT_ADAMW, n, p, lr, b1, b2, eps, wd);
}
nb_optim *nb_adamw_decay(int n, nb_tensor *const *p, double lr, double b1, double b2, double eps,
                         const double *decay) {
    const char *fn = "nb_adamw_decay";
    if (n > 0 && p && !decay) return nb_fail(fn, "the weight decay array is NULL");
    for (int i = 0; n > 0 && p && i < n; i++)
        if (!(decay[i] >= 0) || decay[i] == INFINITY)
            return nb_failf(fn, "weight decay %g of parameter %d must be finite and >= 0", decay[i], i);
    nb_optim *o = adam(fn, OPT_ADAMW, n, p, lr, b1, b2, eps, 0.0);
    if (!o) return NULL;
    o->wds = nb_alloc(fn, sizeof *o->wds * (size_t)n);
    if (!o->wds) {
        nb_optim_free(o);
        return NULL;
    }
    memcpy(o->wds, decay, sizeof *o->wds * (size_t)n);
    return o;
}

/* The gradient g of parameter i can be used by an update: float, contiguous, of the parameter's shape and dtype. */
static bool grad_ok(const char *fn, int i, nb_tensor *p, nb_tensor *g) {
    bool same = nb_dtype_of(g) == nb_dtype_of(p) && nb_rank(g) == nb_rank(p) && nb_is_contiguous(g);
    for (int d = 0; same && d < nb_rank(p); d++) same = nb_shape(g)[d] == nb_shape(p)[d];
    if (same) return true;
    char a[128], b[128];
    nb_failf(fn, "gradient of parameter %d is %s %s, not a contiguous %s %s; nothing was updated", i,
             nb_dtype_of(g) == NB_F32 ? "f32" : "f64", nb_shape_str(nb_rank(g), nb_shape(g), a, sizeof a),
             nb_dtype_of(p) == NB_F32 ? "f32" : "f64", nb_shape_str(nb_rank(p), nb_shape(p), b, sizeof b));
    return false;
}

int nb_optim_step(nb_optim *o) {
    const char *fn = "nb_optim_step";
    if (!o) return nb_fail(fn, "optimizer is NULL"), -1;
    if (o->steps == INT64_MAX) return nb_failf(fn, "the step count %lld cannot grow", (long long)o->steps), -1;
    /* Check every gradient first, so a bad one leaves every parameter unchanged. */
    for (int i = 0; i < o->n; i++) {
        nb_tensor *g = nb_grad(o->params[i]);
        int64_t k = 0;
        int ok = g ? nb_all_finite(g, &k) : 1;
        if (ok < 0) return -1;
        if (!ok) {
            nb_failf(fn, "gradient of parameter %d has a non-finite value at index %lld; nothing was updated", i,
                     (long long)k);
            return -1;
        }
        if (g && !grad_ok(fn, i, o->params[i], g)) return -1;
    }
    /* The updates below allocate nothing and cannot fail on what was checked above; the
       step is counted only once they are all done. */
    int64_t t = o->steps + 1;
    bool was = nb_grad_enabled(); /* an update is not part of any graph */
    nb_set_grad_enabled(false);
    int rc = 0;
    /* In the reverse of the check's order: the gradients checked last are still in cache for the first updates
       (every update is elementwise and independent of the others: the order changes no bit). */
    for (int i = o->n - 1; i >= 0 && rc == 0; i--) {
        nb_tensor *p = o->params[i], *g = nb_grad(p);
        if (!g) continue;
        rc = o->kind == OPT_SGD ? nb_sgd_update_(p, g, o->m[i], o->lr, o->beta1, o->wd, o->nesterov, t == 1)
                                : nb_adam_update_(p, g, o->m[i], o->v[i], o->lr, o->beta1, o->beta2, o->eps,
                                                  o->wds ? o->wds[i] : o->wd,
                                                  o->kind == OPT_ADAMW, t);
    }
    nb_set_grad_enabled(was);
    if (rc == 0) o->steps = t;
    return rc;
}

void nb_optim_zero_grad(nb_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) nb_clear_grad(o->params[i]);
}

void nb_optim_set_lr(nb_optim *o, double lr) {
    if (!o) return;
    if (!(lr >= 0)) { /* NaN or negative: kept as it was, as a failed call leaves state alone */
        nb_failf("nb_optim_set_lr", "learning rate %g must be >= 0; the rate stays %g", lr, o->lr);
        return;
    }
    o->lr = lr;
}
double nb_optim_lr(const nb_optim *o) { return o ? o->lr : NAN; }
int64_t nb_optim_steps(const nb_optim *o) { return o ? o->steps : -1; }

void nb_optim_free(nb_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->m) nb_free(o->m[i]);
        if (o->v) nb_free(o->v[i]);
    }
    nb_dealloc(o->params);
    nb_dealloc(o->m);
    nb_dealloc(o->v);
    nb_dealloc(o->wds);
    nb_dealloc(o);
}

/* The sum of squares of n values, in double with 8 partial sums (combined in a fixed order). */
static double sum_sq(nb_dtype dt, const void *d, int64_t n) {
    double acc[8] = {0};
    int64_t k = 0;
    if (dt == NB_F32) {
        const float *p = d;
        for (; k + 8 <= n; k += 8)
            for (int j = 0; j < 8; j++) acc[j] += (double)p[k + j] * p[k + j];
        for (; k < n; k++) acc[0] += (double)p[k] * p[k];
    } else {
        const double *p = d;
        for (; k + 8 <= n; k += 8)
            for (int j = 0; j < 8; j++) acc[j] += p[k + j] * p[k + j];
        for (; k < n; k++) acc[0] += p[k] * p[k];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

double nb_clip_grad_norm(int n, nb_tensor *const *params, double max_norm) {
    if (n <= 0 || !params || !(max_norm > 0)) return nb_fail("nb_clip_grad_norm", "need parameters and max_norm > 0"), -1;
    double ss = 0;
    for (int i = 0; i < n; i++) {
        nb_tensor *g = params[i] ? nb_grad(params[i]) : NULL;
        void *gd = g ? nb_data(g) : NULL;
        if (gd) ss += sum_sq(nb_dtype_of(g), gd, nb_numel(g));
    }
    double norm = sqrt(ss), scale = max_norm / (norm + 1e-6);
    if (scale < 1)
        for (int i = 0; i < n; i++) {
            nb_tensor *g = params[i] ? nb_grad(params[i]) : NULL;
            void *gd = g ? nb_data(g) : NULL;
            int64_t m = g ? nb_numel(g) : 0;
            if (gd && nb_dtype_of(g) == NB_F32)
                for (int64_t k = 0; k < m; k++) ((float *)gd)[k] = (float)((double)((float *)gd)[k] * scale);
            else if (gd)
                for (int64_t k = 0; k < m; k++) ((double *)gd)[k] *= scale;
        }
    return norm;
}

double nb_lr_step_decay(double base, int64_t step, int64_t step_size, double gamma) {
    if (step_size <= 0 || step < 0) return base;
    return base * pow(gamma, (double)(step / step_size));
}

double nb_lr_cosine(double base, int64_t step, int64_t warmup, int64_t total, double min_lr) {
    if (step < warmup) return base * (double)(step + 1) / (double)warmup;
    if (step >= total || total <= warmup) return min_lr;
    double t = (double)(step - warmup) / (double)(total - warmup);
    return min_lr + 0.5 * (base - min_lr) * (1 + cos(3.14159265358979323846 * t));
}

/* ------------------------------------------------------- state on disk --- */

/* The state tensors (m.i, and v.i for Adam/AdamW) and the step count, as one
   list of tensors and names for the safetensors reader and writer. */
static int state_list(nb_optim *o, nb_tensor *steps, nb_tensor **ts, char (*names)[24], const char **np) {
    int k = 0;
    for (int i = 0; i < o->n; i++) {
        snprintf(names[k], 24, "m.%d", i);
        ts[k++] = o->m[i];
        if (o->v[i]) {
            snprintf(names[k], 24, "v.%d", i);
            ts[k++] = o->v[i];
        }
    }
    snprintf(names[k], 24, "steps");
    ts[k++] = steps;
    for (int i = 0; i < k; i++) np[i] = names[i];
    return k;
}

/* The largest step count a f64 holds exactly (and a state file stores it as one). */
#define MAX_STEPS 9007199254740992.0 /* 2^53 */

static int state_io(nb_optim *o, const char *path, bool save) {
    const char *fn = save ? "nb_optim_save" : "nb_optim_load";
    if (!o || !path) return nb_fail(fn, "optimizer or path is NULL"), -1;
    size_t cap = 2 * (size_t)o->n + 1;
    nb_tensor **ts = nb_alloc_zeroed(fn, cap, sizeof *ts);
    nb_tensor **tmp = save ? NULL : nb_alloc_zeroed(fn, cap, sizeof *tmp);
    char(*names)[24] = nb_alloc(fn, sizeof *names * cap);
    const char **np = nb_alloc(fn, sizeof *np * cap);
    nb_tensor *steps = nb_full(NB_F64, 0, NULL, (double)o->steps);
    int rc = -1, k = 0;
    if (ts && (save || tmp) && names && np && steps) {
        k = state_list(o, steps, ts, names, np);
        if (save) {
            rc = nb_save_safetensors(path, k, ts, np);
        } else {
            /* read into fresh tensors of the state's shapes; the state is written only once all is read and checked */
            rc = 0;
            for (int i = 0; i < k && rc == 0; i++) {
                tmp[i] = nb_new(nb_dtype_of(ts[i]), nb_rank(ts[i]), nb_shape(ts[i]), NULL);
                if (!tmp[i]) rc = -1;
            }
            if (rc == 0) rc = nb_load_safetensors(path, k, tmp, np);
            double s = rc == 0 ? nb_item(tmp[k - 1]) : 0;
            if (rc == 0 && !(s >= 0 && s <= MAX_STEPS && s == floor(s))) {
                nb_failf(fn, "'%s' has steps = %.17g, not a whole number from 0 to 2^53; nothing was changed", path, s);
                rc = -1;
            }
            if (rc == 0) {
                for (int i = 0; i < k - 1; i++)
                    memcpy(nb_data(ts[i]), nb_data(tmp[i]),
                           (size_t)nb_numel(ts[i]) * (nb_dtype_of(ts[i]) == NB_F32 ? 4 : 8));
                o->steps = (int64_t)s;
            }
        }
    }
    for (int i = 0; tmp && i < k; i++) nb_free(tmp[i]);
    nb_free(steps);
    nb_dealloc(ts);
    nb_dealloc(tmp);
    nb_dealloc(names);
    nb_dealloc(np);
    return rc;
}

int nb_optim_save(nb_optim *o, const char *path) { return state_io(o, path, true); }
int nb_optim_load(nb_optim *o, const char *path) { return state_io(o, path, false); }
