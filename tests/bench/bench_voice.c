/*
 * bench_voice — see bench_voice.h. Figures (t1 / t2 = threads):
 *   voice_flow_first10_tN_rtf        flow on a first block of 10 tokens (68 frames, 0.79 s)
 *   voice_hift_first10_tN_rtf        HiFT on the 34 frames the first streaming call vocodes
 *   voice_first10_tN_latency         the two together, seconds (target <= 1.5 s with 2 threads)
 *   voice_flow_steady20_pP_tN_rtf    flow on a 20-token block behind a P-token prompt
 *   voice_hift_steady20_tN_rtf       HiFT on the 137 frames of such a block
 *   voice_*_gflops                   the same calls in GFLOP/s, as % of sgemm (limit)
 *   voice_steady20_pP_tN_gflops      flow + HiFT of a steady block (target >= 50 % of sgemm)
 * Times are medians of the repetitions; the sgemm limit is a median measured just before
 * each thread count's calls. The machine's load average is printed with each thread count:
 * on a shared 2-core machine, 2-thread figures mean little while the other core is busy.
 */
#include "bench/figure.h"
#include "kernels/blas.h"
#include "bench/bench_voice.h"
#include "bench/models.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/pool.h"
#include "voice/flow.h"
#include "voice/hift.h"
#include "runtime/clock.h"

#define BV_MAX_REPS 9

/* ---- measurements ------------------------------------------------------------------------ */

/* Seconds of one flow call with n_prompt + n_new tokens (the prompt mel the streaming state
 * would pass: mel_len(prompt) - 34 frames), median of reps. */
static double bv_flow_call(const struct flow_model *m, struct flow_state *s, struct pool *pool,
                           int n_prompt, int n_new, int reps, float *mel, float *feat)
{
    int32_t tok[400];
    for (int i = 0; i < n_prompt + n_new; i++)
        tok[i] = (int32_t)((i * 7919 + 11) % m->hp.vocab);
    int64_t p_feat = n_prompt ? flow_mel_len(&m->hp, n_prompt) - 34 : 0, n_out;
    double t[BV_MAX_REPS];
    struct err e;
    reps = reps < BV_MAX_REPS ? reps : BV_MAX_REPS;
    for (int r = 0; r < reps; r++) {
        double t0 = clock_seconds();
        if (flow_inference(m, s, pool, mel, &n_out, tok + n_prompt, n_new, tok, n_prompt, feat,
                           p_feat, NULL, NULL, NULL, &e)) {
            fprintf(stderr, "bench_voice: %s\n", e.msg);
            return -1;
        }
        t[r] = clock_seconds() - t0;
    }
    return figure_median(t, reps);
}

static double bv_hift_call(const struct hift_model *m, struct hift_state *s, struct pool *pool,
                           int64_t frames, int reps, const float *mel, float *wave)
{
    double t[BV_MAX_REPS];
    struct err e;
    reps = reps < BV_MAX_REPS ? reps : BV_MAX_REPS;
    for (int r = 0; r < reps; r++) {
        double t0 = clock_seconds();
        if (hift_forward(m, s, pool, wave, NULL, NULL, mel, frames, NULL, NULL, &e)) {
            fprintf(stderr, "bench_voice: %s\n", e.msg);
            return -1;
        }
        t[r] = clock_seconds() - t0;
    }
    return figure_median(t, reps);
}

void bench_voice_run(int quick)
{
    struct bench_models bm = { 0 };
    struct err e;
    if (bench_models_voice(&bm, &e)) {
        fprintf(stderr, "bench_voice: %s\n", e.msg);
        bench_models_free(&bm);
        return;
    }
    const struct flow_model *fmp = &bm.flow;
    const struct hift_model *hmp = &bm.hift;
    const struct flow_hparams fhp = fmp->hp;
    const int prompt = quick ? 20 : 100, reps = quick ? 3 : 5, reps_s = quick ? 1 : 3;
    const double sr = 22050.0, hop = 256.0;
    int64_t t_first = flow_mel_len(&fhp, 10); /* 68 */
    int64_t t_steady = flow_mel_len(&fhp, prompt + 20) - (flow_mel_len(&fhp, prompt) - 34);
    int64_t t_max = flow_mel_len(&fhp, prompt + 20) + 2;
    float *mel = calloc((size_t)(80 * t_max), sizeof(float));
    float *feat = calloc((size_t)(80 * t_max), sizeof(float));
    float *wave = malloc(sizeof(float) * (size_t)(t_max * 256));
    for (int64_t i = 0; feat && i < 80 * t_max; i++)
        feat[i] = bench_models_uniform(&bm);
    char name[96];
    for (int threads = 1; threads <= 2 && mel && feat && wave; threads++) {
        struct pool *pool = threads > 1 ? pool_create(threads) : NULL;
        double load[1] = { -1 };
        getloadavg(load, 1);
        printf("  (%d thread%s; load average %.2f on %ld cores)\n", threads, threads > 1 ? "s" : "",
               load[0], sysconf(_SC_NPROCESSORS_ONLN));
        double sg = figure_sgemm_rate(threads);
        snprintf(name, sizeof name, "voice_limit_sgemm_t%d", threads);
        figure_emit(name, sg, "GFLOP/s", 0);
        struct flow_state fs;
        struct hift_state hs;
        if (flow_state_init(&fs, fmp, prompt + 20, pool, &e) ||
            hift_state_init(&hs, hmp, t_max, &e)) {
            fprintf(stderr, "bench_voice: %s\n", e.msg);
            pool_free(pool);
            break;
        }
        /* first block: 10 tokens → 68 frames; the streaming call vocodes 68 - 34 */
        double tf = bv_flow_call(fmp, &fs, pool, 0, 10, reps, mel, feat);
        double th = bv_hift_call(hmp, &hs, pool, t_first - 34, reps, mel, wave);
        double audio = (double)t_first * hop / sr;
        snprintf(name, sizeof name, "voice_flow_first10_t%d_rtf", threads);
        figure_emit(name, tf / audio, "x", 0);
        snprintf(name, sizeof name, "voice_flow_first10_t%d_gflops", threads);
        figure_emit(name, flow_flops(fmp, 10) / tf / 1e9, "GFLOP/s", sg);
        snprintf(name, sizeof name, "voice_hift_first10_t%d_rtf", threads);
        figure_emit(name, th / ((double)(t_first - 34) * hop / sr), "x", 0);
        snprintf(name, sizeof name, "voice_hift_first10_t%d_gflops", threads);
        figure_emit(name, hift_flops_per_frame(hmp) * (double)(t_first - 34) / th / 1e9, "GFLOP/s",
                    sg);
        snprintf(name, sizeof name, "voice_first10_t%d_latency", threads);
        figure_emit(name, tf + th, "s", 0);
        /* steady block: 20 new tokens behind the prompt */
        double tfs = bv_flow_call(fmp, &fs, pool, prompt, 20, reps_s, mel, feat);
        double ths = bv_hift_call(hmp, &hs, pool, t_steady, reps, mel, wave);
        double audio_s = 20.0 / 12.5;
        double ff = flow_flops(fmp, prompt + 20), fh = hift_flops_per_frame(hmp) * (double)t_steady;
        snprintf(name, sizeof name, "voice_flow_steady20_p%d_t%d_rtf", prompt, threads);
        figure_emit(name, tfs / audio_s, "x", 0);
        snprintf(name, sizeof name, "voice_flow_steady20_p%d_t%d_gflops", prompt, threads);
        figure_emit(name, ff / tfs / 1e9, "GFLOP/s", sg);
        snprintf(name, sizeof name, "voice_hift_steady20_t%d_rtf", threads);
        figure_emit(name, ths / ((double)t_steady * hop / sr), "x", 0);
        snprintf(name, sizeof name, "voice_hift_steady20_t%d_gflops", threads);
        figure_emit(name, fh / ths / 1e9, "GFLOP/s", sg);
        snprintf(name, sizeof name, "voice_steady20_p%d_t%d_gflops", prompt, threads);
        figure_emit(name, (ff + fh) / (tfs + ths) / 1e9, "GFLOP/s", sg);
        flow_state_free(&fs);
        hift_state_free(&hs);
        pool_free(pool);
    }
    free(mel);
    free(feat);
    free(wave);
    bench_models_free(&bm);
}
