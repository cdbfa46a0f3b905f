/*
 * chat (daemon) — parley's native WebSocket protocol (docs/protocol.md) on top of the engine
 * through the service: one protocol session per connection.
 *
 * A session is driven by two threads: the transport's thread hands it whole messages
 * (chat_session_message: JSON control, or audio that is decoded, run through the server VAD
 * and pushed to the engine), and the session's pump thread turns engine events into JSON
 * events and audio frames (resampled from the model's rate, Opus or PCM16), paces them
 * against the connection's bounded outgoing queue, and watches the time limits.
 *
 * The transport is reached through struct chat_io, so tests can drive sessions without
 * sockets; chat_server_* binds sessions to proto/ws.
 */
#ifndef PARLEY_DAEMON_CHAT_H
#define PARLEY_DAEMON_CHAT_H

#include <stddef.h>

#include "runtime/err.h"
#include "service.h"

/* What a session needs of its connection; every function may be called from any thread. */
struct chat_io {
    void *ctx;
    int (*send)(void *ctx, int binary, const void *data, size_t len); /* -1: gone */
    size_t (*queued)(void *ctx);                                      /* bytes not yet written */
    void (*close)(void *ctx, int code, const char *reason);
    void (*pause_rx)(void *ctx, int paused);
};

struct chat_session;

/* Admits a session (service_admit). NULL when refused: an error was sent and *code / why say
 * how to close (1013 "server full: N sessions"). */
struct chat_session *chat_session_open(struct service *svc, const struct chat_io *io, int *code,
                                       char *why, size_t len);
/* One whole message from the client (transport thread). */
void chat_session_message(struct chat_session *s, int binary, const void *data, size_t len);
/* The client sent a message over limits.max_message_bytes (the transport closes 1009). */
void chat_session_too_big(struct chat_session *s, size_t len);
/* Shutting down: sends session.ending; the session closes once no answer is in progress. */
void chat_session_ending(struct chat_session *s, int deadline_s);
/* The connection is gone: stops the pump, closes the engine session, leaves the service. */
void chat_session_free(struct chat_session *s);
const char *chat_session_id(const struct chat_session *s);

/* The WebSocket server of parleyd: [websocket] address/port/path, auth keys, limits. */
struct chat_server;
struct chat_server *chat_server_start(struct service *svc, const char *keys, struct err *e);
int chat_server_port(const struct chat_server *cs);
/* SIGHUP: keys and limits (the rest is read live from the service). */
void chat_server_reload(struct chat_server *cs, const char *keys);
/* Drain: no new sessions (1013), session.ending to each open one. */
void chat_server_drain(struct chat_server *cs, int deadline_s);
/* Closes every connection and stops the server thread. */
void chat_server_stop(struct chat_server *cs);

#endif
