/*
 * refcheck.h - what test_reference.c and test_hvp.c share of checking nabla
 * against a reference file (read with tests/refdata.h):
 *  - rd_apply_op runs a case's op with nabla, for the ops whose name and
 *    parameters (as tools/gen_reference.py's docstring says) both files use;
 *    the ops of one file only, and var and layer_norm (whose parameters
 *    differ between the files), stay in that test's dispatch, which tries
 *    them first and then calls rd_apply_op;
 *  - rd_run_cases reads and runs every case of a file, each one test of
 *    harness.h's count.
 * Include after harness.h and refdata.h.
 */
#ifndef NABLA_TEST_REFCHECK_H
#define NABLA_TEST_REFCHECK_H

#include "nabla/nn.h"

/* For a dispatch with `const rd_case *c` and `const char *op`: the op is s. */
#define RD_IS(s) (strcmp(op, (s)) == 0)
/* Returns NULL, after a message, unless the case has ni inputs and npar parameters. */
#define RD_NEED(ni, npar)                                                                                    \
    do {                                                                                                     \
        if (c->ninputs != (ni) || c->nparams != (npar)) {                                                    \
            fprintf(stderr, "case %s: op %s expects %d inputs and %d params, has %d and %d\n", c->name, op, \
                    (ni), (npar), c->ninputs, c->nparams);                                                   \
            return NULL;                                                                                     \
        }                                                                                                    \
    } while (0)

/* Runs op (case c's op, or what a test made of it) on the inputs x; *known is false for an op it does not know. */
static inline nb_tensor *rd_apply_op(const rd_case *c, const char *op, nb_tensor **x, bool *known) {
    const int np = c->nparams;
    int ia[RD_MAX_PARAMS];
    int64_t la[RD_MAX_PARAMS];
    for (int i = 0; i < np; i++) {
        ia[i] = (int)c->params[i];
        la[i] = (int64_t)c->params[i];
    }
    *known = true;
#define IS RD_IS
#define NEED RD_NEED
    /* Elementwise binary and where. */
    if (IS("add")) { NEED(2, 0); return nb_add(x[0], x[1]); }
    if (IS("sub")) { NEED(2, 0); return nb_sub(x[0], x[1]); }
    if (IS("mul")) { NEED(2, 0); return nb_mul(x[0], x[1]); }
    if (IS("div")) { NEED(2, 0); return nb_div(x[0], x[1]); }
    if (IS("pow_t")) { NEED(2, 0); return nb_pow_t(x[0], x[1]); }
    if (IS("where")) { NEED(3, 0); return nb_where(x[0], x[1], x[2]); }
    if (IS("maximum")) { NEED(2, 0); return nb_maximum(x[0], x[1]); }
    if (IS("minimum")) { NEED(2, 0); return nb_minimum(x[0], x[1]); }
    if (IS("clamp")) { NEED(1, 2); return nb_clamp(x[0], c->params[0], c->params[1]); }
    /* With a constant. */
    if (IS("neg")) { NEED(1, 0); return nb_neg(x[0]); }
    if (IS("scale")) { NEED(1, 1); return nb_scale(x[0], c->params[0]); }
    if (IS("add_scalar")) { NEED(1, 1); return nb_add_scalar(x[0], c->params[0]); }
    if (IS("pow")) { NEED(1, 1); return nb_pow(x[0], c->params[0]); }
    /* Unary. */
    if (IS("exp")) { NEED(1, 0); return nb_exp(x[0]); }
    if (IS("log")) { NEED(1, 0); return nb_log(x[0]); }
    if (IS("sqrt")) { NEED(1, 0); return nb_sqrt(x[0]); }
    if (IS("abs")) { NEED(1, 0); return nb_abs(x[0]); }
    if (IS("sin")) { NEED(1, 0); return nb_sin(x[0]); }
    if (IS("cos")) { NEED(1, 0); return nb_cos(x[0]); }
    if (IS("tanh")) { NEED(1, 0); return nb_tanh(x[0]); }
    if (IS("sigmoid")) { NEED(1, 0); return nb_sigmoid(x[0]); }
    if (IS("relu")) { NEED(1, 0); return nb_relu(x[0]); }
    if (IS("leaky_relu")) { NEED(1, 1); return nb_leaky_relu(x[0], c->params[0]); }
    if (IS("gelu")) { NEED(1, 0); return nb_gelu(x[0]); }
    if (IS("erf")) { NEED(1, 0); return nb_erf(x[0]); }
    if (IS("sign")) { NEED(1, 0); return nb_sign(x[0]); }
    if (IS("log1p")) { NEED(1, 0); return nb_log1p(x[0]); }
    if (IS("expm1")) { NEED(1, 0); return nb_expm1(x[0]); }
    if (IS("softplus")) { NEED(1, 0); return nb_softplus(x[0]); }
    if (IS("clone")) { NEED(1, 0); return nb_clone(x[0]); }
    /* Reductions: params keepdim axis... */
    if (IS("sum")) { NEED(1, 0); return nb_sum(x[0]); }
    if (IS("mean")) { NEED(1, 0); return nb_mean(x[0]); }
    if (IS("sum_axes") || IS("mean_axes") || IS("max_axes")) {
        if (c->ninputs != 1 || np < 1) { NEED(1, 1); }
        bool keep = ia[0] != 0;
        int naxes = np - 1;
        const int *axes = naxes ? ia + 1 : NULL;
        if (IS("sum_axes")) return nb_sum_axes(x[0], naxes, axes, keep);
        if (IS("mean_axes")) return nb_mean_axes(x[0], naxes, axes, keep);
        return nb_max_axes(x[0], naxes, axes, keep);
    }
    if (IS("logsumexp")) { NEED(1, 1); return nb_logsumexp(x[0], 1, ia, false); }
    if (IS("norm")) { NEED(1, 0); return nb_norm(x[0]); }
    /* Shape. */
    if (IS("reshape")) { NEED(1, np); return nb_reshape(x[0], np, la); }
    if (IS("transpose")) { NEED(1, 2); return nb_transpose(x[0], ia[0], ia[1]); }
    if (IS("permute")) { NEED(1, np); return nb_permute(x[0], ia); }
    if (IS("slice")) { NEED(1, 3); return nb_slice(x[0], ia[0], la[1], la[2]); }
    if (IS("expand")) { NEED(1, np); return nb_expand(x[0], np, la); }
    if (IS("concat")) {
        if (c->ninputs < 1 || np != 1) { NEED(c->ninputs < 1 ? 1 : c->ninputs, 1); }
        return nb_concat(c->ninputs, x, ia[0]);
    }
    if (IS("flip")) { NEED(1, 1); return nb_flip(x[0], ia[0]); }
    if (IS("stack")) { NEED(2, 1); return nb_stack(2, x, ia[0]); }
    if (IS("unsqueeze")) { NEED(1, 1); return nb_unsqueeze(x[0], ia[0]); }
    if (IS("squeeze")) { NEED(1, 1); return nb_squeeze(x[0], ia[0]); }
    if (IS("split_second")) { /* the second piece of a split into sizes params[1..] */
        NEED(1, 3);
        nb_tensor *p[2];
        int64_t sz[2] = {la[1], la[2]};
        return nb_split(x[0], ia[0], 2, sz, p) == 0 ? p[1] : NULL;
    }
    /* Products. */
    if (IS("matmul")) { NEED(2, 0); return nb_matmul(x[0], x[1]); }
    if (IS("dense")) {
        if (c->ninputs == 2) { NEED(2, 1); return nb_dense(x[0], x[1], NULL, (nb_act)ia[0]); }
        NEED(3, 1);
        return nb_dense(x[0], x[1], x[2], (nb_act)ia[0]);
    }
    if (strncmp(op, "einsum:", 7) == 0) { NEED(c->ninputs, 0); return nb_einsum(op + 7, c->ninputs, x); }
    /* Softmax family; the losses' targets come as params. */
    if (IS("softmax")) { NEED(1, 1); return nb_softmax(x[0], ia[0]); }
    if (IS("log_softmax")) { NEED(1, 1); return nb_log_softmax(x[0], ia[0]); }
    if (IS("cross_entropy") || IS("nll_loss")) {
        NEED(1, np);
        nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){np}, c->params);
        return IS("nll_loss") ? nb_nll_loss(x[0], t) : nb_cross_entropy(x[0], t);
    }
    /* nb_cross_entropy_ex: params reduction ignore_index label_smoothing, then the targets (x's leading shape) */
    if (IS("cross_entropy_ex")) {
        const nb_tensor *x0 = x[0];
        int64_t n = 1;
        for (int d = 0; x0 && d + 1 < nb_rank(x0); d++) n *= nb_shape(x0)[d];
        NEED(1, 3 + (int)n);
        nb_tensor *t = nb_from_f64(NB_I64, nb_rank(x0) - 1, nb_shape(x0), c->params + 3);
        nb_ce_options o = {la[1], (nb_reduction)ia[0], c->params[2]};
        return nb_cross_entropy_ex(x[0], t, &o);
    }
    /* Attention: params causal scale kind; kind 1: input 3 is an additive mask, 2: a 0/1 keep mask, as i64. */
    if (IS("attention")) {
        if (np != 3 || c->ninputs != (ia[2] ? 4 : 3)) { NEED(ia[2] ? 4 : 3, 3); return NULL; }
        nb_tensor *m = ia[2] == 2 ? nb_to(x[3], NB_I64) : ia[2] ? x[3] : NULL;
        return nb_attention(x[0], x[1], x[2], m, ia[0] != 0, c->params[1]);
    }
    /* Convolution: params stride (2) padding (2) dilation (2) groups, then for the gradient ops the shape of
       the input (conv2d_input) or of the weight (conv2d_weight). */
    if (IS("conv2d") || IS("conv2d_input") || IS("conv2d_weight")) {
        int want = IS("conv2d") ? 7 : 11;
        if (np != want) { NEED(c->ninputs, want); return NULL; }
        nb_conv2d_opts o = {{ia[0], ia[1]}, {ia[2], ia[3]}, {ia[4], ia[5]}, ia[6]};
        int64_t s[4] = {IS("conv2d") ? 0 : la[7], IS("conv2d") ? 0 : la[8], IS("conv2d") ? 0 : la[9],
                        IS("conv2d") ? 0 : la[10]};
        if (IS("conv2d")) {
            if (c->ninputs == 2) { NEED(2, 7); return nb_conv2d(x[0], x[1], NULL, o); }
            NEED(3, 7);
            return nb_conv2d(x[0], x[1], x[2], o);
        }
        NEED(2, 11);
        return IS("conv2d_input") ? nb_conv2d_input(s, x[1], x[0], o) : nb_conv2d_weight(x[0], s, x[1], o);
    }
    /* Pooling: params kernel (2) stride (2) padding (2) dilation (2). */
    if (IS("max_pool2d") || IS("avg_pool2d")) {
        NEED(1, 8);
        nb_conv2d_opts o = {{ia[2], ia[3]}, {ia[4], ia[5]}, {ia[6], ia[7]}, 0};
        return IS("max_pool2d") ? nb_max_pool2d(x[0], ia, o) : nb_avg_pool2d(x[0], ia, o);
    }
    /* Batch norm: params training momentum eps has_gamma has_beta has_running; inputs x [gamma] [beta]
       [running_mean running_var] (a training call updates the last two in place; y does not depend on them). */
    if (IS("batch_norm")) {
        bool hg = np == 6 && ia[3] != 0, hb = np == 6 && ia[4] != 0, hr = np == 6 && ia[5] != 0;
        NEED(1 + hg + hb + 2 * hr, 6);
        int k = 1;
        nb_tensor *g = hg ? x[k++] : NULL, *b = hb ? x[k++] : NULL, *rm = hr ? x[k++] : NULL, *rv = hr ? x[k] : NULL;
        return nb_batch_norm(x[0], g, b, rm, rv, ia[0] != 0, c->params[1], c->params[2]);
    }
    /* Linear algebra. */
    if (IS("inverse")) { NEED(1, 0); return nb_inverse(x[0]); }
    if (IS("det")) { NEED(1, 0); return nb_det(x[0]); }
    if (IS("logdet")) { NEED(1, 0); return nb_logdet(x[0]); }
    /* Indexing, cumsum, pad. */
    if (IS("index_select")) {
        NEED(1, np);
        nb_tensor *ix = nb_from_f64(NB_I64, 1, (int64_t[]){np - 1}, c->params + 1);
        return nb_index_select(x[0], ia[0], ix);
    }
    if (IS("gather")) {
        NEED(1, np);
        nb_tensor *ix = nb_from_f64(NB_I64, nb_rank(x[0]), nb_shape(x[0]), c->params + 1);
        return nb_gather(x[0], ia[0], ix);
    }
    if (IS("cumsum")) { NEED(1, 1); return nb_cumsum(x[0], ia[0]); }
    if (IS("pad")) {
        NEED(1, np);
        int64_t pads[2 * NB_MAX_RANK];
        for (int i = 1; i < np; i++) pads[i - 1] = la[i];
        return nb_pad(x[0], pads, c->params[0]);
    }
    /* Transformer ops: tril / triu params k; masked_fill inputs x, mask (0/1, no grad), params value. */
    if (IS("gelu_tanh")) { NEED(1, 0); return nb_gelu_tanh(x[0]); }
    if (IS("tril")) { NEED(1, 1); return nb_tril(x[0], la[0]); }
    if (IS("triu")) { NEED(1, 1); return nb_triu(x[0], la[0]); }
    if (IS("masked_fill")) { NEED(2, 1); return nb_masked_fill(x[0], x[1], c->params[0]); }
    /* Losses (nabla/nn.h). */
    if (IS("mse_loss")) { NEED(2, 0); return nb_mse_loss(x[0], x[1]); }
    if (IS("l1_loss")) { NEED(2, 0); return nb_l1_loss(x[0], x[1]); }
    if (IS("bce_loss")) { NEED(2, 0); return nb_bce_loss(x[0], x[1]); }
    if (IS("bce_with_logits_loss")) { NEED(2, 0); return nb_bce_with_logits_loss(x[0], x[1]); }
    if (IS("hinge_loss")) { NEED(2, 0); return nb_hinge_loss(x[0], x[1]); }
#undef NEED
#undef IS
    *known = false;
    return NULL;
}

/* Reads every case of the file at path with read_fn and runs it with run_fn, which returns its number of
   failures and sets *unknown for an op it does not know. Each case counts as one test (th_passed or th_failed);
   a format error (which ends the reading) or data after the last case fails one more. test names the test's
   source for the message about unknown ops. False, after a message and a failure, when the file cannot be read
   at all. */
static inline bool rd_run_cases(const char *path, bool (*read_fn)(FILE *, rd_case *),
                                int (*run_fn)(const rd_case *, bool *), const char *test) {
    int64_t ncases = 0;
    FILE *f = rd_open(path, &ncases);
    rd_case *c = f ? (rd_case *)calloc(1, sizeof *c) : NULL;
    if (!c) {
        if (f) fclose(f);
        th_failed++;
        return false;
    }
    int nunknown = 0;
    for (int64_t k = 0; k < ncases; k++) {
        if (!read_fn(f, c)) {
            fprintf(stderr, "%s: format error in case %lld (%s)\n", path, (long long)k + 1, c->name[0] ? c->name : "?");
            rd_free_case(c);
            th_failed++;
            break;
        }
        th_cur_name = c->name;
        bool unknown = false;
        int fails = run_fn(c, &unknown);
        if (unknown) nunknown++;
        if (fails) {
            th_failed++;
            fprintf(stderr, "FAIL %s\n", c->name);
        } else {
            th_passed++;
        }
        rd_free_case(c);
    }
    if (rd_trailing(f, ncases)) th_failed++;
    free(c);
    fclose(f);
    if (nunknown) fprintf(stderr, "%d case(s) with an op unknown to %s\n", nunknown, test);
    return true;
}

#endif
