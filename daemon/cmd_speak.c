/*
 * parley speak: speech tokens → waveform through the flow decoder and HiFT.
 *
 *   parley speak --model DEC.gguf --tokens 1,2,3,... --out answer.wav
 *                [--stream SCHEDULE --mode reference|clean --prompt-cap N]
 *                [--mel-out FILE] [--noise FILE] [--threads N] [--float]
 *
 * Without --stream: one offline pass (flow over all tokens, HiFT over all frames). With it,
 * the tokens go through the streaming state one by one (then <|user|>), and each chunk's
 * length and time are printed to stderr. --mel-out writes the mel (float32 80 × T,
 * row-major, little-endian; in streaming mode the mel each call handed back, concatenated).
 * --noise takes the ODE's initial noise from a float32 80 × T file (offline pass only).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "runtime/gguf.h"
#include "runtime/pool.h"
#include "voice/flow.h"
#include "voice/hift.h"
#include "voice/t2w.h"
#include "voice/voicefile.h"
#include "runtime/clock.h"

#define SPEAK_MAX_TOKENS 20000

static void speak_usage(FILE *out)
{
    fprintf(out,
            "usage: parley speak --model DEC.gguf --tokens 1,2,3,... --out answer.wav\n"
            "                    [--stream SCHEDULE --mode reference|clean --prompt-cap N]\n"
            "                    [--mel-out FILE] [--noise FILE] [--threads N] [--float]\n"
            "  SCHEDULE: paper (10,20), main (25,50,100,150,200), aligned (10,20,40) or a list\n"
            "  --prompt-cap: clean mode's prompt tokens per call (default 100, 0 = all)\n");
}

static int speak_parse_tokens(const char *s, int32_t **out, int64_t *n)
{
    int64_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    if (cap > SPEAK_MAX_TOKENS)
        return -1;
    int32_t *t = malloc(sizeof(int32_t) * (size_t)cap);
    int64_t k = 0;
    const char *p = s;
    while (t && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 0x7fffffff || (*end && *end != ',') ||
            (*end == ',' && end[1] == '\0')) {
            free(t);
            return -1;
        }
        t[k++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!t || k == 0) {
        free(t);
        return -1;
    }
    *out = t;
    *n = k;
    return 0;
}

int cmd_speak(int argc, char **argv)
{
    const char *model = NULL, *tokens_arg = NULL, *out = NULL, *stream = NULL, *mode = "clean";
    const char *mel_out = NULL, *noise_path = NULL;
    int threads = 2, as_float = 0, prompt_cap = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cmd_is_help(a)) {
            speak_usage(stdout);
            return 0;
        }
        if (strcmp(a, "--float") == 0) {
            as_float = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "parley: speak: %s needs a value (or is unknown)\n", a);
            return CMD_EXIT_USAGE;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--model") == 0)
            model = v;
        else if (strcmp(a, "--tokens") == 0)
            tokens_arg = v;
        else if (strcmp(a, "--out") == 0)
            out = v;
        else if (strcmp(a, "--stream") == 0)
            stream = v;
        else if (strcmp(a, "--mode") == 0)
            mode = v;
        else if (strcmp(a, "--mel-out") == 0)
            mel_out = v;
        else if (strcmp(a, "--noise") == 0)
            noise_path = v;
        else if (strcmp(a, "--threads") == 0)
            threads = atoi(v);
        else if (strcmp(a, "--prompt-cap") == 0)
            prompt_cap = atoi(v);
        else {
            fprintf(stderr, "parley: speak: unknown option %s\n", a);
            return CMD_EXIT_USAGE;
        }
    }
    if (!model || !tokens_arg || !out) {
        fprintf(stderr, "parley: speak needs --model, --tokens and --out (see --help)\n");
        return CMD_EXIT_USAGE;
    }
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "parley: speak: --threads must be 1..256\n");
        return CMD_EXIT_USAGE;
    }
    if (strcmp(mode, "clean") != 0 && strcmp(mode, "reference") != 0) {
        fprintf(stderr, "parley: speak: --mode is reference or clean, not '%s'\n", mode);
        return CMD_EXIT_USAGE;
    }
    if (stream && noise_path) {
        fprintf(stderr, "parley: speak: --noise applies to the offline pass (no --stream)\n");
        return CMD_EXIT_USAGE;
    }
    int32_t *tok = NULL;
    int64_t n_tok = 0;
    if (speak_parse_tokens(tokens_arg, &tok, &n_tok)) {
        fprintf(stderr,
                "parley: speak: --tokens wants a comma-separated list of 1..%d "
                "non-negative ids\n",
                SPEAK_MAX_TOKENS);
        return CMD_EXIT_USAGE;
    }
    struct t2w_config cfg;
    struct err e;
    t2w_config_default(&cfg);
    if (stream && t2w_schedule_parse(&cfg, stream, &e)) {
        fprintf(stderr, "parley: speak: %s\n", e.msg);
        free(tok);
        return CMD_EXIT_USAGE;
    }

    struct gguf_file f;
    struct flow_model fm;
    struct hift_model hm;
    memset(&f, 0, sizeof f);
    memset(&fm, 0, sizeof fm);
    memset(&hm, 0, sizeof hm);
    if (gguf_open(&f, model, &e) || flow_load(&fm, &f, &e) || hift_load(&hm, &f, &e)) {
        fprintf(stderr, "parley: %s\n", e.msg);
        flow_free(&fm);
        gguf_close(&f);
        free(tok);
        return CMD_EXIT_USAGE;
    }
    for (int64_t i = 0; i < n_tok; i++)
        if (tok[i] >= fm.hp.vocab) {
            fprintf(stderr, "parley: speak: token %d is outside 0..%d\n", tok[i], fm.hp.vocab - 1);
            flow_free(&fm);
            hift_free(&hm);
            gguf_close(&f);
            free(tok);
            return CMD_EXIT_USAGE;
        }
    struct pool *pool = threads > 1 ? pool_create(threads) : NULL;
    int rc = 1;
    float *wave = NULL, *mel = NULL, *noise = NULL;
    int64_t n_wave = 0, T = flow_mel_len(&fm.hp, n_tok);
    double t0 = clock_seconds();
    if (!stream) {
        struct flow_state fs;
        struct hift_state hs;
        int64_t n_noise = 0, n_out = 0;
        if (noise_path) {
            if (voicefile_read_f32(noise_path, (int64_t)fm.hp.n_mel * T, (int64_t)fm.hp.n_mel * T,
                                   &noise, &n_noise, &e)) {
                fprintf(stderr, "parley: speak: --noise: %s (want %d x %lld floats)\n", e.msg,
                        fm.hp.n_mel, (long long)T);
                rc = CMD_EXIT_USAGE;
                goto done;
            }
        }
        mel = malloc(sizeof(float) * (size_t)(fm.hp.n_mel * T));
        wave = malloc(sizeof(float) * (size_t)(T * hm.hp.hop_total));
        if (!mel || !wave) {
            fprintf(stderr, "parley: speak: out of memory\n");
            goto done;
        }
        if (flow_state_init(&fs, &fm, n_tok, pool, &e)) {
            fprintf(stderr, "parley: %s\n", e.msg);
            goto done;
        }
        int frc = flow_inference(&fm, &fs, pool, mel, &n_out, tok, n_tok, NULL, 0, NULL, 0, noise,
                                 NULL, NULL, &e);
        flow_state_free(&fs);
        double t1 = clock_seconds();
        if (frc || hift_state_init(&hs, &hm, T, &e)) {
            fprintf(stderr, "parley: %s\n", e.msg);
            goto done;
        }
        frc = hift_forward(&hm, &hs, pool, wave, NULL, NULL, mel, T, NULL, NULL, &e);
        hift_state_free(&hs);
        if (frc) {
            fprintf(stderr, "parley: %s\n", e.msg);
            goto done;
        }
        n_wave = T * hm.hp.hop_total;
        double t2 = clock_seconds();
        fprintf(stderr,
                "speak: %lld tokens -> %lld frames -> %.2f s of audio; flow %.3f s, "
                "HiFT %.3f s\n",
                (long long)n_tok, (long long)T, (double)n_wave / hm.hp.sample_rate, t1 - t0,
                t2 - t1);
    } else {
        struct t2w t;
        cfg.mode = strcmp(mode, "reference") == 0 ? T2W_MODE_REFERENCE : T2W_MODE_CLEAN;
        cfg.prompt_cap = prompt_cap;
        cfg.max_tokens = n_tok;
        if (t2w_init(&t, &fm, &hm, &cfg, pool, &e)) {
            fprintf(stderr, "parley: speak: %s\n", e.msg);
            rc = CMD_EXIT_USAGE;
            goto done;
        }
        wave = malloc(sizeof(float) * (size_t)((T + 64) * hm.hp.hop_total));
        for (int64_t i = 0; wave && i <= n_tok; i++) {
            double c0 = clock_seconds();
            int r = i < n_tok ? t2w_push_audio(&t, tok[i], &e) : t2w_end(&t, 1, &e);
            if (r) {
                fprintf(stderr, "parley: speak: %s\n", e.msg);
                t2w_free(&t);
                goto done;
            }
            if (t.n_out > 0) {
                memcpy(wave + n_wave, t.out, sizeof(float) * (size_t)t.n_out);
                n_wave += t.n_out;
                fprintf(stderr, "speak: chunk after token %lld: %lld samples (%.3f s) in %.3f s\n",
                        (long long)i, (long long)t.n_out, (double)t.n_out / hm.hp.sample_rate,
                        clock_seconds() - c0);
            }
        }
        if (mel_out) {
            T = t.n_hist;
            mel = malloc(sizeof(float) * (size_t)(fm.hp.n_mel * (T ? T : 1)));
            for (int64_t c = 0; mel && c < fm.hp.n_mel; c++)
                for (int64_t j = 0; j < T; j++)
                    mel[c * T + j] = t.mel_hist[j * fm.hp.n_mel + c];
        }
        fprintf(stderr, "speak: %lld tokens, %lld calls, %.2f s of audio in %.3f s (%s mode)\n",
                (long long)n_tok, (long long)t.n_calls, (double)n_wave / hm.hp.sample_rate,
                clock_seconds() - t0, mode);
        t2w_free(&t);
        if (!wave)
            goto done;
    }
    if (voicefile_write_wav(out, wave, n_wave, hm.hp.sample_rate, as_float, &e) ||
        (mel_out && mel && voicefile_write_f32(mel_out, mel, (int64_t)fm.hp.n_mel * T, &e))) {
        fprintf(stderr, "parley: %s\n", e.msg);
        goto done;
    }
    rc = 0;
done:
    free(wave);
    free(mel);
    free(noise);
    free(tok);
    pool_free(pool);
    flow_free(&fm);
    hift_free(&hm);
    gguf_close(&f);
    return rc;
}
