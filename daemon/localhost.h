/*
 * localhost — what a parley program needs to run another one on this machine and reach it:
 * the executable next to its own, a free loopback port, the HTTP status of a GET. Used by
 * `parley load` (which starts its own parleyd) and by the tests' harness.
 */
#ifndef PARLEY_LOCALHOST_H
#define PARLEY_LOCALHOST_H

#include <stddef.h>

/* out = the path of program `name` in the directory of this process's executable; 0 when it
 * is there and executable, -1 otherwise (or when out is too short). */
int localhost_sibling(const char *name, char *out, size_t len);

/* A TCP port free on 127.0.0.1 right now (another process may take it before it is used);
 * -1 when none could be had. */
int localhost_free_port(void);

/* The HTTP status of GET path on 127.0.0.1:port (2 s to answer), or -1. */
int localhost_get_status(int port, const char *path);

#endif
