/*
 * test_checkpoint.c - checkpoints and optimizer state under hostile
 * conditions: crafted safetensors headers (no terminating NUL, a number at the
 * very end of the file, binary bytes), very long tensor names, concurrent
 * writers of one path, failures of the file system (errno reported as it
 * was), optimizer states with impossible step counts, and an allocation
 * failure injected at every allocation of an optimizer step, a save and a
 * load: each failure is an error with a message that leaks nothing and leaves
 * parameters, gradients, optimizer state and files exactly as they were.
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "nabla/io.h"

static char dir[64]; /* a fresh folder for this run's files */

static char *in_dir(const char *name) {
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, 512, "%s/%s", dir, name);
    return b;
}

static unsigned char *slurp(const char *path, long *n) {
    *n = -1;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*n + 1);
    if (b && fread(b, 1, (size_t)*n, f) != (size_t)*n) *n = -1;
    fclose(f);
    return b;
}

/* 1 when the file holds exactly these n bytes. */
static int same_file(const char *path, const unsigned char *bytes, long n) {
    long m;
    unsigned char *b = slurp(path, &m);
    int same = b && m == n && memcmp(b, bytes, (size_t)n) == 0;
    free(b);
    return same;
}

/* A safetensors file made of the 8-byte size, exactly hl header bytes (no NUL
   after them) and nd data bytes. */
static void write_raw(const char *path, const char *header, size_t hl, const unsigned char *data, size_t nd) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    unsigned char sz[8];
    for (int i = 0; i < 8; i++) sz[i] = (unsigned char)((unsigned long long)hl >> (8 * i));
    fwrite(sz, 1, 8, f);
    fwrite(header, 1, hl, f);
    if (nd) fwrite(data, 1, nd, f);
    fclose(f);
}

/* Every byte of the message is printable ASCII. */
static int printable(const char *m) {
    for (; m && *m; m++)
        if ((unsigned char)*m < 32 || (unsigned char)*m > 126) return 0;
    return m != NULL;
}

/* Files in dir other than `keep`: leftovers of a save. */
static int stray_files(const char *keep) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && (!keep || strcmp(e->d_name, keep))) {
            if (keep) fprintf(stderr, "  stray file: %s\n", e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

static void clear_dir(void) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) remove(in_dir(e->d_name));
    closedir(d);
}

/* ------------------------------------------------------- crafted headers */

static void test_header_without_nul(void) {
    nb_scope_begin();
    nb_tensor *t = nb_full(NB_F32, 1, (int64_t[]){1}, 7);
    const char *name = "a";
    const char *path = in_dir("crafted.safetensors");
    /* A number that runs to the last byte of the file: nothing follows it to stop a parser. */
    const char *h1 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4";
    write_raw(path, h1, strlen(h1), NULL, 0);
    CHECK(nb_load_safetensors(path, 1, &t, &name) != 0);
    CHECK(printable(nb_last_error()));
    CHECK_ERR("nb_load_safetensors:");
    /* The same with a long run of digits, which must not be read past the header either. */
    char h2[200];
    snprintf(h2, sizeof h2, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,%s",
             "44444444444444444444444444");
    write_raw(path, h2, strlen(h2), NULL, 0);
    CHECK(nb_load_safetensors(path, 1, &t, &name) != 0);
    CHECK_ERR("nb_load_safetensors:");
    /* A number at the end of the header with digits in the data after it: the data are not part of it. */
    const char *h3 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4";
    write_raw(path, h3, strlen(h3), (const unsigned char *)"0000", 4);
    CHECK(nb_load_safetensors(path, 1, &t, &name) != 0);
    CHECK_ERR("nb_load_safetensors:");
    /* An unterminated key at the end of the file: the message quotes only header bytes. */
    const char *h4 = "{\"ab";
    write_raw(path, h4, strlen(h4), NULL, 0);
    CHECK(nb_load_safetensors(path, 1, &t, &name) != 0);
    const char *m = nb_last_error();
    CHECK(m && strstr(m, "corrupt header"));
    CHECK(printable(m));
    nb_clear_error();
    /* Binary bytes in the header: the message shows them escaped. */
    const char h5[] = {'{', '\x01', '\xff', 'x', '\x7f', '}'};
    write_raw(path, h5, sizeof h5, NULL, 0);
    CHECK(nb_load_safetensors(path, 1, &t, &name) != 0);
    m = nb_last_error();
    CHECK(m && strstr(m, "corrupt header near '\\x01\\xffx\\x7f}'"));
    CHECK(printable(m));
    nb_clear_error();
    /* A name of binary bytes in an entry that is then wrong: escaped too. */
    const char h6[] = "{\"\x02\xe9\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_raw(path, h6, sizeof h6 - 1, (const unsigned char *)"abcd", 4);
    CHECK(nb_load_safetensors(path, 1, &t, &name) != 0);
    m = nb_last_error();
    CHECK(m && strstr(m, "'\\x02\\xe9'"));
    CHECK(printable(m));
    nb_clear_error();
    /* An offset too large for 64 bits is corrupt, not wrapped. */
    const char *h7 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551616,4]}}";
    write_raw(path, h7, strlen(h7), (const unsigned char *)"abcd", 4);
    CHECK(nb_load_safetensors(path, 1, &t, &name) != 0);
    CHECK_ERR("nb_load_safetensors:");
    CHECK(nb_item(t) == 7);
    /* A correct file of the same layout still loads. */
    const char *h8 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    float one = 1.5f;
    write_raw(path, h8, strlen(h8), (const unsigned char *)&one, 4);
    CHECK(nb_load_safetensors(path, 1, &t, &name) == 0);
    CHECK(nb_item(t) == 1.5);
    remove(path);
    nb_scope_end();
}

/* Metadata written by other tools may hold escaped characters; they are skipped. */
static void test_metadata_escapes(void) {
    nb_scope_begin();
    nb_tensor *t = nb_full(NB_F32, 1, (int64_t[]){1}, 7);
    const char *name = "a";
    const char *path = in_dir("meta.safetensors");
    const char *h = "{\"__metadata__\":{\"note\":\"a \\\"quoted\\\" \\\\ word\\n\"},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    float one = 2.5f;
    write_raw(path, h, strlen(h), (const unsigned char *)&one, 4);
    CHECK(nb_load_safetensors(path, 1, &t, &name) == 0);
    CHECK(nb_item(t) == 2.5);
    remove(path);
    nb_scope_end();
}

/* ---------------------------------------------------------------- names */

static void test_long_names(void) {
    nb_scope_begin();
    size_t lens[3] = {255, 300, 10000};
    char *names[3];
    nb_tensor *ts[3], *back[3];
    for (int i = 0; i < 3; i++) {
        names[i] = malloc(lens[i] + 1);
        for (size_t k = 0; k < lens[i]; k++) names[i][k] = (char)('a' + (k * 7 + (size_t)i) % 26);
        names[i][lens[i]] = 0;
        ts[i] = nb_full(NB_F64, 1, (int64_t[]){2}, (double)i + 0.25);
        back[i] = nb_full(NB_F64, 1, (int64_t[]){2}, -1);
    }
    const char *path = in_dir("long.safetensors");
    CHECK(nb_save_safetensors(path, 3, ts, (const char *const *)names) == 0);
    CHECK(nb_load_safetensors(path, 3, back, (const char *const *)names) == 0);
    for (int i = 0; i < 3; i++) CHECK(nb_get(back[i], (int64_t[]){1}) == (double)i + 0.25);
    /* A name that differs from a long one only in its last character is another name. */
    names[2][lens[2] - 1] ^= 1;
    CHECK(nb_load_safetensors(path, 1, &back[2], (const char *const *)&names[2]) != 0);
    CHECK_ERR("no tensor named");
    for (int i = 0; i < 3; i++) free(names[i]);
    remove(path);
    nb_scope_end();
}

/* Modules nested deeply have long dotted names; none is cut short. */
static nb_module *deep(int depth, uint64_t seed) {
    nb_rng r;
    nb_rng_seed(&r, seed);
    nb_module *m = nb_linear(2, 3, true, NB_INIT_XAVIER, NB_F64, &r);
    for (int i = 0; i < depth && m; i++) m = nb_residual(m);
    return m;
}

static void test_deep_module_names(void) {
    nb_module *a = deep(60, 1), *b = deep(60, 2);
    CHECK(a && b);
    if (!a || !b) return;
    nb_tensor *pa[2], *pb[2];
    const char *na[2];
    CHECK(nb_module_params(a, pa, na, 2) == 2);
    CHECK(nb_module_params(b, pb, NULL, 2) == 2);
    CHECK(strlen(na[0]) == 120 + strlen("weight") && strlen(na[1]) == 120 + strlen("bias"));
    CHECK(strncmp(na[0], "0.0.0.", 6) == 0 && strcmp(na[0] + 120, "weight") == 0 && strcmp(na[1] + 120, "bias") == 0);
    const char *path = in_dir("deep.safetensors");
    CHECK(nb_module_save(a, path) == 0);
    CHECK(nb_module_load(b, path) == 0);
    CHECK(memcmp(nb_data(pa[0]), nb_data(pb[0]), 6 * sizeof(double)) == 0);
    remove(path);
    nb_module_free(a);
    nb_module_free(b);
}

/* ------------------------------------------------------------- file system */

/* A failed save leaves an existing file byte-identical and no temporary file,
   and reports errno as the failing call left it. */
static void test_save_errors(void) {
    clear_dir();
    nb_scope_begin();
    nb_tensor *t = nb_full(NB_F32, 1, (int64_t[]){4}, 3);
    const char *name = "w";
    const char *path = in_dir("keep.safetensors");
    CHECK(nb_save_safetensors(path, 1, &t, &name) == 0);
    long n;
    unsigned char *before = slurp(path, &n);
    CHECK(before != NULL);
    CHECK(nb_fill_(t, 4) == 0);

    /* The parent "folder" is a regular file. */
    const char *file = in_dir("plain");
    FILE *f = fopen(file, "w");
    if (f) fclose(f);
    char under[600];
    snprintf(under, sizeof under, "%s/x.safetensors", file);
    CHECK(nb_save_safetensors(under, 1, &t, &name) != 0);
    const char *m = nb_last_error();
    CHECK(m && strstr(m, "Not a directory") && strstr(m, under));
    nb_clear_error();
    remove(file);

    /* No file descriptor left: the error is that, not what cleaning up met. */
    struct rlimit old, low;
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    low = old;
    low.rlim_cur = 64;
    int fds[64], nfds = 0;
    if (setrlimit(RLIMIT_NOFILE, &low) == 0) {
        int fd;
        while (nfds < 64 && (fd = open("/dev/null", O_RDONLY)) >= 0) fds[nfds++] = fd;
        int rc = nb_save_safetensors(path, 1, &t, &name);
        while (nfds > 0) close(fds[--nfds]);
        setrlimit(RLIMIT_NOFILE, &old);
        CHECK(rc != 0);
        m = nb_last_error();
        CHECK(m && strstr(m, "Too many open files") && strstr(m, path));
        nb_clear_error();
    }
    CHECK(same_file(path, before, n));

    /* The target is a folder: the rename fails, the temporary file goes. */
    const char *sub = in_dir("sub");
    CHECK(mkdir(sub, 0777) == 0);
    char inner[600];
    snprintf(inner, sizeof inner, "%s/f", sub);
    f = fopen(inner, "w");
    if (f) fclose(f);
    CHECK(nb_save_safetensors(sub, 1, &t, &name) != 0);
    m = nb_last_error();
    CHECK(m && strstr(m, sub));
    nb_clear_error();
    remove(inner);
    rmdir(sub);
    CHECK(stray_files("keep.safetensors") == 0);
    CHECK(same_file(path, before, n));
    free(before);
    remove(path);
    nb_scope_end();
}

/* Writers in several processes save one path over and over while a reader
   loads it: every save succeeds, every load sees a whole checkpoint, and no
   temporary file is left. */
#define WRITERS 4
#define ROUNDS 30
#define WIDTH 4096
static int writer(const char *path, int id) {
    int bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        nb_scope_begin();
        double v = id * 1000 + r;
        nb_tensor *ts[2] = {nb_full(NB_F64, 1, (int64_t[]){WIDTH}, v), nb_scalar(NB_F64, v)};
        const char *names[2] = {"data", "tag"};
        if (nb_save_safetensors(path, 2, ts, names) != 0) {
            fprintf(stderr, "  writer %d round %d: %s\n", id, r, nb_last_error());
            nb_clear_error();
            bad++;
        }
        nb_scope_end();
    }
    return bad;
}
static int reader(const char *path, int rounds) {
    int bad = 0;
    nb_tensor *ts[2] = {nb_new(NB_F64, 1, (int64_t[]){WIDTH}, NULL), nb_new(NB_F64, 0, NULL, NULL)};
    const char *names[2] = {"data", "tag"};
    for (int r = 0; r < rounds; r++) {
        if (nb_load_safetensors(path, 2, ts, names) != 0) {
            fprintf(stderr, "  reader round %d: %s\n", r, nb_last_error());
            nb_clear_error();
            bad++;
            continue;
        }
        const double *d = nb_data(ts[0]);
        double tag = nb_item(ts[1]);
        for (int i = 0; i < WIDTH; i++)
            if (d[i] != tag) {
                fprintf(stderr, "  reader round %d: torn checkpoint (%g in a file tagged %g)\n", r, d[i], tag);
                bad++;
                break;
            }
    }
    nb_free(ts[0]);
    nb_free(ts[1]);
    return bad;
}

static void test_concurrent_saves(void) {
    clear_dir();
    const char *path = in_dir("shared.safetensors");
    CHECK(writer(path, 99) == 0); /* the file exists before the race starts */
    fflush(NULL);
    pid_t pids[WRITERS + 1];
    for (int i = 0; i <= WRITERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) _exit(i < WRITERS ? (writer(path, i) ? 1 : 0) : (reader(path, 3 * ROUNDS) ? 1 : 0));
        CHECK(pids[i] > 0);
    }
    for (int i = 0; i <= WRITERS; i++) {
        int st = -1;
        if (pids[i] > 0) waitpid(pids[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK(reader(path, 1) == 0);
    CHECK(stray_files("shared.safetensors") == 0);
    remove(path);
}

/* ------------------------------------------------------- optimizer steps */

/* A state file whose step count is v: the optimizer refuses it, naming the
   value, and keeps its moments and step count. */
static void test_bad_step_counts(void) {
    clear_dir();
    nb_scope_begin();
    nb_tensor *p = nb_from_f64(NB_F32, 1, (int64_t[]){3}, (double[]){1, 2, 3});
    nb_set_requires_grad(p, true);
    nb_optim *o = nb_adam(1, &p, 0.1, 0.9, 0.999, 1e-8, 0);
    nb_tensor *L = nb_sum(nb_mul(p, p));
    CHECK(nb_backward(L, NULL, 0) == 0);
    CHECK(nb_optim_step(o) == 0);
    const char *good = in_dir("state.safetensors"), *again = in_dir("state2.safetensors");
    CHECK(nb_optim_save(o, good) == 0);
    long n;
    unsigned char *before = slurp(good, &n);
    double bad[] = {NAN, INFINITY, -INFINITY, -1, 2.5, 1e300, 9007199254740994.0, -0.5};
    const char *shown[] = {"nan", "inf", "-inf", "-1", "2.5", "1e+300", "9007199254740994", "-0.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nb_tensor *ts[3] = {nb_full(NB_F32, 1, (int64_t[]){3}, 5), nb_full(NB_F32, 1, (int64_t[]){3}, 6),
                            nb_scalar(NB_F64, bad[i])};
        const char *names[3] = {"m.0", "v.0", "steps"};
        const char *path = in_dir("bad_steps.safetensors");
        CHECK(nb_save_safetensors(path, 3, ts, names) == 0);
        CHECK(nb_optim_load(o, path) != 0);
        const char *m = nb_last_error();
        CHECK(m && strstr(m, "nb_optim_load") && strstr(m, "steps") && strstr(m, shown[i]));
        if (m && !strstr(m, shown[i])) fprintf(stderr, "  expected %s in: %s\n", shown[i], m);
        nb_clear_error();
        CHECK(nb_optim_steps(o) == 1);
        CHECK(nb_optim_save(o, again) == 0);
        CHECK(same_file(again, before, n));
    }
    /* the largest count a double holds exactly is accepted */
    nb_tensor *ts[3] = {nb_full(NB_F32, 1, (int64_t[]){3}, 5), nb_full(NB_F32, 1, (int64_t[]){3}, 6),
                        nb_scalar(NB_F64, 9007199254740992.0)};
    const char *names[3] = {"m.0", "v.0", "steps"};
    CHECK(nb_save_safetensors(in_dir("big.safetensors"), 3, ts, names) == 0);
    CHECK(nb_optim_load(o, in_dir("big.safetensors")) == 0);
    CHECK(nb_optim_steps(o) == 9007199254740992LL);
    free(before);
    nb_optim_free(o);
    nb_scope_end();
    clear_dir();
}

/* ------------------------------------------------- allocation failures (th_inject: harness.h) */

/* A small network, each parameter with a gradient, and an optimizer that has
   taken two steps (so every moment holds something). */
typedef struct {
    nb_module *net;
    nb_optim *opt;
    nb_tensor *ps[8];
    int np;
} model;

static nb_module *make_net(uint64_t seed) {
    nb_rng r;
    nb_rng_seed(&r, seed);
    return nb_sequential(3, (nb_module *[]){nb_linear(5, 7, true, NB_INIT_XAVIER, NB_F32, &r), nb_tanh_layer(),
                                            nb_linear(7, 3, true, NB_INIT_KAIMING, NB_F32, &r)});
}

static void backward_once(model *m) {
    nb_scope_begin();
    nb_optim_zero_grad(m->opt);
    nb_tensor *x = nb_from_f64(NB_F32, 2, (int64_t[]){2, 5},
                               (double[]){0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 1.0});
    nb_tensor *y = nb_forward(m->net, x);
    CHECK(y && nb_backward(nb_sum(nb_mul(y, y)), NULL, 0) == 0);
    nb_scope_end();
}

static int make_model(model *m, int kind, uint64_t seed) {
    m->net = make_net(seed);
    const char *names[8]; /* the module builds its table of names now, once, not inside a measured call */
    m->np = m->net ? nb_module_params(m->net, m->ps, names, 8) : 0;
    switch (kind) {
    case 0: m->opt = nb_sgd(m->np, m->ps, 0.1, 0.9, 0.01, false); break;
    case 1: m->opt = nb_sgd(m->np, m->ps, 0.1, 0.9, 0, true); break;
    case 2: m->opt = nb_adam(m->np, m->ps, 0.01, 0.9, 0.999, 1e-8, 0.01); break;
    default: m->opt = nb_adamw(m->np, m->ps, 0.01, 0.9, 0.999, 1e-8, 0.1); break;
    }
    if (!m->opt) return -1;
    for (int s = 0; s < 2; s++) {
        backward_once(m);
        if (nb_optim_step(m->opt) != 0) return -1;
    }
    backward_once(m);
    return 0;
}

static void free_model(model *m) {
    nb_optim_free(m->opt);
    nb_module_free(m->net);
}

/* The bytes of every parameter and gradient, and of the optimizer's state file. */
typedef struct {
    unsigned char *bytes;
    size_t n;
} snap;
static snap snapshot(model *m, const char *state_path) {
    size_t total = 0;
    for (int i = 0; i < m->np; i++) total += 2 * (size_t)nb_numel(m->ps[i]) * 8;
    snap s = {malloc(total + 1), 0};
    for (int i = 0; i < m->np; i++) {
        size_t b = (size_t)nb_numel(m->ps[i]) * (nb_dtype_of(m->ps[i]) == NB_F32 ? 4 : 8);
        memcpy(s.bytes + s.n, nb_data(m->ps[i]), b);
        s.n += b;
        nb_tensor *g = nb_grad(m->ps[i]);
        if (g) memcpy(s.bytes + s.n, nb_data(g), b);
        else memset(s.bytes + s.n, 0xAB, b);
        s.n += b;
    }
    long fl;
    CHECK(nb_optim_save(m->opt, state_path) == 0);
    unsigned char *f = slurp(state_path, &fl);
    CHECK(f != NULL);
    s.bytes = realloc(s.bytes, s.n + (size_t)fl);
    memcpy(s.bytes + s.n, f, (size_t)fl);
    s.n += (size_t)fl;
    free(f);
    return s;
}
static int same_snap(snap a, snap b) { return a.n == b.n && memcmp(a.bytes, b.bytes, a.n) == 0; }

/* Run op under a failure at allocation 1, 2, ... until it succeeds: each
   failure must be an error with a message, leave no memory behind, and leave
   the model and `file` (when given) as they were. Returns the index at which
   it first succeeded, with the state then in *after. */
typedef int (*op_fn)(model *m, const char *path);
static long fail_each(model *m, op_fn op, const char *path, const char *file, snap *after) {
    const char *sp = in_dir("snap.safetensors");
    snap before = snapshot(m, sp);
    long fn_len = -1;
    unsigned char *fbytes = file ? slurp(file, &fn_len) : NULL;
    long at;
    int ok = 0;
    for (at = 1; at < 2000 && !ok; at++) {
        nb_clear_error();
        int64_t mem0 = nb_memory_in_use();
        th_inject(at);
        int rc = op(m, path);
        th_stop_injecting();
        if (rc == 0) {
            ok = 1;
            break;
        }
        const char *msg = nb_last_error();
        CHECK(msg && *msg);
        if (!msg || !*msg) fprintf(stderr, "  no message after a failure at allocation %ld\n", at);
        CHECK(nb_memory_in_use() == mem0);
        nb_clear_error();
        snap now = snapshot(m, sp);
        CHECK(same_snap(before, now));
        free(now.bytes);
        if (file) CHECK(same_file(file, fbytes, fn_len));
        CHECK(stray_files(NULL) == (file ? 2 : 1)); /* the file and the snapshot */
    }
    CHECK(ok);
    *after = snapshot(m, sp);
    free(before.bytes);
    free(fbytes);
    return at;
}

static int op_step(model *m, const char *path) {
    (void)path;
    return nb_optim_step(m->opt);
}
static int op_module_save(model *m, const char *path) { return nb_module_save(m->net, path); }
static int op_module_load(model *m, const char *path) { return nb_module_load(m->net, path); }
static int op_optim_save(model *m, const char *path) { return nb_optim_save(m->opt, path); }
static int op_optim_load(model *m, const char *path) { return nb_optim_load(m->opt, path); }

static void test_step_failures(void) {
    nb_set_cache_limit(0); /* every allocation reaches the hook */
    for (int kind = 0; kind < 4; kind++) {
        clear_dir();
        model a, b;
        CHECK(make_model(&a, kind, 11) == 0 && make_model(&b, kind, 11) == 0);
        snap ref_after;
        CHECK(op_step(&b, NULL) == 0);
        CHECK(nb_optim_steps(b.opt) == 3);
        ref_after = snapshot(&b, in_dir("snap.safetensors"));
        snap after;
        fail_each(&a, op_step, NULL, NULL, &after);
        CHECK(nb_optim_steps(a.opt) == 3);
        CHECK(same_snap(after, ref_after)); /* the step that succeeded is the step a clean run takes */
        free(after.bytes);
        free(ref_after.bytes);
        free_model(&a);
        free_model(&b);
    }
    nb_set_cache_limit((int64_t)256 << 20);
    clear_dir();
}

static void test_save_failures(void) {
    nb_set_cache_limit(0);
    for (int which = 0; which < 2; which++) {
        clear_dir();
        model a, b;
        CHECK(make_model(&a, 2, 21) == 0 && make_model(&b, 2, 22) == 0);
        const char *path = in_dir("target.safetensors"), *ref = in_dir("ref.safetensors");
        /* the target holds another model's checkpoint, which a failed save must keep */
        CHECK((which ? op_optim_save(&b, path) : op_module_save(&b, path)) == 0);
        CHECK((which ? op_optim_save(&a, ref) : op_module_save(&a, ref)) == 0);
        long rn;
        unsigned char *want = slurp(ref, &rn);
        remove(ref);
        snap after;
        long at = fail_each(&a, which ? op_optim_save : op_module_save, path, path, &after);
        CHECK(at > 3); /* the save's own allocations reach the hook */
        CHECK(same_file(path, want, rn));
        free(want);
        free(after.bytes);
        free_model(&a);
        free_model(&b);
    }
    nb_set_cache_limit((int64_t)256 << 20);
    clear_dir();
}

static void test_load_failures(void) {
    nb_set_cache_limit(0);
    for (int which = 0; which < 2; which++) {
        clear_dir();
        model a, b;
        CHECK(make_model(&a, 3, 31) == 0 && make_model(&b, 3, 32) == 0);
        backward_once(&b);
        CHECK(nb_optim_step(b.opt) == 0); /* a different step count too */
        const char *path = in_dir("source.safetensors");
        CHECK((which ? op_optim_save(&b, path) : op_module_save(&b, path)) == 0);
        snap after;
        long at = fail_each(&a, which ? op_optim_load : op_module_load, path, path, &after);
        CHECK(at > 3);
        /* loaded: a now holds b's parameters (module) or b's state (optimizer) */
        if (which == 0) {
            for (int i = 0; i < a.np; i++) {
                size_t bytes = (size_t)nb_numel(a.ps[i]) * (nb_dtype_of(a.ps[i]) == NB_F32 ? 4 : 8);
                CHECK(memcmp(nb_data(a.ps[i]), nb_data(b.ps[i]), bytes) == 0);
            }
        } else {
            CHECK(nb_optim_steps(a.opt) == 3);
            const char *pa = in_dir("sa.safetensors"), *pb = in_dir("sb.safetensors");
            CHECK(nb_optim_save(a.opt, pa) == 0 && nb_optim_save(b.opt, pb) == 0);
            long na;
            unsigned char *ba = slurp(pa, &na);
            CHECK(ba && same_file(pb, ba, na));
            free(ba);
        }
        free(after.bytes);
        free_model(&a);
        free_model(&b);
    }
    nb_set_cache_limit((int64_t)256 << 20);
    clear_dir();
}

/* A module that has not yet built its table of parameter names builds it
   inside the save: a failure there is an error, not a save of unset names. */
static void test_fresh_module_save_failures(void) {
    nb_set_cache_limit(0);
    clear_dir();
    const char *path = in_dir("fresh.safetensors"), *ref = in_dir("fresh_ref.safetensors");
    nb_module *r = make_net(41);
    CHECK(nb_module_save(r, ref) == 0);
    nb_module_free(r);
    long rn;
    unsigned char *want = slurp(ref, &rn);
    int ok = 0;
    long at;
    for (at = 1; at < 1000 && !ok; at++) {
        int64_t mem0 = nb_memory_in_use();
        nb_module *m = make_net(41);
        nb_clear_error();
        th_inject(at);
        int rc = nb_module_save(m, path);
        th_stop_injecting();
        if (rc == 0) {
            ok = 1;
        } else {
            const char *msg = nb_last_error();
            CHECK(msg && strstr(msg, "out of memory"));
            CHECK(access(path, F_OK) != 0);
        }
        nb_module_free(m);
        CHECK(nb_memory_in_use() == mem0);
    }
    CHECK(ok && at > 2);
    CHECK(same_file(path, want, rn));
    free(want);
    clear_dir();
    nb_set_cache_limit((int64_t)256 << 20);
}

/* Building layers and optimizers under a failure at each allocation in turn:
   NULL with a message and nothing held, until one run succeeds. */
static void test_build_failures(void) {
    nb_set_cache_limit(0);
    int ok = 0;
    long at;
    for (at = 1; at < 1000 && !ok; at++) {
        int64_t mem0 = nb_memory_in_use();
        nb_clear_error();
        th_inject(at);
        nb_module *m = make_net(51);
        nb_rng r;
        nb_rng_seed(&r, 3);
        nb_module *e = nb_embedding(5, 3, NB_F64, &r), *ln = nb_layer_norm_layer(4, 1e-5, NB_F32);
        nb_tensor *ps[8];
        int np = m ? nb_module_params(m, ps, NULL, 8) : 0;
        nb_optim *o = np > 0 ? nb_adamw(np, ps, 1e-3, 0.9, 0.999, 1e-8, 0.01) : NULL;
        th_stop_injecting();
        if (m && e && ln && o) ok = 1;
        else CHECK(nb_last_error() && strstr(nb_last_error(), "out of memory"));
        nb_optim_free(o);
        nb_module_free(m);
        nb_module_free(e);
        nb_module_free(ln);
        CHECK(nb_memory_in_use() == mem0);
    }
    CHECK(ok && at > 10);
    nb_clear_error();
    nb_set_cache_limit((int64_t)256 << 20);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/nabla_ckpt_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_header_without_nul);
    RUN(test_metadata_escapes);
    RUN(test_long_names);
    RUN(test_deep_module_names);
    RUN(test_save_errors);
    RUN(test_concurrent_saves);
    RUN(test_bad_step_counts);
    RUN(test_step_failures);
    RUN(test_save_failures);
    RUN(test_load_failures);
    RUN(test_fresh_module_save_failures);
    RUN(test_build_failures);
    clear_dir();
    rmdir(dir);
    return th_finish();
}
