/*
 * parley-bench — the machine's limits and parley's kernels measured against them, in the same
 * run (the machine is shared and noisy: every figure is a median of repeated runs).
 *
 *   parley-bench [--quick] [--json FILE] [--filter TEXT] [SECTION ...]
 *
 * Sections (all by default): read (memory read bandwidth), fma (FP32 FMA peak), sgemm
 * (OpenBLAS 4096³), gemv (decode GEMV at GLM-4-Voice-9B shapes), batch (GEMV with several
 * activation rows), matmul (prefill-sized products through matmul_forward); then the figures
 * of the other modules, each in its own file: attn, conv, lm, stok, voice, engine, load (a
 * real parleyd and `parley load`: first-audio latency for 1, 8, 32 talking sessions); bf16gemm
 * (gemm_bf16 at 16, 64 and 512 rows, x bf16 values and _f32x any f32, against sgemm of the
 * same shape in the same run, and at 16 rows against two passes of the 8-row GEMV). Each figure is
 * printed and, with --json, written as one JSON object per line:
 *   {"name": ..., "value": ..., "unit": ..., "limit": ..., "ratio": ...}
 * where limit is the machine figure the value is compared with (same thread count, measured
 * in this run) and ratio = value / limit. For GEMV the limit is the read kernel's bandwidth
 * over the same weight bytes, measured between the GEMV passes: on a shared host the
 * bandwidth drifts by tens of percent within seconds, and only a limit measured under the same
 * conditions makes the ratio mean something.
 *
 * OpenBLAS picks its kernel set when it loads, from the processor or from OPENBLAS_CORETYPE;
 * the header line names the set in use (on an AVX-512 machine, a Haswell set means AVX2
 * kernels at about half the sgemm speed).
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench/figure.h"
#include "kernels/blas.h"
#include "bench/bench.h"
#include "bench/bench_attn.h"
#include "bench/bench_conv.h"
#include "bench/bench_lm.h"
#include "bench/bench_stok.h"
#include "bench/bench_engine.h"
#include "bench/bench_load.h"
#include "bench/bench_voice.h"
#include "kernels/gemm_bf16.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "runtime/clock.h"

#define MAX_THREADS 2
#define GIB         (1024.0 * 1024.0 * 1024.0)
#define MIB         (1024.0 * 1024.0)

struct bench {
    int quick;
    const char *filter; /* --filter: only figures whose name contains it (gemv, batch, matmul;
                          lm: the configurations whose figures can match) */
    FILE *json;
    struct pool *pools[MAX_THREADS + 1]; /* pools[t]: t threads */
    double read_gbs[MAX_THREADS + 1];    /* 0 until measured */
    double fma_gflops[MAX_THREADS + 1];
    double sgemm_gflops[MAX_THREADS + 1];
};

/* ---- helpers -------------------------------------------------------------------------- */

/* Prints a figure and writes its JSON line; limit <= 0 means none applies. */

static int skip(const struct bench *b, const char *name)
{
    return b->filter && !strstr(name, b->filter);
}

/* Anonymous memory in ordinary 4 KiB pages (as model weights mmapped from a file are),
 * touched so that page faults are not measured. */
static void *big_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 0, bytes);
    return p;
}

static void big_free(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes);
}

static uint64_t rng = 88172645463325252ull;

static uint64_t rand_u64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static float rand_float(void)
{
    return (float)((rand_u64() >> 40) * 0x1p-24) * 2.0f - 1.0f;
}

/* ---- memory read bandwidth ----------------------------------------------------------- */

struct read_job {
    const float *p;
    int64_t n; /* per thread */
    double sums[MAX_THREADS];
};

static double read_range(const float *p, int64_t n)
{
    switch (cpu_level()) {
    case CPU_LEVEL_AVX512: return bench_avx512_read(p, n);
    case CPU_LEVEL_AVX2: return bench_avx2_read(p, n);
    default: {
        float s[16] = { 0 };
        for (int64_t i = 0; i < n; i += 16)
            for (int j = 0; j < 16; j++)
                s[j] += p[i + j];
        double t = 0;
        for (int j = 0; j < 16; j++)
            t += s[j];
        return t;
    }
    }
}

static void read_part(void *arg, int64_t t0, int64_t t1)
{
    struct read_job *j = arg;
    for (int64_t t = t0; t < t1; t++)
        j->sums[t] = read_range(j->p + t * j->n, j->n);
}

static void section_read(struct bench *b)
{
    size_t bytes = (size_t)GIB;
    float *p = big_alloc(bytes);
    if (!p) {
        printf("  read: cannot allocate 1 GiB\n");
        return;
    }
    for (size_t i = 0; i < bytes / sizeof *p; i++)
        p[i] = 1.0f;
    int runs = b->quick ? 5 : 9;
    for (int t = 1; t <= MAX_THREADS; t++) {
        struct read_job j = { .p = p, .n = (int64_t)(bytes / sizeof *p) / t / 128 * 128 };
        double gbs[16];
        read_part(&j, 0, 1); /* warm-up */
        for (int r = 0; r < runs; r++) {
            double t0 = clock_seconds();
            pool_for(b->pools[t], t, 1, read_part, &j);
            gbs[r] = (double)j.n * t * sizeof *p / (clock_seconds() - t0) / 1e9;
        }
        b->read_gbs[t] = figure_median(gbs, runs);
        char name[64];
        snprintf(name, sizeof name, "read_bandwidth_t%d", t);
        figure_emit(name, b->read_gbs[t], "GB/s", 0);
    }
    big_free(p, bytes);
}

/* ---- FMA peak ------------------------------------------------------------------------- */

struct fma_job {
    int64_t iters;
    double sink[MAX_THREADS];
};

static void fma_part(void *arg, int64_t t0, int64_t t1)
{
    struct fma_job *j = arg;
    for (int64_t t = t0; t < t1; t++)
        j->sink[t] =
            cpu_level() == CPU_LEVEL_AVX512 ? bench_avx512_fma(j->iters) : bench_avx2_fma(j->iters);
}

static void section_fma(struct bench *b)
{
    if (cpu_level() < CPU_LEVEL_AVX2) {
        printf("  fma: needs AVX2\n");
        return;
    }
    double flops_per_iter =
        cpu_level() == CPU_LEVEL_AVX512 ? BENCH_FMA_FLOPS_AVX512 : BENCH_FMA_FLOPS_AVX2;
    int runs = 5;
    for (int t = 1; t <= MAX_THREADS; t++) {
        struct fma_job j = { .iters = b->quick ? 2000000 : 8000000 };
        double g[8];
        fma_part(&j, 0, 1);
        for (int r = 0; r < runs; r++) {
            double t0 = clock_seconds();
            pool_for(b->pools[t], t, 1, fma_part, &j);
            g[r] = flops_per_iter * (double)j.iters * t / (clock_seconds() - t0) / 1e9;
        }
        b->fma_gflops[t] = figure_median(g, runs);
        char name[64];
        snprintf(name, sizeof name, "fma_peak_f32_t%d", t);
        figure_emit(name, b->fma_gflops[t], "GFLOP/s", 0);
    }
}

/* ---- OpenBLAS sgemm ------------------------------------------------------------------- */

static void section_sgemm(struct bench *b)
{
    const int n = 4096;
    size_t bytes = (size_t)n * n * sizeof(float);
    float *a = big_alloc(bytes), *w = big_alloc(bytes), *c = big_alloc(bytes);
    if (!a || !w || !c) {
        printf("  sgemm: cannot allocate\n");
        goto done;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = rand_float();
        w[i] = rand_float();
    }
    for (int t = 1; t <= MAX_THREADS; t++) {
        blas_threads(t);
        int runs = b->quick ? 1 : 3;
        double g[4];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n / 4, n, n, 1.0f, a, n, w, n, 0.0f, c,
                    n); /* warm-up: threads started, pages touched */
        for (int r = 0; r < runs; r++) {
            double t0 = clock_seconds();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, w, n, 0.0f, c,
                        n);
            g[r] = 2.0 * n * n * (double)n / (clock_seconds() - t0) / 1e9;
        }
        b->sgemm_gflops[t] = figure_median(g, runs);
        char name[64];
        snprintf(name, sizeof name, "sgemm_4096_t%d", t);
        figure_emit(name, b->sgemm_gflops[t], "GFLOP/s", b->fma_gflops[t]);
    }
done:
    big_free(a, bytes);
    big_free(w, bytes);
    big_free(c, bytes);
}

/* ---- GEMV ----------------------------------------------------------------------------- */

struct shape {
    int64_t m, k;
};

/* GLM-4-Voice-9B: fused QKV (4096 + 2 * 2 * 128), attention output, fused gate+up (2 *
 * 13696), down projection. */
static const struct shape lm_shapes[] = {
    { 4608, 4096 }, { 4096, 4096 }, { 27392, 4096 }, { 4096, 13696 }
};
static const enum dtype gemv_types[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0 };

/* Weight copies in an arena, rotated so that every measurement reads more than 256 MiB and
 * nothing is served from the 32 MiB last-level cache. */
struct arena {
    uint8_t *mem;
    size_t bytes;
};

static int arena_init(struct arena *a, size_t bytes)
{
    a->bytes = bytes;
    a->mem = big_alloc(bytes);
    if (!a->mem)
        return -1;
    /* u16 values 0x3000..0x3bff are finite normal numbers as f16 and bf16, as the high half
     * of an f32, and as the scale of a Q8_0 block (blocks start at even offsets) */
    uint16_t *h = (uint16_t *)a->mem;
    for (size_t i = 0; i < bytes / 2; i++)
        h[i] = (uint16_t)(0x3000 + (rand_u64() >> 54));
    return 0;
}

/* GB/s of weight bytes read by gemv_forward for one type and shape (median of passes over
 * all copies); *rows_per_s gets activation rows per second, and *read_gbs the bandwidth of the
 * read kernel over the same bytes with the same threads, measured between the passes so that
 * both see the same state of the (shared, noisy) machine. */
static double measure_gemv(struct bench *b, struct arena *ar, struct pool *pool, enum dtype t,
                           struct shape s, int n_rows, double *rows_per_s, double *read_gbs)
{
    size_t bytes = dtype_row_bytes(t, (uint64_t)s.k) * (size_t)s.m;
    int copies = (int)(ar->bytes / bytes);
    if (copies < 1)
        return 0;
    if (copies > 64)
        copies = 64;
    struct tensor w[64];
    for (int c = 0; c < copies; c++) {
        int64_t ne[2] = { s.k, s.m };
        tensor_init(&w[c], "w", t, 2, ne, ar->mem + (size_t)c * bytes);
    }
    /* activations 64-byte aligned, as the engine allocates them */
    float *x = aligned_alloc(64, ((size_t)(n_rows * s.k) * sizeof *x + 63) & ~(size_t)63);
    float *y = malloc((size_t)(n_rows * s.m) * sizeof *y);
    if (!x || !y) {
        free(x);
        free(y);
        return 0;
    }
    for (int64_t i = 0; i < n_rows * s.k; i++)
        x[i] = rand_float();
    int passes = b->quick ? 5 : 7, threads = pool_threads(pool);
    /* at least ~0.25 s of work per figure for the small matrices */
    int reps = (int)(256.0 * MIB / ((double)bytes * copies));
    if (reps < 1)
        reps = 1;
    struct read_job rj = { .p = (const float *)ar->mem,
                           .n = (int64_t)(bytes * copies / sizeof(float)) / threads / 128 * 128 };
    double gbs[16], rps[16], rgbs[16];
    for (int c = 0; c < copies; c++) /* warm-up */
        gemv_forward(pool, y, x, &w[c], NULL, n_rows);
    for (int p = 0; p < passes; p++) {
        double t0 = clock_seconds();
        for (int r = 0; r < reps; r++)
            for (int c = 0; c < copies; c++)
                gemv_forward(pool, y, x, &w[c], NULL, n_rows);
        double dt = clock_seconds() - t0;
        gbs[p] = (double)bytes * copies * reps / dt / 1e9;
        rps[p] = (double)n_rows * copies * reps / dt;
        t0 = clock_seconds();
        for (int r = 0; r < reps; r++)
            pool_for(pool, threads, 1, read_part, &rj);
        rgbs[p] = (double)rj.n * threads * sizeof(float) * reps / (clock_seconds() - t0) / 1e9;
    }
    free(x);
    free(y);
    if (rows_per_s)
        *rows_per_s = figure_median(rps, passes);
    if (read_gbs)
        *read_gbs = figure_median(rgbs, passes);
    return figure_median(gbs, passes);
}

static void section_gemv(struct bench *b)
{
    struct arena ar;
    if (arena_init(&ar, (size_t)512 * (size_t)MIB) < 0) {
        printf("  gemv: cannot allocate the weight arena\n");
        return;
    }
    for (int t = 1; t <= MAX_THREADS; t++) {
        for (size_t ti = 0; ti < sizeof gemv_types / sizeof gemv_types[0]; ti++) {
            for (size_t si = 0; si < sizeof lm_shapes / sizeof lm_shapes[0]; si++) {
                struct shape s = lm_shapes[si];
                char name[96];
                snprintf(name, sizeof name, "gemv_%s_%lldx%lld_t%d",
                         dtype_info(gemv_types[ti])->name, (long long)s.m, (long long)s.k, t);
                if (skip(b, name))
                    continue;
                double read = 0;
                double gbs = measure_gemv(b, &ar, b->pools[t], gemv_types[ti], s, 1, NULL, &read);
                if (gbs > 0)
                    figure_emit(name, gbs, "GB/s", read);
                else
                    printf("  %s: does not fit the arena\n", name);
            }
        }
    }
    big_free(ar.mem, ar.bytes);
}

static void section_batch(struct bench *b)
{
    struct arena ar;
    if (arena_init(&ar, (size_t)512 * (size_t)MIB) < 0) {
        printf("  batch: cannot allocate the weight arena\n");
        return;
    }
    static const enum dtype types[] = { DTYPE_BF16, DTYPE_Q8_0 };
    static const int rows[] = { 1, 2, 4, 8 };
    struct shape s = { 4096, 4096 };
    for (int t = 1; t <= MAX_THREADS; t++) {
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            if (b->quick && types[ti] != DTYPE_BF16)
                continue;
            double single = 0;
            for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++) {
                char name[96];
                snprintf(name, sizeof name, "gemv_batch_%s_4096x4096_r%d_t%d",
                         dtype_info(types[ti])->name, rows[ri], t);
                if (rows[ri] > 1 && skip(b, name))
                    continue;
                double rps = 0;
                measure_gemv(b, &ar, b->pools[t], types[ti], s, rows[ri], &rps, NULL);
                if (rows[ri] == 1)
                    single = rps;
                if (skip(b, name))
                    continue;
                /* limit: perfect scaling of the one-row rate */
                figure_emit(name, rps, "rows/s", rows[ri] > 1 ? single * rows[ri] : 0);
            }
        }
    }
    big_free(ar.mem, ar.bytes);
}

/* ---- matmul (prefill) ----------------------------------------------------------------- */

static void section_matmul(struct bench *b)
{
    const int64_t m = 4096, k = 4096, n = b->quick ? 128 : 256;
    struct arena ar;
    if (arena_init(&ar, (size_t)m * (size_t)k * 4) < 0) {
        printf("  matmul: cannot allocate\n");
        return;
    }
    float *x = malloc((size_t)(n * k) * sizeof *x), *y = malloc((size_t)(n * m) * sizeof *y);
    void *scratch = malloc((size_t)MAX_THREADS * MATMUL_PANEL_ROWS * (size_t)k * sizeof(float));
    if (!x || !y || !scratch)
        goto done;
    for (int64_t i = 0; i < n * k; i++)
        x[i] = rand_float();
    for (int t = 1; t <= MAX_THREADS; t++) {
        for (size_t ti = 0; ti < sizeof gemv_types / sizeof gemv_types[0]; ti++) {
            char name[96];
            snprintf(name, sizeof name, "matmul_%s_4096x4096_n%lld_t%d",
                     dtype_info(gemv_types[ti])->name, (long long)n, t);
            if (skip(b, name))
                continue;
            struct tensor w;
            int64_t ne[2] = { k, m };
            tensor_init(&w, "w", gemv_types[ti], 2, ne, ar.mem);
            int runs = b->quick ? 3 : 5;
            double g[8];
            matmul_forward(b->pools[t], y, x, &w, NULL, n, scratch);
            for (int r = 0; r < runs; r++) {
                double t0 = clock_seconds();
                matmul_forward(b->pools[t], y, x, &w, NULL, n, scratch);
                g[r] = 2.0 * (double)(n * m) * (double)k / (clock_seconds() - t0) / 1e9;
            }
            figure_emit(name, figure_median(g, runs), "GFLOP/s", b->sgemm_gflops[t]);
        }
        /* the same f32 product as one sgemm threaded by OpenBLAS itself, for comparison */
        char name[96];
        snprintf(name, sizeof name, "matmul_f32_openblas_threads_n%lld_t%d", (long long)n, t);
        if (skip(b, name))
            continue;
        int runs = b->quick ? 3 : 5;
        double g[8];
        const float *wf = (const float *)ar.mem;
        for (int r = 0; r <= runs; r++) {
            double t0 = clock_seconds();
            matmul_f32(b->pools[t], y, m, x, k, wf, k, n, m, k, 1, 1.0f, 0.0f);
            if (r > 0)
                g[r - 1] = 2.0 * (double)(n * m) * (double)k / (clock_seconds() - t0) / 1e9;
        }
        figure_emit(name, figure_median(g, runs), "GFLOP/s", b->sgemm_gflops[t]);
    }
done:
    free(x);
    free(y);
    free(scratch);
    big_free(ar.mem, ar.bytes);
}

/* ---- bf16 GEMM (prefill and wide batched decode with bf16 weights) ---------------------- */

/* Median GFLOP/s of y[n][m] = x · Wᵀ by: 0 gemm_bf16_forward (one pass when x holds bf16
 * values, as the LM's normed activations do; two for other f32), 1 sgemm on an f32 copy of W
 * (OpenBLAS with the same thread count), 2 gemv_forward in groups of GEMV_MAX_ROWS rows (the
 * LM's decode path for non-bf16 weights; bf16 weights use gemm_bf16_rounded). */
static double measure_bf16gemm(struct bench *b, int how, struct pool *pool, float *y,
                               const float *x, uint16_t *wb, const float *wf, int64_t n, int64_t m,
                               int64_t k, void *scratch)
{
    int runs = b->quick ? 3 : 5;
    double flop = 2.0 * (double)n * (double)m * (double)k, g[8];
    struct tensor w;
    int64_t ne[2] = { k, m };
    tensor_init(&w, "w", DTYPE_BF16, 2, ne, wb);
    blas_threads(pool_threads(pool));
    /* at least ~0.2 s per figure for the small products */
    int reps = (int)(0.2 * 100e9 / flop) + 1;
    for (int r = 0; r <= runs; r++) {
        double t0 = clock_seconds();
        for (int i = 0; i < reps; i++) {
            if (how == 0)
                gemm_bf16_forward(pool, y, x, wb, (size_t)k * 2, NULL, n, m, k, scratch);
            else if (how == 1)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)n, (blasint)m,
                            (blasint)k, 1.0f, x, (blasint)k, wf, (blasint)k, 0.0f, y, (blasint)m);
            else
                for (int64_t r0 = 0; r0 < n; r0 += GEMV_MAX_ROWS)
                    gemv_forward(pool, y + r0 * m, x + r0 * k, &w, NULL,
                                 (int)(n - r0 < GEMV_MAX_ROWS ? n - r0 : GEMV_MAX_ROWS));
        }
        if (r > 0) /* the first run is a warm-up */
            g[r - 1] = flop * reps / (clock_seconds() - t0) / 1e9;
    }
    return figure_median(g, runs);
}

static void section_bf16gemm(struct bench *b)
{
    static const struct shape shapes[] = { { 4096, 4096 }, { 27392, 4096 } };
    static const int64_t ns[] = { 16, 64, 512 };
    if (cpu_level() != CPU_LEVEL_AVX512)
        printf("  (no AVX-512 BF16: gemm_bf16 runs its portable kernel)\n");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t m = shapes[si].m, k = shapes[si].k, nmax = 512;
        if (b->quick && si > 0)
            continue;
        uint16_t *wb = big_alloc((size_t)(m * k) * sizeof *wb);
        float *wf = big_alloc((size_t)(m * k) * sizeof *wf);
        float *x = aligned_alloc(64, (size_t)(nmax * k) * sizeof *x);
        float *xr = aligned_alloc(64, (size_t)(nmax * k) * sizeof *xr); /* x as bf16 values */
        float *y = malloc((size_t)(nmax * m) * sizeof *y);
        void *scratch = malloc(gemm_bf16_scratch_bytes(MAX_THREADS, k));
        if (!wb || !wf || !x || !xr || !y || !scratch) {
            printf("  bf16gemm: cannot allocate\n");
            goto next;
        }
        for (int64_t i = 0; i < m * k; i++) {
            wb[i] = dtype_f32_to_bf16(rand_float());
            wf[i] = dtype_bf16_to_f32(wb[i]);
        }
        for (int64_t i = 0; i < nmax * k; i++) {
            x[i] = rand_float();
            xr[i] = dtype_bf16_to_f32(dtype_f32_to_bf16(x[i]));
        }
        for (int t = 1; t <= MAX_THREADS; t++) {
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                int64_t n = ns[ni];
                char name[96];
                snprintf(name, sizeof name, "bf16gemm_%lldx%lld_n%lld_t%d", (long long)m,
                         (long long)k, (long long)n, t);
                if (skip(b, name))
                    continue;
                struct pool *p = b->pools[t];
                double sg = measure_bf16gemm(b, 1, p, y, x, wb, wf, n, m, k, scratch);
                double gg = measure_bf16gemm(b, 0, p, y, xr, wb, wf, n, m, k, scratch);
                double gf = measure_bf16gemm(b, 0, p, y, x, wb, wf, n, m, k, scratch);
                /* limit: sgemm of the same shape in the same run */
                figure_emit(name, gg, "GFLOP/s", sg); /* x bf16 values: one pass */
                snprintf(name, sizeof name, "bf16gemm_%lldx%lld_n%lld_t%d_f32x", (long long)m,
                         (long long)k, (long long)n, t);
                figure_emit(name, gf, "GFLOP/s", sg); /* x any f32: hi + lo, two passes */
                snprintf(name, sizeof name, "bf16gemm_%lldx%lld_n%lld_t%d_sgemm", (long long)m,
                         (long long)k, (long long)n, t);
                figure_emit(name, sg, "GFLOP/s", 0);
                if (n <= 2 * GEMV_MAX_ROWS) { /* wide decode: vs 2 passes of the 8-row GEMV */
                    double gv = measure_bf16gemm(b, 2, p, y, xr, wb, wf, n, m, k, scratch);
                    snprintf(name, sizeof name, "bf16gemm_%lldx%lld_n%lld_t%d_gemv", (long long)m,
                             (long long)k, (long long)n, t);
                    figure_emit(name, gv, "GFLOP/s", gg); /* ratio < 1: gemm_bf16 is faster */
                }
            }
        }
    next:
        big_free(wb, (size_t)(m * k) * sizeof *wb);
        big_free(wf, (size_t)(m * k) * sizeof *wf);
        free(x);
        free(xr);
        free(y);
        free(scratch);
    }
}

/* ---- the other modules' figures (tests/bench/bench_*.c) ----------------------------------- */

static void section_attn(struct bench *b)
{
    bench_attn_run(b->quick);
}

static void section_conv(struct bench *b)
{
    bench_conv_run(b->quick);
}

static void section_lm(struct bench *b)
{
    bench_lm_run(b->quick, b->filter);
}

static void section_stok(struct bench *b)
{
    bench_stok_run(b->quick);
}

static void section_engine(struct bench *b)
{
    bench_engine_run(b->quick);
}

static void section_voice(struct bench *b)
{
    bench_voice_run(b->quick);
}

static void section_load(struct bench *b)
{
    bench_load_run(b->quick);
}

/* ---- main ----------------------------------------------------------------------------- */

struct section {
    const char *name;
    void (*run)(struct bench *b);
};

static const struct section sections[] = {
    { "read", section_read },     { "fma", section_fma },     { "sgemm", section_sgemm },
    { "gemv", section_gemv },     { "batch", section_batch }, { "matmul", section_matmul },
    { "attn", section_attn },     { "conv", section_conv },   { "lm", section_lm },
    { "stok", section_stok },     { "voice", section_voice }, { "bf16gemm", section_bf16gemm },
    { "engine", section_engine }, { "load", section_load },
};
#define N_SECTIONS (int)(sizeof sections / sizeof sections[0])

static void usage(void)
{
    fprintf(stderr, "usage: parley-bench [--quick] [--json FILE] [--filter TEXT] [SECTION ...]\n"
                    "sections:");
    for (int i = 0; i < N_SECTIONS; i++)
        fprintf(stderr, " %s", sections[i].name);
    fprintf(stderr, "\n");
}

int main(int argc, char **argv)
{
    struct bench b = { 0 };
    int want[N_SECTIONS] = { 0 }, any = 0;
    const char *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            b.quick = 1;
        } else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) {
            b.filter = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json_path = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        } else {
            int found = 0;
            for (int s = 0; s < N_SECTIONS; s++)
                if (strcmp(argv[i], sections[s].name) == 0)
                    want[s] = found = any = 1;
            if (!found) {
                usage();
                return 2;
            }
        }
    }
    if (json_path && !(b.json = fopen(json_path, "w"))) {
        perror(json_path);
        return 1;
    }
    figure_set_json(b.json);
    for (int t = 1; t <= MAX_THREADS; t++)
        if (!(b.pools[t] = pool_create(t))) {
            fprintf(stderr, "parley-bench: cannot start threads\n");
            return 1;
        }
    printf("parley-bench: cpu level %s, OpenBLAS %s (%s)%s\n", cpu_level_name(cpu_level()),
           openblas_get_config(), openblas_get_corename(), b.quick ? ", quick" : "");
    const char *core = getenv("OPENBLAS_CORETYPE");
    if (core && cpu_detect() == CPU_LEVEL_AVX512 && strcmp(openblas_get_corename(), "Haswell") == 0)
        printf("note: OPENBLAS_CORETYPE=%s in the environment holds OpenBLAS to AVX2 kernels "
               "on this AVX-512 processor\n",
               core);
    /* ratios need the limits measured in this run */
    if (any && want[5])
        want[2] = 1;
    if (any && want[2])
        want[1] = 1;
    double t0 = clock_seconds();
    for (int s = 0; s < N_SECTIONS; s++) {
        if (any && !want[s])
            continue;
        printf("%s\n", sections[s].name);
        double ts = clock_seconds();
        sections[s].run(&b);
        printf("(%s: %.0f s)\n", sections[s].name, clock_seconds() - ts);
    }
    printf("done in %.0f s\n", clock_seconds() - t0);
    for (int t = 1; t <= MAX_THREADS; t++)
        pool_free(b.pools[t]);
    if (b.json)
        fclose(b.json);
    return 0;
}
