/*
 * Streaming token-to-wave tests. Reference mode against the PyTorch replay of the official
 * client + token2wav bookkeeping in tests/golden/voice_torch.py (the same per-call noise,
 * looked up by the call's frame count): chunk lengths exact, samples within 1e-3, for the
 * paper and main schedules and the Q1 / Q2 endings. Clean mode: no lost audio (samples =
 * 256 × mel frames of the whole answer) under several schedules, prompt caps and endings;
 * and the capped prompt's departure from the uncapped mel (printed with
 * PARLEY_GOLDEN_VERBOSE=1; the README quotes it).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "test.h"
#include "voice/t2w.h"

#define TG_DEC "build/golden/voice_decoder.gguf"
#define TG_REF "build/golden/voice_torch.gguf"
#define TG_CMD "/usr/bin/python3 tests/golden/voice_torch.py build/golden"

TEST(t2w_schedule_parse_cases)
{
    struct t2w_config c;
    struct err e;
    t2w_config_default(&c);
    CHECK(t2w_schedule_parse(&c, "main", &e) == 0 && c.n_schedule == 5 && c.schedule[4] == 200);
    CHECK(t2w_schedule_parse(&c, "paper", &e) == 0 && c.n_schedule == 2 && c.schedule[1] == 20);
    CHECK(t2w_schedule_parse(&c, "10,20,40", &e) == 0 && c.n_schedule == 3 && c.schedule[2] == 40);
    CHECK(t2w_schedule_parse(&c, "30", &e) == 0 && c.n_schedule == 1 && c.schedule[0] == 30);
    static const char *bad[] = {
        "",  "x",     "10,", "10,,20", "0",
        "4", "10;20", "-10", "10 20",  "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e.msg[0] = 0;
        if (!CHECK(t2w_schedule_parse(&c, bad[i], &e) == -1))
            printf("    accepted '%s'\n", bad[i]);
        CHECK(e.msg[0] != 0);
    }
}

struct tg_ctx {
    const struct gguf_file *ref;
};

static const float *tg_lookup(void *ctx, const char *kind, int64_t frames)
{
    struct tg_ctx *c = ctx;
    char key[64];
    snprintf(key, sizeof key, "t2w_noise.%s.%lld", kind, (long long)frames);
    const struct tensor *t = gguf_tensor(c->ref, key);
    if (!t)
        test_fail(__FILE__, __LINE__, "no %s in the golden file", key);
    return t ? t->data : NULL;
}

static const float *tg_flow_noise(void *ctx, int64_t frames)
{
    return tg_lookup(ctx, "flow", frames);
}

static const float *tg_src_noise(void *ctx, int64_t frames)
{
    return tg_lookup(ctx, "src", frames);
}

static int tg_verbose(void)
{
    const char *v = getenv("PARLEY_GOLDEN_VERBOSE");
    return v && *v && *v != '0';
}

struct tg_models {
    struct gguf_file dec, ref;
    struct flow_model flow;
    struct hift_model hift;
};

static void tg_close(struct tg_models *m)
{
    flow_free(&m->flow);
    hift_free(&m->hift);
    gguf_close(&m->dec);
    gguf_close(&m->ref);
}

/* 1 with every model open; 0 (a failure reported, nothing left open) otherwise. */
static int tg_open(struct tg_models *m)
{
    struct err e;
    memset(m, 0, sizeof *m);
    if (gguf_open(&m->dec, TG_DEC, &e) || gguf_open(&m->ref, TG_REF, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s`", e.msg, TG_CMD);
        tg_close(m);
        return 0;
    }
    if (flow_load(&m->flow, &m->dec, &e) || hift_load(&m->hift, &m->dec, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        tg_close(m);
        return 0;
    }
    return 1;
}

static int64_t tg_ints(const struct gguf_file *f, const char *key, int *out, int64_t max)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    int64_t n = 0;
    for (; kv && n < (int64_t)kv->count && n < max; n++) {
        int64_t v = 0;
        gguf_array_i64(kv, (uint64_t)n, &v);
        out[n] = (int)v;
    }
    return n;
}

/* Runs a stream (ids >= 0 audio, -1 text) through t; appends every chunk to wave (its length
 * into lens[]). Returns the number of chunks, or -1. */
static int tg_run(struct t2w *t, const int *stream, int64_t n, int end_by_user, float *wave,
                  int64_t *n_wave, int64_t *lens, int max_chunks)
{
    struct err e;
    int chunks = 0;
    *n_wave = 0;
    for (int64_t i = 0; i <= n; i++) {
        int rc = i == n           ? t2w_end(t, end_by_user, &e)
                 : stream[i] >= 0 ? t2w_push_audio(t, stream[i], &e)
                                  : t2w_push_text(t, &e);
        if (rc) {
            test_fail(__FILE__, __LINE__, "id %lld: %s", (long long)i, e.msg);
            return -1;
        }
        if (t->n_out > 0) {
            if (chunks < max_chunks)
                lens[chunks] = t->n_out;
            chunks++;
            memcpy(wave + *n_wave, t->out, sizeof(float) * (size_t)t->n_out);
            *n_wave += t->n_out;
        }
    }
    return chunks;
}

TEST(t2w_reference_mode_golden)
{
    struct tg_models m;
    if (!tg_open(&m))
        return;
    int stream[256], cases_n;
    int64_t n = tg_ints(&m.ref, "t2w.stream", stream, 256);
    const struct gguf_kv *cases = gguf_find(&m.ref, "t2w.cases");
    cases_n = cases ? (int)cases->count : 0;
    CHECK(cases_n == 4);
    float *wave = malloc(sizeof(float) * 400000);
    struct tg_ctx ctx = { &m.ref };
    for (int ci = 0; ci < cases_n; ci++) {
        struct gguf_str nm = gguf_array_str(cases, (uint64_t)ci);
        char name[64], key[96];
        snprintf(name, sizeof name, "%.*s", (int)nm.len, nm.ptr);
        struct t2w_config cfg;
        t2w_config_default(&cfg);
        cfg.mode = T2W_MODE_REFERENCE;
        snprintf(key, sizeof key, "%s.schedule", name);
        cfg.n_schedule = (int)tg_ints(&m.ref, key, cfg.schedule, T2W_MAX_SCHEDULE);
        cfg.max_tokens = 80;
        cfg.flow_noise = tg_flow_noise;
        cfg.source_noise = tg_src_noise;
        cfg.noise_ctx = &ctx;
        int64_t by_user = 1;
        snprintf(key, sizeof key, "%s.end_by_user", name);
        struct err e;
        gguf_get_i64(&m.ref, key, &by_user, &e);
        int want_lens[32];
        snprintf(key, sizeof key, "%s.chunk_lens", name);
        int64_t n_chunks = tg_ints(&m.ref, key, want_lens, 32);
        snprintf(key, sizeof key, "%s.wave", name);
        const struct tensor *wt = gguf_tensor(&m.ref, key);
        struct t2w t;
        if (!CHECK(wt != NULL) || t2w_init(&t, &m.flow, &m.hift, &cfg, NULL, &e)) {
            test_fail(__FILE__, __LINE__, "%s: %s", name, wt ? e.msg : "no wave");
            continue;
        }
        int64_t lens[32], n_wave;
        int got = tg_run(&t, stream, n, (int)by_user, wave, &n_wave, lens, 32);
        if (!CHECK(got == n_chunks))
            printf("    %s: %d chunks, reference %lld\n", name, got, (long long)n_chunks);
        for (int i = 0; i < got && i < n_chunks; i++)
            if (!CHECK(lens[i] == want_lens[i]))
                printf("    %s chunk %d: %lld samples, reference %d\n", name, i, (long long)lens[i],
                       want_lens[i]);
        /* the mel every call handed back (the prompt of the next, with Q4's extra frames) */
        snprintf(key, sizeof key, "%s.mel", name);
        const struct tensor *mt = gguf_tensor(&m.ref, key);
        if (CHECK(mt != NULL) && CHECK(mt->ne[0] == t.n_hist)) {
            float *mel = malloc(sizeof(float) * (size_t)(80 * t.n_hist));
            for (int64_t c = 0; c < 80; c++)
                for (int64_t j = 0; j < t.n_hist; j++)
                    mel[c * t.n_hist + j] = t.mel_hist[j * 80 + c];
            CHECK_ARRAY_NEAR(mel, (const float *)mt->data, 80 * t.n_hist, 1e-3);
            if (tg_verbose())
                printf("  %s: mel %lld frames, max |diff| %.3g\n", name, (long long)t.n_hist,
                       test_max_abs_diff(mel, (const float *)mt->data, 80 * t.n_hist, NULL));
            free(mel);
        }
        /* samples: a last-bit difference in F0 integrates into the NSF phase over a call
         * (~1e-3 rad per harmonic after 35k samples), so long chunks get 5e-3 */
        if (CHECK(n_wave == tensor_nelements(wt))) {
            CHECK_ARRAY_NEAR(wave, (const float *)wt->data, n_wave, 5e-3);
            if (tg_verbose()) {
                printf("  %s: %d chunks, %lld samples, max |diff| %.3g (per chunk:", name, got,
                       (long long)n_wave,
                       test_max_abs_diff(wave, (const float *)wt->data, n_wave, NULL));
                int64_t o = 0;
                for (int i = 0; i < got && i < 32; i++) {
                    printf(" %.2g",
                           test_max_abs_diff(wave + o, (const float *)wt->data + o, lens[i], NULL));
                    o += lens[i];
                }
                printf(")\n");
            }
        }
        t2w_free(&t);
    }
    free(wave);
    tg_close(&m);
}

/* The mel of the whole answer from a clean run: the state's history. */
static void tg_clean_run(struct tg_models *m, const int *stream, int64_t n, const char *sched,
                         int cap, int by_user, float *mel_out, int64_t *n_mel, int64_t *n_wave,
                         int64_t *n_audio)
{
    struct t2w_config cfg;
    struct err e;
    t2w_config_default(&cfg);
    cfg.mode = T2W_MODE_CLEAN;
    cfg.prompt_cap = cap;
    cfg.max_tokens = 400;
    t2w_schedule_parse(&cfg, sched, &e);
    struct t2w t;
    *n_mel = *n_wave = 0;
    if (t2w_init(&t, &m->flow, &m->hift, &cfg, NULL, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        return;
    }
    float *wave = malloc(sizeof(float) * 256 * 3000);
    int64_t lens[512];
    tg_run(&t, stream, n, by_user, wave, n_wave, lens, 512);
    if (mel_out)
        memcpy(mel_out, t.mel_hist, sizeof(float) * (size_t)(t.n_hist * 80));
    *n_mel = t.n_hist;
    *n_audio = t.n_tokens;
    free(wave);
    t2w_free(&t);
}

TEST(t2w_clean_mode_loses_nothing)
{
    struct tg_models m;
    if (!tg_open(&m))
        return;
    const int quick = getenv("PARLEY_TEST_QUICK") != NULL;
    int stream[200];
    int64_t n = quick ? 90 : 200, n_audio_ids = 0;
    for (int64_t i = 0; i < n; i++) {
        stream[i] = (i % 39) < 13 ? -1 : (int)((i * 7919) % m.flow.hp.vocab);
        n_audio_ids += stream[i] >= 0;
    }
    static const struct {
        const char *sched;
        int cap, by_user;
    } runs[] = { { "paper", 0, 1 },     { "paper", 0, 0 },  { "main", 0, 1 },
                 { "10,20,40", 40, 0 }, { "25,50", 30, 1 }, { "10", 20, 1 } };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        int64_t n_mel, n_wave, n_audio;
        tg_clean_run(&m, stream, n, runs[r].sched, runs[r].cap, runs[r].by_user, NULL, &n_mel,
                     &n_wave, &n_audio);
        int64_t T = flow_mel_len(&m.flow.hp, n_audio_ids);
        CHECK(n_audio == n_audio_ids);
        CHECK(n_mel == T);
        if (!CHECK(n_wave == 256 * T))
            printf("    %s cap %d: %lld samples, want %lld\n", runs[r].sched, runs[r].cap,
                   (long long)n_wave, (long long)(256 * T));
    }
    tg_close(&m);
}

TEST(t2w_prompt_cap_departure)
{
    struct tg_models m;
    if (!tg_open(&m))
        return;
    const int quick = getenv("PARLEY_TEST_QUICK") != NULL;
    int64_t n = quick ? 80 : 160;
    int stream[160];
    for (int64_t i = 0; i < n; i++)
        stream[i] = (int)((i * 7919 + 13) % m.flow.hp.vocab);
    int64_t T = flow_mel_len(&m.flow.hp, n);
    float *ref = malloc(sizeof(float) * (size_t)(T * 80)),
          *cap = malloc(sizeof(float) * (size_t)(T * 80));
    int64_t n_ref, n_cap, nw, na;
    tg_clean_run(&m, stream, n, "paper", 0, 1, ref, &n_ref, &nw, &na);
    static const int caps[] = { 20, 40, 60 };
    for (int c = 0; c < 3; c++) {
        tg_clean_run(&m, stream, n, "paper", caps[c], 1, cap, &n_cap, &nw, &na);
        REQUIRE(n_cap == n_ref && n_ref == T);
        double peak = 0, se = 0, sr = 0;
        for (int64_t i = 0; i < T * 80; i++) {
            double d = (double)cap[i] - ref[i];
            peak = fmax(peak, fabs(d));
            se += d * d;
            sr += (double)ref[i] * ref[i];
        }
        /* capped and uncapped calls agree on the frames both can see; the departure is the
         * effect of the lost context: bounded, never a blow-up */
        CHECK(sqrt(se / sr) < 1.0);
        if (tg_verbose())
            printf("  cap %d tokens, %lld-token answer (paper schedule): mel max |diff| %.3g, "
                   "relative RMS %.3g\n",
                   caps[c], (long long)n, peak, sqrt(se / sr));
    }
    free(ref);
    free(cap);
    tg_close(&m);
}
