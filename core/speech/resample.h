/*
 * resample — rate conversion exactly as the reference front-end does it (spec §2.2 with
 * errata E2): torchaudio 2.3 `transforms.Resample(S, R)` with its defaults, a windowed-sinc
 * (Hann) polyphase filter, lowpass_filter_width 6, rolloff 0.99.
 *
 * Shape letters: o = S / gcd(S, R) input samples per step, n = R / gcd output samples per step
 * (phases), W = ceil(6·o / (0.99·min(o, n))) taps of margin, T = 2W + o taps per phase.
 *
 * The kernel [n][T] is built in double following torchaudio's operation order, the phase term
 * −j/n rounded to float32 first (E2), then rounded to float32: bit-identical to the reference
 * kernel. Output sample q·n + j = Σ_m k[j][m]·xpad[q·o + m], xpad = W zeros, x, W + o zeros;
 * the output has ceil(n·L/o) samples. Each output is summed in double and rounded once (the
 * reference sums in float32 on the GPU, so its outputs differ in the last bits).
 *
 * A stream produces exactly the samples of the whole-signal call, whatever the push sizes:
 * an output is emitted as soon as every input sample it reads has arrived.
 */
#ifndef PARLEY_RESAMPLE_H
#define PARLEY_RESAMPLE_H

#include <stdint.h>

#include "runtime/err.h"

/* Rates accepted (either side). */
#define RESAMPLE_MIN_RATE 1000
#define RESAMPLE_MAX_RATE 768000

struct resample {
    int in_rate, out_rate;
    int o, n;      /* input / output samples per step */
    int width;     /* W */
    int taps;      /* T = 2W + o */
    float *kernel; /* [n][T] */
};

/* Builds the kernel (a copy-through when the rates are equal: n = o = 1, one tap of 1 is not
 * built, samples are copied). Returns -1 for rates outside the limits or no memory. */
int resample_init(struct resample *r, int in_rate, int out_rate, struct err *e);
void resample_free(struct resample *r);

/* ceil(n·len / o): samples the whole-signal conversion of len input samples gives. */
int64_t resample_out_len(const struct resample *r, int64_t len);

/* out [resample_out_len(len)] = the conversion of x [len]. Returns -1 when out of memory. */
int resample_run(const struct resample *r, float *out, const float *x, int64_t len, struct err *e);

struct resample_stream {
    const struct resample *r;
    float *buf; /* [cap] xpad samples from absolute xpad index `start` */
    int64_t cap, len, start;
    int64_t q;     /* next output step */
    int64_t n_in;  /* input samples pushed */
    int64_t n_out; /* output samples emitted */
    int finished;
};

/* max_push: the most samples one push will give (sizes the buffer once). */
int resample_stream_init(struct resample_stream *s, const struct resample *r, int64_t max_push,
                         struct err *e);
void resample_stream_free(struct resample_stream *s);

/* Most samples one push of n inputs (or finish, n = 0) can emit. */
int64_t resample_stream_max_out(const struct resample_stream *s, int64_t n);

/* Pushes x [n] (n <= max_push); writes the newly complete outputs to out and returns their
 * count, or -1 (n too large, or pushed after finish). */
int64_t resample_stream_push(struct resample_stream *s, float *out, const float *x, int64_t n,
                             struct err *e);
/* The end of the input: writes the remaining outputs and returns their count. */
int64_t resample_stream_finish(struct resample_stream *s, float *out);

#endif
