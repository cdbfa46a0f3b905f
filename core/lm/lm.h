/*
 * lm — the GLM-4-Voice-9B language model (spec §4): a GLM-4 / ChatGLM decoder.
 *
 * Shape letters for this module: D = hidden size (n_embd), H query heads, G KV heads,
 * Dh head dimension, R = rotary dims (first R of each head), F = FFN width, V = vocabulary
 * rows (padded), QKV = H·Dh + 2·G·Dh (the fused projection's width), N rows in one forward
 * call (prefill tokens of one sequence, or one token per sequence in a batched decode step).
 *
 * One forward function serves prefill, single-token decode and batched decode: the caller
 * hands it S sequences, each with its own KV cache and some new tokens. The rows of all
 * sequences go through every linear layer together (one GEMM for a prefill block, one pass
 * over each weight matrix for the rows of a decode step); attention runs per sequence over
 * its own cache. Only the last row of each sequence produces logits (the reference's
 * return_last_logit).
 *
 * Decode steps (every sequence has one new token) compute each row's linear layers in an
 * order that does not depend on the other rows, so a sequence's logits are bit-identical
 * whether it is decoded alone or batched with others: bf16 weights (with round_bf16) through
 * the bf16 kernel over weights the backend packed at load (gemm_bf16_packed: one order for
 * decode and prefill alike; where the CPU lacks AVX-512 BF16, gemm_bf16_rounded's fixed form),
 * q8_0 weights through gemm_q8 (one order too), other weights through the GEMV in groups of
 * at most GEMV_MAX_ROWS rows; their prefill blocks use the GEMM, which adds in another order
 * (within f32 noise).
 *
 * Numerics: f32 activations. With `round_bf16` (the default for bf16 weights: the reference
 * runs in bf16) the RMSNorm outputs are rounded to bf16 and the RoPE table is built in bf16
 * as the reference does, and with bf16 weights the input of every linear layer is rounded to
 * bf16 too (products exact in f32, f32 sums); otherwise activations stay f32.
 *
 * Ownership: lm_load maps the file and prepares weights through the backend, which must
 * outlive the model. A cache belongs to one conversation; a runner holds the per-call
 * scratch of one worker thread (one backend, one thread at a time).
 */
#ifndef PARLEY_LM_H
#define PARLEY_LM_H

#include <stdint.h>

#include "backend/backend.h"
#include "runtime/err.h"
#include "runtime/gguf.h"
#include "runtime/tensor.h"

#define LM_MAX_STOP 8

/* Everything the forward pass and the chat loop need, all from the file's metadata
 * (glm4.* keys, see README "Language model"). */
struct lm_hparams {
    int n_layer;     /* num_layers (40) */
    int n_embd;      /* D: hidden_size (4096) */
    int n_ff;        /* F: ffn_hidden_size (13696) */
    int n_head;      /* H: num_attention_heads (32) */
    int n_kv_head;   /* G: multi_query_group_num (2) */
    int head_dim;    /* Dh: kv_channels (128) */
    int rot_dim;     /* R: rotary dims per head (Dh / 2 = 64) */
    int64_t n_vocab; /* V: padded_vocab_size (168960) */
    int64_t n_ctx;   /* seq_length: the context limit */
    float eps;       /* layernorm_epsilon */
    float rope_base; /* 10000 · rope_ratio */
    /* token ids */
    int32_t tok_eot, tok_gmask, tok_sop, tok_system, tok_user, tok_assistant, tok_observation;
    int32_t tok_boa, tok_eoa;      /* <|begin_of_audio|>, <|end_of_audio|> */
    int32_t audio_offset, n_audio; /* <|audio_0|> and how many audio tokens exist */
    int32_t n_stop;
    int32_t stop[LM_MAX_STOP]; /* eos_token_id list */
};

struct lm_layer {
    struct tensor attn_norm; /* transformer.encoder.layers.*.input_layernorm.weight [D] f32 */
    struct tensor qkv;       /* ...self_attention.query_key_value.weight [QKV, D] */
    struct tensor qkv_bias;  /* ...self_attention.query_key_value.bias [QKV] f32 */
    struct tensor dense;     /* ...self_attention.dense.weight [D, H·Dh] */
    struct tensor ffn_norm;  /* ...post_attention_layernorm.weight [D] f32 */
    struct tensor up;        /* ...mlp.dense_h_to_4h.weight [2F, D]: gate rows, then up rows */
    struct tensor down;      /* ...mlp.dense_4h_to_h.weight [D, F] */
};

struct lm_model {
    struct gguf_file file;
    struct lm_hparams hp;
    struct backend *be;        /* not owned */
    const struct tensor *embd; /* transformer.embedding.word_embeddings.weight [V, D],
                                  read on the host (a row per token) */
    struct tensor final_norm;  /* transformer.encoder.final_layernorm.weight [D] f32 */
    struct tensor output;      /* transformer.output_layer.weight [V, D] */
    struct lm_layer *layers;   /* [n_layer] */
    struct rope_table rope;    /* positions [0, n_ctx) */
    enum dtype wtype;          /* type of the layer matrices (for messages and benches) */
    int round_bf16;
    void *owned;              /* lm_init_random: the weights' memory */
    struct tensor embd_owned; /* lm_init_random: what embd points to */
};

struct lm_options {
    int round_bf16; /* -1: on for bf16 weights (the default), 0 off, 1 on */
};

/* Loads and validates a model file (every shape against the metadata). -1 with e set on any
 * problem, naming the file and the key or tensor; lm_free is then harmless. opt may be NULL. */
int lm_load(struct lm_model *m, const char *path, struct backend *be, const struct lm_options *opt,
            struct err *e);
void lm_free(struct lm_model *m);

/* A model with hyperparameters hp and random weights of type wtype (matrices; vectors f32)
 * in memory it owns, for benchmarks: the real layer shapes without a multi-gigabyte file.
 * Values are a repeated random pattern (speed does not depend on them). */
int lm_init_random(struct lm_model *m, const struct lm_hparams *hp, enum dtype wtype,
                   struct backend *be, uint64_t seed, struct err *e);

/* 1 when id ends a turn (glm4.token.stop: <|endoftext|>, <|user|>, <|observation|>). The
 * stop token itself is streamed before generation ends (the demo relies on seeing <|user|>). */
int lm_is_stop(const struct lm_hparams *hp, int32_t id);

/* Bytes of the weights one decode step reads (the layer matrices and the output layer). */
uint64_t lm_weight_bytes(const struct lm_model *m);

/* ---- KV cache: one per conversation ---------------------------------------------------- */

struct lm_cache {
    enum dtype type; /* DTYPE_F32, DTYPE_F16 or DTYPE_BF16 */
    int64_t n_ctx;   /* capacity in positions (<= hp.n_ctx) */
    int64_t n_pos;   /* positions filled: the next token's position */
    int n_layer;
    int64_t layer_elems; /* n_ctx · G · Dh */
    void *k, *v;         /* backend memory [n_layer][n_ctx][G][Dh], K stored after RoPE */
    struct backend *be;
};

/* n_ctx 0 means the model's context limit. */
int lm_cache_init(struct lm_cache *c, const struct lm_model *m, int64_t n_ctx, enum dtype type,
                  struct err *e);
void lm_cache_free(struct lm_cache *c);
/* Forgets positions >= n_pos (a cancelled turn); n_pos <= c->n_pos. */
void lm_cache_truncate(struct lm_cache *c, int64_t n_pos);

/* ---- runner: the scratch of forward calls ---------------------------------------------- */

struct lm_runner {
    const struct lm_model *m;
    int64_t max_rows; /* N per forward call */
    int max_seqs;     /* S per forward call */
    /* backend memory */
    float *x;      /* [N][D] residual stream */
    float *xn;     /* [N][D] normed input of a block */
    float *qkv;    /* [N][QKV] */
    float *att;    /* [N][H·Dh] attention context */
    float *ffu;    /* [N][2F] gate | up */
    float *ffh;    /* [N][F] SwiGLU output */
    float *tmp;    /* [N][D] a block's output before the residual add */
    float *last;   /* [S][D] last rows, final-normed */
    float *logits; /* [S][V] */
    /* host memory */
    float *embd_host;  /* [N][D] embedding rows before upload */
    float *kv_host;    /* [N][2·G·Dh] K|V rows downloaded for the cache store */
    uint16_t *kv_conv; /* [N][G·Dh] converted row for f16/bf16 caches */
    int64_t *pos;      /* [N] */
};

/* max_rows >= max_seqs >= 1. */
int lm_runner_init(struct lm_runner *r, const struct lm_model *m, int64_t max_rows, int max_seqs,
                   struct err *e);
void lm_runner_free(struct lm_runner *r);

/*
 * Runs n_seq sequences forward: sequence s appends n_tok[s] >= 1 tokens ids[off_s ..] (the
 * ids of all sequences concatenated, sum <= max_rows, n_seq <= max_seqs) to caches[s] and
 * writes the logits of its last new token to logits[s][V] (host memory; NULL: none).
 * A cache may appear only once. Refuses (e set, no cache changed) an id outside [0, V) and
 * a sequence that would pass its cache's capacity.
 */
int lm_forward(struct lm_runner *r, struct lm_cache *const *caches, const int32_t *ids,
               const int64_t *n_tok, int n_seq, float *logits, struct err *e);

/* Prefill of any length for one sequence, in blocks of max_rows; logits of the last token. */
int lm_prefill(struct lm_runner *r, struct lm_cache *c, const int32_t *ids, int64_t n,
               float *logits, struct err *e);

#endif
