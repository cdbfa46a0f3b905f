/*
 * rope — rotary position embedding, GLM-4's partial interleaved form (spec §4.3c).
 *
 * Shape letters: x is [N][row_stride] floats, each row holding H heads of D values at head
 * stride D starting at the row's first float (apply it to the Q part and the K part of a
 * fused QKV row separately, with their own H). R = rot_dim, the leading dims of each head
 * that rotate, in adjacent pairs (2i, 2i+1), i < R/2 ("GPT-J style", not rotate-half):
 *
 *   θ_i = 1 / base^(2i/R)           f32, as the reference computes it
 *   c, s = cos(p·θ_i), sin(p·θ_i)    p·θ_i rounded to f32 first; c, s optionally rounded to
 *                                    bf16 (GLM-4 builds its table in bf16)
 *   out[2i]   = x[2i]·c − x[2i+1]·s
 *   out[2i+1] = x[2i+1]·c + x[2i]·s      dims R..D−1 unchanged
 *
 * GLM-4-Voice: D = 128, R = 64, base = 10000·rope_ratio, bf16 table. No other component
 * uses RoPE (the flow decoder's conformer uses ESPnet relative positions, a different thing).
 */
#ifndef PARLEY_ROPE_H
#define PARLEY_ROPE_H

#include <stdint.h>

#include "runtime/err.h"
#include "runtime/pool.h"

/* cos/sin for positions [0, n_pos), built once: decode then reads one row per token.
 * Positions past the table are computed on the fly with the same formulas (same values). */
struct rope_table {
    int rot_dim; /* R, even */
    int64_t n_pos;
    float base;
    int round_bf16;
    float *theta; /* [R/2] */
    float *cs;    /* [n_pos][R/2][2]: cos, sin */
};

/* Returns 0, or -1 (e set) for a bad rot_dim/base/n_pos or when memory runs out. */
int rope_table_init(struct rope_table *t, int rot_dim, float base, int64_t n_pos, int round_bf16,
                    struct err *e);
void rope_table_free(struct rope_table *t);

/* cos and sin of pair i at position p (p >= 0), from the table or computed. */
void rope_cos_sin(const struct rope_table *t, int64_t p, int i, float *c, float *s);

/*
 * Rotates x in place: row r at position pos[r], or pos0 + r when pos is NULL. head_dim >=
 * rot_dim. Threads split the rows.
 */
void rope_apply(struct pool *pool, const struct rope_table *t, float *x, int64_t n_rows,
                int64_t row_stride, int n_head, int head_dim, const int64_t *pos, int64_t pos0);

#endif
