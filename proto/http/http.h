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
 *   POST /v1/spoken-qa      hooks.spoken_qa (the request body is collected up to the limit)
 *   OPTIONS *               CORS preflight
 * Anything else is a JSON error {"error": {"type", "message"}} with its status code.
 *
 * Threads: one thread per connection (libmicrohttpd's MHD_USE_THREAD_PER_CONNECTION), so a
 * hook may block for the seconds a spoken answer takes while health checks and metrics are
 * answered on their own connections; hooks must be thread-safe. A streamed body's read
 * function runs on its connection's thread and may block too. http_set_policy may be called
 * from any thread (SIGHUP reload); a mutex guards the policy.
 */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/err.h"

#define HTTP_LIST_MAX    4096
#define HTTP_HEADERS_MAX 16

struct http_server;

/* The client of one request, for long answers to notice that it went away. Plain data:
 * copy it into whatever outlives the hook (a streamed body's context). */
struct http_peer {
    struct http_server *srv;
    int fd; /* the connection's socket; valid while its request is being answered */
};
/* 1 when the client closed (or reset) its connection, or the server is stopping: the answer
 * should be cancelled. Does not wait; any thread. A client that half-closes its sending side
 * after the request counts as gone. */
int http_peer_gone(const struct http_peer *p);

/* One request handed to a hook (valid during the hook call only). */
struct http_call {
    const char *method, *path;
    const char *content_type; /* header value, NULL when absent */
    const char *accept;       /* header value, NULL when absent */
    const void *body;         /* the whole body (NULL when empty), at most the body limit */
    size_t body_len;
    struct http_peer peer;
    void *conn; /* libmicrohttpd's connection, for http_call_arg (NULL: no query string) */
};
/* A query-string parameter, or NULL. */
const char *http_call_arg(const struct http_call *c, const char *name);

/* Stream results of http_response.read besides a byte count. */
#define HTTP_STREAM_END   (-1) /* the body is complete */
#define HTTP_STREAM_ERROR (-2) /* give up: the connection is closed */

/* What a hook answers. Start from http_response_init; the server takes ownership of every
 * pointer in it (it frees body and header values, calls release) once the hook returns. */
struct http_response {
    int status;
    char type[96]; /* Content-Type */
    uint8_t *body; /* malloc'ed, or NULL */
    size_t len;
    /* A streamed body instead of body (sent chunked as it comes): read puts up to max bytes in
     * buf and returns how many (at least 1; it blocks until it has some), or HTTP_STREAM_END /
     * HTTP_STREAM_ERROR. release(ctx) runs exactly once when the server is done with the
     * stream: after its end, an error, or the client leaving mid-way. */
    ssize_t (*read)(void *ctx, char *buf, size_t max);
    void (*release)(void *ctx);
    void *ctx;
    int n_headers;
    struct {
        char name[48];
        char *value; /* malloc'ed */
    } headers[HTTP_HEADERS_MAX];
};
void http_response_init(struct http_response *r);
/* Adds a header (printf-style value); -1 when full or out of memory (the header is dropped). */
int http_response_header(struct http_response *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Makes r the JSON error {"error": {"type", "message", "status"}}, dropping its body. */
void http_response_error(struct http_response *r, int status, const char *type, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
/* Frees what r holds and calls release; for a hook that gives up on a response it built. */
void http_response_free(struct http_response *r);

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
    /* POST /v1/spoken-qa (NULL: 501). Runs on the connection's thread and may block; fills
     * res, which starts as http_response_init made it. */
    void (*spoken_qa)(void *spoken_qa_user, const struct http_call *call,
                      struct http_response *res);
    void *spoken_qa_user;
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
    const char *web_root; /* directory served at / (proto/http/static); NULL or "": none */
};

/* What SIGHUP may change. */
struct http_policy {
    long long max_body;       /* bytes; larger bodies get 413 */
    char cors[HTTP_LIST_MAX]; /* allowed origins, comma-separated; "*" any; "" none */
    char keys[HTTP_LIST_MAX]; /* accepted API keys, comma-separated; "" no auth */
};

/* 1 when keys (a comma-separated list as http_policy.keys; blanks around items ignored) is
 * empty or holds given (NULL: no key given). Compares in time independent of where a key
 * differs. Shared with proto/ws, which takes the same list. */
int http_key_listed(const char *keys, const char *given);

/* Binds address:port (an error names them and the reason), or takes s->listen_fd, and
 * starts serving. */
struct http_server *http_start(const struct http_settings *s, const struct http_policy *p,
                               const struct http_hooks *h, struct err *e);
void http_set_policy(struct http_server *srv, const struct http_policy *p);
/* Stops accepting new connections (a balancer then sends new requests elsewhere at once);
 * requests in progress finish. */
void http_quiesce(struct http_server *srv);
/* Stops the server and frees it (NULL is fine). */
void http_stop(struct http_server *srv);
/* The port it listens on (the given one, or the kernel's choice for port 0). */
int http_port(const struct http_server *srv);

#endif
