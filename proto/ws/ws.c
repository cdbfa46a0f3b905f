/*
 * ws — see ws.h.
 *
 * DESIGN: every lws call happens on the service thread. Other threads only touch a
 * connection's queue and flags under its lock, mark it dirty and call lws_cancel_service;
 * the loop's LWS_CALLBACK_EVENT_WAIT_CANCELLED then walks the dirty connections, asks for
 * writeable callbacks and applies rx flow control. A connection (struct ws_conn) is freed on
 * the service thread after the handler's closed callback, so the handler decides when other
 * threads stop using it.
 */
#include "ws/ws.h"
#include "http/http.h"
#include "runtime/clock.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define WS_STOP_GRACE_S  1.0
#define WS_CLOSE_GRACE_S 5 /* seconds a queued close may take before the socket is cut */

enum ws_kind { WS_TEXT = 0, WS_BINARY = 1, WS_CLOSE = 2 };

struct ws_msg {
    struct ws_msg *next;
    enum ws_kind kind;
    int code;
    size_t len;
    unsigned char buf[]; /* LWS_PRE + len */
};

struct ws_conn {
    struct ws_server *srv;
    struct lws *wsi; /* service thread only */
    void *user;
    char peer[64];
    pthread_mutex_t mu;
    struct ws_msg *head, *tail;
    size_t queued;
    int closing; /* a close is queued: sends fail */
    int want_paused, paused;
    int dirty;
    int kill;          /* a close is queued: bound how long it may take */
    unsigned char *rx; /* message being reassembled */
    size_t rx_len, rx_cap;
    int rx_binary, rx_overflow;
    struct ws_conn *next, *prev; /* srv->conns, service thread only */
};

struct ws_server {
    struct lws_context *ctx;
    struct lws_vhost *vh;
    struct ws_handler h;
    pthread_t thread;
    int port;
    char path[256];
    _Atomic int stop, quiesced, done;
    int closed_all;
    pthread_mutex_t mu;     /* keys, limits */
    pthread_mutex_t ctx_mu; /* ctx against ws_stop's wake-ups while the thread destroys it */
    char keys[WS_KEYS_MAX];
    int64_t max_message, max_queue;
    struct ws_conn *conns;
    struct lws_protocols protocols[2];
};

struct ws_pss {
    struct ws_conn *c;
};

/* ---- keys -------------------------------------------------------------------------------- */

/* 1 when given is on the list (or the list is empty), as proto/http decides it. */
static int ws_key_ok(struct ws_server *srv, const char *given)
{
    pthread_mutex_lock(&srv->mu);
    int ok = http_key_listed(srv->keys, given);
    pthread_mutex_unlock(&srv->mu);
    return ok;
}

/* The key from the header, the subprotocol list or the query (NULL if none) into buf. */
static const char *ws_given_key(struct lws *wsi, char *buf, int len)
{
    if (lws_hdr_copy(wsi, buf, len, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
        strncasecmp(buf, "Bearer ", 7) == 0) {
        char *k = buf + 7;
        while (*k == ' ')
            k++;
        return k;
    }
    if (lws_hdr_copy(wsi, buf, len, WSI_TOKEN_PROTOCOL) > 0) {
        char *save = NULL;
        for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
            if (strncmp(t, "parley.key.", 11) == 0)
                return t + 11;
    }
    const char *q = lws_get_urlarg_by_name(wsi, "api_key=", buf, len);
    if (q)
        return q;
    return NULL;
}

/* ---- queue ------------------------------------------------------------------------------- */

static void ws_wake(struct ws_conn *c)
{
    c->dirty = 1; /* under c->mu */
    lws_cancel_service(c->srv->ctx);
}

static void ws_free_queue(struct ws_conn *c)
{
    while (c->head) {
        struct ws_msg *m = c->head;
        c->head = m->next;
        free(m);
    }
    c->tail = NULL;
    c->queued = 0;
}

static void ws_push(struct ws_conn *c, struct ws_msg *m)
{
    m->next = NULL;
    if (c->tail)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    c->queued += m->len;
}

static struct ws_msg *ws_msg_new(enum ws_kind kind, const void *data, size_t len)
{
    struct ws_msg *m = malloc(sizeof *m + LWS_PRE + len);
    if (!m)
        return NULL;
    m->kind = kind;
    m->code = 0;
    m->len = len;
    if (len)
        memcpy(m->buf + LWS_PRE, data, len);
    return m;
}

/* Caller holds c->mu. */
static void ws_close_locked(struct ws_conn *c, int code, const char *reason)
{
    if (c->closing)
        return;
    if (code == 1008) /* the client does not read: what waits for it will never go */
        ws_free_queue(c);
    size_t n = reason ? strlen(reason) : 0;
    if (n > 120) /* a close frame's payload is at most 125 bytes */
        n = 120;
    struct ws_msg *m = ws_msg_new(WS_CLOSE, reason, n);
    if (!m) { /* no memory for the reason: drop what is queued and close plainly */
        ws_free_queue(c);
        m = ws_msg_new(WS_CLOSE, NULL, 0);
        if (!m)
            return;
    }
    m->code = code;
    c->closing = 1;
    c->kill = 1;
    ws_push(c, m);
    c->queued -= m->len;
    ws_wake(c);
}

int ws_send(struct ws_conn *c, int binary, const void *data, size_t len)
{
    pthread_mutex_lock(&c->mu);
    int rc = -1;
    if (!c->closing) {
        pthread_mutex_lock(&c->srv->mu);
        int64_t cap = c->srv->max_queue;
        pthread_mutex_unlock(&c->srv->mu);
        struct ws_msg *m = NULL;
        if ((int64_t)(c->queued + len) > cap || !(m = ws_msg_new(binary, data, len))) {
            ws_close_locked(c, 1008, "slow reader: outgoing buffer full");
        } else {
            ws_push(c, m);
            ws_wake(c);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

size_t ws_queued(struct ws_conn *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->queued;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void ws_close(struct ws_conn *c, int code, const char *reason)
{
    pthread_mutex_lock(&c->mu);
    ws_close_locked(c, code, reason);
    pthread_mutex_unlock(&c->mu);
}

void ws_pause_rx(struct ws_conn *c, int paused)
{
    pthread_mutex_lock(&c->mu);
    if (c->want_paused != paused) {
        c->want_paused = paused;
        ws_wake(c);
    }
    pthread_mutex_unlock(&c->mu);
}

const char *ws_peer(const struct ws_conn *c)
{
    return c->peer;
}

/* ---- service thread ---------------------------------------------------------------------- */

/* EVENT_WAIT_CANCELLED: apply what other threads asked for. */
static void ws_serve_dirty(struct ws_server *srv)
{
    if (atomic_load(&srv->stop) && !srv->closed_all) {
        srv->closed_all = 1;
        for (struct ws_conn *c = srv->conns; c; c = c->next)
            ws_close(c, 1001, "server stopping");
    }
    for (struct ws_conn *c = srv->conns; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        int dirty = c->dirty, pending = c->head != NULL, want = c->want_paused, kill = c->kill;
        c->dirty = 0;
        c->kill = 0;
        pthread_mutex_unlock(&c->mu);
        if (!dirty)
            continue;
        if (kill) /* a peer that reads nothing more cannot take the close frame either */
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, WS_CLOSE_GRACE_S);
        if (pending)
            lws_callback_on_writable(c->wsi);
        if (want != c->paused) {
            c->paused = want;
            lws_rx_flow_control(c->wsi, want ? 0 : 1);
        }
    }
}

/* WRITEABLE: one message. -1 closes the connection (after a queued close). */
static int ws_write_one(struct ws_conn *c)
{
    pthread_mutex_lock(&c->mu);
    struct ws_msg *m = c->head;
    if (m) {
        c->head = m->next;
        if (!c->head)
            c->tail = NULL;
        if (m->kind != WS_CLOSE)
            c->queued -= m->len;
    }
    int more = c->head != NULL;
    pthread_mutex_unlock(&c->mu);
    if (!m)
        return 0;
    if (m->kind == WS_CLOSE) {
        lws_close_reason(c->wsi, (enum lws_close_status)m->code, m->buf + LWS_PRE, m->len);
        free(m);
        return -1;
    }
    int n = lws_write(c->wsi, m->buf + LWS_PRE, m->len,
                      m->kind == WS_BINARY ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    int failed = n < (int)m->len;
    free(m);
    if (failed)
        return -1;
    if (more)
        lws_callback_on_writable(c->wsi);
    return 0;
}

/* RECEIVE: one fragment; a whole message goes to the handler. */
static void ws_receive(struct ws_conn *c, struct lws *wsi, const void *in, size_t len)
{
    struct ws_server *srv = c->srv;
    if (lws_is_first_fragment(wsi)) {
        c->rx_len = 0;
        c->rx_overflow = 0;
        c->rx_binary = lws_frame_is_binary(wsi);
    }
    pthread_mutex_lock(&srv->mu);
    size_t max = (size_t)srv->max_message;
    pthread_mutex_unlock(&srv->mu);
    if (!c->rx_overflow && c->rx_len + len > max) {
        c->rx_overflow = 1;
        if (srv->h.too_big)
            srv->h.too_big(c->user, c, c->rx_len + len);
        ws_close(c, 1009, "message too big");
    }
    if (c->rx_overflow)
        return;
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        while (cap < c->rx_len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        unsigned char *p = realloc(c->rx, cap + 1);
        if (!p) {
            c->rx_overflow = 1;
            ws_close(c, 1011, "out of memory");
            return;
        }
        c->rx = p;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
        c->rx[c->rx_len] = 0;
        pthread_mutex_lock(&c->mu);
        int closing = c->closing;
        pthread_mutex_unlock(&c->mu);
        if (!closing)
            srv->h.message(c->user, c, c->rx_binary, c->rx, c->rx_len);
        c->rx_len = 0;
        if (c->rx_cap > 65536) { /* do not keep a big buffer for small messages */
            free(c->rx);
            c->rx = NULL;
            c->rx_cap = 0;
        }
    }
}

/* The handshake: path, key. >0 after answering with an HTTP status, 0 to go on. */
static int ws_confirm_upgrade(struct ws_server *srv, struct lws *wsi)
{
    char uri[512], buf[1024];
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, srv->path)) {
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
        return 1;
    }
    if (!ws_key_ok(srv, ws_given_key(wsi, buf, sizeof buf))) {
        lws_return_http_status(wsi, HTTP_STATUS_UNAUTHORIZED, NULL);
        return 1;
    }
    return 0;
}

static void ws_established(struct ws_server *srv, struct lws *wsi, struct ws_pss *pss)
{
    struct ws_conn *c = calloc(1, sizeof *c);
    if (!c) {
        pss->c = NULL;
        return;
    }
    c->srv = srv;
    c->wsi = wsi;
    pthread_mutex_init(&c->mu, NULL);
    lws_get_peer_simple(wsi, c->peer, sizeof c->peer);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    pss->c = c;
    int code = 1013;
    char why[128] = "server shutting down";
    if (!atomic_load(&srv->quiesced))
        c->user = srv->h.open(srv->h.user, c, &code, why, sizeof why);
    else if (srv->h.refused)
        srv->h.refused(srv->h.user, c, why);
    if (!c->user)
        ws_close(c, code, why);
}

static void ws_closed(struct ws_server *srv, struct ws_pss *pss)
{
    struct ws_conn *c = pss->c;
    if (!c)
        return;
    pss->c = NULL;
    pthread_mutex_lock(&c->mu);
    c->closing = 1;
    pthread_mutex_unlock(&c->mu);
    if (c->user)
        srv->h.closed(c->user, c);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ws_free_queue(c);
    free(c->rx);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    struct ws_server *srv = lws_context_user(lws_get_context(wsi));
    struct ws_pss *pss = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP: /* a plain request, not an upgrade */
        if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL))
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: return srv ? ws_confirm_upgrade(srv, wsi) : -1;
    case LWS_CALLBACK_ESTABLISHED: ws_established(srv, wsi, pss); return pss->c ? 0 : -1;
    case LWS_CALLBACK_RECEIVE:
        if (pss->c)
            ws_receive(pss->c, wsi, in, len);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE: return pss->c ? ws_write_one(pss->c) : -1;
    case LWS_CALLBACK_CLOSED: ws_closed(srv, pss); return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (srv)
            ws_serve_dirty(srv);
        return 0;
    default: return 0;
    }
}

static void *ws_thread(void *arg)
{
    struct ws_server *srv = arg;
    double t0 = 0;
    for (;;) {
        if (lws_service(srv->ctx, 0) < 0)
            break;
        if (!atomic_load(&srv->stop))
            continue;
        /* stopping: the connections were sent 1001 after their queues; give them a moment */
        double t = clock_seconds();
        if (!t0)
            t0 = t;
        if (!srv->conns || t - t0 > WS_STOP_GRACE_S)
            break;
    }
    /* no other thread may wake the loop from here on: every send now fails */
    for (struct ws_conn *c = srv->conns; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        c->closing = 1;
        pthread_mutex_unlock(&c->mu);
    }
    /* closes the connections still open (their CLOSED callbacks run here) */
    pthread_mutex_lock(&srv->ctx_mu);
    lws_context_destroy(srv->ctx);
    srv->ctx = NULL;
    atomic_store(&srv->done, 1);
    pthread_mutex_unlock(&srv->ctx_mu);
    return NULL;
}

struct ws_server *ws_start(const struct ws_settings *s, const struct ws_handler *h, struct err *e)
{
    struct ws_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        err_set(e, "websocket: out of memory");
        return NULL;
    }
    srv->h = *h;
    snprintf(srv->path, sizeof srv->path, "%s", s->path && s->path[0] ? s->path : "/");
    snprintf(srv->keys, sizeof srv->keys, "%s", s->keys ? s->keys : "");
    srv->max_message = s->max_message;
    srv->max_queue = s->max_queue;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_mutex_init(&srv->ctx_mu, NULL);
    srv->protocols[0] = (struct lws_protocols){
        .name = WS_SUBPROTOCOL,
        .callback = ws_callback,
        .per_session_data_size = sizeof(struct ws_pss),
        .rx_buffer_size = 65536,
    };
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = s->port;
    info.iface = s->address && s->address[0] ? s->address : NULL;
    info.protocols = srv->protocols;
    info.user = srv;
    info.gid = -1;
    info.uid = -1;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6 * !(s->address && strchr(s->address, ':'));
    info.count_threads = 1;
    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        err_set(e, "websocket: cannot listen on %s:%d", info.iface ? info.iface : "*", s->port);
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return NULL;
    }
    srv->vh = lws_get_vhost_by_name(srv->ctx, "default");
    srv->port = srv->vh ? lws_get_vhost_listen_port(srv->vh) : s->port;
    if (srv->port <= 0 || pthread_create(&srv->thread, NULL, ws_thread, srv)) {
        err_set(e, "websocket: cannot listen on %s:%d", info.iface ? info.iface : "*", s->port);
        lws_context_destroy(srv->ctx);
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return NULL;
    }
    return srv;
}

int ws_port(const struct ws_server *srv)
{
    return srv->port;
}

void ws_set_keys(struct ws_server *srv, const char *keys)
{
    pthread_mutex_lock(&srv->mu);
    snprintf(srv->keys, sizeof srv->keys, "%s", keys ? keys : "");
    pthread_mutex_unlock(&srv->mu);
}

void ws_set_limits(struct ws_server *srv, int64_t max_message, int64_t max_queue)
{
    pthread_mutex_lock(&srv->mu);
    srv->max_message = max_message;
    srv->max_queue = max_queue;
    pthread_mutex_unlock(&srv->mu);
}

void ws_quiesce(struct ws_server *srv)
{
    atomic_store(&srv->quiesced, 1);
}

void ws_stop(struct ws_server *srv)
{
    if (!srv)
        return;
    atomic_store(&srv->quiesced, 1);
    atomic_store(&srv->stop, 1);
    /* lws_service sleeps until an event: poke it until the thread has finished */
    while (!atomic_load(&srv->done)) {
        pthread_mutex_lock(&srv->ctx_mu);
        if (srv->ctx)
            lws_cancel_service(srv->ctx);
        pthread_mutex_unlock(&srv->ctx_mu);
        clock_sleep_ms(20);
    }
    pthread_join(srv->thread, NULL);
    pthread_mutex_destroy(&srv->ctx_mu);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}
