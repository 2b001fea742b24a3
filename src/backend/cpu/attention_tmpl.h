/*
 * attention_tmpl.h - the body of the CPU's attention kernels for one element type, included by attention.c
 * twice: T float (SUF f32, exps by nbi_vexpf) and T double (SUF f64, libm's exp).
 *
 * Scores are formed a query row at a time against a block of at most BK keys whose block of k was transposed
 * to kt (d, BK), so that the inner loops run along keys (or along features for the weighted sums) and
 * vectorise without reassociating a sum: every value is the same sum in the same order on every variant and
 * at every cut.
 */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

/* t (n, BK) = the block x[j0 .. j0 + nk) of x (Tk, n) transposed. */
static void FN(transpose)(T *t, const T *x, int64_t j0, int64_t nk, int64_t n) {
    for (int64_t j = 0; j < nk; j++)
        for (int64_t c = 0; c < n; c++) t[c * BK + j] = x[(j0 + j) * n + c];
}

/* s (nk) = scale q.kt + mask row (mrow: NULL for none), -inf for keys j0 + j > last (causal). Returns the max of s
   (NaN ignored). */
NBI_CLONES static T FN(scores)(T *s, const T *qrow, const T *kt, int64_t nk, int64_t d, T scale, const T *mrow,
                               int64_t j0, int64_t last) {
    for (int64_t j = 0; j < nk; j++) s[j] = 0;
    for (int64_t c = 0; c < d; c++) {
        const T a = qrow[c];
        const T *kr = kt + c * BK;
        for (int64_t j = 0; j < nk; j++) s[j] += a * kr[j];
    }
    for (int64_t j = 0; j < nk; j++) s[j] *= scale;
    if (mrow)
        for (int64_t j = 0; j < nk; j++) s[j] += mrow[j0 + j];
    for (int64_t j = last - j0 + 1; j < nk; j++) s[j] = -INFINITY;
    T m = -INFINITY;
    for (int64_t j = 0; j < nk; j++) m = s[j] > m ? s[j] : m;
    return m;
}

/* p (nk) = exp(s - sh) */
static void FN(exps)(T *p, T *s, int64_t nk, double sh) {
    for (int64_t j = 0; j < nk; j++) s[j] = (T)((double)s[j] - sh);
    VEXP(p, s, nk);
}

/* acc (n) += w (nk) x (nk rows of n, from row j0 of x) */
NBI_CLONES static void FN(wsum)(T *acc, const T *w, const T *x, int64_t j0, int64_t nk, int64_t n) {
    for (int64_t j = 0; j < nk; j++) {
        const T a = w[j];
        const T *xr = x + (j0 + j) * n;
        for (int64_t c = 0; c < n; c++) acc[c] += a * xr[c];
    }
}

/* The keys query row i sees: [0, last]; last = Tk - 1 without causal. */
static int64_t FN(last_key)(const attn_job *J, int64_t i) {
    return J->causal ? i + J->Tk - J->Tq : J->Tk - 1;
}

/* Forward: items [lo, hi) of (BH x query blocks). */
static int FN(fwd_part)(void *ctx, int64_t lo, int64_t hi) {
    const attn_job *J = ctx;
    const int64_t Tq = J->Tq, Tk = J->Tk, d = J->d, dv = J->dv, nqb = (Tq + BQ - 1) / BQ;
    T *kt = nbi_alloc(sizeof(T) * (size_t)(BK * d + BK + BQ * dv + 1));
    double *ml = nbi_alloc(sizeof(double) * 2 * BQ);
    if (!kt || !ml) {
        nbi_dealloc(kt), nbi_dealloc(ml);
        return -1;
    }
    T *s = kt + BK * d, *acc = s + BK;
    const T *q = J->q, *k = J->k, *v = J->v, *mask = J->mask;
    const T scale = (T)J->scale;
    for (int64_t it = lo; it < hi; it++) {
        const int64_t b = it / nqb, i0 = (it % nqb) * BQ, nq = Tq - i0 < BQ ? Tq - i0 : BQ;
        double *m = ml, *l = ml + BQ;
        for (int64_t r = 0; r < nq; r++) m[r] = -INFINITY, l[r] = 0;
        for (int64_t x = 0; x < nq * dv; x++) acc[x] = 0;
        const int64_t jend = FN(last_key)(J, i0 + nq - 1) + 1; /* keys any row of the block sees */
        for (int64_t j0 = 0; j0 < jend; j0 += BK) {
            const int64_t nk = jend - j0 < BK ? jend - j0 : BK;
            FN(transpose)(kt, k + b * Tk * d, j0, nk, d);
            for (int64_t r = 0; r < nq; r++) {
                const int64_t i = i0 + r, last = FN(last_key)(J, i);
                if (last < j0) continue; /* this row sees none of the block */
                const T *mrow = mask ? mask + b * J->msb + i * J->msq : NULL;
                double bm = (double)FN(scores)(s, q + (b * Tq + i) * d, kt, nk, d, scale, mrow, j0, last);
                double mn = bm > m[r] ? bm : m[r], sh = mn == -INFINITY ? 0.0 : mn;
                double alpha = m[r] == -INFINITY ? 0.0 : exp(m[r] - sh);
                FN(exps)(s, s, nk, sh);
                double sum = 0;
                for (int64_t j = 0; j < nk; j++) sum += (double)s[j];
                l[r] = l[r] * alpha + sum;
                T *ar = acc + r * dv;
                if (alpha != 1.0)
                    for (int64_t c = 0; c < dv; c++) ar[c] = (T)((double)ar[c] * alpha);
                FN(wsum)(ar, s, v + b * Tk * dv, j0, nk, dv);
                m[r] = mn;
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

/* For row i of batch-head b against keys [j0, j0 + nk): p (nk) = exp(s - lse) (0 past last), ds (nk) =
   p (g v^T - D); kt and vt the block's k and v transposed. */
static void FN(probs)(const attn_job *J, T *p, T *ds, const T *kt, const T *vt, int64_t b, int64_t i, int64_t j0,
                      int64_t nk) {
    const int64_t Tq = J->Tq, d = J->d, dv = J->dv, last = FN(last_key)(J, i);
    const T *mrow = J->mask ? (const T *)J->mask + b * J->msb + i * J->msq : NULL;
    (void)FN(scores)(p, (const T *)J->q + (b * Tq + i) * d, kt, nk, d, (T)J->scale, mrow, j0, last);
    FN(exps)(p, p, nk, J->lse[b * Tq + i]);
    for (int64_t j = last - j0 + 1; j < nk; j++) p[j] = 0;
    for (int64_t j = 0; j < nk; j++) ds[j] = 0;
    const T *gr = (const T *)J->g + (b * Tq + i) * dv;
    for (int64_t c = 0; c < dv; c++) {
        const T a = gr[c];
        const T *vr = vt + c * BK;
        for (int64_t j = 0; j < nk; j++) ds[j] += a * vr[j];
    }
    const T D = (T)J->D[b * Tq + i];
    for (int64_t j = 0; j < nk; j++) ds[j] = p[j] * (ds[j] - D);
}

/* Backward, first pass: items [lo, hi) of (BH x query blocks): D, dq and dmask. */
static int FN(bwq_part)(void *ctx, int64_t lo, int64_t hi) {
    const attn_job *J = ctx;
    const int64_t Tq = J->Tq, Tk = J->Tk, d = J->d, dv = J->dv, nqb = (Tq + BQ - 1) / BQ;
    T *kt = nbi_alloc(sizeof(T) * (size_t)(BK * (d + dv) + 2 * BK + BQ * d + 1));
    if (!kt) return -1;
    T *vt = kt + BK * d, *p = vt + BK * dv, *ds = p + BK, *acc = ds + BK;
    const T *k = J->k, *g = J->g, *o = J->o;
    for (int64_t it = lo; it < hi; it++) {
        const int64_t b = it / nqb, i0 = (it % nqb) * BQ, nq = Tq - i0 < BQ ? Tq - i0 : BQ;
        for (int64_t r = 0; r < nq; r++) {
            double D = 0;
            for (int64_t c = 0; c < dv; c++)
                D += (double)g[(b * Tq + i0 + r) * dv + c] * (double)o[(b * Tq + i0 + r) * dv + c];
            J->D[b * Tq + i0 + r] = D;
        }
        for (int64_t x = 0; x < nq * d; x++) acc[x] = 0;
        const int64_t jend = FN(last_key)(J, i0 + nq - 1) + 1;
        if (J->dmask) /* the keys no row of the block sees */
            for (int64_t r = 0; r < nq; r++)
                for (int64_t j = jend > 0 ? jend : 0; j < Tk; j++) ((T *)J->dmask)[(b * Tq + i0 + r) * Tk + j] = 0;
        for (int64_t j0 = 0; j0 < jend; j0 += BK) {
            const int64_t nk = jend - j0 < BK ? jend - j0 : BK;
            FN(transpose)(kt, k + b * Tk * d, j0, nk, d);
            FN(transpose)(vt, (const T *)J->v + b * Tk * dv, j0, nk, dv);
            for (int64_t r = 0; r < nq; r++) {
                const int64_t i = i0 + r;
                T *dm = J->dmask ? (T *)J->dmask + (b * Tq + i) * Tk + j0 : NULL;
                if (FN(last_key)(J, i) < j0) {
                    if (dm)
                        for (int64_t j = 0; j < nk; j++) dm[j] = 0;
                    continue;
                }
                FN(probs)(J, p, ds, kt, vt, b, i, j0, nk);
                if (dm)
                    for (int64_t j = 0; j < nk; j++) dm[j] = ds[j];
                FN(wsum)(acc + r * d, ds, k + b * Tk * d, j0, nk, d);
            }
        }
        T *dq = (T *)J->dq + (b * Tq + i0) * d;
        for (int64_t x = 0; x < nq * d; x++) dq[x] = (T)(J->scale * (double)acc[x]);
    }
    nbi_dealloc(kt);
    return 0;
}

/* acc (nk rows of n) += w (nk) as a column times x (n) */
NBI_CLONES static void FN(outer)(T *acc, const T *w, const T *x, int64_t nk, int64_t n) {
    for (int64_t j = 0; j < nk; j++) {
        const T a = w[j];
        T *ar = acc + j * n;
        for (int64_t c = 0; c < n; c++) ar[c] += a * x[c];
    }
}

/* Backward, second pass: items [lo, hi) of (BH x key blocks): dk and dv, summed over the query rows in order. */
static int FN(bwk_part)(void *ctx, int64_t lo, int64_t hi) {
    const attn_job *J = ctx;
    const int64_t Tq = J->Tq, Tk = J->Tk, d = J->d, dv = J->dv, nkb = (Tk + BK - 1) / BK;
    T *kt = nbi_alloc(sizeof(T) * (size_t)(2 * BK * (d + dv) + 2 * BK + 1));
    if (!kt) return -1;
    T *vt = kt + BK * d, *p = vt + BK * dv, *ds = p + BK, *ak = ds + BK, *av = ak + BK * d;
    const T *q = J->q, *g = J->g;
    for (int64_t it = lo; it < hi; it++) {
        const int64_t b = it / nkb, j0 = (it % nkb) * BK, nk = Tk - j0 < BK ? Tk - j0 : BK;
        for (int64_t x = 0; x < nk * d; x++) ak[x] = 0;
        for (int64_t x = 0; x < nk * dv; x++) av[x] = 0;
        FN(transpose)(kt, (const T *)J->k + b * Tk * d, j0, nk, d);
        FN(transpose)(vt, (const T *)J->v + b * Tk * dv, j0, nk, dv);
        int64_t i = J->causal ? j0 - (Tk - Tq) : 0; /* the first query that sees key j0 */
        for (i = i < 0 ? 0 : i; i < Tq; i++) {
            FN(probs)(J, p, ds, kt, vt, b, i, j0, nk);
            FN(outer)(av, p, g + (b * Tq + i) * dv, nk, dv);
            FN(outer)(ak, ds, q + (b * Tq + i) * d, nk, d);
        }
        T *dk = (T *)J->dk + (b * Tk + j0) * d, *dvv = (T *)J->dvv + (b * Tk + j0) * dv;
        for (int64_t x = 0; x < nk * d; x++) dk[x] = (T)(J->scale * (double)ak[x]);
        for (int64_t x = 0; x < nk * dv; x++) dvv[x] = av[x];
    }
    nbi_dealloc(kt);
    return 0;
}

#undef FN
#undef CAT
#undef CAT_
