/*
 * norm — normalizations: RMSNorm (GLM-4), LayerNorm (Whisper encoder, conformer, flow
 * transformer blocks), GroupNorm (the flow decoder's U-Net and length regulator).
 *
 * Shape letters: x and out are [N][D] rows for RMSNorm and LayerNorm (each row normalized
 * over its D values; w, b are [D]); [C][T] channel-major for GroupNorm (G groups of C/G
 * consecutive channels, each normalized over its (C/G)·T values; w, b are [C]).
 *
 * Numerics: f32 throughout. Sums run in 16 interleaved f32 partial sums added in a fixed
 * tree (GroupNorm adds its per-channel sums in double); the variance is the centred second
 * pass, not E[x²] − E[x]². Results agree with a double-precision reference to ~1e-6
 * relative and do not depend on the CPU level or the thread count (each row or group is
 * computed by one thread, in the same order). out may equal x.
 */
#ifndef PARLEY_NORM_H
#define PARLEY_NORM_H

#include <stdint.h>

#include "runtime/pool.h"

/*
 * RMSNorm as GLM-4 defines it (spec §4.3a): r = x·(1/√(mean(x²) + eps)), y = w·r; with
 * round_bf16 set, y is rounded to the nearest bf16 value (ties to even) and stored as f32,
 * as the reference casts the product back to bf16.
 */
void norm_rms(struct pool *pool, float *out, const float *x, const float *w, int64_t n, int64_t dim,
              float eps, int round_bf16);

/* LayerNorm: y = (x − mean)·(1/√(var + eps))·w + b (biased variance); w or b may be NULL
 * (1 and 0). */
void norm_layer(struct pool *pool, float *out, const float *x, const float *w, const float *b,
                int64_t n, int64_t dim, float eps);

/* GroupNorm (PyTorch F.group_norm): C a multiple of G; w or b may be NULL. */
void norm_group(struct pool *pool, float *out, const float *x, const float *w, const float *b,
                int64_t n_ch, int64_t n_t, int n_groups, float eps);

#endif
