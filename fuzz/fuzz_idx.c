/*
 * fuzz_idx.c - the IDX reader (nb_load_idx_mem, and nb_load_idx through files,
 * in src/io/data.c).
 *
 * Input: one byte of options, two bytes giving the length of the image file
 * (little-endian, clamped to what is there), the image file, then the label
 * file. Options:
 *   bit 0  f64 instead of f32
 *   bit 1  read the images through the .gz path of nb_load_idx (a file named
 *          images.gz; bytes that are not gzip must be refused with a message)
 *          instead of nb_load_idx_mem
 *   bit 2  (without bit 1) load the same bytes from plain files with
 *          nb_load_idx too: it must give the same result as the buffers
 * A load either fails with a message and leaves the data set as it was, or
 * gives a data set that holds what fz_check_dataset asks, with pixels in
 * [0, 1]; nothing leaks.
 */
#include "fuzz_dataset.h"

static fz_file images, labels;
static char tmpdir[64], gzpath[96];

static void remove_tmp(void) {
    unlink(gzpath);
    rmdir(tmpdir);
}

/* a and b hold the same data set, bit for bit. */
static void same_dataset(const nb_dataset *a, const nb_dataset *b) {
    FZ_ASSERT(a->n == b->n && a->d == b->d && a->classes == b->classes);
    int64_t n = nb_numel(a->x);
    size_t es = nb_dtype_of(a->x) == NB_F32 ? 4 : 8;
    FZ_ASSERT(n == nb_numel(b->x) && (n == 0 || memcmp(nb_data(a->x), nb_data(b->x), (size_t)n * es) == 0));
    FZ_ASSERT(memcmp(nb_data(a->y), nb_data(b->y), (size_t)a->n * 8) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!images.path[0]) {
        fz_init();
        fz_file_open(&images, "images");
        fz_file_open(&labels, "labels");
        snprintf(tmpdir, sizeof tmpdir, "/tmp/nabla-fuzz-idx-XXXXXX");
        if (!mkdtemp(tmpdir)) abort();
        snprintf(gzpath, sizeof gzpath, "%s/images.gz", tmpdir);
        atexit(remove_tmp);
    }
    fz_bytes b = {data, size};
    uint8_t opt = fz_u8(&b);
    size_t ni = fz_u16(&b);
    if (ni > b.n) ni = b.n;
    nb_dtype dt = opt & 1 ? NB_F64 : NB_F32;
    const uint8_t *ib = b.p, *lb = b.p + ni;
    size_t nl = b.n - ni;
    fz_bytes rest = {lb, nl}; /* the label bytes double as the batcher's choices */

    nb_dataset ds, untouched;
    memset(&ds, 0x5a, sizeof ds);
    untouched = ds;
    int rc;
    if (opt & 2) {
        FILE *f = fopen(gzpath, "wb");
        if (!f || fwrite(ib, 1, ni, f) != ni || fclose(f) != 0) abort();
        fz_file_set(&labels, lb, nl);
        rc = nb_load_idx(gzpath, labels.path, dt, &ds);
    } else {
        rc = nb_load_idx_mem(ib, ni, lb, nl, dt, &ds);
    }
    bool via_files = (opt & 6) == 4;
    nb_dataset f = untouched;
    int frc = 0;
    if (via_files) {
        if (rc != 0) FZ_FAILED_WITH_MESSAGE();
        nb_clear_error();
        fz_file_set(&images, ib, ni);
        fz_file_set(&labels, lb, nl);
        frc = nb_load_idx(images.path, labels.path, dt, &f);
        FZ_ASSERT((frc == 0) == (rc == 0));
    }
    if (rc != 0) {
        FZ_FAILED_WITH_MESSAGE();
        FZ_ASSERT(memcmp(&ds, &untouched, sizeof ds) == 0);
        FZ_ASSERT(memcmp(&f, &untouched, sizeof f) == 0);
    } else {
        FZ_ASSERT(nb_last_error() == NULL);
        fz_check_dataset(&ds, dt, true, &rest);
        /* pixels are bytes scaled to [0, 1] */
        int64_t n = nb_numel(ds.x);
        double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
        FZ_ASSERT(v && nb_read_f64(ds.x, v, n) == n);
        for (int64_t i = 0; i < n; i++) FZ_ASSERT(v[i] >= 0 && v[i] <= 1);
        free(v);
        if (via_files) {
            same_dataset(&ds, &f);
            nb_dataset_free(&f);
        }
        nb_dataset_free(&ds);
    }
    fz_check_memory();
    return 0;
}
