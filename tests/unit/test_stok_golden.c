/*
 * Golden tests of the speech front-end and tokenizer against the PyTorch reference in
 * tests/golden/stok_torch.py (espeak-ng speech at 8 / 11.025 / 16 / 22.05 / 44.1 / 48 kHz,
 * stereo, 34 s; tiny random-weight checkpoints in the released layout, converted by
 * deploy/convert_tokenizer.py):
 *   - the WAV reader gives sox's samples exactly;
 *   - resampling kernels are bit-identical to torchaudio's (E2); resampled audio within 2e-6;
 *   - log-mel features within 1e-4 of transformers' torch path, per window, batched as the
 *     reference batches (E3);
 *   - pooled vectors within 1e-3 relative; token ids identical, whole-file and streamed in
 *     20 ms pieces (streaming = offline).
 * Set PARLEY_GOLDEN_VERBOSE=1 to print each clip's largest differences.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/wav.h"
#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "speech/mel.h"
#include "speech/resample.h"
#include "speech/stok.h"
#include "test.h"

#define GOLDEN_DIR  "build/golden"
#define GOLDEN_PATH GOLDEN_DIR "/stok_torch.gguf"
#define GOLDEN_CMD  "/usr/bin/python3 tests/golden/stok_torch.py build/golden"

static int verbose(void)
{
    const char *v = getenv("PARLEY_GOLDEN_VERBOSE");
    return v && *v && strcmp(v, "0") != 0;
}

static int open_golden(struct gguf_file *f)
{
    struct err e;
    if (gguf_open(f, GOLDEN_PATH, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s` (from the repository root)", e.msg,
                  GOLDEN_CMD);
        return -1;
    }
    return 0;
}

static const float *golden_tensor(const struct gguf_file *f, const char *clip, const char *what,
                                  int64_t *n)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", clip, what);
    const struct tensor *t = gguf_tensor(f, name);
    if (!t) {
        test_fail(__FILE__, __LINE__, "%s: no tensor %s", GOLDEN_PATH, name);
        return NULL;
    }
    if (n)
        *n = tensor_nelements(t);
    return t->data;
}

static int64_t golden_int(const struct gguf_file *f, const char *clip, const char *what)
{
    char key[128];
    int64_t v = -1;
    struct err e;
    snprintf(key, sizeof key, "%s.%s", clip, what);
    if (gguf_get_i64(f, key, &v, &e))
        test_fail(__FILE__, __LINE__, "%s", e.msg);
    return v;
}

TEST(stok_golden_resample_kernels)
{
    struct gguf_file f;
    if (open_golden(&f))
        return;
    const struct gguf_kv *rates = gguf_find(&f, "stok_torch.kernel_rates");
    REQUIRE(rates && rates->count >= 4);
    for (uint64_t i = 0; i < rates->count; i++) {
        int64_t rate;
        REQUIRE(gguf_array_i64(rates, i, &rate) == 0);
        char name[64];
        snprintf(name, sizeof name, "kernel.%lld", (long long)rate);
        const struct tensor *t = gguf_tensor(&f, name);
        REQUIRE(t);
        struct resample r;
        struct err e;
        REQUIRE(resample_init(&r, (int)rate, 16000, &e) == 0);
        CHECK(t->ne[0] == r.taps && t->ne[1] == r.n);
        if (t->ne[0] == r.taps && t->ne[1] == r.n) {
            int64_t n = (int64_t)r.n * r.taps, diff = 0;
            for (int64_t k = 0; k < n; k++)
                diff += memcmp(&r.kernel[k], (const float *)t->data + k, 4) != 0;
            if (diff)
                test_fail(__FILE__, __LINE__,
                          "%lld Hz: %lld of %lld kernel taps differ from "
                          "torchaudio's",
                          (long long)rate, (long long)diff, (long long)n);
        }
        resample_free(&r);
    }
    gguf_close(&f);
}

/* Channel 0 of a clip's file, at its own rate. */
static float *read_clip(const char *clip, int *rate, int64_t *n)
{
    char path[256];
    struct wav_audio a;
    struct err e;
    snprintf(path, sizeof path, GOLDEN_DIR "/stok_audio/%s.wav", clip);
    if (wav_read_file(&a, path, (size_t)1 << 30, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        return NULL;
    }
    float *x = malloc((size_t)a.frames * sizeof *x);
    memcpy(x, a.samples, (size_t)a.frames * sizeof *x);
    *rate = a.rate;
    *n = a.frames;
    wav_audio_free(&a);
    return x;
}

TEST(stok_golden_audio)
{
    struct gguf_file f;
    if (open_golden(&f))
        return;
    const struct gguf_kv *clips = gguf_find(&f, "stok_torch.clips");
    REQUIRE(clips && clips->count == 7);
    for (uint64_t c = 0; c < clips->count; c++) {
        char clip[64];
        struct gguf_str s = gguf_array_str(clips, c);
        snprintf(clip, sizeof clip, "%.*s", (int)s.len, s.ptr);
        int rate;
        int64_t n, ng, n16;
        float *x = read_clip(clip, &rate, &n);
        REQUIRE(x);
        const float *g = golden_tensor(&f, clip, "ch0", &ng);
        const float *g16 = golden_tensor(&f, clip, "audio16", &n16);
        REQUIRE(g && g16);
        CHECK(rate == golden_int(&f, clip, "rate"));
        CHECK(n == ng);
        if (n == ng)
            CHECK_ARRAY_NEAR(x, g, n, 0.0);
        struct resample r;
        struct err e;
        REQUIRE(resample_init(&r, rate, 16000, &e) == 0);
        int64_t n_out = resample_out_len(&r, n);
        CHECK(n_out == n16);
        float *y = malloc((size_t)n_out * sizeof *y);
        REQUIRE(resample_run(&r, y, x, n, &e) == 0);
        if (n_out == n16) {
            int64_t at;
            double d = test_max_abs_diff(y, g16, n16, &at);
            if (verbose())
                printf("  %-12s %6d Hz  resampled max |diff| %.3g\n", clip, rate, d);
            CHECK(d <= 2e-6);
        }
        free(y);
        free(x);
        resample_free(&r);
    }
    gguf_close(&f);
}

TEST(stok_golden_mel)
{
    struct gguf_file f;
    struct stok_model m;
    struct err e;
    if (open_golden(&f))
        return;
    if (stok_load(&m, GOLDEN_DIR "/stok_a.gguf", &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        gguf_close(&f);
        return;
    }
    const struct gguf_kv *clips = gguf_find(&f, "stok_torch.clips");
    REQUIRE(clips);
    int M = m.hp.n_mels, hop = m.hp.hop;
    double worst = 0;
    for (uint64_t c = 0; c < clips->count; c++) {
        char clip[64];
        struct gguf_str s = gguf_array_str(clips, c);
        snprintf(clip, sizeof clip, "%.*s", (int)s.len, s.ptr);
        int64_t n16;
        const float *a16 = golden_tensor(&f, clip, "audio16", &n16);
        int64_t n_win = golden_int(&f, clip, "windows");
        REQUIRE(a16 && n_win >= 1);
        for (int w = 0; w < n_win; w++) {
            int64_t len = n16 - (int64_t)w * m.hp.window, l_ext;
            if (len > m.hp.window)
                len = m.hp.window;
            int64_t l_pad = stok_window_padding(&m, len, w, &l_ext);
            char what[32];
            snprintf(what, sizeof what, "mel%d", w);
            int64_t ng;
            const float *g = golden_tensor(&f, clip, what, &ng);
            REQUIRE(g);
            int64_t tg = ng / M, nf = l_ext / hop, tm = l_pad / hop;
            float *x = calloc((size_t)l_ext, sizeof *x);
            float *raw = malloc((size_t)nf * M * sizeof *raw);
            float *scr = malloc((size_t)mel_scratch_floats(&m.mel, nf) * sizeof *scr);
            memcpy(x, a16 + (int64_t)w * m.hp.window, (size_t)len * sizeof *x);
            mel_log10(&m.mel, raw, x, l_ext, 0, nf, scr);
            float mx = -INFINITY;
            for (int64_t i = 0; i < nf * M; i++)
                mx = raw[i] > mx ? raw[i] : mx;
            double d = 0;
            for (int64_t t = 0; t < tm && t < tg; t++)
                for (int j = 0; j < M; j++) {
                    double v =
                        fabs((double)mel_feature(raw[t * M + j], mx) - g[(int64_t)j * tg + t]);
                    d = v > d ? v : d;
                }
            if (verbose())
                printf("  %-12s window %d: %lld frames, log-mel max |diff| %.3g\n", clip, w,
                       (long long)tm, d);
            worst = d > worst ? d : worst;
            CHECK(tm <= tg);
            free(x);
            free(raw);
            free(scr);
        }
    }
    if (!(worst <= 1e-4))
        test_fail(__FILE__, __LINE__, "log-mel max |diff| %.3g > 1e-4", worst);
    stok_free(&m);
    gguf_close(&f);
}

/* Tokens (and pooled vectors) of every clip with model `which`, whole-file and streamed. */
static void check_tokens(const char *which)
{
    struct gguf_file f;
    struct stok_model m;
    struct err e;
    char path[128];
    if (open_golden(&f))
        return;
    snprintf(path, sizeof path, GOLDEN_DIR "/stok_%s.gguf", which);
    if (stok_load(&m, path, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        gguf_close(&f);
        return;
    }
    struct pool *pool = pool_create(2);
    const struct gguf_kv *clips = gguf_find(&f, "stok_torch.clips");
    int D = m.hp.d_model;
    for (uint64_t c = 0; clips && c < clips->count; c++) {
        char clip[64], what[32];
        struct gguf_str s = gguf_array_str(clips, c);
        snprintf(clip, sizeof clip, "%.*s", (int)s.len, s.ptr);
        int rate;
        int64_t n, nt, np, nm;
        float *x = read_clip(clip, &rate, &n);
        snprintf(what, sizeof what, "tokens_%s", which);
        const float *gt = golden_tensor(&f, clip, what, &nt);
        snprintf(what, sizeof what, "pooled_%s", which);
        const float *gp = golden_tensor(&f, clip, what, &np);
        snprintf(what, sizeof what, "margin_%s", which);
        const float *gm = golden_tensor(&f, clip, what, &nm);
        if (!x || !gt || !gp || !gm) {
            free(x);
            continue;
        }
        /* whole file, with the pooled vectors traced */
        struct stok_stream st;
        if (stok_stream_init(&st, &m, pool, rate, (double)n / rate + 1, 0, &e)) {
            test_fail(__FILE__, __LINE__, "%s", e.msg);
            free(x);
            continue;
        }
        st.trace_pooled = calloc((size_t)st.cap * D, sizeof(float));
        int rc = stok_stream_push(&st, x, n, &e) || stok_stream_finish(&st, &e);
        CHECK(rc == 0);
        CHECK(st.n_final == nt);
        int64_t mism = 0;
        double pd = 0, pref = 0;
        for (int64_t i = 0; i < nt && i < st.n_final; i++) {
            if (st.tokens[i] != (int32_t)gt[i]) {
                mism++;
                if (mism <= 3)
                    printf("  %s %s token %lld: %d vs reference %d (reference margin %.3g)\n",
                           which, clip, (long long)i, st.tokens[i], (int)gt[i], gm[i]);
            }
            for (int d = 0; d < D; d++) {
                double v = fabs((double)st.trace_pooled[i * D + d] - gp[i * D + d]);
                pd = v > pd ? v : pd;
                pref = fabs(gp[i * D + d]) > pref ? fabs(gp[i * D + d]) : pref;
            }
        }
        if (verbose())
            printf("  model %s %-12s %4lld tokens, %lld differ; pooled max |diff| %.3g (max "
                   "|value| %.3g)\n",
                   which, clip, (long long)nt, (long long)mism, pd, pref);
        if (mism)
            test_fail(__FILE__, __LINE__, "model %s, %s: %lld of %lld tokens differ", which, clip,
                      (long long)mism, (long long)nt);
        CHECK(pd <= 1e-3 * (pref > 1 ? pref : 1));
        /* streamed in 20 ms pieces, blocks encoded as they complete */
        struct stok_stream ss;
        REQUIRE(stok_stream_init(&ss, &m, pool, rate, (double)n / rate + 1, 1, &e) == 0);
        int64_t piece = rate / 50;
        int64_t seen_final = 0;
        for (int64_t i = 0; i < n && !rc; i += piece) {
            rc = stok_stream_push(&ss, x + i, n - i < piece ? n - i : piece, &e);
            CHECK(ss.n_final >= seen_final && ss.n_tokens >= ss.n_final);
            /* final tokens never change afterwards: compare them with the whole-file ones */
            for (int64_t k = seen_final; k < ss.n_final; k++)
                CHECK(ss.tokens[k] == st.tokens[k]);
            seen_final = ss.n_final;
        }
        CHECK(rc == 0 && stok_stream_finish(&ss, &e) == 0);
        CHECK(ss.n_final == st.n_final);
        if (ss.n_final == st.n_final)
            CHECK(memcmp(ss.tokens, st.tokens, (size_t)st.n_final * sizeof *st.tokens) == 0);
        stok_stream_free(&ss);
        free(st.trace_pooled);
        stok_stream_free(&st);
        free(x);
    }
    pool_free(pool);
    stok_free(&m);
    gguf_close(&f);
}

TEST(stok_golden_tokens_a)
{
    check_tokens("a");
}

TEST(stok_golden_tokens_b)
{
    check_tokens("b");
}
