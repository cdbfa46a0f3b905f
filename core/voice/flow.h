/*
 * flow — the flow-matching speech decoder of GLM-4-Voice (spec §7.3): speech tokens (+ a prompt
 * of earlier tokens and their mel) → mel frames (80 × T).
 *
 * Shape letters: n tokens (prompt + new), D encoder width (512), U its FFN width (2048),
 * M = 80 mel bins, T mel frames of the whole call (spec §7.3.5), Th = ceil(T/2), C estimator
 * channels (256), B = 2 the estimator batch (conditional and unconditional pass of one Euler
 * step run together, spec §7.3.8). Encoder activations are time-major [n][D]; the length
 * regulator and the estimator's convolutions are channel-major [C][T]; the estimator's
 * transformer blocks are time-major [B·T][C].
 *
 * Weights: the decoder GGUF of deploy/convert_decoder.py, tensors "flow.<checkpoint name>"
 * (f32), hyperparameters "flow.*". Evaluation mode (errata E1): no dropout anywhere.
 * Randomness: the ODE's initial noise x0 (80 × T) is drawn from a fast Gaussian generator, or
 * taken from the caller (tests, `parley speak --noise`).
 * The kernels are called directly (matmul_f32, conv, norm, act, attn, resize): the backend
 * table does not yet have the convolution and relative-position attention this needs.
 */
#ifndef PARLEY_FLOW_H
#define PARLEY_FLOW_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"
#include "runtime/gguf.h"
#include "runtime/pool.h"

#define FLOW_MAX_LAYERS 32
#define FLOW_MAX_MID    32
#define FLOW_MAX_LR     8

struct flow_hparams {
    int vocab;            /* 16384 flow.vocab_size */
    int embed;            /* 512   flow.input_size (token embedding width) */
    int n_mel;            /* 80    flow.output_size */
    int spk_dim;          /* 192   flow.spk_embed_dim */
    float frame_rate;     /* 12.5 flow.input_frame_rate */
    int sample_rate, hop; /* 22050, 256: T = int(n / 12.5 * 22050 / 256) in float32 */
    int d_model, n_heads, d_ff, n_layers, block; /* conformer: 512, 8, 2048, 6, 10 */
    int lr_layers;                               /* 4 length-regulator conv/GN/Mish layers */
    float cfg_rate;                              /* 0.7 */
    int n_steps;                                 /* 10 Euler steps */
    int est_in, ch, n_tb, n_mid, est_heads, est_head_dim; /* 320, 256, 4, 12, 8, 64 */
};

struct flow_enc_layer {
    const float *ln_mha_w, *ln_mha_b;         /* norm_mha [D] */
    const float *wq, *bq, *wk, *bk, *wv, *bv; /* self_attn.linear_{q,k,v} [D][D], [D] */
    const float *wo, *bo;                     /* self_attn.linear_out [D][D], [D] */
    const float *wpos;                        /* self_attn.linear_pos [D][D] (no bias) */
    const float *pos_u, *pos_v;               /* self_attn.pos_bias_{u,v} [H][D/H] */
    const float *ln_ff_w, *ln_ff_b;           /* norm_ff [D] */
    const float *w1, *b1, *w2, *b2;           /* feed_forward.w_1 [U][D], w_2 [D][U] */
};

/* ResnetBlock1D(d → o) */
struct flow_resnet {
    int d, o;
    const float *mlp_w, *mlp_b;             /* mlp.1 [o][4C], [o] */
    const float *c1_w, *c1_b, *g1_w, *g1_b; /* block1.block.{0,1}: conv [o][d][3], GN8 [o] */
    const float *c2_w, *c2_b, *g2_w, *g2_b; /* block2.block.{0,1} */
    const float *res_w, *res_b;             /* res_conv [o][d][1], [o] */
};

/* transformer block (diffusers BasicTransformerBlock as Matcha uses it) */
struct flow_tb {
    const float *n1_w, *n1_b;   /* norm1 [C] */
    const float *wq, *wk, *wv;  /* attn1.to_{q,k,v} [I][C], I = heads·head_dim, no bias */
    const float *wo, *bo;       /* attn1.to_out.0 [C][I], [C] */
    const float *n3_w, *n3_b;   /* norm3 [C] */
    const float *ff1_w, *ff1_b; /* ff.net.0.proj [4C][C], [4C] */
    const float *ff2_w, *ff2_b; /* ff.net.2 [C][4C], [C] */
};

/* one U-Net level: resnet, n_tb transformer blocks, and the level's trailing conv */
struct flow_level {
    struct flow_resnet res;
    struct flow_tb *tb;           /* [n_tb] */
    const float *conv_w, *conv_b; /* down: Conv k3 (s2 for level 0); up: ConvT k4 s2 / Conv k3 */
};

struct flow_model {
    struct flow_hparams hp;
    const float *emb;               /* input_embedding [vocab][E] */
    const float *spk_b;             /* spk_embed_affine_layer.bias [M]: the zero x-vector's
                                       speaker vector (spec §7.3.1) */
    const float *in_w, *in_b;       /* encoder.embed.out.0 [D][E], [D] */
    const float *in_ln_w, *in_ln_b; /* encoder.embed.out.1 [D] */
    struct flow_enc_layer layers[FLOW_MAX_LAYERS];
    const float *after_w, *after_b;                       /* encoder.after_norm [D] */
    const float *proj_w, *proj_b;                         /* encoder_proj [M][D], [M] */
    const float *lr_w[FLOW_MAX_LR], *lr_b[FLOW_MAX_LR];   /* length_regulator.model.{3i} */
    const float *lr_gw[FLOW_MAX_LR], *lr_gb[FLOW_MAX_LR]; /* length_regulator.model.{3i+1} */
    const float *lr_out_w, *lr_out_b;       /* length_regulator.model.{3L} [M][M][1] */
    const float *t1_w, *t1_b, *t2_w, *t2_b; /* decoder.estimator.time_mlp.linear_{1,2} */
    struct flow_level down[2], up[2], mid[FLOW_MAX_MID];
    const float *fin_w, *fin_b, *fin_gw, *fin_gb; /* final_block.block.{0,1} */
    const float *fp_w, *fp_b;                     /* final_proj [M][C][1], [M] */
    struct flow_tb *tb_store;                     /* all transformer blocks (owned) */
};

/* Buffers for calls of up to max_tokens tokens (prompt + new), allocated once. */
struct flow_state {
    int64_t max_tokens, max_frames;
    float *ex, *ey, *eq, *ek, *ev, *ectx, *eff; /* encoder rows [n][D] / [n][U] */
    float *pos, *pm;                            /* [2n-1][D] */
    float *qu, *qv, *sc, *bd;                   /* [n][dk], [n][dk], [n][n], [n][2n-1] */
    float *h80, *h80t;                          /* [n][M], [M][n] */
    float *mu, *cond, *x, *v;                   /* [M][T] */
    float *a, *b, *c, *s0, *s1; /* estimator, a region per half: [B][max(E_in, 2C)][T] */
    float *z, *zy, *zq, *zk, *zv, *zctx, *zff; /* transformer rows [B·T][...] */
    float *temb0, *temb, *temb_m, *rtemb;      /* time embedding; rtemb [B][2C] */
    float *scratch;                            /* conv scratch [B][scratch_floats] */
    void *attn_scratch;                        /* [B][attn_scratch_bytes] */
    size_t attn_scratch_bytes;
    int32_t *ids; /* [n] prompt + new token ids */
    size_t scratch_floats;
    uint64_t rng[2];
};

int flow_load(struct flow_model *m, const struct gguf_file *f, struct err *e);

/* A weight by full name ("flow.<checkpoint name>") and PyTorch shape; NULL + message when
 * unavailable. flow_load_from builds a model from such a function (benchmarks build random
 * real-size weights this way); the pointers must outlive the model. */
typedef const float *flow_tensor_fn(void *ctx, const char *name, int n_dims, const int64_t *shape,
                                    struct err *e);
int flow_load_from(struct flow_model *m, const struct flow_hparams *hp, flow_tensor_fn *fn,
                   void *ctx, struct err *e);
void flow_free(struct flow_model *m);

/* pool: the pool the calls will use (sizes per-thread scratch). Two threads run the two
 * classifier-free-guidance halves of each estimator pass side by side; one thread (or four
 * and more) runs them as one batch. The mels agree to a few 1e-6, not bit for bit. */
int flow_state_init(struct flow_state *s, const struct flow_model *m, int64_t max_tokens,
                    struct pool *pool, struct err *e);
void flow_state_free(struct flow_state *s);

/* Mel frames for n tokens: int(((float)n / rate) * sample_rate / hop), float32 (spec §7.3.5). */
int64_t flow_mel_len(const struct flow_hparams *hp, int64_t n);

/*
 * flow.inference (spec §7.3): mel [M][T - p_feat] = the new frames for tokens [n_new] after
 * prompt tokens [n_prompt] whose mel prompt_feat is [M][p_feat] (channel-major; p_feat may
 * differ from flow_mel_len(n_prompt), as in the reference's quirk Q4). noise: NULL (draw) or
 * [M][T] with T = flow_mel_len(n_prompt + n_new). *n_out receives T - p_feat. mu_out, h80_out:
 * NULL or [M][T] / [n][M] for tests. Returns -1 for a bad token id, too many tokens or a
 * prompt mel longer than the call.
 */
int flow_inference(const struct flow_model *m, struct flow_state *s, struct pool *pool, float *mel,
                   int64_t *n_out, const int32_t *tokens, int64_t n_new, const int32_t *prompt,
                   int64_t n_prompt, const float *prompt_feat, int64_t p_feat, const float *noise,
                   float *mu_out, float *h80_out, struct err *e);

/* Multiply-adds ×2 of one call with n tokens (for benchmarks). */
double flow_flops(const struct flow_model *m, int64_t n);

#endif
