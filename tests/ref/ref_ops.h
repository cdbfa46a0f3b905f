/*
 * ref_ops — naive double-precision references for the act, norm, attn and rope kernels,
 * written from the spec's formulas independently of the fast code (no calls into core/).
 *
 * Shape letters: [N][D] rows; [C][T] channel-major; attention q [Q][H][D], k/v [K][G][D]
 * (packed, already widened to double), out [Q][H][D].
 */
#ifndef PARLEY_REF_OPS_H
#define PARLEY_REF_OPS_H

#include <stdint.h>

double ref_ops_gelu(double x); /* x·Φ(x), exact erf form */
double ref_ops_silu(double x);
double ref_ops_mish(double x); /* x·tanh(ln(1 + e^x)) */
double ref_ops_elu(double x, double alpha);
double ref_ops_leaky_relu(double x, double slope);
double ref_ops_snake(double x, double alpha); /* x + sin²(αx)/(α + 1e-9) */

/* The nearest bf16 value of a float (ties to even), as a double. */
double ref_ops_bf16(float f);

/* out [N][D] */
void ref_ops_rms_norm(double *out, const float *x, const float *w, int64_t n, int64_t dim,
                      double eps);
void ref_ops_layer_norm(double *out, const float *x, const float *w, const float *b, int64_t n,
                        int64_t dim, double eps);
/* out [C][T]; G groups of C/G consecutive channels */
void ref_ops_group_norm(double *out, const float *x, const float *w, const float *b, int64_t n_ch,
                        int64_t n_t, int n_groups, double eps);

/* Which keys a query sees, from the spec's own wording: causal "key position <= query
 * position" (query i at pos0 + i); block causal "j <= i OR floor(j/B) == floor(i/B)" (§3.3,
 * §7.3.3); padding "key j valid iff j < n_valid" (n_valid 0: no padding). kind: 0 none,
 * 1 causal, 2 block causal. */
struct ref_ops_mask {
    int kind;
    int64_t pos0, block, n_valid;
};
int ref_ops_visible(const struct ref_ops_mask *m, int64_t i, int64_t j);

/* Row r of x [R][N] is query r. Rows with nothing visible are all zero. */
void ref_ops_softmax(double *out, const float *x, int64_t n_rows, int64_t n,
                     const struct ref_ops_mask *m);

void ref_ops_attention(double *out, const float *q, const double *k, const double *v, int64_t n_q,
                       int64_t n_kv, int n_head, int n_kv_head, int head_dim, double scale,
                       double bias, const struct ref_ops_mask *m);

/* GLM-4 RoPE on x [N][H][D] (packed): the first rot_dim dims of each head rotate in pairs
 * (2i, 2i+1) by the angle p·θ_i with θ_i and the angle evaluated in f32 as the reference
 * does, cos/sin rounded to f32 (and to bf16 when round_bf16). */
void ref_ops_rope(double *out, const float *x, int64_t n_rows, int n_head, int head_dim,
                  int rot_dim, float base, const int64_t *pos, int round_bf16);
/* The (cos, sin) pair the above uses for position p, pair i. */
void ref_ops_rope_cs(double *c, double *s, int64_t p, int i, int rot_dim, float base,
                     int round_bf16);

#endif
