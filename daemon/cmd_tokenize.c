/*
 * parley tokenize: speech tokens of an audio file.
 *
 *   parley tokenize --model TOK.gguf [--stream] [--threads N] IN.wav|IN.opus
 *   parley tokenize --model TOK.gguf --raw RATE [--stream] [--threads N] IN.pcm|-
 *
 * prints the token ids comma-separated on one line of stdout, and the timing (audio length,
 * wall time, real-time factor) on stderr. --stream feeds the file in 20 ms pieces through the
 * streaming interface instead of tokenizing it whole; the tokens are the same. --raw RATE
 * reads headerless little-endian mono PCM16 at RATE Hz from a file or stdin ("-"); with
 * --stream it is pushed as it is read (stok_stream_push_pcm16), so a pipe is tokenized while
 * it arrives. Errors: one line on stderr, exit 2 for bad arguments or input files.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audio/oggopus.h"
#include "audio/wav.h"
#include "cmd.h"
#include "runtime/pool.h"
#include "speech/stok.h"
#include "runtime/clock.h"

#define TOKENIZE_MAX_BYTES ((size_t)1 << 30)
#define TOKENIZE_RAW_MAX_S 3600.0 /* longest raw stream (sizes the token array) */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: parley tokenize --model TOK.gguf [--stream] [--threads N] IN.wav|IN.opus\n"
            "       parley tokenize --model TOK.gguf --raw RATE [--stream] [--threads N] IN|-\n"
            "\nprints the speech token ids of the audio, comma-separated, on one line;\n"
            "WAV (PCM 8/16/24/32-bit, float 32/64, any rate and channels) or Ogg Opus;\n"
            "channel 0 is used. --stream feeds 20 ms pieces through the streaming interface.\n"
            "--raw RATE: the input (a file, or - for stdin) is headerless little-endian mono\n"
            "16-bit PCM at RATE Hz; with --stream it is tokenized as it is read.\n");
}

/* Reads a WAV or Ogg Opus file by its first bytes. */
static int read_audio(struct wav_audio *a, const char *path, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "%s: cannot open", path);
    unsigned char head[4] = { 0 };
    size_t k = fread(head, 1, 4, f);
    fclose(f);
    if (oggopus_sniff(head, k)) {
        f = fopen(path, "rb");
        if (!f)
            return err_set(e, "%s: cannot open", path);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        if (size < 0 || (size_t)size > TOKENIZE_MAX_BYTES) {
            fclose(f);
            return err_set(e, "%s: file is over the %zu-byte limit", path, TOKENIZE_MAX_BYTES);
        }
        void *buf = malloc((size_t)size + 1);
        if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
            free(buf);
            fclose(f);
            return err_set(e, "%s: read error", path);
        }
        fclose(f);
        int rc = oggopus_decode(a, buf, (size_t)size, TOKENIZE_MAX_BYTES, e);
        free(buf);
        return rc ? err_prefix(e, "%s", path) : 0;
    }
    return wav_read_file(a, path, TOKENIZE_MAX_BYTES, e);
}

static FILE *open_input(const char *path, struct err *e)
{
    if (strcmp(path, "-") == 0)
        return stdin;
    FILE *f = fopen(path, "rb");
    if (!f)
        err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    return f;
}

static void close_input(FILE *f)
{
    if (f && f != stdin)
        fclose(f);
}

/* Reads a whole raw PCM16 file (or stdin) as mono audio at `rate`. */
static int read_raw(struct wav_audio *a, const char *path, int rate, struct err *e)
{
    memset(a, 0, sizeof *a);
    FILE *f = open_input(path, e);
    if (!f)
        return -1;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            close_input(f);
            return err_set(e, "%s: out of memory", path);
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= TOKENIZE_MAX_BYTES) {
            free(buf);
            close_input(f);
            return err_set(e, "%s: over the %zu-byte limit", path, TOKENIZE_MAX_BYTES);
        }
        cap *= 2;
        unsigned char *nb = realloc(buf, cap);
        if (!nb)
            free(buf);
        buf = nb;
    }
    int bad = ferror(f);
    close_input(f);
    if (bad || n == 0 || n % 2) {
        free(buf);
        return err_set(e, "%s: %s", path,
                       bad      ? "read error"
                       : n == 0 ? "no audio"
                                : "odd byte count for PCM16");
    }
    a->frames = (int64_t)(n / 2);
    a->samples = malloc((size_t)a->frames * sizeof *a->samples);
    if (!a->samples) {
        free(buf);
        return err_set(e, "%s: out of memory", path);
    }
    for (int64_t i = 0; i < a->frames; i++)
        a->samples[i] = (float)(int16_t)(uint16_t)(buf[2 * i] | buf[2 * i + 1] << 8) / 32768.0f;
    free(buf);
    a->rate = rate;
    a->channels = 1;
    return 0;
}

/* --raw --stream: pushes 20 ms reads as they arrive. Sets *frames to the samples read. */
static int stream_raw(const struct stok_model *m, struct pool *pool, int32_t **tokens, int64_t *n,
                      int64_t *frames, const char *path, int rate, struct err *e)
{
    FILE *f = open_input(path, e);
    if (!f)
        return -1;
    struct stok_stream s;
    if (stok_stream_init(&s, m, pool, rate, TOKENIZE_RAW_MAX_S, 1, e)) {
        close_input(f);
        return -1;
    }
    size_t piece = (size_t)(rate / 50) * 2;
    unsigned char *buf = malloc(piece);
    int rc = buf ? 0 : err_set(e, "out of memory");
    size_t total = 0, got;
    while (!rc && (got = fread(buf, 1, piece, f)) > 0) {
        rc = stok_stream_push_pcm16(&s, buf, got, e);
        total += got;
    }
    if (!rc && ferror(f))
        rc = err_set(e, "read error");
    if (!rc && total == 0)
        rc = err_set(e, "no audio");
    if (!rc)
        rc = stok_stream_finish(&s, e);
    if (!rc) {
        *n = s.n_final;
        *tokens = s.tokens;
        s.tokens = NULL;
        *frames = (int64_t)(total / 2);
    }
    free(buf);
    stok_stream_free(&s);
    close_input(f);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *input = NULL;
    int stream = 0, threads = 2, raw_rate = 0;
    for (int i = 1; i < argc; i++) {
        if (cmd_is_help(argv[i])) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            model = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
            if (threads < 1 || threads > 256) {
                fprintf(stderr, "parley: --threads wants 1..256\n");
                return CMD_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--raw") == 0 && i + 1 < argc) {
            raw_rate = atoi(argv[++i]);
            if (raw_rate < RESAMPLE_MIN_RATE || raw_rate > RESAMPLE_MAX_RATE) {
                fprintf(stderr, "parley: --raw wants a rate of %d..%d Hz\n", RESAMPLE_MIN_RATE,
                        RESAMPLE_MAX_RATE);
                return CMD_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--stream") == 0) {
            stream = 1;
        } else if ((argv[i][0] == '-' && strcmp(argv[i], "-") != 0) || input) {
            fprintf(stderr, "parley: tokenize: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return CMD_EXIT_USAGE;
        } else {
            input = argv[i];
        }
    }
    if (!model || !input) {
        usage(stderr);
        return CMD_EXIT_USAGE;
    }
    struct err e;
    struct stok_model m;
    struct wav_audio a;
    double t0 = clock_seconds();
    if (stok_load(&m, model, &e)) {
        fprintf(stderr, "parley: %s\n", e.msg);
        stok_free(&m);
        return CMD_EXIT_USAGE;
    }
    memset(&a, 0, sizeof a);
    int raw_stream = raw_rate && stream; /* read while tokenizing */
    if (!raw_stream && (raw_rate ? read_raw(&a, input, raw_rate, &e) : read_audio(&a, input, &e))) {
        fprintf(stderr, "parley: %s\n", e.msg);
        stok_free(&m);
        return CMD_EXIT_USAGE;
    }
    struct pool *pool = pool_create(threads);
    if (!pool) {
        fprintf(stderr, "parley: cannot start %d threads\n", threads);
        wav_audio_free(&a);
        stok_free(&m);
        return 1;
    }
    double t1 = clock_seconds();
    int32_t *tokens = NULL;
    int64_t n = 0;
    int rc = 0;
    const float *ch0 = a.samples; /* planar: channel 0 first (spec §2.1) */
    if (raw_stream) {
        rc = stream_raw(&m, pool, &tokens, &n, &a.frames, input, raw_rate, &e);
        a.rate = raw_rate;
        a.channels = 1;
    } else if (!stream) {
        rc = stok_tokenize(&m, pool, &tokens, &n, ch0, a.frames, a.rate, &e);
    } else {
        struct stok_stream s;
        rc = stok_stream_init(&s, &m, pool, a.rate, (double)a.frames / a.rate + 1, 1, &e);
        int64_t piece = a.rate / 50;
        for (int64_t i = 0; !rc && i < a.frames; i += piece)
            rc = stok_stream_push(&s, ch0 + i, a.frames - i < piece ? a.frames - i : piece, &e);
        if (!rc)
            rc = stok_stream_finish(&s, &e);
        if (!rc) {
            n = s.n_final;
            tokens = malloc((size_t)(n > 0 ? n : 1) * sizeof *tokens);
            if (tokens)
                memcpy(tokens, s.tokens, (size_t)n * sizeof *tokens);
            else
                rc = err_set(&e, "out of memory");
        }
        if (s.m)
            stok_stream_free(&s);
    }
    double t2 = clock_seconds();
    if (rc) {
        fprintf(stderr, "parley: %s: %s\n", input, e.msg);
    } else {
        for (int64_t i = 0; i < n; i++)
            printf(i ? ",%d" : "%d", tokens[i]);
        printf("\n");
        double secs = (double)a.frames / a.rate;
        fprintf(stderr,
                "tokenize: %lld tokens from %.2f s of audio (%d Hz, %d ch); load %.3f s, "
                "tokenize %.3f s, real-time factor %.3f (%d threads%s)\n",
                (long long)n, secs, a.rate, a.channels, t1 - t0, t2 - t1,
                secs > 0 ? (t2 - t1) / secs : 0.0, threads, stream ? ", streamed" : "");
    }
    free(tokens);
    pool_free(pool);
    wav_audio_free(&a);
    stok_free(&m);
    return rc ? (raw_stream ? CMD_EXIT_USAGE : 1) : 0; /* a raw stream fails on its input */
}
