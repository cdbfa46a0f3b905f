/*
 * resize — changing the length of the time axis: average pooling (the speech tokenizer's
 * 4:1 pooling before its VQ) and nearest-neighbour upsampling (the flow decoder's length
 * regulator, HiFT's F0 upsampling), with PyTorch's exact index rules.
 *
 * Shape letters: C channels, T_in / T_out frames. Two layouts: channel-major [C][T] (the
 * convolutions' layout; plain names) and time-major [T][C] (a transformer's rows; names
 * ending in _tc). These ops are memory-bound and small next to their neighbours; they take
 * no pool.
 */
#ifndef PARLEY_RESIZE_H
#define PARLEY_RESIZE_H

#include <stdint.h>

/*
 * Average pooling as F.avg_pool1d(F.pad(x, (0, pad_right)), kernel, stride): pad_right zeros
 * are appended and count in the mean (the tokenizer pads a ragged tail up to a multiple of
 * the kernel this way: pad_right = (k - T % k) % k). No ceil_mode.
 * T_out = (T + pad_right - kernel) / stride + 1, or 0 when the padded input is shorter than
 * the kernel. Each output is the float sum of its window in time order, divided by kernel.
 */
int64_t resize_avg_pool_out_len(int64_t t, int kernel, int stride, int pad_right);
void resize_avg_pool(float *out, const float *x, int64_t c, int64_t t, int kernel, int stride,
                     int pad_right);
void resize_avg_pool_tc(float *out, const float *x, int64_t t, int64_t c, int kernel, int stride,
                        int pad_right);

/*
 * F.interpolate(mode='nearest', size=t_out) source index for output frame dst, as PyTorch
 * computes it on CPU: dst itself when t_out == t_in, dst >> 1 when t_out == 2*t_in, else
 * min(floorf((float)dst * s), t_in - 1) with s = (float)t_in / (float)t_out (float32
 * arithmetic, which for some lengths differs from the exact floor(dst*t_in/t_out)).
 */
int64_t resize_nearest_index(int64_t dst, int64_t t_in, int64_t t_out);

/* Nearest upsampling (or downsampling) to t_out frames: [C][T_in] -> [C][T_out]. */
void resize_nearest(float *out, const float *x, int64_t c, int64_t t_in, int64_t t_out);
/* The same on time-major rows: [T_in][C] -> [T_out][C]. */
void resize_nearest_tc(float *out, const float *x, int64_t t_in, int64_t c, int64_t t_out);

/*
 * F.interpolate(mode='nearest', scale_factor=factor) / nn.Upsample(scale_factor=factor):
 * [C][T_in] -> [C][T_in*factor]. PyTorch then uses s = (float)(1.0/factor), which for a
 * power-of-two factor (HiFT's 256) is plain repetition.
 */
void resize_repeat(float *out, const float *x, int64_t c, int64_t t_in, int factor);

#endif
