/*
 * fuzz_csv.c - the CSV reader (nb_load_csv_mem, and nb_load_csv_opts on the
 * same bytes as a file, in src/io/data.c).
 *
 * Input: two bytes of options, then the file.
 *   byte 0  bits 0-3: the label column, -8..7 (negative counts from the end);
 *           bit 4: f64 instead of f32; bits 5-6: header (0 detect, 1 none,
 *           2 present, 3 an unknown value, which must be refused); bit 7:
 *           records with a missing field are skipped instead of refused
 *   byte 1  bits 0-2: the delimiter (0 detect, then , ; tab space | and a
 *           double quote, which must be refused); bits 3-4: labels (0 auto,
 *           1 integer, 2 string, 3 auto); bit 5: the class names "0" "1" "2"
 *           "a" "b" are given; bit 6: the bytes are also loaded as a file
 *           with nb_load_csv_opts, which must give the same result
 * A load either fails with a message and leaves the data set as it was, or
 * gives a data set that holds what fz_check_dataset asks (with class names
 * that match the label mode); a second load gives the same bits; nothing
 * leaks.
 */
#include "fuzz_dataset.h"

static fz_file csv;

static const char *const given_names[] = {"0", "1", "2", "a", "b"};

/* a and b hold the same data set, bit for bit. */
static void same_dataset(const nb_dataset *a, const nb_dataset *b) {
    FZ_ASSERT(a->n == b->n && a->d == b->d && a->classes == b->classes);
    FZ_ASSERT(nb_dtype_of(a->x) == nb_dtype_of(b->x));
    int64_t n = nb_numel(a->x);
    size_t es = nb_dtype_of(a->x) == NB_F32 ? 4 : 8;
    FZ_ASSERT(n == nb_numel(b->x) && (n == 0 || memcmp(nb_data(a->x), nb_data(b->x), (size_t)n * es) == 0));
    FZ_ASSERT(a->n == 0 || memcmp(nb_data(a->y), nb_data(b->y), (size_t)a->n * 8) == 0);
    FZ_ASSERT((a->class_names == NULL) == (b->class_names == NULL));
    for (int64_t k = 0; a->class_names && k < a->classes; k++)
        FZ_ASSERT(strcmp(a->class_names[k], b->class_names[k]) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!csv.path[0]) {
        fz_init();
        fz_file_open(&csv, "csv");
    }
    fz_bytes b = {data, size};
    uint8_t o0 = fz_u8(&b), o1 = fz_u8(&b);
    static const char delims[8] = {0, ',', ';', '\t', ' ', '|', '"', ','};
    static const nb_csv_labels label_modes[4] = {NB_CSV_LABELS_AUTO, NB_CSV_LABELS_INT, NB_CSV_LABELS_STRING,
                                                 NB_CSV_LABELS_AUTO};
    nb_csv_options opt = nb_csv_defaults();
    opt.label_col = (o0 & 15) - 8;
    nb_dtype dt = o0 & 16 ? NB_F64 : NB_F32;
    int header = o0 >> 5 & 3;
    opt.header = header == 0 ? NB_CSV_HEADER_DETECT
                 : header == 1 ? NB_CSV_HEADER_NONE
                 : header == 2 ? NB_CSV_HEADER_PRESENT
                               : (nb_csv_header)7;
    opt.missing = o0 & 128 ? NB_CSV_MISSING_SKIP_ROW : NB_CSV_MISSING_ERROR;
    opt.delimiter = delims[o1 & 7];
    opt.labels = label_modes[o1 >> 3 & 3];
    if (o1 & 32) {
        opt.class_names = given_names;
        opt.n_class_names = (int64_t)(sizeof given_names / sizeof *given_names);
    }
    bool via_file = o1 & 64;
    bool must_fail = header == 3 || opt.delimiter == '"' || (opt.class_names && opt.labels == NB_CSV_LABELS_INT);

    nb_dataset ds, untouched;
    memset(&ds, 0x5a, sizeof ds);
    untouched = ds;
    if (nb_load_csv_mem(b.p, b.n, "fuzz.csv", &opt, dt, &ds) != 0) {
        FZ_FAILED_WITH_MESSAGE();
        FZ_ASSERT(memcmp(&ds, &untouched, sizeof ds) == 0);
        if (via_file) {
            nb_clear_error();
            fz_file_set(&csv, b.p, b.n);
            nb_dataset f = untouched;
            FZ_ASSERT(nb_load_csv_opts(csv.path, &opt, dt, &f) != 0);
            FZ_FAILED_WITH_MESSAGE();
            FZ_ASSERT(memcmp(&f, &untouched, sizeof f) == 0);
        }
    } else {
        FZ_ASSERT(!must_fail);
        FZ_ASSERT(nb_last_error() == NULL);
        FZ_ASSERT(ds.n >= 1 && ds.d >= 1);
        fz_bytes choices = {data, size};
        fz_check_dataset(&ds, dt, !opt.class_names, &choices);
        /* class names: none for integer labels; for string labels the given
           ones, or the distinct labels in strcmp order */
        if (opt.labels == NB_CSV_LABELS_INT) FZ_ASSERT(ds.class_names == NULL);
        if (opt.labels == NB_CSV_LABELS_STRING || opt.class_names) FZ_ASSERT(ds.class_names != NULL);
        if (ds.class_names) {
            for (int64_t k = 0; k < ds.classes; k++) {
                FZ_ASSERT(ds.class_names[k] != NULL);
                if (opt.class_names) FZ_ASSERT(strcmp(ds.class_names[k], given_names[k]) == 0);
                else if (k > 0) FZ_ASSERT(strcmp(ds.class_names[k - 1], ds.class_names[k]) < 0);
            }
        }
        /* the reader is a function of the bytes: another read (from a file, when asked) gives the same bits */
        nb_dataset again;
        if (via_file) {
            fz_file_set(&csv, b.p, b.n);
            FZ_ASSERT(nb_load_csv_opts(csv.path, &opt, dt, &again) == 0);
        } else {
            FZ_ASSERT(nb_load_csv_mem(b.p, b.n, NULL, &opt, dt, &again) == 0);
        }
        same_dataset(&ds, &again);
        nb_dataset_free(&again);
        nb_dataset_free(&ds);
    }
    fz_check_memory();
    return 0;
}
