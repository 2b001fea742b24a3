/*
 * test_casts.c - doubles stored in NB_I64 tensors. A value that is finite and
 * in [-2^63, 2^63) is truncated toward zero (as C and torch's .to(int64) do);
 * NaN, an infinity or anything outside that range has no i64 value, so
 * nb_from_f64, nb_scalar, nb_full and nb_to refuse it with a message naming
 * the function, the value and (for tensors) its index, instead of converting
 * it (undefined behaviour in C). Float dtypes take every double (an f32 rounds
 * what is out of its range to an infinity, as IEEE 754 says).
 */
#include "harness.h"

static const double bad[] = {NAN, INFINITY, -INFINITY, 9223372036854775808.0 /* 2^63 */, -9.3e18, 1e300};

static void test_from_f64(void) {
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        double v[4] = {1, -2, 3, 4};
        v[2] = bad[k];
        nb_clear_error();
        CHECK(nb_from_f64(NB_I64, 1, (int64_t[]){4}, v) == NULL);
        CHECK_ERR("nb_from_f64: element (2,) is");
        CHECK(nb_from_f64(NB_I64, 2, (int64_t[]){2, 2}, v) == NULL);
        CHECK_ERR("element (1,0)");
        CHECK(nb_scalar(NB_I64, bad[k]) == NULL);
        CHECK_ERR("nb_scalar: value");
        CHECK(nb_full(NB_I64, 2, (int64_t[]){2, 3}, bad[k]) == NULL);
        CHECK_ERR("nb_full: value");
    }
    /* the message gives the value */
    CHECK(nb_scalar(NB_I64, NAN) == NULL);
    CHECK_ERR("nan cannot be stored in i64");
    CHECK(nb_full(NB_I64, 1, (int64_t[]){1}, -INFINITY) == NULL);
    CHECK_ERR("-inf cannot be stored in i64");
    /* the edges of the range, and truncation toward zero */
    nb_scope_begin();
    nb_tensor *t = nb_from_f64(NB_I64, 1, (int64_t[]){5}, (double[]){-9223372036854775808.0, 9223372036854774784.0,
                                                                    2.9, -2.9, -0.5});
    CHECK(t != NULL);
    if (t) {
        const int64_t *d = nb_data(t);
        CHECK(d[0] == INT64_MIN && d[1] == 9223372036854774784LL && d[2] == 2 && d[3] == -2 && d[4] == 0);
    }
    nb_tensor *f = nb_full(NB_I64, 1, (int64_t[]){3}, -7.75);
    CHECK(f && ((const int64_t *)nb_data(f))[2] == -7);
    nb_tensor *s = nb_scalar(NB_I64, 1e18);
    CHECK(s && *(const int64_t *)nb_data(s) == 1000000000000000000LL);
    /* zero elements: nothing to convert */
    CHECK(nb_from_f64(NB_I64, 1, (int64_t[]){0}, (double[]){NAN}) != NULL);
    /* floats take anything */
    nb_tensor *g = nb_from_f64(NB_F32, 1, (int64_t[]){3}, (double[]){NAN, 1e300, -INFINITY});
    CHECK(g && isnan(nb_get(g, (int64_t[]){0})) && nb_get(g, (int64_t[]){1}) == INFINITY);
    CHECK(nb_full(NB_F64, 0, NULL, NAN) != NULL && nb_scalar(NB_F32, INFINITY) != NULL);
    nb_scope_end();
    CHECK(nb_last_error() == NULL);
}

static void test_to_i64(void) {
    nb_scope_begin();
    for (int d = 0; d < 2; d++) {
        nb_dtype dt = d ? NB_F64 : NB_F32;
        nb_tensor *ok = nb_from_f64(dt, 2, (int64_t[]){2, 3}, (double[]){0, 1.5, -2.5, 3, 1e9, -1e9});
        nb_tensor *i = nb_to(ok, NB_I64);
        CHECK(i != NULL);
        if (i) {
            const int64_t *p = nb_data(i);
            CHECK(p[0] == 0 && p[1] == 1 && p[2] == -2 && p[3] == 3 && p[4] == 1000000000 && p[5] == -1000000000);
        }
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            double v[6] = {0, 1, 2, 3, 4, 5};
            v[4] = bad[k];
            nb_tensor *x = nb_from_f64(dt, 2, (int64_t[]){2, 3}, v);
            nb_clear_error();
            CHECK(nb_to(x, NB_I64) == NULL);
            CHECK_ERR("nb_to: element (1,1)");
            /* a view: its first bad element in its own (row-major) order */
            nb_tensor *tr = nb_transpose(x, 0, 1); /* (3,2): tr[1][1] is x[1][1] */
            CHECK(nb_to(tr, NB_I64) == NULL);
            CHECK_ERR("element (1,1)");
            CHECK(nb_to(nb_slice(x, 0, 0, 1), NB_I64) != NULL); /* the bad value is outside the slice */
            /* the first of several, by row-major position */
            nb_tensor *y = nb_from_f64(dt, 1, (int64_t[]){4}, (double[]){1, NAN, INFINITY, 2});
            CHECK(nb_to(y, NB_I64) == NULL);
            CHECK_ERR("element (1,) of (4,) is nan");
            /* float to float needs no check */
            CHECK(nb_to(x, d ? NB_F32 : NB_F64) != NULL);
        }
    }
    nb_tensor *e = nb_expand(nb_scalar(NB_F64, NAN), 1, (int64_t[]){3}); /* stride 0 */
    CHECK(nb_to(e, NB_I64) == NULL);
    CHECK_ERR("nb_to: element (0,) of (3,) is nan");
    nb_scope_end();
    nb_clear_error();
}

/* Padding sizes: their sum with the axis must not overflow, and the backward keeps each leading pad in an
   int32, so a larger one is refused rather than silently truncated. */
static void test_pad_sizes(void) {
    nb_scope_begin();
    nb_tensor *a = nb_from_f64(NB_F64, 1, (int64_t[]){2}, (double[]){1, 2});
    CHECK(nb_pad(a, (int64_t[]){INT64_MAX, 1}, 0) == NULL);
    CHECK_ERR("nb_pad: padding (9223372036854775807, 1) of axis 0");
    CHECK(nb_pad(a, (int64_t[]){1, INT64_MAX - 2}, 0) == NULL);
    CHECK_ERR("nb_pad: padding (1, 9223372036854775805) of axis 0");
    nb_tensor *e = nb_full(NB_F64, 2, (int64_t[]){0, 3}, 0); /* no elements: only the sizes could go wrong */
    CHECK(nb_pad(e, (int64_t[]){0, 0, (int64_t)1 << 31, 0}, 0) == NULL);
    CHECK_ERR("nb_pad: padding (2147483648, 0) of axis 1");
    nb_tensor *ok = nb_pad(e, (int64_t[]){0, 0, INT32_MAX, 5}, 0);
    CHECK(ok && nb_shape(ok)[1] == 3 + (int64_t)INT32_MAX + 5);
    nb_scope_end();
}

/* Sizes whose product or sum overflows int64 are refused (they were signed overflow before). */
static void test_size_overflow(void) {
    nb_scope_begin();
    nb_tensor *one = nb_full(NB_F64, 2, (int64_t[]){1, 1}, 1.0);
    CHECK(nb_expand(one, 2, (int64_t[]){INT64_MAX, INT64_MAX}) == NULL);
    CHECK_ERR("nb_expand: cannot expand (1,1) to (9223372036854775807,9223372036854775807): the element count");
    nb_tensor *v = nb_expand(nb_full(NB_F64, 1, (int64_t[]){1}, 1.0), 1, (int64_t[]){INT64_MAX});
    CHECK(v != NULL);
    CHECK(nb_concat(2, (nb_tensor *[]){v, v}, 0) == NULL);
    CHECK_ERR("nb_concat: the sizes along axis 0 add up to more than 2^63");
    nb_tensor *a = nb_full(NB_F64, 1, (int64_t[]){6}, 1.0), *out[3];
    CHECK(nb_split(a, 0, 3, (int64_t[]){INT64_MAX, INT64_MAX, 6}, out) != 0);
    CHECK_ERR("nb_split: sizes 0.. add up to more than axis 0 of (6,) (6)");
    nb_scope_end();
    nb_clear_error();
}

int main(void) {
    RUN(test_from_f64);
    RUN(test_to_i64);
    RUN(test_pad_sizes);
    RUN(test_size_overflow);
    return th_finish();
}
