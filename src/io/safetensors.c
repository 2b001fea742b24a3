/*
 * safetensors.c - reading and writing safetensors checkpoints (nabla/io.h).
 *
 * Reading: the header is read into a buffer of its own and parsed by a small
 * JSON reader that accepts exactly the format's schema and never looks past
 * the header's last byte (numbers are parsed by hand, strings are pointers and
 * lengths into the header, so names have no length limit but the header's).
 * Every offset is checked against the file size and the tensor's byte count
 * before anything is copied, and loading validates every requested tensor
 * before writing any, so a bad file changes nothing. Bytes of the file quoted
 * in an error message are escaped (\xHH) unless printable ASCII.
 *
 * Writing is atomic: the file is written under a temporary name in the same
 * folder, made unique by the process id and a counter and created with
 * O_EXCL (so two writers, threads or processes, never share one), flushed to
 * disk with fsync, then renamed over the target, and the folder is synced
 * (best effort) so the rename survives a crash too. On any failure the
 * temporary file is removed and the message reports errno as the failing call
 * left it. Memory comes from nb_alloc, so the allocator hook sees it.
 *
 * Data is little-endian, as on every platform nabla targets (x86-64, arm64).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../include/nabla/io.h"

#define MAX_HEADER (100u << 20) /* the format's own limit is 100 MB */

/* Record an error and give -1: `return fail(fn, "...", ...)`. */
static int minus_one(void *recorded) {
    (void)recorded;
    return -1;
}
#define fail(...) minus_one(nb_failf(__VA_ARGS__))

static const char *dtype_tag(nb_dtype dt) { return dt == NB_F32 ? "F32" : dt == NB_F64 ? "F64" : "I64"; }
static size_t dsize(nb_dtype dt) { return dt == NB_F32 ? 4 : 8; }

/* n bytes at p as printable ASCII: others (and the backslash) escaped as
   \xHH, cut with "..." to fit cap. Returns out. */
static char *escape(const char *p, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        bool plain = ch >= 32 && ch < 127 && ch != '\\';
        if (k + (plain ? 1 : 4) + 4 > cap) {
            memcpy(out + k, "...", 4);
            return out;
        }
        if (plain) out[k++] = (char)ch;
        else k += (size_t)snprintf(out + k, cap - k, "\\x%02x", ch);
    }
    out[k] = 0;
    return out;
}
#define QUOTE(p, n) escape((p), (n), (char[100]){0}, 100)

/* ------------------------------------------------------------------ write */

typedef struct {
    const char *name;
    int idx;
} named;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* Append printf-style text at h + *len (or only count it when h is NULL). */
static void emit(char *h, size_t *len, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(h ? h + *len : NULL, h ? cap - *len : 0, fmt, ap);
    va_end(ap);
    *len += k > 0 ? (size_t)k : 0;
}

/* The JSON header for the tensors in name order, padded with spaces to a
   multiple of 8 bytes; h NULL only measures it. Returns its length. */
static size_t header(char *h, size_t cap, int n, const named *order, nb_tensor *const *ts) {
    size_t len = 0;
    emit(h, &len, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    long long off = 0;
    for (int k = 0; k < n; k++) {
        nb_tensor *t = ts[order[k].idx];
        long long bytes = (long long)nb_numel(t) * (long long)dsize(nb_dtype_of(t));
        emit(h, &len, cap, ",\"%s\":{\"data_offsets\":[%lld,%lld],\"dtype\":\"%s\",\"shape\":[", order[k].name, off,
             off + bytes, dtype_tag(nb_dtype_of(t)));
        for (int d = 0; d < nb_rank(t); d++) emit(h, &len, cap, d ? ",%lld" : "%lld", (long long)nb_shape(t)[d]);
        emit(h, &len, cap, "]}");
        off += bytes;
    }
    emit(h, &len, cap, "}");
    while (len % 8) {
        if (h) h[len] = ' ';
        len++;
    }
    return len;
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = EIO;
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Temporary names differ between processes (the pid) and between the saves of one process (the counter);
   O_EXCL makes sure of it even so, e.g. for processes of two pid namespaces writing one folder. */
static atomic_uint tmp_counter;

/* Create a new file beside path ("<folder>/.<name>.tmp-<pid>-<k>", the name cut to 64 bytes so that a long
   target name does not make the temporary one too long) and open it for writing; its name goes to tmp. */
static int open_temp(const char *path, char *tmp, size_t cap) {
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path + 1) : 0;
    const char *base = slash ? slash + 1 : path;
    for (int tries = 0; tries < 1000; tries++) {
        unsigned k = atomic_fetch_add(&tmp_counter, 1u);
        snprintf(tmp, cap, "%.*s.%.64s.tmp-%ld-%u", dlen, path, base, (long)getpid(), k);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1; /* errno is EEXIST */
}

/* Best effort: make the rename in path's folder durable. */
static void sync_folder(const char *path, char *buf, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (slash == path) snprintf(buf, cap, "/");
    else if (slash) snprintf(buf, cap, "%.*s", (int)(slash - path), path);
    else snprintf(buf, cap, ".");
    int fd = open(buf, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Write the 8-byte size, the header and the tensors' data to path atomically. */
static int write_atomic(const char *fn, const char *path, const char *h, size_t len, int n, const named *order,
                        nb_tensor *const *ts) {
    size_t cap = strlen(path) + 100;
    char *tmp = nb_alloc(fn, cap);
    if (!tmp) return -1;
    const char *stage = "creating a temporary file in its folder";
    int fd = open_temp(path, tmp, cap), err = 0;
    bool made = fd >= 0;
    if (fd < 0) err = errno;
    if (!err) {
        struct stat st; /* a checkpoint that replaces a file keeps that file's permissions */
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) (void)fchmod(fd, st.st_mode & 07777);
        stage = "writing";
        unsigned char sz[8];
        for (int i = 0; i < 8; i++) sz[i] = (unsigned char)((unsigned long long)len >> (8 * i));
        if (write_all(fd, sz, 8) != 0 || write_all(fd, h, len) != 0) err = errno;
        for (int k = 0; !err && k < n; k++) {
            nb_tensor *t = ts[order[k].idx];
            size_t bytes = (size_t)nb_numel(t) * dsize(nb_dtype_of(t));
            if (bytes && write_all(fd, nb_data(t), bytes) != 0) err = errno;
        }
    }
    if (!err) {
        stage = "flushing it to disk";
        if (fsync(fd) != 0) err = errno;
    }
    if (fd >= 0) {
        int rc = close(fd);
        if (!err && rc != 0) {
            err = errno;
            stage = "closing it";
        }
    }
    if (!err) {
        stage = "renaming the temporary file over it";
        if (rename(tmp, path) != 0) err = errno;
        else made = false;
    }
    if (made) unlink(tmp); /* may change errno; err holds the cause */
    if (!err) sync_folder(path, tmp, cap);
    nb_dealloc(tmp);
    if (err) return fail(fn, "cannot write '%s': %s (%s)", path, strerror(err), stage);
    return 0;
}

int nb_save_safetensors(const char *path, int n, nb_tensor *const *ts, const char *const *names) {
    const char *fn = "nb_save_safetensors";
    if (!path || n < 0 || (n > 0 && (!ts || !names))) return fail(fn, "bad arguments");
    for (int i = 0; i < n; i++) {
        const char *s = names[i];
        if (!ts[i] || !s || !*s || !nb_is_contiguous(ts[i]))
            return fail(fn, "tensor '%s' (number %d) is NULL, unnamed or not contiguous", s ? QUOTE(s, strlen(s)) : "",
                        i);
        for (const char *c = s; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 32)
                return fail(fn, "name '%s' (number %d) has a character not allowed", QUOTE(s, strlen(s)), i);
    }
    named *order = nb_alloc(fn, sizeof *order * (size_t)(n ? n : 1));
    if (!order) return -1;
    for (int i = 0; i < n; i++) order[i] = (named){names[i], i};
    if (n > 1) qsort(order, (size_t)n, sizeof *order, cmp_named);
    for (int i = 1; i < n; i++)
        if (strcmp(order[i].name, order[i - 1].name) == 0) {
            const char *dup = order[i].name;
            nb_dealloc(order);
            return fail(fn, "name '%s' appears twice", QUOTE(dup, strlen(dup)));
        }
    size_t len = header(NULL, 0, n, order, ts);
    if (len > MAX_HEADER) {
        nb_dealloc(order);
        return fail(fn, "the header of %d tensors would take %zu bytes, over the format's limit of %u", n, len,
                    MAX_HEADER);
    }
    char *h = nb_alloc(fn, len + 1);
    int rc = -1;
    if (h) {
        header(h, len + 1, n, order, ts);
        rc = write_atomic(fn, path, h, len, n, order, ts);
    }
    nb_dealloc(h);
    nb_dealloc(order);
    return rc;
}

/* ------------------------------------------------------------------- read */

typedef struct {
    const char *name; /* into the header, not NUL-terminated */
    size_t nlen;
    nb_dtype dt;
    int esize;       /* bytes per element */
    const char *tag; /* the file's dtype, into the header (length tlen) */
    size_t tlen;
    bool other;      /* a dtype nabla does not read (F16, BOOL, ...): fine unless the entry is asked for */
    int rank;
    int64_t shape[NB_MAX_RANK];
    int64_t begin, end;
} entry;

typedef struct {
    const char *p, *e;
} cursor;

static void ws(cursor *c) {
    while (c->p < c->e && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}
static bool eat(cursor *c, char ch) {
    ws(c);
    if (c->p < c->e && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}
/* A string: its bytes between the quotes go to *s, *n. Escapes are skipped
   over when allowed (their text is then kept as written), refused otherwise.
   On failure the cursor stays where the string began. */
static bool str(cursor *c, const char **s, size_t *n, bool escapes) {
    const char *start = c->p;
    if (!eat(c, '"')) return false;
    const char *b = c->p;
    while (c->p < c->e && *c->p != '"') {
        if (*c->p == '\\') {
            if (!escapes || c->e - c->p < 2) break;
            c->p++;
        }
        c->p++;
    }
    if (c->p >= c->e || *c->p != '"') {
        c->p = start;
        return false;
    }
    *s = b;
    *n = (size_t)(c->p - b);
    c->p++;
    return true;
}
static bool is(const char *s, size_t n, const char *lit) { return n == strlen(lit) && memcmp(s, lit, n) == 0; }
/* A non-negative integer that fits in int64. */
static bool num(cursor *c, int64_t *v) {
    ws(c);
    if (c->p >= c->e || *c->p < '0' || *c->p > '9') return false;
    int64_t x = 0;
    while (c->p < c->e && *c->p >= '0' && *c->p <= '9') {
        int d = *c->p - '0';
        if (x > (INT64_MAX - d) / 10) return false;
        x = x * 10 + d;
        c->p++;
    }
    *v = x;
    return true;
}
static bool int_list(cursor *c, int64_t *v, int cap, int *n) {
    *n = 0;
    if (!eat(c, '[')) return false;
    if (eat(c, ']')) return true;
    do {
        if (*n >= cap || !num(c, &v[(*n)++])) return false;
    } while (eat(c, ','));
    return eat(c, ']');
}

#define NEAR(c) QUOTE((c)->p, (size_t)((c)->e - (c)->p) < 20 ? (size_t)((c)->e - (c)->p) : 20)

/* Parse one tensor's object into en; returns 0 or -1. */
static int parse_entry(const char *fn, cursor *c, entry *en, int64_t data_len) {
    const char *key = en->name;
    size_t kl = en->nlen;
    bool has_dt = false, has_sh = false, has_off = false;
    if (!eat(c, '{')) return fail(fn, "corrupt header for tensor '%s'", QUOTE(key, kl));
    do {
        const char *f;
        size_t fl;
        if (!str(c, &f, &fl, false) || !eat(c, ':')) return fail(fn, "corrupt header for tensor '%s'", QUOTE(key, kl));
        if (is(f, fl, "dtype")) {
            const char *d;
            size_t dl;
            if (!str(c, &d, &dl, false)) return fail(fn, "corrupt dtype for tensor '%s'", QUOTE(key, kl));
            /* the format's other dtypes are accepted (their sizes check the offsets), so a file whose unused
               tensors are F16 or BOOL (a causal-mask buffer) still loads the ones asked for */
            static const struct {
                const char *tag;
                int size;
            } others[] = {{"F16", 2}, {"BF16", 2}, {"I8", 1}, {"U8", 1}, {"BOOL", 1}, {"I16", 2}, {"U16", 2},
                          {"I32", 4}, {"U32", 4}, {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
            en->tag = d, en->tlen = dl;
            if (is(d, dl, "F32")) en->dt = NB_F32, en->esize = 4;
            else if (is(d, dl, "F64")) en->dt = NB_F64, en->esize = 8;
            else if (is(d, dl, "I64")) en->dt = NB_I64, en->esize = 8;
            else {
                for (size_t o = 0; o < sizeof others / sizeof *others && !en->other; o++)
                    if (is(d, dl, others[o].tag)) en->other = true, en->esize = others[o].size;
                if (!en->other) return fail(fn, "tensor '%s' has a dtype nabla does not read", QUOTE(key, kl));
            }
            has_dt = true;
        } else if (is(f, fl, "shape")) {
            if (!int_list(c, en->shape, NB_MAX_RANK, &en->rank))
                return fail(fn, "bad shape for tensor '%s'", QUOTE(key, kl));
            has_sh = true;
        } else if (is(f, fl, "data_offsets")) {
            int64_t v[2];
            int k;
            if (!int_list(c, v, 2, &k) || k != 2) return fail(fn, "bad data_offsets for tensor '%s'", QUOTE(key, kl));
            en->begin = v[0];
            en->end = v[1];
            has_off = true;
        } else {
            return fail(fn, "unknown field in tensor '%s'", QUOTE(key, kl));
        }
    } while (eat(c, ','));
    if (!eat(c, '}') || !has_dt || !has_sh || !has_off)
        return fail(fn, "incomplete entry for tensor '%s'", QUOTE(key, kl));
    int64_t count = 1;
    for (int i = 0; i < en->rank; i++) {
        if (en->shape[i] && count > ((int64_t)1 << 40) / en->shape[i])
            return fail(fn, "shape of tensor '%s' is too large", QUOTE(key, kl));
        count *= en->shape[i];
    }
    if (en->end < en->begin || en->end > data_len || en->end - en->begin != count * (int64_t)en->esize)
        return fail(fn, "offsets of tensor '%s' do not fit the file (truncated or corrupt; %lld data bytes)",
                    QUOTE(key, kl), (long long)data_len);
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->nlen > y->nlen) - (x->nlen < y->nlen);
}

/* Parse the header h[0..len) into *out (an array from nb_alloc, sorted by
   name, names unique); returns the count or -1. */
static int parse(const char *fn, const char *h, size_t len, entry **out, int64_t data_len) {
    cursor c = {h, h + len};
    *out = NULL;
    if (!eat(&c, '{')) return fail(fn, "corrupt header: expected an object, found '%s'", NEAR(&c));
    int n = 0, cap = 0;
    entry *es = NULL;
    if (!eat(&c, '}')) {
        do {
            const char *key;
            size_t kl;
            if (!str(&c, &key, &kl, false) || !eat(&c, ':')) {
                nb_dealloc(es);
                return fail(fn, "corrupt header near '%s'", NEAR(&c));
            }
            if (is(key, kl, "__metadata__")) {
                bool ok = eat(&c, '{');
                if (ok && !eat(&c, '}')) {
                    do {
                        const char *s;
                        size_t sl;
                        ok = str(&c, &s, &sl, true) && eat(&c, ':') && str(&c, &s, &sl, true);
                    } while (ok && eat(&c, ','));
                    ok = ok && eat(&c, '}');
                }
                if (!ok) {
                    nb_dealloc(es);
                    return fail(fn, "corrupt header: bad __metadata__ near '%s'", NEAR(&c));
                }
                continue;
            }
            if (n == cap) {
                if (cap > INT32_MAX / 4) { /* cannot happen in a header of at most 100 MB, checked anyway */
                    nb_dealloc(es);
                    return fail(fn, "corrupt header: too many tensors");
                }
                int nc = cap ? 2 * cap : 16;
                entry *bigger = nb_alloc(fn, sizeof *es * (size_t)nc);
                if (!bigger) {
                    nb_dealloc(es);
                    return -1;
                }
                if (n) memcpy(bigger, es, sizeof *es * (size_t)n);
                nb_dealloc(es);
                es = bigger;
                cap = nc;
            }
            entry *en = &es[n++];
            memset(en, 0, sizeof *en);
            en->name = key;
            en->nlen = kl;
            if (parse_entry(fn, &c, en, data_len) != 0) {
                nb_dealloc(es);
                return -1;
            }
        } while (eat(&c, ','));
        if (!eat(&c, '}')) {
            nb_dealloc(es);
            return fail(fn, "corrupt header: unterminated object near '%s'", NEAR(&c));
        }
    }
    ws(&c);
    if (c.p != c.e) {
        nb_dealloc(es);
        return fail(fn, "corrupt header: '%s' after the object", NEAR(&c));
    }
    if (n > 1) qsort(es, (size_t)n, sizeof *es, cmp_entry);
    for (int i = 1; i < n; i++)
        if (cmp_entry(&es[i - 1], &es[i]) == 0) {
            int rc = fail(fn, "tensor '%s' appears twice in the header", QUOTE(es[i].name, es[i].nlen));
            nb_dealloc(es);
            return rc;
        }
    *out = es;
    return n;
}

static int read_all(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t k = read(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) errno = EIO; /* the file became shorter */
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Read path's header into *hdr (NUL-terminated, *hl bytes before the NUL)
   and its data into *data (*dl bytes), both from nb_alloc. */
static int read_file(const char *fn, const char *path, char **hdr, size_t *hl, unsigned char **data, int64_t *dl) {
    *hdr = NULL;
    *data = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(fn, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    int rc = -1;
    unsigned char sz[8];
    if (fstat(fd, &st) != 0) {
        fail(fn, "cannot read '%s': %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        fail(fn, "'%s' is not a regular file", path);
    } else if (st.st_size < 8) {
        fail(fn, "'%s' is too short to be a safetensors file (%lld bytes)", path, (long long)st.st_size);
    } else if (read_all(fd, sz, 8) != 0) {
        fail(fn, "cannot read '%s': %s", path, strerror(errno));
    } else {
        unsigned long long n = 0;
        for (int i = 0; i < 8; i++) n |= (unsigned long long)sz[i] << (8 * i);
        if (n > (unsigned long long)st.st_size - 8) {
            fail(fn, "'%s' has a header size of %llu bytes beyond the file (truncated or not safetensors)", path, n);
        } else if (n > MAX_HEADER) {
            fail(fn, "'%s' has a header of %llu bytes, over the format's limit of %u", path, n, MAX_HEADER);
        } else {
            *hl = (size_t)n;
            *dl = (int64_t)st.st_size - 8 - (int64_t)n;
            *hdr = nb_alloc(fn, *hl + 1);
            *data = *hdr ? nb_alloc(fn, (size_t)*dl) : NULL;
            if (*hdr && *data) {
                if (read_all(fd, *hdr, *hl) != 0 || read_all(fd, *data, (size_t)*dl) != 0) {
                    fail(fn, "cannot read '%s': %s", path, strerror(errno));
                } else {
                    (*hdr)[*hl] = 0;
                    rc = 0;
                }
            }
        }
    }
    close(fd);
    if (rc != 0) {
        nb_dealloc(*hdr);
        nb_dealloc(*data);
        *hdr = NULL;
        *data = NULL;
    }
    return rc;
}

/* Load the n tensors ts from path, tensor i from the first of its candidate names (the nc names cn, cn[k] a
   name for tensor owner[k], in order of preference) that the file holds. All or nothing. */
static int load_named(const char *fn, const char *path, int n, nb_tensor *const *ts, int nc, const char *const *cn,
                      const int *owner) {
    char *hdr;
    unsigned char *data;
    size_t hl = 0;
    int64_t dl = 0;
    if (read_file(fn, path, &hdr, &hl, &data, &dl) != 0) return -1;
    entry *es = NULL;
    int ne = parse(fn, hdr, hl, &es, dl);
    int rc = ne < 0 ? -1 : 0;
    entry **which = rc == 0 ? nb_alloc_zeroed(fn, (size_t)(n ? n : 1), sizeof *which) : NULL;
    if (rc == 0 && !which) rc = -1;
    for (int k = 0; rc == 0 && k < nc; k++) {
        if (which[owner[k]] || !cn[k] || ne <= 0) continue;
        entry key = {.name = cn[k], .nlen = strlen(cn[k])};
        which[owner[k]] = bsearch(&key, es, (size_t)ne, sizeof *es, cmp_entry);
    }
    /* validate everything first */
    for (int i = 0; rc == 0 && i < n; i++) {
        if (!which[i]) {
            int k = 0, names = 0;
            while (k < nc && owner[k] != i) k++;
            for (int j = 0; j < nc; j++) names += owner[j] == i;
            const char *name = k < nc ? cn[k] : NULL;
            rc = fail(fn, "no tensor named '%s'%s in '%s'", name ? QUOTE(name, strlen(name)) : "(null)",
                      names > 1 ? " (nor under the other names of that tied tensor)" : "", path);
            break;
        }
        entry *en = which[i];
        bool ok = ts[i] && !en->other && nb_is_contiguous(ts[i]) && nb_dtype_of(ts[i]) == en->dt &&
                  nb_rank(ts[i]) == en->rank;
        for (int d = 0; ok && d < en->rank; d++) ok = nb_shape(ts[i])[d] == en->shape[d];
        if (!ok) {
            char a[128], b[128];
            rc = fail(fn, "tensor '%s' in the file is %.*s %s, the model's is %s %s", QUOTE(en->name, en->nlen),
                      (int)en->tlen, en->tag, nb_shape_str(en->rank, en->shape, a, sizeof a),
                      ts[i] ? dtype_tag(nb_dtype_of(ts[i])) : "NULL",
                      ts[i] ? nb_shape_str(nb_rank(ts[i]), nb_shape(ts[i]), b, sizeof b) : "");
        }
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        entry *en = which[i];
        if (en->end > en->begin) memcpy(nb_data(ts[i]), data + en->begin, (size_t)(en->end - en->begin));
    }
    nb_dealloc(which);
    nb_dealloc(es);
    nb_dealloc(hdr);
    nb_dealloc(data);
    return rc;
}

int nb_load_safetensors(const char *path, int n, nb_tensor *const *ts, const char *const *names) {
    const char *fn = "nb_load_safetensors";
    if (!path || n < 0 || (n > 0 && (!ts || !names))) return fail(fn, "bad arguments");
    int *owner = nb_alloc(fn, sizeof *owner * (size_t)(n ? n : 1));
    if (!owner) return -1;
    for (int i = 0; i < n; i++) owner[i] = i;
    int rc = load_named(fn, path, n, ts, n, names, owner);
    nb_dealloc(owner);
    return rc;
}

/* ----------------------------------------------------------------- module */

/* A module's checkpoint holds its parameters and buffers, each once under its first dotted path (a tied
   parameter is one tensor: safetensors cannot hold two names for one storage, and its save_model drops the
   other names too). Loading takes each tensor from its first path, or else from any other path it is
   registered under, so a file written by PyTorch's save_model (which keeps one name of a tied group, not
   always the first) or holding every name loads as well. */
typedef struct {
    int n, nall;        /* unique tensors (parameters then buffers); all registrations */
    nb_tensor **ts;     /* n */
    const char **names; /* n */
    nb_tensor **all;    /* nall */
    const char **alln;  /* nall */
    int *owner;         /* nall: index into ts */
} listing;

static int list_module(const char *fn, nb_module *m, listing *l) {
    memset(l, 0, sizeof *l);
    int np = nb_module_params(m, NULL, NULL, 0), nb = nb_module_buffers(m, NULL, NULL, 0);
    int npp = nb_module_param_paths(m, NULL, NULL, 0), nbp = nb_module_buffer_paths(m, NULL, NULL, 0);
    if (np < 0 || nb < 0 || npp < 0 || nbp < 0) return -1;
    l->n = np + nb, l->nall = npp + nbp;
    size_t u = (size_t)(l->n ? l->n : 1), a = (size_t)(l->nall ? l->nall : 1);
    l->ts = nb_alloc(fn, u * sizeof *l->ts);
    l->names = nb_alloc(fn, u * sizeof *l->names);
    l->all = nb_alloc(fn, a * sizeof *l->all);
    l->alln = nb_alloc(fn, a * sizeof *l->alln);
    l->owner = nb_alloc(fn, a * sizeof *l->owner);
    if (!l->ts || !l->names || !l->all || !l->alln || !l->owner) return -1;
    nb_module_params(m, l->ts, l->names, np);
    nb_module_buffers(m, l->ts + np, l->names + np, nb);
    nb_module_param_paths(m, l->all, l->alln, npp);
    nb_module_buffer_paths(m, l->all + npp, l->alln + npp, nbp);
    /* each registration's tensor, among the unique ones (first paths come first in pre-order, so the
       canonical name is each tensor's first candidate) */
    for (int k = 0, next = 0; k < l->nall; k++) {
        if (k == npp) next = np;
        if (next < l->n && l->ts[next] == l->all[k]) { /* a first registration: the next unique tensor */
            l->owner[k] = next++;
            continue;
        }
        int i = k < npp ? 0 : np; /* a tied one, met before */
        while (l->ts[i] != l->all[k]) i++;
        l->owner[k] = i;
    }
    return 0;
}

static void unlist(listing *l) {
    nb_dealloc(l->ts), nb_dealloc(l->names), nb_dealloc(l->all), nb_dealloc(l->alln), nb_dealloc(l->owner);
}

static int module_io(nb_module *m, const char *path, bool save) {
    const char *fn = save ? "nb_module_save" : "nb_module_load";
    if (!m || !path) return fail(fn, "module or path is NULL");
    listing l;
    int rc = list_module(fn, m, &l);
    if (rc == 0)
        rc = save ? nb_save_safetensors(path, l.n, l.ts, l.names)
                  : load_named("nb_load_safetensors", path, l.n, l.ts, l.nall, l.alln, l.owner);
    unlist(&l);
    return rc;
}

int nb_module_save(nb_module *m, const char *path) { return module_io(m, path, true); }
int nb_module_load(nb_module *m, const char *path) { return module_io(m, path, false); }
