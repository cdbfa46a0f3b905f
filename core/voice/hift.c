/*
 * hift — see hift.h. The forward pass follows spec §8.3 step by step; the kernels are called
 * directly (conv, spectral, act, vec): the backend table has no Snake/STFT ops yet.
 */
#include "voice/hift.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/act.h"
#include "kernels/conv.h"
#include "kernels/resize.h"
#include "kernels/vec.h"

/* ---- loading ------------------------------------------------------------------------- */

/* An f32 tensor "hift.<name>" of the given PyTorch shape, or -1. */
struct hift_src {
    const struct gguf_file *f;
    hift_tensor_fn *fn;
    void *ctx;
};

static const float *hift_w(const struct hift_src *f, const char *name, int n_dims,
                           const int64_t *shape, struct err *e)
{
    char full[GGUF_MAX_NAME];
    const struct tensor *t;
    snprintf(full, sizeof full, "hift.%s", name);
    if (f->fn)
        return f->fn(f->ctx, full, n_dims, shape, e);
    if (gguf_get_tensor(f->f, full, GGUF_TYPES(DTYPE_F32), n_dims, shape, &t, e))
        return NULL;
    return (const float *)t->data;
}

#define W1(ptr, name, a)                             \
    do {                                             \
        int64_t sh_[1] = { (a) };                    \
        if (!((ptr) = hift_w(f, (name), 1, sh_, e))) \
            return -1;                               \
    } while (0)
#define W2(ptr, name, a, b)                          \
    do {                                             \
        int64_t sh_[2] = { (a), (b) };               \
        if (!((ptr) = hift_w(f, (name), 2, sh_, e))) \
            return -1;                               \
    } while (0)
#define W3(ptr, name, a, b, c)                       \
    do {                                             \
        int64_t sh_[3] = { (a), (b), (c) };          \
        if (!((ptr) = hift_w(f, (name), 3, sh_, e))) \
            return -1;                               \
    } while (0)

/* An integer array key of length n_min..n_max into out; *n gets the length. */
static int hift_get_ints(const struct gguf_file *f, const char *key, int *out, int *n, int n_min,
                         int n_max, int lo, int hi, struct err *e)
{
    const struct gguf_kv *kv;
    if (gguf_get_array(f, key, GGUF_TYPE_INT64, &kv, e))
        return -1;
    if ((int64_t)kv->count < n_min || (int64_t)kv->count > n_max)
        return err_set(e, "%s: %s has %llu elements, expected %d..%d", f->path, key,
                       (unsigned long long)kv->count, n_min, n_max);
    for (uint64_t i = 0; i < kv->count; i++) {
        int64_t v;
        if (gguf_array_i64(kv, i, &v) || v < lo || v > hi)
            return err_set(e, "%s: %s[%llu] is outside [%d, %d]", f->path, key,
                           (unsigned long long)i, lo, hi);
        out[i] = (int)v;
    }
    *n = (int)kv->count;
    return 0;
}

static int hift_load_resblock(struct hift_resblock *rb, const struct hift_src *f,
                              const char *prefix, int ch, int k, const int *dil, struct err *e)
{
    char name[128];
    rb->ch = ch;
    rb->k = k;
    for (int i = 0; i < HIFT_N_DIL; i++) {
        rb->dil[i] = dil[i];
        snprintf(name, sizeof name, "%s.convs1.%d.weight", prefix, i);
        W3(rb->c1_w[i], name, ch, ch, k);
        snprintf(name, sizeof name, "%s.convs1.%d.bias", prefix, i);
        W1(rb->c1_b[i], name, ch);
        snprintf(name, sizeof name, "%s.convs2.%d.weight", prefix, i);
        W3(rb->c2_w[i], name, ch, ch, k);
        snprintf(name, sizeof name, "%s.convs2.%d.bias", prefix, i);
        W1(rb->c2_b[i], name, ch);
        snprintf(name, sizeof name, "%s.activations1.%d.alpha", prefix, i);
        W1(rb->a1[i], name, ch);
        snprintf(name, sizeof name, "%s.activations2.%d.alpha", prefix, i);
        W1(rb->a2[i], name, ch);
    }
    return 0;
}

/* Source-STFT downsampling factor of stage i: the product of the later stages' rates. */
static int hift_src_rate(const struct hift_hparams *hp, int i)
{
    int u = 1;
    for (int j = i + 1; j < hp->n_stages; j++)
        u *= hp->up_rates[j];
    return u;
}

static int hift_load_hparams(struct hift_hparams *hp, const struct gguf_file *f, struct err *e)
{
    int n, dil[HIFT_MAX_KERNELS * HIFT_N_DIL];
    memset(hp, 0, sizeof *hp);
    if (gguf_get_int32(f, "hift.in_channels", 1, 4096, &hp->in_channels, e) ||
        gguf_get_int32(f, "hift.base_channels", 2, 8192, &hp->base_channels, e) ||
        gguf_get_int32(f, "hift.nb_harmonics", 0, 15, &hp->nb_harmonics, e) ||
        gguf_get_int32(f, "hift.sampling_rate", 1, 1000000, &hp->sample_rate, e) ||
        gguf_get_int32(f, "hift.istft_n_fft", 2, 4096, &hp->n_fft, e) ||
        gguf_get_int32(f, "hift.istft_hop", 1, 4096, &hp->hop, e) ||
        gguf_get_int32(f, "hift.f0_cond_channels", 1, 8192, &hp->f0_channels, e))
        return -1;
    if (gguf_get_f32(f, "hift.nsf_alpha", &hp->nsf_alpha, e) ||
        gguf_get_f32(f, "hift.nsf_sigma", &hp->nsf_sigma, e) ||
        gguf_get_f32(f, "hift.nsf_voiced_threshold", &hp->voiced_threshold, e) ||
        gguf_get_f32(f, "hift.lrelu_slope", &hp->lrelu_slope, e) ||
        gguf_get_f32(f, "hift.audio_limit", &hp->audio_limit, e))
        return -1;
    if (hift_get_ints(f, "hift.upsample_rates", hp->up_rates, &hp->n_stages, 1, HIFT_MAX_STAGES, 1,
                      64, e) ||
        hift_get_ints(f, "hift.upsample_kernel_sizes", hp->up_kernels, &n, hp->n_stages,
                      hp->n_stages, 1, 256, e) ||
        hift_get_ints(f, "hift.resblock_kernel_sizes", hp->rb_kernels, &hp->n_kernels, 1,
                      HIFT_MAX_KERNELS, 1, 63, e) ||
        hift_get_ints(f, "hift.resblock_dilation_sizes", dil, &n, hp->n_kernels * HIFT_N_DIL,
                      hp->n_kernels * HIFT_N_DIL, 1, 64, e))
        return -1;
    for (int k = 0; k < hp->n_kernels; k++)
        for (int d = 0; d < HIFT_N_DIL; d++)
            hp->rb_dil[k][d] = dil[k * HIFT_N_DIL + d];
    if (hift_get_ints(f, "hift.source_resblock_kernel_sizes", hp->src_kernels, &n, hp->n_stages,
                      hp->n_stages, 1, 63, e) ||
        hift_get_ints(f, "hift.source_resblock_dilation_sizes", dil, &n, hp->n_stages * HIFT_N_DIL,
                      hp->n_stages * HIFT_N_DIL, 1, 64, e))
        return -1;
    for (int k = 0; k < hp->n_stages; k++)
        for (int d = 0; d < HIFT_N_DIL; d++)
            hp->src_dil[k][d] = dil[k * HIFT_N_DIL + d];
    if (hp->base_channels >> hp->n_stages < 1 || hp->base_channels % (1 << hp->n_stages))
        return err_set(e, "%s: hift.base_channels %d does not halve %d times", f->path,
                       hp->base_channels, hp->n_stages);
    hp->hop_total = hp->hop;
    for (int i = 0; i < hp->n_stages; i++) {
        hp->hop_total *= hp->up_rates[i];
        if ((hp->up_kernels[i] - hp->up_rates[i]) % 2 || hp->up_kernels[i] < hp->up_rates[i])
            return err_set(e, "%s: hift upsample kernel %d does not fit rate %d", f->path,
                           hp->up_kernels[i], hp->up_rates[i]);
    }
    for (int k = 0; k < hp->n_kernels; k++)
        if (hp->rb_kernels[k] % 2 == 0)
            return err_set(e, "%s: hift resblock kernel %d is even", f->path, hp->rb_kernels[k]);
    for (int k = 0; k < hp->n_stages; k++)
        if (hp->src_kernels[k] % 2 == 0)
            return err_set(e, "%s: hift source resblock kernel %d is even", f->path,
                           hp->src_kernels[k]);
    if (hp->n_fft % 2 || hp->n_fft < 2 * hp->hop / 2)
        return err_set(e, "%s: hift n_fft %d is not even", f->path, hp->n_fft);
    return 0;
}

static int hift_load_weights(struct hift_model *m, const struct hift_src *f, struct err *e);

int hift_load(struct hift_model *m, const struct gguf_file *file, struct err *e)
{
    struct hift_src src = { file, NULL, NULL };
    memset(m, 0, sizeof *m);
    if (hift_load_hparams(&m->hp, file, e))
        return -1;
    return hift_load_weights(m, &src, e);
}

int hift_load_from(struct hift_model *m, const struct hift_hparams *hp, hift_tensor_fn *fn,
                   void *ctx, struct err *e)
{
    struct hift_src src = { NULL, fn, ctx };
    memset(m, 0, sizeof *m);
    m->hp = *hp;
    m->hp.hop_total = hp->hop;
    for (int i = 0; i < hp->n_stages; i++)
        m->hp.hop_total *= hp->up_rates[i];
    return hift_load_weights(m, &src, e);
}

static int hift_load_weights(struct hift_model *m, const struct hift_src *f, struct err *e)
{
    struct hift_hparams *hp = &m->hp;
    char name[128];
    int c = hp->f0_channels, base = hp->base_channels, n_spec = hp->n_fft + 2;
    int H = hp->nb_harmonics + 1;
    for (int i = 0; i < HIFT_F0_LAYERS; i++) {
        snprintf(name, sizeof name, "f0_predictor.condnet.%d.weight", 2 * i);
        W3(m->f0_w[i], name, c, i == 0 ? hp->in_channels : c, 3);
        snprintf(name, sizeof name, "f0_predictor.condnet.%d.bias", 2 * i);
        W1(m->f0_b[i], name, c);
    }
    W2(m->f0_cls_w, "f0_predictor.classifier.weight", 1, c);
    W1(m->f0_cls_b, "f0_predictor.classifier.bias", 1);
    W2(m->src_w, "m_source.l_linear.weight", 1, H);
    W1(m->src_b, "m_source.l_linear.bias", 1);
    W3(m->pre_w, "conv_pre.weight", base, hp->in_channels, 7);
    W1(m->pre_b, "conv_pre.bias", base);
    for (int i = 0; i < hp->n_stages; i++) {
        int ci = base >> i, co = base >> (i + 1), u = hift_src_rate(hp, i);
        snprintf(name, sizeof name, "ups.%d.weight", i);
        W3(m->ups_w[i], name, ci, co, hp->up_kernels[i]);
        snprintf(name, sizeof name, "ups.%d.bias", i);
        W1(m->ups_b[i], name, co);
        snprintf(name, sizeof name, "source_downs.%d.weight", i);
        W3(m->sd_w[i], name, co, n_spec, u == 1 ? 1 : 2 * u);
        snprintf(name, sizeof name, "source_downs.%d.bias", i);
        W1(m->sd_b[i], name, co);
        snprintf(name, sizeof name, "source_resblocks.%d", i);
        if (hift_load_resblock(&m->src_rb[i], f, name, co, hp->src_kernels[i], hp->src_dil[i], e))
            return -1;
        for (int j = 0; j < hp->n_kernels; j++) {
            snprintf(name, sizeof name, "resblocks.%d", i * hp->n_kernels + j);
            if (hift_load_resblock(&m->rb[i * hp->n_kernels + j], f, name, co, hp->rb_kernels[j],
                                   hp->rb_dil[j], e))
                return -1;
        }
    }
    W3(m->post_w, "conv_post.weight", n_spec, base >> hp->n_stages, 7);
    W1(m->post_b, "conv_post.bias", n_spec);

    /* psi_h = -pi + u_h * 2pi in float32 (torch.distributions.Uniform(-pi, pi).sample), with
     * the fundamental's phase zeroed (spec §8.3.3) */
    float u[16];
    hift_torch_rand(u, H, 42);
    const float lo = (float)-M_PI, span = (float)M_PI - lo;
    for (int h = 0; h < H; h++)
        m->phase[h] = h == 0 ? 0.0f : lo + u[h] * span;

    float window[4096];
    spectral_hann(window, hp->n_fft, 1);
    if (spectral_plan_init(&m->plan, hp->n_fft, hp->hop, window, e))
        return err_prefix(e, "hift");
    return 0;
}

void hift_free(struct hift_model *m)
{
    spectral_plan_free(&m->plan);
}

/* ---- PyTorch's CPU generator ------------------------------------------------------------ */

void hift_torch_rand(float *out, int n, uint64_t seed)
{
    /* MT19937 as in PyTorch's CPUGeneratorImpl: init_genrand(seed), then 32-bit draws;
     * torch.rand(float) keeps the low 24 bits: (x & 0xFFFFFF) * 2^-24 */
    uint32_t mt[624];
    int idx = 624;
    mt[0] = (uint32_t)seed;
    for (int i = 1; i < 624; i++)
        mt[i] = 1812433253u * (mt[i - 1] ^ (mt[i - 1] >> 30)) + (uint32_t)i;
    for (int k = 0; k < n; k++) {
        if (idx >= 624) {
            for (int i = 0; i < 624; i++) {
                uint32_t y = (mt[i] & 0x80000000u) | (mt[(i + 1) % 624] & 0x7fffffffu);
                mt[i] = mt[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
            }
            idx = 0;
        }
        uint32_t y = mt[idx++];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        out[k] = (float)(y & 0xFFFFFFu) * (1.0f / 16777216.0f);
    }
}

/* ---- state ---------------------------------------------------------------------------- */

/* Largest per-stage activation ([C][T_stage] floats) and conv scratch for t frames. */
static void hift_sizes(const struct hift_model *m, int64_t t, int n_threads, size_t *act,
                       size_t *scratch)
{
    const struct hift_hparams *hp = &m->hp;
    size_t a = (size_t)hp->base_channels * (size_t)t, s = 0, v;
    int64_t len = t, n_frames = t * hp->hop_total / hp->hop + 1;
    struct conv_params p = conv_params_make(hp->in_channels, hp->base_channels, 7, 1, 1, 3, 1);
    s = conv_1d_scratch_floats(&p, t, n_threads);
    p = conv_params_make(hp->in_channels, hp->f0_channels, 3, 1, 1, 1, 1);
    v = conv_1d_scratch_floats(&p, t, n_threads);
    s = v > s ? v : s;
    p = conv_params_make(hp->f0_channels, hp->f0_channels, 3, 1, 1, 1, 1);
    v = conv_1d_scratch_floats(&p, t, n_threads);
    s = v > s ? v : s;
    for (int i = 0; i < hp->n_stages; i++) {
        int ci = hp->base_channels >> i, co = hp->base_channels >> (i + 1);
        int k = hp->up_kernels[i], r = hp->up_rates[i], u = hift_src_rate(hp, i);
        struct conv_transpose_params tp = { ci, co, k, r, 1, (k - r) / 2, 0 };
        v = conv_transpose_1d_scratch_floats(&tp, len, n_threads);
        s = v > s ? v : s;
        len = conv_transpose_1d_out_len(&tp, len) + (i == hp->n_stages - 1);
        v = (size_t)co * (size_t)len;
        a = v > a ? v : a;
        p = u == 1 ? conv_params_make(hp->n_fft + 2, co, 1, 1, 1, 0, 1)
                   : conv_params_make(hp->n_fft + 2, co, 2 * u, u, 1, u / 2, 1);
        v = conv_1d_scratch_floats(&p, n_frames, n_threads);
        s = v > s ? v : s;
        for (int j = 0; j <= hp->n_kernels; j++) {
            int kk = j == hp->n_kernels ? hp->src_kernels[i] : hp->rb_kernels[j];
            for (int d = 0; d < HIFT_N_DIL; d++) {
                int dd = j == hp->n_kernels ? hp->src_dil[i][d] : hp->rb_dil[j][d];
                p = conv_params_make(co, co, kk, 1, dd, (kk * dd - dd) / 2, 1);
                v = conv_1d_scratch_floats(&p, len, n_threads);
                s = v > s ? v : s;
            }
        }
    }
    p = conv_params_make(hp->base_channels >> hp->n_stages, hp->n_fft + 2, 7, 1, 1, 3, 1);
    v = conv_1d_scratch_floats(&p, len, n_threads);
    s = v > s ? v : s;
    v = spectral_stft_scratch_floats(&m->plan, n_frames, n_threads);
    s = v > s ? v : s;
    v = spectral_istft_scratch_floats(&m->plan, n_frames);
    s = v > s ? v : s;
    *act = a;
    *scratch = s;
}

int hift_state_init(struct hift_state *s, const struct hift_model *m, int64_t max_frames,
                    struct err *e)
{
    const struct hift_hparams *hp = &m->hp;
    size_t act, scr;
    memset(s, 0, sizeof *s);
    if (max_frames < 1)
        return err_set(e, "hift: max_frames %lld < 1", (long long)max_frames);
    /* the pool size is unknown here: size scratch for up to 64 threads */
    /* scratch sizes are not monotonic in the length (tile shapes): take the largest over
     * every length a call may have */
    act = scr = 0;
    for (int64_t t = 1; t <= max_frames; t++) {
        size_t a1, s1;
        hift_sizes(m, t, 64, &a1, &s1);
        act = a1 > act ? a1 : act;
        scr = s1 > scr ? s1 : scr;
    }
    int64_t n_frames = max_frames * hp->hop_total / hp->hop + 1;
    size_t spec = (size_t)(hp->n_fft + 2) * (size_t)n_frames;
    s->max_frames = max_frames;
    s->f0a = malloc(sizeof(float) * (size_t)hp->f0_channels * (size_t)max_frames);
    s->f0b = malloc(sizeof(float) * (size_t)hp->f0_channels * (size_t)max_frames);
    s->f0 = malloc(sizeof(float) * (size_t)max_frames);
    s->stft = malloc(sizeof(float) * spec);
    s->spec = malloc(sizeof(float) * spec);
    s->x = malloc(sizeof(float) * act);
    s->acc = malloc(sizeof(float) * act);
    s->rbx = malloc(sizeof(float) * act);
    s->t1 = malloc(sizeof(float) * act);
    s->t2 = malloc(sizeof(float) * act);
    s->si = malloc(sizeof(float) * act);
    s->scratch = malloc(sizeof(float) * (scr ? scr : 1));
    s->rng[0] = 0x9E3779B97F4A7C15ull;
    s->rng[1] = 0xD1B54A32D192ED03ull;
    if (!s->f0a || !s->f0b || !s->f0 || !s->stft || !s->spec || !s->x || !s->acc || !s->rbx ||
        !s->t1 || !s->t2 || !s->si || !s->scratch) {
        hift_state_free(s);
        return err_set(e, "hift: out of memory for %lld frames", (long long)max_frames);
    }
    return 0;
}

void hift_state_free(struct hift_state *s)
{
    free(s->f0a);
    free(s->f0b);
    free(s->f0);
    free(s->stft);
    free(s->spec);
    free(s->x);
    free(s->acc);
    free(s->rbx);
    free(s->t1);
    free(s->t2);
    free(s->si);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

/* ---- forward -------------------------------------------------------------------------- */

/* xorshift128+ and Box-Muller: production NSF noise (any N(0,1) source will do, spec §9). */
static float hift_gauss(uint64_t *st)
{
    uint64_t a = st[0], b = st[1];
    st[0] = b;
    a ^= a << 23;
    st[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    uint64_t r = st[1] + b;
    double u1 = ((double)(r >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)((r >> 5) & 0x3f) / 64.0 + (double)(r & 0x1f) / 2048.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

/* out = ResBlock(x) over [ch][t]; uses s->t1, s->t2; out must differ from them. */
static int hift_resblock(const struct hift_resblock *rb, struct hift_state *s, struct pool *pool,
                         float *out, const float *x, int64_t t, struct err *e)
{
    int64_t n = (int64_t)rb->ch * t;
    if (out != x)
        vec_copy(out, x, n);
    for (int i = 0; i < HIFT_N_DIL; i++) {
        int d = rb->dil[i];
        struct conv_params p1 =
            conv_params_make(rb->ch, rb->ch, rb->k, 1, d, (rb->k * d - d) / 2, 1);
        struct conv_params p2 = conv_params_make(rb->ch, rb->ch, rb->k, 1, 1, (rb->k - 1) / 2, 1);
        act_snake(pool, s->t1, out, rb->a1[i], rb->ch, t);
        if (conv_1d(pool, s->t2, s->t1, rb->c1_w[i], rb->c1_b[i], &p1, t, s->scratch, e))
            return -1;
        act_snake(pool, s->t2, s->t2, rb->a2[i], rb->ch, t);
        if (conv_1d(pool, s->t1, s->t2, rb->c2_w[i], rb->c2_b[i], &p2, t, s->scratch, e))
            return -1;
        vec_add(out, out, s->t1, n);
    }
    return 0;
}

/* f0 [T] = |classifier(5 × (WN-Conv1d k3 p1 → ELU)(mel))| (spec §8.3.1). */
static int hift_f0(const struct hift_model *m, struct hift_state *s, struct pool *pool,
                   const float *mel, int64_t t, struct err *e)
{
    const struct hift_hparams *hp = &m->hp;
    int c = hp->f0_channels;
    const float *in = mel;
    float *out = s->f0a;
    for (int i = 0; i < HIFT_F0_LAYERS; i++) {
        struct conv_params p = conv_params_make(i ? c : hp->in_channels, c, 3, 1, 1, 1, 1);
        if (conv_1d(pool, out, in, m->f0_w[i], m->f0_b[i], &p, t, s->scratch, e))
            return -1;
        act_elu(pool, out, out, (int64_t)c * t, 1.0f);
        in = out;
        out = out == s->f0a ? s->f0b : s->f0a;
    }
    for (int64_t j = 0; j < t; j++) {
        float acc = 0.0f;
        for (int ch = 0; ch < c; ch++)
            acc += m->f0_cls_w[ch] * in[(int64_t)ch * t + j];
        s->f0[j] = fabsf(acc + m->f0_cls_b[0]);
    }
    return 0;
}

/* source [L] from f0 (spec §8.3.2-8.3.3). */
static void hift_source(const struct hift_model *m, struct hift_state *s, float *src, int64_t t,
                        const float *noise)
{
    const struct hift_hparams *hp = &m->hp;
    int H = hp->nb_harmonics + 1, up = hp->hop_total;
    int64_t L = t * up;
    double cum[16] = { 0 }; /* torch's CPU cumsum accumulates float in double */
    const float two_pi = (float)(2.0 * M_PI), sr = (float)hp->sample_rate;
    const float unvoiced_amp = hp->nsf_alpha / 3.0f;
    for (int64_t n = 0; n < L; n++) {
        float f0 = s->f0[n / up];
        float uv = f0 > hp->voiced_threshold ? 1.0f : 0.0f;
        float amp = uv * hp->nsf_sigma + (1.0f - uv) * unvoiced_amp;
        float acc = 0.0f;
        for (int h = 0; h < H; h++) {
            cum[h] += (double)(f0 * (float)(h + 1) / sr);
            float c = (float)cum[h];
            float frac = c - floorf(c);
            float sine = hp->nsf_alpha * sinf(two_pi * frac + m->phase[h]);
            float z = noise ? noise[(int64_t)h * L + n] : hift_gauss(s->rng);
            float eh = sine * uv + amp * z;
            acc += m->src_w[h] * eh;
        }
        src[n] = tanhf(acc + m->src_b[0]);
    }
}

int hift_forward(const struct hift_model *m, struct hift_state *s, struct pool *pool, float *wave,
                 float *source, float *f0_out, const float *mel, int64_t t, const float *cache_src,
                 const float *noise, struct err *e)
{
    const struct hift_hparams *hp = &m->hp;
    if (t < 1 || t > s->max_frames)
        return err_set(e, "hift: %lld mel frames, this state holds 1..%lld", (long long)t,
                       (long long)s->max_frames);
    int64_t L = t * hp->hop_total, n_frames = L / hp->hop + 1;
    int n_bins = hp->n_fft / 2 + 1, n_spec = hp->n_fft + 2;
    float *src = source ? source : s->si; /* si is free until the first stage */

    /* 1. F0 and the NSF source; 2. the cached source over the first samples */
    if (hift_f0(m, s, pool, mel, t, e))
        return -1;
    if (f0_out)
        memcpy(f0_out, s->f0, sizeof(float) * (size_t)t);
    hift_source(m, s, src, t, noise);
    if (cache_src)
        memcpy(src, cache_src, sizeof(float) * (size_t)(L < hp->hop_total ? L : hp->hop_total));

    /* 3. source STFT: [Re; Im] (n_fft+2) × F */
    if (spectral_stft(pool, &m->plan, s->stft, n_frames, src, L, s->scratch, e))
        return -1;

    /* 4. conv_pre, then the upsampling stages with source fusion */
    struct conv_params p = conv_params_make(hp->in_channels, hp->base_channels, 7, 1, 1, 3, 1);
    if (conv_1d(pool, s->x, mel, m->pre_w, m->pre_b, &p, t, s->scratch, e))
        return -1;
    int64_t len = t;
    for (int i = 0; i < hp->n_stages; i++) {
        int ci = hp->base_channels >> i, co = hp->base_channels >> (i + 1);
        int k = hp->up_kernels[i], r = hp->up_rates[i], u = hift_src_rate(hp, i);
        int last = i == hp->n_stages - 1;
        struct conv_transpose_params tp = { ci, co, k, r, 1, (k - r) / 2, 0 };
        act_leaky_relu(pool, s->x, s->x, (int64_t)ci * len, hp->lrelu_slope);
        int64_t up_len = conv_transpose_1d_out_len(&tp, len);
        if (conv_transpose_1d(pool, s->acc, s->x, m->ups_w[i], m->ups_b[i], &tp, len, s->scratch,
                              e))
            return -1;
        /* the transposed conv wrote into acc; bring it back to x (reflect-padding the last) */
        if (last) {
            if (conv_pad_reflect(s->x, s->acc, co, up_len, 1, 0, e))
                return -1;
            len = up_len + 1;
        } else {
            vec_copy(s->x, s->acc, (int64_t)co * up_len);
            len = up_len;
        }
        /* source branch: downsample the source spectrum to this stage's rate */
        p = u == 1 ? conv_params_make(n_spec, co, 1, 1, 1, 0, 1)
                   : conv_params_make(n_spec, co, 2 * u, u, 1, u / 2, 1);
        if (conv_1d_out_len(&p, n_frames) != len)
            return err_set(e, "hift: stage %d source length %lld != %lld", i,
                           (long long)conv_1d_out_len(&p, n_frames), (long long)len);
        if (conv_1d(pool, s->si, s->stft, m->sd_w[i], m->sd_b[i], &p, n_frames, s->scratch, e))
            return -1;
        if (hift_resblock(&m->src_rb[i], s, pool, s->rbx, s->si, len, e))
            return -1;
        vec_add(s->x, s->x, s->rbx, (int64_t)co * len);
        /* mean of the ResBlocks */
        for (int j = 0; j < hp->n_kernels; j++) {
            if (hift_resblock(&m->rb[i * hp->n_kernels + j], s, pool, j ? s->rbx : s->acc, s->x,
                              len, e))
                return -1;
            if (j)
                vec_add(s->acc, s->acc, s->rbx, (int64_t)co * len);
        }
        const float nk = (float)hp->n_kernels;
        for (int64_t q = 0; q < (int64_t)co * len; q++)
            s->x[q] = s->acc[q] / nk;
    }
    if (len != n_frames)
        return err_set(e, "hift: final length %lld != %lld STFT frames", (long long)len,
                       (long long)n_frames);

    /* 5. LeakyReLU 0.01, conv_post → log-magnitude and phase rows */
    int c_last = hp->base_channels >> hp->n_stages;
    act_leaky_relu(pool, s->x, s->x, (int64_t)c_last * len, 0.01f);
    p = conv_params_make(c_last, n_spec, 7, 1, 1, 3, 1);
    if (conv_1d(pool, s->spec, s->x, m->post_w, m->post_b, &p, len, s->scratch, e))
        return -1;
    int64_t nb = (int64_t)n_bins * len;
    act_exp(pool, s->spec, s->spec, nb);
    act_sin(pool, s->spec + nb, s->spec + nb, nb);
    for (int64_t q = 0; q < nb; q++) {
        float mag = s->spec[q] > 100.0f ? 100.0f : s->spec[q];
        float ph = s->spec[nb + q];
        s->stft[q] = mag * cosf(ph);
        s->stft[nb + q] = mag * sinf(ph);
    }

    /* 6. iSTFT and clamp */
    if (spectral_istft(pool, &m->plan, wave, L, s->stft, len, s->scratch, e))
        return -1;
    const float lim = hp->audio_limit;
    for (int64_t q = 0; q < L; q++)
        wave[q] = wave[q] > lim ? lim : wave[q] < -lim ? -lim : wave[q];
    return 0;
}

double hift_flops_per_frame(const struct hift_model *m)
{
    const struct hift_hparams *hp = &m->hp;
    double f = 0, len = 1, F = (double)hp->hop_total / hp->hop;
    f += 2.0 * hp->base_channels * hp->in_channels * 7;
    f += 2.0 * hp->f0_channels * (hp->in_channels + 4.0 * hp->f0_channels) * 3;
    for (int i = 0; i < hp->n_stages; i++) {
        double ci = hp->base_channels >> i, co = hp->base_channels >> (i + 1);
        int u = hift_src_rate(hp, i);
        f += 2.0 * ci * co * hp->up_kernels[i] * len;
        len *= hp->up_rates[i];
        f += 2.0 * co * (hp->n_fft + 2) * (u == 1 ? 1 : 2 * u) * len;
        f += 2.0 * co * co * hp->src_kernels[i] * 2 * HIFT_N_DIL * len;
        for (int j = 0; j < hp->n_kernels; j++)
            f += 2.0 * co * co * hp->rb_kernels[j] * 2 * HIFT_N_DIL * len;
    }
    f += 2.0 * (hp->n_fft + 2) * (hp->base_channels >> hp->n_stages) * 7 * F;
    return f;
}
