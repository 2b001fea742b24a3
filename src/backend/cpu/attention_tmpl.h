/*
 * attention_tmpl.h - the body of the CPU's attention kernels for one element type, included by attention.c
 * twice: T float (SUF f32, exps by nbi_vexpf) and T double (SUF f64, libm's exp).
 *
 * Rows are taken RB at a time against a block of at most BK keys whose k (and v) were transposed to kt (d, BK),
 * zero-padded to BK columns. The micro-kernels keep an RB x JB tile of sums in registers: dots (scores, and
 * g v^T) runs along the features for each tile of keys, wsum (p v, dS k) along the keys for each tile of
 * features, outer (p^T g, dS^T q) along the rows for each key and tile of features. Every value is one sum in a
 * fixed order (features, keys or rows in increasing order), each step one fused multiply-add (MADD: fmaf or
 * fma, the FMA instruction in the AVX-512 and FMA clones, the C library's correctly rounded function in the
 * baseline one), whatever the vector width the clones pick and however the items are cut: the bits depend on
 * neither.
 */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

/* t (n, BK) = the block x[j0 .. j0 + nk) of x (Tk, n; rows ld apart) transposed; columns nk .. BK zero. */
NBI_CLONES static void FN(transpose)(T *t, const T *x, int64_t j0, int64_t nk, int64_t n, int64_t ld) {
    for (int64_t c = 0; c < n; c++)
        for (int64_t j = nk; j < BK; j++) t[c * BK + j] = 0;
    int64_t jf = 0, cf = 0; /* whole 16 x 16 blocks below jf and cf (TR16: the f32 one) */
#ifdef TR16
    jf = nk / 16 * 16, cf = n / 16 * 16;
    for (int64_t j = 0; j < jf; j += 16)
        for (int64_t c = 0; c < cf; c += 16) TR16(t + c * BK + j, BK, x + (j0 + j) * ld + c, ld);
#endif
    for (int64_t j = 0; j < nk; j++)
        for (int64_t c = j < jf ? cf : 0; c < n; c++) t[c * BK + j] = x[(j0 + j) * ld + c];
}

/* s[r] (rows BK apart, r < RB) = the dots of rows xr[r] (n) with the columns [0, nkp) of kt (n, BK), nkp a
   multiple of JB; each summed over the features in order. */
NBI_CLONES static void FN(dots)(T *s, const T *const *xr, const T *kt, int64_t n, int64_t nkp) {
    for (int64_t jb = 0; jb < nkp; jb += JB) {
        T acc[RB][JB];
        for (int r = 0; r < RB; r++)
            for (int l = 0; l < JB; l++) acc[r][l] = 0;
        for (int64_t c = 0; c < n; c++) {
            const T *kr = kt + c * BK + jb;
            for (int r = 0; r < RB; r++) {
                const T a = xr[r][c];
                for (int l = 0; l < JB; l++) acc[r][l] = MADD(a, kr[l], acc[r][l]);
            }
        }
        for (int r = 0; r < RB; r++)
            for (int l = 0; l < JB; l++) s[r * BK + jb + l] = acc[r][l];
    }
}

/* acc[r] (n each, rows lda apart, r < RB) += sum over keys j < nk in order of w[r BK + j] x[j] (x rows ldx apart). */
NBI_CLONES static void FN(wsum)(T *acc, int64_t lda, const T *w, const T *x, int64_t ldx, int64_t nk, int64_t n) {
    int64_t c0 = 0;
    for (; c0 + JB <= n; c0 += JB) {
        T a[RB][JB];
        for (int r = 0; r < RB; r++)
            for (int l = 0; l < JB; l++) a[r][l] = acc[r * lda + c0 + l];
        for (int64_t j = 0; j < nk; j++) {
            const T *xr = x + j * ldx + c0;
            for (int r = 0; r < RB; r++) {
                const T p = w[r * BK + j];
                for (int l = 0; l < JB; l++) a[r][l] = MADD(p, xr[l], a[r][l]);
            }
        }
        for (int r = 0; r < RB; r++)
            for (int l = 0; l < JB; l++) acc[r * lda + c0 + l] = a[r][l];
    }
    for (int r = 0; r < RB; r++)
        for (int64_t c = c0; c < n; c++) {
            T a = acc[r * lda + c];
            for (int64_t j = 0; j < nk; j++) a = MADD(w[r * BK + j], x[j * ldx + c], a);
            acc[r * lda + c] = a;
        }
}

/* acc[j] (n each, j < nk) += sum over rows r < nr in order of w[r BK + j] xr[r] (n); tiles of JR keys by JB
   features. */
NBI_CLONES static void FN(outer)(T *acc, const T *w, const T *const *xr, int nr, int64_t nk, int64_t n) {
    int64_t j = 0;
    for (; j + JR <= nk; j += JR) {
        int64_t c0 = 0;
        for (; c0 + JB <= n; c0 += JB) {
            T a[JR][JB];
            for (int u = 0; u < JR; u++)
                for (int l = 0; l < JB; l++) a[u][l] = acc[(j + u) * n + c0 + l];
            for (int r = 0; r < nr; r++) {
                const T *x = xr[r] + c0;
                for (int u = 0; u < JR; u++) {
                    const T p = w[r * BK + j + u];
                    for (int l = 0; l < JB; l++) a[u][l] = MADD(p, x[l], a[u][l]);
                }
            }
            for (int u = 0; u < JR; u++)
                for (int l = 0; l < JB; l++) acc[(j + u) * n + c0 + l] = a[u][l];
        }
        for (int u = 0; u < JR; u++)
            for (int64_t c = c0; c < n; c++) {
                T a = acc[(j + u) * n + c];
                for (int r = 0; r < nr; r++) a = MADD(w[r * BK + j + u], xr[r][c], a);
                acc[(j + u) * n + c] = a;
            }
    }
    for (; j < nk; j++)
        for (int64_t c = 0; c < n; c++) {
            T a = acc[j * n + c];
            for (int r = 0; r < nr; r++) a = MADD(w[r * BK + j], xr[r][c], a);
            acc[j * n + c] = a;
        }
}

/* The last key query row i sees (Tk - 1 without causal; below 0: none). */
static int64_t FN(last_key)(const attn_job *J, int64_t i) {
    return J->causal ? i + J->Tk - J->Tq : J->Tk - 1;
}

/* Row r of a group: s (nk) = s scale + mask row, -inf past the row's last key; returns the max (NaN ignored). */
NBI_CLONES static T FN(finish_scores)(const attn_job *J, T *s, int64_t b, int64_t i, int64_t j0, int64_t nk) {
    const T scale = (T)J->scale;
    for (int64_t j = 0; j < nk; j++) s[j] *= scale;
    if (J->mask) {
        const T *mrow = (const T *)J->mask + b * J->msb + i * J->msq + j0;
        for (int64_t j = 0; j < nk; j++) s[j] += mrow[j];
    }
    for (int64_t j = FN(last_key)(J, i) - j0 + 1; j < nk; j++) s[j] = -INFINITY;
    T mx[16], m = -INFINITY; /* 16 lanes, then the lanes and the tail: the max, whatever the order */
    for (int l = 0; l < 16; l++) mx[l] = -INFINITY;
    int64_t j = 0;
    for (; j + 16 <= nk; j += 16)
        for (int l = 0; l < 16; l++) mx[l] = s[j + l] > mx[l] ? s[j + l] : mx[l];
    for (; j < nk; j++) m = s[j] > m ? s[j] : m;
    for (int l = 0; l < 16; l++) m = mx[l] > m ? mx[l] : m;
    return m;
}

/* p (nk) = exp(s - sh), from s rounded to T after the shift */
static void FN(exps)(T *p, T *s, int64_t nk, double sh) {
    for (int64_t j = 0; j < nk; j++) s[j] = (T)((double)s[j] - sh);
    VEXP(p, s, nk);
}

/* p (n) = exp(p - sh) in place, sh a max of the row's values (a T, or 0); returns the sum of p in double. */
static double FN(exps_sum)(T *p, int64_t n, double sh) {
#ifdef VEXP_SHIFTED
    return VEXP_SHIFTED(p, p, n, (T)sh); /* one pass (vmath.h): the shift's rounding folded in, 16-lane sum */
#else
    FN(exps)(p, p, n, sh);
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += (double)p[j];
    return sum;
#endif
}

/* Row pointers of a group of nr rows from row i0 of x (rows n apart); the missing ones repeat row i0. */
static void FN(rows)(const T **xr, const T *x, int64_t i0, int nr, int64_t n) {
    for (int r = 0; r < RB; r++) xr[r] = x + (i0 + (r < nr ? r : 0)) * n;
}

/* Forward: items [lo, hi) of (BH x query blocks). */
NBI_CLONES static int FN(fwd_part)(void *ctx, int64_t lo, int64_t hi) {
    const attn_job *J = ctx;
    const int64_t Tq = J->Tq, d = J->d, dv = J->dv, nqb = (Tq + BQ - 1) / BQ;
    T *kt = nbi_alloc(sizeof(T) * (size_t)(BK * d + RB * BK + BQ * dv));
    double *ml = nbi_alloc(sizeof(double) * 2 * BQ);
    if (!kt || !ml) {
        nbi_dealloc(kt), nbi_dealloc(ml);
        return -1;
    }
    T *s = kt + BK * d, *acc = s + RB * BK;
    const T *q = J->q, *k = J->k, *v = J->v;
    for (int64_t it = lo; it < hi; it++) {
        const int64_t b = it / nqb, i0 = (it % nqb) * BQ, nq = Tq - i0 < BQ ? Tq - i0 : BQ;
        double *m = ml, *l = ml + BQ;
        for (int64_t r = 0; r < nq; r++) m[r] = -INFINITY, l[r] = 0;
        for (int64_t x = 0; x < BQ * dv; x++) acc[x] = 0;
        const int64_t jend = FN(last_key)(J, i0 + nq - 1) + 1; /* keys any row of the block sees */
        for (int64_t j0 = 0; j0 < jend; j0 += BK) {
            const int64_t nk = jend - j0 < BK ? jend - j0 : BK, nkp = (nk + JB - 1) / JB * JB;
            FN(transpose)(kt, k + attn_row(&J->lay[1], b, 0), j0, nk, d, J->lay[1].rs);
            for (int64_t g0 = 0; g0 < nq; g0 += RB) {
                const int nr = nq - g0 < RB ? (int)(nq - g0) : RB;
                if (FN(last_key)(J, i0 + g0 + nr - 1) < j0) continue; /* no row of the group sees the block */
                const T *qr[RB];
                FN(rows)(qr, q + attn_row(&J->lay[0], b, 0), i0 + g0, nr, J->lay[0].rs);
                FN(dots)(s, qr, kt, d, nkp);
                for (int r = 0; r < RB; r++) {
                    const int64_t R = g0 + r, i = i0 + R;
                    T *sr = s + r * BK;
                    if (r >= nr || FN(last_key)(J, i) < j0) { /* a missing row, or one that sees none of it */
                        for (int64_t j = 0; j < nk; j++) sr[j] = 0;
                        continue;
                    }
                    double bm = (double)FN(finish_scores)(J, sr, b, i, j0, nk);
                    double mn = bm > m[R] ? bm : m[R], sh = mn == -INFINITY ? 0.0 : mn;
                    double alpha = m[R] == -INFINITY ? 0.0 : exp(m[R] - sh);
                    const int64_t seen = FN(last_key)(J, i) - j0 + 1, ne = seen < nk ? seen : nk;
                    const double sum = FN(exps_sum)(sr, ne, sh); /* the keys past the row's last: exp(-inf), 0 */
                    for (int64_t j = ne; j < nk; j++) sr[j] = 0;
                    l[R] = l[R] * alpha + sum;
                    T *ar = acc + R * dv;
                    if (alpha != 1.0)
                        for (int64_t c = 0; c < dv; c++) ar[c] = (T)((double)ar[c] * alpha);
                    m[R] = mn;
                }
                FN(wsum)(acc + g0 * dv, dv, s, v + attn_row(&J->lay[2], b, j0), J->lay[2].rs, nk, dv);
            }
        }
        T *o = (T *)J->out + (b * Tq + i0) * dv;
        for (int64_t r = 0; r < nq; r++) {
            for (int64_t c = 0; c < dv; c++) o[r * dv + c] = (T)((double)acc[r * dv + c] / l[r]);
            J->lse[b * Tq + i0 + r] = m[r] + log(l[r]);
        }
    }
    nbi_dealloc(kt), nbi_dealloc(ml);
    return 0;
}

/* For the nr rows from row i0 of batch-head b against keys [j0, j0 + nk): p[r] = exp(s - lse) (0 past the row's
   last key), ds[r] = p (g v^T - D) (rows BK apart; rows of the group past nr, and rows that see no key of the
   block, all 0); kt and vt the block's k and v transposed. */
NBI_CLONES static void FN(probs)(const attn_job *J, T *p, T *ds, const T *kt, const T *vt, int64_t b, int64_t i0, int nr,
                      int64_t j0, int64_t nk) {
    const int64_t Tq = J->Tq, d = J->d, dv = J->dv, nkp = (nk + JB - 1) / JB * JB;
    const T *qr[RB], *gr[RB];
    FN(rows)(qr, (const T *)J->q + attn_row(&J->lay[0], b, 0), i0, nr, J->lay[0].rs);
    FN(rows)(gr, (const T *)J->g + attn_row(&J->lay[3], b, 0), i0, nr, J->lay[3].rs);
    FN(dots)(p, qr, kt, d, nkp);
    FN(dots)(ds, gr, vt, dv, nkp);
    for (int r = 0; r < RB; r++) {
        const int64_t i = i0 + r;
        T *pr = p + r * BK, *dr = ds + r * BK;
        const int64_t last = r < nr ? FN(last_key)(J, i) : -1;
        if (last < j0) {
            for (int64_t j = 0; j < nk; j++) pr[j] = 0, dr[j] = 0;
            continue;
        }
        (void)FN(finish_scores)(J, pr, b, i, j0, nk);
        const int64_t ne = last - j0 + 1 < nk ? last - j0 + 1 : nk;
        FN(exps)(pr, pr, ne, J->lse[b * Tq + i]);
        for (int64_t j = ne; j < nk; j++) pr[j] = 0;
        const T D = (T)J->D[b * Tq + i];
        for (int64_t j = 0; j < nk; j++) dr[j] = pr[j] * (dr[j] - D);
    }
}

/* D (rows) = sum over the features of g o, in double, for the nq rows from row i0 of batch-head b: 8 lanes (feature c
   to lane c % 8) over the whole blocks of 8, the lanes added in order, then the rest in order. */
NBI_CLONES static void FN(deltas)(const attn_job *J, int64_t b, int64_t i0, int64_t nq) {
    const T *g = (const T *)J->g + attn_row(&J->lay[3], b, i0), *o = (const T *)J->o + (b * J->Tq + i0) * J->dv;
    const int64_t dv = J->dv, d8 = dv / 8 * 8;
    for (int64_t r = 0; r < nq; r++) {
        const T *gr = g + r * J->lay[3].rs, *orow = o + r * dv;
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, D = 0;
        for (int64_t c = 0; c < d8; c += 8)
            for (int l = 0; l < 8; l++) acc[l] += (double)gr[c + l] * (double)orow[c + l];
        for (int l = 0; l < 8; l++) D += acc[l];
        for (int64_t c = d8; c < dv; c++) D += (double)gr[c] * (double)orow[c];
        J->D[b * J->Tq + i0 + r] = D;
    }
}

/* y (n) = scale acc, each rounded once from double. */
static void FN(scaled)(T *y, const T *acc, int64_t n, double scale) {
    for (int64_t x = 0; x < n; x++) y[x] = (T)(scale * (double)acc[x]);
}

/* Backward, first pass: items [lo, hi) of (BH x query blocks): D, dq and dmask. */
NBI_CLONES static int FN(bwq_part)(void *ctx, int64_t lo, int64_t hi) {
    const attn_job *J = ctx;
    const int64_t Tq = J->Tq, Tk = J->Tk, d = J->d, dv = J->dv, nqb = (Tq + BQ - 1) / BQ;
    T *kt = nbi_alloc(sizeof(T) * (size_t)(BK * (d + dv) + 2 * RB * BK + BQ * d));
    if (!kt) return -1;
    T *vt = kt + BK * d, *p = vt + BK * dv, *ds = p + RB * BK, *acc = ds + RB * BK;
    const T *k = J->k;
    for (int64_t it = lo; it < hi; it++) {
        const int64_t b = it / nqb, i0 = (it % nqb) * BQ, nq = Tq - i0 < BQ ? Tq - i0 : BQ;
        FN(deltas)(J, b, i0, nq);
        for (int64_t x = 0; x < BQ * d; x++) acc[x] = 0;
        const int64_t jend = FN(last_key)(J, i0 + nq - 1) + 1;
        if (J->dmask) /* the keys no row of the block sees */
            for (int64_t r = 0; r < nq; r++)
                for (int64_t j = jend > 0 ? jend : 0; j < Tk; j++) ((T *)J->dmask)[(b * Tq + i0 + r) * Tk + j] = 0;
        for (int64_t j0 = 0; j0 < jend; j0 += BK) {
            const int64_t nk = jend - j0 < BK ? jend - j0 : BK;
            FN(transpose)(kt, k + attn_row(&J->lay[1], b, 0), j0, nk, d, J->lay[1].rs);
            FN(transpose)(vt, (const T *)J->v + attn_row(&J->lay[2], b, 0), j0, nk, dv, J->lay[2].rs);
            for (int64_t g0 = 0; g0 < nq; g0 += RB) {
                const int nr = nq - g0 < RB ? (int)(nq - g0) : RB;
                FN(probs)(J, p, ds, kt, vt, b, i0 + g0, nr, j0, nk);
                if (J->dmask)
                    for (int r = 0; r < nr; r++) {
                        T *dm = (T *)J->dmask + (b * Tq + i0 + g0 + r) * Tk + j0;
                        for (int64_t j = 0; j < nk; j++) dm[j] = ds[r * BK + j];
                    }
                FN(wsum)(acc + g0 * d, d, ds, k + attn_row(&J->lay[1], b, j0), J->lay[1].rs, nk, d);
            }
        }
        FN(scaled)((T *)J->dq + (b * Tq + i0) * d, acc, nq * d, J->scale);
    }
    nbi_dealloc(kt);
    return 0;
}

/* Backward, second pass: items [lo, hi) of (BH x key blocks): dk and dv, summed over the query rows in order
   (the rows taken BQ at a time: their p and dS first, then their terms added to dk and dv row by row). */
NBI_CLONES static int FN(bwk_part)(void *ctx, int64_t lo, int64_t hi) {
    const attn_job *J = ctx;
    const int64_t Tq = J->Tq, Tk = J->Tk, d = J->d, dv = J->dv, nkb = (Tk + BK - 1) / BK;
    T *kt = nbi_alloc(sizeof(T) * (size_t)(2 * BK * (d + dv) + 2 * BQ * BK));
    if (!kt) return -1;
    T *vt = kt + BK * d, *p = vt + BK * dv, *ds = p + BQ * BK, *ak = ds + BQ * BK, *av = ak + BK * d;
    const T *q = J->q, *g = J->g;
    for (int64_t it = lo; it < hi; it++) {
        const int64_t b = it / nkb, j0 = (it % nkb) * BK, nk = Tk - j0 < BK ? Tk - j0 : BK;
        for (int64_t x = 0; x < nk * d; x++) ak[x] = 0;
        for (int64_t x = 0; x < nk * dv; x++) av[x] = 0;
        FN(transpose)(kt, (const T *)J->k + attn_row(&J->lay[1], b, 0), j0, nk, d, J->lay[1].rs);
        FN(transpose)(vt, (const T *)J->v + attn_row(&J->lay[2], b, 0), j0, nk, dv, J->lay[2].rs);
        int64_t i = J->causal ? j0 - (Tk - Tq) : 0; /* the first query that sees key j0 */
        for (i = i < 0 ? 0 : i; i < Tq; i += BQ) {
            const int nc = Tq - i < BQ ? (int)(Tq - i) : BQ;
            const T *qr[BQ], *gr[BQ];
            for (int r = 0; r < nc; r++)
                qr[r] = q + attn_row(&J->lay[0], b, i + r), gr[r] = g + attn_row(&J->lay[3], b, i + r);
            for (int r0 = 0; r0 < nc; r0 += RB)
                FN(probs)(J, p + r0 * BK, ds + r0 * BK, kt, vt, b, i + r0, nc - r0 < RB ? nc - r0 : RB, j0, nk);
            FN(outer)(av, p, gr, nc, nk, dv);
            FN(outer)(ak, ds, qr, nc, nk, d);
        }
        FN(scaled)((T *)J->dk + (b * Tk + j0) * d, ak, nk * d, J->scale);
        memcpy((T *)J->dvv + (b * Tk + j0) * dv, av, sizeof(T) * (size_t)(nk * dv));
    }
    nbi_dealloc(kt);
    return 0;
}

/* Backward in one pass, when every key fits one block (Tk <= BK) and the queries BQ1: items [lo, hi) of BH, each a
   whole batch-head. Its k and v are transposed once and every row's p and dS computed once (the two passes above
   compute them twice), then dq, dk and dv are summed as the two passes sum them (dq over the keys of the row, dk
   and dv over the query rows in order, from the first row that sees a key): the same bits. */
NBI_CLONES static int FN(bw1_part)(void *ctx, int64_t lo, int64_t hi) {
    const attn_job *J = ctx;
    const int64_t Tq = J->Tq, Tk = J->Tk, d = J->d, dv = J->dv;
    const int64_t Tr = (Tq + RB - 1) / RB * RB; /* rows of whole groups: probs and wsum write RB rows a group */
    T *kt = nbi_alloc(sizeof(T) * (size_t)(BK * (d + dv) + 2 * Tr * BK + Tr * d + Tk * (d + dv)));
    if (!kt) return -1;
    T *vt = kt + BK * d, *p = vt + BK * dv, *ds = p + Tr * BK, *acc = ds + Tr * BK, *ak = acc + Tr * d,
      *av = ak + Tk * d;
    const T *q = J->q, *k = J->k, *g = J->g;
    const T *qr[BQ1], *gr[BQ1];
    for (int64_t b = lo; b < hi; b++) {
        FN(deltas)(J, b, 0, Tq);
        for (int64_t x = 0; x < Tr * d; x++) acc[x] = 0;
        for (int64_t x = 0; x < Tk * d; x++) ak[x] = 0;
        for (int64_t x = 0; x < Tk * dv; x++) av[x] = 0;
        const int64_t jend = FN(last_key)(J, Tq - 1) + 1 < Tk ? FN(last_key)(J, Tq - 1) + 1 : Tk;
        if (J->dmask) /* the keys no row sees */
            for (int64_t r = 0; r < Tq; r++)
                for (int64_t j = jend > 0 ? jend : 0; j < Tk; j++) ((T *)J->dmask)[(b * Tq + r) * Tk + j] = 0;
        int64_t i1 = J->causal ? -(Tk - Tq) : 0; /* the first query that sees key 0 */
        i1 = i1 < 0 ? 0 : i1;
        if (jend > 0) {
            FN(transpose)(kt, k + attn_row(&J->lay[1], b, 0), 0, jend, d, J->lay[1].rs);
            FN(transpose)(vt, (const T *)J->v + attn_row(&J->lay[2], b, 0), 0, jend, dv, J->lay[2].rs);
            for (int64_t g0 = 0; g0 < Tq; g0 += RB) {
                const int nr = Tq - g0 < RB ? (int)(Tq - g0) : RB;
                FN(probs)(J, p + g0 * BK, ds + g0 * BK, kt, vt, b, g0, nr, 0, jend);
                if (J->dmask)
                    for (int r = 0; r < nr; r++) {
                        T *dm = (T *)J->dmask + (b * Tq + g0 + r) * Tk;
                        for (int64_t j = 0; j < jend; j++) dm[j] = ds[(g0 + r) * BK + j];
                    }
                FN(wsum)(acc + g0 * d, d, ds + g0 * BK, k + attn_row(&J->lay[1], b, 0), J->lay[1].rs, jend, d);
            }
            for (int64_t r = i1; r < Tq; r++)
                qr[r - i1] = q + attn_row(&J->lay[0], b, r), gr[r - i1] = g + attn_row(&J->lay[3], b, r);
            FN(outer)(av, p + i1 * BK, gr, (int)(Tq - i1), jend, dv);
            FN(outer)(ak, ds + i1 * BK, qr, (int)(Tq - i1), jend, d);
        }
        FN(scaled)((T *)J->dq + b * Tq * d, acc, Tq * d, J->scale);
        FN(scaled)((T *)J->dk + b * Tk * d, ak, Tk * d, J->scale);
        memcpy((T *)J->dvv + b * Tk * dv, av, sizeof(T) * (size_t)(Tk * dv));
    }
    nbi_dealloc(kt);
    return 0;
}

#undef FN
#undef CAT
#undef CAT_
