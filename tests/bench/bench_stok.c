/* bench_stok — see bench_stok.h. */
#include "bench/figure.h"
#include "kernels/blas.h"
#include "bench/bench_stok.h"
#include "bench/models.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/pool.h"
#include "speech/mel.h"
#include "speech/resample.h"
#include "speech/stok.h"
#include "runtime/clock.h"

static uint64_t bs_state = 0x9E3779B97F4A7C15ull;

static float bs_rand(void) /* uniform in [-1, 1) */
{
    bs_state ^= bs_state << 13;
    bs_state ^= bs_state >> 7;
    bs_state ^= bs_state << 17;
    return (float)((bs_state >> 40) * (1.0 / (1ull << 23)) - 1.0);
}

static float *bs_fill(int64_t n, float scale)
{
    float *p = malloc((size_t)n * sizeof *p);
    if (p)
        for (int64_t i = 0; i < n; i++)
            p[i] = bs_rand() * scale;
    return p;
}

/* FLOPs of one window of t encoder frames (multiply-add = 2). */
static double bs_flops(const struct stok_hparams *hp, int64_t t)
{
    double D = hp->d_model, F = hp->d_ffn, M = hp->n_mels;
    double f = 2 * D * M * 3 * (2.0 * t) + 2 * D * D * 3 * t; /* conv stem */
    f += hp->n_layer * 2.0 * t * (4 * D * D + 2 * D * F);     /* projections and MLP */
    double keys = 0;                                          /* block-causal attention */
    for (int64_t i = 0; i < t; i++) {
        int64_t end = (i / hp->block + 1) * hp->block;
        keys += (double)(end < t ? end : t);
    }
    f += hp->n_layer * 4.0 * D * keys;
    f += 2.0 * (double)(t / hp->pool) * hp->n_codes * D; /* VQ */
    return f;
}

void bench_stok_run(int quick)
{
    struct bench_models bm = { 0 };
    struct err e;
    if (bench_models_stok(&bm, quick ? 2 : 16, 16384, &e)) {
        fprintf(stderr, "bench_stok: %s\n", e.msg);
        bench_models_free(&bm);
        return;
    }
    struct stok_model *m = &bm.stok;
    const struct stok_hparams *hp = &m->hp;
    printf("speech tokenizer (real dimensions, random f32 weights, %d layers)\n", hp->n_layer);
    /* 30 s of speech-like audio at 16 kHz: a gliding tone under noise, 4 Hz syllables */
    int64_t n = (quick ? 8 : 30) * 16000;
    float *audio = malloc((size_t)n * sizeof *audio);
    if (!audio)
        goto out;
    for (int64_t i = 0; i < n; i++) {
        double s = i / 16000.0;
        audio[i] = (float)(0.3 * sin(2 * M_PI * (150 + 50 * sin(s)) * s) *
                               (0.5 + 0.5 * sin(2 * M_PI * 4 * s)) +
                           0.01 * bs_rand());
    }
    double secs = (double)n / 16000;
    double gflop = bs_flops(hp, n / 320) * 1e-9;
    for (int threads = 1; threads <= 2; threads++) {
        double peak = figure_sgemm_rate(threads);
        struct pool *pool = pool_create(threads);
        double best = 1e30;
        for (int r = 0; r < (quick ? 1 : 2); r++) {
            int32_t *tok = NULL;
            int64_t nt = 0;
            double t0 = clock_seconds();
            int rc = stok_tokenize(m, pool, &tok, &nt, audio, n, 16000, &e);
            double dt = clock_seconds() - t0;
            free(tok);
            if (rc) {
                fprintf(stderr, "bench_stok: %s\n", e.msg);
                break;
            }
            best = dt < best ? dt : best;
        }
        pool_free(pool);
        printf("  %-44s RTF %.3f (%.2f s for %.0f s), %.1f GFLOP/s = %.0f %% of sgemm %.1f\n",
               threads == 1 ? "stok_tokenize 30 s, 1 thread" : "stok_tokenize 30 s, 2 threads",
               best / secs, best, secs, gflop / best, 100 * gflop / best / peak, peak);
    }
    /* the front-end alone: 44.1 kHz -> 16 kHz and the log-mel of 30 s */
    {
        struct resample r;
        int64_t n44 = (int64_t)(secs * 44100);
        float *x = bs_fill(n44, 0.3f), *y = malloc((size_t)(n + 16) * sizeof *y);
        float *raw = malloc((size_t)(n / 160 + 1) * 128 * sizeof *raw);
        float *scr = malloc((size_t)mel_scratch_floats(&m->mel, 400) * sizeof *scr);
        if (x && y && raw && scr && !resample_init(&r, 44100, 16000, &e)) {
            double t0 = clock_seconds();
            resample_run(&r, y, x, n44, &e);
            double t1 = clock_seconds();
            for (int64_t f = 0; f < n / 160; f += 400)
                mel_log10(&m->mel, raw + f * 128, audio, n, f,
                          n / 160 - f < 400 ? n / 160 - f : 400, scr);
            double t2 = clock_seconds();
            printf("  %-44s %10.0fx real time\n", "resample 44.1 -> 16 kHz", secs / (t1 - t0));
            printf("  %-44s %10.0fx real time\n", "log-mel (f64 DFT, 128 bins)", secs / (t2 - t1));
            resample_free(&r);
        }
        free(x);
        free(y);
        free(raw);
        free(scr);
    }
    free(audio);
out:
    bench_models_free(&bm);
}
