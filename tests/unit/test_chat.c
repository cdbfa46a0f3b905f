/* daemon/chat: protocol sessions driven directly (no sockets) against the engine with the
 * tiny golden models: turns, audio accounting, typed errors. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audio/codec.h"
#include "chat.h"
#include "config.h"
#include "engine/engine.h"
#include "service.h"
#include "test.h"
#include "testd.h"
#include "runtime/clock.h"

#define TC_GOLDEN "build/golden/"
#define TC_MAX    512

struct tc_io {
    pthread_mutex_t mu;
    char *json[TC_MAX];
    int n_json;
    int64_t bin_bytes;
    int n_bin;
    double t_first_bin; /* monotonic seconds of the first binary message, 0 before */
    int close_code;
    int paused, n_pauses;
    int stuck; /* the client reads nothing: the queue looks full */
};

static int tc_send(void *ctx, int binary, const void *data, size_t len)
{
    struct tc_io *io = ctx;
    pthread_mutex_lock(&io->mu);
    if (binary) {
        io->bin_bytes += (int64_t)len;
        if (!io->n_bin++)
            io->t_first_bin = clock_seconds();
    } else if (io->n_json < TC_MAX) {
        io->json[io->n_json] = strndup(data, len);
        io->n_json++;
    }
    pthread_mutex_unlock(&io->mu);
    return 0;
}

static size_t tc_queued(void *ctx)
{
    struct tc_io *io = ctx;
    pthread_mutex_lock(&io->mu);
    size_t n = io->stuck ? (size_t)1 << 40 : 0;
    pthread_mutex_unlock(&io->mu);
    return n;
}

static void tc_close(void *ctx, int code, const char *reason)
{
    struct tc_io *io = ctx;
    (void)reason;
    pthread_mutex_lock(&io->mu);
    io->close_code = code;
    pthread_mutex_unlock(&io->mu);
}

static void tc_pause(void *ctx, int paused)
{
    struct tc_io *io = ctx;
    pthread_mutex_lock(&io->mu);
    io->n_pauses += paused && !io->paused;
    io->paused = paused;
    pthread_mutex_unlock(&io->mu);
}

static void tc_io_free(struct tc_io *io)
{
    for (int i = 0; i < io->n_json; i++)
        free(io->json[i]);
    pthread_mutex_destroy(&io->mu);
}

/* Index of the first message from `from` on that contains needle, waiting up to timeout_s. */
static int tc_wait(struct tc_io *io, int from, const char *needle, double timeout_s)
{
    for (int waited = 0; waited <= (int)(timeout_s * 100); waited++) {
        pthread_mutex_lock(&io->mu);
        for (int i = from; i < io->n_json; i++)
            if (strstr(io->json[i], needle)) {
                pthread_mutex_unlock(&io->mu);
                return i;
            }
        pthread_mutex_unlock(&io->mu);
        clock_sleep_ms(10);
    }
    return -1;
}

/* The close code the session asked for, waiting up to timeout_s for it (the error message
 * that explains a close is sent just before it); 0 when none came. */
static int tc_wait_close(struct tc_io *io, double timeout_s)
{
    int code = 0;
    for (int waited = 0; !code && waited <= (int)(timeout_s * 100); waited++) {
        pthread_mutex_lock(&io->mu);
        code = io->close_code;
        pthread_mutex_unlock(&io->mu);
        if (!code)
            clock_sleep_ms(10);
    }
    return code;
}

static long long tc_field(const char *json, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *p = strstr(json, key);
    return p ? atoll(p + strlen(key)) : -999;
}

static struct backend *tc_be;
static struct engine_model_files tc_files;
static struct engine *tc_eng;
static struct service tc_svc;
static int tc_state;

static struct service *tc_service(void)
{
    if (tc_state)
        return tc_state > 0 ? &tc_svc : NULL;
    tc_state = -1;
    struct err e;
    tc_be = backend_cpu_create(1, &e);
    if (!tc_be ||
        engine_models_load(&tc_files, TC_GOLDEN "lm_tiny_f32.gguf", TC_GOLDEN "stok_a.gguf",
                           TC_GOLDEN "voice_decoder.gguf", tc_be, &e) != 0) {
        test_fail(__FILE__, __LINE__, "golden models: %s", e.msg);
        return NULL;
    }
    struct engine_config ec;
    engine_config_default(&ec);
    ec.max_sessions = 4;
    ec.max_batch = 4;
    if (engine_create(&tc_eng, &tc_files.m, &ec, &e)) {
        test_fail(__FILE__, __LINE__, "engine: %s", e.msg);
        return NULL;
    }
    static struct config c;
    config_defaults(&c);
    c.limits_max_sessions = 3;
    c.limits_max_turn_seconds = 10;
    c.limits_max_audio_rate = 1000;
    c.engine_first_block = 10;
    service_init(&tc_svc, tc_eng, &tc_files.m, &c, "test");
    tc_state = 1;
    return &tc_svc;
}

__attribute__((destructor)) static void tc_cleanup(void)
{
    if (tc_state > 0) {
        engine_destroy(tc_eng);
        service_free(&tc_svc);
        engine_models_free(&tc_files);
    }
    if (tc_be)
        backend_free(tc_be);
}

static struct chat_session *tc_open(struct tc_io *io)
{
    memset(io, 0, sizeof *io);
    pthread_mutex_init(&io->mu, NULL);
    struct service *svc = tc_service();
    if (!svc)
        return NULL;
    struct chat_io cio = { io, tc_send, tc_queued, tc_close, tc_pause };
    int code = 0;
    char why[128];
    return chat_session_open(svc, &cio, &code, why, sizeof why);
}

static void tc_msg(struct chat_session *s, const char *json)
{
    chat_session_message(s, 0, json, strlen(json));
}

/* frames of 20 ms of a tone (16 kHz PCM16) as binary messages; *t0: where the tone is. */
static void tc_tone(struct chat_session *s, int frames, double peak, double hz, int *t0)
{
    for (int f = 0; f < frames; f++, *t0 += 320) {
        unsigned char b[640];
        td_tone_pcm16(b, 320, peak, hz, *t0);
        chat_session_message(s, 1, b, sizeof b);
    }
}

/* session.start with PCM16 at 16 kHz both ways and the rest of the object (sampling, turn
 * detection); the index of session.started, or -1. */
static int tc_start_pcm(struct tc_io *io, struct chat_session *s, const char *rest)
{
    char msg[1024];
    snprintf(msg, sizeof msg,
             "{\"type\":\"session.start\",\"input\":{\"codec\":\"pcm16\",\"rate\":16000},"
             "\"output\":{\"codec\":\"pcm16\",\"rate\":16000},%s}",
             rest);
    tc_msg(s, msg);
    return tc_wait(io, 0, "\"session.started\"", 1);
}

/* A copy of the live settings (malloc'd), to change and apply with tc_apply. */
static struct config *tc_settings(void)
{
    struct config *c = tc_service() ? malloc(sizeof *c) : NULL;
    if (c)
        service_settings(&tc_svc, c);
    return c;
}

/* c applied live, as SIGHUP does; then freed. */
static void tc_apply(struct config *c)
{
    service_reload(&tc_svc, c);
    free(c);
}

#define TC_SAMPLING  "\"sampling\":{\"greedy\":true,\"max_new_tokens\":40,\"seed\":1}"
#define TC_GREEDY(n) "\"sampling\":{\"greedy\":true,\"max_new_tokens\":" #n "}"
#define TC_MANUAL    "\"turn_detection\":{\"type\":\"manual\"}"
#define TC_VAD_200   "\"turn_detection\":{\"type\":\"server_vad\",\"silence_duration_ms\":200}"

TEST(chat_text_turn_pcm16)
{
    struct tc_io io;
    struct chat_session *s = tc_open(&io);
    REQUIRE(s != NULL);
    int i = tc_start_pcm(&io, s, TC_SAMPLING "," TC_MANUAL);
    REQUIRE(i >= 0);
    CHECK(strstr(io.json[i], "\"session_id\":\"") != NULL);
    CHECK(strstr(io.json[i], "\"max_turn_seconds\":10") != NULL);
    tc_msg(s, "{\"type\":\"ping\",\"id\":7}");
    CHECK(tc_wait(&io, 0, "{\"type\":\"pong\",\"id\":7}", 1) >= 0);
    tc_msg(s, "{\"type\":\"input.text\",\"text\":\"Hello there\"}");
    CHECK(tc_wait(&io, 0, "\"input.committed\"", 1) >= 0);
    /* a second text turn while the answer runs is refused */
    tc_msg(s, "{\"type\":\"input.text\",\"text\":\"again\",\"event_id\":\"e1\"}");
    int d = tc_wait(&io, 0, "\"turn.done\"", 20);
    REQUIRE(d >= 0);
    pthread_mutex_lock(&io.mu);
    long long samples = tc_field(io.json[d], "audio_samples");
    CHECK(samples == io.bin_bytes / 2);
    CHECK(tc_field(io.json[d], "turn") == 0);
    fprintf(stderr, "  text turn: %d events, %lld samples in %d messages: %.200s\n", io.n_json,
            samples, io.n_bin, io.json[d]);
    pthread_mutex_unlock(&io.mu);
    int b = tc_wait(&io, 0, "\"busy\"", 0);
    if (b >= 0) /* the answer may be done already when the second turn came */
        CHECK(strstr(io.json[b], "\"event_id\":\"e1\"") != NULL);
    /* the next turn works */
    int n0 = io.n_json;
    tc_msg(s, "{\"type\":\"input.text\",\"text\":\"And now?\"}");
    d = tc_wait(&io, n0, "\"turn.done\"", 20);
    REQUIRE(d >= 0);
    CHECK(tc_field(io.json[d], "turn") == 1);
    chat_session_free(s);
    tc_io_free(&io);
}

TEST(chat_spoken_turn_manual_commit_opus_out)
{
    struct tc_io io;
    struct chat_session *s = tc_open(&io);
    REQUIRE(s != NULL);
    tc_msg(s, "{\"type\":\"session.start\",\"input\":{\"codec\":\"pcm16\",\"rate\":16000},"
              "\"output\":{\"codec\":\"opus\",\"rate\":48000}," TC_SAMPLING
              ",\"turn_detection\":{\"type\":\"manual\"}}");
    REQUIRE(tc_wait(&io, 0, "\"session.started\"", 1) >= 0);
    tc_msg(s, "{\"type\":\"input.commit\"}");
    CHECK(tc_wait(&io, 0, "\"empty_turn\"", 1) >= 0);
    /* 1 s of a tone in 20 ms chunks */
    int t = 0;
    tc_tone(s, 50, 8000, 220, &t);
    tc_msg(s, "{\"type\":\"input.commit\"}");
    int c = tc_wait(&io, 0, "\"input.committed\"", 1);
    REQUIRE(c >= 0);
    CHECK(tc_field(io.json[c], "audio_ms") == 1000);
    CHECK(tc_wait(&io, 0, "\"user.tokenized\"", 10) > c);
    int d = tc_wait(&io, 0, "\"turn.done\"", 20);
    REQUIRE(d >= 0);
    pthread_mutex_lock(&io.mu);
    CHECK(tc_field(io.json[d], "audio_samples") == (long long)io.n_bin * 960);
    fprintf(stderr, "  spoken turn: %d Opus packets: %.300s\n", io.n_bin, io.json[d]);
    pthread_mutex_unlock(&io.mu);
    chat_session_free(s);
    tc_io_free(&io);
}

TEST(chat_typed_errors)
{
    struct tc_io io;
    struct chat_session *s = tc_open(&io);
    REQUIRE(s != NULL);
    unsigned char pkt[4] = { 0xff, 0xff, 0xff, 0xff };
    chat_session_message(s, 1, pkt, sizeof pkt);
    CHECK(tc_wait(&io, 0, "\"not_started\"", 1) >= 0);
    tc_msg(s, "{\"type\":\"input.commit\"}");
    CHECK(tc_wait(&io, 1, "\"not_started\"", 1) >= 0);
    tc_msg(s, "{nope");
    CHECK(tc_wait(&io, 0, "\"invalid_json\"", 1) >= 0);
    tc_msg(s, "[1,2]");
    CHECK(tc_wait(&io, 3, "\"invalid_json\"", 1) >= 0);
    tc_msg(s, "{\"type\":\"dance\",\"event_id\":5}");
    int u = tc_wait(&io, 0, "\"unknown_type\"", 1);
    REQUIRE(u >= 0);
    CHECK(strstr(io.json[u], "\"event_id\":5") != NULL);
    tc_msg(s, "{\"type\":\"session.start\",\"input\":{\"codec\":\"opus\",\"rate\":44100}}");
    int v = tc_wait(&io, 0, "\"invalid_value\"", 1);
    REQUIRE(v >= 0);
    CHECK(strstr(io.json[v], "input.rate") != NULL);
    tc_msg(s, "{\"type\":\"session.start\",\"sampling\":{\"top_p\":\"x\"}}");
    CHECK(tc_wait(&io, v + 1, "sampling.top_p", 1) >= 0);
    tc_msg(s, "{\"type\":\"session.start\",\"system_prompt\":\"spoken\"}");
    CHECK(tc_wait(&io, v + 1, "system_prompt: ", 1) >= 0);
    tc_msg(s, "{\"type\":\"session.start\",\"input\":{\"codec\":\"opus\",\"rate\":16000},"
              "\"output\":{\"codec\":\"pcm16\",\"rate\":24000},\"system_prompt\":\"text\"}");
    int started = tc_wait(&io, 0, "\"session.started\"", 1);
    REQUIRE(started >= 0);
    CHECK(strstr(io.json[started], "\"system_prompt\":\"text\"") != NULL);
    CHECK(tc_wait(&io, 0, "\"server_vad\"", 0) >= 0);
    tc_msg(s, "{\"type\":\"session.start\"}");
    CHECK(tc_wait(&io, 0, "\"already_started\"", 1) >= 0);
    chat_session_message(s, 1, pkt, sizeof pkt);
    CHECK(tc_wait(&io, 0, "\"bad_audio\"", 1) >= 0);
    /* a good packet after the bad one decodes */
    struct err e;
    struct opus_out *o = opus_out_new(16000, 0, &e);
    REQUIRE(o != NULL);
    float pcm[320] = { 0 };
    uint8_t good[1500];
    int len = opus_out_encode(o, good, sizeof good, pcm, &e);
    REQUIRE(len > 0);
    int n0 = io.n_json;
    chat_session_message(s, 1, good, (size_t)len);
    tc_msg(s, "{\"type\":\"session.update\",\"turn_detection\":{\"type\":\"manual\"}}");
    int up = tc_wait(&io, n0, "\"session.updated\"", 1);
    REQUIRE(up >= 0);
    CHECK(up == n0); /* no error for the good packet */
    CHECK(strstr(io.json[up], "\"manual\"") != NULL);
    /* sampling changes between turns; not to more new tokens than the session opened with */
    tc_msg(s, "{\"type\":\"session.update\",\"sampling\":{\"seed\":3,\"temperature\":0.5}}");
    int up2 = tc_wait(&io, up + 1, "\"session.updated\"", 1);
    REQUIRE(up2 > up);
    CHECK(strstr(io.json[up2], "\"seed\":3") != NULL);
    tc_msg(s, "{\"type\":\"session.update\",\"sampling\":{\"max_new_tokens\":2001}}");
    int bad = tc_wait(&io, up2, "\"invalid_value\"", 1);
    CHECK(bad > up2);
    CHECK(bad < 0 || strstr(io.json[bad], "max_new") != NULL);
    opus_out_free(o);
    chat_session_too_big(s, 5000000);
    CHECK(tc_wait(&io, 0, "\"message_too_big\"", 1) >= 0);
    CHECK(tc_wait_close(&io, 2) == 1009);
    chat_session_free(s);
    tc_io_free(&io);
}

TEST(chat_server_full)
{
    struct tc_io io[4];
    struct chat_session *s[4];
    for (int i = 0; i < 3; i++) {
        s[i] = tc_open(&io[i]);
        REQUIRE(s[i] != NULL);
    }
    memset(&io[3], 0, sizeof io[3]);
    pthread_mutex_init(&io[3].mu, NULL);
    struct chat_io cio = { &io[3], tc_send, tc_queued, tc_close, tc_pause };
    int code = 0;
    char why[128] = "";
    s[3] = chat_session_open(tc_service(), &cio, &code, why, sizeof why);
    CHECK(s[3] == NULL);
    CHECK(code == 1013);
    CHECK(strstr(why, "server full: 3 sessions") != NULL);
    CHECK(tc_wait(&io[3], 0, "\"server_full\"", 0) >= 0);
    for (int i = 0; i < 3; i++) {
        chat_session_free(s[i]);
        tc_io_free(&io[i]);
    }
    tc_io_free(&io[3]);
}

/* A 200 Hz tone of amp (of full scale) in 20 ms messages. */
static void tc_pcm(struct chat_session *s, int frames, double amp, int *t0)
{
    tc_tone(s, frames, amp * 32767, 200, t0);
}

/* Server VAD: speech during an answer cancels it (barge-in); the speech becomes the next
 * turn once its silence ends it. Then response.cancel with the played position. */
TEST(chat_barge_in_and_cancel)
{
    struct tc_io io;
    struct chat_session *s = tc_open(&io);
    REQUIRE(s != NULL);
    REQUIRE(tc_start_pcm(&io, s, TC_GREEDY(2000) "," TC_VAD_200) >= 0);
    int t = 0;
    tc_pcm(s, 10, 0.0001, &t); /* quiet: nothing happens */
    CHECK(tc_wait(&io, 0, "\"speech.started\"", 0) < 0);
    tc_msg(s, "{\"type\":\"input.text\",\"text\":\"Tell me a long story\"}");
    REQUIRE(tc_wait(&io, 0, "\"input.committed\"", 1) >= 0);
    tc_pcm(s, 25, 0.3, &t); /* speech: barge-in */
    tc_pcm(s, 20, 0.0, &t); /* 400 ms of silence: the turn ends */
    int st = tc_wait(&io, 0, "\"speech.started\"", 1);
    CHECK(st >= 0);
    if (st >= 0)
        CHECK(tc_field(io.json[st], "audio_ms") == 200);
    int d0 = tc_wait(&io, 0, "\"turn.done\"", 20);
    REQUIRE(d0 >= 0);
    CHECK(strstr(io.json[d0], "\"reason\":\"cancelled\"") != NULL);
    CHECK(strstr(io.json[d0], "\"heard_audio_tokens\"") != NULL);
    CHECK(tc_wait(&io, 0, "\"speech.stopped\"", 1) >= 0);
    int c1 = tc_wait(&io, d0, "\"input.committed\"", 5);
    REQUIRE(c1 >= 0);
    /* 300 ms of padding (200 ms of quiet there), 500 ms of speech, 200 ms of hangover */
    CHECK(tc_field(io.json[c1], "audio_ms") == 900);
    CHECK(tc_field(io.json[c1], "turn") == 1);
    /* the spoken turn is answered; cancel it by the client with its played position */
    REQUIRE(tc_wait(&io, c1, "\"user.tokenized\"", 10) > c1);
    tc_msg(s, "{\"type\":\"response.cancel\",\"played_samples\":0}");
    int d1 = tc_wait(&io, c1, "\"turn.done\"", 20);
    REQUIRE(d1 >= 0);
    CHECK(tc_field(io.json[d1], "turn") == 1);
    fprintf(stderr, "  barge-in: %.160s\n  after cancel: %.300s\n", io.json[d0], io.json[d1]);
    /* a text turn works after it */
    int n0 = io.n_json;
    tc_msg(s, "{\"type\":\"session.update\",\"sampling\":{\"max_new_tokens\":5}}");
    tc_msg(s, "{\"type\":\"input.text\",\"text\":\"Short?\"}");
    tc_msg(s, "{\"type\":\"response.cancel\",\"played_ms\":0}");
    CHECK(tc_wait(&io, n0, "\"turn.done\"", 20) >= 0);
    chat_session_free(s);
    tc_io_free(&io);
}

/* The answer is generated before the listener has heard it: a response.cancel after its
 * turn.done, or speech (server VAD) while it still plays, trims the conversation to what was
 * heard (turn.truncated). */
TEST(chat_cancel_after_done_trims_history)
{
    struct tc_io io;
    struct chat_session *s = tc_open(&io);
    REQUIRE(s != NULL);
    REQUIRE(tc_start_pcm(&io, s, TC_GREEDY(300) "," TC_VAD_200) >= 0);
    tc_msg(s, "{\"type\":\"input.text\",\"text\":\"Hello there\"}");
    int d = tc_wait(&io, 0, "\"turn.done\"", 20);
    REQUIRE(d >= 0);
    REQUIRE(tc_field(io.json[d], "audio_samples") > 16000 / 10); /* the answer speaks */
    CHECK(strstr(io.json[d], "\"reason\":\"cancelled\"") == NULL);
    /* the client played 1 sample of it */
    tc_msg(s, "{\"type\":\"response.cancel\",\"played_samples\":1}");
    int tr = tc_wait(&io, d, "\"turn.truncated\"", 2);
    REQUIRE(tr > d);
    CHECK(tc_field(io.json[tr], "turn") == 0);
    CHECK(tc_field(io.json[tr], "heard_audio_tokens") == 1);
    /* the second answer, barged in on by speech while it plays: by the server's count (real
     * time since its first audio) it still does when it was generated faster than real time,
     * which a slow build (TSan) may not do */
    int n0 = io.n_json;
    pthread_mutex_lock(&io.mu);
    io.n_bin = 0;
    pthread_mutex_unlock(&io.mu);
    tc_msg(s, "{\"type\":\"input.text\",\"text\":\"Hello there\"}");
    int d2 = tc_wait(&io, n0, "\"turn.done\"", 20);
    REQUIRE(d2 >= 0);
    long long samples = tc_field(io.json[d2], "audio_samples");
    double now = clock_seconds();
    pthread_mutex_lock(&io.mu);
    double since = now - io.t_first_bin;
    pthread_mutex_unlock(&io.mu);
    int playing = since < 0.8 * (double)samples / 16000;
    fprintf(stderr, "  answer of %lld samples (16 kHz), %.3f s after its first audio%s\n", samples,
            since, playing ? "" : ": played already, barge-in not exercised");
    int t = 0;
    tc_pcm(s, 10, 0.3, &t);
    int tr2 = tc_wait(&io, d2, "\"turn.truncated\"", 2);
    CHECK(!playing || tr2 > d2);
    if (playing && tr2 > d2) {
        CHECK(tc_field(io.json[tr2], "turn") == 1);
        CHECK(tc_field(io.json[tr2], "played_samples") < tc_field(io.json[d2], "audio_samples"));
    }
    chat_session_free(s);
    tc_io_free(&io);
}

/* A client that does not read is paced, then dropped (slow_reader, 1008); a silent one times
 * out (idle_timeout, 1000). Limits changed live, as SIGHUP does. */
TEST(chat_slow_reader_and_idle)
{
    struct tc_io io;
    struct chat_session *s = tc_open(&io);
    REQUIRE(s != NULL);
    struct config *c = tc_settings(), *keep = tc_settings();
    REQUIRE(c && keep);
    c->limits_slow_reader_seconds = 1;
    c->limits_idle_timeout = 1;
    tc_apply(c);
    REQUIRE(tc_start_pcm(&io, s, TC_GREEDY(400)) >= 0);
    pthread_mutex_lock(&io.mu);
    io.stuck = 1;
    pthread_mutex_unlock(&io.mu);
    tc_msg(s, "{\"type\":\"input.text\",\"text\":\"Talk to me\"}");
    int e = tc_wait(&io, 0, "\"slow_reader\"", 10);
    CHECK(e >= 0);
    CHECK(tc_wait_close(&io, 2) == 1008);
    chat_session_free(s);
    tc_io_free(&io);

    s = tc_open(&io);
    REQUIRE(s != NULL);
    CHECK(tc_wait(&io, 0, "\"idle_timeout\"", 5) >= 0);
    CHECK(tc_wait_close(&io, 2) == 1000);
    chat_session_free(s);
    tc_io_free(&io);
    tc_apply(keep);
}

/* Incoming flow control: audio that arrives faster than the speech tokenizer takes it (1.5 s
 * in one message, the limit at 50 ms) pauses reading until the engine has caught up. */
TEST(chat_input_flow_control)
{
    struct config *c = tc_settings(), *keep = tc_settings();
    REQUIRE(c && keep);
    c->limits_max_input_backlog_ms = 50;
    tc_apply(c);
    struct tc_io io;
    struct chat_session *s = tc_open(&io);
    REQUIRE(s != NULL);
    REQUIRE(tc_start_pcm(&io, s, TC_GREEDY(5) "," TC_MANUAL) >= 0);
    enum { N = 24000 };
    static unsigned char pcm[2 * N];
    for (int i = 0; i < N; i++) {
        int16_t v = (int16_t)(6000 * sin(0.05 * i));
        pcm[2 * i] = (unsigned char)(v & 0xff);
        pcm[2 * i + 1] = (unsigned char)((uint16_t)v >> 8);
    }
    /* the engine's one voice worker is busy with another session's 9 s of audio */
    struct engine_session_options o;
    engine_session_options_default(&o);
    o.max_user_seconds = 20;
    struct engine_session *busy;
    struct err e;
    REQUIRE(engine_open(tc_eng, &o, &busy, &e) == ENGINE_OK);
    static float other[9 * 16000];
    for (int i = 0; i < 9 * 16000; i++)
        other[i] = 0.2f * (float)sin(0.031 * i);
    CHECK(engine_push_audio(busy, other, 9 * 16000, &e) == ENGINE_OK);
    chat_session_message(s, 1, pcm, sizeof pcm);
    pthread_mutex_lock(&io.mu);
    int paused_once = io.n_pauses > 0;
    pthread_mutex_unlock(&io.mu);
    CHECK(paused_once);
    int resumed = 0;
    for (int i = 0; i < 500 && !resumed; i++) {
        pthread_mutex_lock(&io.mu);
        resumed = !io.paused;
        pthread_mutex_unlock(&io.mu);
        clock_sleep_ms(10);
    }
    CHECK(resumed);
    int err = tc_wait(&io, 0, "\"error\"", 0);
    CHECK(err < 0); /* not an error: only a pause */
    if (err >= 0)
        fprintf(stderr, "  %s\n", io.json[err]);
    chat_session_free(s);
    engine_close(busy);
    tc_io_free(&io);
    tc_apply(keep);
}

/* limits.max_turn_seconds commits the turn as it is (turn_too_long); audio faster than
 * limits.max_audio_rate x real time pauses reading (too_fast). */
TEST(chat_turn_and_rate_limits)
{
    struct config *c = tc_settings(), *keep = tc_settings();
    REQUIRE(c && keep);
    c->limits_max_turn_seconds = 1;
    c->limits_max_audio_rate = 1;
    tc_apply(c);
    struct tc_io io;
    struct chat_session *s = tc_open(&io);
    REQUIRE(s != NULL);
    REQUIRE(tc_start_pcm(&io, s, TC_GREEDY(5) "," TC_MANUAL) >= 0);
    int t = 0;
    tc_pcm(s, 150, 0.2, &t); /* 3 s at once */
    int e = tc_wait(&io, 0, "\"turn_too_long\"", 1);
    CHECK(e >= 0);
    int c0 = tc_wait(&io, 0, "\"input.committed\"", 1);
    CHECK(c0 > e);
    if (c0 >= 0)
        CHECK(tc_field(io.json[c0], "audio_ms") == 1000);
    CHECK(tc_wait(&io, 0, "\"too_fast\"", 1) >= 0);
    pthread_mutex_lock(&io.mu);
    CHECK(io.paused == 1);
    pthread_mutex_unlock(&io.mu);
    CHECK(tc_wait(&io, 0, "\"turn.done\"", 20) >= 0);
    chat_session_free(s);
    tc_io_free(&io);
    tc_apply(keep);
}
