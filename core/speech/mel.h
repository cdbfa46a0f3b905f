/*
 * mel — the Whisper log-mel front-end (spec §2.4, errata E9): periodic Hann window (torch's
 * float32 recipe), STFT with reflection padding of n_fft/2 at both ends of the window's
 * signal, |X| rounded to float then squared, a Slaney mel filterbank built in double exactly
 * as transformers' mel_filter_bank and rounded to float, log10 of max(mel, 1e-10); then, per
 * 30 s window, max(L, max(L) − 8) and (L + 4)/4.
 *
 * Shape letters: N = n_fft, B = N/2 + 1 bins, M mel bins, F frames. Frame f covers the
 * reflect-padded samples [f·hop, f·hop + N), i.e. signal samples [f·hop − N/2, f·hop + N/2).
 *
 * The DFT runs in double precision (a GEMM against a double basis with the float32 window
 * folded in, re and im rounded to float32 as torch's complex64 STFT gives them): bins 8
 * decades below a loud frame's peak are still above the floor, and a float32 DFT-as-GEMM
 * loses them to cancellation (1e-4 error in the features), where the reference's FFT does not.
 *
 * The raw log10 mel (steps 1–5) is computed for any range of frames of a signal, so that the
 * tokenizer can compute it block by block as audio arrives; the floor (step 6) needs the
 * whole window and is applied by mel_feature(). Different chunkings of the frames agree to
 * float rounding (the GEMM's blocking may differ); stok always computes the same chunks (one
 * attention block's frames), so its stream and whole-file features are bit-identical.
 */
#ifndef PARLEY_MEL_H
#define PARLEY_MEL_H

#include <stdint.h>

#include "kernels/spectral.h"
#include "runtime/err.h"

struct mel {
    int n_mels, n_fft, hop, n_bins, sample_rate;
    float *window;  /* [N] torch's float32 periodic Hann (spectral_hann_torch) */
    double *basis;  /* [2B][N] w[n]cos(2πkn/N) rows, then −w[n]sin(2πkn/N) rows */
    float *filters; /* [M][B]: transformers' mel_filters [B][M] transposed */
};

int mel_init(struct mel *m, int n_mels, int n_fft, int hop, int sample_rate, struct err *e);
void mel_free(struct mel *m);

/* Floats of scratch mel_log10 needs for up to max_frames frames per call. */
int64_t mel_scratch_floats(const struct mel *m, int64_t max_frames);

/*
 * out [F][M] (frame-major) = log10(max(mel power, 1e-10)) of frames [f0, f0 + F) of the
 * signal x [0, l) (zero padding included: l is the padded length L_pad). Every sample the
 * frames read must lie in [−N/2, l + N/2) and l > N/2 (reflection). scratch:
 * mel_scratch_floats(m, F) floats.
 */
void mel_log10(const struct mel *m, float *out, const float *x, int64_t l, int64_t f0, int64_t nf,
               float *scratch);

/* The feature of one raw value: (max(L, max_l − 8) + 4) / 4 in float32. */
static inline float mel_feature(float l, float max_l)
{
    float floor_l = max_l - 8.0f;
    return ((l > floor_l ? l : floor_l) + 4.0f) / 4.0f;
}

#endif
