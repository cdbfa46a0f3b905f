/*
 * HiFT vocoder tests: PyTorch's seeded phases, and the forward pass against the PyTorch
 * reference of tests/golden/voice_torch.py (random weights in the released layout, converted by
 * deploy/convert.py) with the reference's NSF noise injected. Tolerances: F0 1e-3 relative,
 * source 1e-3, waveform 1e-3 (the required accuracy). PARLEY_GOLDEN_VERBOSE=1 prints the errors.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "test.h"
#include "voice/hift.h"

#define HG_DEC "build/golden/voice_decoder.gguf"
#define HG_REF "build/golden/voice_torch.gguf"
#define HG_CMD "/usr/bin/python3 tests/golden/voice_torch.py build/golden"

TEST(hift_torch_rand_seed42)
{
    /* torch.manual_seed(42); torch.rand(9) */
    static const float want[9] = { 0.8822692633f, 0.9150039554f, 0.3828637600f,
                                   0.9593056440f, 0.3904482126f, 0.6008953452f,
                                   0.2565724850f, 0.7936413288f, 0.9407714605f };
    float u[9];
    hift_torch_rand(u, 9, 42);
    for (int i = 0; i < 9; i++)
        CHECK(u[i] == want[i]);
}

static const float *hg_tensor(const struct gguf_file *f, const char *name, int64_t *n)
{
    const struct tensor *t = gguf_tensor(f, name);
    if (!t) {
        test_fail(__FILE__, __LINE__, "%s: no tensor %s", f->path, name);
        return NULL;
    }
    if (n)
        *n = tensor_nelements(t);
    return (const float *)t->data;
}

static int hg_verbose(void)
{
    const char *v = getenv("PARLEY_GOLDEN_VERBOSE");
    return v && *v && *v != '0';
}

static void hg_case(const struct hift_model *m, struct hift_state *s, struct pool *pool,
                    const struct gguf_file *ref, const char *name, int cached)
{
    char key[64];
    int64_t n_mel = 0, n_wave = 0;
    snprintf(key, sizeof key, "%s.mel", name);
    const float *mel = hg_tensor(ref, key, &n_mel);
    snprintf(key, sizeof key, "%s.noise", name);
    const float *noise = hg_tensor(ref, key, NULL);
    snprintf(key, sizeof key, "%s.wave", name);
    const float *wave_ref = hg_tensor(ref, key, &n_wave);
    snprintf(key, sizeof key, "%s.source", name);
    const float *src_ref = hg_tensor(ref, key, NULL);
    snprintf(key, sizeof key, "%s.f0", name);
    const float *f0_ref = hg_tensor(ref, key, NULL);
    const float *cache = NULL;
    if (cached) {
        snprintf(key, sizeof key, "%s.cache_src", name);
        cache = hg_tensor(ref, key, NULL);
    }
    if (!mel || !noise || !wave_ref || !src_ref || !f0_ref || (cached && !cache))
        return;
    int64_t t = n_mel / 80;
    float *wave = malloc(sizeof(float) * (size_t)n_wave);
    float *src = malloc(sizeof(float) * (size_t)n_wave);
    float *f0 = malloc(sizeof(float) * (size_t)t);
    struct err e;
    int rc = hift_forward(m, s, pool, wave, src, f0, mel, t, cache, noise, &e);
    if (rc)
        test_fail(__FILE__, __LINE__, "%s: %s", name, e.msg);
    CHECK(n_wave == t * m->hp.hop_total);
    if (!rc) {
        double f0_max = 0;
        for (int64_t i = 0; i < t; i++)
            f0_max = fmax(f0_max, fabs(f0_ref[i]));
        CHECK_ARRAY_NEAR(f0, f0_ref, t, 1e-3 * f0_max + 1e-4);
        CHECK_ARRAY_NEAR(src, src_ref, n_wave, 1e-3);
        CHECK_ARRAY_NEAR(wave, wave_ref, n_wave, 1e-3);
        if (hg_verbose()) {
            double peak = 0;
            for (int64_t i = 0; i < n_wave; i++)
                peak = fmax(peak, fabs(wave_ref[i]));
            printf("  %s: T %lld  f0 %.3g  source %.3g  wave %.3g (peak %.3f)\n", name,
                   (long long)t, test_max_abs_diff(f0, f0_ref, t, NULL),
                   test_max_abs_diff(src, src_ref, n_wave, NULL),
                   test_max_abs_diff(wave, wave_ref, n_wave, NULL), peak);
        }
    }
    free(wave);
    free(src);
    free(f0);
}

TEST(hift_golden_torch)
{
    struct gguf_file dec, ref;
    struct err e;
    memset(&dec, 0, sizeof dec);
    memset(&ref, 0, sizeof ref);
    if (gguf_open(&dec, HG_DEC, &e) || gguf_open(&ref, HG_REF, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s`", e.msg, HG_CMD);
        gguf_close(&dec);
        return;
    }
    struct hift_model m;
    struct hift_state s;
    if (hift_load(&m, &dec, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
    } else if (hift_state_init(&s, &m, 32, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        hift_free(&m);
    } else {
        /* the seeded phases are torch's */
        const struct gguf_kv *kv = gguf_find(&ref, "hift.phases");
        for (int h = 1; kv && h < 9; h++) {
            float u;
            gguf_array_f32(kv, (uint64_t)h, &u);
            CHECK_NEAR(m.phase[h], (float)-M_PI + u * (float)(2 * M_PI), 1e-6);
        }
        for (int threads = 1; threads <= 2; threads++) {
            struct pool *pool = threads > 1 ? pool_create(threads) : NULL;
            hg_case(&m, &s, pool, &ref, "hift_a", 0);
            hg_case(&m, &s, pool, &ref, "hift_b", 1);
            pool_free(pool);
        }
        /* too long for the state */
        float dummy[80 * 33];
        memset(dummy, 0, sizeof dummy);
        float *wave = malloc(sizeof(float) * 33 * 256);
        CHECK(hift_forward(&m, &s, NULL, wave, NULL, NULL, dummy, 33, NULL, NULL, &e) == -1);
        CHECK(strstr(e.msg, "33") != NULL);
        free(wave);
        hift_state_free(&s);
        hift_free(&m);
    }
    gguf_close(&dec);
    gguf_close(&ref);
}

TEST(hift_load_refuses_wrong_files)
{
    /* a GGUF without the HiFT keys (the golden reference file itself) */
    struct gguf_file ref;
    struct err e;
    memset(&ref, 0, sizeof ref);
    if (gguf_open(&ref, HG_REF, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s`", e.msg, HG_CMD);
        return;
    }
    struct hift_model m;
    CHECK(hift_load(&m, &ref, &e) == -1);
    CHECK(strstr(e.msg, "hift.") != NULL);
    gguf_close(&ref);
}
