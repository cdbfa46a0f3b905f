/*
 * gemm_q8 — dispatch, thread split, the portable quantizer and kernel.
 *
 * Shape letters as in gemm_q8.h: W [M][K] q8_0, x [N][K] f32, y [N][M] f32.
 */
#include "kernels/gemm_q8.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu.h"
#include "runtime/dtype.h"

#define QK       DTYPE_Q8_0_BLOCK
#define BLOCK_SZ (2 + QK) /* bytes of a q8_0 block */
#define GROUP_SZ (GEMM_Q8_GROUP * QK)

static int64_t groups_of(int64_t k)
{
    return (k / QK + GEMM_Q8_GROUP - 1) / GEMM_Q8_GROUP;
}

static size_t align64(size_t b)
{
    return (b + 63) & ~(size_t)63;
}

/* One row of x: q bytes, then d per block. */
static size_t x_row_bytes(int64_t groups)
{
    return (size_t)groups * GROUP_SZ;
}

/* Rows per pass for K inputs (gemm_q8.h). */
static int64_t pass_rows(int64_t groups)
{
    int64_t fit = (512 << 10) / (int64_t)(x_row_bytes(groups) + groups * GEMM_Q8_GROUP * 4);
    fit -= fit % GEMM_Q8_TILE_ROWS;
    return fit > GEMM_Q8_ROWS ? GEMM_Q8_ROWS : fit < GEMM_Q8_MIN_ROWS ? GEMM_Q8_MIN_ROWS : fit;
}

size_t gemm_q8_thread_bytes(int64_t groups)
{
    /* AVX-512: per output of a tile the transposed q, -128 * sum(q), d per block; AVX2: the
     * f32 lane sums of GEMM_Q8_ROWS rows */
    size_t tile = (size_t)GEMM_Q8_TILE_COLS * (size_t)groups * (GROUP_SZ + 2 * 64);
    size_t lanes = (size_t)GEMM_Q8_ROWS * GEMM_Q8_GROUP * sizeof(float);
    return align64(tile > lanes ? tile : lanes);
}

size_t gemm_q8_scratch_bytes(int threads, int64_t k)
{
    int64_t g = groups_of(k);
    return 64 + (size_t)GEMM_Q8_ROWS * align64(x_row_bytes(g)) +
           (size_t)GEMM_Q8_ROWS * align64((size_t)g * GEMM_Q8_GROUP * sizeof(float)) +
           (size_t)threads * gemm_q8_thread_bytes(g);
}

void gemm_q8_quantize_block(int8_t *q, float *d, const float *x)
{
    float amax = 0.0f;
    for (int i = 0; i < QK; i++)
        amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float s = amax / 127.0f;
    for (int i = 0; i < QK; i++)
        q[i] = s > 0.0f ? (int8_t)lrintf(x[i] / s) : 0; /* nearest, ties to even */
    *d = s;
}

/* Portable layout (AVX2 too): block b's q at xq + 32 b, zeros and d = 0 beyond K / 32. */
static void generic_quantize(uint8_t *xq, float *xd, const float *x, int64_t k, int64_t groups)
{
    int64_t nb = k / QK, nbp = groups * GEMM_Q8_GROUP;
    for (int64_t b = 0; b < nb; b++)
        gemm_q8_quantize_block((int8_t *)xq + b * QK, &xd[b], x + b * QK);
    memset(xq + nb * QK, 0, (size_t)(nbp - nb) * QK);
    for (int64_t b = nb; b < nbp; b++)
        xd[b] = 0.0f;
}

static float w_scale(const uint8_t *blk)
{
    uint16_t h;
    memcpy(&h, blk, sizeof h);
    return dtype_f16_to_f32(h);
}

/* The definition in gemm_q8.h, one output at a time. */
static void generic_cols(const struct gemm_q8_args *a, int64_t m0, int64_t m1)
{
    int64_t nb = a->k / QK;
    for (int64_t m = m0; m < m1; m++) {
        const uint8_t *wr = a->w + (size_t)m * a->w_stride;
        for (int64_t r = 0; r < a->n; r++) {
            const int8_t *xq = (const int8_t *)(a->xq + (size_t)r * x_row_bytes(a->groups));
            const float *xd = a->xd + r * a->groups * GEMM_Q8_GROUP;
            float lane[GEMM_Q8_GROUP] = { 0 };
            for (int64_t b = 0; b < a->groups * GEMM_Q8_GROUP; b++) {
                int32_t isum = 0;
                float s = 0.0f;
                if (b < nb) {
                    const int8_t *wq = (const int8_t *)(wr + b * BLOCK_SZ + 2);
                    for (int i = 0; i < QK; i++)
                        isum += (int32_t)xq[b * QK + i] * wq[i];
                    s = w_scale(wr + b * BLOCK_SZ) * xd[b];
                }
                float *acc = &lane[b % GEMM_Q8_GROUP];
                *acc = fmaf(s, (float)isum, *acc);
            }
            for (int w = GEMM_Q8_GROUP / 2; w > 0; w /= 2)
                for (int l = 0; l < w; l++)
                    lane[l] += lane[l + w];
            a->y[r * a->ldy + m] = lane[0] + (a->bias ? a->bias[m] : 0.0f);
        }
    }
}

struct job {
    struct gemm_q8_args args;
    enum cpu_level level;
    uint8_t *thread_scratch;
    size_t thread_bytes;
    int threads;
};

/* Thread t (pool_for over one index per thread) takes a contiguous range of whole tiles of
 * outputs; which thread computes an output does not change its bits. */
static void run_cols(void *arg, int64_t t0, int64_t t1)
{
    const struct job *j = arg;
    for (int64_t t = t0; t < t1; t++) {
        int64_t m0, m1;
        pool_range(j->args.ldy, GEMM_Q8_TILE_COLS, j->threads, (int)t, &m0, &m1);
        if (m0 >= m1)
            continue;
        void *s = j->thread_scratch + (size_t)t * j->thread_bytes;
        if (j->level == CPU_LEVEL_AVX512)
            gemm_q8_avx512_cols(&j->args, m0, m1, s);
        else if (j->level == CPU_LEVEL_AVX2)
            gemm_q8_avx2_cols(&j->args, m0, m1, s);
        else
            generic_cols(&j->args, m0, m1);
    }
}

struct quant_job {
    uint8_t *xq;
    float *xd;
    const float *x;
    int64_t k, groups;
    enum cpu_level level;
};

static void run_quantize(void *arg, int64_t begin, int64_t end)
{
    const struct quant_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        uint8_t *xq = j->xq + (size_t)r * align64(x_row_bytes(j->groups));
        float *xd = j->xd + r * j->groups * GEMM_Q8_GROUP;
        const float *x = j->x + r * j->k;
        if (j->level == CPU_LEVEL_AVX512)
            gemm_q8_avx512_quantize(xq, xd, x, j->k, j->groups);
        else /* AVX2 reads the portable layout */
            generic_quantize(xq, xd, x, j->k, j->groups);
    }
}

int gemm_q8_forward(struct pool *pool, float *y, const float *x, const void *w, size_t w_stride,
                    const float *bias, int64_t n, int64_t m, int64_t k, void *scratch)
{
    assert(n >= 0 && m >= 0 && k >= QK && k % QK == 0 && w_stride >= (size_t)(k / QK) * BLOCK_SZ);
    if (n == 0 || m == 0)
        return 0;
    int threads = pool_threads(pool);
    int64_t groups = groups_of(k);
    void *owned = NULL;
    if (!scratch)
        owned = scratch = malloc(gemm_q8_scratch_bytes(threads, k));
    if (!scratch)
        return -1;
    /* scratch: GEMM_Q8_ROWS rows of q, of d, then one kernel area per thread (a pass uses
     * pass_rows of them) */
    size_t qrow = align64(x_row_bytes(groups));
    size_t drow = align64((size_t)groups * GEMM_Q8_GROUP * sizeof(float));
    uint8_t *xq = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *xd = (float *)(xq + GEMM_Q8_ROWS * qrow);
    uint8_t *ts = (uint8_t *)xd + GEMM_Q8_ROWS * drow;
    enum cpu_level level = cpu_level();
    struct job j = { .level = level,
                     .thread_scratch = ts,
                     .thread_bytes = gemm_q8_thread_bytes(groups),
                     .threads = threads };
    const int64_t pass = pass_rows(groups);
    for (int64_t n0 = 0; n0 < n; n0 += pass) {
        int64_t rows = n - n0 < pass ? n - n0 : pass;
        struct quant_job qj = {
            .xq = xq, .xd = xd, .x = x + n0 * k, .k = k, .groups = groups, .level = level
        };
        pool_for(pool, rows, 4, run_quantize, &qj);
        j.args = (struct gemm_q8_args){ .y = y + n0 * m,
                                        .ldy = m,
                                        .xq = xq,
                                        .xd = xd,
                                        .w = w,
                                        .w_stride = w_stride,
                                        .bias = bias,
                                        .n = rows,
                                        .k = k,
                                        .groups = groups };
        pool_for(pool, threads, 1, run_cols, &j);
    }
    free(owned);
    return 0;
}
