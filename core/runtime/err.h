/*
 * err — the returned-status tier of error handling.
 *
 * Anything that comes from a file, a client or the environment is reported through a
 * `struct err` filled by the failing function, which then returns -1. Bugs are assertions.
 */
#ifndef PARLEY_ERR_H
#define PARLEY_ERR_H

#define ERR_MAX 512

struct err {
    char msg[ERR_MAX];
};

/* Formats the message into e (when e is not NULL) and returns -1, so that callers can write
 * `return err_set(e, "...")`. A message that does not fit is truncated. */
int err_set(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message: "prefix: old message". Returns -1. */
int err_prefix(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
