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

#define BV_MAX_REPS 9

/* ---- random real-size weights ---------------------------------------------------------- */

struct bv_weights {
    float **bufs;
    int n, cap;
    uint64_t rng;
};

static float bv_uniform(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)(*s >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
}

/* Uniform ±√(3/fan_in) for matrices; 1 for norm gains and Snake alphas; small biases. */
static const float *bv_tensor(void *ctx, const char *name, int n_dims, const int64_t *shape,
                              struct err *e)
{
    struct bv_weights *w = ctx;
    int64_t n = 1, fan_in = 1;
    for (int i = 0; i < n_dims; i++)
        n *= shape[i];
    for (int i = 1; i < n_dims; i++)
        fan_in *= shape[i];
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 1024;
        float **b = realloc(w->bufs, sizeof(float *) * (size_t)cap);
        if (!b) {
            err_set(e, "bench: out of memory");
            return NULL;
        }
        w->bufs = b;
        w->cap = cap;
    }
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x) {
        err_set(e, "bench: out of memory for %s", name);
        return NULL;
    }
    w->bufs[w->n++] = x;
    size_t len = strlen(name);
    int is_bias = len > 5 && strcmp(name + len - 5, ".bias") == 0;
    float a = n_dims == 1 ? (is_bias ? 0.02f : 0.0f) : sqrtf(3.0f / (float)fan_in);
    float base = n_dims == 1 && !is_bias && !strstr(name, "pos_bias") ? 1.0f : 0.0f;
    if (strstr(name, "pos_bias"))
        a = 0.02f;
    for (int64_t i = 0; i < n; i++)
        x[i] = base + a * bv_uniform(&w->rng);
    return x;
}

static void bv_weights_free(struct bv_weights *w)
{
    for (int i = 0; i < w->n; i++)
        free(w->bufs[i]);
    free(w->bufs);
    memset(w, 0, sizeof *w);
}

static struct flow_hparams bv_flow_hp(void)
{
    struct flow_hparams hp = {
        .vocab = 16384,
        .embed = 512,
        .n_mel = 80,
        .spk_dim = 192,
        .frame_rate = 12.5f,
        .sample_rate = 22050,
        .hop = 256,
        .d_model = 512,
        .n_heads = 8,
        .d_ff = 2048,
        .n_layers = 6,
        .block = 10,
        .lr_layers = 4,
        .cfg_rate = 0.7f,
        .n_steps = 10,
        .est_in = 320,
        .ch = 256,
        .n_tb = 4,
        .n_mid = 12,
        .est_heads = 8,
        .est_head_dim = 64,
    };
    return hp;
}

static struct hift_hparams bv_hift_hp(void)
{
    struct hift_hparams hp = {
        .in_channels = 80,
        .base_channels = 512,
        .nb_harmonics = 8,
        .sample_rate = 22050,
        .nsf_alpha = 0.1f,
        .nsf_sigma = 0.003f,
        .voiced_threshold = 10.0f,
        .lrelu_slope = 0.1f,
        .audio_limit = 0.99f,
        .n_stages = 2,
        .up_rates = { 8, 8 },
        .up_kernels = { 16, 16 },
        .n_fft = 16,
        .hop = 4,
        .n_kernels = 3,
        .rb_kernels = { 3, 7, 11 },
        .rb_dil = { { 1, 3, 5 }, { 1, 3, 5 }, { 1, 3, 5 } },
        .src_kernels = { 7, 11 },
        .src_dil = { { 1, 3, 5 }, { 1, 3, 5 } },
        .f0_channels = 512,
    };
    return hp;
}

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
        double t0 = figure_now();
        if (flow_inference(m, s, pool, mel, &n_out, tok + n_prompt, n_new, tok, n_prompt, feat,
                           p_feat, NULL, NULL, NULL, &e)) {
            fprintf(stderr, "bench_voice: %s\n", e.msg);
            return -1;
        }
        t[r] = figure_now() - t0;
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
        double t0 = figure_now();
        if (hift_forward(m, s, pool, wave, NULL, NULL, mel, frames, NULL, NULL, &e)) {
            fprintf(stderr, "bench_voice: %s\n", e.msg);
            return -1;
        }
        t[r] = figure_now() - t0;
    }
    return figure_median(t, reps);
}

void bench_voice_run(int quick)
{
    struct bv_weights w = { NULL, 0, 0, 0x2545F4914F6CDD1Dull };
    struct flow_hparams fhp = bv_flow_hp();
    struct hift_hparams hhp = bv_hift_hp();
    struct flow_model fm;
    struct hift_model hm;
    struct err e;
    if (flow_load_from(&fm, &fhp, bv_tensor, &w, &e) ||
        hift_load_from(&hm, &hhp, bv_tensor, &w, &e)) {
        fprintf(stderr, "bench_voice: %s\n", e.msg);
        bv_weights_free(&w);
        return;
    }
    const int prompt = quick ? 20 : 100, reps = quick ? 3 : 5, reps_s = quick ? 1 : 3;
    const double sr = 22050.0, hop = 256.0;
    int64_t t_first = flow_mel_len(&fhp, 10); /* 68 */
    int64_t t_steady = flow_mel_len(&fhp, prompt + 20) - (flow_mel_len(&fhp, prompt) - 34);
    int64_t t_max = flow_mel_len(&fhp, prompt + 20) + 2;
    float *mel = calloc((size_t)(80 * t_max), sizeof(float));
    float *feat = calloc((size_t)(80 * t_max), sizeof(float));
    float *wave = malloc(sizeof(float) * (size_t)(t_max * 256));
    for (int64_t i = 0; feat && i < 80 * t_max; i++)
        feat[i] = bv_uniform(&w.rng);
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
        if (flow_state_init(&fs, &fm, prompt + 20, pool, &e) ||
            hift_state_init(&hs, &hm, t_max, &e)) {
            fprintf(stderr, "bench_voice: %s\n", e.msg);
            pool_free(pool);
            break;
        }
        /* first block: 10 tokens → 68 frames; the streaming call vocodes 68 - 34 */
        double tf = bv_flow_call(&fm, &fs, pool, 0, 10, reps, mel, feat);
        double th = bv_hift_call(&hm, &hs, pool, t_first - 34, reps, mel, wave);
        double audio = (double)t_first * hop / sr;
        snprintf(name, sizeof name, "voice_flow_first10_t%d_rtf", threads);
        figure_emit(name, tf / audio, "x", 0);
        snprintf(name, sizeof name, "voice_flow_first10_t%d_gflops", threads);
        figure_emit(name, flow_flops(&fm, 10) / tf / 1e9, "GFLOP/s", sg);
        snprintf(name, sizeof name, "voice_hift_first10_t%d_rtf", threads);
        figure_emit(name, th / ((double)(t_first - 34) * hop / sr), "x", 0);
        snprintf(name, sizeof name, "voice_hift_first10_t%d_gflops", threads);
        figure_emit(name, hift_flops_per_frame(&hm) * (double)(t_first - 34) / th / 1e9, "GFLOP/s",
                    sg);
        snprintf(name, sizeof name, "voice_first10_t%d_latency", threads);
        figure_emit(name, tf + th, "s", 0);
        /* steady block: 20 new tokens behind the prompt */
        double tfs = bv_flow_call(&fm, &fs, pool, prompt, 20, reps_s, mel, feat);
        double ths = bv_hift_call(&hm, &hs, pool, t_steady, reps, mel, wave);
        double audio_s = 20.0 / 12.5;
        double ff = flow_flops(&fm, prompt + 20), fh = hift_flops_per_frame(&hm) * (double)t_steady;
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
    flow_free(&fm);
    hift_free(&hm);
    bv_weights_free(&w);
}
