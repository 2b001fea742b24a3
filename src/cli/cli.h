/*
 * cli.h - what the files of the `nabla` program share (not installed).
 *
 *   nabla.c     main, --version, the gradcheck command
 *   train.c     the train and eval commands: options, data, the training loop, resuming
 *   gpt.c       train --model gpt (a GPT on byte-level text) and the generate command
 *   util.c      what they share: failing with one line, option values, the output folder
 */
#ifndef NABLA_CLI_H
#define NABLA_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_PATH_CAP 4096

/* "nabla: what: detail" on stderr, one line; returns 1 (the exit status of every failure). */
int cli_die(const char *what, const char *detail);
/* The library's recorded message after "nabla: what: " (its function name dropped); returns 1. */
int die_lib(const char *what);
/* "nabla: what 'path': strerror(errno)"; returns 1. */
int die_errno(const char *what, const char *path);
/* "nabla: bad OPT 'v': want WANT"; returns 1. */
int bad_option(const char *opt, const char *v, const char *want);
/* Splits argv[*i] into an option name (without "=value") and its value ("--opt=value" or "--opt value";
   NULL when missing). Returns 0, or 1 after printing why not. */
int next_option(int argc, char **argv, int *i, char *name, size_t cap, const char **value);
/* The whole of s as an integer in [lo, hi] (no overflow, no trailing text). */
bool to_int(const char *s, int64_t lo, int64_t hi, int64_t *out);
bool to_u64(const char *s, uint64_t *out);
/* A finite number in (lo, hi] when lo_open, else [lo, hi). */
bool to_real(const char *s, double lo, double hi, bool lo_open, double *out);
/* mkdir -p dir and a check that files can be made in it; prints the cause on failure (returns 1). */
int make_out_dir(const char *dir);
/* Seconds on a monotonic clock. */
double now(void);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_train_gpt(int argc, char **argv);
int cmd_generate(int argc, char **argv);

#endif
