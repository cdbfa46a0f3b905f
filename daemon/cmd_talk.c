/*
 * parley talk: a client of parleyd's WebSocket protocol (docs/protocol.md, `parley.v1`) on
 * the libwebsockets client API. One session; each turn is a WAV question streamed in 20 ms
 * messages (Opus packets or PCM16; at real-time pace with --realtime; ended by input.commit
 * or, with --vad, by trailing silence that the server's VAD hears) or a text turn. Prints the
 * transcript as it streams, decodes the answer audio, writes it as WAV, and measures what a
 * listener would notice: first-audio latency from the end of the question, and playback
 * underruns of a player that starts with the first audio and plays in real time.
 *
 * Threads: one; everything runs in lws_service's callbacks. Writes happen only in the
 * writeable callback, one message each.
 */
#include <jansson.h>
#include <libwebsockets.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "audio/codec.h"
#include "audio/wav.h"
#include "cmd.h"
#include "voice/voicefile.h"
#include "runtime/clock.h"

#define TALK_MAX_TURNS     32
#define TALK_MAX_WAV_BYTES (256u << 20)
#define TALK_MAX_MSG       (4u << 20) /* one incoming message */
#define TALK_MAX_ANSWER_S  600        /* answer audio kept per turn */
#define TALK_PATH          4096
#define TALK_N_CTL         8
#define TALK_PACKET_CAP    4000

static const char talk_usage[] =
    "usage: parley talk --url ws://HOST:PORT/v1/chat (--audio Q.wav | --text TEXT |\n"
    "                   --turns A.wav,text:hi,...) [--out ANSWER.wav] [options]\n\n"
    "One session with parleyd over its WebSocket protocol: streams each question in 20 ms\n"
    "messages, prints the answer text as it streams, writes the answer audio (--turns: one\n"
    "file per turn, ANSWER.wav, ANSWER.1.wav, ...).\n\n"
    "  --codec opus|pcm16      question audio codec (opus)\n"
    "  --rate N                question rate: Opus 48000 or 16000, PCM16 8000..48000 (48000)\n"
    "  --out-codec opus|pcm16  answer audio codec (opus)\n"
    "  --out-rate N            answer rate (48000)\n"
    "  --vad | --commit        end spoken turns by the server's VAD (trailing silence is sent)\n"
    "                          or by input.commit (the default)\n"
    "  --realtime              send audio at real-time pace (else as fast as the socket takes)\n"
    "  --silence-ms MS         trailing silence after each question with --vad (1500)\n"
    "  --barge-in-ms MS        cancel the answer MS after its first audio (response.cancel with\n"
    "                          the simulated listener's played_samples); with several turns,\n"
    "                          every answer but the last\n"
    "  --hangup-ms MS          drop the connection MS after the first answer audio\n"
    "  --prebuffer-ms MS       the simulated player starts MS after the first audio (0)\n"
    "  --key KEY               API key (Authorization: Bearer)\n"
    "  --seed N, --greedy, --max-new N   sampling\n"
    "  --timeout S             give up after S seconds (120)\n"
    "  --json                  one JSON line per turn (latencies, samples, server timings)\n"
    "  --verbose               every server event on stderr\n\n"
    "Exit status: 0 ok, 1 server or protocol error (printed), 2 bad usage.\n";

struct talk_opts {
    char host[256], path[2048];
    int port, tls;
    const char *out, *key;
    int in_opus, in_rate, out_opus, out_rate;
    int vad, realtime, silence_ms, barge_ms, hangup_ms, prebuffer_ms, timeout_s;
    long long seed, max_new;
    int greedy, json, verbose;
};

/* A question ready to send: text, or n 20 ms audio messages (the first n_speech of them the
 * WAV's audio, the rest trailing silence); message i is buf[off[i] .. off[i + 1]). */
struct talk_input {
    const char *text;
    uint8_t *buf;
    size_t *off;
    int n, n_speech;
};

enum talk_ctl { TALK_CTL_OTHER, TALK_CTL_COMMIT, TALK_CTL_TEXT };

struct talk {
    const struct talk_opts *o;
    struct lws_context *ctx;
    struct lws *wsi;
    lws_sorted_usec_list_t sul_pace, sul_barge, sul_hangup, sul_deadline, sul_trunc;
    struct talk_input *in;
    int n_turns, turn;
    /* sending */
    char *ctl[TALK_N_CTL];
    enum talk_ctl ctl_kind[TALK_N_CTL];
    int n_ctl, sending, next_msg, want_close;
    double audio_t0;
    /* the turn in progress; times in ms on the monotonic clock, 0 = not yet */
    double t_start, t_end, t_committed, t_first_audio, t_first_delta;
    float *pcm, *scratch;
    int64_t n_pcm, cap_pcm, n_got; /* kept (bounded) / allocated / decoded in all */
    double buffered_until;
    int underruns, cancel_sent, n_deltas;
    double stall_ms;
    int64_t played_at_cancel;
    /* an answer that ended before its barge-in: its turn.done waits here for the cancel and
     * the server's turn.truncated, as a listener still playing it would */
    json_t *held_done;
    json_t *truncated;
    struct opus_in *dec;
    /* receiving */
    uint8_t *rx;
    size_t n_rx;
    /* ending */
    int finished, rc, hung_up, close_code;
    char close_reason[128];
};

/* ws://HOST[:PORT][/PATH] or wss://... into o. */
static int talk_parse_url(struct talk_opts *o, const char *url)
{
    const char *p;
    if (strncmp(url, "ws://", 5) == 0) {
        p = url + 5;
        o->port = 80;
    } else if (strncmp(url, "wss://", 6) == 0) {
        p = url + 6;
        o->port = 443;
        o->tls = 1;
    } else {
        return -1;
    }
    size_t n = strcspn(p, ":/");
    if (n == 0 || n >= sizeof o->host)
        return -1;
    memcpy(o->host, p, n);
    o->host[n] = 0;
    p += n;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
            return -1;
        o->port = (int)port;
        p = end;
    }
    if (snprintf(o->path, sizeof o->path, "%s", *p ? p : "/") >= (int)sizeof o->path)
        return -1;
    return 0;
}

/* ---- questions ------------------------------------------------------------------------ */

/* Channel 0 of a WAV at rate, plus silence_ms of silence; *n_speech samples of speech. */
static float *talk_load_wav(const char *path, int rate, int silence_ms, int64_t *n,
                            int64_t *n_speech, struct err *e)
{
    struct wav_audio a;
    if (wav_read_file(&a, path, TALK_MAX_WAV_BYTES, e) != 0)
        return NULL;
    float *x = NULL;
    int64_t got = a.frames;
    if (a.rate == rate) {
        x = malloc((size_t)(a.frames + (int64_t)rate * silence_ms / 1000 + 1) * sizeof *x);
        if (x)
            memcpy(x, a.samples, (size_t)a.frames * sizeof *x);
    } else {
        struct resampler *r = resampler_new(a.rate, rate, e);
        int64_t cap = r ? resampler_max_out(r, a.frames) + rate : 0;
        if (r && (x = malloc((size_t)(cap + (int64_t)rate * silence_ms / 1000 + 1) * sizeof *x))) {
            got = resampler_process(r, x, cap, a.samples, a.frames, e);
            int64_t more = got < 0 ? -1 : resampler_flush(r, x + got, cap - got, e);
            got = more < 0 ? -1 : got + more;
        }
        resampler_free(r);
        if (got < 0) {
            free(x);
            x = NULL;
        }
    }
    wav_audio_free(&a);
    if (!x) {
        if (got >= 0)
            err_set(e, "out of memory");
        return NULL;
    }
    int64_t sil = (int64_t)rate * silence_ms / 1000;
    memset(x + got, 0, (size_t)sil * sizeof *x);
    *n_speech = got;
    *n = got + sil;
    return x;
}

/* Cuts x into 20 ms messages (the last padded with zeros): Opus packets or PCM16. */
static int talk_prepare_audio(struct talk_input *in, const struct talk_opts *o, const char *path,
                              struct err *e)
{
    int64_t n, n_speech;
    float *x = talk_load_wav(path, o->in_rate, o->vad ? o->silence_ms : 0, &n, &n_speech, e);
    if (!x)
        return -1;
    struct opus_out *enc = o->in_opus ? opus_out_new(o->in_rate, 0, e) : NULL;
    int frame = enc ? opus_out_frame(enc) : o->in_rate / 50;
    int msgs = (int)((n + frame - 1) / frame);
    size_t per = enc ? TALK_PACKET_CAP : (size_t)frame * 2;
    in->buf = malloc((size_t)msgs * per);
    in->off = malloc((size_t)(msgs + 1) * sizeof *in->off);
    float *fr = malloc((size_t)frame * sizeof *fr);
    int rc = (o->in_opus && !enc) ? -1 : 0;
    if (rc == 0 && (!in->buf || !in->off || !fr))
        rc = err_set(e, "out of memory");
    in->n = 0;
    in->n_speech = (int)((n_speech + frame - 1) / frame);
    size_t at = 0;
    for (int i = 0; rc == 0 && i < msgs; i++) {
        int64_t s0 = (int64_t)i * frame, k = n - s0 < frame ? n - s0 : frame;
        memset(fr, 0, (size_t)frame * sizeof *fr);
        memcpy(fr, x + s0, (size_t)k * sizeof *fr);
        in->off[i] = at;
        if (enc) {
            int len = opus_out_encode(enc, in->buf + at, TALK_PACKET_CAP, fr, e);
            if (len < 0)
                rc = -1;
            at += len < 0 ? 0 : (size_t)len;
        } else {
            wav_to_pcm16(in->buf + at, fr, frame);
            at += (size_t)frame * 2;
        }
        in->n = i + 1;
    }
    if (in->off)
        in->off[in->n] = at;
    opus_out_free(enc);
    free(fr);
    free(x);
    return rc;
}

static void talk_inputs_free(struct talk_input *in, int n)
{
    for (int i = 0; i < n; i++) {
        free(in[i].buf);
        free(in[i].off);
    }
}

/* ---- sending -------------------------------------------------------------------------- */

/* Queues a control message (JSON, compact) for the writeable callback; takes j. */
static int talk_send_json(struct talk *t, json_t *j, enum talk_ctl kind)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(j);
    if (!s || t->n_ctl == TALK_N_CTL) {
        free(s);
        fprintf(stderr, "parley: talk: too many control messages queued\n");
        t->rc = 1;
        t->want_close = 1;
        return -1;
    }
    t->ctl[t->n_ctl] = s;
    t->ctl_kind[t->n_ctl++] = kind;
    if (t->wsi)
        lws_callback_on_writable(t->wsi);
    return 0;
}

static json_t *talk_session_start(const struct talk_opts *o)
{
    json_t *sampling = json_object();
    if (o->seed >= 0)
        json_object_set_new(sampling, "seed", json_integer(o->seed));
    if (o->greedy)
        json_object_set_new(sampling, "greedy", json_true());
    if (o->max_new > 0)
        json_object_set_new(sampling, "max_new_tokens", json_integer(o->max_new));
    return json_pack("{s:s, s:{s:s, s:i}, s:{s:s, s:i}, s:o, s:{s:s}}", "type", "session.start",
                     "input", "codec", o->in_opus ? "opus" : "pcm16", "rate", o->in_rate, "output",
                     "codec", o->out_opus ? "opus" : "pcm16", "rate", o->out_rate, "sampling",
                     sampling, "turn_detection", "type", o->vad ? "server_vad" : "manual");
}

static void talk_pace_cb(lws_sorted_usec_list_t *sul)
{
    struct talk *t = lws_container_of(sul, struct talk, sul_pace);
    if (t->wsi)
        lws_callback_on_writable(t->wsi);
}

static void talk_begin_turn(struct talk *t)
{
    struct talk_input *in = &t->in[t->turn];
    t->t_start = clock_ms();
    t->t_end = t->t_committed = t->t_first_audio = t->t_first_delta = 0;
    t->n_pcm = t->n_got = 0;
    t->underruns = t->cancel_sent = t->n_deltas = 0;
    t->stall_ms = 0;
    t->played_at_cancel = 0;
    if (in->text) {
        talk_send_json(t, json_pack("{s:s, s:s}", "type", "input.text", "text", in->text),
                       TALK_CTL_TEXT);
        return;
    }
    t->sending = 1;
    t->next_msg = 0;
    t->audio_t0 = t->t_start;
    lws_callback_on_writable(t->wsi);
}

/* Where the simulated player is at now: samples heard of this answer. */
static int64_t talk_played(const struct talk *t, double now)
{
    if (!t->t_first_audio)
        return 0;
    double ahead = t->buffered_until - now; /* ms of audio still buffered */
    int64_t left = ahead > 0 ? (int64_t)(ahead * t->o->out_rate / 1000.0) : 0;
    return left > t->n_got ? 0 : t->n_got - left;
}

static int talk_write(struct talk *t, const void *p, size_t len, enum lws_write_protocol kind)
{
    uint8_t *buf = malloc(LWS_PRE + len);
    if (!buf)
        return -1;
    memcpy(buf + LWS_PRE, p, len);
    int n = lws_write(t->wsi, buf + LWS_PRE, len, kind);
    free(buf);
    return n < (int)len ? -1 : 0;
}

/* One message per writeable callback: control messages first, then audio when it is due. */
static int talk_writeable(struct talk *t)
{
    double now = clock_ms();
    if (t->n_ctl > 0) {
        char *s = t->ctl[0];
        enum talk_ctl kind = t->ctl_kind[0];
        int r = talk_write(t, s, strlen(s), LWS_WRITE_TEXT);
        free(s);
        memmove(t->ctl, t->ctl + 1, (size_t)(t->n_ctl - 1) * sizeof t->ctl[0]);
        memmove(t->ctl_kind, t->ctl_kind + 1, (size_t)(t->n_ctl - 1) * sizeof t->ctl_kind[0]);
        t->n_ctl--;
        if (r != 0)
            return -1;
        if (kind == TALK_CTL_COMMIT || kind == TALK_CTL_TEXT)
            t->t_end = clock_ms();
    } else if (t->sending) {
        const struct talk_input *in = &t->in[t->turn];
        double due = t->audio_t0 + 20.0 * t->next_msg;
        if (t->o->realtime && due > now + 0.5) {
            lws_sul_schedule(t->ctx, 0, &t->sul_pace, talk_pace_cb,
                             (lws_usec_t)((due - now) * 1000));
            return 0;
        }
        int i = t->next_msg++;
        if (talk_write(t, in->buf + in->off[i], in->off[i + 1] - in->off[i], LWS_WRITE_BINARY) != 0)
            return -1;
        if (t->next_msg == in->n_speech && t->o->vad)
            t->t_end = clock_ms(); /* end of speech: the listener stops talking here */
        if (t->next_msg == in->n) {
            t->sending = 0;
            if (!t->o->vad)
                talk_send_json(t, json_pack("{s:s}", "type", "input.commit"), TALK_CTL_COMMIT);
        }
    } else if (t->want_close) {
        lws_close_reason(t->wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"done", 4);
        return -1;
    } else {
        return 0;
    }
    if (t->n_ctl > 0 || t->sending || t->want_close)
        lws_callback_on_writable(t->wsi);
    return 0;
}

/* ---- receiving ------------------------------------------------------------------------ */

/* The simulated listener: plays from the first audio (plus --prebuffer-ms) in real time; an
 * underrun is audio that arrives after the player ran out of it. */
static void talk_play(struct talk *t, int64_t n, double now)
{
    if (!t->t_first_audio) {
        t->t_first_audio = now;
        t->buffered_until = now + t->o->prebuffer_ms;
    } else if (now > t->buffered_until) {
        t->underruns++;
        t->stall_ms += now - t->buffered_until;
    }
    double start = now > t->buffered_until ? now : t->buffered_until;
    t->buffered_until = start + (double)n * 1000.0 / t->o->out_rate;
}

/* Room for need samples of answer audio (need <= max): grows by doubling. */
static int talk_grow(struct talk *t, int64_t need, int64_t max)
{
    if (need <= t->cap_pcm)
        return 0;
    int64_t want = need + t->o->out_rate; /* at least a second more */
    int64_t grow = t->cap_pcm * 2 > want ? t->cap_pcm * 2 : want;
    grow = grow < max ? grow : max;
    float *g = realloc(t->pcm, (size_t)grow * sizeof *g);
    if (!g) {
        fprintf(stderr, "parley: talk: out of memory for the answer audio\n");
        t->rc = 1;
        return -1;
    }
    t->pcm = g;
    t->cap_pcm = grow;
    return 0;
}

static void talk_audio(struct talk *t, const uint8_t *p, size_t len)
{
    if (t->turn >= t->n_turns)
        return;
    double now = clock_ms();
    int cap = t->o->out_rate * 120 / 1000;
    int64_t n;
    struct err e;
    if (t->o->out_opus) {
        n = opus_in_decode(t->dec, t->scratch, cap, p, len, &e);
        if (n < 0) {
            fprintf(stderr, "parley: talk: answer audio: %s\n", e.msg);
            t->rc = 1;
            return;
        }
    } else {
        if (len % 2) {
            fprintf(stderr, "parley: talk: PCM16 message of %zu bytes (odd)\n", len);
            t->rc = 1;
        }
        n = (int64_t)(len / 2);
    }
    int64_t keep_max = (int64_t)t->o->out_rate * TALK_MAX_ANSWER_S;
    int64_t keep = n < keep_max - t->n_pcm ? n : keep_max - t->n_pcm;
    if (keep > 0 && talk_grow(t, t->n_pcm + keep, keep_max) != 0)
        keep = 0;
    if (!t->o->out_opus && keep > 0) {
        wav_pcm16(t->pcm + t->n_pcm, p, keep);
    } else if (keep > 0) {
        memcpy(t->pcm + t->n_pcm, t->scratch, (size_t)keep * sizeof *t->pcm);
    }
    t->n_pcm += keep > 0 ? keep : 0;
    t->n_got += n;
    talk_play(t, n, now);
}

static json_t *talk_turn_json(const struct talk *t, json_t *done)
{
    double lat = t->t_first_audio && t->t_end ? t->t_first_audio - t->t_end : -1;
    double lat2 = t->t_first_audio && t->t_committed ? t->t_first_audio - t->t_committed : -1;
    double delta = t->t_first_delta && t->t_end ? t->t_first_delta - t->t_end : -1;
    json_t *j = json_pack(
        "{s:s, s:i, s:s, s:O?, s:O?, s:i, s:I, s:O?, s:f, s:f, s:f, s:i, s:f, s:b, s:I, s:O?, "
        "s:O?}",
        "type", "turn", "turn", t->turn, "input", t->in[t->turn].text ? "text" : "audio", "reason",
        json_object_get(done, "reason"), "text", json_object_get(done, "text"), "deltas",
        t->n_deltas, "samples", (json_int_t)t->n_got, "audio_samples",
        json_object_get(done, "audio_samples"), "latency_ms", lat, "committed_to_first_audio_ms",
        lat2, "first_delta_ms", delta, "underruns", t->underruns, "stall_ms", t->stall_ms,
        "cancel_sent", t->cancel_sent, "played_samples", (json_int_t)t->played_at_cancel, "timings",
        json_object_get(done, "timings"), "tokens", json_object_get(done, "tokens"));
    json_t *heard = json_object_get(done, "heard_audio_tokens");
    if (t->truncated) /* trimmed after the end: what the server kept */
        heard = json_object_get(t->truncated, "heard_audio_tokens");
    if (j && heard)
        json_object_set(j, "heard_audio_tokens", heard);
    if (j && t->truncated)
        json_object_set_new(j, "truncated", json_true());
    return j;
}

/* What turn.done says against what arrived: 0, or -1 after printing why. */
static int talk_turn_check(const struct talk *t, json_t *done, const char *reason)
{
    json_t *samples = json_object_get(done, "audio_samples");
    int cancelled = reason && strcmp(reason, "cancelled") == 0, rc = 0;
    if (!json_is_integer(samples)) {
        fprintf(stderr, "parley: talk: turn.done without audio_samples\n");
        rc = -1;
    } else if (json_integer_value(samples) != t->n_got) {
        fprintf(stderr,
                "parley: talk: turn %d: turn.done says %lld audio samples, the audio received "
                "decodes to %lld\n",
                t->turn, (long long)json_integer_value(samples), (long long)t->n_got);
        rc = -1;
    }
    if (t->cancel_sent && !cancelled && !t->truncated) /* a race, not an error: short answer */
        fprintf(stderr, "talk: turn %d ended (%s) before the cancel reached the server\n", t->turn,
                reason ? reason : "?");
    if (!t->cancel_sent && cancelled) {
        fprintf(stderr, "parley: talk: turn %d cancelled without a cancel\n", t->turn);
        rc = -1;
    }
    if (reason && strcmp(reason, "error") == 0)
        rc = -1;
    return rc;
}

static void talk_turn_report(const struct talk *t, json_t *done, const char *reason)
{
    if (t->o->json) {
        json_t *j = talk_turn_json(t, done);
        char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(j);
    } else {
        json_t *tm = json_object_get(done, "timings");
        printf("\n");
        fprintf(stderr,
                "talk: turn %d done (%s): %.2f s of audio; first audio %.0f ms after the end of "
                "the question (server: %.0f ms after the commit); %d underruns (%.0f ms)\n",
                t->turn, reason ? reason : "?", (double)t->n_got / t->o->out_rate,
                t->t_first_audio && t->t_end ? t->t_first_audio - t->t_end : -1.0,
                json_number_value(json_object_get(tm, "first_audio_ms")), t->underruns,
                t->stall_ms);
    }
    fflush(stdout);
}

/* The answer as a WAV: after a cancel, what the listener heard. */
static int talk_turn_write(const struct talk *t)
{
    if (!t->o->out || t->n_pcm == 0)
        return 0;
    char path[TALK_PATH];
    struct err e;
    cmd_turn_file(path, sizeof path, t->o->out, t->turn);
    int64_t n = t->cancel_sent && t->played_at_cancel < t->n_pcm ? t->played_at_cancel : t->n_pcm;
    if (voicefile_write_wav(path, t->pcm, n, t->o->out_rate, 0, &e) != 0) {
        fprintf(stderr, "parley: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* The end of a turn: checks, report, the next turn. */
static void talk_turn_end(struct talk *t, json_t *done)
{
    const char *reason = json_string_value(json_object_get(done, "reason"));
    if (talk_turn_check(t, done, reason) != 0)
        t->rc = 1;
    talk_turn_report(t, done, reason);
    if (talk_turn_write(t) != 0)
        t->rc = 1;
    json_decref(t->truncated);
    t->truncated = NULL;
    if (++t->turn < t->n_turns && t->rc == 0)
        talk_begin_turn(t);
    else
        t->want_close = 1;
    lws_callback_on_writable(t->wsi);
}

/* The held turn ends: its turn.truncated came, or never will. */
static void talk_release_held(struct talk *t)
{
    json_t *done = t->held_done;
    t->held_done = NULL;
    lws_sul_cancel(&t->sul_trunc);
    if (done)
        talk_turn_end(t, done);
    json_decref(done);
}

static void talk_trunc_timeout_cb(lws_sorted_usec_list_t *sul)
{
    talk_release_held(lws_container_of(sul, struct talk, sul_trunc));
}

static void talk_turn_done(struct talk *t, json_t *done)
{
    if (t->turn >= t->n_turns)
        return; /* not one of ours */
    const char *reason = json_string_value(json_object_get(done, "reason"));
    t->sending = 0; /* with VAD: trailing silence the server no longer needed */
    lws_sul_cancel(&t->sul_pace);
    int last = t->n_turns > 1 && t->turn == t->n_turns - 1;
    int barge = t->o->barge_ms >= 0 && !last && t->t_first_audio;
    if (barge && (!reason || strcmp(reason, "cancelled") != 0)) {
        /* generated before the listener reached the barge-in point: keep playing, cancel at
         * that point (the timer still runs) and let the server trim what was not heard */
        t->held_done = json_incref(done);
        if (t->cancel_sent)
            lws_sul_schedule(t->ctx, 0, &t->sul_trunc, talk_trunc_timeout_cb, 3 * LWS_US_PER_SEC);
        return;
    }
    lws_sul_cancel(&t->sul_barge);
    talk_turn_end(t, done);
}

static void talk_print_line(const struct talk *t, json_t *j)
{
    if (!t->o->json)
        return;
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    if (s)
        printf("%s\n", s);
    fflush(stdout);
    free(s);
}

static void talk_error(struct talk *t, json_t *j)
{
    const char *code = json_string_value(json_object_get(j, "code"));
    const char *msg = json_string_value(json_object_get(j, "message"));
    int fatal = json_is_true(json_object_get(j, "fatal"));
    code = code ? code : "?";
    fprintf(stderr, "parley: talk: server error %s%s: %s\n", code, fatal ? " (fatal)" : "",
            msg ? msg : "");
    talk_print_line(t, j);
    if (strcmp(code, "too_fast") == 0 || strcmp(code, "turn_too_long") == 0)
        return; /* the turn goes on */
    t->rc = 1;
    if (!fatal)
        t->want_close = 1;
    lws_callback_on_writable(t->wsi);
}

static void talk_text(struct talk *t, const char *p, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(p, len, 0, &je);
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type) {
        fprintf(stderr, "parley: talk: a server message that is not a typed JSON object: %.*s\n",
                (int)(len < 200 ? len : 200), p);
        t->rc = 1;
        t->want_close = 1;
        json_decref(j);
        return;
    }
    if (t->o->verbose)
        fprintf(stderr, "talk: +%.1f ms: %.*s\n", clock_ms() - t->t_start,
                (int)(len < 300 ? len : 300), p);
    if (strcmp(type, "session.started") == 0) {
        if (t->n_turns > 0)
            talk_begin_turn(t);
    } else if (strcmp(type, "input.committed") == 0) {
        t->t_committed = clock_ms();
        if (t->sending && t->next_msg >= t->in[t->turn].n_speech) {
            t->sending = 0; /* the VAD heard the end: the rest of the silence would only be
                             * kept for the next turn */
            lws_sul_cancel(&t->sul_pace);
        }
    } else if (strcmp(type, "transcript.delta") == 0) {
        const char *s = json_string_value(json_object_get(j, "text"));
        if (!t->t_first_delta)
            t->t_first_delta = clock_ms();
        if (!t->o->json && t->n_deltas == 0)
            printf("turn %d: ", t->turn);
        t->n_deltas++;
        if (s && !t->o->json) {
            fputs(s, stdout);
            fflush(stdout);
        }
    } else if (strcmp(type, "turn.done") == 0) {
        talk_turn_done(t, j);
    } else if (strcmp(type, "turn.truncated") == 0) {
        json_decref(t->truncated);
        t->truncated = json_incref(j);
        talk_release_held(t);
    } else if (strcmp(type, "error") == 0) {
        talk_error(t, j);
    } else if (strcmp(type, "session.ending") == 0) {
        fprintf(stderr, "talk: the server is shutting down (%s; %lld s to finish)\n",
                json_string_value(json_object_get(j, "reason"))
                    ? json_string_value(json_object_get(j, "reason"))
                    : "?",
                (long long)json_integer_value(json_object_get(j, "deadline_s")));
        talk_print_line(t, j);
    }
    json_decref(j);
}

/* ---- lws glue ------------------------------------------------------------------------- */

/* --barge-in-ms after the first audio: cancel with what the listener has heard. */
static void talk_barge_cb(lws_sorted_usec_list_t *sul)
{
    struct talk *t = lws_container_of(sul, struct talk, sul_barge);
    if (t->turn >= t->n_turns || !t->wsi)
        return;
    t->cancel_sent = 1;
    t->played_at_cancel = talk_played(t, clock_ms());
    talk_send_json(t,
                   json_pack("{s:s, s:I}", "type", "response.cancel", "played_samples",
                             (json_int_t)t->played_at_cancel),
                   TALK_CTL_OTHER);
    if (t->held_done) /* the answer had ended: wait for turn.truncated, not for ever */
        lws_sul_schedule(t->ctx, 0, &t->sul_trunc, talk_trunc_timeout_cb, 3 * LWS_US_PER_SEC);
}

/* --hangup-ms after the first audio: the listener goes away without a word. */
static void talk_hangup_cb(lws_sorted_usec_list_t *sul)
{
    struct talk *t = lws_container_of(sul, struct talk, sul_hangup);
    if (t->wsi) /* no close frame: the connection just drops, as when a network goes */
        shutdown(lws_get_socket_fd(t->wsi), SHUT_RDWR);
    t->hung_up = t->finished = 1;
}

static void talk_deadline_cb(lws_sorted_usec_list_t *sul)
{
    struct talk *t = lws_container_of(sul, struct talk, sul_deadline);
    fprintf(stderr, "parley: talk: no end after %d s (turn %d)\n", t->o->timeout_s, t->turn);
    t->rc = 1;
    t->finished = 1;
}

/* The first audio of an answer starts the barge-in and hang-up clocks. */
static void talk_first_audio(struct talk *t)
{
    if (t->o->verbose)
        fprintf(stderr, "talk: +%.1f ms: first audio of turn %d\n", clock_ms() - t->t_start,
                t->turn);
    int last = t->n_turns > 1 && t->turn == t->n_turns - 1;
    if (t->o->barge_ms >= 0 && !last)
        lws_sul_schedule(t->ctx, 0, &t->sul_barge, talk_barge_cb,
                         (lws_usec_t)t->o->barge_ms * 1000);
    if (t->o->hangup_ms >= 0)
        lws_sul_schedule(t->ctx, 0, &t->sul_hangup, talk_hangup_cb,
                         (lws_usec_t)t->o->hangup_ms * 1000);
}

static int talk_receive(struct talk *t, struct lws *wsi, const void *in, size_t len)
{
    if (lws_is_first_fragment(wsi))
        t->n_rx = 0;
    if (t->n_rx + len > TALK_MAX_MSG) {
        fprintf(stderr, "parley: talk: a server message over %u bytes\n", TALK_MAX_MSG);
        t->rc = 1;
        return -1;
    }
    memcpy(t->rx + t->n_rx, in, len);
    t->n_rx += len;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0)
        return 0;
    if (lws_frame_is_binary(wsi)) {
        int first = t->t_first_audio == 0;
        talk_audio(t, t->rx, t->n_rx);
        if (first && t->t_first_audio)
            talk_first_audio(t);
    } else {
        talk_text(t, (const char *)t->rx, t->n_rx);
    }
    return 0;
}
static int talk_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    struct talk *t = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (t && t->o->key) {
            unsigned char **p = in, *end = *p + len;
            char auth[600];
            int n = snprintf(auth, sizeof auth, "Bearer %s", t->o->key);
            if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
                                             (unsigned char *)auth, n, p, end))
                return -1;
        }
        break;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        t->wsi = wsi;
        t->t_start = clock_ms();
        talk_send_json(t, talk_session_start(t->o), TALK_CTL_OTHER);
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        fprintf(stderr, "parley: talk: cannot connect to %s:%d%s: %s\n", t->o->host, t->o->port,
                t->o->path, in ? (const char *)in : "connection error");
        t->rc = 1;
        t->finished = 1;
        t->wsi = NULL;
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE: return talk_receive(t, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE: return talk_writeable(t);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* libwebsockets 4.1 hands codes 1012..1015 (1013: server full) over as 1002; the
         * error message before the close names the cause */
        if (len >= 2) {
            const uint8_t *b = in;
            t->close_code = b[0] << 8 | b[1];
            snprintf(t->close_reason, sizeof t->close_reason, "%.*s", (int)(len - 2),
                     (const char *)b + 2);
        }
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        t->wsi = NULL;
        t->finished = 1;
        break;
    default: break;
    }
    return 0;
}

static const struct lws_protocols talk_protocols[] = {
    { "parley.v1", talk_callback, 0, 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* ---- the command ---------------------------------------------------------------------- */

/* Options into o and the turns' sources into src/is_text (pointing into list). Returns the
 * number of turns, or -1 after printing a usage error; 0 for --help (printed). */
static int talk_args(int argc, char **argv, struct talk_opts *o, char **list, char **src,
                     int *is_text)
{
    const char *url = NULL, *audio = NULL, *text = NULL, *turns = NULL;
    long long v = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (cmd_is_help(a)) {
            fputs(talk_usage, stdout);
            return 0;
        } else if (strcmp(a, "--greedy") == 0) {
            o->greedy = 1;
        } else if (strcmp(a, "--vad") == 0) {
            o->vad = 1;
        } else if (strcmp(a, "--commit") == 0) {
            o->vad = 0;
        } else if (strcmp(a, "--realtime") == 0) {
            o->realtime = 1;
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--verbose") == 0) {
            o->verbose = 1;
        } else if (!next) {
            bad = 1;
        } else if (strcmp(a, "--url") == 0) {
            url = argv[++i];
        } else if (strcmp(a, "--audio") == 0) {
            audio = argv[++i];
        } else if (strcmp(a, "--text") == 0) {
            text = argv[++i];
        } else if (strcmp(a, "--turns") == 0) {
            turns = argv[++i];
        } else if (strcmp(a, "--out") == 0) {
            o->out = argv[++i];
        } else if (strcmp(a, "--key") == 0) {
            o->key = argv[++i];
        } else if (strcmp(a, "--codec") == 0 || strcmp(a, "--out-codec") == 0) {
            const char *c = argv[++i];
            int opus = strcmp(c, "opus") == 0;
            bad = !opus && strcmp(c, "pcm16") != 0;
            *(a[2] == 'c' ? &o->in_opus : &o->out_opus) = opus;
        } else if (strcmp(a, "--rate") == 0) {
            bad = cmd_parse_long(argv[++i], 8000, 48000, &v);
            o->in_rate = (int)v;
        } else if (strcmp(a, "--out-rate") == 0) {
            bad = cmd_parse_long(argv[++i], 8000, 48000, &v);
            o->out_rate = (int)v;
        } else if (strcmp(a, "--seed") == 0) {
            bad = cmd_parse_long(argv[++i], 0, (1LL << 53), &o->seed);
        } else if (strcmp(a, "--max-new") == 0) {
            bad = cmd_parse_long(argv[++i], 1, 1 << 20, &o->max_new);
        } else if (strcmp(a, "--barge-in-ms") == 0 || strcmp(a, "--hangup-ms") == 0 ||
                   strcmp(a, "--prebuffer-ms") == 0 || strcmp(a, "--silence-ms") == 0 ||
                   strcmp(a, "--timeout") == 0) {
            bad = cmd_parse_long(argv[++i], 0, 3600 * 1000, &v);
            int *dst = a[2] == 'b'   ? &o->barge_ms
                       : a[2] == 'h' ? &o->hangup_ms
                       : a[2] == 'p' ? &o->prebuffer_ms
                       : a[2] == 's' ? &o->silence_ms
                                     : &o->timeout_s;
            *dst = (int)v;
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr,
                    "parley: talk: bad, unknown or incomplete argument '%s' "
                    "(see parley talk --help)\n",
                    a);
            return -1;
        }
    }
    if (!url || (!!audio + !!text + !!turns) != 1) {
        fprintf(stderr, "parley: usage: parley talk --url ws://HOST:PORT/PATH (--audio Q.wav | "
                        "--text TEXT | --turns A.wav,text:...) [--out ANSWER.wav]\n");
        return -1;
    }
    if (talk_parse_url(o, url) != 0) {
        fprintf(stderr, "parley: talk: --url: not a ws:// or wss:// URL: '%s'\n", url);
        return -1;
    }
    if ((o->in_opus && o->in_rate != 48000 && o->in_rate != 16000) ||
        (o->out_opus && o->out_rate != 48000 && o->out_rate != 16000)) {
        fprintf(stderr, "parley: talk: Opus rates are 48000 or 16000\n");
        return -1;
    }
    *list = strdup(turns ? turns : audio ? audio : text);
    if (!*list)
        return -1;
    int n = 0;
    if (!turns) {
        src[0] = *list;
        is_text[0] = text != NULL;
        return 1;
    }
    for (char *p = strtok(*list, ","); p; p = strtok(NULL, ",")) {
        if (n == TALK_MAX_TURNS) {
            fprintf(stderr, "parley: talk: at most %d turns\n", TALK_MAX_TURNS);
            return -1;
        }
        is_text[n] = strncmp(p, "text:", 5) == 0;
        src[n] = is_text[n] ? p + 5 : p;
        n++;
    }
    if (n == 0)
        fprintf(stderr, "parley: talk: --turns names no turn\n");
    return n > 0 ? n : -1;
}

/* Connects and runs the session to its end. */
static void talk_run(struct talk *t)
{
    const struct talk_opts *o = t->o;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = talk_protocols;
    info.gid = -1;
    info.uid = -1;
    info.user = t;
    if (o->tls)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    lws_set_log_level(o->verbose ? LLL_ERR | LLL_WARN : 0, NULL);
    t->ctx = lws_create_context(&info);
    if (!t->ctx) {
        fprintf(stderr, "parley: talk: cannot create the libwebsockets context\n");
        t->rc = 1;
        return;
    }
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = t->ctx;
    ci.address = o->host;
    ci.port = o->port;
    ci.path = o->path;
    ci.host = o->host;
    ci.origin = o->host;
    ci.protocol = "parley.v1";
    ci.ssl_connection = o->tls ? LCCSCF_USE_SSL : 0;
    lws_sul_schedule(t->ctx, 0, &t->sul_deadline, talk_deadline_cb,
                     (lws_usec_t)o->timeout_s * LWS_US_PER_SEC);
    if (!lws_client_connect_via_info(&ci)) {
        fprintf(stderr, "parley: talk: cannot connect to %s:%d\n", o->host, o->port);
        t->rc = 1;
        t->finished = 1;
    }
    while (!t->finished && lws_service(t->ctx, 0) >= 0)
        ;
    lws_context_destroy(t->ctx);
    t->ctx = NULL;
    json_decref(t->held_done);
    json_decref(t->truncated);
    t->held_done = t->truncated = NULL;
}

/* The verdict once the connection is gone. */
static int talk_verdict(struct talk *t)
{
    if (t->hung_up) {
        fprintf(stderr, "talk: hung up during turn %d\n", t->turn);
        return t->rc;
    }
    if (t->turn < t->n_turns && t->rc == 0) {
        t->rc = 1;
        if (t->close_code)
            fprintf(stderr, "parley: talk: the server closed the session: %d %s\n", t->close_code,
                    t->close_reason);
        else
            fprintf(stderr, "parley: talk: the connection ended during turn %d\n", t->turn);
    }
    if (t->close_code && t->o->json) {
        json_t *j = json_pack("{s:s, s:i, s:s}", "type", "closed", "code", t->close_code, "reason",
                              t->close_reason);
        talk_print_line(t, j);
        json_decref(j);
    }
    return t->rc;
}

int cmd_talk(int argc, char **argv)
{
    struct talk_opts o = { .in_opus = 1,
                           .in_rate = 48000,
                           .out_opus = 1,
                           .out_rate = 48000,
                           .silence_ms = 1500,
                           .barge_ms = -1,
                           .hangup_ms = -1,
                           .timeout_s = 120,
                           .seed = -1 };
    char *list = NULL, *src[TALK_MAX_TURNS];
    int is_text[TALK_MAX_TURNS];
    int n = talk_args(argc, argv, &o, &list, src, is_text);
    if (n <= 0) {
        free(list);
        return n == 0 ? 0 : CMD_EXIT_USAGE;
    }
    struct talk_input in[TALK_MAX_TURNS];
    memset(in, 0, sizeof in);
    struct err e;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (is_text[i])
            in[i].text = src[i];
        else if (talk_prepare_audio(&in[i], &o, src[i], &e) != 0) {
            fprintf(stderr, "parley: talk: %s\n", e.msg);
            rc = CMD_EXIT_USAGE;
        }
    }
    struct talk t;
    memset(&t, 0, sizeof t);
    t.o = &o;
    t.in = in;
    t.n_turns = n;
    t.scratch = rc == 0 ? malloc((size_t)(o.out_rate * 120 / 1000) * sizeof *t.scratch) : NULL;
    t.rx = rc == 0 ? malloc(TALK_MAX_MSG) : NULL;
    t.dec = rc == 0 && o.out_opus ? opus_in_new(o.out_rate, &e) : NULL;
    if (rc == 0 && (!t.scratch || !t.rx || (o.out_opus && !t.dec))) {
        fprintf(stderr, "parley: talk: %s\n", o.out_opus && !t.dec ? e.msg : "out of memory");
        rc = 1;
    }
    if (rc == 0) {
        talk_run(&t);
        rc = talk_verdict(&t);
    }
    for (int i = 0; i < t.n_ctl; i++)
        free(t.ctl[i]);
    opus_in_free(t.dec);
    free(t.pcm);
    free(t.scratch);
    free(t.rx);
    talk_inputs_free(in, n);
    free(list);
    return rc;
}
