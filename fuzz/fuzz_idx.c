/*
 * fuzz_idx.c - the IDX reader (nb_load_idx in src/io/data.c).
 *
 * Input: one byte of options (bit 0: f64 instead of f32; bit 1: read the
 * images through the .gz path, which also reads a file that is not
 * compressed), two bytes giving the length of the image file (little-endian,
 * clamped to what is there), the image file, then the label file. A load
 * either fails with a message and leaves an empty data set, or gives a data set
 * that holds what fz_check_dataset asks; nothing leaks.
 */
#include "fuzz_dataset.h"

static fz_file images, labels;
static char tmpdir[64], gzpath[96];

static void remove_tmp(void) {
    unlink(gzpath);
    rmdir(tmpdir);
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
    const char *ipath = images.path;
    if (opt & 2) {
        FILE *f = fopen(gzpath, "wb");
        if (!f || fwrite(b.p, 1, ni, f) != ni || fclose(f) != 0) abort();
        ipath = gzpath;
    } else {
        fz_file_set(&images, b.p, ni);
    }
    fz_file_set(&labels, b.p + ni, b.n - ni);
    fz_bytes rest = {b.p + ni, b.n - ni}; /* the label bytes double as the batcher's choices */

    nb_dataset ds;
    memset(&ds, 0x5a, sizeof ds);
    if (nb_load_idx(ipath, labels.path, dt, &ds) != 0) {
        FZ_FAILED_WITH_MESSAGE();
        FZ_ASSERT(ds.x == NULL && ds.y == NULL && ds.n == 0);
    } else {
        FZ_ASSERT(nb_last_error() == NULL);
        fz_check_dataset(&ds, dt, &rest);
        /* pixels are bytes scaled to [0, 1] */
        int64_t n = nb_numel(ds.x);
        double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
        FZ_ASSERT(v && nb_read_f64(ds.x, v, n) == n);
        for (int64_t i = 0; i < n; i++) FZ_ASSERT(v[i] >= 0 && v[i] <= 1);
        free(v);
        nb_dataset_free(&ds);
    }
    fz_check_memory();
    return 0;
}
