/*
 * cli.h - what the files of the `nabla` program share (not installed).
 *
 *   nabla.c     main, --version, the gradcheck command
 *   train.c     the train and eval commands: options, data, the training loop, resuming
 */
#ifndef NABLA_CLI_H
#define NABLA_CLI_H

#include <stdio.h>

/* "nabla: what: detail" on stderr, one line; returns 1 (the exit status of every failure). */
int cli_die(const char *what, const char *detail);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);

#endif
