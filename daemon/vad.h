/*
 * vad — energy voice-activity detection with hangover for server-side turn detection.
 *
 * Audio is cut into 20 ms frames. Speech starts at the first frame whose RMS level (dBFS, a
 * full-scale sine is -3 dB) is above threshold_db; the turn ends after silence_duration_ms of
 * frames below it. The prefix_padding_ms of audio before the start is kept in a ring buffer
 * and handed out with the turn, so soft onsets are not clipped.
 *
 * vad_feed calls back, in stream order: VAD_START (pos = first sample of the speech frame),
 * VAD_AUDIO (the padding, then every frame of the turn, hangover included), VAD_STOP (pos =
 * the sample after the turn's last frame). Positions count samples since the stream began.
 * One thread at a time.
 */
#ifndef PARLEY_VAD_H
#define PARLEY_VAD_H

#include <stdint.h>

#include "runtime/err.h"

struct vad_config {
    double threshold_db;
    int prefix_padding_ms;
    int silence_duration_ms;
};

enum vad_kind { VAD_START, VAD_AUDIO, VAD_STOP };

typedef void vad_emit_fn(void *user, enum vad_kind kind, int64_t pos, const float *pcm, int64_t n);

struct vad;
struct vad *vad_new(int rate, const struct vad_config *c, struct err *e);
void vad_free(struct vad *v);
/* New settings from the next frame on (a prefix_padding_ms above the first one is capped). */
void vad_set_config(struct vad *v, const struct vad_config *c);
/* Feeds n samples (any count); whole frames are judged, the rest waits for more. */
void vad_feed(struct vad *v, const float *pcm, int64_t n, vad_emit_fn *emit, void *user);
/* 1 while inside a turn. */
int vad_active(const struct vad *v);
/* Forgets the turn in progress (after a commit by other means) without a VAD_STOP. */
void vad_reset(struct vad *v);
/* Samples per 20 ms frame. */
int vad_frame(const struct vad *v);
/* RMS level of x[n] in dBFS (-120 for silence). */
double vad_level_db(const float *x, int64_t n);

#endif
