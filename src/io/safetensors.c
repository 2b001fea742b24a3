/*
 * safetensors.c - reading and writing safetensors checkpoints (nabla/io.h).
 *
 * The header is parsed by a small JSON reader that accepts exactly the
 * format's schema; every offset is checked against the file size and the
 * tensor's byte count before anything is copied, and loading validates every
 * requested tensor before writing any, so a bad file changes nothing.
 * Data is little-endian, as on every platform nabla targets (x86-64, arm64).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/nabla/io.h"

#define MAX_HEADER (100u << 20) /* the format's own limit is 100 MB */
#define MAX_ENTRIES 4096

/* Record an error and give -1: `return fail(fn, "...", ...)`. */
static int minus_one(void *recorded) {
    (void)recorded;
    return -1;
}
#define fail(...) minus_one(nb_failf(__VA_ARGS__))

static const char *dtype_tag(nb_dtype dt) { return dt == NB_F32 ? "F32" : dt == NB_F64 ? "F64" : "I64"; }
static size_t dsize(nb_dtype dt) { return dt == NB_F32 ? 4 : 8; }

static int cmp_idx(const void *a, const void *b, const char *const *names) {
    return strcmp(names[*(const int *)a], names[*(const int *)b]);
}

/* ------------------------------------------------------------------ write */

int nb_save_safetensors(const char *path, int n, nb_tensor *const *ts, const char *const *names) {
    const char *fn = "nb_save_safetensors";
    if (!path || n < 0 || (n > 0 && (!ts || !names))) return fail(fn, "bad arguments");
    int *order = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!order) return fail(fn, "out of memory");
    for (int i = 0; i < n; i++) {
        order[i] = i;
        const char *s = names[i];
        if (!ts[i] || !s || !*s || !nb_is_contiguous(ts[i])) {
            free(order);
            return fail(fn, "tensor '%s' (number %d) is NULL, unnamed or not contiguous", s ? s : "", i);
        }
        for (const char *c = s; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 32) {
                free(order);
                return fail(fn, "name '%s' (number %d) has a character not allowed", s, i);
            }
    }
    /* insertion sort by name (n is small) and a duplicate check */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && cmp_idx(&order[j - 1], &order[j], names) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int i = 1; i < n; i++)
        if (strcmp(names[order[i]], names[order[i - 1]]) == 0) {
            const char *dup = names[order[i]];
            free(order);
            return fail(fn, "name '%s' appears twice", dup);
        }
    /* header */
    size_t cap = 256 + (size_t)n * 256, len = 0;
    char *h = malloc(cap);
    if (!h) {
        free(order);
        return fail(fn, "out of memory");
    }
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    long long off = 0;
    for (int k = 0; k < n; k++) {
        nb_tensor *t = ts[order[k]];
        long long bytes = (long long)nb_numel(t) * (long long)dsize(nb_dtype_of(t));
        if (cap - len < 1024 + strlen(names[order[k]])) {
            cap = cap * 2 + strlen(names[order[k]]) + 1024;
            char *h2 = realloc(h, cap);
            if (!h2) {
                free(h);
                free(order);
                return fail(fn, "out of memory");
            }
            h = h2;
        }
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"data_offsets\":[%lld,%lld],\"dtype\":\"%s\",\"shape\":[",
                                names[order[k]], off, off + bytes, dtype_tag(nb_dtype_of(t)));
        for (int d = 0; d < nb_rank(t); d++)
            len += (size_t)snprintf(h + len, cap - len, d ? ",%lld" : "%lld", (long long)nb_shape(t)[d]);
        len += (size_t)snprintf(h + len, cap - len, "]}");
        off += bytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    /* write to a temporary file beside the target, then rename */
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        free(h);
        free(order);
        return fail(fn, "out of memory");
    }
    snprintf(tmp, plen + 16, "%s.tmp%04x", path, (unsigned)(rand() & 0xffff));
    FILE *f = fopen(tmp, "wb");
    int rc = f ? 0 : -1;
    unsigned char sz[8];
    for (int i = 0; i < 8; i++) sz[i] = (unsigned char)((unsigned long long)len >> (8 * i));
    if (f && (fwrite(sz, 1, 8, f) != 8 || fwrite(h, 1, len, f) != len)) rc = -1;
    for (int k = 0; f && rc == 0 && k < n; k++) {
        nb_tensor *t = ts[order[k]];
        size_t bytes = (size_t)nb_numel(t) * dsize(nb_dtype_of(t));
        if (bytes && fwrite(nb_data(t), 1, bytes, f) != bytes) rc = -1;
    }
    if (f && fclose(f) != 0) rc = -1;
    if (rc == 0 && rename(tmp, path) != 0) rc = -1;
    if (rc != 0) {
        remove(tmp);
        fail(fn, "cannot write '%s': %s", path, strerror(errno));
    }
    free(tmp);
    free(h);
    free(order);
    return rc;
}

/* ------------------------------------------------------------------- read */

typedef struct {
    char name[256];
    nb_dtype dt;
    int rank;
    int64_t shape[NB_MAX_RANK];
    long long begin, end;
} entry;

typedef struct {
    const char *p, *e;
    bool bad;
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
static bool str(cursor *c, char *out, size_t cap) {
    if (!eat(c, '"')) return false;
    size_t n = 0;
    while (c->p < c->e && *c->p != '"') {
        if (*c->p == '\\') return false; /* escapes are not used by the names nabla accepts */
        if (n + 1 < cap) out[n++] = *c->p;
        c->p++;
    }
    if (c->p >= c->e) return false;
    c->p++;
    out[n] = 0;
    return true;
}
static bool num(cursor *c, long long *v) {
    ws(c);
    char *end;
    if (c->p >= c->e || *c->p < '0' || *c->p > '9') return false;
    errno = 0;
    *v = strtoll(c->p, &end, 10);
    if (errno || end > c->e) return false;
    c->p = end;
    return true;
}
static bool int_list(cursor *c, long long *v, int cap, int *n) {
    *n = 0;
    if (!eat(c, '[')) return false;
    if (eat(c, ']')) return true;
    do {
        if (*n >= cap || !num(c, &v[(*n)++])) return false;
    } while (eat(c, ','));
    return eat(c, ']');
}

/* Parse the header into entries; returns the count or -1. */
static int parse(const char *fn, const char *h, size_t len, entry *es, int cap, long long data_len) {
    cursor c = {h, h + len, false};
    if (!eat(&c, '{')) return fail(fn, "corrupt header: expected an object");
    int n = 0;
    if (eat(&c, '}')) return 0;
    do {
        char key[256];
        if (!str(&c, key, sizeof key) || !eat(&c, ':')) return fail(fn, "corrupt header near '%.20s'", c.p);
        if (strcmp(key, "__metadata__") == 0) {
            if (!eat(&c, '{')) return fail(fn, "corrupt header: bad __metadata__");
            if (!eat(&c, '}')) {
                do {
                    char k2[256], v2[1024];
                    if (!str(&c, k2, sizeof k2) || !eat(&c, ':') || !str(&c, v2, sizeof v2))
                        return fail(fn, "corrupt header: bad __metadata__");
                } while (eat(&c, ','));
                if (!eat(&c, '}')) return fail(fn, "corrupt header: bad __metadata__");
            }
            continue;
        }
        if (n >= cap) return fail(fn, "more than %d tensors", cap);
        entry *en = &es[n++];
        snprintf(en->name, sizeof en->name, "%s", key);
        bool has_dt = false, has_sh = false, has_off = false;
        if (!eat(&c, '{')) return fail(fn, "corrupt header for tensor '%s'", key);
        do {
            char f[32];
            if (!str(&c, f, sizeof f) || !eat(&c, ':')) return fail(fn, "corrupt header for tensor '%s'", key);
            if (strcmp(f, "dtype") == 0) {
                char d[16];
                if (!str(&c, d, sizeof d)) return fail(fn, "corrupt dtype for tensor '%s'", key);
                if (strcmp(d, "F32") == 0) en->dt = NB_F32;
                else if (strcmp(d, "F64") == 0) en->dt = NB_F64;
                else if (strcmp(d, "I64") == 0) en->dt = NB_I64;
                else return fail(fn, "tensor '%s' has a dtype nabla does not read", key);
                has_dt = true;
            } else if (strcmp(f, "shape") == 0) {
                long long v[NB_MAX_RANK + 1];
                if (!int_list(&c, v, NB_MAX_RANK, &en->rank)) return fail(fn, "bad shape for tensor '%s'", key);
                for (int i = 0; i < en->rank; i++) en->shape[i] = v[i];
                has_sh = true;
            } else if (strcmp(f, "data_offsets") == 0) {
                long long v[2];
                int k;
                if (!int_list(&c, v, 2, &k) || k != 2) return fail(fn, "bad data_offsets for tensor '%s'", key);
                en->begin = v[0];
                en->end = v[1];
                has_off = true;
            } else {
                return fail(fn, "unknown field in tensor '%s'", key);
            }
        } while (eat(&c, ','));
        if (!eat(&c, '}') || !has_dt || !has_sh || !has_off)
            return fail(fn, "incomplete entry for tensor '%s'", key);
        long long count = 1;
        for (int i = 0; i < en->rank; i++) {
            if (en->shape[i] < 0 || (en->shape[i] && count > (1LL << 40) / en->shape[i]))
                return fail(fn, "shape of tensor '%s' is too large", key);
            count *= en->shape[i];
        }
        if (en->begin < 0 || en->end < en->begin || en->end > data_len ||
            en->end - en->begin != count * (long long)dsize(en->dt))
            return fail(fn, "offsets of tensor '%s' do not fit the file (truncated or corrupt; %lld data bytes)", key,
                        data_len);
    } while (eat(&c, ','));
    if (!eat(&c, '}')) return fail(fn, "corrupt header: unterminated object");
    return n;
}

static int read_file(const char *fn, const char *path, unsigned char **buf, long long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return fail(fn, "cannot open '%s': %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (sz < 8) {
        fclose(f);
        return fail(fn, "'%s' is too short to be a safetensors file (%ld bytes)", path, sz);
    }
    *buf = malloc((size_t)sz);
    if (!*buf || fread(*buf, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(*buf);
        return fail(fn, "cannot read '%s'", path);
    }
    fclose(f);
    *size = sz;
    return 0;
}

int nb_load_safetensors(const char *path, int n, nb_tensor *const *ts, const char *const *names) {
    const char *fn = "nb_load_safetensors";
    if (!path || n < 0 || (n > 0 && (!ts || !names))) return fail(fn, "bad arguments");
    unsigned char *buf = NULL;
    long long size = 0;
    if (read_file(fn, path, &buf, &size) != 0) return -1;
    unsigned long long hl = 0;
    for (int i = 0; i < 8; i++) hl |= (unsigned long long)buf[i] << (8 * i);
    if (hl > MAX_HEADER || (long long)hl > size - 8) {
        free(buf);
        return fail(fn, "'%s' has a header size of %lld bytes beyond the file (truncated or not safetensors)", path,
                    (long long)hl);
    }
    entry *es = malloc(sizeof(entry) * MAX_ENTRIES);
    int ne = es ? parse(fn, (const char *)buf + 8, (size_t)hl, es, MAX_ENTRIES, size - 8 - (long long)hl) : -1;
    const unsigned char *data = buf + 8 + hl;
    int rc = ne < 0 ? -1 : 0;
    int *which = rc == 0 ? malloc(sizeof(int) * (size_t)(n ? n : 1)) : NULL;
    if (rc == 0 && !which) rc = fail(fn, "out of memory");
    /* validate everything first */
    for (int i = 0; rc == 0 && i < n; i++) {
        which[i] = -1;
        for (int k = 0; k < ne; k++)
            if (names[i] && strcmp(es[k].name, names[i]) == 0) which[i] = k;
        if (which[i] < 0) {
            rc = fail(fn, "no tensor named '%s' in '%s'", names[i] ? names[i] : "(null)", path);
            break;
        }
        entry *en = &es[which[i]];
        bool ok = ts[i] && nb_is_contiguous(ts[i]) && nb_dtype_of(ts[i]) == en->dt && nb_rank(ts[i]) == en->rank;
        for (int d = 0; ok && d < en->rank; d++) ok = nb_shape(ts[i])[d] == en->shape[d];
        if (!ok) {
            char a[128], b[128], msg[512];
            snprintf(msg, sizeof msg, "tensor '%s' in the file is %s %s, the model's is %s %s", en->name,
                     dtype_tag(en->dt), nb_shape_str(en->rank, en->shape, a, sizeof a),
                     ts[i] ? dtype_tag(nb_dtype_of(ts[i])) : "NULL",
                     ts[i] ? nb_shape_str(nb_rank(ts[i]), nb_shape(ts[i]), b, sizeof b) : "");
            nb_fail(fn, msg);
            rc = -1;
        }
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        entry *en = &es[which[i]];
        if (en->end > en->begin) memcpy(nb_data(ts[i]), data + en->begin, (size_t)(en->end - en->begin));
    }
    free(which);
    free(es);
    free(buf);
    return rc;
}

/* ----------------------------------------------------------------- module */

static int module_io(nb_module *m, const char *path, bool save) {
    int n = nb_module_params(m, NULL, NULL, 0);
    if (n < 0) return -1;
    nb_tensor **ps = malloc(sizeof *ps * (size_t)(n ? n : 1));
    const char **names = malloc(sizeof *names * (size_t)(n ? n : 1));
    int rc = -1;
    if (ps && names) {
        nb_module_params(m, ps, names, n);
        rc = save ? nb_save_safetensors(path, n, ps, names) : nb_load_safetensors(path, n, ps, names);
    }
    free(ps);
    free(names);
    return rc;
}

int nb_module_save(nb_module *m, const char *path) { return module_io(m, path, true); }
int nb_module_load(nb_module *m, const char *path) { return module_io(m, path, false); }
