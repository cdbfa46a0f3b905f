/* Real programs under test: see testd.h. */
#include "testd.h"
#include "localhost.h"
#include "runtime/clock.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int td_quick(void)
{
    return getenv("PARLEY_TEST_QUICK") != NULL;
}

int td_need(const char *name, char *out, size_t len)
{
    if (localhost_sibling(name, out, len) == 0)
        return 1;
    fprintf(stderr, "  (%s is not built next to the tests: skipped)\n", name);
    return 0;
}

int td_have_models(void)
{
    return !access(TD_LM_PATH, R_OK) && !access(TD_TOK_PATH, R_OK) && !access(TD_DEC_PATH, R_OK);
}

int td_connect(int port, int timeout_s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (timeout_s > 0) {
        struct timeval tv = { timeout_s, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads until the peer closes or buf is full; the length (buf NUL-terminated). */
static size_t td_read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (ssize_t r; got < cap - 1 && (r = read(fd, buf + got, cap - 1 - got)) > 0;)
        got += (size_t)r;
    buf[got] = 0;
    return got;
}

int td_http(int port, const char *method, const char *path, const char *extra, const char *req_body,
            char *body, size_t cap, char *head, size_t hcap)
{
    int fd = td_connect(port, 5);
    if (fd < 0)
        return -1;
    static char req[8192];
    char length[64] = "";
    if (req_body && !(extra && strstr(extra, "Transfer-Encoding")))
        snprintf(length, sizeof length, "Content-Length: %zu\r\n", strlen(req_body));
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s%s%s\r\n%s",
                     method, path, port, extra ? extra : "",
                     req_body ? "Content-Type: application/json\r\n" : "", length,
                     req_body ? req_body : "");
    if (n >= (int)sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    static char resp[1 << 18]; /* /metrics of a busy daemon fits */
    size_t got = td_read_all(fd, resp, sizeof resp);
    close(fd);
    int status = -1;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    char *sep = strstr(resp, "\r\n\r\n");
    if (head) {
        size_t hn = sep ? (size_t)(sep - resp) : got;
        snprintf(head, hcap, "%.*s", (int)hn, resp);
    }
    if (body)
        snprintf(body, cap, "%s", sep ? sep + 4 : "");
    return status;
}

int td_get(int port, const char *path, const char *extra, char *body, size_t cap)
{
    return td_http(port, "GET", path, extra, NULL, body, cap, NULL, 0);
}

double td_metric(int port, const char *extra, const char *series)
{
    static char text[1 << 18];
    if (td_get(port, "/metrics", extra, text, sizeof text) != 200)
        return -1;
    char want[256];
    snprintf(want, sizeof want, "\n%s ", series);
    const char *p = strstr(text, want);
    return p ? strtod(p + strlen(want), NULL) : -1;
}

void td_read_file(const char *path, char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
}

int td_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f) ? -1 : 0;
}

int td_child_env(char **env, int max, char *extra)
{
    static const char *keep[] = { "PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
                                  "TSAN_OPTIONS" };
    static char bufs[5][1024];
    int n = 0;
    for (size_t i = 0; i < sizeof keep / sizeof keep[0] && n < max - 2; i++) {
        const char *v = getenv(keep[i]);
        if (v) {
            snprintf(bufs[n], sizeof bufs[n], "%s=%s", keep[i], v);
            env[n] = bufs[n];
            n++;
        }
    }
    if (extra)
        env[n++] = extra;
    env[n] = NULL;
    return n;
}

void td_exec_logged(char *exe, char **argv, char **envp, const char *log_path)
{
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    argv[0] = exe;
    execve(exe, argv, envp);
    _exit(127);
}

pid_t td_spawn(char *exe, char **argv, char **envp, const char *log_path)
{
    pid_t pid = fork();
    if (pid == 0)
        td_exec_logged(exe, argv, envp, log_path);
    return pid;
}

int td_wait_exit(pid_t pid, int ms)
{
    double end = clock_ms() + ms;
    int st;
    while (clock_ms() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        clock_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

void td_tone_pcm16(unsigned char *b, int n, double peak, double hz, int t0)
{
    for (int i = 0; i < n; i++) {
        int16_t v = (int16_t)(peak * sin(2 * M_PI * hz * (t0 + i) / 16000.0));
        b[2 * i] = (unsigned char)((uint16_t)v & 0xff);
        b[2 * i + 1] = (unsigned char)((uint16_t)v >> 8);
    }
}

/* dir/name.conf with the golden models, two free ports and extra_conf; 0 or -1. */
static int td_daemon_conf(struct td_daemon *d, const char *dir, const char *name,
                          const char *extra_conf)
{
    d->http = localhost_free_port();
    d->ws = localhost_free_port();
    if (d->http <= 0 || d->ws <= 0)
        return -1;
    if (d->ws == d->http)
        d->ws = d->http + 1;
    snprintf(d->conf, sizeof d->conf, "%s/%s.conf", dir, name);
    snprintf(d->log, sizeof d->log, "%s/%s.log", dir, name);
    static char text[8192];
    snprintf(text, sizeof text,
             "[models]\nlm = %s\ntokenizer = %s\ndecoder = %s\n[http]\nport = %d\n"
             "[websocket]\nport = %d\n%s",
             TD_LM_PATH, TD_TOK_PATH, TD_DEC_PATH, d->http, d->ws, extra_conf ? extra_conf : "");
    return td_write_file(d->conf, text);
}

int td_daemon_start(struct td_daemon *d, const char *dir, const char *name, const char *extra_conf,
                    int wait_ms)
{
    char exe[PATH_MAX];
    memset(d, 0, sizeof *d);
    d->pid = -1;
    if (localhost_sibling("parleyd", exe, sizeof exe) != 0 ||
        td_daemon_conf(d, dir, name, extra_conf))
        return -1;
    char *env[8];
    td_child_env(env, 8, NULL);
    char *argv[] = { "parleyd", "--config", d->conf, NULL };
    d->pid = td_spawn(exe, argv, env, d->log);
    if (d->pid < 0)
        return -1;
    for (double end = clock_ms() + wait_ms; clock_ms() < end; clock_sleep_ms(20)) {
        if (td_get(d->http, "/readyz", NULL, NULL, 0) == 200)
            return 0;
        if (waitpid(d->pid, NULL, WNOHANG) == d->pid) { /* it gave up: no use waiting */
            d->pid = -1;
            return -1;
        }
    }
    td_wait_exit(d->pid, 0); /* killed */
    d->pid = -1;
    return -1;
}

int td_daemon_stop(struct td_daemon *d, int wait_ms)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    int rc = td_wait_exit(d->pid, wait_ms);
    d->pid = -1;
    return rc;
}

const char *td_daemon_log(const struct td_daemon *d, char *out, size_t cap)
{
    td_read_file(d->log, out, cap);
    return out;
}
