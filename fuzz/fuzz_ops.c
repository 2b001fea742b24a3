/*
 * fuzz_ops.c - random op programs: bytes -> leaves -> a sequence of ops on
 * them (shapes, axes and arguments valid or not) -> backward, sometimes a
 * second-order gradient, sometimes an in-place change that backward must
 * refuse.
 *
 * Input: a header byte (bits 0-1: how many leaves, 1-4; bit 2: backward with
 * NB_CREATE_GRAPH and a gradient of a gradient; bit 3: NB_RETAIN_GRAPH and a
 * second backward), the leaves (dtype, rank, sizes, values), then one op per
 * group of bytes: an op code, operands picked from the pool of tensors made so
 * far, and the op's arguments. Sizes are kept small (axes of 0-5, at most
 * 4096 elements per tensor: a larger result is dropped), axes and ranks run a
 * little past the valid range so that errors are exercised too.
 * Invariants: no crash or undefined behaviour (ASan, UBSan); a NULL result or
 * a nonzero status comes with a message; a result's element count is the
 * product of its shape; backward either succeeds, giving each leaf that
 * requires grad a gradient of its own shape and dtype, or fails with a
 * message; every tensor is freed at the end (the library's count of memory in
 * use is back where it started).
 */
#include "fuzz.h"
#include "nabla/nn.h"

#define POOL 24
#define MAX_OPS 40
#define MAX_NUMEL 4096

typedef struct {
    fz_bytes in;
    nb_tensor *pool[POOL];
    int np;
} prog;

static nb_tensor *pick_t(prog *p) { return p->np ? p->pool[fz_pick(&p->in, p->np)] : NULL; }
/* An axis in [-rank-1, rank]: mostly valid, the two ends not. */
static int pick_axis(prog *p, nb_tensor *t) {
    int r = nb_rank(t) < 0 ? 0 : nb_rank(t);
    return fz_range(&p->in, -r - 1, r);
}
/* A shape of rank 0-4 (sometimes up to 9) with sizes 0-5 (rarely -1 or a big one). */
static int pick_shape(prog *p, int64_t *shape) {
    uint8_t c = fz_u8(&p->in);
    int rank = c < 240 ? c % 5 : 5 + c % 5;
    for (int i = 0; i < rank; i++) {
        uint8_t s = fz_u8(&p->in);
        shape[i] = s < 250 ? s % 6 : s == 250 ? -1 : s == 251 ? INT64_MAX / 2 : 1 + s % 3;
    }
    return rank;
}

static nb_tensor *make_tensor(prog *p, nb_dtype dt) {
    int64_t shape[NB_MAX_RANK + 2];
    int rank = pick_shape(p, shape);
    int64_t numel = 1;
    for (int i = 0; i < rank && numel >= 0; i++) numel = shape[i] < 0 || shape[i] > MAX_NUMEL ? -1 : numel * shape[i];
    if (rank > NB_MAX_RANK || numel < 0 || numel > MAX_NUMEL) {
        nb_tensor *t = nb_new(dt, rank, shape, NULL); /* invalid or too large for a fuzzer: must fail or be freed */
        if (!t) FZ_FAILED_WITH_MESSAGE();
        nb_free(t);
        nb_clear_error();
        return NULL;
    }
    double *v = malloc(sizeof(double) * (size_t)(numel ? numel : 1));
    for (int64_t i = 0; i < numel; i++) v[i] = dt == NB_I64 ? fz_range(&p->in, -4, 5) : fz_value(&p->in);
    nb_tensor *t = nb_from_f64(dt, rank, shape, v);
    free(v);
    FZ_ASSERT(t != NULL);
    return t;
}

static nb_tensor *idx_tensor(prog *p) {
    int64_t n = fz_pick(&p->in, 6);
    double d[6];
    for (int i = 0; i < n; i++) d[i] = fz_range(&p->in, -4, 5);
    return nb_from_f64(NB_I64, 1, &n, d);
}

/* One op of the program; returns its result (NULL on an error), and sets *status for the ops that return one. */
static nb_tensor *step(prog *p, int *status) {
    fz_bytes *b = &p->in;
    int op = fz_pick(b, 72);
    nb_tensor *a = pick_t(p), *c = pick_t(p), *d = pick_t(p);
    int ax = pick_axis(p, a), ax2 = pick_axis(p, a);
    double s = fz_value(b);
    bool keep = fz_u8(b) & 1;
    int axes[4], nax = fz_pick(b, 4);
    for (int i = 0; i < nax; i++) axes[i] = pick_axis(p, a);
    int64_t shape[NB_MAX_RANK + 2];
    *status = 0;
    switch (op) {
    case 0: return nb_add(a, c);
    case 1: return nb_sub(a, c);
    case 2: return nb_mul(a, c);
    case 3: return nb_div(a, c);
    case 4: return nb_pow_t(a, c);
    case 5: return nb_gt(a, c);
    case 6: return nb_lt(a, c);
    case 7: return nb_eq(a, c);
    case 8: return nb_where(a, c, d);
    case 9: return nb_neg(a);
    case 10: return nb_scale(a, s);
    case 11: return nb_add_scalar(a, s);
    case 12: return nb_pow(a, s);
    case 13: return nb_exp(a);
    case 14: return nb_log(a);
    case 15: return nb_sqrt(a);
    case 16: return nb_abs(a);
    case 17: return nb_sin(a);
    case 18: return nb_cos(a);
    case 19: return nb_tanh(a);
    case 20: return nb_sigmoid(a);
    case 21: return nb_relu(a);
    case 22: return nb_leaky_relu(a, s);
    case 23: return nb_gelu(a);
    case 24: return nb_erf(a);
    case 25: return nb_sign(a);
    case 26: return nb_log1p(a);
    case 27: return nb_expm1(a);
    case 28: return nb_softplus(a);
    case 29: return nb_maximum(a, c);
    case 30: return nb_minimum(a, c);
    case 31: return nb_clamp(a, s, fz_value(b));
    case 32: return nb_logsumexp(a, nax, nax ? axes : NULL, keep);
    case 33: return nb_var_axes(a, nax, nax ? axes : NULL, fz_range(b, -1, 3), keep);
    case 34: return nb_norm(a);
    case 35: return nb_to(a, (nb_dtype)fz_pick(b, 3));
    case 36: return nb_clone(a);
    case 37: return nb_contiguous(a);
    case 38: return nb_sum(a);
    case 39: return nb_mean(a);
    case 40: return nb_sum_axes(a, nax, nax ? axes : NULL, keep);
    case 41: return nb_mean_axes(a, nax, nax ? axes : NULL, keep);
    case 42: return nb_max_axes(a, nax, nax ? axes : NULL, keep);
    case 43: {
        int r = pick_shape(p, shape);
        if (fz_u8(b) & 1 && r > 0) shape[fz_pick(b, r)] = -1; /* infer one */
        return nb_reshape(a, r, shape);
    }
    case 44: return nb_transpose(a, ax, ax2);
    case 45: {
        int perm[NB_MAX_RANK];
        int r = nb_rank(a) < 0 ? 0 : nb_rank(a);
        for (int i = 0; i < r; i++) perm[i] = i;
        for (int i = r - 1; i > 0; i--) { /* a permutation, sometimes spoiled */
            int j = fz_pick(b, i + 1), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        if (r && fz_u8(b) % 8 == 0) perm[fz_pick(b, r)] = fz_range(b, -1, r);
        return nb_permute(a, perm);
    }
    case 46: return nb_slice(a, ax, fz_range(b, -6, 6), fz_range(b, -6, 7));
    case 47: {
        int r = pick_shape(p, shape);
        /* mostly a's shape with some leading axes and some size-1 axes grown */
        if (fz_u8(b) & 1 && a) {
            int ra = nb_rank(a), extra = fz_pick(b, 3);
            if (ra + extra <= NB_MAX_RANK) {
                r = ra + extra;
                for (int i = 0; i < extra; i++) shape[i] = fz_pick(b, 4);
                for (int i = 0; i < ra; i++) {
                    int64_t sz = nb_shape(a)[i];
                    shape[extra + i] = sz == 1 ? fz_pick(b, 5) : sz;
                }
            }
        }
        int64_t n = 1;
        for (int i = 0; i < r && i < NB_MAX_RANK; i++) n *= shape[i] > 0 && shape[i] < 64 ? shape[i] : 1;
        if (n > MAX_NUMEL) return NULL;
        return nb_expand(a, r, shape);
    }
    case 48: {
        nb_tensor *ts[3] = {a, c, d};
        return nb_concat(1 + fz_pick(b, 3), ts, ax);
    }
    case 49: return nb_flip(a, ax);
    case 50: return nb_squeeze(a, ax);
    case 51: return nb_unsqueeze(a, ax);
    case 52: {
        nb_tensor *ts[3] = {a, fz_u8(b) & 1 ? a : c, d};
        return nb_stack(1 + fz_pick(b, 3), ts, ax);
    }
    case 53: {
        int n = 1 + fz_pick(b, 3);
        int64_t sizes[3] = {fz_range(b, -1, 4), fz_range(b, -1, 4), fz_range(b, -1, 4)};
        if (fz_u8(b) & 1 && a && nb_rank(a) > 0 && n > 1) {
            int na = ax < 0 ? ax + nb_rank(a) : ax;
            if (na >= 0 && na < nb_rank(a)) sizes[n - 1] = nb_shape(a)[na] - sizes[0] - (n == 3 ? sizes[1] : 0);
        }
        nb_tensor *out[3] = {NULL, NULL, NULL};
        *status = nb_split(a, ax, n, sizes, out);
        if (*status != 0) return NULL;
        return out[fz_pick(b, n)];
    }
    case 54: return nb_matmul(a, c);
    case 55: return nb_dense(a, c, fz_u8(b) & 1 ? d : NULL, (nb_act)fz_pick(b, 4));
    case 56: return nb_softmax(a, ax);
    case 57: return nb_log_softmax(a, ax);
    case 58: return nb_cross_entropy(a, c);
    case 59: return nb_nll_loss(a, c);
    case 60: return nb_layer_norm(a, fz_u8(b) & 1 ? c : NULL, fz_u8(b) & 1 ? d : NULL, 1e-5);
    case 61: return nb_inverse(a);
    case 62: return nb_det(a);
    case 63: return nb_logdet(a);
    case 64: return nb_index_select(a, ax, fz_u8(b) & 1 ? c : idx_tensor(p));
    case 65: return nb_gather(a, ax, c);
    case 66: return nb_cumsum(a, ax);
    case 67: {
        int64_t pads[2 * NB_MAX_RANK];
        for (int i = 0; i < 2 * NB_MAX_RANK; i++) pads[i] = fz_range(b, -1, 2);
        return nb_pad(a, pads, s);
    }
    case 68: {
        nb_rng rng;
        nb_rng_seed(&rng, fz_u8(b));
        return nb_dropout(a, fz_range(b, -1, 4) / 4.0, fz_u8(b) & 1, &rng);
    }
    case 69: return nb_detach(a);
    case 70: { /* in place, on a tensor of the pool: refused on a leaf that requires grad, else bumps a version */
        switch (fz_pick(b, 7)) {
        case 0: *status = nb_add_(a, c); break;
        case 1: *status = nb_sub_(a, c); break;
        case 2: *status = nb_mul_(a, c); break;
        case 3: *status = nb_copy_(a, c); break;
        case 4: *status = nb_scale_(a, s); break;
        case 5: *status = nb_fill_(a, s); break;
        default: *status = nb_axpy_(a, s, c); break;
        }
        return NULL;
    }
    default: /* losses of nabla/nn.h */
        switch (fz_pick(b, 6)) {
        case 5: {
            nb_ce_options o = {fz_range(b, -1, 4) - 100 * (fz_u8(b) & 1), (nb_reduction)fz_pick(b, 4),
                               fz_range(b, -1, 5) / 4.0};
            return nb_cross_entropy_ex(a, c, fz_u8(b) & 1 ? &o : NULL);
        }
        case 0: return nb_mse_loss(a, c);
        case 1: return nb_l1_loss(a, c);
        case 2: return nb_bce_loss(a, c);
        case 3: return nb_bce_with_logits_loss(a, c);
        default: return nb_hinge_loss(a, c);
        }
    }
}

static void check_result(nb_tensor *t) {
    int r = nb_rank(t);
    FZ_ASSERT(r >= 0 && r <= NB_MAX_RANK);
    int64_t n = 1;
    for (int i = 0; i < r; i++) {
        FZ_ASSERT(nb_shape(t)[i] >= 0);
        n *= nb_shape(t)[i];
    }
    FZ_ASSERT(nb_numel(t) == n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_init();
    prog p = {{data, size}, {0}, 0};
    uint8_t hdr = fz_u8(&p.in);
    int nleaves = 1 + (hdr & 3);
    nb_scope_begin();
    nb_tensor *leaves[4];
    int nl = 0;
    for (int i = 0; i < nleaves; i++) {
        uint8_t k = fz_u8(&p.in);
        nb_dtype dt = k % 8 == 7 ? NB_I64 : k & 1 ? NB_F64 : NB_F32;
        nb_tensor *t = make_tensor(&p, dt);
        if (!t) continue;
        if (dt != NB_I64 && !(k & 2)) {
            nb_set_requires_grad(t, true);
            FZ_ASSERT(nb_requires_grad(t));
            leaves[nl++] = t;
        }
        p.pool[p.np++] = t;
    }
    for (int s = 0; s < MAX_OPS && p.in.n > 0; s++) {
        int status;
        nb_clear_error();
        nb_tensor *r = step(&p, &status);
        if (status != 0) FZ_FAILED_WITH_MESSAGE();
        if (!r) {
            if (status == 0 && nb_last_error() == NULL) continue; /* an in-place op that worked, or skipped */
            FZ_FAILED_WITH_MESSAGE();
            continue;
        }
        check_result(r);
        if (nb_numel(r) > MAX_NUMEL) continue; /* kept by the scope, not used again */
        if (p.np < POOL) p.pool[p.np++] = r;
        else p.pool[fz_pick(&p.in, POOL)] = r;
    }
    /* backward from the last float result that needs a gradient */
    nb_clear_error();
    nb_tensor *root = NULL;
    for (int i = p.np - 1; i >= 0 && !root; i--)
        if (nb_requires_grad(p.pool[i]) && nb_dtype_of(p.pool[i]) != NB_I64) root = p.pool[i];
    if (root) {
        nb_tensor *loss = nb_numel(root) == 1 ? root : nb_sum(root);
        FZ_ASSERT(loss != NULL);
        unsigned flags = (hdr & 4 ? NB_CREATE_GRAPH : 0) | (hdr & 8 ? NB_RETAIN_GRAPH : 0);
        if (hdr & 4) {
            /* gradients owned by the scope, then a gradient of the first one */
            nb_tensor *g[4];
            if (nb_gradients(loss, NULL, nl, leaves, flags, g) != 0) {
                FZ_FAILED_WITH_MESSAGE();
            } else if (nl > 0) {
                for (int i = 0; i < nl; i++) FZ_ASSERT(g[i] && nb_numel(g[i]) == nb_numel(leaves[i]));
                nb_clear_error();
                nb_tensor *g2 = nb_gradient(nb_sum(nb_mul(g[0], g[0])), leaves[0], 0);
                if (!g2) FZ_FAILED_WITH_MESSAGE();
                else FZ_ASSERT(nb_numel(g2) == nb_numel(leaves[0]));
            }
        } else {
            int rc = nb_backward(loss, NULL, flags);
            if (rc != 0) {
                FZ_FAILED_WITH_MESSAGE();
            } else {
                for (int i = 0; i < nl; i++) {
                    nb_tensor *g = nb_grad(leaves[i]);
                    if (!g) continue; /* a leaf the root does not depend on */
                    FZ_ASSERT(nb_rank(g) == nb_rank(leaves[i]) && nb_dtype_of(g) == nb_dtype_of(leaves[i]));
                    for (int k = 0; k < nb_rank(g); k++) FZ_ASSERT(nb_shape(g)[k] == nb_shape(leaves[i])[k]);
                }
                nb_clear_error();
                rc = nb_backward(loss, NULL, 0); /* again: fine when retained, else an error */
                if (hdr & 8) FZ_ASSERT(rc == 0);
                else if (!nb_is_leaf(loss)) FZ_ASSERT(rc != 0 && nb_last_error() != NULL);
            }
        }
    }
    nb_scope_end();
    fz_check_memory();
    return 0;
}
