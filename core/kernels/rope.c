/*
 * rope — the cos/sin table and the rotation, in portable C (a decode step rotates 34 heads
 * × 32 pairs: far too little work for per-ISA files).
 *
 * Shape letters as in rope.h: N rows, H heads of D values, R rotated dims.
 */
#include "kernels/rope.h"
#include "runtime/dtype.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROPE_GRAIN_PAIRS 8192 /* rotated pairs per unit of the thread split */

/* cos/sin of p·θ with the reference's roundings: the angle is an f32 product, cos and sin
 * are f32 values, optionally rounded to bf16. */
static void angle_cos_sin(const struct rope_table *t, int64_t p, int i, float *c, float *s)
{
    float a = (float)p * t->theta[i];
    *c = cosf(a);
    *s = sinf(a);
    if (t->round_bf16) {
        *c = dtype_round_bf16(*c);
        *s = dtype_round_bf16(*s);
    }
}

int rope_table_init(struct rope_table *t, int rot_dim, float base, int64_t n_pos, int round_bf16,
                    struct err *e)
{
    memset(t, 0, sizeof *t);
    if (rot_dim < 2 || rot_dim % 2 || !(base > 0) || n_pos < 0 || n_pos > (INT64_C(1) << 24))
        return err_set(e, "rope: bad table (rot_dim %d, base %g, %lld positions)", rot_dim,
                       (double)base, (long long)n_pos);
    int half = rot_dim / 2;
    t->rot_dim = rot_dim;
    t->n_pos = n_pos;
    t->base = base;
    t->round_bf16 = round_bf16;
    t->theta = malloc((size_t)half * sizeof *t->theta);
    t->cs = malloc((size_t)(n_pos > 0 ? n_pos : 1) * (size_t)half * 2 * sizeof *t->cs);
    if (!t->theta || !t->cs) {
        rope_table_free(t);
        return err_set(e, "rope: out of memory for a %lld-position table", (long long)n_pos);
    }
    /* θ_i = 1 / base^(2i/R): the exponent is an f32 quotient, the power and the reciprocal
     * f32 operations, as torch evaluates 1.0 / (base ** (arange(0, R, 2) / R)) */
    for (int i = 0; i < half; i++)
        t->theta[i] = 1.0f / powf(base, (float)(2 * i) / (float)rot_dim);
    for (int64_t p = 0; p < n_pos; p++)
        for (int i = 0; i < half; i++)
            angle_cos_sin(t, p, i, &t->cs[(p * half + i) * 2], &t->cs[(p * half + i) * 2 + 1]);
    return 0;
}

void rope_table_free(struct rope_table *t)
{
    free(t->theta);
    free(t->cs);
    t->theta = t->cs = NULL;
}

void rope_cos_sin(const struct rope_table *t, int64_t p, int i, float *c, float *s)
{
    if (p < t->n_pos) {
        const float *cs = t->cs + (p * (t->rot_dim / 2) + i) * 2;
        *c = cs[0];
        *s = cs[1];
    } else {
        angle_cos_sin(t, p, i, c, s);
    }
}

struct rope_job {
    const struct rope_table *t;
    float *x;
    int64_t row_stride, pos0;
    const int64_t *pos;
    int n_head, head_dim;
};

static void rotate(float *x, int i, float c, float s)
{
    float x0 = x[2 * i], x1 = x[2 * i + 1];
    x[2 * i] = x0 * c - x1 * s;
    x[2 * i + 1] = x1 * c + x0 * s;
}

static void run_rope(void *arg, int64_t begin, int64_t end)
{
    const struct rope_job *j = arg;
    const int half = j->t->rot_dim / 2;
    for (int64_t r = begin; r < end; r++) {
        int64_t p = j->pos ? j->pos[r] : j->pos0 + r;
        assert(p >= 0);
        for (int h = 0; h < j->n_head; h++) {
            float *x = j->x + r * j->row_stride + (int64_t)h * j->head_dim;
            if (p < j->t->n_pos) {
                const float *cs = j->t->cs + p * half * 2;
                for (int i = 0; i < half; i++)
                    rotate(x, i, cs[2 * i], cs[2 * i + 1]);
            } else { /* past the table (slow, never on a normal path) */
                for (int i = 0; i < half; i++) {
                    float c, s;
                    angle_cos_sin(j->t, p, i, &c, &s);
                    rotate(x, i, c, s);
                }
            }
        }
    }
}

void rope_apply(struct pool *pool, const struct rope_table *t, float *x, int64_t n_rows,
                int64_t row_stride, int n_head, int head_dim, const int64_t *pos, int64_t pos0)
{
    assert(head_dim >= t->rot_dim);
    struct rope_job j = { t, x, row_stride, pos0, pos, n_head, head_dim };
    int64_t pairs = (int64_t)n_head * (t->rot_dim / 2);
    int64_t grain = pairs >= ROPE_GRAIN_PAIRS ? 1 : ROPE_GRAIN_PAIRS / (pairs > 0 ? pairs : 1);
    pool_for(pool, n_rows, grain, run_rope, &j);
}
