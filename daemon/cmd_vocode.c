/*
 * parley vocode: HiFT alone on a mel.
 *
 *   parley vocode --model DEC.gguf --mel FILE --out out.wav [--source-noise FILE]
 *                 [--threads N] [--float]
 *
 * FILE is float32 80 × T (row-major, little-endian); --source-noise takes the NSF noise from a
 * float32 9 × 256T file (standard normal values, for comparisons with a reference).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "voice/hift.h"
#include "voice/voicefile.h"

#define VOCODE_MAX_FRAMES 100000

int cmd_vocode(int argc, char **argv)
{
    const char *model = NULL, *mel_path = NULL, *out = NULL, *noise_path = NULL;
    int threads = 2, as_float = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cmd_is_help(a)) {
            printf("usage: parley vocode --model DEC.gguf --mel FILE --out out.wav\n"
                   "                     [--source-noise FILE] [--threads N] [--float]\n");
            return 0;
        }
        if (strcmp(a, "--float") == 0) {
            as_float = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "parley: vocode: %s needs a value (or is unknown)\n", a);
            return CMD_EXIT_USAGE;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--model") == 0)
            model = v;
        else if (strcmp(a, "--mel") == 0)
            mel_path = v;
        else if (strcmp(a, "--out") == 0)
            out = v;
        else if (strcmp(a, "--source-noise") == 0)
            noise_path = v;
        else if (strcmp(a, "--threads") == 0)
            threads = atoi(v);
        else {
            fprintf(stderr, "parley: vocode: unknown option %s\n", a);
            return CMD_EXIT_USAGE;
        }
    }
    if (!model || !mel_path || !out) {
        fprintf(stderr, "parley: vocode needs --model, --mel and --out (see --help)\n");
        return CMD_EXIT_USAGE;
    }
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "parley: vocode: --threads must be 1..256\n");
        return CMD_EXIT_USAGE;
    }
    struct gguf_file f;
    struct hift_model hm;
    struct err e;
    memset(&f, 0, sizeof f);
    memset(&hm, 0, sizeof hm);
    if (gguf_open(&f, model, &e) || hift_load(&hm, &f, &e)) {
        fprintf(stderr, "parley: %s\n", e.msg);
        gguf_close(&f);
        return CMD_EXIT_USAGE;
    }
    int rc = CMD_EXIT_USAGE;
    float *mel = NULL, *noise = NULL, *wave = NULL;
    int64_t n_mel, n_noise, C = hm.hp.in_channels, H = hm.hp.nb_harmonics + 1;
    struct pool *pool = NULL;
    struct hift_state hs;
    memset(&hs, 0, sizeof hs);
    if (voicefile_read_f32(mel_path, C, C * VOCODE_MAX_FRAMES, &mel, &n_mel, &e)) {
        fprintf(stderr, "parley: vocode: --mel: %s (want %lld x T floats)\n", e.msg, (long long)C);
        goto done;
    }
    int64_t T = n_mel / C, L = T * hm.hp.hop_total;
    if (noise_path && voicefile_read_f32(noise_path, H * L, H * L, &noise, &n_noise, &e)) {
        fprintf(stderr, "parley: vocode: --source-noise: %s (want %lld x %lld floats)\n", e.msg,
                (long long)H, (long long)L);
        goto done;
    }
    rc = 1;
    pool = threads > 1 ? pool_create(threads) : NULL;
    wave = malloc(sizeof(float) * (size_t)L);
    if (!wave || hift_state_init(&hs, &hm, T, &e) ||
        hift_forward(&hm, &hs, pool, wave, NULL, NULL, mel, T, NULL, noise, &e) ||
        voicefile_write_wav(out, wave, L, hm.hp.sample_rate, as_float, &e)) {
        fprintf(stderr, "parley: vocode: %s\n", wave ? e.msg : "out of memory");
        goto done;
    }
    fprintf(stderr, "vocode: %lld frames -> %lld samples (%.2f s)\n", (long long)T, (long long)L,
            (double)L / hm.hp.sample_rate);
    rc = 0;
done:
    hift_state_free(&hs);
    free(mel);
    free(noise);
    free(wave);
    pool_free(pool);
    hift_free(&hm);
    gguf_close(&f);
    return rc;
}
