/*
 * Flow-matching decoder tests: the float32 mel-length rule (spec §7.3.5), and the forward pass
 * against the PyTorch reference of tests/golden/voice_torch.py (random weights in the released
 * layout, converted by deploy/convert.py), with the reference's ODE noise injected, evaluation
 * mode (errata E1). Tolerances: encoder projection and length regulator 1e-4, mel 1e-3 (the
 * required accuracy). PARLEY_GOLDEN_VERBOSE=1 prints the errors.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "test.h"
#include "voice/flow.h"

#define FG_DEC "build/golden/voice_decoder.gguf"
#define FG_REF "build/golden/voice_torch.gguf"
#define FG_CMD "/usr/bin/python3 tests/golden/voice_torch.py build/golden"

TEST(flow_mel_len_float32_rule)
{
    struct flow_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.frame_rate = 12.5f;
    hp.sample_rate = 22050;
    hp.hop = 256;
    static const int64_t n[] = { 10, 20, 25, 26, 50, 100, 150, 200 };
    static const int64_t t[] = { 68, 137, 172, 179, 344, 689, 1033, 1378 };
    for (int i = 0; i < 8; i++)
        CHECK(flow_mel_len(&hp, n[i]) == t[i]);
    /* float32 rounding gives one frame less than floor(n*441/64) at these (spec §7.3.5) */
    static const int64_t odd[] = { 3392, 3776, 4160, 6720 };
    for (int i = 0; i < 4; i++)
        CHECK(flow_mel_len(&hp, odd[i]) == odd[i] * 441 / 64 - 1);
    int64_t mismatches = 0;
    for (int64_t k = 1; k < 3392; k++)
        mismatches += flow_mel_len(&hp, k) != k * 441 / 64;
    CHECK(mismatches == 0);
}

static int fg_verbose(void)
{
    const char *v = getenv("PARLEY_GOLDEN_VERBOSE");
    return v && *v && *v != '0';
}

static const float *fg_tensor(const struct gguf_file *f, const char *name)
{
    const struct tensor *t = gguf_tensor(f, name);
    if (!t)
        test_fail(__FILE__, __LINE__, "%s: no tensor %s", f->path, name);
    return t ? (const float *)t->data : NULL;
}

static int32_t *fg_ints(const struct gguf_file *f, const char *key, int64_t n)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    int32_t *out = calloc((size_t)(n ? n : 1), sizeof *out);
    for (int64_t i = 0; kv && i < n && i < (int64_t)kv->count; i++) {
        int64_t v = 0;
        gguf_array_i64(kv, (uint64_t)i, &v);
        out[i] = (int32_t)v;
    }
    return out;
}

static void fg_case(const struct flow_model *m, struct flow_state *s, struct pool *pool,
                    const struct gguf_file *ref, const char *name)
{
    char key[64];
    int64_t n_new = 0, n_prompt = 0;
    struct err e;
    snprintf(key, sizeof key, "%s.n_tokens", name);
    gguf_get_i64(ref, key, &n_new, &e);
    snprintf(key, sizeof key, "%s.n_prompt", name);
    gguf_get_i64(ref, key, &n_prompt, &e);
    snprintf(key, sizeof key, "%s.tokens", name);
    int32_t *tok = fg_ints(ref, key, n_new);
    snprintf(key, sizeof key, "%s.prompt_tokens", name);
    int32_t *ptok = fg_ints(ref, key, n_prompt);
    const float *pfeat = NULL;
    int64_t p_feat = 0;
    if (n_prompt) {
        snprintf(key, sizeof key, "%s.prompt_feat", name);
        const struct tensor *t = gguf_tensor(ref, key);
        if (t) {
            pfeat = t->data;
            p_feat = t->ne[0];
        }
    }
    snprintf(key, sizeof key, "%s.noise", name);
    const float *noise = fg_tensor(ref, key);
    snprintf(key, sizeof key, "%s.h80", name);
    const float *h80_ref = fg_tensor(ref, key);
    snprintf(key, sizeof key, "%s.mu", name);
    const float *mu_ref = fg_tensor(ref, key);
    snprintf(key, sizeof key, "%s.mel", name);
    const float *mel_ref = fg_tensor(ref, key);
    int64_t n = n_new + n_prompt, T = flow_mel_len(&m->hp, n), M = m->hp.n_mel;
    if (noise && h80_ref && mu_ref && mel_ref) {
        float *mel = malloc(sizeof(float) * (size_t)(M * T));
        float *mu = malloc(sizeof(float) * (size_t)(M * T));
        float *h80 = malloc(sizeof(float) * (size_t)(M * n));
        int64_t n_out = -1;
        int rc = flow_inference(m, s, pool, mel, &n_out, tok, n_new, ptok, n_prompt, pfeat, p_feat,
                                noise, mu, h80, &e);
        if (rc)
            test_fail(__FILE__, __LINE__, "%s: %s", name, e.msg);
        else {
            CHECK(n_out == T - p_feat);
            CHECK_ARRAY_NEAR(h80, h80_ref, M * n, 1e-4);
            CHECK_ARRAY_NEAR(mu, mu_ref, M * T, 1e-4);
            CHECK_ARRAY_NEAR(mel, mel_ref, M * n_out, 1e-3);
            if (fg_verbose()) {
                double peak = 0;
                for (int64_t i = 0; i < M * n_out; i++)
                    peak = fmax(peak, fabs(mel_ref[i]));
                printf("  %s: n %lld T %lld  h80 %.3g  mu %.3g  mel %.3g (peak %.2f)\n", name,
                       (long long)n, (long long)T, test_max_abs_diff(h80, h80_ref, M * n, NULL),
                       test_max_abs_diff(mu, mu_ref, M * T, NULL),
                       test_max_abs_diff(mel, mel_ref, M * n_out, NULL), peak);
            }
        }
        free(mel);
        free(mu);
        free(h80);
    }
    free(tok);
    free(ptok);
}

TEST(flow_golden_torch)
{
    struct gguf_file dec, ref;
    struct err e;
    memset(&dec, 0, sizeof dec);
    memset(&ref, 0, sizeof ref);
    if (gguf_open(&dec, FG_DEC, &e) || gguf_open(&ref, FG_REF, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s`", e.msg, FG_CMD);
        gguf_close(&dec);
        return;
    }
    struct flow_model m;
    struct flow_state s;
    if (flow_load(&m, &dec, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        gguf_close(&dec);
        gguf_close(&ref);
        return;
    }
    for (int threads = 1; threads <= 2; threads++) {
        struct pool *pool = threads > 1 ? pool_create(threads) : NULL;
        if (flow_state_init(&s, &m, 40, pool, &e)) {
            test_fail(__FILE__, __LINE__, "%s", e.msg);
        } else {
            fg_case(&m, &s, pool, &ref, "flow_a");
            fg_case(&m, &s, pool, &ref, "flow_b");
            /* bad input: a token past the vocabulary, too many tokens, prompt mel too long */
            int32_t bad[3] = { 1, m.hp.vocab, 2 };
            float *mel = malloc(sizeof(float) * 80 * 400);
            int64_t n_out;
            CHECK(flow_inference(&m, &s, pool, mel, &n_out, bad, 3, NULL, 0, NULL, 0, NULL, NULL,
                                 NULL, &e) == -1);
            CHECK(strstr(e.msg, "outside") != NULL);
            int32_t many[41] = { 0 };
            CHECK(flow_inference(&m, &s, pool, mel, &n_out, many, 41, NULL, 0, NULL, 0, NULL, NULL,
                                 NULL, &e) == -1);
            float feat[80 * 30] = { 0 };
            CHECK(flow_inference(&m, &s, pool, mel, &n_out, many, 2, many, 2, feat, 30, NULL, NULL,
                                 NULL, &e) == -1);
            /* production noise: runs, finite */
            CHECK(flow_inference(&m, &s, pool, mel, &n_out, many, 12, NULL, 0, NULL, 0, NULL, NULL,
                                 NULL, &e) == 0);
            int finite = 1;
            for (int64_t i = 0; i < 80 * n_out; i++)
                finite &= isfinite(mel[i]) != 0;
            CHECK(finite);
            free(mel);
            flow_state_free(&s);
        }
        pool_free(pool);
    }
    flow_free(&m);
    gguf_close(&dec);
    gguf_close(&ref);
}

TEST(flow_load_refuses_wrong_files)
{
    struct gguf_file ref;
    struct err e;
    memset(&ref, 0, sizeof ref);
    if (gguf_open(&ref, FG_REF, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s`", e.msg, FG_CMD);
        return;
    }
    struct flow_model m;
    CHECK(flow_load(&m, &ref, &e) == -1);
    CHECK(strstr(e.msg, "flow.") != NULL);
    gguf_close(&ref);
}
