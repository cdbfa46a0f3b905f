/* Engine: sessions, turns, batching, cancel, limits, against the components run by hand. */
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "lm/chat.h"
#include "test.h"
#include "runtime/clock.h"

#define GOLDEN "build/golden/"
#define GEN_CMD                                                                   \
    "/usr/bin/python3 tests/golden/lm_torch.py build/golden (and stok_torch.py, " \
    "voice_torch.py)"

static struct backend *te_be;
static struct engine_model_files te_files;
static int te_loaded;

/* Loads the tiny models once for all engine tests. */
static int te_models(void)
{
    if (te_loaded)
        return te_loaded > 0;
    struct err e;
    te_loaded = -1;
    te_be = backend_cpu_create(1, &e);
    if (!te_be) {
        test_fail(__FILE__, __LINE__, "backend: %s", e.msg);
        return 0;
    }
    if (engine_models_load(&te_files, GOLDEN "lm_tiny_f32.gguf", GOLDEN "stok_a.gguf",
                           GOLDEN "voice_decoder.gguf", te_be, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (run %s)", e.msg, GEN_CMD);
        return 0;
    }
    te_loaded = 1;
    return 1;
}

__attribute__((destructor)) static void te_cleanup(void)
{
    if (te_loaded > 0)
        engine_models_free(&te_files);
    if (te_be)
        backend_free(te_be);
}

static void te_opts(struct engine_session_options *o, int max_new)
{
    engine_session_options_default(o);
    o->sampling.greedy = 1;
    o->sampling.max_new = max_new;
    o->max_user_seconds = 10;
}

/* Everything one turn produced. */
struct te_turn {
    int32_t ids[1024];
    int64_t n_ids;
    float *pcm;
    int64_t n_pcm;
    char text[8192];
    size_t n_text;
    enum engine_done_reason reason;
    int64_t user_tokens, heard;
    int n_errors, pcm_gap;
    struct engine_timings t;
};

static int te_drain(struct engine_session *s, struct te_turn *t)
{
    free(t->pcm);
    memset(t, 0, sizeof *t);
    struct engine_event ev;
    for (;;) {
        if (!engine_next_event(s, &ev, 30.0))
            return -1;
        switch (ev.type) {
        case ENGINE_EV_USER_TOKENIZED: t->user_tokens = ev.n_tokens; break;
        case ENGINE_EV_TRANSCRIPT:
            if (t->n_text + (size_t)ev.n_text < sizeof t->text) {
                memcpy(t->text + t->n_text, ev.text, (size_t)ev.n_text);
                t->n_text += (size_t)ev.n_text;
            }
            break;
        case ENGINE_EV_AUDIO:
            if (ev.offset != t->n_pcm)
                t->pcm_gap = 1;
            t->pcm = realloc(t->pcm, (size_t)(t->n_pcm + ev.n_pcm) * sizeof *t->pcm);
            memcpy(t->pcm + t->n_pcm, ev.pcm, (size_t)ev.n_pcm * sizeof *t->pcm);
            t->n_pcm += ev.n_pcm;
            break;
        case ENGINE_EV_ERROR: t->n_errors++; break;
        case ENGINE_EV_TURN_DONE:
            t->reason = ev.reason;
            t->heard = ev.heard_audio_tokens;
            t->t = ev.t;
            t->n_ids = ev.n_ids < 1024 ? ev.n_ids : 1024;
            if (t->n_ids > 0)
                memcpy(t->ids, ev.ids, (size_t)t->n_ids * sizeof *t->ids);
            engine_event_clear(&ev);
            return 0;
        }
        engine_event_clear(&ev);
    }
}

static void te_audio(float *x, int64_t n, int seed)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.3f * sinf(0.01f * (float)(i * (seed + 3))) + 0.05f * sinf(0.37f * (float)i);
}

static struct engine *te_engine(int workers, int max_sessions)
{
    struct engine_config c;
    engine_config_default(&c);
    c.n_workers = workers;
    c.max_sessions = max_sessions;
    c.max_batch = max_sessions;
    struct engine *eng = NULL;
    struct err e;
    if (engine_create(&eng, &te_files.m, &c, &e) != 0)
        test_fail(__FILE__, __LINE__, "engine_create: %s", e.msg);
    return eng;
}

/* Free sampling (temperature 1, no top-k / top-p cut): answers that run long and vary. */
static void te_sampled_opts(struct engine_session_options *o, int max_new)
{
    te_opts(o, max_new);
    o->sampling.greedy = 0;
    o->sampling.temperature = 1.0f;
    o->sampling.top_k = 0;
    o->sampling.top_p = 1.0f;
}

/* Starts a text turn on s. */
static void te_ask(struct engine_session *s, const char *text)
{
    struct err e;
    CHECK(engine_push_text(s, text, &e) == ENGINE_OK);
    CHECK(engine_commit(s, &e) == ENGINE_OK);
}

/* One text turn on a session of its own, opened and closed around it. */
static void te_text_turn(struct engine *eng, const struct engine_session_options *o,
                         const char *text, struct te_turn *t)
{
    struct err e;
    struct engine_session *s;
    REQUIRE(engine_open(eng, o, &s, &e) == ENGINE_OK);
    te_ask(s, text);
    CHECK(te_drain(s, t) == 0);
    engine_close(s);
}

/* Reads events until n carried answer output (audio; transcript too unless audio_only) or the
 * turn ended; 1 when it ended. */
static int te_wait_output(struct engine_session *s, int n, int audio_only)
{
    struct engine_event ev;
    int got = 0, done = 0;
    while (got < n && !done && engine_next_event(s, &ev, 10.0)) {
        got += ev.type == ENGINE_EV_AUDIO || (!audio_only && ev.type == ENGINE_EV_TRANSCRIPT);
        done = ev.type == ENGINE_EV_TURN_DONE;
        engine_event_clear(&ev);
    }
    return done;
}

static void te_turns_free(struct te_turn *t, int n)
{
    for (int i = 0; i < n; i++)
        free(t[i].pcm);
    free(t);
}

/* The reference pipeline by hand: tokenizer -> template -> LM greedy -> t2w (clean). */
TEST(engine_turn_equals_components)
{
    if (!te_models())
        return;
    const struct engine_models *m = &te_files.m;
    const struct lm_hparams *hp = &m->lm->hp;
    struct err e;
    int64_t n = 24000; /* 1.5 s at 16 kHz */
    float *pcm = malloc((size_t)n * sizeof *pcm);
    te_audio(pcm, n, 1);
    int max_new = 60;

    /* by hand */
    int32_t *codes = NULL;
    int64_t n_codes = 0;
    REQUIRE(stok_tokenize(m->stok, NULL, &codes, &n_codes, pcm, n, 16000, &e) == 0);
    struct chat ch;
    chat_init(&ch);
    struct bpe_text pt = { 0 };
    struct bpe_ids ids = { 0 };
    REQUIRE(chat_prompt(&ch, &pt, CHAT_MODE_AUDIO, NULL, codes, n_codes, hp->n_audio, &e) == 0);
    REQUIRE(bpe_encode(m->bpe, &ids, pt.v, pt.n, 1, &e) == 0);
    struct lm_runner r;
    struct lm_cache c;
    REQUIRE(lm_runner_init(&r, m->lm, 256, 1, &e) == 0);
    REQUIRE(lm_cache_init(&c, m->lm, 0, DTYPE_F32, &e) == 0);
    float *logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    struct sampler_params sp;
    sampler_defaults(&sp);
    sp.greedy = 1;
    sp.mask_from =
        hp->audio_offset + (m->flow->hp.vocab < hp->n_audio ? m->flow->hp.vocab : hp->n_audio);
    struct sampler smp;
    REQUIRE(sampler_init(&smp, &sp, hp->n_vocab, &e) == 0);
    REQUIRE(lm_prefill(&r, &c, ids.v, ids.n, logits, &e) == 0);
    int32_t ref[256];
    int n_ref = 0;
    for (;;) {
        int32_t id = sampler_sample(&smp, logits);
        ref[n_ref++] = id;
        if (lm_is_stop(hp, id) || n_ref >= max_new)
            break;
        struct lm_cache *cp = &c;
        int64_t one = 1;
        REQUIRE(lm_forward(&r, &cp, &id, &one, 1, logits, &e) == 0);
    }
    struct t2w t2;
    struct t2w_config vc;
    t2w_config_default(&vc);
    vc.max_tokens = max_new;
    REQUIRE(t2w_init(&t2, m->flow, m->hift, &vc, NULL, &e) == 0);
    float *ref_pcm = malloc(sizeof(float) * 400000);
    int64_t n_ref_pcm = 0, n_audio = 0, n_text_ids = 0;
    int32_t text_ids[256];
    for (int i = 0; i < n_ref; i++) {
        if (lm_is_stop(hp, ref[i]))
            break;
        if (ref[i] >= hp->audio_offset) {
            n_audio++;
            REQUIRE(t2w_push_audio(&t2, ref[i] - hp->audio_offset, &e) == 0);
            if (t2.n_out > 0)
                memcpy(ref_pcm + n_ref_pcm, t2.out, (size_t)t2.n_out * sizeof(float));
            n_ref_pcm += t2.n_out;
        } else {
            text_ids[n_text_ids++] = ref[i];
        }
    }
    REQUIRE(t2w_end(&t2, lm_is_stop(hp, ref[n_ref - 1]) && ref[n_ref - 1] == hp->tok_user, &e) ==
            0);
    if (t2.n_out > 0)
        memcpy(ref_pcm + n_ref_pcm, t2.out, (size_t)t2.n_out * sizeof(float));
    n_ref_pcm += t2.n_out;
    struct bpe_text ref_text = { 0 };
    /* ids without a token (gaps in the tiny vocabulary) are left out of the transcript */
    int64_t n_kept_ids = 0;
    for (int64_t i = 0; i < n_text_ids; i++)
        if (text_ids[i] < m->bpe->n_vocab && m->bpe->tokens[text_ids[i]].ptr)
            text_ids[n_kept_ids++] = text_ids[i];
    CHECK(bpe_decode(m->bpe, &ref_text, text_ids, n_kept_ids, &e) == 0);

    /* through the engine, audio pushed in pieces */
    struct engine *eng = te_engine(1, 4);
    REQUIRE(eng);
    struct engine_session_options o;
    te_opts(&o, max_new);
    struct engine_session *s;
    REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
    for (int64_t i = 0; i < n; i += 3000)
        CHECK(engine_push_audio(s, pcm + i, n - i < 3000 ? n - i : 3000, &e) == ENGINE_OK);
    CHECK(engine_commit(s, &e) == ENGINE_OK);
    struct te_turn *t = calloc(1, sizeof *t);
    REQUIRE(te_drain(s, t) == 0);
    CHECK(t->user_tokens == n_codes);
    CHECK(t->n_ids == n_ref);
    CHECK(memcmp(t->ids, ref, (size_t)n_ref * sizeof *ref) == 0);
    CHECK(t->n_errors == 0);
    CHECK(t->pcm_gap == 0);
    CHECK(t->n_text == ref_text.n && memcmp(t->text, ref_text.v, ref_text.n) == 0);
    /* the tail is never lost: every token's audio came out, whatever ended the answer */
    CHECK(t->n_pcm == n_ref_pcm);
    CHECK(t->n_pcm == (int64_t)m->hift->hp.hop_total * flow_mel_len(&m->flow->hp, n_audio));
    if (t->n_pcm == n_ref_pcm && n_ref_pcm > 0)
        CHECK_ARRAY_NEAR(t->pcm, ref_pcm, n_ref_pcm, 0);
    CHECK(t->t.n_audio == n_audio);
    if (getenv("PARLEY_TEST_VERBOSE"))
        fprintf(stderr, "engine: %lld user tokens, %d ids (%lld audio), %lld samples, %s\n",
                (long long)n_codes, n_ref, (long long)n_audio, (long long)t->n_pcm,
                engine_done_name(t->reason));
    /* a second turn sees the first: the cache holds prompt + answer (without the stop id) */
    int64_t kept = lm_is_stop(hp, ref[n_ref - 1]) ? n_ref - 1 : n_ref;
    CHECK(engine_session_positions(s) == ids.n + kept - (kept == n_ref ? 1 : 0));
    te_ask(s, "and then?");
    REQUIRE(te_drain(s, t) == 0);
    CHECK(t->n_errors == 0);
    CHECK(t->n_ids > 0);
    engine_close(s);
    engine_destroy(eng);

    te_turns_free(t, 1);
    t2w_free(&t2);
    free(ref_pcm);
    bpe_text_free(&ref_text);
    sampler_free(&smp);
    free(logits);
    lm_cache_free(&c);
    lm_runner_free(&r);
    bpe_ids_free(&ids);
    bpe_text_free(&pt);
    chat_free(&ch);
    free(codes);
    free(pcm);
}

static const char *te_texts[8] = {
    "hello", "what is the weather", "tell me a story", "1 2 3", "good morning", "why?", "ok", "sing"
};

/* Each text's turn on a session of its own, one after the other (together = 0), or all
 * sessions committed at once so that they share decode steps (together = 1). */
static void te_run_texts(struct engine *eng, const struct engine_session_options *o,
                         const char *const *texts, int n, int together, struct te_turn *out)
{
    struct err e;
    struct engine_session *ss[8];
    REQUIRE(n <= 8);
    for (int i = 0; !together && i < n; i++)
        te_text_turn(eng, o, texts[i], &out[i]);
    for (int i = 0; together && i < n; i++) {
        REQUIRE(engine_open(eng, o, &ss[i], &e) == ENGINE_OK);
        CHECK(engine_push_text(ss[i], texts[i], &e) == ENGINE_OK);
    }
    for (int i = 0; together && i < n; i++)
        CHECK(engine_commit(ss[i], &e) == ENGINE_OK);
    for (int i = 0; together && i < n; i++) {
        CHECK(te_drain(ss[i], &out[i]) == 0);
        engine_close(ss[i]);
    }
}

/* The same ids (and, with pcm, the same audio bit for bit) in a and b. */
static void te_same_turns(const struct te_turn *a, const struct te_turn *b, int n, int pcm)
{
    for (int i = 0; i < n; i++) {
        CHECK(b[i].n_ids == a[i].n_ids);
        CHECK(memcmp(b[i].ids, a[i].ids, (size_t)a[i].n_ids * 4) == 0);
        if (!pcm)
            continue;
        CHECK(b[i].n_pcm == a[i].n_pcm);
        if (b[i].n_pcm == a[i].n_pcm && a[i].n_pcm)
            CHECK_ARRAY_NEAR(b[i].pcm, a[i].pcm, a[i].n_pcm, 0);
    }
}

/* Greedy output of a session is the same alone and batched with 7 others. */
TEST(engine_batched_equals_alone)
{
    if (!te_models())
        return;
    struct te_turn *alone = calloc(8, sizeof *alone), *both = calloc(8, sizeof *both);
    struct engine *eng = te_engine(2, 8);
    REQUIRE(eng);
    struct engine_session_options o;
    te_opts(&o, getenv("PARLEY_TEST_QUICK") ? 16 : 40);
    o.n_ctx = 256;
    te_run_texts(eng, &o, te_texts, 8, 0, alone);
    te_run_texts(eng, &o, te_texts, 8, 1, both);
    te_same_turns(alone, both, 8, 1);
    struct engine_stats st;
    engine_get_stats(eng, &st);
    CHECK(st.max_batch_seen > 1);
    CHECK(st.n_sessions == 0 && st.kv_bytes == 0);
    CHECK(st.lm_pass_seconds == 0); /* idle: no pass in flight */
    engine_destroy(eng);
    te_turns_free(alone, 8);
    te_turns_free(both, 8);
}

/* Voice workers with a pool of their own (voice_threads): the same ids, and the same audio
 * to float rounding (the decoder's two-thread split adds in another order), as one thread. */
TEST(engine_voice_threads)
{
    if (!te_models())
        return;
    struct err e;
    struct engine_config c;
    engine_config_default(&c);
    c.n_workers = 2;
    c.voice_threads = 2;
    c.max_sessions = c.max_batch = 4;
    struct engine *threaded = NULL, *single = te_engine(1, 4);
    REQUIRE(single);
    REQUIRE(engine_create(&threaded, &te_files.m, &c, &e) == 0);
    c.voice_threads = 0;
    struct engine *bad = NULL;
    CHECK(engine_create(&bad, &te_files.m, &c, &e) == -1);
    struct engine_session_options o;
    te_opts(&o, getenv("PARLEY_TEST_QUICK") ? 16 : 40);
    o.n_ctx = 256;
    struct te_turn *a = calloc(4, sizeof *a), *b = calloc(4, sizeof *b);
    te_run_texts(single, &o, te_texts, 4, 0, a);
    te_run_texts(threaded, &o, te_texts, 4, 1, b);
    te_same_turns(a, b, 4, 0);
    for (int i = 0; i < 4; i++) {
        CHECK(a[i].n_pcm == b[i].n_pcm);
        if (a[i].n_pcm == b[i].n_pcm && a[i].n_pcm)
            CHECK_ARRAY_NEAR(b[i].pcm, a[i].pcm, a[i].n_pcm, 1e-3);
    }
    engine_destroy(threaded);
    engine_destroy(single);
    te_turns_free(a, 4);
    te_turns_free(b, 4);
}

/* A long prompt is prefilled one block per step beside the sessions already speaking: its
 * LM passes are its blocks plus its decode steps, and neither its output nor theirs changes. */
TEST(engine_prefill_in_blocks)
{
    if (!te_models())
        return;
    struct err e;
    struct engine_config c;
    engine_config_default(&c);
    c.n_workers = 1;
    c.max_sessions = c.max_batch = 2;
    c.prefill_rows = 8;
    struct engine *eng = NULL;
    REQUIRE(engine_create(&eng, &te_files.m, &c, &e) == 0);
    struct engine_session_options o;
    te_opts(&o, getenv("PARLEY_TEST_QUICK") ? 16 : 40);
    o.n_ctx = 512;
    static const char *const texts[2] = {
        "hello", "tell me a long story about the sea, the wind, the rain and the people who "
                 "sail across the water every morning before the sun comes up"
    };
    struct te_turn *alone = calloc(2, sizeof *alone), *both = calloc(2, sizeof *both);
    te_run_texts(eng, &o, texts, 2, 0, alone);
    CHECK(alone[1].t.n_prompt > 3 * c.prefill_rows);
    int64_t blocks = (alone[1].t.n_prompt + c.prefill_rows - 1) / c.prefill_rows;
    CHECK(alone[1].t.n_lm_steps == blocks + alone[1].n_ids - 1);
    te_run_texts(eng, &o, texts, 2, 1, both);
    te_same_turns(alone, both, 2, 0);
    engine_destroy(eng);
    te_turns_free(alone, 2);
    te_turns_free(both, 2);
}

/* Barge-in after the answer was generated (it still plays): engine_heard trims the history
 * to what was heard, by the rule of a cancel, until the next commit. */
TEST(engine_heard_trims_finished_answer)
{
    if (!te_models())
        return;
    struct err e;
    struct engine *eng = te_engine(1, 1);
    REQUIRE(eng);
    struct engine_session_options o;
    te_opts(&o, 60);
    int64_t n = 24000;
    float *pcm = malloc((size_t)n * sizeof *pcm);
    te_audio(pcm, n, 1);
    struct engine_session *s;
    REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
    int64_t heard = -1;
    CHECK(engine_heard(s, 100, &heard, &e) == ENGINE_ERR_STATE); /* no answer yet */
    CHECK(engine_push_audio(s, pcm, n, &e) == ENGINE_OK);
    CHECK(engine_commit(s, &e) == ENGINE_OK);
    struct te_turn *t = calloc(1, sizeof *t);
    REQUIRE(te_drain(s, t) == 0);
    const int32_t audio_offset = te_files.m.lm->hp.audio_offset;
    int64_t first_audio = 0;
    while (first_audio < t->n_ids && t->ids[first_audio] < audio_offset)
        first_audio++;
    REQUIRE(first_audio + 1 < t->n_ids); /* an answer with audio and more after its first token */
    int64_t full = engine_session_positions(s);
    /* one sample heard: the first audio token (and the text before it) stays */
    CHECK(engine_heard(s, 1, &heard, &e) == ENGINE_OK);
    CHECK(heard == 1);
    CHECK(engine_session_positions(s) == t->t.n_prompt + first_audio + 1);
    CHECK(engine_session_positions(s) < full);
    /* a later, longer position cannot bring back what was trimmed */
    CHECK(engine_heard(s, 1 << 30, &heard, &e) == ENGINE_OK);
    CHECK(engine_session_positions(s) == t->t.n_prompt + first_audio + 1);
    /* the next turn builds on what was heard; during it, trimming is refused */
    te_ask(s, "and then?");
    CHECK(engine_heard(s, 1, &heard, &e) == ENGINE_ERR_STATE);
    REQUIRE(te_drain(s, t) == 0);
    CHECK(t->n_errors == 0 && t->n_ids > 0);
    te_turns_free(t, 1);
    engine_close(s);
    engine_destroy(eng);
    free(pcm);
}

/* Sampling changes between turns: refused during an answer and past the opening max_new;
 * the same seed set again gives the same sampled answer. */
TEST(engine_set_sampling_between_turns)
{
    if (!te_models())
        return;
    struct err e;
    struct engine *eng = te_engine(1, 1);
    REQUIRE(eng);
    struct engine_session_options o;
    te_opts(&o, 24);
    struct engine_session *s;
    REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
    struct sampler_params p = o.sampling;
    p.greedy = 0;
    p.temperature = 1.0f;
    p.seed = 11;
    p.max_new = 25;
    CHECK(engine_set_sampling(s, &p, &e) == ENGINE_ERR_INVALID); /* above the buffers */
    p.max_new = 16;
    CHECK(engine_set_sampling(s, &p, &e) == ENGINE_OK);
    struct te_turn *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    te_ask(s, "hello");
    CHECK(engine_set_sampling(s, &p, &e) == ENGINE_ERR_STATE);
    REQUIRE(te_drain(s, a) == 0);
    CHECK(a->n_ids <= 16);
    engine_close(s);
    /* a fresh session given the same settings the same way samples the same answer */
    REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
    CHECK(engine_set_sampling(s, &p, &e) == ENGINE_OK);
    te_ask(s, "hello");
    REQUIRE(te_drain(s, b) == 0);
    CHECK(a->n_ids == b->n_ids && memcmp(a->ids, b->ids, (size_t)a->n_ids * 4) == 0);
    engine_close(s);
    engine_destroy(eng);
    te_turns_free(a, 1);
    te_turns_free(b, 1);
}

/* The same seed gives the same sampled answer (audio included). */
TEST(engine_same_seed)
{
    if (!te_models())
        return;
    struct engine *eng = te_engine(2, 2);
    REQUIRE(eng);
    struct engine_session_options o;
    te_opts(&o, 60);
    o.sampling.greedy = 0;
    o.sampling.seed = 7;
    struct te_turn *t = calloc(2, sizeof *t);
    for (int k = 0; k < 2; k++)
        te_text_turn(eng, &o, "hello", &t[k]);
    te_same_turns(&t[0], &t[1], 1, 1);
    te_turns_free(t, 2);
    engine_destroy(eng);
}

/* Cancel mid-answer: the turn ends as cancelled, history keeps only what was heard, and the
 * next turn goes on from there. */
TEST(engine_cancel_truncates)
{
    if (!te_models())
        return;
    const struct engine_models *m = &te_files.m;
    const struct lm_hparams *hp = &m->lm->hp;
    struct err e;
    struct engine *eng = te_engine(1, 2);
    REQUIRE(eng);
    struct engine_session_options o;
    te_sampled_opts(&o, 400);
    struct te_turn *t = calloc(1, sizeof *t);
    struct engine_session *s = NULL;
    int meaningful = 0;
    /* seeds until an answer is still running when its first audio arrives */
    for (uint64_t seed = 1; seed <= 40 && !meaningful; seed++) {
        if (s)
            engine_close(s);
        o.sampling.seed = seed;
        REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
        CHECK(engine_cancel(s, 0, &e) == ENGINE_ERR_STATE);
        CHECK(engine_push_text(s, "talk for a long time", &e) == ENGINE_OK);
        CHECK(engine_session_positions(s) == 0);
        CHECK(engine_commit(s, &e) == ENGINE_OK);
        CHECK(engine_push_text(s, "more", &e) == ENGINE_ERR_STATE);
        CHECK(engine_commit(s, &e) == ENGINE_ERR_STATE);
        /* wait for the first audio, then say the listener heard 3 tokens' worth of it */
        if (te_wait_output(s, 1, 1))
            continue;
        int64_t played = (int64_t)m->hift->hp.hop_total * flow_mel_len(&m->flow->hp, 3) - 1;
        enum engine_status cst = engine_cancel(s, played, &e);
        REQUIRE(te_drain(s, t) == 0);
        if (getenv("PARLEY_TEST_VERBOSE"))
            fprintf(stderr,
                    "engine_cancel: seed %d: cancel %s, %s after %lld ids, %lld audio "
                    "tokens heard\n",
                    (int)seed, engine_status_name(cst), engine_done_name(t->reason),
                    (long long)t->n_ids, (long long)t->heard);
        if (cst != ENGINE_OK)
            continue;
        CHECK(t->reason == ENGINE_DONE_CANCELLED);
        CHECK(t->n_ids < 400);
        CHECK(t->heard == 3);
        int64_t a = 0, kept = 0;
        for (int64_t i = 0; i < t->n_ids && a < t->heard; i++)
            if (t->ids[i] >= hp->audio_offset && !lm_is_stop(hp, t->ids[i]))
                a++, kept = i + 1;
        CHECK(engine_session_positions(s) == t->t.n_prompt + kept);
        meaningful = 1;
    }
    CHECK(meaningful);
    REQUIRE(s);
    /* a second turn after the cancel */
    te_ask(s, "again");
    CHECK(engine_cancel(s, 0, &e) == ENGINE_OK);
    REQUIRE(te_drain(s, t) == 0);
    CHECK(t->reason == ENGINE_DONE_CANCELLED);
    te_turns_free(t, 1);
    engine_close(s);
    engine_destroy(eng);
}

/* Limits and typed refusals. */
TEST(engine_limits)
{
    if (!te_models())
        return;
    struct err e;
    struct engine_config c;
    engine_config_default(&c);
    c.max_sessions = 2;
    struct engine_session_options o;
    te_opts(&o, 8);
    o.n_ctx = 128;
    const struct lm_hparams *hp = &te_files.lm.hp;
    int64_t per = 2 * (int64_t)hp->n_layer * 128 * hp->n_kv_head * hp->head_dim * 4;
    c.max_kv_bytes = per + per / 2;
    struct engine *eng = NULL;
    REQUIRE(engine_create(&eng, &te_files.m, &c, &e) == 0);
    struct engine_session *a, *b;
    REQUIRE(engine_open(eng, &o, &a, &e) == ENGINE_OK);
    CHECK(engine_open(eng, &o, &b, &e) == ENGINE_ERR_MEMORY);
    o.n_ctx = 16;
    enum engine_status bst = engine_open(eng, &o, &b, &e);
    if (bst != ENGINE_OK)
        test_fail(__FILE__, __LINE__, "open: %s", e.msg);
    REQUIRE(bst == ENGINE_OK);
    struct engine_session *x;
    CHECK(engine_open(eng, &o, &x, &e) == ENGINE_ERR_SESSIONS);
    CHECK(engine_commit(a, &e) == ENGINE_ERR_INVALID);
    /* a turn that does not fit a 16-position context: typed error and a done event */
    CHECK(engine_push_text(b, "a question much too long for sixteen positions of context", &e) ==
          ENGINE_OK);
    CHECK(engine_commit(b, &e) == ENGINE_OK);
    struct te_turn *t = calloc(1, sizeof *t);
    REQUIRE(te_drain(b, t) == 0);
    CHECK(t->reason == ENGINE_DONE_CONTEXT);
    CHECK(t->n_errors == 1);
    CHECK(engine_session_positions(b) == 0);
    float z[16] = { 0 };
    o.max_user_seconds = 0.0005; /* 8 samples */
    engine_close(b);
    REQUIRE(engine_open(eng, &o, &b, &e) == ENGINE_OK);
    CHECK(engine_push_audio(b, z, 16, &e) == ENGINE_ERR_INPUT_FULL);
    CHECK(engine_push_text(b, "x", &e) == ENGINE_OK);
    CHECK(engine_push_audio(b, z, 4, &e) == ENGINE_ERR_STATE);
    o.in_rate = 10;
    CHECK(engine_open(eng, &o, &x, &e) == ENGINE_ERR_INVALID);
    te_turns_free(t, 1);
    engine_close(a);
    engine_close(b);
    engine_destroy(eng);
}

/* KV vs re-tokenized history: the same greedy answer to a second turn whenever
 * re-tokenizing the first turn's string is the identity (tried over several answer lengths;
 * at least one must qualify). Drop-oldest: a long conversation in a small context goes on. */
TEST(engine_history_modes)
{
    if (!te_models())
        return;
    struct err e;
    const struct engine_models *m = &te_files.m;
    const struct lm_hparams *hp = &m->lm->hp;
    struct engine *eng = te_engine(1, 2);
    REQUIRE(eng);
    struct engine_session_options o;
    struct te_turn *t1 = calloc(2, sizeof *t1), *t2 = calloc(2, sizeof *t2);
    int compared = 0;
    int quick = getenv("PARLEY_TEST_QUICK") != NULL;
    for (int max_new = 1; max_new <= 12 && !(quick && compared > 0); max_new++) {
        te_opts(&o, max_new);
        for (int mode = 0; mode < 2; mode++) {
            o.history = mode ? ENGINE_HISTORY_RETOKENIZE : ENGINE_HISTORY_KV;
            struct engine_session *s;
            REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
            te_ask(s, te_texts[max_new % 8]);
            CHECK(te_drain(s, &t1[mode]) == 0);
            te_ask(s, "and then");
            CHECK(te_drain(s, &t2[mode]) == 0);
            engine_close(s);
        }
        CHECK(t1[0].n_ids == t1[1].n_ids &&
              memcmp(t1[0].ids, t1[1].ids, 4 * (size_t)t1[0].n_ids) == 0);
        /* identity: encode(prompt string + decoded answer) == prompt ids + answer ids */
        struct chat ch;
        chat_init(&ch);
        struct bpe_text pt = { 0 }, txt = { 0 };
        struct bpe_ids a = { 0 }, b = { 0 };
        int64_t k = t1[0].n_ids;
        if (k > 0 && lm_is_stop(hp, t1[0].ids[k - 1]))
            k--;
        int ok = chat_prompt(&ch, &pt, CHAT_MODE_TEXT, te_texts[max_new % 8], NULL, 0, hp->n_audio,
                             &e) == 0 &&
                 bpe_encode(m->bpe, &a, pt.v, pt.n, 1, &e) == 0 &&
                 bpe_decode(m->bpe, &txt, t1[0].ids, k, &e) == 0 && txt.n > 0 &&
                 txt.v[txt.n - 1] != ' ' && txt.v[txt.n - 1] != '\n';
        if (ok) {
            size_t n0 = pt.n;
            struct bpe_text full = { 0 };
            full.v = malloc(n0 + txt.n + 1);
            memcpy(full.v, pt.v, n0);
            memcpy(full.v + n0, txt.v, txt.n);
            full.n = n0 + txt.n;
            full.v[full.n] = 0;
            ok = bpe_encode(m->bpe, &b, full.v, full.n, 1, &e) == 0 && b.n == a.n + k &&
                 memcmp(b.v, a.v, (size_t)a.n * 4) == 0 &&
                 memcmp(b.v + a.n, t1[0].ids, (size_t)k * 4) == 0;
            bpe_text_free(&full);
        }
        if (ok) {
            compared++;
            CHECK(t2[0].n_ids == t2[1].n_ids);
            CHECK(memcmp(t2[0].ids, t2[1].ids, 4 * (size_t)t2[0].n_ids) == 0);
        }
        bpe_text_free(&pt);
        bpe_text_free(&txt);
        bpe_ids_free(&a);
        bpe_ids_free(&b);
        chat_free(&ch);
    }
    CHECK(compared > 0);
    if (getenv("PARLEY_TEST_VERBOSE"))
        fprintf(stderr, "engine_history_modes: %d of 12 answers re-tokenize to themselves\n",
                compared);

    /* drop-oldest keeps a conversation going in a context of 96 positions */
    o.history = ENGINE_HISTORY_KV;
    o.ctx_policy = ENGINE_CTX_DROP_OLDEST;
    o.n_ctx = 96;
    struct engine_session *s;
    REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
    for (int i = 0; i < 6; i++) {
        te_ask(s, "one more question");
        CHECK(te_drain(s, t1) == 0);
        CHECK(t1->n_errors == 0);
        CHECK(engine_session_positions(s) <= 96);
    }
    engine_close(s);
    te_turns_free(t1, 2);
    te_turns_free(t2, 2);
    engine_destroy(eng);
}

/* stok_stream_reset: a reused stream gives exactly a fresh stream's tokens (after a finished
 * utterance, after one left half-way, and with a half PCM16 sample pending). */
TEST(engine_stok_stream_reset)
{
    if (!te_models())
        return;
    const struct stok_model *m = te_files.m.stok;
    struct err e;
    int64_t na = 40000, nb = 30000; /* 22.05 kHz: the resampler's history matters */
    float *a = malloc((size_t)na * sizeof *a), *b = malloc((size_t)nb * sizeof *b);
    te_audio(a, na, 5);
    te_audio(b, nb, 9);
    struct stok_stream fresh, st;
    REQUIRE(stok_stream_init(&fresh, m, NULL, 22050, 4, 1, &e) == 0);
    REQUIRE(stok_stream_push(&fresh, b, nb, &e) == 0);
    REQUIRE(stok_stream_finish(&fresh, &e) == 0);
    REQUIRE(fresh.n_tokens > 0);
    REQUIRE(stok_stream_init(&st, m, NULL, 22050, 4, 1, &e) == 0);
    for (int round = 0; round < 3; round++) {
        if (round == 0) { /* a whole utterance, finished */
            CHECK(stok_stream_push(&st, a, na, &e) == 0);
            CHECK(stok_stream_finish(&st, &e) == 0);
        } else if (round == 1) { /* half an utterance, abandoned */
            CHECK(stok_stream_push(&st, a, na / 2, &e) == 0);
        } else { /* raw PCM16 left holding half a sample */
            unsigned char raw[7] = { 1, 2, 3, 4, 5, 6, 7 };
            CHECK(stok_stream_push_pcm16(&st, raw, sizeof raw, &e) == 0);
        }
        float *win = st.win;
        int32_t *tokens = st.tokens;
        stok_stream_reset(&st);
        CHECK(st.win == win && st.tokens == tokens); /* nothing reallocated */
        CHECK(st.n_tokens == 0 && st.n_samples == 0 && !st.finished);
        for (int64_t i = 0; i < nb; i += 7000)
            CHECK(stok_stream_push(&st, b + i, nb - i < 7000 ? nb - i : 7000, &e) == 0);
        CHECK(stok_stream_finish(&st, &e) == 0);
        CHECK(st.n_tokens == fresh.n_tokens);
        if (st.n_tokens == fresh.n_tokens)
            CHECK(memcmp(st.tokens, fresh.tokens, (size_t)st.n_tokens * sizeof *st.tokens) == 0);
        stok_stream_reset(&st);
    }
    stok_stream_free(&st);
    stok_stream_free(&fresh);
    free(a);
    free(b);
}

/* Cancel takes effect within one LM step: with 7 other sessions generating in the same batch,
 * the engine counts the LM passes of the cancelled turn that ended after engine_cancel
 * returned (at most the one in flight), and the other sessions go on to their own end. */
TEST(engine_cancel_within_one_step)
{
    if (!te_models())
        return;
    struct err e;
    struct engine *eng = te_engine(2, 8);
    REQUIRE(eng);
    struct engine_session_options o;
    te_sampled_opts(&o, 200);
    o.n_ctx = 512;
    struct te_turn *t = calloc(1, sizeof *t);
    int measured = 0, want = getenv("PARLEY_TEST_QUICK") ? 1 : 2;
    for (uint64_t seed = 1; seed <= 20 && measured < want; seed++) {
        struct engine_session *ss[8];
        for (int i = 0; i < 8; i++) {
            o.sampling.seed = seed * 8 + (uint64_t)i;
            o.sampling.max_new = i == 0 ? 200 : 40; /* the others: still running at the cancel */
            REQUIRE(engine_open(eng, &o, &ss[i], &e) == ENGINE_OK);
            te_ask(ss[i], te_texts[i]);
        }
        /* cancel session 0 mid-answer, after 4 transcript or audio events */
        int done = te_wait_output(ss[0], 4, 0);
        enum engine_status cst = done ? ENGINE_ERR_STATE : engine_cancel(ss[0], 0, &e);
        if (!done)
            REQUIRE(te_drain(ss[0], t) == 0);
        if (cst == ENGINE_OK && t->reason == ENGINE_DONE_CANCELLED) {
            if (getenv("PARLEY_TEST_VERBOSE"))
                fprintf(stderr, "engine_cancel_within_one_step: %lld LM steps, %lld after cancel\n",
                        (long long)t->t.n_lm_steps, (long long)t->t.steps_after_cancel);
            CHECK(t->t.steps_after_cancel >= 0 && t->t.steps_after_cancel <= 1);
            CHECK(t->t.n_lm_steps >= 1 && t->n_ids == t->t.n_lm_steps);
            CHECK(t->n_ids < 200);
            measured++;
        }
        for (int i = 1; i < 8; i++) { /* the others are not disturbed */
            REQUIRE(te_drain(ss[i], t) == 0);
            CHECK(t->reason != ENGINE_DONE_CANCELLED && t->reason != ENGINE_DONE_ERROR);
            CHECK(t->t.steps_after_cancel == -1);
        }
        for (int i = 0; i < 8; i++)
            engine_close(ss[i]);
    }
    CHECK(measured > 0);
    /* cancel of a lone session measured from outside: the engine's decode-step counter moves by
     * at most one between engine_cancel and TURN_DONE */
    struct engine_session *s;
    o.sampling.seed = 3;
    o.sampling.max_new = 200;
    REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
    te_ask(s, "talk for a long time");
    if (!te_wait_output(s, 1, 0)) {
        struct engine_stats a, b;
        engine_get_stats(eng, &a);
        enum engine_status cst = engine_cancel(s, 0, &e);
        REQUIRE(te_drain(s, t) == 0);
        engine_get_stats(eng, &b);
        if (cst == ENGINE_OK && t->reason == ENGINE_DONE_CANCELLED)
            CHECK(b.decode_steps - a.decode_steps <= 1);
    }
    engine_close(s);
    te_turns_free(t, 1);
    engine_destroy(eng);
}

/* Stress: 64 client threads, each opening a session, talking (audio and text turns, commits,
 * some cancels, some closes mid-answer) and closing it, again and again, for a bounded time
 * (run it under the thread sanitizer build too). At the end every session is closed, the
 * engine counts 0 sessions and 0 KV bytes, and the heap is back to its baseline.
 *
 * The heap check: glibc's mallinfo2() sums every arena (uordblks: bytes in use in the arenas,
 * hblkhd: bytes in mmap'ed chunks). The whole run (engine create, the 64 threads, destroy)
 * happens in a driver thread, so that when it is joined every thread that allocated has
 * exited and its tcache has gone back to the arenas; the main thread does nothing in between.
 * A warm-up run first makes the libraries' one-time allocations (OpenBLAS, ...). The leak
 * allowed is far below one session's buffers (which the test measures and prints) and below
 * one leaked event of audio. Under ASan/TSan malloc is the sanitizer's and mallinfo2 does not
 * see it: there the sanitizers' own leak checking stands in. */
#define TE_STRESS_THREADS 64

struct te_stress {
    struct engine *eng;
    int seed;
    double until;
    int turns, refused, cancels, closes_mid;
};

static uint64_t te_rand(uint64_t *r)
{
    *r ^= *r << 13, *r ^= *r >> 7, *r ^= *r << 17;
    return *r;
}

static void *te_stress_thread(void *arg)
{
    struct te_stress *st = arg;
    uint64_t r = (uint64_t)st->seed * 2654435761u + 1;
    struct err e;
    float pcm[1600];
    te_audio(pcm, 1600, st->seed);
    while (clock_seconds() < st->until) {
        struct engine_session_options o;
        te_opts(&o, 4 + (int)(te_rand(&r) % 24));
        o.n_ctx = 160;
        o.ctx_policy = ENGINE_CTX_DROP_OLDEST;
        o.max_user_seconds = 2;
        struct engine_session *s;
        if (engine_open(st->eng, &o, &s, &e) != ENGINE_OK) {
            st->refused++;
            usleep(1000);
            continue;
        }
        int n_turns = 1 + (int)(te_rand(&r) % 3), closed_mid = 0;
        for (int k = 0; k < n_turns && !closed_mid && clock_seconds() < st->until; k++) {
            uint64_t x = te_rand(&r);
            if (x & 1) {
                engine_push_audio(s, pcm, 1600, &e);
                engine_push_audio(s, pcm, 800, &e);
            } else {
                engine_push_text(s, te_texts[(x >> 3) % 8], &e);
            }
            if (engine_commit(s, &e) != ENGINE_OK)
                break;
            if ((x >> 8) % 4 == 0 && engine_cancel(s, 2000, &e) == ENGINE_OK)
                st->cancels++;
            if ((x >> 12) % 6 == 0) {
                closed_mid = 1; /* close mid-answer */
                break;
            }
            struct engine_event ev;
            int done = 0;
            while (!done && !closed_mid) {
                if (engine_next_event(s, &ev, 0.05)) {
                    done = ev.type == ENGINE_EV_TURN_DONE;
                    engine_event_clear(&ev);
                } else if (clock_seconds() > st->until) {
                    closed_mid = 1; /* time is up: close with the answer running */
                }
            }
            st->turns += done;
        }
        st->closes_mid += closed_mid;
        engine_close(s);
    }
    return NULL;
}

struct te_stress_run {
    double seconds;
    int n_threads;
    int turns, refused, cancels, closes_mid;
    struct engine_stats end;
    int64_t open_heap; /* heap growth of the live engine once every session closed */
    int ok;
};

static int64_t te_heap(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (int64_t)mi.uordblks + (int64_t)mi.hblkhd;
}

static void *te_stress_driver(void *arg)
{
    struct te_stress_run *run = arg;
    struct engine *eng = te_engine(2, TE_STRESS_THREADS);
    if (!eng)
        return NULL;
    struct te_stress *st = calloc(TE_STRESS_THREADS, sizeof *st);
    pthread_t th[TE_STRESS_THREADS];
    int64_t h0 = te_heap();
    double until = clock_seconds() + run->seconds;
    int n = 0;
    for (; st && n < run->n_threads; n++) {
        st[n] = (struct te_stress){ .eng = eng, .seed = n + 1, .until = until };
        if (pthread_create(&th[n], NULL, te_stress_thread, &st[n]) != 0)
            break;
    }
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        run->turns += st[i].turns;
        run->refused += st[i].refused;
        run->cancels += st[i].cancels;
        run->closes_mid += st[i].closes_mid;
    }
    engine_get_stats(eng, &run->end);
    run->open_heap = te_heap() - h0;
    run->ok = n == run->n_threads;
    engine_destroy(eng);
    free(st);
    return NULL;
}

static int te_run_driver(struct te_stress_run *run)
{
    pthread_t d;
    if (pthread_create(&d, NULL, te_stress_driver, run) != 0)
        return -1;
    pthread_join(d, NULL);
    return 0;
}

TEST(engine_stress)
{
    if (!te_models())
        return;
    int quick = getenv("PARLEY_TEST_QUICK") != NULL;
    struct te_stress_run warm = { .seconds = 0.3, .n_threads = TE_STRESS_THREADS };
    REQUIRE(te_run_driver(&warm) == 0);
    /* one session's own buffers, for scale */
    struct engine *eng = te_engine(1, 1);
    REQUIRE(eng);
    struct engine_session_options o;
    te_opts(&o, 16);
    o.n_ctx = 160;
    o.max_user_seconds = 2;
    struct err e;
    struct engine_session *s;
    int64_t h0 = te_heap();
    REQUIRE(engine_open(eng, &o, &s, &e) == ENGINE_OK);
    int64_t session_bytes = te_heap() - h0;
    engine_close(s);
    engine_destroy(eng);

    struct te_stress_run run = { .seconds = quick ? 1.5 : 3.0, .n_threads = TE_STRESS_THREADS };
    int64_t before = te_heap();
    double t0 = clock_seconds();
    REQUIRE(te_run_driver(&run) == 0);
    double wall = clock_seconds() - t0;
    int64_t after = te_heap();
    CHECK(run.ok);
    CHECK(run.turns > 0);
    CHECK(run.end.n_sessions == 0 && run.end.kv_bytes == 0);
    CHECK(wall < run.seconds + 5.0); /* closes mid-answer bound the end */
    int64_t leak = after - before;
    if (getenv("PARLEY_TEST_VERBOSE"))
        fprintf(stderr,
                "engine_stress: %d threads, %.2f s: %d turns done, %d cancels, %d closes "
                "mid-answer, %d refused; max batch %d; heap %+lld bytes after destroy, %+lld "
                "with the engine alive and its sessions closed (a session: %lld)\n",
                run.n_threads, wall, run.turns, run.cancels, run.closes_mid, run.refused,
                run.end.max_batch_seen, (long long)leak, (long long)run.open_heap,
                (long long)session_bytes);
    if (before > 0) { /* glibc's allocator (not a sanitizer's) */
        CHECK(session_bytes > 64 * 1024);
        CHECK(leak < 2048);
        /* the live engine's threads keep a few freed chunks in their caches (tcache) */
        CHECK(run.open_heap < 256 * 1024);
    }
}
