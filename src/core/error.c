/*
 * error.c - per-thread error messages and the thread state.
 *
 * As in stb, a failing call returns NULL (or nonzero) and leaves a reason in a
 * per-thread buffer. The first message since nb_clear_error() is kept, so a
 * chain of calls that fails early reports where it failed, not the NULLs that
 * followed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local char err_buf[512];
static _Thread_local bool err_set;
static _Thread_local nbi_thread thread_state;

nbi_thread *nbi_tls(void) { return &thread_state; }

const char *nb_last_error(void) { return err_set ? err_buf : NULL; }

void nb_clear_error(void) {
    err_set = false;
    err_buf[0] = 0;
}

static void verr(const char *fn, const char *fmt, va_list ap) {
    int n = snprintf(err_buf, sizeof err_buf, "%s: ", fn);
    if (n < 0 || (size_t)n >= sizeof err_buf) n = 0;
    vsnprintf(err_buf + n, sizeof err_buf - (size_t)n, fmt, ap);
    err_set = true;
}

void *nbi_err(const char *fn, const char *fmt, ...) {
    if (err_set) return NULL;
    va_list ap;
    va_start(ap, fmt);
    verr(fn, fmt, ap);
    va_end(ap);
    return NULL;
}

void *nbi_err_force(const char *fn, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verr(fn, fmt, ap);
    va_end(ap);
    return NULL;
}

bool nbi_check(const char *fn, const nb_tensor *t, int argi) {
    if (!t) {
        nbi_err(fn, "argument %d is NULL", argi);
        return false;
    }
    if (t->magic != NBI_MAGIC) {
        nbi_err_force(fn, "argument %d is a tensor that was already freed", argi);
        return false;
    }
    return true;
}

bool nbi_check_float(const char *fn, const nb_tensor *t, int argi) {
    if (!nbi_check(fn, t, argi)) return false;
    if (t->dtype == NB_I64) {
        nbi_err(fn, "argument %d %s has dtype i64; this op needs f32 or f64", argi, NBI_SHAPE(t));
        return false;
    }
    return true;
}

void *nb_fail(const char *fn, const char *msg) { return nbi_err(fn ? fn : "nabla", "%s", msg ? msg : "failed"); }

void *nb_failf(const char *fn, const char *fmt, ...) {
    if (err_set) return NULL;
    va_list ap;
    va_start(ap, fmt);
    verr(fn ? fn : "nabla", fmt ? fmt : "failed", ap);
    va_end(ap);
    return NULL;
}
