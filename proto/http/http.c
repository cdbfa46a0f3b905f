/* http — see http.h. */
#include "http/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX_KEYS    64
#define HTTP_RETRY_AFTER "5"

struct http_server {
    struct MHD_Daemon *mhd;
    int fd; /* listening socket, owned */
    int port;
    struct http_hooks hooks;
    char version[64], ws_address[256], ws_path[256], ws_public_url[1024];
    int ws_port;
    pthread_mutex_t lock; /* guards policy */
    struct http_policy policy;
};

/* Per-request state, from the first call of the handler to the completion callback. */
struct http_request {
    long long body_bytes; /* received so far (read and dropped: no route takes a body yet) */
    int too_big;
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
    int ok = srv->policy.keys[0] == 0;
    size_t pos = 0, n;
    const char *item;
    int any_key = 0;
    while (http_list_next(srv->policy.keys, &pos, &item, &n)) {
        any_key = 1;
        if (given && http_key_equal(given, strlen(given), item, n))
            ok = 1;
    }
    if (!any_key)
        ok = 1;
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

static enum MHD_Result http_route(struct http_server *srv, struct MHD_Connection *c,
                                  const char *method, const char *path)
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
        return http_error(srv, c, method, path, 501, "not_implemented",
                          "spoken QA needs the engine, which this build does not have yet", NULL,
                          NULL);
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
        *upload_size = 0;
        if (req->body_bytes > limit)
            req->too_big = 1;
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
    (void)upload_data;
    (void)version;
    return http_route(srv, c, method, url);
}

static void http_completed(void *cls, struct MHD_Connection *c, void **state,
                           enum MHD_RequestTerminationCode code)
{
    free(*state);
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
    srv->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_POLL, 0,
                                NULL, NULL, http_handle, srv, MHD_OPTION_LISTEN_SOCKET, srv->fd,
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
    MHD_stop_daemon(srv->mhd); /* closes the listening socket unless quiesced */
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}

int http_port(const struct http_server *srv)
{
    return srv->port;
}
