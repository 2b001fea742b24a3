/*
 * nabla/data.h - data sets: IDX files (MNIST, Fashion-MNIST), CSV with a
 * label column (integer or string labels), a seeded train/test split,
 * per-feature standardisation, a shuffling mini-batch iterator; byte-level
 * text with a split by position and random windows for language models.
 */
#ifndef NABLA_DATA_H
#define NABLA_DATA_H

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A labelled data set held in memory: x (N, D) features, y (N) NB_I64 labels
   0..classes-1. Both tensors live outside every scope until nb_dataset_free.
   class_names is NULL for integer labels; for string labels it holds
   `classes` NUL-terminated names, class_names[i] the name of label i. It is
   one block owned by the data set (made by the loaders and nb_dataset_split,
   freed by nb_dataset_free): do not set it to memory of your own. */
typedef struct {
    nb_tensor *x, *y;
    int64_t n, d;
    int64_t classes;    /* integer labels: 1 + the largest label; string labels: the number of names */
    char **class_names; /* NULL, or classes names */
} nb_dataset;

/* The most classes a loader accepts: an integer label must lie in
   0..NB_MAX_CLASSES-1, and a file may hold at most NB_MAX_CLASSES distinct
   string labels. */
#define NB_MAX_CLASSES 65536

/* Read an IDX image file (u8, any number of dimensions after the count) and
   its IDX label file; pixels are scaled to [0, 1] in dt (NB_F32 or NB_F64).
   Files ending in .gz are read through zlib when nabla was built with it
   (else a clear error); a .gz file is decompressed only up to the size its
   header implies (plus one byte to notice trailing data), never further.
   The product of the dimensions is overflow-checked, and the file must hold
   at least one image. Returns 0, or nonzero with an error naming the file and
   what is wrong (a size check gives the bytes present and the bytes the
   header implies). On failure *out is left as it was. */
NB_API int nb_load_idx(const char *images, const char *labels, nb_dtype dt, nb_dataset *out);
/* The same from two buffers in memory (for fuzzing and embedded data); the
   buffers are only read. Errors name the buffers "<images>" and "<labels>". */
NB_API int nb_load_idx_mem(const void *images, size_t images_len, const void *labels, size_t labels_len,
                           nb_dtype dt, nb_dataset *out);

/* CSV reading (RFC 4180): fields separated by the delimiter, a field in double
   quotes may hold delimiters, newlines and "" for a quote; LF or CRLF line
   ends; a UTF-8 byte order mark is skipped; blank lines are skipped. Blanks
   (spaces, tabs) around an unquoted field are ignored. Every feature field
   must be a finite number (strtod syntax). Errors name the file, the line and,
   for a field, the column (1-based): "data.csv:5:3: empty field". */
typedef enum {
    NB_CSV_HEADER_DETECT,  /* the first record is a header when one of its feature fields is not a number, or
                              when its label is not a number but the second record's label is */
    NB_CSV_HEADER_NONE,    /* every record is data */
    NB_CSV_HEADER_PRESENT  /* the first record is a header (only the first record can be one) */
} nb_csv_header;
typedef enum {
    NB_CSV_LABELS_AUTO,   /* integer labels when every label field is a number, else string labels */
    NB_CSV_LABELS_INT,    /* an integer 0..NB_MAX_CLASSES-1 ("3" or "3.0"); anything else is an error */
    NB_CSV_LABELS_STRING  /* any text (after unquoting), numbers included, names a class */
} nb_csv_labels;
typedef enum {
    NB_CSV_MISSING_ERROR,   /* a missing field is an error naming its line and column */
    NB_CSV_MISSING_SKIP_ROW /* a record with a missing field (feature or label) is left out */
} nb_csv_missing;
/* A field is missing when it is empty (or only blanks) or is one of NA, N/A,
   NaN, ? (any case): the label field too, so these never name a class. */
typedef struct {
    int label_col;          /* the label column, 0-based; negative counts from the end (-1: the last) */
    nb_csv_header header;
    char delimiter;         /* ',' ';' '\t' ...; 0 detects ',', ';' or '\t' from the first line
                               (the one most frequent outside quotes, ',' on a tie) */
    nb_csv_labels labels;
    nb_csv_missing missing;
    /* String labels: when class_names is set, the classes are exactly these
       n_class_names (1..NB_MAX_CLASSES) names in this order (e.g. the mapping
       saved with a trained model), a label that is not among them is an
       error, and NB_CSV_LABELS_AUTO means string labels (NB_CSV_LABELS_INT is
       an error). When NULL, the classes are the distinct labels of the file
       in sorted (strcmp, byte) order, so the same set of names always gives
       the same mapping. */
    const char *const *class_names;
    int64_t n_class_names;
} nb_csv_options;
/* label_col -1, NB_CSV_HEADER_DETECT, delimiter 0 (detect),
   NB_CSV_LABELS_AUTO, NB_CSV_MISSING_ERROR, no class names. */
NB_API nb_csv_options nb_csv_defaults(void);
/* Read a CSV file (or a .gz one when built with zlib; at most 1 GiB once
   decompressed) with opt (NULL: nb_csv_defaults()); features in dt (NB_F32 or
   NB_F64). A file must have at least one feature column and one data record;
   a single record is accepted. Returns 0, or nonzero with an error; on
   failure *out is left as it was. */
NB_API int nb_load_csv_opts(const char *path, const nb_csv_options *opt, nb_dtype dt, nb_dataset *out);
/* nb_load_csv_opts with the defaults but the given label column. */
NB_API int nb_load_csv(const char *path, int label_col, nb_dtype dt, nb_dataset *out);
/* The same from a buffer in memory (len bytes, no terminating NUL needed; only
   read); name (NULL: "<memory>") stands for the file in error messages. */
NB_API int nb_load_csv_mem(const void *buf, size_t len, const char *name, const nb_csv_options *opt, nb_dtype dt,
                           nb_dataset *out);
/* Free the tensors and class names of ds and zero it (a zeroed ds is fine). */
NB_API void nb_dataset_free(nb_dataset *ds);

/* Shuffle the samples of ds with nb_rng seeded by seed (Fisher-Yates) and
   split them: the last round(test_frac * n) of the shuffled order (halves
   rounded up) go to *test, the others to *train, each in shuffled order. The
   same seed gives the same split. test_frac must lie in [0, 1]; either part
   may be empty (n == 0). Both parts get copies of the rows, ds's classes and a
   copy of its class names; ds is not changed. train and test must be distinct
   from ds and each other. Returns 0, or nonzero with an error and *train and
   *test left as they were. */
NB_API int nb_dataset_split(const nb_dataset *ds, double test_frac, uint64_t seed, nb_dataset *train,
                            nb_dataset *test);
/* Per-feature mean and population standard deviation (divide by N) of ds->x,
   computed in double: two new 1-D tensors of D values in the dtype of ds->x,
   in the current scope. A column whose values are all equal gets that value
   as its mean and a standard deviation of 1, so that standardising maps it
   to exactly 0. Needs N >= 1;
   a non-finite mean or deviation is an error. Returns 0, or nonzero with an
   error and *mean and *std left as they were. */
NB_API int nb_dataset_feature_stats(const nb_dataset *ds, nb_tensor **mean, nb_tensor **std);
/* Replace ds->x by (x - mean) / std, per feature: mean and std are 1-D float
   tensors of D values (e.g. from nb_dataset_feature_stats of the training
   part, applied to both parts); every std must be finite and > 0. ds->x is
   replaced by a new tensor and the old one is freed (nb_free: views of it
   keep the old values). Returns 0, or nonzero with an error and ds
   unchanged. */
NB_API int nb_dataset_standardize(nb_dataset *ds, const nb_tensor *mean, const nb_tensor *std);

/* View the features of ds as images: x (N, D) becomes (N, c, h, w), c h w = D (IDX images: nb_load_idx
   then nb_dataset_to_images(ds, 1, 28, 28)). ds->d is unchanged; the batcher then gives (B, c, h, w).
   Returns 0, or nonzero with an error naming the sizes (ds unchanged). */
NB_API int nb_dataset_to_images(nb_dataset *ds, int64_t c, int64_t h, int64_t w);
/* Data augmentation for images x (B, C, H, W): each image shifted by (dy, dx), both uniform in [-pad, pad]
   (torchvision's RandomCrop(H, padding = pad): the image padded with zeros by pad on every side, then an
   H x W window taken), then, when flip, mirrored left to right with probability 1/2. Per image, in order:
   dy = nb_rng_next % (2 pad + 1) - pad, dx likewise, then (flip only) one nb_rng_uniform < 0.5. A new
   tensor of x's dtype in the current scope, never recorded (x is data). NULL with an error for another
   rank, pad < 0 or NULL rng. */
NB_API nb_tensor *nb_random_crop_flip(nb_tensor *x, int pad, bool flip, nb_rng *rng);

/* Mini-batches of a data set, reshuffled each epoch from rng when shuffle is set. */
typedef struct nb_batcher nb_batcher;
NB_API nb_batcher *nb_batcher_new(const nb_dataset *ds, int64_t batch, bool shuffle, nb_rng *rng);
/* The next batch (x (B, D), y (B)) in the current scope; false at the end of
   an epoch (the next call starts a new one). The last batch may be smaller. */
NB_API bool nb_batcher_next(nb_batcher *b, nb_tensor **x, nb_tensor **y);
NB_API void nb_batcher_free(nb_batcher *b);

/* ------------------------------------------------------------------ text */

/* Text as byte-level tokens: each byte is one token in [0, 256) (a
   vocabulary of 256 needs no tokenizer and covers any file, UTF-8 included:
   a character outside ASCII is several tokens). bytes is one block owned by
   the text (nb_text_free). */
typedef struct {
    uint8_t *bytes;
    int64_t n;
} nb_text;

/* Read a whole file as text (gunzipped when it ends in .gz and nabla was
   built with zlib). An empty file is fine here (n = 0); the batcher needs more.
   Returns 0, or nonzero with an error naming the file (*out unchanged). */
NB_API int nb_load_text(const char *path, nb_text *out);
/* A copy of len bytes of buf (buf may be NULL when len is 0). */
NB_API int nb_text_from_mem(const void *buf, size_t len, nb_text *out);
/* Free the bytes and zero t (a zeroed t is fine). */
NB_API void nb_text_free(nb_text *t);
/* Split by position, without shuffling (neighbouring windows overlap, so a
   random split would leak the validation text into training): the last
   round(val_frac n) bytes go to *val, the others to *train, each a copy.
   val_frac in [0, 1]; train and val distinct from t and each other. Returns
   0, or nonzero with an error and *train, *val unchanged. */
NB_API int nb_text_split(const nb_text *t, double val_frac, nb_text *train, nb_text *val);
/* A batch of `batch` random windows of T + 1 consecutive tokens: window b
   starts at s_b = floor(nb_rng_uniform(rng) (n - T)) (one draw per window, in
   order), *x (batch, T) holds tokens s_b .. s_b + T - 1 and *y (batch, T)
   the next token of each, s_b + 1 .. s_b + T, both NB_I64 in the current
   scope. Needs n >= T + 1, batch >= 1, T >= 1. Returns 0, or nonzero with an
   error naming the sizes (nothing made, rng not advanced). */
NB_API int nb_text_batch(const nb_text *t, int64_t batch, int64_t T, nb_rng *rng, nb_tensor **x, nb_tensor **y);

#ifdef __cplusplus
}
#endif
#endif
