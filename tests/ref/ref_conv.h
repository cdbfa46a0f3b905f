/*
 * ref_conv — naive double-precision references for the conv, resize, vq and spectral kernels,
 * written from the PyTorch definitions without the fast code's tiling, im2col or DFT bases.
 *
 * Shape letters: C channels, K taps, T frames, N = n_fft, B = N/2 + 1 bins, F frames, J
 * codebook rows, D dimensions. Layouts as in the kernels: [C][T]; spectra [2B][F].
 */
#ifndef PARLEY_REF_CONV_H
#define PARLEY_REF_CONV_H

#include <stdint.h>

/* F.conv1d(F.pad(x, (pad_left, pad_right), mode), w, bias, stride, dilation, groups);
 * reflect != 0 pads by reflection. Returns T_out (0 when too short, out untouched). */
int64_t ref_conv_1d(float *out, const float *x, const float *w, const float *bias, int c_in,
                    int c_out, int k, int stride, int dilation, int pad_left, int pad_right,
                    int groups, int reflect, int64_t t_in);

/* F.conv_transpose1d(x, w [C_in][C_out][K], bias, stride, padding, output_padding, groups=1,
 * dilation). Returns T_out. */
int64_t ref_conv_transpose_1d(float *out, const float *x, const float *w, const float *bias,
                              int c_in, int c_out, int k, int stride, int dilation, int pad,
                              int out_pad, int64_t t_in);

/* F.avg_pool1d(F.pad(x, (0, pad_right)), k, s) on [C][T]. Returns T_out. */
int64_t ref_conv_avg_pool(float *out, const float *x, int64_t c, int64_t t, int k, int s,
                          int pad_right);

/* PyTorch's CPU nearest source index (UpSample.h: nearest_idx), from its definition. */
int64_t ref_conv_nearest_index(int64_t dst, int64_t t_in, int64_t t_out);

/* Exact squared distances in double: dist[n][j] = sum_d (x[n][d] - c[j][d])^2. */
void ref_conv_vq_dist(double *dist, const float *x, int64_t n, const float *codebook, int64_t j,
                      int64_t d);
/* argmin of ref_conv_vq_dist rows, lowest index on ties. */
void ref_conv_vq_argmin(int32_t *idx, const float *x, int64_t n, const float *codebook, int64_t j,
                        int64_t d);

/* torch.stft(center=True, reflect, onesided) by the DFT definition in double; the first
 * n_frames frames into out [2B][n_frames]. */
void ref_conv_stft(float *out, const float *x, int64_t l, int n_fft, int hop, const float *window,
                   int64_t n_frames);

/* torch.istft(center=True, onesided, length) in double: Hermitian extension of each frame,
 * inverse DFT, window, overlap-add, divide by the squared-window envelope, trim. Returns -1
 * when the envelope is below 1e-11 inside the output. */
int ref_conv_istft(float *out, int64_t length, const float *spec, int64_t n_frames, int n_fft,
                   int hop, const float *window);

#endif
