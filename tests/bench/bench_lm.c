/* bench_lm — see bench_lm.h. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/figure.h"
#include "kernels/blas.h"
#include "bench/bench.h"
#include "bench/bench_lm.h"
#include "lm/lm.h"
#include "lm/sampler.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "runtime/clock.h"

#define LM_MAX_THREADS 2

/* ---- the limits, measured in this run ------------------------------------------------- */

struct read_job {
    const float *p;
    int64_t n_per;
    double sink;
};

static void read_part(void *arg, int64_t t0, int64_t t1)
{
    struct read_job *j = arg;
    for (int64_t t = t0; t < t1; t++) {
        const float *p = j->p + t * j->n_per;
        double s;
        if (cpu_level() == CPU_LEVEL_AVX512)
            s = bench_avx512_read(p, j->n_per);
        else if (cpu_level() == CPU_LEVEL_AVX2)
            s = bench_avx2_read(p, j->n_per);
        else {
            float acc[8] = { 0 };
            for (int64_t i = 0; i < j->n_per; i += 8)
                for (int k = 0; k < 8; k++)
                    acc[k] += p[i + k];
            s = acc[0] + acc[7];
        }
        j->sink += s;
    }
}

/*
 * GB/s reading a large array with t threads: the best of READ_RUNS. The best, not the median:
 * on a shared host the bandwidth a second core gets swings between about 40 and 75 GB/s from
 * one second to the next, and a limit caught in a low phase made decode figures read 160 %.
 */
#define READ_RUNS 7

static double read_bandwidth(struct pool *pool, int threads, int quick)
{
    const int64_t n = (quick ? 256 : 1024) * (int64_t)(1 << 20) / 4;
    float *p = malloc((size_t)n * sizeof(float));
    if (!p)
        return 0;
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(i & 7);
    double best = 0;
    for (int r = 0; r < READ_RUNS; r++) {
        struct read_job j = { p, n / threads, 0 };
        double t0 = clock_seconds();
        pool_for(pool, threads, 1, read_part, &j);
        double gbs = (double)n * 4 / (clock_seconds() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    free(p);
    return best;
}

/* A register-only kernel run on every thread of a pool: iterations and what each counts. */
struct peak_job {
    double (*kernel)(int64_t iters);
    int64_t iters;
};

static void peak_part(void *arg, int64_t t0, int64_t t1)
{
    const struct peak_job *j = arg;
    for (int64_t t = t0; t < t1; t++)
        j->kernel(j->iters);
}

/* GFLOP/s (GOP/s) of kernel on this many threads, ops per iteration and thread given (the
 * median of 3). */
static double peak(struct pool *pool, int threads, double (*kernel)(int64_t), double ops)
{
    double g[3];
    for (int r = 0; r < 3; r++) {
        struct peak_job j = { .kernel = kernel, .iters = 4000000 };
        double t0 = clock_seconds();
        pool_for(pool, threads, 1, peak_part, &j);
        g[r] = ops * (double)j.iters * threads / (clock_seconds() - t0) / 1e9;
    }
    return figure_median(g, 3);
}

/* ---- the model ------------------------------------------------------------------------ */

static struct lm_hparams real_shape(int n_layer)
{
    struct lm_hparams hp = {
        .n_layer = n_layer,
        .n_embd = 4096,
        .n_ff = 13696,
        .n_head = 32,
        .n_kv_head = 2,
        .head_dim = 128,
        .rot_dim = 64,
        .n_vocab = 8192,
        .n_ctx = 2048,
        .eps = 1.5625e-07f,
        .rope_base = 10000.0f,
        .n_stop = 1,
    };
    return hp;
}

/* Seconds per decode step of S sequences at context ctx (median of `steps` steps). */
static double decode_step(struct lm_runner *r, struct lm_cache *c, int S, int64_t ctx, int steps,
                          float *logits)
{
    struct lm_cache *cp[16];
    int32_t ids[16];
    int64_t one[16];
    struct err e;
    for (int s = 0; s < S; s++) {
        c[s].n_pos = ctx;
        cp[s] = &c[s];
        ids[s] = 100 + s;
        one[s] = 1;
    }
    lm_forward(r, cp, ids, one, S, logits, &e); /* warm-up */
    double t0 = clock_seconds();
    for (int i = 0; i < steps; i++)
        if (lm_forward(r, cp, ids, one, S, logits, &e) != 0) {
            printf("  decode: %s\n", e.msg);
            return 1e9;
        }
    return (clock_seconds() - t0) / steps;
}

/* Flops of the weight matrices per token (2 per weight), output layer included. */
static double matrix_flops(const struct lm_model *m, enum dtype type)
{
    return 2.0 * (double)lm_weight_bytes(m) / (double)dtype_row_bytes(type, 32) * 32;
}

/* f32 FMA GFLOP/s of this many threads. */
static double fma_peak(struct pool *pool, int threads)
{
    if (cpu_level() == CPU_LEVEL_AVX512)
        return peak(pool, threads, bench_avx512_fma, BENCH_FMA_FLOPS_AVX512);
    return cpu_level() == CPU_LEVEL_AVX2 ? peak(pool, threads, bench_avx2_fma, BENCH_FMA_FLOPS_AVX2)
                                         : 0;
}

/* GOP/s of the q8_0 kernel's block step on registers (AVX-512 only; 0 elsewhere). */
static double q8_step_peak(struct pool *pool, int threads)
{
    return cpu_level() == CPU_LEVEL_AVX512
               ? peak(pool, threads, bench_avx512_q8_step, BENCH_Q8_STEP_OPS)
               : 0;
}

/* What a thread count can do at most, measured in the same run as the figures. */
struct limits {
    double bw;      /* read GB/s */
    double sgemm;   /* OpenBLAS sgemm GFLOP/s */
    double fma;     /* f32 FMA GFLOP/s */
    double q8_step; /* the q8_0 block step's GOP/s on registers */
};

/* decode_only: batch 1 at context 0 and the batched steps (no context 1024, no prefill). */
static void run_type(enum dtype type, int n_layer, int threads, const struct limits *lim, int quick,
                     int decode_only)
{
    const char *tn = dtype_info(type)->name;
    struct lm_hparams hp = real_shape(n_layer);
    struct err e;
    struct backend *be = backend_cpu_create(threads, &e);
    struct lm_model m;
    struct lm_runner r;
    struct lm_cache c[16];
    int n_c = 0;
    float *logits = NULL;
    char name[96];
    memset(&r, 0, sizeof r);
    if (!be || lm_init_random(&m, &hp, type, be, 7, &e) != 0) {
        printf("  lm %s: %s\n", tn, e.msg);
        backend_free(be);
        return;
    }
    const int64_t n_prefill = quick ? 64 : 512;
    if (lm_runner_init(&r, &m, n_prefill, 16, &e) != 0)
        goto out;
    for (; n_c < 16; n_c++)
        if (lm_cache_init(&c[n_c], &m, 2048, DTYPE_BF16, &e) != 0)
            goto out;
    logits = malloc((size_t)16 * (size_t)hp.n_vocab * sizeof *logits);
    if (!logits)
        goto out;
    const double wbytes = (double)lm_weight_bytes(&m);
    const int steps = quick ? 3 : 8;
    /* KV bytes read per token at context n: layers · n · K and V · G · Dh · 2 bytes */
    const double kv_per_pos = 2.0 * n_layer * 2 * hp.n_kv_head * hp.head_dim;
    double t1 = decode_step(&r, c, 1, 0, steps, logits);
    snprintf(name, sizeof name, "lm_L%d_%s_t%d_decode_b1_ctx0", n_layer, tn, threads);
    figure_emit(name, 1.0 / t1, "tok/s", 0);
    snprintf(name, sizeof name, "lm_L%d_%s_t%d_decode_b1_ctx0_bw", n_layer, tn, threads);
    figure_emit(name, wbytes / t1 / 1e9, "GB/s", lim->bw);
    if (!decode_only) {
        double tc = decode_step(&r, c, 1, 1024, steps, logits);
        snprintf(name, sizeof name, "lm_L%d_%s_t%d_decode_b1_ctx1024", n_layer, tn, threads);
        figure_emit(name, 1.0 / tc, "tok/s", 0);
        snprintf(name, sizeof name, "lm_L%d_%s_t%d_decode_b1_ctx1024_bw", n_layer, tn, threads);
        figure_emit(name, (wbytes + 1024 * kv_per_pos) / tc / 1e9, "GB/s", lim->bw);
    }
    /* batched decode of 4, 8 and 16 at context 0; the speedup is tokens/s over batch 1's
     * (target: >= 8 at 16) */
    for (int S = 4; S <= 16; S *= 2) {
        double ts = decode_step(&r, c, S, 0, steps, logits);
        snprintf(name, sizeof name, "lm_L%d_%s_t%d_decode_b%d", n_layer, tn, threads, S);
        figure_emit(name, S / ts, "tok/s", 0);
        snprintf(name, sizeof name, "lm_L%d_%s_t%d_decode_b%d_speedup", n_layer, tn, threads, S);
        figure_emit(name, (S / ts) * t1, "x b1", 0);
        if (S == 16) { /* against what bounds it: f32 and f16 products are f32 FMAs, q8_0's
                        * the block steps of gemm_q8 */
            snprintf(name, sizeof name, "lm_L%d_%s_t%d_decode_b16_gflops", n_layer, tn, threads);
            figure_emit(name, matrix_flops(&m, type) * S / ts / 1e9, "GFLOP/s",
                        type == DTYPE_F32 || type == DTYPE_F16 ? lim->fma
                        : type == DTYPE_Q8_0                   ? lim->q8_step
                                                               : 0);
        }
    }
    if (decode_only)
        goto out;
    /* prefill */
    int32_t *ids = malloc((size_t)n_prefill * sizeof *ids);
    if (ids) {
        for (int64_t i = 0; i < n_prefill; i++)
            ids[i] = (int32_t)(i * 31 % hp.n_vocab);
        c[0].n_pos = 0;
        lm_prefill(&r, &c[0], ids, n_prefill, logits, &e); /* warm-up */
        c[0].n_pos = 0;
        double t0 = clock_seconds();
        int ok = lm_prefill(&r, &c[0], ids, n_prefill, logits, &e) == 0;
        double tp = clock_seconds() - t0;
        free(ids);
        if (ok) {
            /* the output layer runs once per prefill */
            double per_tok = matrix_flops(&m, type) - 2.0 * hp.n_vocab * hp.n_embd;
            snprintf(name, sizeof name, "lm_L%d_%s_t%d_prefill%lld", n_layer, tn, threads,
                     (long long)n_prefill);
            figure_emit(name, n_prefill / tp, "tok/s", 0);
            snprintf(name, sizeof name, "lm_L%d_%s_t%d_prefill%lld_gflops", n_layer, tn, threads,
                     (long long)n_prefill);
            figure_emit(name, per_tok * n_prefill / tp / 1e9, "GFLOP/s", lim->sgemm);
        }
    }
out:
    free(logits);
    for (int i = 0; i < n_c; i++)
        lm_cache_free(&c[i]);
    lm_runner_free(&r);
    lm_free(&m);
    backend_free(be);
}

/* Milliseconds per token of the sampler over the released model's padded vocabulary (168960)
 * at the demo's settings, top-k at transformers' 50 and off (0); the logits are spread over
 * 10 units with one id in 97 raised by 8, some lead for top-p to cut at. */
static void sampler_figures(int quick)
{
    enum { V = 168960 };
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!logits)
        return;
    uint64_t x = 1;
    for (int i = 0; i < V; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        logits[i] = (float)(x >> 40) / (float)(1 << 24) * 10.0f - 5.0f + (i % 97 ? 0.0f : 8.0f);
    }
    static const int top_ks[] = { 50, 0 };
    for (int k = 0; k < 2; k++) {
        struct sampler_params p;
        struct sampler s;
        struct err e;
        sampler_defaults(&p);
        p.top_k = top_ks[k];
        if (sampler_init(&s, &p, V, &e) != 0)
            break;
        const int n = quick ? 10 : 50;
        double t0 = clock_seconds();
        for (int i = 0; i < n; i++)
            sampler_sample(&s, logits);
        char name[64];
        snprintf(name, sizeof name, "lm_sampler_topk%d", top_ks[k]);
        figure_emit(name, (clock_seconds() - t0) / n * 1e3, "ms/token", 0);
        sampler_free(&s);
    }
    free(logits);
}

/* 1 when configuration (layers, type, threads) is to run under the filter. */
static int wanted(const char *filter, int n_layer, enum dtype type, int threads)
{
    char name[64];
    snprintf(name, sizeof name, "lm_L%d_%s_t%d", n_layer, dtype_info(type)->name, threads);
    return !filter || strstr(name, filter) || strstr(filter, name);
}

void bench_lm_run(int quick, const char *filter)
{
    struct limits lim[LM_MAX_THREADS + 1];
    char name[64];
    for (int t = 1; t <= LM_MAX_THREADS; t++) {
        struct pool *p = pool_create(t);
        lim[t] = (struct limits){ .bw = p ? read_bandwidth(p, t, quick) : 0,
                                  .sgemm = figure_sgemm_rate(t),
                                  .fma = p ? fma_peak(p, t) : 0,
                                  .q8_step = p ? q8_step_peak(p, t) : 0 };
        pool_free(p);
        static const char *const what[] = { "read_bw", "sgemm", "fma", "q8_step" };
        static const char *const unit[] = { "GB/s", "GFLOP/s", "GFLOP/s", "GOP/s" };
        const double value[] = { lim[t].bw, lim[t].sgemm, lim[t].fma, lim[t].q8_step };
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof name, "lm_limit_%s_t%d", what[i], t);
            figure_emit(name, value[i], unit[i], 0);
        }
    }
    if (!filter || strstr("lm_sampler", filter) || strstr(filter, "lm_sampler"))
        sampler_figures(quick);
    static const enum dtype types[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0 };
    for (int i = 0; i < 4; i++)
        for (int t = 1; t <= LM_MAX_THREADS; t++)
            if (wanted(filter, 2, types[i], t))
                run_type(types[i], 2, t, &lim[t], quick, 0);
    if (!quick) /* 8 layers: decode (batch 1, 4, 8, 16) only, and not f32 (6.5 GB) */
        for (int i = 1; i < 4; i++)
            if (wanted(filter, 8, types[i], LM_MAX_THREADS))
                run_type(types[i], 8, LM_MAX_THREADS, &lim[LM_MAX_THREADS], quick, 1);
}
