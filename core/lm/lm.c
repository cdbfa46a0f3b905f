/*
 * lm — the GLM-4 decoder forward pass (spec §4.3), read top to bottom next to the reference.
 *
 * Backend use: every operation on activations goes through the backend table (linear,
 * rms_norm, rope, attention, swiglu, add, upload/download). Two steps have no backend op
 * yet and run on the host here: the embedding lookup (rows of the mapped matrix are widened
 * to f32 on the host and uploaded) and the KV-cache store (new K/V rows are downloaded,
 * converted to the cache type and uploaded into place). A device backend will want a
 * "get rows" and a "store rows with conversion" op for these.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm/lm.h"

/* ---- loading --------------------------------------------------------------------------- */

static int get_i32(const struct gguf_file *f, const char *key, int64_t lo, int64_t hi, int32_t *out,
                   struct err *e)
{
    int64_t v;
    if (gguf_get_int(f, key, lo, hi, &v, e) != 0)
        return -1;
    *out = (int32_t)v;
    return 0;
}

static int load_hparams(struct lm_hparams *hp, const struct gguf_file *f, struct err *e)
{
    char arch[64];
    if (gguf_get_str(f, "general.architecture", arch, sizeof arch, e) != 0)
        return -1;
    if (strcmp(arch, "glm4voice-lm") != 0)
        return err_set(e,
                       "%s: general.architecture is '%s', not a GLM-4-Voice LM "
                       "(glm4voice-lm)",
                       f->path, arch);
    if (gguf_get_int32(f, "glm4.block_count", 1, 1024, &hp->n_layer, e) ||
        gguf_get_int32(f, "glm4.embedding_length", 1, 1 << 20, &hp->n_embd, e) ||
        gguf_get_int32(f, "glm4.feed_forward_length", 1, 1 << 22, &hp->n_ff, e) ||
        gguf_get_int32(f, "glm4.attention.head_count", 1, 4096, &hp->n_head, e) ||
        gguf_get_int32(f, "glm4.attention.head_count_kv", 1, 4096, &hp->n_kv_head, e) ||
        gguf_get_int32(f, "glm4.attention.key_length", 2, 4096, &hp->head_dim, e) ||
        gguf_get_int32(f, "glm4.rope.dimension_count", 2, 4096, &hp->rot_dim, e) ||
        gguf_get_int(f, "glm4.vocab_size", 1, INT32_MAX, &hp->n_vocab, e) ||
        gguf_get_int(f, "glm4.context_length", 1, INT64_C(1) << 24, &hp->n_ctx, e) ||
        gguf_get_f32(f, "glm4.attention.layer_norm_rms_epsilon", &hp->eps, e) ||
        gguf_get_f32(f, "glm4.rope.freq_base", &hp->rope_base, e))
        return -1;
    if (hp->n_head % hp->n_kv_head)
        return err_set(e, "%s: %d query heads are not a multiple of %d KV heads", f->path,
                       hp->n_head, hp->n_kv_head);
    if (hp->rot_dim > hp->head_dim || hp->rot_dim % 2)
        return err_set(e, "%s: rope dimension %d does not fit head size %d", f->path, hp->rot_dim,
                       hp->head_dim);
    if (!(hp->eps > 0) || !(hp->rope_base > 0))
        return err_set(e, "%s: epsilon %g and rope base %g must be positive", f->path,
                       (double)hp->eps, (double)hp->rope_base);
    int64_t v = hp->n_vocab - 1;
    if (get_i32(f, "glm4.token.eot", 0, v, &hp->tok_eot, e) ||
        get_i32(f, "glm4.token.gmask", 0, v, &hp->tok_gmask, e) ||
        get_i32(f, "glm4.token.sop", 0, v, &hp->tok_sop, e) ||
        get_i32(f, "glm4.token.system", 0, v, &hp->tok_system, e) ||
        get_i32(f, "glm4.token.user", 0, v, &hp->tok_user, e) ||
        get_i32(f, "glm4.token.assistant", 0, v, &hp->tok_assistant, e) ||
        get_i32(f, "glm4.token.observation", 0, v, &hp->tok_observation, e) ||
        get_i32(f, "glm4.token.begin_of_audio", 0, v, &hp->tok_boa, e) ||
        get_i32(f, "glm4.token.end_of_audio", 0, v, &hp->tok_eoa, e) ||
        get_i32(f, "glm4.token.audio_offset", 0, v, &hp->audio_offset, e) ||
        get_i32(f, "glm4.token.audio_count", 1, hp->n_vocab - hp->audio_offset, &hp->n_audio, e))
        return -1;
    const struct gguf_kv *stop;
    if (gguf_get_array(f, "glm4.token.stop", GGUF_TYPE_INT64, &stop, e) != 0)
        return -1;
    if (stop->count < 1 || stop->count > LM_MAX_STOP)
        return err_set(e, "%s: glm4.token.stop has %llu ids (1..%d allowed)", f->path,
                       (unsigned long long)stop->count, LM_MAX_STOP);
    hp->n_stop = (int32_t)stop->count;
    for (uint64_t i = 0; i < stop->count; i++) {
        int64_t id;
        if (gguf_array_i64(stop, i, &id) != 0 || id < 0 || id >= hp->n_vocab)
            return err_set(e, "%s: glm4.token.stop[%llu] is not a token id", f->path,
                           (unsigned long long)i);
        hp->stop[i] = (int32_t)id;
    }
    return 0;
}

/* How the backend is to prepare a matrix of type t: only the linear operation that will
 * multiply it (lm_forward's `linear`) reads it, so the backend may pack it for that one. */
static enum backend_weight_use matrix_use(const struct lm_model *m, enum dtype t)
{
    if (t == DTYPE_BF16 && m->round_bf16)
        return BACKEND_WEIGHT_LINEAR_BF16;
    return t == DTYPE_Q8_0 ? BACKEND_WEIGHT_MATRIX : BACKEND_WEIGHT_LINEAR;
}

/* Layer matrix i, i < 4 n_layer: each layer's four (besides them the model has the output
 * layer). */
static struct tensor *layer_matrix(const struct lm_model *m, int i)
{
    struct lm_layer *L = &m->layers[i / 4];
    struct tensor *four[4] = { &L->qkv, &L->dense, &L->up, &L->down };
    return four[i % 4];
}

/* Looks up a tensor, checks it and prepares it through the backend. */
static int load_weight(struct lm_model *m, struct tensor *dst, const char *name, int n_dims,
                       int64_t d0, int64_t d1, struct err *e)
{
    const struct tensor *t;
    int64_t shape[2] = { d0, d1 };
    uint64_t types = n_dims == 1 ? GGUF_TYPES(DTYPE_F32) : GGUF_TYPES_ANY;
    if (gguf_get_tensor(&m->file, name, types, n_dims, shape, &t, e) != 0)
        return -1;
    enum backend_weight_use use = n_dims == 1 ? BACKEND_WEIGHT_F32 : matrix_use(m, t->type);
    if (m->be->ops->weight(m->be, dst, t, use, e) != 0)
        return err_prefix(e, "%s", m->file.path);
    if (dst->data != t->data) /* the backend made its own copy: the file's pages can go */
        gguf_drop_pages(&m->file, t);
    return 0;
}

int lm_load(struct lm_model *m, const char *path, struct backend *be, const struct lm_options *opt,
            struct err *e)
{
    memset(m, 0, sizeof *m);
    m->be = be;
    if (gguf_open(&m->file, path, e) != 0)
        return -1;
    struct lm_hparams *hp = &m->hp;
    if (load_hparams(hp, &m->file, e) != 0)
        goto fail;
    const int64_t D = hp->n_embd, F = hp->n_ff, Dh = hp->head_dim;
    const int64_t QKV = (int64_t)(hp->n_head + 2 * hp->n_kv_head) * Dh;
    const int64_t HD = (int64_t)hp->n_head * Dh;

    int64_t embd_shape[2] = { hp->n_vocab, D };
    if (gguf_get_tensor(&m->file, "transformer.embedding.word_embeddings.weight", GGUF_TYPES_ANY, 2,
                        embd_shape, &m->embd, e) != 0)
        goto fail;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        err_set(e, "%s: out of memory", path);
        goto fail;
    }
    /* rounding follows the type of the first layer's matrices unless the options say */
    const struct tensor *qkv0;
    int64_t qkv_shape[2] = { QKV, D };
    if (gguf_get_tensor(&m->file,
                        "transformer.encoder.layers.0.self_attention.query_key_value.weight",
                        GGUF_TYPES_ANY, 2, qkv_shape, &qkv0, e) != 0)
        goto fail;
    m->wtype = qkv0->type;
    int rb = opt ? opt->round_bf16 : -1;
    m->round_bf16 = rb < 0 ? m->wtype == DTYPE_BF16 : rb != 0;
    char name[160];
#define LAYER(field, suffix, nd, a, b)                                           \
    (snprintf(name, sizeof name, "transformer.encoder.layers.%d.%s", l, suffix), \
     load_weight(m, &L->field, name, nd, a, b, e))
    for (int l = 0; l < hp->n_layer; l++) {
        struct lm_layer *L = &m->layers[l];
        if (LAYER(attn_norm, "input_layernorm.weight", 1, D, 0) ||
            LAYER(qkv, "self_attention.query_key_value.weight", 2, QKV, D) ||
            LAYER(qkv_bias, "self_attention.query_key_value.bias", 1, QKV, 0) ||
            LAYER(dense, "self_attention.dense.weight", 2, D, HD) ||
            LAYER(ffn_norm, "post_attention_layernorm.weight", 1, D, 0) ||
            LAYER(up, "mlp.dense_h_to_4h.weight", 2, 2 * F, D) ||
            LAYER(down, "mlp.dense_4h_to_h.weight", 2, D, F))
            goto fail;
    }
#undef LAYER
    if (load_weight(m, &m->final_norm, "transformer.encoder.final_layernorm.weight", 1, D, 0, e) ||
        load_weight(m, &m->output, "transformer.output_layer.weight", 2, hp->n_vocab, D, e))
        goto fail;
    if (rope_table_init(&m->rope, hp->rot_dim, hp->rope_base, hp->n_ctx, m->round_bf16, e) != 0) {
        err_prefix(e, "%s", path);
        goto fail;
    }
    return 0;
fail:
    lm_free(m);
    return -1;
}

void lm_free(struct lm_model *m)
{
    if (!m)
        return;
    rope_table_free(&m->rope);
    free(m->layers);
    free(m->owned);
    gguf_close(&m->file);
    memset(m, 0, sizeof *m);
}

/* ---- random models (benchmarks) -------------------------------------------------------- */

struct arena {
    uint8_t *p;
    size_t used, size;
};

/* A tensor of M rows of K values in the arena, filled with a random pattern of type t. */
static int arena_tensor(struct arena *a, struct tensor *t, const char *name, enum dtype type,
                        int n_dims, int64_t k, int64_t m, const uint8_t *pattern,
                        size_t pattern_bytes)
{
    int64_t ne[2] = { k, m };
    size_t bytes = dtype_row_bytes(type, (uint64_t)k) * (size_t)m;
    if (a->p) {
        uint8_t *dst = a->p + a->used;
        for (size_t off = 0; off < bytes; off += pattern_bytes)
            memcpy(dst + off, pattern, bytes - off < pattern_bytes ? bytes - off : pattern_bytes);
        if (tensor_init(t, name, type, n_dims, ne, dst) != 0)
            return -1;
    }
    a->used += (bytes + 63) & ~(size_t)63;
    return 0;
}

int lm_init_random(struct lm_model *m, const struct lm_hparams *hp, enum dtype wtype,
                   struct backend *be, uint64_t seed, struct err *e)
{
    memset(m, 0, sizeof *m);
    m->be = be;
    m->hp = *hp;
    m->wtype = wtype;
    m->round_bf16 = wtype == DTYPE_BF16;
    const int64_t D = hp->n_embd, F = hp->n_ff, Dh = hp->head_dim, V = hp->n_vocab;
    const int64_t QKV = (int64_t)(hp->n_head + 2 * hp->n_kv_head) * Dh, HD = hp->n_head * Dh;
    /* 4096 random values in the matrix type, repeated: the pattern is whole q8_0 blocks,
     * so every copy starts on a block boundary */
    enum { PAT = 4096 };
    static float vals[PAT];
    uint64_t x = seed | 1;
    for (int i = 0; i < PAT; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        vals[i] = ((float)(x >> 40) / (float)(1 << 24) - 0.5f) * 0.1f;
    }
    static uint8_t wpat[PAT * 4], fpat[PAT * 4];
    dtype_from_f32(wtype, vals, wpat, PAT);
    size_t wpat_bytes = dtype_row_bytes(wtype, PAT);
    for (int i = 0; i < PAT; i++)
        vals[i] = 1.0f + vals[i];
    memcpy(fpat, vals, sizeof vals);
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers ||
        rope_table_init(&m->rope, hp->rot_dim, hp->rope_base, hp->n_ctx, m->round_bf16, e) != 0) {
        lm_free(m);
        return err_set(e, "lm_init_random: out of memory");
    }
    struct arena a = { 0 };
    for (int pass = 0; pass < 2; pass++) {
        a.used = 0;
        int bad = arena_tensor(&a, &m->embd_owned, "embd", wtype, 2, D, V, wpat, wpat_bytes) ||
                  arena_tensor(&a, &m->final_norm, "norm", DTYPE_F32, 1, D, 1, fpat, sizeof fpat) ||
                  arena_tensor(&a, &m->output, "output", wtype, 2, D, V, wpat, wpat_bytes);
        for (int l = 0; l < hp->n_layer && !bad; l++) {
            struct lm_layer *L = &m->layers[l];
            bad = arena_tensor(&a, &L->attn_norm, "norm", DTYPE_F32, 1, D, 1, fpat, sizeof fpat) ||
                  arena_tensor(&a, &L->qkv, "qkv", wtype, 2, D, QKV, wpat, wpat_bytes) ||
                  arena_tensor(&a, &L->qkv_bias, "bias", DTYPE_F32, 1, QKV, 1, fpat, sizeof fpat) ||
                  arena_tensor(&a, &L->dense, "dense", wtype, 2, HD, D, wpat, wpat_bytes) ||
                  arena_tensor(&a, &L->ffn_norm, "norm", DTYPE_F32, 1, D, 1, fpat, sizeof fpat) ||
                  arena_tensor(&a, &L->up, "up", wtype, 2, D, 2 * F, wpat, wpat_bytes) ||
                  arena_tensor(&a, &L->down, "down", wtype, 2, F, D, wpat, wpat_bytes);
        }
        if (bad) {
            lm_free(m);
            return err_set(e, "lm_init_random: bad shape for type %u", (unsigned)wtype);
        }
        if (pass == 0) {
            a.size = a.used;
            a.p = aligned_alloc(64, a.size);
            m->owned = a.p;
            if (!a.p) {
                lm_free(m);
                return err_set(e, "lm_init_random: out of memory for %zu bytes", a.size);
            }
        }
    }
    m->embd = &m->embd_owned;
    /* the matrices prepared as lm_load prepares them */
    for (int i = -1; i < 4 * hp->n_layer; i++) {
        struct tensor *t = i < 0 ? &m->output : layer_matrix(m, i);
        if (be->ops->weight(be, t, t, matrix_use(m, wtype), e) != 0) {
            lm_free(m);
            return -1;
        }
    }
    return 0;
}

int lm_is_stop(const struct lm_hparams *hp, int32_t id)
{
    for (int i = 0; i < hp->n_stop; i++)
        if (hp->stop[i] == id)
            return 1;
    return 0;
}

uint64_t lm_weight_bytes(const struct lm_model *m)
{
    uint64_t n = tensor_nbytes(&m->output);
    for (int i = 0; i < 4 * m->hp.n_layer; i++)
        n += tensor_nbytes(layer_matrix(m, i));
    return n;
}

/* ---- KV cache -------------------------------------------------------------------------- */

int lm_cache_init(struct lm_cache *c, const struct lm_model *m, int64_t n_ctx, enum dtype type,
                  struct err *e)
{
    memset(c, 0, sizeof *c);
    if (type != DTYPE_F32 && type != DTYPE_F16 && type != DTYPE_BF16)
        return err_set(e, "KV cache: type %u is not f32, f16 or bf16", (unsigned)type);
    if (n_ctx <= 0 || n_ctx > m->hp.n_ctx)
        n_ctx = m->hp.n_ctx;
    c->type = type;
    c->n_ctx = n_ctx;
    c->n_layer = m->hp.n_layer;
    c->layer_elems = n_ctx * m->hp.n_kv_head * m->hp.head_dim;
    c->be = m->be;
    size_t bytes = dtype_row_bytes(type, (uint64_t)c->layer_elems) * (size_t)c->n_layer;
    c->k = m->be->ops->alloc(m->be, bytes);
    c->v = m->be->ops->alloc(m->be, bytes);
    if (!c->k || !c->v) {
        lm_cache_free(c);
        return err_set(e, "KV cache: out of memory for %lld positions (%zu bytes)",
                       (long long)n_ctx, 2 * bytes);
    }
    return 0;
}

void lm_cache_free(struct lm_cache *c)
{
    if (c && c->be) {
        c->be->ops->release(c->be, c->k);
        c->be->ops->release(c->be, c->v);
    }
    if (c)
        memset(c, 0, sizeof *c);
}

void lm_cache_truncate(struct lm_cache *c, int64_t n_pos)
{
    if (n_pos >= 0 && n_pos < c->n_pos)
        c->n_pos = n_pos;
}

/* ---- runner ---------------------------------------------------------------------------- */

int lm_runner_init(struct lm_runner *r, const struct lm_model *m, int64_t max_rows, int max_seqs,
                   struct err *e)
{
    memset(r, 0, sizeof *r);
    if (max_seqs < 1 || max_rows < max_seqs)
        return err_set(e, "lm runner: %lld rows for %d sequences", (long long)max_rows, max_seqs);
    const struct lm_hparams *hp = &m->hp;
    struct backend *be = m->be;
    const int64_t N = max_rows, D = hp->n_embd, F = hp->n_ff, Dh = hp->head_dim;
    const int64_t QKV = (int64_t)(hp->n_head + 2 * hp->n_kv_head) * Dh;
    const int64_t KV = (int64_t)hp->n_kv_head * Dh;
    r->m = m;
    r->max_rows = N;
    r->max_seqs = max_seqs;
    r->x = be->ops->alloc(be, (size_t)(N * D) * sizeof(float));
    r->xn = be->ops->alloc(be, (size_t)(N * D) * sizeof(float));
    r->qkv = be->ops->alloc(be, (size_t)(N * QKV) * sizeof(float));
    r->att = be->ops->alloc(be, (size_t)(N * hp->n_head * Dh) * sizeof(float));
    r->ffu = be->ops->alloc(be, (size_t)(N * 2 * F) * sizeof(float));
    r->ffh = be->ops->alloc(be, (size_t)(N * F) * sizeof(float));
    r->tmp = be->ops->alloc(be, (size_t)(N * D) * sizeof(float));
    r->last = be->ops->alloc(be, (size_t)(max_seqs * D) * sizeof(float));
    r->logits = be->ops->alloc(be, (size_t)(max_seqs * hp->n_vocab) * sizeof(float));
    r->embd_host = malloc((size_t)(N * D) * sizeof(float));
    r->kv_host = malloc((size_t)(N * 2 * KV) * sizeof(float));
    r->kv_conv = malloc((size_t)KV * sizeof(uint16_t));
    r->pos = malloc((size_t)N * sizeof(int64_t));
    if (!r->x || !r->xn || !r->qkv || !r->att || !r->ffu || !r->ffh || !r->tmp || !r->last ||
        !r->logits || !r->embd_host || !r->kv_host || !r->kv_conv || !r->pos) {
        lm_runner_free(r);
        return err_set(e, "lm runner: out of memory for %lld rows", (long long)N);
    }
    return 0;
}

void lm_runner_free(struct lm_runner *r)
{
    if (!r || !r->m) {
        if (r)
            memset(r, 0, sizeof *r);
        return;
    }
    struct backend *be = r->m->be;
    float *dev[] = { r->x, r->xn, r->qkv, r->att, r->ffu, r->ffh, r->tmp, r->last, r->logits };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        be->ops->release(be, dev[i]);
    free(r->embd_host);
    free(r->kv_host);
    free(r->kv_conv);
    free(r->pos);
    memset(r, 0, sizeof *r);
}

/* ---- forward --------------------------------------------------------------------------- */

/*
 * y[n][M] = x[n][K]·Wᵀ (+ b). With bf16 weights and round_bf16 (the reference's bf16
 * activations) x is rounded to bf16 and the products run in the bf16 kernel over the panels
 * the backend packed the matrix into at load (BACKEND_WEIGHT_LINEAR_BF16), which add every
 * output in one order whatever the rows: a decode step of 16 sequences shares each weight
 * load and still gives each sequence the bits it gets alone, and a prefill block the same bits
 * too (16 rows: 1.5x the unpacked dot-product tiles; prefill 1.3x the per-call packing).
 * With q8_0 weights x is quantized per block of 32 as q8_0 activations are (gemm_q8.h)
 * and the integer block dot products are combined in one fixed order, for prefill and decode
 * alike: a row's linear outputs have the same bits whether it is decoded alone, in a batch or
 * in a prefill block (each weight load is shared by up to 16 rows; the kernel also measured
 * 2.8x the f32 GEMM's rate on prefill).
 * Other weights: the backend's row-exact linear for decode steps (the CPU one: the panels
 * it packed at load, or the GEMV in groups of GEMV_MAX_ROWS rows), its fastest for prefill.
 */
static void linear(const struct lm_model *m, float *y, const float *x, const struct tensor *w,
                   const struct tensor *b, int64_t n, int decode)
{
    struct backend *be = m->be;
    if (w->type == DTYPE_BF16 && m->round_bf16) {
        be->ops->linear_bf16(be, y, x, w, b, n, decode);
        return;
    }
    if (w->type == DTYPE_Q8_0) { /* x quantized to q8_0 blocks, integer products */
        be->ops->linear_q8(be, y, x, w, b, n);
        return;
    }
    be->ops->linear(be, y, x, w, b, n, decode);
}

/* Appends the K and V parts of rows [row0, row0 + n) of qkv to layer l of cache c at
 * positions c->n_pos.. (K is already rotated). */
static void cache_store(struct lm_runner *r, struct lm_cache *c, int l, int64_t row0, int64_t n)
{
    const struct lm_hparams *hp = &r->m->hp;
    struct backend *be = r->m->be;
    const int64_t Dh = hp->head_dim, KV = (int64_t)hp->n_kv_head * Dh;
    const int64_t QKV = (int64_t)(hp->n_head + 2 * hp->n_kv_head) * Dh, q = hp->n_head * Dh;
    const size_t esz = c->type == DTYPE_F32 ? 4 : 2;
    for (int64_t i = 0; i < n; i++)
        be->ops->download(be, r->kv_host + i * 2 * KV, r->qkv + (row0 + i) * QKV + q,
                          (size_t)(2 * KV) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        int64_t p = c->n_pos + i;
        for (int kv = 0; kv < 2; kv++) {
            uint8_t *base = (uint8_t *)(kv ? c->v : c->k);
            uint8_t *dst = base + ((size_t)l * (size_t)c->layer_elems + (size_t)(p * KV)) * esz;
            const float *src = r->kv_host + i * 2 * KV + kv * KV;
            if (c->type == DTYPE_F32) {
                be->ops->upload(be, dst, src, (size_t)KV * sizeof(float));
            } else {
                dtype_from_f32(c->type, src, r->kv_conv, KV);
                be->ops->upload(be, dst, r->kv_conv, (size_t)KV * esz);
            }
        }
    }
}

int lm_forward(struct lm_runner *r, struct lm_cache *const *caches, const int32_t *ids,
               const int64_t *n_tok, int n_seq, float *logits, struct err *e)
{
    const struct lm_model *m = r->m;
    const struct lm_hparams *hp = &m->hp;
    struct backend *be = m->be;
    const struct backend_ops *op = be->ops;
    const int64_t D = hp->n_embd, F = hp->n_ff, Dh = hp->head_dim, H = hp->n_head;
    const int64_t G = hp->n_kv_head, HD = H * Dh, QKV = (H + 2 * G) * Dh, V = hp->n_vocab;

    /* validate everything before touching any cache */
    if (n_seq < 1 || n_seq > r->max_seqs)
        return err_set(e, "lm: %d sequences in one step (1..%d)", n_seq, r->max_seqs);
    int64_t N = 0;
    int decode = 1;
    for (int s = 0; s < n_seq; s++) {
        if (n_tok[s] < 1)
            return err_set(e, "lm: sequence %d has no tokens", s);
        if (n_tok[s] > 1)
            decode = 0;
        if (caches[s]->n_pos + n_tok[s] > caches[s]->n_ctx)
            return err_set(e,
                           "lm: context limit: %lld + %lld tokens exceed the %lld positions "
                           "of sequence %d's cache",
                           (long long)caches[s]->n_pos, (long long)n_tok[s],
                           (long long)caches[s]->n_ctx, s);
        for (int t = 0; t < s; t++)
            if (caches[t] == caches[s])
                return err_set(e, "lm: one cache given for sequences %d and %d", t, s);
        N += n_tok[s];
    }
    if (N > r->max_rows)
        return err_set(e, "lm: %lld tokens in one step (at most %lld)", (long long)N,
                       (long long)r->max_rows);
    for (int64_t i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return err_set(e, "lm: token id %d is outside the vocabulary [0, %lld)", ids[i],
                           (long long)V);

    /* 1. Embedding: x = E[id] */
    for (int64_t i = 0, s = 0; s < n_seq; s++)
        for (int64_t t = 0; t < n_tok[s]; t++, i++)
            r->pos[i] = caches[s]->n_pos + t;
    for (int64_t i = 0; i < N; i++)
        dtype_to_f32(m->embd->type, tensor_row(m->embd, ids[i]), r->embd_host + i * D, D);
    op->upload(be, r->x, r->embd_host, (size_t)(N * D) * sizeof(float));

    for (int l = 0; l < hp->n_layer; l++) {
        const struct lm_layer *L = &m->layers[l];
        /* 2a. RMSNorm (input_layernorm) */
        op->rms_norm(be, r->xn, r->x, &L->attn_norm, N, D, hp->eps, m->round_bf16);
        /* 2b. fused QKV with bias: [N][Q (H·Dh) | K (G·Dh) | V (G·Dh)] */
        linear(m, r->qkv, r->xn, &L->qkv, &L->qkv_bias, N, decode);
        /* 2c. partial interleaved RoPE on the first R dims of every Q and K head */
        op->rope(be, &m->rope, r->qkv, N, QKV, (int)H, (int)Dh, r->pos, 0);
        op->rope(be, &m->rope, r->qkv + HD, N, QKV, (int)G, (int)Dh, r->pos, 0);
        /* 2d. per sequence: append K, V (after RoPE) to its cache, attend over the cache */
        for (int64_t s = 0, row0 = 0; s < n_seq; row0 += n_tok[s], s++) {
            struct lm_cache *c = caches[s];
            cache_store(r, c, l, row0, n_tok[s]);
            size_t esz = c->type == DTYPE_F32 ? 4 : 2;
            const uint8_t *k = (const uint8_t *)c->k + (size_t)l * (size_t)c->layer_elems * esz;
            const uint8_t *v = (const uint8_t *)c->v + (size_t)l * (size_t)c->layer_elems * esz;
            struct attn_desc d = {
                .n_head = (int)H,
                .n_kv_head = (int)G,
                .head_dim = (int)Dh,
                .kv_type = c->type,
                .q_stride = QKV,
                .out_stride = HD,
                .mask = { .kind = ATTN_MASK_CAUSAL, .pos0 = c->n_pos },
            };
            op->attention(be, r->att + row0 * HD, r->qkv + row0 * QKV, k, v, n_tok[s],
                          c->n_pos + n_tok[s], &d);
        }
        /* 2e. output projection (no bias), residual */
        linear(m, r->tmp, r->att, &L->dense, NULL, N, decode);
        op->add(be, r->x, r->x, r->tmp, N * D);
        /* 2f. RMSNorm (post_attention_layernorm) */
        op->rms_norm(be, r->xn, r->x, &L->ffn_norm, N, D, hp->eps, m->round_bf16);
        /* 2g. SwiGLU MLP: u = [gate | up], m = SiLU(gate)·up, residual */
        linear(m, r->ffu, r->xn, &L->up, NULL, N, decode);
        op->swiglu(be, r->ffh, r->ffu, N, F);
        linear(m, r->tmp, r->ffh, &L->down, NULL, N, decode);
        op->add(be, r->x, r->x, r->tmp, N * D);
    }
    for (int s = 0; s < n_seq; s++)
        caches[s]->n_pos += n_tok[s];
    if (!logits)
        return 0;

    /* 3. final RMSNorm of each sequence's last row, logits = x·W_outᵀ */
    for (int64_t s = 0, end = 0; s < n_seq; s++) {
        end += n_tok[s];
        op->rms_norm(be, r->last + s * D, r->x + (end - 1) * D, &m->final_norm, 1, D, hp->eps,
                     m->round_bf16);
    }
    linear(m, r->logits, r->last, &m->output, NULL, n_seq, 1);
    op->download(be, logits, r->logits, (size_t)(n_seq * V) * sizeof(float));
    return 0;
}

int lm_prefill(struct lm_runner *r, struct lm_cache *c, const int32_t *ids, int64_t n,
               float *logits, struct err *e)
{
    if (n < 1)
        return err_set(e, "lm: empty prompt");
    if (c->n_pos + n > c->n_ctx)
        return err_set(e,
                       "lm: context limit: %lld + %lld tokens exceed the %lld positions of "
                       "the cache",
                       (long long)c->n_pos, (long long)n, (long long)c->n_ctx);
    for (int64_t i = 0; i < n; i++) /* checked up front: a bad id must not leave half a prompt */
        if (ids[i] < 0 || ids[i] >= r->m->hp.n_vocab)
            return err_set(e, "lm: token id %d is outside the vocabulary [0, %lld)", ids[i],
                           (long long)r->m->hp.n_vocab);
    for (int64_t i = 0; i < n; i += r->max_rows) {
        int64_t k = n - i < r->max_rows ? n - i : r->max_rows;
        if (lm_forward(r, &c, ids + i, &k, 1, i + k == n ? logits : NULL, e) != 0)
            return -1;
    }
    return 0;
}
