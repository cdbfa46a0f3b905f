/*
 * oggopus — Ogg Opus files (what browsers record) decoded with libopusfile to float samples
 * at 48 kHz, planar, as torchaudio.load's ffmpeg backend returns them (spec §2.1 [I]: the
 * decoder's output, pre-skip removed). Chained streams must keep one channel count. Bad input
 * (not Ogg, not Opus, corrupt pages, a stream cut short — last page incomplete or without the
 * end-of-stream flag —, no audio, over the size limit) is refused with a message.
 */
#ifndef PARLEY_OGGOPUS_H
#define PARLEY_OGGOPUS_H

#include <stddef.h>

#include "audio/wav.h"
#include "runtime/err.h"

/* Longest decoded audio accepted, in seconds (a bound on memory for tiny, long files). */
#define OGGOPUS_MAX_SECONDS 3600

/* Decodes an in-memory file (refused when size > max_bytes). */
int oggopus_decode(struct wav_audio *out, const void *data, size_t size, size_t max_bytes,
                   struct err *e);

/* 1 when data starts like an Ogg stream ("OggS"). */
int oggopus_sniff(const void *data, size_t size);

#endif
