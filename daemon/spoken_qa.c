/* spoken_qa — see spoken_qa.h. */
#include "spoken_qa.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lm/chat.h"
#include "audio/oggenc.h"
#include "audio/oggopus.h"
#include "audio/wav.h"
#include "log.h"
#include "runtime/clock.h"

#define QA_POLL_S        0.05 /* engine event wait between checks of the client */
#define QA_CANCEL_WAIT_S 5.0  /* after a cancel, how long to wait for TURN_DONE */
#define QA_KEEPALIVE_S   10.0 /* SSE comment when nothing else was sent for this long */
#define QA_TEXT_HEADER   4096 /* answer text bytes in X-Parley-Text at most */
#define QA_RETRY_AFTER   "2"
#define QA_SEED_MAX      9007199254740992.0 /* 2^53: exact in JSON numbers */

enum qa_out { QA_OUT_JSON, QA_OUT_WAV, QA_OUT_OGG, QA_OUT_SSE, QA_OUT_NONE };

struct qa_options {
    struct sampler_params sampling;
    int ogg;           /* audio in a JSON answer as Ogg Opus instead of WAV */
    int stream;        /* -1: not said */
    int system_prompt; /* chat_system_named's */
};

/* An error response in the making: HTTP status, type (also the metric label), message. */
struct qa_error {
    int status;
    const char *type;
    char msg[512];
};

static int qa_fail(struct qa_error *q, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int qa_fail(struct qa_error *q, int status, const char *type, const char *fmt, ...)
{
    q->status = status;
    q->type = type;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->msg, sizeof q->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- base64 ---------------------------------------------------------------------------- */

static const char qa_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* NUL-terminated base64 of p[n] (malloc'ed), NULL when out of memory. */
static char *qa_base64(const uint8_t *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (!out)
        return NULL;
    char *o = out;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = qa_b64[v >> 18];
        *o++ = qa_b64[v >> 12 & 63];
        *o++ = qa_b64[v >> 6 & 63];
        *o++ = qa_b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = qa_b64[v >> 18];
        *o++ = qa_b64[v >> 12 & 63];
        *o++ = i + 1 < n ? qa_b64[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    return out;
}

/* Decodes base64 (standard or URL alphabet, padding optional, white space skipped) into
 * *out (malloc'ed). -1 with the offending position in *bad. */
static int qa_unbase64(const char *s, size_t n, uint8_t **out, size_t *len, size_t *bad)
{
    uint8_t *o = malloc(n / 4 * 3 + 3);
    if (!o) {
        *bad = 0;
        return -1;
    }
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int v;
        if (isspace((unsigned char)c))
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad) /* data after padding */
            v = -1;
        else if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+' || c == '-')
            v = 62;
        else if (c == '/' || c == '_')
            v = 63;
        else
            v = -1;
        if (v < 0) {
            free(o);
            *bad = i;
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(acc >> bits);
        }
    }
    *out = o;
    *len = k;
    return 0;
}

/* ---- options ----------------------------------------------------------------------------- */

/* A number from a query string (str) or JSON (j). */
static int qa_number(const char *str, json_t *j, double *v)
{
    if (j) {
        if (!json_is_number(j))
            return -1;
        *v = json_number_value(j);
        return 0;
    }
    char *end;
    errno = 0;
    *v = strtod(str, &end);
    return end == str || *end || errno ? -1 : 0;
}

static int qa_bool(const char *str, json_t *j, int *v)
{
    if (j) {
        if (!json_is_boolean(j))
            return -1;
        *v = json_is_true(j);
        return 0;
    }
    if (!strcmp(str, "true") || !strcmp(str, "1"))
        *v = 1;
    else if (!strcmp(str, "false") || !strcmp(str, "0"))
        *v = 0;
    else
        return -1;
    return 0;
}

static const char *const qa_option_names[] = { "temperature",    "top_p",         "top_k",
                                               "max_new_tokens", "seed",          "greedy",
                                               "format",         "system_prompt", "stream" };
#define QA_N_OPTIONS ((int)(sizeof qa_option_names / sizeof qa_option_names[0]))

/* One option from the query string (str) or JSON (j). 0 ok, -1 bad value (q set), 1 unknown
 * name. */
static int qa_option(struct qa_options *o, const char *name, const char *str, json_t *j,
                     int64_t n_ctx, struct qa_error *q)
{
    double v = 0;
    int b = 0;
    const char *s = j ? json_string_value(j) : str;
    if (!strcmp(name, "temperature")) {
        if (qa_number(str, j, &v) || !(v >= 0 && v <= 2))
            return qa_fail(q, 400, "invalid_value", "temperature: a number in 0..2");
        o->sampling.temperature = (float)v;
    } else if (!strcmp(name, "top_p")) {
        if (qa_number(str, j, &v) || !(v > 0 && v <= 1))
            return qa_fail(q, 400, "invalid_value", "top_p: a number in (0, 1]");
        o->sampling.top_p = (float)v;
    } else if (!strcmp(name, "top_k")) {
        if (qa_number(str, j, &v) || !(v >= 0 && v <= 100000) || v != floor(v))
            return qa_fail(q, 400, "invalid_value", "top_k: an integer in 0..100000 (0: off)");
        o->sampling.top_k = (int)v;
    } else if (!strcmp(name, "max_new_tokens")) {
        if (qa_number(str, j, &v) || !(v >= 1 && v <= (double)n_ctx) || v != floor(v))
            return qa_fail(q, 400, "invalid_value", "max_new_tokens: an integer in 1..%lld",
                           (long long)n_ctx);
        o->sampling.max_new = (int)v;
    } else if (!strcmp(name, "seed")) {
        if (qa_number(str, j, &v) || !(v >= 0 && v <= QA_SEED_MAX) || v != floor(v))
            return qa_fail(q, 400, "invalid_value", "seed: an integer in 0..2^53");
        o->sampling.seed = (uint64_t)v;
    } else if (!strcmp(name, "greedy")) {
        if (qa_bool(str, j, &b))
            return qa_fail(q, 400, "invalid_value", "greedy: true or false");
        o->sampling.greedy = b;
    } else if (!strcmp(name, "stream")) {
        if (qa_bool(str, j, &b))
            return qa_fail(q, 400, "invalid_value", "stream: true or false");
        o->stream = b;
    } else if (!strcmp(name, "format")) {
        if (!s || (strcmp(s, "wav") && strcmp(s, "ogg")))
            return qa_fail(q, 400, "invalid_value", "format: \"wav\" or \"ogg\"");
        o->ogg = !strcmp(s, "ogg");
    } else if (!strcmp(name, "system_prompt")) {
        o->system_prompt = chat_system_named(s);
        if (o->system_prompt == -2)
            return qa_fail(q, 400, "invalid_value",
                           "system_prompt: \"auto\", \"audio\" or \"text\"");
    } else {
        return 1;
    }
    return 0;
}

/* ---- the question -------------------------------------------------------------------------- */

struct qa_question {
    int audio;  /* spoken question */
    float *pcm; /* mono [n] at rate */
    int64_t n;
    int rate;
    char *text; /* text question (malloc'ed) */
    double decode_ms;
};

static void qa_question_free(struct qa_question *qq)
{
    free(qq->pcm);
    free(qq->text);
    memset(qq, 0, sizeof *qq);
}

/* The media type of a Content-Type or Accept item: lower case, parameters dropped. */
static void qa_media_type(const char *v, size_t n, char *out, size_t cap)
{
    while (n && isspace((unsigned char)*v)) {
        v++;
        n--;
    }
    size_t k = 0;
    for (size_t i = 0; i < n && v[i] != ';' && !isspace((unsigned char)v[i]) && k + 1 < cap; i++)
        out[k++] = (char)tolower((unsigned char)v[i]);
    out[k] = 0;
}

static int qa_is_wav_type(const char *t)
{
    return !strcmp(t, "audio/wav") || !strcmp(t, "audio/x-wav") || !strcmp(t, "audio/wave") ||
           !strcmp(t, "audio/vnd.wave");
}

static int qa_is_ogg_type(const char *t)
{
    return !strcmp(t, "audio/ogg") || !strcmp(t, "audio/opus") || !strcmp(t, "application/ogg");
}

/* WAV or Ogg Opus bytes -> mono samples. ogg: -1 sniff, else which decoder. */
static int qa_decode_audio(struct qa_question *qq, const void *data, size_t n, int ogg,
                           struct qa_error *q)
{
    if (n == 0)
        return qa_fail(q, 400, "empty_turn", "the question is empty (no audio)");
    if (ogg < 0)
        ogg = oggopus_sniff(data, n);
    struct wav_audio a;
    struct err e;
    int rc = ogg ? oggopus_decode(&a, data, n, n, &e) : wav_decode(&a, data, n, n, &e);
    if (rc)
        return qa_fail(q, 400, "bad_audio", "%s: %s", ogg ? "Ogg Opus" : "WAV", e.msg);
    qq->pcm = malloc((size_t)a.frames * sizeof(float));
    if (!qq->pcm) {
        wav_audio_free(&a);
        return qa_fail(q, 500, "internal", "out of memory for %lld samples", (long long)a.frames);
    }
    for (int64_t i = 0; i < a.frames; i++) {
        float sum = 0;
        for (int c = 0; c < a.channels; c++)
            sum += a.samples[(int64_t)c * a.frames + i];
        qq->pcm[i] = sum / (float)a.channels;
    }
    qq->n = a.frames;
    qq->rate = a.rate;
    qq->audio = 1;
    wav_audio_free(&a);
    return 0;
}

/* A text question: not empty, not only white space. */
static int qa_take_text(struct qa_question *qq, const char *s, size_t n, struct qa_error *q)
{
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    if (i == n)
        return qa_fail(q, 400, "empty_turn", "the question is empty (\"text\" has no words)");
    if (memchr(s, 0, n))
        return qa_fail(q, 400, "invalid_value", "text: contains a NUL character");
    qq->text = strndup(s, n);
    if (!qq->text)
        return qa_fail(q, 500, "internal", "out of memory");
    return 0;
}

/* The JSON body: the question and options. */
static int qa_parse_json(struct qa_question *qq, struct qa_options *o, const struct http_call *c,
                         int64_t n_ctx, struct qa_error *q)
{
    json_error_t je;
    json_t *root = json_loadb(c->body ? c->body : "", c->body_len, 0, &je);
    if (!root)
        return qa_fail(q, 400, "invalid_json", "invalid JSON at line %d column %d: %s", je.line,
                       je.column, je.text);
    int rc = 0;
    if (!json_is_object(root))
        rc = qa_fail(q, 400, "invalid_json", "the body must be a JSON object");
    json_t *text = json_object_get(root, "text"), *audio = json_object_get(root, "audio");
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (rc || !strcmp(key, "text") || !strcmp(key, "audio"))
            continue;
        int r = qa_option(o, key, NULL, val, n_ctx, q);
        if (r > 0)
            rc = qa_fail(q, 400, "invalid_value", "unknown field '%.64s'", key);
        else if (r < 0)
            rc = -1;
    }
    if (!rc && text && audio)
        rc = qa_fail(q, 400, "invalid_value", "give \"text\" or \"audio\", not both");
    else if (!rc && text && !json_is_string(text))
        rc = qa_fail(q, 400, "invalid_value", "text: a string");
    else if (!rc && audio && !json_is_string(audio))
        rc = qa_fail(q, 400, "invalid_value", "audio: a base64 string (WAV or Ogg Opus)");
    else if (!rc && !text && !audio)
        rc = qa_fail(q, 400, "empty_turn", "the question is empty: give \"text\" or \"audio\"");
    if (!rc && text)
        rc = qa_take_text(qq, json_string_value(text), json_string_length(text), q);
    if (!rc && audio) {
        const char *s = json_string_value(audio);
        size_t n = json_string_length(audio);
        /* a data: URL as browsers make them */
        const char *comma = !strncmp(s, "data:", 5) ? memchr(s, ',', n) : NULL;
        if (comma) {
            n -= (size_t)(comma + 1 - s);
            s = comma + 1;
        }
        uint8_t *bytes = NULL;
        size_t len = 0, bad = 0;
        if (qa_unbase64(s, n, &bytes, &len, &bad))
            rc = qa_fail(q, 400, "invalid_value", "audio: not base64 (at character %zu)", bad);
        else
            rc = qa_decode_audio(qq, bytes, len, -1, q);
        free(bytes);
    }
    json_decref(root);
    return rc;
}

/* The question and options of a request; the format of the answer in *out. */
static int qa_parse(struct qa_question *qq, struct qa_options *o, enum qa_out *out,
                    const struct http_call *c, const struct service *svc, struct qa_error *q)
{
    double t0 = clock_seconds();
    struct engine_session_options dflt;
    engine_session_options_default(&dflt);
    memset(o, 0, sizeof *o);
    o->sampling = dflt.sampling;
    o->stream = -1;
    o->system_prompt = CHAT_SYSTEM_AUTO;
    for (int i = 0; i < QA_N_OPTIONS; i++) {
        const char *v = http_call_arg(c, qa_option_names[i]);
        if (v && qa_option(o, qa_option_names[i], v, NULL, svc->lm_ctx, q))
            return -1;
    }
    char type[96];
    qa_media_type(c->content_type ? c->content_type : "",
                  c->content_type ? strlen(c->content_type) : 0, type, sizeof type);
    int rc;
    if (!strcmp(type, "application/json"))
        rc = qa_parse_json(qq, o, c, svc->lm_ctx, q);
    else if (qa_is_wav_type(type) || qa_is_ogg_type(type))
        rc = qa_decode_audio(qq, c->body, c->body_len, qa_is_ogg_type(type), q);
    else
        return qa_fail(q, 415, "unsupported_media",
                       "Content-Type %s%s%s is not taken: send audio/wav, audio/ogg or "
                       "application/json",
                       type[0] ? "'" : "", type[0] ? type : "missing", type[0] ? "'" : "");
    if (rc)
        return -1;
    if (qq->audio && !svc->have_stok)
        return qa_fail(q, 400, "invalid_value",
                       "this server has no speech tokenizer: ask with {\"text\": ...}");
    /* the answer's form: stream, or the first Accept item served */
    *out = QA_OUT_JSON;
    const char *acc = c->accept;
    if (acc && acc[0]) {
        *out = QA_OUT_NONE;
        for (const char *p = acc; *out == QA_OUT_NONE && p && *p;) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            char t[96];
            qa_media_type(p, n, t, sizeof t);
            if (!strcmp(t, "application/json") || !strcmp(t, "*/*") || !strcmp(t, "application/*"))
                *out = QA_OUT_JSON;
            else if (qa_is_wav_type(t))
                *out = QA_OUT_WAV;
            else if (qa_is_ogg_type(t))
                *out = QA_OUT_OGG;
            else if (!strcmp(t, "audio/*"))
                *out = o->ogg ? QA_OUT_OGG : QA_OUT_WAV;
            else if (!strcmp(t, "text/event-stream"))
                *out = QA_OUT_SSE;
            p = comma ? comma + 1 : NULL;
        }
    }
    if (o->stream == 1)
        *out = QA_OUT_SSE;
    else if (o->stream == 0 && *out == QA_OUT_SSE)
        *out = QA_OUT_JSON;
    if (*out == QA_OUT_NONE)
        return qa_fail(q, 406, "not_acceptable",
                       "Accept: the answer comes as application/json, audio/wav, audio/ogg or "
                       "text/event-stream");
    if ((*out == QA_OUT_WAV || *out == QA_OUT_OGG) && !svc->voice_rate)
        return qa_fail(q, 406, "not_acceptable", "this server has no voice decoder: no audio");
    qq->decode_ms = (clock_seconds() - t0) * 1e3;
    return 0;
}

int spoken_qa_check(const struct service *svc, const struct http_call *call, char *msg, size_t len)
{
    struct qa_question qq;
    struct qa_options o;
    struct qa_error q = { 0 };
    enum qa_out out;
    memset(&qq, 0, sizeof qq);
    int rc = qa_parse(&qq, &o, &out, call, svc, &q);
    qa_question_free(&qq);
    snprintf(msg, len, "%s", rc ? q.msg : "");
    return rc ? q.status : 0;
}

/* ---- the turn ------------------------------------------------------------------------------ */

struct qa_turn {
    struct service *svc;
    struct engine_session *s; /* NULL until opened */
    int committed;            /* a TURN_DONE is owed */
    char id[SERVICE_ID_LEN];
    struct http_peer peer;
    struct qa_options opt;
    struct qa_question qq;
    enum qa_out out;
    int voice_rate;
    /* the answer so far */
    float *pcm; /* kept whole unless streaming */
    int64_t n_pcm;
    size_t cap_pcm;
    char *text;
    size_t n_text, cap_text;
    int64_t user_tokens;
    int have_done;
    struct engine_event done; /* its timings and reason (ids freed) */
    int have_error;
    enum engine_status err_status;
    char err_msg[256];
    int cancelled; /* the client left: engine_cancel was called */
    double cancel_deadline;
    int failed; /* out of memory while collecting */
    /* SSE: formatted events not yet handed to the server */
    char *sse;
    size_t sse_n, sse_pos, sse_cap;
    int sse_ended;
    double sse_last; /* when something was last queued */
};

static int qa_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    void *np = realloc(*p, c * elem);
    if (!np)
        return -1;
    *p = np;
    *cap = c;
    return 0;
}

/* Queues one SSE event: "event: NAME\ndata: JSON\n\n" (j is consumed). */
static void qa_sse(struct qa_turn *t, const char *name, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        t->failed = 1;
        return;
    }
    size_t n = strlen(text), extra = strlen(name) + 16;
    if (qa_grow((void **)&t->sse, &t->sse_cap, t->sse_n + n + extra, 1)) {
        t->failed = 1;
    } else {
        t->sse_n += (size_t)sprintf(t->sse + t->sse_n, "event: %s\ndata: %s\n\n", name, text);
        t->sse_last = clock_seconds();
    }
    free(text);
}

static const char *qa_reason(enum engine_done_reason r)
{
    static const char *const names[] = { "end", "length", "context", "cancelled", "error" };
    return (unsigned)r < 5 ? names[r] : "error";
}

/* An engine status as an HTTP error. */
static void qa_engine_error(struct qa_error *q, enum engine_status st, const char *msg)
{
    switch (st) {
    case ENGINE_ERR_CONTEXT: qa_fail(q, 400, "context", "%s", msg); break;
    case ENGINE_ERR_INPUT_FULL: qa_fail(q, 400, "turn_too_long", "%s", msg); break;
    case ENGINE_ERR_INVALID: qa_fail(q, 400, "invalid_value", "%s", msg); break;
    case ENGINE_ERR_SESSIONS:
    case ENGINE_ERR_MEMORY: qa_fail(q, 503, "server_full", "%s", msg); break;
    case ENGINE_ERR_CLOSED: qa_fail(q, 503, "shutting_down", "%s", msg); break;
    default: qa_fail(q, 500, "internal", "%s", msg); break;
    }
}

static json_t *qa_ms(double seconds)
{
    return seconds < 0 ? json_null() : json_real(round(seconds * 1e4) / 10);
}

static json_t *qa_timings_json(const struct qa_turn *t)
{
    const struct engine_timings *tm = &t->done.t;
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "input_decode_ms",
                     json_real(round(t->qq.decode_ms * 10) / 10), "tokenize_ms",
                     qa_ms(tm->tokenize), "prefill_ms", qa_ms(tm->prefill_end), "first_token_ms",
                     qa_ms(tm->first_token), "first_audio_ms", qa_ms(tm->first_pcm), "total_ms",
                     qa_ms(tm->done));
}

static json_t *qa_usage_json(const struct qa_turn *t)
{
    const struct engine_timings *tm = &t->done.t;
    double in_s = t->qq.audio ? (double)t->qq.n / t->qq.rate : 0;
    double out_s = t->voice_rate ? (double)tm->n_samples / t->voice_rate : 0;
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:f,s:f}", "user_tokens", (json_int_t)t->user_tokens,
                     "prompt_tokens", (json_int_t)tm->n_prompt, "text_tokens",
                     (json_int_t)tm->n_text, "audio_tokens", (json_int_t)tm->n_audio,
                     "total_tokens", (json_int_t)(tm->n_prompt + tm->n_text + tm->n_audio),
                     "input_audio_seconds", in_s, "output_audio_seconds", out_s);
}

/* The answer as JSON, audio (base64 of data[n], or NULL) included when given. */
static json_t *qa_answer_json(const struct qa_turn *t, const char *format, const char *data)
{
    int64_t samples = t->done.t.n_samples;
    json_t *audio = json_null();
    if (t->voice_rate && (samples > 0 || data)) {
        audio = json_pack("{s:s,s:i,s:I,s:f}", "format", format, "sample_rate", t->voice_rate,
                          "samples", (json_int_t)samples, "duration_ms",
                          round((double)samples * 1e4 / t->voice_rate) / 10);
        if (audio && data)
            json_object_set_new(audio, "data", json_string(data));
    }
    return json_pack("{s:s,s:s,s:s,s:I,s:s%,s:s,s:o,s:o,s:o}", "id", t->id, "object",
                     "spoken_qa.answer", "question", t->qq.audio ? "audio" : "text", "user_tokens",
                     (json_int_t)t->user_tokens, "text", t->text ? t->text : "", t->n_text,
                     "finish_reason", qa_reason(t->done.reason), "audio", audio, "timings",
                     qa_timings_json(t), "usage", qa_usage_json(t));
}

/* Takes one event (waiting up to timeout_s) and folds it into the answer; streams it when
 * streaming. Returns 1 when an event was taken. */
static int qa_pump(struct qa_turn *t, double timeout_s)
{
    struct engine_event ev;
    if (engine_next_event(t->s, &ev, timeout_s) != 1)
        return 0;
    int sse = t->out == QA_OUT_SSE;
    switch (ev.type) {
    case ENGINE_EV_USER_TOKENIZED:
        t->user_tokens = ev.n_tokens;
        if (sse)
            qa_sse(
                t, "user",
                json_pack("{s:I,s:f}", "tokens", (json_int_t)ev.n_tokens, "seconds", ev.seconds));
        break;
    case ENGINE_EV_TRANSCRIPT: {
        size_t n = ev.text ? strlen(ev.text) : 0;
        if (qa_grow((void **)&t->text, &t->cap_text, t->n_text + n + 1, 1)) {
            t->failed = 1;
            break;
        }
        memcpy(t->text + t->n_text, ev.text ? ev.text : "", n);
        t->n_text += n;
        t->text[t->n_text] = 0;
        if (sse)
            qa_sse(t, "transcript", json_pack("{s:s%}", "text", ev.text ? ev.text : "", n));
        break;
    }
    case ENGINE_EV_AUDIO:
        if (sse) {
            uint8_t *b = malloc((size_t)ev.n_pcm * 2 + 1);
            char *b64 = NULL;
            if (b) {
                wav_to_pcm16(b, ev.pcm, ev.n_pcm);
                b64 = qa_base64(b, (size_t)ev.n_pcm * 2);
            }
            free(b);
            if (!b64)
                t->failed = 1;
            else
                qa_sse(t, "audio",
                       json_pack("{s:I,s:I,s:s}", "offset", (json_int_t)t->n_pcm, "samples",
                                 (json_int_t)ev.n_pcm, "data", b64));
            free(b64);
            t->n_pcm += ev.n_pcm;
        } else if (qa_grow((void **)&t->pcm, &t->cap_pcm, (size_t)(t->n_pcm + ev.n_pcm),
                           sizeof(float))) {
            t->failed = 1;
        } else {
            memcpy(t->pcm + t->n_pcm, ev.pcm, (size_t)ev.n_pcm * sizeof(float));
            t->n_pcm += ev.n_pcm;
        }
        break;
    case ENGINE_EV_ERROR:
        if (!t->have_error) {
            t->have_error = 1;
            t->err_status = ev.status;
            snprintf(t->err_msg, sizeof t->err_msg, "%s", ev.text ? ev.text : "engine error");
        }
        if (sse) {
            struct qa_error q;
            qa_engine_error(&q, ev.status, ev.text ? ev.text : "engine error");
            service_count_error(t->svc, q.type);
            qa_sse(t, "error",
                   json_pack("{s:{s:s,s:s,s:i}}", "error", "type", q.type, "message", q.msg,
                             "status", q.status));
        }
        break;
    case ENGINE_EV_TURN_DONE:
        t->have_done = 1;
        t->done = ev;
        if (!t->qq.audio) /* a text question: the ids its turn prefilled */
            t->user_tokens = ev.t.n_prompt;
        t->done.ids = NULL;
        t->done.text = NULL;
        t->done.pcm = NULL;
        service_turn_done(t->svc, "rest", t->id, &ev,
                          t->qq.audio ? (double)t->qq.n / t->qq.rate : 0);
        if (sse)
            qa_sse(t, "done", qa_answer_json(t, "pcm16", NULL));
        break;
    }
    engine_event_clear(&ev);
    return 1;
}

/* The client left (or the server stops): cancel once, then wait a bounded time for the
 * TURN_DONE that counts the turn. 1 when the wait is over. */
static int qa_check_peer(struct qa_turn *t)
{
    if (!t->cancelled && http_peer_gone(&t->peer)) {
        t->cancelled = 1;
        t->cancel_deadline = clock_seconds() + QA_CANCEL_WAIT_S;
        engine_cancel(t->s, t->n_pcm, NULL);
        log_info("rest session=%s: client gone, answer cancelled", t->id);
    }
    return t->cancelled && clock_seconds() > t->cancel_deadline;
}

/* Frees the session (cancelling what still runs) and the turn: the one place a REST session
 * is given back. */
static void qa_turn_free(struct qa_turn *t)
{
    if (t->s) {
        if (t->committed && !t->have_done) {
            if (!t->cancelled)
                engine_cancel(t->s, t->n_pcm, NULL);
            t->out = QA_OUT_JSON; /* no more streaming */
            for (double end = clock_seconds() + QA_CANCEL_WAIT_S;
                 !t->have_done && clock_seconds() < end;)
                qa_pump(t, QA_POLL_S);
        }
        engine_close(t->s);
        service_leave(t->svc);
    }
    qa_question_free(&t->qq);
    free(t->pcm);
    free(t->text);
    free(t->sse);
    free(t);
}

/* ---- answers ------------------------------------------------------------------------------- */

/* Percent-encodes UTF-8 text for a header: at most QA_TEXT_HEADER source bytes, cut at a
 * character boundary. *cut when the text was longer. */
static char *qa_percent(const char *s, size_t n, int *cut)
{
    *cut = n > QA_TEXT_HEADER;
    if (*cut) {
        n = QA_TEXT_HEADER;
        while (n && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    char *o = malloc(3 * n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            o[k++] = (char)c;
        } else {
            k += (size_t)sprintf(o + k, "%%%02X", c);
        }
    }
    o[k] = 0;
    return o;
}

static void qa_headers(struct qa_turn *t, struct http_response *res)
{
    const struct engine_timings *tm = &t->done.t;
    int cut = 0;
    char *pct = qa_percent(t->text ? t->text : "", t->n_text, &cut);
    if (pct)
        http_response_header(res, "X-Parley-Text", "%s", pct);
    free(pct);
    if (cut)
        http_response_header(res, "X-Parley-Text-Truncated", "true");
    http_response_header(res, "X-Parley-Session", "%s", t->id);
    http_response_header(res, "X-Parley-Finish-Reason", "%s", qa_reason(t->done.reason));
    http_response_header(res, "X-Parley-Usage",
                         "user_tokens=%lld, prompt_tokens=%lld, text_tokens=%lld, "
                         "audio_tokens=%lld",
                         (long long)t->user_tokens, (long long)tm->n_prompt, (long long)tm->n_text,
                         (long long)tm->n_audio);
    http_response_header(res, "X-Parley-Audio", "samples=%lld, sample_rate=%d, duration_ms=%.1f",
                         (long long)tm->n_samples, t->voice_rate,
                         t->voice_rate ? (double)tm->n_samples * 1e3 / t->voice_rate : 0.0);
    char st[512];
    size_t k = (size_t)snprintf(st, sizeof st, "decode;dur=%.1f", t->qq.decode_ms);
    const char *names[] = { "tokenize", "prefill", "first_token", "first_audio", "total" };
    double v[] = { tm->tokenize, tm->prefill_end, tm->first_token, tm->first_pcm, tm->done };
    for (int i = 0; i < 5; i++)
        if (v[i] >= 0 && k < sizeof st)
            k += (size_t)snprintf(st + k, sizeof st - k, ", %s;dur=%.1f", names[i], v[i] * 1e3);
    http_response_header(res, "Server-Timing", "%s", st);
}

/* The whole answer (not streamed) into res. */
static void qa_answer(struct qa_turn *t, struct http_response *res)
{
    struct err e;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int ogg = t->out == QA_OUT_OGG || (t->out == QA_OUT_JSON && t->opt.ogg);
    int need_audio = t->out != QA_OUT_JSON || t->n_pcm > 0;
    int rc = 0;
    if (need_audio && t->voice_rate)
        rc = ogg ? oggenc_encode(&bytes, &len, t->pcm, t->n_pcm, t->voice_rate, 0, &e)
                 : wav_encode_pcm16(&bytes, &len, t->pcm, t->n_pcm, t->voice_rate, &e);
    if (rc) {
        service_count_error(t->svc, "internal");
        http_response_error(res, 500, "internal", "encoding the answer: %s", e.msg);
        return;
    }
    if (t->out != QA_OUT_JSON) {
        res->status = 200;
        snprintf(res->type, sizeof res->type, "%s", ogg ? "audio/ogg" : "audio/wav");
        res->body = bytes;
        res->len = len;
        qa_headers(t, res);
        return;
    }
    char *b64 = bytes ? qa_base64(bytes, len) : NULL;
    free(bytes);
    if (bytes && !b64) {
        http_response_error(res, 500, "internal", "out of memory");
        return;
    }
    json_t *j = qa_answer_json(t, ogg ? "ogg" : "wav", b64);
    free(b64);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        http_response_error(res, 500, "internal", "out of memory");
        return;
    }
    res->status = 200;
    res->body = (uint8_t *)text; /* jansson allocates with malloc */
    res->len = strlen(text);
    http_response_header(res, "X-Parley-Session", "%s", t->id);
}

/* libmicrohttpd pulls the SSE body: hand out queued events, otherwise wait for the engine. */
static ssize_t qa_stream_read(void *ctx, char *buf, size_t max)
{
    struct qa_turn *t = ctx;
    while (t->sse_pos == t->sse_n) {
        t->sse_pos = t->sse_n = 0;
        if (t->sse_ended || t->failed)
            return t->failed ? HTTP_STREAM_ERROR : HTTP_STREAM_END;
        if (t->have_done) {
            t->sse_ended = 1;
            continue;
        }
        if (qa_check_peer(t))
            return HTTP_STREAM_ERROR;
        if (t->cancelled) /* nobody to send to: only wait for the turn's end */
            qa_pump(t, QA_POLL_S);
        else if (!qa_pump(t, QA_POLL_S) && clock_seconds() - t->sse_last > QA_KEEPALIVE_S &&
                 !qa_grow((void **)&t->sse, &t->sse_cap, 16, 1)) {
            t->sse_n = (size_t)sprintf(t->sse, ": keep-alive\n\n");
            t->sse_last = clock_seconds();
        }
        if (t->cancelled)
            t->sse_n = 0;
    }
    size_t n = t->sse_n - t->sse_pos < max ? t->sse_n - t->sse_pos : max;
    memcpy(buf, t->sse + t->sse_pos, n);
    t->sse_pos += n;
    return (ssize_t)n;
}

static void qa_stream_release(void *ctx)
{
    qa_turn_free(ctx);
}

/* Opens the session and hands it the question. Fills q on failure (the session, if opened,
 * is then freed by the caller through qa_turn_free). */
static int qa_start(struct qa_turn *t, struct qa_error *q)
{
    struct service *svc = t->svc;
    char why[128];
    if (service_admit(svc, t->id, why, sizeof why)) {
        int draining = atomic_load(&svc->draining);
        return qa_fail(q, 503, draining ? "shutting_down" : "server_full", "%s", why);
    }
    struct engine_session_options o;
    service_session_options(svc, &o);
    o.in_rate = t->qq.audio ? t->qq.rate : 16000;
    o.sampling.temperature = t->opt.sampling.temperature;
    o.sampling.top_p = t->opt.sampling.top_p;
    o.sampling.top_k = t->opt.sampling.top_k;
    o.sampling.max_new = t->opt.sampling.max_new;
    o.sampling.seed = t->opt.sampling.seed;
    o.sampling.greedy = t->opt.sampling.greedy;
    o.system_prompt = t->opt.system_prompt;
    if (t->qq.audio && (double)t->qq.n / t->qq.rate > o.max_user_seconds) {
        service_leave(svc);
        return qa_fail(q, 400, "turn_too_long", "the question is %.1f s long; at most %.0f s",
                       (double)t->qq.n / t->qq.rate, o.max_user_seconds);
    }
    struct err e;
    enum engine_status st = engine_open(svc->eng, &o, &t->s, &e);
    if (st != ENGINE_OK) {
        t->s = NULL;
        service_leave(svc);
        if (st == ENGINE_ERR_SESSIONS || st == ENGINE_ERR_MEMORY)
            service_refused(svc, SERVICE_REFUSED_FULL);
        qa_engine_error(q, st, e.msg);
        return -1;
    }
    st = t->qq.audio ? engine_push_audio(t->s, t->qq.pcm, t->qq.n, &e)
                     : engine_push_text(t->s, t->qq.text, &e);
    if (st == ENGINE_OK)
        st = engine_commit(t->s, &e);
    t->committed = st == ENGINE_OK;
    if (st != ENGINE_OK) {
        qa_engine_error(q, st, e.msg);
        return -1;
    }
    return 0;
}

void spoken_qa_serve(void *service, const struct http_call *call, struct http_response *res)
{
    struct service *svc = service;
    struct qa_turn *t = calloc(1, sizeof *t);
    struct qa_error q = { 0 };
    if (!t) {
        http_response_error(res, 500, "internal", "out of memory");
        return;
    }
    t->svc = svc;
    t->peer = call->peer;
    t->voice_rate = svc->voice_rate;
    if (qa_parse(&t->qq, &t->opt, &t->out, call, svc, &q) || qa_start(t, &q))
        goto fail;
    if (t->out == QA_OUT_SSE) {
        qa_sse(t, "start",
               json_pack("{s:s,s:s,s:i,s:s}", "id", t->id, "question",
                         t->qq.audio ? "audio" : "text", "sample_rate", t->voice_rate,
                         "audio_format", "pcm16"));
        res->status = 200;
        snprintf(res->type, sizeof res->type, "text/event-stream; charset=utf-8");
        http_response_header(res, "X-Parley-Session", "%s", t->id);
        http_response_header(res, "X-Accel-Buffering", "no"); /* nginx: do not hold events */
        res->read = qa_stream_read;
        res->release = qa_stream_release;
        res->ctx = t;
        return;
    }
    while (!t->have_done && !t->failed && !qa_check_peer(t))
        qa_pump(t, QA_POLL_S);
    if (t->failed) {
        qa_fail(&q, 500, "internal", "out of memory while collecting the answer");
        goto fail;
    }
    if (t->cancelled) {
        /* nobody reads this; the connection is closed when it is sent */
        qa_fail(&q, 499, "cancelled", "the client closed the connection");
        goto fail;
    }
    if (t->have_error) {
        qa_engine_error(&q, t->err_status, t->err_msg);
        goto fail;
    }
    qa_answer(t, res);
    qa_turn_free(t);
    return;
fail:
    if (q.status != 499)
        service_count_error(svc, q.type);
    http_response_error(res, q.status, q.type, "%s", q.msg);
    if (q.status == 503)
        http_response_header(res, "Retry-After", QA_RETRY_AFTER);
    qa_turn_free(t);
}
