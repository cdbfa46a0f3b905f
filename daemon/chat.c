/*
 * chat (daemon) — see chat.h and docs/protocol.md.
 *
 * Locking: s->mu guards the turn state shared by the transport thread and the pump (answering,
 * cancelled, pending input, counters) and is held while a JSON event that must keep its order
 * relative to a commit is queued, so input.committed always precedes the turn's events. The
 * pump never holds it while it waits for the client to read (pacing).
 *
 * Audio sent while an answer is generated cannot go to the engine yet (it refuses input
 * between commit and TURN_DONE): it waits in s->pending (bounded by the turn length) and is
 * pushed when the answer's TURN_DONE arrives.
 */
#include "chat.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audio/codec.h"
#include "lm/chat.h"
#include "log.h"
#include "vad.h"
#include "ws/ws.h"
#include "runtime/clock.h"

#define CHAT_TICK_S  0.05
#define CHAT_BURST_S 2.0 /* audio allowed ahead of max_audio_rate x real time */

#define CHAT_TEXT_MAX   (1 << 16)
#define CHAT_MAX_PACKET 4000
#define CHAT_PCM_MAX    (48000 * 120 / 1000)

enum chat_codec { CHAT_OPUS = 0, CHAT_PCM16 = 1 };

struct chat_limits {
    int max_turn_s, max_rate, idle_s, max_session_s, slow_s;
    double max_backlog_s; /* incoming flow control: pause above it, resume below a quarter */
    long long max_out, max_msg;
};

struct chat_session {
    struct service *svc;
    struct chat_io io;
    char id[SERVICE_ID_LEN];
    struct chat_server *server; /* NULL in tests */
    struct chat_session *next, *prev;

    pthread_mutex_t mu;
    /* settings (transport thread writes them before started; pump reads after) */
    int started;
    enum chat_codec in_codec, out_codec;
    int in_rate, out_rate;
    char system_prompt[8];
    struct sampler_params sampling;
    int server_vad;
    struct vad_config vc;
    struct engine_session *es;
    struct opus_in *dec;
    struct opus_out *enc;
    struct vad *vad;
    float *pcm; /* decode scratch [CHAT_PCM_MAX] */

    /* turn state (mu) */
    int answering, cancelled, commit_pending;
    int next_turn;
    int64_t turn_samples; /* input samples of the user turn being collected */
    float *pending;       /* input held back while answering */
    int64_t n_pending, cap_pending;
    double turn_audio_s; /* user audio of the turn being answered */
    double commit_t, first_audio_t;
    int64_t sent_samples; /* answer samples sent (output rate) */
    int64_t user_tokens;
    int last_turn; /* the last turn.done's turn, -1 before the first */
    /* a cancel that reached the engine just after it finished the answer (its turn.done not
     * sent yet): the played position (model rate) to trim that answer to, -1 when none */
    int64_t trim_pending;

    /* pump */
    pthread_t pump;
    int have_pump;
    _Atomic int stop, draining;
    int ending_sent;
    struct resampler *rs;
    float *obuf; /* resampled audio waiting for a whole Opus frame */
    int64_t n_obuf, cap_obuf;
    char *text; /* the answer so far */
    size_t n_text;

    /* limits (transport thread writes the times; pump reads: atomics not needed for doubles
     * read approximately, but they are kept under mu) */
    double t_start, t_last_rx, t_first_audio, over_since;
    double audio_in_s;
    int rx_paused; /* CHAT_PAUSE_* bits: reading from the client is paused while any is set */
    int too_fast_sent;
    struct chat_limits lim;
};

/* ---- sending ----------------------------------------------------------------------------- */

static void chat_send_json(struct chat_session *s, json_t *j)
{
    if (!j)
        return;
    char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(7));
    json_decref(j);
    if (text)
        s->io.send(s->io.ctx, 0, text, strlen(text));
    free(text);
}

/* error; fatal ones close with close_code after it. */
static void chat_error(struct chat_session *s, const char *code, json_t *event_id, int fatal,
                       int close_code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void chat_error(struct chat_session *s, const char *code, json_t *event_id, int fatal,
                       int close_code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:s,s:s,s:s,s:b}", "type", "error", "code", code, "message", msg,
                          "fatal", fatal);
    if (j && event_id)
        json_object_set(j, "event_id", event_id);
    chat_send_json(s, j);
    service_count_error(s->svc, code);
    if (fatal) {
        log_info("ws session=%s closed: %s (%s)", s->id, code, msg);
        s->io.close(s->io.ctx, close_code, code);
    }
}

/* ---- settings ---------------------------------------------------------------------------- */

static json_t *chat_sampling_json(const struct sampler_params *p)
{
    return json_pack("{s:f,s:f,s:i,s:i,s:I,s:b}", "temperature", (double)p->temperature, "top_p",
                     (double)p->top_p, "top_k", p->top_k, "max_new_tokens", p->max_new, "seed",
                     (json_int_t)p->seed, "greedy", p->greedy);
}

static json_t *chat_td_json(const struct chat_session *s)
{
    return json_pack("{s:s,s:f,s:i,s:i}", "type", s->server_vad ? "server_vad" : "manual",
                     "threshold_db", s->vc.threshold_db, "prefix_padding_ms",
                     s->vc.prefix_padding_ms, "silence_duration_ms", s->vc.silence_duration_ms);
}

static json_t *chat_settings_json(struct chat_session *s, const char *type)
{
    struct config *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    service_settings(s->svc, c);
    json_t *j = json_pack(
        "{s:s,s:s,s:{s:s,s:i},s:{s:s,s:i},s:s,s:o,s:o,s:{s:i,s:i,s:i,s:I},s:{s:s}}", "type", type,
        "session_id", s->id, "input", "codec", s->in_codec == CHAT_OPUS ? "opus" : "pcm16", "rate",
        s->in_rate, "output", "codec", s->out_codec == CHAT_OPUS ? "opus" : "pcm16", "rate",
        s->out_rate, "system_prompt", s->system_prompt, "sampling",
        chat_sampling_json(&s->sampling), "turn_detection", chat_td_json(s), "limits",
        "max_turn_seconds", c->limits_max_turn_seconds, "idle_timeout_s", c->limits_idle_timeout,
        "max_session_s", c->limits_max_session_seconds, "max_message_bytes",
        (json_int_t)c->limits_max_message_bytes, "server", "version",
        s->svc->version ? s->svc->version : "");
    free(c);
    return j;
}

/* Reads a number field; 0 when absent, 1 when set, -1 (error sent) when wrong. */
static int chat_num(struct chat_session *s, json_t *obj, const char *name, const char *path,
                    double lo, double hi, double *out, json_t *eid)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi ||
        isnan(json_number_value(v))) {
        chat_error(s, "invalid_value", eid, 0, 0, "%s.%s must be a number in [%g, %g]", path, name,
                   lo, hi);
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

static int chat_parse_sampling(struct chat_session *s, json_t *o, struct sampler_params *p,
                               json_t *eid)
{
    if (!o)
        return 0;
    if (!json_is_object(o)) {
        chat_error(s, "invalid_value", eid, 0, 0, "sampling must be an object");
        return -1;
    }
    double v;
    int rc;
    if ((rc = chat_num(s, o, "temperature", "sampling", 0, 100, &v, eid)) < 0)
        return -1;
    if (rc)
        p->temperature = (float)v;
    if ((rc = chat_num(s, o, "top_p", "sampling", 0, 1, &v, eid)) < 0)
        return -1;
    if (rc)
        p->top_p = (float)v;
    if ((rc = chat_num(s, o, "top_k", "sampling", 0, 1e6, &v, eid)) < 0)
        return -1;
    if (rc)
        p->top_k = (int)v;
    if ((rc = chat_num(s, o, "max_new_tokens", "sampling", 1, 1e6, &v, eid)) < 0)
        return -1;
    if (rc)
        p->max_new = (int)v;
    if ((rc = chat_num(s, o, "seed", "sampling", 0, 9007199254740992.0, &v, eid)) < 0)
        return -1;
    if (rc)
        p->seed = (uint64_t)v;
    json_t *g = json_object_get(o, "greedy");
    if (g && !json_is_boolean(g)) {
        chat_error(s, "invalid_value", eid, 0, 0, "sampling.greedy must be true or false");
        return -1;
    }
    if (g)
        p->greedy = json_is_true(g);
    return 0;
}

static int chat_parse_td(struct chat_session *s, json_t *o, int *server_vad, struct vad_config *vc,
                         json_t *eid)
{
    if (!o)
        return 0;
    if (!json_is_object(o)) {
        chat_error(s, "invalid_value", eid, 0, 0, "turn_detection must be an object");
        return -1;
    }
    json_t *t = json_object_get(o, "type");
    if (t) {
        const char *ts = json_string_value(t);
        if (!ts || (strcmp(ts, "server_vad") && strcmp(ts, "manual"))) {
            chat_error(s, "invalid_value", eid, 0, 0,
                       "turn_detection.type must be \"server_vad\" or \"manual\"");
            return -1;
        }
        *server_vad = !strcmp(ts, "server_vad");
    }
    double v;
    int rc;
    if ((rc = chat_num(s, o, "threshold_db", "turn_detection", -100, 0, &v, eid)) < 0)
        return -1;
    if (rc)
        vc->threshold_db = v;
    if ((rc = chat_num(s, o, "prefix_padding_ms", "turn_detection", 0, 5000, &v, eid)) < 0)
        return -1;
    if (rc)
        vc->prefix_padding_ms = (int)v;
    if ((rc = chat_num(s, o, "silence_duration_ms", "turn_detection", 100, 10000, &v, eid)) < 0)
        return -1;
    if (rc)
        vc->silence_duration_ms = (int)v;
    return 0;
}

/* input / output: {"codec", "rate"}. */
static int chat_parse_codec(struct chat_session *s, json_t *o, const char *name,
                            enum chat_codec *codec, int *rate, json_t *eid)
{
    if (!o)
        return 0;
    if (!json_is_object(o)) {
        chat_error(s, "invalid_value", eid, 0, 0, "%s must be an object", name);
        return -1;
    }
    json_t *c = json_object_get(o, "codec");
    if (c) {
        const char *cs = json_string_value(c);
        if (!cs || (strcmp(cs, "opus") && strcmp(cs, "pcm16"))) {
            chat_error(s, "invalid_value", eid, 0, 0, "%s.codec must be \"opus\" or \"pcm16\"",
                       name);
            return -1;
        }
        *codec = !strcmp(cs, "opus") ? CHAT_OPUS : CHAT_PCM16;
    }
    json_t *r = json_object_get(o, "rate");
    if (r) {
        if (!json_is_integer(r)) {
            chat_error(s, "invalid_value", eid, 0, 0, "%s.rate must be an integer", name);
            return -1;
        }
        *rate = (int)(json_integer_value(r) > 1000000 ? -1 : json_integer_value(r));
    }
    int ok = *codec == CHAT_OPUS ? (*rate == 48000 || *rate == 16000)
                                 : (*rate >= 8000 && *rate <= 48000);
    if (!ok) {
        chat_error(s, "invalid_value", eid, 0, 0, "%s.rate %d is not supported (%s)", name, *rate,
                   *codec == CHAT_OPUS ? "Opus: 48000 or 16000" : "PCM16: 8000...48000");
        return -1;
    }
    return 0;
}

/* ---- input ------------------------------------------------------------------------------- */

/* The limits of the live settings into s->lim (mu held by the caller, or no other thread yet):
 * read at open and then by the pump a few times a second, so SIGHUP applies to open sessions
 * without a settings copy per audio frame. */
static void chat_refresh_limits(struct chat_session *s)
{
    struct config *c = malloc(sizeof *c);
    if (!c)
        return;
    service_settings(s->svc, c);
    s->lim.max_turn_s = c->limits_max_turn_seconds;
    s->lim.max_rate = c->limits_max_audio_rate;
    s->lim.idle_s = c->limits_idle_timeout;
    s->lim.max_session_s = c->limits_max_session_seconds;
    s->lim.slow_s = c->limits_slow_reader_seconds;
    s->lim.max_backlog_s = c->limits_max_input_backlog_ms * 1e-3;
    s->lim.max_out = c->limits_max_output_buffer;
    s->lim.max_msg = c->limits_max_message_bytes;
    free(c);
}

/* Commits the collected turn (mu held). 0 on success. */
static int chat_commit_locked(struct chat_session *s, json_t *eid)
{
    struct err e;
    if (s->turn_samples == 0) {
        chat_error(s, "empty_turn", eid, 0, 0, "commit with no audio");
        return -1;
    }
    enum engine_status st = engine_commit(s->es, &e);
    if (st != ENGINE_OK) {
        chat_error(s, st == ENGINE_ERR_STATE ? "busy" : "internal", eid, 0, 0, "%s", e.msg);
        return -1;
    }
    double audio_s = (double)s->turn_samples / s->in_rate;
    chat_send_json(s, json_pack("{s:s,s:i,s:i}", "type", "input.committed", "turn", s->next_turn,
                                "audio_ms", (int)lround(audio_s * 1e3)));
    s->next_turn++;
    s->answering = 1;
    s->cancelled = 0;
    s->turn_audio_s = audio_s;
    s->turn_samples = 0;
    s->commit_t = clock_seconds();
    s->first_audio_t = -1;
    s->sent_samples = 0;
    s->user_tokens = -1;
    return 0;
}

/* Audio of the user's turn (mu held): to the engine, or held back while an answer runs. */
static void chat_take_audio(struct chat_session *s, const float *pcm, int64_t n)
{
    int max_turn_s = s->lim.max_turn_s;
    int64_t limit = (int64_t)max_turn_s * s->in_rate;
    if (s->turn_samples + n > limit) {
        chat_error(s, "turn_too_long", NULL, 0, 0, "the turn passed %d s: committed", max_turn_s);
        if (s->vad)
            vad_reset(s->vad);
        if (s->answering)
            s->commit_pending = 1;
        else
            chat_commit_locked(s, NULL);
        return;
    }
    if (s->answering) {
        if (s->n_pending + n > s->cap_pending) {
            int64_t cap = s->cap_pending ? s->cap_pending : 16000;
            while (cap < s->n_pending + n)
                cap *= 2;
            float *p = realloc(s->pending, sizeof(float) * (size_t)cap);
            if (!p)
                return;
            s->pending = p;
            s->cap_pending = cap;
        }
        memcpy(s->pending + s->n_pending, pcm, sizeof(float) * (size_t)n);
        s->n_pending += n;
        s->turn_samples += n;
        return;
    }
    struct err e;
    enum engine_status st = engine_push_audio(s->es, pcm, n, &e);
    if (st == ENGINE_OK)
        s->turn_samples += n;
    else
        chat_error(s, st == ENGINE_ERR_INPUT_FULL ? "turn_too_long" : "busy", NULL, 0, 0, "%s",
                   e.msg);
}

/* engine_cancel, or, when the engine has just finished the answer (its turn.done is on the
 * way), the trim to apply once that turn.done is sent. mu held. */
static void chat_engine_cancel(struct chat_session *s, int64_t played)
{
    struct err e;
    if (engine_cancel(s->es, played, &e) == ENGINE_ERR_STATE)
        s->trim_pending = played;
}

/* Stops the answer in progress at played answer samples (model rate). mu held. */
static void chat_cancel_locked(struct chat_session *s, int64_t played)
{
    if (!s->answering || s->cancelled)
        return;
    chat_engine_cancel(s, played);
    s->cancelled = 1;
}

static int64_t chat_played_estimate(const struct chat_session *s)
{
    int vr = s->svc->voice_rate ? s->svc->voice_rate : 22050;
    return s->sent_samples * vr / s->out_rate;
}

/* After turn.done: how much of that answer a listener playing in real time since its first
 * audio has heard (model rate; never less than it can have heard, so that the client's own
 * response.cancel can only trim further), or -1 when it has all been played. mu held. */
static int64_t chat_playing_estimate(const struct chat_session *s)
{
    if (s->answering || s->last_turn < 0 || s->first_audio_t < 0)
        return -1;
    int64_t played = (int64_t)((clock_seconds() - s->first_audio_t) * s->out_rate);
    if (played >= s->sent_samples)
        return -1;
    int vr = s->svc->voice_rate ? s->svc->voice_rate : 22050;
    return played * vr / s->out_rate;
}

/* The listener stopped hearing the finished answer at played (model rate): the conversation
 * keeps what was heard (engine_heard), and the client learns how much. mu held. */
static void chat_trim_heard(struct chat_session *s, int64_t played)
{
    struct err e;
    int64_t heard = 0;
    if (engine_heard(s->es, played, &heard, &e) != ENGINE_OK)
        return; /* the next turn already began: nothing left to trim */
    int vr = s->svc->voice_rate ? s->svc->voice_rate : 22050;
    chat_send_json(s, json_pack("{s:s,s:i,s:I,s:I}", "type", "turn.truncated", "turn", s->last_turn,
                                "played_samples", (json_int_t)(played * s->out_rate / vr),
                                "heard_audio_tokens", (json_int_t)heard));
}

static void chat_vad_emit(void *user, enum vad_kind kind, int64_t pos, const float *pcm, int64_t n)
{
    struct chat_session *s = user;
    if (kind == VAD_START) {
        chat_send_json(s, json_pack("{s:s,s:I}", "type", "speech.started", "audio_ms",
                                    (json_int_t)(pos * 1000 / s->in_rate)));
        int64_t playing = chat_playing_estimate(s);
        if (s->answering && !s->cancelled) /* barge-in */
            chat_cancel_locked(s, chat_played_estimate(s));
        else if (playing >= 0) /* barge-in on an answer that is generated but still plays */
            chat_trim_heard(s, playing);
    } else if (kind == VAD_AUDIO) {
        chat_take_audio(s, pcm, n);
    } else {
        chat_send_json(s, json_pack("{s:s,s:I}", "type", "speech.stopped", "audio_ms",
                                    (json_int_t)(pos * 1000 / s->in_rate)));
        if (s->answering)
            s->commit_pending = s->turn_samples > 0;
        else if (s->turn_samples > 0)
            chat_commit_locked(s, NULL);
    }
}

enum { CHAT_PAUSE_TOO_FAST = 1, CHAT_PAUSE_BACKLOG = 2 };

/* Sets or clears one reason to pause reading; the transport hears only the changes. mu held. */
static void chat_pause(struct chat_session *s, int why, int on)
{
    int was = s->rx_paused;
    s->rx_paused = on ? was | why : was & ~why;
    if (!was != !s->rx_paused)
        s->io.pause_rx(s->io.ctx, s->rx_paused != 0);
}

/* Incoming flow control: pauses reading while the engine is behind with this session's
 * audio, resumes when it has caught up. mu held. */
static void chat_backlog_check(struct chat_session *s)
{
    if (!s->es)
        return;
    double b = engine_input_backlog(s->es);
    if (b > s->lim.max_backlog_s)
        chat_pause(s, CHAT_PAUSE_BACKLOG, 1);
    else if (b < s->lim.max_backlog_s / 4)
        chat_pause(s, CHAT_PAUSE_BACKLOG, 0);
}

/* Counts audio against max_audio_rate x real time; pauses reading when ahead. */
static void chat_rate_check(struct chat_session *s, int64_t n)
{
    int max_rate = s->lim.max_rate;
    double t = clock_seconds();
    if (s->t_first_audio <= 0)
        s->t_first_audio = t;
    s->audio_in_s += (double)n / s->in_rate;
    if (s->audio_in_s > max_rate * (t - s->t_first_audio) + CHAT_BURST_S &&
        !(s->rx_paused & CHAT_PAUSE_TOO_FAST)) {
        chat_pause(s, CHAT_PAUSE_TOO_FAST, 1);
        if (!s->too_fast_sent)
            chat_error(s, "too_fast", NULL, 0, 0,
                       "audio arrives faster than %d x real time: reading paused", max_rate);
        s->too_fast_sent = 1;
    }
}

static void chat_audio(struct chat_session *s, const unsigned char *data, size_t len)
{
    int64_t n;
    struct err e;
    if (s->in_codec == CHAT_OPUS) {
        int k = opus_in_decode(s->dec, s->pcm, CHAT_PCM_MAX, data, len, &e);
        if (k < 0) {
            chat_error(s, "bad_audio", NULL, 0, 0, "%s", e.msg);
            return;
        }
        n = k;
    } else {
        if (len % 2) {
            chat_error(s, "bad_audio", NULL, 0, 0, "PCM16 with an odd byte count (%zu)", len);
            return;
        }
        n = (int64_t)len / 2;
    }
    chat_rate_check(s, n);
    for (int64_t at = 0; at < n; at += CHAT_PCM_MAX) {
        int64_t k = n - at < CHAT_PCM_MAX ? n - at : CHAT_PCM_MAX;
        if (s->in_codec == CHAT_PCM16)
            for (int64_t i = 0; i < k; i++) {
                const unsigned char *b = data + 2 * (at + i);
                s->pcm[i] = (float)(int16_t)(uint16_t)(b[0] | b[1] << 8) / 32768.0f;
            }
        if (s->server_vad)
            vad_feed(s->vad, s->pcm, k, chat_vad_emit, s);
        else
            chat_take_audio(s, s->pcm, k);
    }
    chat_backlog_check(s);
}

/* ---- control ----------------------------------------------------------------------------- */

static void chat_start(struct chat_session *s, json_t *m, json_t *eid)
{
    struct engine_session_options o;
    service_session_options(s->svc, &o);
    enum chat_codec ic = CHAT_OPUS, oc = CHAT_OPUS;
    int ir = 48000, orate = 48000, vad_on = 1;
    struct config *c = malloc(sizeof *c);
    if (!c)
        return;
    service_settings(s->svc, c);
    struct vad_config vc = { c->vad_threshold_db, c->vad_prefix_padding_ms,
                             c->vad_silence_duration_ms };
    free(c);
    struct sampler_params sp = o.sampling;
    const char *sys = "auto";
    json_t *jsys = json_object_get(m, "system_prompt");
    if (jsys) {
        sys = json_string_value(jsys);
        o.system_prompt = chat_system_named(sys);
        if (o.system_prompt == -2) {
            chat_error(s, "invalid_value", eid, 0, 0,
                       "system_prompt: \"auto\", \"audio\" or \"text\"");
            return;
        }
    }
    if (chat_parse_codec(s, json_object_get(m, "input"), "input", &ic, &ir, eid) ||
        chat_parse_codec(s, json_object_get(m, "output"), "output", &oc, &orate, eid) ||
        chat_parse_sampling(s, json_object_get(m, "sampling"), &sp, eid) ||
        chat_parse_td(s, json_object_get(m, "turn_detection"), &vad_on, &vc, eid))
        return;
    struct err e;
    if (!s->svc->eng) { /* a service without an engine (the fuzz target) */
        chat_error(s, "internal", eid, 1, 1011, "no engine");
        return;
    }
    o.in_rate = ir;
    o.sampling = sp;
    struct engine_session *es;
    enum engine_status st = engine_open(s->svc->eng, &o, &es, &e);
    if (st != ENGINE_OK) {
        if (st == ENGINE_ERR_SESSIONS || st == ENGINE_ERR_MEMORY) {
            service_refused(s->svc, SERVICE_REFUSED_FULL);
            chat_error(s, "server_full", eid, 1, 1013, "%s", e.msg);
        } else {
            chat_error(s, "internal", eid, 1, 1011, "%s", e.msg);
        }
        return;
    }
    s->dec = ic == CHAT_OPUS ? opus_in_new(ir, &e) : NULL;
    s->enc = oc == CHAT_OPUS ? opus_out_new(orate, 0, &e) : NULL;
    s->vad = vad_new(ir, &vc, &e);
    s->pcm = malloc(sizeof(float) * CHAT_PCM_MAX);
    if ((ic == CHAT_OPUS && !s->dec) || (oc == CHAT_OPUS && !s->enc) || !s->vad || !s->pcm) {
        engine_close(es);
        chat_error(s, "internal", eid, 1, 1011, "cannot set up the codecs: %s", e.msg);
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->in_codec = ic;
    s->out_codec = oc;
    s->in_rate = ir;
    s->out_rate = orate;
    snprintf(s->system_prompt, sizeof s->system_prompt, "%s", sys);
    s->sampling = sp;
    s->server_vad = vad_on;
    s->vc = vc;
    s->es = es;
    s->started = 1;
    chat_send_json(s, chat_settings_json(s, "session.started"));
    pthread_mutex_unlock(&s->mu);
    log_info("ws session=%s started: in %s/%d out %s/%d %s", s->id, ic ? "pcm16" : "opus", ir,
             oc ? "pcm16" : "opus", orate, vad_on ? "server_vad" : "manual");
}

static void chat_update(struct chat_session *s, json_t *m, json_t *eid)
{
    int vad_on = s->server_vad;
    struct vad_config vc = s->vc;
    pthread_mutex_lock(&s->mu);
    struct sampler_params sp = s->sampling;
    pthread_mutex_unlock(&s->mu);
    json_t *js = json_object_get(m, "sampling");
    if (chat_parse_sampling(s, js, &sp, eid) ||
        chat_parse_td(s, json_object_get(m, "turn_detection"), &vad_on, &vc, eid))
        return;
    pthread_mutex_lock(&s->mu);
    if (js) {
        struct err e;
        enum engine_status st = engine_set_sampling(s->es, &sp, &e);
        if (st != ENGINE_OK) {
            chat_error(s, st == ENGINE_ERR_STATE ? "busy" : "invalid_value", eid, 0, 0, "%s",
                       st == ENGINE_ERR_STATE
                           ? "sampling changes between turns: after this answer's turn.done"
                           : e.msg);
            pthread_mutex_unlock(&s->mu);
            return;
        }
        s->sampling = sp;
    }
    if (s->server_vad && !vad_on)
        vad_reset(s->vad);
    s->server_vad = vad_on;
    s->vc = vc;
    vad_set_config(s->vad, &vc);
    chat_send_json(s, chat_settings_json(s, "session.updated"));
    pthread_mutex_unlock(&s->mu);
}

static void chat_text(struct chat_session *s, json_t *m, json_t *eid)
{
    json_t *t = json_object_get(m, "text");
    if (!json_is_string(t) || !json_string_length(t)) {
        chat_error(s, "invalid_value", eid, 0, 0, "text must be a non-empty string");
        return;
    }
    pthread_mutex_lock(&s->mu);
    struct err e;
    enum engine_status st = ENGINE_ERR_STATE;
    if (s->answering || s->turn_samples > 0) {
        chat_error(s, "busy", eid, 0, 0,
                   s->answering ? "an answer is in progress: send response.cancel first"
                                : "a spoken turn is being collected: commit it first");
    } else if ((st = engine_push_text(s->es, json_string_value(t), &e)) != ENGINE_OK ||
               (st = engine_commit(s->es, &e)) != ENGINE_OK) {
        chat_error(s, st == ENGINE_ERR_CONTEXT ? "context" : "invalid_value", eid, 0, 0, "%s",
                   e.msg);
    } else {
        chat_send_json(s, json_pack("{s:s,s:i,s:O}", "type", "input.committed", "turn",
                                    s->next_turn, "text", t));
        s->next_turn++;
        s->answering = 1;
        s->cancelled = 0;
        s->turn_audio_s = 0;
        s->commit_t = clock_seconds();
        s->first_audio_t = -1;
        s->sent_samples = 0;
        s->user_tokens = -1;
    }
    pthread_mutex_unlock(&s->mu);
}

static void chat_response_cancel(struct chat_session *s, json_t *m, json_t *eid)
{
    json_t *ps = json_object_get(m, "played_samples"), *pm = json_object_get(m, "played_ms");
    if ((ps && (!json_is_number(ps) || json_number_value(ps) < 0)) ||
        (pm && (!json_is_number(pm) || json_number_value(pm) < 0))) {
        chat_error(s, "invalid_value", eid, 0, 0, "played_samples / played_ms must be >= 0");
        return;
    }
    pthread_mutex_lock(&s->mu);
    int vr = s->svc->voice_rate ? s->svc->voice_rate : 22050;
    int64_t played = chat_played_estimate(s);
    if (ps)
        played = (int64_t)(json_number_value(ps) * vr / s->out_rate);
    else if (pm)
        played = (int64_t)(json_number_value(pm) * vr / 1000);
    if (s->answering) {
        /* authoritative: also corrects a barge-in's estimate if the turn is not done yet */
        chat_engine_cancel(s, played);
        s->cancelled = 1;
    } else if (s->last_turn >= 0) {
        chat_trim_heard(s, played);
    }
    pthread_mutex_unlock(&s->mu);
}

static void chat_control(struct chat_session *s, json_t *m)
{
    json_t *eid = json_object_get(m, "event_id");
    const char *type = json_string_value(json_object_get(m, "type"));
    if (!type) {
        chat_error(s, "invalid_value", eid, 0, 0, "a message needs a string \"type\"");
        return;
    }
    if (!strcmp(type, "ping")) {
        json_t *id = json_object_get(m, "id");
        json_t *j = json_pack("{s:s}", "type", "pong");
        if (j)
            json_object_set(j, "id", id ? id : json_null());
        chat_send_json(s, j);
        return;
    }
    static const char *const known[] = { "session.start", "input.commit", "input.text",
                                         "response.cancel", "session.update" };
    int k = 0;
    while (k < 5 && strcmp(type, known[k]))
        k++;
    if (k == 5) {
        chat_error(s, "unknown_type", eid, 0, 0, "unknown message type \"%.100s\"", type);
        return;
    }
    if (k == 0) {
        if (s->started)
            chat_error(s, "already_started", eid, 0, 0, "the session has started already");
        else
            chat_start(s, m, eid);
        return;
    }
    if (!s->started) {
        chat_error(s, "not_started", eid, 0, 0, "send session.start first");
        return;
    }
    if (k == 1) {
        pthread_mutex_lock(&s->mu);
        if (s->vad)
            vad_reset(s->vad);
        if (s->answering && !s->cancelled)
            chat_error(s, "busy", eid, 0, 0,
                       "an answer is in progress: send response.cancel first");
        else if (s->answering)
            s->commit_pending = s->turn_samples > 0;
        else
            chat_commit_locked(s, eid);
        pthread_mutex_unlock(&s->mu);
    } else if (k == 2) {
        chat_text(s, m, eid);
    } else if (k == 3) {
        chat_response_cancel(s, m, eid);
    } else {
        chat_update(s, m, eid);
    }
}

void chat_session_message(struct chat_session *s, int binary, const void *data, size_t len)
{
    pthread_mutex_lock(&s->mu);
    s->t_last_rx = clock_seconds();
    pthread_mutex_unlock(&s->mu);
    if (binary) {
        if (!s->started) {
            chat_error(s, "not_started", NULL, 0, 0, "audio before session.start");
            return;
        }
        pthread_mutex_lock(&s->mu);
        chat_audio(s, data, len);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    json_error_t je;
    json_t *m = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(m)) {
        chat_error(s, "invalid_json", NULL, 0, 0, "not a JSON object%s%s", m ? "" : ": ",
                   m ? "" : je.text);
        json_decref(m);
        return;
    }
    chat_control(s, m);
    json_decref(m);
}

void chat_session_too_big(struct chat_session *s, size_t len)
{
    pthread_mutex_lock(&s->mu);
    long long max = s->lim.max_msg;
    pthread_mutex_unlock(&s->mu);
    chat_error(s, "message_too_big", NULL, 1, 1009, "a message over %lld bytes (%zu so far)", max,
               len);
}

/* ---- pump: engine events -> client ------------------------------------------------------ */

/* Sends an audio message, waiting while the client's queue is over max_output_buffer; after
 * slow_reader_seconds of that the session is dropped. -1 when the session ends. */
static int chat_send_paced(struct chat_session *s, const void *data, size_t len)
{
    /* the pump is the only writer of s->lim: no lock needed here */
    size_t max = (size_t)s->lim.max_out;
    double slow = s->lim.slow_s;
    double since = -1;
    while (s->io.queued(s->io.ctx) > max) {
        if (atomic_load(&s->stop))
            return -1;
        double t = clock_seconds();
        if (since < 0)
            since = t;
        if (t - since > slow) {
            chat_error(s, "slow_reader", NULL, 1, 1008,
                       "the client did not read for %.0f s: outgoing buffer over %zu bytes", slow,
                       max);
            return -1;
        }
        clock_sleep_ms(10);
    }
    return s->io.send(s->io.ctx, 1, data, len);
}

static int chat_send_frames(struct chat_session *s, const float *x, int64_t n)
{
    if (s->out_codec == CHAT_PCM16) {
        int16_t buf[4096];
        for (int64_t at = 0; at < n;) {
            int64_t k = n - at < 4096 ? n - at : 4096;
            for (int64_t i = 0; i < k; i++) {
                float v = x[at + i] * 32768.0f;
                v = v > 32767.0f ? 32767.0f : v < -32768.0f ? -32768.0f : v;
                int16_t q = (int16_t)lrintf(v);
                uint16_t u = (uint16_t)q;
                ((unsigned char *)buf)[2 * i] = (unsigned char)(u & 0xff);
                ((unsigned char *)buf)[2 * i + 1] = (unsigned char)(u >> 8);
            }
            if (chat_send_paced(s, buf, (size_t)k * 2))
                return -1;
            pthread_mutex_lock(&s->mu);
            s->sent_samples += k;
            pthread_mutex_unlock(&s->mu);
            at += k;
        }
        return 0;
    }
    int frame = opus_out_frame(s->enc);
    for (int64_t at = 0; at < n;) {
        int64_t k = frame - s->n_obuf;
        if (k > n - at)
            k = n - at;
        memcpy(s->obuf + s->n_obuf, x + at, sizeof(float) * (size_t)k);
        s->n_obuf += k;
        at += k;
        if (s->n_obuf == frame) {
            uint8_t pkt[CHAT_MAX_PACKET];
            struct err e;
            int len = opus_out_encode(s->enc, pkt, sizeof pkt, s->obuf, &e);
            s->n_obuf = 0;
            if (len < 0 || chat_send_paced(s, pkt, (size_t)len))
                return -1;
            pthread_mutex_lock(&s->mu);
            s->sent_samples += frame;
            pthread_mutex_unlock(&s->mu);
        }
    }
    return 0;
}

/* AUDIO: model rate -> output rate -> frames. */
static int chat_out_audio(struct chat_session *s, const float *pcm, int64_t n, int flush)
{
    struct err e;
    int vr = s->svc->voice_rate ? s->svc->voice_rate : 22050;
    if (!s->rs && vr != s->out_rate && !(s->rs = resampler_new(vr, s->out_rate, &e)))
        return -1;
    int64_t need = s->rs ? resampler_max_out(s->rs, n) : n;
    const float *out = pcm;
    float *buf = NULL;
    int64_t m = n;
    if (s->rs) {
        buf = malloc(sizeof(float) * (size_t)(need > 0 ? need : 1));
        if (!buf)
            return -1;
        m = flush ? resampler_flush(s->rs, buf, need, &e)
                  : resampler_process(s->rs, buf, need, pcm, n, &e);
        out = buf;
    }
    int rc = m < 0 ? -1 : 0;
    if (m > 0) {
        pthread_mutex_lock(&s->mu);
        if (s->first_audio_t < 0)
            s->first_audio_t = clock_seconds();
        int cancelled = s->cancelled;
        pthread_mutex_unlock(&s->mu);
        if (!cancelled)
            rc = chat_send_frames(s, out, m);
    }
    free(buf);
    return rc;
}

/* The end of a turn's audio: the resampler's tail and a last Opus frame padded with zeros. */
static void chat_out_flush(struct chat_session *s)
{
    if (s->rs)
        chat_out_audio(s, NULL, 0, 1);
    resampler_free(s->rs);
    s->rs = NULL;
    if (s->out_codec == CHAT_OPUS && s->n_obuf > 0) {
        int frame = opus_out_frame(s->enc);
        memset(s->obuf + s->n_obuf, 0, sizeof(float) * (size_t)(frame - s->n_obuf));
        s->n_obuf = frame - 1; /* one more sample completes the frame */
        float z = 0;
        pthread_mutex_lock(&s->mu);
        int cancelled = s->cancelled;
        pthread_mutex_unlock(&s->mu);
        if (!cancelled)
            chat_send_frames(s, &z, 1);
    }
    s->n_obuf = 0;
}

static json_t *chat_ms(double seconds)
{
    return seconds < 0 ? json_null() : json_integer((json_int_t)lround(seconds * 1e3));
}

static void chat_turn_done(struct chat_session *s, struct engine_event *ev)
{
    static const char *const reasons[5] = { "end", "length", "context", "cancelled", "error" };
    chat_out_flush(s);
    pthread_mutex_lock(&s->mu);
    const struct engine_timings *t = &ev->t;
    int r = (int)ev->reason >= 0 && (int)ev->reason < 5 ? (int)ev->reason : 4;
    double first_audio = s->first_audio_t >= 0 ? s->first_audio_t - s->commit_t : -1;
    /* total: until this message, so that it covers the audio sent after the engine's end */
    double total = clock_seconds() - s->commit_t;
    json_t *j =
        json_pack("{s:s,s:i,s:s,s:s%,s:I,s:I,s:{s:I,s:I,s:I},s:{s:o,s:o,s:o,s:o,s:o}}", "type",
                  "turn.done", "turn", ev->turn, "reason", reasons[r], "text",
                  s->text ? s->text : "", s->n_text, "audio_samples", (json_int_t)s->sent_samples,
                  "audio_ms", (json_int_t)(s->sent_samples * 1000 / s->out_rate), "tokens", "user",
                  (json_int_t)(s->user_tokens >= 0 ? s->user_tokens : t->n_prompt), "text",
                  (json_int_t)t->n_text, "audio", (json_int_t)t->n_audio, "timings", "tokenize_ms",
                  chat_ms(t->tokenize), "prefill_ms", chat_ms(t->prefill_end), "first_token_ms",
                  chat_ms(t->first_token), "first_audio_ms", chat_ms(first_audio), "total_ms",
                  chat_ms(total));
    if (j && ev->reason == ENGINE_DONE_CANCELLED)
        json_object_set_new(j, "heard_audio_tokens", json_integer(ev->heard_audio_tokens));
    chat_send_json(s, j);
    service_turn_done(s->svc, "ws", s->id, ev, s->turn_audio_s);
    s->last_turn = ev->turn;
    s->n_text = 0;
    s->answering = 0;
    s->cancelled = 0;
    if (s->trim_pending >= 0 && ev->reason != ENGINE_DONE_CANCELLED)
        chat_trim_heard(s, s->trim_pending);
    s->trim_pending = -1;
    /* input that arrived during the answer, then a commit that waited for it */
    if (s->n_pending > 0) {
        struct err e;
        if (engine_push_audio(s->es, s->pending, s->n_pending, &e) != ENGINE_OK)
            chat_error(s, "turn_too_long", NULL, 0, 0, "%s", e.msg);
        s->n_pending = 0;
    }
    if (s->commit_pending) {
        s->commit_pending = 0;
        chat_commit_locked(s, NULL);
    }
    pthread_mutex_unlock(&s->mu);
}

static void chat_event(struct chat_session *s, struct engine_event *ev)
{
    switch (ev->type) {
    case ENGINE_EV_USER_TOKENIZED:
        pthread_mutex_lock(&s->mu);
        s->user_tokens = ev->n_tokens;
        chat_send_json(s, json_pack("{s:s,s:i,s:I,s:f}", "type", "user.tokenized", "turn", ev->turn,
                                    "tokens", (json_int_t)ev->n_tokens, "seconds", ev->seconds));
        pthread_mutex_unlock(&s->mu);
        break;
    case ENGINE_EV_TRANSCRIPT: {
        size_t n = ev->text ? strlen(ev->text) : 0;
        if (s->n_text + n < CHAT_TEXT_MAX) {
            char *p = realloc(s->text, s->n_text + n + 1);
            if (p) {
                memcpy(p + s->n_text, ev->text, n);
                s->n_text += n;
                p[s->n_text] = 0;
                s->text = p;
            }
        }
        pthread_mutex_lock(&s->mu);
        if (!s->cancelled)
            chat_send_json(s, json_pack("{s:s,s:i,s:s,s:I}", "type", "transcript.delta", "turn",
                                        ev->turn, "text", ev->text ? ev->text : "", "audio_samples",
                                        (json_int_t)s->sent_samples));
        pthread_mutex_unlock(&s->mu);
        break;
    }
    case ENGINE_EV_AUDIO:
        if (chat_out_audio(s, ev->pcm, ev->n_pcm, 0) && !atomic_load(&s->stop)) {
            pthread_mutex_lock(&s->mu);
            s->cancelled = 1; /* the client is gone or too slow: drop the rest */
            pthread_mutex_unlock(&s->mu);
        }
        break;
    case ENGINE_EV_TURN_DONE: chat_turn_done(s, ev); break;
    case ENGINE_EV_ERROR:
        if (ev->status == ENGINE_ERR_CONTEXT)
            chat_error(s, "context", NULL, 0, 0, "%s", ev->text ? ev->text : "context full");
        else if (ev->status == ENGINE_ERR_MODEL)
            chat_error(s, "internal", NULL, 1, 1011, "%s", ev->text ? ev->text : "model error");
        else
            chat_error(s, "internal", NULL, 0, 0, "%s", ev->text ? ev->text : "engine error");
        break;
    }
}

/* Idle, session length, reading paused for too_fast, drain. */
static void chat_timers(struct chat_session *s)
{
    struct chat_limits lim;
    double t = clock_seconds();
    pthread_mutex_lock(&s->mu);
    chat_refresh_limits(s);
    lim = s->lim;
    if (s->answering)
        s->t_last_rx = t; /* waiting for an answer is not idleness */
    int idle = t - s->t_last_rx > lim.idle_s;
    int too_long = t - s->t_start > lim.max_session_s;
    if ((s->rx_paused & CHAT_PAUSE_TOO_FAST) &&
        s->audio_in_s <= lim.max_rate * (t - s->t_first_audio) + CHAT_BURST_S / 2) {
        chat_pause(s, CHAT_PAUSE_TOO_FAST, 0);
        s->too_fast_sent = 0;
    }
    chat_backlog_check(s);
    int answering = s->answering;
    pthread_mutex_unlock(&s->mu);
    if (idle)
        chat_error(s, "idle_timeout", NULL, 1, 1000, "nothing received for %d s", lim.idle_s);
    else if (too_long)
        chat_error(s, "session_too_long", NULL, 1, 1000, "the session passed %d s",
                   lim.max_session_s);
    else if (atomic_load(&s->draining) && !answering) {
        log_info("ws session=%s closed: server shutting down", s->id);
        s->io.close(s->io.ctx, 1001, "server shutting down");
    }
    if (idle || too_long || (atomic_load(&s->draining) && !answering))
        atomic_store(&s->stop, 1);
}

static void *chat_pump(void *arg)
{
    struct chat_session *s = arg;
    double next_timer = 0;
    while (!atomic_load(&s->stop)) {
        pthread_mutex_lock(&s->mu);
        struct engine_session *es = s->started ? s->es : NULL;
        pthread_mutex_unlock(&s->mu);
        struct engine_event ev;
        if (es && engine_next_event(es, &ev, CHAT_TICK_S) == 1) {
            chat_event(s, &ev);
            engine_event_clear(&ev);
        } else if (!es) {
            clock_sleep_ms(1e3 * CHAT_TICK_S);
        }
        double t = clock_seconds();
        if (t >= next_timer) {
            chat_timers(s);
            next_timer = t + 0.2;
        }
    }
    return NULL;
}

/* ---- session lifetime -------------------------------------------------------------------- */

/* The server_full error of a refused connection (no session exists). */
static void chat_send_full(int (*send)(void *, int, const void *, size_t), void *ctx,
                           const char *why)
{
    json_t *j = json_pack("{s:s,s:s,s:s,s:b}", "type", "error", "code", "server_full", "message",
                          why, "fatal", 1);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text)
        send(ctx, 0, text, strlen(text));
    free(text);
}

struct chat_session *chat_session_open(struct service *svc, const struct chat_io *io, int *code,
                                       char *why, size_t len)
{
    char id[SERVICE_ID_LEN];
    if (service_admit(svc, id, why, len)) {
        *code = 1013;
        service_count_error(svc, "server_full");
        chat_send_full(io->send, io->ctx, why);
        return NULL;
    }
    struct chat_session *s = calloc(1, sizeof *s);
    if (s)
        s->obuf = malloc(sizeof(float) * 48000 / 50);
    if (!s || !s->obuf) {
        if (s)
            free(s);
        service_leave(svc);
        *code = 1011;
        snprintf(why, len, "out of memory");
        return NULL;
    }
    s->svc = svc;
    s->io = *io;
    s->last_turn = -1;
    s->trim_pending = -1;
    memcpy(s->id, id, sizeof id);
    pthread_mutex_init(&s->mu, NULL);
    s->t_start = s->t_last_rx = clock_seconds();
    s->first_audio_t = -1;
    s->in_rate = s->out_rate = 48000;
    chat_refresh_limits(s);
    if (pthread_create(&s->pump, NULL, chat_pump, s) == 0)
        s->have_pump = 1;
    else {
        pthread_mutex_destroy(&s->mu);
        free(s->obuf);
        free(s);
        service_leave(svc);
        *code = 1011;
        snprintf(why, len, "cannot start a thread");
        return NULL;
    }
    return s;
}

void chat_session_ending(struct chat_session *s, int deadline_s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->ending_sent)
        chat_send_json(s, json_pack("{s:s,s:s,s:i}", "type", "session.ending", "reason",
                                    "server shutting down", "deadline_s", deadline_s));
    s->ending_sent = 1;
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->draining, 1);
}

const char *chat_session_id(const struct chat_session *s)
{
    return s->id;
}

/* The client left mid-answer: the answer stops (what the client received counts as heard)
 * and the turn still gets its log line and metrics. engine_close would wait for the cancel
 * anyway; this only reads the events it leaves. No one is left to send them to. */
static void chat_abandon_turn(struct chat_session *s)
{
    struct err e;
    engine_cancel(s->es, chat_played_estimate(s), &e);
    struct engine_event ev;
    while (engine_next_event(s->es, &ev, 5.0) == 1) {
        int done = ev.type == ENGINE_EV_TURN_DONE;
        if (done)
            service_turn_done(s->svc, "ws", s->id, &ev, s->turn_audio_s);
        engine_event_clear(&ev);
        if (done)
            break;
    }
}

/* Stops the pump: after this nothing uses the connection (s->io) any more. */
static void chat_session_detach(struct chat_session *s)
{
    atomic_store(&s->stop, 1);
    if (s->have_pump)
        pthread_join(s->pump, NULL);
    s->have_pump = 0;
}

void chat_session_free(struct chat_session *s)
{
    if (!s)
        return;
    chat_session_detach(s);
    if (s->es && s->answering)
        chat_abandon_turn(s);
    if (s->es)
        engine_close(s->es);
    opus_in_free(s->dec);
    opus_out_free(s->enc);
    vad_free(s->vad);
    resampler_free(s->rs);
    free(s->pcm);
    free(s->pending);
    free(s->obuf);
    free(s->text);
    pthread_mutex_destroy(&s->mu);
    service_leave(s->svc);
    log_debug("ws session=%s ended", s->id);
    free(s);
}

/* ---- the WebSocket server ---------------------------------------------------------------- */

struct chat_server {
    struct service *svc;
    struct ws_server *ws;
    pthread_mutex_t mu; /* the session list, reaping */
    pthread_cond_t reaped;
    struct chat_session *sessions;
    int reaping; /* sessions being freed on their own threads */
    int port;
};

static int chat_io_send(void *ctx, int binary, const void *data, size_t len)
{
    return ws_send(ctx, binary, data, len);
}

static size_t chat_io_queued(void *ctx)
{
    return ws_queued(ctx);
}

static void chat_io_close(void *ctx, int code, const char *reason)
{
    ws_close(ctx, code, reason);
}

static void chat_io_pause(void *ctx, int paused)
{
    ws_pause_rx(ctx, paused);
}

static void *chat_ws_open(void *user, struct ws_conn *c, int *code, char *why, size_t len)
{
    struct chat_server *cs = user;
    struct chat_io io = { c, chat_io_send, chat_io_queued, chat_io_close, chat_io_pause };
    struct chat_session *s = chat_session_open(cs->svc, &io, code, why, len);
    if (!s) {
        log_info("ws %s refused: %s", ws_peer(c), why);
        return NULL;
    }
    s->server = cs;
    pthread_mutex_lock(&cs->mu);
    s->next = cs->sessions;
    if (cs->sessions)
        cs->sessions->prev = s;
    cs->sessions = s;
    pthread_mutex_unlock(&cs->mu);
    log_debug("ws session=%s opened from %s", s->id, ws_peer(c));
    return s;
}

/* After the drain began: the typed error, as admission would send it. */
static void chat_ws_refused(void *user, struct ws_conn *c, const char *why)
{
    struct chat_server *cs = user;
    service_refused(cs->svc, SERVICE_REFUSED_DRAINING);
    service_count_error(cs->svc, "server_full");
    chat_send_full(chat_io_send, c, why);
}

static void chat_ws_message(void *conn, struct ws_conn *c, int binary, const void *data, size_t len)
{
    (void)c;
    chat_session_message(conn, binary, data, len);
}

static void chat_ws_too_big(void *conn, struct ws_conn *c, size_t len)
{
    (void)c;
    chat_session_too_big(conn, len);
}

static void *chat_reaper(void *arg)
{
    struct chat_session *s = arg;
    struct chat_server *cs = s->server;
    chat_session_free(s);
    pthread_mutex_lock(&cs->mu);
    cs->reaping--;
    pthread_cond_broadcast(&cs->reaped);
    pthread_mutex_unlock(&cs->mu);
    return NULL;
}

/* The connection is gone (its memory too, once this returns): the pump stops here, so that
 * nothing touches the connection after; freeing the session, which waits for the engine to
 * let go of it (up to one decode step), happens on a thread of its own, so that the WebSocket
 * thread keeps serving every other connection meanwhile. */
static void chat_ws_closed(void *conn, struct ws_conn *c)
{
    (void)c;
    struct chat_session *s = conn;
    struct chat_server *cs = s->server;
    chat_session_detach(s);
    pthread_mutex_lock(&cs->mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        cs->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    cs->reaping++;
    pthread_mutex_unlock(&cs->mu);
    pthread_t t;
    pthread_attr_t a;
    int detached = pthread_attr_init(&a) == 0 &&
                   pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED) == 0 &&
                   pthread_create(&t, &a, chat_reaper, s) == 0;
    pthread_attr_destroy(&a);
    if (!detached)
        chat_reaper(s);
}

static int64_t chat_max_queue(const struct config *c)
{
    /* pacing keeps a session under max_output_buffer; the hard cap leaves room for the JSON
     * events queued meanwhile and one message over the line */
    return 2 * c->limits_max_output_buffer + (1 << 20);
}

struct chat_server *chat_server_start(struct service *svc, const char *keys, struct err *e)
{
    struct chat_server *cs = calloc(1, sizeof *cs);
    struct config *c = malloc(sizeof *c);
    if (!cs || !c) {
        free(cs);
        free(c);
        err_set(e, "websocket: out of memory");
        return NULL;
    }
    service_settings(svc, c);
    cs->svc = svc;
    pthread_mutex_init(&cs->mu, NULL);
    pthread_cond_init(&cs->reaped, NULL);
    struct ws_settings ws = {
        .address = c->ws_address,
        .port = c->ws_port,
        .path = c->ws_path,
        .max_message = c->limits_max_message_bytes,
        .max_queue = chat_max_queue(c),
        .keys = keys,
    };
    struct ws_handler h = {
        cs, chat_ws_open, chat_ws_message, chat_ws_too_big, chat_ws_refused, chat_ws_closed
    };
    cs->ws = ws_start(&ws, &h, e);
    free(c);
    if (!cs->ws) {
        pthread_cond_destroy(&cs->reaped);
        pthread_mutex_destroy(&cs->mu);
        free(cs);
        return NULL;
    }
    cs->port = ws_port(cs->ws);
    return cs;
}

int chat_server_port(const struct chat_server *cs)
{
    return cs->port;
}

void chat_server_reload(struct chat_server *cs, const char *keys)
{
    struct config *c = malloc(sizeof *c);
    if (!c)
        return;
    service_settings(cs->svc, c);
    ws_set_keys(cs->ws, keys);
    ws_set_limits(cs->ws, c->limits_max_message_bytes, chat_max_queue(c));
    free(c);
}

void chat_server_drain(struct chat_server *cs, int deadline_s)
{
    if (!cs)
        return;
    ws_quiesce(cs->ws);
    pthread_mutex_lock(&cs->mu);
    for (struct chat_session *s = cs->sessions; s; s = s->next)
        chat_session_ending(s, deadline_s);
    pthread_mutex_unlock(&cs->mu);
}

void chat_server_stop(struct chat_server *cs)
{
    if (!cs)
        return;
    ws_stop(cs->ws);
    pthread_mutex_lock(&cs->mu); /* every session freed before the engine goes */
    while (cs->reaping > 0)
        pthread_cond_wait(&cs->reaped, &cs->mu);
    pthread_mutex_unlock(&cs->mu);
    pthread_cond_destroy(&cs->reaped);
    pthread_mutex_destroy(&cs->mu);
    free(cs);
}
