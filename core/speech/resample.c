/* resample — torchaudio-compatible windowed-sinc rate conversion (see resample.h). */
#include "speech/resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RESAMPLE_WIDTH   6    /* lowpass_filter_width */
#define RESAMPLE_ROLLOFF 0.99 /* rolloff */

static int gcd_int(int a, int b)
{
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int resample_init(struct resample *r, int in_rate, int out_rate, struct err *e)
{
    memset(r, 0, sizeof *r);
    if (in_rate < RESAMPLE_MIN_RATE || in_rate > RESAMPLE_MAX_RATE ||
        out_rate < RESAMPLE_MIN_RATE || out_rate > RESAMPLE_MAX_RATE)
        return err_set(e, "resample: rates %d -> %d Hz outside %d..%d Hz", in_rate, out_rate,
                       RESAMPLE_MIN_RATE, RESAMPLE_MAX_RATE);
    int g = gcd_int(in_rate, out_rate);
    r->in_rate = in_rate;
    r->out_rate = out_rate;
    r->o = in_rate / g;
    r->n = out_rate / g;
    if (in_rate == out_rate) /* the reference skips resampling altogether */
        return 0;
    /* torchaudio: base_freq = min(o, n) * rolloff (a Python float); width =
     * ceil(lowpass_filter_width * o / base_freq) */
    double base = (double)(r->o < r->n ? r->o : r->n) * RESAMPLE_ROLLOFF;
    r->width = (int)ceil((double)(RESAMPLE_WIDTH * r->o) / base);
    r->taps = 2 * r->width + r->o;
    r->kernel = malloc((size_t)r->n * (size_t)r->taps * sizeof *r->kernel);
    if (!r->kernel)
        return err_set(e, "resample: out of memory for a %d x %d kernel", r->n, r->taps);
    double scale = base / r->o;
    for (int j = 0; j < r->n; j++) {
        /* arange(0, -n, -1) / n: an integer tensor divided in float32 (errata E2) */
        float phase = (float)(-j) / (float)r->n;
        for (int m = 0; m < r->taps; m++) {
            double idx = (double)(m - r->width) / r->o; /* arange(-W, W + o, f64) / o */
            double t = ((double)phase + idx) * base;
            if (t < -RESAMPLE_WIDTH)
                t = -RESAMPLE_WIDTH;
            if (t > RESAMPLE_WIDTH)
                t = RESAMPLE_WIDTH;
            double c = cos(t * M_PI / RESAMPLE_WIDTH / 2);
            double window = c * c;
            t *= M_PI;
            double k = t == 0 ? 1.0 : sin(t) / t;
            r->kernel[(size_t)j * r->taps + m] = (float)(k * (window * scale));
        }
    }
    return 0;
}

void resample_free(struct resample *r)
{
    free(r->kernel);
    r->kernel = NULL;
}

int64_t resample_out_len(const struct resample *r, int64_t len)
{
    if (r->in_rate == r->out_rate)
        return len;
    /* exact ceil(n·len/o) without overflow for any realistic length (len < 2^40) */
    return ((int64_t)r->n * len + r->o - 1) / r->o;
}

/* Output step q: out[j] for j < count, from xpad samples p[0 .. T). */
static void resample_step(const struct resample *r, float *out, const float *p, int count)
{
    for (int j = 0; j < count; j++) {
        const float *k = r->kernel + (size_t)j * r->taps;
        double acc = 0;
        for (int m = 0; m < r->taps; m++)
            acc += (double)k[m] * p[m];
        out[j] = (float)acc;
    }
}

int resample_stream_init(struct resample_stream *s, const struct resample *r, int64_t max_push,
                         struct err *e)
{
    memset(s, 0, sizeof *s);
    s->r = r;
    if (max_push < 1)
        max_push = 1;
    if (r->in_rate == r->out_rate)
        return 0;
    int64_t tail = r->width + r->o;
    s->cap = r->taps + (max_push > tail ? max_push : tail) + 1;
    s->buf = calloc((size_t)s->cap, sizeof *s->buf);
    if (!s->buf)
        return err_set(e, "resample: out of memory for a stream buffer of %lld samples",
                       (long long)s->cap);
    s->len = r->width; /* xpad starts with W zeros */
    return 0;
}

void resample_stream_free(struct resample_stream *s)
{
    free(s->buf);
    s->buf = NULL;
}

int64_t resample_stream_max_out(const struct resample_stream *s, int64_t n)
{
    const struct resample *r = s->r;
    if (r->in_rate == r->out_rate)
        return n;
    return ((int64_t)r->taps + n + r->width + r->o) / r->o * r->n + r->n;
}

/* Emits every complete step, at most up to `limit` outputs in all (the final crop). */
static int64_t stream_drain(struct resample_stream *s, float *out, int64_t limit)
{
    const struct resample *r = s->r;
    int64_t w = 0;
    while (s->start + s->len >= s->q * r->o + r->taps && s->n_out < limit) {
        int64_t count = limit - s->n_out < r->n ? limit - s->n_out : r->n;
        resample_step(r, out + w, s->buf + (s->q * r->o - s->start), (int)count);
        w += count;
        s->n_out += count;
        s->q++;
    }
    int64_t drop = s->q * r->o - s->start; /* samples no later step reads */
    if (drop > s->len)
        drop = s->len;
    if (drop > 0) {
        memmove(s->buf, s->buf + drop, (size_t)(s->len - drop) * sizeof *s->buf);
        s->len -= drop;
        s->start += drop;
    }
    return w;
}

int64_t resample_stream_push(struct resample_stream *s, float *out, const float *x, int64_t n,
                             struct err *e)
{
    const struct resample *r = s->r;
    if (s->finished)
        return err_set(e, "resample: push after finish");
    if (n <= 0)
        return 0;
    s->n_in += n;
    if (r->in_rate == r->out_rate) {
        memcpy(out, x, (size_t)n * sizeof *out);
        s->n_out += n;
        return n;
    }
    int64_t w = 0;
    while (n > 0) { /* any push size: in pieces that fit the buffer */
        int64_t take = s->cap - s->len < n ? s->cap - s->len : n;
        memcpy(s->buf + s->len, x, (size_t)take * sizeof *x);
        s->len += take;
        x += take;
        n -= take;
        w += stream_drain(s, out + w, INT64_MAX);
    }
    return w;
}

int64_t resample_stream_finish(struct resample_stream *s, float *out)
{
    const struct resample *r = s->r;
    if (s->finished)
        return 0;
    s->finished = 1;
    if (r->in_rate == r->out_rate)
        return 0;
    /* W + o trailing zeros, then everything up to ceil(n·L/o) */
    memset(s->buf + s->len, 0, (size_t)(r->width + r->o) * sizeof *s->buf);
    s->len += r->width + r->o;
    return stream_drain(s, out, resample_out_len(r, s->n_in));
}

int resample_run(const struct resample *r, float *out, const float *x, int64_t len, struct err *e)
{
    if (r->in_rate == r->out_rate) {
        memcpy(out, x, (size_t)len * sizeof *out);
        return 0;
    }
    struct resample_stream s;
    int64_t chunk = 1 << 16;
    if (resample_stream_init(&s, r, chunk, e))
        return -1;
    int64_t w = 0;
    for (int64_t i = 0; i < len; i += chunk) {
        int64_t n = len - i < chunk ? len - i : chunk;
        w += resample_stream_push(&s, out + w, x + i, n, e);
    }
    resample_stream_finish(&s, out + w);
    resample_stream_free(&s);
    return 0;
}
