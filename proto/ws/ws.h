/*
 * ws — a generic WebSocket server transport on libwebsockets: one lws context served by its
 * own thread, one path, the subprotocol "parley.v1", API keys checked at the handshake (HTTP
 * 401), whole messages handed to a handler, and a bounded outgoing queue per connection.
 *
 * Threads: the handler's callbacks run on the service thread. ws_send, ws_close,
 * ws_pause_rx and ws_queued may be called from any thread while the connection is open
 * (until the handler's closed callback returns): they queue work under the connection's lock
 * and wake the loop (lws_cancel_service); the loop then writes, ONLY in the writeable
 * callback and one message per callback, and applies rx flow control.
 *
 * API keys: "Authorization: Bearer KEY", a second subprotocol "parley.key.KEY", or the query
 * parameter "api_key=KEY"; no keys configured = no check.
 */
#ifndef PARLEY_WS_H
#define PARLEY_WS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"

#define WS_SUBPROTOCOL "parley.v1"
#define WS_KEYS_MAX    4096

struct ws_server;
struct ws_conn;

struct ws_handler {
    void *user;
    /* After the handshake. Returns the connection's user pointer, or NULL after writing a close
     * code and reason (the connection is then closed at once with them). */
    void *(*open)(void *user, struct ws_conn *c, int *code, char *why, size_t len);
    /* One whole message (binary: 1 for binary, 0 for text; text is not NUL-terminated). */
    void (*message)(void *conn, struct ws_conn *c, int binary, const void *data, size_t len);
    /* A message passed max_message: the handler may ws_send an error; then close 1009. */
    void (*too_big)(void *conn, struct ws_conn *c, size_t len);
    /* Optional: a connection refused after ws_quiesce, before its close 1013 with why (the
     * handler may ws_send a last message). */
    void (*refused)(void *user, struct ws_conn *c, const char *why);
    /* The connection is gone (any thread that may call ws_* on c must be stopped here). */
    void (*closed)(void *conn, struct ws_conn *c);
};

struct ws_settings {
    const char *address; /* listen address ("" or NULL: all) */
    int port;            /* 0: the kernel's choice (ws_port tells) */
    const char *path;    /* "/v1/chat": other paths are HTTP 404 */
    int64_t max_message; /* bytes of one incoming message */
    int64_t max_queue;   /* bytes queued out per connection at most (then close 1008) */
    const char *keys;    /* comma-separated API keys, "" for none */
};

struct ws_server *ws_start(const struct ws_settings *s, const struct ws_handler *h, struct err *e);
int ws_port(const struct ws_server *srv);
/* Live changes (SIGHUP). */
void ws_set_keys(struct ws_server *srv, const char *keys);
void ws_set_limits(struct ws_server *srv, int64_t max_message, int64_t max_queue);
/* Stops accepting sessions: new connections are closed with 1013 "server shutting down". */
void ws_quiesce(struct ws_server *srv);
/* Closes every connection (1001), stops the thread, frees everything. */
void ws_stop(struct ws_server *srv);

/* Queues one message; -1 when the connection is closing, or when the queue would pass
 * max_queue (the connection is then closed with 1008). */
int ws_send(struct ws_conn *c, int binary, const void *data, size_t len);
/* Bytes queued out and not yet written. */
size_t ws_queued(struct ws_conn *c);
/* Closes after what is queued now is written (code 1008, for a client that does not read:
 * drops what is queued instead); the socket is cut if that takes over 5 s. Further sends
 * fail. */
void ws_close(struct ws_conn *c, int code, const char *reason);
/* 1: stop reading from this client (TCP backpressure); 0: read again. */
void ws_pause_rx(struct ws_conn *c, int paused);
/* The peer's address, for logs. */
const char *ws_peer(const struct ws_conn *c);

#endif
