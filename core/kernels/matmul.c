/*
 * matmul — OpenBLAS sgemm over panels of widened weights; gemv for a few rows; gemm_bf16 for
 * bf16 weights on AVX-512 BF16 CPUs.
 *
 * Shape letters: W [M][K], x [N][K], y [N][M]; a panel is rows [m0, m0 + P) of W, P =
 * MATMUL_PANEL_ROWS, widened to f32 as [P][K].
 *
 * OpenBLAS keeps its own thread count, process-wide. matmul_forward runs one single-threaded
 * sgemm per panel inside the pool's threads; matmul_f32 lets OpenBLAS thread itself with the
 * pool's thread count. Both set that count before each call, so parley expects one thread at
 * a time to call into them (the engine's scheduler).
 */
#include "kernels/blas.h"
#include "kernels/matmul.h"

#include <assert.h>
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_bf16.h"
#include "kernels/gemv.h"
#include "runtime/cpu.h"

static size_t panel_floats(const struct tensor *w)
{
    return (size_t)MATMUL_PANEL_ROWS * (size_t)w->ne[0];
}

size_t matmul_scratch_bytes(const struct pool *pool, const struct tensor *w)
{
    if (w->type == DTYPE_F32)
        return 0;
    size_t panels = (size_t)pool_threads(pool) * panel_floats(w) * sizeof(float);
    if (w->type != DTYPE_BF16)
        return panels;
    /* gemm_bf16's need is the smaller one, except for tiny K */
    size_t gemm = gemm_bf16_scratch_bytes(pool_threads(pool), w->ne[0]);
    return gemm > panels ? gemm : panels;
}

/* bf16 weights with this many rows or more go to gemm_bf16 on AVX-512 BF16 CPUs. */
static int use_gemm_bf16(const struct tensor *w, int64_t n)
{
    return w->type == DTYPE_BF16 && n >= MATMUL_BF16_MIN_ROWS && cpu_level() == CPU_LEVEL_AVX512;
}

struct job {
    float *y;
    const float *x;
    const struct tensor *w;
    const float *bias;
    int64_t n, m, k;
    float *scratch; /* one panel per thread */
    int threads;
};

/* Thread t of the pool (pool_for over one index per thread) takes a contiguous range of
 * panels; panel p always covers the same rows of W, whatever the thread count. */
static void run_panels(void *arg, int64_t t0, int64_t t1)
{
    const struct job *j = arg;
    const struct tensor *w = j->w;
    int64_t n_panels = (j->m + MATMUL_PANEL_ROWS - 1) / MATMUL_PANEL_ROWS;
    for (int64_t t = t0; t < t1; t++) {
        int64_t p0, p1;
        pool_range(n_panels, 1, j->threads, (int)t, &p0, &p1);
        float *panel = j->scratch ? j->scratch + (size_t)t * panel_floats(w) : NULL;
        for (int64_t p = p0; p < p1; p++) {
            int64_t m0 = p * MATMUL_PANEL_ROWS;
            int64_t rows = j->m - m0 < MATMUL_PANEL_ROWS ? j->m - m0 : MATMUL_PANEL_ROWS;
            const float *b;
            int64_t ldb;
            if (w->type == DTYPE_F32) {
                b = tensor_row(w, m0);
                ldb = (int64_t)(w->nb[1] / sizeof(float));
            } else {
                for (int64_t r = 0; r < rows; r++)
                    gemv_dequant(panel + r * j->k, tensor_row(w, m0 + r), w->type, j->k);
                b = panel;
                ldb = j->k;
            }
            float beta = 0.0f;
            if (j->bias) {
                for (int64_t i = 0; i < j->n; i++)
                    memcpy(j->y + i * j->m + m0, j->bias + m0, (size_t)rows * sizeof(float));
                beta = 1.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)j->n, (blasint)rows,
                        (blasint)j->k, 1.0f, j->x, (blasint)j->k, b, (blasint)ldb, beta, j->y + m0,
                        (blasint)j->m);
        }
    }
}

void matmul_forward(struct pool *pool, float *y, const float *x, const struct tensor *w,
                    const float *bias, int64_t n, void *scratch)
{
    assert(gemv_supports(w->type) && n >= 0);
    if (n <= GEMV_MAX_ROWS) {
        if (n > 0)
            gemv_forward(pool, y, x, w, bias, (int)n);
        return;
    }
    if (use_gemm_bf16(w, n)) {
        gemm_bf16_forward(pool, y, x, (const uint16_t *)tensor_row(w, 0), (size_t)w->nb[1], bias, n,
                          tensor_nrows(w), w->ne[0], scratch);
        return;
    }
    void *owned = NULL;
    if (!scratch && w->type != DTYPE_F32) {
        owned = scratch = aligned_alloc(64, (matmul_scratch_bytes(pool, w) + 63) & ~(size_t)63);
        if (!scratch) {
            gemv_forward(pool, y, x, w, bias, (int)(n < INT32_MAX ? n : INT32_MAX));
            return;
        }
    }
    struct job j = {
        .y = y,
        .x = x,
        .w = w,
        .bias = bias,
        .n = n,
        .m = tensor_nrows(w),
        .k = w->ne[0],
        .scratch = scratch,
        .threads = pool_threads(pool),
    };
    blas_threads(1);
    pool_for(pool, j.threads, 1, run_panels, &j);
    free(owned);
}

void matmul_f32(struct pool *pool, float *y, int64_t ldy, const float *a, int64_t lda,
                const float *b, int64_t ldb, int64_t n, int64_t m, int64_t k, int b_trans,
                float alpha, float beta)
{
    if (n <= 0 || m <= 0)
        return;
    blas_threads(pool_threads(pool));
    if (n == 1) { /* a one-row sgemm packs all of B: sgemv reads it once */
        if (b_trans)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)m, (blasint)k, alpha, b, (blasint)ldb,
                        a, 1, beta, y, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)k, (blasint)m, alpha, b, (blasint)ldb,
                        a, 1, beta, y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans, (blasint)n,
                (blasint)m, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, y,
                (blasint)ldy);
}
