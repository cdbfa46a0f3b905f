/*
 * testd — what the tests that run the real programs share: parleyd and parley found next to
 * the running binary, free loopback ports, a parleyd started on the tiny golden models from a
 * config it writes and waited for, bounded waits for children, a small HTTP/1.1 client over
 * plain sockets, and values read from /metrics.
 *
 *   struct td_daemon d;
 *   if (td_daemon_start(&d, test_tmpdir(), "name", "[limits]\nmax_sessions = 2\n", 20000))
 *       ... td_daemon_log(&d, buf, cap) says why ...
 *   td_get(d.http, "/healthz", NULL, body, sizeof body) == 200;
 *   td_daemon_stop(&d, 20000) == 0;
 *
 * Nothing here records a test failure (the caller decides, tests/test.h), so parley-bench can
 * link it too. Every wait is bounded; the HTTP client's buffers are static (one thread).
 */
#ifndef PARLEY_TESTD_H
#define PARLEY_TESTD_H

#include <stddef.h>
#include <sys/types.h>

/* The tiny golden models (tests/golden/{lm,stok,voice}_torch.py write them). */
#define TD_GOLDEN_DIR "build/golden"
#define TD_LM_PATH    TD_GOLDEN_DIR "/lm_tiny_f32.gguf"
#define TD_TOK_PATH   TD_GOLDEN_DIR "/stok_a.gguf"
#define TD_DEC_PATH   TD_GOLDEN_DIR "/voice_decoder.gguf"

/* PARLEY_TEST_QUICK is set (the sanitizer runs): shorter work. */
int td_quick(void);

/* localhost_sibling (daemon/localhost.h) as 1 / 0; when the program is not there, says the
 * test is skipped (stderr) and returns 0. */
int td_need(const char *name, char *out, size_t len);
/* 1 when the three golden models can be read. */
int td_have_models(void);

/* A connection to 127.0.0.1:port (close-on-exec; send and receive timeouts of timeout_s
 * seconds when > 0); -1 when refused. */
int td_connect(int port, int timeout_s);

/* One request over a fresh connection ("Connection: close", 5 s timeouts); the status, or -1
 * when no response came. extra: header lines ("Name: value\r\n"...); req_body (JSON, NULL for
 * none) gets a Content-Length unless extra says Transfer-Encoding. body (optional) gets the
 * response body, head (optional) the head, both NUL-terminated and cut to their capacity. */
int td_http(int port, const char *method, const char *path, const char *extra, const char *req_body,
            char *body, size_t cap, char *head, size_t hcap);
int td_get(int port, const char *path, const char *extra, char *body, size_t cap);
/* The value of the first /metrics line starting with series + " " (extra: the key header, or
 * NULL); -1 when absent or not answered. */
double td_metric(int port, const char *extra, const char *series);

/* A file's text into out (NUL-terminated, cut to cap; "" when unreadable). */
void td_read_file(const char *path, char *out, size_t cap);
/* text into path; 0, or -1 when it cannot be written. */
int td_write_file(const char *path, const char *text);

/* The environment for a child: PATH and the sanitizers' options, nothing else of ours; then
 * extra when not NULL. env holds max entries with the NULL; returns the count. */
int td_child_env(char **env, int max, char *extra);
/* In a child: stdout and stderr into log_path, then exe with argv (argv[0] set to exe) and
 * envp; exits 127 when exe cannot run. */
void td_exec_logged(char *exe, char **argv, char **envp, const char *log_path)
    __attribute__((noreturn));
/* Runs exe with argv (argv[0] is set to exe) and envp, stdout and stderr into log_path. */
pid_t td_spawn(char *exe, char **argv, char **envp, const char *log_path);
/* waitpid with a deadline: the exit status, 128+signal, or -1 on timeout (then killed). */
int td_wait_exit(pid_t pid, int ms);

/* n samples of a sine (peak amplitude, hz) as 16 kHz PCM16 little-endian into b (2n bytes),
 * from sample t0 of the tone on. */
void td_tone_pcm16(unsigned char *b, int n, double peak, double hz, int t0);

/* A parleyd under test. */
struct td_daemon {
    pid_t pid; /* -1 when not running */
    int http, ws;
    char conf[4096 + 64], log[4096 + 64];
};

/* Writes dir/name.conf ([models] the golden models, [http] and [websocket] ports picked free,
 * then extra_conf: more sections, which may open [http] again) and starts parleyd with it
 * (log: dir/name.log). 0 once /readyz answers 200 within wait_ms; -1 otherwise (the daemon
 * killed, if it ran). */
int td_daemon_start(struct td_daemon *d, const char *dir, const char *name, const char *extra_conf,
                    int wait_ms);
/* SIGTERM, then its exit status (-1 when it had to be killed or was not running). */
int td_daemon_stop(struct td_daemon *d, int wait_ms);
/* The daemon's log into out; out, for printing. */
const char *td_daemon_log(const struct td_daemon *d, char *out, size_t cap);

#endif
