/*
 * data.c - IDX and CSV data sets, the seeded train/test split, per-feature
 * standardisation and the mini-batch iterator (nabla/data.h).
 *
 * Files are read whole into one buffer (gunzipped by zlib's inflate when the
 * name ends in .gz), up to a limit: for IDX the size its header implies plus
 * one byte, for CSV 1 GiB once decompressed. The buffer starts at the file's
 * size (for gzip, the size in its trailer, believed only up to deflate's
 * largest ratio of the bytes present) and otherwise doubles as data actually
 * arrives, so a small .gz whose header claims gigabytes costs what it holds.
 * The parsers work on (pointer, length) and never on a terminating NUL, so the
 * in-memory entry points (nb_load_idx_mem, nb_load_csv_mem) read no byte past
 * the buffer.
 *
 * IDX: a big-endian header (0, 0, type 0x08 = u8, number of dimensions), then
 * one big-endian u32 per dimension, then the data. The product of the
 * dimensions is overflow-checked and must equal the bytes present.
 *
 * CSV (RFC 4180) is read in two passes over the buffer. The first checks every
 * record (field count, missing and non-numeric fields, quoting), counts the
 * data records and gathers the distinct string labels; the second writes the
 * features and labels straight into the tensors, so no intermediate array of
 * doubles is held. Each record is unescaped into a scratch buffer of
 * NUL-terminated fields; numbers are read by an exact fast path for the usual
 * decimals and by strtod for everything else.
 *
 * Every allocation goes through nbi_alloc (the allocator hook; zlib's too),
 * and every entry point writes its outputs only once everything has succeeded.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/nabla/data.h"
#include "../core/internal.h"

#ifdef NABLA_HAVE_ZLIB
#include <zlib.h>
#endif

/* Record an error and give -1: `return fail(fn, "...", ...)`. */
static int minus_one(void *recorded) {
    (void)recorded;
    return -1;
}
#define fail(...) minus_one(nb_failf(__VA_ARGS__))

#define CSV_GZ_LIMIT ((size_t)1 << 30)

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Grow the block at *pp (a pointer of any object type; used bytes in use) to
   hold at least need bytes; *cap counts bytes. */
static bool grow(void *pp, size_t *cap, size_t used, size_t need) {
    void *p;
    memcpy(&p, pp, sizeof p);
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 256;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) return false;
        nc *= 2;
    }
    void *q = nbi_alloc(nc);
    if (!q) return false;
    if (used) memcpy(q, p, used);
    nbi_dealloc(p);
    memcpy(pp, &q, sizeof q);
    *cap = nc;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Reading a file                                                           */
/* ------------------------------------------------------------------------ */

/* How many bytes an IDX file should be, from what of its header is in b:
   enough to read the rest of the header, then header + data + 1. */
static size_t idx_want(const unsigned char *b, size_t len) {
    if (len < 4) return 4;
    size_t off = 4 + 4 * (size_t)b[3];
    if (len < off) return off;
    uint64_t total = 1;
    for (int i = 0; i < b[3]; i++) {
        const unsigned char *p = b + 4 + 4 * i;
        uint64_t d = (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
        if (d && total > (SIZE_MAX / 4) / d) return off; /* the header check reports the overflow */
        total *= d;
    }
    return off + (size_t)total + 1;
}

/* A file read plainly or through zlib's inflate, whose memory comes from the
   allocator hook as every other block does (gzopen would take it from malloc). */
typedef struct {
    const char *fn, *path;
    FILE *f;
    bool gz;
#ifdef NABLA_HAVE_ZLIB
    z_stream z;
    bool live;      /* inflateInit2 done */
    bool in_member; /* inside a gzip member: the input must not end here */
    bool end;       /* no more output */
    unsigned char *in;
#endif
} source;

#define IN_CHUNK 65536

#ifdef NABLA_HAVE_ZLIB
static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
    (void)opaque;
    return size && items > SIZE_MAX / size ? NULL : nbi_alloc((size_t)items * size);
}
static void z_free(voidpf opaque, voidpf p) {
    (void)opaque;
    nbi_dealloc(p);
}
#endif

static int src_open(source *s, const char *fn, const char *path) {
    memset(s, 0, sizeof *s);
    s->fn = fn;
    s->path = path;
    s->gz = ends_with(path, ".gz");
#ifndef NABLA_HAVE_ZLIB
    if (s->gz) return fail(fn, "'%s' is gzip-compressed but nabla was built without zlib", path);
#endif
    s->f = fopen(path, "rb");
    if (!s->f) return fail(fn, "cannot open '%s': %s", path, strerror(errno));
#ifdef NABLA_HAVE_ZLIB
    if (s->gz) {
        s->z.zalloc = z_alloc;
        s->z.zfree = z_free;
        s->in = nbi_alloc(IN_CHUNK);
        if (!s->in || inflateInit2(&s->z, 15 + 16) != Z_OK) { /* 15 + 16: a gzip stream, the largest window */
            nbi_dealloc(s->in);
            fclose(s->f);
            return fail(fn, "out of memory to decompress '%s'", path);
        }
        s->live = true;
        s->in_member = true;
    }
#endif
    return 0;
}

static void src_close(source *s) {
#ifdef NABLA_HAVE_ZLIB
    if (s->live) inflateEnd(&s->z);
    nbi_dealloc(s->in);
#endif
    if (s->f) fclose(s->f);
}

/* Up to n bytes into dst: *got of them (0 at the end). 0, or -1 with an error. */
static int src_read(source *s, unsigned char *dst, size_t n, size_t *got) {
    *got = 0;
    if (!s->gz) {
        *got = fread(dst, 1, n, s->f);
        if (*got < n && ferror(s->f)) return fail(s->fn, "cannot read '%s': %s", s->path, strerror(errno));
        return 0;
    }
#ifdef NABLA_HAVE_ZLIB
    z_stream *z = &s->z;
    z->next_out = dst;
    z->avail_out = (uInt)(n < ((size_t)1 << 30) ? n : ((size_t)1 << 30));
    uInt asked = z->avail_out;
    while (z->avail_out > 0 && !s->end) {
        if (z->avail_in == 0) {
            size_t r = fread(s->in, 1, IN_CHUNK, s->f);
            if (r == 0 && ferror(s->f)) return fail(s->fn, "cannot read '%s': %s", s->path, strerror(errno));
            if (r == 0) {
                if (s->in_member) return fail(s->fn, "'%s' is truncated: its gzip stream ends early", s->path);
                s->end = true;
                break;
            }
            z->next_in = s->in;
            z->avail_in = (uInt)r;
        }
        if (!s->in_member) { /* another member follows, or what follows is not gzip and is ignored (as gunzip does) */
            if (z->next_in[0] != 0x1f) {
                s->end = true;
                break;
            }
            inflateReset(z);
            s->in_member = true;
        }
        int r = inflate(z, Z_NO_FLUSH);
        if (r == Z_STREAM_END) s->in_member = false;
        else if (r == Z_MEM_ERROR) return fail(s->fn, "out of memory to decompress '%s'", s->path);
        else if (r != Z_OK && r != Z_BUF_ERROR)
            return fail(s->fn, "'%s' is not a valid gzip file (%s)", s->path, z->msg ? z->msg : "corrupt data");
    }
    *got = asked - z->avail_out;
#endif
    return 0;
}

/* Read path whole (gunzipped when it ends in .gz) into a new block. idx: stop
   at the size the IDX header implies plus one byte; else a .gz stops with an
   error past CSV_GZ_LIMIT. *capped is set when reading stopped at a limit
   with more data left. */
static int read_all(const char *fn, const char *path, bool idx, unsigned char **out, size_t *n, bool *capped) {
    source src;
    if (src_open(&src, fn, path) != 0) return -1;
    bool gz = src.gz;
    unsigned char *b = NULL;
    size_t cap = 0, len = 0, hint = 0;
    int rc = 0;
    *capped = false;
    /* The size to allocate at once: a plain file's size; for gzip the size its trailer gives (of the last
       member, modulo 2^32), believed only up to deflate's largest ratio (1032:1) of the bytes present.
       Past the hint the block doubles as data arrives. */
    if (fseek(src.f, 0, SEEK_END) == 0) {
        long sz = ftell(src.f);
        unsigned char t[4];
        if (!gz) {
            hint = sz > 0 ? (size_t)sz + 1 : 0;
        } else if (sz >= 18 && fseek(src.f, sz - 4, SEEK_SET) == 0 && fread(t, 1, 4, src.f) == 4) {
            size_t isize = (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 | (size_t)t[3] << 24;
            hint = isize < (size_t)sz * 1032 ? isize + 1 : (size_t)sz * 1032;
        }
        if (fseek(src.f, 0, SEEK_SET) != 0) hint = 0, clearerr(src.f), rewind(src.f);
    }
    for (;;) {
        size_t want = idx ? idx_want(b, len) : gz ? CSV_GZ_LIMIT + 1 : SIZE_MAX;
        if (len >= want) {
            /* one more byte says whether the file goes on past the limit */
            unsigned char extra;
            size_t more = 0;
            rc = src_read(&src, &extra, 1, &more);
            *capped = more > 0 || (!idx && gz);
            break;
        }
        if (len == cap) { /* double what was read (a plain file: its size at once), never past want */
            size_t need = cap > SIZE_MAX / 2 ? SIZE_MAX : cap ? 2 * cap : 65536;
            if (hint > need && len > 0) need = hint; /* once a read worked: a directory has a size too */
            if (need > want) need = want;
            if (!grow(&b, &cap, len, need)) {
                rc = fail(fn, "out of memory reading '%s' (%zu bytes so far)", path, len);
                break;
            }
        }
        size_t got, chunk = cap - len < want - len ? cap - len : want - len;
        if ((rc = src_read(&src, b + len, chunk, &got)) != 0) break;
        len += got;
        if (got == 0) break;
    }
    src_close(&src);
    if (rc == 0 && !idx && *capped)
        rc = fail(fn, "'%s' decompresses to more than %zu MiB, the limit for a gzipped CSV or text file", path,
                  CSV_GZ_LIMIT >> 20);
    if (rc != 0) {
        nbi_dealloc(b);
        return -1;
    }
    *out = b;
    *n = len;
    return 0;
}

/* Move t out of every scope. */
static void to_top(nb_tensor *t) {
    for (int d = nb_scope_depth(); d > 0 && t; d--) nb_keep(t);
}

/* ------------------------------------------------------------------------ */
/* IDX                                                                      */
/* ------------------------------------------------------------------------ */

/* Check an IDX u8 file: dims[0..nd) and the data offset. */
static int idx_header(const char *fn, const char *name, const unsigned char *b, size_t n, bool capped, int64_t *dims,
                      int *nd, size_t *off) {
    if (n < 4 || b[0] || b[1] || b[2] != 0x08 || b[3] == 0 || b[3] > 4)
        return fail(fn, "'%s' is not an IDX file of bytes (u8) with 1 to 4 dimensions", name);
    *nd = b[3];
    *off = 4 + 4 * (size_t)*nd;
    if (n < *off) return fail(fn, "'%s' is truncated in its header (%zu of %zu bytes)", name, n, *off);
    for (int i = 0; i < *nd; i++) {
        const unsigned char *p = b + 4 + 4 * i;
        dims[i] = (int64_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
    }
    /* The size of one item (every dimension after the count), then of all of them: both must fit. */
    int64_t item = 1, total;
    bool ok = true;
    for (int i = 1; i < *nd && ok; i++) ok = nbi_mul_ok(item, dims[i], &item);
    ok = ok && nbi_mul_ok(item, dims[0], &total);
    if (!ok) {
        char s[128];
        return fail(fn, "'%s': the dimensions in its header %s overflow", name, nb_shape_str(*nd, dims, s, sizeof s));
    }
    size_t have = n - *off;
    if (capped) return fail(fn, "'%s' holds more than the %lld data bytes its header says", name, (long long)total);
    if ((uint64_t)have != (uint64_t)total)
        return fail(fn, "'%s' holds %zu data bytes, its header says %lld", name, have, (long long)total);
    return 0;
}

static int idx_build(const char *fn, const char *iname, const unsigned char *bi, size_t ni, bool ci, const char *lname,
                     const unsigned char *bl, size_t nl, bool cl, nb_dtype dt, nb_dataset *out) {
    int64_t di[4], dl[4];
    int ndi, ndl;
    size_t oi, ol;
    if (idx_header(fn, iname, bi, ni, ci, di, &ndi, &oi) != 0) return -1;
    if (idx_header(fn, lname, bl, nl, cl, dl, &ndl, &ol) != 0) return -1;
    if (ndl != 1) return fail(fn, "'%s' has %d dimensions: a label file has 1", lname, ndl);
    if (dl[0] != di[0])
        return fail(fn, "'%s' has %lld labels for %lld images in '%s'", lname, (long long)dl[0], (long long)di[0],
                    iname);
    if (di[0] == 0) return fail(fn, "'%s' holds no images", iname);
    int64_t n = di[0], d = 1;
    for (int i = 1; i < ndi; i++) d *= di[i]; /* checked in idx_header */
    nb_tensor *x = nb_new(dt, 2, (int64_t[]){n, d}, NULL);
    nb_tensor *y = x ? nb_new(NB_I64, 1, (int64_t[]){n}, NULL) : NULL;
    if (!x || !y) {
        nb_free(x);
        return fail(fn, "out of memory for %lld images of %lld bytes", (long long)n, (long long)d);
    }
    const unsigned char *px = bi + oi, *py = bl + ol;
    int64_t classes = 0, *yv = nb_data(y);
    void *xp = nb_data(x);
    if (!xp || !yv) { /* fresh tensors are contiguous, even (n, 0): never taken, but never a success with an error */
        nb_free(x);
        nb_free(y);
        return -1;
    }
    if (dt == NB_F32) {
        float *xv = xp;
        for (int64_t i = 0; i < n * d; i++) xv[i] = (float)(px[i] / 255.0);
    } else {
        double *xv = xp;
        for (int64_t i = 0; i < n * d; i++) xv[i] = px[i] / 255.0;
    }
    for (int64_t i = 0; i < n; i++) {
        yv[i] = py[i];
        if (py[i] + 1 > classes) classes = py[i] + 1;
    }
    to_top(x);
    to_top(y);
    *out = (nb_dataset){.x = x, .y = y, .n = n, .d = d, .classes = classes, .class_names = NULL};
    return 0;
}

int nb_load_idx(const char *images, const char *labels, nb_dtype dt, nb_dataset *out) {
    const char *fn = "nb_load_idx";
    if (!images || !labels || !out) return fail(fn, "images, labels and out must not be NULL");
    if (dt != NB_F32 && dt != NB_F64) return fail(fn, "dtype %d: the features are NB_F32 or NB_F64", (int)dt);
    unsigned char *bi = NULL, *bl = NULL;
    size_t ni = 0, nl = 0;
    bool ci = false, cl = false;
    int rc = read_all(fn, images, true, &bi, &ni, &ci);
    if (rc == 0) rc = read_all(fn, labels, true, &bl, &nl, &cl);
    if (rc == 0) rc = idx_build(fn, images, bi, ni, ci, labels, bl, nl, cl, dt, out);
    nbi_dealloc(bi);
    nbi_dealloc(bl);
    return rc;
}

int nb_load_idx_mem(const void *images, size_t images_len, const void *labels, size_t labels_len, nb_dtype dt,
                    nb_dataset *out) {
    const char *fn = "nb_load_idx_mem";
    if ((!images && images_len) || (!labels && labels_len) || !out)
        return fail(fn, "NULL buffer with a nonzero length, or out NULL");
    if (dt != NB_F32 && dt != NB_F64) return fail(fn, "dtype %d: the features are NB_F32 or NB_F64", (int)dt);
    return idx_build(fn, "<images>", images, images_len, false, "<labels>", labels, labels_len, false, dt, out);
}

/* ------------------------------------------------------------------------ */
/* CSV: the record reader                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *fn, *name;
    const unsigned char *p, *end;
    long long line;     /* the physical line the cursor is on, 1-based */
    char delim;
    /* the current record: nf NUL-terminated fields in text at off[] */
    long long rec_line; /* the line the record starts on */
    char *text;
    size_t text_len, text_cap;
    size_t *off;
    size_t off_cap;
    int64_t nf;
} csv_reader;

static bool blank(const csv_reader *c, int ch) { return (ch == ' ' || ch == '\t') && ch != c->delim; }

static bool put_char(csv_reader *c, char ch) {
    if (c->text_len == c->text_cap && !grow(&c->text, &c->text_cap, c->text_len, c->text_len + 1)) return false;
    c->text[c->text_len++] = ch;
    return true;
}

static int nul_byte(const csv_reader *c, const unsigned char *at, const unsigned char *line_start) {
    return fail(c->fn, "%s:%lld:%lld: a NUL byte: this is not a text (CSV) file", c->name, c->line,
                (long long)(at - line_start) + 1);
}

/* Read the next non-blank record into c. 1: a record, 0: the end, -1: an error. */
static int read_record(csv_reader *c) {
    const char *oom = "out of memory reading a record";
    /* skip blank lines (nothing, or a lone CR) */
    while (c->p < c->end && (*c->p == '\n' || (*c->p == '\r' && (c->p + 1 == c->end || c->p[1] == '\n')))) {
        if (*c->p == '\r') c->p++;
        if (c->p < c->end) c->p++, c->line++;
    }
    if (c->p >= c->end) return 0;
    c->rec_line = c->line;
    c->text_len = 0;
    c->nf = 0;
    const unsigned char *line_start = c->p;
    for (;;) { /* one field per turn */
        if (!grow(&c->off, &c->off_cap, (size_t)c->nf * sizeof(size_t), (size_t)(c->nf + 1) * sizeof(size_t)))
            return fail(c->fn, "%s", oom);
        c->off[c->nf++] = c->text_len;
        while (c->p < c->end && blank(c, *c->p)) c->p++;
        if (c->p < c->end && *c->p == '"') {
            long long opened = c->line;
            c->p++;
            for (;;) {
                if (c->p >= c->end)
                    return fail(c->fn, "%s:%lld:%lld: a quoted field opened here is not closed by the end of the file",
                                c->name, opened, (long long)c->nf);
                unsigned char ch = *c->p;
                if (ch == 0) return nul_byte(c, c->p, line_start);
                if (ch == '"') {
                    if (c->p + 1 < c->end && c->p[1] == '"') {
                        if (!put_char(c, '"')) return fail(c->fn, "%s", oom);
                        c->p += 2;
                        continue;
                    }
                    c->p++;
                    break;
                }
                if (ch == '\n') c->line++, line_start = c->p + 1;
                if (!put_char(c, (char)ch)) return fail(c->fn, "%s", oom);
                c->p++;
            }
            while (c->p < c->end && blank(c, *c->p)) c->p++;
            if (c->p < c->end && *c->p == '\r' && (c->p + 1 == c->end || c->p[1] == '\n')) c->p++;
            if (c->p < c->end && *c->p != '\n' && *c->p != (unsigned char)c->delim) {
                if (*c->p == 0) return nul_byte(c, c->p, line_start);
                return fail(c->fn, "%s:%lld:%lld: text after the closing quote of a quoted field", c->name, c->line,
                            (long long)c->nf);
            }
        } else {
            const unsigned char *q = c->p;
            while (q < c->end && *q != '\n' && *q != (unsigned char)c->delim && *q) q++;
            if (q < c->end && *q == 0) return nul_byte(c, q, line_start);
            size_t len = (size_t)(q - c->p);
            if (len && c->p[len - 1] == '\r' && (q == c->end || *q == '\n')) len--; /* CRLF */
            while (len && blank(c, c->p[len - 1])) len--;
            if (!grow(&c->text, &c->text_cap, c->text_len, c->text_len + len + 1)) return fail(c->fn, "%s", oom);
            memcpy(c->text + c->text_len, c->p, len);
            c->text_len += len;
            c->p = q;
        }
        if (!put_char(c, 0)) return fail(c->fn, "%s", oom);
        if (c->p < c->end && *c->p == (unsigned char)c->delim) {
            c->p++;
            continue;
        }
        if (c->p < c->end) c->p++, c->line++; /* the newline */
        return 1;
    }
}

static const char *field(const csv_reader *c, int64_t i) { return c->text + c->off[i]; }

/* ------------------------------------------------------------------------ */
/* CSV: fields                                                              */
/* ------------------------------------------------------------------------ */

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch; }
static bool same_nocase(const char *a, const char *b) {
    while (*a && lower((unsigned char)*a) == lower((unsigned char)*b)) a++, b++;
    return *a == 0 && *b == 0;
}

/* Empty, or a conventional spelling of a missing value. */
static bool missing(const char *s) {
    return *s == 0 || same_nocase(s, "na") || same_nocase(s, "n/a") || same_nocase(s, "nan") || strcmp(s, "?") == 0;
}

/* Clinger's fast path for the usual decimal: at most 19 significant digits
   forming an integer m <= 2^53, times 10^e with |e| <= 22. Both are exact
   doubles, so one rounded multiply or divide gives what strtod gives. Any
   other spelling is left to strtod (false). */
static bool fast_number(const char *s, double *v) {
#if FLT_EVAL_METHOD == 0
    static const double p10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                   1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *p = s;
    bool neg = *p == '-', any = false;
    if (*p == '+' || *p == '-') p++;
    uint64_t m = 0;
    int digits = 0, e = 0;
    for (bool frac = false;; p++) {
        if (*p == '.' && !frac) {
            frac = true;
            continue;
        }
        if (*p < '0' || *p > '9') break;
        if (digits == 19 || e < -400) return false;
        m = m * 10 + (uint64_t)(*p - '0');
        digits += m != 0;
        e -= frac;
        any = true;
    }
    if (!any) return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        bool eneg = *p == '-';
        if (*p == '+' || *p == '-') p++;
        if (*p < '0' || *p > '9') return false;
        int x = 0;
        for (; *p >= '0' && *p <= '9'; p++)
            if ((x = x * 10 + (*p - '0')) > 1000) return false;
        e += eneg ? -x : x;
    }
    if (*p || m > ((uint64_t)1 << 53) || e < -22 || e > 22) return false;
    double r = (double)m;
    r = e < 0 ? r / p10[-e] : r * p10[e];
    *v = neg ? -r : r;
    return true;
#else
    (void)s, (void)v;
    return false;
#endif
}

/* The whole of s as a decimal number (strtod's syntax without its hexadecimal form: "0x10" in a CSV is
   text, as numpy and pandas read it). */
static bool number(const char *s, double *v) {
    if (!*s) return false;
    if (fast_number(s, v)) return true;
    const char *p = s + (*s == '+' || *s == '-');
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) return false;
    char *e;
    errno = 0;
    *v = strtod(s, &e);
    return *e == 0;
}

/* An integer label 0..NB_MAX_CLASSES-1 written as a number ("3", "3.0", "3e0"). */
static bool class_index(const char *s, int64_t *k) {
    double v;
    if (!number(s, &v) || !(v >= 0 && v < NB_MAX_CLASSES) || v != floor(v)) return false;
    *k = (int64_t)v;
    return true;
}

/* ------------------------------------------------------------------------ */
/* CSV: the set of string labels                                            */
/* ------------------------------------------------------------------------ */

/* Open addressing on FNV-1a; names live in one pool, found by offset. */
typedef struct {
    size_t *slot; /* 1 + entry index, 0 for empty */
    size_t cap;   /* slots, a power of two */
    size_t *name; /* entry -> offset in pool */
    int32_t *val; /* entry -> class index */
    size_t n, name_cap, val_cap;
    char *pool;
    size_t pool_len, pool_cap;
} strset;

static uint64_t hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void set_free(strset *s) {
    nbi_dealloc(s->slot);
    nbi_dealloc(s->name);
    nbi_dealloc(s->val);
    nbi_dealloc(s->pool);
    memset(s, 0, sizeof *s);
}

/* The entry of key, or -1. */
static int64_t set_find(const strset *s, const char *key) {
    if (!s->cap) return -1;
    for (size_t i = hash(key) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slot[i]) return -1;
        size_t e = s->slot[i] - 1;
        if (strcmp(s->pool + s->name[e], key) == 0) return (int64_t)e;
    }
}

/* Add key (absent) with class index v. false: out of memory. */
static bool set_add(strset *s, const char *key, int32_t v) {
    if (2 * (s->n + 1) > s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 64;
        size_t *ns = nbi_alloc(nc * sizeof *ns);
        if (!ns) return false;
        memset(ns, 0, nc * sizeof *ns);
        for (size_t e = 0; e < s->n; e++) {
            size_t i = hash(s->pool + s->name[e]) & (nc - 1);
            while (ns[i]) i = (i + 1) & (nc - 1);
            ns[i] = e + 1;
        }
        nbi_dealloc(s->slot);
        s->slot = ns;
        s->cap = nc;
    }
    size_t len = strlen(key) + 1;
    if (!grow(&s->pool, &s->pool_cap, s->pool_len, s->pool_len + len) ||
        !grow(&s->name, &s->name_cap, s->n * sizeof(size_t), (s->n + 1) * sizeof(size_t)) ||
        !grow(&s->val, &s->val_cap, s->n * sizeof(int32_t), (s->n + 1) * sizeof(int32_t)))
        return false;
    memcpy(s->pool + s->pool_len, key, len);
    s->name[s->n] = s->pool_len;
    s->val[s->n] = v;
    s->pool_len += len;
    size_t i = hash(key) & (s->cap - 1);
    while (s->slot[i]) i = (i + 1) & (s->cap - 1);
    s->slot[i] = ++s->n;
    return true;
}

typedef struct {
    const char *name;
    size_t entry;
} named;
static int by_name(const void *a, const void *b) { return strcmp(((const named *)a)->name, ((const named *)b)->name); }

/* One block: n pointers, then the names they point at. */
static char **names_block(const char *const *names, int64_t n) {
    size_t bytes = (size_t)n * sizeof(char *);
    for (int64_t i = 0; i < n; i++) bytes += strlen(names[i]) + 1;
    char **b = nbi_alloc(bytes);
    if (!b) return NULL;
    char *p = (char *)(b + n);
    for (int64_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]) + 1;
        memcpy(p, names[i], len);
        b[i] = p;
        p += len;
    }
    return b;
}

/* ------------------------------------------------------------------------ */
/* CSV: loading                                                             */
/* ------------------------------------------------------------------------ */

nb_csv_options nb_csv_defaults(void) {
    return (nb_csv_options){.label_col = -1,
                            .header = NB_CSV_HEADER_DETECT,
                            .delimiter = 0,
                            .labels = NB_CSV_LABELS_AUTO,
                            .missing = NB_CSV_MISSING_ERROR,
                            .class_names = NULL,
                            .n_class_names = 0};
}

/* The delimiter most frequent on the first line outside quotes among , ; tab. */
static char detect_delim(const unsigned char *p, const unsigned char *end) {
    size_t comma = 0, semi = 0, tab = 0;
    bool quoted = false;
    for (; p < end && (quoted || *p != '\n'); p++) {
        if (*p == '"') quoted = !quoted;
        else if (!quoted) comma += *p == ',', semi += *p == ';', tab += *p == '\t';
    }
    if (semi > comma && semi >= tab) return ';';
    if (tab > comma && tab > semi) return '\t';
    return ',';
}

typedef struct {
    const nb_csv_options *o;
    int64_t cols, lc; /* fields per record, the label column */
    bool header;
    nb_csv_labels labels; /* AUTO until resolved */
} csv_plan;

/* Check a data record. 0: keep, 1: skip (a missing field under SKIP_ROW), -1: error. *label_numeric tells
   whether the label is a number. */
static int check_record(const csv_reader *c, const csv_plan *pl, bool *label_numeric) {
    if (c->nf != pl->cols)
        return fail(c->fn, "%s:%lld: %lld fields, expected %lld as on the first line", c->name, c->rec_line,
                    (long long)c->nf, (long long)pl->cols);
    for (int64_t i = 0; i < c->nf; i++) {
        const char *s = field(c, i);
        if (!missing(s)) continue;
        if (pl->o->missing == NB_CSV_MISSING_SKIP_ROW) return 1;
        if (!*s) return fail(c->fn, "%s:%lld:%lld: empty field", c->name, c->rec_line, (long long)i + 1);
        return fail(c->fn, "%s:%lld:%lld: missing value '%s'", c->name, c->rec_line, (long long)i + 1, s);
    }
    for (int64_t i = 0; i < c->nf; i++) {
        const char *s = field(c, i);
        double v;
        if (i == pl->lc) {
            *label_numeric = number(s, &v);
            int64_t k;
            if (pl->labels == NB_CSV_LABELS_INT && !class_index(s, &k))
                return fail(c->fn, "%s:%lld:%lld: label '%.40s' is not a class index (an integer from 0 to %d)",
                            c->name, c->rec_line, (long long)i + 1, s, NB_MAX_CLASSES - 1);
            continue;
        }
        if (!number(s, &v))
            return fail(c->fn, "%s:%lld:%lld: '%.40s' is not a number", c->name, c->rec_line, (long long)i + 1, s);
        if (!isfinite(v))
            return fail(c->fn, "%s:%lld:%lld: '%.40s' is not a finite number", c->name, c->rec_line,
                        (long long)i + 1, s);
    }
    return 0;
}

/* Decide the layout from the first (and second) record. */
static int plan_csv(csv_reader *c, const nb_csv_options *o, csv_plan *pl) {
    int r = read_record(c);
    if (r < 0) return -1;
    if (r == 0) return fail(c->fn, "'%s' is empty", c->name);
    pl->o = o;
    pl->cols = c->nf;
    pl->lc = o->label_col < 0 ? pl->cols + o->label_col : o->label_col;
    if (pl->lc < 0 || pl->lc >= pl->cols)
        return fail(c->fn, "%s:%lld: label column %d is out of range for the %lld fields of the line", c->name,
                    c->rec_line, o->label_col, (long long)pl->cols);
    if (pl->cols < 2)
        return fail(c->fn, "%s:%lld: one field: a record needs a label and at least one feature", c->name,
                    c->rec_line);
    pl->header = o->header == NB_CSV_HEADER_PRESENT;
    if (o->header == NB_CSV_HEADER_DETECT) {
        double v;
        bool label_text = false;
        for (int64_t i = 0; i < c->nf; i++) {
            const char *s = field(c, i);
            if (missing(s) || number(s, &v)) continue;
            if (i == pl->lc) label_text = true;
            else pl->header = true;
        }
        if (!pl->header && label_text) { /* "1,2,label" then "3,4,0" */
            csv_reader peek = *c;
            peek.text = NULL, peek.text_cap = 0, peek.off = NULL, peek.off_cap = 0;
            r = read_record(&peek);
            if (r > 0 && peek.nf == pl->cols && number(field(&peek, pl->lc), &v)) pl->header = true;
            nbi_dealloc(peek.text);
            nbi_dealloc(peek.off);
            if (r < 0) return -1;
        }
    }
    return 0;
}

/* Rewind c to the first record. */
static void rewind_csv(csv_reader *c, const unsigned char *start) {
    c->p = start;
    c->line = 1;
}

static int csv_build(const char *fn, const char *name, const unsigned char *buf, size_t len, const nb_csv_options *opt,
                     nb_dtype dt, nb_dataset *out) {
    nb_csv_options defaults = nb_csv_defaults();
    const nb_csv_options *o = opt ? opt : &defaults;
    if (o->header < NB_CSV_HEADER_DETECT || o->header > NB_CSV_HEADER_PRESENT)
        return fail(fn, "unknown header option %d", (int)o->header);
    if (o->labels < NB_CSV_LABELS_AUTO || o->labels > NB_CSV_LABELS_STRING)
        return fail(fn, "unknown labels option %d", (int)o->labels);
    if (o->missing < NB_CSV_MISSING_ERROR || o->missing > NB_CSV_MISSING_SKIP_ROW)
        return fail(fn, "unknown missing option %d", (int)o->missing);
    if (o->delimiter == '"' || o->delimiter == '\n' || o->delimiter == '\r')
        return fail(fn, "the delimiter cannot be a quote or a line end");
    if (o->class_names) {
        if (o->labels == NB_CSV_LABELS_INT) return fail(fn, "class_names are for string labels, not NB_CSV_LABELS_INT");
        if (o->n_class_names < 1 || o->n_class_names > NB_MAX_CLASSES)
            return fail(fn, "n_class_names is %lld: from 1 to %d", (long long)o->n_class_names, NB_MAX_CLASSES);
        for (int64_t i = 0; i < o->n_class_names; i++)
            if (!o->class_names[i]) return fail(fn, "class_names[%lld] is NULL", (long long)i);
    }
    const unsigned char *start = buf, *end = buf + len;
    if (len >= 3 && buf[0] == 0xEF && buf[1] == 0xBB && buf[2] == 0xBF) start += 3; /* UTF-8 byte order mark */
    csv_reader c = {.fn = fn, .name = name, .p = start, .end = end, .line = 1};
    c.delim = o->delimiter ? o->delimiter : detect_delim(start, end);
    csv_plan pl = {0};
    strset set = {0};
    nb_tensor *x = NULL, *y = NULL;
    char **names = NULL;
    named *order = NULL;
    int rc = plan_csv(&c, o, &pl);
    pl.labels = o->class_names ? NB_CSV_LABELS_STRING : o->labels;
    if (rc == 0 && o->class_names) {
        for (int64_t i = 0; i < o->n_class_names && rc == 0; i++) {
            if (set_find(&set, o->class_names[i]) >= 0)
                rc = fail(fn, "class name '%.40s' is given twice", o->class_names[i]);
            else if (!set_add(&set, o->class_names[i], (int32_t)i))
                rc = fail(fn, "out of memory for the class names");
        }
    }
    /* Pass 1: check every record, count the data records, gather the string labels. */
    int64_t rows = 0, skipped = 0;
    bool all_numeric = true, collect = pl.labels != NB_CSV_LABELS_INT && !o->class_names;
    long long too_many = 0; /* the line of the first label past NB_MAX_CLASSES */
    if (rc == 0) rewind_csv(&c, start);
    for (bool first = true; rc == 0; first = false) {
        int r = read_record(&c);
        if (r <= 0) {
            rc = r;
            break;
        }
        if (first && pl.header) continue;
        bool num = true;
        r = check_record(&c, &pl, &num);
        if (r < 0) rc = -1;
        if (r != 0) {
            skipped += r > 0;
            continue;
        }
        rows++;
        all_numeric = all_numeric && num;
        const char *lab = field(&c, pl.lc);
        if (o->class_names && set_find(&set, lab) < 0)
            rc = fail(fn, "%s:%lld:%lld: label '%.40s' is not one of the %lld class names given", name, c.rec_line,
                      (long long)pl.lc + 1, lab, (long long)o->n_class_names);
        else if (collect && !too_many && set_find(&set, lab) < 0) {
            if (set.n == NB_MAX_CLASSES) too_many = c.rec_line;
            else if (!set_add(&set, lab, 0)) rc = fail(fn, "out of memory for the class names");
        }
    }
    if (rc == 0 && rows == 0)
        rc = skipped ? fail(fn, "'%s' has no data records (%lld left out for missing fields)", name, (long long)skipped)
                     : fail(fn, "'%s' has no data records", name);
    if (rc == 0 && pl.labels == NB_CSV_LABELS_AUTO) pl.labels = all_numeric ? NB_CSV_LABELS_INT : NB_CSV_LABELS_STRING;
    if (rc == 0 && pl.labels == NB_CSV_LABELS_STRING && too_many)
        rc = fail(fn, "%s:%lld: more than %d distinct labels", name, too_many, NB_MAX_CLASSES);
    int64_t classes = 0;
    if (rc == 0 && pl.labels == NB_CSV_LABELS_STRING) {
        /* class indices: the given order, or the names sorted */
        classes = o->class_names ? o->n_class_names : (int64_t)set.n;
        order = nbi_alloc(set.n * sizeof *order);
        const char **list = nbi_alloc((size_t)classes * sizeof *list);
        if (order && list) {
            for (size_t e = 0; e < set.n; e++) order[e] = (named){set.pool + set.name[e], e};
            if (!o->class_names) {
                qsort(order, set.n, sizeof *order, by_name);
                for (size_t k = 0; k < set.n; k++) set.val[order[k].entry] = (int32_t)k;
            }
            for (size_t e = 0; e < set.n; e++) list[set.val[e]] = set.pool + set.name[e];
            names = names_block(list, classes);
        }
        nbi_dealloc(list);
        if (!names) rc = fail(fn, "out of memory for %lld class names", (long long)classes);
    }
    /* Pass 2: the values, straight into the tensors. */
    if (rc == 0) {
        x = nb_new(dt, 2, (int64_t[]){rows, pl.cols - 1}, NULL);
        y = x ? nb_new(NB_I64, 1, (int64_t[]){rows}, NULL) : NULL;
        if (!x || !y) rc = fail(fn, "out of memory for %lld records of %lld features", (long long)rows,
                                (long long)pl.cols - 1);
    }
    if (rc == 0) {
        rewind_csv(&c, start);
        char *xb = nb_data(x);
        int64_t *yv = nb_data(y), row = 0;
        if (!xb || !yv) rc = -1; /* fresh tensors are contiguous: never taken (nb_data recorded why) */
        size_t es = dt == NB_F32 ? 4 : 8;
        for (bool first = true; rc == 0 && row < rows; first = false) {
            int r = read_record(&c);
            if (r <= 0) { /* pass 1 read the same bytes */
                rc = r < 0 ? -1 : fail(fn, "'%s' changed while read", name);
                break;
            }
            bool num;
            if (first && pl.header) continue;
            int kept = check_record(&c, &pl, &num); /* fails only on labels that AUTO found to be integers */
            if (kept < 0) rc = -1;
            if (kept != 0) continue;
            for (int64_t i = 0, k = 0; i < pl.cols; i++) {
                const char *s = field(&c, i);
                if (i != pl.lc) {
                    double v = 0;
                    number(s, &v);
                    nbi_store(dt, xb + (size_t)(row * (pl.cols - 1) + k++) * es, v);
                } else if (pl.labels == NB_CSV_LABELS_INT) {
                    int64_t lab = 0;
                    class_index(s, &lab); /* checked by check_record */
                    yv[row] = lab;
                    if (lab + 1 > classes) classes = lab + 1;
                } else {
                    yv[row] = set.val[set_find(&set, s)];
                }
            }
            row++;
        }
    }
    nbi_dealloc(c.text);
    nbi_dealloc(c.off);
    nbi_dealloc(order);
    set_free(&set);
    if (rc != 0) {
        nb_free(x);
        nb_free(y);
        nbi_dealloc(names);
        return -1;
    }
    to_top(x);
    to_top(y);
    *out = (nb_dataset){.x = x, .y = y, .n = rows, .d = pl.cols - 1, .classes = classes, .class_names = names};
    return 0;
}

static int load_csv(const char *fn, const char *path, const nb_csv_options *opt, nb_dtype dt, nb_dataset *out) {
    if (!path || !out) return fail(fn, "path and out must not be NULL");
    if (dt != NB_F32 && dt != NB_F64) return fail(fn, "dtype %d: the features are NB_F32 or NB_F64", (int)dt);
    unsigned char *b = NULL;
    size_t n = 0;
    bool capped;
    if (read_all(fn, path, false, &b, &n, &capped) != 0) return -1;
    int rc = csv_build(fn, path, b, n, opt, dt, out);
    nbi_dealloc(b);
    return rc;
}

int nb_load_csv_opts(const char *path, const nb_csv_options *opt, nb_dtype dt, nb_dataset *out) {
    return load_csv("nb_load_csv_opts", path, opt, dt, out);
}

int nb_load_csv(const char *path, int label_col, nb_dtype dt, nb_dataset *out) {
    nb_csv_options o = nb_csv_defaults();
    o.label_col = label_col;
    return load_csv("nb_load_csv", path, &o, dt, out);
}

int nb_load_csv_mem(const void *buf, size_t len, const char *name, const nb_csv_options *opt, nb_dtype dt,
                    nb_dataset *out) {
    const char *fn = "nb_load_csv_mem";
    if ((!buf && len) || !out) return fail(fn, "NULL buffer with a nonzero length, or out NULL");
    if (dt != NB_F32 && dt != NB_F64) return fail(fn, "dtype %d: the features are NB_F32 or NB_F64", (int)dt);
    return csv_build(fn, name ? name : "<memory>", buf ? buf : (const void *)"", len, opt, dt, out);
}

void nb_dataset_free(nb_dataset *ds) {
    if (!ds) return;
    nb_free(ds->x);
    nb_free(ds->y);
    nbi_dealloc(ds->class_names);
    memset(ds, 0, sizeof *ds);
}

/* ------------------------------------------------------------------------ */
/* Split and standardisation                                                */
/* ------------------------------------------------------------------------ */

/* ds holds x (n, d) of a float dtype and y (n) NB_I64. */
static int check_dataset(const char *fn, const nb_dataset *ds) {
    if (!ds || !ds->x || !ds->y) return fail(fn, "the data set has no x or no y");
    nb_dtype dx = nb_dtype_of(ds->x);
    if (nb_rank(ds->x) != 2 || nb_shape(ds->x)[0] != ds->n || nb_shape(ds->x)[1] != ds->d ||
        (dx != NB_F32 && dx != NB_F64))
        return fail(fn, "x must be an (n, d) = (%lld, %lld) float tensor", (long long)ds->n, (long long)ds->d);
    if (nb_rank(ds->y) != 1 || nb_shape(ds->y)[0] != ds->n || nb_dtype_of(ds->y) != NB_I64)
        return fail(fn, "y must be a 1-D NB_I64 tensor of %lld labels", (long long)ds->n);
    return 0;
}

int nb_dataset_split(const nb_dataset *ds, double test_frac, uint64_t seed, nb_dataset *train, nb_dataset *test) {
    const char *fn = "nb_dataset_split";
    if (check_dataset(fn, ds) != 0) return -1;
    if (!train || !test || train == test || train == ds || test == ds)
        return fail(fn, "train and test must be two data sets other than ds");
    if (!(test_frac >= 0 && test_frac <= 1)) return fail(fn, "test_frac is %g: it must lie in [0, 1]", test_frac);
    int64_t n = ds->n, nte = (int64_t)floor(test_frac * (double)n + 0.5);
    if (nte > n) nte = n;
    int64_t ntr = n - nte;
    int64_t *perm = nbi_alloc((size_t)(n ? n : 1) * sizeof *perm);
    if (!perm) return fail(fn, "out of memory for a permutation of %lld", (long long)n);
    nb_rng r;
    nb_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(nb_rng_next(&r) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    bool grad = nb_grad_enabled();
    nb_set_grad_enabled(false); /* copies of data, not part of any graph */
    nb_tensor *idx[2] = {nb_new(NB_I64, 1, &ntr, perm), nb_new(NB_I64, 1, &nte, perm + ntr)};
    nb_tensor *t[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < 2; k++) {
        t[2 * k] = idx[k] ? nb_index_select(ds->x, 0, idx[k]) : NULL;
        t[2 * k + 1] = idx[k] ? nb_index_select(ds->y, 0, idx[k]) : NULL;
    }
    nb_set_grad_enabled(grad);
    nb_free(idx[0]);
    nb_free(idx[1]);
    nbi_dealloc(perm);
    char **names[2] = {NULL, NULL};
    bool ok = t[0] && t[1] && t[2] && t[3];
    for (int k = 0; k < 2 && ok && ds->class_names; k++)
        ok = (names[k] = names_block((const char *const *)ds->class_names, ds->classes)) != NULL;
    if (!ok) {
        for (int k = 0; k < 4; k++) nb_free(t[k]);
        nbi_dealloc(names[0]);
        nbi_dealloc(names[1]);
        return fail(fn, "out of memory splitting %lld samples", (long long)n);
    }
    for (int k = 0; k < 4; k++) to_top(t[k]);
    *train = (nb_dataset){.x = t[0], .y = t[1], .n = ntr, .d = ds->d, .classes = ds->classes, .class_names = names[0]};
    *test = (nb_dataset){.x = t[2], .y = t[3], .n = nte, .d = ds->d, .classes = ds->classes, .class_names = names[1]};
    return 0;
}

/* Element (i, j) of a rank-2 float tensor of any strides. */
static double at2(const nb_tensor *x, int64_t i, int64_t j) {
    return nbi_get_at(x, i * x->strides[0] + j * x->strides[1]);
}

int nb_dataset_feature_stats(const nb_dataset *ds, nb_tensor **mean, nb_tensor **std) {
    const char *fn = "nb_dataset_feature_stats";
    if (check_dataset(fn, ds) != 0) return -1;
    if (!mean || !std) return fail(fn, "mean and std must not be NULL");
    if (ds->n < 1) return fail(fn, "no samples");
    int64_t n = ds->n, d = ds->d;
    const nb_tensor *x = ds->x;
    /* per feature: sum, smallest, largest, sum of squared deviations; rows walked in memory order */
    double *w = nbi_alloc(sizeof(double) * 4 * (size_t)(d ? d : 1));
    nb_tensor *m = w ? nb_new(x->dtype, 1, &d, NULL) : NULL;
    nb_tensor *s = m ? nb_new(x->dtype, 1, &d, NULL) : NULL;
    if (!s) {
        nbi_dealloc(w);
        nb_free(m);
        return fail(fn, "out of memory for %lld features", (long long)d);
    }
    double *sum = w, *lo = w + d, *hi = w + 2 * d, *ss = w + 3 * d;
    for (int64_t j = 0; j < d; j++) sum[j] = 0, ss[j] = 0, lo[j] = hi[j] = at2(x, 0, j);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            double v = at2(x, i, j);
            sum[j] += v;
            lo[j] = v < lo[j] ? v : lo[j];
            hi[j] = v > hi[j] ? v : hi[j];
        }
    for (int64_t j = 0; j < d; j++) sum[j] /= (double)n; /* now the mean */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            double e = at2(x, i, j) - sum[j];
            ss[j] += e * e;
        }
    for (int64_t j = 0; j < d; j++) {
        double mu = sum[j], sd = sqrt(ss[j] / (double)n);
        if (lo[j] == hi[j] && isfinite(lo[j])) mu = lo[j], sd = 0; /* constant: a rounded sum must not leave a tiny std */
        if (!isfinite(mu) || !isfinite(sd)) {
            double l = lo[j], h = hi[j]; /* in w */
            nbi_dealloc(w);
            nb_free(m);
            nb_free(s);
            return fail(fn, "feature %lld (values from %g to %g) is too large for its mean and deviation to be "
                            "computed in double precision", (long long)j, l, h);
        }
        nbi_set_at(m, j, mu);
        nbi_set_at(s, j, sd > 0 ? sd : 1.0);
    }
    nbi_dealloc(w);
    *mean = m;
    *std = s;
    return 0;
}

/* Element j of a 1-D float tensor of any stride. */
static double at1(const nb_tensor *t, int64_t j) {
    return nbi_get_at(t, j * t->strides[0]);
}

int nb_dataset_standardize(nb_dataset *ds, const nb_tensor *mean, const nb_tensor *std) {
    const char *fn = "nb_dataset_standardize";
    if (check_dataset(fn, ds) != 0) return -1;
    const nb_tensor *ms[2] = {mean, std};
    for (int k = 0; k < 2; k++) {
        nb_dtype dk = nb_dtype_of(ms[k]);
        if (!ms[k] || nb_rank(ms[k]) != 1 || nb_shape(ms[k])[0] != ds->d || (dk != NB_F32 && dk != NB_F64))
            return fail(fn, "%s must be a 1-D float tensor of %lld values", k ? "std" : "mean", (long long)ds->d);
    }
    for (int64_t j = 0; j < ds->d; j++) {
        double mu = at1(mean, j), sd = at1(std, j);
        if (!isfinite(mu) || !isfinite(sd) || !(sd > 0))
            return fail(fn, "feature %lld: mean %g and std %g (the mean must be finite, the std finite and > 0)",
                        (long long)j, mu, sd);
    }
    int64_t n = ds->n, d = ds->d;
    double *w = nbi_alloc(sizeof(double) * 2 * (size_t)(d ? d : 1));
    nb_tensor *x = ds->x, *nx = w ? nb_new(x->dtype, 2, (int64_t[]){n, d}, NULL) : NULL;
    if (!nx) {
        nbi_dealloc(w);
        return fail(fn, "out of memory for %lld x %lld features", (long long)n, (long long)d);
    }
    for (int64_t j = 0; j < d; j++) w[j] = at1(mean, j), w[d + j] = at1(std, j);
    char *out = nb_data(nx); /* a new contiguous tensor in host memory */
    int64_t es = (int64_t)nbi_dsize(nx->dtype);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) nbi_store(nx->dtype, out + (i * d + j) * es, (at2(x, i, j) - w[j]) / w[d + j]);
    nbi_dealloc(w);
    to_top(nx);
    nb_free(ds->x);
    ds->x = nx;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mini-batches                                                             */
/* ------------------------------------------------------------------------ */

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
    nb_batcher *b = nbi_alloc(sizeof *b);
    if (b) {
        memset(b, 0, sizeof *b);
        b->perm = nbi_alloc(sizeof(int64_t) * (size_t)(ds->n ? ds->n : 1));
    }
    if (!b || !b->perm) {
        nbi_dealloc(b);
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
    nbi_dealloc(b->perm);
    nbi_dealloc(b);
}

/* --------------------------------------------------------------- images --- */

int nb_dataset_to_images(nb_dataset *ds, int64_t c, int64_t h, int64_t w) {
    const char *fn = "nb_dataset_to_images";
    if (!ds || !ds->x) return fail(fn, "the data set is NULL or empty");
    if (c < 1 || h < 1 || w < 1 || c > ds->d || h > ds->d || w > ds->d || c * h * w != ds->d)
        return fail(fn, "images of %lld x %lld x %lld do not hold the %lld features of a sample", (long long)c,
                    (long long)h, (long long)w, (long long)ds->d);
    nb_tensor *x = nb_reshape(ds->x, 4, (int64_t[]){ds->n, c, h, w});
    if (!x) return -1;
    if (x != ds->x) {
        to_top(x);
        nb_free(ds->x);
        ds->x = x;
    }
    return 0;
}

nb_tensor *nb_random_crop_flip(nb_tensor *x, int pad, bool flip, nb_rng *rng) {
    const char *fn = "nb_random_crop_flip";
    if (!x || !rng) return nb_fail(fn, "x and rng must not be NULL");
    if (nb_rank(x) != 4 || nb_dtype_of(x) == NB_I64) {
        char sh[128];
        return nb_failf(fn, "x must be float images (B, C, H, W), not %s", nb_shape_str(nb_rank(x), nb_shape(x), sh, sizeof sh));
    }
    if (pad < 0 || pad > (1 << 20)) return nb_failf(fn, "pad %d must be in [0, 2^20]", pad);
    const int64_t *s = nb_shape(x);
    int64_t B = s[0], C = s[1], H = s[2], W = s[3];
    bool was = nb_grad_enabled();
    nb_set_grad_enabled(false);
    nb_tensor *src = nb_contiguous(x), *out = src ? nb_new(nb_dtype_of(x), 4, s, NULL) : NULL;
    nb_set_grad_enabled(was);
    if (!out) {
        if (src != x) nb_free(src);
        return NULL;
    }
    bool f32 = nb_dtype_of(x) == NB_F32;
    const char *a = nb_data(src);
    char *o = nb_data(out);
    size_t es = f32 ? 4 : 8;
    for (int64_t b = 0; b < B; b++) {
        int64_t dy = pad ? (int64_t)(nb_rng_next(rng) % (uint64_t)(2 * pad + 1)) - pad : 0;
        int64_t dx = pad ? (int64_t)(nb_rng_next(rng) % (uint64_t)(2 * pad + 1)) - pad : 0;
        bool mirror = flip && nb_rng_uniform(rng) < 0.5;
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < H; i++)
                for (int64_t j = 0; j < W; j++) {
                    /* output (i, j) of the crop is input (i + dy, j' + dx), j' the mirrored column */
                    int64_t jj = mirror ? W - 1 - j : j, si = i + dy, sj = jj + dx;
                    char *dst = o + (size_t)(((b * C + c) * H + i) * W + j) * es;
                    if (si < 0 || si >= H || sj < 0 || sj >= W) memset(dst, 0, es);
                    else memcpy(dst, a + (size_t)(((b * C + c) * H + si) * W + sj) * es, es);
                }
    }
    if (src != x) nb_free(src);
    return out;
}

/* ----------------------------------------------------------------- text --- */

int nb_load_text(const char *path, nb_text *out) {
    const char *fn = "nb_load_text";
    if (!path || !out) return fail(fn, "path and out must not be NULL");
    unsigned char *b = NULL;
    size_t n = 0;
    bool capped = false;
    if (read_all(fn, path, false, &b, &n, &capped) != 0) return -1;
    if (!b && !(b = nbi_alloc(1))) return fail(fn, "out of memory reading '%s'", path);
    *out = (nb_text){b, (int64_t)n};
    return 0;
}

int nb_text_from_mem(const void *buf, size_t len, nb_text *out) {
    const char *fn = "nb_text_from_mem";
    if (!out || (!buf && len > 0)) return fail(fn, "buf (with len %zu) and out must not be NULL", len);
    if (len > (size_t)INT64_MAX - 1) return fail(fn, "%zu bytes are too many", len);
    uint8_t *b = nbi_alloc(len ? len : 1);
    if (!b) return fail(fn, "out of memory copying %zu bytes", len);
    if (len) memcpy(b, buf, len);
    *out = (nb_text){b, (int64_t)len};
    return 0;
}

void nb_text_free(nb_text *t) {
    if (!t) return;
    nbi_dealloc(t->bytes);
    *t = (nb_text){NULL, 0};
}

int nb_text_split(const nb_text *t, double val_frac, nb_text *train, nb_text *val) {
    const char *fn = "nb_text_split";
    if (!t || !train || !val || (!t->bytes && t->n > 0) || t->n < 0)
        return fail(fn, "need a text and two outputs (not NULL)");
    if (train == val || train == t || val == t) return fail(fn, "train and val must be distinct from t and each other");
    if (!(val_frac >= 0 && val_frac <= 1)) return fail(fn, "val_frac %g is not in [0, 1]", val_frac);
    int64_t nv = (int64_t)floor(val_frac * (double)t->n + 0.5), nt = t->n - nv;
    nb_text a, b;
    if (nb_text_from_mem(t->bytes, (size_t)nt, &a) != 0) return -1;
    if (nb_text_from_mem(t->bytes + nt, (size_t)nv, &b) != 0) {
        nb_text_free(&a);
        return -1;
    }
    *train = a, *val = b;
    return 0;
}

int nb_text_batch(const nb_text *t, int64_t batch, int64_t T, nb_rng *rng, nb_tensor **x, nb_tensor **y) {
    const char *fn = "nb_text_batch";
    if (!t || !rng || !x || !y || (!t->bytes && t->n > 0)) return fail(fn, "t, rng, x and y must not be NULL");
    if (batch < 1 || T < 1 || batch > ((int64_t)1 << 40) / T)
        return fail(fn, "batch %lld and T %lld: need batch >= 1 and T >= 1 (and batch T < 2^40)", (long long)batch,
                    (long long)T);
    if (t->n < T + 1)
        return fail(fn, "the text has %lld tokens; windows of T + 1 = %lld need at least that many", (long long)t->n,
                    (long long)(T + 1));
    int64_t shape[2] = {batch, T};
    nb_tensor *a = nb_new(NB_I64, 2, shape, NULL), *b = a ? nb_new(NB_I64, 2, shape, NULL) : NULL;
    if (!b) {
        nb_free(a);
        return -1;
    }
    int64_t *xa = nb_data(a), *ya = nb_data(b);
    for (int64_t i = 0; i < batch; i++) {
        int64_t s = (int64_t)(nb_rng_uniform(rng) * (double)(t->n - T));
        for (int64_t j = 0; j < T; j++) xa[i * T + j] = t->bytes[s + j], ya[i * T + j] = t->bytes[s + j + 1];
    }
    *x = a, *y = b;
    return 0;
}
