/*
 * attention.c - the CPU's scaled dot-product attention, flash-style.
 *
 * Forward: the work is cut into (batch-head, block of BQ query rows) items. For each item the keys are walked
 * in blocks of BK: each row's scores against the block, the block's max, and the online softmax (the running
 * max m and sum l of exp(s - m), the accumulated output rescaled by exp(m_old - m_new) when the max grows); at
 * the end out = acc / l and lse = m + log l. No (Tq, Tk) matrix is ever stored. With causal, key blocks past
 * the block's last visible key are skipped.
 *
 * Backward (FlashAttention-2's, in two passes so that every sum has one owner): p is recomputed block by block
 * as exp(s - lse), D_i = sum(g_i out_i), dS = p (g v^T - D).
 *   pass 1, items (batch-head, query block): D, dq = scale dS k (summed over key blocks in order), dmask = dS;
 *   pass 2, items (batch-head, key block):   dv = p^T g and dk = scale dS^T q (summed over query rows in order).
 * Each output element is computed by one item, by the same operations whatever the cut: the bits do not
 * depend on the thread count. When every key fits one block (Tk <= BK, Tq <= BQ1: GPT-2 "small"'s T = 64),
 * one pass per batch-head does both: k and v transposed once, p and dS computed once per row, dq, dk and dv
 * summed in the same order as the two passes sum them (the same bits).
 *
 * f32 is computed in f32 (scores, weighted sums; exps in the forward by nbi_vexpf_shifted, the shift's rounding
 * folded in, in the backward by nbi_vexpf_fast of the score less lse rounded to f32; each row's sum of exps, its max
 * and lse in double); f64 in double with libm's exp. The bound against the
 * reference set (the same formulas row by row in double, rounded once) is in docs/OPS.md.
 */
#include <math.h>
#include <string.h>

#include "../../core/internal.h"
#include "cpu.h"
#include "threads.h"
#include "vec.h"
#include "vmath.h"

#undef NBI_CLONES
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(NBI_NO_CLONES)
/* The clones: AVX-512, AVX with FMA (every AVX2 CPU has it) and the baseline; the micro-kernels' MADD is the
   FMA instruction in the first two. */
#define NBI_CLONES __attribute__((target_clones("avx512f", "fma", "default")))
#else
#define NBI_CLONES
#endif

#define BQ 32 /* query rows per item */
#define BK 64 /* keys per block */
#define BQ1 256 /* query rows at most of the one-pass backward (every key in one block) */
#define RB 8  /* rows of a micro-kernel's tile */
#define JR 8  /* keys of the tile of outer (dk, dv) */
#define JB 32 /* keys (or features) of a micro-kernel tile: two AVX-512 vectors of floats */
#define ATTN_GRAIN_WORK (1 << 16) /* multiply-adds an item should hold at least before the work is split */

typedef struct {
    int64_t Tq, Tk, d, dv, msb, msq;
    bool causal;
    double scale;
    const void *q, *k, *v, *mask, *g, *o;
    void *out, *dq, *dk, *dvv, *dmask;
    double *lse, *D;
    nbi_rows lay[4]; /* q, k, v, g */
} attn_job;

#define attn_row nbi_rows_at

/* lay, or the contiguous layouts of q (BH, Tq, d), k (BH, Tk, d), v (BH, Tk, dv) and g (BH, Tq, dv). */
static void set_layouts(attn_job *J, const nbi_rows *lay) {
    if (lay) {
        memcpy(J->lay, lay, sizeof J->lay);
        return;
    }
    J->lay[0] = (nbi_rows){1, J->Tq * J->d, 0, J->d}, J->lay[1] = (nbi_rows){1, J->Tk * J->d, 0, J->d};
    J->lay[2] = (nbi_rows){1, J->Tk * J->dv, 0, J->dv}, J->lay[3] = (nbi_rows){1, J->Tq * J->dv, 0, J->dv};
}

static void vexp64(double *y, const double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = exp(x[i]);
}

#if VW == 16
/* t (16 x 16, rows ldt apart) = the block of x (rows ldx apart) transposed, t[c ldt + j] = x[j ldx + c]: four
   rounds of swapping the off-diagonal s x s sub-blocks (s = 8, 4, 2, 1) between rows i and i + s. */
static NBI_INLINE void tr16_f32(float *t, int64_t ldt, const float *x, int64_t ldx) {
    vf16 r[16], a, b;
    for (int i = 0; i < 16; i++) r[i] = VLD(x + i * ldx);
#define TR_LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define TR_HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define TR_LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define TR_HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define TR_LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define TR_HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define TR_LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define TR_HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define TR_ROUND(S)                                                                          \
    for (int i = 0; i < 16; i++)                                                             \
        if (!(i & S)) a = r[i], b = r[i + S], r[i] = SHUF(a, b, TR_LO##S), r[i + S] = SHUF(a, b, TR_HI##S);
    TR_ROUND(8)
    TR_ROUND(4)
    TR_ROUND(2)
    TR_ROUND(1)
#undef TR_ROUND
#undef TR_LO8
#undef TR_HI8
#undef TR_LO4
#undef TR_HI4
#undef TR_LO2
#undef TR_HI2
#undef TR_LO1
#undef TR_HI1
    for (int i = 0; i < 16; i++) VST(t + i * ldt, r[i]);
}
#define TR16 tr16_f32
#endif

#define T float
#define SUF _f32
#define VEXP nbi_vexpf_fast
#define MADD fmaf
#define VEXP_SHIFTED nbi_vexpf_shifted
#include "attention_tmpl.h"
#undef VEXP_SHIFTED
#undef T
#undef SUF
#undef VEXP
#undef MADD
#undef TR16

#define T double
#define SUF _f64
#define VEXP vexp64
#define MADD fma
#include "attention_tmpl.h"
#undef T
#undef SUF
#undef VEXP
#undef MADD

/* The grain (items per part at least) for items of `work` multiply-adds each. */
static int64_t grain_for(int64_t work) {
    int64_t g = work > 0 ? ATTN_GRAIN_WORK / work : 1;
    return g < 1 ? 1 : g;
}

int nbi_cpu_attention(nb_dtype dt, void *out, double *lse, const void *q, const void *k, const void *v,
                      const void *mask, int64_t msb, int64_t msq, int64_t BH, int64_t Tq, int64_t Tk, int64_t d,
                      int64_t dv, bool causal, double scale, const nbi_rows *lay) {
    attn_job J = {.Tq = Tq, .Tk = Tk, .d = d, .dv = dv, .msb = msb, .msq = msq, .causal = causal, .scale = scale,
                  .q = q, .k = k, .v = v, .mask = mask, .out = out, .lse = lse};
    set_layouts(&J, lay);
    int64_t nqb = (Tq + BQ - 1) / BQ;
    return nbi_parallel_for(BH * nqb, grain_for(BQ * Tk * (d + dv)), dt == NB_F32 ? fwd_part_f32 : fwd_part_f64,
                            &J);
}

int nbi_cpu_attention_grad(nb_dtype dt, void *dq, void *dk, void *dvv, void *dmask, const void *g, const void *q,
                           const void *k, const void *v, const void *out, const double *lse, const void *mask,
                           int64_t msb, int64_t msq, int64_t BH, int64_t Tq, int64_t Tk, int64_t d, int64_t dv,
                           bool causal, double scale, const nbi_rows *lay) {
    double *D = nbi_alloc(sizeof(double) * (size_t)(BH * Tq));
    if (!D) return -1;
    attn_job J = {.Tq = Tq, .Tk = Tk, .d = d, .dv = dv, .msb = msb, .msq = msq, .causal = causal, .scale = scale,
                  .q = q, .k = k, .v = v, .mask = mask, .g = g, .o = out, .dq = dq, .dk = dk, .dvv = dvv,
                  .dmask = dmask, .lse = (double *)(uintptr_t)lse, .D = D};
    set_layouts(&J, lay);
    int64_t nqb = (Tq + BQ - 1) / BQ, nkb = (Tk + BK - 1) / BK;
    if (Tk <= BK && Tq <= BQ1) { /* one key block: each batch-head in one pass (the same bits as the two) */
        int rc = nbi_parallel_for(BH, grain_for(Tq * Tk * (2 * d + 3 * dv)), dt == NB_F32 ? bw1_part_f32 : bw1_part_f64,
                                  &J);
        nbi_dealloc(D);
        return rc;
    }
    int rc = nbi_parallel_for(BH * nqb, grain_for(BQ * Tk * (d + 2 * dv)),
                              dt == NB_F32 ? bwq_part_f32 : bwq_part_f64, &J);
    if (rc == 0)
        rc = nbi_parallel_for(BH * nkb, grain_for(BK * Tq * (2 * d + 2 * dv)),
                              dt == NB_F32 ? bwk_part_f32 : bwk_part_f64, &J);
    nbi_dealloc(D);
    return rc;
}
