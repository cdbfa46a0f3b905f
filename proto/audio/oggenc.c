/* oggenc — see oggenc.h. */
#include "audio/oggenc.h"

#include <opusenc.h>
#include <stdlib.h>
#include <string.h>

#define OGGENC_SERIAL 0x70617231 /* "par1" */
#define OGGENC_CHUNK  4096       /* samples handed to libopusenc at a time */

/* The growing file: libopusenc calls oggenc_write for each finished page. */
struct oggenc_buf {
    uint8_t *p;
    size_t n, cap;
    int failed;
};

static int oggenc_write(void *user, const unsigned char *ptr, opus_int32 len)
{
    struct oggenc_buf *b = user;
    if (b->failed || len < 0)
        return 1;
    if (b->n + (size_t)len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + (size_t)len)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return 1;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, ptr, (size_t)len);
    b->n += (size_t)len;
    return 0;
}

static int oggenc_close(void *user)
{
    (void)user;
    return 0;
}

int oggenc_encode(uint8_t **out, size_t *size, const float *pcm, int64_t n, int rate, int bitrate,
                  struct err *e)
{
    *out = NULL;
    *size = 0;
    if (n < 0 || rate < 8000 || rate > 192000)
        return err_set(e, "oggenc: cannot encode %lld samples at %d Hz", (long long)n, rate);
    struct oggenc_buf b = { 0 };
    OpusEncCallbacks cb = { oggenc_write, oggenc_close };
    OggOpusComments *com = ope_comments_create();
    if (!com)
        return err_set(e, "oggenc: out of memory");
    ope_comments_add(com, "ENCODER", "parley");
    int rc = 0;
    OggOpusEnc *enc = ope_encoder_create_callbacks(&cb, &b, com, rate, 1, 0, &rc);
    ope_comments_destroy(com);
    if (!enc)
        return err_set(e, "oggenc: %s", ope_strerror(rc));
    ope_encoder_ctl(enc, OPE_SET_SERIALNO(OGGENC_SERIAL));
    ope_encoder_ctl(enc, OPUS_SET_BITRATE(bitrate > 0 ? bitrate : OGGENC_BITRATE));
    ope_encoder_ctl(enc, OPUS_SET_SIGNAL(OPUS_SIGNAL_VOICE));
    for (int64_t i = 0; rc == OPE_OK && i < n; i += OGGENC_CHUNK) {
        int k = n - i < OGGENC_CHUNK ? (int)(n - i) : OGGENC_CHUNK;
        rc = ope_encoder_write_float(enc, pcm + i, k);
    }
    if (rc == OPE_OK)
        rc = ope_encoder_drain(enc);
    ope_encoder_destroy(enc);
    if (rc != OPE_OK || b.failed) {
        free(b.p);
        return err_set(e, "oggenc: %s", b.failed ? "out of memory" : ope_strerror(rc));
    }
    *out = b.p;
    *size = b.n;
    return 0;
}
