/*
 * parley — the command-line tool: a table of subcommands over the core library.
 *
 *   parley info FILE.gguf     a model file's header, metadata, tensors and totals
 *
 * Exit status: 0 on success; 2 for bad usage or a file that cannot be read, after one line
 * "parley: <reason>" on stderr. Add a subcommand by writing cmd_<name>() in daemon/cmd_<name>.c,
 * declaring it in cmd.h and adding a row to `commands`.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "text/bpe.h"

struct command {
    const char *name;
    const char *args;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the command's name */
};

static const struct command commands[] = {
    { "info", "FILE.gguf", "print a model file's metadata, tensors and totals", cmd_info },
    { "tokenize", "--model TOK.gguf IN.wav", "speech tokens of an audio file", cmd_tokenize },
    { "generate", "--model LM.gguf ...", "run one LM turn, streamed, with timing", cmd_generate },
    { "text-tokens", "--model LM.gguf", "text <-> token ids on stdin lines", cmd_text_tokens },
    { "speak", "--model DEC.gguf --tokens ...", "speech tokens to a WAV (flow + HiFT)", cmd_speak },
    { "vocode", "--model DEC.gguf --mel FILE", "a mel to a WAV (HiFT alone)", cmd_vocode },
    { "ask", "--models DIR --audio Q.wav ...", "turns end to end (the engine)", cmd_ask },
    { "talk", "--url ws://... --audio Q.wav ...", "a session with parleyd (WebSocket)", cmd_talk },
    { "load", "[--sessions 1,8,32] ...", "load generator: N sessions against parleyd", cmd_load },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: parley <command> [arguments]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-6s %-12s %s\n", commands[i].name, commands[i].args, commands[i].summary);
    fprintf(out, "\n'parley <command> --help' describes one command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CMD_EXIT_USAGE;
    }
    if (cmd_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "parley: unknown command '%s' (try 'parley --help')\n", argv[1]);
    return CMD_EXIT_USAGE;
}

int cmd_is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

int cmd_parse_long(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

void cmd_turn_file(char *dst, size_t len, const char *out, int turn)
{
    if (turn == 0) {
        snprintf(dst, len, "%s", out);
        return;
    }
    const char *dot = strrchr(out, '.');
    int stem = dot ? (int)(dot - out) : (int)strlen(out);
    snprintf(dst, len, "%.*s.%d%s", stem, out, turn, dot ? dot : "");
}

int cmd_parse_ids(const char *s, struct bpe_ids *out)
{
    out->n = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return 0;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX || bpe_ids_push(out, (int32_t)v) != 0)
            return -1;
        s = end;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            return 0;
        if (*s++ != ',')
            return -1;
    }
}
