/*
 * optim.c - SGD (momentum, Nesterov, weight decay), Adam and AdamW, gradient
 * clipping and learning-rate schedules (nabla/nn.h).
 *
 * Each update is one fused pass over a contiguous parameter, its gradient and
 * its state (the core's nb_sgd_update_ / nb_adam_update_, in the parameter's
 * precision as torch.optim); nothing is recorded in the graph. State (momentum, moments) is kept in
 * tensors owned by the optimizer, outside every scope.
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
    bool nesterov;
    int64_t steps;
};

static double load(nb_tensor *t, void *d, int64_t i) {
    return nb_dtype_of(t) == NB_F32 ? ((float *)d)[i] : ((double *)d)[i];
}
static void store(nb_tensor *t, void *d, int64_t i, double v) {
    if (nb_dtype_of(t) == NB_F32)
        ((float *)d)[i] = (float)v;
    else
        ((double *)d)[i] = v;
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
    nb_optim *o = calloc(1, sizeof *o);
    if (!o) return nb_fail(fn, "out of memory");
    o->kind = kind;
    o->n = n;
    o->lr = lr;
    o->params = calloc((size_t)n, sizeof *o->params);
    o->m = calloc((size_t)n, sizeof *o->m);
    o->v = calloc((size_t)n, sizeof *o->v);
    if (!o->params || !o->m || !o->v) {
        nb_optim_free(o);
        return nb_fail(fn, "out of memory");
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

int nb_optim_step(nb_optim *o) {
    if (!o) return nb_fail("nb_optim_step", "optimizer is NULL"), -1;
    /* Check every gradient first, so a bad one leaves every parameter unchanged. */
    for (int i = 0; i < o->n; i++) {
        nb_tensor *g = nb_grad(o->params[i]);
        int64_t k = 0;
        int ok = g ? nb_all_finite(g, &k) : 1;
        if (ok < 0) return -1;
        if (!ok) {
            char msg[128];
            snprintf(msg, sizeof msg, "gradient of parameter %d has a non-finite value at index %lld; nothing was updated",
                     i, (long long)k);
            nb_fail("nb_optim_step", msg);
            return -1;
        }
    }
    o->steps++;
    bool was = nb_grad_enabled(); /* an update is not part of any graph */
    nb_set_grad_enabled(false);
    int rc = 0;
    for (int i = 0; i < o->n && rc == 0; i++) {
        nb_tensor *p = o->params[i], *g = nb_grad(p);
        if (!g) continue;
        rc = o->kind == OPT_SGD ? nb_sgd_update_(p, g, o->m[i], o->lr, o->beta1, o->wd, o->nesterov, o->steps == 1)
                                : nb_adam_update_(p, g, o->m[i], o->v[i], o->lr, o->beta1, o->beta2, o->eps, o->wd,
                                                  o->kind == OPT_ADAMW, o->steps);
    }
    nb_set_grad_enabled(was);
    return rc;
}

void nb_optim_zero_grad(nb_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) nb_clear_grad(o->params[i]);
}

void nb_optim_set_lr(nb_optim *o, double lr) {
    if (o) o->lr = lr;
}
double nb_optim_lr(const nb_optim *o) { return o ? o->lr : NAN; }
int64_t nb_optim_steps(const nb_optim *o) { return o ? o->steps : -1; }

void nb_optim_free(nb_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->m) nb_free(o->m[i]);
        if (o->v) nb_free(o->v[i]);
    }
    free(o->params);
    free(o->m);
    free(o->v);
    free(o);
}

double nb_clip_grad_norm(int n, nb_tensor *const *params, double max_norm) {
    if (n <= 0 || !params || !(max_norm > 0)) return nb_fail("nb_clip_grad_norm", "need parameters and max_norm > 0"), -1;
    double ss = 0;
    for (int i = 0; i < n; i++) {
        nb_tensor *g = params[i] ? nb_grad(params[i]) : NULL;
        if (!g) continue;
        void *gd = nb_data(g);
        for (int64_t k = 0; gd && k < nb_numel(g); k++) {
            double v = load(g, gd, k);
            ss += v * v;
        }
    }
    double norm = sqrt(ss), scale = max_norm / (norm + 1e-6);
    if (scale < 1)
        for (int i = 0; i < n; i++) {
            nb_tensor *g = params[i] ? nb_grad(params[i]) : NULL;
            if (!g) continue;
            void *gd = nb_data(g);
            for (int64_t k = 0; gd && k < nb_numel(g); k++) store(g, gd, k, load(g, gd, k) * scale);
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

static int state_io(nb_optim *o, const char *path, bool save) {
    const char *fn = save ? "nb_optim_save" : "nb_optim_load";
    if (!o || !path) return nb_fail(fn, "optimizer or path is NULL"), -1;
    int cap = 2 * o->n + 1;
    nb_tensor **ts = malloc(sizeof *ts * (size_t)cap);
    char(*names)[24] = malloc(sizeof *names * (size_t)cap);
    const char **np = malloc(sizeof *np * (size_t)cap);
    nb_tensor *steps = nb_full(NB_F64, 0, NULL, (double)o->steps);
    int rc = -1;
    if (!ts || !names || !np || !steps) {
        nb_fail(fn, "out of memory");
    } else {
        int k = state_list(o, steps, ts, names, np);
        rc = save ? nb_save_safetensors(path, k, ts, np) : nb_load_safetensors(path, k, ts, np);
        if (rc == 0 && !save) o->steps = (int64_t)nb_item(steps);
    }
    if (steps && nb_scope_depth() == 0) nb_free(steps);
    free(ts);
    free(names);
    free(np);
    return rc;
}

int nb_optim_save(nb_optim *o, const char *path) { return state_io(o, path, true); }
int nb_optim_load(nb_optim *o, const char *path) { return state_io(o, path, false); }
