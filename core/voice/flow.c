/*
 * flow — see flow.h. The forward pass follows spec §7.3 step by step.
 */
#include "voice/flow.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/act.h"
#include "kernels/attn.h"
#include "kernels/conv.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/resize.h"
#include "kernels/vec.h"

#define FLOW_B 2 /* estimator batch: conditional, unconditional */

/* ---- loading ------------------------------------------------------------------------- */

/* Where weights come from: the model file, or a caller's function (benchmarks). */
struct flow_src {
    const struct gguf_file *f;
    flow_tensor_fn *fn;
    void *ctx;
};

static const float *flow_w(const struct flow_src *f, const char *name, int n_dims,
                           const int64_t *shape, struct err *e)
{
    char full[GGUF_MAX_NAME + 8];
    const struct tensor *t;
    snprintf(full, sizeof full, "flow.%s", name);
    if (f->fn)
        return f->fn(f->ctx, full, n_dims, shape, e);
    if (gguf_get_tensor(f->f, full, GGUF_TYPES(DTYPE_F32), n_dims, shape, &t, e))
        return NULL;
    return (const float *)t->data;
}

#define W1(ptr, a, ...)                          \
    do {                                         \
        int64_t sh_[1] = { (a) };                \
        snprintf(nm, sizeof nm, __VA_ARGS__);    \
        if (!((ptr) = flow_w(f, nm, 1, sh_, e))) \
            return -1;                           \
    } while (0)
#define W2(ptr, a, b, ...)                       \
    do {                                         \
        int64_t sh_[2] = { (a), (b) };           \
        snprintf(nm, sizeof nm, __VA_ARGS__);    \
        if (!((ptr) = flow_w(f, nm, 2, sh_, e))) \
            return -1;                           \
    } while (0)
#define W3(ptr, a, b, c, ...)                    \
    do {                                         \
        int64_t sh_[3] = { (a), (b), (c) };      \
        snprintf(nm, sizeof nm, __VA_ARGS__);    \
        if (!((ptr) = flow_w(f, nm, 3, sh_, e))) \
            return -1;                           \
    } while (0)

static int flow_load_hparams(struct flow_hparams *hp, const struct gguf_file *f, struct err *e)
{
    const struct gguf_kv *kv;
    int64_t c0, c1;
    memset(hp, 0, sizeof *hp);
    if (gguf_get_int32(f, "flow.vocab_size", 1, 1 << 24, &hp->vocab, e) ||
        gguf_get_int32(f, "flow.input_size", 1, 65536, &hp->embed, e) ||
        gguf_get_int32(f, "flow.output_size", 1, 4096, &hp->n_mel, e) ||
        gguf_get_int32(f, "flow.spk_embed_dim", 1, 65536, &hp->spk_dim, e) ||
        gguf_get_int32(f, "flow.sample_rate", 1, 1000000, &hp->sample_rate, e) ||
        gguf_get_int32(f, "flow.hop_length", 1, 65536, &hp->hop, e) ||
        gguf_get_int32(f, "flow.encoder.output_size", 1, 65536, &hp->d_model, e) ||
        gguf_get_int32(f, "flow.encoder.attention_heads", 1, 1024, &hp->n_heads, e) ||
        gguf_get_int32(f, "flow.encoder.linear_units", 1, 1 << 20, &hp->d_ff, e) ||
        gguf_get_int32(f, "flow.encoder.num_blocks", 0, FLOW_MAX_LAYERS, &hp->n_layers, e) ||
        gguf_get_int32(f, "flow.encoder.block_size", 1, 1 << 20, &hp->block, e) ||
        gguf_get_int32(f, "flow.length_regulator.n_layers", 0, FLOW_MAX_LR, &hp->lr_layers, e) ||
        gguf_get_int32(f, "flow.cfm.n_timesteps", 1, 1000, &hp->n_steps, e) ||
        gguf_get_int32(f, "flow.estimator.in_channels", 1, 65536, &hp->est_in, e) ||
        gguf_get_int32(f, "flow.estimator.n_blocks", 0, 64, &hp->n_tb, e) ||
        gguf_get_int32(f, "flow.estimator.num_mid_blocks", 0, FLOW_MAX_MID, &hp->n_mid, e) ||
        gguf_get_int32(f, "flow.estimator.num_heads", 1, 1024, &hp->est_heads, e) ||
        gguf_get_int32(f, "flow.estimator.attention_head_dim", 1, 4096, &hp->est_head_dim, e))
        return -1;
    if (gguf_get_f32(f, "flow.input_frame_rate", &hp->frame_rate, e) ||
        gguf_get_f32(f, "flow.cfm.inference_cfg_rate", &hp->cfg_rate, e))
        return -1;
    if (gguf_get_array(f, "flow.estimator.channels", GGUF_TYPE_INT64, &kv, e))
        return -1;
    if (kv->count != 2 || gguf_array_i64(kv, 0, &c0) || gguf_array_i64(kv, 1, &c1) || c0 != c1 ||
        c0 < 8 || c0 > 65536 || c0 % 8)
        return err_set(e, "%s: flow.estimator.channels must be two equal multiples of 8", f->path);
    hp->ch = (int)c0;
    if (hp->d_model % hp->n_heads)
        return err_set(e, "%s: encoder width %d is not a multiple of %d heads", f->path,
                       hp->d_model, hp->n_heads);
    if (hp->est_in != 4 * hp->n_mel)
        return err_set(e, "%s: estimator in_channels %d != 4 x %d mel bins", f->path, hp->est_in,
                       hp->n_mel);
    if (!(hp->frame_rate > 0.0f))
        return err_set(e, "%s: flow.input_frame_rate must be positive", f->path);
    return 0;
}

static int flow_load_resnet(struct flow_resnet *r, const struct flow_src *f, const char *p, int d,
                            int o, int te, struct err *e)
{
    char nm[224];
    r->d = d;
    r->o = o;
    W2(r->mlp_w, o, te, "%smlp.1.weight", p);
    W1(r->mlp_b, o, "%smlp.1.bias", p);
    W3(r->c1_w, o, d, 3, "%sblock1.block.0.weight", p);
    W1(r->c1_b, o, "%sblock1.block.0.bias", p);
    W1(r->g1_w, o, "%sblock1.block.1.weight", p);
    W1(r->g1_b, o, "%sblock1.block.1.bias", p);
    W3(r->c2_w, o, o, 3, "%sblock2.block.0.weight", p);
    W1(r->c2_b, o, "%sblock2.block.0.bias", p);
    W1(r->g2_w, o, "%sblock2.block.1.weight", p);
    W1(r->g2_b, o, "%sblock2.block.1.bias", p);
    W3(r->res_w, o, d, 1, "%sres_conv.weight", p);
    W1(r->res_b, o, "%sres_conv.bias", p);
    return 0;
}

static int flow_load_tbs(struct flow_tb *tb, int n, const struct flow_src *f, const char *p, int c,
                         int inner, struct err *e)
{
    char nm[224];
    for (int j = 0; j < n; j++) {
        struct flow_tb *t = &tb[j];
        W1(t->n1_w, c, "%s%d.norm1.weight", p, j);
        W1(t->n1_b, c, "%s%d.norm1.bias", p, j);
        W2(t->wq, inner, c, "%s%d.attn1.to_q.weight", p, j);
        W2(t->wk, inner, c, "%s%d.attn1.to_k.weight", p, j);
        W2(t->wv, inner, c, "%s%d.attn1.to_v.weight", p, j);
        W2(t->wo, c, inner, "%s%d.attn1.to_out.0.weight", p, j);
        W1(t->bo, c, "%s%d.attn1.to_out.0.bias", p, j);
        W1(t->n3_w, c, "%s%d.norm3.weight", p, j);
        W1(t->n3_b, c, "%s%d.norm3.bias", p, j);
        W2(t->ff1_w, 4 * c, c, "%s%d.ff.net.0.proj.weight", p, j);
        W1(t->ff1_b, 4 * c, "%s%d.ff.net.0.proj.bias", p, j);
        W2(t->ff2_w, c, 4 * c, "%s%d.ff.net.2.weight", p, j);
        W1(t->ff2_b, c, "%s%d.ff.net.2.bias", p, j);
    }
    return 0;
}

static int flow_load_level(struct flow_level *l, struct flow_tb *tb, const struct flow_src *f,
                           const char *p, int d, const struct flow_hparams *hp, struct err *e)
{
    char nm[112];
    int c = hp->ch, inner = hp->est_heads * hp->est_head_dim;
    snprintf(nm, sizeof nm, "%s0.", p);
    if (flow_load_resnet(&l->res, f, nm, d, c, 4 * c, e))
        return -1;
    l->tb = tb;
    char q[112];
    snprintf(q, sizeof q, "%s1.", p);
    return flow_load_tbs(tb, hp->n_tb, f, q, c, inner, e);
}

static int flow_load_weights(struct flow_model *m, const struct flow_src *f, struct err *e);

int flow_load(struct flow_model *m, const struct gguf_file *file, struct err *e)
{
    struct flow_src src = { file, NULL, NULL };
    memset(m, 0, sizeof *m);
    if (flow_load_hparams(&m->hp, file, e))
        return -1;
    if (flow_load_weights(m, &src, e)) {
        flow_free(m); /* a failed load leaves nothing to free */
        return -1;
    }
    return 0;
}

int flow_load_from(struct flow_model *m, const struct flow_hparams *hp, flow_tensor_fn *fn,
                   void *ctx, struct err *e)
{
    struct flow_src src = { NULL, fn, ctx };
    memset(m, 0, sizeof *m);
    m->hp = *hp;
    if (flow_load_weights(m, &src, e)) {
        flow_free(m); /* a failed load leaves nothing to free */
        return -1;
    }
    return 0;
}

static int flow_load_weights(struct flow_model *m, const struct flow_src *f, struct err *e)
{
    struct flow_hparams *hp = &m->hp;
    char nm[224];
    int D = hp->d_model, E = hp->embed, M = hp->n_mel, U = hp->d_ff, H = hp->n_heads;
    int C = hp->ch, te = 4 * C;
    W2(m->emb, hp->vocab, E, "input_embedding.weight");
    W1(m->spk_b, M, "spk_embed_affine_layer.bias");
    W2(m->in_w, D, E, "encoder.embed.out.0.weight");
    W1(m->in_b, D, "encoder.embed.out.0.bias");
    W1(m->in_ln_w, D, "encoder.embed.out.1.weight");
    W1(m->in_ln_b, D, "encoder.embed.out.1.bias");
    for (int i = 0; i < hp->n_layers; i++) {
        struct flow_enc_layer *l = &m->layers[i];
        const char *p = "encoder.encoders";
        W1(l->ln_mha_w, D, "%s.%d.norm_mha.weight", p, i);
        W1(l->ln_mha_b, D, "%s.%d.norm_mha.bias", p, i);
        W2(l->wq, D, D, "%s.%d.self_attn.linear_q.weight", p, i);
        W1(l->bq, D, "%s.%d.self_attn.linear_q.bias", p, i);
        W2(l->wk, D, D, "%s.%d.self_attn.linear_k.weight", p, i);
        W1(l->bk, D, "%s.%d.self_attn.linear_k.bias", p, i);
        W2(l->wv, D, D, "%s.%d.self_attn.linear_v.weight", p, i);
        W1(l->bv, D, "%s.%d.self_attn.linear_v.bias", p, i);
        W2(l->wo, D, D, "%s.%d.self_attn.linear_out.weight", p, i);
        W1(l->bo, D, "%s.%d.self_attn.linear_out.bias", p, i);
        W2(l->wpos, D, D, "%s.%d.self_attn.linear_pos.weight", p, i);
        W2(l->pos_u, H, D / H, "%s.%d.self_attn.pos_bias_u", p, i);
        W2(l->pos_v, H, D / H, "%s.%d.self_attn.pos_bias_v", p, i);
        W1(l->ln_ff_w, D, "%s.%d.norm_ff.weight", p, i);
        W1(l->ln_ff_b, D, "%s.%d.norm_ff.bias", p, i);
        W2(l->w1, U, D, "%s.%d.feed_forward.w_1.weight", p, i);
        W1(l->b1, U, "%s.%d.feed_forward.w_1.bias", p, i);
        W2(l->w2, D, U, "%s.%d.feed_forward.w_2.weight", p, i);
        W1(l->b2, D, "%s.%d.feed_forward.w_2.bias", p, i);
    }
    W1(m->after_w, D, "encoder.after_norm.weight");
    W1(m->after_b, D, "encoder.after_norm.bias");
    W2(m->proj_w, M, D, "encoder_proj.weight");
    W1(m->proj_b, M, "encoder_proj.bias");
    for (int i = 0; i < hp->lr_layers; i++) {
        W3(m->lr_w[i], M, M, 3, "length_regulator.model.%d.weight", 3 * i);
        W1(m->lr_b[i], M, "length_regulator.model.%d.bias", 3 * i);
        W1(m->lr_gw[i], M, "length_regulator.model.%d.weight", 3 * i + 1);
        W1(m->lr_gb[i], M, "length_regulator.model.%d.bias", 3 * i + 1);
    }
    W3(m->lr_out_w, M, M, 1, "length_regulator.model.%d.weight", 3 * hp->lr_layers);
    W1(m->lr_out_b, M, "length_regulator.model.%d.bias", 3 * hp->lr_layers);
    const char *pe = "decoder.estimator.";
    W2(m->t1_w, te, hp->est_in, "%stime_mlp.linear_1.weight", pe);
    W1(m->t1_b, te, "%stime_mlp.linear_1.bias", pe);
    W2(m->t2_w, te, te, "%stime_mlp.linear_2.weight", pe);
    W1(m->t2_b, te, "%stime_mlp.linear_2.bias", pe);

    int n_levels = 4 + hp->n_mid;
    m->tb_store = calloc((size_t)(n_levels * (hp->n_tb ? hp->n_tb : 1)), sizeof *m->tb_store);
    if (!m->tb_store)
        return err_set(e, "flow: out of memory");
    struct flow_tb *tb = m->tb_store;
    char p[96];
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%sdown_blocks.%d.", pe, i);
        if (flow_load_level(&m->down[i], tb, f, p, i ? C : hp->est_in, hp, e))
            goto fail;
        tb += hp->n_tb;
        if (i == 0) {
            W3(m->down[i].conv_w, C, C, 3, "%sdown_blocks.0.2.conv.weight", pe);
            W1(m->down[i].conv_b, C, "%sdown_blocks.0.2.conv.bias", pe);
        } else {
            W3(m->down[i].conv_w, C, C, 3, "%sdown_blocks.1.2.weight", pe);
            W1(m->down[i].conv_b, C, "%sdown_blocks.1.2.bias", pe);
        }
    }
    for (int i = 0; i < hp->n_mid; i++) {
        snprintf(p, sizeof p, "%smid_blocks.%d.", pe, i);
        if (flow_load_level(&m->mid[i], tb, f, p, C, hp, e))
            goto fail;
        tb += hp->n_tb;
    }
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%sup_blocks.%d.", pe, i);
        if (flow_load_level(&m->up[i], tb, f, p, 2 * C, hp, e))
            goto fail;
        tb += hp->n_tb;
        if (i == 0) {
            W3(m->up[i].conv_w, C, C, 4, "%sup_blocks.0.2.conv.weight", pe);
            W1(m->up[i].conv_b, C, "%sup_blocks.0.2.conv.bias", pe);
        } else {
            W3(m->up[i].conv_w, C, C, 3, "%sup_blocks.1.2.weight", pe);
            W1(m->up[i].conv_b, C, "%sup_blocks.1.2.bias", pe);
        }
    }
    W3(m->fin_w, C, C, 3, "%sfinal_block.block.0.weight", pe);
    W1(m->fin_b, C, "%sfinal_block.block.0.bias", pe);
    W1(m->fin_gw, C, "%sfinal_block.block.1.weight", pe);
    W1(m->fin_gb, C, "%sfinal_block.block.1.bias", pe);
    W3(m->fp_w, M, C, 1, "%sfinal_proj.weight", pe);
    W1(m->fp_b, M, "%sfinal_proj.bias", pe);
    return 0;
fail:
    flow_free(m);
    return -1;
}

void flow_free(struct flow_model *m)
{
    free(m->tb_store);
    m->tb_store = NULL;
}

/* ---- state ---------------------------------------------------------------------------- */

int64_t flow_mel_len(const struct flow_hparams *hp, int64_t n)
{
    float a = (float)n / hp->frame_rate;
    a = a * (float)hp->sample_rate;
    a = a / (float)hp->hop;
    return (int64_t)a;
}

static size_t flow_max_sz(size_t a, size_t b)
{
    return a > b ? a : b;
}

int flow_state_init(struct flow_state *s, const struct flow_model *m, int64_t max_tokens,
                    struct pool *pool, struct err *e)
{
    const struct flow_hparams *hp = &m->hp;
    memset(s, 0, sizeof *s);
    if (max_tokens < 1 || max_tokens > (1 << 20))
        return err_set(e, "flow: max_tokens %lld out of range", (long long)max_tokens);
    int64_t n = max_tokens, T = flow_mel_len(hp, n) + 2, D = hp->d_model, M = hp->n_mel;
    int64_t C = hp->ch, I = (int64_t)hp->est_heads * hp->est_head_dim;
    int64_t dk = D / hp->n_heads, cmax = hp->est_in > 2 * C ? hp->est_in : 2 * C;
    int nt = pool_threads(pool);
    s->max_tokens = n;
    s->max_frames = T - 2;
#define A(ptr, count)                                    \
    do {                                                 \
        (ptr) = malloc(sizeof(float) * (size_t)(count)); \
        if (!(ptr))                                      \
            goto oom;                                    \
    } while (0)
    A(s->ex, n * D);
    A(s->ey, n * D);
    A(s->eq, n * D);
    A(s->ek, n * D);
    A(s->ev, n * D);
    A(s->ectx, n * D);
    A(s->eff, n * (hp->d_ff > D ? hp->d_ff : D));
    A(s->pos, (2 * n - 1) * D);
    A(s->pm, (2 * n - 1) * D);
    A(s->qu, n * dk);
    A(s->qv, n * dk);
    A(s->sc, n * n);
    A(s->bd, n * (2 * n - 1));
    A(s->h80, n * M);
    A(s->h80t, n * M);
    A(s->mu, M * T);
    A(s->cond, M * T);
    A(s->x, M * T);
    A(s->v, FLOW_B * M * T);
    A(s->a, FLOW_B * cmax * T);
    A(s->b, FLOW_B * cmax * T);
    A(s->c, FLOW_B * cmax * T);
    A(s->s0, FLOW_B * C * T);
    A(s->s1, FLOW_B * C * T);
    A(s->z, FLOW_B * T * C);
    A(s->zy, FLOW_B * T * C);
    A(s->zq, FLOW_B * T * I);
    A(s->zk, FLOW_B * T * I);
    A(s->zv, FLOW_B * T * I);
    A(s->zctx, FLOW_B * T * (I > C ? I : C));
    A(s->zff, FLOW_B * T * 4 * C);
    s->ids = malloc(sizeof(int32_t) * (size_t)n);
    if (!s->ids)
        goto oom;
    A(s->temb0, hp->est_in);
    A(s->temb, 4 * C);
    A(s->temb_m, 4 * C);
    A(s->rtemb, FLOW_B * 2 * C);
    /* conv scratch: the largest of the estimator's and the length regulator's convs over
     * every length a call may have (tile shapes make the size non-monotonic in T) */
    size_t sc = 0;
    struct conv_params ps[6] = {
        conv_params_make((int)cmax, (int)C, 3, 1, 1, 1, 1),
        conv_params_make((int)cmax, (int)C, 1, 1, 1, 0, 1),
        conv_params_make((int)C, (int)C, 3, 1, 1, 1, 1),
        conv_params_make((int)C, (int)C, 3, 2, 1, 1, 1),
        conv_params_make((int)M, (int)M, 3, 1, 1, 1, 1),
        conv_params_make((int)C, (int)M, 1, 1, 1, 0, 1),
    };
    struct conv_transpose_params tp = { (int)C, (int)C, 4, 2, 1, 1, 0 };
    for (int64_t t = 1; t <= T; t++) {
        for (int i = 0; i < 6; i++)
            sc = flow_max_sz(sc, conv_1d_scratch_floats(&ps[i], t, nt));
        sc = flow_max_sz(sc, conv_transpose_1d_scratch_floats(&tp, (t + 1) / 2, nt));
    }
    /* one conv scratch and one attention scratch per estimator half (struct flow_half) */
    s->scratch_floats = sc ? sc : 1;
    A(s->scratch, FLOW_B * s->scratch_floats);
    s->attn_scratch_bytes = flow_max_sz(attn_scratch_size(pool, hp->est_head_dim),
                                        attn_scratch_size(NULL, hp->est_head_dim));
    s->attn_scratch = malloc(FLOW_B * s->attn_scratch_bytes);
    if (!s->attn_scratch)
        goto oom;
#undef A
    s->rng[0] = 0x243F6A8885A308D3ull;
    s->rng[1] = 0x13198A2E03707344ull;
    return 0;
oom:
    flow_state_free(s);
    return err_set(e, "flow: out of memory for %lld tokens", (long long)max_tokens);
}

void flow_state_free(struct flow_state *s)
{
    float **bufs[] = { &s->ex,  &s->ey,    &s->eq,   &s->ek,     &s->ev,    &s->ectx,
                       &s->eff, &s->pos,   &s->pm,   &s->qu,     &s->qv,    &s->sc,
                       &s->bd,  &s->h80,   &s->h80t, &s->mu,     &s->cond,  &s->x,
                       &s->v,   &s->a,     &s->b,    &s->c,      &s->s0,    &s->s1,
                       &s->z,   &s->zy,    &s->zq,   &s->zk,     &s->zv,    &s->zctx,
                       &s->zff, &s->temb0, &s->temb, &s->temb_m, &s->rtemb, &s->scratch };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(*bufs[i]);
    free(s->attn_scratch);
    free(s->ids);
    memset(s, 0, sizeof *s);
}

/* ---- helpers ---------------------------------------------------------------------------- */

/* y[n][m] = x[n][k] · W[m][k]ᵀ (+ b) with W's rows in fixed panels split over the pool
 * (matmul_forward: the same sums whatever the thread count). Flow never runs OpenBLAS's own
 * threads: after a threaded call they spin for a while and take a core from the pool. */
static void flow_linear_split(struct pool *pool, float *y, const float *x, const float *w,
                              const float *b, int64_t n, int64_t m, int64_t k)
{
    struct tensor t;
    int64_t ne[2] = { k, m };
    tensor_init(&t, "flow.linear", DTYPE_F32, 2, ne, w);
    matmul_forward(pool, y, x, &t, b, n, NULL);
}

/* The same; without a pool (the estimator's halves) one single-threaded sgemm, which runs
 * faster than matmul_forward's panels on the 34-68-row products of a first block. */
static void flow_linear(struct pool *pool, float *y, const float *x, const float *w, const float *b,
                        int64_t n, int64_t m, int64_t k)
{
    if (pool_threads(pool) > 1) {
        flow_linear_split(pool, y, x, w, b, n, m, k);
        return;
    }
    matmul_f32(NULL, y, m, x, k, w, k, n, m, k, 1, 1.0f, 0.0f);
    if (b)
        vec_add_bias(y, y, b, n, m);
}

/* out [C][T] = x [T][C]ᵀ */
static void flow_transpose(float *out, const float *x, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            out[c * rows + r] = x[r * cols + c];
}

static float flow_gauss(uint64_t *st)
{
    uint64_t a = st[0], b = st[1];
    st[0] = b;
    a ^= a << 23;
    st[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    uint64_t r = st[1] + b;
    double u1 = ((double)(r >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)((r >> 3) & 0xff) / 256.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

/* ---- encoder (spec §7.3.2-7.3.4): h80 [n][M] ------------------------------------------ */

static void flow_encoder(const struct flow_model *m, struct flow_state *s, struct pool *pool,
                         const int32_t *tok, int64_t n)
{
    const struct flow_hparams *hp = &m->hp;
    int64_t D = hp->d_model, E = hp->embed, H = hp->n_heads, dk = D / H, np = 2 * n - 1;

    /* embedding → Linear → LayerNorm → ×√D */
    for (int64_t i = 0; i < n; i++)
        memcpy(s->ey + i * E, m->emb + (int64_t)tok[i] * E, sizeof(float) * (size_t)E);
    flow_linear_split(pool, s->ex, s->ey, m->in_w, m->in_b, n, D, E);
    norm_layer(pool, s->ex, s->ex, m->in_ln_w, m->in_ln_b, n, D, 1e-5f);
    vec_scale(s->ex, s->ex, sqrtf((float)D), n * D);

    /* relative positions: row q <-> distance r = n-1-q; sin/cos of r·ω_k in float32 */
    const float lg = -(float)(log(10000.0) / (double)D);
    for (int64_t q = 0; q < np; q++) {
        float r = (float)(n - 1 - q);
        for (int64_t k = 0; k < D / 2; k++) {
            float w = expf((float)(2 * k) * lg);
            float a = r * w;
            s->pos[q * D + 2 * k] = sinf(a);
            s->pos[q * D + 2 * k + 1] = cosf(a);
        }
    }
    struct attn_mask mask = { ATTN_MASK_BLOCK_CAUSAL, 0, hp->block, 0 };
    const float inv_sqrt = sqrtf((float)dk);
    for (int li = 0; li < hp->n_layers; li++) {
        const struct flow_enc_layer *l = &m->layers[li];
        norm_layer(pool, s->ey, s->ex, l->ln_mha_w, l->ln_mha_b, n, D, 1e-5f);
        flow_linear_split(pool, s->eq, s->ey, l->wq, l->bq, n, D, D);
        flow_linear_split(pool, s->ek, s->ey, l->wk, l->bk, n, D, D);
        flow_linear_split(pool, s->ev, s->ey, l->wv, l->bv, n, D, D);
        flow_linear_split(pool, s->pm, s->pos, l->wpos, NULL, np, D, D);
        for (int64_t h = 0; h < H; h++) {
            for (int64_t i = 0; i < n; i++)
                for (int64_t d = 0; d < dk; d++) {
                    float q = s->eq[i * D + h * dk + d];
                    s->qu[i * dk + d] = q + l->pos_u[h * dk + d];
                    s->qv[i * dk + d] = q + l->pos_v[h * dk + d];
                }
            /* AC = (q + u)·kᵀ [n][n]; BD_raw = (q + v)·pᵀ [n][2n-1] */
            matmul_f32(NULL, s->sc, n, s->qu, dk, s->ek + h * dk, D, n, n, dk, 1, 1.0f, 0.0f);
            matmul_f32(NULL, s->bd, np, s->qv, dk, s->pm + h * dk, D, n, np, dk, 1, 1.0f, 0.0f);
            /* relative shift: BD[i][j] = BD_raw[i][n-1-i+j]; scores = (AC + BD)/√dk */
            for (int64_t i = 0; i < n; i++) {
                float *row = s->sc + i * n;
                const float *bd = s->bd + i * np + (n - 1 - i);
                for (int64_t j = 0; j < n; j++)
                    row[j] = (row[j] + bd[j]) / inv_sqrt;
            }
            attn_softmax(pool, s->sc, s->sc, n, n, &mask);
            matmul_f32(NULL, s->ectx + h * dk, D, s->sc, n, s->ev + h * dk, D, n, dk, n, 0, 1.0f,
                       0.0f);
        }
        flow_linear_split(pool, s->ey, s->ectx, l->wo, l->bo, n, D, D);
        vec_add(s->ex, s->ex, s->ey, n * D);
        norm_layer(pool, s->ey, s->ex, l->ln_ff_w, l->ln_ff_b, n, D, 1e-5f);
        flow_linear_split(pool, s->eff, s->ey, l->w1, l->b1, n, hp->d_ff, D);
        act_silu(pool, s->eff, s->eff, n * hp->d_ff);
        flow_linear_split(pool, s->ey, s->eff, l->w2, l->b2, n, D, hp->d_ff);
        vec_add(s->ex, s->ex, s->ey, n * D);
    }
    norm_layer(pool, s->ey, s->ex, m->after_w, m->after_b, n, D, 1e-5f);
    flow_linear_split(pool, s->h80, s->ey, m->proj_w, m->proj_b, n, hp->n_mel, D);
}

/* ---- length regulator (spec §7.3.6): mu [M][T] ----------------------------------------- */

static int flow_regulate(const struct flow_model *m, struct flow_state *s, struct pool *pool,
                         int64_t n, int64_t T, struct err *e)
{
    const struct flow_hparams *hp = &m->hp;
    int M = hp->n_mel;
    flow_transpose(s->h80t, s->h80, n, M);
    resize_nearest(s->mu, s->h80t, M, n, T);
    struct conv_params p3 = conv_params_make(M, M, 3, 1, 1, 1, 1);
    struct conv_params p1 = conv_params_make(M, M, 1, 1, 1, 0, 1);
    for (int i = 0; i < hp->lr_layers; i++) {
        if (conv_1d(pool, s->cond, s->mu, m->lr_w[i], m->lr_b[i], &p3, T, s->scratch, e))
            return -1;
        norm_group(pool, s->cond, s->cond, m->lr_gw[i], m->lr_gb[i], M, T, 1, 1e-5f);
        act_mish(pool, s->mu, s->cond, (int64_t)M * T);
    }
    if (conv_1d(pool, s->cond, s->mu, m->lr_out_w, m->lr_out_b, &p1, T, s->scratch, e))
        return -1;
    memcpy(s->mu, s->cond, sizeof(float) * (size_t)M * (size_t)T);
    return 0;
}

/* ---- estimator (spec §7.3.9) ------------------------------------------------------------ */

/*
 * The two classifier-free-guidance passes of a step (conditional, unconditional) are one
 * batched pass whose halves are independent until the Euler update. A group of nb halves
 * runs the U-Net with every transformer-block GEMM covering the group's nb·T rows (the
 * weights are packed once for both halves) and the convolutions per half.
 * One thread, or four and more: one group of both halves, each op split over the pool.
 * Two (or three) threads: a group of one half per thread, single-threaded kernels inside, so
 * a step costs one join instead of hundreds of tiny parallel loops over 68-frame matrices.
 * No OpenBLAS threads ever run (flow_linear).
 */
struct flow_half {
    const struct flow_model *m;
    const struct flow_state *s; /* x, mu, cond: read only */
    struct pool *pool;          /* for the ops inside the group (NULL: groups in parallel) */
    int b0, nb;                 /* halves [b0, b0 + nb): 0 conditional, 1 unconditional */
    int64_t T;
    float *a, *bb, *c, *s0, *s1;               /* [nb][max(E_in, 2C)][T] / [nb][C][T] */
    float *z, *zy, *zq, *zk, *zv, *zctx, *zff; /* rows [nb·T][...] */
    float *rtemb;                              /* [C] a resnet's time term */
    float *scratch;                            /* conv scratch */
    void *attn_scratch;
    float *v; /* [nb][M][T] the group's output */
    int rc;
    struct err e;
};

/* out [nb][o][T] = ResnetBlock1D(z [nb][d][T]); uses h->c and h->rtemb. */
static int flow_resnet_fwd(struct flow_half *h, const struct flow_resnet *r, float *out,
                           const float *z, int64_t T)
{
    const struct flow_state *s = h->s;
    int d = r->d, o = r->o;
    int64_t te = 4 * (int64_t)h->m->hp.ch;
    struct conv_params p3 = conv_params_make(d, o, 3, 1, 1, 1, 1);
    struct conv_params p3o = conv_params_make(o, o, 3, 1, 1, 1, 1);
    struct conv_params p1 = conv_params_make(d, o, 1, 1, 1, 0, 1);
    struct pool *pool = h->pool;
    /* the time term Linear(Mish(temb)) [o], the same for every half */
    flow_linear(NULL, h->rtemb, s->temb_m, r->mlp_w, r->mlp_b, 1, o, te);
    for (int j = 0; j < h->nb; j++) {
        const float *zb = z + (int64_t)j * d * T;
        float *ob = out + (int64_t)j * o * T, *cb = h->c + (int64_t)j * o * T;
        /* h = Mish(GN8(Conv3(z))) + time term */
        if (conv_1d(pool, cb, zb, r->c1_w, r->c1_b, &p3, T, h->scratch, &h->e))
            return -1;
        norm_group(pool, cb, cb, r->g1_w, r->g1_b, o, T, 8, 1e-5f);
        act_mish(pool, cb, cb, (int64_t)o * T);
        vec_add_bias_ch(cb, cb, h->rtemb, o, T);
        /* h = Mish(GN8(Conv3(h))) */
        if (conv_1d(pool, ob, cb, r->c2_w, r->c2_b, &p3o, T, h->scratch, &h->e))
            return -1;
        norm_group(pool, ob, ob, r->g2_w, r->g2_b, o, T, 8, 1e-5f);
        act_mish(pool, ob, ob, (int64_t)o * T);
        /* + res_conv(z) */
        if (conv_1d(pool, cb, zb, r->res_w, r->res_b, &p1, T, h->scratch, &h->e))
            return -1;
        vec_add(ob, ob, cb, (int64_t)o * T);
    }
    return 0;
}

/* x [nb][C][T] ← the level's transformer blocks (time-major inside, spec §7.3.9 step 4). */
static void flow_tblocks(struct flow_half *h, const struct flow_tb *tbs, float *x, int64_t T)
{
    const struct flow_hparams *hp = &h->m->hp;
    int64_t C = hp->ch, I = (int64_t)hp->est_heads * hp->est_head_dim, R = h->nb * T;
    struct pool *pool = h->pool;
    if (hp->n_tb == 0)
        return;
    for (int j = 0; j < h->nb; j++)
        flow_transpose(h->z + j * T * C, x + j * C * T, C, T);
    struct attn_desc ad;
    memset(&ad, 0, sizeof ad);
    ad.n_head = hp->est_heads;
    ad.n_kv_head = hp->est_heads;
    ad.head_dim = hp->est_head_dim;
    ad.kv_type = DTYPE_F32;
    ad.scale = 1.0f / sqrtf((float)hp->est_head_dim);
    ad.bias = 1.0f; /* quirk Q3: the all-ones 0/1 mask is added to every score */
    for (int j = 0; j < hp->n_tb; j++) {
        const struct flow_tb *t = &tbs[j];
        norm_layer(pool, h->zy, h->z, t->n1_w, t->n1_b, R, C, 1e-5f);
        flow_linear(pool, h->zq, h->zy, t->wq, NULL, R, I, C);
        flow_linear(pool, h->zk, h->zy, t->wk, NULL, R, I, C);
        flow_linear(pool, h->zv, h->zy, t->wv, NULL, R, I, C);
        for (int hb = 0; hb < h->nb; hb++)
            attn_forward(pool, h->zctx + hb * T * I, h->zq + hb * T * I, h->zk + hb * T * I,
                         h->zv + hb * T * I, T, T, &ad, h->attn_scratch);
        flow_linear(pool, h->zy, h->zctx, t->wo, t->bo, R, C, I);
        vec_add(h->z, h->z, h->zy, R * C);
        norm_layer(pool, h->zy, h->z, t->n3_w, t->n3_b, R, C, 1e-5f);
        flow_linear(pool, h->zff, h->zy, t->ff1_w, t->ff1_b, R, 4 * C, C);
        act_gelu(pool, h->zff, h->zff, R * 4 * C);
        flow_linear(pool, h->zy, h->zff, t->ff2_w, t->ff2_b, R, C, 4 * C);
        vec_add(h->z, h->z, h->zy, R * C);
    }
    for (int j = 0; j < h->nb; j++)
        flow_transpose(x + j * C * T, h->z + j * T * C, T, C);
}

/* One level: out = tblocks(resnet(in)); in is [nb][d][T], out [nb][C][T]. */
static int flow_level_fwd(struct flow_half *h, const struct flow_level *l, float *out,
                          const float *in, int64_t T)
{
    if (flow_resnet_fwd(h, &l->res, out, in, T))
        return -1;
    flow_tblocks(h, l->tb, out, T);
    return 0;
}

/* out [nb][dst_c][T] rows [c0, c0 + C) = x [nb][C][T_src] cropped to T (channel concat). */
static void flow_put(float *out, int64_t dst_c, int64_t c0, const float *x, int64_t C,
                     int64_t t_src, int64_t T, int nb)
{
    for (int j = 0; j < nb; j++)
        for (int64_t c = 0; c < C; c++)
            memcpy(out + (j * dst_c + c0 + c) * T, x + (j * C + c) * t_src,
                   sizeof(float) * (size_t)T);
}

/* Every half of the group: out + j·o_sz = conv(x + j·x_sz). */
static int flow_conv_all(struct flow_half *h, float *out, int64_t o_sz, const float *x,
                         int64_t x_sz, const float *w, const float *b, const struct conv_params *p,
                         int64_t T)
{
    for (int j = 0; j < h->nb; j++)
        if (conv_1d(h->pool, out + j * o_sz, x + j * x_sz, w, b, p, T, h->scratch, &h->e))
            return -1;
    return 0;
}

/* h->v [nb][M][T] = Est(x, mu, t, spk, cond) for half 0, Est(x, 0, t, 0, 0) for half 1. */
static int flow_half_run(struct flow_half *h)
{
    const struct flow_model *m = h->m;
    const struct flow_state *s = h->s;
    const struct flow_hparams *hp = &m->hp;
    struct pool *pool = h->pool;
    int64_t T = h->T, M = hp->n_mel, C = hp->ch, Ein = hp->est_in, Th = (T + 1) / 2;

    /* input [x; mu; spk; cond] for the conditional pass, [x; 0; 0; 0] for the other */
    float *X = h->a;
    for (int j = 0; j < h->nb; j++) {
        float *xb = X + j * Ein * T;
        memcpy(xb, s->x, sizeof(float) * (size_t)(M * T));
        if (h->b0 + j == 0) {
            memcpy(xb + M * T, s->mu, sizeof(float) * (size_t)(M * T));
            for (int64_t c = 0; c < M; c++)
                for (int64_t i = 0; i < T; i++)
                    xb[(2 * M + c) * T + i] = m->spk_b[c];
            memcpy(xb + 3 * M * T, s->cond, sizeof(float) * (size_t)(M * T));
        } else {
            memset(xb + M * T, 0, sizeof(float) * (size_t)(3 * M * T));
        }
    }

    /* down 0: resnet + blocks at T, skip s0, Conv k3 s2 p1 → Th */
    struct conv_params pd = conv_params_make((int)C, (int)C, 3, 2, 1, 1, 1);
    struct conv_params p3 = conv_params_make((int)C, (int)C, 3, 1, 1, 1, 1);
    if (flow_level_fwd(h, &m->down[0], h->s0, X, T) ||
        flow_conv_all(h, h->bb, C * Th, h->s0, C * T, m->down[0].conv_w, m->down[0].conv_b, &pd, T))
        return -1;
    /* down 1: at Th, skip s1, Conv k3 p1 */
    if (flow_level_fwd(h, &m->down[1], h->s1, h->bb, Th) ||
        flow_conv_all(h, h->a, C * Th, h->s1, C * Th, m->down[1].conv_w, m->down[1].conv_b, &p3,
                      Th))
        return -1;
    /* mid blocks at Th, ping-ponging a ↔ b */
    float *cur = h->a, *nxt = h->bb;
    for (int i = 0; i < hp->n_mid; i++) {
        if (flow_level_fwd(h, &m->mid[i], nxt, cur, Th))
            return -1;
        float *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    /* up 0: [x; s1] → resnet + blocks → ConvTranspose k4 s2 p1 → 2·Th */
    flow_put(nxt, 2 * C, 0, cur, C, Th, Th, h->nb);
    flow_put(nxt, 2 * C, C, h->s1, C, Th, Th, h->nb);
    if (flow_level_fwd(h, &m->up[0], cur, nxt, Th))
        return -1;
    struct conv_transpose_params tp = { (int)C, (int)C, 4, 2, 1, 1, 0 };
    for (int j = 0; j < h->nb; j++)
        if (conv_transpose_1d(pool, nxt + j * C * 2 * Th, cur + j * C * Th, m->up[0].conv_w,
                              m->up[0].conv_b, &tp, Th, h->scratch, &h->e))
            return -1;
    /* up 1: [x[:, :T]; s0] → resnet + blocks → Conv k3 p1 */
    flow_put(cur, 2 * C, 0, nxt, C, 2 * Th, T, h->nb);
    flow_put(cur, 2 * C, C, h->s0, C, T, T, h->nb);
    if (flow_level_fwd(h, &m->up[1], nxt, cur, T) ||
        flow_conv_all(h, cur, C * T, nxt, C * T, m->up[1].conv_w, m->up[1].conv_b, &p3, T))
        return -1;
    /* final block: Mish(GN8(Conv k3)) → final_proj k1 */
    struct conv_params p1 = conv_params_make((int)C, (int)M, 1, 1, 1, 0, 1);
    if (flow_conv_all(h, nxt, C * T, cur, C * T, m->fin_w, m->fin_b, &p3, T))
        return -1;
    for (int j = 0; j < h->nb; j++) {
        norm_group(pool, nxt + j * C * T, nxt + j * C * T, m->fin_gw, m->fin_gb, (int)C, T, 8,
                   1e-5f);
        act_mish(pool, nxt + j * C * T, nxt + j * C * T, C * T);
    }
    return flow_conv_all(h, h->v, M * T, nxt, C * T, m->fp_w, m->fp_b, &p1, T);
}

static void flow_half_task(void *arg, int64_t begin, int64_t end)
{
    struct flow_half *groups = arg;
    for (int64_t g = begin; g < end; g++)
        groups[g].rc = flow_half_run(&groups[g]);
}

/* s->v [B][M][T]: both halves of the estimator at time t (see struct flow_half). */
static int flow_estimator(const struct flow_model *m, struct flow_state *s, struct pool *pool,
                          float t, int64_t T, struct err *e)
{
    const struct flow_hparams *hp = &m->hp;
    int64_t M = hp->n_mel, C = hp->ch, Ein = hp->est_in, te = 4 * C;
    int64_t I = (int64_t)hp->est_heads * hp->est_head_dim, Tm = s->max_frames + 2;
    int64_t cmax = Ein > 2 * C ? Ein : 2 * C, zc = I > C ? I : C;

    /* time embedding: [sin, cos](1000·t·f_i) → Linear → SiLU → Linear; Mish for the resnets */
    int64_t half = Ein / 2;
    const float lg = (float)(log(10000.0) / (double)(half - 1));
    for (int64_t i = 0; i < half; i++) {
        float f = expf((float)i * -lg);
        float a = (1000.0f * t) * f;
        s->temb0[i] = sinf(a);
        s->temb0[half + i] = cosf(a);
    }
    flow_linear(NULL, s->temb_m, s->temb0, m->t1_w, m->t1_b, 1, te, Ein);
    act_silu(NULL, s->temb_m, s->temb_m, te);
    flow_linear(NULL, s->temb, s->temb_m, m->t2_w, m->t2_b, 1, te, te);
    act_mish(NULL, s->temb_m, s->temb, te);

    /* two threads (or three: one idles): a group of one half per thread; otherwise one
     * group of both halves (struct flow_half) */
    int parallel = pool_threads(pool) > 1 && pool_threads(pool) <= FLOW_B + 1;
    int n_groups = parallel ? FLOW_B : 1;
    struct flow_half hs[FLOW_B];
    for (int b = 0; b < n_groups; b++) {
        struct flow_half *h = &hs[b];
        memset(h, 0, sizeof *h);
        h->m = m;
        h->s = s;
        h->pool = parallel ? NULL : pool;
        h->b0 = b;
        h->nb = FLOW_B / n_groups;
        h->T = T;
        h->a = s->a + b * cmax * Tm;
        h->bb = s->b + b * cmax * Tm;
        h->c = s->c + b * cmax * Tm;
        h->s0 = s->s0 + b * C * Tm;
        h->s1 = s->s1 + b * C * Tm;
        h->z = s->z + b * Tm * C;
        h->zy = s->zy + b * Tm * C;
        h->zq = s->zq + b * Tm * I;
        h->zk = s->zk + b * Tm * I;
        h->zv = s->zv + b * Tm * I;
        h->zctx = s->zctx + b * Tm * zc;
        h->zff = s->zff + b * Tm * 4 * C;
        h->rtemb = s->rtemb + b * 2 * C;
        h->scratch = s->scratch + (size_t)b * s->scratch_floats;
        h->attn_scratch = (char *)s->attn_scratch + (size_t)b * s->attn_scratch_bytes;
        h->v = s->v + b * M * T;
    }
    if (parallel)
        pool_for(pool, n_groups, 1, flow_half_task, hs);
    else
        flow_half_task(hs, 0, 1);
    for (int b = 0; b < n_groups; b++)
        if (hs[b].rc) {
            *e = hs[b].e;
            return -1;
        }
    return 0;
}

/* ---- inference ------------------------------------------------------------------------- */

/* torch.linspace(0, 1, n + 1) in float32 (the two-sided recurrence), then 1 - cos(τ·π/2). */
static void flow_time_grid(float *ts, int n)
{
    const float step = 1.0f / (float)n;
    const int half = (n + 1) / 2;
    for (int k = 0; k <= n; k++) {
        float tau = k < half ? (float)k * step : 1.0f - step * (float)(n - k);
        ts[k] = 1.0f - cosf(tau * 0.5f * (float)M_PI);
    }
}

int flow_inference(const struct flow_model *m, struct flow_state *s, struct pool *pool, float *mel,
                   int64_t *n_out, const int32_t *tokens, int64_t n_new, const int32_t *prompt,
                   int64_t n_prompt, const float *prompt_feat, int64_t p_feat, const float *noise,
                   float *mu_out, float *h80_out, struct err *e)
{
    const struct flow_hparams *hp = &m->hp;
    int64_t n = n_prompt + n_new, M = hp->n_mel;
    if (n_new < 1 || n_prompt < 0 || n > s->max_tokens)
        return err_set(e, "flow: %lld prompt + %lld new tokens, this state holds 1..%lld",
                       (long long)n_prompt, (long long)n_new, (long long)s->max_tokens);
    int64_t T = flow_mel_len(hp, n);
    if (p_feat < 0 || p_feat >= T)
        return err_set(e, "flow: prompt mel of %lld frames does not fit a call of %lld frames",
                       (long long)p_feat, (long long)T);
    /* token ids: prompt then new; never index past the embedding (errata E8) */
    for (int64_t i = 0; i < n; i++) {
        int32_t id = i < n_prompt ? prompt[i] : tokens[i - n_prompt];
        if (id < 0 || id >= hp->vocab)
            return err_set(e, "flow: speech token %d at position %lld is outside 0..%d", id,
                           (long long)i, hp->vocab - 1);
        s->ids[i] = id;
    }
    flow_encoder(m, s, pool, s->ids, n);
    if (h80_out)
        memcpy(h80_out, s->h80, sizeof(float) * (size_t)(n * M));
    if (flow_regulate(m, s, pool, n, T, e))
        return -1;
    if (mu_out)
        memcpy(mu_out, s->mu, sizeof(float) * (size_t)(M * T));

    /* condition: the prompt mel in the first p_feat frames, zeros after */
    for (int64_t c = 0; c < M; c++) {
        float *row = s->cond + c * T;
        if (p_feat)
            memcpy(row, prompt_feat + c * p_feat, sizeof(float) * (size_t)p_feat);
        memset(row + p_feat, 0, sizeof(float) * (size_t)(T - p_feat));
    }
    /* x0 */
    if (noise)
        memcpy(s->x, noise, sizeof(float) * (size_t)(M * T));
    else
        for (int64_t i = 0; i < M * T; i++)
            s->x[i] = flow_gauss(s->rng);

    /* Euler with the reference's recurrence and classifier-free guidance */
    float ts[1001];
    flow_time_grid(ts, hp->n_steps);
    float t = ts[0], dt = ts[1] - ts[0];
    const float wc = 1.0f + hp->cfg_rate, wu = hp->cfg_rate;
    for (int step = 1; step <= hp->n_steps; step++) {
        if (flow_estimator(m, s, pool, t, T, e))
            return -1;
        const float *vc = s->v, *vu = s->v + M * T;
        for (int64_t i = 0; i < M * T; i++) {
            float v = wc * vc[i] - wu * vu[i];
            s->x[i] = s->x[i] + dt * v;
        }
        t = t + dt;
        if (step < hp->n_steps)
            dt = ts[step + 1] - t;
    }
    for (int64_t c = 0; c < M; c++)
        memcpy(mel + c * (T - p_feat), s->x + c * T + p_feat, sizeof(float) * (size_t)(T - p_feat));
    *n_out = T - p_feat;
    return 0;
}

double flow_flops(const struct flow_model *m, int64_t n)
{
    const struct flow_hparams *hp = &m->hp;
    double T = (double)flow_mel_len(hp, n), Th = (double)(((int64_t)T + 1) / 2), N = (double)n;
    double D = hp->d_model, C = hp->ch, I = (double)hp->est_heads * hp->est_head_dim;
    /* encoder: q/k/v/out and the positional projection (2n-1 rows), AC, BD and P·V, FFN */
    double enc =
        2.0 * N * D * hp->embed + hp->n_layers * (2.0 * N * D * D * 4 + 2.0 * (2 * N) * D * D +
                                                  2.0 * N * N * D * 3 + 4.0 * N * D * hp->d_ff);
    double tb_row = 2.0 * C * I * 4 + 2.0 * 8 * C * C; /* q, k, v, out; FFN 4C */
    double tb_key = 4.0 * I;                           /* q·k and p·v per (row, key) */
    /* levels: down0 at T (input 320), down1 + mids at Th (input C), up0 at Th and up1 at T
     * (input 2C); each: resnet (conv3 d→C, conv3 C→C, conv1 d→C), the blocks, a conv3 */
    double lv[4][3] = {
        { T, hp->est_in, 1 }, { Th, C, 1 + hp->n_mid }, { Th, 2 * C, 1 }, { T, 2 * C, 1 }
    };
    double est = 2.0 * T * (C * C * 3 + C * hp->n_mel); /* final block and projection */
    for (int i = 0; i < 4; i++) {
        double L = lv[i][0], d = lv[i][1], cnt = lv[i][2];
        double res = 2.0 * L * (C * d * 3 + C * C * 3 + C * d);
        est += cnt * (res + hp->n_tb * (L * tb_row + L * L * tb_key)) + 2.0 * L * C * C * 3;
    }
    /* the estimator runs twice (conditional and unconditional) per step */
    return enc + 2.0 * hp->n_steps * est;
}
