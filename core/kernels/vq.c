/*
 * vq — see vq.h. Shape letters: N queries, J codebook rows, D dimensions.
 *
 * The N x J distance matrix is never held whole (375 x 16384 floats for a 30 s window): it is
 * cut into fixed tiles of at most VQ_ROWS queries x VQ_COLS codebook rows. Each tile is one
 * single-threaded BLAS call into its thread's scratch slot, followed by a scan that leaves the
 * tile's per-query minimum and the first few indices within a small margin of it; a final
 * pass merges the tiles of each query in codebook order. Tile
 * shapes depend only on N and J, so any thread count gives identical results.
 */
#include "kernels/blas.h"
#include "kernels/vq.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>

#define VQ_ROWS     512 /* queries per tile (a 30 s window has 375) */
#define VQ_COLS     512 /* codebook rows per tile */
#define VQ_GEMV_MAX 3   /* tiles with this few queries use sgemv: a 1-row sgemm is ~4x slower */
#define VQ_CAND     8   /* near-minimum candidates kept per tile and query */

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static float sum_squares(const float *v, int64_t d)
{
    double s = 0.0;
    for (int64_t i = 0; i < d; i++) {
        float sq = v[i] * v[i]; /* torch squares in float32 first */
        s += sq;
    }
    return (float)s;
}

void vq_codebook_norms(float *norms, const float *codebook, int64_t j, int64_t d)
{
    for (int64_t r = 0; r < j; r++)
        norms[r] = sum_squares(codebook + r * d, d);
}

static int64_t tile_floats(int64_t n, int64_t j)
{
    return min64(n, VQ_ROWS) * min64(j, VQ_COLS);
}

size_t vq_scratch_floats(int64_t n, int64_t j, int n_threads)
{
    int64_t n_cb = (j + VQ_COLS - 1) / VQ_COLS;
    return (size_t)((n_threads < 1 ? 1 : n_threads) * tile_floats(n, j) + n +
                    n_cb * n * (1 + VQ_CAND));
}

struct vq_job {
    const float *x, *codebook, *norms, *xn;
    int64_t n, j, d, n_cb, n_tiles;
    int n_slots;
    float cn_max;
    float *slots;
    float *res_v; /* [n_cb][N]: each tile's minimum per query */
    float *cand;  /* [n_cb][N][VQ_CAND]: the tile's first indices within the margin, or -1 */
    int32_t *idx;
    float *dist_out;
};

/* Distances within this much of a row's minimum are re-ranked exactly (see vq_refine): a few
 * times the float32 formula's rounding error, which is ~sqrt(D) ulps of ||x||^2 + ||c||^2. */
static float vq_margin(const struct vq_job *jb, int64_t i)
{
    return 0x1p-17f * (jb->xn[i] + jb->cn_max);
}

static void vq_tile(const struct vq_job *jb, int64_t tile, float *dist)
{
    int64_t n0 = tile / jb->n_cb * VQ_ROWS, nr = min64(VQ_ROWS, jb->n - n0);
    int64_t cb = tile % jb->n_cb, j0 = cb * VQ_COLS, nc = min64(VQ_COLS, jb->j - j0);
    const float *c = jb->codebook + j0 * jb->d;
    for (int64_t i = 0; i < nr; i++)
        for (int64_t k = 0; k < nc; k++)
            dist[i * nc + k] = jb->norms[j0 + k] + jb->xn[n0 + i];
    if (nr <= VQ_GEMV_MAX) {
        for (int64_t i = 0; i < nr; i++)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nc, (int)jb->d, -2.0f, c, (int)jb->d,
                        jb->x + (n0 + i) * jb->d, 1, 1.0f, dist + i * nc, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)nc, (int)jb->d, -2.0f,
                    jb->x + n0 * jb->d, (int)jb->d, c, (int)jb->d, 1.0f, dist, (int)nc);
    }
    for (int64_t i = 0; i < nr; i++) {
        const float *row = dist + i * nc;
        float best = INFINITY;
        for (int64_t k = 0; k < nc; k++)
            best = row[k] < best ? row[k] : best;
        float limit = best + vq_margin(jb, n0 + i);
        float *cand = jb->cand + (cb * jb->n + n0 + i) * VQ_CAND;
        int m = 0;
        for (int64_t k = 0; k < nc && m < VQ_CAND; k++)
            if (row[k] <= limit)
                cand[m++] = (float)(j0 + k);
        for (; m < VQ_CAND; m++)
            cand[m] = -1.0f;
        jb->res_v[cb * jb->n + n0 + i] = best;
    }
}

static void vq_slots(void *arg, int64_t begin, int64_t end)
{
    const struct vq_job *jb = arg;
    int64_t tf = tile_floats(jb->n, jb->j);
    for (int64_t s = begin; s < end; s++)
        for (int64_t t = s * jb->n_tiles / jb->n_slots; t < (s + 1) * jb->n_tiles / jb->n_slots;
             t++)
            vq_tile(jb, t, jb->slots + s * tf);
}

/*
 * BLAS kernels round a dot product differently depending on where its column falls in the
 * tile (OpenBLAS's edge kernels: identical codebook rows measured -4.95532227 vs -4.95532322),
 * so the GEMM alone cannot promise that exact ties go to the lowest index. Candidates within
 * the margin of the minimum are therefore re-ranked with the reference's formula on a dot
 * product accumulated in double and rounded once, (||c||^2 + ||x||^2) - 2 (x.c), in codebook
 * order with a strict '<': exact ties go to the lowest index, and the choice no longer
 * depends on the tiling, the batch size or the BLAS.
 */
static void vq_refine(void *arg, int64_t begin, int64_t end)
{
    const struct vq_job *jb = arg;
    for (int64_t i = begin; i < end; i++) {
        float vmin = INFINITY;
        for (int64_t cb = 0; cb < jb->n_cb; cb++)
            vmin = jb->res_v[cb * jb->n + i] < vmin ? jb->res_v[cb * jb->n + i] : vmin;
        float limit = vmin + vq_margin(jb, i), best = INFINITY;
        int32_t at = 0;
        const float *x = jb->x + i * jb->d;
        for (int64_t cb = 0; cb < jb->n_cb; cb++) {
            if (!(jb->res_v[cb * jb->n + i] <= limit))
                continue;
            const float *cand = jb->cand + (cb * jb->n + i) * VQ_CAND;
            for (int m = 0; m < VQ_CAND && cand[m] >= 0.0f; m++) {
                int64_t r = (int64_t)cand[m];
                const float *c = jb->codebook + r * jb->d;
                double dot = 0.0;
                for (int64_t k = 0; k < jb->d; k++)
                    dot += (double)x[k] * c[k];
                float v = (jb->norms[r] + jb->xn[i]) - 2.0f * (float)dot;
                if (v < best) {
                    best = v;
                    at = (int32_t)r;
                }
            }
        }
        jb->idx[i] = at;
        if (jb->dist_out)
            jb->dist_out[i] = best;
    }
}

void vq_argmin(struct pool *pool, int32_t *idx, float *dist_out, const float *x, int64_t n,
               const float *codebook, const float *norms, int64_t j, int64_t d, float *scratch)
{
    assert(j >= 1 && j < (1 << 24) && d >= 1 && d < INT32_MAX); /* indices travel as floats */
    if (n <= 0)
        return;
    struct vq_job jb = { .x = x,
                         .codebook = codebook,
                         .norms = norms,
                         .n = n,
                         .j = j,
                         .d = d,
                         .n_cb = (j + VQ_COLS - 1) / VQ_COLS,
                         .n_slots = pool_threads(pool),
                         .idx = idx,
                         .dist_out = dist_out };
    jb.n_tiles = (n + VQ_ROWS - 1) / VQ_ROWS * jb.n_cb;
    jb.slots = scratch;
    float *xn = scratch + jb.n_slots * tile_floats(n, j);
    jb.xn = xn;
    jb.res_v = xn + n;
    jb.cand = jb.res_v + jb.n_cb * n;
    for (int64_t i = 0; i < n; i++)
        xn[i] = sum_squares(x + i * d, d);
    jb.cn_max = 0.0f;
    for (int64_t r = 0; r < j; r++)
        jb.cn_max = norms[r] > jb.cn_max ? norms[r] : jb.cn_max;

    blas_threads(1);
    pool_for(pool, jb.n_slots, 1, vq_slots, &jb);
    pool_for(pool, n, 16, vq_refine, &jb);
}
