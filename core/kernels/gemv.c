/*
 * gemv — dispatch to the kernel of this CPU's level, thread split, and the portable kernel.
 *
 * Shape letters: W [M][K] (ne = {K, M}), x [R][K], y [R][M]; R = activation rows.
 */
#include "kernels/gemv.h"

#include <assert.h>

#include "runtime/cpu.h"

/* Output rows per unit of the thread split: a multiple of every kernel's row group, so that
 * threads start on group boundaries and no thread gets a sliver. */
#define GEMV_GRAIN 16

/* Elements of a weight row the portable kernel widens at a time (a multiple of 32). */
#define GENERIC_SPAN  256
#define GENERIC_LANES 8

int gemv_supports(enum dtype t)
{
    return t == DTYPE_F32 || t == DTYPE_F16 || t == DTYPE_BF16 || t == DTYPE_Q8_0;
}

/*
 * Portable kernel: widens GENERIC_SPAN elements of a weight row at a time (dtype_to_f32) and
 * accumulates each activation row in GENERIC_LANES partial sums (element k into lane k % 8),
 * added in a fixed order at the end: a layout compilers vectorize, and one whose rounding
 * does not depend on R.
 */
static void generic_rows(const struct gemv_args *a, int64_t m0, int64_t m1)
{
    float wbuf[GENERIC_SPAN];
    const struct dtype_info *info = dtype_info(a->type);
    for (int64_t m = m0; m < m1; m++) {
        const uint8_t *row = a->w + (size_t)m * a->w_stride;
        float acc[GEMV_MAX_ROWS][GENERIC_LANES] = { { 0 } };
        for (int64_t k0 = 0; k0 < a->k; k0 += GENERIC_SPAN) {
            int64_t n = a->k - k0 < GENERIC_SPAN ? a->k - k0 : GENERIC_SPAN;
            dtype_to_f32(a->type, row + (size_t)(k0 / info->block) * info->block_bytes, wbuf, n);
            for (int r = 0; r < a->n_rows; r++) {
                const float *x = a->x + r * a->ldx + k0;
                int64_t j = 0;
                for (; j + GENERIC_LANES <= n; j += GENERIC_LANES)
                    for (int l = 0; l < GENERIC_LANES; l++)
                        acc[r][l] += wbuf[j + l] * x[j + l];
                for (int l = 0; j + l < n; l++)
                    acc[r][l] += wbuf[j + l] * x[j + l];
            }
        }
        for (int r = 0; r < a->n_rows; r++) {
            float s = ((acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3])) +
                      ((acc[r][4] + acc[r][5]) + (acc[r][6] + acc[r][7]));
            if (a->bias)
                s += a->bias[m];
            a->y[r * a->ldy + m] = s;
        }
    }
}

struct job {
    struct gemv_args args;
    void (*rows)(const struct gemv_args *a, int64_t m0, int64_t m1);
};

static void run_job(void *arg, int64_t begin, int64_t end)
{
    const struct job *j = arg;
    j->rows(&j->args, begin, end);
}

void gemv_forward_strided(struct pool *pool, float *y, int64_t ldy, const float *x, int64_t ldx,
                          const struct tensor *w, const float *bias, int n_rows)
{
    assert(gemv_supports(w->type));
    struct job j;
    switch (cpu_level()) {
    case CPU_LEVEL_AVX512: j.rows = gemv_avx512_rows; break;
    case CPU_LEVEL_AVX2: j.rows = gemv_avx2_rows; break;
    default: j.rows = generic_rows; break;
    }
    int64_t m = tensor_nrows(w);
    j.args = (struct gemv_args){
        .ldy = ldy,
        .ldx = ldx,
        .w = w->data,
        .w_stride = w->nb[1],
        .bias = bias,
        .k = w->ne[0],
        .type = w->type,
    };
    for (int r0 = 0; r0 < n_rows; r0 += GEMV_MAX_ROWS) {
        j.args.y = y + r0 * ldy;
        j.args.x = x + r0 * ldx;
        j.args.n_rows = n_rows - r0 < GEMV_MAX_ROWS ? n_rows - r0 : GEMV_MAX_ROWS;
        pool_for(pool, m, GEMV_GRAIN, run_job, &j);
    }
}

void gemv_forward(struct pool *pool, float *y, const float *x, const struct tensor *w,
                  const float *bias, int n_rows)
{
    gemv_forward_strided(pool, y, tensor_nrows(w), x, w->ne[0], w, bias, n_rows);
}

void gemv_dequant(float *dst, const void *src, enum dtype t, int64_t n)
{
    switch (cpu_level()) {
    case CPU_LEVEL_AVX512: gemv_avx512_dequant(dst, src, t, n); break;
    case CPU_LEVEL_AVX2: gemv_avx2_dequant(dst, src, t, n); break;
    default: dtype_to_f32(t, src, dst, n); break;
    }
}
