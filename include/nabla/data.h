/*
 * nabla/data.h - data sets: IDX files (MNIST, Fashion-MNIST), CSV with a
 * label column, and a shuffling mini-batch iterator. Built on the public API.
 */
#ifndef NABLA_DATA_H
#define NABLA_DATA_H

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A labelled data set held in memory: x (N, D) features, y (N) NB_I64 labels.
   Both tensors live outside every scope until nb_dataset_free. */
typedef struct {
    nb_tensor *x, *y;
    int64_t n, d;
    int64_t classes; /* 1 + the largest label */
} nb_dataset;

/* Read an IDX image file (u8, any number of dimensions after the count) and
   its IDX label file; pixels are scaled to [0, 1] in dt. Files ending in .gz
   are read through zlib when nabla was built with it (else a clear error).
   Returns 0 or nonzero with an error naming the file and what is wrong. */
NB_API int nb_load_idx(const char *images, const char *labels, nb_dtype dt, nb_dataset *out);
/* A CSV file of numbers with a header line optional; label_col (negative
   counts from the end) holds integer labels 0..C-1, the other columns the
   features. */
NB_API int nb_load_csv(const char *path, int label_col, nb_dtype dt, nb_dataset *out);
NB_API void nb_dataset_free(nb_dataset *ds);

/* Mini-batches of a data set, reshuffled each epoch from rng when shuffle is set. */
typedef struct nb_batcher nb_batcher;
NB_API nb_batcher *nb_batcher_new(const nb_dataset *ds, int64_t batch, bool shuffle, nb_rng *rng);
/* The next batch (x (B, D), y (B)) in the current scope; false at the end of
   an epoch (the next call starts a new one). The last batch may be smaller. */
NB_API bool nb_batcher_next(nb_batcher *b, nb_tensor **x, nb_tensor **y);
NB_API void nb_batcher_free(nb_batcher *b);

#ifdef __cplusplus
}
#endif
#endif
