/* The engine's figures; see bench_engine.h. */
#include "bench/figure.h"
#include "bench_engine.h"
#include "bench/models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "runtime/clock.h"

/* Runs one turn per session, all committed at once; returns generated ids and fills the
 * first session's timings. */
static int64_t be_turns(struct engine *eng, int n_sess, int max_new, int audio, int sample,
                        struct engine_timings *t0)
{
    struct err e;
    struct engine_session *s[16];
    struct engine_session_options o;
    engine_session_options_default(&o);
    /* sampled at temperature 1 over a vocabulary that is 40 % speech tokens, the random LM
     * interleaves text and audio about as the real one does (13 : 26) */
    o.sampling.greedy = !sample;
    o.sampling.temperature = 1.0f;
    o.sampling.top_k = 0;
    o.sampling.top_p = 1.0f;
    o.sampling.seed = 7;
    o.sampling.max_new = max_new;
    o.n_ctx = 1024;
    float pcm[32000];
    for (int i = 0; i < 32000; i++)
        pcm[i] = 0.3f * sinf(0.02f * (float)i) + 0.05f * sinf(0.31f * (float)i);
    int n_open = 0;
    for (int i = 0; i < n_sess; i++) {
        if (engine_open(eng, &o, &s[i], &e) != ENGINE_OK) {
            printf("  engine: %s\n", e.msg);
            break;
        }
        n_open++;
        if (audio)
            engine_push_audio(s[i], pcm, 32000, &e);
        else
            engine_push_text(s[i], "tell me about the weather today", &e);
    }
    for (int i = 0; i < n_open; i++)
        engine_commit(s[i], &e);
    int64_t n_ids = 0;
    for (int i = 0; i < n_open; i++) {
        struct engine_event ev;
        while (engine_next_event(s[i], &ev, 600)) {
            int done = ev.type == ENGINE_EV_TURN_DONE;
            if (done) {
                n_ids += ev.n_ids;
                if (i == 0 && t0)
                    *t0 = ev.t;
            }
            engine_event_clear(&ev);
            if (done)
                break;
        }
        engine_close(s[i]);
    }
    return n_ids;
}

/* The first-audio latency of one 2 s spoken turn, by stage. */
static void be_first_audio(struct engine *eng, int voice_threads, int quick)
{
    struct engine_timings t;
    memset(&t, 0, sizeof t);
    be_turns(eng, 1, 4, 1, 1, NULL); /* warm-up: page in, caches */
    double best = 1e30;
    for (int r = 0; r < (quick ? 1 : 3); r++) {
        struct engine_timings x;
        memset(&x, 0, sizeof x);
        be_turns(eng, 1, 60, 1, 1, &x);
        if (x.first_pcm >= 0 && x.first_pcm < best) {
            best = x.first_pcm;
            t = x;
        }
    }
    if (best == 1e30) {
        printf("  first audio: the answer had no audio (no block of audio ids)\n");
        return;
    }
    printf("  first audio of a 2 s spoken turn, seconds from commit (best of %d; voice worker on "
           "%d thread%s):\n",
           quick ? 1 : 3, voice_threads, voice_threads > 1 ? "s" : "");
    printf("    %-30s %8.4f\n", "speech tokens done", t.tokenize);
    printf("    %-30s %8.4f .. %.4f (%lld ids)\n", "prefill", t.prefill_start, t.prefill_end,
           (long long)t.n_prompt);
    printf("    %-30s %8.4f\n", "first id", t.first_token);
    printf("    %-30s %8.4f\n", "first block of audio ids", t.first_block);
    printf("    %-30s %8.4f\n", "first PCM", t.first_pcm);
    static const char *const stages[6] = { "s",        "tokenize_s", "prefill_s",
                                           "decode_s", "voice_s",    "outside_pct" };
    const double v[6] = { t.first_pcm,
                          t.tokenize,
                          t.prefill_end - t.prefill_start,
                          t.first_block - t.prefill_end,
                          t.first_pcm - t.first_block,
                          100.0 * (t.first_pcm - t.compute_first_pcm) / t.first_pcm };
    for (int i = 0; i < 6; i++) {
        char name[80];
        snprintf(name, sizeof name, "engine_first_audio_vt%d_%s", voice_threads, stages[i]);
        figure_emit(name, v[i], i == 5 ? "%" : "s", 0);
    }
    printf("    (model compute on the way: %.4f s; target outside < 5 %%)\n", t.compute_first_pcm);
}

void bench_engine_run(int quick)
{
    struct err e;
    printf("engine (random 9B-shaped LM, 2 layers bf16; tokenizer and decoder at real size)\n");
    struct backend *be = backend_cpu_create(2, &e);
    if (!be) {
        printf("  engine: %s\n", e.msg);
        return;
    }
    struct engine_model_files mf;
    if (engine_models_load(&mf, "build/golden/lm_tiny_f32.gguf", NULL, NULL, be, &e) != 0) {
        printf("  engine: %s (run the golden generators first)\n", e.msg);
        backend_free(be);
        return;
    }
    struct bench_models bm = { 0 };
    if (bench_models_stok(&bm, quick ? 4 : 16, mf.lm.hp.n_audio, &e) ||
        bench_models_voice(&bm, &e)) {
        printf("  engine: %s\n", e.msg);
        bench_models_free(&bm);
        engine_models_free(&mf);
        backend_free(be);
        return;
    }
    struct lm_hparams hp = mf.lm.hp; /* special ids and the audio range of the tiny vocabulary */
    hp.n_layer = 2;
    hp.n_embd = 4096;
    hp.n_ff = 13696;
    hp.n_head = 32;
    hp.n_kv_head = 2;
    hp.head_dim = 128;
    hp.rot_dim = 64;
    hp.n_vocab = hp.audio_offset + hp.n_audio; /* text ids, then the speech tokens */
    hp.n_ctx = 2048;
    struct lm_model big;
    if (lm_init_random(&big, &hp, DTYPE_BF16, be, 1, &e) != 0) {
        printf("  engine: %s\n", e.msg);
        goto free_models;
    }
    struct engine_models m = mf.m;
    m.lm = &big;
    m.stok = &bm.stok;
    m.flow = &bm.flow;
    m.hift = &bm.hift;
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.n_workers = 1;
    cfg.max_sessions = 16;
    cfg.max_batch = 16;
    struct engine *eng;
    /* the first audio with the voice worker on 1 and on 2 threads (beside the LM's 2) */
    cfg.voice_threads = 2;
    if (engine_create(&eng, &m, &cfg, &e) != 0) {
        printf("  engine: %s\n", e.msg);
        goto done;
    }
    be_first_audio(eng, 2, quick);
    engine_destroy(eng);
    cfg.voice_threads = 1;
    if (engine_create(&eng, &m, &cfg, &e) != 0) {
        printf("  engine: %s\n", e.msg);
        goto done;
    }
    be_first_audio(eng, 1, quick);
    /* aggregate decode throughput */
    int sizes[3] = { 1, 4, 16 };
    for (int k = 0; k < 3; k++) {
        struct engine_stats s0, s1;
        engine_get_stats(eng, &s0);
        double a = clock_seconds();
        int64_t n = be_turns(eng, sizes[k], quick ? 16 : 64, 0, 0, NULL);
        double dt = clock_seconds() - a;
        engine_get_stats(eng, &s1);
        double steps = (double)(s1.decode_steps - s0.decode_steps);
        printf("  %2d sessions: %6lld ids in %.3f s = %8.1f tokens/s (mean batch %.1f)\n", sizes[k],
               (long long)n, dt, (double)n / dt,
               steps > 0 ? (double)(s1.decode_rows - s0.decode_rows) / steps : 0);
        char name[64];
        snprintf(name, sizeof name, "engine_lm_sessions%d_tps", sizes[k]);
        figure_emit(name, (double)n / dt, "tokens/s", 0);
    }
    engine_destroy(eng);
done:
    lm_free(&big);
free_models:
    bench_models_free(&bm);
    engine_models_free(&mf);
    backend_free(be);
}
