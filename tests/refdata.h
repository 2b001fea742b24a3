/*
 * refdata.h - reading the PyTorch reference files of the tests.
 *
 * tests/data/reference.txt (test_reference.c), numerics_reference.txt
 * (test_numerics.c) and hvp_reference.txt (test_hvp.c) are written by
 * tools/gen_reference.py, gen_numerics_reference.py and gen_hvp_reference.py
 * (through tools/refformat.py) in one format, which gen_reference.py's
 * docstring describes: whitespace-separated tokens, '#' comments, "cases N",
 * then per case
 *
 *     case <name>  op <op>  params <n> <v...>  inputs <k>
 *     input <rg> <tensor>   (k times)
 *     output <tensor>  weight <tensor>
 *     ...                   (blocks of each file: grad, or quad/dir/grad/hvp)
 *     end
 *
 * where <tensor> is "<rank> <dims...>" and the values, row-major. Numbers are
 * read with strtod, so nan, inf and -inf are values too.
 *
 * rd_open opens a file and reads its "cases N"; rd_read_case reads a case of
 * reference.txt or numerics_reference.txt (grad blocks, then "end"),
 * rd_read_head the part every file has (up to the weight) for a reader of
 * other blocks; rd_free_case frees what a case holds; rd_trailing tells
 * whether anything follows the last case. A format error prints the file,
 * the token and what was expected, and makes the readers return false. Like
 * harness.h, everything here is static, one copy per test.
 */
#ifndef NABLA_TEST_REFDATA_H
#define NABLA_TEST_REFDATA_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"

#define RD_MAX_INPUTS 8
#define RD_MAX_PARAMS 24

typedef struct {
    int rank;
    int64_t shape[NB_MAX_RANK];
    int64_t n;
    double *v; /* n values (at least one slot allocated) */
} rd_tensor;

typedef struct {
    char name[128];
    char op[64];
    int nparams;
    double params[RD_MAX_PARAMS];
    int ninputs;
    int rg[RD_MAX_INPUTS]; /* input i requires grad */
    rd_tensor in[RD_MAX_INPUTS];
    rd_tensor out, weight;
    int has_grad[RD_MAX_INPUTS];
    rd_tensor grad[RD_MAX_INPUTS];
    /* hvp_reference.txt only: U, and per input that requires grad v_i and (H v)_i */
    rd_tensor quad, dir[RD_MAX_INPUTS], hvp[RD_MAX_INPUTS];
} rd_case;

static const char *rd_file = "reference data"; /* the file being read, for messages (set by rd_open) */
static int rd_ntokens;                        /* tokens read so far, for messages */

/* Next whitespace-separated token, skipping '#' comments to the end of line. */
static inline bool rd_next_token(FILE *f, char *tok, size_t cap) {
    for (;;) {
        int c = fgetc(f);
        while (c != EOF && (c == ' ' || c == '\t' || c == '\n' || c == '\r')) c = fgetc(f);
        if (c == EOF) return false;
        if (c == '#') {
            while (c != EOF && c != '\n') c = fgetc(f);
            continue;
        }
        size_t k = 0;
        while (c != EOF && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            if (k + 1 < cap) tok[k++] = (char)c;
            c = fgetc(f);
        }
        tok[k] = '\0';
        rd_ntokens++;
        return true;
    }
}

static inline bool rd_expect_word(FILE *f, const char *word) {
    char tok[128];
    if (!rd_next_token(f, tok, sizeof tok)) {
        fprintf(stderr, "%s: expected '%s', got end of file\n", rd_file, word);
        return false;
    }
    if (strcmp(tok, word) != 0) {
        fprintf(stderr, "%s: expected '%s', got '%s' (token %d)\n", rd_file, word, tok, rd_ntokens);
        return false;
    }
    return true;
}

static inline bool rd_read_double(FILE *f, double *out) {
    char tok[64];
    if (!rd_next_token(f, tok, sizeof tok)) return false;
    char *end = NULL;
    *out = strtod(tok, &end);
    if (end == tok || *end != '\0') {
        fprintf(stderr, "%s: bad number '%s' (token %d)\n", rd_file, tok, rd_ntokens);
        return false;
    }
    return true;
}

static inline bool rd_read_int(FILE *f, int64_t *out) {
    char tok[64];
    if (!rd_next_token(f, tok, sizeof tok)) return false;
    char *end = NULL;
    long long v = strtoll(tok, &end, 10);
    if (end == tok || *end != '\0') {
        fprintf(stderr, "%s: bad integer '%s' (token %d)\n", rd_file, tok, rd_ntokens);
        return false;
    }
    *out = (int64_t)v;
    return true;
}

/* "<rank> <dims...>" then the values. */
static inline bool rd_read_tensor(FILE *f, rd_tensor *t) {
    int64_t r;
    if (!rd_read_int(f, &r) || r < 0 || r > NB_MAX_RANK) return false;
    t->rank = (int)r;
    t->n = 1;
    for (int i = 0; i < t->rank; i++) {
        if (!rd_read_int(f, &t->shape[i]) || t->shape[i] < 0) return false;
        t->n *= t->shape[i];
    }
    free(t->v);
    t->v = (double *)malloc(sizeof(double) * (size_t)(t->n ? t->n : 1));
    if (!t->v) return false;
    for (int64_t i = 0; i < t->n; i++)
        if (!rd_read_double(f, &t->v[i])) return false;
    return true;
}

static inline void rd_free_case(rd_case *c) {
    for (int i = 0; i < RD_MAX_INPUTS; i++) {
        free(c->in[i].v);
        free(c->grad[i].v);
        free(c->dir[i].v);
        free(c->hvp[i].v);
    }
    free(c->out.v);
    free(c->weight.v);
    free(c->quad.v);
    memset(c, 0, sizeof *c);
}

/* Opens path and reads its "cases N" into *ncases; NULL (after a message) when it cannot. */
static inline FILE *rd_open(const char *path, int64_t *ncases) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    rd_file = path;
    rd_ntokens = 0;
    if (!rd_expect_word(f, "cases") || !rd_read_int(f, ncases) || *ncases <= 0) {
        fprintf(stderr, "%s: missing 'cases N' header\n", path);
        fclose(f);
        return NULL;
    }
    return f;
}

/* The start of a case, up to and with its weight. */
static inline bool rd_read_head(FILE *f, rd_case *c) {
    memset(c, 0, sizeof *c);
    int64_t k;
    if (!rd_expect_word(f, "case") || !rd_next_token(f, c->name, sizeof c->name)) return false;
    if (!rd_expect_word(f, "op") || !rd_next_token(f, c->op, sizeof c->op)) return false;
    if (!rd_expect_word(f, "params") || !rd_read_int(f, &k) || k < 0 || k > RD_MAX_PARAMS) return false;
    c->nparams = (int)k;
    for (int i = 0; i < c->nparams; i++)
        if (!rd_read_double(f, &c->params[i])) return false;
    if (!rd_expect_word(f, "inputs") || !rd_read_int(f, &k) || k < 0 || k > RD_MAX_INPUTS) return false;
    c->ninputs = (int)k;
    for (int i = 0; i < c->ninputs; i++) {
        int64_t rg;
        if (!rd_expect_word(f, "input") || !rd_read_int(f, &rg) || !rd_read_tensor(f, &c->in[i])) return false;
        c->rg[i] = rg != 0;
    }
    if (!rd_expect_word(f, "output") || !rd_read_tensor(f, &c->out)) return false;
    return rd_expect_word(f, "weight") && rd_read_tensor(f, &c->weight);
}

/* A case of reference.txt or numerics_reference.txt: the head, then "grad <i> <tensor>" blocks (each input at most
   once) up to "end". */
static inline bool rd_read_case(FILE *f, rd_case *c) {
    if (!rd_read_head(f, c)) return false;
    char tok[128];
    int64_t k;
    for (;;) {
        if (!rd_next_token(f, tok, sizeof tok)) return false;
        if (strcmp(tok, "end") == 0) return true;
        if (strcmp(tok, "grad") != 0) {
            fprintf(stderr, "%s: case %s: unexpected '%s'\n", rd_file, c->name, tok);
            return false;
        }
        if (!rd_read_int(f, &k) || k < 0 || k >= c->ninputs || c->has_grad[k]) return false;
        c->has_grad[k] = 1;
        if (!rd_read_tensor(f, &c->grad[k])) return false;
    }
}

/* After the last case: true, after a message, when the file holds more. */
static inline bool rd_trailing(FILE *f, int64_t ncases) {
    char tok[32];
    if (!rd_next_token(f, tok, sizeof tok)) return false;
    fprintf(stderr, "%s: trailing data after %lld cases ('%s')\n", rd_file, (long long)ncases, tok);
    return true;
}

#endif
