/*
 * data.c - IDX and CSV data sets and the mini-batch iterator (nabla/data.h).
 *
 * IDX: a big-endian header (0, 0, type 0x08 = u8, number of dimensions), then
 * one big-endian u32 per dimension, then the data. Every size is checked
 * against the bytes actually present.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/nabla/data.h"

#ifdef NABLA_HAVE_ZLIB
#include <zlib.h>
#endif

/* Record an error and give -1: `return fail(fn, "...", ...)`. */
static int minus_one(void *recorded) {
    (void)recorded;
    return -1;
}
#define fail(...) minus_one(nb_failf(__VA_ARGS__))

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Whole file into memory, gunzipped when it ends in .gz. */
static unsigned char *read_all(const char *fn, const char *path, size_t *n) {
    if (ends_with(path, ".gz")) {
#ifdef NABLA_HAVE_ZLIB
        gzFile g = gzopen(path, "rb");
        if (!g) return fail(fn, "cannot open '%s'", path), NULL;
        size_t cap = 1 << 20, len = 0;
        unsigned char *b = malloc(cap);
        int r = 1;
        while (b && (r = gzread(g, b + len, (unsigned)(cap - len))) > 0) {
            len += (size_t)r;
            if (len == cap) {
                unsigned char *b2 = realloc(b, cap *= 2);
                if (!b2) free(b);
                b = b2;
            }
        }
        gzclose(g);
        if (!b || r < 0) {
            free(b);
            return fail(fn, "'%s' is not a valid gzip file", path), NULL;
        }
        *n = len;
        return b;
#else
        return fail(fn, "'%s' is gzip-compressed but nabla was built without zlib", path), NULL;
#endif
    }
    FILE *f = fopen(path, "rb");
    if (!f) return fail(fn, "cannot open '%s'", path), NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
    if (!b || fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(b);
        return fail(fn, "cannot read '%s'", path), NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* Parse an IDX u8 header: dims into dims[], returns the data offset or 0. */
static size_t idx_header(const char *fn, const char *path, const unsigned char *b, size_t n, int64_t *dims,
                         int *nd) {
    if (n < 4 || b[0] || b[1] || b[2] != 0x08 || b[3] == 0 || b[3] > 4) {
        fail(fn, "'%s' is not an IDX file of bytes", path);
        return 0;
    }
    *nd = b[3];
    size_t off = 4 + 4 * (size_t)*nd;
    if (n < off) {
        fail(fn, "'%s' is truncated in its header", path);
        return 0;
    }
    uint64_t total = 1;
    for (int i = 0; i < *nd; i++) {
        const unsigned char *p = b + 4 + 4 * i;
        dims[i] = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
        total *= (uint64_t)dims[i];
        if (total > n) break;
    }
    if (total != n - off) {
        fail(fn, "'%s' holds %zu data bytes, its header says %llu", path, n - off, (unsigned long long)total);
        return 0;
    }
    return off;
}

static void to_top(nb_tensor *t) {
    for (int d = nb_scope_depth(); d > 0 && t; d--) nb_keep(t);
}

int nb_load_idx(const char *images, const char *labels, nb_dtype dt, nb_dataset *out) {
    const char *fn = "nb_load_idx";
    if (!images || !labels || !out || dt == NB_I64) return fail(fn, "bad arguments");
    memset(out, 0, sizeof *out);
    size_t ni, nl;
    unsigned char *bi = read_all(fn, images, &ni);
    unsigned char *bl = bi ? read_all(fn, labels, &nl) : NULL;
    int64_t di[4], dl[4];
    int ndi, ndl;
    size_t oi = bl ? idx_header(fn, images, bi, ni, di, &ndi) : 0;
    size_t ol = oi ? idx_header(fn, labels, bl, nl, dl, &ndl) : 0;
    int rc = -1;
    if (ol && (ndl != 1 || dl[0] != di[0])) {
        fail(fn, "'%s' has %lld labels for %lld images in '%s'", labels, (long long)dl[0], (long long)di[0], images);
    } else if (ol) {
        int64_t n = di[0], d = 1;
        for (int i = 1; i < ndi; i++) d *= di[i];
        /* Straight into the tensors: no intermediate array of doubles. */
        out->x = nb_new(dt, 2, (int64_t[]){n, d}, NULL);
        out->y = nb_new(NB_I64, 1, (int64_t[]){n}, NULL);
        if (out->x && out->y) {
            const unsigned char *px = bi + oi, *py = bl + ol;
            int64_t classes = 0, *yv = nb_data(out->y);
            if (dt == NB_F32) {
                float *xv = nb_data(out->x);
                for (int64_t i = 0; i < n * d; i++) xv[i] = (float)(px[i] / 255.0);
            } else {
                double *xv = nb_data(out->x);
                for (int64_t i = 0; i < n * d; i++) xv[i] = px[i] / 255.0;
            }
            for (int64_t i = 0; i < n; i++) {
                yv[i] = py[i];
                if (py[i] + 1 > classes) classes = py[i] + 1;
            }
            out->n = n;
            out->d = d;
            out->classes = classes;
            to_top(out->x);
            to_top(out->y);
            rc = 0;
        } else {
            fail(fn, "out of memory for %lld images", (long long)n);
        }
    }
    free(bi);
    free(bl);
    if (rc != 0) nb_dataset_free(out);
    return rc;
}

int nb_load_csv(const char *path, int label_col, nb_dtype dt, nb_dataset *out) {
    const char *fn = "nb_load_csv";
    if (!path || !out || dt == NB_I64) return fail(fn, "bad arguments");
    memset(out, 0, sizeof *out);
    size_t n;
    unsigned char *b = read_all(fn, path, &n);
    if (!b) return -1;
    b[n] = 0; /* read_all leaves room for this only for plain files; gz buffers have spare capacity */
    char *s = (char *)b, *next = s;
    int64_t cols = -1, rows = 0, cap = 1024, classes = 0;
    double *vals = malloc(sizeof(double) * (size_t)cap);
    int rc = 0;
    int line_no = 0;
    while (next && *next && rc == 0) {
        char *line = next, *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        next = nl ? nl + 1 : NULL;
        line_no++;
        int64_t c = 0;
        char *p = line, *end;
        bool header = false;
        while (*p && *p != '\r') {
            double v = strtod(p, &end);
            if (end == p) {
                if (rows == 0 && cols < 0) {
                    header = true;
                    break;
                }
                rc = fail(fn, "'%s' line %d: column %lld is not a number", path, line_no, (long long)c + 1);
                break;
            }
            if (rows * (cols > 0 ? cols : 1) + c + 1 > cap) {
                cap *= 2;
                double *v2 = realloc(vals, sizeof(double) * (size_t)cap);
                if (!v2) {
                    rc = fail(fn, "out of memory");
                    break;
                }
                vals = v2;
            }
            vals[rows * (cols > 0 ? cols : 0) + c] = v;
            c++;
            p = end;
            while (*p == ',' || *p == ' ' || *p == ';' || *p == '\t') p++;
        }
        if (header || rc) continue;
        if (c == 0) continue;
        if (cols < 0) cols = c;
        if (c != cols) rc = fail(fn, "'%s' line %d has %lld columns, expected %lld", path, line_no, (long long)c, (long long)cols);
        rows++;
    }
    int lc = label_col < 0 ? (int)cols + label_col : label_col;
    if (rc == 0 && (cols < 2 || lc < 0 || lc >= cols)) rc = fail(fn, "'%s': label column %d is out of range for %lld columns", path, label_col, (long long)cols);
    if (rc == 0) {
        double *xv = malloc(sizeof(double) * (size_t)(rows * (cols - 1) + 1)), *yv = malloc(sizeof(double) * (size_t)(rows + 1));
        for (int64_t r = 0; xv && yv && r < rows && rc == 0; r++) {
            for (int64_t c = 0, k = 0; c < cols; c++) {
                double v = vals[r * cols + c];
                if (c == lc) {
                    if (v < 0 || v != (int64_t)v) rc = fail(fn, "'%s' row %lld: label %g is not a class index", path, (long long)r + 1, v);
                    yv[r] = v;
                    if ((int64_t)v + 1 > classes) classes = (int64_t)v + 1;
                } else {
                    xv[r * (cols - 1) + k++] = v;
                }
            }
        }
        if (rc == 0 && xv && yv) {
            out->x = nb_from_f64(dt, 2, (int64_t[]){rows, cols - 1}, xv);
            out->y = nb_from_f64(NB_I64, 1, (int64_t[]){rows}, yv);
            out->n = rows;
            out->d = cols - 1;
            out->classes = classes;
            to_top(out->x);
            to_top(out->y);
            if (!out->x || !out->y) rc = -1;
        } else if (rc == 0) {
            rc = fail(fn, "out of memory");
        }
        free(xv);
        free(yv);
    }
    free(vals);
    free(b);
    if (rc != 0) nb_dataset_free(out);
    return rc;
}

void nb_dataset_free(nb_dataset *ds) {
    if (!ds) return;
    nb_free(ds->x);
    nb_free(ds->y);
    memset(ds, 0, sizeof *ds);
}

struct nb_batcher {
    const nb_dataset *ds;
    int64_t batch, pos, *perm;
    bool shuffle;
    nb_rng *rng;
};

static void reshuffle(nb_batcher *b) {
    for (int64_t i = 0; i < b->ds->n; i++) b->perm[i] = i;
    if (b->shuffle)
        for (int64_t i = b->ds->n - 1; i > 0; i--) {
            int64_t j = (int64_t)(nb_rng_next(b->rng) % (uint64_t)(i + 1)), t = b->perm[i];
            b->perm[i] = b->perm[j];
            b->perm[j] = t;
        }
    b->pos = 0;
}

nb_batcher *nb_batcher_new(const nb_dataset *ds, int64_t batch, bool shuffle, nb_rng *rng) {
    if (!ds || !ds->x || batch <= 0 || (shuffle && !rng))
        return nb_fail("nb_batcher_new", "need a data set, a batch size > 0 and a generator to shuffle");
    if (!ds->y || nb_dtype_of(ds->y) != NB_I64 || nb_rank(ds->y) != 1 || nb_shape(ds->y)[0] != ds->n)
        return nb_fail("nb_batcher_new", "the labels must be a 1-D NB_I64 tensor of one label per sample");
    nb_batcher *b = calloc(1, sizeof *b);
    if (b) b->perm = malloc(sizeof(int64_t) * (size_t)(ds->n ? ds->n : 1));
    if (!b || !b->perm) {
        free(b);
        return nb_fail("nb_batcher_new", "out of memory");
    }
    b->ds = ds;
    b->batch = batch;
    b->shuffle = shuffle;
    b->rng = rng;
    reshuffle(b);
    return b;
}

bool nb_batcher_next(nb_batcher *b, nb_tensor **x, nb_tensor **y) {
    if (!b || !x || !y) return false;
    if (b->pos >= b->ds->n) {
        reshuffle(b);
        return false;
    }
    int64_t m = b->ds->n - b->pos < b->batch ? b->ds->n - b->pos : b->batch;
    nb_tensor *idx = nb_new(NB_I64, 1, &m, b->perm + b->pos);
    *x = nb_index_select(b->ds->x, 0, idx);
    *y = nb_index_select(b->ds->y, 0, idx);
    nb_free(idx);
    b->pos += m;
    return *x && *y;
}

void nb_batcher_free(nb_batcher *b) {
    if (!b) return;
    free(b->perm);
    free(b);
}
