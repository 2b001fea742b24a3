/*
 * misc.c - the CPU's index kernels: index checks and moves (select, gather
 * and their scatter-add gradients; whole rows moved at once when they can be).
 * Batched LU, cumulative sums and random fills are the reference set's
 * (src/backend/ref/ref.h).
 */
#include <math.h>
#include <string.h>

#include "../../core/internal.h"
#include "cpu.h"

/* -------------------------------------------------------------- index -- */

/* Offset in elements of row-major position i of a. */
static int64_t offset_of(const nbi_arr *a, int64_t i) {
    int64_t off = 0;
    for (int d = a->rank - 1; d >= 0; d--) {
        off += (i % a->shape[d]) * a->strides[d];
        i /= a->shape[d];
    }
    return off;
}

int64_t nbi_cpu_index_check(const nbi_arr *idx, int64_t lo, int64_t hi, int64_t *bad) {
    for (int64_t i = 0; i < idx->numel; i++) {
        int64_t v = *(const int64_t *)(const void *)(idx->data + offset_of(idx, i) * 8);
        if (v < lo || v >= hi) {
            *bad = v;
            return i;
        }
    }
    return -1;
}

static int64_t idx_at(const nbi_arr *idx, int64_t pos, int64_t n) {
    int64_t v = *(const int64_t *)(const void *)(idx->data + offset_of(idx, pos) * 8);
    return v < 0 ? v + n : v;
}

static bool arr_contig(const nbi_arr *t) { return nbi_geom_contig(t->rank, t->shape, t->strides, t->numel); }

void nbi_cpu_index_move(const nbi_arr *dst, const nbi_arr *src, const nbi_arr *idx, int ax, bool elementwise,
                        bool add, bool index_on_dst) {
    const nbi_arr *walk = index_on_dst ? src : dst; /* the operand whose shape we iterate */
    const nbi_arr *other = index_on_dst ? dst : src;
    int64_t n = other->shape[ax], es = (int64_t)nbi_dsize(dst->dtype);
    if (!elementwise && arr_contig(src) && arr_contig(dst) && src->dtype == dst->dtype) {
        /* Whole rows: a batch of samples, an embedding lookup and its gradient. */
        int64_t outer = 1, inner = 1, nw = walk->shape[ax];
        for (int d = 0; d < ax; d++) outer *= walk->shape[d];
        for (int d = ax + 1; d < walk->rank; d++) inner *= walk->shape[d];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < nw; j++) {
                int64_t k = idx_at(idx, j, n);
                int64_t ow = (o * nw + j) * inner, oo = (o * n + k) * inner;
                const char *ps = src->data + (index_on_dst ? ow : oo) * es;
                char *pd = dst->data + (index_on_dst ? oo : ow) * es;
                if (!add)
                    memcpy(pd, ps, (size_t)(inner * es));
                else if (dst->dtype == NB_F32)
                    for (int64_t i = 0; i < inner; i++) ((float *)(void *)pd)[i] += ((const float *)(const void *)ps)[i];
                else
                    for (int64_t i = 0; i < inner; i++) ((double *)(void *)pd)[i] += ((const double *)(const void *)ps)[i];
            }
        return;
    }
    int64_t coord[NB_MAX_RANK] = {0};
    for (int64_t e = 0; e < walk->numel; e++) {
        int64_t rem = e;
        for (int d = walk->rank - 1; d >= 0; d--) {
            coord[d] = rem % walk->shape[d];
            rem /= walk->shape[d];
        }
        int64_t k = elementwise ? idx_at(idx, e, n) : idx_at(idx, coord[ax], n);
        int64_t ow = 0, oo = 0;
        for (int d = 0; d < walk->rank; d++) {
            ow += coord[d] * walk->strides[d];
            oo += (d == ax ? k : coord[d]) * other->strides[d];
        }
        const char *ps = src->data + (index_on_dst ? ow : oo) * es;
        char *pd = dst->data + (index_on_dst ? oo : ow) * es;
        if (add)
            nbi_store(dst->dtype, pd, nbi_load(dst->dtype, pd) + nbi_load(src->dtype, ps));
        else
            memcpy(pd, ps, (size_t)es); /* one dtype: an exact copy, i64 included */
    }
}
