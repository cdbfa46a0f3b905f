/* The engine's figures; see bench_engine.h. */
#include "bench/figure.h"
#include "bench_engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"

/* Runs one turn per session, all committed at once; returns generated ids and fills the
 * first session's timings. */
static int64_t be_turns(struct engine *eng, int n_sess, int max_new, int audio,
                        struct engine_timings *t0)
{
    struct err e;
    struct engine_session *s[16];
    struct engine_session_options o;
    engine_session_options_default(&o);
    o.sampling.greedy = 1;
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

void bench_engine_run(int quick)
{
    struct err e;
    printf("engine (random 9B-shaped LM, 2 layers bf16; tiny golden tokenizer and decoder)\n");
    struct backend *be = backend_cpu_create(2, &e);
    if (!be) {
        printf("  engine: %s\n", e.msg);
        return;
    }
    struct engine_model_files mf;
    if (engine_models_load(&mf, "build/golden/lm_tiny_f32.gguf", "build/golden/stok_a.gguf",
                           "build/golden/voice_decoder.gguf", be, &e) != 0) {
        printf("  engine: %s (run the golden generators first)\n", e.msg);
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
    hp.n_vocab = 8192;
    hp.n_ctx = 2048;
    struct lm_model big;
    if (lm_init_random(&big, &hp, DTYPE_BF16, be, 1, &e) != 0) {
        printf("  engine: %s\n", e.msg);
        engine_models_free(&mf);
        backend_free(be);
        return;
    }
    struct engine_models m = mf.m;
    m.lm = &big;
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.n_workers = 1;
    cfg.max_sessions = 16;
    cfg.max_batch = 16;
    struct engine *eng;
    if (engine_create(&eng, &m, &cfg, &e) != 0) {
        printf("  engine: %s\n", e.msg);
        goto done;
    }
    /* first audio of one audio turn */
    struct engine_timings t;
    memset(&t, 0, sizeof t);
    be_turns(eng, 1, quick ? 32 : 96, 1, &t);
    printf("  first turn (2 s of audio in): from commit, s\n");
    printf("    %-28s %8.4f\n", "speech tokens done", t.tokenize);
    printf("    %-28s %8.4f .. %.4f (%lld ids)\n", "prefill", t.prefill_start, t.prefill_end,
           (long long)t.n_prompt);
    printf("    %-28s %8.4f\n", "first id", t.first_token);
    printf("    %-28s %8.4f\n", "first audio id", t.first_audio_token);
    printf("    %-28s %8.4f\n", "first block of audio ids", t.first_block);
    printf("    %-28s %8.4f\n", "first PCM", t.first_pcm);
    printf("    %-28s %8.4f (%lld text + %lld audio ids)\n", "done", t.done, (long long)t.n_text,
           (long long)t.n_audio);
    double inside = t.stok_seconds + t.lm_seconds;
    printf("    %-28s %8.1f %% (wall %.4f s; tokenizer %.4f + LM %.4f s; decoder %.4f s runs "
           "beside the LM)\n",
           "outside model compute",
           100.0 * (t.done - t.voice_seconds > 0 ? (t.done - inside) / t.done : 0), t.done,
           t.stok_seconds, t.lm_seconds, t.voice_seconds);
    /* aggregate decode throughput */
    int sizes[3] = { 1, 4, 16 };
    for (int k = 0; k < 3; k++) {
        struct engine_stats s0, s1;
        engine_get_stats(eng, &s0);
        double a = figure_now();
        int64_t n = be_turns(eng, sizes[k], quick ? 16 : 64, 0, NULL);
        double dt = figure_now() - a;
        engine_get_stats(eng, &s1);
        double steps = (double)(s1.decode_steps - s0.decode_steps);
        printf("  %2d sessions: %6lld ids in %.3f s = %8.1f tokens/s (mean batch %.1f)\n", sizes[k],
               (long long)n, dt, (double)n / dt,
               steps > 0 ? (double)(s1.decode_rows - s0.decode_rows) / steps : 0);
    }
    engine_destroy(eng);
done:
    lm_free(&big);
    engine_models_free(&mf);
    backend_free(be);
}
