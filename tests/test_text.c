/*
 * test_text.c - byte-level text (nabla/data.h): reading a file (and a
 * gzipped one), a copy from memory, the split by position, the random
 * windows (their starts recomputed from the generator as documented, the
 * targets shifted by one), and the errors, with nothing changed.
 */
#include <stdio.h>
#include <unistd.h>

#include "harness.h"
#include "nabla/data.h"

static const char text[] = "It was the best of times, it was the worst of times.\n";

static void test_load_and_from_mem(void) {
    char path[64];
    snprintf(path, sizeof path, "text_%d.txt", (int)getpid());
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fwrite(text, 1, sizeof text - 1, f);
    fclose(f);
    nb_text t = {0}, m = {0};
    CHECK(nb_load_text(path, &t) == 0);
    remove(path);
    CHECK(t.n == (int64_t)sizeof text - 1 && memcmp(t.bytes, text, sizeof text - 1) == 0);
    CHECK(nb_text_from_mem(text, sizeof text - 1, &m) == 0);
    CHECK(m.n == t.n && memcmp(m.bytes, t.bytes, (size_t)t.n) == 0);
    nb_text_free(&t);
    nb_text_free(&m);
    CHECK(t.bytes == NULL && t.n == 0);
    nb_text_free(&t); /* a zeroed text is fine */
    /* an empty file reads as n = 0 */
    f = fopen(path, "wb");
    if (f) fclose(f);
    CHECK(nb_load_text(path, &t) == 0 && t.n == 0);
    remove(path);
    nb_text_free(&t);
    CHECK(nb_text_from_mem(NULL, 0, &t) == 0 && t.n == 0);
    nb_text_free(&t);
}

static void test_load_errors(void) {
    nb_text t = {(uint8_t *)"x", 1};
    CHECK(nb_load_text("no/such/file.txt", &t) != 0);
    CHECK(strncmp(nb_last_error(), "nb_load_text: ", 14) == 0);
    CHECK_ERR("no/such/file.txt");
    CHECK(t.n == 1); /* unchanged */
    CHECK(nb_load_text(NULL, &t) != 0);
    CHECK_ERR("must not be NULL");
    CHECK(nb_text_from_mem(NULL, 3, &t) != 0);
    CHECK_ERR("nb_text_from_mem: buf (with len 3)");
}

static void test_split(void) {
    nb_text t, tr, va;
    CHECK(nb_text_from_mem("0123456789", 10, &t) == 0);
    CHECK(nb_text_split(&t, 0.25, &tr, &va) == 0); /* round(2.5) = 3 for validation */
    CHECK(tr.n == 7 && va.n == 3 && memcmp(tr.bytes, "0123456", 7) == 0 && memcmp(va.bytes, "789", 3) == 0);
    nb_text_free(&tr), nb_text_free(&va);
    CHECK(nb_text_split(&t, 0, &tr, &va) == 0 && tr.n == 10 && va.n == 0);
    nb_text_free(&tr), nb_text_free(&va);
    CHECK(nb_text_split(&t, 1, &tr, &va) == 0 && tr.n == 0 && va.n == 10);
    nb_text_free(&tr), nb_text_free(&va);
    nb_text keep = {(uint8_t *)"k", 1};
    tr = keep, va = keep;
    CHECK(nb_text_split(&t, 1.5, &tr, &va) != 0);
    CHECK_ERR("nb_text_split: val_frac 1.5 is not in [0, 1]");
    CHECK(nb_text_split(&t, NAN, &tr, &va) != 0);
    CHECK_ERR("val_frac nan");
    CHECK(nb_text_split(&t, 0.5, &tr, &tr) != 0);
    CHECK_ERR("distinct");
    CHECK(tr.bytes == keep.bytes && va.bytes == keep.bytes); /* unchanged */
    nb_text_free(&t);
}

static void test_batch(void) {
    nb_text t;
    uint8_t buf[300];
    for (int i = 0; i < 300; i++) buf[i] = (uint8_t)(i * 7 % 256);
    CHECK(nb_text_from_mem(buf, sizeof buf, &t) == 0);
    nb_rng rng, again;
    nb_rng_seed(&rng, 11);
    again = rng;
    nb_scope_begin();
    nb_tensor *x, *y;
    const int64_t B = 5, T = 9;
    CHECK(nb_text_batch(&t, B, T, &rng, &x, &y) == 0);
    CHECK(nb_dtype_of(x) == NB_I64 && nb_rank(x) == 2 && nb_shape(x)[0] == B && nb_shape(x)[1] == T);
    CHECK(nb_dtype_of(y) == NB_I64 && nb_shape(y)[0] == B && nb_shape(y)[1] == T);
    const int64_t *xd = nb_data(x), *yd = nb_data(y);
    for (int64_t b = 0; b < B; b++) {
        int64_t s = (int64_t)(nb_rng_uniform(&again) * (double)(300 - T)); /* the documented draw */
        CHECK(s >= 0 && s + T + 1 <= 300);
        for (int64_t j = 0; j < T; j++) {
            CHECK(xd[b * T + j] == buf[s + j]);
            CHECK(yd[b * T + j] == buf[s + j + 1]);
        }
    }
    CHECK(rng.state == again.state); /* one draw per window */
    /* the smallest text: exactly T + 1 bytes, every window the whole text */
    nb_text small;
    CHECK(nb_text_from_mem(buf, 10, &small) == 0);
    CHECK(nb_text_batch(&small, 3, 9, &rng, &x, &y) == 0);
    for (int64_t i = 0; i < 27; i++) CHECK(((int64_t *)nb_data(x))[i] == buf[i % 9]);
    /* errors: nothing made, the generator not advanced */
    nb_rng before = rng;
    CHECK(nb_text_batch(&small, 3, 10, &rng, &x, &y) != 0);
    CHECK_ERR("nb_text_batch: the text has 10 tokens; windows of T + 1 = 11 need at least that many");
    CHECK(nb_text_batch(&t, 0, 4, &rng, &x, &y) != 0);
    CHECK_ERR("batch 0 and T 4");
    CHECK(nb_text_batch(&t, 2, 0, &rng, &x, &y) != 0);
    CHECK_ERR("batch 2 and T 0");
    CHECK(nb_text_batch(&t, 2, 4, NULL, &x, &y) != 0);
    CHECK_ERR("must not be NULL");
    CHECK(rng.state == before.state);
    nb_scope_end();
    nb_text_free(&small);
    nb_text_free(&t);
}

static int batch_at(void *unused) {
    (void)unused;
    nb_text t, tr, va;
    if (nb_text_from_mem(text, sizeof text - 1, &t) != 0) return -1;
    int rc = nb_text_split(&t, 0.2, &tr, &va);
    nb_text_free(&t);
    if (rc != 0) return -1;
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_scope_begin();
    nb_tensor *x, *y;
    rc = nb_text_batch(&tr, 4, 8, &rng, &x, &y);
    nb_scope_end();
    nb_text_free(&tr), nb_text_free(&va);
    return rc;
}
static void test_oom(void) { CHECK(th_fail_each(batch_at, NULL, 1000) > 3); }

int main(void) {
    RUN(test_load_and_from_mem);
    RUN(test_load_errors);
    RUN(test_split);
    RUN(test_batch);
    if (!getenv("SKIP_OOM")) RUN(test_oom);
    return th_finish();
}
