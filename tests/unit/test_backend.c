/*
 * Backend conformance: every operation of every backend, called through the backend table
 * (alloc, upload, op, download), against the plain references of tests/ref/. A new backend
 * joins by adding its constructor to `backends`.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "ref/ref_conv.h"
#include "ref/ref_linear.h"
#include "ref/ref_ops.h"
#include "runtime/cpu.h"
#include "test.h"

static struct backend *make_cpu1(struct err *e)
{
    return backend_cpu_create(1, e);
}

static struct backend *make_cpu2(struct err *e)
{
    return backend_cpu_create(2, e);
}

static struct {
    const char *name;
    struct backend *(*create)(struct err *e);
} backends[] = {
    { "cpu, 1 thread", make_cpu1 },
    { "cpu, 2 threads", make_cpu2 },
};

#define N_BACKENDS (int)(sizeof backends / sizeof backends[0])

/* Host array -> backend memory. */
static float *put(struct backend *be, const float *x, int64_t n)
{
    float *d = be->ops->alloc(be, (size_t)n * sizeof(float));
    be->ops->upload(be, d, x, (size_t)n * sizeof(float));
    return d;
}

/* Backend memory -> a new host array, releasing the backend copy. */
static float *take(struct backend *be, float *d, int64_t n)
{
    float *h = malloc((size_t)n * sizeof(float));
    be->ops->download(be, h, d, (size_t)n * sizeof(float));
    be->ops->release(be, d);
    return h;
}

static float *rand_array(int64_t n, float lo, float hi)
{
    float *x = malloc((size_t)n * sizeof(float));
    test_fill_uniform(x, n, lo, hi);
    return x;
}

static float *to_float(const double *x, int64_t n)
{
    float *f = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)x[i];
    return f;
}

/* A weight prepared by the backend from a host tensor of the given type. */
static int weight(struct backend *be, struct tensor *dst, struct tensor *host, void **store,
                  const float *values, enum dtype type, int n_dims, const int64_t *ne,
                  enum backend_weight_use use)
{
    int64_t n = 1;
    for (int i = 0; i < n_dims; i++)
        n *= ne[i];
    *store = malloc(dtype_row_bytes(type, (uint64_t)n));
    dtype_from_f32(type, values, *store, n);
    struct err e;
    if (tensor_init(host, "w", type, n_dims, ne, *store) != 0)
        return -1;
    return be->ops->weight(be, dst, host, use, &e);
}

TEST(backend_linear_all_types)
{
    static const enum dtype types[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0 };
    const int64_t k = 96, m = 37;
    for (int b = 0; b < N_BACKENDS; b++) {
        struct err e;
        struct backend *be = backends[b].create(&e);
        REQUIRE(be != NULL);
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            for (int64_t n = 1; n <= 20; n += 19) { /* the GEMV and the GEMM paths */
                float *wv = rand_array(k * m, -1, 1), *bv = rand_array(m, -1, 1);
                float *x = rand_array(n * k, -1, 1);
                struct tensor w, wh, bias, bh;
                void *ws, *bs;
                int64_t wne[2] = { k, m }, bne[1] = { m };
                REQUIRE(weight(be, &w, &wh, &ws, wv, types[t], 2, wne, BACKEND_WEIGHT_MATRIX) == 0);
                REQUIRE(weight(be, &bias, &bh, &bs, bv, DTYPE_F32, 1, bne, BACKEND_WEIGHT_F32) ==
                        0);
                float *dx = put(be, x, n * k);
                float *dy = be->ops->alloc(be, (size_t)(n * m) * sizeof(float));
                be->ops->linear(be, dy, dx, &w, &bias, n, 0);
                float *y = take(be, dy, n * m);
                double *ref = malloc((size_t)(n * m) * sizeof(double));
                double *mag = malloc((size_t)(n * m) * sizeof(double));
                ref_linear(ref, mag, x, &wh, bv, n);
                float *reff = to_float(ref, n * m);
                if (!CHECK(test_max_abs_diff(y, reff, n * m, NULL) < 1e-4))
                    test_fail(__FILE__, __LINE__, "%s, %s, n=%lld", backends[b].name,
                              dtype_info(types[t])->name, (long long)n);
                be->ops->release(be, dx);
                free(wv), free(bv), free(x), free(ws), free(bs), free(y), free(ref), free(mag),
                    free(reff);
            }
        }
        backend_free(be);
    }
}

/* A bf16 matrix prepared for linear_bf16: the backend's own layout where the CPU has AVX-512
 * BF16 (a copy: the file's rows are no longer read), rows as stored elsewhere; either way
 * linear_bf16 gives bf16(x) · W within f32 rounding, and the same bits for a row alone as in
 * a batch. Anything but a bf16 matrix is refused. */
TEST(backend_bf16_matrix)
{
    const int64_t k = 130, m = 45, n = 11;
    for (int b = 0; b < N_BACKENDS; b++) {
        struct err e;
        struct backend *be = backends[b].create(&e);
        REQUIRE(be != NULL);
        float *wv = rand_array(k * m, -1, 1), *x = rand_array(n * k, -1, 1);
        struct tensor w, wh, wrows;
        void *ws;
        int64_t wne[2] = { k, m };
        REQUIRE(weight(be, &w, &wh, &ws, wv, DTYPE_BF16, 2, wne, BACKEND_WEIGHT_LINEAR_BF16) == 0);
        REQUIRE(be->ops->weight(be, &wrows, &wh, BACKEND_WEIGHT_MATRIX, &e) == 0);
        int panels = cpu_detect() == CPU_LEVEL_AVX512;
        CHECK(w.layout == (panels ? TENSOR_BF16_PANELS : TENSOR_ROWS));
        CHECK((w.data != wh.data) == panels);
        CHECK(w.ne[0] == k && w.ne[1] == m && w.type == DTYPE_BF16);
        float *dx = put(be, x, n * k);
        float *dy = be->ops->alloc(be, (size_t)(n * m) * sizeof(float));
        float *d1 = be->ops->alloc(be, (size_t)m * sizeof(float));
        float *dr = be->ops->alloc(be, (size_t)(n * m) * sizeof(float));
        be->ops->linear_bf16(be, dy, dx, &w, NULL, n, 1);
        be->ops->linear_bf16(be, d1, dx + (n - 1) * k, &w, NULL, 1, 1);
        be->ops->linear_bf16(be, dr, dx, &wrows, NULL, n, 1);
        float *y = take(be, dy, n * m), *y1 = take(be, d1, m), *yr = take(be, dr, n * m);
        CHECK(memcmp(y + (n - 1) * m, y1, (size_t)m * sizeof *y) == 0);
        CHECK(test_max_abs_diff(y, yr, n * m, NULL) < 1e-4);
        be->ops->release(be, dx);
        struct tensor out, vec;
        int64_t vne[1] = { k };
        void *vs;
        CHECK(weight(be, &out, &vec, &vs, wv, DTYPE_F16, 2, wne, BACKEND_WEIGHT_LINEAR_BF16) == -1);
        free(vs);
        CHECK(weight(be, &out, &vec, &vs, wv, DTYPE_BF16, 1, vne, BACKEND_WEIGHT_LINEAR_BF16) ==
              -1);
        free(vs);
        free(wv), free(x), free(ws), free(y), free(y1), free(yr);
        backend_free(be);
    }
}

/* A matrix prepared for `linear` alone: f32 and f16 in panels on AVX-512 CPUs (row-exact at
 * any n), other types as stored; the same products as the rows as stored within rounding. */
TEST(backend_linear_matrix)
{
    static const enum dtype types[] = { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_Q8_0 };
    const int64_t k = 96, m = 45, n = 20;
    for (int b = 0; b < N_BACKENDS; b++) {
        struct err e;
        struct backend *be = backends[b].create(&e);
        REQUIRE(be != NULL);
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            float *wv = rand_array(k * m, -1, 1), *x = rand_array(n * k, -1, 1);
            struct tensor w, wh, wrows;
            void *ws;
            int64_t wne[2] = { k, m };
            REQUIRE(weight(be, &w, &wh, &ws, wv, types[t], 2, wne, BACKEND_WEIGHT_LINEAR) == 0);
            REQUIRE(be->ops->weight(be, &wrows, &wh, BACKEND_WEIGHT_MATRIX, &e) == 0);
            int panels = cpu_detect() == CPU_LEVEL_AVX512 &&
                         (types[t] == DTYPE_F32 || types[t] == DTYPE_F16);
            CHECK(w.layout == (panels ? TENSOR_PANELS : TENSOR_ROWS));
            float *dx = put(be, x, n * k);
            float *dy = be->ops->alloc(be, (size_t)(n * m) * sizeof(float));
            float *d1 = be->ops->alloc(be, (size_t)m * sizeof(float));
            float *dr = be->ops->alloc(be, (size_t)(n * m) * sizeof(float));
            be->ops->linear(be, dy, dx, &w, NULL, n, 1);
            be->ops->linear(be, d1, dx + 3 * k, &w, NULL, 1, 1);
            be->ops->linear(be, dr, dx, &wrows, NULL, n, 0);
            float *y = take(be, dy, n * m), *y1 = take(be, d1, m), *yr = take(be, dr, n * m);
            if (panels)
                CHECK(memcmp(y + 3 * m, y1, (size_t)m * sizeof *y) == 0);
            CHECK(test_max_abs_diff(y, yr, n * m, NULL) < 1e-4);
            be->ops->release(be, dx);
            free(wv), free(x), free(ws), free(y), free(y1), free(yr);
        }
        backend_free(be);
    }
}

TEST(backend_norms_and_activations)
{
    const int64_t n = 5, dim = 67;
    for (int b = 0; b < N_BACKENDS; b++) {
        struct err e;
        struct backend *be = backends[b].create(&e);
        REQUIRE(be != NULL);
        float *x = rand_array(n * dim, -3, 3), *wv = rand_array(dim, 0.5f, 1.5f);
        float *bv = rand_array(dim, -0.5f, 0.5f);
        struct tensor w, wh, bias, bh;
        void *ws, *bs;
        int64_t ne[1] = { dim };
        /* norm weights stored as bf16: the backend widens them to f32 */
        REQUIRE(weight(be, &w, &wh, &ws, wv, DTYPE_BF16, 1, ne, BACKEND_WEIGHT_F32) == 0);
        REQUIRE(weight(be, &bias, &bh, &bs, bv, DTYPE_F32, 1, ne, BACKEND_WEIGHT_F32) == 0);
        float *wf = malloc((size_t)dim * sizeof(float));
        dtype_to_f32(DTYPE_BF16, ws, wf, dim);
        double *ref = malloc((size_t)(n * dim) * sizeof(double));

        float *dx = put(be, x, n * dim);
        float *dy = be->ops->alloc(be, (size_t)(n * dim) * sizeof(float));
        be->ops->rms_norm(be, dy, dx, &w, n, dim, 1e-5f, 0);
        float *y = take(be, dy, n * dim);
        ref_ops_rms_norm(ref, x, wf, n, dim, 1e-5);
        float *rf = to_float(ref, n * dim);
        CHECK_ARRAY_NEAR(y, rf, n * dim, 1e-5);
        free(y), free(rf);

        dy = be->ops->alloc(be, (size_t)(n * dim) * sizeof(float));
        be->ops->layer_norm(be, dy, dx, &w, &bias, n, dim, 1e-5f);
        y = take(be, dy, n * dim);
        ref_ops_layer_norm(ref, x, wf, bv, n, dim, 1e-5);
        rf = to_float(ref, n * dim);
        CHECK_ARRAY_NEAR(y, rf, n * dim, 1e-5);
        free(y), free(rf);

        /* group norm over [C = dim][T = n] with one group per channel pair... use 1 group */
        dy = be->ops->alloc(be, (size_t)(n * dim) * sizeof(float));
        struct tensor gw, gwh, gb, gbh;
        void *gws, *gbs;
        int64_t cne[1] = { n };
        float *gwv = rand_array(n, 0.5f, 1.5f), *gbv = rand_array(n, -1, 1);
        REQUIRE(weight(be, &gw, &gwh, &gws, gwv, DTYPE_F32, 1, cne, BACKEND_WEIGHT_F32) == 0);
        REQUIRE(weight(be, &gb, &gbh, &gbs, gbv, DTYPE_F32, 1, cne, BACKEND_WEIGHT_F32) == 0);
        be->ops->group_norm(be, dy, dx, &gw, &gb, n, dim, 1, 1e-5f);
        y = take(be, dy, n * dim);
        ref_ops_group_norm(ref, x, gwv, gbv, n, dim, 1, 1e-5);
        rf = to_float(ref, n * dim);
        CHECK_ARRAY_NEAR(y, rf, n * dim, 1e-5);
        free(y), free(rf);

        static const struct {
            enum backend_unary f;
            float param;
        } unary[] = { { BACKEND_GELU, 0 }, { BACKEND_SILU, 0 },         { BACKEND_MISH, 0 },
                      { BACKEND_TANH, 0 }, { BACKEND_EXP, 0 },          { BACKEND_SIN, 0 },
                      { BACKEND_ELU, 1 },  { BACKEND_LEAKY_RELU, 0.1f } };
        for (size_t u = 0; u < sizeof unary / sizeof unary[0]; u++) {
            dy = be->ops->alloc(be, (size_t)(n * dim) * sizeof(float));
            be->ops->unary(be, unary[u].f, dy, dx, n * dim, unary[u].param);
            y = take(be, dy, n * dim);
            for (int64_t i = 0; i < n * dim; i++) {
                double v = x[i], r = 0;
                switch (unary[u].f) {
                case BACKEND_GELU: r = ref_ops_gelu(v); break;
                case BACKEND_SILU: r = ref_ops_silu(v); break;
                case BACKEND_MISH: r = ref_ops_mish(v); break;
                case BACKEND_TANH: r = tanh(v); break;
                case BACKEND_EXP: r = exp(v); break;
                case BACKEND_SIN: r = sin(v); break;
                case BACKEND_ELU: r = ref_ops_elu(v, 1); break;
                case BACKEND_LEAKY_RELU: r = ref_ops_leaky_relu(v, 0.1); break;
                }
                if (!CHECK(fabs(y[i] - r) <= 1e-5 * (1 + fabs(r)))) {
                    test_fail(__FILE__, __LINE__, "unary %d at x = %g", (int)unary[u].f, v);
                    break;
                }
            }
            free(y);
        }

        /* swiglu: x viewed as [n][2·h] */
        int64_t h = dim / 2;
        dy = be->ops->alloc(be, (size_t)(n * h) * sizeof(float));
        float *sx = put(be, x, n * 2 * h);
        be->ops->swiglu(be, dy, sx, n, h);
        y = take(be, dy, n * h);
        for (int64_t r = 0; r < n; r++)
            for (int64_t i = 0; i < h; i++)
                CHECK_NEAR(y[r * h + i], ref_ops_silu(x[r * 2 * h + i]) * x[r * 2 * h + h + i],
                           1e-5);
        be->ops->release(be, sx);
        free(y);

        be->ops->release(be, dx);
        free(x), free(wv), free(bv), free(ws), free(bs), free(wf), free(ref), free(gwv), free(gbv),
            free(gws), free(gbs);
        backend_free(be);
    }
}

TEST(backend_attention_and_rope)
{
    const int n_head = 4, n_kv_head = 2, hd = 16;
    const int64_t n_q = 7, n_kv = 7;
    for (int b = 0; b < N_BACKENDS; b++) {
        struct err e;
        struct backend *be = backends[b].create(&e);
        REQUIRE(be != NULL);
        int64_t qn = n_q * n_head * hd, kn = n_kv * n_kv_head * hd;
        float *q = rand_array(qn, -1, 1), *k = rand_array(kn, -1, 1), *v = rand_array(kn, -1, 1);

        struct rope_table rt;
        REQUIRE(rope_table_init(&rt, hd / 2, 10000.0f, 64, 0, &e) == 0);
        float *dq = put(be, q, qn);
        be->ops->rope(be, &rt, dq, n_q, n_head * hd, n_head, hd, NULL, 3);
        float *qr = take(be, dq, qn);
        int64_t pos[7];
        for (int i = 0; i < 7; i++)
            pos[i] = 3 + i;
        double *ref = malloc((size_t)qn * sizeof(double));
        ref_ops_rope(ref, q, n_q, n_head, hd, hd / 2, 10000.0f, pos, 0);
        float *rf = to_float(ref, qn);
        CHECK_ARRAY_NEAR(qr, rf, qn, 1e-5);
        free(rf);

        double *kd = malloc((size_t)kn * sizeof(double)), *vd = malloc((size_t)kn * sizeof(double));
        for (int64_t i = 0; i < kn; i++)
            kd[i] = k[i], vd[i] = v[i];
        struct attn_desc d = { .n_head = n_head,
                               .n_kv_head = n_kv_head,
                               .head_dim = hd,
                               .kv_type = DTYPE_F32,
                               .mask = { .kind = ATTN_MASK_CAUSAL, .pos0 = 0, .n_valid = 6 } };
        float *dq2 = put(be, q, qn), *dk = put(be, k, kn), *dv = put(be, v, kn);
        float *dout = be->ops->alloc(be, (size_t)qn * sizeof(float));
        be->ops->attention(be, dout, dq2, dk, dv, n_q, n_kv, &d);
        float *out = take(be, dout, qn);
        struct ref_ops_mask m = { .kind = 1, .pos0 = 0, .n_valid = 6 };
        ref_ops_attention(ref, q, kd, vd, n_q, n_kv, n_head, n_kv_head, hd, 1.0 / sqrt(hd), 0, &m);
        rf = to_float(ref, qn);
        CHECK_ARRAY_NEAR(out, rf, qn, 1e-5);
        free(rf);

        /* softmax with a block-causal mask */
        float *sx = rand_array(n_q * n_kv, -4, 4);
        float *ds = put(be, sx, n_q * n_kv);
        struct attn_mask sm = { .kind = ATTN_MASK_BLOCK_CAUSAL, .block = 3 };
        be->ops->softmax(be, ds, ds, n_q, n_kv, &sm);
        float *s = take(be, ds, n_q * n_kv);
        struct ref_ops_mask rm = { .kind = 2, .block = 3 };
        ref_ops_softmax(ref, sx, n_q, n_kv, &rm);
        rf = to_float(ref, n_q * n_kv);
        CHECK_ARRAY_NEAR(s, rf, n_q * n_kv, 1e-6);
        free(rf), free(s), free(sx);

        be->ops->release(be, dq2), be->ops->release(be, dk), be->ops->release(be, dv);
        rope_table_free(&rt);
        free(q), free(k), free(v), free(qr), free(ref), free(kd), free(vd), free(out);
        backend_free(be);
    }
}

TEST(backend_conv_pool_vq_spectral)
{
    for (int b = 0; b < N_BACKENDS; b++) {
        struct err e;
        struct backend *be = backends[b].create(&e);
        REQUIRE(be != NULL);
        const int c_in = 6, c_out = 5, kk = 3;
        const int64_t t = 23;
        float *x = rand_array(c_in * t, -1, 1), *wv = rand_array(c_out * c_in * kk, -1, 1);
        float *bv = rand_array(c_out, -1, 1);
        struct tensor w, wh, bias, bh;
        void *ws, *bs;
        int64_t wne[3] = { kk, c_in, c_out }, bne[1] = { c_out };
        REQUIRE(weight(be, &w, &wh, &ws, wv, DTYPE_F16, 3, wne, BACKEND_WEIGHT_F32) == 0);
        REQUIRE(weight(be, &bias, &bh, &bs, bv, DTYPE_F32, 1, bne, BACKEND_WEIGHT_F32) == 0);
        float *wf = malloc((size_t)(c_out * c_in * kk) * sizeof(float));
        dtype_to_f32(DTYPE_F16, ws, wf, c_out * c_in * kk);

        struct conv_params p = conv_params_make(c_in, c_out, kk, 2, 1, 1, 1);
        int64_t t_out = conv_1d_out_len(&p, t);
        float *dx = put(be, x, c_in * t);
        float *dy = be->ops->alloc(be, (size_t)(c_out * t_out) * sizeof(float));
        REQUIRE(be->ops->conv1d(be, dy, dx, &w, &bias, &p, t, &e) == 0);
        float *y = take(be, dy, c_out * t_out);
        float *ref = malloc((size_t)(c_out * t_out) * sizeof(float));
        CHECK(ref_conv_1d(ref, x, wf, bv, c_in, c_out, kk, 2, 1, 1, 1, 1, 0, t) == t_out);
        CHECK_ARRAY_NEAR(y, ref, c_out * t_out, 1e-5);
        free(y), free(ref);

        /* transposed: weight [C_in][C_out][K], here C_in = 6 -> C_out = 5 */
        struct conv_transpose_params tp = {
            .c_in = c_in, .c_out = c_out, .k = 4, .stride = 2, .dilation = 1, .pad = 1, .out_pad = 0
        };
        float *twv = rand_array(c_in * c_out * 4, -1, 1);
        struct tensor tw, twh;
        void *tws;
        int64_t twne[3] = { 4, c_out, c_in };
        REQUIRE(weight(be, &tw, &twh, &tws, twv, DTYPE_F32, 3, twne, BACKEND_WEIGHT_F32) == 0);
        int64_t tt = conv_transpose_1d_out_len(&tp, t);
        dy = be->ops->alloc(be, (size_t)(c_out * tt) * sizeof(float));
        REQUIRE(be->ops->conv_transpose1d(be, dy, dx, &tw, &bias, &tp, t, &e) == 0);
        y = take(be, dy, c_out * tt);
        ref = malloc((size_t)(c_out * tt) * sizeof(float));
        CHECK(ref_conv_transpose_1d(ref, x, twv, bv, c_in, c_out, 4, 2, 1, 1, 0, t) == tt);
        CHECK_ARRAY_NEAR(y, ref, c_out * tt, 1e-5);
        free(y), free(ref), free(twv), free(tws);

        /* average pooling by 4 and nearest upsampling */
        int64_t tp4 = t / 4;
        dy = be->ops->alloc(be, (size_t)(c_in * tp4) * sizeof(float));
        be->ops->avg_pool(be, dy, dx, c_in, t, 4, 4, 0);
        y = take(be, dy, c_in * tp4);
        for (int c = 0; c < c_in; c++)
            for (int64_t i = 0; i < tp4; i++) {
                double s = 0;
                for (int j = 0; j < 4; j++)
                    s += x[c * t + 4 * i + j];
                CHECK_NEAR(y[c * tp4 + i], s / 4, 1e-6);
            }
        free(y);
        dy = be->ops->alloc(be, (size_t)(c_in * 3 * t) * sizeof(float));
        be->ops->upsample_nearest(be, dy, dx, c_in, t, 3 * t);
        y = take(be, dy, c_in * 3 * t);
        for (int64_t i = 0; i < c_in * 3 * t; i++)
            CHECK(y[i] == x[(i / (3 * t)) * t + (i % (3 * t)) / 3]);
        free(y);

        /* vq: the nearest of 9 codes for 4 vectors of dim 6 */
        float *cb = rand_array(9 * 6, -1, 1);
        struct tensor cw, cwh;
        void *cws;
        int64_t cne[2] = { 6, 9 };
        REQUIRE(weight(be, &cw, &cwh, &cws, cb, DTYPE_F32, 2, cne, BACKEND_WEIGHT_F32) == 0);
        float *norms = be->ops->alloc(be, 9 * sizeof(float));
        be->ops->vq_norms(be, norms, &cw);
        int32_t *idx = be->ops->alloc(be, 4 * sizeof(int32_t)), got[4], want[4];
        float *vx = put(be, x, 4 * 6);
        be->ops->vq_argmin(be, idx, vx, 4, &cw, norms);
        be->ops->download(be, got, idx, sizeof got);
        ref_conv_vq_argmin(want, x, 4, cb, 9, 6);
        CHECK(memcmp(got, want, sizeof got) == 0);
        be->ops->release(be, norms), be->ops->release(be, idx), be->ops->release(be, vx);
        free(cb), free(cws);

        /* stft -> istft reconstructs the signal (Hann, n_fft 16, hop 4) */
        struct spectral_plan sp;
        float win[16];
        spectral_hann(win, 16, 1);
        REQUIRE(spectral_plan_init(&sp, 16, 4, win, &e) == 0);
        int64_t len = 64, frames = spectral_frames(&sp, len);
        float *sig = rand_array(len, -1, 1);
        float *dsig = put(be, sig, len);
        float *dspec = be->ops->alloc(be, (size_t)(2 * sp.n_bins * frames) * sizeof(float));
        REQUIRE(be->ops->stft(be, &sp, dspec, frames, dsig, len, &e) == 0);
        float *dback = be->ops->alloc(be, (size_t)len * sizeof(float));
        REQUIRE(be->ops->istft(be, &sp, dback, len, dspec, frames, &e) == 0);
        float *back = take(be, dback, len);
        CHECK_ARRAY_NEAR(back, sig, len, 1e-5);
        be->ops->release(be, dsig), be->ops->release(be, dspec);
        spectral_plan_free(&sp);
        free(sig), free(back);

        be->ops->release(be, dx);
        free(x), free(wv), free(bv), free(ws), free(bs), free(wf);
        backend_free(be);
    }
}

TEST(backend_refuses_bad_input)
{
    struct err e;
    CHECK(backend_cpu_create(0, &e) == NULL);
    struct backend *be = backend_cpu_create(1, &e);
    REQUIRE(be != NULL);
    /* a matrix of a type the kernels cannot read */
    struct tensor bad = { .name = "w", .type = (enum dtype)2, .n_dims = 2, .ne = { 32, 2, 1, 1 } };
    struct tensor out;
    CHECK(be->ops->weight(be, &out, &bad, BACKEND_WEIGHT_MATRIX, &e) == -1);
    CHECK(strstr(e.msg, "'w'") != NULL);
    backend_free(be);
}

TEST(backend_elementwise_and_matmul)
{
    const int64_t rows = 3, dim = 19, n = rows * dim;
    for (int b = 0; b < N_BACKENDS; b++) {
        struct err e;
        struct backend *be = backends[b].create(&e);
        REQUIRE(be != NULL);
        float *x = rand_array(n, -2, 2), *z = rand_array(n, -2, 2);
        float *bv = rand_array(dim, 0.1f, 1), *cv = rand_array(rows, -1, 1);
        struct tensor bias, bh, cb, cbh;
        void *bs, *cs;
        int64_t bne[1] = { dim }, cne[1] = { rows };
        REQUIRE(weight(be, &bias, &bh, &bs, bv, DTYPE_F32, 1, bne, BACKEND_WEIGHT_F32) == 0);
        REQUIRE(weight(be, &cb, &cbh, &cs, cv, DTYPE_F32, 1, cne, BACKEND_WEIGHT_F32) == 0);
        float *dx = put(be, x, n), *dz = put(be, z, n);
        float *dy = be->ops->alloc(be, (size_t)n * sizeof(float));
        float *y;

        be->ops->add(be, dy, dx, dz, n);
        be->ops->download(be, (y = malloc((size_t)n * sizeof(float))), dy, (size_t)n * 4);
        for (int64_t i = 0; i < n; i++)
            CHECK(y[i] == x[i] + z[i]);
        be->ops->mul(be, dy, dx, dz, n);
        be->ops->download(be, y, dy, (size_t)n * 4);
        for (int64_t i = 0; i < n; i++)
            CHECK(y[i] == x[i] * z[i]);
        be->ops->scale(be, dy, dx, 0.5f, n);
        be->ops->download(be, y, dy, (size_t)n * 4);
        for (int64_t i = 0; i < n; i++)
            CHECK(y[i] == x[i] * 0.5f);
        be->ops->add_bias(be, dy, dx, &bias, rows, dim, 0);
        be->ops->download(be, y, dy, (size_t)n * 4);
        for (int64_t i = 0; i < n; i++)
            CHECK(y[i] == x[i] + bv[i % dim]);
        be->ops->add_bias(be, dy, dx, &cb, rows, dim, 1);
        be->ops->download(be, y, dy, (size_t)n * 4);
        for (int64_t i = 0; i < n; i++)
            CHECK(y[i] == x[i] + cv[i / dim]);
        /* snake over [C = rows][T = dim] with alpha per channel */
        be->ops->snake(be, dy, dx, &cb, rows, dim);
        be->ops->download(be, y, dy, (size_t)n * 4);
        for (int64_t i = 0; i < n; i++)
            CHECK_NEAR(y[i], ref_ops_snake(x[i], cv[i / dim]), 1e-4 * (1 + fabs(x[i])));

        /* matmul: y[rows][rows] = x[rows][dim] · z[rows][dim]ᵀ */
        float *dm = be->ops->alloc(be, (size_t)(rows * rows) * sizeof(float));
        be->ops->matmul(be, dm, rows, dx, dim, dz, dim, rows, rows, dim, 1, 1.0f, 0.0f);
        float mm[9];
        be->ops->download(be, mm, dm, sizeof mm);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < rows; j++) {
                double s = 0;
                for (int64_t k = 0; k < dim; k++)
                    s += (double)x[i * dim + k] * z[j * dim + k];
                CHECK_NEAR(mm[i * rows + j], s, 1e-5);
            }
        be->ops->release(be, dm);
        be->ops->release(be, dx), be->ops->release(be, dz), be->ops->release(be, dy);
        free(x), free(z), free(bv), free(cv), free(bs), free(cs), free(y);
        backend_free(be);
    }
}
