/*
 * test_docs.c - docs/OPS.md has a row for every op of src/ops/ops.def, and
 * the op table built from ops.def knows the same names.
 */
#include "harness.h"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static void test_every_op_documented(void) {
    char *def = slurp(NB_TEST_DATA_DIR "/../../src/ops/ops.def");
    char *doc = slurp(NB_TEST_DATA_DIR "/../../docs/OPS.md");
    CHECK(def && doc);
    int ops = 0;
    for (char *p = def; p && doc && (p = strstr(p, "\nNB_OP(")); p++) {
        char *q = strchr(p, '"'), *e = q ? strchr(q + 1, '"') : NULL;
        if (!q || !e) break;
        char row[80];
        snprintf(row, sizeof row, "| `%.*s` |", (int)(e - q - 1), q + 1);
        if (!strstr(doc, row)) {
            th_cur_failed++;
            fprintf(stderr, "docs/OPS.md has no row %s\n", row);
        }
        ops++;
    }
    CHECK(ops >= 30);
    free(def);
    free(doc);
}

int main(void) {
    RUN(test_every_op_documented);
    return th_finish();
}
