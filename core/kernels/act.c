/*
 * act — dispatch to the kernels of this CPU's level, the thread split, and the portable
 * kernels (libm).
 *
 * Shape letters: n elements; Snake [C][T]; SwiGLU x [R][2·D] → out [R][D].
 */
#include "kernels/act.h"

#include <math.h>

#include "runtime/cpu.h"

/* Elements per unit of the thread split: below this a second thread costs more than it
 * saves; a multiple of every vector width. */
#define ACT_GRAIN 8192

static void g_gelu(float *out, const float *x, int64_t n, float p)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)(x[i] * 0.5 * erfc(-x[i] * 0.70710678118654752440));
}

static void g_silu(float *out, const float *x, int64_t n, float p)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] / (1.0f + expf(-x[i]));
}

static void g_mish(float *out, const float *x, int64_t n, float p)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] * tanhf(log1pf(expf(x[i])));
}

static void g_tanh(float *out, const float *x, int64_t n, float p)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = tanhf(x[i]);
}

static void g_exp(float *out, const float *x, int64_t n, float p)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = expf(x[i]);
}

static void g_sin(float *out, const float *x, int64_t n, float p)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = sinf(x[i]);
}

static void g_elu(float *out, const float *x, int64_t n, float alpha)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] > 0 ? x[i] : alpha * expm1f(x[i]);
}

static void g_leaky(float *out, const float *x, int64_t n, float slope)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] > 0 ? x[i] : x[i] * slope;
}

static void g_snake(float *out, const float *x, int64_t n, float alpha, float inv)
{
    for (int64_t i = 0; i < n; i++) {
        float s = sinf(x[i] * alpha);
        out[i] = x[i] + inv * (s * s);
    }
}

static void g_swiglu(float *out, const float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static const struct act_kernels generic_kernels = {
    .gelu = g_gelu,
    .silu = g_silu,
    .mish = g_mish,
    .tanh = g_tanh,
    .exp = g_exp,
    .sin = g_sin,
    .elu = g_elu,
    .leaky = g_leaky,
    .snake = g_snake,
    .swiglu = g_swiglu,
};

static const struct act_kernels *kernels(void)
{
    switch (cpu_level()) {
    case CPU_LEVEL_AVX512: return &act_avx512_kernels;
    case CPU_LEVEL_AVX2: return &act_avx2_kernels;
    default: return &generic_kernels;
    }
}

struct unary_job {
    act_kernel *fn;
    float *out;
    const float *x;
    float p;
};

static void run_unary(void *arg, int64_t begin, int64_t end)
{
    const struct unary_job *j = arg;
    j->fn(j->out + begin, j->x + begin, end - begin, j->p);
}

static void unary(struct pool *pool, act_kernel *fn, float *out, const float *x, int64_t n, float p)
{
    struct unary_job j = { fn, out, x, p };
    pool_for(pool, n, ACT_GRAIN, run_unary, &j);
}

void act_gelu(struct pool *pool, float *out, const float *x, int64_t n)
{
    unary(pool, kernels()->gelu, out, x, n, 0);
}

void act_silu(struct pool *pool, float *out, const float *x, int64_t n)
{
    unary(pool, kernels()->silu, out, x, n, 0);
}

void act_mish(struct pool *pool, float *out, const float *x, int64_t n)
{
    unary(pool, kernels()->mish, out, x, n, 0);
}

void act_tanh(struct pool *pool, float *out, const float *x, int64_t n)
{
    unary(pool, kernels()->tanh, out, x, n, 0);
}

void act_exp(struct pool *pool, float *out, const float *x, int64_t n)
{
    unary(pool, kernels()->exp, out, x, n, 0);
}

void act_sin(struct pool *pool, float *out, const float *x, int64_t n)
{
    unary(pool, kernels()->sin, out, x, n, 0);
}

void act_elu(struct pool *pool, float *out, const float *x, int64_t n, float alpha)
{
    unary(pool, kernels()->elu, out, x, n, alpha);
}

void act_leaky_relu(struct pool *pool, float *out, const float *x, int64_t n, float slope)
{
    unary(pool, kernels()->leaky, out, x, n, slope);
}

struct snake_job {
    const struct act_kernels *k;
    float *out;
    const float *x, *alpha;
    int64_t n_t;
};

static void run_snake(void *arg, int64_t begin, int64_t end)
{
    const struct snake_job *j = arg;
    for (int64_t c = begin; c < end; c++) {
        /* 1/(α + 1e-9) in float, as the reference evaluates it */
        float inv = 1.0f / (j->alpha[c] + 1e-9f);
        j->k->snake(j->out + c * j->n_t, j->x + c * j->n_t, j->n_t, j->alpha[c], inv);
    }
}

void act_snake(struct pool *pool, float *out, const float *x, const float *alpha, int64_t n_ch,
               int64_t n_t)
{
    struct snake_job j = { kernels(), out, x, alpha, n_t };
    int64_t grain = n_t >= ACT_GRAIN ? 1 : ACT_GRAIN / (n_t > 0 ? n_t : 1);
    pool_for(pool, n_ch, grain, run_snake, &j);
}

struct swiglu_job {
    const struct act_kernels *k;
    float *out;
    const float *x;
    int64_t dim;
};

static void run_swiglu(void *arg, int64_t begin, int64_t end)
{
    const struct swiglu_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        const float *row = j->x + r * 2 * j->dim;
        j->k->swiglu(j->out + r * j->dim, row, row + j->dim, j->dim);
    }
}

void act_swiglu(struct pool *pool, float *out, const float *x, int64_t n_rows, int64_t dim)
{
    struct swiglu_job j = { kernels(), out, x, dim };
    /* In place, row r lands where rows r/2.. of x were: rows must go in order on one
     * thread. Otherwise rows are independent. */
    if (out == x || n_rows * dim < ACT_GRAIN) {
        run_swiglu(&j, 0, n_rows);
        return;
    }
    pool_for(pool, n_rows, 1, run_swiglu, &j);
}
