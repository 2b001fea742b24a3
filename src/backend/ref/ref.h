/*
 * ref.h - reference kernels the fast CPU set uses as they are, having no faster
 * version of its own (batched LU, cumulative sums, random fills): one copy of
 * each, in src/backend/ref/ref.c, with the contract of its slot in backend.h.
 */
#ifndef NABLA_BACKEND_REF_H
#define NABLA_BACKEND_REF_H

#include "../backend.h"

NBI_API int nbi_ref_linalg(nbi_linalg_kind kind, const nbi_arr *out, const nbi_arr *x, int64_t *bad);
NBI_API void nbi_ref_cumsum(nb_dtype dt, void *x, int64_t outer, int64_t n, int64_t inner);
NBI_API void nbi_ref_bernoulli(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double p, double keep);
NBI_API void nbi_ref_uniform(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double lo, double hi);
NBI_API void nbi_ref_normal(nb_dtype dt, void *x, int64_t n, nb_rng *rng, double mean, double std);

#endif
