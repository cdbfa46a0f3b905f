/* Golden tests of the act, norm, attn and rope kernels against PyTorch: reads
 * build/golden/ops_torch.gguf (written by tests/golden/ops_torch.py, which tests/run.sh runs
 * first) and compares every case at every CPU level, printing the largest difference per
 * tensor. The plain C references of tests/ref could share a misreading of the spec with the
 * kernels; these outputs come from torch's own operators.
 *
 * Tolerances (|ours − torch| <=):
 *   activations      2e-6·|torch| + 1e-6 (torch's vectorized erf/exp/log1p are ~1e-7
 *                    absolute; its GELU tail is 1 + erf in float, so an absolute floor)
 *   exp              2e-6 relative
 *   norms            2e-6·(|torch| + 1)
 *   RMSNorm bf16     identical bf16 values, except at most 0.5% of them one bf16 step apart
 *                    (the f32 value before rounding differs in its last bits)
 *   softmax          1e-6·|torch| + 1e-9
 *   attention        2e-5
 *   RoPE table       bf16: identical except at most 1% of entries one bf16 step apart; f32:
 *                    within one f32 ulp (libm cosf/sinf vs torch's Sleef); the rotation within
 *                    1e-6·(|x0| + |x1|) plus what those table differences explain */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/act.h"
#include "kernels/attn.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "runtime/cpu.h"
#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "test.h"

#define GOLDEN_PATH "build/golden/ops_torch.gguf"
#define GOLDEN_CMD  "/usr/bin/python3 tests/golden/ops_torch.py build/golden"

static int golden_open(struct gguf_file *f)
{
    struct err e;
    if (gguf_open(f, GOLDEN_PATH, &e) != 0) {
        test_fail(__FILE__, __LINE__, "%s (generate it with: %s)", e.msg, GOLDEN_CMD);
        return -1;
    }
    return 0;
}

/* An f32 tensor's data and element count; NULL (test failed) when missing or not f32. */
static const float *tensor_f32(const struct gguf_file *f, const char *name, int64_t *n)
{
    const struct tensor *t = gguf_tensor(f, name);
    if (!t || t->type != DTYPE_F32) {
        test_fail(__FILE__, __LINE__, "%s: no f32 tensor %s (regenerate: %s)", GOLDEN_PATH, name,
                  GOLDEN_CMD);
        return NULL;
    }
    if (n)
        *n = tensor_nelements(t);
    return t->data;
}

static int64_t meta_i64(const struct gguf_file *f, const char *key)
{
    int64_t v = 0;
    struct err e;
    if (gguf_get_i64(f, key, &v, &e))
        test_fail(__FILE__, __LINE__, "%s", e.msg);
    return v;
}

static float meta_f32(const struct gguf_file *f, const char *key)
{
    float v = 0;
    struct err e;
    if (gguf_get_f32(f, key, &v, &e))
        test_fail(__FILE__, __LINE__, "%s", e.msg);
    return v;
}

/* Compares n values: |a − b| <= rel·|b| + abs. Prints the largest difference. */
static void compare(const char *what, const float *a, const float *b, int64_t n, double rel,
                    double abs)
{
    double worst = 0, worst_rel = 0;
    int64_t at = 0, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d != d)
            d = INFINITY;
        if (d > worst) {
            worst = d;
            at = i;
        }
        if (b[i] != 0 && d / fabs(b[i]) > worst_rel)
            worst_rel = d / fabs(b[i]);
        if (!(d <= rel * fabs(b[i]) + abs) && bad++ < 3)
            test_fail(__FILE__, __LINE__, "%s [%lld]: %.9g, torch %.9g", what, (long long)i,
                      (double)a[i], (double)b[i]);
    }
    printf("    %-34s max |diff| %.3g (at %lld), max rel %.3g\n", what, worst, (long long)at,
           worst_rel);
}

static const char *level_tag(const char *name)
{
    static char buf[96];
    snprintf(buf, sizeof buf, "%s/%s", name, cpu_level_name(cpu_level()));
    return buf;
}

TEST(golden_ops_activations)
{
    struct gguf_file f;
    if (golden_open(&f))
        return;
    int64_t n, nx, ct;
    const float *x = tensor_f32(&f, "act.x", &n), *xe = tensor_f32(&f, "exp.x", &nx);
    const float *xs = tensor_f32(&f, "snake.x", &ct), *alpha = tensor_f32(&f, "snake.alpha", NULL);
    const float *xg = tensor_f32(&f, "swiglu.x", NULL);
    static float y[4096];
    REQUIRE(x && xe && xs && alpha && xg && n <= 4096 && nx <= 4096 && ct <= 4096);
    static const char *names[] = { "gelu",       "silu",           "mish", "elu",
                                   "leaky_relu", "leaky_relu_001", "tanh", "sin" };
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        for (int k = 0; k < 8; k++) {
            char key[64];
            snprintf(key, sizeof key, "act.%s", names[k]);
            const float *want = tensor_f32(&f, key, NULL);
            REQUIRE(want);
            switch (k) {
            case 0: act_gelu(NULL, y, x, n); break;
            case 1: act_silu(NULL, y, x, n); break;
            case 2: act_mish(NULL, y, x, n); break;
            case 3: act_elu(NULL, y, x, n, 1.0f); break;
            case 4: act_leaky_relu(NULL, y, x, n, 0.1f); break;
            case 5: act_leaky_relu(NULL, y, x, n, 0.01f); break;
            case 6: act_tanh(NULL, y, x, n); break;
            case 7: act_sin(NULL, y, x, n); break;
            }
            compare(level_tag(names[k]), y, want, n, 2e-6, 1e-6);
        }
        act_exp(NULL, y, xe, nx);
        compare(level_tag("exp"), y, tensor_f32(&f, "exp.y", NULL), nx, 2e-6, 0);
        act_snake(NULL, y, xs, alpha, 7, ct / 7);
        compare(level_tag("snake"), y, tensor_f32(&f, "snake.y", NULL), ct, 2e-6, 1e-6);
        act_swiglu(NULL, y, xg, 3, 517);
        compare(level_tag("swiglu"), y, tensor_f32(&f, "swiglu.y", NULL), 3 * 517, 2e-6, 1e-6);
    }
    cpu_set_level(cpu_detect());
    gguf_close(&f);
}

TEST(golden_ops_norms)
{
    struct gguf_file f;
    if (golden_open(&f))
        return;
    static float y[5 * 1283 + 4 * 1031 + 3 * 4100 + 256 * 69 + 80 * 203];
    int64_t n;
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        const float *x = tensor_f32(&f, "layer_norm.x", &n);
        const float *w = tensor_f32(&f, "layer_norm.w", NULL),
                    *b = tensor_f32(&f, "layer_norm.b", NULL);
        REQUIRE(x && w && b && n == 5 * 1283);
        norm_layer(NULL, y, x, w, b, 5, 1283, meta_f32(&f, "layer_norm.eps"));
        compare(level_tag("layer_norm"), y, tensor_f32(&f, "layer_norm.y", NULL), n, 2e-6, 2e-6);

        x = tensor_f32(&f, "rms_norm.x", &n);
        w = tensor_f32(&f, "rms_norm.w", NULL);
        REQUIRE(x && w && n == 4 * 1031);
        norm_rms(NULL, y, x, w, 4, 1031, meta_f32(&f, "rms_norm.eps"), 0);
        compare(level_tag("rms_norm"), y, tensor_f32(&f, "rms_norm.y", NULL), n, 2e-6, 2e-6);

        x = tensor_f32(&f, "rms_norm_bf16.x", &n);
        w = tensor_f32(&f, "rms_norm_bf16.w", NULL);
        const float *want = tensor_f32(&f, "rms_norm_bf16.y", NULL);
        REQUIRE(x && w && want && n == 3 * 4100);
        norm_rms(NULL, y, x, w, 3, 4100, meta_f32(&f, "rms_norm_bf16.eps"), 1);
        int64_t differ = 0;
        for (int64_t i = 0; i < n; i++)
            if (y[i] != want[i]) {
                differ++;
                /* one bf16 step: 2^-7 of the value's binade */
                if (!(fabsf(y[i] - want[i]) <= fabsf(want[i]) * 0x1p-7))
                    test_fail(__FILE__, __LINE__, "rms bf16 [%lld] %.9g vs torch %.9g",
                              (long long)i, (double)y[i], (double)want[i]);
            }
        printf("    %-34s %lld of %lld values one bf16 step apart\n", level_tag("rms_norm_bf16"),
               (long long)differ, (long long)n);
        CHECK(differ * 200 <= n);

        static const char *gn[] = { "group_norm8", "group_norm1" };
        static const int64_t gc[] = { 256, 80 }, gt[] = { 69, 203 };
        for (int k = 0; k < 2; k++) {
            char key[64];
            snprintf(key, sizeof key, "%s.x", gn[k]);
            x = tensor_f32(&f, key, &n);
            snprintf(key, sizeof key, "%s.w", gn[k]);
            w = tensor_f32(&f, key, NULL);
            snprintf(key, sizeof key, "%s.b", gn[k]);
            b = tensor_f32(&f, key, NULL);
            REQUIRE(x && w && b && n == gc[k] * gt[k]);
            snprintf(key, sizeof key, "%s.groups", gn[k]);
            int groups = (int)meta_i64(&f, key);
            snprintf(key, sizeof key, "%s.eps", gn[k]);
            norm_group(NULL, y, x, w, b, gc[k], gt[k], groups, meta_f32(&f, key));
            snprintf(key, sizeof key, "%s.y", gn[k]);
            compare(level_tag(gn[k]), y, tensor_f32(&f, key, NULL), n, 2e-6, 2e-6);
        }
    }
    cpu_set_level(cpu_detect());
    gguf_close(&f);
}

TEST(golden_ops_softmax)
{
    struct gguf_file f;
    if (golden_open(&f))
        return;
    int64_t n;
    const float *x = tensor_f32(&f, "softmax.x", &n);
    REQUIRE(x && n == 7 * 45);
    static float y[7 * 45];
    for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
        REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
        attn_softmax(NULL, y, x, 7, 45, NULL);
        compare(level_tag("softmax"), y, tensor_f32(&f, "softmax.y", NULL), n, 1e-6, 1e-9);
    }
    cpu_set_level(cpu_detect());
    gguf_close(&f);
}

TEST(golden_ops_attention)
{
    static const char *cases[] = { "attn_gqa_causal", "attn_decode_bf16", "attn_block_pad_f16",
                                   "attn_bias_one" };
    struct gguf_file f;
    if (golden_open(&f))
        return;
    struct pool *two = pool_create(2);
    static float out[3 * 32 * 128 + 45 * 4 * 24 + 37 * 8 * 40];
    static char scratch[256 * 1024];
    REQUIRE(two);
    for (int c = 0; c < 4; c++) {
        char key[96];
#define META(k) (snprintf(key, sizeof key, "%s.%s", cases[c], k), meta_i64(&f, key))
        struct attn_desc d = {
            .n_head = (int)META("n_head"),
            .n_kv_head = (int)META("n_kv_head"),
            .head_dim = (int)META("head_dim"),
            .mask = { (enum attn_mask_kind)META("mask"), META("pos0"), META("block"),
                      META("n_valid") },
        };
#undef META
        snprintf(key, sizeof key, "%s.bias", cases[c]);
        d.bias = meta_f32(&f, key);
        int64_t nq_all;
        snprintf(key, sizeof key, "%s.q", cases[c]);
        const float *q = tensor_f32(&f, key, &nq_all);
        snprintf(key, sizeof key, "%s.k", cases[c]);
        const struct tensor *k = gguf_tensor(&f, key);
        snprintf(key, sizeof key, "%s.v", cases[c]);
        const struct tensor *v = gguf_tensor(&f, key);
        snprintf(key, sizeof key, "%s.out", cases[c]);
        const float *want = tensor_f32(&f, key, NULL);
        REQUIRE(q && k && v && want && k->type == v->type && d.head_dim > 0);
        REQUIRE(nq_all <= (int64_t)(sizeof out / sizeof out[0]));
        REQUIRE(attn_scratch_size(two, d.head_dim) <= sizeof scratch);
        d.kv_type = k->type;
        int64_t n_q = nq_all / ((int64_t)d.n_head * d.head_dim), n_kv = k->ne[2];
        for (int lv = 0; lv <= (int)cpu_detect(); lv++) {
            REQUIRE(cpu_set_level((enum cpu_level)lv) == 0);
            for (int t = 0; t < 2; t++) {
                attn_forward(t ? two : NULL, out, q, k->data, v->data, n_q, n_kv, &d, scratch);
                if (t == 0)
                    compare(level_tag(cases[c]), out, want, nq_all, 0, 2e-5);
                else
                    CHECK_ARRAY_NEAR(out, want, nq_all, 2e-5);
            }
        }
    }
    cpu_set_level(cpu_detect());
    pool_free(two);
    gguf_close(&f);
}

TEST(golden_ops_rope)
{
    struct gguf_file f;
    if (golden_open(&f))
        return;
    static const char *cases[] = { "rope", "rope_f32" };
    for (int c = 0; c < 2; c++) {
        char key[64];
        snprintf(key, sizeof key, "%s.pos", cases[c]);
        const struct gguf_kv *kv = gguf_find(&f, key);
        REQUIRE(kv && kv->type == GGUF_TYPE_ARRAY && kv->elem == GGUF_TYPE_INT32 &&
                kv->count <= 64);
        int64_t pos[64], n_rows = (int64_t)kv->count;
        for (int64_t i = 0; i < n_rows; i++) {
            int32_t p;
            memcpy(&p, (const char *)kv->value + 4 * i, 4);
            pos[i] = p;
        }
        snprintf(key, sizeof key, "%s.rot_dim", cases[c]);
        int rot = (int)meta_i64(&f, key);
        snprintf(key, sizeof key, "%s.base", cases[c]);
        float base = meta_f32(&f, key);
        int64_t n, ncs;
        snprintf(key, sizeof key, "%s.x", cases[c]);
        const float *x = tensor_f32(&f, key, &n);
        snprintf(key, sizeof key, "%s.cs", cases[c]);
        const float *cs = tensor_f32(&f, key, &ncs);
        snprintf(key, sizeof key, "%s.y", cases[c]);
        const float *want = tensor_f32(&f, key, NULL);
        REQUIRE(x && cs && want && rot == 64 && ncs == n_rows * 32 * 2);
        const int n_head = (int)(n / (n_rows * 128));
        struct rope_table t;
        struct err e;
        REQUIRE(rope_table_init(&t, rot, base, 8192, c == 0, &e) == 0);
        /* the table: entries equal to torch's, or one step apart */
        int64_t differ = 0;
        static float dc[64][32], ds[64][32];
        for (int64_t r = 0; r < n_rows; r++)
            for (int i = 0; i < 32; i++) {
                float cc, ss;
                rope_cos_sin(&t, pos[r], i, &cc, &ss);
                const float *tc = cs + (r * 32 + i) * 2;
                dc[r][i] = fabsf(cc - tc[0]);
                ds[r][i] = fabsf(ss - tc[1]);
                differ += (dc[r][i] != 0) + (ds[r][i] != 0);
                float step = c == 0 ? 0x1p-8f : 0x1p-23f; /* one step of a value <= 1 */
                if (!(dc[r][i] <= step && ds[r][i] <= step))
                    test_fail(__FILE__, __LINE__,
                              "%s pos %lld pair %d: (%.9g, %.9g) vs torch "
                              "(%.9g, %.9g)",
                              cases[c], (long long)pos[r], i, (double)cc, (double)ss, (double)tc[0],
                              (double)tc[1]);
            }
        printf("    %-34s %lld of %lld cos/sin entries one step apart\n", cases[c],
               (long long)differ, (long long)ncs);
        if (c == 0) /* bf16 rounding hides nearly all f32 differences */
            CHECK(differ * 100 <= ncs);
        /* the rotation */
        static float y[64 * 6 * 128];
        REQUIRE(n <= (int64_t)(sizeof y / sizeof y[0]));
        memcpy(y, x, (size_t)n * sizeof *y);
        rope_apply(NULL, &t, y, n_rows, (int64_t)n_head * 128, n_head, 128, pos, 0);
        double worst = 0;
        for (int64_t r = 0; r < n_rows; r++)
            for (int h = 0; h < n_head; h++)
                for (int d = 0; d < 128; d++) {
                    int64_t o = (r * n_head + h) * 128 + d;
                    const float *xp = x + (r * n_head + h) * 128 + d / 2 * 2;
                    double tol = 0, diff = fabs((double)y[o] - want[o]);
                    if (d < 64)
                        tol = 1e-6 * (fabs(xp[0]) + fabs(xp[1])) +
                              (dc[r][d / 2] + ds[r][d / 2]) * (fabs(xp[0]) + fabs(xp[1]));
                    worst = diff > worst ? diff : worst;
                    if (!(diff <= tol))
                        test_fail(__FILE__, __LINE__,
                                  "%s row %lld head %d dim %d: %.9g vs "
                                  "torch %.9g",
                                  cases[c], (long long)r, h, d, (double)y[o], (double)want[o]);
                }
        printf("    %-34s max |diff| %.3g\n", cases[c], worst);
        rope_table_free(&t);
    }
    gguf_close(&f);
}
