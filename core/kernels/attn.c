/*
 * attn — masks, the thread split, dispatch to the kernels of this CPU's level, and the
 * portable kernels.
 *
 * Shape letters as in attn.h: Q query rows, K keys, H query heads, G KV heads, D head dim.
 *
 * Work unit: a tile of `lanes` (query row, head) pairs sharing a KV head (see attn_simd.h
 * for how a tile is computed). Tiles are dealt round-robin to one slot per thread, each slot
 * with its own scratch; which slot runs a tile never changes its numbers, and dealing
 * round-robin balances causal prefill, where later rows see more keys.
 */
#include "kernels/attn.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "runtime/cpu.h"

#define GL ATTN_MAX_LANES /* lanes of the portable kernel */

int64_t attn_mask_end(const struct attn_mask *m, int64_t i, int64_t n_kv)
{
    int64_t end = n_kv;
    if (!m)
        return end;
    if (m->kind == ATTN_MASK_CAUSAL)
        end = m->pos0 + i + 1;
    else if (m->kind == ATTN_MASK_BLOCK_CAUSAL)
        end = ((m->pos0 + i) / m->block + 1) * m->block;
    if (m->n_valid > 0 && m->n_valid < end)
        end = m->n_valid;
    return end < 0 ? 0 : end > n_kv ? n_kv : end;
}

/* ---- softmax ------------------------------------------------------------------------ */

static void generic_softmax_row(float *out, const float *x, int64_t end, int64_t n)
{
    float m = -INFINITY, sum = 0;
    for (int64_t i = 0; i < end; i++)
        m = x[i] > m ? x[i] : m;
    if (m == -INFINITY)
        m = 0; /* nothing finite: every weight is e^−inf = 0 */
    for (int64_t i = 0; i < end; i++) {
        out[i] = expf(x[i] - m);
        sum += out[i];
    }
    float inv = sum > 0 ? 1.0f / sum : 0.0f;
    for (int64_t i = 0; i < end; i++)
        out[i] *= inv;
    for (int64_t i = end > 0 ? end : 0; i < n; i++)
        out[i] = 0.0f;
}

struct softmax_job {
    attn_row_fn *row;
    float *out;
    const float *x;
    int64_t n;
    const struct attn_mask *mask;
};

static void run_softmax(void *arg, int64_t begin, int64_t end)
{
    const struct softmax_job *j = arg;
    for (int64_t r = begin; r < end; r++)
        j->row(j->out + r * j->n, j->x + r * j->n, attn_mask_end(j->mask, r, j->n), j->n);
}

void attn_softmax(struct pool *pool, float *out, const float *x, int64_t n_rows, int64_t n,
                  const struct attn_mask *mask)
{
    struct softmax_job j = { generic_softmax_row, out, x, n, mask };
    if (cpu_level() == CPU_LEVEL_AVX512)
        j.row = attn_avx512_softmax_row;
    else if (cpu_level() == CPU_LEVEL_AVX2)
        j.row = attn_avx2_softmax_row;
    int64_t grain = n >= 4096 ? 1 : 4096 / (n > 0 ? n : 1);
    pool_for(pool, n_rows, grain, run_softmax, &j);
}

/* ---- attention: tiles --------------------------------------------------------------- */

int64_t attn_tile_gather(const struct attn_job *jb, int64_t tile, float *qt, float *end_f,
                         int *n_lanes)
{
    const int hd = jb->head_dim, w = jb->lanes;
    const int64_t g = tile / jb->tiles_per_head, p0 = tile % jb->tiles_per_head * w;
    const int64_t n_pairs = jb->n_q * jb->ratio;
    int64_t jmax = 0;
    *n_lanes = (int)(n_pairs - p0 < w ? n_pairs - p0 : w);
    for (int l = 0; l < w; l++) {
        int64_t end = 0;
        if (l < *n_lanes) {
            int64_t p = p0 + l, i = p / jb->ratio, h = g * jb->ratio + p % jb->ratio;
            const float *q = jb->q + i * jb->q_stride + h * hd;
            for (int d = 0; d < hd; d++)
                qt[d * w + l] = q[d];
            end = attn_mask_end(&jb->mask, i, jb->n_kv);
        } else {
            for (int d = 0; d < hd; d++)
                qt[d * w + l] = 0.0f;
        }
        end_f[l] = (float)end;
        jmax = end > jmax ? end : jmax;
    }
    return jmax;
}

void attn_tile_scatter(const struct attn_job *jb, int64_t tile, const float *acc, const float *inv,
                       int n_lanes)
{
    const int hd = jb->head_dim, w = jb->lanes;
    const int64_t g = tile / jb->tiles_per_head, p0 = tile % jb->tiles_per_head * w;
    for (int l = 0; l < n_lanes; l++) {
        int64_t p = p0 + l, i = p / jb->ratio, h = g * jb->ratio + p % jb->ratio;
        float *o = jb->out + i * jb->out_stride + h * hd;
        for (int d = 0; d < hd; d++)
            o[d] = acc[d * w + l] * inv[l];
    }
}

/* Four-float vectors (GCC/clang vector extension; SSE2 on the baseline) for the portable
 * kernel's lanes. */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The portable tile kernel: the scheme of attn_simd.h with GL lanes as four 4-float
 * vectors, and libm's expf. */
static void generic_tile(const struct attn_job *jb, int64_t tile, float *sc)
{
    const int hd = jb->head_dim;
    const int64_t g = tile / jb->tiles_per_head;
    const size_t elem = jb->kv_type == DTYPE_F32 ? 4 : 2;
    float *qt = sc, *acc = qt + hd * GL, *s = acc + hd * GL;
    float *buf = s + ATTN_CHUNK * GL, *end_f = buf + ATTN_CHUNK * hd, *inv = end_f + GL;
    float m[GL], l[GL], mu[GL], alpha[GL];
    const float *rows[ATTN_CHUNK];
    int n_lanes;
    const int64_t jmax = attn_tile_gather(jb, tile, qt, end_f, &n_lanes);
    memset(acc, 0, sizeof(float) * (size_t)hd * GL);
    for (int k = 0; k < GL; k++) {
        m[k] = -INFINITY;
        l[k] = 0.0f;
    }
    for (int64_t j0 = 0; j0 < jmax; j0 += ATTN_CHUNK) {
        const int nc = (int)(jmax - j0 < ATTN_CHUNK ? jmax - j0 : ATTN_CHUNK);
        for (int c = 0; c < nc; c++) {
            const uint8_t *src = jb->k + ((j0 + c) * jb->k_stride + g * hd) * elem;
            const float *kr = (const float *)src;
            float a[GL];
            if (jb->kv_type != DTYPE_F32) {
                dtype_to_f32(jb->kv_type, src, buf + c * hd, hd);
                kr = buf + c * hd;
            }
            v4f a4[GL / 4] = { { 0 } };
            for (int d = 0; d < hd; d++) {
                v4f kd = { kr[d], kr[d], kr[d], kr[d] };
                for (int u = 0; u < GL / 4; u++)
                    a4[u] += load4(qt + d * GL + 4 * u) * kd;
            }
            memcpy(a, a4, sizeof a);
            for (int k = 0; k < GL; k++) {
                float x = a[k] * jb->scale + jb->bias;
                s[c * GL + k] = (float)(j0 + c) >= end_f[k] ? -INFINITY : x;
            }
        }
        int rescale = 0;
        for (int k = 0; k < GL; k++) {
            float mx = m[k];
            for (int c = 0; c < nc; c++)
                mx = s[c * GL + k] > mx ? s[c * GL + k] : mx;
            mu[k] = mx == -INFINITY ? 0.0f : mx;
            alpha[k] = m[k] == -INFINITY ? 1.0f : expf(m[k] - mu[k]);
            rescale |= alpha[k] != 1.0f;
            m[k] = mx;
        }
        if (rescale) {
            for (int k = 0; k < GL; k++)
                l[k] *= alpha[k];
            for (int d = 0; d < hd; d++)
                for (int k = 0; k < GL; k++)
                    acc[d * GL + k] *= alpha[k];
        }
        for (int c = 0; c < nc; c++)
            for (int k = 0; k < GL; k++) {
                float p = expf(s[c * GL + k] - mu[k]);
                l[k] += p;
                s[c * GL + k] = p;
            }
        for (int c = 0; c < nc; c++) {
            const uint8_t *src = jb->v + ((j0 + c) * jb->v_stride + g * hd) * elem;
            rows[c] = (const float *)src;
            if (jb->kv_type != DTYPE_F32) {
                dtype_to_f32(jb->kv_type, src, buf + c * hd, hd);
                rows[c] = buf + c * hd;
            }
        }
        for (int d = 0; d < hd; d++) {
            v4f a4[GL / 4];
            memcpy(a4, acc + d * GL, sizeof a4);
            for (int c = 0; c < nc; c++) {
                v4f vd = { rows[c][d], rows[c][d], rows[c][d], rows[c][d] };
                for (int u = 0; u < GL / 4; u++)
                    a4[u] += load4(s + c * GL + 4 * u) * vd;
            }
            memcpy(acc + d * GL, a4, sizeof a4);
        }
    }
    for (int k = 0; k < GL; k++)
        inv[k] = l[k] > 0 ? 1.0f / l[k] : 0.0f;
    attn_tile_scatter(jb, tile, acc, inv, n_lanes);
}

/* ---- attention: driver --------------------------------------------------------------- */

size_t attn_scratch_size(const struct pool *pool, int head_dim)
{
    return (size_t)pool_threads(pool) * (size_t)attn_tile_floats(head_dim) * sizeof(float) + 64;
}

struct forward {
    struct attn_job job;
    attn_tile_fn *tile;
    float *scratch; /* 64-byte aligned, slots of attn_tile_floats(D) floats */
    int64_t n_slots, n_tiles;
};

static void run_slots(void *arg, int64_t begin, int64_t end)
{
    const struct forward *f = arg;
    const int64_t per = attn_tile_floats(f->job.head_dim);
    for (int64_t slot = begin; slot < end; slot++)
        for (int64_t t = slot; t < f->n_tiles; t += f->n_slots)
            f->tile(&f->job, t, f->scratch + slot * per);
}

void attn_forward(struct pool *pool, float *out, const float *q, const void *k, const void *v,
                  int64_t n_q, int64_t n_kv, const struct attn_desc *d, void *scratch)
{
    assert(d->n_head > 0 && d->n_kv_head > 0 && d->n_head % d->n_kv_head == 0);
    assert(d->head_dim > 0 && scratch);
    assert(d->kv_type == DTYPE_F32 || d->kv_type == DTYPE_F16 || d->kv_type == DTYPE_BF16);
    assert(d->mask.kind != ATTN_MASK_BLOCK_CAUSAL || d->mask.block >= 1);
    assert(d->mask.pos0 >= 0);
    assert(n_kv < (INT64_C(1) << 24)); /* key indices are compared as exact floats */
    if (n_q <= 0)
        return;
    const int64_t q_row = (int64_t)d->n_head * d->head_dim;
    const int64_t kv_row = (int64_t)d->n_kv_head * d->head_dim;
    struct forward f;
    f.job = (struct attn_job){
        .out = out,
        .q = q,
        .k = k,
        .v = v,
        .q_stride = d->q_stride ? d->q_stride : q_row,
        .out_stride = d->out_stride ? d->out_stride : q_row,
        .k_stride = d->k_stride ? d->k_stride : kv_row,
        .v_stride = d->v_stride ? d->v_stride : kv_row,
        .n_q = n_q,
        .n_kv = n_kv > 0 ? n_kv : 0,
        .head_dim = d->head_dim,
        .ratio = d->n_head / d->n_kv_head,
        .kv_type = d->kv_type,
        .scale = d->scale != 0 ? d->scale : 1.0f / sqrtf((float)d->head_dim),
        .bias = d->bias,
        .mask = d->mask,
    };
    switch (cpu_level()) {
    case CPU_LEVEL_AVX512:
        f.tile = attn_avx512_tile;
        f.job.lanes = 16;
        break;
    case CPU_LEVEL_AVX2:
        f.tile = attn_avx2_tile;
        f.job.lanes = 8;
        break;
    default:
        f.tile = generic_tile;
        f.job.lanes = GL;
        break;
    }
    f.job.tiles_per_head = (n_q * f.job.ratio + f.job.lanes - 1) / f.job.lanes;
    f.n_tiles = f.job.tiles_per_head * d->n_kv_head;
    f.n_slots = pool_threads(pool);
    f.scratch = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    pool_for(pool, f.n_slots, 1, run_slots, &f);
}
