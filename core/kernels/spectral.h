/*
 * spectral — short-time Fourier transforms with torch.stft / torch.istft semantics
 * (center=True with reflection padding, one-sided, normalized=False, win_length = n_fft):
 * Whisper's log-mel front-end (n_fft 400, hop 160) and HiFT's source STFT and output iSTFT
 * (n_fft 16, hop 4).
 *
 * Shape letters: N = n_fft, B = N/2 + 1 one-sided bins, F frames, L samples.
 * A spectrum is [2B][F]: rows 0..B-1 the real parts, rows B..2B-1 the imaginary parts, time
 * contiguous — exactly HiFT's 18-channel source input (channel-concat of Re and Im), and a
 * [C][T] activation like every other one.
 *
 * Both directions are a GEMM against a precomputed DFT basis with the window folded in (built
 * in double and rounded once), which for these sizes is as fast as an FFT and exact to float
 * rounding; the basis lives in a plan made at load.
 */
#ifndef PARLEY_SPECTRAL_H
#define PARLEY_SPECTRAL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"
#include "runtime/pool.h"

struct spectral_plan {
    int n_fft, hop, n_bins; /* n_bins = n_fft/2 + 1 */
    float *window;          /* [N] */
    float *fwd;             /* [2B][N]: w[n]cos(2pi kn/N) rows, then -w[n]sin(2pi kn/N) rows */
    float *inv;             /* [2B][N]: one-sided inverse DFT (1/N, interior bins doubled),
                               times the window, for Re rows then Im rows */
};

/*
 * Hann window of length n: w[i] = 0.5 - 0.5 cos(2 pi i / M), M = n when periodic else n - 1.
 * spectral_hann computes it in double and rounds once, as scipy's get_window('hann', n,
 * fftbins=periodic) cast to float32 — HiFT's window, bit for bit.
 * spectral_hann_torch follows torch.hann_window's float32 recipe (the angle i * (float)(2 pi /
 * M) rounded to float, its cosine rounded to float, then * -0.5 + 0.5 in float): the Whisper
 * front-end's window. It matches torch except where torch's vectorised cosf is off by its
 * last bit (12 of 400 entries for n = 400, by one ulp); spectral_hann differs from torch in
 * most entries by up to 4 ulps, because torch's rounded angle is less accurate. For a
 * bit-exact Whisper window, store torch's table in the model file.
 */
void spectral_hann(float *w, int n, int periodic);
void spectral_hann_torch(float *w, int n, int periodic);

/* Builds the bases for window [n_fft] (copied) and hop. Returns -1 on bad sizes or no
 * memory. Free with spectral_plan_free (also safe on a zeroed or failed plan). */
int spectral_plan_init(struct spectral_plan *p, int n_fft, int hop, const float *window,
                       struct err *e);
void spectral_plan_free(struct spectral_plan *p);

/* Frames torch.stft(center=True) gives for l samples: 1 + (l + 2*(N/2) - N) / hop. */
int64_t spectral_frames(const struct spectral_plan *p, int64_t l);

size_t spectral_stft_scratch_floats(const struct spectral_plan *p, int64_t n_frames, int n_threads);

/*
 * out [2B][n_frames] = the first n_frames frames (n_frames <= spectral_frames(l); Whisper
 * drops the last one) of torch.stft(x, N, hop, window=w, center=True, pad_mode='reflect',
 * onesided=True) as real rows then imaginary rows. Frame f covers reflect-padded samples
 * [f*hop, f*hop + N). Returns -1 when l <= N/2 (PyTorch's reflection needs pad < l).
 */
int spectral_stft(struct pool *pool, const struct spectral_plan *p, float *out, int64_t n_frames,
                  const float *x, int64_t l, float *scratch, struct err *e);

/* out [B][F] = |X|^2 from a spectrum [2B][F], as Whisper: the magnitude sqrt(re^2 + im^2)
 * rounded to float first, then squared (errata E9). */
void spectral_power(float *out, const float *spec, int n_bins, int64_t n_frames);

/* Samples torch.istft(center=True, length=None) gives for n_frames frames: hop*(F - 1). */
int64_t spectral_istft_len(const struct spectral_plan *p, int64_t n_frames);

size_t spectral_istft_scratch_floats(const struct spectral_plan *p, int64_t n_frames);

/*
 * out [length] = torch.istft(spec, N, hop, window=w, center=True, onesided, length=length) of
 * spec [2B][n_frames] (Re rows then Im rows; the imaginary parts of the DC and Nyquist bins
 * are ignored, as by a one-sided inverse real FFT): per frame the inverse DFT (1/N) times the
 * window, overlap-added, divided by the overlap-added squared window, with N/2 samples
 * trimmed at the start; samples past the last frame are zero. length < 0 means
 * spectral_istft_len(). Returns -1 (out untouched) when the squared-window envelope falls
 * below 1e-11 inside the output, which torch refuses too.
 */
int spectral_istft(struct pool *pool, const struct spectral_plan *p, float *out, int64_t length,
                   const float *spec, int64_t n_frames, float *scratch, struct err *e);

#endif
