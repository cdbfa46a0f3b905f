/*
 * The WebSocket protocol end to end: a real parleyd (next to this test binary) on loopback
 * with the tiny golden models, and a small libwebsockets client: session.start, text and
 * spoken (PCM16, manual commit) turns with their audio accounted for, the typed errors while
 * another session carries on, the message size limit (1009), the session limit (1013), API
 * keys at the handshake (401), other paths (404), and SIGTERM: session.ending, close 1001,
 * exit 0. Every wait is bounded.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "config.h"
#include "service.h"
#include "test.h"
#include "testd.h"
#include "runtime/clock.h"

#define TW_MAX    1024
#define TW_WAIT_S 20.0 /* under ASan on a busy machine */

/* ---- a small lws client on its own service thread ---------------------------------------- */

struct tw_out {
    struct tw_out *next;
    int binary;
    size_t len;
    unsigned char buf[]; /* LWS_PRE + len */
};

struct tw {
    struct lws_context *ctx;
    struct lws *wsi;
    pthread_t th;
    _Atomic int stop, done;
    pthread_mutex_t mu;
    int port;
    char path[256], auth[128], protocols[128];
    int established, closed, failed, close_code;
    char *json[TW_MAX];
    int n_json, n_bin;
    int64_t bin_bytes;
    unsigned char *rx;
    size_t rx_len, rx_cap;
    struct tw_out *head, *tail;
};

static int tw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    struct tw *t = lws_context_user(lws_get_context(wsi));
    (void)user;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (t->auth[0]) {
            unsigned char **p = in, *end = *p + len;
            if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                             (unsigned char *)t->auth, (int)strlen(t->auth), p,
                                             end))
                return -1;
        }
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        pthread_mutex_lock(&t->mu);
        t->established = 1;
        if (t->head)
            lws_callback_on_writable(wsi);
        pthread_mutex_unlock(&t->mu);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        pthread_mutex_lock(&t->mu);
        if (t->rx_len + len + 1 > t->rx_cap) {
            t->rx_cap = (t->rx_len + len + 1) * 2;
            t->rx = realloc(t->rx, t->rx_cap);
        }
        memcpy(t->rx + t->rx_len, in, len);
        t->rx_len += len;
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            if (lws_frame_is_binary(wsi)) {
                t->n_bin++;
                t->bin_bytes += (int64_t)t->rx_len;
            } else if (t->n_json < TW_MAX) {
                t->rx[t->rx_len] = 0;
                t->json[t->n_json++] = strdup((char *)t->rx);
            }
            t->rx_len = 0;
        }
        pthread_mutex_unlock(&t->mu);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        pthread_mutex_lock(&t->mu);
        struct tw_out *o = t->head;
        if (o) {
            t->head = o->next;
            if (!t->head)
                t->tail = NULL;
        }
        int more = t->head != NULL;
        pthread_mutex_unlock(&t->mu);
        if (o) {
            int n = lws_write(wsi, o->buf + LWS_PRE, o->len,
                              o->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
            free(o);
            if (n < 0)
                return -1;
        }
        if (more)
            lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        pthread_mutex_lock(&t->mu);
        if (len >= 2)
            t->close_code = ((const unsigned char *)in)[0] << 8 | ((const unsigned char *)in)[1];
        pthread_mutex_unlock(&t->mu);
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        pthread_mutex_lock(&t->mu);
        t->failed = t->closed = 1;
        t->wsi = NULL;
        pthread_mutex_unlock(&t->mu);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        pthread_mutex_lock(&t->mu);
        t->closed = 1;
        t->wsi = NULL;
        pthread_mutex_unlock(&t->mu);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (t) {
            pthread_mutex_lock(&t->mu);
            if (t->wsi && t->established && t->head)
                lws_callback_on_writable(t->wsi);
            pthread_mutex_unlock(&t->mu);
        }
        return 0;
    default: return 0;
    }
}

static const struct lws_protocols tw_protocols[] = {
    { "parley.v1", tw_callback, 0, 65536, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 },
};

static void *tw_thread(void *arg)
{
    struct tw *t = arg;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = t->ctx;
    ci.address = "127.0.0.1";
    ci.port = t->port;
    ci.path = t->path;
    ci.host = "127.0.0.1";
    ci.origin = "127.0.0.1";
    ci.protocol = t->protocols;
    pthread_mutex_lock(&t->mu);
    t->wsi = lws_client_connect_via_info(&ci);
    if (!t->wsi)
        t->failed = t->closed = 1;
    pthread_mutex_unlock(&t->mu);
    while (!atomic_load(&t->stop))
        if (lws_service(t->ctx, 0) < 0)
            break;
    lws_context_destroy(t->ctx);
    atomic_store(&t->done, 1);
    return NULL;
}

/* Connects (auth: an Authorization header value or NULL; protocols: the offered list). */
static struct tw *tw_connect(int port, const char *path, const char *auth, const char *protocols)
{
    struct tw *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    lws_set_log_level(LLL_ERR, NULL);
    pthread_mutex_init(&t->mu, NULL);
    t->port = port;
    snprintf(t->path, sizeof t->path, "%s", path);
    snprintf(t->auth, sizeof t->auth, "%s", auth ? auth : "");
    snprintf(t->protocols, sizeof t->protocols, "%s", protocols ? protocols : "parley.v1");
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = tw_protocols;
    info.user = t;
    info.gid = -1;
    info.uid = -1;
    t->ctx = lws_create_context(&info);
    if (!t->ctx || pthread_create(&t->th, NULL, tw_thread, t)) {
        free(t);
        return NULL;
    }
    return t;
}

static void tw_free(struct tw *t)
{
    if (!t)
        return;
    atomic_store(&t->stop, 1);
    while (!atomic_load(&t->done)) {
        lws_cancel_service(t->ctx);
        clock_sleep_ms(5);
    }
    pthread_join(t->th, NULL);
    for (int i = 0; i < t->n_json; i++)
        free(t->json[i]);
    while (t->head) {
        struct tw_out *o = t->head;
        t->head = o->next;
        free(o);
    }
    free(t->rx);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static void tw_send(struct tw *t, int binary, const void *data, size_t len)
{
    struct tw_out *o = malloc(sizeof *o + LWS_PRE + len);
    if (!o)
        return;
    o->next = NULL;
    o->binary = binary;
    o->len = len;
    memcpy(o->buf + LWS_PRE, data, len);
    pthread_mutex_lock(&t->mu);
    if (t->tail)
        t->tail->next = o;
    else
        t->head = o;
    t->tail = o;
    pthread_mutex_unlock(&t->mu);
    lws_cancel_service(t->ctx);
}

static void tw_text(struct tw *t, const char *json)
{
    tw_send(t, 0, json, strlen(json));
}

/* Index of the first JSON message from `from` on containing needle (waits); -1 if none. */
static int tw_wait(struct tw *t, int from, const char *needle, double timeout_s)
{
    double end = clock_seconds() + timeout_s;
    do {
        pthread_mutex_lock(&t->mu);
        for (int i = from; i < t->n_json; i++)
            if (strstr(t->json[i], needle)) {
                pthread_mutex_unlock(&t->mu);
                return i;
            }
        int closed = t->closed;
        pthread_mutex_unlock(&t->mu);
        if (closed)
            break;
        clock_sleep_ms(5);
    } while (clock_seconds() < end);
    return -1;
}

/* Waits for the close; its code (0 when none came). */
static int tw_wait_closed(struct tw *t, double timeout_s)
{
    double end = clock_seconds() + timeout_s;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        int closed = t->closed, code = t->close_code;
        pthread_mutex_unlock(&t->mu);
        if (closed || clock_seconds() > end)
            return code;
        clock_sleep_ms(5);
    }
}

static long long tw_field(const char *json, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = strstr(json, key);
    return p ? atoll(p + strlen(key)) : -999;
}

/* ---- the daemon -------------------------------------------------------------------------- */

/* A raw upgrade request; the HTTP status of the answer (-1: none). What follows the head
 * (up to cap bytes, for 101: the first frames) goes to after when not NULL. */
static int tw_handshake_read(int port, const char *path, const char *extra, char *after, size_t cap)
{
    int fd = td_connect(port, 0);
    if (fd < 0)
        return -1;
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     path, port, extra ? extra : "");
    int status = -1;
    if (write(fd, req, (size_t)n) == n) {
        char resp[2048];
        size_t got = 0;
        double end = clock_seconds() + (after ? 1 : 5);
        resp[0] = 0;
        while (got < sizeof resp - 1 && clock_seconds() < end && (after || !strstr(resp, "\r\n"))) {
            struct pollfd p = { fd, POLLIN, 0 };
            if (poll(&p, 1, 100) <= 0)
                continue;
            ssize_t k = read(fd, resp + got, sizeof resp - 1 - got);
            if (k <= 0)
                break;
            got += (size_t)k;
            resp[got] = 0;
        }
        resp[got] = 0;
        if (got > 12 && !strncmp(resp, "HTTP/1.", 7))
            status = atoi(resp + 9);
        const char *head_end = strstr(resp, "\r\n\r\n");
        if (after && head_end) {
            size_t rest = got - (size_t)(head_end + 4 - resp);
            memset(after, 0, cap);
            memcpy(after, head_end + 4, rest < cap ? rest : cap);
        }
    }
    close(fd);
    return status;
}

static int tw_handshake_status(int port, const char *path, const char *extra)
{
    return tw_handshake_read(port, path, extra, NULL, 0);
}

/* The code of the first close frame among raw server frames (unmasked, short). */
static int tw_close_code(const char *frames, size_t len)
{
    const unsigned char *p = (const unsigned char *)frames;
    size_t at = 0;
    while (at + 2 <= len) {
        size_t n = p[at + 1] & 0x7f, hdr = 2;
        if (n == 126) {
            if (at + 4 > len)
                return 0;
            n = (size_t)p[at + 2] << 8 | p[at + 3];
            hdr = 4;
        }
        if ((p[at] & 0x0f) == 8)
            return at + hdr + 2 <= len ? p[at + hdr] << 8 | p[at + hdr + 1] : 0;
        if (n == 0 && p[at] == 0)
            return 0;
        at += hdr + n;
    }
    return 0;
}

/* Starts parleyd (keys k1 and k2, two sessions, 64K messages) and waits until its WebSocket
 * port answers a handshake; 0, or -1 (then it is not running). */
static int tw_daemon(struct td_daemon *d)
{
    if (td_daemon_start(d, test_tmpdir(), "parleyd",
                        "[auth]\napi_keys = k1, k2\n[limits]\nmax_sessions = 2\n"
                        "max_message_bytes = 64K\nmax_audio_rate = 1000\n[engine]\nwarmup = 0\n"
                        "[process]\nthreads = 1\ndrain_timeout = 5\n",
                        (int)(TW_WAIT_S * 1000)))
        return -1;
    for (double end = clock_seconds() + TW_WAIT_S; clock_seconds() < end; clock_sleep_ms(50))
        if (tw_handshake_status(d->ws, "/nope", NULL) == 404)
            return 0;
    kill(d->pid, SIGKILL);
    td_wait_exit(d->pid, 5000);
    return -1;
}

#define TW_START_PCM                                                                           \
    "{\"type\":\"session.start\",\"input\":{\"codec\":\"pcm16\",\"rate\":16000},"              \
    "\"output\":{\"codec\":\"opus\",\"rate\":48000},\"turn_detection\":{\"type\":\"manual\"}," \
    "\"sampling\":{\"greedy\":true,\"max_new_tokens\":40}}"

/* One PCM16 spoken turn of 0.6 s with a manual commit; the turn.done index or -1. */
static int tw_spoken_turn(struct tw *a)
{
    int from = a->n_json;
    for (int f = 0; f < 30; f++) {
        unsigned char b[640];
        td_tone_pcm16(b, 320, 6000, 180, f * 320);
        tw_send(a, 1, b, sizeof b);
    }
    tw_text(a, "{\"type\":\"input.commit\"}");
    int c = tw_wait(a, from, "\"input.committed\"", TW_WAIT_S);
    if (c < 0 || tw_field(a->json[c], "audio_ms") != 600)
        return -1;
    if (tw_wait(a, c, "\"user.tokenized\"", TW_WAIT_S) < 0)
        return -1;
    return tw_wait(a, c, "\"turn.done\"", TW_WAIT_S);
}

TEST(ws_protocol_end_to_end)
{
    char exe[PATH_MAX];
    if (!td_need("parleyd", exe, sizeof exe))
        return;
    struct td_daemon srv;
    REQUIRE(tw_daemon(&srv) == 0);
    int port = srv.ws;
    pid_t pid = srv.pid;

    /* the handshake: keys and paths */
    CHECK(tw_handshake_status(port, "/v1/chat", NULL) == 401);
    CHECK(tw_handshake_status(port, "/v1/chat", "Authorization: Bearer nope\r\n") == 401);
    CHECK(tw_handshake_status(port, "/v1/chat?api_key=nope", NULL) == 401);
    CHECK(tw_handshake_status(port, "/v1/other", "Authorization: Bearer k1\r\n") == 404);

    /* session A: a text turn, Opus out; every packet decodes to 960 samples */
    struct tw *a = tw_connect(port, "/v1/chat", "Bearer k1", NULL);
    REQUIRE(a != NULL);
    tw_text(a, TW_START_PCM);
    int i = tw_wait(a, 0, "\"session.started\"", TW_WAIT_S);
    CHECK(i >= 0);
    tw_text(a, "{\"type\":\"input.text\",\"text\":\"Hello\"}");
    CHECK(tw_wait(a, 0, "\"transcript.delta\"", TW_WAIT_S) >= 0);
    int d = tw_wait(a, 0, "\"turn.done\"", TW_WAIT_S);
    REQUIRE(d >= 0);
    pthread_mutex_lock(&a->mu);
    CHECK(tw_field(a->json[d], "audio_samples") == (long long)a->n_bin * 960);
    fprintf(stderr, "  text turn: %d Opus packets, %.160s\n", a->n_bin, a->json[d]);
    pthread_mutex_unlock(&a->mu);

    /* session B (key as a subprotocol): typed errors, while A takes a spoken turn */
    struct tw *b = tw_connect(port, "/v1/chat", NULL, "parley.v1,parley.key.k2");
    REQUIRE(b != NULL);
    tw_text(b, "{\"type\":");
    CHECK(tw_wait(b, 0, "\"invalid_json\"", TW_WAIT_S) >= 0);
    tw_text(b, "{\"type\":\"sing\"}");
    CHECK(tw_wait(b, 0, "\"unknown_type\"", TW_WAIT_S) >= 0);
    unsigned char junk[3] = { 0xff, 0xfe, 0xfd };
    tw_send(b, 1, junk, sizeof junk);
    CHECK(tw_wait(b, 0, "\"not_started\"", TW_WAIT_S) >= 0);
    tw_text(b, "{\"type\":\"session.start\",\"input\":{\"codec\":\"opus\",\"rate\":22050}}");
    CHECK(tw_wait(b, 0, "\"invalid_value\"", TW_WAIT_S) >= 0);
    tw_text(b, "{\"type\":\"session.start\",\"input\":{\"codec\":\"opus\",\"rate\":16000}}");
    CHECK(tw_wait(b, 0, "\"session.started\"", TW_WAIT_S) >= 0);
    tw_send(b, 1, junk, sizeof junk);
    CHECK(tw_wait(b, 0, "\"bad_audio\"", TW_WAIT_S) >= 0);

    int before = a->n_bin;
    d = tw_spoken_turn(a);
    CHECK(d >= 0);
    if (d >= 0) {
        pthread_mutex_lock(&a->mu);
        CHECK(tw_field(a->json[d], "audio_samples") == (long long)(a->n_bin - before) * 960);
        CHECK(tw_field(a->json[d], "turn") == 1);
        pthread_mutex_unlock(&a->mu);
    }

    /* a third session: over limits.max_sessions = 2 (a raw client: the refusal arrives in the
     * same packet as the 101, which libwebsockets' client misreads as 1002) */
    char body[1024];
    CHECK(tw_handshake_read(port, "/v1/chat?api_key=k1", NULL, body, sizeof body) == 101);
    CHECK(strstr(body, "server full: 2 sessions") != NULL);
    CHECK(tw_close_code(body, sizeof body) == 1013);

    /* B sends a message over 64K: error, close 1009; A carries on */
    size_t big = 70000;
    char *msg = malloc(big);
    REQUIRE(msg != NULL);
    memset(msg, ' ', big);
    memcpy(msg, "{\"type\":\"ping\"", 14);
    msg[big - 1] = '}';
    tw_send(b, 0, msg, big);
    free(msg);
    CHECK(tw_wait(b, 0, "\"message_too_big\"", TW_WAIT_S) >= 0);
    CHECK(tw_wait_closed(b, TW_WAIT_S) == 1009);
    tw_free(b);
    tw_text(a, "{\"type\":\"ping\",\"id\":\"x\"}");
    CHECK(tw_wait(a, 0, "\"pong\"", TW_WAIT_S) >= 0);

    /* SIGTERM: A hears session.ending and is closed with 1001; exit 0 */
    kill(pid, SIGTERM);
    CHECK(tw_wait(a, 0, "\"session.ending\"", TW_WAIT_S) >= 0);
    CHECK(tw_wait_closed(a, TW_WAIT_S) == 1001);
    tw_free(a);
    int st = td_wait_exit(pid, (int)(TW_WAIT_S * 1000));
    CHECK(st == 0);
    if (st != 0) {
        char text[8192];
        fprintf(stderr, "  parleyd log:\n%s\n", td_daemon_log(&srv, text, sizeof text));
    }
}

/* In process, without models: the server on port 0 (the kernel's choice), then a drain:
 * the open session hears session.ending and is closed with 1001 (no answer runs); a new
 * connection gets the typed refusal and 1013. */
TEST(ws_drain_in_process)
{
    static struct service svc;
    memset(&svc, 0, sizeof svc);
    config_defaults(&svc.cfg);
    svc.cfg.ws_port = 0;
    svc.version = "test";
    REQUIRE(pthread_mutex_init(&svc.mu, NULL) == 0);
    struct err e;
    struct chat_server *cs = chat_server_start(&svc, "", &e);
    REQUIRE(cs != NULL);
    int port = chat_server_port(cs);
    CHECK(port > 0);
    struct tw *a = tw_connect(port, "/v1/chat", NULL, NULL);
    REQUIRE(a != NULL);
    tw_text(a, "{\"type\":\"ping\",\"id\":1}");
    CHECK(tw_wait(a, 0, "\"pong\"", TW_WAIT_S) >= 0);
    CHECK(atomic_load(&svc.sessions) == 1);
    atomic_store(&svc.draining, 1);
    chat_server_drain(cs, 7);
    int i = tw_wait(a, 0, "\"session.ending\"", TW_WAIT_S);
    CHECK(i >= 0);
    if (i >= 0)
        CHECK(tw_field(a->json[i], "deadline_s") == 7);
    CHECK(tw_wait_closed(a, TW_WAIT_S) == 1001);
    tw_free(a);
    char body[1024];
    CHECK(tw_handshake_read(port, "/v1/chat", NULL, body, sizeof body) == 101);
    CHECK(strstr(body, "\"server_full\"") != NULL);
    CHECK(strstr(body, "server shutting down") != NULL);
    CHECK(tw_close_code(body, sizeof body) == 1013);
    chat_server_stop(cs);
    CHECK(atomic_load(&svc.sessions) == 0);
    pthread_mutex_destroy(&svc.mu);
}
