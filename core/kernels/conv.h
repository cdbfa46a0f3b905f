/*
 * conv — 1-D convolution and transposed convolution over time, as torch.nn.functional.conv1d
 * and conv_transpose1d compute them for one batch element.
 *
 * Shape letters: C_in / C_out channels, K taps, T_in / T_out frames, G groups.
 * Activations are channel-major [C][T] (time contiguous: PyTorch's [C, T]). Weights are f32 in
 * PyTorch's own layout: Conv1d [C_out][C_in/G][K], ConvTranspose1d [C_in][C_out][K]. The
 * models' conv weights are small (HiFT 20 M, flow decoder convs ~20 M, tokenizer stem 5 M
 * numbers) and are converted to f32 once at load, so the kernels take plain float pointers.
 *
 * Both ops are im2col/col2im around OpenBLAS sgemm. Threads: the work is cut into tiles whose
 * shapes depend only on the problem (never on the thread count); each tile is one
 * single-threaded sgemm call run by one pool thread, so results are bit-identical for any
 * pool size. While an op runs it sets OpenBLAS to one thread (and restores the previous count
 * on return): parallelism comes from the pool, never from two thread systems at once.
 */
#ifndef PARLEY_CONV_H
#define PARLEY_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"
#include "runtime/pool.h"

enum conv_pad_mode {
    CONV_PAD_ZEROS = 0,   /* nn.Conv1d padding_mode='zeros' (and F.pad constant 0) */
    CONV_PAD_REFLECT = 1, /* 'reflect': the edge sample is not repeated; pads < T_in */
};

struct conv_params {
    int c_in, c_out;         /* both multiples of groups */
    int k;                   /* taps, >= 1 */
    int stride, dilation;    /* >= 1 */
    int pad_left, pad_right; /* >= 0; causal: pad_left = (k-1)*dilation, pad_right = 0 */
    int groups;              /* >= 1 */
    enum conv_pad_mode pad_mode;
};

/* Returns a params struct for the common symmetric case (PyTorch's `padding=p`). */
struct conv_params conv_params_make(int c_in, int c_out, int k, int stride, int dilation, int pad,
                                    int groups);

/* floor((T_in + pad_left + pad_right - dilation*(K-1) - 1) / stride) + 1, or 0 when the
 * padded input is shorter than one dilated kernel. */
int64_t conv_1d_out_len(const struct conv_params *p, int64_t t_in);

/* Floats of scratch conv_1d needs for this shape with a pool of n_threads (0 when none). */
size_t conv_1d_scratch_floats(const struct conv_params *p, int64_t t_in, int n_threads);

/*
 * out[co][t] = bias[co] + sum_{ci in group, k} w[co][ci'][k] * xpad[ci][t*stride + k*dilation]
 * where xpad is x padded by pad_left / pad_right (zeros or reflection).
 * out: [C_out][T_out]; x: [C_in][T_in]; w: [C_out][C_in/G][K]; bias: [C_out] or NULL.
 * scratch: conv_1d_scratch_floats(p, t_in, pool_threads(pool)) floats (may be NULL when
 * that is 0); size it once for the longest T. out must not overlap x. groups > 1 is exact but
 * not tuned (one small sgemm per group; no model here uses groups). Returns -1 with a
 * message for invalid parameters, an input too short for the kernel, or a reflection pad not
 * shorter than T_in; out is then untouched.
 */
int conv_1d(struct pool *pool, float *out, const float *x, const float *w, const float *bias,
            const struct conv_params *p, int64_t t_in, float *scratch, struct err *e);

struct conv_transpose_params {
    int c_in, c_out; /* groups = 1 */
    int k;           /* taps, >= 1 */
    int stride;      /* >= 1 */
    int dilation;    /* >= 1 */
    int pad;         /* removed from both ends of the full output, >= 0 */
    int out_pad;     /* extra frames on the right, 0 <= out_pad < max(stride, dilation) */
};

/* (T_in - 1)*stride - 2*pad + dilation*(K-1) + out_pad + 1, or 0 when that is not positive. */
int64_t conv_transpose_1d_out_len(const struct conv_transpose_params *p, int64_t t_in);

size_t conv_transpose_1d_scratch_floats(const struct conv_transpose_params *p, int64_t t_in,
                                        int n_threads);

/*
 * out[co][t] = bias[co] + sum over (ci, i, k) with i*stride + k*dilation - pad = t of
 * w[ci][co][k] * x[ci][i].  out: [C_out][T_out]; x: [C_in][T_in]; w: [C_in][C_out][K];
 * bias: [C_out] or NULL. scratch: conv_transpose_1d_scratch_floats() floats. out must not
 * overlap x. Returns -1 with a message for invalid parameters or an empty output.
 */
int conv_transpose_1d(struct pool *pool, float *out, const float *x, const float *w,
                      const float *bias, const struct conv_transpose_params *p, int64_t t_in,
                      float *scratch, struct err *e);

/*
 * Reflection padding along time (nn.ReflectionPad1d((pad_left, pad_right))): out [C][T +
 * pad_left + pad_right]; HiFT pads one frame on the left before its last stage. Returns -1
 * when a pad is not shorter than T (PyTorch refuses those too).
 */
int conv_pad_reflect(float *out, const float *x, int64_t c, int64_t t, int pad_left, int pad_right,
                     struct err *e);

#endif
