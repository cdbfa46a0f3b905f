/*
 * config — parleyd's settings: one table (config.c) drives the config file (a strict INI
 * dialect, see config.c), the command line (--section-key=value), PARLEY_SECTION_KEY environment
 * variables, validation, --print-config and what SIGHUP may change.
 *
 * Precedence, lowest first: built-in default, config file, environment, command line. Each
 * value remembers where it came from (and the file line) for --print-config.
 */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

#include <stdio.h>

#include "runtime/err.h"

#define CONFIG_PATH_MAX 1024
#define CONFIG_LIST_MAX 4096 /* comma-separated lists: API keys, CORS origins */
#define CONFIG_FILE_MAX (1 << 20)
#define CONFIG_LINE_MAX 8192 /* bytes in one line of the file */

enum config_source {
    CONFIG_SRC_DEFAULT,
    CONFIG_SRC_FILE,
    CONFIG_SRC_ENV,
    CONFIG_SRC_FLAG,
};

enum config_log_level { /* syslog priorities, as journald reads them */
                        CONFIG_LOG_ERROR = 3,
                        CONFIG_LOG_WARN = 4,
                        CONFIG_LOG_INFO = 6,
                        CONFIG_LOG_DEBUG = 7,
};

/* Every setting; the table in config.c names each field once. */
struct config {
    /* [models] */
    char lm[CONFIG_PATH_MAX];        /* language model GGUF */
    char tokenizer[CONFIG_PATH_MAX]; /* speech tokenizer GGUF */
    char decoder[CONFIG_PATH_MAX];   /* flow + HiFT decoder GGUF */
    /* [http] */
    char http_address[256];
    int http_port;
    long long http_max_body; /* bytes */
    char http_cors_origins[CONFIG_LIST_MAX];
    /* [websocket] */
    char ws_address[256];
    int ws_port;
    char ws_path[256];
    char ws_public_url[CONFIG_PATH_MAX];
    char http_web_root[CONFIG_PATH_MAX];
    /* [auth] */
    char auth_api_keys[CONFIG_LIST_MAX];
    char auth_api_key_file[CONFIG_PATH_MAX];
    /* [limits] */
    int limits_max_sessions;
    long long limits_max_kv_bytes;
    long long limits_max_message_bytes;
    int limits_max_turn_seconds;
    int limits_max_audio_rate;
    int limits_idle_timeout;
    int limits_max_session_seconds;
    int limits_max_input_backlog_ms;
    long long limits_max_output_buffer;
    int limits_slow_reader_seconds;
    /* [vad] */
    int vad_threshold_db;
    int vad_prefix_padding_ms;
    int vad_silence_duration_ms;
    /* [engine] */
    int engine_workers;
    int engine_voice_threads;
    int engine_max_batch;
    int engine_prefill_rows;
    char engine_kv_cache[16];
    int engine_context;
    int engine_first_block;
    int engine_warmup;
    /* [process] */
    int threads;       /* 0: one per core */
    int drain_timeout; /* seconds */
    int log_level;     /* enum config_log_level */

    /* Where each value came from, indexed like the table (config_count()). */
    unsigned char source[64];
    int line[64];               /* file line for CONFIG_SRC_FILE */
    char file[CONFIG_PATH_MAX]; /* the config file read, "" if none */
};

/* Built-in defaults, every source CONFIG_SRC_DEFAULT. */
void config_defaults(struct config *c);

/* Sets one setting by its name ("http.port"), parsing and range-checking value. line is
 * recorded for CONFIG_SRC_FILE. -1 with e naming the setting and what is wrong. */
int config_set(struct config *c, const char *name, const char *value, enum config_source src,
               int line, struct err *e);

/* Reads INI text (name is used in messages): [section] then key = value lines, '#' or ';'
 * comments. Unknown sections and keys, a key given twice, bad values and lines over
 * CONFIG_LINE_MAX are errors "name:LINE: ...". */
int config_load_string(struct config *c, const char *text, const char *name, struct err *e);
/* Reads the file at path (at most CONFIG_FILE_MAX bytes) as config_load_string. */
int config_load_file(struct config *c, const char *path, struct err *e);
/* Applies PARLEY_<SECTION>_<KEY> variables from envp (NULL-terminated, like environ).
 * PARLEY_ variables that name no setting are errors, so typos are not silently ignored;
 * PARLEY_CONFIG (the file) and PARLEY_TEST_* are skipped. */
int config_load_env(struct config *c, char *const *envp, struct err *e);
/* One command-line argument "--section-key=value" or "--section-key" + next. Returns the
 * number of argv entries used (1 or 2), 0 when arg names no setting, -1 on a bad value. */
int config_parse_flag(struct config *c, int argc, char *const *argv, int i, struct err *e);

/* Checks what one setting cannot: models given, ports distinct, paths readable when
 * check_files. */
int config_validate(const struct config *c, int check_files, struct err *e);

/* --print-config: one "section.key = value  # source" line per setting, keys masked. */
void config_print(const struct config *c, FILE *out);
/* --help: every setting with its type, default, flag, variable and help. */
void config_print_help(FILE *out);

/* SIGHUP: copies the reloadable settings of fresh into live. Writes to changed (one line per
 * setting, "name" for applied ones) and returns the number of settings that differ but need a
 * restart, naming them in restart_names. */
int config_reload(struct config *live, const struct config *fresh, char *changed, size_t clen,
                  char *restart_names, size_t rlen);

int config_count(void);
/* The index of a setting ("limits.max_sessions") in source[] and line[], -1 if none. */
int config_index(const char *name);
const char *config_source_name(enum config_source src);
/* Next item of a comma-separated list, trimmed; *pos advances. 0 at the end. */
int config_list_next(const char *list, size_t *pos, char *out, size_t len);

#endif
