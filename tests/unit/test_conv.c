/* Tests of conv: conv_1d and conv_transpose_1d on odd shapes against the double-precision
 * reference (tolerance from the sum of |terms|), parameter errors, reflection padding, and
 * 1 vs 2 threads bit for bit at every CPU level. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/conv.h"
#include "ref/ref_conv.h"
#include "runtime/cpu.h"
#include "runtime/pool.h"
#include "test.h"

struct c1 {
    int c_in, c_out, k, stride, dilation, pad_left, pad_right, groups, reflect;
    int64_t t_in;
};

static const struct c1 c1_cases[] = {
    { 1, 1, 1, 1, 1, 0, 0, 1, 0, 1 },      /* the smallest */
    { 1, 1, 3, 1, 1, 1, 1, 1, 0, 5 },      /* C = 1 */
    { 3, 5, 1, 1, 1, 0, 0, 1, 0, 17 },     /* 1x1: no im2col */
    { 4, 6, 1, 1, 1, 0, 0, 2, 0, 33 },     /* 1x1 grouped */
    { 8, 16, 3, 1, 1, 2, 0, 1, 0, 40 },    /* tokenizer conv1: causal */
    { 16, 16, 3, 2, 1, 2, 0, 1, 0, 41 },   /* tokenizer conv2: causal, stride 2, odd T */
    { 5, 7, 3, 1, 3, 3, 3, 1, 0, 50 },     /* HiFT resblock k3 d3 */
    { 6, 6, 11, 1, 5, 25, 25, 1, 0, 60 },  /* HiFT resblock k11 d5 */
    { 3, 4, 5, 3, 1, 2, 1, 1, 0, 23 },     /* stride 3, T not a multiple */
    { 6, 9, 3, 1, 1, 1, 1, 3, 0, 19 },     /* groups 3 */
    { 4, 4, 3, 1, 2, 2, 2, 4, 0, 31 },     /* depthwise, dilated */
    { 3, 5, 7, 1, 1, 3, 3, 1, 1, 10 },     /* reflection padding */
    { 2, 3, 3, 2, 1, 1, 2, 1, 1, 9 },      /* reflection, stride 2 */
    { 2, 2, 3, 1, 1, 5, 5, 1, 0, 2 },      /* padding longer than the input */
    { 64, 64, 3, 2, 1, 1, 1, 1, 0, 101 },  /* flow downsample k3 s2 p1 */
    { 18, 32, 16, 8, 1, 4, 4, 1, 0, 321 }, /* HiFT source_downs0 k16 s8 p4 */
    { 8, 8, 3, 1, 1, 1, 1, 1, 0, 1500 },   /* several tiles, the last one narrower */
    { 256, 256, 3, 1, 1, 1, 1, 1, 0, 77 }, /* large C */
    { 80, 96, 7, 1, 1, 3, 3, 1, 0, 130 },  /* conv_pre-like k7 p3 */
    { 200, 130, 3, 1, 1, 1, 1, 1, 0, 40 }, /* short T: channels split 80 + 50 */
};

/* Fails when |got - want| exceeds 2 sqrt(R) rounding steps of the sum of |terms|. */
static int check_scaled(const float *got, const float *want, const float *abs_sum, int64_t n,
                        int64_t r, const char *what, int index)
{
    for (int64_t i = 0; i < n; i++) {
        double tol = 2.0 * sqrt((double)r) * 0x1p-24 * abs_sum[i] + 1e-30;
        if (!(fabs((double)got[i] - want[i]) <= tol)) {
            test_fail(__FILE__, __LINE__, "%s case %d: [%lld] = %.9g, reference %.9g, tol %.3g",
                      what, index, (long long)i, (double)got[i], (double)want[i], tol);
            return 0;
        }
    }
    return 1;
}

static void fabs_copy(float *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = fabsf(src[i]);
}

/* A case's x, w, b (uniform in [-1, 1]) and their magnitudes ax, aw, ab (for the error scale). */
struct cv_operands {
    float *x, *w, *b, *ax, *aw, *ab;
};

static void cv_operands_free(struct cv_operands *o)
{
    free(o->x), free(o->w), free(o->b), free(o->ax), free(o->aw), free(o->ab);
}

/* 1 when allocated and filled; 0 with nothing left allocated. */
static int cv_operands_make(struct cv_operands *o, int64_t nx, int64_t nw, int64_t nb)
{
    o->x = malloc((size_t)nx * sizeof *o->x), o->w = malloc((size_t)nw * sizeof *o->w);
    o->b = malloc((size_t)nb * sizeof *o->b);
    o->ax = malloc((size_t)nx * sizeof *o->x), o->aw = malloc((size_t)nw * sizeof *o->w);
    o->ab = malloc((size_t)nb * sizeof *o->b);
    if (!(o->x && o->w && o->b && o->ax && o->aw && o->ab)) {
        cv_operands_free(o);
        return 0;
    }
    test_fill_uniform(o->x, nx, -1.0f, 1.0f);
    test_fill_uniform(o->w, nw, -1.0f, 1.0f);
    test_fill_uniform(o->b, nb, -1.0f, 1.0f);
    fabs_copy(o->ax, o->x, nx);
    fabs_copy(o->aw, o->w, nw);
    fabs_copy(o->ab, o->b, nb);
    return 1;
}

static struct conv_params c1_params(const struct c1 *c)
{
    struct conv_params p =
        conv_params_make(c->c_in, c->c_out, c->k, c->stride, c->dilation, 0, c->groups);
    p.pad_left = c->pad_left;
    p.pad_right = c->pad_right;
    p.pad_mode = c->reflect ? CONV_PAD_REFLECT : CONV_PAD_ZEROS;
    return p;
}

/* Runs case c with the given pool; returns the output (caller frees) or NULL on failure. */
static float *run_c1(const struct c1 *c, struct pool *pool, const float *x, const float *w,
                     const float *b, int64_t *t_out)
{
    struct conv_params p = c1_params(c);
    *t_out = conv_1d_out_len(&p, c->t_in);
    size_t ns = conv_1d_scratch_floats(&p, c->t_in, pool_threads(pool));
    float *scratch = ns ? malloc(ns * sizeof *scratch) : NULL;
    float *y = malloc((size_t)(c->c_out * *t_out) * sizeof *y);
    struct err e;
    if (!y || (ns && !scratch) || conv_1d(pool, y, x, w, b, &p, c->t_in, scratch, &e)) {
        free(y);
        y = NULL;
    }
    free(scratch);
    return y;
}

TEST(conv_1d_odd_shapes)
{
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    for (size_t ci = 0; ci < sizeof c1_cases / sizeof c1_cases[0]; ci++) {
        const struct c1 *c = &c1_cases[ci];
        int64_t nx = c->c_in * c->t_in, nw = (int64_t)c->c_out * (c->c_in / c->groups) * c->k;
        struct cv_operands op;
        REQUIRE(cv_operands_make(&op, nx, nw, c->c_out));
        const float *x = op.x, *w = op.w, *b = op.b, *ax = op.ax, *aw = op.aw, *ab = op.ab;
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const float *bias = with_bias ? b : NULL;
            int64_t t_out, t_ref;
            float *y1 = run_c1(c, NULL, x, w, bias, &t_out);
            float *y2 = run_c1(c, two, x, w, bias, &t_out);
            float *ref = malloc((size_t)(c->c_out * t_out) * sizeof *ref);
            float *abs_sum = malloc((size_t)(c->c_out * t_out) * sizeof *abs_sum);
            CHECK(y1 != NULL && y2 != NULL);
            if (y1 && y2 && ref && abs_sum) {
                t_ref =
                    ref_conv_1d(ref, x, w, bias, c->c_in, c->c_out, c->k, c->stride, c->dilation,
                                c->pad_left, c->pad_right, c->groups, c->reflect, c->t_in);
                ref_conv_1d(abs_sum, ax, aw, with_bias ? ab : NULL, c->c_in, c->c_out, c->k,
                            c->stride, c->dilation, c->pad_left, c->pad_right, c->groups,
                            c->reflect, c->t_in);
                CHECK(t_ref == t_out);
                check_scaled(y1, ref, abs_sum, c->c_out * t_out, (int64_t)c->c_in * c->k, "conv_1d",
                             (int)ci);
                CHECK(memcmp(y1, y2, (size_t)(c->c_out * t_out) * sizeof *y1) == 0);
            }
            free(y1);
            free(y2);
            free(ref);
            free(abs_sum);
        }
        cv_operands_free(&op);
    }
    pool_free(two);
}

TEST(conv_1d_threads_and_levels_identical)
{
    static const struct c1 big[] = {
        { 256, 256, 3, 1, 1, 1, 1, 1, 0, 500 },     /* flow decoder */
        { 256, 256, 3, 1, 1, 1, 1, 1, 0, 34 },      /* flow mid blocks, first chunk: row blocks */
        { 80, 512, 7, 1, 1, 3, 3, 1, 0, 1003 },     /* conv_pre */
        { 128, 128, 11, 1, 5, 25, 25, 1, 0, 2000 }, /* HiFT stage 1 resblock */
    };
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    for (size_t ci = 0; ci < sizeof big / sizeof big[0]; ci++) {
        const struct c1 *c = &big[ci];
        int64_t nx = c->c_in * c->t_in, nw = (int64_t)c->c_out * c->c_in * c->k, t_out;
        float *x = malloc((size_t)nx * sizeof *x), *w = malloc((size_t)nw * sizeof *w);
        float *b = malloc((size_t)c->c_out * sizeof *b);
        REQUIRE(x && w && b);
        test_fill_uniform(x, nx, -1.0f, 1.0f);
        test_fill_uniform(w, nw, -0.1f, 0.1f);
        test_fill_uniform(b, c->c_out, -1.0f, 1.0f);
        float *y0 = run_c1(c, NULL, x, w, b, &t_out);
        REQUIRE(y0 != NULL);
        for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
            cpu_set_level((enum cpu_level)level);
            float *y1 = run_c1(c, NULL, x, w, b, &t_out);
            float *y2 = run_c1(c, two, x, w, b, &t_out);
            CHECK(y1 && y2);
            if (y1 && y2) {
                CHECK(memcmp(y0, y1, (size_t)(c->c_out * t_out) * sizeof *y1) == 0);
                CHECK(memcmp(y0, y2, (size_t)(c->c_out * t_out) * sizeof *y1) == 0);
            }
            free(y1);
            free(y2);
        }
        cpu_set_level(best);
        free(y0), free(x), free(w), free(b);
    }
    pool_free(two);
}

TEST(conv_1d_rejects_bad_input)
{
    struct err e = { { 0 } };
    float x[8] = { 0 }, w[8] = { 0 }, y[8], s[64];
    struct conv_params p = conv_params_make(1, 1, 3, 1, 1, 0, 1);
    CHECK(conv_1d_out_len(&p, 2) == 0);
    CHECK(conv_1d(NULL, y, x, w, NULL, &p, 2, s, &e) == -1);
    CHECK(strstr(e.msg, "too few") != NULL);
    p.pad_left = p.pad_right = 2;
    p.pad_mode = CONV_PAD_REFLECT;
    CHECK(conv_1d(NULL, y, x, w, NULL, &p, 2, s, &e) == -1);
    CHECK(strstr(e.msg, "reflection") != NULL);
    p = conv_params_make(3, 2, 1, 1, 1, 0, 2);
    CHECK(conv_1d(NULL, y, x, w, NULL, &p, 2, s, &e) == -1);
    p = conv_params_make(1, 1, 0, 1, 1, 0, 1);
    CHECK(conv_1d(NULL, y, x, w, NULL, &p, 2, s, &e) == -1);
    struct conv_transpose_params t = {
        .c_in = 1, .c_out = 1, .k = 3, .stride = 2, .dilation = 1, .pad = 0, .out_pad = 2
    };
    CHECK(conv_transpose_1d(NULL, y, x, w, NULL, &t, 2, s, &e) == -1);
    t.out_pad = 0;
    t.pad = 5;
    CHECK(conv_transpose_1d_out_len(&t, 1) == 0);
    CHECK(conv_transpose_1d(NULL, y, x, w, NULL, &t, 1, s, &e) == -1);
}

TEST(conv_pad_reflect_edges)
{
    struct err e;
    const float x[2][4] = { { 1, 2, 3, 4 }, { 5, 6, 7, 8 } };
    float y[2][8];
    REQUIRE(conv_pad_reflect(&y[0][0], &x[0][0], 2, 4, 1, 0, &e) == 0);
    const float want1[2][5] = { { 2, 1, 2, 3, 4 }, { 6, 5, 6, 7, 8 } }; /* HiFT's (1, 0) */
    CHECK(memcmp(y, want1, sizeof want1) == 0);
    REQUIRE(conv_pad_reflect(&y[0][0], &x[0][0], 2, 4, 3, 1, &e) == 0);
    const float want2[2][8] = { { 4, 3, 2, 1, 2, 3, 4, 3 }, { 8, 7, 6, 5, 6, 7, 8, 7 } };
    CHECK(memcmp(y, want2, sizeof want2) == 0);
    CHECK(conv_pad_reflect(&y[0][0], &x[0][0], 2, 4, 4, 0, &e) == -1);
}

struct ct {
    int c_in, c_out, k, stride, dilation, pad, out_pad;
    int64_t t_in;
};

static const struct ct ct_cases[] = {
    { 1, 1, 1, 1, 1, 0, 0, 1 },       { 1, 1, 4, 2, 1, 1, 0, 1 }, /* one input frame */
    { 3, 2, 4, 2, 1, 1, 0, 7 },                                   /* flow upsample k4 s2 p1 */
    { 16, 8, 16, 8, 1, 4, 0, 9 },                                 /* HiFT ups k16 s8 p4 */
    { 5, 3, 3, 2, 1, 0, 1, 6 },                                   /* output_padding */
    { 4, 3, 3, 1, 2, 2, 1, 10 },                                  /* dilation 2, output_padding 1 */
    { 2, 3, 5, 3, 1, 4, 0, 4 },       /* padding eats most of the output */
    { 8, 512, 16, 8, 1, 4, 0, 150 },  /* two input chunks (128 + 22 frames) */
    { 512, 256, 16, 8, 1, 4, 0, 24 }, /* HiFT ups0 channels */
};

static float *run_ct(const struct ct *c, struct pool *pool, const float *x, const float *w,
                     const float *b, int64_t *t_out)
{
    struct conv_transpose_params p = { c->c_in,     c->c_out, c->k,      c->stride,
                                       c->dilation, c->pad,   c->out_pad };
    *t_out = conv_transpose_1d_out_len(&p, c->t_in);
    size_t ns = conv_transpose_1d_scratch_floats(&p, c->t_in, pool_threads(pool));
    float *scratch = malloc(ns * sizeof *scratch);
    float *y = malloc((size_t)(c->c_out * *t_out) * sizeof *y);
    struct err e;
    if (!y || !scratch || conv_transpose_1d(pool, y, x, w, b, &p, c->t_in, scratch, &e)) {
        free(y);
        y = NULL;
    }
    free(scratch);
    return y;
}

TEST(conv_transpose_1d_odd_shapes)
{
    struct pool *two = pool_create(2);
    REQUIRE(two != NULL);
    enum cpu_level best = cpu_detect();
    for (size_t ci = 0; ci < sizeof ct_cases / sizeof ct_cases[0]; ci++) {
        const struct ct *c = &ct_cases[ci];
        int64_t nx = c->c_in * c->t_in, nw = (int64_t)c->c_in * c->c_out * c->k;
        struct cv_operands op;
        REQUIRE(cv_operands_make(&op, nx, nw, c->c_out));
        const float *x = op.x, *w = op.w, *b = op.b, *ax = op.ax, *aw = op.aw, *ab = op.ab;
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            int64_t t_out;
            float *y1 = run_ct(c, NULL, x, w, with_bias ? b : NULL, &t_out);
            float *ref = malloc((size_t)(c->c_out * t_out) * sizeof *ref);
            float *abs_sum = malloc((size_t)(c->c_out * t_out) * sizeof *abs_sum);
            REQUIRE(y1 && ref && abs_sum);
            int64_t t_ref =
                ref_conv_transpose_1d(ref, x, w, with_bias ? b : NULL, c->c_in, c->c_out, c->k,
                                      c->stride, c->dilation, c->pad, c->out_pad, c->t_in);
            ref_conv_transpose_1d(abs_sum, ax, aw, with_bias ? ab : NULL, c->c_in, c->c_out, c->k,
                                  c->stride, c->dilation, c->pad, c->out_pad, c->t_in);
            CHECK(t_ref == t_out);
            check_scaled(y1, ref, abs_sum, c->c_out * t_out, (int64_t)c->c_in * c->k,
                         "conv_transpose_1d", (int)ci);
            for (int level = CPU_LEVEL_GENERIC; level <= (int)best; level++) {
                cpu_set_level((enum cpu_level)level);
                float *y2 = run_ct(c, two, x, w, with_bias ? b : NULL, &t_out);
                CHECK(y2 && memcmp(y1, y2, (size_t)(c->c_out * t_out) * sizeof *y1) == 0);
                free(y2);
            }
            cpu_set_level(best);
            free(y1), free(ref), free(abs_sum);
        }
        cv_operands_free(&op);
    }
    pool_free(two);
}
