/* vad — see vad.h. */
#include "vad.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VAD_MAX_PAD_MS 5000

struct vad {
    int rate, frame;
    struct vad_config c;
    float *cur; /* the frame being filled */
    int n_cur;
    float *ring; /* padding before a start: the last pad_cap samples */
    int64_t ring_cap, ring_len, ring_head;
    int active;
    int64_t silent; /* samples of silence in a row inside a turn */
    int64_t pos;    /* samples judged so far */
};

double vad_level_db(const float *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    double rms = n ? sqrt(s / (double)n) : 0;
    return rms > 1e-6 ? 20 * log10(rms) : -120;
}

struct vad *vad_new(int rate, const struct vad_config *c, struct err *e)
{
    if (rate < 1000 || rate > 384000) {
        err_set(e, "vad: unsupported rate %d Hz", rate);
        return NULL;
    }
    struct vad *v = calloc(1, sizeof *v);
    if (!v) {
        err_set(e, "vad: out of memory");
        return NULL;
    }
    v->rate = rate;
    v->frame = rate / 50;
    v->ring_cap = (int64_t)rate * VAD_MAX_PAD_MS / 1000;
    v->cur = malloc(sizeof(float) * (size_t)v->frame);
    v->ring = malloc(sizeof(float) * (size_t)v->ring_cap);
    if (!v->cur || !v->ring) {
        vad_free(v);
        err_set(e, "vad: out of memory");
        return NULL;
    }
    vad_set_config(v, c);
    return v;
}

void vad_free(struct vad *v)
{
    if (!v)
        return;
    free(v->cur);
    free(v->ring);
    free(v);
}

void vad_set_config(struct vad *v, const struct vad_config *c)
{
    v->c = *c;
    if (v->c.prefix_padding_ms > VAD_MAX_PAD_MS)
        v->c.prefix_padding_ms = VAD_MAX_PAD_MS;
    if (v->c.prefix_padding_ms < 0)
        v->c.prefix_padding_ms = 0;
}

int vad_active(const struct vad *v)
{
    return v->active;
}

int vad_frame(const struct vad *v)
{
    return v->frame;
}

void vad_reset(struct vad *v)
{
    v->active = 0;
    v->silent = 0;
    v->ring_len = 0;
}

static void vad_ring_push(struct vad *v, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        v->ring[(v->ring_head + v->ring_len) % v->ring_cap] = x[i];
        if (v->ring_len < v->ring_cap)
            v->ring_len++;
        else
            v->ring_head = (v->ring_head + 1) % v->ring_cap;
    }
}

/* Hands out the newest prefix_padding_ms of the ring, oldest first, and empties it. */
static void vad_ring_emit(struct vad *v, vad_emit_fn *emit, void *user)
{
    int64_t want = (int64_t)v->rate * v->c.prefix_padding_ms / 1000;
    int64_t n = want < v->ring_len ? want : v->ring_len;
    int64_t start = (v->ring_head + v->ring_len - n) % v->ring_cap;
    int64_t first = start + n <= v->ring_cap ? n : v->ring_cap - start;
    if (first > 0)
        emit(user, VAD_AUDIO, v->pos - n, v->ring + start, first);
    if (n > first)
        emit(user, VAD_AUDIO, v->pos - n + first, v->ring, n - first);
    v->ring_len = 0;
    v->ring_head = 0;
}

static void vad_judge(struct vad *v, const float *x, vad_emit_fn *emit, void *user)
{
    int loud = vad_level_db(x, v->frame) > v->c.threshold_db;
    if (!v->active) {
        if (loud) {
            v->active = 1;
            v->silent = 0;
            emit(user, VAD_START, v->pos, NULL, 0);
            vad_ring_emit(v, emit, user);
            emit(user, VAD_AUDIO, v->pos, x, v->frame);
        } else {
            vad_ring_push(v, x, v->frame);
        }
        v->pos += v->frame;
        return;
    }
    emit(user, VAD_AUDIO, v->pos, x, v->frame);
    v->pos += v->frame;
    v->silent = loud ? 0 : v->silent + v->frame;
    if (v->silent * 1000 >= (int64_t)v->c.silence_duration_ms * v->rate) {
        v->active = 0;
        v->silent = 0;
        emit(user, VAD_STOP, v->pos, NULL, 0);
    }
}

void vad_feed(struct vad *v, const float *pcm, int64_t n, vad_emit_fn *emit, void *user)
{
    while (n > 0) {
        int64_t k = v->frame - v->n_cur;
        if (k > n)
            k = n;
        memcpy(v->cur + v->n_cur, pcm, sizeof(float) * (size_t)k);
        v->n_cur += (int)k;
        pcm += k;
        n -= k;
        if (v->n_cur == v->frame) {
            v->n_cur = 0;
            vad_judge(v, v->cur, emit, user);
        }
    }
}
