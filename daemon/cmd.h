/*
 * cmd — the subcommands of the `parley` tool, one file each (daemon/cmd_<name>.c).
 *
 * A command gets argv with argv[0] its own name and returns the process exit status:
 * 0 success, 1 failure while running, CMD_EXIT_USAGE (2) bad usage or unreadable input after
 * one line "parley: <reason>" on stderr.
 */
#ifndef PARLEY_CMD_H
#define PARLEY_CMD_H

#include <stddef.h>

#define CMD_EXIT_USAGE 2

/* 1 when arg asks for help (--help or -h). */
int cmd_is_help(const char *arg);

/* Parses a whole decimal integer in [lo, hi] into *out; -1 (out untouched) on anything else. */
int cmd_parse_long(const char *s, long long lo, long long hi, long long *out);

struct bpe_ids;
/* Parses comma-separated token ids ("1,2, 3", blanks around commas allowed) into out, which
 * it empties first; an empty or blank string gives no ids. -1 on anything else: a negative
 * or too large id, an empty element ("1,,2", "1,"), other characters, or no memory. */
int cmd_parse_ids(const char *s, struct bpe_ids *out);

/* The file of turn N's answer in a conversation written to `out`: out itself for turn 0,
 * then OUT.1.wav, OUT.2.wav, ... (the number before the extension). */
void cmd_turn_file(char *dst, size_t len, const char *out, int turn);

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_text_tokens(int argc, char **argv);
int cmd_speak(int argc, char **argv);
int cmd_vocode(int argc, char **argv);
int cmd_ask(int argc, char **argv);
int cmd_talk(int argc, char **argv);
int cmd_load(int argc, char **argv);

#endif
