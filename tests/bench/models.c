/* models — see models.h. */
#include "bench/models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

float bench_models_uniform(struct bench_models *b)
{
    if (!b->rng)
        b->rng = 0x2545F4914F6CDD1Dull;
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return (float)(b->rng >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
}

static float *bm_alloc(struct bench_models *b, int64_t n, struct err *e)
{
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 1024;
        float **p = realloc(b->bufs, sizeof(float *) * (size_t)cap);
        if (!p) {
            err_set(e, "bench: out of memory");
            return NULL;
        }
        b->bufs = p;
        b->cap = cap;
    }
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x)
        err_set(e, "bench: out of memory (%lld floats)", (long long)n);
    else
        b->bufs[b->n++] = x;
    return x;
}

static float *bm_fill(struct bench_models *b, int64_t n, float base, float scale, struct err *e)
{
    float *x = bm_alloc(b, n, e);
    for (int64_t i = 0; x && i < n; i++)
        x[i] = base + scale * bench_models_uniform(b);
    return x;
}

/* Uniform ±√(3/fan_in) for matrices; 1 for norm gains and Snake alphas; small biases. */
static const float *bm_tensor(void *ctx, const char *name, int n_dims, const int64_t *shape,
                              struct err *e)
{
    struct bench_models *b = ctx;
    int64_t n = 1, fan_in = 1;
    for (int i = 0; i < n_dims; i++)
        n *= shape[i];
    for (int i = 1; i < n_dims; i++)
        fan_in *= shape[i];
    size_t len = strlen(name);
    int is_bias = len > 5 && strcmp(name + len - 5, ".bias") == 0;
    int pos_bias = strstr(name, "pos_bias") != NULL;
    float a = n_dims == 1 ? (is_bias ? 0.02f : 0.0f) : sqrtf(3.0f / (float)fan_in);
    float base = n_dims == 1 && !is_bias && !pos_bias ? 1.0f : 0.0f;
    if (pos_bias)
        a = 0.02f;
    return bm_fill(b, n, base, a, e);
}

int bench_models_voice(struct bench_models *b, struct err *e)
{
    struct flow_hparams fhp = {
        .vocab = 16384,
        .embed = 512,
        .n_mel = 80,
        .spk_dim = 192,
        .frame_rate = 12.5f,
        .sample_rate = 22050,
        .hop = 256,
        .d_model = 512,
        .n_heads = 8,
        .d_ff = 2048,
        .n_layers = 6,
        .block = 10,
        .lr_layers = 4,
        .cfg_rate = 0.7f,
        .n_steps = 10,
        .est_in = 320,
        .ch = 256,
        .n_tb = 4,
        .n_mid = 12,
        .est_heads = 8,
        .est_head_dim = 64,
    };
    struct hift_hparams hhp = {
        .in_channels = 80,
        .base_channels = 512,
        .nb_harmonics = 8,
        .sample_rate = 22050,
        .nsf_alpha = 0.1f,
        .nsf_sigma = 0.003f,
        .voiced_threshold = 10.0f,
        .lrelu_slope = 0.1f,
        .audio_limit = 0.99f,
        .n_stages = 2,
        .up_rates = { 8, 8 },
        .up_kernels = { 16, 16 },
        .n_fft = 16,
        .hop = 4,
        .n_kernels = 3,
        .rb_kernels = { 3, 7, 11 },
        .rb_dil = { { 1, 3, 5 }, { 1, 3, 5 }, { 1, 3, 5 } },
        .src_kernels = { 7, 11 },
        .src_dil = { { 1, 3, 5 }, { 1, 3, 5 } },
        .f0_channels = 512,
    };
    if (flow_load_from(&b->flow, &fhp, bm_tensor, b, e))
        return -1;
    if (hift_load_from(&b->hift, &hhp, bm_tensor, b, e)) {
        flow_free(&b->flow);
        return -1;
    }
    b->have_voice = 1;
    return 0;
}

int bench_models_stok(struct bench_models *b, int n_layer, int n_codes, struct err *e)
{
    struct stok_model *m = &b->stok;
    memset(m, 0, sizeof *m);
    m->hp = (struct stok_hparams){ .n_mels = 128,
                                   .d_model = 1280,
                                   .n_head = 20,
                                   .d_ffn = 5120,
                                   .n_layer = n_layer,
                                   .n_ctx = 1500,
                                   .block = 200,
                                   .pool = 4,
                                   .n_codes = n_codes,
                                   .ln_eps = 1e-5f,
                                   .sample_rate = 16000,
                                   .n_fft = 400,
                                   .hop = 160,
                                   .window = 480000 };
    const int64_t D = m->hp.d_model, F = m->hp.d_ffn;
    float *conv1 = bm_fill(b, D * 128 * 3, 0, 0.05f, e);
    float *conv2 = conv1 ? bm_fill(b, D * D * 3, 0, 0.016f, e) : NULL;
    float *vecs = conv2 ? bm_fill(b, 8 * D + F, 0, 0.1f, e) : NULL;
    float *pos = vecs ? bm_fill(b, 1500 * D, 0, 1.0f, e) : NULL;
    float *wqkvo = pos ? bm_fill(b, 4 * D * D, 0, 0.05f, e) : NULL;
    float *w1 = wqkvo ? bm_fill(b, F * D, 0, 0.05f, e) : NULL;
    float *w2 = w1 ? bm_fill(b, D * F, 0, 0.025f, e) : NULL;
    float *codebook = w2 ? bm_fill(b, (int64_t)n_codes * D, 0, 1.0f, e) : NULL;
    if (!codebook)
        return -1;
    b->layers = calloc((size_t)n_layer, sizeof *b->layers);
    if (!b->layers)
        return err_set(e, "bench: out of memory");
    struct tensor *t = b->stok_w;
    for (int i = 0; i < 4; i++)
        tensor_init(&t[i], "w", DTYPE_F32, 2, (int64_t[]){ D, D }, wqkvo + i * D * D);
    tensor_init(&t[4], "fc1", DTYPE_F32, 2, (int64_t[]){ D, F }, w1);
    tensor_init(&t[5], "fc2", DTYPE_F32, 2, (int64_t[]){ F, D }, w2);
    for (int i = 0; i < n_layer; i++)
        b->layers[i] = (struct stok_layer){ .ln1_w = vecs,
                                            .ln1_b = vecs + D,
                                            .wq = &t[0],
                                            .bq = vecs + 2 * D,
                                            .wk = &t[1],
                                            .wv = &t[2],
                                            .bv = vecs + 3 * D,
                                            .wo = &t[3],
                                            .bo = vecs + 4 * D,
                                            .ln2_w = vecs + 5 * D,
                                            .ln2_b = vecs + 6 * D,
                                            .fc1 = &t[4],
                                            .fc1_b = vecs + 8 * D,
                                            .fc2 = &t[5],
                                            .fc2_b = vecs + 7 * D };
    m->conv1_w = conv1;
    m->conv1_b = vecs;
    m->conv2_w = conv2;
    m->conv2_b = vecs + D;
    m->pos = pos;
    m->layers = b->layers;
    m->codebook = codebook;
    if (stok_prepare(m, e)) {
        stok_free(m);
        return -1;
    }
    b->have_stok = 1;
    return 0;
}

void bench_models_free(struct bench_models *b)
{
    if (b->have_voice) {
        flow_free(&b->flow);
        hift_free(&b->hift);
    }
    if (b->have_stok)
        stok_free(&b->stok);
    free(b->layers);
    for (int i = 0; i < b->n; i++)
        free(b->bufs[i]);
    free(b->bufs);
    memset(b, 0, sizeof *b);
}
