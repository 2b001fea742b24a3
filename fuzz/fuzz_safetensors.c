/*
 * fuzz_safetensors.c - the safetensors reader (src/io/safetensors.c).
 *
 * The input is the file itself. It is loaded three ways: into the parameters
 * of a small module (Linear(3, 2): "weight" f32 (2,3), "bias" f32 (2)), into a
 * list of tensors by name ("a" f64 (2,2), "b" i64 (3), "c" f32 scalar), and into
 * no tensors at all (the header alone is parsed and checked). Invariants:
 *  - a failed load has a message and changes no tensor (all or nothing);
 *  - a loaded set saved again and loaded into fresh tensors gives the same bits;
 *  - nothing leaks.
 */
#include "fuzz.h"
#include "nabla/io.h"

static fz_file in;
static char tmpdir[64];

/* The elements of ts[0..n) as raw bytes, one after the other, into buf (cap bytes). */
static size_t snapshot(int n, nb_tensor *const *ts, unsigned char *buf, size_t cap) {
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t sz = (size_t)nb_numel(ts[i]) * (nb_dtype_of(ts[i]) == NB_F32 ? 4 : 8);
        FZ_ASSERT(at + sz <= cap);
        memcpy(buf + at, nb_data(ts[i]), sz);
        at += sz;
    }
    return at;
}

/* Load path into ts; on failure nothing may have changed; on success the
   tensors survive a save and load round trip bit for bit. */
static void load_and_check(int n, nb_tensor *const *ts, const char *const *names) {
    unsigned char before[256], after[256];
    size_t nb = snapshot(n, ts, before, sizeof before);
    nb_clear_error();
    if (nb_load_safetensors(in.path, n, ts, names) != 0) {
        FZ_FAILED_WITH_MESSAGE();
        FZ_ASSERT(snapshot(n, ts, after, sizeof after) == nb && memcmp(before, after, nb) == 0);
        nb_clear_error();
        return;
    }
    FZ_ASSERT(nb_last_error() == NULL);
    if (n == 0) return;
    char path[128];
    snprintf(path, sizeof path, "%s/round.safetensors", tmpdir);
    FZ_ASSERT(nb_save_safetensors(path, n, ts, names) == 0);
    nb_tensor *fresh[4];
    for (int i = 0; i < n; i++) fresh[i] = nb_new(nb_dtype_of(ts[i]), nb_rank(ts[i]), nb_shape(ts[i]), NULL);
    FZ_ASSERT(nb_load_safetensors(path, n, fresh, names) == 0);
    size_t n1 = snapshot(n, ts, before, sizeof before), n2 = snapshot(n, fresh, after, sizeof after);
    FZ_ASSERT(n1 == n2 && memcmp(before, after, n1) == 0);
    for (int i = 0; i < n; i++) nb_free(fresh[i]);
    unlink(path);
}

static void remove_tmpdir(void) { rmdir(tmpdir); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!in.path[0]) {
        fz_init();
        fz_file_open(&in, "safetensors");
        snprintf(tmpdir, sizeof tmpdir, "/tmp/nabla-fuzz-st-XXXXXX");
        if (!mkdtemp(tmpdir)) abort();
        atexit(remove_tmpdir);
    }
    fz_file_set(&in, data, size);

    /* a module's parameters */
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_module *lin = nb_linear(3, 2, true, NB_INIT_XAVIER, NB_F32, &rng);
    FZ_ASSERT(lin != NULL);
    nb_tensor *ps[2];
    const char *pn[2];
    FZ_ASSERT(nb_module_params(lin, ps, pn, 2) == 2);
    unsigned char before[64], after[64];
    size_t nb = snapshot(2, ps, before, sizeof before);
    if (nb_module_load(lin, in.path) != 0) {
        FZ_FAILED_WITH_MESSAGE();
        FZ_ASSERT(snapshot(2, ps, after, sizeof after) == nb && memcmp(before, after, nb) == 0);
        nb_clear_error();
    } else {
        load_and_check(2, ps, pn);
    }
    nb_module_free(lin);

    /* named tensors of each dtype, a scalar among them */
    nb_tensor *ts[3] = {nb_full(NB_F64, 2, (int64_t[]){2, 2}, 0.5), nb_full(NB_I64, 1, (int64_t[]){3}, 7),
                        nb_scalar(NB_F32, -1)};
    const char *names[3] = {"a", "b", "c"};
    load_and_check(3, ts, names);
    load_and_check(1, ts + 1, names + 1);
    load_and_check(0, NULL, NULL);
    for (int i = 0; i < 3; i++) nb_free(ts[i]);

    fz_check_memory();
    return 0;
}
