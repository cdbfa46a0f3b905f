/*
 * The speech tokenizer's other inputs, on the golden files of tests/golden/stok_torch.py:
 *   - Ogg Opus: real speech (the s16k clip encoded by libopusenc at 64 kbit/s) decoded at
 *     48 kHz with the pre-skip removed, aligned with the source, tokenized (tokens compared
 *     with the WAV's: Opus is lossy, so only a share must agree), and cut or foreign streams
 *     refused;
 *   - raw PCM16 pushed in odd byte counts at a non-model rate: tokens equal offline ones;
 *   - the `parley tokenize` command (the binary next to this test binary): ids equal the
 *     library's for a WAV, --stream, Ogg Opus, --raw from a file and from stdin; a bad file
 *     exits 2 with one line on stderr.
 * Set PARLEY_GOLDEN_VERBOSE=1 to print the Opus figures.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audio/oggopus.h"
#include "audio/wav.h"
#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "speech/resample.h"
#include "speech/stok.h"
#include "test.h"
#include "testd.h"
#include "localhost.h"

#define GOLDEN_DIR  "build/golden"
#define GOLDEN_PATH GOLDEN_DIR "/stok_torch.gguf"
#define GOLDEN_CMD  "/usr/bin/python3 tests/golden/stok_torch.py build/golden"
#define OPUS_PATH   GOLDEN_DIR "/stok_audio/s16k.opus"
#define WAV_PATH    GOLDEN_DIR "/stok_audio/s16k.wav"
#define MODEL_PATH  GOLDEN_DIR "/stok_a.gguf"
#define MAX_BYTES   ((size_t)1 << 30)

static int verbose(void)
{
    const char *v = getenv("PARLEY_GOLDEN_VERBOSE");
    return v && *v && strcmp(v, "0") != 0;
}

/* A whole file in memory (malloc'ed); NULL and a test failure naming the generator if absent. */
static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        test_fail(__FILE__, __LINE__, "%s missing; generate it with `%s`", path, GOLDEN_CMD);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        test_fail(__FILE__, __LINE__, "%s: read error", path);
        return NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static int load_model(struct stok_model *m)
{
    struct err e;
    if (stok_load(m, MODEL_PATH, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s`", e.msg, GOLDEN_CMD);
        stok_free(m);
        return -1;
    }
    return 0;
}

/* Length of the Ogg page at p. */
static size_t page_len(const uint8_t *p)
{
    size_t len = 27 + (size_t)p[26];
    for (int i = 0; i < p[26]; i++)
        len += p[27 + i];
    return len;
}

TEST(stok_opus_real_speech)
{
    struct gguf_file f;
    struct err e;
    if (gguf_open(&f, GOLDEN_PATH, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s`", e.msg, GOLDEN_CMD);
        return;
    }
    int64_t pre_skip = -1, src_frames = -1, src_rate = -1;
    CHECK(gguf_get_i64(&f, "opus.pre_skip", &pre_skip, &e) == 0);
    CHECK(gguf_get_i64(&f, "opus.source_frames", &src_frames, &e) == 0);
    CHECK(gguf_get_i64(&f, "opus.source_rate", &src_rate, &e) == 0);
    gguf_close(&f);
    size_t size = 0;
    uint8_t *ogg = slurp(OPUS_PATH, &size);
    struct wav_audio src;
    if (!ogg)
        return;
    if (wav_read_file(&src, WAV_PATH, MAX_BYTES, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        free(ogg);
        return;
    }
    REQUIRE(src_rate == 16000 && src.frames == src_frames && pre_skip > 0);
    struct wav_audio a;
    if (oggopus_decode(&a, ogg, size, MAX_BYTES, &e)) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        wav_audio_free(&src);
        free(ogg);
        return;
    }
    /* 48 kHz output; the end granule trims the stream to the source length and the pre-skip
     * (the encoder's delay) is gone from the front, so it lines up with the source */
    CHECK(a.rate == 48000 && a.channels == 1);
    CHECK(a.frames == src_frames * 3);
    struct resample r;
    REQUIRE(resample_init(&r, 48000, 16000, &e) == 0);
    int64_t n16 = resample_out_len(&r, a.frames);
    float *y = malloc((size_t)n16 * sizeof *y);
    REQUIRE(y && resample_run(&r, y, a.samples, a.frames, &e) == 0);
    CHECK(n16 == src.frames);
    /* SNR against the source at lag 0 and at the pre-skip's lag (16 kHz samples) */
    double snr[2];
    int64_t lags[2] = { 0, pre_skip / 3 };
    for (int k = 0; k < 2; k++) {
        double sig = 0, noise = 0;
        for (int64_t i = lags[k]; i < src.frames && i - lags[k] < n16; i++) {
            double d = (double)y[i - lags[k]] - src.samples[i];
            sig += (double)src.samples[i] * src.samples[i];
            noise += d * d;
        }
        snr[k] = 10 * log10(sig / (noise > 0 ? noise : 1e-30));
    }
    CHECK(snr[0] > 10.0);
    CHECK(snr[0] > snr[1] + 10.0);
    /* tokens: Opus at 48 kHz vs the source WAV at 16 kHz */
    struct stok_model m;
    struct pool *pool = pool_create(2);
    if (pool && load_model(&m) == 0) {
        int32_t *to = NULL, *tw = NULL;
        int64_t no = 0, nw = 0;
        CHECK(stok_tokenize(&m, pool, &to, &no, a.samples, a.frames, a.rate, &e) == 0);
        CHECK(stok_tokenize(&m, pool, &tw, &nw, src.samples, src.frames, src.rate, &e) == 0);
        CHECK(no == nw && nw > 0);
        int64_t same = 0;
        for (int64_t i = 0; i < no && i < nw; i++)
            same += to[i] == tw[i];
        double frac = nw ? (double)same / nw : 0;
        if (verbose())
            printf("  opus: pre-skip %lld, %lld frames at 48 kHz, SNR %.1f dB (%.1f dB at the "
                   "pre-skip lag); %lld of %lld tokens equal the WAV's (%.0f %%)\n",
                   (long long)pre_skip, (long long)a.frames, snr[0], snr[1], (long long)same,
                   (long long)nw, 100 * frac);
        CHECK(frac >= 0.5);
        free(to);
        free(tw);
        stok_free(&m);
    }
    pool_free(pool);
    free(y);
    resample_free(&r);
    wav_audio_free(&a);

    /* bad input */
    CHECK(oggopus_decode(&a, ogg, size / 2, MAX_BYTES, &e) == -1 && strstr(e.msg, "truncated"));
    size_t last = 0; /* start of the last page: cut there, the stream has no end-of-stream */
    for (size_t off = 0; off < size; off += page_len(ogg + off))
        last = off;
    CHECK(last > 0 && oggopus_decode(&a, ogg, last, MAX_BYTES, &e) == -1 &&
          strstr(e.msg, "end-of-stream"));
    CHECK(oggopus_decode(&a, ogg + 1, size - 1, MAX_BYTES, &e) == -1 &&
          strstr(e.msg, "not an Ogg"));
    size_t nw = 0;
    uint8_t *wav = slurp(WAV_PATH, &nw);
    if (wav)
        CHECK(oggopus_decode(&a, wav, nw, MAX_BYTES, &e) == -1 && strstr(e.msg, "not an Ogg"));
    free(wav);
    CHECK(oggopus_decode(&a, ogg, size, size - 1, &e) == -1 && strstr(e.msg, "limit"));
    /* Ogg, but a Vorbis identification header (valid CRC) instead of OpusHead */
    size_t p0 = page_len(ogg), body = 27 + (size_t)ogg[26];
    REQUIRE(memcmp(ogg + body, "OpusHead", 8) == 0);
    memcpy(ogg + body, "\x01vorbis\x00", 8);
    memset(ogg + 22, 0, 4);
    uint32_t crc = test_ogg_crc(ogg, p0);
    for (int k = 0; k < 4; k++)
        ogg[22 + k] = (uint8_t)(crc >> 8 * k);
    CHECK(oggopus_decode(&a, ogg, size, MAX_BYTES, &e) == -1 && strstr(e.msg, "Ogg Opus"));
    free(ogg);
    wav_audio_free(&src);
}

/* PCM16 bytes of x (already on the 16-bit grid), little-endian */
static uint8_t *to_pcm16(const float *x, int64_t n)
{
    uint8_t *b = malloc((size_t)n * 2);
    for (int64_t i = 0; b && i < n; i++) {
        long v = lrintf(x[i] * 32768.0f);
        v = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
        b[2 * i] = (uint8_t)(v & 0xff);
        b[2 * i + 1] = (uint8_t)((unsigned long)v >> 8 & 0xff);
    }
    return b;
}

TEST(stok_stream_pcm16)
{
    struct stok_model m;
    struct err e;
    if (load_model(&m))
        return;
    struct pool *pool = pool_create(2);
    REQUIRE(pool);
    /* speech-like audio on the PCM16 grid at 22.05 kHz (resampled while streaming) */
    int rate = 22050;
    int64_t n = getenv("PARLEY_TEST_QUICK") ? rate * 3 + 11 : rate * 6 + 11;
    float *x = malloc((size_t)n * sizeof *x);
    REQUIRE(x);
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        double v = 0.3 * sin(2 * M_PI * 180 * t) * (0.6 + 0.4 * sin(2 * M_PI * 3 * t)) +
                   0.1 * sin(2 * M_PI * 1100 * t + 2 * sin(2 * M_PI * 5 * t));
        x[i] = (float)lrint(v * 32768) / 32768.0f;
    }
    uint8_t *b = to_pcm16(x, n);
    REQUIRE(b);
    int32_t *off = NULL;
    int64_t noff = 0;
    CHECK(stok_tokenize(&m, pool, &off, &noff, x, n, rate, &e) == 0);
    struct stok_stream s;
    REQUIRE(stok_stream_init(&s, &m, pool, rate, (double)n / rate + 1, 1, &e) == 0);
    /* odd counts split samples across pushes */
    static const size_t sizes[] = { 1, 7, 882, 3, 8193, 441, 2, 9999 };
    size_t nb = (size_t)n * 2, pos = 0;
    for (int k = 0; pos < nb; k++) {
        size_t take = sizes[k % 8] < nb - pos ? sizes[k % 8] : nb - pos;
        if (stok_stream_push_pcm16(&s, b + pos, take, &e)) {
            test_fail(__FILE__, __LINE__, "%s", e.msg);
            break;
        }
        pos += take;
    }
    CHECK(stok_stream_finish(&s, &e) == 0);
    CHECK(s.n_final == noff && noff > 0);
    if (s.n_final == noff)
        CHECK(memcmp(s.tokens, off, (size_t)noff * sizeof *off) == 0);
    stok_stream_free(&s);
    /* half a sample at the end is refused; pushing after finish is refused */
    REQUIRE(stok_stream_init(&s, &m, pool, rate, 2, 1, &e) == 0);
    CHECK(stok_stream_push_pcm16(&s, b, 4001, &e) == 0);
    CHECK(stok_stream_finish(&s, &e) == -1 && strstr(e.msg, "odd byte count"));
    stok_stream_free(&s);
    REQUIRE(stok_stream_init(&s, &m, pool, rate, 2, 1, &e) == 0);
    CHECK(stok_stream_push_pcm16(&s, b, 4000, &e) == 0 && stok_stream_finish(&s, &e) == 0);
    CHECK(stok_stream_push_pcm16(&s, b, 2, &e) == -1 && strstr(e.msg, "after finish"));
    stok_stream_free(&s);
    free(off);
    free(b);
    free(x);
    pool_free(pool);
    stok_free(&m);
}

/* ---- the CLI ------------------------------------------------------------------------------ */

/* Runs `parley tokenize ARGS`, stdout to *out (malloc'ed), stderr lines counted; exit status. */
static int run_cli(const char *exe, const char *args, const char *dir, char **out, int *err_lines)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s tokenize %s >%s/out.txt 2>%s/err.txt", exe, args, dir, dir);
    int st = system(cmd);
    size_t n = 0;
    char path[512];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    FILE *f = fopen(path, "rb");
    *out = calloc(1 << 20, 1);
    if (f && *out)
        n = fread(*out, 1, (1 << 20) - 1, f);
    (void)n;
    if (f)
        fclose(f);
    snprintf(path, sizeof path, "%s/err.txt", dir);
    f = fopen(path, "rb");
    *err_lines = 0;
    for (int c; f && (c = fgetc(f)) != EOF;)
        *err_lines += c == '\n';
    if (f)
        fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* "id,id,...\n" of the tokens */
static char *ids_line(const int32_t *t, int64_t n)
{
    char *s = malloc((size_t)n * 12 + 2), *p = s;
    for (int64_t i = 0; s && i < n; i++)
        p += sprintf(p, i ? ",%d" : "%d", t[i]);
    if (s)
        strcpy(p, "\n");
    return s;
}

TEST(stok_cli_tokenize)
{
    char exe[PATH_MAX];
    if (localhost_sibling("parley", exe, sizeof exe) != 0) {
        printf("  (parley is not built next to the test binary: CLI test skipped)\n");
        return;
    }
    struct stok_model m;
    struct err e;
    struct wav_audio a;
    if (load_model(&m))
        return;
    if (wav_read_file(&a, WAV_PATH, MAX_BYTES, &e)) {
        test_fail(__FILE__, __LINE__, "%s; generate it with `%s`", e.msg, GOLDEN_CMD);
        stok_free(&m);
        return;
    }
    struct pool *pool = pool_create(2);
    int32_t *t = NULL;
    int64_t nt = 0;
    REQUIRE(pool && stok_tokenize(&m, pool, &t, &nt, a.samples, a.frames, a.rate, &e) == 0);
    char *want = ids_line(t, nt);
    char dir[] = "/tmp/parley-stok-cli-XXXXXX";
    REQUIRE(want && mkdtemp(dir));
    char raw[600], bad[600], args[2048];
    snprintf(raw, sizeof raw, "%s/in.pcm", dir);
    snprintf(bad, sizeof bad, "%s/bad.wav", dir);
    uint8_t *pcm = to_pcm16(a.samples, a.frames); /* a 16-bit WAV: exact */
    FILE *f = fopen(raw, "wb");
    REQUIRE(f && pcm);
    fwrite(pcm, 2, (size_t)a.frames, f);
    fclose(f);
    f = fopen(bad, "wb");
    REQUIRE(f);
    fwrite("RIFF\x10\0\0\0WAVEfmt ", 1, 16, f);
    fclose(f);
    struct {
        const char *fmt; /* %s: model, then input */
        int want_rc;
    } runs[] = {
        { "--model %s %s", 0 },
        { "--model %s --stream %s", 0 },
        { "--threads 1 --model %s --raw 16000 %s", 0 },
        { "--model %s --raw 16000 --stream - <%s", 0 },
        { "--model %s %s", 2 },
    };
    const char *inputs[] = { WAV_PATH, WAV_PATH, raw, raw, bad };
    for (int k = 0; k < 5; k++) {
        char *out;
        int lines;
        snprintf(args, sizeof args, runs[k].fmt, MODEL_PATH, inputs[k]);
        int rc = run_cli(exe, args, dir, &out, &lines);
        if (rc != runs[k].want_rc)
            test_fail(__FILE__, __LINE__, "parley tokenize %s: exit %d, wanted %d", args, rc,
                      runs[k].want_rc);
        if (runs[k].want_rc == 0) {
            CHECK(out && strcmp(out, want) == 0);
            CHECK(lines == 1); /* the timing line */
        } else {
            CHECK(out && out[0] == 0);
            CHECK(lines == 1);
        }
        free(out);
    }
    /* Ogg Opus through the CLI: the library's tokens of the decoded file */
    struct wav_audio o;
    size_t size = 0;
    uint8_t *ogg = slurp(OPUS_PATH, &size);
    if (ogg && oggopus_decode(&o, ogg, size, MAX_BYTES, &e) == 0) {
        int32_t *to = NULL;
        int64_t no = 0;
        CHECK(stok_tokenize(&m, pool, &to, &no, o.samples, o.frames, o.rate, &e) == 0);
        char *want_o = ids_line(to, no), *out;
        int lines;
        snprintf(args, sizeof args, "--model %s --stream %s", MODEL_PATH, OPUS_PATH);
        CHECK(run_cli(exe, args, dir, &out, &lines) == 0);
        CHECK(out && want_o && strcmp(out, want_o) == 0);
        free(out);
        free(want_o);
        free(to);
        wav_audio_free(&o);
    }
    free(ogg);
    /* an odd byte count of raw PCM16, whole and streamed from stdin: exit 2, one line */
    f = fopen(raw, "wb");
    REQUIRE(f);
    fwrite(pcm, 1, 3001, f);
    fclose(f);
    for (int k = 0; k < 2; k++) {
        char *out;
        int lines;
        snprintf(args, sizeof args,
                 k ? "--model %s --raw 16000 --stream - <%s" : "--model %s --raw 16000 %s",
                 MODEL_PATH, raw);
        CHECK(run_cli(exe, args, dir, &out, &lines) == 2);
        CHECK(lines == 1 && out && out[0] == 0);
        free(out);
    }
    char path[700];
    const char *names[] = { "in.pcm", "bad.wav", "out.txt", "err.txt" };
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        remove(path);
    }
    rmdir(dir);
    free(pcm);
    free(want);
    free(t);
    pool_free(pool);
    wav_audio_free(&a);
    stok_free(&m);
}
