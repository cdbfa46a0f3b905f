/*
 * oggenc — answer audio as an Ogg Opus file in memory, written with libopusenc (which
 * resamples any input rate to Opus's 48 kHz itself and records the input rate in the header).
 * Mono, voice-tuned, a fixed serial number so the same samples give the same bytes.
 */
#ifndef PARLEY_OGGENC_H
#define PARLEY_OGGENC_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/err.h"

#define OGGENC_BITRATE 32000 /* bits/s: plenty for 22.05 kHz speech */

/* pcm [n] mono at rate Hz (8000..192000) -> *out (malloc'ed, freed by the caller), *size
 * bytes. bitrate in bits/s (0: OGGENC_BITRATE). -1 with e set when libopusenc refuses. */
int oggenc_encode(uint8_t **out, size_t *size, const float *pcm, int64_t n, int rate, int bitrate,
                  struct err *e);

#endif
