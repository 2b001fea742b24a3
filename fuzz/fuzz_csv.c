/*
 * fuzz_csv.c - the CSV reader (nb_load_csv in src/io/data.c).
 *
 * Input: one byte of options (bits 0-3: the label column, -8..7, negative
 * counting from the end; bit 4: f64 instead of f32), then the file. A load
 * either fails with a message and leaves an empty data set, or gives a data set
 * that holds what fz_check_dataset asks, with the same number of rows read
 * twice; nothing leaks.
 */
#include "fuzz_dataset.h"

static fz_file csv;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!csv.path[0]) {
        fz_init();
        fz_file_open(&csv, "csv");
    }
    fz_bytes b = {data, size};
    uint8_t opt = fz_u8(&b);
    int label_col = (opt & 15) - 8;
    nb_dtype dt = opt & 16 ? NB_F64 : NB_F32;
    fz_file_set(&csv, b.p, b.n);

    nb_dataset ds;
    memset(&ds, 0x5a, sizeof ds);
    if (nb_load_csv(csv.path, label_col, dt, &ds) != 0) {
        FZ_FAILED_WITH_MESSAGE();
        FZ_ASSERT(ds.x == NULL && ds.y == NULL && ds.n == 0);
    } else {
        FZ_ASSERT(nb_last_error() == NULL);
        fz_bytes choices = {data, size};
        fz_check_dataset(&ds, dt, &choices);
        /* the reader is a function of the file: a second read gives the same data set */
        nb_dataset again;
        FZ_ASSERT(nb_load_csv(csv.path, label_col, dt, &again) == 0);
        FZ_ASSERT(again.n == ds.n && again.d == ds.d && again.classes == ds.classes);
        nb_dataset_free(&again);
        nb_dataset_free(&ds);
    }
    fz_check_memory();
    return 0;
}
