/*
 * voicefile — the decoder tools' file formats: raw little-endian float32 arrays (mels
 * [80][T], noise tensors) and a minimal WAV writer (mono, 16-bit PCM or 32-bit float).
 * proto/audio/wav.c reads WAV; this writer stays here until proto owns one.
 */
#ifndef PARLEY_VOICEFILE_H
#define PARLEY_VOICEFILE_H

#include <stdint.h>

#include "runtime/err.h"

/*
 * Reads a whole file of float32 values whose count is a multiple of `unit` (> 0) and at
 * most max_count. *out is malloc'ed (free it); *count gets the number of floats. Returns -1
 * naming the file for a missing or unreadable file, an empty one, a size that is not a
 * whole number of units, or non-finite values.
 */
int voicefile_read_f32(const char *path, int64_t unit, int64_t max_count, float **out,
                       int64_t *count, struct err *e);

/* Writes n float32 values. */
int voicefile_write_f32(const char *path, const float *x, int64_t n, struct err *e);

/* Writes a mono WAV: 16-bit PCM (samples clamped to [-1, 1], rounded) or IEEE float. */
int voicefile_write_wav(const char *path, const float *x, int64_t n, int sample_rate, int as_float,
                        struct err *e);

#endif
