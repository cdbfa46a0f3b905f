/* Tests of attn: masks against the spec's wording, softmax, and attention (GQA, every mask,
 * f32/f16/bf16 K/V, strides, decode and prefill shapes, odd head dims) at every CPU level
 * against the double-precision reference; 1 vs 2 threads bit for bit.
 *
 * Tolerance of attention: |out − ref| <= 2e-6·(1 + max|score|)·max|v|: f32 scores carry a
 * relative error of a few ulp, which turns into a relative error of the weights that grows
 * with the size of the scores. Softmax: 1e-6 relative + 1e-9 absolute (a weight e^-40 keeps
 * only the relative accuracy 40·2^-24 of its exponent). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "ref/ref_ops.h"
#include "runtime/cpu.h"
#include "runtime/dtype.h"
#include "runtime/pool.h"
#include "test.h"

static struct attn_mask to_mask(const struct ref_ops_mask *m)
{
    struct attn_mask a = { (enum attn_mask_kind)m->kind, m->pos0, m->block, m->n_valid };
    return a;
}

TEST(attn_mask_matches_spec_wording)
{
    for (int kind = 0; kind < 3; kind++)
        for (int64_t pos0 = 0; pos0 < 25; pos0 += 6)
            for (int64_t block = 1; block <= 7; block += 3)
                for (int64_t nv = 0; nv <= 30; nv += 9) {
                    struct ref_ops_mask r = { kind, pos0, block, nv };
                    struct attn_mask m = to_mask(&r);
                    for (int64_t n_kv = 0; n_kv <= 40; n_kv += 13)
                        for (int64_t i = 0; i < 12; i++) {
                            int64_t end = attn_mask_end(&m, i, n_kv);
                            for (int64_t j = 0; j < n_kv; j++)
                                if ((j < end) != ref_ops_visible(&r, i, j))
                                    test_fail(__FILE__, __LINE__,
                                              "kind %d pos0 %lld B %lld n_valid %lld: i %lld "
                                              "j %lld",
                                              kind, (long long)pos0, (long long)block,
                                              (long long)nv, (long long)i, (long long)j);
                        }
                }
    CHECK(attn_mask_end(NULL, 5, 9) == 9);
}

TEST(attn_softmax_rows_and_masks)
{
    enum { R = 9, N = 37 };
    static float x[R * N], y[R * N], y2[R * N];
    static double ref[R * N];
    const struct ref_ops_mask masks[] = { { 0, 0, 1, 0 }, { 1, 0, 1, 0 },   { 1, 20, 1, 0 },
                                          { 2, 0, 4, 0 }, { 2, 3, 10, 30 }, { 0, 0, 1, 5 } };
    struct pool *two = pool_create(2);
    REQUIRE(two);
    for (int i = 0; i < R * N; i++)
        x[i] = test_rand_normal() * 8.0f;
    for (int i = 0; i < N; i++)
        x[4 * N + i] = -INFINITY; /* a row with nothing finite */
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        for (size_t k = 0; k < sizeof masks / sizeof masks[0]; k++) {
            struct attn_mask m = to_mask(&masks[k]);
            ref_ops_softmax(ref, x, R, N, &masks[k]);
            attn_softmax(NULL, y, x, R, N, k == 0 ? NULL : &m);
            int bad = 0;
            for (int i = 0; i < R * N && bad < 5; i++)
                if (!(fabs(y[i] - ref[i]) <= 1e-6 * ref[i] + 1e-9)) {
                    bad++;
                    test_fail(__FILE__, __LINE__, "%s mask %zu [%d][%d] = %.9g, ref %.9g",
                              cpu_level_name((enum cpu_level)lv), k, i / N, i % N, (double)y[i],
                              ref[i]);
                }
            memcpy(y2, x, sizeof x);
            attn_softmax(two, y2, y2, R, N, k == 0 ? NULL : &m); /* in place, 2 threads */
            CHECK(memcmp(y, y2, sizeof y) == 0);
        }
    }
    cpu_set_level(cpu_detect());
    pool_free(two);
}

struct acase {
    const char *name;
    int64_t n_q, n_kv;
    int n_head, n_kv_head, head_dim;
    enum dtype kv_type;
    struct ref_ops_mask mask;
    float bias, qscale;
    int strided; /* q/out rows padded; K and V interleaved in one [K][2][G][D] buffer */
};

static const struct acase acases[] = {
    { "glm_decode", 1, 300, 32, 2, 128, DTYPE_BF16, { 1, 299, 1, 0 }, 0, 1, 0 },
    { "glm_decode_long", 1, 2000, 32, 2, 128, DTYPE_BF16, { 1, 1999, 1, 0 }, 0, 1, 1 },
    { "glm_prefill_cached", 7, 50, 8, 2, 64, DTYPE_F16, { 1, 43, 1, 0 }, 0, 1, 0 },
    { "prefill_causal", 37, 37, 6, 2, 40, DTYPE_F32, { 1, 0, 1, 0 }, 0, 1, 1 },
    { "tokenizer_block_pad", 45, 45, 4, 4, 24, DTYPE_F32, { 2, 0, 10, 38 }, 0, 1, 0 },
    { "conformer_block", 23, 23, 8, 8, 64, DTYPE_BF16, { 2, 0, 10, 0 }, 0, 1, 1 },
    { "flow_bias_one", 33, 33, 8, 8, 64, DTYPE_F32, { 0, 0, 1, 0 }, 1.0f, 1, 0 },
    { "cross_shape", 5, 19, 6, 3, 20, DTYPE_BF16, { 0, 0, 1, 0 }, 0, 1, 1 },
    { "odd_dims", 17, 1, 3, 1, 7, DTYPE_F16, { 1, 0, 1, 0 }, 0, 1, 0 },
    { "peaky_scores", 9, 70, 4, 2, 32, DTYPE_F32, { 1, 61, 1, 0 }, 0, 12, 0 },
    { "padding_only", 6, 29, 2, 1, 16, DTYPE_F32, { 0, 0, 1, 11 }, 0, 1, 0 },
};

struct adata {
    int64_t q_stride, out_stride, kv_stride;
    float *q, *out;
    uint8_t *kv_buf;
    const void *k, *v;
    double *kd, *vd, *ref;
    double max_score, max_v;
};

static void adata_free(struct adata *a)
{
    free(a->q), free(a->out), free(a->kv_buf), free(a->kd), free(a->vd), free(a->ref);
}

static int adata_make(struct adata *a, const struct acase *c)
{
    const int64_t hd = c->head_dim, qrow = c->n_head * hd, kvrow = c->n_kv_head * hd;
    const size_t es = c->kv_type == DTYPE_F32 ? 4 : 2;
    memset(a, 0, sizeof *a);
    a->q_stride = qrow + (c->strided ? 5 : 0);
    a->out_stride = qrow + (c->strided ? 3 : 0);
    a->kv_stride = c->strided ? 2 * kvrow : kvrow;
    int64_t nkv = c->n_kv > 0 ? c->n_kv : 1;
    a->q = calloc((size_t)(c->n_q * a->q_stride + 1), 4);
    a->out = calloc((size_t)(c->n_q * a->out_stride + 1), 4);
    a->kv_buf = calloc((size_t)(2 * nkv * kvrow), es);
    a->kd = malloc(nkv * kvrow * 8);
    a->vd = malloc(nkv * kvrow * 8);
    a->ref = malloc(c->n_q * qrow * 8);
    float *tmp = malloc(kvrow * 4), *packed_q = malloc(c->n_q * qrow * 4 + 4);
    if (!a->q || !a->out || !a->kv_buf || !a->kd || !a->vd || !a->ref || !tmp || !packed_q)
        return -1;
    for (int64_t i = 0; i < c->n_q * qrow; i++)
        packed_q[i] = test_rand_normal() * c->qscale;
    for (int64_t i = 0; i < c->n_q; i++)
        memcpy(a->q + i * a->q_stride, packed_q + i * qrow, qrow * 4);
    /* K, V: stored in kv_type; separate [K][G][D] arrays, or interleaved per position */
    uint8_t *kb = a->kv_buf, *vb = c->strided ? kb + kvrow * es : kb + nkv * kvrow * es;
    a->k = kb;
    a->v = vb;
    a->max_v = 0;
    for (int which = 0; which < 2; which++)
        for (int64_t j = 0; j < c->n_kv; j++) {
            for (int64_t e = 0; e < kvrow; e++)
                tmp[e] = which ? test_rand_uniform(-1, 1) : test_rand_normal();
            uint8_t *dst = (which ? vb : kb) + j * a->kv_stride * es;
            dtype_from_f32(c->kv_type, tmp, dst, kvrow);
            dtype_to_f32(c->kv_type, dst, tmp, kvrow); /* the values actually stored */
            for (int64_t e = 0; e < kvrow; e++) {
                (which ? a->vd : a->kd)[j * kvrow + e] = tmp[e];
                if (which && fabs(tmp[e]) > a->max_v)
                    a->max_v = fabs(tmp[e]);
            }
        }
    double scale = 1.0 / sqrt((double)hd);
    ref_ops_attention(a->ref, packed_q, a->kd, a->vd, c->n_q, c->n_kv, c->n_head, c->n_kv_head,
                      c->head_dim, scale, c->bias, &c->mask);
    a->max_score = 0;
    for (int64_t i = 0; i < c->n_q; i++)
        for (int h = 0; h < c->n_head; h++)
            for (int64_t j = 0; j < c->n_kv; j++) {
                double s = 0;
                int g = h / (c->n_head / c->n_kv_head);
                for (int d = 0; d < hd; d++)
                    s += packed_q[(i * c->n_head + h) * hd + d] *
                         a->kd[(j * c->n_kv_head + g) * hd + d];
                if (fabs(s * scale) > a->max_score)
                    a->max_score = fabs(s * scale);
            }
    free(tmp);
    free(packed_q);
    return 0;
}

static void run_case(const struct acase *c, struct pool *pool, struct adata *a, void *scratch,
                     int alias)
{
    struct attn_desc d = {
        .n_head = c->n_head,
        .n_kv_head = c->n_kv_head,
        .head_dim = c->head_dim,
        .kv_type = c->kv_type,
        .q_stride = a->q_stride,
        .out_stride = alias ? a->q_stride : a->out_stride,
        .k_stride = a->kv_stride,
        .v_stride = a->kv_stride,
        .bias = c->bias,
        .mask = to_mask(&c->mask),
    };
    attn_forward(pool, alias ? a->q : a->out, a->q, a->k, a->v, c->n_q, c->n_kv, &d, scratch);
}

static int check_out(const struct acase *c, const struct adata *a, const float *out, int64_t stride,
                     const char *what)
{
    const int64_t qrow = (int64_t)c->n_head * c->head_dim;
    double tol = 2e-6 * (1 + a->max_score) * (a->max_v > 0 ? a->max_v : 1);
    for (int64_t i = 0; i < c->n_q; i++)
        for (int64_t e = 0; e < qrow; e++) {
            double want = a->ref[i * qrow + e], got = out[i * stride + e];
            if (!(fabs(got - want) <= tol)) {
                test_fail(__FILE__, __LINE__, "%s (%s): out[%lld][%lld] = %.9g, ref %.9g, tol %.3g",
                          c->name, what, (long long)i, (long long)e, got, want, tol);
                return 0;
            }
        }
    return 1;
}

TEST(attn_forward_cases_all_levels)
{
    struct pool *two = pool_create(2);
    REQUIRE(two);
    for (size_t ci = 0; ci < sizeof acases / sizeof acases[0]; ci++) {
        const struct acase *c = &acases[ci];
        struct adata a;
        REQUIRE(adata_make(&a, c) == 0);
        size_t ss = attn_scratch_size(two, c->head_dim);
        void *scratch = malloc(ss);
        size_t out_n = (size_t)(c->n_q * a.out_stride);
        float *first = malloc(out_n * 4 + 4);
        REQUIRE(scratch && first);
        for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
            REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
            char what[64];
            snprintf(what, sizeof what, "%s, 1 thread", cpu_level_name((enum cpu_level)lv));
            run_case(c, NULL, &a, scratch, 0);
            check_out(c, &a, a.out, a.out_stride, what);
            memcpy(first, a.out, out_n * 4);
            memset(a.out, 0, out_n * 4);
            run_case(c, two, &a, scratch, 0);
            if (memcmp(first, a.out, out_n * 4) != 0)
                test_fail(__FILE__, __LINE__, "%s at %s: 2 threads differ", c->name,
                          cpu_level_name((enum cpu_level)lv));
        }
        /* out == q (same strides): each tile reads its queries before writing */
        float *qsave = malloc((size_t)(c->n_q * a.q_stride) * 4 + 4);
        REQUIRE(qsave);
        memcpy(qsave, a.q, (size_t)(c->n_q * a.q_stride) * 4);
        run_case(c, two, &a, scratch, 1);
        check_out(c, &a, a.q, a.q_stride, "out aliasing q");
        memcpy(a.q, qsave, (size_t)(c->n_q * a.q_stride) * 4);
        free(qsave);
        free(scratch);
        free(first);
        adata_free(&a);
    }
    cpu_set_level(cpu_detect());
    pool_free(two);
}

/* No keys: every output row is zero (not NaN); no queries: nothing is written. */
TEST(attn_forward_empty)
{
    float q[2 * 4 * 8], out[2 * 4 * 8], k[8];
    test_fill_uniform(q, 64, -1, 1);
    struct attn_desc d = { .n_head = 4, .n_kv_head = 1, .head_dim = 8, .kv_type = DTYPE_F32 };
    char scratch[64 * 1024];
    REQUIRE(attn_scratch_size(NULL, 8) <= sizeof scratch);
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        for (int i = 0; i < 64; i++)
            out[i] = NAN;
        attn_forward(NULL, out, q, k, k, 2, 0, &d, scratch);
        for (int i = 0; i < 64; i++)
            CHECK(out[i] == 0.0f);
        out[0] = 7.0f;
        attn_forward(NULL, out, q, k, k, 0, 1, &d, scratch);
        CHECK(out[0] == 7.0f);
    }
    cpu_set_level(cpu_detect());
}
