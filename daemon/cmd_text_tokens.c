/* parley text-tokens: the LM's text tokenizer on stdin lines (ids out, or text with --decode). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "runtime/gguf.h"
#include "text/bpe.h"

static const char text_tokens_usage[] =
    "usage: parley text-tokens --model LM.gguf [--decode]\n\n"
    "Reads UTF-8 lines on stdin and prints each line's token ids, comma-separated, one line\n"
    "per input line (no [gMASK]<sop> prefix; special-token text such as <|user|> or\n"
    "<|audio_5|> is recognised). With --decode, reads lines of comma-separated ids and prints\n"
    "their text.\n";

int cmd_text_tokens(int argc, char **argv)
{
    const char *model = NULL;
    int decode = 0;
    for (int i = 1; i < argc; i++) {
        if (cmd_is_help(argv[i])) {
            fputs(text_tokens_usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            model = argv[++i];
        } else if (strcmp(argv[i], "--decode") == 0) {
            decode = 1;
        } else {
            fprintf(stderr, "parley: text-tokens: unknown argument '%s'\n", argv[i]);
            return CMD_EXIT_USAGE;
        }
    }
    if (!model) {
        fprintf(stderr, "parley: usage: parley text-tokens --model LM.gguf [--decode]\n");
        return CMD_EXIT_USAGE;
    }
    struct gguf_file f;
    struct bpe b;
    struct err e;
    if (gguf_open(&f, model, &e) != 0) {
        fprintf(stderr, "parley: %s\n", e.msg);
        return CMD_EXIT_USAGE;
    }
    if (bpe_load(&b, &f, &e) != 0) {
        fprintf(stderr, "parley: %s\n", e.msg);
        gguf_close(&f);
        return CMD_EXIT_USAGE;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    struct bpe_ids ids = { 0 };
    struct bpe_text text = { 0 };
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = 0;
        if (decode) {
            text.n = 0;
            if (cmd_parse_ids(line, &ids) != 0) {
                fprintf(stderr, "parley: line %ld: expected comma-separated token ids\n", lineno);
                rc = 1;
                break;
            }
            if (bpe_decode(&b, &text, ids.v, ids.n, &e) != 0) {
                fprintf(stderr, "parley: line %ld: %s\n", lineno, e.msg);
                rc = 1;
                break;
            }
            fwrite(text.v, 1, text.n, stdout);
            putchar('\n');
        } else {
            ids.n = 0;
            if (bpe_encode(&b, &ids, line, (size_t)n, 0, &e) != 0) {
                fprintf(stderr, "parley: line %ld: %s\n", lineno, e.msg);
                rc = 1;
                break;
            }
            for (int64_t i = 0; i < ids.n; i++)
                printf(i ? ",%d" : "%d", ids.v[i]);
            putchar('\n');
        }
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "parley: error writing the output\n");
        rc = 1;
    }
    free(line);
    bpe_ids_free(&ids);
    bpe_text_free(&text);
    bpe_free(&b);
    gguf_close(&f);
    return rc;
}
