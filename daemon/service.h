/*
 * service — what parleyd's front-ends (the WebSocket server, REST spoken QA) share: the
 * engine, the live settings, admission of sessions (limits.max_sessions, draining), session
 * ids, the per-turn log line and the turn metrics (first-audio latency, stage compute time,
 * tokens, refusals, errors by type).
 *
 * Threads: every function may be called from any thread. The settings are copied under a
 * mutex (SIGHUP swaps the reloadable ones while sessions run); counters are atomics.
 */
#ifndef PARLEY_SERVICE_H
#define PARLEY_SERVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "engine/engine.h"
#include "metrics.h"

#define SERVICE_ID_LEN 17 /* 16 hex digits + NUL */

enum service_refusal {
    SERVICE_REFUSED_FULL = 0,     /* limits.max_sessions reached (or the engine's memory) */
    SERVICE_REFUSED_DRAINING = 1, /* shutting down */
    SERVICE_REFUSED_N
};

struct service {
    struct engine *eng;
    int64_t lm_ctx; /* the LM's context length */
    int voice_rate; /* Hz of answer audio (the vocoder's); 0 without a decoder */
    int have_stok;  /* spoken input possible */
    const char *version;
    _Atomic int sessions; /* open, all front-ends together */
    _Atomic int draining;
    _Atomic unsigned long long next_id;
    unsigned long long id_salt; /* makes ids differ between processes behind one balancer */
    pthread_mutex_t mu;         /* guards cfg */
    struct config cfg;

    struct metric *m_sessions, *m_turns[5], *m_tokens[3], *m_refused[SERVICE_REFUSED_N];
    struct metric *m_stage[3], *m_audio[2], *m_errors[24];
    struct metrics_histogram *h_first_audio, *h_queue_wait, *h_turn_rtf;
};

/* eng and models must outlive the service. Registers the metrics. */
int service_init(struct service *s, struct engine *eng, const struct engine_models *m,
                 const struct config *cfg, const char *version);
void service_free(struct service *s);
/* SIGHUP: the new settings (the caller validated them). */
void service_reload(struct service *s, const struct config *cfg);
/* A copy of the live settings. */
void service_settings(struct service *s, struct config *out);

/* Session options from the settings (KV type, context, turn length, first decoder block);
 * the front-end then sets the input rate, sampling and the rest from its client. */
void service_session_options(struct service *s, struct engine_session_options *o);

/* Admission: 0 with a fresh session id when one more session may open (the caller then owns
 * one place and gives it back with service_leave); otherwise -1 with why ("server full: 32
 * sessions" / "server shutting down") and the refusal counted. */
int service_admit(struct service *s, char id[SERVICE_ID_LEN], char *why, size_t len);
void service_leave(struct service *s);
/* The engine itself refused a session that admission let in (its memory budget). */
void service_refused(struct service *s, enum service_refusal r);

/* One line in the log and the metrics for a finished turn. proto: "ws" or "rest";
 * done: the TURN_DONE event; audio_in_s: seconds of user audio (0 for text turns). */
void service_turn_done(struct service *s, const char *proto, const char *id,
                       const struct engine_event *done, double audio_in_s);
/* Counts an error sent to a client by its protocol code ("bad_audio", ...). */
void service_count_error(struct service *s, const char *code);

#endif
