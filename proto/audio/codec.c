/* codec — see codec.h. */
#include "audio/codec.h"

#include <opus.h>
#include <soxr.h>
#include <stdlib.h>

struct resampler {
    soxr_t soxr;
    int in_rate, out_rate;
};

struct resampler *resampler_new(int in_rate, int out_rate, struct err *e)
{
    if (in_rate < 1000 || in_rate > 384000 || out_rate < 1000 || out_rate > 384000) {
        err_set(e, "resampler: unsupported rates %d -> %d Hz", in_rate, out_rate);
        return NULL;
    }
    struct resampler *r = calloc(1, sizeof *r);
    if (!r) {
        err_set(e, "resampler: out of memory");
        return NULL;
    }
    soxr_error_t se = NULL;
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
    r->soxr = soxr_create(in_rate, out_rate, 1, &se, &io, &q, NULL);
    if (!r->soxr || se) {
        err_set(e, "resampler: %s", se ? se : "cannot create");
        free(r);
        return NULL;
    }
    r->in_rate = in_rate;
    r->out_rate = out_rate;
    return r;
}

int64_t resampler_max_out(const struct resampler *r, int64_t n_in)
{
    /* the ratio rounded up, plus what the filter may still hold back */
    return (n_in * r->out_rate + r->in_rate - 1) / r->in_rate + 64 + (int64_t)(r->out_rate / 10);
}

/* soxr_process keeps output it has no room for; loop until it has consumed all input. */
static int64_t resampler_run(struct resampler *r, float *out, int64_t cap, const float *in,
                             int64_t n, struct err *e)
{
    int64_t done_in = 0, done_out = 0;
    for (int guard = 0; guard < 1000; guard++) {
        size_t idone = 0, odone = 0;
        soxr_error_t se =
            soxr_process(r->soxr, in ? in + done_in : NULL, in ? (size_t)(n - done_in) : 0, &idone,
                         out + done_out, (size_t)(cap - done_out), &odone);
        if (se)
            return err_set(e, "resampler: %s", se);
        done_in += (int64_t)idone;
        done_out += (int64_t)odone;
        if (in && done_in >= n)
            return done_out;
        if (!in && odone == 0)
            return done_out;
        if (done_out >= cap)
            return in && done_in < n ? err_set(e, "resampler: output buffer too small") : done_out;
    }
    return done_out;
}

int64_t resampler_process(struct resampler *r, float *out, int64_t cap, const float *in, int64_t n,
                          struct err *e)
{
    if (n <= 0)
        return 0;
    return resampler_run(r, out, cap, in, n, e);
}

int64_t resampler_flush(struct resampler *r, float *out, int64_t cap, struct err *e)
{
    return resampler_run(r, out, cap, NULL, 0, e);
}

void resampler_free(struct resampler *r)
{
    if (!r)
        return;
    soxr_delete(r->soxr);
    free(r);
}

static int codec_rate_ok(int rate)
{
    return rate == 8000 || rate == 12000 || rate == 16000 || rate == 24000 || rate == 48000;
}

struct opus_in {
    OpusDecoder *dec;
    int rate;
};

struct opus_in *opus_in_new(int rate, struct err *e)
{
    if (!codec_rate_ok(rate)) {
        err_set(e, "Opus: unsupported rate %d Hz", rate);
        return NULL;
    }
    struct opus_in *d = calloc(1, sizeof *d);
    int rc = OPUS_ALLOC_FAIL;
    if (d)
        d->dec = opus_decoder_create(rate, 1, &rc);
    if (!d || !d->dec) {
        err_set(e, "Opus decoder: %s", opus_strerror(rc));
        free(d);
        return NULL;
    }
    d->rate = rate;
    return d;
}

int opus_in_decode(struct opus_in *d, float *pcm, int cap, const void *packet, size_t len,
                   struct err *e)
{
    if (len == 0 || len > 1275 * 6)
        return err_set(e, "invalid Opus packet: %zu bytes", len);
    int n = opus_packet_get_nb_samples(packet, (opus_int32)len, d->rate);
    if (n < 0)
        return err_set(e, "invalid Opus packet: %s", opus_strerror(n));
    if (n > cap)
        return err_set(e, "invalid Opus packet: %d samples (at most %d)", n, cap);
    n = opus_decode_float(d->dec, packet, (opus_int32)len, pcm, cap, 0);
    if (n < 0)
        return err_set(e, "invalid Opus packet: %s", opus_strerror(n));
    return n;
}

void opus_in_free(struct opus_in *d)
{
    if (!d)
        return;
    opus_decoder_destroy(d->dec);
    free(d);
}

struct opus_out {
    OpusEncoder *enc;
    int rate;
};

struct opus_out *opus_out_new(int rate, int bitrate, struct err *e)
{
    if (!codec_rate_ok(rate)) {
        err_set(e, "Opus: unsupported rate %d Hz", rate);
        return NULL;
    }
    struct opus_out *o = calloc(1, sizeof *o);
    int rc = OPUS_ALLOC_FAIL;
    if (o)
        o->enc = opus_encoder_create(rate, 1, OPUS_APPLICATION_VOIP, &rc);
    if (!o || !o->enc) {
        err_set(e, "Opus encoder: %s", opus_strerror(rc));
        free(o);
        return NULL;
    }
    opus_encoder_ctl(o->enc, OPUS_SET_BITRATE(bitrate > 0 ? bitrate : 32000));
    o->rate = rate;
    return o;
}

int opus_out_frame(const struct opus_out *o)
{
    return o->rate / 50;
}

int opus_out_encode(struct opus_out *o, uint8_t *packet, int cap, const float *pcm, struct err *e)
{
    int n = opus_encode_float(o->enc, pcm, o->rate / 50, packet, cap);
    if (n < 0)
        return err_set(e, "Opus encode: %s", opus_strerror(n));
    return n;
}

void opus_out_free(struct opus_out *o)
{
    if (!o)
        return;
    opus_encoder_destroy(o->enc);
    free(o);
}
