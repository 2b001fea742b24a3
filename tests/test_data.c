/*
 * test_data.c - IDX and CSV loading and the mini-batch iterator: small files
 * written here, sizes that lie, gzip when built with zlib, and shuffling that
 * covers every sample once per epoch, reproducibly for a seed.
 */
#include "harness.h"
#include "nabla/data.h"

static void write_idx(const char *path, const unsigned char *hdr, size_t nh, const unsigned char *d, size_t nd) {
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
    write_idx("/tmp/nabla_img.idx", ih, 16, px, 12);
    write_idx("/tmp/nabla_lab.idx", lh, 8, lb, 3);
    nb_dataset ds;
    CHECK(nb_load_idx("/tmp/nabla_img.idx", "/tmp/nabla_lab.idx", NB_F32, &ds) == 0);
    CHECK(ds.n == 3 && ds.d == 4 && ds.classes == 3);
    CHECK_CLOSE(nb_get(ds.x, (int64_t[]){1, 3}), 140 / 255.0, 1e-7, 0);
    CHECK(nb_get(ds.y, (int64_t[]){0}) == 2);
    nb_dataset_free(&ds);
    write_idx("/tmp/nabla_img.idx", ih, 16, px, 11); /* one byte short */
    CHECK(nb_load_idx("/tmp/nabla_img.idx", "/tmp/nabla_lab.idx", NB_F32, &ds) != 0);
    CHECK_ERR("holds 11 data bytes, its header says 12");
    CHECK(ds.x == NULL);
    CHECK(nb_load_idx("/tmp/nabla_lab.idx", "/tmp/nabla_nope.idx", NB_F32, &ds) != 0);
    CHECK_ERR("cannot open '/tmp/nabla_nope.idx'");
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
    FILE *f = fopen("/tmp/nabla_data.csv", "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f, "a,b,label\n");
    for (int i = 0; i < 10; i++) fprintf(f, "%d,%g,%d\n", i, i * 0.5, i % 3);
    fclose(f);
    nb_dataset ds;
    CHECK(nb_load_csv("/tmp/nabla_data.csv", -1, NB_F64, &ds) == 0);
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
    f = fopen("/tmp/nabla_bad.csv", "w");
    if (f) {
        fprintf(f, "1,2,0\n3,x,1\n");
        fclose(f);
    }
    CHECK(nb_load_csv("/tmp/nabla_bad.csv", -1, NB_F64, &ds) != 0);
    CHECK_ERR("/tmp/nabla_bad.csv:2:2: 'x' is not a number");
}

int main(void) {
    RUN(test_idx);
    RUN(test_csv_and_batches);
    return th_finish();
}
