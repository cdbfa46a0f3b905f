/*
 * http — parleyd's REST side on libmicrohttpd: health, readiness, Prometheus metrics, server
 * and model discovery, with JSON errors, a body size limit, optional Bearer API keys and a
 * CORS allow-list.
 *
 *   GET /healthz, /health   200 while the process runs (no key needed)
 *   GET /readyz             200 when hooks.ready says so, else 503 + Retry-After (no key)
 *   GET /metrics            Prometheus text from hooks.metrics
 *   GET /v1/server          JSON: name, version, readiness, the WebSocket URL
 *   GET /v1/models          JSON from hooks.models
 *   OPTIONS *               CORS preflight
 * Anything else is a JSON error {"error": {"type", "message"}} with its status code.
 *
 * Threads: requests run on libmicrohttpd's own thread, so hooks must be thread-safe.
 * http_set_policy may be called from any thread (SIGHUP reload); a mutex guards the policy.
 */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H

#include <stddef.h>

#include "runtime/err.h"

#define HTTP_LIST_MAX 4096

struct http_hooks {
    void *user;
    /* 1 when ready to take sessions; otherwise 0 with a reason in why */
    int (*ready)(void *user, char *why, size_t len);
    /* Prometheus text (malloc'ed, freed by the server); NULL on failure */
    char *(*metrics)(void *user, size_t *len);
    /* JSON text of GET /v1/models (malloc'ed, freed by the server) */
    char *(*models)(void *user);
    /* after each response: for request counters and access logs; may be NULL */
    void (*done)(void *user, const char *method, const char *path, int status);
};

/* Fixed for the server's life. Strings are copied. */
struct http_settings {
    const char *address; /* numeric IPv4/IPv6 or a host name */
    int port;
    int listen_fd; /* > 0: a listening socket to serve (socket activation), taken over;
                      address and port are then only names for messages */
    const char *version;
    const char *ws_address, *ws_path, *ws_public_url; /* for /v1/server */
    int ws_port;
};

/* What SIGHUP may change. */
struct http_policy {
    long long max_body;       /* bytes; larger bodies get 413 */
    char cors[HTTP_LIST_MAX]; /* allowed origins, comma-separated; "*" any; "" none */
    char keys[HTTP_LIST_MAX]; /* accepted API keys, comma-separated; "" no auth */
};

struct http_server;

/* Binds address:port (an error names them and the reason), or takes s->listen_fd, and
 * starts serving. */
struct http_server *http_start(const struct http_settings *s, const struct http_policy *p,
                               const struct http_hooks *h, struct err *e);
void http_set_policy(struct http_server *srv, const struct http_policy *p);
/* Stops accepting new connections; requests in progress finish. */
void http_quiesce(struct http_server *srv);
/* Stops the server and frees it (NULL is fine). */
void http_stop(struct http_server *srv);
/* The port it listens on (the given one, or the kernel's choice for port 0). */
int http_port(const struct http_server *srv);

#endif
