/* oggopus — Ogg Opus decoding through libopusfile (see oggopus.h). */
#include "audio/oggopus.h"

#include <opusfile.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OGGOPUS_RATE  48000
#define OGGOPUS_CHUNK 5760 /* samples per channel per read: 120 ms, the longest Opus packet */

int oggopus_sniff(const void *data, size_t size)
{
    return size >= 4 && memcmp(data, "OggS", 4) == 0;
}

/* Walks the Ogg page structure (libopusfile quietly decodes what precedes a cut, so a cut
 * upload would pass as shorter audio): the data must end exactly at the end of a page, and
 * that page must carry the end-of-stream flag. CRCs and contents are left to libopusfile. */
static int check_pages(const uint8_t *p, size_t size, struct err *e)
{
    size_t off = 0;
    int eos = 0;
    while (off < size) {
        size_t left = size - off;
        if (left < 27)
            return err_set(e, "truncated Ogg stream: page header cut short at byte %zu", off);
        if (memcmp(p + off, "OggS", 4) != 0)
            return err_set(e, "corrupt Ogg stream: no page where one should start (byte %zu)", off);
        size_t nseg = p[off + 26], len = 27 + nseg;
        if (left < len)
            return err_set(e, "truncated Ogg stream: segment table cut short at byte %zu", off);
        for (size_t i = 0; i < nseg; i++)
            len += p[off + 27 + i];
        if (left < len)
            return err_set(e,
                           "truncated Ogg stream: the page at byte %zu needs %zu bytes, %zu remain",
                           off, len, left);
        eos = (p[off + 5] & 4) != 0;
        off += len;
    }
    if (!eos)
        return err_set(e, "truncated Ogg stream: the last page has no end-of-stream flag");
    return 0;
}

int oggopus_decode(struct wav_audio *out, const void *data, size_t size, size_t max_bytes,
                   struct err *e)
{
    memset(out, 0, sizeof *out);
    if (size > max_bytes)
        return err_set(e, "file of %zu bytes is over the %zu-byte limit", size, max_bytes);
    if (!oggopus_sniff(data, size))
        return err_set(e, "not an Ogg file");
    if (check_pages(data, size, e))
        return -1;
    int rc = 0;
    OggOpusFile *of = op_open_memory(data, size, &rc);
    if (!of)
        return err_set(e, "not a valid Ogg Opus stream (opusfile error %d)", rc);
    int channels = op_channel_count(of, -1);
    if (channels < 1 || channels > WAV_MAX_CHANNELS) {
        op_free(of);
        return err_set(e, "%d channels (at most %d)", channels, WAV_MAX_CHANNELS);
    }
    int64_t max_frames = (int64_t)OGGOPUS_MAX_SECONDS * OGGOPUS_RATE;
    int64_t cap = 0, n = 0;
    float *inter = NULL; /* [n][C] interleaved */
    float *buf = malloc((size_t)OGGOPUS_CHUNK * channels * sizeof *buf);
    if (!buf) {
        op_free(of);
        return err_set(e, "out of memory");
    }
    for (;;) {
        int li;
        int got = op_read_float(of, buf, OGGOPUS_CHUNK * channels, &li);
        if (got == 0)
            break;
        if (got < 0) {
            free(buf);
            free(inter);
            op_free(of);
            return err_set(e, "corrupt Opus data (opusfile error %d)", got);
        }
        if (op_channel_count(of, li) != channels) {
            free(buf);
            free(inter);
            op_free(of);
            return err_set(e, "chained streams change the channel count (%d, then %d)", channels,
                           op_channel_count(of, li));
        }
        if (n + got > max_frames) {
            free(buf);
            free(inter);
            op_free(of);
            return err_set(e, "audio longer than %d s", OGGOPUS_MAX_SECONDS);
        }
        if (n + got > cap) {
            int64_t nc = cap ? cap * 2 : (int64_t)OGGOPUS_RATE * 4;
            while (nc < n + got)
                nc *= 2;
            float *ni = realloc(inter, (size_t)nc * channels * sizeof *ni);
            if (!ni) {
                free(buf);
                free(inter);
                op_free(of);
                return err_set(e, "out of memory");
            }
            inter = ni;
            cap = nc;
        }
        memcpy(inter + n * channels, buf, (size_t)got * channels * sizeof *buf);
        n += got;
    }
    free(buf);
    op_free(of);
    if (n == 0) {
        free(inter);
        return err_set(e, "no audio in the Ogg Opus stream");
    }
    out->samples = malloc((size_t)n * channels * sizeof *out->samples);
    if (!out->samples) {
        free(inter);
        return err_set(e, "out of memory");
    }
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < channels; c++)
            out->samples[(int64_t)c * n + i] = inter[i * channels + c];
    free(inter);
    out->rate = OGGOPUS_RATE;
    out->channels = channels;
    out->frames = n;
    return 0;
}
