/* http — see http.h. */
#include "http/http.h"
#include "http/static.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX_KEYS     64
#define HTTP_RETRY_AFTER  "5"
#define HTTP_STREAM_BLOCK (32 * 1024) /* bytes asked of a streamed body's read at a time */
/* Request bodies held at once, all connections together: each is bounded by the policy's
 * max_body, this bounds their sum (beyond it: 503 until uploads finish). */
#define HTTP_BODY_BUDGET (1LL << 30)

struct http_server {
    struct MHD_Daemon *mhd;
    int fd; /* listening socket, owned */
    int port;
    struct http_hooks hooks;
    char version[64], ws_address[256], ws_path[256], ws_public_url[1024];
    int ws_port;
    char web_root[STATIC_PATH_MAX];
    pthread_mutex_t lock; /* guards policy */
    struct http_policy policy;
    _Atomic int stopping;          /* http_stop began: long answers should give up */
    _Atomic long long bodies_held; /* bytes of request-body buffers allocated now */
};

/* Per-request state, from the first call of the handler to the completion callback. */
struct http_request {
    long long body_bytes; /* received so far */
    int too_big;
    int keep_body; /* the route takes a body: collect it (up to the limit), else drop it */
    int no_room;   /* HTTP_BODY_BUDGET was spent: answered 503 */
    uint8_t *body;
    size_t len, cap;
};

/* A streamed body handed to libmicrohttpd (its reader and free callbacks). */
struct http_stream {
    ssize_t (*read)(void *ctx, char *buf, size_t max);
    void (*release)(void *ctx);
    void *ctx;
};

/* ---- responses ------------------------------------------------------------------------- */

static void http_cors_headers(struct http_server *srv, struct MHD_Connection *c,
                              struct MHD_Response *r);

static enum MHD_Result http_send(struct http_server *srv, struct MHD_Connection *c,
                                 const char *method, const char *path, int status, const char *type,
                                 char *body, size_t len, const char *hname, const char *hvalue)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    http_cors_headers(srv, c, r);
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (srv->hooks.done)
        srv->hooks.done(srv->hooks.user, method, path, status);
    return ok;
}

static enum MHD_Result http_send_json(struct http_server *srv, struct MHD_Connection *c,
                                      const char *method, const char *path, int status, json_t *j,
                                      const char *hname, const char *hvalue)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    /* json_dumps memory comes from malloc unless the allocator was changed: it was not */
    char *body = malloc(n + 2);
    if (!body) {
        free(text);
        return MHD_NO;
    }
    memcpy(body, text, n);
    body[n] = '\n';
    free(text);
    return http_send(srv, c, method, path, status, "application/json", body, n + 1, hname, hvalue);
}

/* {"error": {"type": ..., "message": ...}} */
static enum MHD_Result http_error(struct http_server *srv, struct MHD_Connection *c,
                                  const char *method, const char *path, int status,
                                  const char *type, const char *message, const char *hname,
                                  const char *hvalue)
{
    json_t *j =
        json_pack("{s:{s:s,s:s,s:i}}", "error", "type", type, "message", message, "status", status);
    return http_send_json(srv, c, method, path, status, j, hname, hvalue);
}

/* ---- responses built by hooks --------------------------------------------------------- */

void http_response_init(struct http_response *r)
{
    memset(r, 0, sizeof *r);
    r->status = 200;
    snprintf(r->type, sizeof r->type, "application/json");
}

int http_response_header(struct http_response *r, const char *name, const char *fmt, ...)
{
    if (r->n_headers >= HTTP_HEADERS_MAX || strlen(name) >= sizeof r->headers[0].name)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    char *v = NULL;
    int n = vasprintf(&v, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    snprintf(r->headers[r->n_headers].name, sizeof r->headers[0].name, "%s", name);
    r->headers[r->n_headers++].value = v;
    return 0;
}

void http_response_error(struct http_response *r, int status, const char *type, const char *fmt,
                         ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    free(r->body);
    r->body = NULL;
    r->len = 0;
    r->status = status;
    snprintf(r->type, sizeof r->type, "application/json");
    json_t *j =
        json_pack("{s:{s:s,s:s,s:i}}", "error", "type", type, "message", msg, "status", status);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return;
    size_t n = strlen(text);
    r->body = malloc(n + 1);
    if (r->body) {
        memcpy(r->body, text, n);
        r->body[n] = '\n';
        r->len = n + 1;
    }
    free(text);
}

void http_response_free(struct http_response *r)
{
    free(r->body);
    for (int i = 0; i < r->n_headers; i++)
        free(r->headers[i].value);
    if (r->release)
        r->release(r->ctx);
    memset(r, 0, sizeof *r);
}

static ssize_t http_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct http_stream *st = cls;
    (void)pos;
    ssize_t n = st->read(st->ctx, buf, max);
    if (n == HTTP_STREAM_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void http_stream_free(void *cls)
{
    struct http_stream *st = cls;
    if (st->release)
        st->release(st->ctx);
    free(st);
}

/* Sends what a hook built; takes everything res holds, whatever happens. */
static enum MHD_Result http_send_response(struct http_server *srv, struct MHD_Connection *c,
                                          const char *method, const char *path,
                                          struct http_response *res)
{
    struct MHD_Response *r = NULL;
    if (res->read) {
        struct http_stream *st = malloc(sizeof *st);
        if (st) {
            *st = (struct http_stream){ res->read, res->release, res->ctx };
            r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK,
                                                  http_stream_read, st, http_stream_free);
            if (r)
                res->release = NULL; /* the response owns the stream now */
            else
                free(st);
        }
    } else {
        r = MHD_create_response_from_buffer(res->len, res->body, MHD_RESPMEM_MUST_FREE);
        if (r)
            res->body = NULL;
    }
    if (!r) {
        http_response_free(res);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res->type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    char expose[HTTP_HEADERS_MAX * 50] = "";
    for (int i = 0; i < res->n_headers; i++) {
        MHD_add_response_header(r, res->headers[i].name, res->headers[i].value);
        if (!strncasecmp(res->headers[i].name, "X-", 2) ||
            !strcasecmp(res->headers[i].name, "Server-Timing")) {
            size_t used = strlen(expose);
            snprintf(expose + used, sizeof expose - used, "%s%s", used ? ", " : "",
                     res->headers[i].name);
        }
    }
    http_cors_headers(srv, c, r);
    /* browsers hide headers other than the simple ones unless they are listed */
    if (expose[0] && MHD_get_response_header(r, "Access-Control-Allow-Origin"))
        MHD_add_response_header(r, "Access-Control-Expose-Headers", expose);
    int status = res->status;
    http_response_free(res);
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    if (srv->hooks.done)
        srv->hooks.done(srv->hooks.user, method, path, status);
    return ok;
}

/* ---- the client of a request ----------------------------------------------------------- */

int http_peer_gone(const struct http_peer *p)
{
    if (atomic_load(&p->srv->stopping))
        return 1;
    if (p->fd < 0)
        return 0;
    struct pollfd pf = { p->fd, POLLIN | POLLRDHUP, 0 };
    if (poll(&pf, 1, 0) != 1)
        return 0;
    if (pf.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL))
        return 1;
    if (pf.revents & POLLIN) {
        /* readable: the next pipelined request (not gone) or the end of the stream (gone) */
        char b;
        ssize_t n = recv(p->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return 0;
}

const char *http_call_arg(const struct http_call *c, const char *name)
{
    return c->conn ? MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, name) : NULL;
}

/* ---- policy: CORS and keys ------------------------------------------------------------- */

/* Next comma-separated item of list, trimmed; 0 at the end. */
static int http_list_next(const char *list, size_t *pos, const char **item, size_t *n)
{
    while (list[*pos]) {
        const char *s = list + *pos;
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        *pos += len + (comma ? 1 : 0);
        while (len && isspace((unsigned char)*s)) {
            s++;
            len--;
        }
        while (len && isspace((unsigned char)s[len - 1]))
            len--;
        if (len) {
            *item = s;
            *n = len;
            return 1;
        }
    }
    return 0;
}

/* 1 when origin is on the allow-list; *any when the list says "*". Caller holds the lock. */
static int http_origin_allowed(const struct http_policy *p, const char *origin, int *any)
{
    size_t pos = 0, n;
    const char *item;
    *any = 0;
    while (http_list_next(p->cors, &pos, &item, &n)) {
        if (n == 1 && item[0] == '*') {
            *any = 1;
            return 1;
        }
        if (origin && strlen(origin) == n && strncasecmp(origin, item, n) == 0)
            return 1;
    }
    return 0;
}

static void http_cors_headers(struct http_server *srv, struct MHD_Connection *c,
                              struct MHD_Response *r)
{
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!origin)
        return;
    int any;
    pthread_mutex_lock(&srv->lock);
    int ok = http_origin_allowed(&srv->policy, origin, &any);
    pthread_mutex_unlock(&srv->lock);
    if (!ok)
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", any ? "*" : origin);
    if (!any)
        MHD_add_response_header(r, "Vary", "Origin");
}

/* Compares without leaking where the first difference is. */
static int http_key_equal(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned char d = (unsigned char)(an != bn);
    for (size_t i = 0; i < an; i++)
        d |= (unsigned char)(a[i] ^ (i < bn ? b[i] : 0));
    return d == 0;
}

int http_key_listed(const char *keys, const char *given)
{
    size_t pos = 0, n;
    const char *item;
    int any_key = 0, ok = 0;
    while (http_list_next(keys, &pos, &item, &n)) {
        any_key = 1;
        if (given && http_key_equal(given, strlen(given), item, n))
            ok = 1;
    }
    return !any_key || ok;
}

/* 1 when no keys are configured or the request carries one of them. */
static int http_authorized(struct http_server *srv, struct MHD_Connection *c)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *given = NULL;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        given = auth + 7;
        while (*given == ' ')
            given++;
    }
    if (!given) /* browsers cannot always set headers: ?api_key= */
        given = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "api_key");
    pthread_mutex_lock(&srv->lock);
    int ok = http_key_listed(srv->policy.keys, given);
    pthread_mutex_unlock(&srv->lock);
    return ok;
}

/* ---- routes ---------------------------------------------------------------------------- */

/* GET /v1/server: where the WebSocket is. A wildcard listen address is no use to a client,
 * so the host the client reached us by (Host header) stands in for it. */
static json_t *http_server_info(struct http_server *srv, struct MHD_Connection *c, int ready)
{
    char url[1400];
    if (srv->ws_public_url[0]) {
        snprintf(url, sizeof url, "%s", srv->ws_public_url);
    } else {
        char host[300];
        const char *a = srv->ws_address;
        int wildcard = !strcmp(a, "0.0.0.0") || !strcmp(a, "::") || !a[0];
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
        if (wildcard && h && h[0]) {
            size_t n = 0;
            /* keep the host part: "[v6]" or "name"; drop ":port" */
            if (h[0] == '[') {
                const char *end = strchr(h, ']');
                n = end ? (size_t)(end - h) + 1 : strlen(h);
            } else {
                const char *colon = strchr(h, ':');
                n = colon ? (size_t)(colon - h) : strlen(h);
            }
            int clean = n > 0 && n < sizeof host;
            for (size_t i = 0; clean && i < n; i++)
                clean = isalnum((unsigned char)h[i]) || strchr(".-[]:_", h[i]);
            snprintf(host, sizeof host, "%.*s", clean ? (int)n : 9, clean ? h : "localhost");
        } else if (wildcard) {
            snprintf(host, sizeof host, "localhost");
        } else if (strchr(a, ':')) {
            snprintf(host, sizeof host, "[%s]", a);
        } else {
            snprintf(host, sizeof host, "%s", a);
        }
        snprintf(url, sizeof url, "ws://%s:%d%s", host, srv->ws_port, srv->ws_path);
    }
    return json_pack("{s:s,s:s,s:b,s:s,s:{s:s,s:s,s:i}}", "name", "parleyd", "version",
                     srv->version, "ready", ready, "websocket_url", url, "websocket", "url", url,
                     "path", srv->ws_path, "port", srv->ws_port);
}

static enum MHD_Result http_spoken_qa(struct http_server *srv, struct MHD_Connection *c,
                                      const char *method, const char *path,
                                      const struct http_request *req)
{
    if (!srv->hooks.spoken_qa)
        return http_error(srv, c, method, path, 501, "not_implemented",
                          "spoken QA is not available in this server", NULL, NULL);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct http_call call = {
        .method = method,
        .path = path,
        .content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type"),
        .accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept"),
        .body = req->len ? req->body : NULL,
        .body_len = req->len,
        .peer = { srv, ci ? ci->connect_fd : -1 },
        .conn = c,
    };
    struct http_response res;
    http_response_init(&res);
    srv->hooks.spoken_qa(srv->hooks.spoken_qa_user, &call, &res);
    return http_send_response(srv, c, method, path, &res);
}

static enum MHD_Result http_route(struct http_server *srv, struct MHD_Connection *c,
                                  const char *method, const char *path,
                                  const struct http_request *req)
{
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (!strcmp(path, "/healthz") || !strcmp(path, "/health")) {
        if (!get)
            goto not_allowed;
        return http_send_json(srv, c, method, path, 200, json_pack("{s:s}", "status", "ok"), NULL,
                              NULL);
    }
    if (!strcmp(path, "/readyz")) {
        if (!get)
            goto not_allowed;
        char why[256] = "not ready";
        if (srv->hooks.ready && srv->hooks.ready(srv->hooks.user, why, sizeof why))
            return http_send_json(srv, c, method, path, 200, json_pack("{s:s}", "status", "ready"),
                                  NULL, NULL);
        return http_error(srv, c, method, path, 503, "not_ready", why, "Retry-After",
                          HTTP_RETRY_AFTER);
    }
    /* The browser client's files need no key (the page asks for one); API paths never shadow */
    if (get && srv->web_root[0] && strncmp(path, "/v1/", 4) && strcmp(path, "/metrics")) {
        int st = static_serve(c, srv->web_root, method, path);
        if (st > 0 && srv->hooks.done)
            srv->hooks.done(srv->hooks.user, method, path, st);
        if (st != 0)
            return st > 0 ? MHD_YES : MHD_NO;
    }
    if (!http_authorized(srv, c))
        return http_error(srv, c, method, path, 401, "unauthorized",
                          "a valid API key is required (Authorization: Bearer KEY)",
                          "WWW-Authenticate", "Bearer");
    if (!strcmp(path, "/metrics")) {
        if (!get)
            goto not_allowed;
        size_t len = 0;
        char *text = srv->hooks.metrics ? srv->hooks.metrics(srv->hooks.user, &len) : NULL;
        if (!text)
            return http_error(srv, c, method, path, 500, "internal", "metrics unavailable", NULL,
                              NULL);
        return http_send(srv, c, method, path, 200, "text/plain; version=0.0.4; charset=utf-8",
                         text, len, NULL, NULL);
    }
    if (!strcmp(path, "/v1/server")) {
        if (!get)
            goto not_allowed;
        char why[8];
        int ready = srv->hooks.ready && srv->hooks.ready(srv->hooks.user, why, sizeof why);
        return http_send_json(srv, c, method, path, 200, http_server_info(srv, c, ready), NULL,
                              NULL);
    }
    if (!strcmp(path, "/v1/models")) {
        if (!get)
            goto not_allowed;
        char *text = srv->hooks.models ? srv->hooks.models(srv->hooks.user) : NULL;
        if (!text)
            return http_error(srv, c, method, path, 503, "not_ready", "models not loaded",
                              "Retry-After", HTTP_RETRY_AFTER);
        return http_send(srv, c, method, path, 200, "application/json", text, strlen(text), NULL,
                         NULL);
    }
    if (!strcmp(path, "/v1/spoken-qa")) {
        if (strcmp(method, "POST"))
            goto not_allowed_post;
        return http_spoken_qa(srv, c, method, path, req);
    }
    {
        char msg[300];
        snprintf(msg, sizeof msg, "no such resource: %.200s", path);
        return http_error(srv, c, method, path, 404, "not_found", msg, NULL, NULL);
    }
not_allowed:
    return http_error(srv, c, method, path, 405, "method_not_allowed", "this resource takes GET",
                      "Allow", "GET, HEAD, OPTIONS");
not_allowed_post:
    return http_error(srv, c, method, path, 405, "method_not_allowed", "this resource takes POST",
                      "Allow", "POST, OPTIONS");
}

static enum MHD_Result http_preflight(struct http_server *srv, struct MHD_Connection *c,
                                      const char *path)
{
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    int any;
    pthread_mutex_lock(&srv->lock);
    int ok = origin && http_origin_allowed(&srv->policy, origin, &any);
    pthread_mutex_unlock(&srv->lock);
    if (!ok)
        return http_error(srv, c, "OPTIONS", path, 403, "forbidden_origin",
                          "origin not on the CORS allow-list (http.cors_origins)", NULL, NULL);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    http_cors_headers(srv, c, r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            "Authorization, Content-Type, Accept");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    enum MHD_Result res = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    if (srv->hooks.done)
        srv->hooks.done(srv->hooks.user, "OPTIONS", path, 204);
    return res;
}

/* Appends a piece of the body (the caller checked the limit); -1 when out of memory. Sets
 * no_room instead when the server's body budget is spent. */
static int http_keep(struct http_server *srv, struct http_request *req, const char *data, size_t n)
{
    if (req->len + n > req->cap) {
        size_t cap = req->cap ? req->cap : 16384;
        while (cap < req->len + n)
            cap *= 2;
        long long more = (long long)(cap - req->cap);
        if (atomic_fetch_add(&srv->bodies_held, more) + more > HTTP_BODY_BUDGET) {
            atomic_fetch_sub(&srv->bodies_held, more);
            req->no_room = 1;
            return 0;
        }
        uint8_t *b = realloc(req->body, cap);
        if (!b) {
            atomic_fetch_sub(&srv->bodies_held, more);
            return -1;
        }
        req->body = b;
        req->cap = cap;
    }
    memcpy(req->body + req->len, data, n);
    req->len += n;
    return 0;
}

static enum MHD_Result http_handle(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_size, void **state)
{
    struct http_server *srv = cls;
    struct http_request *req = *state;
    if (!req) {
        /* first call: headers only. Refuse early what needs no body to refuse. */
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        *state = req;
        if (!strcmp(method, "OPTIONS"))
            return http_preflight(srv, c, url);
        req->keep_body = !strcmp(method, "POST") && !strcmp(url, "/v1/spoken-qa");
        pthread_mutex_lock(&srv->lock);
        long long limit = srv->policy.max_body;
        pthread_mutex_unlock(&srv->lock);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoll(cl, NULL, 10) > limit) {
            char msg[128];
            snprintf(msg, sizeof msg, "request body larger than %lld bytes", limit);
            return http_error(srv, c, method, url, 413, "body_too_large", msg, "Connection",
                              "close");
        }
        return MHD_YES;
    }
    if (*upload_size) {
        /* libmicrohttpd takes a response only before the body or after all of it: a body
         * without Content-Length that outgrows the limit is read and dropped to its end, so
         * the client gets its 413; one that goes on past twice the limit loses the
         * connection instead. */
        pthread_mutex_lock(&srv->lock);
        long long limit = srv->policy.max_body;
        pthread_mutex_unlock(&srv->lock);
        req->body_bytes += (long long)*upload_size;
        if (req->body_bytes > limit)
            req->too_big = 1;
        if (req->keep_body && !req->too_big && !req->no_room &&
            http_keep(srv, req, upload_data, *upload_size)) {
            *upload_size = 0;
            return MHD_NO; /* out of memory: drop the connection */
        }
        *upload_size = 0;
        if (req->body_bytes > 2 * limit + (1 << 20)) {
            if (srv->hooks.done)
                srv->hooks.done(srv->hooks.user, method, url, 413);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (req->too_big) {
        pthread_mutex_lock(&srv->lock);
        long long limit = srv->policy.max_body;
        pthread_mutex_unlock(&srv->lock);
        char msg[128];
        snprintf(msg, sizeof msg, "request body larger than %lld bytes", limit);
        return http_error(srv, c, method, url, 413, "body_too_large", msg, "Connection", "close");
    }
    if (req->no_room)
        return http_error(srv, c, method, url, 503, "server_busy",
                          "too many uploads in progress; try again", "Retry-After", "1");
    (void)version;
    return http_route(srv, c, method, url, req);
}

static void http_completed(void *cls, struct MHD_Connection *c, void **state,
                           enum MHD_RequestTerminationCode code)
{
    struct http_server *srv = cls;
    struct http_request *req = *state;
    if (req) {
        atomic_fetch_sub(&srv->bodies_held, (long long)req->cap);
        free(req->body);
    }
    free(req);
    *state = NULL;
}

/* ---- life cycle ------------------------------------------------------------------------ */

static int http_listen(const char *address, int port, int *out_port, struct err *e)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(address, service, &hints, &res);
    if (rc)
        return err_set(e, "http.address %s: %s", address, gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return err_set(e, "http: socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128)) {
        int errno_ = errno;
        freeaddrinfo(res);
        close(fd);
        return err_set(e, "http: cannot listen on %s port %d: %s", address, port, strerror(errno_));
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *out_port = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        *out_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

struct http_server *http_start(const struct http_settings *s, const struct http_policy *p,
                               const struct http_hooks *h, struct err *e)
{
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        err_set(e, "http: out of memory");
        return NULL;
    }
    srv->hooks = *h;
    srv->policy = *p;
    snprintf(srv->version, sizeof srv->version, "%s", s->version ? s->version : "");
    snprintf(srv->ws_address, sizeof srv->ws_address, "%s", s->ws_address ? s->ws_address : "");
    snprintf(srv->ws_path, sizeof srv->ws_path, "%s", s->ws_path ? s->ws_path : "/");
    snprintf(srv->ws_public_url, sizeof srv->ws_public_url, "%s",
             s->ws_public_url ? s->ws_public_url : "");
    srv->ws_port = s->ws_port;
    snprintf(srv->web_root, sizeof srv->web_root, "%s", s->web_root ? s->web_root : "");
    pthread_mutex_init(&srv->lock, NULL);
    if (s->listen_fd > 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int listening = 0;
        socklen_t il = sizeof listening;
        if (getsockopt(s->listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &il) || !listening ||
            getsockname(s->listen_fd, (struct sockaddr *)&ss, &sl)) {
            err_set(e, "http: inherited socket %d is not a listening socket", s->listen_fd);
            pthread_mutex_destroy(&srv->lock);
            free(srv);
            return NULL;
        }
        srv->fd = s->listen_fd;
        srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    } else {
        srv->fd = http_listen(s->address, s->port, &srv->port, e);
    }
    if (srv->fd < 0) {
        pthread_mutex_destroy(&srv->lock);
        free(srv);
        return NULL;
    }
    /* a thread per connection: a spoken answer blocks its own thread for seconds while
     * health checks and metrics go on being answered on theirs */
    srv->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                    MHD_USE_ITC | MHD_USE_POLL,
                                0, NULL, NULL, http_handle, srv, MHD_OPTION_LISTEN_SOCKET, srv->fd,
                                MHD_OPTION_NOTIFY_COMPLETED, http_completed, srv,
                                MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!srv->mhd) {
        err_set(e, "http: libmicrohttpd did not start on %s port %d", s->address, s->port);
        close(srv->fd);
        pthread_mutex_destroy(&srv->lock);
        free(srv);
        return NULL;
    }
    return srv;
}

void http_set_policy(struct http_server *srv, const struct http_policy *p)
{
    pthread_mutex_lock(&srv->lock);
    srv->policy = *p;
    pthread_mutex_unlock(&srv->lock);
}

void http_quiesce(struct http_server *srv)
{
    if (srv && srv->fd >= 0) {
        MHD_socket fd = MHD_quiesce_daemon(srv->mhd);
        if (fd != MHD_INVALID_SOCKET) {
            close(fd);
            srv->fd = -1;
        }
    }
}

void http_stop(struct http_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->stopping, 1); /* answers in progress see their peer gone and end */
    MHD_stop_daemon(srv->mhd);       /* closes the listening socket unless quiesced */
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}

int http_port(const struct http_server *srv)
{
    return srv->port;
}
