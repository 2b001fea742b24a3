/*
 * test_data.c - IDX and CSV loading, the train/test split, feature statistics
 * and the mini-batch iterator: small files and buffers written here, sizes
 * that lie, corrupt headers, gzip streams built here (read when nabla has
 * zlib), RFC 4180 quoting, malformed CSV reported by line and column, and an
 * injected allocation failure at every allocation of every loader.
 */
#define _POSIX_C_SOURCE 200809L /* getpid, mkdir, chdir */
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "nabla/data.h"

/* The files are written in a folder of this process's own (main enters it), so that two runs of the test
   at once (two build folders) cannot overwrite each other's; they are removed at the end. */
static char made[64][40];
static int nmade;
static void made_file(const char *name) {
    for (int i = 0; i < nmade; i++)
        if (strcmp(made[i], name) == 0) return;
    if (nmade < 64 && strlen(name) < sizeof made[0]) strcpy(made[nmade++], name);
}

static void write_idx(const char *path, const unsigned char *hdr, size_t nh, const unsigned char *d, size_t nd) {
    made_file(path);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(hdr, 1, nh, f);
    fwrite(d, 1, nd, f);
    fclose(f);
}

static void test_idx(void) {
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2}, lh[8] = {0, 0, 8, 1, 0, 0, 0, 3};
    unsigned char px[12], lb[3] = {2, 0, 1};
    for (int i = 0; i < 12; i++) px[i] = (unsigned char)(i * 20);
    write_idx("img.idx", ih, 16, px, 12);
    write_idx("lab.idx", lh, 8, lb, 3);
    nb_dataset ds;
    CHECK(nb_load_idx("img.idx", "lab.idx", NB_F32, &ds) == 0);
    CHECK(ds.n == 3 && ds.d == 4 && ds.classes == 3);
    CHECK_CLOSE(nb_get(ds.x, (int64_t[]){1, 3}), 140 / 255.0, 1e-7, 0);
    CHECK(nb_get(ds.y, (int64_t[]){0}) == 2);
    nb_dataset_free(&ds);
    write_idx("img.idx", ih, 16, px, 11); /* one byte short */
    CHECK(nb_load_idx("img.idx", "lab.idx", NB_F32, &ds) != 0);
    CHECK_ERR("holds 11 data bytes, its header says 12");
    CHECK(ds.x == NULL);
    CHECK(nb_load_idx("lab.idx", "nope.idx", NB_F32, &ds) != 0);
    CHECK_ERR("cannot open 'nope.idx'");
    const char *fm = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    FILE *probe = fopen(fm, "rb");
    if (probe) { /* Debian's dataset-fashion-mnist, when installed */
        fclose(probe);
        int rc = nb_load_idx(fm, "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", NB_F32, &ds);
        if (rc == 0) {
            CHECK(ds.n == 10000 && ds.d == 784 && ds.classes == 10);
            nb_dataset_free(&ds);
        } else {
            CHECK_ERR("built without zlib");
        }
    }
}

static void test_csv_and_batches(void) {
    made_file("data.csv");
    FILE *f = fopen("data.csv", "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f, "a,b,label\n");
    for (int i = 0; i < 10; i++) fprintf(f, "%d,%g,%d\n", i, i * 0.5, i % 3);
    fclose(f);
    nb_dataset ds;
    CHECK(nb_load_csv("data.csv", -1, NB_F64, &ds) == 0);
    CHECK(ds.n == 10 && ds.d == 2 && ds.classes == 3);
    CHECK(nb_get(ds.x, (int64_t[]){4, 1}) == 2.0 && nb_get(ds.y, (int64_t[]){4}) == 1);
    nb_rng r1, r2;
    nb_rng_seed(&r1, 3);
    nb_rng_seed(&r2, 3);
    nb_dataset bad = ds;
    bad.y = nb_to(ds.y, NB_F64); /* labels must be i64 */
    CHECK(nb_batcher_new(&bad, 4, true, &r1) == NULL);
    CHECK_ERR("NB_I64");
    nb_free(bad.y);
    nb_batcher *b1 = nb_batcher_new(&ds, 4, true, &r1), *b2 = nb_batcher_new(&ds, 4, true, &r2);
    for (int epoch = 0; epoch < 2; epoch++) {
        int seen[10] = {0}, batches = 0;
        nb_scope_begin();
        nb_tensor *x, *y, *x2, *y2;
        while (nb_batcher_next(b1, &x, &y)) {
            CHECK(nb_batcher_next(b2, &x2, &y2));
            batches++;
            for (int64_t i = 0; i < nb_shape(x)[0]; i++) {
                int id = (int)nb_get(x, (int64_t[]){i, 0});
                seen[id]++;
                CHECK(nb_get(y, (int64_t[]){i}) == id % 3);
                CHECK(nb_get(x2, (int64_t[]){i, 0}) == id); /* same seed, same order */
            }
        }
        CHECK(!nb_batcher_next(b2, &x2, &y2));
        CHECK(batches == 3);
        for (int i = 0; i < 10; i++) CHECK(seen[i] == 1);
        nb_scope_end();
    }
    nb_batcher_free(b1);
    nb_batcher_free(b2);
    nb_dataset_free(&ds);
    made_file("bad.csv");
    f = fopen("bad.csv", "w");
    if (f) {
        fprintf(f, "1,2,0\n3,x,1\n");
        fclose(f);
    }
    CHECK(nb_load_csv("bad.csv", -1, NB_F64, &ds) != 0);
    CHECK_ERR("bad.csv:2:2: 'x' is not a number");
}


/* ---- files, marks and buffers shared by the tests ---- */

static void write_file(const char *path, const void *d, size_t n) {
    made_file(path);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(d, 1, n, f);
    fclose(f);
}

/* A data set filled with marks that a failed call must leave in place. */
static nb_dataset sentinel(void) {
    return (nb_dataset){.x = (nb_tensor *)(uintptr_t)0x1, .y = (nb_tensor *)(uintptr_t)0x2, .n = -7, .d = -8,
                        .classes = -9, .class_names = (char **)(uintptr_t)0x3};
}
static bool untouched(const nb_dataset *ds) {
    nb_dataset s = sentinel();
    return ds->x == s.x && ds->y == s.y && ds->n == s.n && ds->d == s.d && ds->classes == s.classes &&
           ds->class_names == s.class_names;
}

/* Load CSV text from memory with the defaults but the given options. */
static int csv(const char *text, const nb_csv_options *o, nb_dataset *ds) {
    return nb_load_csv_mem(text, strlen(text), "t.csv", o, NB_F64, ds);
}

/* The loader must fail with a message containing sub and leave ds alone. */
static void csv_fails(const char *text, const nb_csv_options *o, const char *sub, int line) {
    nb_dataset ds = sentinel();
    nb_clear_error();
    int rc = csv(text, o, &ds);
    if (rc == 0 || !nb_last_error() || !strstr(nb_last_error(), sub) || !untouched(&ds)) {
        th_cur_failed++;
        fprintf(stderr, "%s:%d: expected an error containing \"%s\", got rc %d and \"%s\"\n", __FILE__, line, sub, rc,
                nb_last_error() ? nb_last_error() : "(none)");
        if (rc == 0) nb_dataset_free(&ds);
    }
    nb_clear_error();
}
#define CSV_FAILS(text, o, sub) csv_fails(text, o, sub, __LINE__)

/* ---- gzip streams of stored (uncompressed) deflate blocks ---- */

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

/* Write d (n bytes) as a valid gzip file. */
static void write_gz(const char *path, const unsigned char *d, size_t n) {
    made_file(path);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    const unsigned char hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    fwrite(hdr, 1, 10, f);
    size_t pos = 0;
    do {
        size_t len = n - pos > 65535 ? 65535 : n - pos;
        unsigned char b[5] = {(unsigned char)(pos + len == n), (unsigned char)len, (unsigned char)(len >> 8),
                              (unsigned char)~len, (unsigned char)(~len >> 8)};
        fwrite(b, 1, 5, f);
        fwrite(d + pos, 1, len, f);
        pos += len;
    } while (pos < n);
    uint32_t c = crc32_of(d, n), sz = (uint32_t)n;
    unsigned char t[8] = {(unsigned char)c, (unsigned char)(c >> 8), (unsigned char)(c >> 16), (unsigned char)(c >> 24),
                          (unsigned char)sz, (unsigned char)(sz >> 8), (unsigned char)(sz >> 16),
                          (unsigned char)(sz >> 24)};
    fwrite(t, 1, 8, f);
    fclose(f);
}

/* An allocator hook that records the largest request and can fail the Nth. */
static size_t hook_max;
static long hook_count, hook_fail_at, hook_live;
static void *hook_alloc(size_t n, void *ud) {
    (void)ud;
    if (++hook_count == hook_fail_at) return NULL;
    if (n > hook_max) hook_max = n;
    void *p = malloc(n);
    if (p) hook_live++;
    return p;
}
static void hook_free(void *p, void *ud) {
    (void)ud;
    if (p) hook_live--;
    free(p);
}
static void hook_on(long fail_at) {
    nb_set_cache_limit(0); /* every allocation reaches the hook */
    nb_set_allocator(hook_alloc, hook_free, NULL);
    hook_max = 0;
    hook_count = 0;
    hook_live = 0;
    hook_fail_at = fail_at;
}
static void hook_off(void) {
    nb_set_allocator(NULL, NULL, NULL);
    nb_set_cache_limit((int64_t)256 << 20);
}

/* ---- IDX ---- */

static void test_idx_header_overflow(void) {
    /* a count of 0 and three dimensions of 2^32-1: no data bytes are needed for 0 items, but an item's size
       overflows (a product that wrapped used to be accepted as d = 12,884,901,887) */
    unsigned char ih[20] = {0, 0, 8, 4, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
    unsigned char lh[8] = {0, 0, 8, 1, 0, 0, 0, 0};
    nb_dataset ds = sentinel();
    CHECK(nb_load_idx_mem(ih, sizeof ih, lh, sizeof lh, NB_F32, &ds) != 0);
    CHECK_ERR("overflow");
    CHECK(untouched(&ds));
    write_file("ovf.idx", ih, sizeof ih);
    write_file("ovf_lab.idx", lh, sizeof lh);
    CHECK(nb_load_idx("ovf.idx", "ovf_lab.idx", NB_F32, &ds) != 0);
    CHECK_ERR("'ovf.idx': the dimensions in its header (0,4294967295,4294967295,4294967295) overflow");
    CHECK(untouched(&ds));
    /* one item of 2^32-1 x 2^32-1 x 3 bytes */
    unsigned char ih2[20] = {0, 0, 8, 4, 0, 0, 0, 1, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 3};
    unsigned char lh2[9] = {0, 0, 8, 1, 0, 0, 0, 1, 0};
    CHECK(nb_load_idx_mem(ih2, sizeof ih2, lh2, sizeof lh2, NB_F32, &ds) != 0);
    CHECK_ERR("overflow");
    CHECK(untouched(&ds));
}

static void test_idx_sizes(void) {
    /* 60000 x 28 x 28 with 1000 data bytes: the header says 47040000 */
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0xEA, 0x60, 0, 0, 0, 28, 0, 0, 0, 28}, px[1000] = {0};
    unsigned char img[16 + 1000];
    memcpy(img, ih, 16);
    memcpy(img + 16, px, 1000);
    write_file("short.idx", img, sizeof img);
    unsigned char lab[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
    write_file("short_lab.idx", lab, sizeof lab);
    nb_dataset ds = sentinel();
    CHECK(nb_load_idx("short.idx", "short_lab.idx", NB_F32, &ds) != 0);
    CHECK_ERR("'short.idx' holds 1000 data bytes, its header says 47040000");
    CHECK(untouched(&ds));
    /* too many bytes */
    unsigned char im2[8 + 4] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3, 4};
    CHECK(nb_load_idx_mem(im2, sizeof im2, lab, sizeof lab, NB_F64, &ds) != 0);
    CHECK_ERR("'<images>' holds 4 data bytes, its header says 3");
    write_file("long.idx", im2, sizeof im2);
    CHECK(nb_load_idx("long.idx", "short_lab.idx", NB_F64, &ds) != 0);
    CHECK_ERR("'long.idx' holds 4 data bytes, its header says 3");
    unsigned char im3[8 + 1000] = {0, 0, 8, 1, 0, 0, 0, 3};
    write_file("long.idx", im3, sizeof im3); /* read no further than one byte past what the header says */
    CHECK(nb_load_idx("long.idx", "short_lab.idx", NB_F64, &ds) != 0);
    CHECK_ERR("'long.idx' holds more than the 3 data bytes its header says");
    /* a label file of 2 dimensions; a count that differs; not IDX; no items */
    unsigned char l2[12 + 3] = {0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 1, 0, 1, 2};
    CHECK(nb_load_idx_mem(im2, 11, l2, sizeof l2, NB_F64, &ds) != 0);
    CHECK_ERR("'<labels>' has 2 dimensions");
    unsigned char l3[8 + 2] = {0, 0, 8, 1, 0, 0, 0, 2, 0, 1};
    CHECK(nb_load_idx_mem(im2, 11, l3, sizeof l3, NB_F64, &ds) != 0);
    CHECK_ERR("'<labels>' has 2 labels for 3 images in '<images>'");
    CHECK(nb_load_idx_mem("PK\3\4", 4, l3, sizeof l3, NB_F64, &ds) != 0);
    CHECK_ERR("not an IDX file");
    unsigned char e[8] = {0, 0, 8, 1, 0, 0, 0, 0};
    CHECK(nb_load_idx_mem(e, 8, e, 8, NB_F64, &ds) != 0);
    CHECK_ERR("'<images>' holds no images");
    CHECK(nb_load_idx_mem(im2, 11, lab, sizeof lab, NB_I64, &ds) != 0);
    CHECK_ERR("NB_F32 or NB_F64");
    CHECK(untouched(&ds));
    /* the in-memory form reads exactly its buffers (ASan sees any byte past them) */
    unsigned char *bi = malloc(11), *bl = malloc(11);
    memcpy(bi, im2, 11);
    memcpy(bl, lab, 11);
    CHECK(nb_load_idx_mem(bi, 11, bl, 11, NB_F64, &ds) == 0);
    CHECK(ds.n == 3 && ds.d == 1 && ds.classes == 4 && ds.class_names == NULL);
    CHECK_CLOSE(nb_get(ds.x, (int64_t[]){2, 0}), 3 / 255.0, 1e-15, 0);
    CHECK(nb_get(ds.y, (int64_t[]){2}) == 3);
    nb_dataset_free(&ds);
    free(bi);
    free(bl);
}

/* Images of zero pixels load (d = 0) without an error left behind: a fresh (n, 0) tensor is contiguous. */
static void test_idx_zero_width(void) {
    unsigned char im[12] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 0};
    unsigned char lb[10] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 0};
    nb_dataset ds = sentinel();
    CHECK(nb_load_idx_mem(im, sizeof im, lb, sizeof lb, NB_F32, &ds) == 0);
    CHECK(nb_last_error() == NULL);
    CHECK(ds.n == 2 && ds.d == 0 && ds.classes == 2);
    CHECK(ds.x && nb_numel(ds.x) == 0 && nb_data(ds.x) != NULL);
    CHECK(ds.y && nb_get(ds.y, (int64_t[]){0}) == 1);
    nb_dataset_free(&ds);
}

static bool have_zlib(void) {
    unsigned char d[9] = {0, 0, 8, 1, 0, 0, 0, 1, 7};
    write_gz("probe.idx.gz", d, 9);
    nb_dataset ds;
    int rc = nb_load_idx("probe.idx.gz", "probe.idx.gz", NB_F32, &ds);
    if (rc == 0) {
        CHECK(ds.n == 1 && nb_get(ds.y, (int64_t[]){0}) == 7);
        nb_dataset_free(&ds);
        return true;
    }
    CHECK_ERR("built without zlib");
    return false;
}

static void test_idx_gzip_limit(void) {
    if (!have_zlib()) {
        printf("  (built without zlib: gzip not checked)\n");
        return;
    }
    /* A header that says 4 bytes, then 4 MB: reading stops past the 4 bytes the header implies. */
    size_t big = (size_t)4 << 20;
    unsigned char *d = calloc(1, 12 + big);
    unsigned char h[12] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 2};
    memcpy(d, h, 12);
    write_gz("bomb.idx.gz", d, 12 + big);
    unsigned char lab[8 + 2] = {0, 0, 8, 1, 0, 0, 0, 2, 0, 1};
    write_gz("bomb_lab.idx.gz", lab, sizeof lab);
    nb_dataset ds = sentinel();
    hook_on(0);
    CHECK(nb_load_idx("bomb.idx.gz", "bomb_lab.idx.gz", NB_F32, &ds) != 0);
    size_t peak = hook_max;
    hook_off();
    CHECK_ERR("'bomb.idx.gz' holds more than the 4 data bytes its header says");
    CHECK(untouched(&ds));
    CHECK(peak < ((size_t)1 << 20)); /* not the 4 MB the stream holds */
    /* A header that says 2^32 bytes and a stream of 10: no block near that size. */
    unsigned char h2[12 + 10] = {0, 0, 8, 2, 0, 1, 0, 0, 0, 1, 0, 0};
    write_gz("claim.idx.gz", h2, sizeof h2);
    hook_on(0);
    CHECK(nb_load_idx("claim.idx.gz", "bomb_lab.idx.gz", NB_F32, &ds) != 0);
    peak = hook_max;
    hook_off();
    CHECK_ERR("holds 10 data bytes, its header says 4294967296");
    CHECK(peak < ((size_t)1 << 20));
    /* the same file as it should be loads */
    write_gz("ok.idx.gz", d, 12 + 4);
    CHECK(nb_load_idx("ok.idx.gz", "bomb_lab.idx.gz", NB_F32, &ds) == 0);
    CHECK(ds.n == 2 && ds.d == 2);
    nb_dataset_free(&ds);
    /* a gzip stream that is corrupt */
    d[0] = 0x1f, d[1] = 0x8b, d[2] = 8, d[3] = 0;
    memset(d + 4, 0, 6);
    memset(d + 10, 0xFF, 194); /* a deflate block of the reserved type */
    write_file("bad.idx.gz", d, 204);
    CHECK(nb_load_idx("bad.idx.gz", "bomb_lab.idx.gz", NB_F32, &ds) != 0);
    CHECK_ERR("'bad.idx.gz' is not a valid gzip file");
    /* a stream cut short; two members one after the other (as `cat a.gz b.gz`) */
    memcpy(d, h, 12);
    memset(d + 12, 5, 4);
    write_gz("ok.idx.gz", d, 16);
    FILE *f = fopen("ok.idx.gz", "rb");
    unsigned char gzb[64];
    size_t ngz = f ? fread(gzb, 1, sizeof gzb, f) : 0;
    if (f) fclose(f);
    write_file("cut.idx.gz", gzb, ngz - 6);
    CHECK(nb_load_idx("cut.idx.gz", "bomb_lab.idx.gz", NB_F32, &ds) != 0);
    CHECK_ERR("'cut.idx.gz' is truncated");
    write_gz("m1.gz", d, 10);
    write_gz("m2.gz", d + 10, 6);
    unsigned char both[128];
    size_t nb = 0;
    for (int k = 0; k < 2; k++) {
        f = fopen(k ? "m2.gz" : "m1.gz", "rb");
        if (f) nb += fread(both + nb, 1, sizeof both - nb, f), fclose(f);
    }
    write_file("two.idx.gz", both, nb);
    CHECK(nb_load_idx("two.idx.gz", "bomb_lab.idx.gz", NB_F64, &ds) == 0);
    CHECK(ds.n == 2 && ds.d == 2 && nb_get(ds.x, (int64_t[]){1, 1}) == 5 / 255.0);
    nb_dataset_free(&ds);
    free(d);
    /* a CSV file gzipped */
    const char *t = "a,b,y\n1,2,cat\n3,4,dog\n";
    write_gz("t.csv.gz", (const unsigned char *)t, strlen(t));
    CHECK(nb_load_csv("t.csv.gz", -1, NB_F32, &ds) == 0);
    CHECK(ds.n == 2 && ds.classes == 2 && ds.class_names && strcmp(ds.class_names[1], "dog") == 0);
    nb_dataset_free(&ds);
}

/* ---- CSV ---- */

static void test_csv_quoting(void) {
    /* RFC 4180: quoted delimiters, "" escapes, a newline inside quotes, CRLF; blanks around unquoted fields */
    const char *t = "\"x, first\",\"y \"\"2\"\"\",label\r\n"
                    "1.5,\"2\",\"big, red\"\r\n"
                    " 3 ,4,\"two\nlines\"\r\n"
                    "5,6e-1,\"say \"\"hi\"\"\"\r\n"
                    "7,8,\"big, red\"\r\n";
    nb_dataset ds = sentinel();
    CHECK(csv(t, NULL, &ds) == 0);
    CHECK(ds.n == 4 && ds.d == 2 && ds.classes == 3);
    /* classes in sorted (strcmp) order */
    CHECK(ds.class_names && strcmp(ds.class_names[0], "big, red") == 0 && strcmp(ds.class_names[1], "say \"hi\"") == 0 &&
          strcmp(ds.class_names[2], "two\nlines") == 0);
    CHECK(nb_get(ds.x, (int64_t[]){0, 0}) == 1.5 && nb_get(ds.x, (int64_t[]){1, 0}) == 3);
    CHECK(nb_get(ds.x, (int64_t[]){2, 1}) == 0.6);
    int64_t want[4] = {0, 2, 1, 0};
    for (int64_t i = 0; i < 4; i++) CHECK(nb_get(ds.y, &i) == want[i]);
    nb_dataset_free(&ds);
    /* a record that spans lines is counted by the line it starts on, later lines by their own */
    CSV_FAILS("a,b,c\n1,2,\"x\ny\"\n1,2\n", NULL, "t.csv:4: 2 fields, expected 3");
    CSV_FAILS("1,2,0\n1,2,\"open\n3,4,5\n", NULL, "t.csv:2:3: a quoted field opened here is not closed");
    CSV_FAILS("1,2,\"a\"b\n", NULL, "t.csv:1:3: text after the closing quote");
    /* a byte order mark, semicolons and tabs detected, or given */
    CHECK(csv("\xEF\xBB\xBF" "a;b;c\n1,5;2;0\n", NULL, &ds) != 0); /* ';' detected: "1,5" is not a number */
    CHECK_ERR("t.csv:2:1: '1,5' is not a number");
    CHECK(csv("a,b,y\n1,2,0\n0x10,2,1\n", NULL, &ds) != 0); /* hexadecimal is not a CSV number */
    CHECK_ERR("t.csv:3:1: '0x10' is not a number");
    CHECK(csv("a,b,y\n1,2,0\n-0X1p3,2,1\n", NULL, &ds) != 0);
    CHECK_ERR("t.csv:3:1: '-0X1p3' is not a number");
    CHECK(csv("\xEF\xBB\xBF" "a;b;c\n1;2;0\n3;4;1\n", NULL, &ds) == 0);
    CHECK(ds.n == 2 && ds.d == 2 && ds.classes == 2);
    nb_dataset_free(&ds);
    CHECK(csv("a\tb\tc\n1\t2\t0\n", NULL, &ds) == 0 && ds.n == 1 && ds.d == 2);
    nb_dataset_free(&ds);
    nb_csv_options o = nb_csv_defaults();
    o.delimiter = '|';
    CHECK(csv("1|2|1\n3|4|0\n", &o, &ds) == 0 && ds.n == 2 && ds.d == 2);
    nb_dataset_free(&ds);
    o.delimiter = '"';
    CSV_FAILS("1,2\n", &o, "delimiter");
}

static void test_csv_header(void) {
    nb_dataset ds;
    /* detected: a text feature field */
    CHECK(csv("a,b,label\n1,2,0\n", NULL, &ds) == 0 && ds.n == 1);
    nb_dataset_free(&ds);
    /* detected: a text label followed by a numeric one */
    CHECK(csv("0,1,label\n5,3,0\n6,3,1\n", NULL, &ds) == 0 && ds.n == 2 && ds.class_names == NULL);
    nb_dataset_free(&ds);
    /* not a header: numbers, string labels all along */
    CHECK(csv("5.1,3.5,setosa\n4.9,3.0,setosa\n6.3,3.3,virginica\n", NULL, &ds) == 0 && ds.n == 3 && ds.classes == 2);
    nb_dataset_free(&ds);
    /* only the first line can be a header: a second text line is an error */
    CSV_FAILS("a,b,label\nc,d,0\n1,2,1\n", NULL, "t.csv:2:1: 'c' is not a number");
    /* a first data line with an empty field is not taken for a header */
    CSV_FAILS("1,,5,0\n2,3,4,1\n", NULL, "t.csv:1:2: empty field");
    nb_csv_options o = nb_csv_defaults();
    o.header = NB_CSV_HEADER_NONE;
    CSV_FAILS("a,b,label\n1,2,0\n", &o, "t.csv:1:1: 'a' is not a number");
    o.header = NB_CSV_HEADER_PRESENT;
    CHECK(csv("7,8,9\n1,2,0\n", &o, &ds) == 0 && ds.n == 1 && nb_get(ds.x, (int64_t[]){0, 0}) == 1);
    nb_dataset_free(&ds);
    CSV_FAILS("a,b,label\n", NULL, "'t.csv' has no data records");
    o.header = (nb_csv_header)7;
    CSV_FAILS("1,2\n", &o, "unknown header option 7");
}

static void test_csv_fields(void) {
    /* the example: an empty field under a 4-column header is reported where it is */
    CSV_FAILS("a,b,c,label\n1,,5,0\n2,3,4,1\n", NULL, "t.csv:2:2: empty field");
    CSV_FAILS("a,b,label\n1,2,0\n3,4\n", NULL, "t.csv:3: 2 fields, expected 3 as on the first line");
    CSV_FAILS("a,b,label\n1,2,0\n3,4,5,6\n", NULL, "t.csv:3: 4 fields, expected 3");
    CSV_FAILS("a,b,label\n1,2,0\n3,x4,1\n", NULL, "t.csv:3:2: 'x4' is not a number");
    CSV_FAILS("a,b,label\n1,NA,0\n", NULL, "t.csv:2:2: missing value 'NA'");
    CSV_FAILS("a,b,label\n1,inf,0\n", NULL, "t.csv:2:2: 'inf' is not a finite number");
    CSV_FAILS("a,b,label\n1,1e999,0\n", NULL, "t.csv:2:2: '1e999' is not a finite number");
    CSV_FAILS("a,b,label\n1,2,\n", NULL, "t.csv:2:3: empty field");
    /* a file name in the message when read from a file */
    write_file("fields.csv", "a,b,label\n1,2,0\n4,,1\n", 21);
    nb_dataset ds = sentinel();
    CHECK(nb_load_csv("fields.csv", -1, NB_F32, &ds) != 0);
    CHECK_ERR("nb_load_csv: fields.csv:3:2: empty field");
    CHECK(untouched(&ds));
    /* skipping records with a missing field, by option */
    nb_csv_options o = nb_csv_defaults();
    o.missing = NB_CSV_MISSING_SKIP_ROW;
    CHECK(csv("a,b,label\n1,,0\n2,3,1\n?,4,1\n5,6,\n7,8,0\n", &o, &ds) == 0);
    CHECK(ds.n == 2 && nb_get(ds.x, (int64_t[]){0, 0}) == 2 && nb_get(ds.x, (int64_t[]){1, 1}) == 8);
    nb_dataset_free(&ds);
    CSV_FAILS("a,b,label\n1,,0\n", &o, "no data records (1 left out for missing fields)");
    /* the label column */
    o = nb_csv_defaults();
    o.label_col = 0;
    CHECK(csv("y,a,b\n2,10,20\n0,30,40\n", &o, &ds) == 0);
    CHECK(ds.d == 2 && ds.classes == 3 && nb_get(ds.x, (int64_t[]){1, 1}) == 40 && nb_get(ds.y, (int64_t[]){0}) == 2);
    nb_dataset_free(&ds);
    o.label_col = 3;
    CSV_FAILS("1,2,0\n", &o, "t.csv:1: label column 3 is out of range for the 3 fields of the line");
    o.label_col = -4;
    CSV_FAILS("1,2,0\n", &o, "label column -4 is out of range");
    CSV_FAILS("0\n1\n", NULL, "a record needs a label and at least one feature");
}

static void test_csv_labels(void) {
    /* integer labels are range-checked: no cast of NaN, 1e30 or a gigantic class count */
    CSV_FAILS("a,b,label\n1,2,0\n3,4,1000000000\n", NULL,
              "t.csv:3:3: label '1000000000' is not a class index (an integer from 0 to 65535)");
    CSV_FAILS("a,b,label\n1,2,0\n3,4,1e30\n", NULL, "t.csv:3:3: label '1e30' is not a class index");
    CSV_FAILS("a,b,label\n1,2,0\n3,4,nan\n", NULL, "t.csv:3:3: missing value 'nan'");
    CSV_FAILS("a,b,label\n1,2,0\n3,4,inf\n", NULL, "t.csv:3:3: label 'inf' is not a class index");
    CSV_FAILS("a,b,label\n1,2,0\n3,4,-1\n", NULL, "t.csv:3:3: label '-1' is not a class index");
    CSV_FAILS("a,b,label\n1,2,0\n3,4,2.5\n", NULL, "t.csv:3:3: label '2.5' is not a class index");
    nb_dataset ds;
    CHECK(csv("a,b,label\n1,2,65535\n3,4,2.0\n", NULL, &ds) == 0 && ds.classes == 65536);
    CHECK(nb_get(ds.y, (int64_t[]){1}) == 2);
    nb_dataset_free(&ds);
    nb_csv_options o = nb_csv_defaults();
    o.labels = NB_CSV_LABELS_INT;
    CSV_FAILS("a,b,label\n1,2,0\n3,4,cat\n", &o, "t.csv:3:3: label 'cat' is not a class index");
    /* string labels: sorted, numbers included when asked */
    o.labels = NB_CSV_LABELS_STRING;
    CHECK(csv("a,b,label\n1,2,10\n3,4,9\n5,6,10\n", &o, &ds) == 0);
    CHECK(ds.classes == 2 && strcmp(ds.class_names[0], "10") == 0 && strcmp(ds.class_names[1], "9") == 0);
    CHECK(nb_get(ds.y, (int64_t[]){0}) == 0 && nb_get(ds.y, (int64_t[]){1}) == 1 && nb_get(ds.y, (int64_t[]){2}) == 0);
    nb_dataset_free(&ds);
    /* automatic: one text label makes them all names */
    CHECK(csv("a,b,label\n1,2,1\n3,4,cat\n", NULL, &ds) == 0);
    CHECK(ds.classes == 2 && strcmp(ds.class_names[0], "1") == 0 && strcmp(ds.class_names[1], "cat") == 0);
    nb_dataset_free(&ds);
    /* a given mapping (as saved with a model): its order, and nothing else */
    const char *names[3] = {"virginica", "setosa", "versicolor"};
    o = nb_csv_defaults();
    o.class_names = names;
    o.n_class_names = 3;
    CHECK(csv("a,b,y\n1,2,setosa\n3,4,virginica\n", &o, &ds) == 0);
    CHECK(ds.classes == 3 && strcmp(ds.class_names[2], "versicolor") == 0 && ds.class_names[0] != names[0]);
    CHECK(nb_get(ds.y, (int64_t[]){0}) == 1 && nb_get(ds.y, (int64_t[]){1}) == 0);
    nb_dataset_free(&ds);
    CSV_FAILS("a,b,y\n1,2,setosa\n3,4,iris\n", &o, "t.csv:3:3: label 'iris' is not one of the 3 class names given");
    names[2] = "setosa";
    CSV_FAILS("a,b,y\n1,2,setosa\n", &o, "class name 'setosa' is given twice");
    o.labels = NB_CSV_LABELS_INT;
    CSV_FAILS("a,b,y\n1,2,setosa\n", &o, "class_names are for string labels");
    /* at most NB_MAX_CLASSES names */
    size_t cap = 20 * (NB_MAX_CLASSES + 2);
    char *big = malloc(cap), *p = big;
    p += sprintf(p, "a,label\n");
    for (int i = 0; i <= NB_MAX_CLASSES; i++) p += sprintf(p, "1,c%d\n", i);
    CSV_FAILS(big, NULL, "more than 65536 distinct labels");
    free(big);
}

/* Every spelling of a number loads as strtod reads it, bit for bit (the reader has a fast path for the
   usual decimals). */
static void test_csv_numbers_exact(void) {
    int rows = 6000;
    char *text = malloc((size_t)rows * 64), *p = text;
    char (*num)[48] = malloc(sizeof *num * (size_t)rows);
    th_seed(11);
    for (int i = 0; i < rows; i++) {
        double v = th_uniform(-1, 1) * pow(10, (int)(th_next() % 60) - 30);
        switch (i % 8) {
        case 0: sprintf(num[i], "%.17g", v); break;
        case 1: sprintf(num[i], "%.6g", v); break;
        case 2: sprintf(num[i], "%.3e", v); break;
        case 3: sprintf(num[i], "%.15f", v); break;
        case 4: { /* up to 22 digits with a point somewhere and an exponent */
            int nd = 1 + (int)(th_next() % 22), dot = (int)(th_next() % (unsigned)(nd + 1)), k = 0;
            if (th_next() % 2) num[i][k++] = '-';
            for (int d = 0; d < nd; d++) {
                if (d == dot) num[i][k++] = '.';
                num[i][k++] = (char)('0' + th_next() % 10);
            }
            sprintf(num[i] + k, "e%d", (int)(th_next() % 50) - 25);
            break;
        }
        case 5: sprintf(num[i], "%llu", (unsigned long long)(th_next() >> (th_next() % 64))); break;
        case 6: sprintf(num[i], "%s", (const char *[]){"0", "-0", "+.5", "1.", "0.125e-0", "9007199254740993",
                                                    "1e22", "1e23", "4.9e-324", "00012.50"}[i / 8 % 10]); break;
        default: sprintf(num[i], "%.*f", (int)(th_next() % 8), v * 1e6); break;
        }
        p += sprintf(p, "%s,%d\n", num[i], i % 2);
    }
    nb_dataset ds;
    CHECK(nb_load_csv_mem(text, (size_t)(p - text), NULL, NULL, NB_F64, &ds) == 0);
    int bad = 0;
    for (int64_t i = 0; i < rows && ds.x; i++) {
        double got = nb_get(ds.x, (int64_t[]){i, 0}), want = strtod(num[i], NULL);
        if (memcmp(&got, &want, sizeof got) != 0 && bad++ < 5)
            fprintf(stderr, "  '%s' loaded as %.17g, strtod gives %.17g\n", num[i], got, want);
    }
    CHECK(bad == 0);
    nb_dataset_free(&ds);
    free(num);
    free(text);
}

static void test_csv_odd_files(void) {
    CSV_FAILS("", NULL, "nb_load_csv_mem: 't.csv' is empty");
    CSV_FAILS("\n\r\n\n", NULL, "'t.csv' is empty");
    /* a binary file, and a NUL byte that used to cut the file short */
    nb_dataset ds = sentinel();
    const char elf[] = "\x7f" "ELF\2\1\1\0\0\0\0\0";
    CHECK(nb_load_csv_mem(elf, sizeof elf - 1, "a.out", NULL, NB_F32, &ds) != 0);
    CHECK_ERR("a.out:1:8: a NUL byte: this is not a text (CSV) file");
    const char nul[] = "a,b,y\n1,2,0\n3,4,1\n5,\0,1\n7,8,0\n";
    CHECK(nb_load_csv_mem(nul, sizeof nul - 1, "n.csv", NULL, NB_F32, &ds) != 0);
    CHECK_ERR("n.csv:4:3: a NUL byte");
    write_file("nul.csv", nul, sizeof nul - 1);
    CHECK(nb_load_csv("nul.csv", -1, NB_F32, &ds) != 0);
    CHECK_ERR("nul.csv:4:3: a NUL byte");
    write_file("empty.csv", "", 0);
    CHECK(nb_load_csv("empty.csv", -1, NB_F32, &ds) != 0);
    CHECK_ERR("'empty.csv' is empty");
    CHECK(untouched(&ds));
    /* one record loads; no newline at the end; the buffer is read to its length only */
    char *one = malloc(5);
    memcpy(one, "1,2,3", 5);
    CHECK(nb_load_csv_mem(one, 5, NULL, NULL, NB_F32, &ds) == 0);
    CHECK(ds.n == 1 && ds.d == 2 && ds.classes == 4 && nb_get(ds.x, (int64_t[]){0, 1}) == 2);
    nb_dataset_free(&ds);
    CHECK(nb_load_csv_mem(one, 4, NULL, NULL, NB_F32, &ds) != 0); /* "1,2," */
    CHECK_ERR("<memory>:1:3: empty field");
    free(one);
    CHECK(nb_load_csv_mem(NULL, 0, NULL, NULL, NB_F32, &ds) != 0);
    CHECK_ERR("is empty");
    CHECK(nb_load_csv_mem("1,2,0", 5, NULL, NULL, NB_I64, &ds) != 0);
    CHECK_ERR("NB_F32 or NB_F64");
    ds = sentinel();
    CHECK(nb_load_csv("no_such.csv", -1, NB_F32, &ds) != 0);
    CHECK_ERR("cannot open 'no_such.csv': No such file or directory");
    CHECK(nb_load_csv("/tmp", -1, NB_F32, &ds) != 0); /* a directory opens, and has a size */
    CHECK_ERR("cannot read '/tmp'");
    CHECK(nb_load_idx("/tmp", "/tmp", NB_F32, &ds) != 0);
    CHECK_ERR("cannot read '/tmp'");
    CHECK(untouched(&ds));
}

/* ---- split and statistics ---- */

static void test_split(void) {
    /* sorted by label, as a file often is: the split must mix the classes */
    nb_dataset ds;
    char text[4096], *p = text;
    p += sprintf(p, "id,label\n");
    for (int i = 0; i < 100; i++) p += sprintf(p, "%d,%s\n", i, i < 50 ? "a" : "b");
    CHECK(csv(text, NULL, &ds) == 0 && ds.n == 100 && ds.classes == 2);
    nb_dataset tr = sentinel(), te = sentinel(), tr2, te2;
    CHECK(nb_dataset_split(&ds, 0.2, 42, &tr, &te) == 0);
    CHECK(tr.n == 80 && te.n == 20 && tr.d == 1 && te.classes == 2);
    CHECK(tr.class_names && te.class_names && tr.class_names != ds.class_names &&
          strcmp(te.class_names[1], "b") == 0);
    int seen[100] = {0}, in_b = 0;
    for (int64_t i = 0; i < 100; i++) {
        nb_dataset *part = i < 80 ? &tr : &te;
        int64_t k = i < 80 ? i : i - 80;
        int id = (int)nb_get(part->x, (int64_t[]){k, 0});
        seen[id]++;
        CHECK(nb_get(part->y, &k) == (id < 50 ? 0 : 1)); /* rows stay with their labels */
        if (i >= 80) in_b += id >= 50;
    }
    for (int i = 0; i < 100; i++) CHECK(seen[i] == 1);
    CHECK(in_b > 2 && in_b < 18); /* both classes in the test part */
    /* the same seed, the same split; another seed, another */
    CHECK(nb_dataset_split(&ds, 0.2, 42, &tr2, &te2) == 0);
    bool same = true;
    for (int64_t i = 0; i < 20; i++)
        same = same && nb_get(te.x, (int64_t[]){i, 0}) == nb_get(te2.x, (int64_t[]){i, 0});
    CHECK(same);
    nb_dataset_free(&tr2);
    nb_dataset_free(&te2);
    CHECK(nb_dataset_split(&ds, 0.2, 43, &tr2, &te2) == 0);
    same = true;
    for (int64_t i = 0; i < 20; i++)
        same = same && nb_get(te.x, (int64_t[]){i, 0}) == nb_get(te2.x, (int64_t[]){i, 0});
    CHECK(!same);
    nb_dataset_free(&tr2);
    nb_dataset_free(&te2);
    /* the parts own their rows: freeing the whole leaves them readable */
    nb_dataset_free(&ds);
    CHECK(nb_get(tr.x, (int64_t[]){79, 0}) >= 0);
    /* bad arguments leave the outputs alone */
    nb_dataset a = sentinel(), b = sentinel();
    CHECK(nb_dataset_split(&tr, 1.5, 1, &a, &b) != 0);
    CHECK_ERR("test_frac is 1.5");
    CHECK(nb_dataset_split(&tr, NAN, 1, &a, &b) != 0);
    CHECK_ERR("test_frac is nan");
    CHECK(nb_dataset_split(&tr, 0.5, 1, &a, &a) != 0);
    CHECK_ERR("two data sets other than ds");
    CHECK(nb_dataset_split(&tr, 0.5, 1, &tr, &b) != 0);
    CHECK_ERR("two data sets other than ds");
    CHECK(untouched(&a) && untouched(&b));
    nb_dataset_free(&tr);
    nb_dataset_free(&te);
    /* one sample: either part may be empty */
    CHECK(csv("1,2,0\n", NULL, &ds) == 0);
    CHECK(nb_dataset_split(&ds, 0.2, 1, &tr, &te) == 0 && tr.n == 1 && te.n == 0 && nb_shape(te.x)[1] == 2);
    nb_dataset_free(&tr);
    nb_dataset_free(&te);
    CHECK(nb_dataset_split(&ds, 0.5, 1, &tr, &te) == 0 && tr.n == 0 && te.n == 1); /* halves round up */
    nb_dataset_free(&tr);
    nb_dataset_free(&te);
    nb_dataset_free(&ds);
}

static void test_stats_and_standardize(void) {
    nb_dataset ds, tr, te;
    CHECK(csv("a,b,c,y\n1,10,5,0\n2,20,5,1\n3,30,5,0\n4,40,5,1\n", NULL, &ds) == 0);
    nb_scope_begin();
    nb_tensor *m = NULL, *s = NULL;
    CHECK(nb_dataset_feature_stats(&ds, &m, &s) == 0);
    CHECK(nb_shape(m)[0] == 3 && nb_dtype_of(s) == NB_F64);
    CHECK_CLOSE(nb_get(m, (int64_t[]){0}), 2.5, 1e-15, 0);
    CHECK_CLOSE(nb_get(m, (int64_t[]){1}), 25, 1e-13, 0);
    CHECK_CLOSE(nb_get(s, (int64_t[]){0}), sqrt(1.25), 1e-15, 0); /* population: divide by 4 */
    CHECK_CLOSE(nb_get(s, (int64_t[]){1}), sqrt(125), 1e-13, 0);
    CHECK(nb_get(m, (int64_t[]){2}) == 5 && nb_get(s, (int64_t[]){2}) == 1); /* constant column */
    CHECK(nb_dataset_standardize(&ds, m, s) == 0);
    CHECK_CLOSE(nb_get(ds.x, (int64_t[]){0, 0}), -1.5 / sqrt(1.25), 1e-15, 0);
    CHECK_CLOSE(nb_get(ds.x, (int64_t[]){3, 1}), 15 / sqrt(125), 1e-15, 0);
    CHECK(nb_get(ds.x, (int64_t[]){2, 2}) == 0);
    nb_tensor *m2, *s2;
    CHECK(nb_dataset_feature_stats(&ds, &m2, &s2) == 0);
    for (int64_t j = 0; j < 2; j++) {
        CHECK_CLOSE(nb_get(m2, &j), 0, 1e-15, 0);
        CHECK_CLOSE(nb_get(s2, &j), 1, 1e-15, 0);
    }
    nb_dataset big;
    CHECK(csv("a,y\n1e308,0\n-1e308,1\n1e308,0\n", NULL, &big) == 0);
    nb_tensor *mb = NULL, *sb = NULL;
    CHECK(nb_dataset_feature_stats(&big, &mb, &sb) != 0 && !mb && !sb); /* the squares overflow */
    CHECK_ERR("nb_dataset_feature_stats: feature 0 (values from -1e+308 to 1e+308) is too large");
    nb_dataset_free(&big);
    /* a std of 0, a wrong length: errors, ds unchanged */
    nb_tensor *old = ds.x;
    nb_tensor *zero = nb_full(NB_F64, 1, (int64_t[]){3}, 0.0), *two = nb_full(NB_F32, 1, (int64_t[]){2}, 1.0);
    CHECK(nb_dataset_standardize(&ds, m, zero) != 0);
    CHECK_ERR("feature 0: mean 2.5 and std 0");
    CHECK(nb_dataset_standardize(&ds, two, s) != 0);
    CHECK_ERR("mean must be a 1-D float tensor of 3 values");
    CHECK(ds.x == old);
    nb_tensor *o1 = (nb_tensor *)(uintptr_t)1, *o2 = o1;
    nb_dataset none = {0};
    CHECK(nb_dataset_feature_stats(&none, &o1, &o2) != 0 && o1 == (nb_tensor *)(uintptr_t)1);
    CHECK_ERR("no x");
    nb_scope_end();
    nb_dataset_free(&ds);
    /* a constant column whose mean does not come out exactly: still a std of 1, and 0 once standardised */
    nb_scope_begin();
    CHECK(csv("0.1,0\n0.1,1\n0.1,0\n0.1,1\n0.1,0\n0.1,1\n0.1,0\n0.1,1\n0.1,0\n0.1,1\n", NULL, &ds) == 0);
    CHECK(nb_dataset_feature_stats(&ds, &m, &s) == 0);
    CHECK(nb_get(m, (int64_t[]){0}) == 0.1 && nb_get(s, (int64_t[]){0}) == 1);
    CHECK(nb_dataset_standardize(&ds, m, s) == 0 && nb_get(ds.x, (int64_t[]){9, 0}) == 0);
    nb_dataset_free(&ds);
    nb_scope_end();
    /* f32 features, standardised through a split's statistics; a view as x */
    CHECK(nb_load_csv_mem("1,0\n3,1\n5,0\n7,1\n", 16, NULL, NULL, NB_F32, &ds) == 0);
    CHECK(nb_dataset_split(&ds, 0.5, 9, &tr, &te) == 0);
    nb_scope_begin();
    CHECK(nb_dataset_feature_stats(&tr, &m, &s) == 0 && nb_dtype_of(m) == NB_F32);
    double mu = nb_get(m, (int64_t[]){0}), sd = nb_get(s, (int64_t[]){0}), v = nb_get(te.x, (int64_t[]){0, 0});
    CHECK(nb_dataset_standardize(&te, m, s) == 0);
    CHECK_CLOSE(nb_get(te.x, (int64_t[]){0, 0}), (v - mu) / sd, 1e-6, 0);
    nb_scope_end();
    nb_dataset_free(&tr);
    nb_dataset_free(&te);
    nb_dataset view = ds;
    view.x = nb_keep(nb_slice(ds.x, 0, 1, 3)); /* rows 1..2, a view */
    for (int d = nb_scope_depth(); d > 0; d--) nb_keep(view.x);
    view.y = nb_slice(ds.y, 0, 1, 3);
    view.n = 2;
    nb_scope_begin();
    CHECK(nb_dataset_feature_stats(&view, &m, &s) == 0);
    CHECK(nb_get(m, (int64_t[]){0}) == 4 && nb_get(s, (int64_t[]){0}) == 1);
    nb_tensor *keep = view.x;
    nb_tensor *alias = nb_slice(keep, 0, 0, 2);
    CHECK(nb_dataset_standardize(&view, m, s) == 0);
    CHECK(nb_get(view.x, (int64_t[]){0, 0}) == -1 && nb_get(ds.x, (int64_t[]){1, 0}) == 3); /* the data set is not changed */
    CHECK(nb_get(alias, (int64_t[]){0, 0}) == 3);
    nb_scope_end();
    nb_free(view.x);
    nb_free(view.y);
    nb_dataset_free(&ds);
}

/* ---- allocation failures ---- */

/* Run op with the Nth allocation failing, for N = 1, 2, ... until it succeeds: every failure
   must return an error with a message, leave the outputs alone and leak nothing. */
typedef int (*op_fn)(void *ctx, nb_dataset *out);

static void oom_sweep(const char *what, op_fn op, void *ctx) {
    int64_t base = nb_memory_in_use();
    long failures = 0;
    for (long k = 1; k < 100000; k++) {
        nb_dataset out = sentinel();
        nb_clear_error();
        hook_on(k);
        int rc = op(ctx, &out);
        bool hit = hook_count >= k;
        if (rc != 0 && !hit) { /* failed with every allocation granted */
            hook_off();
            th_cur_failed++;
            fprintf(stderr, "%s: fails without an injected failure: %s\n", what,
                    nb_last_error() ? nb_last_error() : "(none)");
            break;
        }
        if (rc == 0) {
            nb_dataset_free(&out);
            hook_off();
            CHECK(!hit); /* a success while an allocation failed would hide the failure */
            break;
        }
        failures++;
        long live = hook_live;
        hook_off();
        if (!nb_last_error() || !untouched(&out) || live != 0 || nb_memory_in_use() != base) {
            th_cur_failed++;
            fprintf(stderr, "%s: allocation %ld failing: rc %d, message \"%s\", outputs %s, %ld blocks live\n", what,
                    k, rc, nb_last_error() ? nb_last_error() : "(none)", untouched(&out) ? "untouched" : "changed",
                    live);
        }
    }
    CHECK(failures >= 2);
    printf("  (%s: %ld injected failures, each clean)\n", what, failures);
    nb_clear_error();
}

static int op_idx(void *ctx, nb_dataset *out) {
    (void)ctx;
    return nb_load_idx("img.idx", "lab.idx", NB_F32, out);
}
static int op_idx_mem(void *ctx, nb_dataset *out) {
    (void)ctx;
    unsigned char im[8 + 4] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 2}, lb[8 + 2] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 0};
    unsigned char both[12 + 4];
    memcpy(both, im, 12);
    memset(both + 12, 9, 4);
    return nb_load_idx_mem(both, sizeof both, lb, sizeof lb, NB_F64, out);
}
static int op_idx_gz(void *ctx, nb_dataset *out) {
    (void)ctx;
    return nb_load_idx("img.idx.gz", "lab.idx.gz", NB_F32, out);
}
static int op_csv(void *ctx, nb_dataset *out) {
    return nb_load_csv_opts("oom.csv", ctx, NB_F32, out);
}
static int op_split(void *ctx, nb_dataset *out) {
    nb_dataset te = sentinel();
    int rc = nb_dataset_split(ctx, 0.25, 5, out, &te);
    if (rc == 0) nb_dataset_free(&te);
    else if (!untouched(&te)) th_cur_failed++, fprintf(stderr, "split: test part changed on failure\n");
    return rc;
}
static int op_stats(void *ctx, nb_dataset *out) {
    (void)out;
    nb_tensor *m = (nb_tensor *)(uintptr_t)1, *s = m;
    nb_scope_begin();
    int rc = nb_dataset_feature_stats(ctx, &m, &s);
    if (rc != 0 && (m != (nb_tensor *)(uintptr_t)1 || s != m)) th_cur_failed++, fprintf(stderr, "stats: outputs set\n");
    if (rc == 0) {
        nb_dataset *ds = ctx;
        nb_tensor *old = ds->x;
        rc = nb_dataset_standardize(ds, m, s);
        if (rc != 0 && ds->x != old) th_cur_failed++, fprintf(stderr, "standardize: x changed on failure\n");
    }
    nb_scope_end();
    if (rc == 0) *out = (nb_dataset){0};
    return rc;
}

static int op_batches(void *ctx, nb_dataset *out) {
    (void)out;
    nb_rng r;
    nb_rng_seed(&r, 1);
    nb_batcher *b = nb_batcher_new(ctx, 3, true, &r);
    if (!b) return -1;
    nb_scope_begin();
    nb_tensor *x, *y;
    int rc = nb_batcher_next(b, &x, &y) ? 0 : -1;
    nb_scope_end();
    nb_batcher_free(b);
    if (rc == 0) *out = (nb_dataset){0};
    return rc;
}

static void test_out_of_memory(void) {
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2}, px[12] = {0}, lh[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 2, 0, 1};
    unsigned char img[16 + 12];
    memcpy(img, ih, 16);
    memcpy(img + 16, px, 12);
    write_file("img.idx", img, sizeof img);
    write_file("lab.idx", lh, sizeof lh);
    nb_release_cached_memory();
    oom_sweep("nb_load_idx", op_idx, NULL);
    oom_sweep("nb_load_idx_mem", op_idx_mem, NULL);
    if (have_zlib()) {
        write_gz("img.idx.gz", img, sizeof img);
        write_gz("lab.idx.gz", lh, sizeof lh);
        oom_sweep("nb_load_idx (gzip)", op_idx_gz, NULL);
    }
    char text[2048], *p = text;
    p += sprintf(p, "\"first, feature\",b,label\r\n");
    for (int i = 0; i < 40; i++) p += sprintf(p, "%d,%d.5,\"class %d\"\n", i, i, i % 7);
    write_file("oom.csv", text, strlen(text));
    nb_csv_options o = nb_csv_defaults();
    oom_sweep("nb_load_csv (string labels)", op_csv, &o);
    const char *names[7] = {"class 6", "class 5", "class 4", "class 3", "class 2", "class 1", "class 0"};
    o.class_names = names;
    o.n_class_names = 7;
    oom_sweep("nb_load_csv (given classes)", op_csv, &o);
    p = text;
    for (int i = 0; i < 40; i++) p += sprintf(p, "%d,%d\n", i, i % 3);
    write_file("oom.csv", text, strlen(text));
    oom_sweep("nb_load_csv (integer labels)", op_csv, NULL);
    write_file("oom.csv", "0,1,label\n5,,0\n6,3,1\n", 21); /* a header found by its label; a record skipped */
    o = nb_csv_defaults();
    o.missing = NB_CSV_MISSING_SKIP_ROW;
    oom_sweep("nb_load_csv (label header, skipped record)", op_csv, &o);
    nb_dataset ds;
    CHECK(nb_load_csv_mem("x,y\n1,a\n2,b\n3,a\n4,c\n", 20, NULL, NULL, NB_F64, &ds) == 0);
    oom_sweep("nb_dataset_split", op_split, &ds);
    oom_sweep("nb_dataset_feature_stats", op_stats, &ds);
    oom_sweep("nb_batcher", op_batches, &ds);
    nb_dataset_free(&ds);
}
int main(void) {
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/nabla_test_data.%ld", (long)getpid());
    if (mkdir(dir, 0700) != 0 || chdir(dir) != 0) {
        fprintf(stderr, "cannot make and enter %s\n", dir);
        return 1;
    }
    RUN(test_idx);
    RUN(test_csv_and_batches);
    RUN(test_idx_header_overflow);
    RUN(test_idx_sizes);
    RUN(test_idx_zero_width);
    RUN(test_idx_gzip_limit);
    RUN(test_csv_quoting);
    RUN(test_csv_header);
    RUN(test_csv_fields);
    RUN(test_csv_labels);
    RUN(test_csv_numbers_exact);
    RUN(test_csv_odd_files);
    RUN(test_split);
    RUN(test_stats_and_standardize);
    RUN(test_out_of_memory);
    for (int i = 0; i < nmade; i++) remove(made[i]);
    if (chdir("/") != 0 || rmdir(dir) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    return th_finish();
}
