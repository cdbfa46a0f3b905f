/*
 * config — the settings table and its readers. See config.h.
 *
 * DESIGN: the table below is the only list of settings. Defaults are strings parsed by the
 * same code as file, environment and flag values, so a default cannot disagree with what
 * the parser accepts.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum config_type {
    CONFIG_STR,   /* text */
    CONFIG_PATH,  /* a file path */
    CONFIG_INT,   /* integer in [min, max] */
    CONFIG_SIZE,  /* bytes, with an optional K/M/G suffix (powers of 1024) */
    CONFIG_LIST,  /* comma-separated */
    CONFIG_KEYS,  /* comma-separated secrets: masked in --print-config */
    CONFIG_LEVEL, /* debug | info | warn | error */
};

struct config_item {
    const char *section, *key;
    enum config_type type;
    size_t offset, size; /* of the field in struct config */
    const char *def;
    long long min, max;
    int reloadable; /* SIGHUP may change it */
    const char *help;
};

#define F(field) offsetof(struct config, field), sizeof(((struct config *)0)->field)

static const struct config_item config_items[] = {
    { "models", "lm", CONFIG_PATH, F(lm), "", 0, 0, 0, "language model GGUF file" },
    { "models", "tokenizer", CONFIG_PATH, F(tokenizer), "", 0, 0, 0, "speech tokenizer GGUF file" },
    { "models", "decoder", CONFIG_PATH, F(decoder), "", 0, 0, 0,
      "speech decoder (flow + HiFT) GGUF file" },
    { "http", "address", CONFIG_STR, F(http_address), "127.0.0.1", 0, 0, 0,
      "address the HTTP server (REST, health, metrics) listens on" },
    { "http", "port", CONFIG_INT, F(http_port), "8080", 1, 65535, 0, "HTTP port" },
    { "http", "max_body", CONFIG_SIZE, F(http_max_body), "16M", 1024, 1LL << 32, 1,
      "largest request body accepted; larger ones get 413" },
    { "http", "cors_origins", CONFIG_LIST, F(http_cors_origins), "", 0, 0, 1,
      "origins allowed cross-origin requests (comma-separated; '*' for any; empty for none)" },
    { "http", "web_root", CONFIG_PATH, F(http_web_root), "", 0, 0, 0,
      "directory of the browser client served at /; empty: PREFIX/share/parley/web next to the "
      "installed binary, else the source tree's web/; 'off': none" },
    { "websocket", "address", CONFIG_STR, F(ws_address), "127.0.0.1", 0, 0, 0,
      "address the WebSocket server listens on" },
    { "websocket", "port", CONFIG_INT, F(ws_port), "8081", 1, 65535, 0, "WebSocket port" },
    { "websocket", "path", CONFIG_STR, F(ws_path), "/v1/chat", 0, 0, 0,
      "path of the native WebSocket protocol" },
    { "websocket", "public_url", CONFIG_STR, F(ws_public_url), "", 0, 0, 0,
      "WebSocket URL that GET /v1/server announces (behind a proxy); empty: derived" },
    { "auth", "api_keys", CONFIG_KEYS, F(auth_api_keys), "", 0, 0, 1,
      "API keys accepted as 'Authorization: Bearer KEY' (comma-separated); empty: no auth" },
    { "auth", "api_key_file", CONFIG_PATH, F(auth_api_key_file), "", 0, 0, 1,
      "file with one API key per line, added to api_keys" },
    { "limits", "max_sessions", CONFIG_INT, F(limits_max_sessions), "32", 1, 100000, 1,
      "concurrent sessions; more are refused (503 / WebSocket 1013)" },
    { "limits", "max_kv_bytes", CONFIG_SIZE, F(limits_max_kv_bytes), "0", 0, 1LL << 50, 0,
      "KV-cache memory of all sessions together; 0: only max_sessions bounds it" },
    { "limits", "max_message_bytes", CONFIG_SIZE, F(limits_max_message_bytes), "1M", 1024,
      1LL << 30, 1, "largest WebSocket message; larger ones close the session (1009)" },
    { "limits", "max_turn_seconds", CONFIG_INT, F(limits_max_turn_seconds), "60", 1, 3600, 1,
      "longest spoken user turn; longer ones are committed at this length" },
    { "limits", "max_audio_rate", CONFIG_INT, F(limits_max_audio_rate), "4", 1, 1000, 1,
      "audio may arrive at most this many times faster than real time; faster input is paused" },
    { "limits", "idle_timeout", CONFIG_INT, F(limits_idle_timeout), "300", 1, 86400, 1,
      "seconds without a message from the client before its session is closed" },
    { "limits", "max_session_seconds", CONFIG_INT, F(limits_max_session_seconds), "3600", 1, 604800,
      1, "longest session (seconds) before the server closes it" },
    { "limits", "max_input_backlog_ms", CONFIG_INT, F(limits_max_input_backlog_ms), "1000", 20,
      600000, 1,
      "spoken audio the engine has not tokenized yet (ms) beyond which reading from the client "
      "pauses until it catches up" },
    { "limits", "max_output_buffer", CONFIG_SIZE, F(limits_max_output_buffer), "4M", 65536,
      1LL << 30, 1, "outgoing bytes queued for one client; beyond it generation waits" },
    { "limits", "slow_reader_seconds", CONFIG_INT, F(limits_slow_reader_seconds), "20", 1, 3600, 1,
      "a client whose output buffer stays full this long is dropped" },
    { "vad", "threshold_db", CONFIG_INT, F(vad_threshold_db), "-45", -100, 0, 1,
      "server VAD: frame energy (dBFS) above which a frame is speech" },
    { "vad", "prefix_padding_ms", CONFIG_INT, F(vad_prefix_padding_ms), "300", 0, 5000, 1,
      "server VAD: audio kept from before the start of speech" },
    { "vad", "silence_duration_ms", CONFIG_INT, F(vad_silence_duration_ms), "600", 100, 10000, 1,
      "server VAD: silence that ends a turn" },
    { "engine", "workers", CONFIG_INT, F(engine_workers), "1", 1, 256, 0,
      "threads for the speech tokenizer and decoder (the LM has its own)" },
    { "engine", "voice_threads", CONFIG_INT, F(engine_voice_threads), "2", 1, 256, 0,
      "threads each tokenizer/decoder worker computes with (the first audio waits for them)" },
    { "engine", "max_batch", CONFIG_INT, F(engine_max_batch), "16", 1, 256, 0,
      "sessions advanced together in one LM decode step" },
    { "engine", "prefill_rows", CONFIG_INT, F(engine_prefill_rows), "64", 1, 4096, 0,
      "prompt ids per prefill block; a new turn delays sessions already speaking by one block "
      "per decode step" },
    { "engine", "kv_cache", CONFIG_STR, F(engine_kv_cache), "f16", 0, 0, 0,
      "KV-cache element type: f32, f16 or bf16" },
    { "engine", "context", CONFIG_INT, F(engine_context), "0", 0, 1 << 20, 0,
      "KV positions per session; 0: the model's context length" },
    { "engine", "first_block", CONFIG_INT, F(engine_first_block), "10", 1, 200, 0,
      "speech tokens in the first decoder block (smaller: earlier first audio)" },
    { "engine", "warmup", CONFIG_INT, F(engine_warmup), "1", 0, 1, 0,
      "1: run one short turn through every model before reporting ready" },
    { "process", "threads", CONFIG_INT, F(threads), "0", 0, 1024, 0,
      "compute threads; 0 for one per core" },
    { "process", "drain_timeout", CONFIG_INT, F(drain_timeout), "30", 0, 86400, 1,
      "seconds SIGTERM waits for answers in progress before closing them" },
    { "process", "log_level", CONFIG_LEVEL, F(log_level), "info", 0, 0, 1,
      "debug, info, warn or error" },
};

#define CONFIG_N ((int)(sizeof config_items / sizeof config_items[0]))

_Static_assert(sizeof config_items / sizeof config_items[0] <= sizeof(((struct config *)0)->source),
               "struct config's source[] is too small for the table");

int config_count(void)
{
    return CONFIG_N;
}

const char *config_source_name(enum config_source src)
{
    switch (src) {
    case CONFIG_SRC_DEFAULT: return "default";
    case CONFIG_SRC_FILE: return "file";
    case CONFIG_SRC_ENV: return "environment";
    case CONFIG_SRC_FLAG: return "command line";
    }
    return "?";
}

static const char *level_name(int level)
{
    switch (level) {
    case CONFIG_LOG_ERROR: return "error";
    case CONFIG_LOG_WARN: return "warn";
    case CONFIG_LOG_INFO: return "info";
    case CONFIG_LOG_DEBUG: return "debug";
    }
    return "?";
}

/* "http.port" -> index, -1 if none */
static int config_find(const char *section, size_t slen, const char *key)
{
    for (int i = 0; i < CONFIG_N; i++)
        if (strlen(config_items[i].section) == slen &&
            strncmp(config_items[i].section, section, slen) == 0 &&
            strcmp(config_items[i].key, key) == 0)
            return i;
    return -1;
}

static int config_find_name(const char *name)
{
    const char *dot = strchr(name, '.');
    if (!dot)
        return -1;
    return config_find(name, (size_t)(dot - name), dot + 1);
}

int config_index(const char *name)
{
    return config_find_name(name);
}

static int parse_ll(const char *s, long long *out, int allow_suffix)
{
    char *end;
    errno = 0;
    if (!*s || isspace((unsigned char)*s))
        return -1;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s)
        return -1;
    if (allow_suffix && *end) {
        int shift = 0;
        switch (toupper((unsigned char)*end)) {
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        default: return -1;
        }
        end++;
        if (toupper((unsigned char)*end) == 'I')
            end++;
        if (toupper((unsigned char)*end) == 'B')
            end++;
        if (v < 0 || v > (LLONG_MAX >> shift))
            return -1;
        v <<= shift;
    }
    if (*end)
        return -1;
    *out = v;
    return 0;
}

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

int config_set(struct config *c, const char *name, const char *value, enum config_source src,
               int line, struct err *e)
{
    int i = config_find_name(name);
    if (i < 0)
        return err_set(e, "unknown setting '%s'", name);
    const struct config_item *it = &config_items[i];
    char *field = (char *)c + it->offset;
    if (has_control(value))
        return err_set(e, "%s: control characters in the value", name);
    switch (it->type) {
    case CONFIG_STR:
    case CONFIG_PATH:
    case CONFIG_LIST:
    case CONFIG_KEYS: {
        size_t n = strlen(value);
        if (n >= it->size)
            return err_set(e, "%s: value longer than %zu bytes", name, it->size - 1);
        if (it->type == CONFIG_STR && strcmp(it->key, "path") == 0 && value[0] != '/')
            return err_set(e, "%s: '%s' must start with '/'", name, value);
        memcpy(field, value, n + 1);
        break;
    }
    case CONFIG_INT:
    case CONFIG_SIZE: {
        long long v;
        if (parse_ll(value, &v, it->type == CONFIG_SIZE))
            return err_set(e, "%s: '%s' is not %s", name, value,
                           it->type == CONFIG_SIZE ? "a size (like 512K, 16M, 1G)" : "an integer");
        if (v < it->min || v > it->max)
            return err_set(e, "%s: %lld is outside %lld..%lld", name, v, it->min, it->max);
        if (it->type == CONFIG_INT)
            *(int *)(void *)field = (int)v;
        else
            *(long long *)(void *)field = v;
        break;
    }
    case CONFIG_LEVEL: {
        static const int levels[] = { CONFIG_LOG_DEBUG, CONFIG_LOG_INFO, CONFIG_LOG_WARN,
                                      CONFIG_LOG_ERROR };
        int found = -1;
        for (int k = 0; k < 4; k++)
            if (strcmp(value, level_name(levels[k])) == 0)
                found = levels[k];
        if (found < 0)
            return err_set(e, "%s: '%s' is not one of debug, info, warn, error", name, value);
        *(int *)(void *)field = found;
        break;
    }
    }
    c->source[i] = (unsigned char)src;
    c->line[i] = line;
    return 0;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < CONFIG_N; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s.%s", config_items[i].section, config_items[i].key);
        int rc = config_set(c, name, config_items[i].def, CONFIG_SRC_DEFAULT, 0, NULL);
        (void)rc; /* the table's defaults are checked by a unit test */
    }
}

/* ---- INI file ---------------------------------------------------------------------------- */

/* The INI dialect, strict on purpose (a typo must not be silently ignored):
 *   [section]          letters, digits, '_'
 *   key = value        surrounding blanks trimmed; "quoted" keeps blanks, '#' and ';'
 *   # or ; comment     a whole line, or after a blank following the value
 * A UTF-8 BOM and CRLF line ends are accepted. Errors: unknown section or key, a key outside
 * any section or given twice, a line that is none of the above, a NUL byte, a line over
 * CONFIG_LINE_MAX bytes. */

static int config_ini_name_ok(const char *s, size_t n)
{
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

static void config_ini_trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

/* One "key = value" line in section sec; -1 with e "name:LINE: ..." */
static int config_ini_entry(struct config *c, const char *sec, const char *p, size_t n,
                            const char *name, int line, int *seen, struct err *e)
{
    const char *eq = memchr(p, '=', n);
    if (!eq)
        return err_set(e, "%s:%d: not 'key = value', '[section]' or a comment", name, line);
    const char *k = p, *v = eq + 1;
    size_t kn = (size_t)(eq - p), vn = n - kn - 1;
    config_ini_trim(&k, &kn);
    config_ini_trim(&v, &vn);
    if (!config_ini_name_ok(k, kn))
        return err_set(e, "%s:%d: '%.*s' is not a setting name", name, line,
                       (int)(kn > 64 ? 64 : kn), k);
    if (vn >= 2 && v[0] == '"') {
        const char *q = memchr(v + 1, '"', vn - 1);
        if (!q)
            return err_set(e, "%s:%d: unterminated quote", name, line);
        const char *rest = q + 1;
        size_t rn = vn - (size_t)(rest - v);
        config_ini_trim(&rest, &rn);
        if (rn && rest[0] != '#' && rest[0] != ';')
            return err_set(e, "%s:%d: text after the closing quote", name, line);
        v++;
        vn = (size_t)(q - v);
    } else {
        if (vn && v[0] == '"')
            return err_set(e, "%s:%d: unterminated quote", name, line);
        for (size_t i = 1; i < vn; i++) /* inline comment: blank, then '#' or ';' */
            if ((v[i] == '#' || v[i] == ';') && isspace((unsigned char)v[i - 1])) {
                vn = i;
                break;
            }
        config_ini_trim(&v, &vn);
    }
    if (!sec[0])
        return err_set(e, "%s:%d: '%.*s' is outside any [section]", name, line, (int)kn, k);
    char key[64];
    if (kn >= sizeof key)
        return err_set(e, "%s:%d: unknown setting '%.*s' in [%s]", name, line, 32, k, sec);
    memcpy(key, k, kn);
    key[kn] = 0;
    int i = config_find(sec, strlen(sec), key);
    if (i < 0)
        return err_set(e, "%s:%d: unknown setting '%s' in [%s]", name, line, key, sec);
    if (seen[i])
        return err_set(e, "%s:%d: %s.%s set again (first at line %d)", name, line, sec, key,
                       seen[i]);
    seen[i] = line;
    char full[160], value[CONFIG_LINE_MAX + 1];
    snprintf(full, sizeof full, "%s.%s", sec, key);
    memcpy(value, v, vn);
    value[vn] = 0;
    struct err e2;
    if (config_set(c, full, value, CONFIG_SRC_FILE, line, &e2))
        return err_set(e, "%s:%d: %s", name, line, e2.msg);
    return 0;
}

int config_load_string(struct config *c, const char *text, const char *name, struct err *e)
{
    int seen[sizeof c->source] = { 0 };
    char sec[32] = "";
    const char *p = text;
    if (!strncmp(p, "\xef\xbb\xbf", 3))
        p += 3;
    for (int line = 1; *p; line++) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        const char *next = nl ? nl + 1 : p + n;
        if (n > CONFIG_LINE_MAX)
            return err_set(e, "%s:%d: line longer than %d bytes", name, line, CONFIG_LINE_MAX);
        config_ini_trim(&p, &n);
        if (!n || p[0] == '#' || p[0] == ';') {
            p = next;
            continue;
        }
        if (p[0] == '[') {
            const char *end = memchr(p, ']', n);
            const char *s = p + 1;
            size_t sn = end ? (size_t)(end - s) : 0;
            config_ini_trim(&s, &sn);
            const char *rest = end ? end + 1 : p + n;
            size_t rn = (size_t)(p + n - rest);
            config_ini_trim(&rest, &rn);
            if (!end || !config_ini_name_ok(s, sn) || sn >= sizeof sec ||
                (rn && rest[0] != '#' && rest[0] != ';'))
                return err_set(e, "%s:%d: not a '[section]' header", name, line);
            memcpy(sec, s, sn);
            sec[sn] = 0;
            int known = 0;
            for (int k = 0; k < CONFIG_N; k++)
                known |= strcmp(config_items[k].section, sec) == 0;
            if (!known)
                return err_set(e, "%s:%d: unknown section [%s]", name, line, sec);
        } else if (config_ini_entry(c, sec, p, n, name, line, seen, e)) {
            return -1;
        }
        p = next;
    }
    return 0;
}

int config_load_file(struct config *c, const char *path, struct err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, "%s: %s", path, strerror(errno));
    char *buf = malloc(CONFIG_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return err_set(e, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, CONFIG_FILE_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > CONFIG_FILE_MAX) {
        free(buf);
        return err_set(e, "%s: %s", path, bad ? "read error" : "larger than 1 MiB");
    }
    buf[n] = 0;
    int rc = 0;
    if (strlen(buf) != n)
        rc = err_set(e, "%s: NUL byte in the file", path);
    else
        rc = config_load_string(c, buf, path, e);
    free(buf);
    if (rc == 0)
        snprintf(c->file, sizeof c->file, "%s", path);
    return rc;
}

/* ---- environment and flags --------------------------------------------------------------- */

/* "PARLEY_HTTP_MAX_BODY" or "http-max-body" (sep '-') for item i */
static void item_name(char *out, size_t len, int i, const char *prefix, int upper, char sep)
{
    snprintf(out, len, "%s%s%c%s", prefix, config_items[i].section, sep, config_items[i].key);
    for (char *p = out + strlen(prefix); *p; p++) {
        if (upper)
            *p = (char)toupper((unsigned char)*p);
        else if (*p == '_')
            *p = '-';
    }
}

int config_load_env(struct config *c, char *const *envp, struct err *e)
{
    for (; envp && *envp; envp++) {
        const char *kv = *envp;
        if (strncmp(kv, "PARLEY_", 7) != 0 || strncmp(kv, "PARLEY_CONFIG=", 14) == 0 ||
            strncmp(kv, "PARLEY_TEST_", 12) == 0)
            continue;
        const char *eq = strchr(kv, '=');
        if (!eq)
            continue;
        int found = -1;
        char var[160];
        for (int i = 0; i < CONFIG_N && found < 0; i++) {
            item_name(var, sizeof var, i, "PARLEY_", 1, '_');
            if (strlen(var) == (size_t)(eq - kv) && strncmp(var, kv, (size_t)(eq - kv)) == 0)
                found = i;
        }
        if (found < 0)
            return err_set(e, "environment: %.*s names no setting", (int)(eq - kv), kv);
        char name[128];
        snprintf(name, sizeof name, "%s.%s", config_items[found].section, config_items[found].key);
        struct err e2;
        if (config_set(c, name, eq + 1, CONFIG_SRC_ENV, 0, &e2))
            return err_set(e, "environment: %s", e2.msg);
    }
    return 0;
}

int config_parse_flag(struct config *c, int argc, char *const *argv, int i, struct err *e)
{
    const char *arg = argv[i];
    if (strncmp(arg, "--", 2) != 0)
        return 0;
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    for (int k = 0; k < CONFIG_N; k++) {
        char flag[160];
        item_name(flag, sizeof flag, k, "--", 0, '-');
        if (strlen(flag) != n || strncmp(flag, arg, n) != 0)
            continue;
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        if (!value)
            return err_set(e, "%s needs a value", flag);
        char name[128];
        snprintf(name, sizeof name, "%s.%s", config_items[k].section, config_items[k].key);
        struct err e2;
        if (config_set(c, name, value, CONFIG_SRC_FLAG, 0, &e2))
            return err_set(e, "%s: %s", flag, e2.msg);
        return eq ? 1 : 2;
    }
    return 0;
}

/* ---- validation, printing, reload -------------------------------------------------------- */

int config_validate(const struct config *c, int check_files, struct err *e)
{
    static const char *const models[] = { "models.lm", "models.tokenizer", "models.decoder" };
    const char *paths[] = { c->lm, c->tokenizer, c->decoder };
    for (int i = 0; i < 3; i++) {
        if (!paths[i][0])
            return err_set(e, "%s is not set (config file, --%s or PARLEY_%s)", models[i],
                           i == 0   ? "models-lm"
                           : i == 1 ? "models-tokenizer"
                                    : "models-decoder",
                           i == 0   ? "MODELS_LM"
                           : i == 1 ? "MODELS_TOKENIZER"
                                    : "MODELS_DECODER");
        if (check_files && access(paths[i], R_OK) != 0)
            return err_set(e, "%s: %s: %s", models[i], paths[i], strerror(errno));
    }
    if (check_files && c->auth_api_key_file[0] && access(c->auth_api_key_file, R_OK) != 0)
        return err_set(e, "auth.api_key_file: %s: %s", c->auth_api_key_file, strerror(errno));
    if (!c->http_address[0] || !c->ws_address[0])
        return err_set(e, "%s is empty",
                       !c->http_address[0] ? "http.address" : "websocket.address");
    if (c->ws_public_url[0] && strncmp(c->ws_public_url, "ws://", 5) != 0 &&
        strncmp(c->ws_public_url, "wss://", 6) != 0)
        return err_set(e, "websocket.public_url: '%s' is not a ws:// or wss:// URL",
                       c->ws_public_url);
    if (strcmp(c->engine_kv_cache, "f32") && strcmp(c->engine_kv_cache, "f16") &&
        strcmp(c->engine_kv_cache, "bf16"))
        return err_set(e, "engine.kv_cache: '%s' is not f32, f16 or bf16", c->engine_kv_cache);
    if (c->http_port == c->ws_port && strcmp(c->http_address, c->ws_address) == 0)
        return err_set(e, "http.port and websocket.port are both %d on %s", c->http_port,
                       c->http_address);
    return 0;
}

static void value_str(char *out, size_t len, const struct config *c, int i)
{
    const struct config_item *it = &config_items[i];
    const char *field = (const char *)c + it->offset;
    switch (it->type) {
    case CONFIG_STR:
    case CONFIG_PATH:
    case CONFIG_LIST: snprintf(out, len, "%s", field); break;
    case CONFIG_KEYS: {
        int n = 0;
        size_t pos = 0;
        char key[CONFIG_LIST_MAX];
        while (config_list_next(field, &pos, key, sizeof key))
            n++;
        if (n)
            /* read back as a config, this is one key nobody holds: it fails closed */
            snprintf(out, len, "<%d key%s hidden>", n, n == 1 ? "" : "s");
        else
            out[0] = 0;
        break;
    }
    case CONFIG_INT: snprintf(out, len, "%d", *(const int *)(const void *)field); break;
    case CONFIG_SIZE: snprintf(out, len, "%lld", *(const long long *)(const void *)field); break;
    case CONFIG_LEVEL:
        snprintf(out, len, "%s", level_name(*(const int *)(const void *)field));
        break;
    }
}

void config_print(const struct config *c, FILE *out)
{
    const char *section = "";
    fprintf(out, "# effective configuration (readable back as a config file); file: %s\n",
            c->file[0] ? c->file : "(none)");
    for (int i = 0; i < CONFIG_N; i++) {
        const struct config_item *it = &config_items[i];
        if (strcmp(section, it->section) != 0) {
            section = it->section;
            fprintf(out, "\n[%s]\n", section);
        }
        char v[CONFIG_LIST_MAX + 32], where[64];
        value_str(v, sizeof v, c, i);
        if (c->source[i] == CONFIG_SRC_FILE)
            snprintf(where, sizeof where, "file line %d", c->line[i]);
        else
            snprintf(where, sizeof where, "%s", config_source_name(c->source[i]));
        fprintf(out, "%s = %s%*s; %s\n", it->key, v,
                (int)(strlen(it->key) + strlen(v) < 40 ? 40 - strlen(it->key) - strlen(v) : 1), "",
                where);
    }
}

void config_print_help(FILE *out)
{
    static const char *const types[] = {
        "text", "path", "integer", "size", "list", "keys", "level"
    };
    for (int i = 0; i < CONFIG_N; i++) {
        const struct config_item *it = &config_items[i];
        char flag[160], var[160];
        item_name(flag, sizeof flag, i, "--", 0, '-');
        item_name(var, sizeof var, i, "PARLEY_", 1, '_');
        fprintf(out, "  %s=%s  (%s)\n      %s%s\n      [%s] %s = %s\n", flag, types[it->type], var,
                it->help, it->reloadable ? "; SIGHUP reloads it" : "", it->section, it->key,
                it->def[0] ? it->def : "\"\"");
    }
}

int config_reload(struct config *live, const struct config *fresh, char *changed, size_t clen,
                  char *restart_names, size_t rlen)
{
    int n_restart = 0;
    if (clen)
        changed[0] = 0;
    if (rlen)
        restart_names[0] = 0;
    for (int i = 0; i < CONFIG_N; i++) {
        const struct config_item *it = &config_items[i];
        char *dst = (char *)live + it->offset;
        const char *src = (const char *)fresh + it->offset;
        if (memcmp(dst, src, it->size) == 0)
            continue;
        char name[128];
        snprintf(name, sizeof name, "%s%s.%s", "", it->section, it->key);
        if (it->reloadable) {
            memcpy(dst, src, it->size);
            live->source[i] = fresh->source[i];
            live->line[i] = fresh->line[i];
            size_t used = strlen(changed);
            if (used < clen)
                snprintf(changed + used, clen - used, "%s%s", used ? ", " : "", name);
        } else {
            n_restart++;
            size_t used = strlen(restart_names);
            if (used < rlen)
                snprintf(restart_names + used, rlen - used, "%s%s", used ? ", " : "", name);
        }
    }
    memcpy(live->file, fresh->file, sizeof live->file);
    return n_restart;
}

int config_list_next(const char *list, size_t *pos, char *out, size_t len)
{
    while (list[*pos]) {
        const char *s = list + *pos;
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        *pos += n + (comma ? 1 : 0);
        while (n && isspace((unsigned char)*s)) {
            s++;
            n--;
        }
        while (n && isspace((unsigned char)s[n - 1]))
            n--;
        if (!n)
            continue;
        if (n >= len)
            n = len - 1;
        memcpy(out, s, n);
        out[n] = 0;
        return 1;
    }
    return 0;
}
