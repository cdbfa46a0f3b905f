/* Unit tests of the speech tokenizer on a small random model written here: loading and its
 * refusals, the stream's token tiers, the floor re-encoding, limits, thread and weight-type
 * independence. (The comparison with the PyTorch reference is test_stok_golden.c.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gguf_writer.h"
#include "runtime/pool.h"
#include "speech/stok.h"
#include "test.h"

enum { TD = 32, TF = 64, TC = 16, TM = 128, TL = 2 };

enum fault { OK, WRONG_ARCH, NO_TENSOR, BAD_SHAPE, BAD_BLOCK, F16_BIAS, Q8_MATRICES };

/* Writes a tokenizer GGUF with random weights (seeded, so every call gives the same model). */
static void write_model(const char *path, enum fault fault)
{
    static float conv1[TD * TM * 3], conv2[TD * TD * 3], pos[1500 * TD], cb[TC * TD];
    static float mats[TL][6][TD * TF], vec[TF], ones[TD];
    static uint8_t q8[TL][6][TD * TF / 32 * 34];
    static uint16_t half[TD];
    uint64_t st = 12345;
#define RND() \
    (st ^= st << 13, st ^= st >> 7, st ^= st << 17, (float)((st >> 40) * (1.0 / (1 << 23)) - 1))
    for (int i = 0; i < TD * TM * 3; i++)
        conv1[i] = RND() * 0.1f;
    for (int i = 0; i < TD * TD * 3; i++)
        conv2[i] = RND() * 0.1f;
    for (int i = 0; i < 1500 * TD; i++)
        pos[i] = sinf((float)(i / TD) / (1 + i % TD));
    for (int i = 0; i < TC * TD; i++)
        cb[i] = RND();
    for (int l = 0; l < TL; l++)
        for (int k = 0; k < 6; k++)
            for (int i = 0; i < TD * TF; i++)
                mats[l][k][i] = RND() * 0.3f;
    for (int i = 0; i < TF; i++)
        vec[i] = RND() * 0.1f;
    for (int i = 0; i < TD; i++)
        ones[i] = 1.0f;
    memset(half, 0, sizeof half);
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_add_str(w, "general.architecture", fault == WRONG_ARCH ? "llama" : "whisper_vq");
    gguf_writer_add_u32(w, "whisper_vq.num_mel_bins", TM);
    gguf_writer_add_u32(w, "whisper_vq.d_model", TD);
    gguf_writer_add_u32(w, "whisper_vq.encoder_attention_heads", 1);
    gguf_writer_add_u32(w, "whisper_vq.encoder_ffn_dim", TF);
    gguf_writer_add_u32(w, "whisper_vq.quantize_position", TL);
    gguf_writer_add_u32(w, "whisper_vq.max_source_positions", 1500);
    gguf_writer_add_u32(w, "whisper_vq.quantize_causal_block_size", fault == BAD_BLOCK ? 201 : 200);
    gguf_writer_add_u32(w, "whisper_vq.pooling_kernel_size", 4);
    gguf_writer_add_u32(w, "whisper_vq.quantize_vocab_size", TC);
    gguf_writer_add_f32(w, "whisper_vq.layer_norm_eps", 1e-5f);
    gguf_writer_add_u32(w, "whisper_vq.sampling_rate", 16000);
    gguf_writer_add_u32(w, "whisper_vq.n_fft", 400);
    gguf_writer_add_u32(w, "whisper_vq.hop_length", 160);
    gguf_writer_add_u32(w, "whisper_vq.chunk_length", 30);
    gguf_writer_add_tensor(w, "conv1.weight", DTYPE_F32, 3, (int64_t[]){ TD, TM, 3 }, conv1);
    gguf_writer_add_tensor(w, "conv1.bias", DTYPE_F32, 1, (int64_t[]){ TD }, vec);
    gguf_writer_add_tensor(w, "conv2.weight", DTYPE_F32, 3,
                           (int64_t[]){ TD, fault == BAD_SHAPE ? TD / 2 : TD, 3 }, conv2);
    gguf_writer_add_tensor(w, "conv2.bias", DTYPE_F32, 1, (int64_t[]){ TD }, vec);
    gguf_writer_add_tensor(w, "embed_positions.weight", DTYPE_F32, 2, (int64_t[]){ 1500, TD }, pos);
    if (fault != NO_TENSOR)
        gguf_writer_add_tensor(w, "codebook.weight", DTYPE_F32, 2, (int64_t[]){ TC, TD }, cb);
    static char names[TL][16][64];
    static const char *const mat_names[6] = { "self_attn.q_proj.weight",
                                              "self_attn.k_proj.weight",
                                              "self_attn.v_proj.weight",
                                              "self_attn.out_proj.weight",
                                              "fc1.weight",
                                              "fc2.weight" };
    static const char *const vec_names[9] = { "self_attn_layer_norm.weight",
                                              "self_attn_layer_norm.bias",
                                              "self_attn.q_proj.bias",
                                              "self_attn.v_proj.bias",
                                              "self_attn.out_proj.bias",
                                              "final_layer_norm.weight",
                                              "final_layer_norm.bias",
                                              "fc1.bias",
                                              "fc2.bias" };
    for (int l = 0; l < TL; l++) {
        for (int k = 0; k < 6; k++) {
            snprintf(names[l][k], 64, "layers.%d.%s", l, mat_names[k]);
            int64_t shape[2] = { k == 4 ? TF : TD, k == 5 ? TF : TD };
            if (fault == Q8_MATRICES) {
                /* q8_0 blocks: d = 1/64 as f16 (0x2400), q = round(w * 64) */
                int64_t n = shape[0] * shape[1];
                for (int64_t b = 0; b < n / 32; b++) {
                    uint8_t *blk = q8[l][k] + b * 34;
                    blk[0] = 0x00;
                    blk[1] = 0x24;
                    for (int i = 0; i < 32; i++)
                        blk[2 + i] = (uint8_t)(int8_t)lrintf(mats[l][k][b * 32 + i] * 64);
                }
                gguf_writer_add_tensor(w, names[l][k], DTYPE_Q8_0, 2, shape, q8[l][k]);
            } else {
                gguf_writer_add_tensor(w, names[l][k], DTYPE_F32, 2, shape, mats[l][k]);
            }
        }
        for (int k = 0; k < 9; k++) {
            snprintf(names[l][6 + k], 64, "layers.%d.%s", l, vec_names[k]);
            int64_t n = k == 7 ? TF : TD;
            const void *data = strstr(vec_names[k], "norm.weight") ? (const void *)ones : vec;
            if (fault == F16_BIAS && k == 2)
                gguf_writer_add_tensor(w, names[l][6 + k], DTYPE_F16, 1, &n, half);
            else
                gguf_writer_add_tensor(w, names[l][6 + k], DTYPE_F32, 1, &n, data);
        }
    }
    struct err e;
    if (gguf_writer_write(w, path, &e))
        test_fail(__FILE__, __LINE__, "%s", e.msg);
    gguf_writer_free(w);
#undef RND
}

static const char *model_path(const char *name, enum fault fault)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", test_tmpdir(), name);
    write_model(path, fault);
    return path;
}

static void expect_refused(const char *name, enum fault fault, const char *want)
{
    struct stok_model m;
    struct err e;
    e.msg[0] = 0;
    if (stok_load(&m, model_path(name, fault), &e) == 0)
        test_fail(__FILE__, __LINE__, "%s: loaded a model that should fail with '%s'", name, want);
    else if (!strstr(e.msg, want))
        test_fail(__FILE__, __LINE__, "%s: message '%s' does not mention '%s'", name, e.msg, want);
    stok_free(&m);
}

TEST(stok_load_refusals)
{
    struct stok_model m;
    struct err e;
    CHECK(stok_load(&m, "/nonexistent/tok.gguf", &e) == -1);
    stok_free(&m);
    expect_refused("arch", WRONG_ARCH, "not a speech tokenizer");
    expect_refused("notensor", NO_TENSOR, "codebook.weight");
    expect_refused("shape", BAD_SHAPE, "conv2.weight");
    expect_refused("block", BAD_BLOCK, "do not tile");
    expect_refused("f16bias", F16_BIAS, "q_proj.bias");
}

/* Speech-like test audio at 16 kHz: quiet noise for `quiet` seconds, then a loud gliding
 * tone with syllable-rate amplitude, so the window's max (and the floor) rises late. */
static float *test_audio(int64_t n, double quiet)
{
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        double s = i / 16000.0;
        x[i] = s < quiet ? 1e-4f * test_rand_uniform(-1, 1)
                         : (float)(0.5 * sin(2 * M_PI * (200 + 80 * sin(1.3 * s)) * s) *
                                   (0.55 + 0.45 * sin(2 * M_PI * 3.7 * s)));
    }
    return x;
}

static int32_t *whole(const struct stok_model *m, struct pool *pool, const float *x, int64_t n,
                      int64_t *nt)
{
    int32_t *t = NULL;
    struct err e;
    if (stok_tokenize(m, pool, &t, nt, x, n, 16000, &e))
        test_fail(__FILE__, __LINE__, "%s", e.msg);
    return t;
}

TEST(stok_stream_tiers)
{
    struct stok_model m;
    struct err e;
    REQUIRE(stok_load(&m, model_path("ok", OK), &e) == 0);
    struct pool *pool = pool_create(2);
    int quick = getenv("PARLEY_TEST_QUICK") != NULL;
    int64_t n = quick ? 16000 * 33 : 16000 * 41 + 123; /* more than one window */
    float *x = test_audio(n, 9.0);
    int64_t nt;
    int32_t *ref = whole(&m, pool, x, n, &nt);
    REQUIRE(ref);
    CHECK(nt == (n + 1279) / 1280);
    struct stok_stream s;
    REQUIRE(stok_stream_init(&s, &m, pool, 16000, 60, 1, &e) == 0);
    int64_t piece = 320;
    int saw_block = 0;
    for (int64_t i = 0; i < n; i += piece) {
        REQUIRE(stok_stream_push(&s, x + i, n - i < piece ? n - i : piece, &e) == 0);
        int64_t got = i + piece;
        if (got < 480000) {
            CHECK(s.n_final == 0);
            /* block b is encoded once 4 s (64000 samples) plus 40 samples of look-ahead
             * have arrived */
            int64_t blocks = got >= 64040 ? (got - 40) / 64000 : 0;
            blocks = blocks > 7 ? 7 : blocks;
            CHECK(s.n_tokens == blocks * 50);
            saw_block |= blocks > 0;
        } else {
            CHECK(s.n_final == 375);
        }
    }
    CHECK(saw_block);
    REQUIRE(stok_stream_finish(&s, &e) == 0);
    CHECK(s.n_final == nt && s.n_tokens == nt);
    CHECK(s.n_reencoded > 0); /* the loud part raised the floor over the quiet start */
    CHECK(memcmp(s.tokens, ref, (size_t)nt * sizeof *ref) == 0);
    /* limits and misuse */
    CHECK(stok_stream_push(&s, x, 10, &e) == -1);
    CHECK(stok_stream_finish(&s, &e) == 0);
    stok_stream_free(&s);
    REQUIRE(stok_stream_init(&s, &m, pool, 16000, 1.0, 1, &e) == 0);
    CHECK(stok_stream_push(&s, x, 20000, &e) == -1 && strstr(e.msg, "limit"));
    stok_stream_free(&s);
    CHECK(stok_stream_init(&s, &m, pool, 5, 1.0, 1, &e) == -1);
    stok_stream_free(&s);
    /* empty audio: no tokens; one sample: one token */
    int32_t *t = whole(&m, pool, x, 0, &nt);
    CHECK(nt == 0);
    free(t);
    t = whole(&m, pool, x + 200000, 1, &nt);
    CHECK(nt == 1);
    free(t);
    free(ref);
    free(x);
    pool_free(pool);
    stok_free(&m);
}

TEST(stok_threads_rates_types)
{
    struct stok_model m, mq;
    struct err e;
    REQUIRE(stok_load(&m, model_path("ok", OK), &e) == 0);
    REQUIRE(stok_load(&mq, model_path("q8", Q8_MATRICES), &e) == 0);
    int64_t n = 16000 * 5 + 777, n1, n2, n3;
    float *x = test_audio(n, 0.5);
    struct pool *p1 = pool_create(1), *p2 = pool_create(2);
    int32_t *a = whole(&m, p1, x, n, &n1), *b = whole(&m, p2, x, n, &n2);
    REQUIRE(a && b && n1 == n2);
    CHECK(memcmp(a, b, (size_t)n1 * sizeof *a) == 0); /* any thread count, same tokens */
    int32_t *q = whole(&mq, p2, x, n, &n3);
    CHECK(q && n3 == n1);
    int same = 0;
    for (int64_t i = 0; q && i < n1; i++)
        same += q[i] == a[i];
    CHECK(same * 2 > n1); /* q8_0 weights: mostly the same tokens */
    /* 8 kHz input goes through the resampler: as many tokens as its 16 kHz length gives */
    int32_t *r = NULL;
    int64_t nr;
    REQUIRE(stok_tokenize(&m, p2, &r, &nr, x, n, 8000, &e) == 0);
    CHECK(nr == (2 * n + 1279) / 1280);
    free(a);
    free(b);
    free(q);
    free(r);
    free(x);
    pool_free(p1);
    pool_free(p2);
    stok_free(&m);
    stok_free(&mq);
}
