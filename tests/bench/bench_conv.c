/*
 * bench_conv — see bench_conv.h. Shapes:
 *   conv1d 256->256 k3 p1, T = 500          the flow decoder's estimator convolutions
 *   conv1d 256->256 k3 p1, T = 34           ...its mid blocks on the first 10-token block
 *   conv1d 1280->1280 k3 s2 causal, T 3000  the tokenizer's second stem conv (30 s window)
 *   conv1d 128->128 k11 d5, T = 12800       a HiFT stage-1 resblock conv (2.3 s of audio)
 *   conv_transpose1d 512->256 k16 s8 p4, T = 200   HiFT ups.0
 *   stft n_fft 400 hop 160 (30 s, 3000 frames)     Whisper's front-end, frames/s
 *   istft n_fft 16 hop 4 (10 s)                   HiFT's output, frames/s
 *   vq 375 x 16384 x 1280                         the tokenizer's VQ on a 30 s window
 * Each conv figure is GFLOP/s (2 * multiply-adds of the convolution itself) and the ratio to
 * OpenBLAS sgemm on the equivalent [C_out x C_in*K] x [C_in*K x T_out] product with the same
 * thread count (OpenBLAS's own threads), timed in the same run.
 */
#include "bench/figure.h"
#include "kernels/blas.h"
#include "bench/bench_conv.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/conv.h"
#include "kernels/spectral.h"
#include "kernels/vq.h"
#include "runtime/pool.h"
#include "runtime/clock.h"

#define BENCH_CONV_THREADS 2

static float *bc_alloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "bench_conv: out of memory\n");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    return p;
}

/* Median seconds of reps runs of one of the ops below. */
enum bc_op { BC_CONV, BC_CONVT, BC_SGEMM, BC_STFT, BC_ISTFT, BC_VQ };

struct bc_case {
    enum bc_op op;
    struct pool *pool;
    int threads;
    struct conv_params cp;
    struct conv_transpose_params tp;
    const struct spectral_plan *plan;
    int64_t t_in, m, n, k; /* sgemm: [m x k] x [k x n]; vq: n queries, m rows, k dims */
    float *out, *x, *w, *b, *scratch, *norms;
    int32_t *idx;
};

static void bc_run_once(const struct bc_case *c)
{
    struct err e;
    switch (c->op) {
    case BC_CONV:
        conv_1d(c->pool, c->out, c->x, c->w, c->b, &c->cp, c->t_in, c->scratch, &e);
        break;
    case BC_CONVT:
        conv_transpose_1d(c->pool, c->out, c->x, c->w, c->b, &c->tp, c->t_in, c->scratch, &e);
        break;
    case BC_SGEMM:
        blas_threads(c->threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c->m, (int)c->n, (int)c->k,
                    1.0f, c->w, (int)c->k, c->x, (int)c->n, 0.0f, c->out, (int)c->n);
        break;
    case BC_STFT:
        spectral_stft(c->pool, c->plan, c->out, c->n, c->x, c->t_in, c->scratch, &e);
        break;
    case BC_ISTFT: spectral_istft(c->pool, c->plan, c->out, -1, c->x, c->n, c->scratch, &e); break;
    case BC_VQ:
        vq_argmin(c->pool, c->idx, NULL, c->x, c->n, c->w, c->norms, c->m, c->k, c->scratch);
        break;
    }
}

static double bc_time(const struct bc_case *c, int reps)
{
    double t[32];
    bc_run_once(c); /* warm-up: page faults, OpenBLAS buffers */
    for (int r = 0; r < reps; r++) {
        double t0 = clock_seconds();
        bc_run_once(c);
        t[r] = clock_seconds() - t0;
    }
    return figure_median(t, reps);
}

/* A convolution and the equivalent sgemm, at 1 and 2 threads. */
static void bench_conv_shape(struct pool **pools, const char *name, const struct conv_params *p,
                             int64_t t_in, int reps)
{
    int64_t t_out = conv_1d_out_len(p, t_in), kd = (int64_t)p->c_in / p->groups * p->k;
    double flops = 2.0 * p->c_out * kd * t_out;
    size_t ns = conv_1d_scratch_floats(p, t_in, BENCH_CONV_THREADS);
    float *x = bc_alloc((size_t)(p->c_in * t_in)), *w = bc_alloc((size_t)(p->c_out * kd));
    float *b = bc_alloc((size_t)p->c_out), *out = bc_alloc((size_t)(p->c_out * t_out));
    float *scratch = bc_alloc(ns), *col = bc_alloc((size_t)(kd * t_out));
    if (x && w && b && out && scratch && col) {
        for (int t = 1; t <= BENCH_CONV_THREADS; t++) {
            struct bc_case c = { .op = BC_CONV,
                                 .pool = pools[t],
                                 .threads = t,
                                 .cp = *p,
                                 .t_in = t_in,
                                 .out = out,
                                 .x = x,
                                 .w = w,
                                 .b = b,
                                 .scratch = scratch };
            double s = bc_time(&c, reps);
            struct bc_case g = { .op = BC_SGEMM,
                                 .threads = t,
                                 .m = p->c_out,
                                 .n = t_out,
                                 .k = kd,
                                 .out = out,
                                 .x = col,
                                 .w = w };
            double sg = bc_time(&g, reps);
            printf("  %-44s %10.2f GFLOP/s (sgemm alone %.2f, %5.1f %%; %.2f ms)\n", name,
                   flops / s * 1e-9, flops / sg * 1e-9, 100.0 * sg / s, s * 1e3);
            name = "  same, 2 threads";
        }
    }
    free(x), free(w), free(b), free(out), free(scratch), free(col);
}

static void bench_convt_shape(struct pool **pools, const char *name,
                              const struct conv_transpose_params *p, int64_t t_in, int reps)
{
    int64_t t_out = conv_transpose_1d_out_len(p, t_in), rows = (int64_t)p->c_out * p->k;
    double flops = 2.0 * p->c_in * rows * t_in;
    float *x = bc_alloc((size_t)(p->c_in * t_in)), *w = bc_alloc((size_t)(p->c_in * rows));
    float *b = bc_alloc((size_t)p->c_out), *out = bc_alloc((size_t)(p->c_out * t_out));
    float *scratch = bc_alloc(conv_transpose_1d_scratch_floats(p, t_in, BENCH_CONV_THREADS));
    float *col = bc_alloc((size_t)(rows * t_in));
    if (x && w && b && out && scratch && col) {
        for (int t = 1; t <= BENCH_CONV_THREADS; t++) {
            struct bc_case c = { .op = BC_CONVT,
                                 .pool = pools[t],
                                 .threads = t,
                                 .tp = *p,
                                 .t_in = t_in,
                                 .out = out,
                                 .x = x,
                                 .w = w,
                                 .b = b,
                                 .scratch = scratch };
            double s = bc_time(&c, reps);
            /* the GEMM part alone: [rows x C_in] x [C_in x T_in] */
            struct bc_case g = { .op = BC_SGEMM,
                                 .threads = t,
                                 .m = rows,
                                 .n = t_in,
                                 .k = p->c_in,
                                 .out = col,
                                 .x = x,
                                 .w = w };
            double sg = bc_time(&g, reps);
            printf("  %-44s %10.2f GFLOP/s (sgemm alone %.2f, %5.1f %%; %.2f ms)\n", name,
                   flops / s * 1e-9, flops / sg * 1e-9, 100.0 * sg / s, s * 1e3);
            name = "  same, 2 threads";
        }
    }
    free(x), free(w), free(b), free(out), free(scratch), free(col);
}

static void bench_stft(struct pool **pools, int reps)
{
    struct spectral_plan plan;
    struct err e;
    float win[400];
    spectral_hann(win, 400, 1);
    if (spectral_plan_init(&plan, 400, 160, win, &e))
        return;
    int64_t l = 480000, frames = spectral_frames(&plan, l) - 1;
    float *x = bc_alloc((size_t)l), *out = bc_alloc((size_t)(2 * plan.n_bins * frames));
    float *scratch = bc_alloc(spectral_stft_scratch_floats(&plan, frames, BENCH_CONV_THREADS));
    if (x && out && scratch) {
        const char *name = "stft n_fft 400 hop 160, 30 s (3000 frames)";
        for (int t = 1; t <= BENCH_CONV_THREADS; t++) {
            struct bc_case c = { .op = BC_STFT,
                                 .pool = pools[t],
                                 .plan = &plan,
                                 .t_in = l,
                                 .n = frames,
                                 .out = out,
                                 .x = x,
                                 .scratch = scratch };
            double s = bc_time(&c, reps);
            double flops = 2.0 * 2 * plan.n_bins * plan.n_fft * (double)frames;
            printf("  %-44s %10.0f frames/s (%.2f ms, %.1f GFLOP/s as DFT-GEMM)\n", name,
                   frames / s, s * 1e3, flops / s * 1e-9);
            name = "  same, 2 threads";
        }
    }
    free(x), free(out), free(scratch);
    spectral_plan_free(&plan);
}

static void bench_istft(struct pool **pools, int reps)
{
    struct spectral_plan plan;
    struct err e;
    float win[16];
    spectral_hann(win, 16, 1);
    if (spectral_plan_init(&plan, 16, 4, win, &e))
        return;
    int64_t frames = 64 * 862 + 1; /* 10 s of 22.05 kHz audio: 862 mel frames */
    float *spec = bc_alloc((size_t)(2 * plan.n_bins * frames));
    float *out = bc_alloc((size_t)spectral_istft_len(&plan, frames));
    float *scratch = bc_alloc(spectral_istft_scratch_floats(&plan, frames));
    if (spec && out && scratch) {
        const char *name = "istft n_fft 16 hop 4, 10 s (HiFT)";
        for (int t = 1; t <= BENCH_CONV_THREADS; t++) {
            struct bc_case c = { .op = BC_ISTFT,
                                 .pool = pools[t],
                                 .plan = &plan,
                                 .n = frames,
                                 .out = out,
                                 .x = spec,
                                 .scratch = scratch };
            double s = bc_time(&c, reps);
            printf("  %-44s %10.0f frames/s (%.2f ms, %.0fx real time)\n", name, frames / s,
                   s * 1e3, 10.0 / s);
            name = "  same, 2 threads";
        }
    }
    free(spec), free(out), free(scratch);
    spectral_plan_free(&plan);
}

static void bench_vq(struct pool **pools, int reps)
{
    int64_t n = 375, j = 16384, d = 1280;
    float *x = bc_alloc((size_t)(n * d)), *cb = bc_alloc((size_t)(j * d));
    float *norms = bc_alloc((size_t)j);
    float *scratch = bc_alloc(vq_scratch_floats(n, j, BENCH_CONV_THREADS));
    int32_t *idx = malloc((size_t)n * sizeof *idx);
    if (x && cb && norms && scratch && idx) {
        vq_codebook_norms(norms, cb, j, d);
        const char *name = "vq 375 x 16384 x 1280 (30 s window)";
        for (int t = 1; t <= BENCH_CONV_THREADS; t++) {
            struct bc_case c = { .op = BC_VQ,
                                 .pool = pools[t],
                                 .n = n,
                                 .m = j,
                                 .k = d,
                                 .x = x,
                                 .w = cb,
                                 .norms = norms,
                                 .scratch = scratch,
                                 .idx = idx };
            double s = bc_time(&c, reps);
            printf("  %-44s %10.2f GFLOP/s (%.1f ms)\n", name, 2.0 * n * j * d / s * 1e-9, s * 1e3);
            name = "  same, 2 threads";
        }
    }
    free(x), free(cb), free(norms), free(scratch), free(idx);
}

void bench_conv_run(int quick)
{
    struct pool *pools[BENCH_CONV_THREADS + 1] = { NULL };
    for (int t = 1; t <= BENCH_CONV_THREADS; t++)
        pools[t] = pool_create(t);
    int reps = quick ? 3 : 9;

    struct conv_params flow = conv_params_make(256, 256, 3, 1, 1, 1, 1);
    bench_conv_shape(pools, "conv1d 256->256 k3, T 500 (flow)", &flow, 500, reps);
    bench_conv_shape(pools, "conv1d 256->256 k3, T 34 (flow, first block)", &flow, 34, reps);
    struct conv_params stem = conv_params_make(1280, 1280, 3, 2, 1, 0, 1);
    stem.pad_left = 2;
    if (!quick)
        bench_conv_shape(pools, "conv1d 1280->1280 k3 s2 causal, T 3000", &stem, 3000, 3);
    struct conv_params res = conv_params_make(128, 128, 11, 1, 5, 25, 1);
    bench_conv_shape(pools, "conv1d 128->128 k11 d5, T 12800 (HiFT)", &res, 12800, reps);
    struct conv_transpose_params ups = {
        .c_in = 512, .c_out = 256, .k = 16, .stride = 8, .dilation = 1, .pad = 4, .out_pad = 0
    };
    bench_convt_shape(pools, "conv_transpose1d 512->256 k16 s8, T 200", &ups, 200, reps);
    bench_stft(pools, reps);
    bench_istft(pools, reps);
    bench_vq(pools, quick ? 1 : 3);

    for (int t = 1; t <= BENCH_CONV_THREADS; t++)
        pool_free(pools[t]);
}
