/*
 * codec — streaming audio conversions the protocols need: a mono float resampler (libsoxr,
 * high quality) and Opus packet decode/encode (libopus, mono, 20 ms packets out).
 *
 * Every object is used by one thread at a time. Errors come from client data (a packet that
 * does not decode) or bad arguments: -1 / NULL with a struct err, never an abort.
 */
#ifndef PARLEY_CODEC_H
#define PARLEY_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"

/* Streaming mono float resampler (libsoxr, high quality). */
struct resampler;
struct resampler *resampler_new(int in_rate, int out_rate, struct err *e);
/* Upper bound of outputs for n_in more inputs (for sizing out). */
int64_t resampler_max_out(const struct resampler *r, int64_t n_in);
/* Converts n inputs; writes up to cap outputs; returns the count written, or -1 with e.
 * Output lags input by the filter delay; resampler_flush drains the rest at the end. */
int64_t resampler_process(struct resampler *r, float *out, int64_t cap, const float *in, int64_t n,
                          struct err *e);
int64_t resampler_flush(struct resampler *r, float *out, int64_t cap, struct err *e);
void resampler_free(struct resampler *r);

/* Opus packet decoder (libopus), mono, rate 8000/12000/16000/24000/48000. */
struct opus_in;
struct opus_in *opus_in_new(int rate, struct err *e);
/* One packet -> samples (cap >= rate*120/1000); returns the count, or -1 with
 * e "invalid Opus packet: ..." (the decoder stays usable). */
int opus_in_decode(struct opus_in *d, float *pcm, int cap, const void *packet, size_t len,
                   struct err *e);
void opus_in_free(struct opus_in *d);

/* Opus packet encoder (libopus), mono, 20 ms packets, same rates; bitrate in bit/s (0: 32k). */
struct opus_out;
struct opus_out *opus_out_new(int rate, int bitrate, struct err *e);
int opus_out_frame(const struct opus_out *o); /* samples per 20 ms packet */
/* Encodes exactly opus_out_frame() samples; returns the packet size, or -1 with e. */
int opus_out_encode(struct opus_out *o, uint8_t *packet, int cap, const float *pcm, struct err *e);
void opus_out_free(struct opus_out *o);

#endif
