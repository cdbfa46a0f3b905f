/*
 * wav — RIFF/WAVE files as users upload them, decoded to float samples the way the
 * reference's torchaudio.load does (spec §2.1): signed integer PCM divided by 2^(bits−1),
 * 8-bit (unsigned) PCM as (u − 128)/128, float formats as they are (f64 rounded to f32).
 *
 * Accepted: format tags PCM (1), IEEE float (3) and WAVE_FORMAT_EXTENSIBLE (0xFFFE) with a
 * PCM or float sub-format; 8/16/24/32-bit integers, 32/64-bit floats; 1..WAV_MAX_CHANNELS
 * channels; WAV_MIN_RATE..WAV_MAX_RATE Hz. Chunks other than "fmt " and "data" are skipped
 * (odd sizes padded as RIFF says). Everything else is refused with one clear message:
 * truncated headers, a data chunk larger than the file, zero channels, absurd rates, a block
 * alignment that does not match, empty audio, files larger than the caller's limit.
 *
 * wav_pcm16 converts raw little-endian PCM16 (streamed audio with a declared rate).
 *
 * Writing (answers): wav_to_pcm16 and wav_encode_pcm16 turn float samples into PCM16 the way
 * core/voice/voicefile.c writes them (clipped to [-1, 1], times 32767, rounded), so a file and
 * a stream of chunks of the same answer hold the same bytes.
 */
#ifndef PARLEY_WAV_H
#define PARLEY_WAV_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"

#define WAV_MAX_CHANNELS 64
#define WAV_MIN_RATE     1000
#define WAV_MAX_RATE     768000

struct wav_audio {
    int rate;       /* Hz */
    int channels;   /* C */
    int64_t frames; /* samples per channel, N */
    float *samples; /* [C][N] planar; malloc'ed, freed by wav_audio_free */
};

/* Decodes a WAV file held in memory (size bytes; refused when size > max_bytes). */
int wav_decode(struct wav_audio *out, const void *data, size_t size, size_t max_bytes,
               struct err *e);

/* Reads and decodes a file (refused when larger than max_bytes); messages name the path. */
int wav_read_file(struct wav_audio *out, const char *path, size_t max_bytes, struct err *e);

/* out [n] = PCM16 little-endian bytes [2n] / 32768. */
void wav_pcm16(float *out, const void *bytes, int64_t n);

void wav_audio_free(struct wav_audio *a);

/* bytes [2n] = PCM16 little-endian of pcm [n] (clipped to [-1, 1], times 32767, rounded). */
void wav_to_pcm16(void *bytes, const float *pcm, int64_t n);

#define WAV_HEADER_BYTES 44

/* A mono PCM16 WAV file of pcm [n] at rate: *out (malloc'ed, freed by the caller) holds
 * WAV_HEADER_BYTES + 2n bytes. -1 when n does not fit a WAV file or memory runs out. */
int wav_encode_pcm16(uint8_t **out, size_t *size, const float *pcm, int64_t n, int rate,
                     struct err *e);

#endif
