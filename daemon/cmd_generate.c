/* parley generate: one chat turn (or a raw id prompt) through the LM, streamed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd.h"
#include "lm/chat.h"
#include "lm/lm.h"
#include "lm/sampler.h"
#include "text/bpe.h"
#include "runtime/clock.h"

static const char generate_usage[] =
    "usage: parley generate --model LM.gguf (--text TEXT | --ids ID,ID,...) [options]\n\n"
    "Runs one turn: --text builds the demo's prompt for a text turn (system prompt, user turn,\n"
    "[gMASK]<sop> prefix); --ids uses the ids as given, no template. Streams the answer: text\n"
    "as it completes, runs of audio tokens as [audio N N ...] lines; timing on stderr.\n\n"
    "  --greedy            argmax instead of sampling\n"
    "  --seed N            sampler seed (0)\n"
    "  --max-new N         new tokens at most (2000)\n"
    "  --temperature T     (0.2)    --top-p P (0.8)    --top-k K (50, 0 = off)\n"
    "  --threads N         CPU threads (2)\n"
    "  --kv f32|f16|bf16   KV cache type (f32)\n"
    "  --print-ids         print only the generated ids, comma-separated, on one line of\n"
    "                      stdout (the streamed text goes to stderr)\n";

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end || errno || v != v)
        return -1;
    *out = v;
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *ids_arg = NULL;
    int print_ids = 0;
    long long threads = 2, v;
    enum dtype kv = DTYPE_F32;
    struct sampler_params sp;
    sampler_defaults(&sp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (cmd_is_help(a)) {
            fputs(generate_usage, stdout);
            return 0;
        } else if (strcmp(a, "--greedy") == 0) {
            sp.greedy = 1;
        } else if (strcmp(a, "--print-ids") == 0) {
            print_ids = 1;
        } else if (!next) {
            bad = 1;
        } else if (strcmp(a, "--model") == 0) {
            model = argv[++i];
        } else if (strcmp(a, "--text") == 0) {
            text = argv[++i];
        } else if (strcmp(a, "--ids") == 0) {
            ids_arg = argv[++i];
        } else if (strcmp(a, "--seed") == 0) {
            bad = cmd_parse_long(argv[++i], 0, __LONG_MAX__, &v);
            sp.seed = (uint64_t)v;
        } else if (strcmp(a, "--max-new") == 0) {
            bad = cmd_parse_long(argv[++i], 1, 1 << 24, &v);
            sp.max_new = (int)v;
        } else if (strcmp(a, "--threads") == 0) {
            bad = cmd_parse_long(argv[++i], 1, 256, &threads);
        } else if (strcmp(a, "--temperature") == 0) {
            bad = parse_float(argv[++i], &sp.temperature);
        } else if (strcmp(a, "--top-p") == 0) {
            bad = parse_float(argv[++i], &sp.top_p) || !(sp.top_p > 0);
        } else if (strcmp(a, "--top-k") == 0) {
            bad = cmd_parse_long(argv[++i], 0, 1 << 24, &v);
            sp.top_k = (int)v;
        } else if (strcmp(a, "--kv") == 0) {
            bad = dtype_from_name(argv[++i], &kv) || kv == DTYPE_Q8_0;
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr,
                    "parley: generate: bad, unknown or incomplete argument '%s' "
                    "(see parley generate --help)\n",
                    a);
            return CMD_EXIT_USAGE;
        }
    }
    if (!model || (!text == !ids_arg)) {
        fprintf(stderr, "parley: usage: parley generate --model LM.gguf (--text TEXT | --ids "
                        "ID,...) [--greedy] [--seed N] [--max-new N] [--print-ids]\n");
        return CMD_EXIT_USAGE;
    }
    /* checked before the model is loaded: a typo costs nothing */
    struct bpe_ids prompt = { 0 };
    if (ids_arg && (cmd_parse_ids(ids_arg, &prompt) != 0 || prompt.n == 0)) {
        fprintf(stderr, "parley: --ids: expected comma-separated token ids (integers >= 0)\n");
        bpe_ids_free(&prompt);
        return CMD_EXIT_USAGE;
    }

    struct err e;
    struct backend *be = backend_cpu_create((int)threads, &e);
    if (!be) {
        fprintf(stderr, "parley: %s\n", e.msg);
        bpe_ids_free(&prompt);
        return 1;
    }
    struct lm_model m;
    if (lm_load(&m, model, be, NULL, &e) != 0) {
        fprintf(stderr, "parley: %s\n", e.msg);
        bpe_ids_free(&prompt);
        backend_free(be);
        return CMD_EXIT_USAGE;
    }
    const struct lm_hparams *hp = &m.hp;
    struct bpe b;
    struct bpe_ids gen = { 0 };
    struct bpe_text ptext = { 0 }, out = { 0 };
    struct lm_runner r;
    struct lm_cache c;
    struct sampler s;
    float *logits = NULL;
    int rc = 1, have_b = 0, have_r = 0, have_c = 0, have_s = 0;
    memset(&r, 0, sizeof r);
    if (bpe_load(&b, &m.file, &e) != 0)
        goto fail;
    have_b = 1;
    if (text) {
        struct chat ch;
        chat_init(&ch);
        int bad = chat_prompt(&ch, &ptext, CHAT_MODE_TEXT, text, NULL, 0, hp->n_audio, &e) ||
                  bpe_encode(&b, &prompt, ptext.v, ptext.n, 1, &e);
        chat_free(&ch);
        if (bad)
            goto fail;
    } else {
        for (int64_t i = 0; i < prompt.n; i++) {
            if (prompt.v[i] >= hp->n_vocab) {
                fprintf(stderr, "parley: --ids: id %d is outside the vocabulary [0, %lld)\n",
                        prompt.v[i], (long long)hp->n_vocab);
                rc = CMD_EXIT_USAGE;
                goto done;
            }
        }
    }
    if (prompt.n > hp->n_ctx) {
        fprintf(stderr,
                "parley: the prompt's %lld tokens do not fit in the model's context of "
                "%lld positions\n",
                (long long)prompt.n, (long long)hp->n_ctx);
        rc = CMD_EXIT_USAGE;
        goto done;
    }
    int64_t n_ctx = prompt.n + sp.max_new;
    if (n_ctx > hp->n_ctx)
        n_ctx = hp->n_ctx;
    sp.mask_from = (int64_t)hp->audio_offset + hp->n_audio; /* padding rows (E8) */
    if (lm_runner_init(&r, &m, 256, 1, &e) != 0)
        goto fail;
    have_r = 1;
    if (lm_cache_init(&c, &m, n_ctx, kv, &e) != 0)
        goto fail;
    have_c = 1;
    if (sampler_init(&s, &sp, hp->n_vocab, &e) != 0)
        goto fail;
    have_s = 1;
    logits = malloc((size_t)hp->n_vocab * sizeof *logits);
    if (!logits) {
        err_set(&e, "out of memory");
        goto fail;
    }

    FILE *stream = print_ids ? stderr : stdout;
    double t0 = clock_seconds();
    if (lm_prefill(&r, &c, prompt.v, prompt.n, logits, &e) != 0)
        goto fail;
    double t1 = clock_seconds();
    struct bpe_stream bs = { { 0 }, 0 };
    int in_audio = 0;
    const char *why = "max-new reached";
    for (int i = 0; i < sp.max_new; i++) {
        int32_t id = sampler_sample(&s, logits);
        sampler_accept(&s, id);
        if (bpe_ids_push(&gen, id) != 0) {
            err_set(&e, "out of memory");
            goto fail;
        }
        out.n = 0;
        if (id >= hp->audio_offset && id < hp->audio_offset + hp->n_audio) {
            if (in_audio)
                fprintf(stream, " %d", id - hp->audio_offset);
            else
                fprintf(stream, "\n[audio %d", id - hp->audio_offset);
            in_audio = 1;
        } else {
            if (in_audio)
                fputs("]\n", stream);
            in_audio = 0;
            if (bpe_stream_push(&b, &bs, &out, id, &e) != 0)
                fprintf(stream, "[id %d]", id);
            else
                fwrite(out.v, 1, out.n, stream);
        }
        fflush(stream);
        if (lm_is_stop(hp, id)) {
            why = "stop token";
            break;
        }
        if (c.n_pos >= c.n_ctx) {
            why = "context limit";
            break;
        }
        int64_t one = 1;
        struct lm_cache *cp = &c;
        if (lm_forward(&r, &cp, &id, &one, 1, logits, &e) != 0)
            goto fail;
    }
    out.n = 0;
    bpe_stream_flush(&bs, &out, &e);
    fwrite(out.v, 1, out.n, stream);
    fputs(in_audio ? "]\n" : "\n", stream);
    double t2 = clock_seconds();
    if (print_ids) {
        for (int64_t i = 0; i < gen.n; i++)
            printf(i ? ",%d" : "%d", gen.v[i]);
        putchar('\n');
    }
    fprintf(stderr, "prefill: %lld tokens in %.1f ms (%.1f tokens/s)\n", (long long)prompt.n,
            1e3 * (t1 - t0), (double)prompt.n / (t1 - t0));
    fprintf(stderr, "decode: %lld tokens in %.1f ms (%.2f tokens/s), ended by %s\n",
            (long long)gen.n, 1e3 * (t2 - t1), gen.n > 1 ? (double)(gen.n - 1) / (t2 - t1) : 0.0,
            why);
    rc = fflush(stdout) == 0 ? 0 : 1;
    goto done;
fail:
    fprintf(stderr, "parley: %s\n", e.msg);
done:
    free(logits);
    if (have_s)
        sampler_free(&s);
    if (have_c)
        lm_cache_free(&c);
    if (have_r)
        lm_runner_free(&r);
    if (have_b)
        bpe_free(&b);
    bpe_ids_free(&prompt);
    bpe_ids_free(&gen);
    bpe_text_free(&ptext);
    bpe_text_free(&out);
    lm_free(&m);
    backend_free(be);
    return rc;
}
