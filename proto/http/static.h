/*
 * static — the browser client's files (web/) over libmicrohttpd: GET/HEAD of a regular file
 * under a root directory, with its Content-Type, revalidation (ETag, If-None-Match -> 304) and
 * no way out of the root: no "." or ".." segments, no hidden files, no control characters,
 * symbolic links resolved and the result checked to lie under the root.
 *
 * Cache policy: "no-cache" (always revalidate, cheap with the ETag). The client has no build
 * step, so file names carry no content hash; a cached app.js next to a new index.html must not
 * happen.
 *
 * Thread-safe (no state); runs on the caller's (libmicrohttpd's) thread.
 */
#ifndef PARLEY_STATIC_H
#define PARLEY_STATIC_H

#include <stddef.h>

struct MHD_Connection;

#define STATIC_PATH_MAX 4096

/* The file url names under root ("/" and "/dir/" mean index.html there), resolved through
 * symbolic links, into path. Returns 0, or -1 when url names nothing servable: a bad or hidden
 * segment, a path outside root, a missing file, not a regular file, too long. */
int static_resolve(const char *root, const char *url, char *path, size_t cap);

/* Content-Type for a file name by its extension; application/octet-stream when unknown. */
const char *static_mime(const char *path);

/* Answers GET/HEAD of url from root. Returns the HTTP status queued (200 or 304); 0 when url
 * names no file there or the method is another (nothing queued: the caller answers, e.g. with
 * its JSON 404); -1 when queueing the response failed (the handler should return MHD_NO). */
int static_serve(struct MHD_Connection *c, const char *root, const char *method, const char *url);

#endif
