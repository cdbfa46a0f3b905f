/* parleyd's configuration (daemon/config.c): the table's defaults, the INI reader's errors with
 * line numbers, environment and flag overrides, precedence, --print-config, reload, and a
 * replay of the fuzz corpus (tests/fuzz/corpus/config/). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "test.h"

#define CORPUS_DIR "tests/fuzz/corpus/config"

/* Loads text into fresh defaults; returns config_load_string's status, message in e. */
static int load(struct config *c, const char *text, struct err *e)
{
    config_defaults(c);
    e->msg[0] = 0;
    return config_load_string(c, text, "test.conf", e);
}

/* The load fails and the message contains want. */
static void check_bad(const char *text, const char *want)
{
    static struct config c;
    struct err e;
    int rc = load(&c, text, &e);
    if (rc != -1 || !strstr(e.msg, want))
        test_fail(__FILE__, __LINE__, "config '%s': rc %d, message '%s', wanted '%s'", text, rc,
                  e.msg, want);
}

TEST(config_defaults_table)
{
    static struct config c;
    struct err e;
    config_defaults(&c);
    CHECK(c.http_port == 8080);
    CHECK(c.ws_port == 8081);
    CHECK(strcmp(c.http_address, "127.0.0.1") == 0);
    CHECK(strcmp(c.ws_path, "/v1/chat") == 0);
    CHECK(c.http_max_body == 16LL << 20);
    CHECK(c.limits_max_sessions == 32);
    CHECK(c.drain_timeout == 30);
    CHECK(c.log_level == CONFIG_LOG_INFO);
    for (int i = 0; i < config_count(); i++)
        CHECK(c.source[i] == CONFIG_SRC_DEFAULT);
    /* the defaults alone are not enough: the models have no default */
    CHECK(config_validate(&c, 0, &e) == -1);
    CHECK(strstr(e.msg, "models.lm is not set") != NULL);
}

TEST(config_file_good)
{
    static struct config c;
    struct err e;
    const char *text = "# comment\n"
                       "; another\n"
                       "\n"
                       "[models]\n"
                       "lm = /m/lm.gguf\n"
                       "tokenizer=/m/tok.gguf\n"
                       "decoder = /m/dec.gguf ; inline comment\n"
                       "[http]\n"
                       "port = 9000\n"
                       "max_body = 512K\n"
                       "cors_origins = https://a.example, https://b.example\n"
                       "[process]\n"
                       "log_level = debug\n";
    REQUIRE(load(&c, text, &e) == 0);
    CHECK(strcmp(c.lm, "/m/lm.gguf") == 0);
    CHECK(strcmp(c.tokenizer, "/m/tok.gguf") == 0);
    CHECK(strcmp(c.decoder, "/m/dec.gguf") == 0);
    CHECK(c.http_port == 9000);
    CHECK(c.http_max_body == 512 * 1024);
    CHECK(c.log_level == CONFIG_LOG_DEBUG);
    CHECK(config_validate(&c, 0, &e) == 0);
    /* sources and lines, as --print-config shows them */
    char out[8192];
    FILE *f = fmemopen(out, sizeof out, "w");
    REQUIRE(f != NULL);
    config_print(&c, f);
    fclose(f);
    CHECK(strstr(out, "port = 9000") != NULL);
    CHECK(strstr(out, "; file line 9") != NULL);
    CHECK(strstr(out, "; default") != NULL);
    /* what --print-config writes reads back to the same values */
    static struct config back;
    REQUIRE(load(&back, out, &e) == 0);
    CHECK(back.http_port == 9000 && back.http_max_body == 512 * 1024);
    CHECK(strcmp(back.http_cors_origins, "https://a.example, https://b.example") == 0);
    size_t pos = 0;
    char item[128];
    CHECK(config_list_next(c.http_cors_origins, &pos, item, sizeof item) &&
          strcmp(item, "https://a.example") == 0);
    CHECK(config_list_next(c.http_cors_origins, &pos, item, sizeof item) &&
          strcmp(item, "https://b.example") == 0);
    CHECK(!config_list_next(c.http_cors_origins, &pos, item, sizeof item));
}

TEST(config_file_errors)
{
    check_bad("[http]\nport = 80x\n", "test.conf:2: http.port: '80x' is not an integer");
    check_bad("[http]\nport = 0\n", "test.conf:2: http.port: 0 is outside 1..65535");
    check_bad("[http]\nport = 99999999999999999999\n", "not an integer");
    check_bad("[http]\nport =\n", "not an integer");
    check_bad("\n[nope]\nx = 1\n", "test.conf:2: unknown section [nope]");
    check_bad("[http]\n\nprot = 1\n", "test.conf:3: unknown setting 'prot' in [http]");
    check_bad("port = 1\n", "test.conf:1: 'port' is outside any [section]");
    check_bad("[http]\nport = 1\nport = 2\n", "test.conf:3: http.port set again (first at line 2");
    check_bad("[http]\njust words\n", "test.conf:2: not 'key = value'");
    check_bad("[http\nport = 1\n", "test.conf:1: not a '[section]' header");
    check_bad("[ht tp]\n", "test.conf:1: not a '[section]' header");
    check_bad("[http] x\n", "test.conf:1: not a '[section]' header");
    check_bad("[http]\n = 1\n", "test.conf:2: '' is not a setting name");
    check_bad("[http]\npo rt = 1\n", "test.conf:2: 'po rt' is not a setting name");
    check_bad("[http]\naddress = \"127.0.0.1\n", "test.conf:2: unterminated quote");
    check_bad("[http]\naddress = \"127.0.0.1\" x\n", "test.conf:2: text after the closing quote");
    check_bad("[limits]\nmax_sessions = 3\n  4\n", "test.conf:3: not 'key = value'");
    check_bad("[http]\nmax_body = 12Q\n", "is not a size");
    check_bad("[http]\nmax_body = 1\n", "1 is outside 1024..");
    check_bad("[http]\nmax_body = 99999999999G\n", "is not a size");
    check_bad("[process]\nlog_level = loud\n", "'loud' is not one of debug, info, warn, error");
    check_bad("[websocket]\npath = chat\n", "websocket.path: 'chat' must start with '/'");
    static char longline[CONFIG_LINE_MAX + 100];
    memset(longline, 'a', sizeof longline);
    memcpy(longline, "[models]\nlm = /", 15);
    longline[sizeof longline - 2] = '\n';
    longline[sizeof longline - 1] = 0;
    check_bad(longline, "test.conf:2: line longer than");
    /* an error on a later line still stops the load */
    check_bad("[http]\nport = 1\n[limits]\nmax_sessions = -1\n",
              "test.conf:4: limits.max_sessions: -1 is outside 1..100000");
}

/* quotes, inline comments, BOM, CRLF, a last line without a newline */
TEST(config_file_syntax)
{
    static struct config c;
    struct err e;
    REQUIRE(load(&c,
                 "\xef\xbb\xbf[http]\r\n"
                 "  cors_origins = \"https://a.example ;x #y\"  # kept inside the quotes\r\n"
                 "address=::1;no blank, so not a comment\r\n"
                 "[ websocket ] ; comment\n"
                 "path = /chat#frag # comment\n"
                 "public_url = \"\"\n"
                 "[limits]\n"
                 "max_sessions = 3",
                 &e) == 0);
    CHECK(strcmp(c.http_cors_origins, "https://a.example ;x #y") == 0);
    CHECK(strcmp(c.http_address, "::1;no blank, so not a comment") == 0);
    CHECK(strcmp(c.ws_path, "/chat#frag") == 0);
    CHECK(c.ws_public_url[0] == 0);
    CHECK(c.limits_max_sessions == 3);
    REQUIRE(config_index("limits.max_sessions") >= 0);
    CHECK(c.line[config_index("limits.max_sessions")] == 8);
    CHECK(config_index("limits.no_such_thing") == -1);
}

TEST(config_file_missing)
{
    static struct config c;
    struct err e;
    config_defaults(&c);
    CHECK(config_load_file(&c, "/nonexistent/parleyd.conf", &e) == -1);
    CHECK(strstr(e.msg, "/nonexistent/parleyd.conf: No such file or directory") != NULL);
}

TEST(config_precedence)
{
    static struct config c;
    struct err e;
    REQUIRE(load(&c, "[http]\nport = 9000\naddress = 0.0.0.0\n[limits]\nmax_sessions = 4\n", &e) ==
            0);
    char *env[] = { "HOME=/root",       "PARLEY_HTTP_PORT=9001", "PARLEY_LIMITS_MAX_SESSIONS=5",
                    "PARLEY_CONFIG=/x", "PARLEY_TEST_QUICK=1",   NULL };
    REQUIRE(config_load_env(&c, env, &e) == 0);
    CHECK(c.http_port == 9001);
    char *argv[] = { "parleyd", "--http-port=9002", "--limits-max-sessions", "6", "--other" };
    CHECK(config_parse_flag(&c, 5, argv, 1, &e) == 1);
    CHECK(config_parse_flag(&c, 5, argv, 2, &e) == 2);
    CHECK(config_parse_flag(&c, 5, argv, 4, &e) == 0);
    CHECK(c.http_port == 9002 && c.limits_max_sessions == 6);
    CHECK(strcmp(c.http_address, "0.0.0.0") == 0);
    CHECK(c.source[4] == CONFIG_SRC_FLAG); /* http.port: the table's fifth row */
    char *bad_env[] = { "PARLEY_HTTP_PROT=1", NULL };
    CHECK(config_load_env(&c, bad_env, &e) == -1);
    CHECK(strstr(e.msg, "PARLEY_HTTP_PROT names no setting") != NULL);
    char *bad_val[] = { "PARLEY_HTTP_PORT=http", NULL };
    CHECK(config_load_env(&c, bad_val, &e) == -1);
    CHECK(strstr(e.msg, "environment: http.port: 'http' is not an integer") != NULL);
    char *no_value[] = { "parleyd", "--http-port" };
    CHECK(config_parse_flag(&c, 2, no_value, 1, &e) == -1);
    CHECK(strstr(e.msg, "--http-port needs a value") != NULL);
    char *bad_flag[] = { "parleyd", "--http-max-body=lots" };
    CHECK(config_parse_flag(&c, 2, bad_flag, 1, &e) == -1);
    CHECK(strstr(e.msg, "is not a size") != NULL);
    CHECK(config_set(&c, "http.address", "a\nb", CONFIG_SRC_FLAG, 0, &e) == -1);
    CHECK(strstr(e.msg, "control characters") != NULL);
}

TEST(config_validate_cross)
{
    static struct config c;
    struct err e;
    REQUIRE(load(&c,
                 "[models]\nlm=/a\ntokenizer=/b\ndecoder=/c\n[http]\nport=7000\n"
                 "[websocket]\nport=7000\n",
                 &e) == 0);
    CHECK(config_validate(&c, 0, &e) == -1);
    CHECK(strstr(e.msg, "both 7000") != NULL);
    REQUIRE(config_set(&c, "websocket.port", "7001", CONFIG_SRC_FLAG, 0, &e) == 0);
    CHECK(config_validate(&c, 0, &e) == 0);
    CHECK(config_validate(&c, 1, &e) == -1); /* /a does not exist */
    CHECK(strstr(e.msg, "models.lm: /a:") != NULL);
    REQUIRE(config_set(&c, "websocket.public_url", "http://x/", CONFIG_SRC_FLAG, 0, &e) == 0);
    CHECK(config_validate(&c, 0, &e) == -1);
    CHECK(strstr(e.msg, "not a ws:// or wss:// URL") != NULL);
    REQUIRE(config_set(&c, "websocket.public_url", "wss://x/v1/chat", CONFIG_SRC_FLAG, 0, &e) == 0);
    REQUIRE(config_set(&c, "http.address", "", CONFIG_SRC_FLAG, 0, &e) == 0);
    CHECK(config_validate(&c, 0, &e) == -1);
    CHECK(strstr(e.msg, "http.address is empty") != NULL);
    REQUIRE(config_set(&c, "http.address", "127.0.0.1", CONFIG_SRC_FLAG, 0, &e) == 0);
    CHECK(config_validate(&c, 1, &e) == -1);
    CHECK(strstr(e.msg, "models.lm: /a:") != NULL);
}

TEST(config_reload_split)
{
    static struct config live, fresh;
    struct err e;
    REQUIRE(load(&live, "[http]\nport=9000\n[limits]\nmax_sessions=4\n", &e) == 0);
    REQUIRE(load(&fresh,
                 "[http]\nport=9001\n[limits]\nmax_sessions=8\n"
                 "[process]\nlog_level=warn\n",
                 &e) == 0);
    char changed[256], restart[256];
    int n = config_reload(&live, &fresh, changed, sizeof changed, restart, sizeof restart);
    CHECK(n == 1);
    CHECK(strcmp(restart, "http.port") == 0);
    CHECK(strstr(changed, "limits.max_sessions") != NULL);
    CHECK(strstr(changed, "process.log_level") != NULL);
    CHECK(live.http_port == 9000); /* needs a restart: unchanged */
    CHECK(live.limits_max_sessions == 8 && live.log_level == CONFIG_LOG_WARN);
}

TEST(config_print_hides_keys)
{
    static struct config c;
    struct err e;
    REQUIRE(load(&c, "[auth]\napi_keys = sekrit1, sekrit2\n", &e) == 0);
    char out[8192];
    FILE *f = fmemopen(out, sizeof out, "w");
    REQUIRE(f != NULL);
    config_print(&c, f);
    fclose(f);
    CHECK(strstr(out, "sekrit") == NULL);
    CHECK(strstr(out, "<2 keys hidden>") != NULL);
    /* read back, the placeholder is a key nobody holds: auth stays on */
    static struct config back;
    REQUIRE(load(&back, out, &e) == 0);
    CHECK(strcmp(back.auth_api_keys, "<2 keys hidden>") == 0);
}

/* Every corpus file loads or fails with a "name:LINE:" or "name:" message, never crashes. */
TEST(config_fuzz_corpus_replay)
{
    DIR *d = opendir(CORPUS_DIR);
    REQUIRE(d != NULL);
    int files = 0, good = 0;
    struct dirent *de;
    static char buf[CONFIG_FILE_MAX + 1];
    static struct config c;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        size_t n = fread(buf, 1, CONFIG_FILE_MAX, f);
        fclose(f);
        buf[n] = 0;
        struct err e;
        files++;
        config_defaults(&c);
        if (config_load_string(&c, buf, "corpus", &e) == 0)
            good++;
        else
            CHECK(strncmp(e.msg, "corpus:", 7) == 0);
    }
    closedir(d);
    CHECK(files >= 4);
    CHECK(good > 0 && good < files);
}
