/*
 * parley ask: one spoken (or typed) turn — or several — end to end through the engine:
 * speech tokenizer, LM, decoder, vocoder. Prints the transcript as it streams and the timing
 * of every stage; writes the answer's audio.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/wav.h"
#include "cmd.h"
#include "engine/engine.h"
#include "voice/voicefile.h"

#define ASK_MAX_BYTES (256u << 20)
#define ASK_MAX_TURNS 32
#define ASK_PATH      4096

static const char ask_usage[] =
    "usage: parley ask --models DIR (--audio Q.wav | --text TEXT | --turns A.wav,B.wav,...)\n"
    "                  [--out ANSWER.wav] [options]\n\n"
    "Runs turns of one conversation through the engine. DIR holds lm.gguf, tokenizer.gguf and\n"
    "decoder.gguf (--lm, --tokenizer, --decoder name files one by one; without a decoder the\n"
    "answer is text only). --turns: several audio files (or text turns written as text:...),\n"
    "one turn each; --out then gets one file per turn (ANSWER.wav, ANSWER.1.wav, ...).\n\n"
    "  --greedy           argmax instead of sampling\n"
    "  --seed N           sampler seed (0)\n"
    "  --max-new N        new tokens per answer at most (2000)\n"
    "  --schedule S       audio block schedule: paper (10,20), aligned, main or N,N,... \n"
    "  --threads N        LM threads (2)\n"
    "  --history kv|retokenize   keep the KV cache (default) or re-tokenize as the demo\n";

/* One turn: input, commit, events until TURN_DONE. Returns 0, or 1 on a failure. */
static int ask_turn(struct engine_session *s, const char *input, int is_text, const char *out,
                    int turn, int sample_rate)
{
    struct err e;
    enum engine_status st;
    double in_seconds = 0;
    if (is_text) {
        st = engine_push_text(s, input, &e);
    } else {
        struct wav_audio a;
        if (wav_read_file(&a, input, ASK_MAX_BYTES, &e) != 0) {
            fprintf(stderr, "parley: %s\n", e.msg);
            return 1;
        }
        /* channel 0, as the reference (spec §2.1); the session's rate is the file's */
        in_seconds = (double)a.frames / a.rate;
        st = engine_push_audio(s, a.samples, a.frames, &e);
        wav_audio_free(&a);
    }
    if (st != ENGINE_OK || engine_commit(s, &e) != ENGINE_OK) {
        fprintf(stderr, "parley: ask: %s\n", e.msg);
        return 1;
    }
    float *pcm = NULL;
    int64_t n_pcm = 0;
    int rc = 0;
    struct engine_event ev;
    printf("turn %d: ", turn);
    fflush(stdout);
    for (;;) {
        if (!engine_next_event(s, &ev, 600)) {
            fprintf(stderr, "parley: ask: no event for 600 s\n");
            rc = 1;
            break;
        }
        if (ev.type == ENGINE_EV_USER_TOKENIZED) {
            fprintf(stderr, "ask: user turn %.2f s -> %lld speech tokens\n", in_seconds,
                    (long long)ev.n_tokens);
        } else if (ev.type == ENGINE_EV_TRANSCRIPT) {
            fwrite(ev.text, 1, (size_t)ev.n_text, stdout);
            fflush(stdout);
        } else if (ev.type == ENGINE_EV_AUDIO) {
            float *p = realloc(pcm, (size_t)(n_pcm + ev.n_pcm) * sizeof *p);
            if (p) {
                pcm = p;
                memcpy(pcm + n_pcm, ev.pcm, (size_t)ev.n_pcm * sizeof *p);
                n_pcm += ev.n_pcm;
            }
        } else if (ev.type == ENGINE_EV_ERROR) {
            fprintf(stderr, "\nparley: ask: %s: %s\n", engine_status_name(ev.status), ev.text);
            rc = 1;
        } else if (ev.type == ENGINE_EV_TURN_DONE) {
            const struct engine_timings *t = &ev.t;
            printf("\n");
            fprintf(stderr,
                    "ask: turn %d done (%s): %lld prompt ids, %lld text + %lld audio ids, "
                    "%.2f s of audio\n"
                    "ask: from commit: tokenizer %.3f s, prefill %.3f-%.3f s, first id %.3f s, "
                    "first audio id %.3f s, first block %.3f s, first PCM %.3f s, done %.3f s\n"
                    "ask: compute: speech tokenizer %.3f s, LM %.3f s, decoder %.3f s\n",
                    turn, engine_done_name(ev.reason), (long long)t->n_prompt, (long long)t->n_text,
                    (long long)t->n_audio, (double)t->n_samples / sample_rate, t->tokenize,
                    t->prefill_start, t->prefill_end, t->first_token, t->first_audio_token,
                    t->first_block, t->first_pcm, t->done, t->stok_seconds, t->lm_seconds,
                    t->voice_seconds);
            engine_event_clear(&ev);
            break;
        }
        engine_event_clear(&ev);
    }
    if (rc == 0 && out && n_pcm > 0) {
        char path[ASK_PATH];
        cmd_turn_file(path, sizeof path, out, turn);
        if (voicefile_write_wav(path, pcm, n_pcm, sample_rate, 0, &e) != 0) {
            fprintf(stderr, "parley: %s\n", e.msg);
            rc = 1;
        } else {
            fprintf(stderr, "ask: wrote %s\n", path);
        }
    }
    free(pcm);
    return rc;
}

/* The input rate of the first audio turn (a session has one input rate). */
static int ask_first_rate(char **inputs, const int *is_text, int n, int *rate)
{
    *rate = 16000;
    for (int i = 0; i < n; i++)
        if (!is_text[i]) {
            struct wav_audio a;
            struct err e;
            if (wav_read_file(&a, inputs[i], ASK_MAX_BYTES, &e) != 0) {
                fprintf(stderr, "parley: %s\n", e.msg);
                return -1;
            }
            *rate = a.rate;
            wav_audio_free(&a);
            return 0;
        }
    return 0;
}

int cmd_ask(int argc, char **argv)
{
    const char *dir = NULL, *lm = NULL, *tok = NULL, *dec = NULL, *out = NULL;
    const char *audio = NULL, *text = NULL, *turns = NULL, *schedule = NULL, *history = "kv";
    long long threads = 2, v;
    struct engine_session_options o;
    engine_session_options_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (cmd_is_help(a)) {
            fputs(ask_usage, stdout);
            return 0;
        } else if (strcmp(a, "--greedy") == 0) {
            o.sampling.greedy = 1;
        } else if (!next) {
            bad = 1;
        } else if (strcmp(a, "--models") == 0) {
            dir = argv[++i];
        } else if (strcmp(a, "--lm") == 0) {
            lm = argv[++i];
        } else if (strcmp(a, "--tokenizer") == 0) {
            tok = argv[++i];
        } else if (strcmp(a, "--decoder") == 0) {
            dec = argv[++i];
        } else if (strcmp(a, "--audio") == 0) {
            audio = argv[++i];
        } else if (strcmp(a, "--text") == 0) {
            text = argv[++i];
        } else if (strcmp(a, "--turns") == 0) {
            turns = argv[++i];
        } else if (strcmp(a, "--out") == 0) {
            out = argv[++i];
        } else if (strcmp(a, "--schedule") == 0) {
            schedule = argv[++i];
        } else if (strcmp(a, "--history") == 0) {
            history = argv[++i];
            bad = strcmp(history, "kv") != 0 && strcmp(history, "retokenize") != 0;
        } else if (strcmp(a, "--seed") == 0) {
            bad = cmd_parse_long(argv[++i], 0, __LONG_MAX__, &v);
            o.sampling.seed = (uint64_t)v;
        } else if (strcmp(a, "--max-new") == 0) {
            bad = cmd_parse_long(argv[++i], 1, 1 << 20, &v);
            o.sampling.max_new = (int)v;
        } else if (strcmp(a, "--threads") == 0) {
            bad = cmd_parse_long(argv[++i], 1, 256, &threads);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr,
                    "parley: ask: bad, unknown or incomplete argument '%s' "
                    "(see parley ask --help)\n",
                    a);
            return CMD_EXIT_USAGE;
        }
    }
    if ((!dir && !lm) || (!!audio + !!text + !!turns) != 1) {
        fprintf(stderr, "parley: usage: parley ask --models DIR (--audio Q.wav | --text TEXT | "
                        "--turns A.wav,B.wav) [--out ANSWER.wav]\n");
        return CMD_EXIT_USAGE;
    }
    struct err e;
    if (schedule && t2w_schedule_parse(&o.voice, schedule, &e) != 0) {
        fprintf(stderr, "parley: ask: --schedule: %s\n", e.msg);
        return CMD_EXIT_USAGE;
    }
    o.history = strcmp(history, "kv") == 0 ? ENGINE_HISTORY_KV : ENGINE_HISTORY_RETOKENIZE;

    /* the turns */
    char *list = strdup(turns ? turns : audio ? audio : text);
    char *inputs[ASK_MAX_TURNS];
    int is_text[ASK_MAX_TURNS], n_turns = 0;
    if (!list)
        return 1;
    if (turns) {
        for (char *p = strtok(list, ","); p; p = strtok(NULL, ",")) {
            if (n_turns == ASK_MAX_TURNS) {
                fprintf(stderr, "parley: ask: at most %d turns\n", ASK_MAX_TURNS);
                free(list);
                return CMD_EXIT_USAGE;
            }
            is_text[n_turns] = strncmp(p, "text:", 5) == 0;
            inputs[n_turns] = is_text[n_turns] ? p + 5 : p;
            n_turns++;
        }
    } else {
        inputs[0] = list;
        is_text[0] = text != NULL;
        n_turns = 1;
    }

    char p_lm[ASK_PATH], p_tok[ASK_PATH], p_dec[ASK_PATH];
    if (dir) {
        snprintf(p_lm, sizeof p_lm, "%s/lm.gguf", dir);
        snprintf(p_tok, sizeof p_tok, "%s/tokenizer.gguf", dir);
        snprintf(p_dec, sizeof p_dec, "%s/decoder.gguf", dir);
        if (!lm)
            lm = p_lm;
        if (!tok)
            tok = p_tok;
        if (!dec)
            dec = p_dec;
    }
    int need_tok = 0;
    for (int i = 0; i < n_turns; i++)
        need_tok |= !is_text[i];
    FILE *f;
    if (tok && !need_tok && !(f = fopen(tok, "rb")))
        tok = NULL; /* text turns only: the tokenizer is optional */
    else if (tok && !need_tok)
        fclose(f);
    if (dec && !(f = fopen(dec, "rb"))) {
        fprintf(stderr, "ask: no decoder at %s: text-only answers\n", dec);
        dec = NULL;
    } else if (dec) {
        fclose(f);
    }
    if (ask_first_rate(inputs, is_text, n_turns, &o.in_rate) != 0) {
        free(list);
        return CMD_EXIT_USAGE;
    }

    struct backend *be = backend_cpu_create((int)threads, &e);
    if (!be) {
        fprintf(stderr, "parley: %s\n", e.msg);
        free(list);
        return 1;
    }
    struct engine_model_files mf;
    struct engine *eng = NULL;
    struct engine_session *s = NULL;
    int rc = 1;
    if (engine_models_load(&mf, lm, need_tok ? tok : NULL, dec, be, &e) != 0) {
        fprintf(stderr, "parley: %s\n", e.msg);
        backend_free(be);
        free(list);
        return CMD_EXIT_USAGE;
    }
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.max_sessions = 1;
    if (engine_create(&eng, &mf.m, &cfg, &e) != 0 || engine_open(eng, &o, &s, &e) != ENGINE_OK) {
        fprintf(stderr, "parley: %s\n", e.msg);
        goto done;
    }
    int sr = mf.m.hift ? mf.m.hift->hp.sample_rate : 22050;
    rc = 0;
    for (int i = 0; i < n_turns && rc == 0; i++)
        rc = ask_turn(s, inputs[i], is_text[i], out, i, sr);
done:
    if (s)
        engine_close(s);
    engine_destroy(eng);
    engine_models_free(&mf);
    backend_free(be);
    free(list);
    return rc;
}
