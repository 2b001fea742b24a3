/*
 * util.c - what the commands of the `nabla` program share: failing with one
 * line, reading option values, the output folder.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nabla.h"
#include "cli.h"

/* The whole of s as an integer in [lo, hi] (no overflow, no trailing text). */
bool to_int(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *e;
    errno = 0;
    long long x = strtoll(s, &e, 10);
    if (e == s || *e || errno == ERANGE || x < lo || x > hi) return false;
    *out = x;
    return true;
}

bool to_u64(const char *s, uint64_t *out) {
    char *e;
    while (*s == ' ') s++;
    if (*s == '-') return false; /* strtoull would wrap it */
    errno = 0;
    unsigned long long x = strtoull(s, &e, 10);
    if (e == s || *e || errno == ERANGE) return false;
    *out = x;
    return true;
}

/* A finite number in (lo, hi] when lo_open, else [lo, hi) (the two ranges the options need). */
bool to_real(const char *s, double lo, double hi, bool lo_open, double *out) {
    char *e;
    errno = 0;
    double x = strtod(s, &e);
    if (e == s || *e || errno == ERANGE || !isfinite(x)) return false;
    if (lo_open ? !(x > lo && x <= hi) : !(x >= lo && x < hi)) return false;
    *out = x;
    return true;
}

int bad_option(const char *opt, const char *v, const char *want) {
    fprintf(stderr, "nabla: bad %s '%s': want %s\n", opt, v, want);
    return 1;
}

/* Splits argv[*i] into an option name and its value ("--opt=value" or "--opt value"). Returns 0, or 1
   after printing why not. name receives the option without "=value". */
int next_option(int argc, char **argv, int *i, char *name, size_t cap, const char **value) {
    const char *a = argv[*i], *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    if (strncmp(a, "--", 2) != 0 || len >= cap) {
        fprintf(stderr, "nabla: unexpected argument '%s' (options start with --)\n", a);
        return 1;
    }
    memcpy(name, a, len);
    name[len] = 0;
    if (eq) *value = eq + 1;
    else if (*i + 1 < argc) *value = argv[++*i];
    else *value = NULL;
    return 0;
}

/* A library failure: its recorded message (or a generic one where it recorded none). */
int die_lib(const char *what) {
    const char *m = nb_last_error();
    if (!m) return cli_die(what, "out of memory (no message recorded)");
    /* the library names its function ("nb_load_csv_opts: ...") or "nabla: ": the program says "nabla: " once and
       names what it was doing instead */
    size_t k = strspn(m, "abcdefghijklmnopqrstuvwxyz0123456789_");
    if (k > 0 && m[k] == ':' && m[k + 1] == ' ' && (strncmp(m, "nb_", 3) == 0 || strncmp(m, "nabla:", 6) == 0))
        m += k + 2;
    return cli_die(what, m);
}

int die_errno(const char *what, const char *path) {
    fprintf(stderr, "nabla: %s '%s': %s\n", what, path, strerror(errno));
    return 1;
}

double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* mkdir -p dir, then a check that files can be made in it; prints the cause on failure. */
int make_out_dir(const char *dir) {
    char p[CLI_PATH_CAP];
    if (strlen(dir) >= sizeof p) return cli_die("output folder name too long", dir);
    memcpy(p, dir, strlen(dir) + 1);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        struct stat st;
        if (mkdir(p, 0777) != 0 && (errno != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode))) {
            if (errno == EEXIST) errno = ENOTDIR;
            return die_errno("cannot create the output folder", dir);
        }
        *s = c;
        if (!c) break;
        while (s[1] == '/') s++;
    }
    if (access(dir, W_OK | X_OK) != 0) return die_errno("cannot write into the output folder", dir);
    return 0;
}

int cli_die(const char *what, const char *detail) {
    fprintf(stderr, "nabla: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

