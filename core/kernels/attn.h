/*
 * attn — softmax over rows, and multi-head attention with grouped KV heads and the masks of
 * the four models.
 *
 * Shape letters: Q query rows (i), K key/value positions (j), H query heads (h), G KV heads
 * (g), D head dimension. q and out are [Q][H][D] f32 and k, v are [K][G][D] (f32, f16 or
 * bf16), each with a stride between consecutive rows/positions, heads contiguous inside a
 * row. Query head h reads KV head h / (H/G) (GQA, spec §4.3d).
 *
 *   out[i][h] = Σ_j softmax_j( scale·q[i][h]·k[j][g] + bias, over the keys visible to i ) v[j][g]
 *
 * Every mask here makes the keys visible to query i a prefix [0, end_i) of the key range:
 *   none          end_i = K
 *   causal        key j visible iff j <= pos0 + i  (query i sits at absolute position pos0 + i
 *                 and keys at 0..K−1: prefill with or without a KV cache, and decode)
 *   block causal  key j visible iff j / B <= (pos0 + i) / B, i.e. "j <= i, or j in the same
 *                 block of B positions as i": the speech tokenizer (spec §3.3 step 3, B = 200
 *                 encoder frames) and the flow decoder's conformer (§7.3.3, B = 10 tokens)
 *   padding       keys j >= n_valid masked for every query; combines with the above
 * A query with no visible key gets an all-zero output row (softmax of nothing is defined as
 * zero weights), never NaN. Masked keys get weight exactly 0, as with the reference's
 * additive −3.4e38 / −inf masks.
 */
#ifndef PARLEY_ATTN_H
#define PARLEY_ATTN_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/dtype.h"
#include "runtime/pool.h"

enum attn_mask_kind {
    ATTN_MASK_NONE = 0,
    ATTN_MASK_CAUSAL = 1,
    ATTN_MASK_BLOCK_CAUSAL = 2,
};

/* A zero-initialized mask means "no mask". */
struct attn_mask {
    enum attn_mask_kind kind;
    int64_t pos0;    /* causal kinds: absolute position of query row 0 (>= 0) */
    int64_t block;   /* ATTN_MASK_BLOCK_CAUSAL: block length in positions (>= 1) */
    int64_t n_valid; /* > 0: keys j >= n_valid are padding, hidden from every query;
                        0: no padding */
};

/* end_i: query row i sees exactly keys [0, end_i) of n_kv. */
int64_t attn_mask_end(const struct attn_mask *m, int64_t i, int64_t n_kv);

/*
 * Softmax of each row of x [R][N] into out (out may equal x), rows numerically stabilized
 * by their maximum: out = e^(x − max) · (1/Σ). With a mask (NULL: none), row r is query r:
 * entries at and after end_r are 0 and the softmax runs over the visible prefix; a row with
 * nothing visible (or only −inf values: scores the caller masked itself) is all zeros.
 * Threads split the rows; each row is computed the same way whatever the split.
 */
void attn_softmax(struct pool *pool, float *out, const float *x, int64_t n_rows, int64_t n,
                  const struct attn_mask *mask);

struct attn_desc {
    int n_head, n_kv_head, head_dim; /* H (a multiple of G), G, D */
    enum dtype kv_type;              /* DTYPE_F32, DTYPE_F16 or DTYPE_BF16 */
    int64_t q_stride, out_stride;    /* floats between query rows; 0: H·D */
    int64_t k_stride, v_stride;      /* elements between key positions; 0: G·D (a KV cache
                                        laid out [pos][kv_head][D] has exactly this) */
    float scale;                     /* multiplies q·k; 0 means 1/√D */
    float bias;                      /* added to every visible score: the flow decoder adds
                                        1.0 (spec §7.3.9 quirk Q3); normally 0 */
    struct attn_mask mask;
};

/*
 * Bytes of scratch attn_forward needs with this pool (its thread count) and head dimension:
 * a few tens of KiB per thread, independent of the sequence lengths. Allocate once.
 */
size_t attn_scratch_size(const struct pool *pool, int head_dim);

/*
 * out = attention(q, k, v) for n_q query rows over n_kv key positions, as described above.
 * f32 arithmetic with f32 accumulation, one pass over the keys with a running (online)
 * softmax. scratch holds attn_scratch_size(pool, D) bytes (any alignment). out may equal q
 * when the strides agree. Threads split (query row, KV head) tiles; each output element is
 * computed by one thread with the same operations whatever the thread count, so results
 * are bit-identical for any pool. Different CPU levels differ in the last bits.
 */
void attn_forward(struct pool *pool, float *out, const float *q, const void *k, const void *v,
                  int64_t n_q, int64_t n_kv, const struct attn_desc *d, void *scratch);

/* ---- internal: the interface between attn.c and its per-ISA kernel files -------------- */

/* Keys processed per step of the online softmax. */
#define ATTN_CHUNK 16
/* Query lanes per tile at most (the vector width of the widest kernel). */
#define ATTN_MAX_LANES 16

/* Everything a tile kernel needs, resolved by attn_forward. */
struct attn_job {
    float *out;
    const float *q;
    const uint8_t *k, *v;
    int64_t q_stride, out_stride, k_stride, v_stride; /* k/v strides in elements */
    int64_t n_q, n_kv;
    int head_dim, ratio; /* ratio = H / G */
    enum dtype kv_type;
    float scale, bias;
    struct attn_mask mask;
    int lanes;              /* queries per tile: the kernel's vector width */
    int64_t tiles_per_head; /* tiles per KV head: ceil(n_q·ratio / lanes) */
};

/*
 * A tile is `lanes` consecutive (query row, head) pairs of one KV head g, pairs numbered
 * i·ratio + (h − g·ratio) (rows outer, the ratio heads sharing g inner): tile number
 * g·tiles_per_head + t holds pairs t·lanes .. t·lanes + lanes − 1. scratch: per-thread
 * floats, attn_tile_floats(head_dim) of them, 64-byte aligned.
 */
typedef void attn_tile_fn(const struct attn_job *job, int64_t tile, float *scratch);
attn_tile_fn attn_avx2_tile, attn_avx512_tile;

/* Softmax of one row over its visible prefix [0, end); zeros after it. */
typedef void attn_row_fn(float *out, const float *x, int64_t end, int64_t n);
attn_row_fn attn_avx2_softmax_row, attn_avx512_softmax_row;

/* Shared by the tile kernels of every level. attn_tile_gather copies the tile's queries
 * transposed into qt [D][lanes] (zeros for lanes past the last pair), their visible-key
 * counts into end_f [lanes] (as floats; 0 for missing lanes), and returns the largest count;
 * *n_lanes is the number of real lanes. attn_tile_scatter writes out = acc[d][lane] · inv[lane]
 * for the real lanes. */
int64_t attn_tile_gather(const struct attn_job *job, int64_t tile, float *qt, float *end_f,
                         int *n_lanes);
void attn_tile_scatter(const struct attn_job *job, int64_t tile, const float *acc, const float *inv,
                       int n_lanes);

static inline int64_t attn_tile_floats(int head_dim)
{
    /* q transposed [D][lanes], accumulators [D][lanes], scores [CHUNK][lanes], one key or
     * value chunk widened to f32 [CHUNK][D], then per-lane state; rounded to 64 bytes */
    int64_t n = 2 * (int64_t)head_dim * ATTN_MAX_LANES + ATTN_CHUNK * ATTN_MAX_LANES +
                ATTN_CHUNK * (int64_t)head_dim + 4 * ATTN_MAX_LANES;
    return (n + 15) / 16 * 16;
}

#endif
