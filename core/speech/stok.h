/*
 * stok — the GLM-4-Voice speech tokenizer (WhisperVQEncoder, spec §2.3 and §3): 16 kHz audio
 * in, speech tokens (12.5 per second, ids 0..codebook−1) out.
 *
 * Shape letters: D d_model, H heads, Dh = D/H, F ffn width, M mel bins, T encoder frames of a
 * window (50 per second), C codebook rows, B attention block (200 frames = 4 s).
 *
 * Pipeline per 30 s window of 16 kHz audio: log-mel (mel.h) → causal conv stem → + position
 * table → n_layer pre-LN layers with block-causal + padding attention → average pool by 4 →
 * nearest codebook row (squared L2) → tokens of the valid part, windows concatenated.
 *
 * Everything runs one attention block at a time (its 2·B mel frames, B encoder frames, B/4
 * tokens) against a per-layer K/V cache of the window, in stream and whole-file mode alike:
 * block-causal attention makes a block's outputs independent of later audio, and running
 * the same shapes in both modes makes their tokens bit-identical.
 *
 * The one thing later audio can change is the log-mel floor max(L) − 8 of §2.4 step 6 (the
 * max over the whole 30 s window; spec §3.5). A stream encodes each block when its audio is
 * complete with the running max; when its window closes (30 s of audio, or finish) the final
 * max is known, and every block whose features the final floor changes is re-encoded, with
 * all later blocks of the window. Tokens therefore come in two tiers:
 *   n_final   tokens of closed windows: never change, equal to whole-file tokenization;
 *   n_tokens  also the tokens of complete blocks of the open window: they change only if a
 *             louder frame arrives later in the same window and lifts the floor above quiet
 *             frames already encoded (in practice leading or trailing near-silence).
 * After stok_stream_finish, n_final = n_tokens and the tokens equal stok_tokenize's.
 *
 * The reference batches all windows of one utterance and pads each to the longest (30 s);
 * the last, shorter window then sees zeros instead of its own right-edge reflection (spec §2.3,
 * errata E3) and its max covers a few frames past its own padding. stok reproduces that by
 * computing the last window's mel over at least 1280 zero samples past its end whenever the
 * reference would have batched it with a longer window.
 *
 * Threads: a stream uses the pool given at init; one stream per thread at a time. A model is
 * read-only after load and shared by any number of streams.
 */
#ifndef PARLEY_STOK_H
#define PARLEY_STOK_H

#include <stdint.h>

#include "runtime/err.h"
#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "runtime/tensor.h"
#include "speech/mel.h"
#include "speech/resample.h"

#define STOK_ARCH "whisper_vq"

struct stok_hparams {
    int n_mels;      /* whisper_vq.num_mel_bins (128) */
    int d_model;     /* whisper_vq.d_model (1280) */
    int n_head;      /* whisper_vq.encoder_attention_heads (20) */
    int d_ffn;       /* whisper_vq.encoder_ffn_dim (5120) */
    int n_layer;     /* whisper_vq.quantize_position: layers run before the quantizer (16) */
    int n_ctx;       /* whisper_vq.max_source_positions (1500) */
    int block;       /* whisper_vq.quantize_causal_block_size (200) */
    int pool;        /* whisper_vq.pooling_kernel_size (4) */
    int n_codes;     /* whisper_vq.quantize_vocab_size (16384) */
    float ln_eps;    /* whisper_vq.layer_norm_eps (1e-5) */
    int sample_rate; /* whisper_vq.sampling_rate (16000) */
    int n_fft;       /* whisper_vq.n_fft (400) */
    int hop;         /* whisper_vq.hop_length (160) */
    int window;      /* whisper_vq.chunk_length (30) s, as samples: 480000 */
};

struct stok_layer {
    const float *ln1_w, *ln1_b; /* layers.i.self_attn_layer_norm.{weight,bias} [D] */
    const struct tensor *wq;    /* layers.i.self_attn.q_proj.weight [D][D] */
    const float *bq;            /* layers.i.self_attn.q_proj.bias [D] */
    const struct tensor *wk;    /* layers.i.self_attn.k_proj.weight [D][D] (no bias) */
    const struct tensor *wv;    /* layers.i.self_attn.v_proj.weight [D][D] */
    const float *bv;            /* layers.i.self_attn.v_proj.bias [D] */
    const struct tensor *wo;    /* layers.i.self_attn.out_proj.weight [D][D] */
    const float *bo;            /* layers.i.self_attn.out_proj.bias [D] */
    const float *ln2_w, *ln2_b; /* layers.i.final_layer_norm.{weight,bias} [D] */
    const struct tensor *fc1;   /* layers.i.fc1.weight [F][D] */
    const float *fc1_b;         /* layers.i.fc1.bias [F] */
    const struct tensor *fc2;   /* layers.i.fc2.weight [D][F] */
    const float *fc2_b;         /* layers.i.fc2.bias [D] */
};

struct stok_model {
    struct stok_hparams hp;
    struct gguf_file file;
    const float *conv1_w, *conv1_b; /* conv1.{weight,bias} [D][M][3], [D] (f32) */
    const float *conv2_w, *conv2_b; /* conv2.{weight,bias} [D][D][3], [D] (f32) */
    const float *pos;               /* embed_positions.weight [n_ctx][D] (f32) */
    struct stok_layer *layers;      /* [n_layer] */
    const float *codebook;          /* codebook.weight [C][D] (f32) */
    float *code_norms;              /* [C] ||codebook row||², computed at load */
    struct mel mel;                 /* the front-end of this model's sizes */
};

/* Maps and checks a tokenizer GGUF file. On failure returns -1 (message names the file and
 * the key or tensor); stok_free is safe after a failure. */
int stok_load(struct stok_model *m, const char *path, struct err *e);
void stok_free(struct stok_model *m);

/* For a model whose hp and weight pointers the caller filled itself (benchmarks, tests: no
 * file, file.map NULL; layers owned by the caller): builds the codebook norms and the mel
 * front-end. stok_load calls it. stok_free then frees only what this made. */
int stok_prepare(struct stok_model *m, struct err *e);

/* Samples of one token at the model rate (1280). */
int stok_samples_per_token(const struct stok_model *m);

/* The padding of window number win_index holding len samples: returns L_pad (len rounded up
 * to whole tokens: what the encoder runs on) and sets *l_ext, the signal length the mel is
 * computed over (L_pad, or more when the reference batches this window with a full one). */
int64_t stok_window_padding(const struct stok_model *m, int64_t len, int win_index, int64_t *l_ext);

struct stok_stream {
    const struct stok_model *m;
    struct pool *pool;
    int eager; /* 1: encode blocks as they complete (stream); 0: at window close */
    int in_rate;
    struct resample rs;
    struct resample_stream rss;
    float *rbuf;             /* [rbuf_cap] resampled samples of one push piece */
    int64_t rbuf_cap, piece; /* piece: input samples resampled at a time */

    /* the open window */
    float *win;         /* [window + ext] 16 kHz samples, zeros past win_len */
    int64_t win_len;    /* real samples so far */
    int win_index;      /* windows closed so far */
    float *raw;         /* [mel frames][M] raw log10 mel of the window */
    int64_t raw_frames; /* frames computed */
    float run_max;      /* max of raw[0 .. raw_frames) */
    int blocks_done;    /* blocks encoded in this window */
    float *block_max;   /* [blocks per window] the max each block was encoded with */
    int64_t tok0;       /* index in tokens of the window's first token */

    /* encoder state: K/V cache of the window and per-block activations */
    float *kcache, *vcache;  /* [n_layer][n_ctx][D] */
    float *melin;            /* [M][4 + 2B] conv1 input: 4 history frames then the block */
    float *c1;               /* [D][2 + 2B] conv1 output (2 history frames) */
    float *c2;               /* [D][B] conv2 output */
    float *h, *xn, *q, *ctx; /* [B][D] */
    float *ff;               /* [B][F] */
    float *pooled;           /* [B/pool][D] */
    int32_t *ids;            /* [B/pool] */
    float *mel_scratch, *conv_scratch, *vq_scratch;
    void *attn_scratch, *mm_scratch;

    int32_t *tokens; /* [cap] */
    int64_t n_tokens, n_final, cap;
    int64_t max_samples; /* input limit (16 kHz samples) */
    int64_t n_samples;   /* 16 kHz samples received */
    int finished;
    int64_t n_reencoded; /* blocks encoded again because the window's floor rose */
    float *trace_pooled; /* NULL, or [cap][D]: the pooled vector of each token (tests) */

    /* raw PCM16 pushes (stok_stream_push_pcm16) */
    float *pcm_buf; /* [STOK_PCM_PIECE] samples converted at a time */
    int pcm_odd;    /* 1: pcm_lo holds the low byte of a sample split across pushes */
    uint8_t pcm_lo;
};

#define STOK_PCM_PIECE 4096 /* PCM16 samples converted per step of a raw push */

/*
 * Sets up a stream for audio at in_rate Hz (resampled to the model rate as §2.2), at most
 * max_seconds long (sizes the token array); pushes may have any length.
 * eager = 1 encodes blocks as soon as their audio is complete (streaming), 0 only when each
 * window closes (whole files: no block is ever encoded twice). Allocates everything here.
 */
int stok_stream_init(struct stok_stream *s, const struct stok_model *m, struct pool *pool,
                     int in_rate, double max_seconds, int eager, struct err *e);
void stok_stream_free(struct stok_stream *s);
/* Returns the stream to the state stok_stream_init left it in (same model, rate, limit and
 * mode), keeping its buffers: a new utterance without allocating (one stream per session,
 * reused across turns). trace_pooled, the caller's, is kept. */
void stok_stream_reset(struct stok_stream *s);

/* Pushes n samples (mono, float in [-1, 1)). Returns -1 past max_seconds, after finish, or
 * on a kernel error. */
int stok_stream_push(struct stok_stream *s, const float *pcm, int64_t n, struct err *e);

/*
 * Pushes raw little-endian signed 16-bit mono PCM at the stream's rate (the "raw PCM16 with a
 * declared rate" of streaming clients): n bytes, any count, odd ones included: a sample split
 * across two pushes is joined. Samples are x / 32768, as the WAV reader reads PCM16, and are
 * resampled as stok_stream_push does, so the tokens equal the whole-file ones of that audio.
 * stok_stream_finish refuses a stream left holding half a sample.
 */
int stok_stream_push_pcm16(struct stok_stream *s, const void *bytes, size_t n, struct err *e);

/* The end of the audio: encodes the rest; afterwards every token is final. */
int stok_stream_finish(struct stok_stream *s, struct err *e);

/*
 * Whole-signal tokenization (the reference's extract_speech_token for one utterance):
 * *tokens (malloc'ed, the caller frees) gets *n_tokens ids. pcm is mono at `rate` Hz.
 */
int stok_tokenize(const struct stok_model *m, struct pool *pool, int32_t **tokens,
                  int64_t *n_tokens, const float *pcm, int64_t n, int rate, struct err *e);

#endif
