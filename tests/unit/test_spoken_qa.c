/*
 * POST /v1/spoken-qa end to end: the real parleyd (next to this test binary) on loopback with
 * the tiny golden models, asked over plain HTTP/1.1 sockets:
 *   - a WAV upload (espeak-ng speech), the same speech as Ogg Opus (made with proto/audio
 *     oggenc), a JSON text question, base64 JSON audio (same answer as the raw upload);
 *   - Accept: audio/wav and audio/ogg (the Ogg decoded with oggopus: its length matches the
 *     duration the JSON answer reports), text and figures in headers;
 *   - ?stream=true: events arrive before the end; the audio chunks put together are the bytes
 *     of the non-streamed answer with the same seed; the transcript deltas make its text;
 *   - every bad input (415, 400 with the decoder's message, 413, 401, empty question, bad
 *     options, 406) while a streamed answer goes on and completes;
 *   - 32 concurrent questions (8 under PARLEY_TEST_QUICK) while /healthz keeps answering;
 *   - a client that disconnects mid-answer (plain and streamed) frees its session
 *     (parley_sessions_active back to 0, the turn counted as cancelled);
 *   - a full server answers 503 with Retry-After.
 * Needs build/golden/{lm_tiny_f32,stok_a,voice_decoder}.gguf (see test_daemon.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audio/oggenc.h"
#include "audio/oggopus.h"
#include "audio/wav.h"
#include "test.h"
#include "testd.h"
#include "runtime/clock.h"

#define WAIT_MS 20000
#define KEY     "qa-key"
#define AUTH    "Authorization: Bearer " KEY "\r\n"
/* sampling that makes the tiny model talk for a while (200 tokens, a dozen of them speech;
 * 100 under PARLEY_TEST_QUICK) */
#define LONG_SAMPLING "seed=2&temperature=1&top_p=1&top_k=0&max_new_tokens="

static int long_tokens(void)
{
    return td_quick() ? 100 : 200;
}

/* "/v1/spoken-qa?" + extra + the long sampling (a rotating static buffer) */
static const char *qa_path(const char *extra)
{
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "/v1/spoken-qa?%s" LONG_SAMPLING "%d", extra, long_tokens());
    return b;
}

/* ---- HTTP client ------------------------------------------------------------------------- */

struct qa_resp {
    int status;
    char head[8192];
    uint8_t *raw; /* as received after the head */
    size_t n_raw;
    uint8_t *body; /* de-chunked, NUL-terminated */
    size_t len;
    /* streaming: raw length after each read, to tell what arrived when */
    size_t marks[4096];
    int n_marks;
};

static void qa_resp_free(struct qa_resp *r)
{
    free(r->raw);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int qa_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends a request; fd or -1. ctype NULL: no Content-Type; body NULL with len > 0: only the
 * head, claiming len bytes. */
static int qa_send(int port, const char *method, const char *path, const char *extra,
                   const char *ctype, const void *body, size_t len)
{
    int fd = td_connect(port, 60);
    if (fd < 0)
        return -1;
    char head[4096];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s%s%s%s"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, port, extra ? extra : "", ctype ? "Content-Type: " : "",
                     ctype ? ctype : "", ctype ? "\r\n" : "", len);
    if (qa_write_all(fd, head, (size_t)n) || (body && len && qa_write_all(fd, body, len))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* De-chunks r->raw into r->body when the head says chunked. */
static void qa_dechunk(struct qa_resp *r)
{
    r->body = malloc(r->n_raw + 1);
    if (!r->body)
        return;
    if (!strcasestr(r->head, "Transfer-Encoding: chunked")) {
        memcpy(r->body, r->raw, r->n_raw);
        r->len = r->n_raw;
        r->body[r->len] = 0;
        return;
    }
    size_t i = 0;
    r->len = 0;
    while (i < r->n_raw) {
        char *end;
        unsigned long n = strtoul((const char *)r->raw + i, &end, 16);
        const char *crlf = strstr((const char *)r->raw + i, "\r\n");
        if (!crlf || n == 0)
            break;
        i = (size_t)(crlf - (const char *)r->raw) + 2;
        if (i + n > r->n_raw)
            n = r->n_raw - i;
        memcpy(r->body + r->len, r->raw + i, n);
        r->len += n;
        i += n + 2;
    }
    r->body[r->len] = 0;
}

/* Reads the whole response from fd (then closed). */
static int qa_recv(int fd, struct qa_resp *r)
{
    size_t cap = 1 << 16, got = 0;
    uint8_t *buf = malloc(cap + 1);
    r->n_marks = 0;
    while (buf) {
        if (got == cap) {
            uint8_t *nb = realloc(buf, 2 * cap + 1);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + got, cap - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (r->n_marks < (int)(sizeof r->marks / sizeof r->marks[0]))
            r->marks[r->n_marks++] = got;
    }
    close(fd);
    r->status = -1;
    if (!buf)
        return -1;
    buf[got] = 0;
    char *sep = strstr((char *)buf, "\r\n\r\n");
    if (!sep || sscanf((char *)buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    size_t hn = (size_t)(sep - (char *)buf);
    snprintf(r->head, sizeof r->head, "%.*s", (int)hn, (char *)buf);
    r->n_raw = got - hn - 4;
    r->raw = malloc(r->n_raw + 1);
    if (r->raw) {
        memcpy(r->raw, sep + 4, r->n_raw);
        r->raw[r->n_raw] = 0;
    }
    for (int i = 0; i < r->n_marks; i++)
        r->marks[i] = r->marks[i] > hn + 4 ? r->marks[i] - hn - 4 : 0;
    free(buf);
    qa_dechunk(r);
    return r->status;
}

static int qa_post(int port, const char *path, const char *extra, const char *ctype,
                   const void *body, size_t len, struct qa_resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = qa_send(port, "POST", path, extra, ctype, body, len);
    if (fd < 0)
        return r->status = -1;
    return qa_recv(fd, r);
}

/* A header's value (copied, trimmed) or "" */
static void qa_header(const struct qa_resp *r, const char *name, char *out, size_t cap)
{
    out[0] = 0;
    char want[128];
    snprintf(want, sizeof want, "\r\n%s:", name);
    const char *p = strcasestr(r->head, want);
    if (!p)
        return;
    p += strlen(want);
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, "\r\n");
    snprintf(out, cap, "%.*s", (int)n, p);
}

/* ---- data ---------------------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *qa_b64(const uint8_t *p, size_t n)
{
    char *o = malloc(4 * ((n + 2) / 3) + 1), *w = o;
    for (size_t i = 0; o && i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *w++ = b64[v >> 18];
        *w++ = b64[v >> 12 & 63];
        *w++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? b64[v & 63] : '=';
    }
    if (o)
        *w = 0;
    return o;
}

/* Decodes base64 s, appending to buf (grown). */
static void qa_unb64(const char *s, uint8_t **buf, size_t *len, size_t *cap)
{
    uint32_t acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        const char *at = strchr(b64, *s);
        if (!at)
            continue;
        acc = acc << 6 | (uint32_t)(at - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (*len == *cap) {
                *cap = *cap ? 2 * *cap : 65536;
                *buf = realloc(*buf, *cap);
            }
            (*buf)[(*len)++] = (uint8_t)(acc >> bits);
        }
    }
}

static uint8_t *qa_slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* The question as WAV: espeak-ng speech, or a synthetic voice-like sweep without espeak-ng. */
static uint8_t *qa_question_wav(size_t *n)
{
    char path[600], cmd[800];
    snprintf(path, sizeof path, "%s/question.wav", test_tmpdir());
    snprintf(cmd, sizeof cmd, "espeak-ng -w '%s' 'What is the capital of France?' 2>/dev/null",
             path);
    uint8_t *b = system(cmd) == 0 ? qa_slurp(path, n) : NULL;
    if (b)
        return b;
    fprintf(stderr, "  (no espeak-ng: a synthetic question)\n");
    enum { R = 16000, N = 2 * R };
    static float x[N];
    for (int i = 0; i < N; i++)
        x[i] = 0.3f * sinf(2 * 3.14159265f * (150.0f + 100.0f * (float)i / N) * (float)i / R);
    struct err e;
    return wav_encode_pcm16(&b, n, x, N, R, &e) ? NULL : b;
}

/* JSON of a 200 answer, NULL (and a failure) otherwise. */
static json_t *qa_json(const struct qa_resp *r)
{
    json_error_t je;
    json_t *j = r->body ? json_loads((const char *)r->body, 0, &je) : NULL;
    if (!j)
        test_fail(__FILE__, __LINE__, "status %d, body not JSON: %.300s", r->status,
                  r->body ? (char *)r->body : "");
    return j;
}

/* The audio bytes of a JSON answer (malloc'ed), NULL when none. */
static uint8_t *qa_answer_audio(json_t *j, size_t *n)
{
    const char *data = json_string_value(json_object_get(json_object_get(j, "audio"), "data"));
    uint8_t *buf = NULL;
    size_t cap = 0;
    *n = 0;
    if (data)
        qa_unb64(data, &buf, n, &cap);
    return buf;
}

/* 1 when the response is the JSON error of that status and type. */
static int qa_is_error(const struct qa_resp *r, int status, const char *type)
{
    char want[128];
    snprintf(want, sizeof want, "{\"error\":{\"type\":\"%s\"", type);
    int ok = r->status == status && r->body && strstr((const char *)r->body, want);
    if (!ok)
        fprintf(stderr, "  want %d %s, got %d %.300s\n", status, type, r->status,
                r->body ? (char *)r->body : "");
    return ok;
}

/* ---- SSE ------------------------------------------------------------------------------------ */

struct qa_events {
    char text[65536]; /* transcript deltas put together */
    uint8_t *pcm;     /* audio chunks put together (PCM16 bytes) */
    size_t n_pcm, cap;
    int n_transcript, n_audio, n_done, n_error, n_start;
    json_t *done;
};

static void qa_events_parse(const struct qa_resp *r, struct qa_events *ev)
{
    memset(ev, 0, sizeof *ev);
    const char *p = r->body ? (const char *)r->body : "";
    while (*p) {
        const char *end = strstr(p, "\n\n");
        if (!end)
            break;
        char name[32] = "";
        const char *data = strstr(p, "\ndata: ");
        if (sscanf(p, "event: %31s", name) == 1 && data && data < end) {
            json_t *j = json_loadb(data + 7, (size_t)(end - data - 7), 0, NULL);
            if (!strcmp(name, "start")) {
                ev->n_start++;
            } else if (!strcmp(name, "transcript")) {
                ev->n_transcript++;
                size_t used = strlen(ev->text);
                snprintf(ev->text + used, sizeof ev->text - used, "%s",
                         json_string_value(json_object_get(j, "text")));
            } else if (!strcmp(name, "audio")) {
                ev->n_audio++;
                const char *d = json_string_value(json_object_get(j, "data"));
                if (d)
                    qa_unb64(d, &ev->pcm, &ev->n_pcm, &ev->cap);
            } else if (!strcmp(name, "done")) {
                ev->n_done++;
                ev->done = json_incref(j);
            } else if (!strcmp(name, "error")) {
                ev->n_error++;
            }
            json_decref(j);
        }
        p = end + 2;
    }
}

static void qa_events_free(struct qa_events *ev)
{
    free(ev->pcm);
    json_decref(ev->done);
}

/* The index of the read that brought raw offset off. */
static int qa_read_of(const struct qa_resp *r, size_t off)
{
    for (int i = 0; i < r->n_marks; i++)
        if (off < r->marks[i])
            return i;
    return r->n_marks;
}

/* ---- concurrent questions ---------------------------------------------------------------------
 */

struct qa_job {
    int port, seed, status;
    pthread_t th;
};

static void *qa_job_run(void *arg)
{
    struct qa_job *j = arg;
    char path[128], body[128];
    snprintf(path, sizeof path, "/v1/spoken-qa?seed=%d&max_new_tokens=60", j->seed);
    snprintf(body, sizeof body, "{\"text\": \"question number %d\"}", j->seed);
    struct qa_resp r;
    j->status = qa_post(j->port, path, AUTH, "application/json", body, strlen(body), &r);
    if (j->status == 200 && (!r.body || !strstr((char *)r.body, "\"finish_reason\"")))
        j->status = -2;
    qa_resp_free(&r);
    return NULL;
}

/* ---- tests ------------------------------------------------------------------------------------
 */

/* Uploads: WAV, Ogg, JSON text, JSON base64; Accept audio types; SSE. */
static void qa_check_answers(int port, const uint8_t *wav, size_t wav_n)
{
    struct qa_resp r;
    /* WAV upload, JSON answer with base64 WAV */
    CHECK(qa_post(port, qa_path(""), AUTH, "audio/wav", wav, wav_n, &r) == 200);
    json_t *a = qa_json(&r);
    qa_resp_free(&r);
    if (!a)
        return;
    json_int_t user_tokens = json_integer_value(json_object_get(a, "user_tokens"));
    const char *text = json_string_value(json_object_get(a, "text"));
    json_t *audio = json_object_get(a, "audio");
    json_int_t samples = json_integer_value(json_object_get(audio, "samples"));
    double dur_ms = json_number_value(json_object_get(audio, "duration_ms"));
    CHECK(user_tokens > 0);
    CHECK(text && text[0]);
    CHECK(json_string_value(json_object_get(a, "finish_reason")) != NULL);
    CHECK(json_integer_value(json_object_get(audio, "sample_rate")) == 22050);
    CHECK(!strcmp(json_string_value(json_object_get(audio, "format")), "wav"));
    CHECK(samples > 0);
    CHECK(json_number_value(json_object_get(json_object_get(a, "timings"), "total_ms")) > 0);
    CHECK(json_integer_value(json_object_get(json_object_get(a, "usage"), "audio_tokens")) > 0);
    size_t wn = 0;
    uint8_t *answer_wav = qa_answer_audio(a, &wn);
    CHECK(answer_wav && wn == WAV_HEADER_BYTES + 2 * (size_t)samples);
    struct wav_audio w;
    struct err e;
    if (answer_wav && wav_decode(&w, answer_wav, wn, wn, &e) == 0) {
        CHECK(w.rate == 22050 && w.channels == 1 && w.frames == samples);
        wav_audio_free(&w);
    } else {
        CHECK(!"the answer's WAV decodes");
    }

    /* the same question as base64 JSON: the same answer */
    char *b = qa_b64(wav, wav_n);
    size_t jn = strlen(b) + 256;
    char *jbody = malloc(jn);
    snprintf(jbody, jn,
             "{\"audio\": \"%s\", \"seed\": 2, \"max_new_tokens\": %d, \"temperature\": 1, "
             "\"top_p\": 1, \"top_k\": 0, \"system_prompt\": \"audio\"}",
             b, long_tokens());
    free(b);
    CHECK(qa_post(port, "/v1/spoken-qa", AUTH, "application/json", jbody, strlen(jbody), &r) ==
          200);
    free(jbody);
    json_t *a2 = qa_json(&r);
    qa_resp_free(&r);
    if (a2) {
        CHECK(text && !strcmp(json_string_value(json_object_get(a2, "text")), text));
        size_t wn2 = 0;
        uint8_t *w2 = qa_answer_audio(a2, &wn2);
        CHECK(w2 && answer_wav && wn2 == wn && !memcmp(w2, answer_wav, wn));
        free(w2);
        json_decref(a2);
    }

    /* Ogg Opus upload of the same speech (tokens from lossy audio: about as many) */
    struct wav_audio q;
    uint8_t *ogg = NULL;
    size_t ogg_n = 0;
    REQUIRE(wav_decode(&q, wav, wav_n, wav_n, &e) == 0);
    CHECK(oggenc_encode(&ogg, &ogg_n, q.samples, q.frames, q.rate, 64000, &e) == 0);
    wav_audio_free(&q);
    CHECK(qa_post(port, "/v1/spoken-qa?max_new_tokens=40", AUTH, "audio/ogg", ogg, ogg_n, &r) ==
          200);
    json_t *a3 = qa_json(&r);
    qa_resp_free(&r);
    if (a3) {
        json_int_t ut = json_integer_value(json_object_get(a3, "user_tokens"));
        CHECK(!strcmp(json_string_value(json_object_get(a3, "question")), "audio"));
        CHECK(ut >= user_tokens - 1 && ut <= user_tokens + 1);
        json_decref(a3);
    }
    /* a cut Ogg stream: 400 with the decoder's message */
    CHECK(qa_post(port, "/v1/spoken-qa", AUTH, "audio/ogg", ogg, ogg_n / 2, &r) == 400);
    CHECK(qa_is_error(&r, 400, "bad_audio") && strstr((char *)r.body, "Ogg Opus: "));
    qa_resp_free(&r);
    free(ogg);

    /* JSON text question */
    const char *tq = "{\"text\": \"What is the capital of France?\", \"max_new_tokens\": 50, "
                     "\"greedy\": true}";
    CHECK(qa_post(port, "/v1/spoken-qa", AUTH, "application/json; charset=utf-8", tq, strlen(tq),
                  &r) == 200);
    json_t *a4 = qa_json(&r);
    qa_resp_free(&r);
    if (a4) {
        CHECK(!strcmp(json_string_value(json_object_get(a4, "question")), "text"));
        CHECK(json_integer_value(json_object_get(a4, "user_tokens")) ==
              json_integer_value(json_object_get(json_object_get(a4, "usage"), "prompt_tokens")));
        CHECK(json_integer_value(json_object_get(json_object_get(a4, "usage"), "prompt_tokens")) >
              0);
        CHECK(json_integer_value(json_object_get(json_object_get(a4, "usage"), "text_tokens")) > 0);
        json_decref(a4);
    }

    /* Accept: audio/wav: the very bytes of the JSON's WAV; text and figures in headers */
    CHECK(qa_post(port, qa_path(""), AUTH "Accept: audio/wav\r\n", "audio/x-wav", wav, wav_n, &r) ==
          200);
    char h[16384];
    qa_header(&r, "Content-Type", h, sizeof h);
    CHECK(!strcmp(h, "audio/wav"));
    CHECK(answer_wav && r.len == wn && !memcmp(r.body, answer_wav, wn));
    qa_header(&r, "X-Parley-Text", h, sizeof h);
    /* percent-decoded, the header is the answer text (up to its cap) */
    char dec[8192];
    size_t k = 0;
    for (const char *p = h; *p && k + 1 < sizeof dec; p++) {
        unsigned v;
        if (*p == '%' && sscanf(p + 1, "%2x", &v) == 1) {
            dec[k++] = (char)v;
            p += 2;
        } else {
            dec[k++] = *p;
        }
    }
    dec[k] = 0;
    CHECK(text && !strncmp(dec, text, k) && k > 0);
    qa_header(&r, "X-Parley-Audio", h, sizeof h);
    char want[128];
    snprintf(want, sizeof want, "samples=%lld,", (long long)samples);
    CHECK(strstr(h, want) != NULL);
    qa_header(&r, "Server-Timing", h, sizeof h);
    CHECK(strstr(h, "total;dur=") != NULL);
    qa_resp_free(&r);

    /* Accept: audio/ogg: Ogg Opus whose decoded length is the reported duration */
    CHECK(qa_post(port, qa_path(""), AUTH "Accept: audio/ogg\r\n", "audio/wav", wav, wav_n, &r) ==
          200);
    qa_header(&r, "Content-Type", h, sizeof h);
    CHECK(!strcmp(h, "audio/ogg"));
    struct wav_audio o;
    if (oggopus_decode(&o, r.body, r.len, r.len, &e) == 0) {
        double got_ms = (double)o.frames * 1e3 / o.rate;
        CHECK(o.rate == 48000 && o.channels == 1);
        CHECK_NEAR(got_ms, dur_ms, 25.0);
        wav_audio_free(&o);
    } else {
        test_fail(__FILE__, __LINE__, "the Ogg answer does not decode: %s", e.msg);
    }
    qa_resp_free(&r);
    /* JSON with "format": "ogg" */
    CHECK(qa_post(port, qa_path("format=ogg&"), AUTH, "audio/wav", wav, wav_n, &r) == 200);
    json_t *a5 = qa_json(&r);
    qa_resp_free(&r);
    if (a5) {
        size_t on = 0;
        uint8_t *ob = qa_answer_audio(a5, &on);
        CHECK(!strcmp(json_string_value(json_object_get(json_object_get(a5, "audio"), "format")),
                      "ogg"));
        CHECK(ob && oggopus_sniff(ob, on));
        if (ob && !oggopus_decode(&o, ob, on, on, &e)) {
            CHECK_NEAR((double)o.frames * 1e3 / o.rate, dur_ms, 25.0);
            wav_audio_free(&o);
        } else
            CHECK(!"the Ogg in the JSON answer decodes");
        free(ob);
        json_decref(a5);
    }

    /* SSE: events come before the end; together they are the non-streamed answer */
    CHECK(qa_post(port, qa_path("stream=true&"), AUTH, "audio/wav", wav, wav_n, &r) == 200);
    qa_header(&r, "Content-Type", h, sizeof h);
    CHECK(!strncmp(h, "text/event-stream", 17));
    struct qa_events ev;
    qa_events_parse(&r, &ev);
    CHECK(ev.n_start == 1 && ev.n_done == 1 && ev.n_error == 0);
    CHECK(ev.n_transcript > 1 && ev.n_audio >= 1);
    CHECK(text && !strcmp(ev.text, text));
    CHECK(answer_wav && ev.n_pcm == wn - WAV_HEADER_BYTES &&
          !memcmp(ev.pcm, answer_wav + WAV_HEADER_BYTES, ev.n_pcm));
    CHECK(json_integer_value(json_object_get(json_object_get(ev.done, "audio"), "samples")) ==
          samples);
    const char *start = strstr((char *)r.raw, "event: start");
    const char *first_text = strstr((char *)r.raw, "event: transcript");
    const char *done = strstr((char *)r.raw, "event: done");
    CHECK(start && first_text && done);
    if (start && first_text && done) {
        /* the start and the first words came in earlier reads than the end */
        CHECK(qa_read_of(&r, (size_t)(start - (char *)r.raw)) <
              qa_read_of(&r, (size_t)(done - (char *)r.raw)));
        CHECK(qa_read_of(&r, (size_t)(first_text - (char *)r.raw)) <
              qa_read_of(&r, (size_t)(done - (char *)r.raw)));
    }
    qa_events_free(&ev);
    qa_resp_free(&r);
    free(answer_wav);
    json_decref(a);
}

/* Every bad request, each with its typed error. */
static void qa_check_errors(int port, const uint8_t *wav, size_t wav_n)
{
    struct qa_resp r;
    static const struct {
        const char *path, *ctype, *body, *extra;
        int status;
        const char *type;
    } cases[] = {
        { "/v1/spoken-qa", "text/plain", "hello", AUTH, 415, "unsupported_media" },
        { "/v1/spoken-qa", NULL, "hello", AUTH, 415, "unsupported_media" },
        { "/v1/spoken-qa", "application/json", "{\"text\": ", AUTH, 400, "invalid_json" },
        { "/v1/spoken-qa", "application/json", "[1]", AUTH, 400, "invalid_json" },
        { "/v1/spoken-qa", "application/json", "{}", AUTH, 400, "empty_turn" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"  \\n\"}", AUTH, 400, "empty_turn" },
        { "/v1/spoken-qa", "audio/wav", "", AUTH, 400, "empty_turn" },
        { "/v1/spoken-qa", "application/json", "{\"text\": 3}", AUTH, 400, "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"audio\": \"AAAA\"}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"audio\": \"!!not base64!!\"}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"audio\": \"AAAAAAAA\"}", AUTH, 400,
          "bad_audio" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"temperature\": 5}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"top_p\": 0}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"top_k\": 1.5}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"max_new_tokens\": 0}", AUTH,
          400, "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"max_new_tokens\": 999999}",
          AUTH, 400, "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"seed\": -1}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"greedy\": \"yes\"}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"format\": \"mp3\"}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"system_prompt\": \"spoken\"}",
          AUTH, 400, "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\", \"tmperature\": 1}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa?top_k=abc", "application/json", "{\"text\": \"a\"}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa?stream=maybe", "application/json", "{\"text\": \"a\"}", AUTH, 400,
          "invalid_value" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\"}", AUTH "Accept: text/html\r\n",
          406, "not_acceptable" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\"}", NULL, 401, "unauthorized" },
        { "/v1/spoken-qa", "application/json", "{\"text\": \"a\"}",
          "Authorization: Bearer wrong\r\n", 401, "unauthorized" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qa_post(port, cases[i].path, cases[i].extra, cases[i].ctype, cases[i].body,
                strlen(cases[i].body), &r);
        if (!qa_is_error(&r, cases[i].status, cases[i].type))
            test_fail(__FILE__, __LINE__, "case %zu (%s %s)", i, cases[i].ctype, cases[i].body);
        qa_resp_free(&r);
    }
    /* a truncated WAV: the decoder's message */
    CHECK(qa_post(port, "/v1/spoken-qa", AUTH, "audio/wav", wav, 30, &r) == 400);
    CHECK(qa_is_error(&r, 400, "bad_audio") && strstr((char *)r.body, "WAV: truncated"));
    qa_resp_free(&r);
    CHECK(qa_post(port, "/v1/spoken-qa", AUTH, "audio/wav", "RIFFxxxxWAVEjunk", 16, &r) == 400);
    CHECK(qa_is_error(&r, 400, "bad_audio"));
    qa_resp_free(&r);
    (void)wav_n;
    /* over the body limit (1M in this daemon's config): refused on its Content-Length */
    CHECK(qa_post(port, "/v1/spoken-qa", AUTH, "audio/wav", NULL, (1 << 20) + 16, &r) == 413);
    CHECK(qa_is_error(&r, 413, "body_too_large"));
    qa_resp_free(&r);
    /* GET is not the method */
    char body[1024];
    CHECK(td_get(port, "/v1/spoken-qa", AUTH, body, sizeof body) == 405);
}

/* parleyd's log on stderr */
static void qa_dump_log(const struct td_daemon *d)
{
    static char text[16384];
    fprintf(stderr, "parleyd log:\n%s\n", td_daemon_log(d, text, sizeof text));
}

/* A test's start: the spoken question, and parleyd with [limits] max_sessions and [http]
 * max_body serving. 0 when the test is to end there (skipped, or its failure recorded). */
static int qa_begin(struct td_daemon *d, const char *name, int max_sessions, const char *max_body,
                    uint8_t **wav, size_t *wav_n)
{
    char exe[PATH_MAX];
    if (!td_need("parleyd", exe, sizeof exe))
        return 0;
    if (!td_have_models())
        return test_fail(__FILE__, __LINE__, "golden models missing (tests/golden/*.py)");
    *wav_n = 0;
    *wav = qa_question_wav(wav_n);
    if (!*wav)
        return test_fail(__FILE__, __LINE__, "no spoken question");
    char conf[256];
    snprintf(conf, sizeof conf,
             "[http]\nmax_body = %s\n[auth]\napi_keys = " KEY "\n[limits]\nmax_sessions = %d\n"
             "[engine]\nwarmup = 0\n",
             max_body, max_sessions);
    if (td_daemon_start(d, test_tmpdir(), name, conf, WAIT_MS) == 0)
        return 1;
    test_fail(__FILE__, __LINE__, "parleyd did not become ready");
    qa_dump_log(d);
    free(*wav);
    return 0;
}

TEST(spoken_qa_rest)
{
    struct td_daemon d;
    uint8_t *wav;
    size_t wav_n;
    if (!qa_begin(&d, "qa", 32, "1M", &wav, &wav_n))
        return;
    int port = d.http;
    qa_check_answers(port, wav, wav_n);

    /* bad input while a streamed answer goes on: it still completes */
    int fd = qa_send(port, "POST", qa_path("stream=true&"), AUTH, "audio/wav", wav, wav_n);
    CHECK(fd >= 0);
    qa_check_errors(port, wav, wav_n);
    struct qa_resp r;
    memset(&r, 0, sizeof r);
    CHECK(fd >= 0 && qa_recv(fd, &r) == 200);
    struct qa_events ev;
    qa_events_parse(&r, &ev);
    CHECK(ev.n_done == 1 && ev.n_error == 0 && ev.n_audio > 0);
    qa_events_free(&ev);
    qa_resp_free(&r);
    CHECK(td_metric(port, AUTH, "parley_client_errors_total{type=\"invalid_value\"}") >= 15);
    CHECK(td_metric(port, AUTH, "parley_client_errors_total{type=\"unsupported_media\"}") == 2);

    /* many at once, while health checks keep being answered */
    int n_jobs = td_quick() ? 8 : 32;
    struct qa_job jobs[32];
    for (int i = 0; i < n_jobs; i++) {
        jobs[i] = (struct qa_job){ .port = port, .seed = i + 1 };
        CHECK(pthread_create(&jobs[i].th, NULL, qa_job_run, &jobs[i]) == 0);
    }
    int health_ok = 1, polls = 0;
    for (double end = clock_ms() + 200; clock_ms() < end; clock_sleep_ms(20), polls++)
        health_ok &= td_get(port, "/healthz", NULL, NULL, 0) == 200;
    CHECK(health_ok && polls > 0);
    int ok = 0;
    for (int i = 0; i < n_jobs; i++) {
        pthread_join(jobs[i].th, NULL);
        ok += jobs[i].status == 200;
    }
    CHECK(ok == n_jobs);

    /* a client that leaves mid-answer frees its session: plain and streamed */
    double cancelled0 = td_metric(port, AUTH, "parley_turns_total{reason=\"cancelled\"}");
    fd = qa_send(port, "POST", qa_path(""), AUTH, "audio/wav", wav, wav_n);
    CHECK(fd >= 0);
    clock_sleep_ms(30);
    close(fd);
    fd = qa_send(port, "POST", qa_path("stream=true&"), AUTH, "audio/wav", wav, wav_n);
    char first[256];
    CHECK(fd >= 0 && read(fd, first, sizeof first) > 0); /* the head and the start event */
    close(fd);
    double active = -1;
    for (double end = clock_ms() + WAIT_MS; clock_ms() < end; clock_sleep_ms(20))
        if ((active = td_metric(port, AUTH, "parley_sessions_active")) == 0)
            break;
    CHECK(active == 0);
    /* both answers were stopped early (they run for hundreds of tokens) */
    CHECK(td_metric(port, AUTH, "parley_turns_total{reason=\"cancelled\"}") >= cancelled0 + 1);

    int rc = td_daemon_stop(&d, WAIT_MS);
    CHECK(rc == 0);
    if (rc != 0)
        qa_dump_log(&d);
    free(wav);
}

/* More questions than sessions: 503 server_full with Retry-After, the first one answered. */
TEST(spoken_qa_full)
{
    struct td_daemon d;
    uint8_t *wav;
    size_t wav_n;
    if (!qa_begin(&d, "full", 1, "16M", &wav, &wav_n))
        return;
    /* a streamed answer holds the one session from its start event to its end */
    int refused = 0;
    for (int attempt = 0; attempt < 3 && !refused; attempt++) {
        int fd = qa_send(d.http, "POST", qa_path("stream=true&"), AUTH, "audio/wav", wav, wav_n);
        char first[256];
        CHECK(fd >= 0 && read(fd, first, sizeof first) > 0);
        struct qa_resp r;
        const char *q = "{\"text\": \"am I next?\"}";
        qa_post(d.http, "/v1/spoken-qa", AUTH, "application/json", q, strlen(q), &r);
        if (r.status == 503) {
            refused = 1;
            CHECK(qa_is_error(&r, 503, "server_full"));
            char h[64];
            qa_header(&r, "Retry-After", h, sizeof h);
            CHECK(atoi(h) > 0);
        }
        qa_resp_free(&r);
        struct qa_resp rest;
        memset(&rest, 0, sizeof rest);
        qa_recv(fd, &rest);
        qa_resp_free(&rest);
    }
    CHECK(refused);
    CHECK(td_metric(d.http, AUTH, "parley_sessions_refused_total{reason=\"full\"}") >= 1);
    /* and once it is free again, a question is answered */
    struct qa_resp r;
    const char *q = "{\"text\": \"and now?\", \"max_new_tokens\": 20}";
    CHECK(qa_post(d.http, "/v1/spoken-qa", AUTH, "application/json", q, strlen(q), &r) == 200);
    qa_resp_free(&r);
    CHECK(td_daemon_stop(&d, WAIT_MS) == 0);
    free(wav);
}
