/*
 * fuzz_dataset.h - the invariants of a data set a loader returned successfully,
 * shared by the IDX and CSV targets. Include after fuzz.h.
 */
#ifndef NABLA_FUZZ_DATASET_H
#define NABLA_FUZZ_DATASET_H

#include "fuzz.h"
#include "nabla/data.h"

/* ds holds x (n, d) of dtype dt and y (n) NB_I64 labels in [0, classes), the
   largest being classes - 1 when exact_classes (else classes may be more: a
   list of class names was given); one epoch of the batcher (batch size from
   the input) visits every sample once. */
static inline void fz_check_dataset(const nb_dataset *ds, nb_dtype dt, bool exact_classes, fz_bytes *b) {
    FZ_ASSERT(ds->x && ds->y);
    FZ_ASSERT(nb_rank(ds->x) == 2 && nb_shape(ds->x)[0] == ds->n && nb_shape(ds->x)[1] == ds->d);
    FZ_ASSERT(nb_dtype_of(ds->x) == dt);
    FZ_ASSERT(nb_rank(ds->y) == 1 && nb_shape(ds->y)[0] == ds->n && nb_dtype_of(ds->y) == NB_I64);
    const int64_t *y = nb_data(ds->y);
    FZ_ASSERT(y != NULL || ds->n == 0);
    int64_t top = -1;
    for (int64_t i = 0; i < ds->n; i++) {
        FZ_ASSERT(y[i] >= 0 && y[i] < ds->classes);
        if (y[i] > top) top = y[i];
    }
    FZ_ASSERT(exact_classes ? ds->classes == top + 1 : ds->classes >= top + 1);
    nb_rng rng;
    nb_rng_seed(&rng, fz_u8(b));
    nb_batcher *bt = nb_batcher_new(ds, 1 + fz_pick(b, 8), fz_u8(b) & 1, &rng);
    FZ_ASSERT(bt != NULL);
    int64_t seen = 0;
    nb_tensor *x, *yb;
    nb_scope_begin();
    while (nb_batcher_next(bt, &x, &yb)) {
        FZ_ASSERT(nb_rank(x) == 2 && nb_shape(x)[1] == ds->d && nb_numel(yb) == nb_shape(x)[0]);
        seen += nb_shape(x)[0];
        FZ_ASSERT(seen <= ds->n);
    }
    nb_scope_end();
    FZ_ASSERT(seen == ds->n);
    nb_batcher_free(bt);
}

#endif /* NABLA_FUZZ_DATASET_H */
