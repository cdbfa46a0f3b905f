/* stok — the Whisper-VQ speech tokenizer (see stok.h). Kernels are called directly: the
 * backend table has no VQ-with-scratch or block-wise conv entry points this file needs, and
 * the encoder runs once per utterance on the CPU. */
#include "speech/stok.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/act.h"
#include "kernels/attn.h"
#include "kernels/conv.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/vec.h"
#include "kernels/vq.h"

#define STOK_BATCH 128 /* windows per batch in the reference (extract_speech_token) */

/* ---- loading ------------------------------------------------------------------------- */

static int get_int(const struct gguf_file *f, const char *key, int lo, int hi, int *out,
                   struct err *e)
{
    char k[96];
    snprintf(k, sizeof k, STOK_ARCH ".%s", key);
    return gguf_get_int32(f, k, lo, hi, out, e);
}

static int get_f32(const struct gguf_file *f, const char *name, int n_dims, int64_t d0, int64_t d1,
                   int64_t d2, const float **out, struct err *e)
{
    const struct tensor *t;
    int64_t shape[3] = { d0, d1, d2 };
    if (gguf_get_tensor(f, name, GGUF_TYPES(DTYPE_F32), n_dims, shape, &t, e))
        return -1;
    *out = t->data;
    return 0;
}

static int get_mat(const struct gguf_file *f, const char *name, int64_t rows, int64_t cols,
                   const struct tensor **out, struct err *e)
{
    int64_t shape[2] = { rows, cols };
    return gguf_get_tensor(f, name, GGUF_TYPES_ANY, 2, shape, out, e);
}

static int load_hparams(struct stok_model *m, struct err *e)
{
    const struct gguf_file *f = &m->file;
    struct stok_hparams *hp = &m->hp;
    char arch[32];
    if (gguf_get_str(f, "general.architecture", arch, sizeof arch, e))
        return -1;
    if (strcmp(arch, STOK_ARCH) != 0)
        return err_set(e, "%s: general.architecture is '%s', not a speech tokenizer ('%s')",
                       f->path, arch, STOK_ARCH);
    int chunk;
    if (get_int(f, "num_mel_bins", 1, 1024, &hp->n_mels, e) ||
        get_int(f, "d_model", 1, 1 << 16, &hp->d_model, e) ||
        get_int(f, "encoder_attention_heads", 1, 1024, &hp->n_head, e) ||
        get_int(f, "encoder_ffn_dim", 1, 1 << 18, &hp->d_ffn, e) ||
        get_int(f, "quantize_position", 1, 1024, &hp->n_layer, e) ||
        get_int(f, "max_source_positions", 1, 1 << 20, &hp->n_ctx, e) ||
        get_int(f, "quantize_causal_block_size", 1, 1 << 20, &hp->block, e) ||
        get_int(f, "pooling_kernel_size", 1, 64, &hp->pool, e) ||
        get_int(f, "quantize_vocab_size", 1, 1 << 24, &hp->n_codes, e) ||
        get_int(f, "sampling_rate", 1000, 768000, &hp->sample_rate, e) ||
        get_int(f, "n_fft", 4, 8192, &hp->n_fft, e) ||
        get_int(f, "hop_length", 1, 8192, &hp->hop, e) ||
        get_int(f, "chunk_length", 1, 600, &chunk, e))
        return -1;
    char k[96];
    snprintf(k, sizeof k, STOK_ARCH ".layer_norm_eps");
    if (gguf_get_f32(f, k, &hp->ln_eps, e))
        return -1;
    hp->window = chunk * hp->sample_rate;
    int spt = 2 * hp->hop * hp->pool; /* samples per token */
    if (hp->d_model % hp->n_head)
        return err_set(e, "%s: d_model %d is not a multiple of %d heads", f->path, hp->d_model,
                       hp->n_head);
    if (hp->block % hp->pool || hp->window % spt)
        return err_set(e, "%s: block %d / pooling %d / window %d samples do not tile", f->path,
                       hp->block, hp->pool, hp->window);
    if (hp->window / (2 * hp->hop) > hp->n_ctx)
        return err_set(e, "%s: a %d s window needs %d positions, the table has %d", f->path, chunk,
                       hp->window / (2 * hp->hop), hp->n_ctx);
    return 0;
}

int stok_load(struct stok_model *m, const char *path, struct err *e)
{
    memset(m, 0, sizeof *m);
    if (gguf_open(&m->file, path, e) || load_hparams(m, e))
        return -1;
    const struct gguf_file *f = &m->file;
    const struct stok_hparams *hp = &m->hp;
    int64_t D = hp->d_model, F = hp->d_ffn;
    if (get_f32(f, "conv1.weight", 3, D, hp->n_mels, 3, &m->conv1_w, e) ||
        get_f32(f, "conv1.bias", 1, D, 0, 0, &m->conv1_b, e) ||
        get_f32(f, "conv2.weight", 3, D, D, 3, &m->conv2_w, e) ||
        get_f32(f, "conv2.bias", 1, D, 0, 0, &m->conv2_b, e) ||
        get_f32(f, "embed_positions.weight", 2, hp->n_ctx, D, 0, &m->pos, e) ||
        get_f32(f, "codebook.weight", 2, hp->n_codes, D, 0, &m->codebook, e))
        return -1;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return err_set(e, "%s: out of memory", path);
    for (int i = 0; i < hp->n_layer; i++) {
        struct stok_layer *l = &m->layers[i];
        char n[128];
#define NAME(s) (snprintf(n, sizeof n, "layers.%d.%s", i, s), n)
        if (get_f32(f, NAME("self_attn_layer_norm.weight"), 1, D, 0, 0, &l->ln1_w, e) ||
            get_f32(f, NAME("self_attn_layer_norm.bias"), 1, D, 0, 0, &l->ln1_b, e) ||
            get_mat(f, NAME("self_attn.q_proj.weight"), D, D, &l->wq, e) ||
            get_f32(f, NAME("self_attn.q_proj.bias"), 1, D, 0, 0, &l->bq, e) ||
            get_mat(f, NAME("self_attn.k_proj.weight"), D, D, &l->wk, e) ||
            get_mat(f, NAME("self_attn.v_proj.weight"), D, D, &l->wv, e) ||
            get_f32(f, NAME("self_attn.v_proj.bias"), 1, D, 0, 0, &l->bv, e) ||
            get_mat(f, NAME("self_attn.out_proj.weight"), D, D, &l->wo, e) ||
            get_f32(f, NAME("self_attn.out_proj.bias"), 1, D, 0, 0, &l->bo, e) ||
            get_f32(f, NAME("final_layer_norm.weight"), 1, D, 0, 0, &l->ln2_w, e) ||
            get_f32(f, NAME("final_layer_norm.bias"), 1, D, 0, 0, &l->ln2_b, e) ||
            get_mat(f, NAME("fc1.weight"), F, D, &l->fc1, e) ||
            get_f32(f, NAME("fc1.bias"), 1, F, 0, 0, &l->fc1_b, e) ||
            get_mat(f, NAME("fc2.weight"), D, F, &l->fc2, e) ||
            get_f32(f, NAME("fc2.bias"), 1, D, 0, 0, &l->fc2_b, e))
            return -1;
#undef NAME
    }
    return stok_prepare(m, e) ? err_prefix(e, "%s", path) : 0;
}

int stok_prepare(struct stok_model *m, struct err *e)
{
    const struct stok_hparams *hp = &m->hp;
    free(m->code_norms);
    m->code_norms = malloc((size_t)hp->n_codes * sizeof *m->code_norms);
    if (!m->code_norms)
        return err_set(e, "out of memory");
    vq_codebook_norms(m->code_norms, m->codebook, hp->n_codes, hp->d_model);
    return mel_init(&m->mel, hp->n_mels, hp->n_fft, hp->hop, hp->sample_rate, e);
}

void stok_free(struct stok_model *m)
{
    mel_free(&m->mel);
    if (m->file.map)
        free(m->layers); /* a caller-built model owns its layers */
    free(m->code_norms);
    gguf_close(&m->file);
    memset(m, 0, sizeof *m);
}

int stok_samples_per_token(const struct stok_model *m)
{
    return 2 * m->hp.hop * m->hp.pool;
}

int64_t stok_window_padding(const struct stok_model *m, int64_t len, int win_index, int64_t *l_ext)
{
    int spt = stok_samples_per_token(m);
    int64_t l_pad = (len + spt - 1) / spt * spt;
    *l_ext = l_pad;
    /* batched with a full window (any window but the first of a batch of STOK_BATCH): the
     * reference pads with zeros up to 30 s, so this window's own right-edge reflection
     * (errata E3) and the frames just past it see zeros; 1280 more zeros cover every frame
     * that can reach a real sample */
    if (win_index % STOK_BATCH != 0 && l_pad < m->hp.window)
        *l_ext = l_pad + spt < m->hp.window ? l_pad + spt : m->hp.window;
    return l_pad;
}

/* ---- the encoder, one attention block ------------------------------------------------- */

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/*
 * Encodes block b of the open window: encoder frames [B·b, B·b + rows) from mel frames
 * [2B·b − 4, 2B·b + 2·rows) with the floor of max_l; keys >= n_valid are padding (0: none).
 * Writes the block's first n_keep tokens at tokens[tok0 + b·B/pool].
 */
static int encode_block(struct stok_stream *s, int b, int rows, int64_t n_valid, float max_l,
                        int n_keep, struct err *e)
{
    const struct stok_model *m = s->m;
    const struct stok_hparams *hp = &m->hp;
    struct pool *pool = s->pool;
    int D = hp->d_model, M = hp->n_mels, B = hp->block, F = hp->d_ffn;
    int64_t t0 = (int64_t)B * b; /* first encoder frame of the block */

    /* mel features [M][4 + 2·rows]: 4 frames of history for the two causal convs */
    int tin = 4 + 2 * rows;
    for (int c = 0; c < tin; c++) {
        int64_t fr = 2 * t0 - 4 + c;
        for (int j = 0; j < M; j++)
            s->melin[(int64_t)j * tin + c] = fr < 0 ? 0.0f : mel_feature(s->raw[fr * M + j], max_l);
    }
    /* conv1 (causal, k 3, stride 1) + GELU: frames 2·t0 − 2 .. 2·t0 + 2·rows − 1 */
    struct conv_params p1 = {
        .c_in = M, .c_out = D, .k = 3, .stride = 1, .dilation = 1, .groups = 1
    };
    if (conv_1d(pool, s->c1, s->melin, m->conv1_w, m->conv1_b, &p1, tin, s->conv_scratch, e))
        return -1;
    int t1 = tin - 2;
    act_gelu(pool, s->c1, s->c1, (int64_t)D * t1);
    if (b == 0) /* conv2's own causal padding: zeros, not conv1 of zeros */
        for (int d = 0; d < D; d++)
            s->c1[(int64_t)d * t1] = s->c1[(int64_t)d * t1 + 1] = 0.0f;
    /* conv2 (causal, k 3, stride 2) + GELU: encoder frames t0 .. t0 + rows − 1 */
    struct conv_params p2 = {
        .c_in = D, .c_out = D, .k = 3, .stride = 2, .dilation = 1, .groups = 1
    };
    if (conv_1d(pool, s->c2, s->c1, m->conv2_w, m->conv2_b, &p2, t1, s->conv_scratch, e))
        return -1;
    act_gelu(pool, s->c2, s->c2, (int64_t)D * rows);
    /* h [rows][D] = conv2ᵀ + embed_positions[t0 ..] */
    for (int t = 0; t < rows; t++)
        for (int d = 0; d < D; d++)
            s->h[(int64_t)t * D + d] = s->c2[(int64_t)d * rows + t] + m->pos[(t0 + t) * D + d];

    int64_t n_kv = t0 + rows;
    struct attn_desc ad = {
        .n_head = hp->n_head,
        .n_kv_head = hp->n_head,
        .head_dim = D / hp->n_head,
        .kv_type = DTYPE_F32,
        .mask = { .kind = ATTN_MASK_BLOCK_CAUSAL,
                  .pos0 = t0,
                  .block = B,
                  .n_valid = n_valid > 0 && n_valid < n_kv ? n_valid : 0 },
    };
    int64_t nd = (int64_t)rows * D;
    for (int i = 0; i < hp->n_layer; i++) {
        const struct stok_layer *l = &m->layers[i];
        float *kc = s->kcache + (int64_t)i * hp->n_ctx * D,
              *vc = s->vcache + (int64_t)i * hp->n_ctx * D;
        /* self-attention, pre-LN; K has no bias */
        norm_layer(pool, s->xn, s->h, l->ln1_w, l->ln1_b, rows, D, hp->ln_eps);
        matmul_forward(pool, s->q, s->xn, l->wq, l->bq, rows, s->mm_scratch);
        matmul_forward(pool, kc + t0 * D, s->xn, l->wk, NULL, rows, s->mm_scratch);
        matmul_forward(pool, vc + t0 * D, s->xn, l->wv, l->bv, rows, s->mm_scratch);
        attn_forward(pool, s->ctx, s->q, kc, vc, rows, n_kv, &ad, s->attn_scratch);
        matmul_forward(pool, s->xn, s->ctx, l->wo, l->bo, rows, s->mm_scratch);
        vec_add(s->h, s->h, s->xn, nd);
        /* MLP: fc2(GELU(fc1(LN(h)))) */
        norm_layer(pool, s->xn, s->h, l->ln2_w, l->ln2_b, rows, D, hp->ln_eps);
        matmul_forward(pool, s->ff, s->xn, l->fc1, l->fc1_b, rows, s->mm_scratch);
        act_gelu(pool, s->ff, s->ff, (int64_t)rows * F);
        matmul_forward(pool, s->xn, s->ff, l->fc2, l->fc2_b, rows, s->mm_scratch);
        vec_add(s->h, s->h, s->xn, nd);
    }
    /* average pooling by `pool` frames (AvgPool1d: the sum in order, then / kernel) */
    int np = rows / hp->pool;
    if (n_keep > np)
        n_keep = np;
    for (int j = 0; j < n_keep; j++)
        for (int d = 0; d < D; d++) {
            float acc = 0.0f;
            for (int r = 0; r < hp->pool; r++)
                acc += s->h[((int64_t)j * hp->pool + r) * D + d];
            s->pooled[(int64_t)j * D + d] = acc / (float)hp->pool;
        }
    if (n_keep > 0)
        vq_argmin(pool, s->ids, NULL, s->pooled, n_keep, m->codebook, m->code_norms, hp->n_codes, D,
                  s->vq_scratch);
    int64_t first = s->tok0 + (int64_t)b * (B / hp->pool);
    memcpy(s->tokens + first, s->ids, (size_t)n_keep * sizeof *s->ids);
    if (s->trace_pooled)
        memcpy(s->trace_pooled + first * D, s->pooled, (size_t)n_keep * D * sizeof(float));
    return 0;
}

/* ---- the stream ----------------------------------------------------------------------- */

/* Raw log10 mel of frames [raw_frames, f_end) of the window (signal length l), in pieces
 * that never cross a block boundary, so any caller order computes identical frames. */
static void compute_frames(struct stok_stream *s, int64_t f_end, int64_t l)
{
    const struct stok_model *m = s->m;
    int64_t per_block = 2 * (int64_t)m->hp.block;
    while (s->raw_frames < f_end) {
        int64_t f0 = s->raw_frames;
        int64_t f1 = (f0 / per_block + 1) * per_block;
        if (f1 > f_end)
            f1 = f_end;
        float *out = s->raw + f0 * m->hp.n_mels;
        mel_log10(&m->mel, out, s->win, l, f0, f1 - f0, s->mel_scratch);
        for (int64_t i = 0; i < (f1 - f0) * m->hp.n_mels; i++)
            if (out[i] > s->run_max)
                s->run_max = out[i];
        s->raw_frames = f1;
    }
}

/* Eager mode: encodes the blocks whose mel frames lie wholly inside the audio so far. */
static int encode_ready(struct stok_stream *s, struct err *e)
{
    const struct stok_hparams *hp = &s->m->hp;
    int64_t t_win = hp->window / (2 * hp->hop); /* encoder frames of a full window */
    int B = hp->block;
    for (;;) {
        int64_t end_frame = 2 * (int64_t)B * (s->blocks_done + 1); /* mel frames needed */
        if ((int64_t)B * (s->blocks_done + 1) > t_win ||
            (end_frame - 1) * hp->hop + hp->n_fft / 2 > s->win_len)
            return 0;
        compute_frames(s, end_frame, s->win_len);
        int b = s->blocks_done;
        if (encode_block(s, b, B, 0, s->run_max, B / hp->pool, e))
            return -1;
        s->block_max[b] = s->run_max;
        s->blocks_done++;
        s->n_tokens = s->tok0 + (int64_t)s->blocks_done * (B / hp->pool);
    }
}

/* 1 when the features block b read (mel frames [2B·b − 4, 2B·b + 2B)) differ between the
 * floor it was encoded with and the window's final one. */
static int block_stale(const struct stok_stream *s, int b, float final_max)
{
    const struct stok_hparams *hp = &s->m->hp;
    if (s->block_max[b] == final_max)
        return 0;
    int64_t f0 = 2 * (int64_t)hp->block * b - 4, f1 = 2 * (int64_t)hp->block * (b + 1);
    if (f0 < 0)
        f0 = 0;
    for (int64_t i = f0 * hp->n_mels; i < f1 * hp->n_mels; i++) {
        float a = mel_feature(s->raw[i], s->block_max[b]), c = mel_feature(s->raw[i], final_max);
        if (memcmp(&a, &c, sizeof a) != 0)
            return 1;
    }
    return 0;
}

/* Closes the open window (full, or the last one at finish): the reference's padding and
 * floor, re-encoding of stale blocks, the rest of the blocks, the token count. */
static int close_window(struct stok_stream *s, struct err *e)
{
    const struct stok_hparams *hp = &s->m->hp;
    int64_t L = s->win_len;
    if (L == 0)
        return 0;
    int spt = stok_samples_per_token(s->m);
    int64_t l_ext, l_pad = stok_window_padding(s->m, L, s->win_index, &l_ext);
    int64_t t_mel = l_pad / hp->hop, t_enc = t_mel / 2;
    compute_frames(s, t_mel, l_ext);
    compute_frames(s, l_ext / hp->hop, l_ext);
    float fmax = s->run_max;
    for (int b = 0; b < s->blocks_done; b++)
        if (block_stale(s, b, fmax)) {
            s->n_reencoded += s->blocks_done - b;
            s->blocks_done = b;
            break;
        }
    int64_t n_valid = ceil_div(L, 2 * hp->hop);
    int64_t n_keep = ceil_div(L, spt);
    int tpb = hp->block / hp->pool;
    for (int b = s->blocks_done; (int64_t)b * hp->block < t_enc; b++) {
        int64_t rows = t_enc - (int64_t)b * hp->block;
        if (rows > hp->block)
            rows = hp->block;
        int64_t keep = n_keep - (int64_t)b * tpb;
        if (encode_block(s, b, (int)rows, n_valid, fmax, (int)(keep > tpb ? tpb : keep), e))
            return -1;
    }
    s->n_final = s->n_tokens = s->tok0 + n_keep;
    s->tok0 = s->n_final;
    memset(s->win, 0, (size_t)l_ext * sizeof *s->win);
    s->win_len = 0;
    s->win_index++;
    s->raw_frames = 0;
    s->run_max = -INFINITY;
    s->blocks_done = 0;
    return 0;
}

/* Takes 16 kHz samples into windows. */
static int feed(struct stok_stream *s, const float *x, int64_t n, struct err *e)
{
    if (s->n_samples + n > s->max_samples)
        return err_set(e, "speech tokenizer: audio longer than the %.1f s limit",
                       (double)s->max_samples / s->m->hp.sample_rate);
    s->n_samples += n;
    while (n > 0) {
        int64_t take = s->m->hp.window - s->win_len;
        if (take > n)
            take = n;
        memcpy(s->win + s->win_len, x, (size_t)take * sizeof *x);
        s->win_len += take;
        x += take;
        n -= take;
        if (s->eager && encode_ready(s, e))
            return -1;
        if (s->win_len == s->m->hp.window && close_window(s, e))
            return -1;
    }
    return 0;
}

#define STOK_PIECE 16384 /* input samples resampled at a time */

int stok_stream_init(struct stok_stream *s, const struct stok_model *m, struct pool *pool,
                     int in_rate, double max_seconds, int eager, struct err *e)
{
    memset(s, 0, sizeof *s);
    s->m = m;
    s->pool = pool;
    s->eager = eager;
    s->in_rate = in_rate;
    s->run_max = -INFINITY;
    const struct stok_hparams *hp = &m->hp;
    if (!(max_seconds > 0) || max_seconds > 24 * 3600)
        return err_set(e, "speech tokenizer: bad length limit %g s", max_seconds);
    if (resample_init(&s->rs, in_rate, hp->sample_rate, e) ||
        resample_stream_init(&s->rss, &s->rs, STOK_PIECE, e))
        return -1;
    int nt = pool_threads(pool);
    int64_t D = hp->d_model, M = hp->n_mels, B = hp->block, F = hp->d_ffn;
    int64_t blocks = ceil_div(hp->window / (2 * hp->hop), B);
    s->max_samples = (int64_t)(max_seconds * hp->sample_rate) + 1;
    s->cap = s->max_samples / stok_samples_per_token(m) + 2 + B / hp->pool;
    s->rbuf_cap = resample_stream_max_out(&s->rss, STOK_PIECE);
    struct conv_params p1 = {
        .c_in = (int)M, .c_out = (int)D, .k = 3, .stride = 1, .dilation = 1, .groups = 1
    };
    struct conv_params p2 = {
        .c_in = (int)D, .c_out = (int)D, .k = 3, .stride = 2, .dilation = 1, .groups = 1
    };
    size_t cs1 = 0, cs2 = 0; /* the tiling depends on the length: size for every block length */
    for (int64_t r = 1; r <= B; r++) {
        size_t a = conv_1d_scratch_floats(&p1, 4 + 2 * r, nt);
        size_t b = conv_1d_scratch_floats(&p2, 2 + 2 * r, nt);
        cs1 = a > cs1 ? a : cs1;
        cs2 = b > cs2 ? b : cs2;
    }
    size_t mm = 0;
    for (int i = 0; i < hp->n_layer; i++) {
        const struct stok_layer *l = &m->layers[i];
        const struct tensor *ws[] = { l->wq, l->wk, l->wv, l->wo, l->fc1, l->fc2 };
        for (int k = 0; k < 6; k++) {
            size_t b = matmul_scratch_bytes(pool, ws[k]);
            mm = b > mm ? b : mm;
        }
    }
    size_t kv = (size_t)hp->n_layer * hp->n_ctx * D;
    s->rbuf = malloc((size_t)s->rbuf_cap * sizeof *s->rbuf);
    s->win = calloc((size_t)hp->window, sizeof *s->win);
    s->raw = malloc((size_t)(hp->window / hp->hop + 1) * M * sizeof *s->raw);
    s->block_max = calloc((size_t)blocks, sizeof *s->block_max);
    s->kcache = malloc(kv * sizeof *s->kcache);
    s->vcache = malloc(kv * sizeof *s->vcache);
    s->melin = malloc((size_t)M * (4 + 2 * B) * sizeof *s->melin);
    s->c1 = malloc((size_t)D * (2 + 2 * B) * sizeof *s->c1);
    s->c2 = malloc((size_t)D * B * sizeof *s->c2);
    s->h = malloc((size_t)(4 * B * D) * sizeof *s->h);
    s->xn = s->h ? s->h + B * D : NULL;
    s->q = s->h ? s->h + 2 * B * D : NULL;
    s->ctx = s->h ? s->h + 3 * B * D : NULL;
    s->ff = malloc((size_t)B * F * sizeof *s->ff);
    s->pooled = malloc((size_t)(B / hp->pool) * D * sizeof *s->pooled);
    s->ids = malloc((size_t)(B / hp->pool) * sizeof *s->ids);
    s->mel_scratch = malloc((size_t)mel_scratch_floats(&m->mel, 2 * B) * sizeof(float));
    s->conv_scratch = malloc(((cs1 > cs2 ? cs1 : cs2) + 1) * sizeof(float));
    s->vq_scratch = malloc((vq_scratch_floats(B / hp->pool, hp->n_codes, nt) + 1) * sizeof(float));
    s->attn_scratch = malloc(attn_scratch_size(pool, (int)(D / hp->n_head)));
    s->mm_scratch = mm ? aligned_alloc(64, (mm + 63) & ~(size_t)63) : NULL;
    s->tokens = malloc((size_t)s->cap * sizeof *s->tokens);
    s->pcm_buf = malloc((size_t)STOK_PCM_PIECE * sizeof *s->pcm_buf);
    if (!s->rbuf || !s->win || !s->raw || !s->block_max || !s->kcache || !s->vcache || !s->melin ||
        !s->c1 || !s->c2 || !s->h || !s->ff || !s->pooled || !s->ids || !s->mel_scratch ||
        !s->conv_scratch || !s->vq_scratch || !s->attn_scratch || (mm && !s->mm_scratch) ||
        !s->tokens || !s->pcm_buf) {
        stok_stream_free(s);
        return err_set(e, "speech tokenizer: out of memory for a stream");
    }
    return 0;
}

void stok_stream_free(struct stok_stream *s)
{
    resample_stream_free(&s->rss);
    resample_free(&s->rs);
    free(s->rbuf);
    free(s->win);
    free(s->raw);
    free(s->block_max);
    free(s->kcache);
    free(s->vcache);
    free(s->melin);
    free(s->c1);
    free(s->c2);
    free(s->h);
    free(s->ff);
    free(s->pooled);
    free(s->ids);
    free(s->mel_scratch);
    free(s->conv_scratch);
    free(s->vq_scratch);
    free(s->attn_scratch);
    free(s->mm_scratch);
    free(s->tokens);
    free(s->pcm_buf);
    memset(s, 0, sizeof *s);
}

void stok_stream_reset(struct stok_stream *s)
{
    const struct stok_hparams *hp = &s->m->hp;
    /* the resampler's history: as resample_stream_init leaves it (W zeros of xpad) */
    if (s->rss.buf) {
        memset(s->rss.buf, 0, (size_t)s->rss.cap * sizeof *s->rss.buf);
        s->rss.len = s->rss.r->width;
    }
    s->rss.start = s->rss.q = s->rss.n_in = s->rss.n_out = 0;
    s->rss.finished = 0;
    /* the open window and the token count; encoder buffers are scratch, rewritten before use */
    memset(s->win, 0, (size_t)hp->window * sizeof *s->win);
    memset(s->block_max, 0,
           (size_t)ceil_div(hp->window / (2 * hp->hop), hp->block) * sizeof *s->block_max);
    s->win_len = 0;
    s->win_index = 0;
    s->raw_frames = 0;
    s->run_max = -INFINITY;
    s->blocks_done = 0;
    s->tok0 = 0;
    s->n_tokens = s->n_final = 0;
    s->n_samples = 0;
    s->finished = 0;
    s->n_reencoded = 0;
    s->pcm_odd = 0;
    s->pcm_lo = 0;
}

int stok_stream_push(struct stok_stream *s, const float *pcm, int64_t n, struct err *e)
{
    if (s->finished)
        return err_set(e, "speech tokenizer: audio pushed after finish");
    if (s->in_rate == s->m->hp.sample_rate)
        return feed(s, pcm, n, e);
    while (n > 0) {
        int64_t take = n < STOK_PIECE ? n : STOK_PIECE;
        int64_t k = resample_stream_push(&s->rss, s->rbuf, pcm, take, e);
        if (k < 0 || feed(s, s->rbuf, k, e))
            return -1;
        pcm += take;
        n -= take;
    }
    return 0;
}

int stok_stream_push_pcm16(struct stok_stream *s, const void *bytes, size_t n, struct err *e)
{
    const uint8_t *p = bytes;
    if (s->finished)
        return err_set(e, "speech tokenizer: audio pushed after finish");
    while (n > 0) {
        int64_t k = 0;
        if (s->pcm_odd) { /* the high byte of the sample split by the last push */
            s->pcm_buf[k++] = (float)(int16_t)(uint16_t)(s->pcm_lo | p[0] << 8) / 32768.0f;
            s->pcm_odd = 0;
            p++;
            n--;
        }
        for (; k < STOK_PCM_PIECE && n >= 2; k++, p += 2, n -= 2)
            s->pcm_buf[k] = (float)(int16_t)(uint16_t)(p[0] | p[1] << 8) / 32768.0f;
        if (n == 1 && k < STOK_PCM_PIECE) { /* keep the low byte for the next push */
            s->pcm_lo = p[0];
            s->pcm_odd = 1;
            n = 0;
        }
        if (k > 0 && stok_stream_push(s, s->pcm_buf, k, e))
            return -1;
    }
    return 0;
}

int stok_stream_finish(struct stok_stream *s, struct err *e)
{
    if (s->finished)
        return 0;
    if (s->pcm_odd)
        return err_set(e, "speech tokenizer: raw PCM16 ends in half a sample (odd byte count)");
    if (s->in_rate != s->m->hp.sample_rate) {
        int64_t k = resample_stream_finish(&s->rss, s->rbuf);
        if (feed(s, s->rbuf, k, e))
            return -1;
    }
    s->finished = 1;
    return close_window(s, e);
}

int stok_tokenize(const struct stok_model *m, struct pool *pool, int32_t **tokens,
                  int64_t *n_tokens, const float *pcm, int64_t n, int rate, struct err *e)
{
    struct stok_stream s;
    *tokens = NULL;
    *n_tokens = 0;
    if (stok_stream_init(&s, m, pool, rate, (double)n / rate + 1.0, 0, e))
        return -1;
    if (stok_stream_push(&s, pcm, n, e) || stok_stream_finish(&s, e)) {
        stok_stream_free(&s);
        return -1;
    }
    *tokens = s.tokens;
    *n_tokens = s.n_final;
    s.tokens = NULL;
    stok_stream_free(&s);
    return 0;
}
