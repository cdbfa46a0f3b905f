/*
 * vec — elementwise arithmetic on f32 arrays: residual adds, bias broadcasts, scalings.
 *
 * Shape letters: n elements; [N][D] rows for vec_add_bias (bias [D] added to every row);
 * [C][T] channel-major for vec_add_bias_ch (bias [C], bias[c] added to all of row c, as
 * after a Conv1d).
 *
 * Each result is the single correctly rounded f32 operation written in the comment (no
 * fused multiply-add), so it is the same at every CPU level and with any compiler
 * vectorization. out may equal any input. Single-threaded: these are memory-bound and the
 * models' arrays are small enough to stay in cache.
 */
#ifndef PARLEY_VEC_H
#define PARLEY_VEC_H

#include <stdint.h>

/* out = x (memmove: any overlap) */
void vec_copy(float *out, const float *x, int64_t n);
/* out = a + b, a − b, a · b */
void vec_add(float *out, const float *a, const float *b, int64_t n);
void vec_sub(float *out, const float *a, const float *b, int64_t n);
void vec_mul(float *out, const float *a, const float *b, int64_t n);
/* out = x · s */
void vec_scale(float *out, const float *x, float s, int64_t n);
/* out = a + (b · s), the product rounded first */
void vec_add_scaled(float *out, const float *a, const float *b, float s, int64_t n);
/* out[r][d] = x[r][d] + bias[d] */
void vec_add_bias(float *out, const float *x, const float *bias, int64_t n_rows, int64_t dim);
/* out[c][t] = x[c][t] + bias[c] */
void vec_add_bias_ch(float *out, const float *x, const float *bias, int64_t n_ch, int64_t n_t);

#endif
