/*
 * parleyd end to end: the real daemon (build/.../parleyd, next to this test binary) on a
 * loopback port with the tiny golden models, talked to over plain HTTP/1.1 sockets:
 * /healthz, /readyz, /metrics, /v1/server, /v1/models, JSON errors, the body limit, API keys,
 * CORS, systemd notifications (READY=1, STOPPING=1 on a NOTIFY_SOCKET we own), SIGHUP reload,
 * SIGTERM exit 0; and the refusals: a bad config (exit 2, "file:LINE: ..."), a missing model
 * (exit 1, one line, nothing listening). Every wait is bounded.
 *
 * Needs build/golden/{lm_tiny_f32,stok_a,voice_decoder}.gguf (lm_torch.py, stok_torch.py,
 * voice_torch.py). Until the Makefile builds parleyd next to the tests, the test says so and
 * passes without running.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "testd.h"
#include "localhost.h"
#include "runtime/clock.h"

#define GOLDEN_CMD                                               \
    "/usr/bin/python3 tests/golden/lm_torch.py build/golden; "   \
    "/usr/bin/python3 tests/golden/stok_torch.py build/golden; " \
    "/usr/bin/python3 tests/golden/voice_torch.py build/golden"
#define WAIT_MS 20000 /* start-up under ASan on a busy machine */

/* As td_spawn, with listen_fd passed as systemd's socket activation does: fd 3, LISTEN_FDS=1,
 * LISTEN_PID=<the child>, LISTEN_FDNAMES=http. envp must hold a "LISTEN_PID=" slot. */
static pid_t spawn_activated(char *exe, char **argv, char **envp, const char *log_path,
                             int listen_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        static char pid_var[64];
        snprintf(pid_var, sizeof pid_var, "LISTEN_PID=%d", (int)getpid());
        for (char **p = envp; *p; p++)
            if (!strncmp(*p, "LISTEN_PID=", 11))
                *p = pid_var;
        if (listen_fd != 3) {
            dup2(listen_fd, 3);
            close(listen_fd);
        }
        td_exec_logged(exe, argv, envp, log_path);
    }
    return pid;
}

/* Reads datagrams from the notify socket until one contains want, up to ms. */
static int notify_wait(int fd, const char *want, int ms, char *all, size_t cap)
{
    double end = clock_ms() + ms;
    while (clock_ms() < end) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 50) == 1) {
            char msg[1024];
            ssize_t r = recv(fd, msg, sizeof msg - 1, 0);
            if (r > 0) {
                msg[r] = 0;
                size_t used = strlen(all);
                snprintf(all + used, cap - used, "%s|", msg);
                if (strstr(msg, want))
                    return 1;
            }
        }
    }
    return 0;
}

static int have_models(void)
{
    if (!td_have_models())
        return test_fail(__FILE__, __LINE__, "golden models missing; run: %s", GOLDEN_CMD);
    return 1;
}

TEST(daemon_serves_and_stops)
{
    char exe[PATH_MAX];
    if (!td_need("parleyd", exe, sizeof exe))
        return;
    REQUIRE(have_models());
    const char *dir = test_tmpdir();
    int port = localhost_free_port(), ws_port = localhost_free_port();
    REQUIRE(port > 0 && ws_port > 0);
    if (ws_port == port)
        ws_port = port + 1;

    char conf[512], log[512], sock[PATH_MAX + 32], text[2048];
    snprintf(conf, sizeof conf, "%s/parleyd.conf", dir);
    snprintf(log, sizeof log, "%s/parleyd.log", dir);
    char absdir[PATH_MAX];
    REQUIRE(realpath(dir, absdir) != NULL); /* sd_notify wants an absolute socket path */
    snprintf(sock, sizeof sock, "%s/notify.sock", absdir);
    snprintf(text, sizeof text,
             "[models]\nlm = %s\ntokenizer = %s\ndecoder = %s\n[http]\nport = %d\n"
             "max_body = 2K\ncors_origins = https://app.example\n[websocket]\nport = %d\n"
             "[auth]\napi_keys = k1, k2\n",
             TD_LM_PATH, TD_TOK_PATH, TD_DEC_PATH, port, ws_port);
    td_write_file(conf, text);

    /* our own NOTIFY_SOCKET, as systemd would give */
    int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(nfd >= 0);
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    unlink(sock);
    REQUIRE(strlen(sock) < sizeof un.sun_path);
    strcpy(un.sun_path, sock);
    REQUIRE(bind(nfd, (struct sockaddr *)&un, sizeof un) == 0);
    char notify_env[sizeof sock + 16];
    snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s", sock);
    char *env[8];
    int n_env = td_child_env(env, 8, notify_env);
    env[n_env++] = "WATCHDOG_USEC=200000"; /* WatchdogSec=0.2: pings every 0.1 s */
    env[n_env] = NULL;

    char *argv[] = { "parleyd", "--config", conf, NULL };
    pid_t pid = td_spawn(exe, argv, env, log);
    REQUIRE(pid > 0);
    char notes[4096] = "";
    int ready = notify_wait(nfd, "READY=1", WAIT_MS, notes, sizeof notes);
    char logtext[8192];
    if (!ready) {
        td_read_file(log, logtext, sizeof logtext);
        test_fail(__FILE__, __LINE__, "no READY=1 (notes '%s'); log:\n%s", notes, logtext);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(nfd);
        return;
    }

    static char body[1 << 16];
    char head[4096];
    CHECK(td_get(port, "/healthz", NULL, body, sizeof body) == 200);
    CHECK(strstr(body, "\"ok\"") != NULL);
    CHECK(td_get(port, "/readyz", NULL, body, sizeof body) == 200);
    /* keys: health needs none, the rest does */
    CHECK(td_http(port, "GET", "/metrics", NULL, NULL, body, sizeof body, head, sizeof head) ==
          401);
    CHECK(strstr(body, "\"unauthorized\"") != NULL);
    CHECK(strstr(head, "WWW-Authenticate: Bearer") != NULL);
    CHECK(td_get(port, "/metrics", "Authorization: Bearer nope\r\n", body, sizeof body) == 401);
    CHECK(td_get(port, "/metrics", "Authorization: Bearer k2\r\n", body, sizeof body) == 200);
    CHECK(strstr(body, "# TYPE parley_model_loaded gauge") != NULL);
    CHECK(strstr(body, "parley_model_loaded{component=\"lm\"} 1") != NULL);
    CHECK(strstr(body, "parley_model_loaded{component=\"decoder\"} 1") != NULL);
    CHECK(strstr(body, "parley_ready 1") != NULL);
    CHECK(strstr(body, "process_resident_memory_bytes ") != NULL);
    CHECK(td_get(port, "/v1/server?api_key=k1", NULL, body, sizeof body) == 200);
    char url[128];
    snprintf(url, sizeof url, "\"websocket_url\":\"ws://127.0.0.1:%d/v1/chat\"", ws_port);
    CHECK(strstr(body, url) != NULL);
    CHECK(td_get(port, "/v1/models", "Authorization: Bearer k1\r\n", body, sizeof body) == 200);
    CHECK(strstr(body, "\"id\":\"lm\"") && strstr(body, "\"id\":\"tokenizer\"") &&
          strstr(body, "\"id\":\"decoder\""));
    /* JSON errors */
    CHECK(td_get(port, "/nope", "Authorization: Bearer k1\r\n", body, sizeof body) == 404);
    CHECK(strstr(body, "{\"error\":{\"type\":\"not_found\"") != NULL);
    CHECK(td_http(port, "POST", "/healthz", NULL, "{}", body, sizeof body, head, sizeof head) ==
          405);
    CHECK(strstr(head, "Allow: GET") != NULL);
    CHECK(td_http(port, "POST", "/v1/spoken-qa",
                  "Authorization: Bearer k1\r\nContent-Length: 4096\r\n", NULL, body, sizeof body,
                  NULL, 0) == 413);
    CHECK(strstr(body, "body_too_large") != NULL);
    /* a chunked body has no length to refuse up front: read to its end, then 413 */
    static char chunked[4096];
    memset(chunked, 'a', sizeof chunked);
    memcpy(chunked, "c00\r\n", 5);
    memcpy(chunked + 5 + 0xc00, "\r\n0\r\n\r\n", 7);
    chunked[5 + 0xc00 + 7] = 0;
    CHECK(td_http(port, "POST", "/v1/spoken-qa",
                  "Authorization: Bearer k1\r\nTransfer-Encoding: chunked\r\n", chunked, body,
                  sizeof body, NULL, 0) == 413);
    CHECK(strstr(body, "body_too_large") != NULL);
    CHECK(td_http(port, "POST", "/v1/spoken-qa", "Authorization: Bearer k1\r\n", "{}", body,
                  sizeof body, NULL, 0) == 400);
    CHECK(strstr(body, "\"empty_turn\"") != NULL);
    /* systemd's watchdog gets its pings */
    CHECK(notify_wait(nfd, "WATCHDOG=1", 3000, notes, sizeof notes));
    /* CORS: allowed origin echoed, others not; preflight */
    CHECK(td_http(port, "GET", "/healthz", "Origin: https://app.example\r\n", NULL, body,
                  sizeof body, head, sizeof head) == 200);
    CHECK(strstr(head, "Access-Control-Allow-Origin: https://app.example") != NULL);
    CHECK(td_http(port, "GET", "/healthz", "Origin: https://evil.example\r\n", NULL, body,
                  sizeof body, head, sizeof head) == 200);
    CHECK(strstr(head, "Access-Control-Allow-Origin") == NULL);
    CHECK(td_http(port, "OPTIONS", "/v1/models",
                  "Origin: https://app.example\r\nAccess-Control-Request-Method: GET\r\n", NULL,
                  body, sizeof body, head, sizeof head) == 204);
    CHECK(strstr(head, "Access-Control-Allow-Headers: Authorization") != NULL);
    CHECK(td_http(port, "OPTIONS", "/v1/models", "Origin: https://evil.example\r\n", NULL, body,
                  sizeof body, NULL, 0) == 403);

    /* SIGHUP: new keys apply, a port change is reported as needing a restart */
    snprintf(text, sizeof text,
             "[models]\nlm = %s\ntokenizer = %s\ndecoder = %s\n[http]\nport = %d\n"
             "[websocket]\nport = %d\n[auth]\napi_keys = k3\n[limits]\nmax_sessions = 7\n",
             TD_LM_PATH, TD_TOK_PATH, TD_DEC_PATH, port + 1 == ws_port ? port + 2 : port + 1,
             ws_port);
    td_write_file(conf, text);
    kill(pid, SIGHUP);
    int reloaded = 0;
    for (double end = clock_ms() + 5000; clock_ms() < end && !reloaded; clock_sleep_ms(50))
        reloaded =
            td_get(port, "/metrics", "Authorization: Bearer k3\r\n", body, sizeof body) == 200;
    CHECK(reloaded);
    CHECK(strstr(body, "parley_sessions_max 7") != NULL);
    CHECK(strstr(body, "parley_config_reloads_total{result=\"ok\"} 1") != NULL);
    CHECK(td_get(port, "/metrics", "Authorization: Bearer k1\r\n", body, sizeof body) == 401);

    /* SIGTERM: STOPPING=1, exit 0 */
    kill(pid, SIGTERM);
    int rc = td_wait_exit(pid, WAIT_MS);
    CHECK(rc == 0);
    CHECK(notify_wait(nfd, "STOPPING=1", 2000, notes, sizeof notes) || strstr(notes, "STOPPING=1"));
    close(nfd);
    unlink(sock);
    td_read_file(log, logtext, sizeof logtext);
    CHECK(strstr(logtext, "reload: applied") != NULL);
    CHECK(strstr(logtext, "needing a restart: http.port") != NULL);
    CHECK(strstr(logtext, "stopped") != NULL);
    if (rc != 0)
        fprintf(stderr, "parleyd log:\n%s\n", logtext);
    /* and nothing listens any more */
    CHECK(td_get(port, "/healthz", NULL, body, sizeof body) == -1);
}

TEST(daemon_refuses_bad_config)
{
    char exe[PATH_MAX];
    if (!td_need("parleyd", exe, sizeof exe))
        return;
    const char *dir = test_tmpdir();
    char conf[512], log[512], out[4096];
    snprintf(conf, sizeof conf, "%s/bad.conf", dir);
    snprintf(log, sizeof log, "%s/bad.log", dir);
    char *env[8];
    td_child_env(env, 8, NULL);

    td_write_file(conf, "[http]\nport = 8080\nprot = 1\n");
    char *argv[] = { "parleyd", "--config", conf, NULL, NULL };
    CHECK(td_wait_exit(td_spawn(exe, argv, env, log), WAIT_MS) == 2);
    td_read_file(log, out, sizeof out);
    char want[600];
    snprintf(want, sizeof want, "parleyd: %s:3: unknown setting 'prot' in [http]\n", conf);
    CHECK(strcmp(out, want) == 0);

    td_write_file(conf, "[http]\nport = 70000\n");
    CHECK(td_wait_exit(td_spawn(exe, argv, env, log), WAIT_MS) == 2);
    td_read_file(log, out, sizeof out);
    CHECK(strstr(out, ":2: http.port: 70000 is outside 1..65535") != NULL);

    /* an unknown flag, and an unknown PARLEY_ variable */
    char *argv_flag[] = { "parleyd", "--htp-port=1", NULL };
    CHECK(td_wait_exit(td_spawn(exe, argv_flag, env, log), WAIT_MS) == 2);
    td_read_file(log, out, sizeof out);
    CHECK(strstr(out, "unknown argument '--htp-port=1'") != NULL);

    /* --check-config: a model that is not there */
    char text[1024];
    snprintf(text, sizeof text, "[models]\nlm = %s/none.gguf\ntokenizer = %s\ndecoder = %s\n", dir,
             TD_TOK_PATH, TD_DEC_PATH);
    td_write_file(conf, text);
    argv[3] = "--check-config";
    CHECK(td_wait_exit(td_spawn(exe, argv, env, log), WAIT_MS) == 2);
    td_read_file(log, out, sizeof out);
    CHECK(strstr(out, "models.lm:") && strstr(out, "No such file or directory"));

    /* --print-config: values and their sources */
    argv[3] = "--print-config";
    char *argv_print[] = {
        "parleyd", "--config", conf, "--print-config", "--http-port=9123", NULL
    };
    CHECK(td_wait_exit(td_spawn(exe, argv_print, env, log), WAIT_MS) == 0);
    td_read_file(log, out, sizeof out);
    CHECK(strstr(out, "port = 9123") && strstr(out, "; command line"));
    CHECK(strstr(out, "lm = ") && strstr(out, "; file line 2"));
    CHECK(strstr(out, "max_sessions = 32") && strstr(out, "; default"));
}

TEST(daemon_refuses_broken_model)
{
    char exe[PATH_MAX];
    if (!td_need("parleyd", exe, sizeof exe))
        return;
    REQUIRE(have_models());
    const char *dir = test_tmpdir();
    char broken[512], log[512], out[4096], lm_flag[600], port_flag[64];
    snprintf(broken, sizeof broken, "%s/broken.gguf", dir);
    snprintf(log, sizeof log, "%s/broken.log", dir);
    td_write_file(broken, "GGUF but not really a model file");
    int port = localhost_free_port();
    snprintf(port_flag, sizeof port_flag, "--http-port=%d", port);
    snprintf(lm_flag, sizeof lm_flag, "--models-lm=%s", broken);
    char *env[8];
    td_child_env(env, 8, NULL);
    char *argv[] = {
        "parleyd", lm_flag, "--models-tokenizer=" TD_TOK_PATH, "--models-decoder=" TD_DEC_PATH,
        port_flag, NULL
    };
    CHECK(td_wait_exit(td_spawn(exe, argv, env, log), WAIT_MS) == 1);
    td_read_file(log, out, sizeof out);
    /* the starting line, then exactly one error line naming the setting and the file */
    const char *err = strstr(out, "error: models.lm: ");
    CHECK(err != NULL);
    CHECK(err && strstr(err, broken) != NULL);
    CHECK(err && strchr(err, '\n') == out + strlen(out) - 1);
    CHECK(td_get(port, "/healthz", NULL, NULL, 0) == -1);
}

/* systemd/parleyd.service and parleyd.socket pass `systemd-analyze verify` (ExecStart=
 * pointing at the parleyd under test, since verify checks that the binary exists). */
TEST(daemon_unit_verifies)
{
    char exe[PATH_MAX];
    if (!td_need("parleyd", exe, sizeof exe))
        return;
    if (access("/usr/bin/systemd-analyze", X_OK)) {
        fprintf(stderr, "  (no systemd-analyze: skipped)\n");
        return;
    }
    static char unit[16384];
    td_read_file("systemd/parleyd.service", unit, sizeof unit);
    REQUIRE(unit[0] != 0);
    const char *at = strstr(unit, "/usr/bin/parleyd");
    REQUIRE(at != NULL);
    char absdir[PATH_MAX], path[PATH_MAX + 32], log[PATH_MAX + 32], cmd[3 * PATH_MAX + 256];
    REQUIRE(realpath(test_tmpdir(), absdir) != NULL);
    snprintf(path, sizeof path, "%s/parleyd.service", absdir);
    snprintf(log, sizeof log, "%s/verify.log", absdir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "%.*s%s%s", (int)(at - unit), unit, exe, at + strlen("/usr/bin/parleyd"));
    fclose(f);
    /* the socket unit beside it, unchanged */
    static char sock_unit[4096];
    char sock_path[PATH_MAX + 32];
    td_read_file("systemd/parleyd.socket", sock_unit, sizeof sock_unit);
    REQUIRE(sock_unit[0] != 0);
    snprintf(sock_path, sizeof sock_path, "%s/parleyd.socket", absdir);
    td_write_file(sock_path, sock_unit);
    snprintf(cmd, sizeof cmd, "systemd-analyze verify '%s' '%s' >'%s' 2>&1", path, sock_path, log);
    int rc = system(cmd);
    if (rc != 0) {
        char out[4096];
        td_read_file(log, out, sizeof out);
        test_fail(__FILE__, __LINE__, "systemd-analyze verify: status %d:\n%s", rc, out);
    }
}

/* parleyd.socket: a listening socket passed as systemd does is served instead of binding. */
TEST(daemon_socket_activation)
{
    char exe[PATH_MAX];
    if (!td_need("parleyd", exe, sizeof exe))
        return;
    REQUIRE(have_models());
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(lfd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    REQUIRE(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 16) == 0);
    REQUIRE(getsockname(lfd, (struct sockaddr *)&a, &al) == 0);
    int port = ntohs(a.sin_port);
    int other = localhost_free_port(); /* what the flags name: must stay unused */
    char log[512], flag[64], out[8192];
    snprintf(log, sizeof log, "%s/activated.log", test_tmpdir());
    snprintf(flag, sizeof flag, "--http-port=%d", other);
    char *env[12];
    int n = td_child_env(env, 8, NULL);
    env[n++] = "LISTEN_FDS=1";
    env[n++] = "LISTEN_FDNAMES=http";
    env[n++] = "LISTEN_PID=";
    env[n] = NULL;
    char *argv[] = { "parleyd",
                     "--models-lm=" TD_LM_PATH,
                     "--models-tokenizer=" TD_TOK_PATH,
                     "--models-decoder=" TD_DEC_PATH,
                     flag,
                     NULL };
    pid_t pid = spawn_activated(exe, argv, env, log, lfd);
    close(lfd);
    REQUIRE(pid > 0);
    /* connections made before parleyd is ready wait in the backlog and are answered */
    static char body[4096];
    int status = td_get(port, "/healthz", NULL, body, sizeof body);
    CHECK(status == 200);
    int ready = 0;
    for (double end = clock_ms() + WAIT_MS; clock_ms() < end && !ready; clock_sleep_ms(20))
        ready = td_get(port, "/readyz", NULL, body, sizeof body) == 200;
    CHECK(ready);
    CHECK(td_get(other, "/healthz", NULL, body, sizeof body) == -1);
    kill(pid, SIGTERM);
    CHECK(td_wait_exit(pid, WAIT_MS) == 0);
    td_read_file(log, out, sizeof out);
    CHECK(strstr(out, "serving the socket systemd passed (fd 3)") != NULL);
    if (!ready || status != 200)
        fprintf(stderr, "parleyd log:\n%s\n", out);
}
