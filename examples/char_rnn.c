/*
 * char_rnn.c - a character-level vanilla RNN trained by backpropagation
 * through time on a few lines of text, each of a different length.
 *
 *     h_t      = tanh(x_t Wxh + h_{t-1} Whh + bh)    x_t one-hot (1,V), h_t (1,H)
 *     logits_t = h_t Why + by                          (1,V): scores for char t+1
 *
 * The recurrence is a plain C for-loop over the characters of a line, so each
 * training step records a graph as long as the line it reads: the graph's
 * shape changes from step to step (a define-by-run graph), and nb_backward
 * walks it back through every time step. Each step lives in its own scope, so
 * memory in use stays flat. Trained with Adam and gradient-norm clipping, the
 * model then continues prompts greedily. Exits 0 only when the final average
 * loss is under half the initial one.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"
#include "nabla/nn.h"

static const char *const LINES[] = {
    "the graph grows as the code runs", "a for loop unrolls it in time", "each line has its own length",
    "so each step is a new graph",      "and backward walks back",       "through time",
};
enum { NLINES = sizeof LINES / sizeof LINES[0], MAXLEN = 64, H = 32, STEPS = 1500, LOG_EVERY = 300 };

static int vocab_n;                  /* V: distinct characters, plus '\n' which ends a line */
static int64_t char_id[128];         /* character -> id, -1 if absent */
static char id_char[128];            /* id -> character */
static nb_tensor *Wxh, *Whh, *bh, *Why, *by; /* (V,H), (H,H), (H), (H,V), (V) */

static int fail(const char *what) {
    fprintf(stderr, "char_rnn: %s: %s\n", what, nb_last_error() ? nb_last_error() : "(no message)");
    return 1;
}

/* A parameter of shape (rows, cols), or (rows) when cols is 0, uniform in
   [-a, a); made outside every scope, so it lives until nb_free. */
static nb_tensor *param(int64_t rows, int64_t cols, double a, nb_rng *rng) {
    int64_t shape[2] = {rows, cols}, n = rows * (cols ? cols : 1);
    double *v = malloc(sizeof *v * (size_t)n);
    if (!v) return nb_fail("char_rnn", "out of memory");
    for (int64_t i = 0; i < n; i++) v[i] = a * (2.0 * nb_rng_uniform(rng) - 1.0);
    nb_tensor *t = nb_from_f64(NB_F32, cols ? 2 : 1, shape, v);
    free(v);
    if (t) nb_set_requires_grad(t, true);
    return t;
}

/* One time step. x_t Wxh for a one-hot x_t is row id of Wxh, which
   nb_index_select picks out (and whose gradient it scatters back). */
static nb_tensor *rnn_step(nb_tensor *h, int64_t id) {
    nb_tensor *x_wxh = nb_index_select(Wxh, 0, nb_new(NB_I64, 1, (int64_t[]){1}, &id)); /* (1,H) */
    return nb_tanh(nb_add(nb_add(x_wxh, nb_matmul(h, Whh)), bh));
}

/* Mean cross-entropy of predicting each next character of line (and the
   final '\n') from the ones before it: len(line) time steps. */
static nb_tensor *line_loss(const char *line) {
    int64_t n = (int64_t)strlen(line), target[MAXLEN];
    nb_tensor *hs[MAXLEN];
    nb_tensor *h = nb_full(NB_F32, 2, (int64_t[]){1, H}, 0.0); /* h_{-1} = 0 */
    for (int64_t t = 0; t < n; t++) {
        h = hs[t] = rnn_step(h, char_id[(unsigned char)line[t]]);
        target[t] = t + 1 < n ? char_id[(unsigned char)line[t + 1]] : char_id['\n'];
    }
    /* All n hidden states at once: (n,H) Why + by -> logits (n,V). */
    nb_tensor *logits = nb_add(nb_matmul(nb_concat((int)n, hs, 0), Why), by);
    return nb_cross_entropy(logits, nb_new(NB_I64, 1, &n, target));
}

/* Average loss per character over all lines, without recording a graph. */
static double eval_loss(void) {
    double sum = 0;
    int64_t chars = 0;
    nb_set_grad_enabled(false);
    for (int i = 0; i < NLINES; i++) {
        nb_scope_begin();
        int64_t n = (int64_t)strlen(LINES[i]);
        sum += nb_item(line_loss(LINES[i])) * (double)n; /* NaN on failure, which fails the check */
        chars += n;
        nb_scope_end();
    }
    nb_set_grad_enabled(true);
    return sum / (double)chars;
}

/* Feed prompt, then append the most likely next character until '\n' or 60 characters. */
static int continue_prompt(const char *prompt) {
    char out[MAXLEN + 64];
    int plen = (int)strlen(prompt), n = plen;
    memcpy(out, prompt, (size_t)n);
    nb_set_grad_enabled(false);
    nb_scope_begin();
    nb_tensor *h = nb_full(NB_F32, 2, (int64_t[]){1, H}, 0.0);
    for (int t = 0; h && t < plen + 60; t++) {
        h = rnn_step(h, char_id[(unsigned char)out[t]]);
        if (t + 1 < plen) continue; /* still reading the prompt */
        double scores[128];
        if (nb_read_f64(nb_add(nb_matmul(h, Why), by), scores, 128) != vocab_n) h = NULL;
        int best = 0;
        for (int c = 1; h && c < vocab_n; c++) best = scores[c] > scores[best] ? c : best;
        if (!h || id_char[best] == '\n') break;
        out[n++] = id_char[best];
    }
    nb_scope_end();
    nb_set_grad_enabled(true);
    if (!h) return fail("sampling");
    printf("  \"%s\" -> \"%.*s\"\n", prompt, n, out);
    return 0;
}

/* Train on random lines, then report; returns 0 when the loss fell under half its start. */
static int train(nb_optim *opt, nb_tensor *const *params, nb_rng *rng) {
    double initial = eval_loss(), running = 0;
    if (isnan(initial)) return fail("evaluating");
    printf("vocabulary %d, hidden %d, initial loss %.4f\n", vocab_n, H, initial);
    for (int step = 1; step <= STEPS; step++) {
        const char *line = LINES[nb_rng_next(rng) % NLINES]; /* a random line: the graph's length varies */
        nb_scope_begin();
        nb_optim_zero_grad(opt);
        nb_tensor *loss = line_loss(line);
        int bad = !loss || nb_backward(loss, NULL, 0) != 0 || nb_clip_grad_norm(5, params, 5.0) < 0 ||
                  nb_optim_step(opt) != 0;
        running += bad ? 0 : nb_item(loss);
        nb_scope_end(); /* frees this step's whole graph */
        if (bad) return fail("training step");
        if (step % LOG_EVERY == 0) {
            printf("step %4d  loss %.4f  (memory in use %lld bytes)\n", step, running / LOG_EVERY,
                   (long long)nb_memory_in_use());
            running = 0;
        }
    }
    double final = eval_loss();
    if (isnan(final)) return fail("evaluating");
    printf("final loss %.4f (initial %.4f)\ngreedy continuations:\n", final, initial);
    if (continue_prompt("the gr") || continue_prompt("each l") || continue_prompt("and b")) return 1;
    if (final < 0.5 * initial) return 0;
    fprintf(stderr, "char_rnn: the loss did not fall under half its initial value\n");
    return 1;
}

int main(void) {
    memset(char_id, -1, sizeof char_id);
    for (int i = 0; i < NLINES; i++) {
        if (strlen(LINES[i]) >= MAXLEN) return fprintf(stderr, "char_rnn: line %d is too long\n", i), 1;
        for (const char *c = LINES[i]; *c; c++)
            if (char_id[(unsigned char)*c] < 0) id_char[vocab_n] = *c, char_id[(unsigned char)*c] = vocab_n++;
    }
    id_char[vocab_n] = '\n', char_id['\n'] = vocab_n++;

    nb_rng rng;
    nb_rng_seed(&rng, 1);
    double a = 1.0 / sqrt(H); /* small recurrent weights keep tanh out of saturation at the start */
    Wxh = param(vocab_n, H, 0.5, &rng), Whh = param(H, H, 0.5 * a, &rng), bh = param(H, 0, 0.0, &rng);
    Why = param(H, vocab_n, a, &rng), by = param(vocab_n, 0, 0.0, &rng);
    nb_tensor *params[5] = {Wxh, Whh, bh, Why, by};
    nb_optim *opt = Wxh && Whh && bh && Why && by ? nb_adam(5, params, 0.005, 0.9, 0.999, 1e-8, 0.0) : NULL;
    int rc = opt ? train(opt, params, &rng) : fail("setting up");
    nb_optim_free(opt);
    for (int i = 0; i < 5; i++) nb_free(params[i]);
    return rc;
}
